/*
 * outq.h — the pending output of a streamed HTTP response: bytes queued in
 * memory (frame headers, small frames), then optionally a range of a file
 * (an LTX record, a spooled snapshot) copied out piece by piece, so that a
 * large record is never held in memory. Pure apart from pread and close;
 * no logging.
 */
#ifndef LITEFS_OUTQ_H
#define LITEFS_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bytes queued for a callback response: frame headers and small frames in
 * memory, then optionally a range of a file (an LTX record, a spooled
 * snapshot) that is copied out piece by piece. */
struct outq {
	uint8_t *buf;
	size_t len, off, cap;
	int fd;                /* -1: none */
	bool fd_owned;         /* close it when done (a spool file) */
	uint64_t fd_off, fd_left;
};
/* An empty queue: zeroed with fd = -1. */
void outq_init(struct outq *q);
/* Appends len bytes to the in-memory part. False on OOM (nothing queued). */
bool outq_put(struct outq *q, const void *data, size_t len);
/* Closes the file range's fd if owned and forgets the range. */
void outq_drop_fd(struct outq *q);
/* Frees everything; q is an empty queue again. */
void outq_free(struct outq *q);
/* Copies queued bytes into buf. Returns the count, 0 when empty, or -1
 * when the file range could not be read in full (the record was taken
 * back, or an I/O error): the frame cannot be completed. */
ssize_t outq_take(struct outq *q, char *buf, size_t max);

#endif
