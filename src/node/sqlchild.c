/*
 * sqlchild.c — SQLite work on the node's own mount, done in a child
 * process.
 *
 * WHY: in WAL mode SQLite maps "-shm". A page fault on that mapping holds
 * the faulting process's mmap_lock while it waits for a FUSE read; if that
 * process is the node itself, the worker that must answer the read blocks
 * in malloc (large allocations take mmap_lock) and the node deadlocks.
 * This was seen with an export taken in the HTTP thread. A child process
 * has its own address space, so its page faults are ordinary clients of
 * the mount. The child is a fresh image of the node's binary (posix_spawn
 * of /proc/self/exe), not a fork: a fork of a threaded process may inherit
 * locks held by other threads (SQLite's, stdio's).
 *
 * The child speaks lines on stdout and reads lines on stdin:
 *
 *   litefs __sqlite export DB_PATH OUT_PATH
 *       -> "READY <locked 0|1> <wal 0|1>"   (writers held off, if locked,
 *                                            and a read transaction open)
 *       <- "GO"                              (the parent read the position)
 *        | "SKIP"                            (... and copied the file itself)
 *       -> "OK" | "ERR <sqlite rc> <message>"
 *
 * An export copies a consistent snapshot of DB_PATH into OUT_PATH (a
 * private file). (Imports no longer use SQLite on the mount: apply.h
 * apply_import.)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node/sqlchild.h"
#include "node/supervise.h"

#define CHILD_BUSY_TIMEOUT_MS 30000
#define CHILD_BUSY_STEP_US 1000
#define CHILD_BACKUP_STEP_PAGES 4096

/* ---- Parent side -------------------------------------------------------- */

int sqlchild_start(struct sqlchild *c, char *const argv[])
{
	int to_child[2], from_child[2];
	posix_spawn_file_actions_t fa;
	int rc;

	c->pid = -1;
	c->to = -1;
	c->from = NULL;
	if (pipe2(to_child, O_CLOEXEC) != 0)
		return -errno;
	if (pipe2(from_child, O_CLOEXEC) != 0) {
		rc = -errno;
		close(to_child[0]);
		close(to_child[1]);
		return rc;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, to_child[0], 0);
	posix_spawn_file_actions_adddup2(&fa, from_child[1], 1);
	rc = -supervise_spawn("/proc/self/exe", false, &fa, argv, &c->pid);
	posix_spawn_file_actions_destroy(&fa);
	close(to_child[0]);
	close(from_child[1]);
	if (rc != 0) {
		close(to_child[1]);
		close(from_child[0]);
		c->pid = -1;
		return -rc;
	}
	c->to = to_child[1];
	c->from = fdopen(from_child[0], "r");
	if (c->from == NULL) {
		close(from_child[0]);
		sqlchild_finish(c);
		return -ENOMEM;
	}
	return 0;
}

int sqlchild_read(struct sqlchild *c, char *line, size_t len)
{
	if (fgets(line, (int)len, c->from) == NULL) {
		snprintf(line, len, "ERR 1 the helper process ended unexpectedly");
		return -EPIPE;
	}
	line[strcspn(line, "\n")] = '\0';
	return 0;
}

int sqlchild_write(struct sqlchild *c, const char *line)
{
	size_t n = strlen(line);
	if (write(c->to, line, n) != (ssize_t)n || write(c->to, "\n", 1) != 1)
		return -EPIPE;
	return 0;
}

bool sqlchild_parse_err(const char *line, int *sqlite_rc, const char **msg)
{
	if (strncmp(line, "ERR ", 4) != 0)
		return false;
	char *end;
	long rc = strtol(line + 4, &end, 10);
	*sqlite_rc = rc > 0 ? (int)rc : SQLITE_ERROR;
	*msg = *end == ' ' ? end + 1 : end;
	return true;
}

