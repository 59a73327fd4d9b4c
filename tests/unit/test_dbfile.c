/*
 * test_dbfile.c — unit tests of dbfile.c: page size, database checksum
 * (golden files and LTX.md vectors), zero-page checksum shortcut, snapshot
 * encoding, apply (golden chain, random round trips and transaction
 * chains, the lock page of a sparse 1 GiB database, deletion), and every
 * rejection path of apply with the guarantee that a rejected file leaves
 * the database byte-for-byte unchanged.
 *
 * The reference for every expected checksum is a brute-force in-memory
 * model (struct model) using ltx_page_checksum() directly, never the code
 * under test. Random cases are seeded and deterministic.
 *
 * Golden files: $LITEFS_TESTDATA (default ../shared/testdata, relative to
 * the repository root, where `make unit` runs).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ltx/dbfile.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "ltx/ltx.h"
#include "testutil.h"
#include "base/sys.h"

/* ---- Helpers ---------------------------------------------------------- */













/* In-memory database: the reference the code under test is compared to. */






/* Fills a page with one of several content kinds (random, zeros, a
 * repeated byte, mostly-zero), so that zero shortcuts are exercised. */
static void fill_page(uint8_t *page, uint32_t page_size)
{
	switch (rnd_below(5)) {
	case 0:
		memset(page, 0, page_size);
		break;
	case 1:
		memset(page, (int)rnd_below(256), page_size);
		break;
	case 2:
		memset(page, 0, page_size);
		page[rnd_below(page_size)] = (uint8_t)(1 + rnd_below(255));
		break;
	default:
		for (uint32_t i = 0; i < page_size; i += 8) {
			uint64_t v = rnd();
			memcpy(page + i, &v, 8);
		}
	}
}

static uint32_t random_page_size(void)
{
	return 512u << rnd_below(8);
}

/* Keeps random databases small in bytes whatever the page size. */
static uint32_t max_pages(uint32_t page_size)
{
	uint32_t n = (128u * 1024u) / page_size;
	return n < 3 ? 3 : n > 48 ? 48 : n;
}



/* Applies a random transaction to m and encodes it as LTX txid (never 1).
 * Growth writes every new page unless sparse_growth; any page may change;
 * sometimes the database shrinks or is deleted. */
static void random_txn(struct ltx_growbuf *out, struct model *m, uint64_t txid, bool compress)
{
	uint32_t ps = m->page_size, lock = ltx_lock_pgno(ps), old_n = m->n_pages;
	uint64_t pre = model_checksum(m);
	uint32_t commit = old_n;
	uint32_t r = rnd_below(100);

	if (r < 45)
		commit = old_n + rnd_below(5);
	else if (r < 70)
		commit = old_n > 0 ? old_n - rnd_below(old_n < 4 ? old_n + 1 : 4) : 0;
	else if (r < 75)
		commit = 0;
	if (commit > max_pages(ps))
		commit = max_pages(ps);
	bool sparse_growth = rnd_below(3) == 0;

	model_resize(m, commit);
	uint32_t *pgnos = malloc(sizeof(uint32_t) * (commit + 1));
	size_t n = 0;
	for (uint32_t p = 1; p <= commit; p++) {
		if (p == lock)
			continue;
		bool grown = p > old_n;
		if ((grown && !sparse_growth) || rnd_below(100) < 30) {
			fill_page(model_page(m, p), ps);
			pgnos[n++] = p;
		}
	}
	struct ltx_header h = {
		.flags = compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = ps,
		.commit = commit,
		.min_txid = txid,
		.max_txid = txid,
		.timestamp_ms = 1700000000000 + (int64_t)txid,
		.pre_apply_checksum = pre,
	};
	encode_ltx(out, &h, m, pgnos, n, model_checksum(m));
	free(pgnos);
}

static int apply_buf(int db_fd, int spool_fd, const struct ltx_growbuf *ltx, struct ltx_pos pos,
		     struct dbfile_apply_result *res)
{
	struct ltx_membuf mb = { .data = ltx->data, .len = ltx->len };

	int rc = dbfile_apply(db_fd, spool_fd, ltx_membuf_read, &mb, pos, res);
	free(res->written);
	res->written = NULL;
	return rc;
}

static void write_model(int fd, struct model *m)
{
	write_all(fd, m->data, (size_t)m->n_pages * m->page_size);
}

/* ---- Page size -------------------------------------------------------- */

static void test_read_page_size(void **state)
{
	char path[512];
	uint32_t ps = 0;
	uint8_t hdr[100];
	int fd = open(testdata("litefs-v1/database", path, sizeof(path)), O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(dbfile_read_page_size(fd, &ps), 0);
	assert_int_equal(ps, 4096);
	close(fd);

	fd = new_file("hdr.db");
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, "SQLite format 3", 16);
	hdr[16] = 0;
	hdr[17] = 1; /* 1 means 65536 */
	write_all(fd, hdr, sizeof(hdr));
	assert_int_equal(dbfile_read_page_size(fd, &ps), 0);
	assert_int_equal(ps, 65536);

	hdr[16] = 0x02;
	hdr[17] = 0x00;
	write_all(fd, hdr, sizeof(hdr));
	assert_int_equal(dbfile_read_page_size(fd, &ps), 0);
	assert_int_equal(ps, 512);

	hdr[16] = 0x03; /* 768: not a power of two */
	write_all(fd, hdr, sizeof(hdr));
	assert_int_equal(dbfile_read_page_size(fd, &ps), ERR_DB_HEADER);

	hdr[16] = 0x01; /* 256: too small */
	write_all(fd, hdr, sizeof(hdr));
	assert_int_equal(dbfile_read_page_size(fd, &ps), ERR_DB_HEADER);

	hdr[16] = 0x10;
	hdr[0] = 'X'; /* wrong magic */
	write_all(fd, hdr, sizeof(hdr));
	assert_int_equal(dbfile_read_page_size(fd, &ps), ERR_DB_HEADER);

	write_all(fd, "SQLite format 3", 16); /* too short for the field */
	assert_int_equal(dbfile_read_page_size(fd, &ps), ERR_DB_HEADER);

	write_all(fd, NULL, 0);
	assert_int_equal(dbfile_read_page_size(fd, &ps), ERR_DB_HEADER);
	close(fd);
}

