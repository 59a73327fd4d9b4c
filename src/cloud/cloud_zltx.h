/*
 * cloud_zltx.h — the stored form of litefs-cloud's objects: an LTX file
 * whose page block is one zstd frame instead of LZ4 (docs/cloud-storage.md,
 * "Stored form").
 *
 *   offset        size  what
 *   0             100   LTX header, flags = CLOUD_ZLTX_FLAG (nothing else)
 *   100           n     one zstd frame of the page block of the
 *                       uncompressed LTX file (frames, end marker)
 *   100 + n       16    LTX trailer (post-apply, file checksum)
 *
 * Decompressed, with the flag cleared, it is byte for byte an uncompressed
 * LTX file (flags 0): the file checksum in the trailer is that file's, so
 * the LTX decoder verifies every stored byte as it always does (CRC-64 of
 * the header, pages and end marker), and a zstd frame that decodes to
 * something else is refused by that checksum. The header and trailer stay
 * plain, so the catalog rebuild from a bucket reads them with two range
 * requests as before. The frame carries zstd's own content checksum
 * (XXH64, cheap), so damage is usually named as such (a corrupt stored
 * object) before the LTX checksum would refuse it anyway. The flag is a bit LTX.md calls invalid, so a stored
 * object given by mistake to a strict LTX decoder (ours, LiteFS's) is
 * refused, never misread. The form never leaves the service: what it sends
 * (exports, snapshots, restores) is encoded afresh as LTX.
 *
 * Why: LTX's LZ4 has no entropy coding, so a page of text compresses
 * little; zstd on the same decoded bytes gives 0.65-0.7 of LZ4's size on
 * the month's small transactions (BENCHMARKS.md).
 *
 * Memory: frames are written with a window of 2^CLOUD_ZLTX_WLOG bytes and
 * a reader refuses frames that ask for more than 2^CLOUD_ZLTX_WLOG_MAX, so
 * a compaction holding 64 inputs open stays bounded.
 *
 * No logging; files only through the descriptor or callback the caller
 * gives. One lock of its own, innermost, around a pool of zstd contexts
 * kept for reuse.
 */
#ifndef LITEFS_CLOUD_ZLTX_H
#define LITEFS_CLOUD_ZLTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ltx/ltx.h"

#define CLOUD_ZLTX_FLAG 0x100u
#define CLOUD_ZLTX_WLOG 18
#define CLOUD_ZLTX_WLOG_MAX 20
/* zstd levels. On the month's database file level 3 gives 1.90:1 at
 * ~120 MB/s and level 6 1.93:1 at ~50 MB/s (LZ4: 1.10:1), but on the
 * hourly merges of small transactions level 6 stores 13 % less than 3
 * (BENCHMARKS.md). So: level 6 for compacted level files (small, made in
 * the background), level 3 for uploads (on the acknowledgement path) and
 * snapshots (a whole database: 2.4x the CPU for ~1.5 %). */
#define CLOUD_ZLTX_LEVEL 3
#define CLOUD_ZLTX_LEVEL_COMPACT 6

/* Reads a stored object (either form: plain LTX passes through unchanged)
 * as a plain LTX byte stream. */
struct cloud_zltx_reader {
	int fd; /* borrowed; valid until the reader is done */
	ltx_read_fn src;   /* reads fd: src(&fd, ...); fdio_read unless set */
	int state;
	uint8_t hdr[LTX_HEADER_SIZE];
	size_t hdr_len, hdr_off;
	void *z;           /* ZSTD_DStream */
	uint8_t *in;       /* compressed input buffer */
	size_t in_len, in_off;
	int err;           /* sticky */
};

/* Sets r up to read fd from its current offset. Nothing is allocated
 * until a stored-form header is seen. */
void cloud_zltx_reader_init(struct cloud_zltx_reader *r, int fd);
/* Reads fd through src(&r->fd, ...) instead of fdio_read (e.g.
 * cloud_progress_read, which counts the stored bytes read). */
void cloud_zltx_reader_set_source(struct cloud_zltx_reader *r, ltx_read_fn src);
/* ltx_read_fn; ctx is a struct cloud_zltx_reader. Returns bytes read (0 at
 * the end), -errno from the descriptor, ERR_CLOUD_OBJECT_CORRUPT for a
 * zstd frame that is broken, truncated or asks for too large a window. */
ssize_t cloud_zltx_read(void *ctx, void *buf, size_t len);
/* Frees what the reader allocated (not the descriptor). */
void cloud_zltx_reader_done(struct cloud_zltx_reader *r);

/* Writes the stored form of an uncompressed LTX byte stream (header flags
 * 0) given to cloud_zltx_write(). */
struct cloud_zltx_writer;

/* Caller frees with cloud_zltx_writer_free(). 0 or ERR_NOMEM. */
int cloud_zltx_writer_new(struct cloud_zltx_writer **out, int level, ltx_write_fn write, void *ctx);
void cloud_zltx_writer_free(struct cloud_zltx_writer *w); /* NULL is a no-op */
/* ltx_write_fn; ctx is the writer. ERR_INVAL if the header is not an LTX
 * header with flags 0; errors are sticky. */
int cloud_zltx_write(void *ctx, const void *buf, size_t len);
/* Ends the frame and writes the trailer; the input must have ended with
 * a whole trailer. 0 or the first error. */
int cloud_zltx_writer_finish(struct cloud_zltx_writer *w);

/* Decodes a stored object's 100 header bytes (either form) into h;
 * *zstd (may be NULL) tells which form. 0 or an ERR_LTX_* code. */
int cloud_zltx_header_decode(const uint8_t *in, struct ltx_header *h, bool *zstd);

/* Writes the stored form of the LTX file read from in_fd (any valid LTX:
 * it is decoded and verified in full) through write(ctx). 0, or the
 * decoder's error, or the write's. */
int cloud_zltx_transcode(int in_fd, ltx_write_fn write, void *ctx, int level);

#endif
