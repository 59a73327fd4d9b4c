/*
 * test_cloud_store.c — unit tests of litefs-cloud's storage engine
 * (cloud_store.c, cloud_store_maint.c, cloud_catalog.c, the local backend).
 *
 * Chains of transactions are built from a brute-force in-memory model
 * (testutil.h): each transaction changes random pages and resizes the
 * database, and the model's checksum after each TXID is recorded. Every
 * restore, export and resolve is compared with that record, before and
 * after compaction and retention. Timestamps are synthetic and passed to
 * cloud_store_maintain() as "now", so the tests are deterministic.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cloud/cloud_changes.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_plan.h"
#include "cloud/cloud_rebuild.h"
#include "cloud/cloud_store_int.h"
#include "ltx/dbfile.h"
#include "base/err.h"
#include "base/fdio.h"
#include "ltx/ltx.h"
#include "base/sys.h"
#include "testutil.h"

#define MAX_TX 2000
#define T0 1700000000000LL

/* ---- Chains --------------------------------------------------------------- */

struct chain {
	struct model m;
	uint64_t txid;
	int64_t now;
	uint64_t sum[MAX_TX + 1];
	int64_t ts[MAX_TX + 1];
};

static void chain_init(struct chain *c, uint32_t page_size)
{
	memset(c, 0, sizeof(*c));
	c->m.page_size = page_size;
	c->now = T0;
}

static void fill(uint8_t *p, uint32_t n)
{
	uint8_t v = (uint8_t)rnd();
	for (uint32_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v + i * (uint8_t)(rnd_below(3)));
}

/* The next transaction of c as an LTX file (a snapshot for TXID 1). */
static void chain_next(struct chain *c, struct ltx_growbuf *out, int64_t dt)
{
	uint64_t pre = c->txid ? model_checksum(&c->m) : 0;
	uint32_t n = c->m.n_pages;
	n = n == 0 ? 4 : (uint32_t)((int)n + (int)rnd_below(5) - 1);
	if (n < 1)
		n = 1;
	if (n > 48)
		n = 40;
	model_resize(&c->m, n);
	uint32_t pg[64];
	size_t k = 0;
	for (uint32_t p = 1; p <= n; p++) {
		if (c->txid == 0 || rnd_below(8) == 0) {
			fill(model_page(&c->m, p), c->m.page_size);
			pg[k++] = p;
		}
	}
	c->txid++;
	c->now += dt;
	struct ltx_header h = { .flags = rnd_below(2) ? LTX_FLAG_COMPRESS : 0, .page_size = c->m.page_size,
				.commit = n, .min_txid = c->txid == 1 ? 1 : c->txid, .max_txid = c->txid,
				.timestamp_ms = c->now, .pre_apply_checksum = pre };
	c->sum[c->txid] = model_checksum(&c->m);
	c->ts[c->txid] = c->now;
	encode_ltx(out, &h, &c->m, pg, k, c->sum[c->txid]);
}

/* open_store() stores objects as LTX with LZ4 while this is set. */
static bool open_store_lz4;

static struct cloud_store *open_store(const char *name, int64_t retention, const int64_t *levels, size_t n_levels,
				      int64_t snap, uint64_t max_upload)
{
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/%s", tmp_dir, name);
	struct cloud_store_opts o = { .data_dir = dir, .retention_ms = retention, .levels_ms = levels,
				      .n_levels = n_levels, .snapshot_interval_ms = snap,
				      .max_upload_bytes = max_upload,
				      /* The interval rules these tests check: a
				       * snapshot per interval, every group merged. */
				      .snapshot_ratio = -1, .min_merge = 2, .store_lz4 = open_store_lz4 };
	struct cloud_store *cs = NULL;
	assert_int_equal(cloud_store_open(&o, &cs), 0);
	return cs;
}

static int ingest_buf(struct cloud_store *cs, const char *db, const uint8_t *data, size_t len,
		      struct cloud_ingest_result *res)
{
	struct ltx_membuf mb = { data, len, 0 };
	return cloud_ingest(cs, "c1", db, ltx_membuf_read, &mb, res);
}

static void ingest_ok(struct cloud_store *cs, const char *db, struct ltx_growbuf *b, uint64_t txid)
{
	struct cloud_ingest_result res;
	int rc = ingest_buf(cs, db, b->data, b->len, &res);
	if (rc != 0)
		fail_msg("ingest of %llu: %s (%s)", (unsigned long long)txid, err_str(rc), res.msg);
	assert_int_equal(res.pos.txid, txid);
	assert_int_equal(res.hwm, txid);
	free(b->data);
	b->data = NULL;
}

/* Ingests n more transactions of c into db. */
static void chain_push(struct chain *c, struct cloud_store *cs, const char *db, int n, int64_t max_dt)
{
	for (int i = 0; i < n; i++) {
		struct ltx_growbuf b;
		chain_next(c, &b, 1 + (int64_t)rnd_below((uint32_t)max_dt));
		ingest_ok(cs, db, &b, c->txid);
	}
}

/* Checksum of an exported state (plain file bytes). */
static uint64_t bytes_checksum(const uint8_t *data, size_t len, uint32_t ps)
{
	struct model m = { .page_size = ps, .n_pages = (uint32_t)(len / ps), .data = (uint8_t *)data };
	assert_int_equal(len % ps, 0);
	return model_checksum(&m);
}

static void export_check(struct cloud_store *cs, const char *db, const struct cloud_target *t, uint64_t txid,
			 uint64_t sum, uint32_t ps)
{
	struct ltx_growbuf b = { 0 };
	struct cloud_pos pos;
	int rc = cloud_export(cs, "c1", db, t, CLOUD_FORMAT_SQLITE, ltx_growbuf_write, &b, &pos);
	if (rc != 0)
		fail_msg("export of %llu: %s", (unsigned long long)txid, err_str(rc));
	assert_int_equal(pos.txid, txid);
	assert_int_equal(pos.checksum, sum);
	assert_int_equal(bytes_checksum(b.data, b.len, ps), sum);
	free(b.data);
}

/* Exports as LTX and applies it to an empty file: the checksum must hold. */
static void export_ltx_check(struct cloud_store *cs, const char *db, uint64_t txid, uint64_t sum)
{
	struct ltx_growbuf b = { 0 };
	struct cloud_target t = { .txid = txid };
	struct cloud_pos pos;
	assert_int_equal(cloud_export(cs, "c1", db, &t, CLOUD_FORMAT_LTX, ltx_growbuf_write, &b, &pos), 0);
	int fd = new_file("ltxcheck");
	struct ltx_membuf mb = { b.data, b.len, 0 };
	struct dbfile_apply_result ar;
	assert_int_equal(dbfile_apply(fd, -1, ltx_membuf_read, &mb, (struct ltx_pos){ 0, 0 }, &ar), 0);
	free(ar.written);
	assert_int_equal(ar.pos.txid, txid);
	assert_int_equal(ar.pos.checksum, sum);
	assert_int_equal(ar.header.min_txid, 1);
	close(fd);
	free(b.data);
}

static void check_random_points(struct cloud_store *cs, const char *db, struct chain *c, uint64_t from, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t tx = from + rnd_below((uint32_t)(c->txid - from + 1));
		struct cloud_target t = { .txid = tx };
		struct cloud_pos pos;
		assert_int_equal(cloud_resolve(cs, "c1", db, &t, &pos), 0);
		assert_int_equal(pos.checksum, c->sum[tx]);
		assert_int_equal(pos.ts_ms, c->ts[tx]);
		export_check(cs, db, &t, tx, c->sum[tx], c->m.page_size);
		/* By timestamp: any moment before the next transaction. */
		int64_t gap = tx < c->txid ? c->ts[tx + 1] - c->ts[tx] : 1000;
		struct cloud_target tt = { .ts_ms = c->ts[tx] + (int64_t)rnd_below((uint32_t)gap) };
		assert_int_equal(cloud_resolve(cs, "c1", db, &tt, &pos), 0);
		assert_int_equal(pos.txid, tx);
		export_check(cs, db, &tt, tx, c->sum[tx], c->m.page_size);
	}
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	size_t n = 0;
	struct dirent *de;
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		/* Meta objects (cloud_rebuild.h) name databases; not LTX files. */
		if (de->d_name[0] == '.' || !strcmp(de->d_name, "meta"))
			continue;
		char sub[1024];
		struct stat st;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			n += count_files(sub);
		else
			n++;
	}
	closedir(d);
	return n;
}