/* ---- Checksums -------------------------------------------------------- */

static void test_checksum_golden(void **state)
{
	char path[512];
	uint64_t chk = 0;
	uint32_t n = 0;
	int fd = open(testdata("litefs-v1/database", path, sizeof(path)), O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(dbfile_checksum(fd, 4096, &chk, &n), 0);
	assert_int_equal(chk, 0xfe3831a381c602b9ull);
	assert_int_equal(n, 10);
	/* 40960 bytes are not whole pages of 65536. */
	assert_int_equal(dbfile_checksum(fd, 65536, &chk, &n), ERR_DB_SIZE);
	assert_int_equal(dbfile_checksum(fd, 1000, &chk, &n), ERR_LTX_PAGE_SIZE);
	close(fd);
}

static void test_checksum_vectors(void **state)
{
	uint8_t buf[3 * 512];
	uint64_t chk = 0;
	uint32_t n = 99;
	int fd = new_file("vec.db");

	write_all(fd, NULL, 0);
	assert_int_equal(dbfile_checksum(fd, 512, &chk, &n), 0);
	assert_int_equal(chk, LTX_CHECKSUM_FLAG);
	assert_int_equal(n, 0);

	memset(buf, '1', 512);
	write_all(fd, buf, 512);
	assert_int_equal(dbfile_checksum(fd, 512, &chk, NULL), 0);
	assert_int_equal(chk, 0xeb1a999231044dddull);

	memset(buf, '2', 512);
	write_all(fd, buf, 512);
	assert_int_equal(dbfile_checksum(fd, 512, &chk, NULL), 0);
	assert_int_equal(chk, 0xc6e57aa102377eeeull);

	memset(buf, 1, 512);
	memset(buf + 512, 2, 512);
	memset(buf + 1024, 3, 512);
	write_all(fd, buf, sizeof(buf));
	assert_int_equal(dbfile_checksum(fd, 512, &chk, &n), 0);
	assert_int_equal(chk, 0xefffffffecd99000ull);
	assert_int_equal(n, 3);

	write_all(fd, buf, 513);
	assert_int_equal(dbfile_checksum(fd, 512, &chk, &n), ERR_DB_SIZE);
	close(fd);
}

/* The O(32) zero-range formula against brute force, around the lock page
 * too (page size 512: lock page 2097153). */
static void test_zero_pages_checksum(void **state)
{
	static uint8_t zero[65536];

	seed(1);
	for (int iter = 0; iter < 40; iter++) {
		uint32_t ps = random_page_size();
		uint32_t lock = ltx_lock_pgno(ps);
		uint32_t first, last;
		switch (iter % 4) {
		case 0: /* small range anywhere */
			first = 1 + rnd_below(100000);
			last = first + rnd_below(ps >= 16384 ? 64 : 400);
			break;
		case 1: /* around the lock page */
			first = lock - 1 - rnd_below(lock - 1 < 40 ? lock - 1 : 40);
			last = lock + rnd_below(40);
			break;
		case 2: /* empty range */
			first = 10 + rnd_below(10);
			last = first - 1;
			break;
		default: /* near the top of the page number space */
			last = UINT32_MAX - rnd_below(10);
			first = last - rnd_below(ps >= 16384 ? 16 : 100);
			break;
		}
		uint64_t want = LTX_CHECKSUM_FLAG;
		for (uint64_t p = first; p <= last; p++)
			if (p != lock)
				want ^= ltx_page_checksum((uint32_t)p, zero, ps);
		want |= LTX_CHECKSUM_FLAG;
		assert_int_equal(dbfile_zero_pages_checksum(ps, first, last), want);
	}
}

/* Sparse files: holes and data at page and sub-page granularity. */
static void test_checksum_sparse(void **state)
{
	seed(2);
	for (int iter = 0; iter < 12; iter++) {
		struct model m = { .page_size = random_page_size() };
		uint32_t n = 2 + rnd_below(max_pages(m.page_size) * 4);
		int fd = new_file("sparse.db");
		uint64_t chk;

		model_resize(&m, n);
		assert_int_equal(ftruncate(fd, (off_t)n * m.page_size), 0);
		for (uint32_t k = rnd_below(4); k > 0; k--) {
			uint32_t p = 1 + rnd_below(n);
			uint32_t off = rnd_below(m.page_size);
			uint8_t b = (uint8_t)(1 + rnd_below(255));
			model_page(&m, p)[off] = b;
			assert_int_equal(fdio_pwrite_full(fd, &b, 1, (off_t)(p - 1) * m.page_size + off), 0);
		}
		assert_int_equal(dbfile_checksum(fd, m.page_size, &chk, NULL), 0);
		assert_int_equal(chk, model_checksum(&m));
		close(fd);
		model_free(&m);
	}
}

/* ---- Snapshot encode + apply round trips ------------------------------ */

static void random_model(struct model *m, uint32_t ps, uint32_t n)
{
	m->page_size = ps;
	m->n_pages = 0;
	m->data = NULL;
	model_resize(m, n);
	for (uint32_t p = 1; p <= n; p++)
		fill_page(model_page(m, p), ps);
}

static void test_snapshot_round_trip(void **state)
{
	seed(3);
	int spool = fileio_spool_open(tmp_dir);
	assert_true(spool >= 0);

	for (int iter = 0; iter < 40; iter++) {
		struct model m;
		uint32_t ps = random_page_size();
		uint32_t n = iter % 8 == 0 ? 0 : 1 + rnd_below(max_pages(ps));
		bool compress = rnd_below(2);
		uint64_t txid = 1 + rnd_below(3) * rnd_below(1000);
		random_model(&m, ps, n);

		int src = new_file("src.db");
		write_model(src, &m);
		struct dbfile_snapshot_opts opts = {
			.page_size = ps, .txid = txid, .timestamp_ms = 1234, .compress = compress,
		};
		struct ltx_growbuf snap = { 0 };
		struct ltx_header h;
		struct ltx_trailer t;
		assert_int_equal(dbfile_encode_snapshot(src, &opts, ltx_growbuf_write, &snap, &h, &t), 0);
		assert_int_equal(h.min_txid, 1);
		assert_int_equal(h.max_txid, txid);
		assert_int_equal(h.commit, n);
		assert_int_equal(h.pre_apply_checksum, 0);
		assert_int_equal(h.flags, compress ? LTX_FLAG_COMPRESS : 0);
		assert_int_equal(t.post_apply_checksum, model_checksum(&m));

		/* The codec itself agrees that it is a valid, complete snapshot. */
		struct ltx_membuf mb = { .data = snap.data, .len = snap.len };
		struct ltx_header dh;
		struct ltx_trailer dt;
		uint64_t off;
		assert_int_equal(ltx_decode_all(ltx_membuf_read, &mb, NULL, NULL, &dh, &dt, &off), 0);
		assert_int_equal(dt.post_apply_checksum, t.post_apply_checksum);

		/* Apply to an empty file, to a larger and to a smaller database,
		 * through a file spool or a memory spool. */
		for (int target = 0; target < 3; target++) {
			struct model other;
			random_model(&other, ps, target == 0 ? 0 : target == 1 ? n + 1 + rnd_below(5) : n / 2);
			int db = new_file("dst.db");
			write_model(db, &other);
			struct dbfile_apply_result res;
			struct ltx_pos junk = { .txid = rnd(), .checksum = rnd() }; /* ignored for snapshots */
			assert_int_equal(apply_buf(db, target == 1 ? -1 : spool, &snap, junk, &res), 0);
			assert_int_equal(res.pos.txid, txid);
			assert_int_equal(res.pos.checksum, model_checksum(&m));
			assert_fd_content(db, m.data, (size_t)n * ps);
			uint64_t chk;
			assert_int_equal(dbfile_checksum(db, ps, &chk, NULL), 0);
			assert_int_equal(chk, res.pos.checksum);
			assert_int_equal(file_size(spool), 0); /* the spool is emptied */
			close(db);
			model_free(&other);
		}
		free(snap.data);
		close(src);
		model_free(&m);
	}
	close(spool);
}

/* follows_txid: the same pages as a transaction that follows a position
 * (what an import writes), with the SQLite header replaced in the record
 * only; it applies onto the database at that position and nowhere else. */
static void test_encode_full_image_following(void **state)
{
	seed(5);
	for (int iter = 0; iter < 12; iter++) {
		struct model old, m;
		uint32_t ps = random_page_size();
		uint32_t n = 1 + rnd_below(max_pages(ps));
		bool compress = rnd_below(2);
		random_model(&old, ps, 1 + rnd_below(max_pages(ps)));
		random_model(&m, ps, n);
		int src = new_file("src.db");
		write_model(src, &m);
		uint8_t hdr[100];
		for (int i = 0; i < 100; i++)
			hdr[i] = (uint8_t)(i * 7 + iter);
		memcpy(model_page(&m, 1), hdr, sizeof(hdr)); /* what the result must hold */
		struct ltx_pos at = { .txid = 5 + rnd_below(100), .checksum = model_checksum(&old) };
		struct dbfile_snapshot_opts opts = {
			.page_size = ps, .timestamp_ms = 99, .compress = compress, .follows_txid = at.txid,
			.pre_apply_checksum = at.checksum, .node_id = 42, .sqlite_header = hdr,
		};
		struct ltx_growbuf rec = { 0 };
		struct ltx_header h;
		struct ltx_trailer t;
		assert_int_equal(dbfile_encode_snapshot(src, &opts, ltx_growbuf_write, &rec, &h, &t), 0);
		assert_int_equal(h.min_txid, at.txid + 1);
		assert_int_equal(h.max_txid, at.txid + 1);
		assert_int_equal(h.pre_apply_checksum, at.checksum);
		assert_int_equal(h.node_id, 42);
		assert_int_equal(t.post_apply_checksum, model_checksum(&m));
		uint8_t first[100];
		assert_int_equal(pread(src, first, sizeof(first), 0), (ssize_t)sizeof(first));
		assert_memory_not_equal(first, hdr, sizeof(hdr)); /* the file itself is untouched */

		int db = new_file("dst.db");
		write_model(db, &old);
		struct dbfile_apply_result res;
		assert_int_equal(apply_buf(db, -1, &rec, at, &res), 0);
		assert_int_equal(res.pos.txid, at.txid + 1);
		assert_int_equal(res.pos.checksum, model_checksum(&m));
		assert_fd_content(db, m.data, (size_t)n * ps);
		struct ltx_pos wrong = { .txid = at.txid, .checksum = at.checksum ^ 2 };
		assert_int_equal(apply_buf(db, -1, &rec, wrong, &res), ERR_LTX_PRE_MISMATCH);
		close(db);
		close(src);
		free(rec.data);
		model_free(&m);
		model_free(&old);
	}
}

static void test_encode_snapshot_header_page_size(void **state)
{
	char path[512];
	struct dbfile_snapshot_opts opts = { .txid = 7, .compress = true };
	struct ltx_growbuf out = { 0 };
	struct ltx_header h;
	struct ltx_trailer t;
	int fd = open(testdata("litefs-v1/database", path, sizeof(path)), O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(dbfile_encode_snapshot(fd, &opts, ltx_growbuf_write, &out, &h, &t), 0);
	assert_int_equal(h.page_size, 4096);
	assert_int_equal(h.commit, 10);
	assert_int_equal(h.max_txid, 7);
	assert_int_equal(t.post_apply_checksum, 0xfe3831a381c602b9ull);
	free(out.data);
	close(fd);

	/* Not SQLite and no page size given. */
	fd = new_file("raw.db");
	uint8_t page[512];
	memset(page, 7, sizeof(page));
	write_all(fd, page, sizeof(page));
	memset(&out, 0, sizeof(out));
	opts.page_size = 0;
	assert_int_equal(dbfile_encode_snapshot(fd, &opts, ltx_growbuf_write, &out, &h, &t), ERR_DB_HEADER);
	free(out.data);
	opts.page_size = 1024; /* 512 bytes are not whole pages of 1024 */
	memset(&out, 0, sizeof(out));
	assert_int_equal(dbfile_encode_snapshot(fd, &opts, ltx_growbuf_write, &out, &h, &t), ERR_DB_SIZE);
	free(out.data);
	close(fd);
}

/* ---- Apply: golden files ---------------------------------------------- */

static void test_apply_golden_chain(void **state)
{
	int db = new_file("chain.db");
	int spool = fileio_spool_open(tmp_dir);
	struct ltx_pos pos = { 0, LTX_CHECKSUM_FLAG };

	assert_true(spool >= 0);
	for (int i = 1; i <= 5; i++) {
		char rel[128], path[512];
		size_t len;
		snprintf(rel, sizeof(rel), "litefs-v1/chain-compressed/%016x-%016x.ltx", i, i);
		uint8_t *buf = read_file(testdata(rel, path, sizeof(path)), &len);
		struct ltx_growbuf g = { .data = buf, .len = len };
		struct dbfile_apply_result res;
		assert_int_equal(apply_buf(db, spool, &g, pos, &res), 0);
		assert_int_equal(res.pos.txid, (uint64_t)i);
		pos = res.pos;
		free(buf);
	}
	assert_int_equal(pos.checksum, 0xe9832b942d1c01caull);
	uint64_t chk;
	uint32_t n;
	assert_int_equal(dbfile_checksum(db, 4096, &chk, &n), 0);
	assert_int_equal(chk, 0xe9832b942d1c01caull);
	assert_int_equal(n, 2);
	close(spool);
	close(db);
}

/* The golden database is the state *after* file 0xd, whose pages 1, 7, 8
 * therefore already hold the new content. */
static void test_apply_golden_d(void **state)
{
	char path[512];
	size_t ltx_len, db_len;
	uint8_t *ltx = read_file(testdata("litefs-v1/000000000000000d-000000000000000d.ltx", path, sizeof(path)), &ltx_len);
	uint8_t *orig = read_file(testdata("litefs-v1/database", path, sizeof(path)), &db_len);
	struct ltx_growbuf g = { .data = ltx, .len = ltx_len };
	struct dbfile_apply_result res;
	int db = new_file("d.db");

	write_all(db, orig, db_len);

	/* The database's real checksum is the post-apply one: not a follower. */
	struct ltx_pos pos = { 0xc, 0xfe3831a381c602b9ull };
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), ERR_LTX_PRE_MISMATCH);
	assert_int_equal(res.err_source, DBFILE_ERR_LTX);
	assert_int_equal(res.err_offset, 40);
	assert_false(res.db_changed);
	assert_fd_content(db, orig, db_len);

	/* Claiming the pre-apply checksum is caught by the post-apply check:
	 * rewriting identical pages cannot turn 9c74… into fe38…. */
	pos.checksum = 0x9c74a15b4e4f246cull;
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), ERR_LTX_POST_CHECKSUM);
	assert_int_equal(res.err_source, DBFILE_ERR_LTX);
	assert_int_equal(res.err_offset, ltx_len - 16);
	assert_false(res.db_changed);
	assert_fd_content(db, orig, db_len);

	/* TXID contiguity. */
	pos.txid = 0xb;
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), ERR_LTX_NOT_CONTIGUOUS);
	assert_int_equal(res.err_offset, 16);
	pos.txid = 0xd;
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), ERR_LTX_OVERLAP);
	assert_fd_content(db, orig, db_len);
	close(db);
	free(ltx);
	free(orig);
}

