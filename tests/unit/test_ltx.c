/*
 * test_ltx.c — the LTX v1 codec against the files real LiteFS wrote, the
 * checksum vectors of LTX.md, random round trips, one crafted file per
 * rejection rule, truncation at every offset, trailing bytes, single bit
 * flips everywhere, odd read/write callbacks and the fd adapters.
 *
 * Golden files come from ../shared/testdata/litefs-v1 (tests run from the
 * repo root). LITEFS_TESTDATA overrides it: either the testdata directory
 * (litefs-v1 is appended if it exists there) or litefs-v1 itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ltx/crc64.h"
#include "base/err.h"
#include "base/fdio.h"
#include "ltx/ltx.h"

#define FLAG LTX_CHECKSUM_FLAG
#define GOLDEN_LTX "000000000000000d-000000000000000d.ltx"
#define N_CHAIN 5

#define assert_u64(a, b)                                                                       \
	do {                                                                                   \
		uint64_t a_ = (a), b_ = (b);                                                   \
		if (a_ != b_)                                                                  \
			fail_msg("%s = %016llx, want %016llx", #a, (unsigned long long)a_,     \
				 (unsigned long long)b_);                                      \
	} while (0)

#define assert_rc(rc, want)                                                                    \
	do {                                                                                   \
		int rc_ = (rc), want_ = (want);                                                \
		if (rc_ != want_)                                                              \
			fail_msg("%s = %d (%s), want %d (%s)", #rc, rc_, err_name(rc_), want_, \
				 err_name(want_));                                             \
	} while (0)

/* ---- Utilities ---------------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint32_t rng_below(uint32_t n)
{
	return (uint32_t)(rng_next() % n);
}

static char testdata_path[4096];

static const char *testdata_dir(void)
{
	const char *env = getenv("LITEFS_TESTDATA");
	struct stat st;

	if (env == NULL || *env == '\0')
		return "../shared/testdata/litefs-v1";
	snprintf(testdata_path, sizeof(testdata_path), "%s/litefs-v1", env);
	if (stat(testdata_path, &st) == 0 && S_ISDIR(st.st_mode))
		return testdata_path;
	return env;
}

/* Reads a golden file. Caller frees with free(). */
static uint8_t *read_golden(const char *name, size_t *len)
{
	char path[4096 + 256];
	struct stat st;
	uint8_t *buf;
	int fd, n;

	snprintf(path, sizeof(path), "%s/%s", testdata_dir(), name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		fail_msg("cannot open golden file %s: %s. The test data live in ../shared/testdata relative to the "
			 "repository root; point LITEFS_TESTDATA at that directory", path, strerror(errno));
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	n = fdio_pread_full(fd, buf, (size_t)st.st_size, 0);
	assert_int_equal(n, (int)st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void chain_name(char *buf, size_t size, int txid)
{
	char name[LTX_FILENAME_LEN];

	ltx_format_filename(name, (uint64_t)txid, (uint64_t)txid);
	snprintf(buf, size, "chain-compressed/%s", name);
}

/* Deterministic page contents: half compressible, half noise. */
static void fill_page(uint8_t *page, uint32_t page_size, uint32_t pgno, uint32_t salt)
{
	uint64_t s = (uint64_t)pgno * 0x9e3779b97f4a7c15ull + salt + 1;

	for (uint32_t i = 0; i < page_size; i++) {
		if (i < page_size / 2) {
			page[i] = (uint8_t)(pgno + salt + i / 64);
		} else {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			page[i] = (uint8_t)s;
		}
	}
}

/* A list of pages in file order. */
struct pageset {
	uint32_t page_size;
	size_t n, cap;
	uint32_t *pgnos;
	uint8_t *data;
};

static void ps_add(struct pageset *ps, uint32_t pgno, const uint8_t *page)
{
	if (ps->n == ps->cap) {
		ps->cap = ps->cap ? ps->cap * 2 : 16;
		ps->pgnos = realloc(ps->pgnos, ps->cap * sizeof(*ps->pgnos));
		ps->data = realloc(ps->data, ps->cap * ps->page_size);
		assert_non_null(ps->pgnos);
		assert_non_null(ps->data);
	}
	ps->pgnos[ps->n] = pgno;
	memcpy(ps->data + ps->n * ps->page_size, page, ps->page_size);
	ps->n++;
}

static const uint8_t *ps_page(const struct pageset *ps, size_t i)
{
	return ps->data + i * ps->page_size;
}

static void ps_free(struct pageset *ps)
{
	free(ps->pgnos);
	free(ps->data);
	memset(ps, 0, sizeof(*ps));
}

static int collect_page(void *ctx, const struct ltx_header *h, uint32_t pgno, const uint8_t *page)
{
	struct pageset *ps = ctx;

	if (ps->page_size == 0)
		ps->page_size = h->page_size;
	assert_int_equal(ps->page_size, h->page_size);
	ps_add(ps, pgno, page);
	return 0;
}

static int decode_mem(const uint8_t *data, size_t len, struct ltx_header *h, struct ltx_trailer *t,
		      struct pageset *ps, uint64_t *off)
{
	struct ltx_membuf m = {.data = data, .len = len, .off = 0};

	return ltx_decode_all(ltx_membuf_read, &m, ps ? collect_page : NULL, ps, h, t, off);
}

static int encode_mem(const struct ltx_header *h, const struct pageset *ps, uint64_t post,
		      struct ltx_growbuf *out, struct ltx_trailer *t)
{
	struct ltx_encoder *e = NULL;
	int rc = ltx_encoder_new(&e, h, ltx_growbuf_write, out);

	if (rc != 0)
		return rc;
	for (size_t i = 0; ps != NULL && i < ps->n; i++) {
		rc = ltx_encoder_write_page(e, ps->pgnos[i], ps_page(ps, i));
		if (rc != 0)
			goto out;
	}
	rc = ltx_encoder_finish(e, post, t);
out:
	ltx_encoder_free(e);
	return rc;
}

static void assert_header_equal(const struct ltx_header *a, const struct ltx_header *b)
{
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->page_size, b->page_size);
	assert_int_equal(a->commit, b->commit);
	assert_u64(a->min_txid, b->min_txid);
	assert_u64(a->max_txid, b->max_txid);
	assert_u64(a->timestamp_ms, b->timestamp_ms);
	assert_u64(a->pre_apply_checksum, b->pre_apply_checksum);
	assert_u64(a->wal_offset, b->wal_offset);
	assert_u64(a->wal_size, b->wal_size);
	assert_int_equal(a->wal_salt1, b->wal_salt1);
	assert_int_equal(a->wal_salt2, b->wal_salt2);
	assert_u64(a->node_id, b->node_id);
}

static struct ltx_header mk_header(uint32_t page_size, uint32_t commit, uint64_t min_txid, bool compress)
{
	struct ltx_header h = {
		.flags = compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = page_size,
		.commit = commit,
		.min_txid = min_txid,
		.max_txid = min_txid + 2,
		.timestamp_ms = 1790000000123,
		.pre_apply_checksum = min_txid == 1 ? 0 : FLAG | 0xabcdef,
		.node_id = 0x5f907e691c077395ull,
	};

	return h;
}

/* Database checksum of pages[1..n_pages] (lock page skipped). */
static uint64_t db_checksum(const uint8_t *db, uint32_t n_pages, uint32_t page_size)
{
	uint64_t chk = FLAG;
	uint32_t lock = ltx_lock_pgno(page_size);

	for (uint32_t p = 1; p <= n_pages; p++)
		if (p != lock)
			chk ^= ltx_page_checksum(p, db + (size_t)(p - 1) * page_size, page_size);
	return FLAG | chk;
}

/* ---- Crafted files (no validation on the way in) ----------------------- */

struct craft {
	struct ltx_header h;
	uint8_t hdr[LTX_HEADER_SIZE]; /* encoded from h; tests may edit it */
	struct ltx_growbuf blk;       /* the uncompressed page block stream */
	bool compress;
	uint64_t pages_xor;
};

static void craft_init(struct craft *c, uint32_t page_size, uint32_t commit, uint64_t min_txid, bool compress)
{
	memset(c, 0, sizeof(*c));
	c->h = mk_header(page_size, commit, min_txid, compress);
	c->compress = compress;
	ltx_header_encode(&c->h, c->hdr);
}

static void craft_bytes(struct craft *c, const void *p, size_t len)
{
	assert_int_equal(ltx_growbuf_write(&c->blk, p, len), 0);
}

static void craft_be32(struct craft *c, uint32_t v)
{
	uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	craft_bytes(c, be, 4);
}

/* Appends a page frame with `data_len` bytes of page data (normally the
 * page size). */
static void craft_page_len(struct craft *c, uint32_t pgno, uint32_t data_len)
{
	uint8_t *page = malloc(c->h.page_size);

	assert_non_null(page);
	fill_page(page, c->h.page_size, pgno, 7);
	craft_be32(c, pgno);
	craft_bytes(c, page, data_len);
	if (data_len == c->h.page_size)
		c->pages_xor ^= ltx_page_checksum(pgno, page, c->h.page_size);
	free(page);
}

static void craft_page(struct craft *c, uint32_t pgno)
{
	craft_page_len(c, pgno, c->h.page_size);
}

static void craft_end(struct craft *c)
{
	craft_be32(c, 0);
}

static uint64_t craft_pages_checksum(const struct craft *c)
{
	return FLAG | c->pages_xor;
}

/* A post-apply checksum every rule accepts for c's header. */
static uint64_t craft_good_post(const struct craft *c)
{
	if (c->h.min_txid == 1)
		return craft_pages_checksum(c);
	return c->h.commit == 0 ? FLAG : FLAG | 0x4242;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Writes header | block (LZ4-framed with prefs if c->compress) | trailer
 * with a file checksum that is right for those pieces. */
static void craft_build_prefs(const struct craft *c, uint64_t post, const LZ4F_preferences_t *prefs,
			      struct ltx_growbuf *out)
{
	uint8_t trailer[LTX_TRAILER_SIZE];
	uint64_t crc;

	memset(out, 0, sizeof(*out));
	assert_int_equal(ltx_growbuf_write(out, c->hdr, LTX_HEADER_SIZE), 0);
	if (c->compress) {
		size_t bound = LZ4F_compressFrameBound(c->blk.len, prefs);
		uint8_t *buf = malloc(bound);
		size_t n;

		assert_non_null(buf);
		n = LZ4F_compressFrame(buf, bound, c->blk.data, c->blk.len, prefs);
		assert_false(LZ4F_isError(n));
		assert_int_equal(ltx_growbuf_write(out, buf, n), 0);
		free(buf);
	} else {
		assert_int_equal(ltx_growbuf_write(out, c->blk.data, c->blk.len), 0);
	}
	put_be64(trailer, post);
	crc = crc64_update(0, c->hdr, LTX_HEADER_SIZE);
	crc = crc64_update(crc, c->blk.data, c->blk.len);
	crc = crc64_update(crc, trailer, 8);
	put_be64(trailer + 8, FLAG | crc);
	assert_int_equal(ltx_growbuf_write(out, trailer, sizeof(trailer)), 0);
}

static void craft_build(const struct craft *c, uint64_t post, struct ltx_growbuf *out)
{
	LZ4F_preferences_t prefs;

	memset(&prefs, 0, sizeof(prefs));
	prefs.frameInfo.blockSizeID = LZ4F_max64KB;
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	craft_build_prefs(c, post, &prefs, out);
}

static void craft_free(struct craft *c)
{
	free(c->blk.data);
	memset(&c->blk, 0, sizeof(c->blk));
}

/* Builds c with post, decodes it, and checks the result code. Returns the
 * error offset. */
static uint64_t craft_expect(struct craft *c, uint64_t post, int want)
{
	struct ltx_growbuf f;
	uint64_t off = 0;

	craft_build(c, post, &f);
	assert_rc(decode_mem(f.data, f.len, NULL, NULL, NULL, &off), want);
	free(f.data);
	return off;
}

/* ---- Helpers ------------------------------------------------------------ */

static void test_page_size_and_lock_page(void **state)
{
	(void)state;
	for (uint32_t ps = 512; ps <= 65536; ps *= 2)
		assert_true(ltx_is_valid_page_size(ps));
	assert_false(ltx_is_valid_page_size(0));
	assert_false(ltx_is_valid_page_size(256));
	assert_false(ltx_is_valid_page_size(1000));
	assert_false(ltx_is_valid_page_size(131072));
	assert_false(ltx_is_valid_page_size(4097));
	assert_int_equal(ltx_lock_pgno(4096), 262145);
	assert_int_equal(ltx_lock_pgno(512), 2097153);
	assert_int_equal(ltx_lock_pgno(65536), 16385);
}

static void test_filename(void **state)
{
	char buf[LTX_FILENAME_LEN];
	uint64_t lo = 0, hi = 0;

	(void)state;
	ltx_format_filename(buf, 1, 0xdeadbeefcafe);
	assert_string_equal(buf, "0000000000000001-0000deadbeefcafe.ltx");
	assert_int_equal(ltx_parse_filename(buf, &lo, &hi), 0);
	assert_u64(lo, 1);
	assert_u64(hi, 0xdeadbeefcafe);
	ltx_format_filename(buf, UINT64_MAX, UINT64_MAX);
	assert_string_equal(buf, "ffffffffffffffff-ffffffffffffffff.ltx");
	assert_int_equal(ltx_parse_filename(buf, &lo, &hi), 0);
	assert_u64(lo, UINT64_MAX);
	assert_rc(ltx_parse_filename("0000000000000001-0000DEADBEEFCAFE.ltx", &lo, &hi), ERR_INVAL);
	assert_rc(ltx_parse_filename("0000000000000001-0000000000000001.ltx.tmp", &lo, &hi), ERR_INVAL);
	assert_rc(ltx_parse_filename("000000000000001-0000000000000001.ltx", &lo, &hi), ERR_INVAL);
	assert_rc(ltx_parse_filename("0000000000000001_0000000000000001.ltx", &lo, &hi), ERR_INVAL);
	assert_rc(ltx_parse_filename("0000000000000001-0000000000000001.ltz", &lo, &hi), ERR_INVAL);
	assert_rc(ltx_parse_filename("000000000000000g-0000000000000001.ltx", &lo, &hi), ERR_INVAL);
	assert_rc(ltx_parse_filename("", &lo, &hi), ERR_INVAL);
}

static void test_pos(void **state)
{
	char buf[LTX_POS_STR_LEN];
	struct ltx_pos pos = {.txid = 0x2a, .checksum = 0xfe3831a381c602b9ull}, got;

	(void)state;
	ltx_format_pos(buf, pos);
	assert_string_equal(buf, "000000000000002a/fe3831a381c602b9");
	assert_int_equal(ltx_parse_pos(buf, &got), 0);
	assert_u64(got.txid, pos.txid);
	assert_u64(got.checksum, pos.checksum);
	assert_int_equal(ltx_parse_pos("000000000000002A/FE3831A381C602B9", &got), 0);
	assert_u64(got.checksum, pos.checksum);
	assert_rc(ltx_parse_pos("000000000000002a-fe3831a381c602b9", &got), ERR_INVAL);
	assert_rc(ltx_parse_pos("000000000000002a/fe3831a381c602b", &got), ERR_INVAL);
	assert_rc(ltx_parse_pos("000000000000002a/fe3831a381c602b99", &got), ERR_INVAL);
	assert_rc(ltx_parse_pos("x00000000000002a/fe3831a381c602b9", &got), ERR_INVAL);
}

static void test_format_time(void **state)
{
	char buf[32];

	(void)state;
	ltx_format_time(buf, sizeof(buf), 0);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	ltx_format_time(buf, sizeof(buf), 1795709355123);
	assert_string_equal(buf, "2026-11-26T16:09:15.123Z");
	ltx_format_time(buf, sizeof(buf), -1);
	assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
	ltx_format_time(buf, sizeof(buf), 951782400000); /* leap day */
	assert_string_equal(buf, "2000-02-29T00:00:00.000Z");
	ltx_format_time(buf, sizeof(buf), INT64_MAX);
	assert_string_equal(buf, "292278994-08-17T07:12:55.807Z");
	ltx_format_time(buf, sizeof(buf), INT64_MIN); /* must not crash or overflow */
	assert_true(strlen(buf) < sizeof(buf));
}

/* The vectors at the end of LTX.md. */
static void test_checksum_vectors(void **state)
{
	uint8_t db[3 * 512];

	(void)state;
	memset(db, '1', 512);
	assert_u64(db_checksum(db, 1, 512), 0xeb1a999231044dddull);
	memset(db, '2', 512);
	assert_u64(db_checksum(db, 1, 512), 0xc6e57aa102377eeeull);
	memset(db, 0x01, 512);
	memset(db + 512, 0x02, 512);
	memset(db + 1024, 0x03, 512);
	assert_u64(db_checksum(db, 3, 512), 0xefffffffecd99000ull);
	assert_u64(db_checksum(db, 0, 512), FLAG);
	/* The swap identity moves between the two 1-page databases. */
	memset(db, '1', 512);
	uint64_t one = ltx_page_checksum(1, db, 512);
	memset(db, '2', 512);
	uint64_t two = ltx_page_checksum(1, db, 512);
	assert_u64(ltx_checksum_swap(0xeb1a999231044dddull, one, two), 0xc6e57aa102377eeeull);
}

static void test_header_roundtrip(void **state)
{
	struct ltx_header h = mk_header(4096, 10, 5, true), got;
	uint8_t buf[LTX_HEADER_SIZE];

	(void)state;
	h.wal_offset = 32;
	h.wal_size = 4152;
	h.wal_salt1 = 0x11223344;
	h.wal_salt2 = 0x55667788;
	h.timestamp_ms = -5;
	ltx_header_encode(&h, buf);
	assert_memory_equal(buf, "LTX1", 4);
	assert_int_equal(ltx_header_decode(buf, &got), 0);
	assert_header_equal(&got, &h);
	assert_false(ltx_header_is_snapshot(&h));
	h.min_txid = 1;
	assert_true(ltx_header_is_snapshot(&h));
}

/* ---- Golden files -------------------------------------------------------- */

static void test_golden_uncompressed(void **state)
{
	static const uint32_t want_pgnos[] = {1, 7, 8};
	struct ltx_header h;
	struct ltx_trailer t;
	struct pageset ps = {0};
	size_t len, db_len;
	uint64_t off = 1;
	uint8_t *file = read_golden(GOLDEN_LTX, &len);
	uint8_t *db = read_golden("database", &db_len);

	(void)state;
	assert_int_equal(len, 12420);
	assert_rc(decode_mem(file, len, &h, &t, &ps, &off), 0);
	assert_u64(off, len);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.page_size, 4096);
	assert_int_equal(h.commit, 10);
	assert_u64(h.min_txid, 0xd);
	assert_u64(h.max_txid, 0xd);
	assert_u64(h.pre_apply_checksum, 0x9c74a15b4e4f246cull);
	assert_u64(h.wal_offset, 0);
	assert_u64(h.wal_size, 0);
	assert_u64(h.node_id, 0);
	assert_u64(t.post_apply_checksum, 0xfe3831a381c602b9ull);
	assert_u64(t.file_checksum, 0x9496a29358326fb5ull);
	assert_int_equal(ps.n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ps.pgnos[i], want_pgnos[i]);
		/* The database is the state after this file: its pages match. */
		assert_memory_equal(ps_page(&ps, i), db + (size_t)(want_pgnos[i] - 1) * 4096, 4096);
	}
	assert_int_equal(db_len, 40960);
	assert_u64(db_checksum(db, 10, 4096), 0xfe3831a381c602b9ull);
	ps_free(&ps);
	free(db);
	free(file);
}

/* Re-encoding the golden file's header and pages reproduces it exactly. */
static void test_golden_reencode_identical(void **state)
{
	struct ltx_header h;
	struct ltx_trailer t, t2;
	struct pageset ps = {0};
	struct ltx_growbuf out = {0};
	size_t len;
	uint8_t *file = read_golden(GOLDEN_LTX, &len);

	(void)state;
	assert_rc(decode_mem(file, len, &h, &t, &ps, NULL), 0);
	assert_rc(encode_mem(&h, &ps, t.post_apply_checksum, &out, &t2), 0);
	assert_int_equal(out.len, len);
	assert_memory_equal(out.data, file, len);
	assert_u64(t2.file_checksum, t.file_checksum);
	free(out.data);
	ps_free(&ps);
	free(file);
}

/* Applies the five compressed files in order, checks every header and
 * checksum, contiguity, and that re-encoding (compressed or not) keeps
 * the file checksum. */
static void test_golden_chain_compressed(void **state)
{
	uint8_t *db = NULL;
	uint32_t db_pages = 0, page_size = 0;
	struct ltx_pos pos = {0, 0};

	(void)state;
	for (int txid = 1; txid <= N_CHAIN; txid++) {
		char name[256];
		struct ltx_header h;
		struct ltx_trailer t, t2;
		struct pageset ps = {0};
		size_t len;
		uint8_t *file;

		chain_name(name, sizeof(name), txid);
		file = read_golden(name, &len);
		assert_rc(decode_mem(file, len, &h, &t, &ps, NULL), 0);
		assert_int_equal(h.flags, LTX_FLAG_COMPRESS);
		assert_int_equal(h.page_size, 4096);
		assert_int_equal(h.commit, 2);
		assert_u64(h.min_txid, (uint64_t)txid);
		assert_u64(h.max_txid, (uint64_t)txid);
		assert_u64(h.wal_offset, 0);
		assert_u64(h.wal_size, 0);
		assert_int_equal(h.wal_salt1, 0);
		assert_int_equal(h.wal_salt2, 0);
		assert_true(h.node_id != 0);
		if (txid == 1) {
			assert_true(ltx_header_is_snapshot(&h));
			assert_u64(h.pre_apply_checksum, 0);
		} else {
			/* Contiguity: this file follows the previous position. */
			assert_u64(h.min_txid, pos.txid + 1);
			assert_u64(h.pre_apply_checksum, pos.checksum);
		}

		/* Apply. */
		page_size = h.page_size;
		if (h.commit > db_pages) {
			db = realloc(db, (size_t)h.commit * page_size);
			assert_non_null(db);
			memset(db + (size_t)db_pages * page_size, 0, (size_t)(h.commit - db_pages) * page_size);
		}
		db_pages = h.commit;
		for (size_t i = 0; i < ps.n; i++)
			memcpy(db + (size_t)(ps.pgnos[i] - 1) * page_size, ps_page(&ps, i), page_size);
		assert_u64(db_checksum(db, db_pages, page_size), t.post_apply_checksum);
		pos.txid = h.max_txid;
		pos.checksum = t.post_apply_checksum;

		/* Re-encode compressed: our LZ4 bytes differ from LiteFS's,
		 * the file checksum (over uncompressed data) does not. An
		 * uncompressed re-encode changes the hashed flags field, so
		 * only its pages and post-apply checksum must survive. */
		for (int compress = 1; compress >= 0; compress--) {
			struct ltx_growbuf out = {0};
			struct ltx_header h2 = h, h3;
			struct ltx_trailer t3;
			struct pageset ps3 = {0};

			h2.flags = compress ? LTX_FLAG_COMPRESS : 0;
			assert_rc(encode_mem(&h2, &ps, t.post_apply_checksum, &out, &t2), 0);
			if (compress)
				assert_u64(t2.file_checksum, t.file_checksum);
			assert_rc(decode_mem(out.data, out.len, &h3, &t3, &ps3, NULL), 0);
			assert_header_equal(&h3, &h2);
			assert_u64(t3.file_checksum, t2.file_checksum);
			assert_u64(t3.post_apply_checksum, t.post_apply_checksum);
			assert_int_equal(ps3.n, ps.n);
			assert_memory_equal(ps3.pgnos, ps.pgnos, ps.n * sizeof(uint32_t));
			assert_memory_equal(ps3.data, ps.data, ps.n * ps.page_size);
			ps_free(&ps3);
			free(out.data);
		}
		ps_free(&ps);
		free(file);
	}
	assert_u64(pos.checksum, 0xe9832b942d1c01caull);
	assert_u64(db_checksum(db, db_pages, page_size), 0xe9832b942d1c01caull);
	free(db);
}

/* The streaming API step by step on a golden file. */
static void test_streaming_api(void **state)
{
	struct ltx_decoder *d = NULL;
	struct ltx_header h;
	struct ltx_trailer t;
	uint8_t page[4096];
	uint32_t pgno;
	uint64_t xor = FLAG;
	size_t len;
	char name[256];
	uint8_t *file;
	struct ltx_membuf m;

	(void)state;
	chain_name(name, sizeof(name), 1);
	file = read_golden(name, &len);
	m = (struct ltx_membuf){.data = file, .len = len, .off = 0};
	assert_int_equal(ltx_decoder_new(&d, ltx_membuf_read, &m), 0);
	assert_rc(ltx_decoder_next_page(d, &pgno, page), ERR_LTX_STATE);
	assert_rc(ltx_decoder_finish(d, &t), ERR_LTX_STATE);
	assert_rc(ltx_decoder_header(d, &h), 0);
	assert_rc(ltx_decoder_header(d, &h), ERR_LTX_STATE);
	assert_rc(ltx_decoder_finish(d, &t), ERR_LTX_STATE);
	assert_u64(ltx_decoder_last_page_checksum(d), 0);
	for (uint32_t want = 1; want <= 2; want++) {
		assert_rc(ltx_decoder_next_page(d, &pgno, page), 1);
		assert_int_equal(pgno, want);
		assert_u64(ltx_decoder_last_page_checksum(d), ltx_page_checksum(pgno, page, 4096));
		xor ^= ltx_page_checksum(pgno, page, 4096);
	}
	assert_rc(ltx_decoder_next_page(d, &pgno, page), 0);
	assert_rc(ltx_decoder_next_page(d, &pgno, page), 0);
	assert_u64(ltx_decoder_pages_checksum(d), FLAG | xor);
	assert_rc(ltx_decoder_finish(d, &t), 0);
	assert_u64(t.post_apply_checksum, FLAG | xor);
	assert_u64(ltx_decoder_offset(d), len);
	assert_rc(ltx_decoder_finish(d, &t), ERR_LTX_STATE);
	ltx_decoder_free(d);
	ltx_decoder_free(NULL);
	ltx_encoder_free(NULL);
	free(file);
}

/* ---- Round trips ---------------------------------------------------------- */

static void roundtrip(const struct ltx_header *h, const struct pageset *ps, uint64_t post)
{
	struct ltx_growbuf out = {0};
	struct ltx_header h2;
	struct ltx_trailer t, t2;
	struct pageset got = {0};
	uint64_t off;

	assert_rc(encode_mem(h, ps, post, &out, &t), 0);
	assert_rc(decode_mem(out.data, out.len, &h2, &t2, &got, &off), 0);
	assert_u64(off, out.len);
	assert_header_equal(&h2, h);
	assert_u64(t2.file_checksum, t.file_checksum);
	assert_u64(t2.post_apply_checksum, t.post_apply_checksum);
	assert_int_equal(got.n, ps->n);
	if (ps->n > 0) {
		assert_memory_equal(got.pgnos, ps->pgnos, ps->n * sizeof(uint32_t));
		assert_memory_equal(got.data, ps->data, ps->n * ps->page_size);
	}
	if (!(h->flags & LTX_FLAG_COMPRESS))
		assert_int_equal(out.len, LTX_HEADER_SIZE + ps->n * (4 + (size_t)h->page_size) + 4 +
						  LTX_TRAILER_SIZE);
	ps_free(&got);
	free(out.data);
}

static void test_roundtrip_random(void **state)
{
	(void)state;
	for (int iter = 0; iter < 60; iter++) {
		uint32_t page_size = 512u << rng_below(8);
		bool compress = rng_below(2);
		bool snapshot = iter % 3 == 0;
		uint32_t commit = 1 + rng_below(snapshot ? 40 : 2000);
		struct ltx_header h = mk_header(page_size, commit, snapshot ? 1 : 2 + rng_below(1000), compress);
		struct pageset ps = {.page_size = page_size};
		uint8_t *page = malloc(page_size);
		uint32_t budget = (4u << 20) / page_size; /* keep each file <= 4 MiB */

		assert_non_null(page);
		for (uint32_t p = 1; p <= commit && ps.n < budget; p++) {
			if (!snapshot && rng_below(4) != 0)
				continue;
			fill_page(page, page_size, p, (uint32_t)iter);
			if (rng_below(5) == 0)
				memset(page, 0, page_size);
			ps_add(&ps, p, page);
		}
		if (snapshot)
			h.commit = commit = (uint32_t)ps.n;
		h.wal_offset = rng_below(2) ? 0 : 32 + rng_below(1 << 20);
		h.wal_size = h.wal_offset ? rng_below(1 << 20) : 0;
		h.wal_salt1 = h.wal_offset ? (uint32_t)rng_next() : 0;
		roundtrip(&h, &ps, snapshot ? 0 : FLAG | rng_next());
		free(page);
		ps_free(&ps);
	}
}

/* Pages given with their CRC known (ltx_encoder_write_page_crc(), as a
 * fork writes the merged pages) encode to the same bytes as pages hashed
 * by the encoder, whatever bit 63 of each CRC (the checksum's flag hides
 * it); the decoder hands out the same CRCs; a wrong CRC makes a file the
 * decoder refuses. */
static void test_encode_with_known_crc(void **state)
{
	(void)state;
	for (int iter = 0; iter < 12; iter++) {
		uint32_t page_size = 512u << rng_below(4);
		struct ltx_header h = mk_header(page_size, 40, 1, iter % 2);
		struct ltx_growbuf want = { 0 }, got = { 0 }, bad = { 0 };
		struct ltx_encoder *e, *eb;
		uint8_t *page = malloc(page_size);
		int high = 0;

		assert_non_null(page);
		struct pageset ps = {.page_size = page_size};
		for (uint32_t p = 1; p <= 40; p++) {
			fill_page(page, page_size, p, (uint32_t)iter);
			ps_add(&ps, p, page);
		}
		assert_rc(encode_mem(&h, &ps, 0, &want, NULL), 0);
		assert_rc(ltx_encoder_new(&e, &h, ltx_growbuf_write, &got), 0);
		assert_rc(ltx_encoder_new(&eb, &h, ltx_growbuf_write, &bad), 0);
		for (size_t i = 0; i < ps.n; i++) {
			uint64_t crc = ltx_page_crc(ps.pgnos[i], ps_page(&ps, i), page_size);
			assert_u64(FLAG | crc, ltx_page_checksum(ps.pgnos[i], ps_page(&ps, i), page_size));
			high += crc >> 63 != 0;
			assert_rc(ltx_encoder_write_page_crc(e, ps.pgnos[i], ps_page(&ps, i), crc), 0);
			assert_rc(ltx_encoder_write_page_crc(eb, ps.pgnos[i], ps_page(&ps, i), i == 7 ? crc ^ 1 : crc), 0);
		}
		assert_rc(ltx_encoder_finish(e, 0, NULL), 0);
		assert_rc(ltx_encoder_finish(eb, 0, NULL), 0);
		assert_int_equal(got.len, want.len);
		assert_memory_equal(got.data, want.data, want.len);
		assert_true(high > 0 && high < 40); /* both kinds of CRC were seen */

		struct ltx_membuf m = {.data = got.data, .len = got.len};
		struct ltx_decoder *d;
		uint32_t pgno;
		assert_rc(ltx_decoder_new(&d, ltx_membuf_read, &m), 0);
		assert_rc(ltx_decoder_header(d, &h), 0);
		for (size_t i = 0; i < ps.n; i++) {
			assert_int_equal(ltx_decoder_next_page(d, &pgno, page), 1);
			assert_u64(ltx_decoder_last_page_crc(d), ltx_page_crc(pgno, page, page_size));
			assert_u64(ltx_decoder_last_page_checksum(d), FLAG | ltx_decoder_last_page_crc(d));
		}
		ltx_decoder_free(d);
		assert_rc(decode_mem(bad.data, bad.len, NULL, NULL, NULL, NULL), ERR_LTX_FILE_CHECKSUM);
		ltx_encoder_free(e);
		ltx_encoder_free(eb);
		ps_free(&ps);
		free(page);
		free(want.data);
		free(got.data);
		free(bad.data);
	}
}

static void test_roundtrip_edge_files(void **state)
{
	(void)state;
	for (int compress = 0; compress <= 1; compress++) {
		struct pageset none = {.page_size = 512};
		struct ltx_header h;

		/* Zero pages: a transaction that only shrank the database. */
		h = mk_header(512, 7, 9, compress);
		roundtrip(&h, &none, FLAG | 0x77);
		/* Commit 0: a deleted database; post-apply is exactly the flag. */
		h = mk_header(65536, 0, 3, compress);
		roundtrip(&h, &none, FLAG);
		roundtrip(&h, &none, 0); /* 0 asks the encoder to fill it in */
		/* An empty snapshot. */
		h = mk_header(1024, 0, 1, compress);
		roundtrip(&h, &none, FLAG);
		/* Pages just below and above the lock page (64 KiB pages). */
		struct pageset ps = {.page_size = 65536};
		uint8_t *page = calloc(1, 65536);

		assert_non_null(page);
		h = mk_header(65536, 16386, 4, compress);
		ps_add(&ps, 16384, page);
		page[0] = 1;
		ps_add(&ps, 16386, page);
		roundtrip(&h, &ps, FLAG | 1);
		ps_free(&ps);
		free(page);
	}
}

/* A snapshot of a database larger than 1 GiB skips exactly the lock page.
 * 16386 pages of 64 KiB, compressed, mostly zeros. */
static void test_snapshot_across_lock_page(void **state)
{
	struct ltx_header h = mk_header(65536, 16386, 1, true);
	struct ltx_encoder *e = NULL;
	struct ltx_growbuf out = {0};
	struct ltx_trailer t, t2;
	uint8_t *page = calloc(1, 65536);
	uint64_t chk = FLAG;

	(void)state;
	assert_non_null(page);
	assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &out), 0);
	for (uint32_t p = 1; p <= 16386; p++) {
		if (p == 16385) {
			assert_rc(ltx_encoder_write_page(e, p, page), ERR_LTX_LOCK_PAGE);
			continue;
		}
		memcpy(page, &p, sizeof(p));
		chk ^= ltx_page_checksum(p, page, 65536);
		assert_rc(ltx_encoder_write_page(e, p, page), 0);
	}
	assert_rc(ltx_encoder_finish(e, 0, &t), 0);
	assert_u64(t.post_apply_checksum, FLAG | chk);
	ltx_encoder_free(e);
	assert_rc(decode_mem(out.data, out.len, NULL, &t2, NULL, NULL), 0);
	assert_u64(t2.file_checksum, t.file_checksum);
	free(out.data);
	free(page);
}

