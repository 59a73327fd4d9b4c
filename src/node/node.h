/*
 * node.h — what a database needs from the node above it, and nothing else:
 * the node's options (data directory, compression, node ID, retention),
 * its role, the change feed that wakes the replication streams and the
 * backup client, the resync and cancel flags, and the FUSE layer's cache
 * invalidation hooks.
 *
 * Why a module of its own: the database (db.c) used to reach up into the
 * store for these, and the store down into the database, so neither could
 * be understood or tested alone. Now the layering is one-way:
 *
 *     cmd_mount ─► store ─► db ─► node
 *         │          └──────────────▲
 *         └── fusefs, http, replica, backup ─► node (role, change feed)
 *
 * A db borrows the node it is given at load; a unit test can give it a
 * node of its own with no store, FUSE mount or HTTP server behind it.
 *
 * Locking: node.mu guards primary_host, primary_proxy_url and caught_up_ms; the change feed
 * has its own leaf lock (change_mu) so that a database can notify while
 * it holds db.mu. Neither lock is ever held while taking another lock.
 * is_primary, the flags and the options are read without a lock (the role
 * is read on every FUSE write).
 */
#ifndef LITEFS_NODE_H
#define LITEFS_NODE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "node/proxystat.h"

/* Set by the FUSE layer once mounted (all NULL before and after). */
struct node_fuse_hooks {
	void *ctx;
	const char *mountpoint;
	/* Drops the kernel's cached pages [off, off+len) of a file of
	 * database id (len 0: to the end) and its attributes; off < 0:
	 * attributes only. */
	void (*inval_inode)(void *ctx, uint32_t db_id, int kind, off_t off, off_t len);
	/* Drops the kernel's cached lookup of a name in the root. */
	void (*inval_entry)(void *ctx, const char *name);
};

struct node_opts {
	const char *data_dir;   /* copied */
	bool compress;          /* data.compress: LZ4 in new LTX records */
	int64_t retention_ms;   /* data.retention */
	uint64_t node_id;       /* written into LTX headers */
};

struct node {
	/* Options: set by node_init(), read-only after. */
	char *data_dir;         /* owned */
	int dbs_fd;             /* data_dir/dbs, set by the store once opened; -1 before */
	bool compress;
	int64_t retention_ms;
	uint64_t node_id;

	atomic_bool is_primary;
	/* Fencing (lease.c): the primary accepts commits only while
	 * clock_mono_ms() < write_deadline_ms. INT64_MAX with a lease that
	 * cannot move (static); set by the etcd lease after each keep-alive. */
	_Atomic int64_t write_deadline_ms;
	atomic_uint_fast64_t fenced_writes; /* writes through an open file refused by the fence (db.c) */
	atomic_bool cancel_applies;
	atomic_bool resync;
	struct node_fuse_hooks hooks; /* set before the first request, cleared after the last */
	/* Synchronous replication (syncrepl.h): set by the mount before the
	 * first request when lease.sync-replicas > 0, else NULL; owned by it.
	 * A commit on the primary waits on it before returning to SQLite. */
	struct syncrepl *sync;

	/* The proxy (src/proxy/, docs/proxy.md): this node's own proxy URL,
	 * advertised to replicas (set before the lease and the HTTP server
	 * start, "" without a proxy; read-only after), and its counters,
	 * which /metrics prints once proxy_on is set. They live here, not
	 * in the proxy, so that /metrics never reads freed counters while
	 * the proxy stops. */
	char proxy_url[256];
	struct proxystat proxy_stats;
	atomic_bool proxy_on;

	pthread_mutex_t mu;     /* guards primary_host, primary_proxy_url, caught_up_ms */
	char primary_host[256];
	char primary_proxy_url[256]; /* the primary's proxy URL as advertised; "" unknown */
	int64_t caught_up_ms;

	pthread_mutex_t change_mu; /* leaf lock: guards change_seq, change_stopping */
	pthread_cond_t change_cond;
	uint64_t change_seq;
	bool change_stopping;
};

/* Initialises n from opts (the role is primary until node_set_role()
 * says otherwise; dbs_fd is -1). Returns 0 or ERR_NOMEM; on error n needs no node_destroy(). */
int node_init(struct node *n, const struct node_opts *opts);
/* Frees what node_init() allocated; does not close dbs_fd (its opener's). */
void node_destroy(struct node *n);

/* ---- Role ----------------------------------------------------------------- */

/* This node's role. With the static lease it is fixed when the node starts
 * (lease.candidate); a replica refuses every write through the mount. */
bool node_is_primary(struct node *n);
/* Sets the role and the primary's hostname as a replica knows it (NULL or
 * "" when unknown: `.primary` is then absent), and notifies a change. */
void node_set_role(struct node *n, bool primary, const char *primary_host);
/* True when a client's write may be accepted now: this node is the
 * primary and its lease deadline (on the monotonic clock) has not passed.
 * Called on every write that can commit (fusefs.c at open, db.c at each
 * write), so it is two atomic loads and a vDSO clock read. */
bool node_may_write(struct node *n);
/* Sets the deadline (clock_mono_ms() based; INT64_MAX: none). */
void node_set_write_deadline(struct node *n, int64_t mono_ms);
/* Copies the primary's hostname into buf ("" on the primary or when
 * unknown). */
void node_primary_host(struct node *n, char *buf, size_t len);

/* The primary's proxy URL (lease value or stream handshake): set by
 * whoever learns it; forgotten when the primary's hostname changes. The
 * getter copies "" on the primary or when unknown. */
void node_set_primary_proxy(struct node *n, const char *url);
void node_primary_proxy(struct node *n, char *buf, size_t len);

/* Replica lag: the replication client calls node_set_caught_up() each
 * time it knows it holds everything the primary has (a heartbeat whose
 * positions it has reached); lag is the time since then (0 on the
 * primary). */
void node_set_caught_up(struct node *n, int64_t now_ms);
int64_t node_lag_ms(struct node *n);

/* ---- Change feed ---------------------------------------------------------- */

/* Every commit, apply or deletion bumps a counter. node_wait_change()
 * returns as soon as the counter differs from seen (immediately if it
 * already does), or after timeout_ms, or once node_stop_changes() was
 * called; it returns the counter's value. */
uint64_t node_change_seq(struct node *n);
uint64_t node_wait_change(struct node *n, uint64_t seen, int timeout_ms);
void node_notify_change(struct node *n);
/* Wakes every waiter for good (shutdown). */
void node_stop_changes(struct node *n);

/* ---- Flags ---------------------------------------------------------------- */

/* A replica whose database failed verification asks for a snapshot: the
 * replication client takes the request and reconnects with the database's
 * (poisoned) position, which the primary answers with a snapshot. */
void node_request_resync(struct node *n);
bool node_take_resync(struct node *n);

/* Makes applies waiting for readers give up (-ECANCELED), for shutdown. */
void node_cancel_applies(struct node *n);
bool node_applies_cancelled(struct node *n);

#endif
