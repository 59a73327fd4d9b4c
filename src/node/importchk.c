/*
 * importchk.c — the validation of an import's uploaded copy
 * (importchk.h), moved out of http.c with its SQLite connection setup.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "node/chkvfs.h"
#include "node/importchk.h"
#include "node/upfeed.h"

/* "file:<percent-encoded path>?immutable=1". Caller frees. */
static char *immutable_uri(const char *path)
{
	size_t n = strlen(path);
	char *u = malloc(5 + 3 * n + 13);
	if (!u)
		return NULL;
	char *p = u;
	memcpy(p, "file:", 5);
	p += 5;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)path[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			*p++ = (char)c;
		} else {
			sprintf(p, "%%%02X", c);
			p += 3;
		}
	}
	strcpy(p, "?immutable=1");
	return u;
}

/* SQLite's progress handler: a set stop flag, or a stopped feed (the
 * upload failed), interrupts the check. */
static int importchk_progress(void *arg)
{
	struct importchk *c = arg;
	return (c->stop && atomic_load(c->stop)) || (c->feed && upfeed_stopped(c->feed)) ? 1 : 0;
}

static void *importchk_main(void *arg)
{
	struct importchk *c = arg;
	int64_t t0 = clock_mono_ms();
	const char *what = c->full ? "integrity_check" : "quick_check";
	char sql[64];
	sqlite3 *src = NULL;
	sqlite3_stmt *stmt = NULL;
	/* Read through large reused windows (chkvfs.h): mapping the file
	 * faults once per 4 KiB page, reading it page by page is a syscall
	 * per page; either costs more than the check itself. */
	const char *vfs = chkvfs_name();
	if (c->feed)
		chkvfs_follow(c->feed, c->size); /* importchk_start made sure vfs is set */
	int rc = sqlite3_open_v2(c->uri, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, vfs);
	chkvfs_follow(NULL, 0);
	if (rc != SQLITE_OK) {
		c->refused = true;
		snprintf(c->msg, sizeof(c->msg), "cannot open the uploaded file: %s",
			 src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
		sqlite3_close(src);
		c->ms = clock_mono_ms() - t0;
		return NULL;
	}
	sqlite3_extended_result_codes(src, 0);
	sqlite3_progress_handler(src, 10000, importchk_progress, c);
	sqlite3_db_config(src, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	if (!vfs) /* a private file, never truncated while the check runs: mapped */
		sqlite3_exec(src, "PRAGMA mmap_size=1099511627776", NULL, NULL, NULL);
	snprintf(sql, sizeof(sql), "PRAGMA %s(10)", what);
	rc = sqlite3_prepare_v2(src, sql, -1, &stmt, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (c->feed && upfeed_stopped(c->feed)) {
		/* The upload failed: whatever the check said, it may have
		 * failed to read. */
		c->interrupted = true;
		snprintf(c->msg, sizeof(c->msg), "the check was interrupted");
	} else if (rc == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(stmt, 0);
		if (!r || strcmp(r, "ok") != 0) {
			c->refused = true;
			snprintf(c->msg, sizeof(c->msg), "integrity check failed (PRAGMA %s): %.300s", what,
				 r ? r : "(null)");
		}
	} else if (c->stop && atomic_load(c->stop)) {
		c->interrupted = true;
		snprintf(c->msg, sizeof(c->msg), "the check was interrupted");
	} else {
		c->refused = true;
		snprintf(c->msg, sizeof(c->msg), "not a valid SQLite database: %s", sqlite3_errmsg(src));
	}
	sqlite3_finalize(stmt);
	sqlite3_close(src);
	c->ms = clock_mono_ms() - t0;
	return NULL;
}

int importchk_start(struct importchk *c)
{
	c->refused = c->interrupted = c->started = c->joined = false;
	c->msg[0] = '\0';
	c->ms = 0;
	if (c->feed && !chkvfs_name())
		return -ENOTSUP;
	if (!(c->uri = immutable_uri(c->path)))
		return ERR_NOMEM;
	int rc = pthread_create(&c->thread, NULL, importchk_main, c);
	if (rc != 0) {
		free(c->uri);
		c->uri = NULL;
		return -rc;
	}
	c->started = true;
	return 0;
}

int importchk_join(struct importchk *c)
{
	if (!c->started)
		return -EAGAIN;
	if (!c->joined) {
		pthread_join(c->thread, NULL);
		c->joined = true;
		free(c->uri);
		c->uri = NULL;
	}
	return c->refused || c->interrupted ? -EBADMSG : 0;
}
