/*
 * syncrepl.h — synchronous replication (lease.sync-replicas): the
 * primary's table of what each replica has made durable, and the wait a
 * commit does on it before it returns to SQLite. The protocol (POST
 * /stream/ack) is in proto/stream.c; replserver.c feeds the table,
 * db.c waits on it. docs/replication.md "Synchronous replication" is the
 * user's view.
 *
 * A replica is a replica ID (Litefs-Replica-Id, drawn at its start) with
 * one open stream session; a session is known by the token the primary
 * gave it (Litefs-Stream-Id). A replica that reconnects gets a new
 * session that replaces its old one, so it is never counted twice. Per
 * session the table holds, for each database (by the store's id), the
 * highest TXID the replica said is durable. A commit of TXID t of
 * database d is acknowledged once `replicas` distinct live sessions hold
 * a TXID >= t for d.
 *
 * States (one per node; every database shares them):
 *
 *   SYNC      a commit waits up to timeout_ms for its acknowledgements.
 *             All there: it returns (acked). Timeout:
 *               on_timeout=fail   the commit fails (db.c decides how:
 *                                 docs/replication.md); stay in SYNC.
 *               on_timeout=async  the commit returns; go to DEGRADED
 *                                 (logged once, counted).
 *   DEGRADED  commits return at once (counted as async); the latest one
 *             is the probe. An ack that brings `replicas` sessions to the
 *             probe's TXID goes back to SYNC (logged once).
 *
 * Locking: mu is a leaf lock (never held while taking another); it is
 * taken under no other lock either — db.c waits with db.mu released.
 */
#ifndef LITEFS_SYNCREPL_H
#define LITEFS_SYNCREPL_H

#include <stdbool.h>
#include <stdint.h>

struct syncrepl_opts {
	unsigned replicas;       /* lease.sync-replicas; 0: off (never waits) */
	int64_t timeout_ms;      /* lease.sync-timeout */
	bool fail_on_timeout;    /* lease.sync-on-timeout: fail (true) or async */
};

/* Counters for /metrics (since start) and the state. */
struct syncrepl_stats {
	unsigned replicas;       /* configured */
	bool fail_on_timeout;
	bool degraded;
	unsigned sessions;       /* open stream sessions (acking or not) */
	uint64_t acks;           /* ack frames recorded */
	uint64_t waits;          /* commits that waited (SYNC state) */
	uint64_t acked;          /* ... and were acknowledged in time */
	uint64_t timeouts;       /* ... and timed out */
	uint64_t failed;         /* timed-out commits failed (on_timeout=fail) */
	uint64_t async_commits;  /* commits returned without waiting (DEGRADED) */
	uint64_t degrade_events; /* SYNC -> DEGRADED transitions */
	double wait_seconds;     /* total time commits spent waiting */
};

struct syncrepl;

/* A new table. Caller frees with syncrepl_free(). NULL when out of memory. */
struct syncrepl *syncrepl_new(const struct syncrepl_opts *opts);
void syncrepl_free(struct syncrepl *s); /* NULL is a no-op */

/* A stream session of replica replica_id (0: unknown, an older replica:
 * the session counts as its own replica) opens: returns its token (never
 * 0), replacing any session of the same replica, or 0 when out of memory
 * (the session then simply does not count). */
uint64_t syncrepl_open(struct syncrepl *s, uint64_t replica_id);
/* The session ends; its acknowledgements no longer count. 0 is a no-op. */
void syncrepl_close(struct syncrepl *s, uint64_t token);
/* Records that the session's replica holds database db_id up to txid
 * durably (lower values than already recorded are ignored). Returns
 * false when the token names no open session (the caller answers 404),
 * or when out of memory (the ack is dropped: the commit may time out). */
bool syncrepl_ack(struct syncrepl *s, uint64_t token, uint32_t db_id, uint64_t txid);
/* Called once an ack request's entries are all recorded: wakes waiters. */
void syncrepl_wake(struct syncrepl *s);

/* Waits, per the state above, until opts.replicas sessions acknowledged
 * TXID txid of database db_id (name for log lines). Returns 0 (acked, or
 * returned asynchronously) or ERR_REPL_SYNC_TIMEOUT (on_timeout=fail).
 * Logs the first timeout of a run and the return to SYNC. s NULL: 0. */
int syncrepl_wait(struct syncrepl *s, uint32_t db_id, const char *name, uint64_t txid);

void syncrepl_stats(struct syncrepl *s, struct syncrepl_stats *out);

#endif