/* ---- Apply: random transaction chains --------------------------------- */

static void test_apply_random_chains(void **state)
{
	seed(4);
	int spool = fileio_spool_open(tmp_dir);
	assert_true(spool >= 0);

	for (int iter = 0; iter < 30; iter++) {
		struct model m;
		uint32_t ps = random_page_size();
		bool compress = rnd_below(2);
		random_model(&m, ps, rnd_below(max_pages(ps)));

		struct ltx_growbuf snap;
		encode_model_snapshot(&snap, &m, 1, compress);
		int db = new_file("chain.db");
		struct dbfile_apply_result res;
		struct ltx_pos pos = { 0, LTX_CHECKSUM_FLAG };
		assert_int_equal(apply_buf(db, spool, &snap, pos, &res), 0);
		pos = res.pos;
		free(snap.data);

		for (uint64_t txid = 2; txid <= 25; txid++) {
			struct ltx_growbuf g;
			random_txn(&g, &m, txid, rnd_below(2));
			assert_int_equal(apply_buf(db, (txid & 1) ? -1 : spool, &g, pos, &res), 0);
			assert_int_equal(res.pos.txid, txid);
			assert_int_equal(res.pos.checksum, model_checksum(&m));
			assert_fd_content(db, m.data, (size_t)m.n_pages * ps);
			uint64_t chk;
			assert_int_equal(dbfile_checksum(db, ps, &chk, NULL), 0);
			assert_int_equal(chk, res.pos.checksum);
			pos = res.pos;
			free(g.data);
		}
		close(db);
		model_free(&m);
	}
	close(spool);
}