/* The decoder accepts any LZ4 frame parameters. */
static void test_lz4_frame_params(void **state)
{
	static const struct {
		LZ4F_blockSizeID_t block_size;
		LZ4F_blockMode_t mode;
		LZ4F_contentChecksum_t content_checksum;
		LZ4F_blockChecksum_t block_checksum;
		bool content_size;
		int level;
	} cases[] = {
		{LZ4F_max64KB, LZ4F_blockIndependent, LZ4F_noContentChecksum, LZ4F_noBlockChecksum, false, 0},
		{LZ4F_max256KB, LZ4F_blockLinked, LZ4F_contentChecksumEnabled, LZ4F_blockChecksumEnabled, true, 0},
		{LZ4F_max1MB, LZ4F_blockLinked, LZ4F_noContentChecksum, LZ4F_blockChecksumEnabled, false, 9},
		{LZ4F_max4MB, LZ4F_blockIndependent, LZ4F_contentChecksumEnabled, LZ4F_noBlockChecksum, true, 3},
		{LZ4F_default, LZ4F_blockLinked, LZ4F_noContentChecksum, LZ4F_noBlockChecksum, false, -5},
	};
	struct craft c;
	uint64_t want_file = 0;

	(void)state;
	craft_init(&c, 4096, 300, 2, true);
	for (uint32_t p = 1; p <= 300; p += 2)
		craft_page(&c, p);
	craft_end(&c);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		LZ4F_preferences_t prefs;
		struct ltx_growbuf f;
		struct ltx_trailer t;
		struct pageset ps = {0};

		memset(&prefs, 0, sizeof(prefs));
		prefs.frameInfo.blockSizeID = cases[i].block_size;
		prefs.frameInfo.blockMode = cases[i].mode;
		prefs.frameInfo.contentChecksumFlag = cases[i].content_checksum;
		prefs.frameInfo.blockChecksumFlag = cases[i].block_checksum;
		prefs.frameInfo.contentSize = cases[i].content_size ? c.blk.len : 0;
		prefs.compressionLevel = cases[i].level;
		craft_build_prefs(&c, craft_good_post(&c), &prefs, &f);
		assert_rc(decode_mem(f.data, f.len, NULL, &t, &ps, NULL), 0);
		assert_int_equal(ps.n, 150);
		if (i == 0)
			want_file = t.file_checksum;
		assert_u64(t.file_checksum, want_file);
		ps_free(&ps);
		free(f.data);
	}
	craft_free(&c);
}

