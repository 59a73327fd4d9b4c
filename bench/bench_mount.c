/*
 * bench_mount — the mount's speed goal workload, run against one directory:
 *
 *   bench_mount DIR [INSERTS] [SELECTS]
 *
 * For DELETE and WAL journal modes, each with synchronous FULL and NORMAL:
 * INSERTS single-row autocommit INSERTs (tx/s), then SELECTS point SELECTs,
 * each in its own read transaction (q/s). Prints one line per case:
 *   case=DELETE/FULL inserts_per_s=... selects_per_s=...
 * bench/run calls it on the mount and on a plain directory of the same
 * disk in the same run and prints the ratios. Never fails on timing.
 * BENCH_CASE=WAL/NORMAL (for example) runs that one case only, so a tracer
 * attached around the run sees one case's requests (bench/mount_cost.py).
 * BENCH_RT_FILE=PATH fsyncs PATH after every insert: on a mount, a file
 * whose fsync the node answers at once (a database's -pos) adds exactly one
 * FUSE round trip per commit (bench/mount_bound.py).
 * BENCH_READER=1 makes a second connection read the new row after every
 * insert (a reader after a writer: its page cache is reset by the change,
 * so it re-reads the pages the commit wrote, from the WAL in WAL mode).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void must(int rc, sqlite3 *db, const char *what)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		fprintf(stderr, "bench_mount: %s: %s\n", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		exit(1);
	}
}

static void run_case(const char *dir, const char *mode, const char *sync, int n_ins, int n_sel)
{
	char path[4096], sql[256];
	sqlite3 *db;
	sqlite3_stmt *st;

	snprintf(path, sizeof(path), "%s/bench_%s_%s.db", dir, mode, sync);
	unlink(path);
	must(sqlite3_open(path, &db), NULL, "open");
	sqlite3_busy_timeout(db, 10000);
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; PRAGMA synchronous=%s;", mode, sync);
	must(sqlite3_exec(db, sql, NULL, NULL, NULL), db, "pragma");
	must(sqlite3_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", NULL, NULL, NULL), db, "create");

	sqlite3 *rd = NULL;
	sqlite3_stmt *rd_st = NULL;
	if (getenv("BENCH_READER")) {
		must(sqlite3_open(path, &rd), NULL, "open reader");
		sqlite3_busy_timeout(rd, 10000);
		must(sqlite3_prepare_v2(rd, "SELECT v FROM t WHERE id = ?", -1, &rd_st, NULL), rd, "prepare reader");
	}
	const char *rt_path = getenv("BENCH_RT_FILE");
	int rt_fd = rt_path ? open(rt_path, O_RDONLY) : -1;
	if (rt_path && rt_fd < 0) {
		perror(rt_path);
		exit(1);
	}
	must(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st, NULL), db, "prepare");
	double t0 = now_s();
	for (int i = 0; i < n_ins; i++) {
		sqlite3_bind_text(st, 1, "some row value of modest size", -1, SQLITE_STATIC);
		must(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
		if (rd_st) {
			sqlite3_bind_int64(rd_st, 1, sqlite3_last_insert_rowid(db));
			if (sqlite3_step(rd_st) != SQLITE_ROW)
				must(SQLITE_ERROR, rd, "reader");
			sqlite3_reset(rd_st);
		}
		if (rt_fd >= 0 && fsync(rt_fd) != 0) {
			perror("fsync");
			exit(1);
		}
	}
	if (rt_fd >= 0)
		close(rt_fd);
	if (rd) {
		sqlite3_finalize(rd_st);
		sqlite3_close(rd);
	}
	double ins = n_ins / (now_s() - t0);
	sqlite3_finalize(st);

	must(sqlite3_prepare_v2(db, "SELECT v FROM t WHERE id = ?", -1, &st, NULL), db, "prepare");
	t0 = now_s();
	for (int i = 0; i < n_sel; i++) {
		sqlite3_bind_int(st, 1, 1 + i % n_ins);
		must(sqlite3_step(st), db, "select");
		sqlite3_reset(st);
	}
	double sel = n_sel / (now_s() - t0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	printf("case=%s/%s inserts_per_s=%.0f selects_per_s=%.0f\n", mode, sync, ins, sel);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_mount DIR [INSERTS] [SELECTS]\n");
		return 2;
	}
	int n_ins = argc > 2 ? atoi(argv[2]) : 2000;
	int n_sel = argc > 3 ? atoi(argv[3]) : 200000;
	const char *modes[] = { "DELETE", "WAL" };
	const char *syncs[] = { "FULL", "NORMAL" };
	const char *only = getenv("BENCH_CASE");
	for (int m = 0; m < 2; m++)
		for (int s = 0; s < 2; s++) {
			char name[32];
			snprintf(name, sizeof(name), "%s/%s", modes[m], syncs[s]);
			if (only == NULL || strcmp(only, name) == 0)
				run_case(argv[1], modes[m], syncs[s], n_ins, n_sel);
		}
	return 0;
}