/* A commit-0 file deletes the database; a zero-page file only resizes. */
static void test_apply_delete_and_resize_only(void **state)
{
	struct model m;
	struct ltx_growbuf g;
	struct dbfile_apply_result res;
	int db = new_file("del.db");

	seed(5);
	random_model(&m, 1024, 6);
	write_model(db, &m);
	struct ltx_pos pos = { 9, model_checksum(&m) };

	/* Shrink to 2 pages without writing any page. */
	struct ltx_header h = {
		.page_size = 1024, .commit = 2, .min_txid = 10, .max_txid = 10,
		.pre_apply_checksum = pos.checksum,
	};
	model_resize(&m, 2);
	encode_ltx(&g, &h, &m, NULL, 0, model_checksum(&m));
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), 0);
	assert_fd_content(db, m.data, 2048);
	pos = res.pos;
	free(g.data);

	/* Grow to 5 pages without writing any: zeros. */
	h.commit = 5;
	h.min_txid = h.max_txid = 11;
	h.pre_apply_checksum = pos.checksum;
	model_resize(&m, 5);
	encode_ltx(&g, &h, &m, NULL, 0, model_checksum(&m));
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), 0);
	assert_fd_content(db, m.data, 5 * 1024);
	pos = res.pos;
	free(g.data);

	/* Delete. */
	h.commit = 0;
	h.min_txid = h.max_txid = 12;
	h.pre_apply_checksum = pos.checksum;
	h.flags = LTX_FLAG_COMPRESS;
	model_resize(&m, 0);
	encode_ltx(&g, &h, &m, NULL, 0, LTX_CHECKSUM_FLAG);
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), 0);
	assert_int_equal(file_size(db), 0);
	assert_int_equal(res.pos.checksum, LTX_CHECKSUM_FLAG);
	assert_int_equal(res.pos.txid, 12);
	free(g.data);
	close(db);
	model_free(&m);
}

