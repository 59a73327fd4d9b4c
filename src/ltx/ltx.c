/*
 * ltx.c — the LTX v1 codec. ../shared/LTX.md is the authority for the
 * format; this comment says how the code maps onto it.
 *
 * File layout (all integers big-endian):
 *
 *   offset  size  field
 *        0     4  magic "LTX1"
 *        4     4  flags (bit 0 = page block is one LZ4 frame)
 *        8     4  page size (power of two, 512..65536)
 *       12     4  commit (database size in pages after apply)
 *       16     8  min TXID          24  8  max TXID
 *       32     8  timestamp (ms)    40  8  pre-apply checksum
 *       48     8  WAL offset        56  8  WAL size
 *       64     4  WAL salt 1        68  4  WAL salt 2
 *       72     8  node ID           80 20  reserved, zero
 *      100     …  page block: { pgno u32, page[page_size] }* then 00 00 00 00
 *                 (as one LZ4 frame when flag bit 0 is set)
 *   end - 16   8  post-apply checksum
 *   end -  8   8  file checksum
 *
 * Invariants the decoder checks, each with its own ERR_LTX_* code, in the
 * order they are checked:
 *
 *   1. Header: magic, flags, page size, min TXID >= 1, max >= min,
 *      pre-apply = 0 iff snapshot else bit 63 set, WAL fields, reserved
 *      bytes zero (ltx_header_decode()).
 *   2. Compressed block: the frame starts with the LZ4 frame magic (no
 *      skippable frames) and decodes (ERR_LTX_LZ4).
 *   3. Each page frame: commit != 0, pgno strictly increasing, pgno <=
 *      commit, not the lock page, and for snapshots exactly the next page
 *      (ltx_decoder_next_page()).
 *   4. End of block: a zero pgno. For LZ4 the frame must end right there:
 *      a frame that ends inside a page frame, or holds a few bytes after
 *      the zero, is ERR_LTX_LZ4_SIZE; one that holds at least a page of
 *      data after it is a zero page number inside the block,
 *      ERR_LTX_PGNO_ZERO. Snapshots must have reached commit.
 *   5. Trailer: present (else ERR_LTX_TRUNCATED, as for every short read),
 *      nothing after it, post-apply flag (exactly the flag when commit is
 *      0), file checksum, and for snapshots post-apply = XOR of the pages.
 *
 * Decoder states (ltx_decoder.state), with the call behind each step:
 *
 *   HEADER --ltx_decoder_header()--> PAGES --next_page() = 0--> END
 *   END --ltx_decoder_finish()--> DONE;  any error --> FAILED (sticky: every
 *   later call returns the same code, and the offset stays where it was).
 *
 * Input is pulled through a fixed 64 KiB buffer. LZ4F_decompress() stops
 * exactly at the end of its frame, so whatever it leaves in the buffer is
 * the start of the trailer and is read from there before the callback is
 * asked for more. Bytes after the trailer are detected by one extra read.
 *
 * Checksums are computed in one pass over the page data: each page's CRC
 * (which is its page checksum without the flag) is also folded into the
 * running file CRC with the CRC "combine" identity
 *     crc(A || B) = crc(A) * x^(8*len(B)) mod P  XOR  crc(B),
 * where the multiplication by the fixed x^(8*(4 + page_size)) is a linear
 * map precomputed as sixteen 16-entry tables (struct ltx_sum).
 *
 * The encoder mirrors the decoder: it checks the same page rules before it
 * emits anything (a rule violation leaves the encoder usable), while an
 * output or LZ4 failure is sticky. Output is buffered (64 KiB, or one LZ4
 * update's worth) and handed to the write callback in large pieces.
 */
#include <inttypes.h>
#include <limits.h>
#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/crc64.h"
#include "base/check.h"
#include "base/err.h"
#include "ltx/ltx.h"

#define LTX_IO_BUF_SIZE (64 * 1024)
#define LTX_LZ4_FRAME_MAGIC 0x184D2204u
/* Reflected ISO polynomial without its x^64 term (as in crc64.c). */
#define LTX_CRC64_POLY 0xD800000000000000ull

/* ---- Byte order --------------------------------------------------------- */

static inline uint32_t ltx_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t ltx_get_be64(const uint8_t *p)
{
	return (uint64_t)ltx_get_be32(p) << 32 | ltx_get_be32(p + 4);
}

static inline void ltx_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void ltx_put_be64(uint8_t *p, uint64_t v)
{
	ltx_put_be32(p, (uint32_t)(v >> 32));
	ltx_put_be32(p + 4, (uint32_t)v);
}

/* ---- Small helpers ------------------------------------------------------ */

bool ltx_is_valid_page_size(uint32_t page_size)
{
	return page_size >= LTX_MIN_PAGE_SIZE && page_size <= LTX_MAX_PAGE_SIZE &&
	       (page_size & (page_size - 1)) == 0;
}

uint32_t ltx_lock_pgno(uint32_t page_size)
{
	if (page_size == 0)
		return 0;
	return (uint32_t)(LTX_PENDING_BYTE / page_size + 1);
}

bool ltx_header_is_snapshot(const struct ltx_header *h)
{
	return h->min_txid == 1;
}

uint64_t ltx_page_crc(uint32_t pgno, const void *data, uint32_t page_size)
{
	uint8_t be[4];

	ltx_put_be32(be, pgno);
	return crc64_update(crc64_update(0, be, sizeof(be)), data, page_size);
}