/* ---- One crafted file per rejection rule --------------------------------- */

/* A valid 2-page non-snapshot file, optionally with an edited header. */
static void craft_basic(struct craft *c, bool compress)
{
	craft_init(c, 512, 4, 5, compress);
	craft_page(c, 1);
	craft_page(c, 3);
	craft_end(c);
}

static void expect_header_rule(void (*edit)(struct ltx_header *h, uint8_t *hdr), int want, uint64_t want_off)
{
	for (int compress = 0; compress <= 1; compress++) {
		struct craft c;
		struct ltx_header h;

		craft_basic(&c, compress);
		edit(&c.h, c.hdr);
		/* Edits to the struct are re-encoded; byte edits stand. */
		h = c.h;
		if (want != ERR_LTX_MAGIC && want != ERR_LTX_RESERVED)
			ltx_header_encode(&h, c.hdr);
		assert_u64(craft_expect(&c, craft_good_post(&c), want), want_off);
		/* Header rules go through ltx_header_validate() too, and the
		 * encoder refuses such headers. */
		if (want != ERR_LTX_MAGIC && want != ERR_LTX_RESERVED) {
			struct ltx_encoder *e = NULL;
			struct ltx_growbuf out = {0};

			assert_rc(ltx_header_validate(&h), want);
			assert_rc(ltx_encoder_new(&e, &h, ltx_growbuf_write, &out), want);
			assert_null(e);
		}
		craft_free(&c);
	}
}