/* ---- Apply: the lock page --------------------------------------------- */

/* Compares the data extents of a with the same byte ranges of b; what
 * lies outside a's extents reads as zeros in a. */
static void compare_extents(int a, int b, off_t size)
{
	const size_t chunk = 1u << 20;
	uint8_t *ba = malloc(chunk), *bb = malloc(chunk);
	off_t off = 0;

	while (off < size) {
		off_t d = lseek(a, off, SEEK_DATA);
		if (d < 0)
			break; /* ENXIO: only a hole is left */
		off_t h = lseek(a, d, SEEK_HOLE);
		assert_true(h > d);
		for (off_t o = d; o < h; o += (off_t)chunk) {
			size_t n = (size_t)(h - o) < chunk ? (size_t)(h - o) : chunk;
			assert_int_equal(fdio_pread_full(a, ba, n, o), (int)n);
			assert_int_equal(fdio_pread_full(b, bb, n, o), (int)n);
			assert_memory_equal(ba, bb, n);
		}
		off = h;
	}
	free(ba);
	free(bb);
}

/* Byte equality of two (sparse) files without reading their holes. */
static void assert_sparse_equal(int a, int b)
{
	off_t size = file_size(a);

	assert_int_equal(file_size(b), size);
	compare_extents(a, b, size);
	compare_extents(b, a, size);
}

/* Page size 512: the lock page is 2097153 (byte 0x40000000). The database
 * grows from 3 pages to past the lock page writing a few pages on either
 * side, then shrinks back. Files stay sparse: only the pages written hit
 * the disk. */