static size_t store_files(const char *name, const char *sub)
{
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/%s/%s", tmp_dir, name, sub);
	return count_files(dir);
}

static struct cloud_db_info *info(struct cloud_store *cs, const char *db)
{
	struct cloud_db_info *j = NULL;
	assert_int_equal(cloud_db_info(cs, "c1", db, &j), 0);
	assert_non_null(j);
	return j;
}

static uint64_t level_files(const struct cloud_db_info *j, int level)
{
	assert_true((size_t)level < j->n_levels);
	assert_int_equal(j->levels[level].level, level);
	return j->levels[level].files;
}

/* The longest restore plan (files read) over every position of db 1. */
static size_t longest_plan(struct cloud_store *cs, uint64_t from, uint64_t to)
{
	size_t longest = 0;
	for (uint64_t tx = from; tx <= to; tx++) {
		struct cloud_plan p = { 0 };
		cloud_catalog_lock(cs->cat);
		assert_int_equal(cloud_plan_restore(cs->cat, 1, tx, &p), 0);
		cloud_catalog_unlock(cs->cat);
		if (p.n > longest)
			longest = p.n;
		free(p.f);
	}
	return longest;
}

/* ---- Tests ---------------------------------------------------------------- */

static const int64_t small_levels[] = { 100, 1000, 5000 };

static void test_ingest_restore_compact(void **state)
{
	(void)state;
	static struct chain c;
	seed(1);
	chain_init(&c, 512);
	struct cloud_store *cs = open_store("irc", 0, small_levels, 3, 20000, 0);
	chain_push(&c, cs, "a.db", 400, 60);
	check_random_points(cs, "a.db", &c, 1, 25);
	export_ltx_check(cs, "a.db", c.txid / 2, c.sum[c.txid / 2]);

	/* Compaction of every level and snapshots, then the same checks. */
	assert_int_equal(cloud_store_maintain(cs, c.now + 60000), 0);
	struct cloud_db_info *j = info(cs, "a.db");
	assert_true(level_files(j, 1) > 0);
	assert_true(level_files(j, 2) > 0);
	assert_true(level_files(j, 3) > 0);
	assert_true(level_files(j, 4) > 0);
	assert_int_equal(level_files(j, 0), 400);
	assert_int_equal(j->n_levels, 5);
	assert_int_equal(j->levels[0].kind, CLOUD_LEVEL_UPLOAD);
	assert_int_equal(j->levels[3].kind, CLOUD_LEVEL_COMPACTED);
	assert_int_equal(j->levels[4].kind, CLOUD_LEVEL_SNAPSHOT);
	assert_true(j->n_snapshots >= 2);
	for (size_t i = 0; i < j->n_snapshots; i++)
		assert_true(j->snapshots[i].level == 0 || j->snapshots[i].level == 4);
	cloud_db_info_free(j);
	check_random_points(cs, "a.db", &c, 1, 25);
	export_ltx_check(cs, "a.db", c.txid, c.sum[c.txid]);
	/* 400 transactions over ~12 s; levels 0.1/1/5 s, snapshots 20 s: a
	 * plan is a base plus at most ~4 + 5 + 10 files plus the L0 files of
	 * one 100 ms interval (without compaction it would be up to 400). */
	size_t longest = longest_plan(cs, 1, c.txid);
	assert_true(longest <= 30);

	/* More transactions after compaction, compacted again. */
	chain_push(&c, cs, "a.db", 100, 60);
	assert_int_equal(cloud_store_maintain(cs, c.now + 60000), 0);
	check_random_points(cs, "a.db", &c, 1, 15);

	/* Outside the window / not stored. */
	struct cloud_target t = { .txid = c.txid + 1 };
	struct cloud_pos pos;
	assert_int_equal(cloud_resolve(cs, "c1", "a.db", &t, &pos), ERR_CLOUD_WINDOW);
	t = (struct cloud_target){ .ts_ms = T0 - 5 };
	assert_int_equal(cloud_resolve(cs, "c1", "a.db", &t, &pos), ERR_CLOUD_WINDOW);
	assert_int_equal(cloud_resolve(cs, "c1", "nope.db", &t, &pos), ERR_CLOUD_NOT_FOUND);
	assert_int_equal(cloud_resolve(cs, "c1", "../x", &t, &pos), ERR_CLOUD_NAME);
	cloud_store_close(cs);
	model_free(&c.m);
}

/* The same chain under the old rules (a snapshot every interval, every
 * group merged) and under spacing by size (snapshot_ratio, min_merge):
 * spacing stores fewer snapshots and fewer bytes, every position stays
 * restorable with its checksum, and plans stay bounded. */
static void test_storage_spacing(void **state)
{
	(void)state;
	static const int64_t lv[] = { 100, 1000 };
	static struct chain c[2];
	uint64_t bytes[2], snaps[2], l1[2];
	size_t longest[2];
	for (int k = 0; k < 2; k++) {
		seed(41);
		chain_init(&c[k], 512);
		char dir[512];
		snprintf(dir, sizeof(dir), "%s/spacing%d", tmp_dir, k);
		struct cloud_store_opts o = { .data_dir = dir, .levels_ms = lv, .n_levels = 2,
					      .snapshot_interval_ms = 2000, .snapshot_ratio = k ? 20 : -1,
					      .min_merge = k ? 6 : 2 };
		struct cloud_store *cs = NULL;
		assert_int_equal(cloud_store_open(&o, &cs), 0);
		for (int round = 0; round < 4; round++) {
			chain_push(&c[k], cs, "a.db", 100, 60);
			assert_int_equal(cloud_store_maintain(cs, c[k].now + 100), 0);
		}
		assert_int_equal(cloud_store_maintain(cs, c[k].now + 60000), 0);
		struct cloud_db_info *j = info(cs, "a.db");
		bytes[k] = j->bytes;
		snaps[k] = level_files(j, 3);
		l1[k] = level_files(j, 1);
		assert_int_equal(level_files(j, 0), 400);
		cloud_db_info_free(j);
		check_random_points(cs, "a.db", &c[k], 1, 30);
		export_ltx_check(cs, "a.db", c[k].txid, c[k].sum[c[k].txid]);
		longest[k] = longest_plan(cs, 1, c[k].txid);
		cloud_store_close(cs);
		model_free(&c[k].m);
	}
	/* ~12 s of transactions: 5 or 6 snapshot intervals. */
	assert_true(snaps[0] >= 4);
	assert_true(snaps[1] < snaps[0]);
	assert_true(l1[1] < l1[0]);
	assert_true(bytes[1] < bytes[0]);
	/* Bounded: a base, at most 200 files to the last snapshot interval's
	 * end, then fewer than min_merge files per interval of each level. */
	assert_true(longest[1] <= 1 + CLOUD_SNAP_PLAN_FILES + 2 * 5 + 20 * 5 + 6);
	print_message("spacing: bytes %llu -> %llu, snapshots %llu -> %llu, L1 files %llu -> %llu, longest plan "
		      "%zu -> %zu\n", (unsigned long long)bytes[0], (unsigned long long)bytes[1],
		      (unsigned long long)snaps[0], (unsigned long long)snaps[1], (unsigned long long)l1[0],
		      (unsigned long long)l1[1], longest[0], longest[1]);
}