static void edit_magic(struct ltx_header *h, uint8_t *hdr) { (void)h; hdr[3] = '2'; }
static void edit_flags(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->flags |= 0x2; }
static void edit_flags_high(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->flags |= 0x80000000u; }
static void edit_page_size_1000(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->page_size = 1000; }
static void edit_page_size_256(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->page_size = 256; }
static void edit_page_size_128k(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->page_size = 131072; }
static void edit_page_size_0(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->page_size = 0; }
static void edit_min_txid(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->min_txid = 0; }
static void edit_txid_order(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->min_txid = 9; h->max_txid = 8; }
static void edit_pre_snapshot(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->min_txid = 1; h->pre_apply_checksum = FLAG | 1; }
static void edit_pre_zero(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->pre_apply_checksum = 0; }
static void edit_pre_noflag(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->pre_apply_checksum = 0x1234; }
static void edit_wal_neg_off(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->wal_offset = -1; }
static void edit_wal_neg_size(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->wal_offset = 32; h->wal_size = -1; }
static void edit_wal_salt1(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->wal_salt1 = 1; }
static void edit_wal_salt2(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->wal_salt2 = 1; }
static void edit_wal_size(struct ltx_header *h, uint8_t *hdr) { (void)hdr; h->wal_size = 4096; }
static void edit_reserved_first(struct ltx_header *h, uint8_t *hdr) { (void)h; hdr[80] = 1; }
static void edit_reserved_last(struct ltx_header *h, uint8_t *hdr) { (void)h; hdr[99] = 0x80; }