int sqlchild_finish(struct sqlchild *c)
{
	int status = 0;
	if (c->to >= 0)
		close(c->to);
	if (c->from)
		fclose(c->from);
	c->to = -1;
	c->from = NULL;
	if (c->pid > 0) {
		while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
			;
		c->pid = -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- Child side ---------------------------------------------------------- */

/* Waits for a lock in short constant steps: SQLite's own busy_timeout backs
 * off to 100 ms sleeps and then rarely gets a lock that a client in a tight
 * commit loop releases for microseconds. */
static int child_busy(void *arg, int n_calls)
{
	(void)arg;
	if ((long)n_calls * CHILD_BUSY_STEP_US >= (long)CHILD_BUSY_TIMEOUT_MS * 1000)
		return 0;
	struct timespec ts = { 0, CHILD_BUSY_STEP_US * 1000L };
	nanosleep(&ts, NULL);
	return 1;
}

static void prepare(sqlite3 *db)
{
	sqlite3_extended_result_codes(db, 0);
	sqlite3_busy_handler(db, child_busy, NULL);
	sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
}

static int fail(int rc, sqlite3 *db)
{
	const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
	printf("ERR %d ", rc);
	for (const char *p = msg; *p; p++)
		putchar(*p == '\n' ? ' ' : *p);
	printf("\n");
	fflush(stdout);
	return 1;
}

static int backup_all(sqlite3 *dst, sqlite3 *src)
{
	sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
	if (!b)
		return sqlite3_errcode(dst);
	int rc;
	do
		rc = sqlite3_backup_step(b, CHILD_BACKUP_STEP_PAGES);
	while (rc == SQLITE_OK);
	int frc = sqlite3_backup_finish(b);
	return rc == SQLITE_DONE ? frc : rc;
}

static int child_export(const char *path, const char *out)
{
	sqlite3 *wlock = NULL, *src = NULL, *dst = NULL;
	int locked = 0, wal = 0;
	char line[16];

	/* A: hold writers off while B's snapshot and the position are read. */
	int rc = sqlite3_open_v2(path, &wlock, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK) {
		prepare(wlock);
		sqlite3_db_config(wlock, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
		rc = sqlite3_exec(wlock, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	}
	if (rc == SQLITE_OK)
		locked = 1;
	else if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED || (rc & 0xff) == SQLITE_CANTOPEN)
		return fail(rc, wlock);

	/* B: the read transaction the copy is taken from. */
	rc = sqlite3_open_v2(path, &src, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK) {
		prepare(src);
		rc = sqlite3_exec(src, "BEGIN; SELECT 1 FROM sqlite_master LIMIT 1", NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK)
		return fail(rc, src);
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(src, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(st, 0);
		wal = mode && strcmp(mode, "wal") == 0;
	}
	sqlite3_finalize(st);
	printf("READY %d %d\n", locked, wal);
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL || (strncmp(line, "GO", 2) != 0 && strncmp(line, "SKIP", 4) != 0))
		return 1;
	if (locked)
		sqlite3_exec(wlock, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(wlock);
	if (line[0] == 'S') {
		/* The parent copied the db file while A and B pinned it. */
		sqlite3_exec(src, "COMMIT", NULL, NULL, NULL);
		sqlite3_close(src);
		printf("OK\n");
		fflush(stdout);
		return 0;
	}

	rc = sqlite3_open_v2(out, &dst, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK) {
		prepare(dst);
		/* A private file that is discarded on any failure. */
		rc = sqlite3_exec(dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL, NULL);
	}
	if (rc == SQLITE_OK)
		rc = backup_all(dst, src);
	if (rc != SQLITE_OK)
		return fail(rc, dst);
	if ((rc = sqlite3_close(dst)) != SQLITE_OK)
		return fail(rc, NULL);
	sqlite3_exec(src, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(src);
	printf("OK\n");
	fflush(stdout);
	return 0;
}

int sqlchild_main(int argc, char **argv)
{
	/* Internal: started by the node itself (see the top of this file). */
	if (argc == 4 && strcmp(argv[1], "export") == 0)
		return child_export(argv[2], argv[3]);
	fprintf(stderr, "litefs __sqlite: internal command used by the node\n");
	return 2;
}