/* Asserts the database is still at txid and nothing was left behind. */
static void assert_unchanged(struct cloud_store *cs, const char *name, const char *db, struct chain *c,
			     size_t objects)
{
	struct cloud_target t = { 0 };
	struct cloud_pos pos;
	assert_int_equal(cloud_resolve(cs, "c1", db, &t, &pos), 0);
	assert_int_equal(pos.txid, c->txid);
	assert_int_equal(pos.checksum, c->sum[c->txid]);
	assert_int_equal(store_files(name, "objects"), objects);
	assert_int_equal(store_files(name, "tmp"), 0);
}

static void refuse(struct cloud_store *cs, const uint8_t *data, size_t len, int want)
{
	struct cloud_ingest_result res;
	int rc = ingest_buf(cs, "e.db", data, len, &res);
	if (rc != want)
		fail_msg("want %s, got %s (%s)", err_name(want), err_name(rc), res.msg);
	assert_true(res.msg[0] != '\0');
}

static void test_ingest_errors(void **state)
{
	(void)state;
	static struct chain c;
	struct ltx_growbuf b;
	struct cloud_ingest_result res;
	seed(2);
	chain_init(&c, 1024);
	struct cloud_store *cs = open_store("err", 0, NULL, 0, 0, 64 * 1024);

	/* A non-snapshot first upload. */
	struct chain c2;
	chain_init(&c2, 1024);
	chain_next(&c2, &b, 1);
	free(b.data);
	chain_next(&c2, &b, 1);
	refuse(cs, b.data, b.len, ERR_CLOUD_POS_MISMATCH);
	free(b.data);
	model_free(&c2.m);
	assert_int_equal(store_files("err", "objects"), 0);

	chain_push(&c, cs, "e.db", 5, 10);
	size_t objects = store_files("err", "objects");
	chain_next(&c, &b, 10);
	c.txid--; /* not stored yet */

	/* Replay, gap, wrong pre-apply checksum. */
	struct ltx_header h;
	assert_int_equal(ltx_header_decode(b.data, &h), 0);
	uint8_t *bad = malloc(b.len);
	for (int k = 0; k < 3; k++) {
		struct ltx_header hh = h;
		if (k == 0)
			hh.min_txid = hh.max_txid = c.txid;
		else if (k == 1)
			hh.min_txid = hh.max_txid = c.txid + 2;
		else
			hh.pre_apply_checksum ^= 0x10;
		memcpy(bad, b.data, b.len);
		ltx_header_encode(&hh, bad);
		assert_int_equal(ingest_buf(cs, "e.db", bad, b.len, &res), ERR_CLOUD_POS_MISMATCH);
		assert_int_equal(res.pos.txid, c.txid);
		assert_int_equal(res.pos.checksum, c.sum[c.txid]);
		assert_unchanged(cs, "err", "e.db", &c, objects);
	}
	/* Corrupt byte anywhere after the header; truncation at any length. */
	for (int k = 0; k < 20; k++) {
		memcpy(bad, b.data, b.len);
		size_t off = LTX_HEADER_SIZE + rnd_below((uint32_t)(b.len - LTX_HEADER_SIZE));
		bad[off] ^= (uint8_t)(1 + rnd_below(255));
		assert_true(ingest_buf(cs, "e.db", bad, b.len, &res) < 0);
		assert_true(ingest_buf(cs, "e.db", b.data, rnd_below((uint32_t)b.len), &res) < 0);
		assert_unchanged(cs, "err", "e.db", &c, objects);
	}
	/* Trailing garbage. */
	memcpy(bad, b.data, b.len);
	uint8_t *longer = malloc(b.len + 3);
	memcpy(longer, b.data, b.len);
	memset(longer + b.len, 7, 3);
	refuse(cs, longer, b.len + 3, ERR_LTX_TRAILING);
	free(longer);
	assert_unchanged(cs, "err", "e.db", &c, objects);

	/* Page size change (the file is otherwise valid). */
	struct model m2 = { .page_size = 512 };
	model_resize(&m2, 2);
	uint32_t pg[] = { 1, 2 };
	memset(model_page(&m2, 1), 1, 512);
	struct ltx_header hp = { .page_size = 512, .commit = 2, .min_txid = c.txid + 1, .max_txid = c.txid + 1,
				 .timestamp_ms = c.now + 1, .pre_apply_checksum = c.sum[c.txid] };
	struct ltx_growbuf pb;
	encode_ltx(&pb, &hp, &m2, pg, 2, model_checksum(&m2));
	refuse(cs, pb.data, pb.len, ERR_CLOUD_PAGE_SIZE);
	free(pb.data);
	assert_unchanged(cs, "err", "e.db", &c, objects);

	/* Snapshot that does not move forward: refused. */
	struct ltx_growbuf sb;
	encode_model_snapshot(&sb, &m2, c.txid, false);
	refuse(cs, sb.data, sb.len, ERR_CLOUD_POS_MISMATCH);
	free(sb.data);
	assert_unchanged(cs, "err", "e.db", &c, objects);

	/* Too large (max 64 KiB). */
	struct model big = { .page_size = 1024 };
	model_resize(&big, 100);
	for (uint32_t p = 1; p <= 100; p++)
		fill(model_page(&big, p), 1024);
	encode_model_snapshot(&sb, &big, c.txid + 5, false);
	refuse(cs, sb.data, sb.len, ERR_CLOUD_TOO_LARGE);
	free(sb.data);
	model_free(&big);
	assert_unchanged(cs, "err", "e.db", &c, objects);

	/* Failing fsync and rename: refused, nothing kept, then it works. */
	sys_fault_arm(SYS_FSYNC, sys_call_count(SYS_FSYNC) + 1, EIO);
	assert_true(ingest_buf(cs, "e.db", b.data, b.len, &res) < 0);
	assert_unchanged(cs, "err", "e.db", &c, objects);
	sys_fault_arm(SYS_RENAME, sys_call_count(SYS_RENAME) + 1, EIO);
	assert_true(ingest_buf(cs, "e.db", b.data, b.len, &res) < 0);
	assert_unchanged(cs, "err", "e.db", &c, objects);

	/* The right file still goes in. */
	c.txid++;
	ingest_ok(cs, "e.db", &b, c.txid);
	free(bad);

	/* A forward snapshot jump (a node that lost its history) is accepted. */
	encode_model_snapshot(&sb, &m2, c.txid + 10, true);
	assert_int_equal(ingest_buf(cs, "e.db", sb.data, sb.len, &res), 0);
	assert_int_equal(res.pos.txid, c.txid + 10);
	assert_int_equal(res.pos.checksum, model_checksum(&m2));
	free(sb.data);
	struct cloud_target t = { .txid = c.txid + 5 };
	struct cloud_pos pos;
	/* The TXIDs the snapshot skipped are not restorable, and the engine
	 * says which upload covers them and what is nearest. */
	assert_int_equal(cloud_resolve(cs, "c1", "e.db", &t, &pos), ERR_CLOUD_NOT_RESTORABLE);
	struct cloud_gap g;
	assert_int_equal(cloud_gap(cs, "c1", "e.db", c.txid + 5, &g), 0);
	assert_int_equal(g.txid, c.txid + 5);
	assert_int_equal(g.upload_min, 1);
	assert_int_equal(g.upload_max, c.txid + 10);
	assert_int_equal(g.before.txid, c.txid);
	assert_int_equal(g.before.checksum, c.sum[c.txid]);
	assert_int_equal(g.after.txid, c.txid + 10);
	assert_int_equal(g.after.checksum, model_checksum(&m2));
	assert_int_equal(cloud_gap(cs, "c1", "e.db", c.txid, &g), ERR_CLOUD_WINDOW);      /* a position */
	assert_int_equal(cloud_gap(cs, "c1", "e.db", c.txid + 11, &g), ERR_CLOUD_WINDOW); /* beyond */
	assert_int_equal(cloud_gap(cs, "c1", "nope.db", c.txid + 5, &g), ERR_CLOUD_NOT_FOUND);
	/* info: every transaction up to c.txid, then one batch end. */
	struct cloud_db_info *j = info(cs, "e.db");
	assert_int_equal(j->n_ranges, 2);
	assert_true(j->ranges[0].per_tx);
	assert_int_equal(j->ranges[0].from_txid, 1);
	assert_int_equal(j->ranges[0].to_txid, c.txid);
	assert_int_equal(j->ranges[0].points, c.txid);
	assert_false(j->ranges[1].per_tx);
	assert_int_equal(j->ranges[1].from_txid, c.txid + 1);
	assert_int_equal(j->ranges[1].to_txid, c.txid + 10);
	assert_int_equal(j->ranges[1].points, 1);
	assert_int_equal(j->ranges_omitted, 0);
	cloud_db_info_free(j);
	t.txid = c.txid;
	assert_int_equal(cloud_resolve(cs, "c1", "e.db", &t, &pos), 0);
	export_check(cs, "e.db", &t, c.txid, c.sum[c.txid], 1024);
	t.txid = c.txid + 10;
	export_check(cs, "e.db", &t, c.txid + 10, model_checksum(&m2), 512);

	/* Hostile names. */
	assert_int_equal(ingest_buf(cs, "../x", b.data, 0, &res), ERR_CLOUD_NAME);
	assert_int_equal(ingest_buf(cs, "a/b", b.data, 0, &res), ERR_CLOUD_NAME);
	char longname[302];
	memset(longname, 'x', 301);
	longname[301] = '\0';
	assert_int_equal(ingest_buf(cs, longname, b.data, 0, &res), ERR_CLOUD_NAME);
	assert_int_equal(ingest_buf(cs, "a\x01", b.data, 0, &res), ERR_CLOUD_NAME);
	model_free(&m2);
	cloud_store_close(cs);
	model_free(&c.m);
}

