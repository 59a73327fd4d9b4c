/*
 * fullrec.h — a full-image LTX file (every page of a database, as an
 * import records it) encoded while the database file's bytes arrive, into
 * a file at a given offset.
 *
 * What depends on where the record lands is not known while the bytes
 * arrive: the TXIDs, the pre-apply checksum and the timestamp (LTX
 * header), and the first 100 bytes of page 1 (the SQLite header, which
 * the import adjusts to the database it replaces). So the header and
 * page 1 get a reserved place at the front, of a size known from the page
 * size alone, and are written by fullrec_finish(); pages 2..N are encoded
 * and written as they come. The file checksum covers the header and page
 * 1 first: the CRC of the rest is computed on the fly and combined with
 * theirs at the end (ltx_crc64_combine()).
 *
 * With compression the page block is one LZ4 frame of independent 64 KiB
 * blocks, as ltx_encoder writes it, except that page 1's frame is stored
 * in uncompressed blocks (its size must not depend on its bytes) and the
 * frame has no content checksum (which would need page 1 first; the LTX
 * file checksum covers the same bytes). Any LZ4 frame decoder reads it.
 *
 * Single-threaded; no logging. Errors are sticky.
 */
#ifndef LITEFS_FULLREC_H
#define LITEFS_FULLREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ltx/ltx.h"

struct fullrec;

/* An encoder writing the LTX file into fd from offset base (pwrite; the
 * file's other bytes are the caller's). LZ4 with compress. 0, ERR_NOMEM
 * or ERR_LTX_PAGE_SIZE. */
int fullrec_new(struct fullrec **out, int fd, off_t base, uint32_t page_size, bool compress);
void fullrec_free(struct fullrec *r); /* NULL is a no-op */

/* The next len bytes of the database file, from its start, in pieces of
 * any size. 0 or a negative code (a write error: sticky). */
int fullrec_feed(struct fullrec *r, const void *buf, size_t len);

/* Bytes of the database fed so far. */
uint64_t fullrec_fed(const struct fullrec *r);

/* Ends the file: h gives min/max TXID, timestamp, pre-apply checksum and
 * node ID (flags, page size and commit are set here; *h gets the header
 * written), sqlite_header the first 100 bytes page 1 must have. *t gets
 * the trailer, *len the LTX file's length. Nothing is synced. 0,
 * ERR_IO_SHORT (not a whole number of pages, or none), a header rule's
 * code, or a write error. */
int fullrec_finish(struct fullrec *r, struct ltx_header *h, const uint8_t sqlite_header[100],
		   struct ltx_trailer *t, uint64_t *len);

#endif