static void test_apply_lock_page(void **state)
{
	const uint32_t ps = 512, lock = ltx_lock_pgno(ps);
	const uint32_t commit = lock + 4;
	const uint32_t written[] = { 2, lock - 2, lock - 1, lock + 1, lock + 3 };
	uint8_t pages[5][512];
	struct model small;
	struct dbfile_apply_result res;

	assert_int_equal(lock, 2097153);
	seed(6);
	random_model(&small, ps, 3);
	int db = new_file("lock.db");
	int want = new_file("lock-want.db");
	int spool = fileio_spool_open(tmp_dir);
	assert_true(spool >= 0);
	write_model(db, &small);
	write_model(want, &small);

	/* The expected result, built by hand. */
	assert_int_equal(ftruncate(want, (off_t)commit * ps), 0);
	for (int i = 0; i < 5; i++) {
		for (uint32_t j = 0; j < ps; j++)
			pages[i][j] = (uint8_t)rnd();
		assert_int_equal(fdio_pwrite_full(want, pages[i], ps, (off_t)(written[i] - 1) * ps), 0);
	}
	/* Reference checksum: written/initial pages by brute force, plus the
	 * zero pages, whose formula test_zero_pages_checksum checked. */
	uint64_t ref = 0;
	uint8_t buf[512];
	for (uint32_t p = 1; p <= 3; p++) {
		assert_int_equal(fdio_pread_full(want, buf, ps, (off_t)(p - 1) * ps), (int)ps);
		ref ^= ltx_page_checksum(p, buf, ps);
	}
	for (int i = 1; i < 5; i++)
		ref ^= ltx_page_checksum(written[i], pages[i], ps) ^ dbfile_zero_pages_checksum(ps, written[i], written[i]);
	ref = LTX_CHECKSUM_FLAG | (ref ^ dbfile_zero_pages_checksum(ps, 4, commit));
	uint64_t chk;
	assert_int_equal(dbfile_checksum(want, ps, &chk, NULL), 0);
	assert_int_equal(chk, ref);

	/* The transaction as LTX. */
	struct ltx_encoder *e = NULL;
	struct ltx_growbuf g = { 0 };
	struct ltx_header h = {
		.flags = LTX_FLAG_COMPRESS, .page_size = ps, .commit = commit,
		.min_txid = 2, .max_txid = 2, .pre_apply_checksum = model_checksum(&small),
	};
	assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &g), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(ltx_encoder_write_page(e, written[i], pages[i]), 0);
	assert_int_equal(ltx_encoder_finish(e, ref, NULL), 0);
	ltx_encoder_free(e);

	struct ltx_pos pos = { 1, model_checksum(&small) };
	assert_int_equal(apply_buf(db, spool, &g, pos, &res), 0);
	assert_int_equal(res.pos.checksum, ref);
	assert_sparse_equal(db, want);
	struct stat st;
	assert_int_equal(fstat(db, &st), 0);
	assert_true(st.st_blocks * 512 < 1024 * 1024); /* still sparse */
	free(g.data);

	/* Snapshot of the 1 GiB database and back: the codec's own pages
	 * checksum (computed independently in ltx.c) must agree. */
	struct dbfile_snapshot_opts opts = { .page_size = ps, .txid = 2, .compress = true };
	struct ltx_growbuf snap = { 0 };
	struct ltx_trailer t;
	assert_int_equal(dbfile_encode_snapshot(want, &opts, ltx_growbuf_write, &snap, &h, &t), 0);
	assert_int_equal(h.commit, commit);
	assert_int_equal(t.post_apply_checksum, ref);
	int copy = new_file("lock-copy.db");
	assert_int_equal(apply_buf(copy, spool, &snap, pos, &res), 0);
	assert_int_equal(res.pos.checksum, ref);
	assert_sparse_equal(copy, want);
	assert_int_equal(fstat(copy, &st), 0);
	assert_true(st.st_blocks * 512 < 1024 * 1024);
	free(snap.data);

	/* Shrink back below the lock page. */
	h = (struct ltx_header){
		.page_size = ps, .commit = 2, .min_txid = 3, .max_txid = 3, .pre_apply_checksum = ref,
	};
	memcpy(model_page(&small, 2), pages[0], ps);
	model_resize(&small, 2);
	memset(&g, 0, sizeof(g));
	encode_ltx(&g, &h, &small, NULL, 0, model_checksum(&small));
	pos = res.pos;
	assert_int_equal(apply_buf(db, spool, &g, pos, &res), 0);
	assert_fd_content(db, small.data, 2 * ps);
	assert_int_equal(res.pos.checksum, model_checksum(&small));
	free(g.data);

	close(copy);
	close(spool);
	close(want);
	close(db);
	model_free(&small);
}

/* ---- Apply: rejections leave the database unchanged ------------------- */

/* A database in some state plus a valid next file for it. */
struct fixture {
	struct model before, after;
	struct ltx_growbuf ltx;
	struct ltx_pos pos;
};

static void make_fixture(struct fixture *f, uint32_t ps, bool compress, bool snapshot)
{
	random_model(&f->before, ps, 2 + rnd_below(max_pages(ps) - 2));
	f->after = model_copy(&f->before);
	f->pos = (struct ltx_pos){ 41, model_checksum(&f->before) };
	if (snapshot) {
		model_free(&f->after);
		random_model(&f->after, ps, 1 + rnd_below(max_pages(ps)));
		encode_model_snapshot(&f->ltx, &f->after, 42, compress);
	} else {
		random_txn(&f->ltx, &f->after, 42, compress);
	}
}

static void free_fixture(struct fixture *f)
{
	model_free(&f->before);
	model_free(&f->after);
	free(f->ltx.data);
}