/* One interval holding more files than one merge takes (batches). */
static void test_compact_batches(void **state)
{
	(void)state;
	static struct chain c;
	static const int64_t lv[] = { 10000 };
	seed(6);
	chain_init(&c, 512);
	struct cloud_store *cs = open_store("batch", 0, lv, 1, 100000, 0);
	chain_push(&c, cs, "b.db", 200, 2);
	assert_int_equal(cloud_store_maintain(cs, c.now + 20000), 0);
	struct cloud_db_info *j = info(cs, "b.db");
	assert_int_equal(level_files(j, 1), 1);
	cloud_db_info_free(j);
	assert_int_equal(longest_plan(cs, c.txid, c.txid), 2);
	check_random_points(cs, "b.db", &c, 1, 10);
	cloud_store_close(cs);
	model_free(&c.m);
}

static void test_retention(void **state)
{
	(void)state;
	static struct chain c;
	seed(3);
	chain_init(&c, 512);
	const int64_t retention = 3000;
	struct cloud_store *cs = open_store("ret", retention, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "r.db", 300, 80); /* about 12 s of history */
	size_t before = store_files("ret", "objects");
	int64_t now = c.now + 500;
	assert_int_equal(cloud_store_maintain(cs, now), 0);
	size_t after = store_files("ret", "objects");
	assert_true(after < before);

	/* r: the position in effect at the window start. */
	uint64_t r = 1;
	while (r < c.txid && c.ts[r + 1] <= now - retention)
		r++;
	assert_true(r > 50);
	struct cloud_db_info *j = info(cs, "r.db");
	assert_int_equal(j->min_txid, r);
	assert_int_equal(j->transactions, c.txid - r + 1);
	cloud_db_info_free(j);
	check_random_points(cs, "r.db", &c, r, 25);
	struct cloud_target t = { .txid = r - 1 };
	struct cloud_pos pos;
	assert_int_equal(cloud_resolve(cs, "c1", "r.db", &t, &pos), ERR_CLOUD_WINDOW);
	t = (struct cloud_target){ .ts_ms = c.ts[r] - 1 };
	assert_int_equal(cloud_resolve(cs, "c1", "r.db", &t, &pos), ERR_CLOUD_WINDOW);

	/* Far later: only what the last position needs remains. */
	chain_push(&c, cs, "r.db", 50, 80);
	assert_int_equal(cloud_store_maintain(cs, c.now + 100000), 0);
	check_random_points(cs, "r.db", &c, c.txid, 2);
	assert_true(store_files("ret", "objects") <= 3);
	cloud_store_close(cs);

	/* Reopen: nothing lost, nothing orphaned. */
	cs = open_store("ret", retention, small_levels, 3, 4000, 0);
	check_random_points(cs, "r.db", &c, c.txid, 2);
	cloud_store_close(cs);
	model_free(&c.m);
}

static void test_restore_fork_delete(void **state)
{
	(void)state;
	static struct chain c;
	seed(4);
	chain_init(&c, 512);
	struct cloud_store *cs = open_store("rst", 0, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "x.db", 60, 50);
	uint64_t last = c.txid;
	struct cloud_pos pos;
	struct cloud_target t = { .txid = 17 };

	assert_int_equal(cloud_restore(cs, "c1", "x.db", &t, NULL, &pos), 0);
	assert_int_equal(pos.txid, last + 1);
	assert_int_equal(pos.checksum, c.sum[17]);
	/* Undo: restore to the state before the restore. */
	t.txid = last;
	assert_int_equal(cloud_restore(cs, "c1", "x.db", &t, NULL, &pos), 0);
	assert_int_equal(pos.txid, last + 2);
	assert_int_equal(pos.checksum, c.sum[last]);
	/* Ingest continues from the restored state. */
	c.txid = last + 2;
	c.sum[c.txid] = c.sum[last];
	chain_push(&c, cs, "x.db", 3, 50);

	/* Fork by timestamp into a new name. */
	t = (struct cloud_target){ .ts_ms = c.ts[30] };
	assert_int_equal(cloud_restore(cs, "c1", "x.db", &t, "fork.db", &pos), 0);
	assert_int_equal(pos.txid, 1);
	assert_int_equal(pos.checksum, c.sum[30]);
	assert_int_equal(cloud_restore(cs, "c1", "x.db", &t, "fork.db", &pos), ERR_CLOUD_EXISTS);
	t = (struct cloud_target){ 0 };
	export_check(cs, "fork.db", &t, 1, c.sum[30], 512);

	/* Delete; the name can start again with a snapshot; purge. */
	assert_int_equal(cloud_db_delete(cs, "c1", "x.db"), 0);
	assert_int_equal(cloud_resolve(cs, "c1", "x.db", &t, &pos), ERR_CLOUD_NOT_FOUND);
	assert_int_equal(cloud_db_delete(cs, "c1", "x.db"), ERR_CLOUD_NOT_FOUND);
	static struct chain c2;
	chain_init(&c2, 512);
	chain_push(&c2, cs, "x.db", 3, 50);
	export_check(cs, "x.db", &t, 3, c2.sum[3], 512);
	assert_int_equal(cloud_cluster_purge(cs, "c1"), 0);
	assert_int_equal(store_files("rst", "objects"), 0);
	assert_int_equal(store_files("rst", "current"), 0);
	cloud_store_close(cs);
	model_free(&c.m);
	model_free(&c2.m);
}

/* cloud_changes_fd() from `from`, applied to the state exported at from:
 * the result must be the current state (checksum want). */
static void changes_apply_check(struct cloud_store *cs, uint64_t from, uint64_t from_sum, uint64_t want_txid,
				uint64_t want_sum)
{
	int fd = -1, dbfd = -1;
	uint64_t size, dbsize;
	struct cloud_pos to, p;
	struct cloud_target t = { .txid = from };
	int rc = cloud_changes_fd(cs, "c1", "x.db", (struct ltx_pos){ from, from_sum }, &fd, &size, &to);
	if (rc != 0)
		fail_msg("changes from %llu: %s", (unsigned long long)from, err_str(rc));
	assert_int_equal(to.txid, want_txid);
	assert_int_equal(to.checksum, want_sum);
	assert_int_equal(cloud_export_fd(cs, "c1", "x.db", &t, CLOUD_FORMAT_SQLITE, &dbfd, &dbsize, &p), 0);
	struct dbfile_apply_result res = { 0 };
	rc = dbfile_apply(dbfd, -1, fdio_read, &fd, (struct ltx_pos){ from, from_sum }, &res);
	if (rc != 0)
		fail_msg("apply of the changes from %llu: %s", (unsigned long long)from, err_str(rc));
	assert_int_equal(res.header.min_txid, from + 1);
	assert_int_equal(res.pos.txid, want_txid);
	assert_int_equal(res.pos.checksum, want_sum);
	free(res.written);
	close(fd);
	close(dbfd);
}