static void test_reject_header_rules(void **state)
{
	(void)state;
	expect_header_rule(edit_magic, ERR_LTX_MAGIC, 0);
	expect_header_rule(edit_flags, ERR_LTX_FLAGS, 4);
	expect_header_rule(edit_flags_high, ERR_LTX_FLAGS, 4);
	expect_header_rule(edit_page_size_1000, ERR_LTX_PAGE_SIZE, 8);
	expect_header_rule(edit_page_size_256, ERR_LTX_PAGE_SIZE, 8);
	expect_header_rule(edit_page_size_128k, ERR_LTX_PAGE_SIZE, 8);
	expect_header_rule(edit_page_size_0, ERR_LTX_PAGE_SIZE, 8);
	expect_header_rule(edit_min_txid, ERR_LTX_MIN_TXID, 16);
	expect_header_rule(edit_txid_order, ERR_LTX_TXID_ORDER, 24);
	expect_header_rule(edit_pre_snapshot, ERR_LTX_PRE_CHECKSUM, 40);
	expect_header_rule(edit_pre_zero, ERR_LTX_PRE_CHECKSUM, 40);
	expect_header_rule(edit_pre_noflag, ERR_LTX_PRE_CHECKSUM, 40);
	expect_header_rule(edit_wal_neg_off, ERR_LTX_WAL_FIELDS, 48);
	expect_header_rule(edit_wal_neg_size, ERR_LTX_WAL_FIELDS, 48);
	expect_header_rule(edit_wal_salt1, ERR_LTX_WAL_FIELDS, 48);
	expect_header_rule(edit_wal_salt2, ERR_LTX_WAL_FIELDS, 48);
	expect_header_rule(edit_wal_size, ERR_LTX_WAL_FIELDS, 48);
	expect_header_rule(edit_reserved_first, ERR_LTX_RESERVED, 80);
	expect_header_rule(edit_reserved_last, ERR_LTX_RESERVED, 80);
}

