/*
 * ltx.h — the LTX v1 codec (byte-compatible with LiteFS 0.5 / superfly/ltx
 * v0.3). See ../shared/LTX.md and docs/ltx.md for the format.
 *
 * Pure module: no logging, no files, no sockets. Input and output go
 * through caller-supplied callbacks, so the same code serves files, memory
 * buffers and HTTP bodies. All integers on the wire are big-endian.
 *
 * Errors: every function returns 0 or a negative code (err.h). The decoder
 * reports each broken rule with its own ERR_LTX_* code, and remembers the
 * input byte offset where it detected the problem (ltx_decoder_offset()),
 * so callers can print "FILE: offset N: message".
 *
 * Memory: the decoder allocates a fixed amount (one LZ4 context plus
 * buffers bounded by the page size from a *validated* header, at most
 * 64 KiB pages); nothing is ever sized from unchecked input.
 */
#ifndef LITEFS_LTX_H
#define LITEFS_LTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LTX_MAGIC "LTX1"
#define LTX_HEADER_SIZE 100
#define LTX_TRAILER_SIZE 16
#define LTX_PAGE_HEADER_SIZE 4
#define LTX_FLAG_COMPRESS 0x1u
#define LTX_CHECKSUM_FLAG 0x8000000000000000ull
#define LTX_MIN_PAGE_SIZE 512
#define LTX_MAX_PAGE_SIZE 65536
#define LTX_PENDING_BYTE 0x40000000ull
/* "0000000000000001-0000000000000001.ltx" (37 characters) plus NUL. */
#define LTX_FILENAME_LEN 38
/* "%016x/%016x" plus NUL. */
#define LTX_POS_STR_LEN 34

struct ltx_header {
	uint32_t flags;              /* LTX_FLAG_COMPRESS or 0 */
	uint32_t page_size;
	uint32_t commit;             /* db size in pages after apply; 0 = deleted */
	uint64_t min_txid;
	uint64_t max_txid;
	int64_t timestamp_ms;        /* ms since the Unix epoch */
	uint64_t pre_apply_checksum; /* 0 iff min_txid == 1 */
	int64_t wal_offset;
	int64_t wal_size;
	uint32_t wal_salt1;
	uint32_t wal_salt2;
	uint64_t node_id;
};

struct ltx_trailer {
	uint64_t post_apply_checksum;
	uint64_t file_checksum;
};

/* A database position: the (TXID, post-apply checksum) of the last file. */
struct ltx_pos {
	uint64_t txid;
	uint64_t checksum;
};

/* Reads up to len bytes into buf. Returns the number read (0 = end of
 * input) or a negative error code. Short reads are fine. */
typedef ssize_t (*ltx_read_fn)(void *ctx, void *buf, size_t len);
/* Writes all len bytes or returns a negative error code; 0 on success. */
typedef int (*ltx_write_fn)(void *ctx, const void *buf, size_t len);

/* ---- Small helpers ---------------------------------------------------- */

bool ltx_is_valid_page_size(uint32_t page_size);
/* Page number of the lock page (holds byte 0x40000000) for page_size. */
uint32_t ltx_lock_pgno(uint32_t page_size);
bool ltx_header_is_snapshot(const struct ltx_header *h);
/* flag | CRC(be32(pgno) || data[0..page_size)). */
uint64_t ltx_page_checksum(uint32_t pgno, const void *data, uint32_t page_size);
/* The whole CRC(be32(pgno) || data[0..page_size)): the page checksum
 * without the flag, whose bit it would otherwise hide. */
uint64_t ltx_page_crc(uint32_t pgno, const void *data, uint32_t page_size);
/* Writes "<min %016x>-<max %016x>.ltx" into buf (LTX_FILENAME_LEN bytes). */
void ltx_format_filename(char *buf, uint64_t min_txid, uint64_t max_txid);
/* Parses a file name of exactly that form; 0 or ERR_INVAL. */
int ltx_parse_filename(const char *name, uint64_t *min_txid, uint64_t *max_txid);
/* Writes "%016x/%016x" into buf (LTX_POS_STR_LEN bytes). */
void ltx_format_pos(char *buf, struct ltx_pos pos);
int ltx_parse_pos(const char *s, struct ltx_pos *pos);
/* Formats ms since epoch as RFC 3339 with milliseconds, UTC ("...Z").
 * buf must hold at least 32 bytes. */
void ltx_format_time(char *buf, size_t size, int64_t ms);

/* CRC combine (crc64.h semantics): the CRC of A || B is
 * ltx_crc64_combine(crc(A), crc(B), ltx_crc64_xpow8(len(B))); the power
 * is worth computing once for blocks of one length. */
uint64_t ltx_crc64_xpow8(uint64_t n_bytes);
uint64_t ltx_crc64_combine(uint64_t crc_a, uint64_t crc_b, uint64_t xpow_b);

/* ---- Header and trailer ----------------------------------------------- */

/* Checks every header rule of LTX.md; returns the first broken rule. */
int ltx_header_validate(const struct ltx_header *h);
/* Serialises h (not validated) into out[LTX_HEADER_SIZE]. */
void ltx_header_encode(const struct ltx_header *h, uint8_t *out);
/* Parses and validates in[LTX_HEADER_SIZE] (magic, reserved bytes, rules). */
int ltx_header_decode(const uint8_t *in, struct ltx_header *h);

/* ---- Database checksums ----------------------------------------------- */

/* A database checksum is flag | XOR of page checksums of pages 1..N
 * (lock page skipped). Empty database: LTX_CHECKSUM_FLAG. Maintained
 * incrementally: replace page p's contribution with
 *   chk = LTX_CHECKSUM_FLAG | (chk ^ old_page_checksum ^ new_page_checksum) */