static void test_apply_corrupt_unchanged(void **state)
{
	seed(7);
	int spool = fileio_spool_open(tmp_dir);
	assert_true(spool >= 0);

	for (int iter = 0; iter < 8; iter++) {
		struct fixture f;
		struct dbfile_apply_result res;
		uint32_t ps = iter < 4 ? 512 : 4096;
		make_fixture(&f, ps, iter & 1, iter & 2);
		int db = new_file("corrupt.db");
		uint8_t *orig = malloc(f.ltx.len);
		memcpy(orig, f.ltx.data, f.ltx.len);
		int n_same = 0;

		/* Bit flips: every byte of the header and trailer, and a sample
		 * of the page block. A rejected file must not have touched the
		 * database, so it is only rewritten after an accepted one. */
		write_model(db, &f.before);
		for (size_t pos = 0; pos < f.ltx.len; pos++) {
			bool edge = pos < LTX_HEADER_SIZE + 8 || pos >= f.ltx.len - LTX_TRAILER_SIZE - 8;
			if (!edge && rnd_below(40) != 0)
				continue;
			memcpy(f.ltx.data, orig, f.ltx.len);
			f.ltx.data[pos] ^= (uint8_t)(1u << rnd_below(8));
			int rc = apply_buf(db, (pos & 1) ? spool : -1, &f.ltx, f.pos, &res);
			if (rc == 0) {
				/* LZ4 can encode the same bytes in several ways (a
				 * match offset into a run of equal bytes, say), so a
				 * flip inside a compressed block may decode to the
				 * very same stream: then the file is intact and the
				 * database must be exactly the new state. */
				if (!(f.ltx.data[4 + 3] & LTX_FLAG_COMPRESS) || pos < LTX_HEADER_SIZE ||
				    pos >= f.ltx.len - LTX_TRAILER_SIZE)
					fail_msg("bit flip at %zu of %zu accepted", pos, f.ltx.len);
				assert_fd_content(db, f.after.data, (size_t)f.after.n_pages * ps);
				/* The frame's content checksum (its last 4 bytes)
				 * is not verified: the file checksum covers it. */
				if (pos < f.ltx.len - LTX_TRAILER_SIZE - 4)
					n_same++;
				write_model(db, &f.before);
				continue;
			}
			assert_false(res.db_changed);
			assert_fd_content(db, f.before.data, (size_t)f.before.n_pages * ps);
		}
		memcpy(f.ltx.data, orig, f.ltx.len);
		assert_true(n_same < 5);

		/* Truncation at every length in the ends, sampled elsewhere. */
		for (size_t len = 0; len < f.ltx.len; len++) {
			bool edge = len < LTX_HEADER_SIZE + 8 || len >= f.ltx.len - LTX_TRAILER_SIZE - 8;
			if (!edge && rnd_below(40) != 0)
				continue;
			struct ltx_growbuf cut = { .data = f.ltx.data, .len = len };
			int rc = apply_buf(db, spool, &cut, f.pos, &res);
			if (rc == 0)
				fail_msg("truncation to %zu of %zu accepted", len, f.ltx.len);
			assert_int_equal(res.err_source, DBFILE_ERR_LTX);
			assert_true(res.err_offset <= len);
			assert_false(res.db_changed);
			assert_fd_content(db, f.before.data, (size_t)f.before.n_pages * ps);
		}

		/* A trailing byte. */
		struct ltx_growbuf longer = { .data = malloc(f.ltx.len + 1), .len = f.ltx.len + 1 };
		memcpy(longer.data, f.ltx.data, f.ltx.len);
		longer.data[f.ltx.len] = 0;
		write_model(db, &f.before);
		assert_int_equal(apply_buf(db, spool, &longer, f.pos, &res), ERR_LTX_TRAILING);
		assert_fd_content(db, f.before.data, (size_t)f.before.n_pages * ps);
		free(longer.data);

		/* And the intact file applies. */
		write_model(db, &f.before);
		assert_int_equal(apply_buf(db, spool, &f.ltx, f.pos, &res), 0);
		assert_fd_content(db, f.after.data, (size_t)f.after.n_pages * ps);

		free(orig);
		close(db);
		free_fixture(&f);
	}
	close(spool);
}

static void test_apply_rejects_position(void **state)
{
	struct fixture f;
	struct dbfile_apply_result res;
	struct ltx_pos pos;
	int db = new_file("pos.db");

	seed(8);
	make_fixture(&f, 1024, true, false);
	write_model(db, &f.before);
	size_t before_len = (size_t)f.before.n_pages * 1024;

	pos = f.pos;
	pos.checksum ^= 0x10;
	assert_int_equal(apply_buf(db, -1, &f.ltx, pos, &res), ERR_LTX_PRE_MISMATCH);
	assert_int_equal(res.err_source, DBFILE_ERR_LTX);
	assert_int_equal(res.err_offset, 40);
	assert_false(res.db_changed);
	assert_fd_content(db, f.before.data, before_len);

	pos = f.pos;
	pos.txid = 40;
	assert_int_equal(apply_buf(db, -1, &f.ltx, pos, &res), ERR_LTX_NOT_CONTIGUOUS);
	assert_int_equal(res.err_offset, 16);
	pos.txid = 42;
	assert_int_equal(apply_buf(db, -1, &f.ltx, pos, &res), ERR_LTX_OVERLAP);
	pos.txid = 100;
	assert_int_equal(apply_buf(db, -1, &f.ltx, pos, &res), ERR_LTX_OVERLAP);
	assert_fd_content(db, f.before.data, before_len);

	/* The database content does not match its claimed position: the
	 * post-apply check catches it before anything is written. */
	uint8_t *bad = malloc(before_len);
	memcpy(bad, f.before.data, before_len);
	bad[before_len - 1] ^= 1;
	write_all(db, bad, before_len);
	int rc = apply_buf(db, -1, &f.ltx, f.pos, &res);
	/* Unless the transaction rewrote or dropped that very byte's page. */
	if (rc != 0) {
		assert_int_equal(rc, ERR_LTX_POST_CHECKSUM);
		assert_false(res.db_changed);
		assert_fd_content(db, bad, before_len);
	}
	free(bad);

	/* Not whole pages. */
	write_all(db, f.before.data, before_len - 1);
	assert_int_equal(apply_buf(db, -1, &f.ltx, f.pos, &res), ERR_DB_SIZE);
	assert_int_equal(res.err_source, DBFILE_ERR_DB);
	assert_int_equal(file_size(db), (off_t)before_len - 1);

	/* A SQLite database of another page size. */
	struct model sq;
	random_model(&sq, 1024, 4);
	memset(sq.data, 0, 100);
	memcpy(sq.data, "SQLite format 3", 16);
	sq.data[16] = 0x08; /* 2048 */
	write_model(db, &sq);
	pos = (struct ltx_pos){ 41, model_checksum(&sq) };
	struct ltx_header h = {
		.page_size = 1024, .commit = 4, .min_txid = 42, .max_txid = 42, .pre_apply_checksum = pos.checksum,
	};
	struct ltx_growbuf g;
	encode_ltx(&g, &h, &sq, NULL, 0, pos.checksum);
	assert_int_equal(apply_buf(db, -1, &g, pos, &res), ERR_LTX_PAGE_SIZE_MISMATCH);
	assert_fd_content(db, sq.data, 4096);
	free(g.data);
	model_free(&sq);

	/* A file whose post-apply checksum is wrong. */
	write_model(db, &f.before);
	struct ltx_growbuf wrong;
	struct model after = model_copy(&f.before);
	struct ltx_header wh = {
		.page_size = 1024, .commit = after.n_pages, .min_txid = 42, .max_txid = 42,
		.pre_apply_checksum = f.pos.checksum,
	};
	uint32_t p1 = 1;
	fill_page(model_page(&after, 1), 1024);
	model_page(&after, 1)[0] ^= 0xff;
	encode_ltx(&wrong, &wh, &after, &p1, 1, model_checksum(&after) ^ 1);
	assert_int_equal(apply_buf(db, -1, &wrong, f.pos, &res), ERR_LTX_POST_CHECKSUM);
	assert_fd_content(db, f.before.data, before_len);
	free(wrong.data);
	model_free(&after);

	close(db);
	free_fixture(&f);
}