/* GET /db/changes: the stored files after a position merged into one LTX
 * file that leads from it to the current state; refusals for a position
 * off the history and for a node so far behind that a snapshot is less. */
static void changes_run(const char *name)
{
	static struct chain c;
	seed(9);
	chain_init(&c, 512);
	struct cloud_store *cs = open_store(name, 0, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "x.db", 40, 50);
	uint64_t last = c.txid;
	struct cloud_pos pos, to;
	struct cloud_target t = { .txid = last - 1 }; /* few pages differ */
	assert_int_equal(cloud_restore(cs, "c1", "x.db", &t, NULL, &pos), 0);
	/* One behind (the primary after a restore): the restore's own file. */
	changes_apply_check(cs, last, c.sum[last], last + 1, c.sum[last - 1]);
	/* Several behind: the files merged. */
	changes_apply_check(cs, last - 2, c.sum[last - 2], last + 1, c.sum[last - 1]);
	/* Compacted first: the plan takes coarser files, same answer. */
	assert_int_equal(cloud_store_maintain(cs, c.now + 100000), 0);
	changes_apply_check(cs, last - 2, c.sum[last - 2], last + 1, c.sum[last - 1]);

	int fd = -1;
	uint64_t size;
	struct ltx_pos off = { last, c.sum[last] ^ 1 };
	assert_int_equal(cloud_changes_fd(cs, "c1", "x.db", off, &fd, &size, &to), ERR_CLOUD_POS_MISMATCH);
	assert_int_equal(to.txid, last + 1);
	off = (struct ltx_pos){ last + 1, c.sum[last - 1] }; /* the current position: nothing to send */
	assert_int_equal(cloud_changes_fd(cs, "c1", "x.db", off, &fd, &size, &to), ERR_CLOUD_POS_MISMATCH);
	off = (struct ltx_pos){ last + 5, c.sum[last - 1] };
	assert_int_equal(cloud_changes_fd(cs, "c1", "x.db", off, &fd, &size, &to), ERR_CLOUD_POS_MISMATCH);
	off = (struct ltx_pos){ 0, 0 };
	assert_int_equal(cloud_changes_fd(cs, "c1", "x.db", off, &fd, &size, &to), ERR_CLOUD_POS_MISMATCH);
	off = (struct ltx_pos){ 1, c.sum[1] }; /* every page rewritten since: a snapshot is less */
	assert_int_equal(cloud_changes_fd(cs, "c1", "x.db", off, &fd, &size, &to), ERR_CLOUD_TOO_LARGE);
	assert_int_equal(cloud_changes_fd(cs, "c1", "nope.db", off, &fd, &size, &to), ERR_CLOUD_NOT_FOUND);
	assert_int_equal(fd, -1);
	cloud_store_close(cs);
	model_free(&c.m);
}

/* Both stored forms: zstd (merged even when one file), and LTX with LZ4
 * (one file sent as it is stored). */
static void test_changes(void **state)
{
	(void)state;
	changes_run("chg");
	open_store_lz4 = true;
	changes_run("chg-lz4");
	open_store_lz4 = false;
}