static void test_accept_wal_fields(void **state)
{
	struct craft c;

	(void)state;
	craft_basic(&c, false);
	c.h.wal_offset = 32;
	c.h.wal_size = 4152;
	c.h.wal_salt1 = 0xdead;
	c.h.wal_salt2 = 0xbeef;
	ltx_header_encode(&c.h, c.hdr);
	craft_expect(&c, craft_good_post(&c), 0);
	/* An offset alone is allowed (LTX.md only constrains salt and size). */
	c.h.wal_size = 0;
	c.h.wal_salt1 = c.h.wal_salt2 = 0;
	ltx_header_encode(&c.h, c.hdr);
	craft_expect(&c, craft_good_post(&c), 0);
	craft_free(&c);
}

static void test_reject_page_rules(void **state)
{
	(void)state;
	for (int compress = 0; compress <= 1; compress++) {
		struct craft c;
		uint64_t off;

		/* Out of order, and duplicated. */
		craft_init(&c, 512, 5, 2, compress);
		craft_page(&c, 3);
		craft_page(&c, 2);
		craft_end(&c);
		off = craft_expect(&c, craft_good_post(&c), ERR_LTX_PAGE_ORDER);
		if (!compress)
			assert_u64(off, LTX_HEADER_SIZE + 4 + 512);
		craft_free(&c);

		craft_init(&c, 512, 5, 2, compress);
		craft_page(&c, 2);
		craft_page(&c, 2);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_PAGE_ORDER);
		craft_free(&c);

		/* Beyond commit. */
		craft_init(&c, 1024, 2, 2, compress);
		craft_page(&c, 1);
		craft_page(&c, 3);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_PGNO_COMMIT);
		craft_free(&c);

		/* The lock page (64 KiB pages: page 16385). */
		craft_init(&c, 65536, 16386, 2, compress);
		craft_page(&c, 16384);
		craft_page(&c, 16385);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_LOCK_PAGE);
		craft_free(&c);

		/* Commit 0 with a page. */
		craft_init(&c, 512, 0, 2, compress);
		craft_page(&c, 1);
		craft_end(&c);
		craft_expect(&c, FLAG, ERR_LTX_COMMIT_ZERO_PAGES);
		craft_free(&c);

		/* Snapshots: a gap, a missing first page, a short tail, no pages. */
		craft_init(&c, 512, 3, 1, compress);
		craft_page(&c, 1);
		craft_page(&c, 3);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_SNAPSHOT_INCOMPLETE);
		craft_free(&c);

		craft_init(&c, 512, 3, 1, compress);
		craft_page(&c, 2);
		craft_page(&c, 3);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_SNAPSHOT_INCOMPLETE);
		craft_free(&c);

		craft_init(&c, 512, 3, 1, compress);
		craft_page(&c, 1);
		craft_page(&c, 2);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_SNAPSHOT_INCOMPLETE);
		craft_free(&c);

		craft_init(&c, 512, 3, 1, compress);
		craft_end(&c);
		craft_expect(&c, craft_good_post(&c), ERR_LTX_SNAPSHOT_INCOMPLETE);
		craft_free(&c);
	}
}

static void test_reject_lz4_stream_shape(void **state)
{
	struct craft c;

	(void)state;
	/* A page with number zero inside the block (followed by a real end). */
	craft_init(&c, 512, 4, 2, true);
	craft_page(&c, 1);
	craft_page(&c, 0);
	craft_end(&c);
	craft_expect(&c, craft_good_post(&c), ERR_LTX_PGNO_ZERO);
	craft_free(&c);

	/* The frame ends inside a page's data. */
	craft_init(&c, 512, 4, 2, true);
	craft_page(&c, 1);
	craft_page_len(&c, 2, 100);
	craft_expect(&c, craft_good_post(&c), ERR_LTX_LZ4_SIZE);
	craft_free(&c);

	/* The frame ends inside a page number. */
	craft_init(&c, 512, 4, 2, true);
	craft_page(&c, 1);
	craft_bytes(&c, "\0\0", 2);
	craft_expect(&c, craft_good_post(&c), ERR_LTX_LZ4_SIZE);
	craft_free(&c);

	/* The frame ends at a page boundary without the end marker. */
	craft_init(&c, 512, 4, 2, true);
	craft_page(&c, 1);
	craft_expect(&c, craft_good_post(&c), ERR_LTX_LZ4_SIZE);
	craft_free(&c);

	/* A few bytes after the end marker. */
	craft_init(&c, 512, 4, 2, true);
	craft_page(&c, 1);
	craft_end(&c);
	craft_bytes(&c, "0123456789", 10);
	craft_expect(&c, craft_good_post(&c), ERR_LTX_LZ4_SIZE);
	craft_free(&c);

	/* An empty frame. */
	craft_init(&c, 512, 4, 2, true);
	craft_expect(&c, craft_good_post(&c), ERR_LTX_LZ4_SIZE);
	craft_free(&c);
}

static void test_reject_lz4_corrupt(void **state)
{
	struct craft c;
	struct ltx_growbuf f;

	(void)state;
	craft_basic(&c, true);
	for (int kase = 0; kase < 5; kase++) {
		size_t at = LTX_HEADER_SIZE;

		craft_build(&c, craft_good_post(&c), &f);
		switch (kase) {
		case 0: /* skippable frame magic: not an LZ4 data frame */
			f.data[at] = 0x50;
			f.data[at + 1] = 0x2a;
			break;
		case 1: /* garbage magic */
			f.data[at] = 0x00;
			break;
		case 2: /* header checksum byte (FLG, BD, HC) */
			f.data[at + 6] ^= 0x01;
			break;
		case 3: /* first block size far above the 64 KiB maximum */
			f.data[at + 7] = 0xff;
			f.data[at + 8] = 0xff;
			f.data[at + 9] = 0xff;
			f.data[at + 10] = 0x7f;
			break;
		case 4: /* content checksum, the frame's last 4 bytes: not
			 * verified (the LTX file checksum covers the same
			 * bytes), so the file decodes */
			f.data[f.len - LTX_TRAILER_SIZE - 1] ^= 0x40;
			break;
		}
		assert_rc(decode_mem(f.data, f.len, NULL, NULL, NULL, NULL), kase == 4 ? 0 : ERR_LTX_LZ4);
		free(f.data);
	}
	craft_free(&c);
}

static void test_reject_trailer_rules(void **state)
{
	(void)state;
	for (int compress = 0; compress <= 1; compress++) {
		struct craft c;
		struct ltx_growbuf f;
		uint64_t off = 0;

		/* Post-apply without the flag. */
		craft_basic(&c, compress);
		craft_expect(&c, 0x4242, ERR_LTX_POST_CHECKSUM_FLAG);
		craft_expect(&c, 0, ERR_LTX_POST_CHECKSUM_FLAG);
		craft_free(&c);

		/* Commit 0 requires exactly the flag. */
		craft_init(&c, 512, 0, 3, compress);
		craft_end(&c);
		craft_expect(&c, FLAG, 0);
		craft_expect(&c, FLAG | 1, ERR_LTX_POST_CHECKSUM_FLAG);
		craft_free(&c);

		/* File checksum off by one, or without its flag. */
		craft_basic(&c, compress);
		craft_build(&c, craft_good_post(&c), &f);
		f.data[f.len - 1] ^= 1;
		assert_rc(decode_mem(f.data, f.len, NULL, NULL, NULL, &off), ERR_LTX_FILE_CHECKSUM);
		assert_u64(off, f.len - 8);
		f.data[f.len - 1] ^= 1;
		f.data[f.len - 8] ^= 0x80;
		assert_rc(decode_mem(f.data, f.len, NULL, NULL, NULL, NULL), ERR_LTX_FILE_CHECKSUM);
		free(f.data);
		craft_free(&c);

		/* Snapshot whose post-apply is not the checksum of its pages. */
		craft_init(&c, 512, 2, 1, compress);
		craft_page(&c, 1);
		craft_page(&c, 2);
		craft_end(&c);
		craft_expect(&c, craft_pages_checksum(&c), 0);
		craft_expect(&c, craft_pages_checksum(&c) ^ 1, ERR_LTX_POST_CHECKSUM);
		craft_free(&c);
	}
}

