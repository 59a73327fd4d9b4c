/*
 * test_cloud_timeline.c — unit tests of the dashboard's history index
 * (cloud_timeline.c) over a real storage engine in a temporary directory:
 * the two reply modes and their arithmetic, sub-ranges, compaction spans
 * against the files the engine really stored, the index following new
 * positions and a delete, the memo of the compaction part (the same
 * answer again, a fresh one after a compaction). Timestamps are synthetic
 * (a position's timestamp in ms is its TXID) and maintenance gets "now"
 * explicitly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_timeline.h"
#include "ltx/ltx.h"
#include "testutil.h"

#define PAGE 512

/* Ingests positions from..to of db (one upload each, timestamp = TXID);
 * *chk carries the checksum from one call to the next. */
static void push(struct cloud_store *cs, const char *db, uint64_t from, uint64_t to, uint64_t *chk)
{
	for (uint64_t t = from; t <= to; t++) {
		struct ltx_growbuf gb = { 0 };
		*chk = encode_filled_record(&gb, PAGE, t, t, *chk);
		struct ltx_membuf mb = { gb.data, gb.len, 0 };
		struct cloud_ingest_result res;
		int rc = cloud_ingest(cs, "c1", db, ltx_membuf_read, &mb, &res);
		if (rc != 0)
			fail_msg("ingest of %llu: %s (%s)", (unsigned long long)t, err_str(rc), res.msg);
		free(gb.data);
	}
}

static json_t *query(struct cloud_timeline *tl, const char *db, int64_t from, int64_t to, unsigned max)
{
	struct cloud_timeline_query q = { .has_from = from > 0, .has_to = to > 0, .from_ms = from, .to_ms = to,
					  .max = max };
	json_t *o = NULL;
	assert_int_equal(cloud_timeline_query(tl, "c1", db, &q, &o), 0);
	return o;
}

static uint64_t hexv(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	assert_non_null(s);
	assert_int_equal(strlen(s), 16);
	return strtoull(s, NULL, 16);
}