static void sql(sqlite3 *db, const char *s)
{
	char *err = NULL;
	if (sqlite3_exec(db, s, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", s, err);
}

static int upload_path(struct cloud_store *cs, const char *db, const char *path, struct cloud_ingest_result *res)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	int rc = cloud_upload_sqlite(cs, "c1", db, fd, res);
	close(fd);
	return rc;
}

static void test_upload_sqlite_export(void **state)
{
	(void)state;
	char path[512], out[512];
	sqlite3 *db;
	struct cloud_ingest_result res;
	snprintf(path, sizeof(path), "%s/up.sqlite", tmp_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sql(db, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
	struct cloud_store *cs = open_store("up", 0, NULL, 0, 0, 0);
	assert_int_equal(upload_path(cs, "s.db", path, &res), 0);
	assert_int_equal(res.pos.txid, 1);
	sql(db, "INSERT INTO t SELECT x + 10 FROM t");
	assert_int_equal(upload_path(cs, "s.db", path, &res), 0);
	assert_int_equal(res.pos.txid, 2);
	sqlite3_close(db);

	/* Export TXID 1 as SQLite and open it. */
	struct ltx_growbuf b = { 0 };
	struct cloud_target t = { .txid = 1 };
	assert_int_equal(cloud_export(cs, "c1", "s.db", &t, CLOUD_FORMAT_SQLITE, ltx_growbuf_write, &b, NULL), 0);
	snprintf(out, sizeof(out), "%s/exported.sqlite", tmp_dir);
	int fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
	write_all(fd, b.data, b.len);
	close(fd);
	free(b.data);
	assert_int_equal(sqlite3_open(out, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 3);
	sqlite3_finalize(st);
	sqlite3_close(db);

	/* Not a database; a corrupt one. */
	fd = open(out, O_RDWR | O_TRUNC);
	write_all(fd, "hello world, not sqlite", 23);
	close(fd);
	assert_int_equal(upload_path(cs, "s.db", out, &res), ERR_DB_HEADER);
	uint8_t *data;
	size_t len;
	data = read_file(path, &len);
	memset(data + 4096 + 8, 0xee, 64); /* the table's page header */
	fd = open(out, O_RDWR | O_TRUNC);
	write_all(fd, data, len);
	close(fd);
	free(data);
	assert_int_equal(upload_path(cs, "s.db", out, &res), ERR_DB_HEADER);
	t = (struct cloud_target){ 0 };
	struct cloud_pos pos;
	assert_int_equal(cloud_resolve(cs, "c1", "s.db", &t, &pos), 0);
	assert_int_equal(pos.txid, 2);
	cloud_store_close(cs);
}

static void test_reopen_recovery(void **state)
{
	(void)state;
	static struct chain c;
	char path[512];
	seed(5);
	chain_init(&c, 512);
	struct cloud_store *cs = open_store("rec", 0, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "k.db", 40, 50);
	assert_int_equal(cloud_store_maintain(cs, c.now + 100000), 0);
	size_t objects = store_files("rec", "objects");
	cloud_store_close(cs);

	/* What a kill -9 can leave: a temp file, an orphan object (ingest
	 * killed before its commit), a current copy that is ahead or torn. */
	snprintf(path, sizeof(path), "%s/rec/tmp/tmp-abcdef", tmp_dir);
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	close(fd);
	snprintf(path, sizeof(path), "%s/rec/objects/0000000000000001/l0/%016llx-%016llx.ltx", tmp_dir,
		 (unsigned long long)c.txid + 1, (unsigned long long)c.txid + 1);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	write_all(fd, "junk", 4);
	close(fd);
	snprintf(path, sizeof(path), "%s/rec/current/0000000000000001.db", tmp_dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(fdio_pwrite_full(fd, "torn", 4, 512 * 2 + 7), 0);
	close(fd);

	cs = open_store("rec", 0, small_levels, 3, 4000, 0);
	assert_int_equal(store_files("rec", "objects"), objects);
	assert_int_equal(store_files("rec", "tmp"), 0);
	chain_push(&c, cs, "k.db", 5, 50); /* rebuilds the current copy first */
	check_random_points(cs, "k.db", &c, 1, 10);
	cloud_store_close(cs);

	/* The current copy missing altogether. */
	unlink(path);
	cs = open_store("rec", 0, small_levels, 3, 4000, 0);
	struct cloud_target t = { 0 };
	export_check(cs, "k.db", &t, c.txid, c.sum[c.txid], 512);
	cloud_store_close(cs);
	model_free(&c.m);
}

static void assert_same_info(const struct cloud_db_info *after, const struct cloud_db_info *before)
{
	assert_int_equal(after->pos.txid, before->pos.txid);
	assert_int_equal(after->pos.checksum, before->pos.checksum);
	assert_int_equal(after->pages, before->pages);
	assert_int_equal(after->transactions, before->transactions);
	assert_int_equal(after->min_txid, before->min_txid);
	assert_int_equal(after->min_ts_ms, before->min_ts_ms);
	assert_int_equal(after->max_ts_ms, before->max_ts_ms);
	assert_int_equal(after->n_levels, before->n_levels);
	for (int l = 0; (size_t)l < after->n_levels; l++)
		assert_int_equal(level_files(after, l), level_files(before, l));
}

/* The catalog lost (a new data directory on an existing bucket): open
 * rebuilds it from the objects alone (cloud_rebuild.h), every position is
 * restorable by TXID and by time, a deleted database stays deleted, and
 * ingest goes on. */
static void test_rebuild_from_objects(void **state)
{
	(void)state;
	static struct chain c, d;
	char path[512];
	seed(9);
	chain_init(&c, 512);
	chain_init(&d, 1024);
	struct cloud_store *cs = open_store("rb", 0, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "k.db", 60, 50);
	assert_int_equal(cloud_store_maintain(cs, c.now + 100000), 0);
	chain_push(&c, cs, "k.db", 10, 50);
	chain_push(&d, cs, "gone.db", 5, 50);
	assert_int_equal(cloud_db_delete(cs, "c1", "gone.db"), 0);
	struct cloud_db_info *before = info(cs, "k.db");
	cloud_store_close(cs);

	static const char *const files[] = { "catalog.db", "catalog.db-wal", "catalog.db-shm" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/rb/%s", tmp_dir, files[i]);
		unlink(path);
	}
	cs = open_store("rb", 0, small_levels, 3, 4000, 0);
	struct cloud_db_info *after = info(cs, "k.db");
	assert_same_info(after, before);
	cloud_db_info_free(before);
	cloud_db_info_free(after);
	check_random_points(cs, "k.db", &c, 1, 15);
	struct cloud_target t = { .txid = 1 };
	struct cloud_pos pos;
	assert_int_equal(cloud_resolve(cs, "c1", "gone.db", &t, &pos), ERR_CLOUD_NOT_FOUND);
	chain_push(&c, cs, "k.db", 5, 50);
	check_random_points(cs, "k.db", &c, c.txid - 4, 3);
	cloud_store_close(cs);
	model_free(&c.m);
	model_free(&d.m);
}

/* A rebuild given an OLDER catalog as its hint (cloud_rebuild.h: an
 * instance that becomes the bucket's writer again) reads only the objects
 * the hint does not know, and ends exactly where a rebuild from the
 * objects alone ends: same positions, levels, restorable points. */
static void test_rebuild_with_an_older_catalog_as_hint(void **state)
{
	(void)state;
	static struct chain c;
	char path[512], saved[512];
	seed(11);
	chain_init(&c, 512);
	struct cloud_store *cs = open_store("rh", 0, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "k.db", 40, 50);
	assert_int_equal(cloud_store_maintain(cs, c.now + 100000), 0);
	cloud_store_close(cs);
	snprintf(path, sizeof(path), "%s/rh/catalog.db", tmp_dir);
	snprintf(saved, sizeof(saved), "%s/rh-saved.db", tmp_dir);
	size_t len = 0;
	uint8_t *old = read_file(path, &len);
	int fd = new_file("rh-saved.db");
	write_all(fd, old, len);
	close(fd);
	free(old);

	/* Another writer goes on: more uploads, more compaction. */
	cs = open_store("rh", 0, small_levels, 3, 4000, 0);
	chain_push(&c, cs, "k.db", 30, 50);
	assert_int_equal(cloud_store_maintain(cs, c.now + 100000), 0);
	chain_push(&c, cs, "k.db", 5, 50);
	struct cloud_db_info *before = info(cs, "k.db");
	cloud_store_close(cs);

	static const char *const files[] = { "catalog.db", "catalog.db-wal", "catalog.db-shm" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/rh/%s", tmp_dir, files[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/rh/%s", tmp_dir, CLOUD_REBUILD_HINT);
	assert_int_equal(rename(saved, path), 0);
	cs = open_store("rh", 0, small_levels, 3, 4000, 0);
	assert_int_equal(access(path, F_OK), -1); /* the hint is used once */
	struct cloud_db_info *after = info(cs, "k.db");
	assert_same_info(after, before);
	cloud_db_info_free(before);
	cloud_db_info_free(after);
	check_random_points(cs, "k.db", &c, 1, 15);
	chain_push(&c, cs, "k.db", 5, 50);
	check_random_points(cs, "k.db", &c, c.txid - 4, 3);
	cloud_store_close(cs);
	model_free(&c.m);
}

/* kill -9 during ingest, several rounds: every acknowledged transaction is
 * there after reopen, and ingest resumes where the store is. */
static void test_kill9(void **state)
{
	(void)state;
	static struct chain c;
	static struct ltx_growbuf bufs[1200];
	const int n = 1200;
	seed(7);
	chain_init(&c, 512);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	c.now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000; /* inside the retention window */
	for (int i = 0; i < n; i++)
		chain_next(&c, &bufs[i], 2);
	static const int64_t lv[] = { 4, 16 };
	uint64_t next = 1;
	for (int round = 0; round < 3 && next <= (uint64_t)n; round++) {
		int fds[2];
		assert_int_equal(pipe(fds), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			struct cloud_store *cs = open_store("kill", 0, lv, 2, 64, 0);
			cloud_store_start(cs);
			for (uint64_t tx = next; tx <= (uint64_t)n; tx++) {
				struct cloud_ingest_result res;
				if (ingest_buf(cs, "k.db", bufs[tx - 1].data, bufs[tx - 1].len, &res) != 0)
					_exit(3);
				if (write(fds[1], &tx, sizeof(tx)) != sizeof(tx))
					_exit(4);
			}
			_exit(0);
		}
		close(fds[1]);
		/* Kill at a random moment after the first acknowledgement: on a
		 * loaded machine (ASan, shared cores) the first one alone may take
		 * longer than the whole window. */
		uint64_t acked = 0, v;
		if (read(fds[0], &v, sizeof(v)) == sizeof(v))
			acked = v;
		usleep(50 * 1000 + rnd_below(150) * 1000);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		while (read(fds[0], &v, sizeof(v)) == sizeof(v))
			acked = v;
		close(fds[0]);
		assert_true(WIFSIGNALED(status) || WEXITSTATUS(status) == 0);
		struct cloud_store *cs = open_store("kill", 0, lv, 2, 64, 0);
		struct cloud_target t = { 0 };
		struct cloud_pos pos;
		/* The store may be ahead of what was acknowledged (stored, killed
		 * before the reply; or, on an empty catalog, an object whose commit
		 * never happened adopted by the rebuild): ingest resumes from it. */
		int rrc = cloud_resolve(cs, "c1", "k.db", &t, &pos);
		if (acked) {
			assert_int_equal(rrc, 0);
			assert_true(pos.txid >= acked);
			t.txid = acked;
			export_check(cs, "k.db", &t, acked, c.sum[acked], 512);
		}
		if (rrc == 0) {
			assert_int_equal(pos.checksum, c.sum[pos.txid]);
			next = pos.txid + 1;
		}
		print_message("kill -9 round %d: acknowledged %llu, stored %llu\n", round, (unsigned long long)acked,
			      (unsigned long long)next - 1);
		assert_int_equal(store_files("kill", "tmp"), 0);
		cloud_store_close(cs);
	}
	assert_true(next > 1);
	for (int i = 0; i < n; i++)
		free(bufs[i].data);
	model_free(&c.m);
}

struct writer {
	struct cloud_store *cs;
	const char *db;
	struct chain c;
	struct ltx_growbuf b[150];
	int n, ok;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int i = 0; i < w->n; i++) {
		struct ltx_membuf mb = { w->b[i].data, w->b[i].len, 0 };
		struct cloud_ingest_result res;
		if (cloud_ingest(w->cs, "c1", w->db, ltx_membuf_read, &mb, &res) == 0)
			w->ok++;
		free(w->b[i].data);
		usleep(500);
	}
	return NULL;
}

/* Ingest into two databases from two threads while the background work
 * compacts with the real clock. */
static void test_concurrent(void **state)
{
	(void)state;
	static struct writer w[2];
	static const int64_t lv[] = { 5, 20, 80 };
	struct cloud_store *cs = open_store("conc", 0, lv, 3, 200, 0);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	seed(10);
	for (int i = 0; i < 2; i++) {
		w[i] = (struct writer){ .cs = cs, .db = i ? "b.db" : "a.db", .n = 150 };
		chain_init(&w[i].c, 512);
		w[i].c.now = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
		for (int k = 0; k < w[i].n; k++)
			chain_next(&w[i].c, &w[i].b[k], 1);
	}
	assert_int_equal(cloud_store_start(cs), 0);
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	usleep(400 * 1000);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(w[i].ok, w[i].n);
		check_random_points(cs, w[i].db, &w[i].c, 1, 5);
		struct cloud_db_info *j = info(cs, w[i].db);
		assert_true(level_files(j, 1) > 0);
		cloud_db_info_free(j);
	}
	cloud_store_close(cs);
	for (int i = 0; i < 2; i++)
		model_free(&w[i].c.m);
}

/* ---- A backlog with past timestamps --------------------------------------- */

struct file_set {
	struct cat_file f[4096];
	size_t n;
};

static int collect_file(void *ctx, const struct cat_file *f)
{
	struct file_set *s = ctx;
	assert_true(s->n < sizeof(s->f) / sizeof(s->f[0]));
	s->f[s->n++] = *f;
	return 0;
}

static void list_files(struct cloud_store *cs, struct file_set *s)
{
	s->n = 0;
	cloud_catalog_lock(cs->cat);
	assert_int_equal(cloud_catalog_file_list(cs->cat, 1, UINT64_MAX >> 1, collect_file, s), 0);
	cloud_catalog_unlock(cs->cat);
}

/* Asserts that no interval has two files of one level above 0: with sane
 * clocks a file's interval is that of its last timestamp. */
static void assert_one_per_interval(struct cloud_store *cs, const struct file_set *s, const char *what)
{
	for (size_t a = 0; a < s->n; a++)
		for (size_t b = a + 1; b < s->n; b++) {
			const struct cat_file *x = &s->f[a], *y = &s->f[b];
			if (x->level == 0 || x->level != y->level)
				continue;
			int64_t iv = cs->levels_ms[x->level];
			if (x->mts_ms / iv == y->mts_ms / iv)
				fail_msg("%s: two files of level %d for interval %lld: %llu-%llu and %llu-%llu", what, x->level,
					 (long long)(x->mts_ms / iv), (unsigned long long)x->min_txid,
					 (unsigned long long)x->max_txid, (unsigned long long)y->min_txid,
					 (unsigned long long)y->max_txid);
		}
}

/* A node pushes a backlog after an outage: every timestamp is in the past,
 * and maintenance runs between its batches. Each interval must end with
 * one file per level and one snapshot, the same files as when the whole
 * backlog arrives before one pass; every position stays restorable on the
 * way; superseded objects are deleted. With a simulated now (real_clock
 * false) every pass closes the last interval by time, so later batches
 * regroup it; with the real clock a pass right after a batch leaves it
 * open, and one after a pause (a quiet database) closes it. */
static void backlog_run(const char *name, bool real_clock)
{
	static struct chain c;
	static struct ltx_growbuf b[300];
	static struct file_set got, want;
	static const int64_t lv[] = { 100, 500, 1000 };
	char ref_name[64];
	const int n = 300;
	seed(11);
	chain_init(&c, 512);
	if (real_clock) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		c.now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - 3600 * 1000;
	}
	for (int k = 0; k < n; k++)
		chain_next(&c, &b[k], 1 + (int64_t)rnd_below(60));
	const int64_t now = c.now + 3600 * 1000; /* an hour after the last commit */

	/* Reference: the whole backlog, then one pass. */
	snprintf(ref_name, sizeof(ref_name), "%s-ref", name);
	struct cloud_store *ref = open_store(ref_name, 0, lv, 3, 2000, 0);
	for (int k = 0; k < n; k++) {
		struct cloud_ingest_result res;
		assert_int_equal(ingest_buf(ref, "b.db", b[k].data, b[k].len, &res), 0);
	}
	assert_int_equal(cloud_store_maintain(ref, now), 0);
	list_files(ref, &want);
	assert_one_per_interval(ref, &want, "one pass");
	cloud_store_close(ref);

	/* Batches of 1..40 with a pass after each. */
	struct cloud_store *cs = open_store(name, 0, lv, 3, 2000, 0);
	int k = 0, batches = 0;
	while (k < n) {
		int m = 1 + (int)rnd_below(40);
		for (; m > 0 && k < n; m--, k++)
			ingest_ok(cs, "b.db", &b[k], (uint64_t)k + 1);
		if (real_clock && rnd_below(3) == 0)
			usleep(150 * 1000); /* quiet for more than the grace */
		assert_int_equal(cloud_store_maintain(cs, real_clock ? 0 : now), 0);
		batches++;
		list_files(cs, &got);
		assert_one_per_interval(cs, &got, "batches");
		assert_int_equal(store_files(name, "objects"), got.n);
		for (int t = 0; t < 3; t++) {
			uint64_t tx = 1 + rnd_below((uint32_t)k);
			struct cloud_target tt = { .txid = tx };
			export_check(cs, "b.db", &tt, tx, c.sum[tx], c.m.page_size);
		}
	}
	assert_true(batches > 10);
	if (real_clock) {
		usleep(150 * 1000);
		assert_int_equal(cloud_store_maintain(cs, 0), 0);
	}
	list_files(cs, &got);
	assert_int_equal(got.n, want.n);
	for (size_t i = 0; i < got.n; i++) {
		assert_int_equal(got.f[i].level, want.f[i].level);
		assert_int_equal(got.f[i].min_txid, want.f[i].min_txid);
		assert_int_equal(got.f[i].max_txid, want.f[i].max_txid);
	}
	struct cloud_db_info *j = info(cs, "b.db");
	size_t snaps = j->n_snapshots;
	cloud_db_info_free(j);
	/* One snapshot per 2 s interval the backlog spans (the first is
	 * the uploaded snapshot of TXID 1 when it is alone). */
	int64_t first = c.ts[1] / 2000, last = c.ts[c.txid] / 2000;
	assert_true(snaps >= (size_t)(last - first) && snaps <= (size_t)(last - first + 2));
	check_random_points(cs, "b.db", &c, 1, 25);
	cloud_store_close(cs);

	/* Reopen: nothing was left to sweep, nothing lost. */
	cs = open_store(name, 0, lv, 3, 2000, 0);
	assert_int_equal(store_files(name, "objects"), got.n);
	check_random_points(cs, "b.db", &c, 1, 10);
	cloud_store_close(cs);
	model_free(&c.m);
}

static void test_backlog_past_timestamps(void **state)
{
	(void)state;
	backlog_run("backlog", false);
	backlog_run("backlog-rt", true);
}

/* ---- The stored form (cloud_zltx.h) ---------------------------------------- */

/* Exports every step-th position from..c->txid and the last; each must be
 * exact. Returns how
 * many failed with ERR_CLOUD_OBJECT_CORRUPT when tolerate_corrupt (any
 * other failure fails the test). */
static int check_points(struct cloud_store *cs, const char *db, struct chain *c, uint64_t from, uint64_t step,
			bool tolerate_corrupt)
{
	int corrupt = 0;
	for (uint64_t tx = from; tx <= c->txid; tx = tx + step <= c->txid || tx == c->txid ? tx + step : c->txid) {
		struct ltx_growbuf b = { 0 };
		struct cloud_target t = { .txid = tx };
		struct cloud_pos pos;
		int rc = cloud_export(cs, "c1", db, &t, CLOUD_FORMAT_SQLITE, ltx_growbuf_write, &b, &pos);
		if (rc == ERR_CLOUD_OBJECT_CORRUPT && tolerate_corrupt) {
			corrupt++;
		} else {
			if (rc != 0)
				fail_msg("export of %llu: %s", (unsigned long long)tx, err_str(rc));
			assert_int_equal(pos.checksum, c->sum[tx]);
			assert_int_equal(bytes_checksum(b.data, b.len, c->m.page_size), c->sum[tx]);
		}
		free(b.data);
	}
	return corrupt;
}

/* Paths of the stored objects of db id 1 at level (l0, l1, ...), with
 * whether each is in the zstd stored form. */
static size_t level_objects(const char *name, int level, char paths[][800], bool *zstd, size_t max)
{
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/%s/objects/0000000000000001/l%d", tmp_dir, name, level);
	DIR *d = opendir(dir);
	size_t n = 0;
	struct dirent *de;
	while (d && n < max && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(paths[n], 800, "%s/%s", dir, de->d_name);
		uint8_t hdr[LTX_HEADER_SIZE];
		int fd = open(paths[n], O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(read(fd, hdr, sizeof(hdr)), sizeof(hdr));
		close(fd);
		zstd[n] = hdr[4] == 0 && hdr[5] == 0 && hdr[6] == 1 && hdr[7] == 0;
		n++;
	}
	if (d)
		closedir(d);
	return n;
}

/* The same chain stored as LTX with LZ4 and in the zstd form, compacted at
 * every level, snapshotted and cut by retention: every position of the
 * window has its exact state in both; zstd stores fewer bytes. Then a
 * damaged compacted object: the positions whose plan reads it are
 * refused with ERR_CLOUD_OBJECT_CORRUPT, every other one stays exact. */
static void test_stored_forms(void **state)
{
	(void)state;
	static struct chain c[2];
	uint64_t bytes[2];
	const int64_t retention = 3000;
	static char paths[512][800];
	static bool zstd[512];
	for (int k = 0; k < 2; k++) {
		seed(51);
		chain_init(&c[k], 512);
		char dir[512];
		snprintf(dir, sizeof(dir), "%s/forms%d", tmp_dir, k);
		struct cloud_store_opts o = { .data_dir = dir, .retention_ms = retention, .levels_ms = small_levels,
					      .n_levels = 3, .snapshot_interval_ms = 4000, .snapshot_ratio = -1,
					      .min_merge = 2, .store_lz4 = k == 0 };
		struct cloud_store *cs = NULL;
		assert_int_equal(cloud_store_open(&o, &cs), 0);
		chain_push(&c[k], cs, "f.db", 300, 80);
		int64_t now = c[k].now + 500;
		assert_int_equal(cloud_store_maintain(cs, now), 0);
		uint64_t r = 1;
		while (r < c[k].txid && c[k].ts[r + 1] <= now - retention)
			r++;
		struct cloud_db_info *j = info(cs, "f.db");
		assert_int_equal(j->min_txid, r);
		bytes[k] = j->bytes;
		assert_true(level_files(j, 2) > 0 && level_files(j, 4) > 0);
		cloud_db_info_free(j);
		check_points(cs, "f.db", &c[k], r, 1, false);
		export_ltx_check(cs, "f.db", r, c[k].sum[r]);
		/* Which form each level's objects are in. */
		char name[32];
		snprintf(name, sizeof(name), "forms%d", k);
		for (int level = 0; level <= 4; level++) {
			size_t n = level_objects(name, level, paths, zstd, 512);
			for (size_t i = 0; i < n; i++)
				if (zstd[i] != (k == 1))
					fail_msg("%s: %s form", paths[i], zstd[i] ? "zstd" : "LTX");
		}
		if (k == 1) {
			/* Damage the middle of the frame of one compacted file. */
			size_t n = level_objects(name, 2, paths, zstd, 512);
			assert_true(n > 0);
			int fd = open(paths[n / 2], O_RDWR);
			off_t size = lseek(fd, 0, SEEK_END);
			uint8_t byte;
			off_t at = LTX_HEADER_SIZE + (size - LTX_HEADER_SIZE - LTX_TRAILER_SIZE) / 2;
			assert_int_equal(pread(fd, &byte, 1, at), 1);
			byte ^= 0x10;
			assert_int_equal(pwrite(fd, &byte, 1, at), 1);
			close(fd);
			int bad = check_points(cs, "f.db", &c[k], r, 1, true);
			print_message("damaged %s: %d positions refused\n", paths[n / 2], bad);
			assert_true(bad > 0);
		}
		cloud_store_close(cs);
		model_free(&c[k].m);
	}
	print_message("stored bytes: LTX with LZ4 %llu, zstd form %llu\n", (unsigned long long)bytes[0],
		      (unsigned long long)bytes[1]);
	assert_true(bytes[1] < bytes[0]);
}

/* kill -9 of a compaction pass at random moments: each time the store
 * reopens with nothing left in tmp/ and positions exact (every 7th, as
 * plans of uncompacted positions are long), and the next pass finishes
 * the work. */
static void test_kill9_compaction(void **state)
{
	(void)state;
	static struct chain c;
	seed(61);
	chain_init(&c, 512);
	static const int64_t lv[] = { 20, 200, 1000 };
	struct cloud_store *cs = open_store("kcomp", 0, lv, 3, 3000, 0);
	chain_push(&c, cs, "k.db", 200, 30);
	cloud_store_close(cs);
	int killed = 0;
	for (int round = 0; round < 3; round++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct cloud_store *ccs = open_store("kcomp", 0, lv, 3, 3000, 0);
			int rc = cloud_store_maintain(ccs, c.now + 60000);
			cloud_store_close(ccs);
			_exit(rc == 0 ? 0 : 3);
		}
		/* The last round runs to its end. */
		if (round < 2) {
			usleep(20 * 1000 + rnd_below(400) * 1000);
			kill(pid, SIGKILL);
		}
		int status;
		waitpid(pid, &status, 0);
		killed += WIFSIGNALED(status);
		assert_true(WIFSIGNALED(status) || WEXITSTATUS(status) == 0);
		cs = open_store("kcomp", 0, lv, 3, 3000, 0);
		assert_int_equal(store_files("kcomp", "tmp"), 0);
		check_points(cs, "k.db", &c, 1, 7, false);
		if (round == 2) {
			struct cloud_db_info *j = info(cs, "k.db");
			assert_true(level_files(j, 3) > 0 && level_files(j, 4) > 0);
			cloud_db_info_free(j);
		}
		cloud_store_close(cs);
	}
	print_message("compaction passes killed: %d of 2\n", killed);
	model_free(&c.m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ingest_restore_compact),
		cmocka_unit_test(test_storage_spacing),
		cmocka_unit_test(test_ingest_errors),
		cmocka_unit_test(test_compact_batches),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_backlog_past_timestamps),
		cmocka_unit_test(test_restore_fork_delete),
		cmocka_unit_test(test_changes),
		cmocka_unit_test(test_upload_sqlite_export),
		cmocka_unit_test(test_reopen_recovery),
		cmocka_unit_test(test_rebuild_from_objects),
		cmocka_unit_test(test_rebuild_with_an_older_catalog_as_hint),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_kill9),
		cmocka_unit_test(test_stored_forms),
		cmocka_unit_test(test_kill9_compaction),
	};
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/test_cloud_store.XXXXXX");
	if (!mkdtemp(tmp_dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (rc == 0) {
		char cmd[512];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir);
		if (system(cmd) != 0)
			rc = 1;
	}
	return rc;
}
