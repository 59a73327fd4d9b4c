/*
 * importchk.h — the validation of an import's uploaded copy, run in a
 * thread of its own while the record is completed and synced (http.c,
 * apply.c apply_import): PRAGMA quick_check (every b-tree page, cell,
 * overflow chain and the freelist: O(N)) or, with full, PRAGMA
 * integrity_check (also every index against its table: O(N log N), about
 * 5x longer). A file that fails never becomes a transaction.
 *
 * The copy is opened read-only with immutable=1 (no journal or WAL next to
 * it is ever consulted; the caller has set header bytes 18/19 to 1) and
 * read through chkvfs (large windows, not a mapping: chkvfs.h says why).
 * With a feed, the check starts while the body still arrives and reads
 * each part once it is in the file (chkvfs_follow): it then ends about
 * when the upload does instead of after it. No logging: the caller
 * reports the outcome.
 */
#ifndef LITEFS_IMPORTCHK_H
#define LITEFS_IMPORTCHK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct upfeed;

#define IMPORTCHK_MSG_LEN 400

struct importchk {
	/* ---- In ---- */
	const char *path;        /* the uploaded copy; borrowed, unchanged until joined */
	bool full;               /* integrity_check instead of quick_check */
	const atomic_bool *stop; /* set: the check is interrupted (may be NULL) */
	struct upfeed *feed;     /* the upload still arriving (may be NULL); borrowed until joined */
	int64_t size;            /* with feed: the body's length */
	/* ---- Out, once joined ---- */
	bool refused;            /* not a sound SQLite database: msg says why */
	bool interrupted;        /* *stop was set before the check ended */
	char msg[IMPORTCHK_MSG_LEN];
	int64_t ms;              /* how long the check ran */
	/* ---- Private ---- */
	char *uri;
	pthread_t thread;
	bool started, joined;
};

/* Starts the check of c->path. 0, ERR_NOMEM or -errno (-ENOTSUP: a feed
 * without the windowed VFS; no thread then; importchk_join() is still
 * safe). A stopped feed interrupts the check. */
int importchk_start(struct importchk *c);
/* Waits for the check (once; later calls return the same). 0 if the file
 * is sound, -EBADMSG if it was refused or interrupted, -EAGAIN if it never
 * started. */
int importchk_join(struct importchk *c);

#endif
