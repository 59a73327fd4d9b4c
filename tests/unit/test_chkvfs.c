/*
 * test_chkvfs.c — unit tests of node/chkvfs.c, the windowed read-only VFS
 * of the import check: PRAGMA quick_check and integrity_check through it
 * give the same answers as through SQLite's own VFS, on a sound file, one
 * with a damaged page, one cut short, and one larger than its window
 * cache (64 KiB pages: windows are evicted and read again), sound and
 * damaged; a read past
 * the end zero-fills and reports a short read; writes are refused.
 * Following an upload (chkvfs_follow, through importchk): the check of a
 * file written piece by piece behind it gives the same answer, reads
 * WAL-mode header bytes as rollback mode, is interrupted by a stopped
 * feed and refuses a body that ends short.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include "base/fdio.h"
#include "node/chkvfs.h"
#include "node/importchk.h"
#include "node/upfeed.h"
#include "testutil.h"

static void make_db(const char *path, int page_size, int rows)
{
	sqlite3 *db;
	char sql[512];
	unlink(path);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	snprintf(sql, sizeof(sql),
		 "PRAGMA page_size=%d; PRAGMA journal_mode=OFF;"
		 "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v BLOB);"
		 "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d) "
		 "INSERT INTO t(k, v) SELECT (i * 7919) %% 100003, randomblob(300) || zeroblob(700) FROM s;"
		 "CREATE INDEX t_k ON t(k);",
		 page_size, rows);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The first row of `sql` over path opened read-only with immutable=1
 * through vfs (NULL: SQLite's default); an error is returned as its
 * message. Caller frees with free(). */
static char *first_row(const char *path, const char *vfs, const char *sql)
{
	char uri[600];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *out;
	snprintf(uri, sizeof(uri), "file:%s?immutable=1", path);
	int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, vfs);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		out = strdup((const char *)sqlite3_column_text(st, 0));
	else
		out = strdup(db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_non_null(out);
	return out;
}

/* quick_check, integrity_check and a content query agree between both
 * VFSes; returns whether quick_check said "ok". */
static bool same_answers(const char *path)
{
	static const char *const sqls[] = {
		"PRAGMA quick_check(10)",
		"PRAGMA integrity_check(10)",
		"SELECT count(*) || ' ' || sum(k) || ' ' || sum(length(v)) || ' ' || sum(instr(hex(v), 'AB')) FROM t",
	};
	bool ok = false;
	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
		char *want = first_row(path, NULL, sqls[i]);
		char *got = first_row(path, chkvfs_name(), sqls[i]);
		assert_string_equal(got, want);
		if (i == 0)
			ok = strcmp(got, "ok") == 0;
		free(want);
		free(got);
	}
	return ok;
}

static void test_sound_file_same_answers(void **state)
{
	(void)state;
	char path[300];
	snprintf(path, sizeof(path), "%s/sound.db", tmp_dir);
	make_db(path, 4096, 3000);
	assert_true(same_answers(path));
}

/* Overwrites the cells of a table leaf page at or after fraction `at` of
 * the file. */
static void damage_leaf(const char *path, uint32_t page_size, double at)
{
	size_t len;
	uint8_t *data = read_file(path, &len);
	size_t pg = (size_t)((double)(len / page_size) * at);
	while (data[pg * page_size] != 0x0D)
		pg++;
	for (size_t i = 8; i < page_size - 96; i++)
		data[pg * page_size + i] = (uint8_t)(i * 37);
	int fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	write_all(fd, data, len);
	close(fd);
	free(data);
}

static void test_larger_than_the_window_cache(void **state)
{
	(void)state;
	char path[300];
	snprintf(path, sizeof(path), "%s/big.db", tmp_dir);
	make_db(path, 65536, 20000); /* ~21 MB: more than the 16 MiB of windows */
	assert_true(same_answers(path));
	damage_leaf(path, 65536, 0.1); /* read early, evicted, read again by the row pass */
	assert_false(same_answers(path));
}

static void test_damaged_page_found(void **state)
{
	(void)state;
	char path[300];
	snprintf(path, sizeof(path), "%s/damaged.db", tmp_dir);
	make_db(path, 4096, 3000);
	damage_leaf(path, 4096, 0.5);
	assert_false(same_answers(path));
}

static void test_cut_short(void **state)
{
	(void)state;
	char path[300];
	snprintf(path, sizeof(path), "%s/cut.db", tmp_dir);
	make_db(path, 4096, 3000);
	assert_int_equal(truncate(path, 4096 * 20 + 100), 0);
	assert_false(same_answers(path));
}