/* Every truncation is ERR_LTX_TRUNCATED, reported at the end of input. */
static void expect_truncations(const uint8_t *file, size_t len)
{
	for (size_t cut = 0; cut < len; cut++) {
		uint64_t off = 0;
		int rc = decode_mem(file, cut, NULL, NULL, NULL, &off);

		if (rc != ERR_LTX_TRUNCATED)
			fail_msg("cut at %zu of %zu: rc %d (%s)", cut, len, rc, err_name(rc));
		assert_u64(off, cut);
	}
}

/* Anything after the trailer is ERR_LTX_TRAILING at the first extra byte. */
static void expect_trailing(const uint8_t *file, size_t len)
{
	static const size_t extra[] = {1, 16, 70000};
	uint8_t *buf = malloc(len + 70000);

	assert_non_null(buf);
	memcpy(buf, file, len);
	memset(buf + len, 0, 70000);
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		uint64_t off = 0;

		assert_rc(decode_mem(buf, len + extra[i], NULL, NULL, NULL, &off), ERR_LTX_TRAILING);
		assert_u64(off, len);
	}
	free(buf);
}

/* Every single-bit flip is rejected, by a rule or the file checksum.
 * The one exception is inside an LZ4 frame: the file checksum covers the
 * uncompressed stream by design, and LZ4 has redundant encodings (a match
 * inside a run of zeros may copy from a different offset and produce the
 * same bytes). Such a flip must decode to exactly the original pages and
 * trailer; the number of them is returned. */
static size_t expect_bit_flips_rejected(const uint8_t *file, size_t len)
{
	uint8_t *buf = malloc(len);
	struct pageset want = {0};
	struct ltx_trailer want_t;
	struct ltx_header h;
	size_t benign = 0;

	assert_non_null(buf);
	assert_rc(decode_mem(file, len, &h, &want_t, &want, NULL), 0);
	memcpy(buf, file, len);
	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			struct pageset got = {0};
			struct ltx_trailer t;
			bool in_frame = (h.flags & LTX_FLAG_COMPRESS) && i >= LTX_HEADER_SIZE &&
					i < len - LTX_TRAILER_SIZE;
			int rc;

			buf[i] ^= (uint8_t)(1u << bit);
			rc = decode_mem(buf, len, NULL, &t, &got, NULL);
			if (rc >= 0) {
				if (!in_frame)
					fail_msg("flip of bit %d at %zu of %zu accepted", bit, i, len);
				assert_u64(t.file_checksum, want_t.file_checksum);
				assert_u64(t.post_apply_checksum, want_t.post_apply_checksum);
				assert_int_equal(got.n, want.n);
				assert_memory_equal(got.pgnos, want.pgnos, want.n * sizeof(uint32_t));
				assert_memory_equal(got.data, want.data, want.n * want.page_size);
				benign++;
			}
			ps_free(&got);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	ps_free(&want);
	free(buf);
	return benign;
}

/* A compressed file with several LZ4 blocks, for the damage tests. */
static void make_multiblock(struct ltx_growbuf *out)
{
	struct ltx_header h = mk_header(512, 200, 3, true);
	struct pageset ps = {.page_size = 512};
	uint8_t page[512];

	for (uint32_t p = 1; p <= 160; p++) {
		fill_page(page, 512, p, 3);
		memset(page + 256, (int)p, 240); /* compressible: many pages per block */
		ps_add(&ps, p, page);
	}
	memset(out, 0, sizeof(*out));
	assert_rc(encode_mem(&h, &ps, FLAG | 99, out, NULL), 0);
	ps_free(&ps);
}

static void test_damage_golden_uncompressed(void **state)
{
	size_t len;
	uint8_t *file = read_golden(GOLDEN_LTX, &len);

	(void)state;
	expect_truncations(file, len);
	expect_trailing(file, len);
	assert_int_equal(expect_bit_flips_rejected(file, len), 0);
	free(file);
}

static void test_damage_golden_compressed(void **state)
{
	size_t benign = 0, total = 0;

	(void)state;
	for (int txid = 1; txid <= N_CHAIN; txid++) {
		char name[256];
		size_t len;
		uint8_t *file;

		chain_name(name, sizeof(name), txid);
		file = read_golden(name, &len);
		expect_truncations(file, len);
		expect_trailing(file, len);
		benign += expect_bit_flips_rejected(file, len);
		total += len * 8;
		free(file);
	}
	/* Redundant LZ4 encodings are rare; most flips must be caught. */
	print_message("compressed golden files: %zu of %zu bit flips decode to identical content\n",
		      benign, total);
	assert_true(benign * 20 < total);
}

static void test_damage_multiblock(void **state)
{
	struct ltx_growbuf f;

	(void)state;
	make_multiblock(&f);
	assert_rc(decode_mem(f.data, f.len, NULL, NULL, NULL, NULL), 0);
	expect_truncations(f.data, f.len);
	expect_trailing(f.data, f.len);
	free(f.data);
}

/* ---- Encoder rules ------------------------------------------------------- */

static void test_encoder_rules(void **state)
{
	(void)state;
	for (int compress = 0; compress <= 1; compress++) {
		struct ltx_header h = mk_header(512, 5, 2, compress);
		struct ltx_encoder *e = NULL;
		struct ltx_growbuf out = {0};
		struct ltx_trailer t;
		uint8_t page[512];

		memset(page, 0x5a, sizeof(page));
		assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &out), 0);
		assert_rc(ltx_encoder_write_page(e, 0, page), ERR_LTX_PGNO_ZERO);
		assert_rc(ltx_encoder_write_page(e, 6, page), ERR_LTX_PGNO_COMMIT);
		assert_rc(ltx_encoder_write_page(e, 3, page), 0);
		assert_rc(ltx_encoder_write_page(e, 3, page), ERR_LTX_PAGE_ORDER);
		assert_rc(ltx_encoder_write_page(e, 2, page), ERR_LTX_PAGE_ORDER);
		/* Rule violations emit nothing: the encoder is still usable. */
		assert_rc(ltx_encoder_write_page(e, 4, page), 0);
		assert_rc(ltx_encoder_finish(e, 0, &t), ERR_LTX_POST_CHECKSUM_FLAG);
		assert_rc(ltx_encoder_finish(e, 0x1234, &t), ERR_LTX_POST_CHECKSUM_FLAG);
		assert_rc(ltx_encoder_finish(e, FLAG | 0x1234, &t), 0);
		assert_rc(ltx_encoder_finish(e, FLAG | 0x1234, &t), ERR_LTX_STATE);
		assert_rc(ltx_encoder_write_page(e, 5, page), ERR_LTX_STATE);
		ltx_encoder_free(e);
		assert_rc(decode_mem(out.data, out.len, NULL, NULL, NULL, NULL), 0);
		free(out.data);

		/* Commit 0. */
		h = mk_header(512, 0, 2, compress);
		out = (struct ltx_growbuf){0};
		assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &out), 0);
		assert_rc(ltx_encoder_write_page(e, 1, page), ERR_LTX_COMMIT_ZERO_PAGES);
		assert_rc(ltx_encoder_finish(e, FLAG | 1, &t), ERR_LTX_POST_CHECKSUM_FLAG);
		assert_rc(ltx_encoder_finish(e, 0, &t), 0);
		assert_u64(t.post_apply_checksum, FLAG);
		ltx_encoder_free(e);
		free(out.data);

		/* Lock page. */
		h = mk_header(65536, 20000, 2, compress);
		out = (struct ltx_growbuf){0};
		uint8_t *big = calloc(1, 65536);

		assert_non_null(big);
		assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &out), 0);
		assert_rc(ltx_encoder_write_page(e, 16385, big), ERR_LTX_LOCK_PAGE);
		ltx_encoder_free(e);
		free(big);
		free(out.data);

		/* Snapshots: gaps, early finish, wrong post-apply. */
		h = mk_header(512, 3, 1, compress);
		out = (struct ltx_growbuf){0};
		assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &out), 0);
		assert_rc(ltx_encoder_write_page(e, 2, page), ERR_LTX_SNAPSHOT_INCOMPLETE);
		assert_rc(ltx_encoder_write_page(e, 1, page), 0);
		assert_rc(ltx_encoder_write_page(e, 3, page), ERR_LTX_SNAPSHOT_INCOMPLETE);
		assert_rc(ltx_encoder_write_page(e, 2, page), 0);
		assert_rc(ltx_encoder_finish(e, 0, &t), ERR_LTX_SNAPSHOT_INCOMPLETE);
		assert_rc(ltx_encoder_write_page(e, 3, page), 0);
		assert_rc(ltx_encoder_finish(e, FLAG | 5, &t), ERR_LTX_POST_CHECKSUM);
		assert_rc(ltx_encoder_finish(e, 0, &t), 0);
		assert_u64(t.post_apply_checksum, FLAG | (ltx_page_checksum(1, page, 512) ^
							  ltx_page_checksum(2, page, 512) ^
							  ltx_page_checksum(3, page, 512)));
		ltx_encoder_free(e);
		assert_rc(decode_mem(out.data, out.len, NULL, NULL, NULL, NULL), 0);
		free(out.data);
	}
}