uint64_t ltx_page_checksum(uint32_t pgno, const void *data, uint32_t page_size)
{
	return LTX_CHECKSUM_FLAG | ltx_page_crc(pgno, data, page_size);
}

void ltx_format_filename(char *buf, uint64_t min_txid, uint64_t max_txid)
{
	snprintf(buf, LTX_FILENAME_LEN, "%016" PRIx64 "-%016" PRIx64 ".ltx", min_txid, max_txid);
}

/* Parses exactly 16 hex digits; lowercase only unless any_case. */
static int ltx_parse_hex16(const char *s, bool any_case, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (any_case && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return ERR_INVAL;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

int ltx_parse_filename(const char *name, uint64_t *min_txid, uint64_t *max_txid)
{
	uint64_t lo, hi;

	if (name == NULL || strlen(name) != LTX_FILENAME_LEN - 1)
		return ERR_INVAL;
	if (name[16] != '-' || memcmp(name + 33, ".ltx", 4) != 0)
		return ERR_INVAL;
	if (ltx_parse_hex16(name, false, &lo) != 0 || ltx_parse_hex16(name + 17, false, &hi) != 0)
		return ERR_INVAL;
	*min_txid = lo;
	*max_txid = hi;
	return 0;
}

void ltx_format_pos(char *buf, struct ltx_pos pos)
{
	snprintf(buf, LTX_POS_STR_LEN, "%016" PRIx64 "/%016" PRIx64, pos.txid, pos.checksum);
}

int ltx_parse_pos(const char *s, struct ltx_pos *pos)
{
	uint64_t txid, checksum;

	if (s == NULL || strlen(s) != LTX_POS_STR_LEN - 1 || s[16] != '/')
		return ERR_INVAL;
	if (ltx_parse_hex16(s, true, &txid) != 0 || ltx_parse_hex16(s + 17, true, &checksum) != 0)
		return ERR_INVAL;
	pos->txid = txid;
	pos->checksum = checksum;
	return 0;
}

static int64_t ltx_floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void ltx_format_time(char *buf, size_t size, int64_t ms)
{
	/* Civil-from-days (H. Hinnant), valid for the whole int64 range, where
	 * gmtime_r() would fail for years that do not fit in an int. */
	int64_t secs = ltx_floor_div(ms, 1000);
	int msec = (int)(ms % 1000); /* not ms - secs * 1000: that overflows at INT64_MIN */
	int64_t days = ltx_floor_div(secs, 86400);
	int sod = (int)(secs - days * 86400);
	int64_t z = days + 719468;
	int64_t era = ltx_floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int day = (int)(doy - (153 * mp + 2) / 5 + 1);
	int month = (int)(mp < 10 ? mp + 3 : mp - 9);
	int64_t year = yoe + era * 400 + (month <= 2);

	if (msec < 0)
		msec += 1000;
	snprintf(buf, size, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d.%03dZ", year, month, day, sod / 3600,
		 sod / 60 % 60, sod % 60, msec);
}

/* ---- Header ------------------------------------------------------------- */

int ltx_header_validate(const struct ltx_header *h)
{
	if (h->flags & ~LTX_FLAG_COMPRESS)
		return ERR_LTX_FLAGS;
	if (!ltx_is_valid_page_size(h->page_size))
		return ERR_LTX_PAGE_SIZE;
	if (h->min_txid == 0)
		return ERR_LTX_MIN_TXID;
	if (h->min_txid > h->max_txid)
		return ERR_LTX_TXID_ORDER;
	if (ltx_header_is_snapshot(h)) {
		if (h->pre_apply_checksum != 0)
			return ERR_LTX_PRE_CHECKSUM;
	} else if ((h->pre_apply_checksum & LTX_CHECKSUM_FLAG) == 0) {
		return ERR_LTX_PRE_CHECKSUM;
	}
	if (h->wal_offset < 0 || h->wal_size < 0)
		return ERR_LTX_WAL_FIELDS;
	if ((h->wal_salt1 != 0 || h->wal_salt2 != 0 || h->wal_size != 0) && h->wal_offset == 0)
		return ERR_LTX_WAL_FIELDS;
	return 0;
}

void ltx_header_encode(const struct ltx_header *h, uint8_t *out)
{
	memset(out, 0, LTX_HEADER_SIZE);
	memcpy(out, LTX_MAGIC, 4);
	ltx_put_be32(out + 4, h->flags);
	ltx_put_be32(out + 8, h->page_size);
	ltx_put_be32(out + 12, h->commit);
	ltx_put_be64(out + 16, h->min_txid);
	ltx_put_be64(out + 24, h->max_txid);
	ltx_put_be64(out + 32, (uint64_t)h->timestamp_ms);
	ltx_put_be64(out + 40, h->pre_apply_checksum);
	ltx_put_be64(out + 48, (uint64_t)h->wal_offset);
	ltx_put_be64(out + 56, (uint64_t)h->wal_size);
	ltx_put_be32(out + 64, h->wal_salt1);
	ltx_put_be32(out + 68, h->wal_salt2);
	ltx_put_be64(out + 72, h->node_id);
}

int ltx_header_decode(const uint8_t *in, struct ltx_header *h)
{
	struct ltx_header tmp;
	int rc;

	if (memcmp(in, LTX_MAGIC, 4) != 0)
		return ERR_LTX_MAGIC;
	tmp.flags = ltx_get_be32(in + 4);
	tmp.page_size = ltx_get_be32(in + 8);
	tmp.commit = ltx_get_be32(in + 12);
	tmp.min_txid = ltx_get_be64(in + 16);
	tmp.max_txid = ltx_get_be64(in + 24);
	tmp.timestamp_ms = (int64_t)ltx_get_be64(in + 32);
	tmp.pre_apply_checksum = ltx_get_be64(in + 40);
	tmp.wal_offset = (int64_t)ltx_get_be64(in + 48);
	tmp.wal_size = (int64_t)ltx_get_be64(in + 56);
	tmp.wal_salt1 = ltx_get_be32(in + 64);
	tmp.wal_salt2 = ltx_get_be32(in + 68);
	tmp.node_id = ltx_get_be64(in + 72);
	rc = ltx_header_validate(&tmp);
	if (rc != 0)
		return rc;
	for (int i = 80; i < LTX_HEADER_SIZE; i++)
		if (in[i] != 0)
			return ERR_LTX_RESERVED;
	*h = tmp;
	return 0;
}

/* Where in the header each header rule lives, for error offsets. */
static uint64_t ltx_header_err_offset(int rc)
{
	switch (rc) {
	case ERR_LTX_FLAGS: return 4;
	case ERR_LTX_PAGE_SIZE: return 8;
	case ERR_LTX_MIN_TXID: return 16;
	case ERR_LTX_TXID_ORDER: return 24;
	case ERR_LTX_PRE_CHECKSUM: return 40;
	case ERR_LTX_WAL_FIELDS: return 48;
	case ERR_LTX_RESERVED: return 80;
	default: return 0;
	}
}

/* ---- Checksum accumulator shared by the decoder and the encoder -------- */

struct ltx_sum {
	uint64_t file_crc;   /* CRC of the file-checksum stream so far */
	uint64_t pages_xor;  /* XOR of the page checksums so far */
	uint64_t last_page;  /* page checksum of the latest page */
	uint64_t last_crc;   /* its whole CRC (the checksum's flag hides a bit) */
	uint64_t shift[16][16]; /* c -> c * x^(8*(4 + page_size)) mod P, by nibble */
};

/* a * b mod P in the reflected representation (1<<63 is x^0). */
static uint64_t ltx_gf2_mulmod(uint64_t a, uint64_t b)
{
	uint64_t p = 0;

	for (uint64_t m = 1ull << 63; m != 0; m >>= 1) {
		if (a & m)
			p ^= b;
		b = (b >> 1) ^ ((b & 1) ? LTX_CRC64_POLY : 0);
	}
	return p;
}

/* x^(8 * n_bytes) mod P by square-and-multiply. */
static uint64_t ltx_gf2_xpow8(uint64_t n_bytes)
{
	uint64_t result = 1ull << 63;     /* x^0 */
	uint64_t sq = 1ull << (63 - 8);   /* x^8 */

	while (n_bytes != 0) {
		if (n_bytes & 1)
			result = ltx_gf2_mulmod(result, sq);
		sq = ltx_gf2_mulmod(sq, sq);
		n_bytes >>= 1;
	}
	return result;
}

uint64_t ltx_crc64_xpow8(uint64_t n_bytes)
{
	return ltx_gf2_xpow8(n_bytes);
}

uint64_t ltx_crc64_combine(uint64_t crc_a, uint64_t crc_b, uint64_t xpow_b)
{
	return ltx_gf2_mulmod(crc_a, xpow_b) ^ crc_b;
}

static void ltx_sum_init(struct ltx_sum *s, const uint8_t *header, uint32_t page_size)
{
	uint64_t basis[64];

	/* basis[i] = op * x^i; bit (63 - i) of a CRC is its x^i coefficient. */
	basis[0] = ltx_gf2_xpow8((uint64_t)LTX_PAGE_HEADER_SIZE + page_size);
	for (int i = 1; i < 64; i++)
		basis[i] = (basis[i - 1] >> 1) ^ ((basis[i - 1] & 1) ? LTX_CRC64_POLY : 0);
	for (int j = 0; j < 16; j++)
		for (unsigned v = 0; v < 16; v++) {
			uint64_t t = 0;

			for (int b = 0; b < 4; b++)
				if (v >> b & 1)
					t ^= basis[63 - 4 * j - b];
			s->shift[j][v] = t;
		}
	s->file_crc = crc64_update(0, header, LTX_HEADER_SIZE);
	s->pages_xor = 0;
	s->last_page = 0;
}

/* Adds a page whose CRC (of its header and data) is page_crc: the file
 * CRC moves past the page's bytes without reading them again. */
static void ltx_sum_known(struct ltx_sum *s, uint64_t page_crc)
{
	uint64_t shifted = 0;
	uint64_t c = s->file_crc;

	for (int j = 0; j < 16; j++)
		shifted ^= s->shift[j][(c >> (4 * j)) & 0xf];
	s->file_crc = shifted ^ page_crc;
	s->last_crc = page_crc;
	s->last_page = LTX_CHECKSUM_FLAG | page_crc;
	s->pages_xor ^= s->last_page;
}

static void ltx_sum_page(struct ltx_sum *s, uint32_t pgno, const uint8_t *page, uint32_t page_size)
{
	ltx_sum_known(s, ltx_page_crc(pgno, page, page_size));
}

/* The page a snapshot must hold after last (0 = none yet), skipping the
 * lock page. 64-bit so that it cannot wrap. */
static uint64_t ltx_snapshot_next(uint32_t last, uint32_t lock_pgno)
{
	uint64_t next = (uint64_t)last + 1;

	return next == lock_pgno ? next + 1 : next;
}

/* The page rules shared by the decoder and the encoder (pgno != 0). */
static int ltx_check_pgno(const struct ltx_header *h, uint32_t lock_pgno, uint32_t last, uint32_t pgno)
{
	if (h->commit == 0)
		return ERR_LTX_COMMIT_ZERO_PAGES;
	if (pgno <= last)
		return ERR_LTX_PAGE_ORDER;
	if (pgno > h->commit)
		return ERR_LTX_PGNO_COMMIT;
	if (pgno == lock_pgno)
		return ERR_LTX_LOCK_PAGE;
	if (ltx_header_is_snapshot(h) && pgno != ltx_snapshot_next(last, lock_pgno))
		return ERR_LTX_SNAPSHOT_INCOMPLETE;
	return 0;
}

static int ltx_check_post_flag(const struct ltx_header *h, uint64_t post)
{
	if ((post & LTX_CHECKSUM_FLAG) == 0 || (h->commit == 0 && post != LTX_CHECKSUM_FLAG))
		return ERR_LTX_POST_CHECKSUM_FLAG;
	return 0;
}

/* ---- Decoder ------------------------------------------------------------ */

enum ltx_dec_state { LTX_DEC_HEADER, LTX_DEC_PAGES, LTX_DEC_END, LTX_DEC_DONE, LTX_DEC_FAILED };

struct ltx_decoder {
	ltx_read_fn read;
	void *ctx;
	enum ltx_dec_state state;
	int err;              /* sticky error once state is FAILED */
	uint64_t err_off;
	struct ltx_header h;
	uint32_t lock_pgno;
	uint32_t last_pgno;   /* 0 before the first page */
	LZ4F_dctx *dctx;      /* only for compressed files */
	bool magic_checked;   /* LZ4 frame magic verified */
	bool frame_done;      /* LZ4F_decompress() reported the frame end */
	uint8_t *in;          /* LTX_IO_BUF_SIZE bytes of read-ahead */
	size_t in_pos, in_len;
	bool in_eof;
	uint64_t consumed;    /* input bytes the codec has used */
	struct ltx_sum sum;
};

static int dec_fail(struct ltx_decoder *d, int rc, uint64_t off)
{
	if (d->state == LTX_DEC_FAILED)
		return d->err;
	d->state = LTX_DEC_FAILED;
	d->err = rc;
	d->err_off = off;
	return rc;
}

/* The result of a read callback as a return code: bytes, or an error. */
static ssize_t dec_call_read(struct ltx_decoder *d, void *buf, size_t len)
{
	ssize_t n = d->read(d->ctx, buf, len);

	if (n < 0)
		return n < INT_MIN ? ERR_INVAL : n;
	if ((size_t)n > len)
		return ERR_INVAL;
	if (n == 0)
		d->in_eof = true;
	return n;
}

/* Makes sure the read-ahead buffer is not empty. Returns 1 if it holds
 * bytes, 0 at end of input, or a negative code (not yet recorded). */
static int dec_fill(struct ltx_decoder *d)
{
	ssize_t n;

	if (d->in_pos < d->in_len)
		return 1;
	if (d->in_eof)
		return 0;
	n = dec_call_read(d, d->in, LTX_IO_BUF_SIZE);
	if (n < 0)
		return (int)n;
	d->in_pos = 0;
	d->in_len = (size_t)n;
	return n > 0;
}

/* Reads exactly len bytes of the uncompressed input (header, plain page
 * block, trailer). Short input is ERR_LTX_TRUNCATED at the input's end. */
static int dec_read_raw(struct ltx_decoder *d, uint8_t *dst, size_t len)
{
	while (len > 0) {
		int rc;

		if (d->in_pos < d->in_len) {
			size_t n = d->in_len - d->in_pos;

			if (n > len)
				n = len;
			memcpy(dst, d->in + d->in_pos, n);
			d->in_pos += n;
			d->consumed += n;
			dst += n;
			len -= n;
			continue;
		}
		if (d->in_eof)
			return dec_fail(d, ERR_LTX_TRUNCATED, d->consumed);
		if (len >= LTX_IO_BUF_SIZE) {
			/* Large reads skip the buffer to save a copy. */
			ssize_t n = dec_call_read(d, dst, len);

			if (n < 0)
				return dec_fail(d, (int)n, d->consumed);
			d->consumed += (uint64_t)n;
			dst += n;
			len -= (size_t)n;
			continue;
		}
		rc = dec_fill(d);
		if (rc < 0)
			return dec_fail(d, rc, d->consumed);
	}
	return 0;
}

/* Checks that the LZ4 frame starts with the frame magic: LZ4F would also
 * skip "skippable" frames, which LTX does not allow. */
static int dec_check_lz4_magic(struct ltx_decoder *d)
{
	uint8_t m[4];
	size_t have = d->in_len - d->in_pos;

	if (have < sizeof(m)) {
		/* Compact, then top the buffer up to at least 4 bytes. */
		memmove(d->in, d->in + d->in_pos, have);
		d->in_pos = 0;
		d->in_len = have;
		while (d->in_len < sizeof(m) && !d->in_eof) {
			ssize_t n = dec_call_read(d, d->in + d->in_len, LTX_IO_BUF_SIZE - d->in_len);

			if (n < 0)
				return dec_fail(d, (int)n, d->consumed);
			d->in_len += (size_t)n;
		}
		if (d->in_len < sizeof(m))
			return dec_fail(d, ERR_LTX_TRUNCATED, d->consumed + d->in_len);
	}
	memcpy(m, d->in + d->in_pos, sizeof(m));
	/* The frame magic is little-endian, unlike everything else. */
	if (((uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 24) !=
	    LTX_LZ4_FRAME_MAGIC)
		return dec_fail(d, ERR_LTX_LZ4, d->consumed);
	d->magic_checked = true;
	return 0;
}

/* One LZ4F_decompress() step into dst[*dst_len]. Sets *dst_len to the
 * bytes produced. Returns 0, or a negative code (recorded). */
static int dec_lz4_step(struct ltx_decoder *d, uint8_t *dst, size_t *dst_len)
{
	size_t avail = d->in_len - d->in_pos;
	size_t src_len = avail;
	size_t want = *dst_len;
	/* The frame's own XXH32 checksums are not verified: the LTX file
	 * checksum (CRC-64 of the decompressed stream, checked in
	 * ltx_decoder_finish()) covers every byte they cover, and XXH32 was
	 * most of the CPU time of decoding a large file. */
	LZ4F_decompressOptions_t opts = { .skipChecksums = 1 };
	size_t r = LZ4F_decompress(d->dctx, dst, dst_len, d->in + d->in_pos, &src_len, &opts);

	if (LZ4F_isError(r))
		return dec_fail(d, ERR_LTX_LZ4, d->consumed);
	d->in_pos += src_len;
	d->consumed += src_len;
	if (r == 0) {
		d->frame_done = true;
		return 0;
	}
	if (*dst_len == 0 && src_len == 0 && want > 0) {
		int rc;

		/* No progress: LZ4F needs input it does not have. */
		if (avail > 0)
			return dec_fail(d, ERR_LTX_LZ4, d->consumed);
		rc = dec_fill(d);
		if (rc < 0)
			return dec_fail(d, rc, d->consumed);
		if (rc == 0)
			return dec_fail(d, ERR_LTX_TRUNCATED, d->consumed);
	}
	return 0;
}

/* Reads exactly len bytes of the decompressed page block. */
static int dec_read_lz4(struct ltx_decoder *d, uint8_t *dst, size_t len)
{
	while (len > 0) {
		size_t n = len;
		int rc;

		if (d->frame_done)
			return dec_fail(d, ERR_LTX_LZ4_SIZE, d->consumed);
		rc = dec_lz4_step(d, dst, &n);
		if (rc != 0)
			return rc;
		dst += n;
		len -= n;
	}
	return 0;
}

static int dec_read_block(struct ltx_decoder *d, uint8_t *dst, size_t len)
{
	int rc;

	if (d->dctx == NULL)
		return dec_read_raw(d, dst, len);
	if (!d->magic_checked) {
		rc = dec_check_lz4_magic(d);
		if (rc != 0)
			return rc;
	}
	return dec_read_lz4(d, dst, len);
}

/* After the zero pgno of a compressed block: runs the frame to its end
 * and classifies anything it still holds (invariant 4). */
static int dec_finish_frame(struct ltx_decoder *d)
{
	uint8_t scratch[4096];
	uint64_t extra = 0;
	uint64_t zero_off = d->consumed;

	while (!d->frame_done) {
		size_t n = sizeof(scratch);
		int rc = dec_lz4_step(d, scratch, &n);

		if (rc != 0)
			return rc;
		extra += n;
		if (extra >= d->h.page_size)
			return dec_fail(d, ERR_LTX_PGNO_ZERO, zero_off);
	}
	if (extra > 0)
		return dec_fail(d, ERR_LTX_LZ4_SIZE, d->consumed);
	return 0;
}

int ltx_decoder_new(struct ltx_decoder **out, ltx_read_fn read, void *ctx)
{
	struct ltx_decoder *d;

	*out = NULL;
	if (read == NULL)
		return ERR_INVAL;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return ERR_NOMEM;
	d->in = malloc(LTX_IO_BUF_SIZE);
	if (d->in == NULL)
		goto err_free_decoder;
	d->read = read;
	d->ctx = ctx;
	d->state = LTX_DEC_HEADER;
	*out = d;
	return 0;

err_free_decoder:
	free(d);
	return ERR_NOMEM;
}

void ltx_decoder_free(struct ltx_decoder *d)
{
	if (d == NULL)
		return;
	if (d->dctx != NULL)
		LZ4F_freeDecompressionContext(d->dctx);
	free(d->in);
	free(d);
}

int ltx_decoder_header(struct ltx_decoder *d, struct ltx_header *h)
{
	uint8_t buf[LTX_HEADER_SIZE];
	int rc;

	if (d->state == LTX_DEC_FAILED)
		return d->err;
	if (d->state != LTX_DEC_HEADER)
		return ERR_LTX_STATE;
	rc = dec_read_raw(d, buf, sizeof(buf));
	if (rc != 0)
		return rc;
	rc = ltx_header_decode(buf, &d->h);
	if (rc != 0)
		return dec_fail(d, rc, ltx_header_err_offset(rc));
	if (d->h.flags & LTX_FLAG_COMPRESS) {
		if (LZ4F_isError(LZ4F_createDecompressionContext(&d->dctx, LZ4F_VERSION))) {
			d->dctx = NULL;
			return dec_fail(d, ERR_NOMEM, d->consumed);
		}
	}
	d->lock_pgno = ltx_lock_pgno(d->h.page_size);
	ltx_sum_init(&d->sum, buf, d->h.page_size);
	d->state = LTX_DEC_PAGES;
	if (h != NULL)
		*h = d->h;
	return 0;
}

int ltx_decoder_next_page(struct ltx_decoder *d, uint32_t *pgno, uint8_t *page)
{
	static const uint8_t zero[LTX_PAGE_HEADER_SIZE];
	uint8_t be[LTX_PAGE_HEADER_SIZE];
	uint64_t frame_off = d->consumed;
	uint32_t n;
	int rc;

	if (d->state == LTX_DEC_FAILED)
		return d->err;
	if (d->state == LTX_DEC_END)
		return 0;
	if (d->state != LTX_DEC_PAGES)
		return ERR_LTX_STATE;
	if (page == NULL)
		return ERR_INVAL;
	rc = dec_read_block(d, be, sizeof(be));
	if (rc != 0)
		return rc;
	n = ltx_get_be32(be);
	if (n == 0) {
		if (d->dctx != NULL) {
			rc = dec_finish_frame(d);
			if (rc != 0)
				return rc;
		}
		if (ltx_header_is_snapshot(&d->h) && ltx_snapshot_next(d->last_pgno, d->lock_pgno) <= d->h.commit)
			return dec_fail(d, ERR_LTX_SNAPSHOT_INCOMPLETE, frame_off);
		d->sum.file_crc = crc64_update(d->sum.file_crc, zero, sizeof(zero));
		d->state = LTX_DEC_END;
		return 0;
	}
	rc = ltx_check_pgno(&d->h, d->lock_pgno, d->last_pgno, n);
	if (rc != 0)
		return dec_fail(d, rc, frame_off);
	rc = dec_read_block(d, page, d->h.page_size);
	if (rc != 0)
		return rc;
	ltx_sum_page(&d->sum, n, page, d->h.page_size);
	d->last_pgno = n;
	if (pgno != NULL)
		*pgno = n;
	return 1;
}

/* Returns 0 if the input has ended, ERR_LTX_TRAILING if it has not. */
static int dec_expect_eof(struct ltx_decoder *d)
{
	int rc = dec_fill(d);

	if (rc < 0)
		return dec_fail(d, rc, d->consumed);
	if (rc > 0)
		return dec_fail(d, ERR_LTX_TRAILING, d->consumed);
	return 0;
}

int ltx_decoder_finish(struct ltx_decoder *d, struct ltx_trailer *t)
{
	uint8_t buf[LTX_TRAILER_SIZE];
	uint64_t trailer_off = d->consumed;
	uint64_t post, file;
	int rc;

	if (d->state == LTX_DEC_FAILED)
		return d->err;
	if (d->state != LTX_DEC_END)
		return ERR_LTX_STATE;
	rc = dec_read_raw(d, buf, sizeof(buf));
	if (rc != 0)
		return rc;
	rc = dec_expect_eof(d);
	if (rc != 0)
		return rc;
	post = ltx_get_be64(buf);
	file = ltx_get_be64(buf + 8);
	rc = ltx_check_post_flag(&d->h, post);
	if (rc != 0)
		return dec_fail(d, rc, trailer_off);
	d->sum.file_crc = crc64_update(d->sum.file_crc, buf, 8);
	if (file != (LTX_CHECKSUM_FLAG | d->sum.file_crc))
		return dec_fail(d, ERR_LTX_FILE_CHECKSUM, trailer_off + 8);
	if (ltx_header_is_snapshot(&d->h) && post != (LTX_CHECKSUM_FLAG | d->sum.pages_xor))
		return dec_fail(d, ERR_LTX_POST_CHECKSUM, trailer_off);
	d->state = LTX_DEC_DONE;
	if (t != NULL) {
		t->post_apply_checksum = post;
		t->file_checksum = file;
	}
	return 0;
}

uint64_t ltx_decoder_offset(const struct ltx_decoder *d)
{
	return d->state == LTX_DEC_FAILED ? d->err_off : d->consumed;
}

uint64_t ltx_decoder_pages_checksum(const struct ltx_decoder *d)
{
	return LTX_CHECKSUM_FLAG | d->sum.pages_xor;
}

uint64_t ltx_decoder_last_page_checksum(const struct ltx_decoder *d)
{
	return d->sum.last_page;
}

uint64_t ltx_decoder_last_page_crc(const struct ltx_decoder *d)
{
	return d->sum.last_crc;
}

int ltx_decode_all(ltx_read_fn read, void *read_ctx, ltx_page_fn page_fn, void *page_ctx,
		   struct ltx_header *h, struct ltx_trailer *t, uint64_t *err_offset)
{
	struct ltx_decoder *d = NULL;
	struct ltx_header hdr;
	uint8_t *page = NULL;
	uint32_t pgno;
	int rc;

	if (err_offset != NULL)
		*err_offset = 0;
	rc = ltx_decoder_new(&d, read, read_ctx);
	if (rc != 0)
		return rc;
	rc = ltx_decoder_header(d, &hdr);
	if (rc != 0)
		goto out_free_decoder;
	/* Sized from a validated header: at most LTX_MAX_PAGE_SIZE. */
	page = malloc(hdr.page_size);
	if (page == NULL) {
		rc = ERR_NOMEM;
		goto out_free_decoder;
	}
	while ((rc = ltx_decoder_next_page(d, &pgno, page)) == 1) {
		if (page_fn != NULL) {
			rc = page_fn(page_ctx, &hdr, pgno, page);
			if (rc != 0)
				goto out_free_page;
		}
	}
	if (rc != 0)
		goto out_free_page;
	rc = ltx_decoder_finish(d, t);
	if (rc == 0 && h != NULL)
		*h = hdr;

out_free_page:
	free(page);
out_free_decoder:
	if (err_offset != NULL)
		*err_offset = ltx_decoder_offset(d);
	ltx_decoder_free(d);
	return rc;
}

/* ---- Encoder ------------------------------------------------------------ */

enum ltx_enc_state { LTX_ENC_PAGES, LTX_ENC_DONE, LTX_ENC_FAILED };

struct ltx_encoder {
	ltx_write_fn write;
	void *ctx;
	enum ltx_enc_state state;
	int err;              /* sticky error once state is FAILED */
	struct ltx_header h;
	uint32_t lock_pgno;
	uint32_t last_pgno;
	LZ4F_cctx *cctx;      /* only for compressed files */
	LZ4F_preferences_t prefs;
	uint8_t *out;         /* pending output */
	size_t out_len, out_cap;
	struct ltx_sum sum;
};

static int enc_fail(struct ltx_encoder *e, int rc)
{
	if (e->state != LTX_ENC_FAILED) {
		e->state = LTX_ENC_FAILED;
		e->err = rc;
	}
	return e->err;
}

static int enc_flush(struct ltx_encoder *e)
{
	int rc;

	if (e->out_len == 0)
		return 0;
	rc = e->write(e->ctx, e->out, e->out_len);
	if (rc != 0)
		return enc_fail(e, rc < 0 ? rc : ERR_INVAL);
	e->out_len = 0;
	return 0;
}

/* Appends bytes that go to the output as they are (header, plain page
 * block, trailer). */
static int enc_emit_raw(struct ltx_encoder *e, const uint8_t *p, size_t len)
{
	int rc;

	if (len > e->out_cap - e->out_len) {
		rc = enc_flush(e);
		if (rc != 0)
			return rc;
		if (len >= e->out_cap) {
			rc = e->write(e->ctx, p, len);
			return rc == 0 ? 0 : enc_fail(e, rc < 0 ? rc : ERR_INVAL);
		}
	}
	memcpy(e->out + e->out_len, p, len);
	e->out_len += len;
	return 0;
}

/* Feeds page-block bytes to the LZ4 frame, or straight to the output. */
static int enc_emit_block(struct ltx_encoder *e, const uint8_t *p, size_t len)
{
	size_t r;
	int rc;

	if (e->cctx == NULL)
		return enc_emit_raw(e, p, len);
	if (LZ4F_compressBound(len, &e->prefs) > e->out_cap - e->out_len) {
		rc = enc_flush(e);
		if (rc != 0)
			return rc;
		/* ltx_encoder_new() sized out_cap for the largest update (one
		 * page); an empty buffer must take it. */
		CHECK_MSG(LZ4F_compressBound(len, &e->prefs) <= e->out_cap, "len=%zu out_cap=%zu", len, e->out_cap);
	}
	r = LZ4F_compressUpdate(e->cctx, e->out + e->out_len, e->out_cap - e->out_len, p, len, NULL);
	if (LZ4F_isError(r))
		return enc_fail(e, ERR_LTX_LZ4);
	e->out_len += r;
	return 0;
}

int ltx_encoder_new(struct ltx_encoder **out, const struct ltx_header *h, ltx_write_fn write, void *ctx)
{
	struct ltx_encoder *e;
	uint8_t buf[LTX_HEADER_SIZE];
	size_t r;
	int rc;

	*out = NULL;
	if (write == NULL)
		return ERR_INVAL;
	rc = ltx_header_validate(h);
	if (rc != 0)
		return rc;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return ERR_NOMEM;
	e->write = write;
	e->ctx = ctx;
	e->h = *h;
	e->state = LTX_ENC_PAGES;
	e->lock_pgno = ltx_lock_pgno(h->page_size);
	e->out_cap = LTX_IO_BUF_SIZE;
	if (h->flags & LTX_FLAG_COMPRESS) {
		/* The frame LiteFS writes: 64 KiB independent blocks and a
		 * content checksum. */
		e->prefs.frameInfo.blockSizeID = LZ4F_max64KB;
		e->prefs.frameInfo.blockMode = LZ4F_blockIndependent;
		e->prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
		e->prefs.compressionLevel = 0;
		if (LZ4F_isError(LZ4F_createCompressionContext(&e->cctx, LZ4F_VERSION))) {
			e->cctx = NULL;
			rc = ERR_NOMEM;
			goto err_free_encoder;
		}
		/* Room for the largest single update, plus header and trailer
		 * bytes that may still be pending. */
		r = LZ4F_compressBound(h->page_size, &e->prefs);
		if (r < LZ4F_compressBound(0, &e->prefs))
			r = LZ4F_compressBound(0, &e->prefs);
		e->out_cap = r + LTX_HEADER_SIZE + LZ4F_HEADER_SIZE_MAX + LTX_TRAILER_SIZE + LTX_IO_BUF_SIZE;
	}
	e->out = malloc(e->out_cap);
	if (e->out == NULL) {
		rc = ERR_NOMEM;
		goto err_free_cctx;
	}
	ltx_header_encode(h, buf);
	ltx_sum_init(&e->sum, buf, h->page_size);
	memcpy(e->out, buf, sizeof(buf));
	e->out_len = sizeof(buf);
	if (e->cctx != NULL) {
		r = LZ4F_compressBegin(e->cctx, e->out + e->out_len, e->out_cap - e->out_len, &e->prefs);
		if (LZ4F_isError(r)) {
			rc = ERR_LTX_LZ4;
			goto err_free_out;
		}
		e->out_len += r;
	}
	*out = e;
	return 0;

err_free_out:
	free(e->out);
err_free_cctx:
	if (e->cctx != NULL)
		LZ4F_freeCompressionContext(e->cctx);
err_free_encoder:
	free(e);
	return rc;
}

void ltx_encoder_free(struct ltx_encoder *e)
{
	if (e == NULL)
		return;
	if (e->cctx != NULL)
		LZ4F_freeCompressionContext(e->cctx);
	free(e->out);
	free(e);
}

/* Both ways of adding a page: with its CRC known (*crc) or computed
 * (crc NULL). */
static int enc_page(struct ltx_encoder *e, uint32_t pgno, const uint8_t *page, const uint64_t *crc)
{
	uint8_t be[LTX_PAGE_HEADER_SIZE];
	int rc;

	if (e->state == LTX_ENC_FAILED)
		return e->err;
	if (e->state != LTX_ENC_PAGES)
		return ERR_LTX_STATE;
	if (page == NULL)
		return ERR_INVAL;
	if (pgno == 0)
		return ERR_LTX_PGNO_ZERO;
	rc = ltx_check_pgno(&e->h, e->lock_pgno, e->last_pgno, pgno);
	if (rc != 0)
		return rc;
	ltx_put_be32(be, pgno);
	rc = enc_emit_block(e, be, sizeof(be));
	if (rc == 0)
		rc = enc_emit_block(e, page, e->h.page_size);
	if (rc != 0)
		return rc;
	if (crc)
		ltx_sum_known(&e->sum, *crc);
	else
		ltx_sum_page(&e->sum, pgno, page, e->h.page_size);
	e->last_pgno = pgno;
	return 0;
}

int ltx_encoder_write_page(struct ltx_encoder *e, uint32_t pgno, const uint8_t *page)
{
	return enc_page(e, pgno, page, NULL);
}

int ltx_encoder_write_page_crc(struct ltx_encoder *e, uint32_t pgno, const uint8_t *page, uint64_t crc)
{
	return enc_page(e, pgno, page, &crc);
}

int ltx_encoder_finish(struct ltx_encoder *e, uint64_t post_apply_checksum, struct ltx_trailer *t)
{
	static const uint8_t zero[LTX_PAGE_HEADER_SIZE];
	uint8_t buf[LTX_TRAILER_SIZE];
	uint64_t pages = LTX_CHECKSUM_FLAG | e->sum.pages_xor;
	bool snapshot = ltx_header_is_snapshot(&e->h);
	uint64_t post = post_apply_checksum;
	size_t r;
	int rc;

	if (e->state == LTX_ENC_FAILED)
		return e->err;
	if (e->state != LTX_ENC_PAGES)
		return ERR_LTX_STATE;
	if (snapshot && ltx_snapshot_next(e->last_pgno, e->lock_pgno) <= e->h.commit)
		return ERR_LTX_SNAPSHOT_INCOMPLETE;
	if (post == 0) {
		if (snapshot)
			post = pages;
		else if (e->h.commit == 0)
			post = LTX_CHECKSUM_FLAG;
	}
	rc = ltx_check_post_flag(&e->h, post);
	if (rc != 0)
		return rc;
	if (snapshot && post != pages)
		return ERR_LTX_POST_CHECKSUM;

	rc = enc_emit_block(e, zero, sizeof(zero));
	if (rc != 0)
		return rc;
	if (e->cctx != NULL) {
		if (LZ4F_compressBound(0, &e->prefs) > e->out_cap - e->out_len) {
			rc = enc_flush(e);
			if (rc != 0)
				return rc;
		}
		r = LZ4F_compressEnd(e->cctx, e->out + e->out_len, e->out_cap - e->out_len, NULL);
		if (LZ4F_isError(r))
			return enc_fail(e, ERR_LTX_LZ4);
		e->out_len += r;
	}
	ltx_put_be64(buf, post);
	e->sum.file_crc = crc64_update(crc64_update(e->sum.file_crc, zero, sizeof(zero)), buf, 8);
	ltx_put_be64(buf + 8, LTX_CHECKSUM_FLAG | e->sum.file_crc);
	rc = enc_emit_raw(e, buf, sizeof(buf));
	if (rc == 0)
		rc = enc_flush(e);
	if (rc != 0)
		return rc;
	e->state = LTX_ENC_DONE;
	if (t != NULL) {
		t->post_apply_checksum = post;
		t->file_checksum = LTX_CHECKSUM_FLAG | e->sum.file_crc;
	}
	return 0;
}

/* ---- Memory adapters ---------------------------------------------------- */

ssize_t ltx_membuf_read(void *ctx, void *buf, size_t len)
{
	struct ltx_membuf *m = ctx;
	size_t avail = m->off < m->len ? m->len - m->off : 0;

	if (len > avail)
		len = avail;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	if (len > 0)
		memcpy(buf, m->data + m->off, len);
	m->off += len;
	return (ssize_t)len;
}

int ltx_growbuf_write(void *ctx, const void *buf, size_t len)
{
	struct ltx_growbuf *g = ctx;

	if (len == 0)
		return 0;
	if (len > SIZE_MAX - g->len)
		return ERR_NOMEM;
	if (g->len + len > g->cap) {
		size_t need = g->len + len;
		size_t cap = g->cap != 0 ? g->cap : 4096;
		uint8_t *p;

		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		p = realloc(g->data, cap);
		if (p == NULL)
			return ERR_NOMEM;
		g->data = p;
		g->cap = cap;
	}
	memcpy(g->data + g->len, buf, len);
	g->len += len;
	return 0;
}