/* Phase 2 (writing the database) fails on the Nth write or truncate: the
 * result says the database changed, and a snapshot repairs it. A rejected
 * file never reaches phase 2: no write or truncate is even attempted. */
static void test_apply_write_faults(void **state)
{
	seed(9);
	int spool = fileio_spool_open(tmp_dir);
	assert_true(spool >= 0);
	int db = new_file("fault.db");

	for (int iter = 0; iter < 6; iter++) {
		struct fixture f;
		struct dbfile_apply_result res;
		make_fixture(&f, 512, iter & 1, false);
		size_t before_len = (size_t)f.before.n_pages * 512;

		/* Rejected: not one write or truncate. */
		write_model(db, &f.before);
		long w0 = sys_call_count(SYS_PWRITE), t0 = sys_call_count(SYS_FTRUNCATE);
		struct ltx_pos bad = f.pos;
		bad.checksum ^= 2;
		assert_int_equal(apply_buf(db, spool, &f.ltx, bad, &res), ERR_LTX_PRE_MISMATCH);
		f.ltx.data[f.ltx.len - 1] ^= 1;
		assert_int_equal(apply_buf(db, spool, &f.ltx, f.pos, &res), ERR_LTX_FILE_CHECKSUM);
		f.ltx.data[f.ltx.len - 1] ^= 1;
		assert_int_equal(sys_call_count(SYS_PWRITE), w0);
		assert_int_equal(sys_call_count(SYS_FTRUNCATE), t0);
		assert_fd_content(db, f.before.data, before_len);

		for (int kind = 0; kind < 2; kind++) {
			enum sys_call call = kind ? SYS_FTRUNCATE : SYS_PWRITE;
			for (long nth = 1; nth <= 3; nth++) {
				write_model(db, &f.before);
				sys_fault_arm(call, sys_call_count(call) + nth, EIO);
				int rc = apply_buf(db, spool, &f.ltx, f.pos, &res);
				sys_fault_arm(call, 0, 0);
				if (rc == 0) {
					/* Fewer than nth such calls were needed. */
					assert_fd_content(db, f.after.data, (size_t)f.after.n_pages * 512);
					continue;
				}
				assert_int_equal(rc, -EIO);
				assert_int_equal(res.err_source, DBFILE_ERR_DB);
				assert_true(res.db_changed);
			}
		}

		/* Resync: a snapshot of the wanted state applies over anything. */
		struct ltx_growbuf snap;
		encode_model_snapshot(&snap, &f.after, 42, true);
		assert_int_equal(apply_buf(db, spool, &snap, f.pos, &res), 0);
		assert_fd_content(db, f.after.data, (size_t)f.after.n_pages * 512);
		free(snap.data);
		free_fixture(&f);
	}
	close(db);
	close(spool);
}

/* ---- Main ------------------------------------------------------------- */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_page_size),
		cmocka_unit_test(test_checksum_golden),
		cmocka_unit_test(test_checksum_vectors),
		cmocka_unit_test(test_zero_pages_checksum),
		cmocka_unit_test(test_checksum_sparse),
		cmocka_unit_test(test_snapshot_round_trip),
		cmocka_unit_test(test_encode_full_image_following),
		cmocka_unit_test(test_encode_snapshot_header_page_size),
		cmocka_unit_test(test_apply_golden_chain),
		cmocka_unit_test(test_apply_golden_d),
		cmocka_unit_test(test_apply_random_chains),
		cmocka_unit_test(test_apply_delete_and_resize_only),
		cmocka_unit_test(test_apply_lock_page),
		cmocka_unit_test(test_apply_corrupt_unchanged),
		cmocka_unit_test(test_apply_rejects_position),
		cmocka_unit_test(test_apply_write_faults),
	};

	return RUN_IN_TMP_DIR("test_dbfile", tests);
}