static int64_t intv(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static void test_modes_and_ranges(void **state)
{
	(void)state;
	struct cloud_store_opts o = { .data_dir = "", .levels_ms = (const int64_t[]){ 10, 50 }, .n_levels = 2,
				      .snapshot_interval_ms = 100, .min_merge = 2 };
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/modes", tmp_dir);
	o.data_dir = dir;
	struct cloud_store *cs;
	struct cloud_timeline *tl;
	assert_int_equal(cloud_store_open(&o, &cs), 0);
	assert_int_equal(cloud_timeline_open(cs, &tl), 0);
	uint64_t chk = 0;
	push(cs, "a.db", 1, 100, &chk);

	/* At most max positions: each one, in order, restorable. */
	json_t *r = query(tl, "a.db", 0, 0, 500);
	assert_string_equal(json_string_value(json_object_get(r, "mode")), "transactions");
	json_t *txs = json_object_get(r, "transactions");
	assert_int_equal(json_array_size(txs), 100);
	for (size_t i = 0; i < 100; i++) {
		json_t *t = json_array_get(txs, i);
		assert_int_equal(hexv(t, "txid"), i + 1);
		assert_int_equal(intv(t, "ts_ms"), (int64_t)i + 1);
		assert_true(json_is_true(json_object_get(t, "restorable")));
		assert_true(intv(t, "size") > 0);
		assert_null(json_object_get(t, "min_txid"));
	}
	json_t *w = json_object_get(r, "window");
	assert_int_equal(hexv(w, "min_txid"), 1);
	assert_int_equal(hexv(w, "max_txid"), 100);
	assert_int_equal(intv(r, "from_ms"), 1);
	assert_int_equal(intv(r, "to_ms"), 100);
	json_decref(r);

	/* More than max: max buckets of equal length over [1, 100]. */
	r = query(tl, "a.db", 0, 0, 10);
	assert_string_equal(json_string_value(json_object_get(r, "mode")), "buckets");
	json_t *bk = json_object_get(r, "buckets");
	assert_int_equal(json_array_size(bk), 10);
	for (size_t i = 0; i < 10; i++) {
		json_t *b = json_array_get(bk, i);
		assert_int_equal(intv(b, "from_ms"), 1 + 10 * (int64_t)i);
		assert_int_equal(intv(b, "to_ms"), 10 + 10 * (int64_t)i);
		assert_int_equal(intv(b, "count"), 10);
		assert_int_equal(hexv(b, "first_txid"), 1 + 10 * i);
		assert_int_equal(hexv(b, "last_txid"), 10 + 10 * i);
	}
	json_decref(r);

	/* A sub-range holds exactly the positions in it; an empty bucket is
	 * left out. */
	r = query(tl, "a.db", 25, 34, 500);
	txs = json_object_get(r, "transactions");
	assert_int_equal(json_array_size(txs), 10);
	assert_int_equal(hexv(json_array_get(txs, 0), "txid"), 25);
	json_decref(r);
	r = query(tl, "a.db", 95, 400, 3);
	assert_string_equal(json_string_value(json_object_get(r, "mode")), "buckets");
	assert_int_equal(json_array_size(json_object_get(r, "buckets")), 1);
	json_decref(r);
	struct cloud_timeline_query bad = { .has_from = true, .has_to = true, .from_ms = 50, .to_ms = 40 };
	json_t *none = NULL;
	assert_int_equal(cloud_timeline_query(tl, "c1", "a.db", &bad, &none), ERR_INVAL);
	assert_int_equal(cloud_timeline_query(tl, "c1", "nope.db", &bad, &none), ERR_CLOUD_NOT_FOUND);
	assert_int_equal(cloud_timeline_query(tl, "c2", "a.db", &bad, &none), ERR_CLOUD_NOT_FOUND);

	/* Compaction: the spans of each level are the files the engine
	 * stored there (level 1: 10 ms intervals, level 2: 50 ms). */
	assert_int_equal(cloud_store_maintain(cs, 10000), 0);
	struct cloud_db_info *info;
	assert_int_equal(cloud_db_info(cs, "c1", "a.db", &info), 0);
	uint64_t l1_files = info->levels[1].files, l2_files = info->levels[2].files;
	size_t n_snaps = info->n_snapshots;
	cloud_db_info_free(info);
	r = query(tl, "a.db", 0, 0, 500);
	json_t *comp = json_object_get(r, "compactions");
	assert_true(l1_files >= 9 && l2_files >= 2);
	assert_int_equal(json_array_size(comp), l1_files + l2_files);
	for (size_t i = 0; i < json_array_size(comp); i++) {
		json_t *c = json_array_get(comp, i);
		int64_t iv = intv(c, "level") == 1 ? 10 : 50;
		assert_int_equal(intv(c, "from_ms") / iv, intv(c, "to_ms") / iv);
		assert_true(hexv(c, "to_txid") - hexv(c, "from_txid") <= (uint64_t)iv - 1);
		if (i > 0 && i < l1_files)
			assert_int_equal(hexv(c, "from_txid"), hexv(json_array_get(comp, i - 1), "to_txid") + 1);
	}
	assert_int_equal(json_array_size(json_object_get(r, "snapshots")), n_snaps);
	assert_null(json_object_get(r, "compactions_omitted"));
	json_decref(r);
	r = query(tl, "a.db", 0, 0, 5);
	json_t *om = json_array_get(json_object_get(r, "compactions_omitted"), 0);
	assert_int_equal(intv(om, "level"), 1);
	assert_int_equal(intv(om, "spans"), (int64_t)l1_files);
	/* Level 2 has few enough spans to list. */
	assert_int_equal(json_array_size(json_object_get(r, "compactions")), l2_files);
	json_decref(r);
	/* The same question again is answered from the memo of the compaction
	 * part: the same answer, and the memo's own copy is not handed out. */
	json_t *r1 = query(tl, "a.db", 0, 0, 500), *r2 = query(tl, "a.db", 0, 0, 500);
	assert_true(json_equal(r1, r2));
	assert_ptr_not_equal(json_array_get(json_object_get(r1, "compactions"), 0),
			     json_array_get(json_object_get(r2, "compactions"), 0));
	json_decref(r1);
	json_decref(r2);

	/* New positions reach the index; /dbs says what it holds. */
	push(cs, "a.db", 101, 120, &chk);
	cloud_timeline_pushed(tl, "c1", "a.db", 5000);
	json_t *dbs = NULL;
	assert_int_equal(cloud_timeline_dbs(tl, "c1", &dbs), 0);
	json_t *d = json_array_get(json_object_get(dbs, "databases"), 0);
	assert_string_equal(json_string_value(json_object_get(d, "name")), "a.db");
	assert_int_equal(intv(d, "transactions"), 120);
	assert_int_equal(hexv(d, "txid"), 120);
	assert_int_equal(hexv(d, "checksum"), chk);
	assert_int_equal(intv(d, "size"), PAGE);
	assert_int_equal(intv(d, "last_push_ms"), 5000);
	assert_true(intv(d, "history_bytes") > 0);
	json_decref(dbs);
	/* A memo made before a compaction is not used after it. */
	json_decref(query(tl, "a.db", 0, 0, 500));
	assert_int_equal(cloud_store_maintain(cs, 20000), 0);
	assert_int_equal(cloud_db_info(cs, "c1", "a.db", &info), 0);
	l1_files = info->levels[1].files;
	l2_files = info->levels[2].files;
	cloud_db_info_free(info);
	r = query(tl, "a.db", 0, 0, 500);
	assert_int_equal(json_array_size(json_object_get(r, "compactions")), l1_files + l2_files);
	assert_int_equal(hexv(json_array_get(json_object_get(r, "levels"), 0), "done_txid"), 120);
	json_decref(r);

	/* A delete empties the index; the database made again starts over. */
	assert_int_equal(cloud_db_delete(cs, "c1", "a.db"), 0);
	assert_int_equal(cloud_timeline_dbs(tl, "c1", &dbs), 0);
	assert_int_equal(json_array_size(json_object_get(dbs, "databases")), 0);
	json_decref(dbs);
	chk = 0;
	push(cs, "a.db", 1, 5, &chk);
	r = query(tl, "a.db", 0, 0, 500);
	assert_int_equal(json_array_size(json_object_get(r, "transactions")), 5);
	assert_int_equal(hexv(json_object_get(r, "window"), "max_txid"), 5);
	json_decref(r);

	cloud_timeline_close(tl);
	cloud_store_close(cs);
}

/* With min_merge above what a 10 ms interval holds, level 1 keeps no
 * file and level 2 merges straight from the uploads: the spans follow. */
static void test_sparse_groups(void **state)
{
	(void)state;
	struct cloud_store_opts o = { .data_dir = "", .levels_ms = (const int64_t[]){ 10, 50 }, .n_levels = 2,
				      .snapshot_interval_ms = 100, .min_merge = 11 };
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/sparse", tmp_dir);
	o.data_dir = dir;
	struct cloud_store *cs;
	struct cloud_timeline *tl;
	assert_int_equal(cloud_store_open(&o, &cs), 0);
	assert_int_equal(cloud_timeline_open(cs, &tl), 0);
	uint64_t chk = 0;
	push(cs, "a.db", 1, 100, &chk);
	assert_int_equal(cloud_store_maintain(cs, 10000), 0);
	struct cloud_db_info *info;
	assert_int_equal(cloud_db_info(cs, "c1", "a.db", &info), 0);
	uint64_t files[3] = { 0, info->levels[1].files, info->levels[2].files };
	cloud_db_info_free(info);
	assert_int_equal(files[1], 0);
	assert_true(files[2] >= 2);
	json_t *r = query(tl, "a.db", 0, 0, 500);
	json_t *comp = json_object_get(r, "compactions");
	uint64_t spans[3] = { 0 };
	for (size_t i = 0; i < json_array_size(comp); i++)
		spans[intv(json_array_get(comp, i), "level")]++;
	assert_int_equal(spans[1], files[1]);
	assert_int_equal(spans[2], files[2]);
	json_decref(r);
	cloud_timeline_close(tl);
	cloud_store_close(cs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_modes_and_ranges),
		cmocka_unit_test(test_sparse_groups),
	};
	return RUN_IN_TMP_DIR("test_cloud_timeline", tests);
}