/* ---- Callbacks: odd readers, failing readers and writers, fds ----------- */

struct chunky {
	struct ltx_membuf m;
	size_t max_chunk; /* 0 = random 1..max */
	size_t fail_at;   /* fail once this many bytes were delivered (0 = never) */
};

static ssize_t chunky_read(void *ctx, void *buf, size_t len)
{
	struct chunky *c = ctx;
	size_t n = c->max_chunk ? c->max_chunk : 1 + rng_below(700);

	if (c->fail_at != 0 && c->m.off >= c->fail_at)
		return -EIO;
	if (len > n)
		len = n;
	return ltx_membuf_read(&c->m, buf, len);
}

static void test_short_reads(void **state)
{
	(void)state;
	for (int txid = 0; txid <= N_CHAIN; txid++) {
		char name[256];
		size_t len;
		uint8_t *file;
		struct ltx_trailer t, t2;

		if (txid == 0)
			snprintf(name, sizeof(name), "%s", GOLDEN_LTX);
		else
			chain_name(name, sizeof(name), txid);
		file = read_golden(name, &len);
		assert_rc(decode_mem(file, len, NULL, &t, NULL, NULL), 0);
		for (size_t chunk = 0; chunk <= 3; chunk++) {
			struct chunky c = {.m = {.data = file, .len = len}, .max_chunk = chunk};

			assert_rc(ltx_decode_all(chunky_read, &c, NULL, NULL, NULL, &t2, NULL), 0);
			assert_u64(t2.file_checksum, t.file_checksum);
		}
		/* A read error anywhere comes back unchanged. */
		for (size_t at = 1; at < len; at += 37) {
			struct chunky c = {.m = {.data = file, .len = len}, .max_chunk = 64, .fail_at = at};

			assert_rc(ltx_decode_all(chunky_read, &c, NULL, NULL, NULL, NULL, NULL), -EIO);
		}
		free(file);
	}
}

struct failing_writer {
	struct ltx_growbuf g;
	int calls, fail_call;
};

static int failing_write(void *ctx, const void *buf, size_t len)
{
	struct failing_writer *w = ctx;

	if (++w->calls == w->fail_call)
		return -ENOSPC;
	return ltx_growbuf_write(&w->g, buf, len);
}

/* Fail the 1st, 2nd, ... write: the error surfaces and sticks. */
static void test_write_failures(void **state)
{
	(void)state;
	for (int compress = 0; compress <= 1; compress++) {
		struct ltx_header h = mk_header(4096, 100, 2, compress);
		uint8_t page[4096];

		for (int fail_call = 1;; fail_call++) {
			struct failing_writer w = {.fail_call = fail_call};
			struct ltx_encoder *e = NULL;
			int rc = 0;

			assert_int_equal(ltx_encoder_new(&e, &h, failing_write, &w), 0);
			for (uint32_t p = 1; p <= 100 && rc == 0; p++) {
				fill_page(page, sizeof(page), p, 1);
				rc = ltx_encoder_write_page(e, p, page);
			}
			if (rc == 0)
				rc = ltx_encoder_finish(e, FLAG | 1, NULL);
			ltx_encoder_free(e);
			free(w.g.data);
			if (w.calls < fail_call) {
				assert_rc(rc, 0);
				assert_true(fail_call > 2);
				break;
			}
			assert_rc(rc, -ENOSPC);
		}
	}
}

static void test_fdio_adapters(void **state)
{
	char path[] = "/tmp/test_ltx_XXXXXX";
	int fd = mkstemp(path);
	size_t len;
	uint8_t *file = read_golden(GOLDEN_LTX, &len);
	uint8_t buf[64];
	struct ltx_trailer t;
	struct pageset ps = {0};
	struct ltx_header h;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	/* Encode through fdio_write, decode back through fdio_read. */
	assert_rc(decode_mem(file, len, &h, &t, &ps, NULL), 0);
	{
		struct ltx_encoder *e = NULL;

		assert_int_equal(ltx_encoder_new(&e, &h, fdio_write, &fd), 0);
		for (size_t i = 0; i < ps.n; i++)
			assert_rc(ltx_encoder_write_page(e, ps.pgnos[i], ps_page(&ps, i)), 0);
		assert_rc(ltx_encoder_finish(e, t.post_apply_checksum, NULL), 0);
		ltx_encoder_free(e);
	}
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_rc(ltx_decode_all(fdio_read, &fd, NULL, NULL, NULL, NULL, NULL), 0);
	/* Positional helpers: full reads, short only at EOF. */
	assert_int_equal(fdio_pread_full(fd, buf, 4, 0), 4);
	assert_memory_equal(buf, "LTX1", 4);
	assert_int_equal(fdio_pread_full(fd, buf, 64, (off_t)len - 10), 10);
	assert_int_equal(fdio_pread_full(fd, buf, 64, (off_t)len + 100), 0);
	assert_int_equal(fdio_pwrite_full(fd, "xyz", 3, (off_t)len + 5), 0);
	assert_int_equal(fdio_pread_full(fd, buf, 64, (off_t)len), 8);
	assert_memory_equal(buf + 5, "xyz", 3);
	close(fd);
	/* Errors are -errno. */
	int bad = -1;

	assert_int_equal(fdio_read(&bad, buf, 1), -EBADF);
	assert_int_equal(fdio_write(&bad, buf, 1), -EBADF);
	assert_int_equal(fdio_pread_full(-1, buf, 1, 0), -EBADF);
	assert_int_equal(fdio_pwrite_full(-1, buf, 1, 0), -EBADF);
	ps_free(&ps);
	free(file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_size_and_lock_page),
		cmocka_unit_test(test_filename),
		cmocka_unit_test(test_pos),
		cmocka_unit_test(test_format_time),
		cmocka_unit_test(test_checksum_vectors),
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_golden_uncompressed),
		cmocka_unit_test(test_golden_reencode_identical),
		cmocka_unit_test(test_golden_chain_compressed),
		cmocka_unit_test(test_streaming_api),
		cmocka_unit_test(test_roundtrip_random),
		cmocka_unit_test(test_encode_with_known_crc),
		cmocka_unit_test(test_roundtrip_edge_files),
		cmocka_unit_test(test_snapshot_across_lock_page),
		cmocka_unit_test(test_lz4_frame_params),
		cmocka_unit_test(test_reject_header_rules),
		cmocka_unit_test(test_accept_wal_fields),
		cmocka_unit_test(test_reject_page_rules),
		cmocka_unit_test(test_reject_lz4_stream_shape),
		cmocka_unit_test(test_reject_lz4_corrupt),
		cmocka_unit_test(test_reject_trailer_rules),
		cmocka_unit_test(test_damage_golden_uncompressed),
		cmocka_unit_test(test_damage_golden_compressed),
		cmocka_unit_test(test_damage_multiblock),
		cmocka_unit_test(test_encoder_rules),
		cmocka_unit_test(test_short_reads),
		cmocka_unit_test(test_write_failures),
		cmocka_unit_test(test_fdio_adapters),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