static inline uint64_t ltx_checksum_swap(uint64_t chk, uint64_t old_pc, uint64_t new_pc)
{
	return LTX_CHECKSUM_FLAG | (chk ^ old_pc ^ new_pc);
}

/* ---- Streaming decoder ------------------------------------------------ */

struct ltx_decoder;

/* Creates a decoder reading from read(ctx). Caller frees with
 * ltx_decoder_free(). Returns 0 or ERR_NOMEM. */
int ltx_decoder_new(struct ltx_decoder **out, ltx_read_fn read, void *ctx);
void ltx_decoder_free(struct ltx_decoder *d); /* NULL is a no-op */

/* Reads and validates the header. Must be called first, once. */
int ltx_decoder_header(struct ltx_decoder *d, struct ltx_header *h);

/* Reads the next page into page (h->page_size bytes). Returns 1 with
 * *pgno set, 0 at the end marker (and again on later calls), or a negative
 * code. Checks page order, pgno <= commit, the lock page, snapshot
 * completeness. A page is only trustworthy once ltx_decoder_finish() has
 * verified the file checksum. Errors are sticky: later calls return the
 * same code. */
int ltx_decoder_next_page(struct ltx_decoder *d, uint32_t *pgno, uint8_t *page);

/* After next_page returned 0: reads the trailer, checks the post-apply
 * flag, the file checksum, that the LZ4 frame ended exactly, that no byte
 * follows the trailer, and for snapshots that the post-apply checksum
 * equals the checksum of the pages. */
int ltx_decoder_finish(struct ltx_decoder *d, struct ltx_trailer *t);

/* Byte offset in the input where the decoder is (or where it found the
 * last error). */
uint64_t ltx_decoder_offset(const struct ltx_decoder *d);

/* XOR-with-flag of the page checksums of the pages decoded so far, i.e.
 * the database checksum if the file is a snapshot. */
uint64_t ltx_decoder_pages_checksum(const struct ltx_decoder *d);

/* Page checksum (ltx_page_checksum()) of the page most recently returned
 * by ltx_decoder_next_page(), 0 before the first. It is computed anyway
 * for the file checksum, so appliers can maintain a database checksum
 * without hashing the page a second time. */
uint64_t ltx_decoder_last_page_checksum(const struct ltx_decoder *d);
/* The same page's whole CRC (ltx_page_crc()). */
uint64_t ltx_decoder_last_page_crc(const struct ltx_decoder *d);

/* Convenience: decode a whole file, calling page_fn for each page (may be
 * NULL). Returns 0 or the first error; *err_offset gets the offset.
 * page_fn returns 0 to go on; anything else stops decoding and is
 * returned. Pages reach page_fn before the file checksum is verified, so
 * nothing they carry is trusted until ltx_decode_all() returns 0. h, t
 * and err_offset may be NULL. */
typedef int (*ltx_page_fn)(void *ctx, const struct ltx_header *h, uint32_t pgno, const uint8_t *page);
int ltx_decode_all(ltx_read_fn read, void *read_ctx, ltx_page_fn page_fn, void *page_ctx,
		   struct ltx_header *h, struct ltx_trailer *t, uint64_t *err_offset);

/* ---- Streaming encoder ------------------------------------------------ */

struct ltx_encoder;

/* Validates h and writes it. Compresses the page block as one LZ4 frame
 * (64 KiB blocks) if h->flags has LTX_FLAG_COMPRESS. Caller frees with
 * ltx_encoder_free(). */
int ltx_encoder_new(struct ltx_encoder **out, const struct ltx_header *h, ltx_write_fn write, void *ctx);
void ltx_encoder_free(struct ltx_encoder *e); /* NULL is a no-op */

/* Adds one page; enforces the same rules the decoder checks. */
int ltx_encoder_write_page(struct ltx_encoder *e, uint32_t pgno, const uint8_t *page);
/* The same with the page's CRC already known (crc: what
 * ltx_page_crc(pgno, page) returns, e.g. from the decoder that read and
 * verified the page: ltx_decoder_last_page_crc()): the encoder then reads
 * the page only to copy it, and derives the file checksum from crc. A
 * wrong crc makes a file that no decoder accepts. */
int ltx_encoder_write_page_crc(struct ltx_encoder *e, uint32_t pgno, const uint8_t *page, uint64_t crc);

/* Writes the end marker and trailer and flushes; *t (may be NULL) gets
 * the trailer. post_apply_checksum 0 means "the only valid value": the
 * pages' checksum for a snapshot, the bare flag for commit 0 (for any
 * other file 0 is ERR_LTX_POST_CHECKSUM_FLAG). A snapshot's post-apply
 * checksum must equal its pages' checksum (ERR_LTX_POST_CHECKSUM).
 *
 * Rule violations in write_page()/finish() emit nothing and leave the
 * encoder usable; a write or LZ4 failure is sticky. Output is buffered
 * (about 64 KiB), so the header reaches the write callback with the first
 * flush, not in ltx_encoder_new(). */
int ltx_encoder_finish(struct ltx_encoder *e, uint64_t post_apply_checksum, struct ltx_trailer *t);

/* ---- Memory adapters (file descriptor adapters live in fdio.h) ------- */

struct ltx_membuf {          /* read side: a borrowed buffer */
	const uint8_t *data;
	size_t len, off;
};
ssize_t ltx_membuf_read(void *ctx, void *buf, size_t len);

struct ltx_growbuf {         /* write side: a growing heap buffer; caller frees data */
	uint8_t *data;
	size_t len, cap;
};
int ltx_growbuf_write(void *ctx, const void *buf, size_t len);

#endif
