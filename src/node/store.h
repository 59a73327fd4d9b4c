/*
 * store.h — the data directory: the registry of databases, their loading
 * and recovery at startup, retention and background verification.
 *
 * Layout of data.dir (see docs/mount.md):
 *   lock                     flocked by the node for its life (holds its pid)
 *   dbs/<name>/db            the database file (backing store)
 *   dbs/<name>/db-journal    rollback journal, db-wal, db-shm likewise
 *   dbs/<name>/ltx/<first>.ltxlog    segments of LTX records (chain.h)
 *   dbs/<name>/clean         present only after a clean shutdown
 * The backing files carry SQLite's own names so that crash recovery can
 * let libsqlite3 itself roll back a hot journal or checkpoint a WAL.
 *
 * Locking: store.mu guards the registry (dbs, n_dbs). Lock order:
 * store.mu before db.mu.
 *
 * Watchdog: a thread of its own (it must never wait for a database's
 * mutex, which is what it watches) looks at every db.mu once a second
 * through lockwatch_peek(). A mutex held longer than lock_stall_ms is
 * logged at level=error with the database, the holder's operation, how
 * long and how many wait, again every lock_stall_ms while it stays held,
 * and counted once per holding in store_lock_stalls() (/metrics).
 */
#ifndef LITEFS_STORE_H
#define LITEFS_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "node/node.h"
#include "proto/dbname.h"

struct db;

struct store_opts {
	const char *data_dir;
	bool compress;          /* data.compress */
	int64_t retention_ms;   /* data.retention */
	int64_t retention_monitor_ms;
	uint64_t node_id;       /* written into LTX headers */
	int64_t lock_stall_ms;  /* watchdog bound (0: STORE_LOCK_STALL_MS) */
};

/* Default watchdog bound: far above any healthy holding (a commit takes
 * milliseconds, a snapshot of a large database seconds). */
#define STORE_LOCK_STALL_MS 10000

struct store {
	struct node node;       /* what the databases need from above (node.h) */
	int lock_fd;            /* data/lock, flocked for the store's life */
	int64_t retention_monitor_ms;

	pthread_mutex_t mu;     /* guards dbs, n_dbs, cap_dbs, stopping */
	struct db **dbs;        /* index = db id; never shrinks during a mount */
	size_t n_dbs, cap_dbs;
	bool stopping;
	pthread_cond_t cond;
	pthread_t bg_thread;    /* retention and background verification */
	bool bg_started;
	/* Watchdog (see above); the per-database report state lives in
	 * struct db (watch_*) and is the watchdog thread's alone. */
	int64_t lock_stall_ms;
	pthread_t watch_thread;
	bool watch_started;
	atomic_bool watch_stop;
	pthread_mutex_t watch_mu; /* with watch_cond: wakes the watchdog to stop */
	pthread_cond_t watch_cond;
	atomic_uint_fast64_t n_lock_stalls;
	/* Set by whichever of store_close() and store_close_forced() runs
	 * first; the other then leaves the databases alone. */
	atomic_bool close_claimed;
};

/* Opens data_dir (creating it), takes its lock (data/lock, held until
 * store_close(); ERR_DATA_DIR_BUSY when another node holds it), loads and
 * recovers every database. Caller frees with store_close(). */
int store_open(const struct store_opts *opts, struct store **out);
/* The pid recorded by the node that holds (or last held) data_dir's lock;
 * 0 if unknown. For error messages only. */
int store_data_dir_holder(const char *data_dir);
/* Stops background work, marks every database cleanly closed, frees. */
void store_close(struct store *st);

/* Starts the background thread (retention, verification) and the lock
 * watchdog. */
int store_start(struct store *st);

/* For a stop that cannot finish (a thread stuck holding a database's
 * mutex): marks clean every database whose mutex it gets within
 * timeout_ms each and keeps those mutexes (the process must exit right
 * after, without store_close()); the others are logged and left to be
 * recovered at the next start. Returns the number left unclean, or -1
 * when store_close() had already begun (it then owns the databases). */
int store_close_forced(struct store *st, int64_t timeout_ms);

/* Lock watchdog: stalls seen since the start, and how many databases have
 * their mutex held for at least min_ms right now. */
uint64_t store_lock_stalls(struct store *st);
int store_locks_held_over(struct store *st, int64_t min_ms);

/* Splits a file name in the mount into a database name and a kind
 * (enum db_kind). Returns 0 or an error of dbname_check(). name_out
 * gets a copy. */
int store_parse_name(const char *fname, char *name_out, size_t name_len, int *kind);

/* Looks up a database by name (only those whose file exists unless
 * include_deleted). Borrowed; valid until store_close(). NULL if none. */
struct db *store_find(struct store *st, const char *name, bool include_deleted);
struct db *store_by_id(struct store *st, uint32_t id);
/* Finds or creates the database (creating its backing directory). */
int store_create(struct store *st, const char *name, struct db **out);
/* Number of registered databases (ids are 0..n-1). */
size_t store_count(struct store *st);

/* ---- Replication ---------------------------------------------------------- */

/* Replica: applies one LTX file received from the primary to database
 * name, creating it first if needed (see apply_ltx()). */
int store_apply(struct store *st, const char *name, int fd, off_t off, uint32_t len);
/* store_apply() with a guard run before anything changes
 * (apply_ltx_guarded()). */
int store_apply_guarded(struct store *st, const char *name, int fd, off_t off, uint32_t len,
			int (*guard)(void *ctx, struct db *db), void *ctx);
#endif