static void test_short_read_and_no_writes(void **state)
{
	(void)state;
	char path[300];
	snprintf(path, sizeof(path), "%s/small.db", tmp_dir);
	int fd = new_file("small.db");
	uint8_t bytes[5000];
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)(i * 13 + 1);
	write_all(fd, bytes, sizeof(bytes));
	close(fd);

	sqlite3_vfs *vfs = sqlite3_vfs_find(chkvfs_name());
	assert_non_null(vfs);
	sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
	assert_non_null(f);
	int out_flags = 0;
	assert_int_equal(vfs->xOpen(vfs, path, f, SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READONLY, &out_flags),
			 SQLITE_OK);
	sqlite3_int64 size = 0;
	assert_int_equal(f->pMethods->xFileSize(f, &size), SQLITE_OK);
	assert_int_equal(size, 5000);
	uint8_t buf[4096];
	assert_int_equal(f->pMethods->xRead(f, buf, 100, 200), SQLITE_OK);
	assert_memory_equal(buf, bytes + 200, 100);
	memset(buf, 0xAA, sizeof(buf));
	assert_int_equal(f->pMethods->xRead(f, buf, 4096, 4096), SQLITE_IOERR_SHORT_READ);
	assert_memory_equal(buf, bytes + 4096, 5000 - 4096);
	for (size_t i = 5000 - 4096; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(f->pMethods->xWrite(f, buf, 10, 0), SQLITE_READONLY);
	assert_int_equal(f->pMethods->xTruncate(f, 0), SQLITE_READONLY);
	assert_int_equal(f->pMethods->xClose(f), SQLITE_OK);
	free(f);
	/* A writable open is refused. */
	f = calloc(1, (size_t)vfs->szOsFile);
	assert_non_null(f);
	assert_int_equal(vfs->xOpen(vfs, path, f, SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READWRITE, &out_flags),
			 SQLITE_CANTOPEN);
	free(f);
}

/* Copies src to dst piece by piece, announcing each piece on feed, up to
 * stop_at bytes; then ends the feed (stopped if stop). */
struct writer {
	const uint8_t *data;
	size_t len, stop_at;
	bool stop;
	int fd;
	struct upfeed *feed;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	size_t off = 0;
	while (off < w->stop_at) {
		size_t k = w->stop_at - off < 65536 ? w->stop_at - off : 65536;
		assert_int_equal(fdio_pwrite_full(w->fd, w->data + off, k, (off_t)off), 0);
		off += k;
		upfeed_set(w->feed, off);
		usleep(500);
	}
	upfeed_end(w->feed, w->stop);
	return NULL;
}

/* Runs importchk over a copy of src written behind it; returns
 * importchk_join's result with the check's fields in *out. */
static int check_following(const char *src, size_t stop_at_pct, bool stop, bool wal_header, struct importchk *out)
{
	char dst[300];
	snprintf(dst, sizeof(dst), "%s/upload.db", tmp_dir);
	size_t len;
	uint8_t *data = read_file(src, &len);
	if (wal_header)
		data[18] = data[19] = 2;
	int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	struct upfeed feed;
	upfeed_init(&feed);
	struct writer w = { .data = data, .len = len, .stop_at = len * stop_at_pct / 100, .stop = stop,
			    .fd = fd, .feed = &feed };
	*out = (struct importchk){ .path = dst, .feed = &feed, .size = (int64_t)len };
	assert_int_equal(importchk_start(out), 0);
	usleep(20000); /* the check starts before the first byte */
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	int rc = importchk_join(out);
	pthread_join(t, NULL);
	upfeed_destroy(&feed);
	close(fd);
	free(data);
	return rc;
}

static void test_follow_an_upload(void **state)
{
	(void)state;
	char path[300];
	struct importchk c;
	snprintf(path, sizeof(path), "%s/follow.db", tmp_dir);
	make_db(path, 4096, 3000);
	assert_int_equal(check_following(path, 100, false, false, &c), 0);
	assert_false(c.refused || c.interrupted);
	/* Bytes 18/19 of a WAL-mode file are read as rollback mode. */
	assert_int_equal(check_following(path, 100, false, true, &c), 0);
	/* The upload fails half-way: the check gives up, interrupted. */
	assert_int_equal(check_following(path, 50, true, false, &c), -EBADMSG);
	assert_true(c.interrupted);
	/* The body ends short of its length: refused. */
	assert_int_equal(check_following(path, 50, false, false, &c), -EBADMSG);
	assert_true(c.refused);
	/* A damaged page in the part that arrives last is found. */
	damage_leaf(path, 4096, 0.8);
	assert_int_equal(check_following(path, 100, false, false, &c), -EBADMSG);
	assert_true(c.refused);
	assert_non_null(strstr(c.msg, "quick_check"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sound_file_same_answers),
		cmocka_unit_test(test_larger_than_the_window_cache),
		cmocka_unit_test(test_damaged_page_found),
		cmocka_unit_test(test_cut_short),
		cmocka_unit_test(test_short_read_and_no_writes),
		cmocka_unit_test(test_follow_an_upload),
	};
	return RUN_IN_TMP_DIR("test_chkvfs", tests);
}
