/*
 * fdio.h — file descriptor adapters for the codec callbacks (ltx.h) and
 * whole-buffer positional I/O.
 *
 * Errors are negative errnos taken right after the failing call. EINTR is
 * retried everywhere; short transfers are looped over, so callers only see
 * a short count where the file really ends.
 */
#ifndef LITEFS_FDIO_H
#define LITEFS_FDIO_H

#include <stddef.h>
#include <sys/types.h>

/* ltx_read_fn over a file descriptor: ctx points to an int fd (borrowed;
 * valid until the reader is done). Returns bytes read (0 = EOF) or -errno. */
ssize_t fdio_read(void *ctx, void *buf, size_t len);

/* ltx_write_fn over a file descriptor: ctx points to an int fd. Writes all
 * len bytes, looping over short writes. Returns 0 or -errno. */
int fdio_write(void *ctx, const void *buf, size_t len);

/* Reads len bytes at off. Returns the number read, which is short only at
 * end of file, or -errno. len must fit in an int (at most INT_MAX). */
int fdio_pread_full(int fd, void *buf, size_t len, off_t off);

/* Writes all len bytes at off. Returns 0 or -errno. */
int fdio_pwrite_full(int fd, const void *buf, size_t len, off_t off);

#endif
