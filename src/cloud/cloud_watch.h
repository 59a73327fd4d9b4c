/*
 * cloud_watch.h — per-cluster restore generations for `GET /pos?wait=`
 * (docs/cloud-api.md): how litefs-cloud tells a cluster's primary at once
 * that one of its databases moved by something other than the primary's
 * own uploads (a restore, a fork, an upload of a SQLite file, a delete).
 *
 * A generation is an opaque u64 per cluster, sent as 16 hex digits in the
 * Litefs-Pos-Generation header of every /pos reply. It changes on every
 * such event and never goes back to a value this process gave before:
 * every cluster starts at the process's start time in ms shifted left by
 * 16 bits, so after a restart a client's remembered generation differs
 * and its long poll returns at once (it then compares positions, which
 * is what a restart requires anyway).
 *
 * In memory, one process: a restore made through another instance serving
 * the same bucket does not wake this one's waiters (the node still
 * compares positions every second).
 *
 * Thread-safe; one mutex (a leaf lock) guards the table. No I/O, no
 * logging.
 */
#ifndef LITEFS_CLOUD_WATCH_H
#define LITEFS_CLOUD_WATCH_H

#include <stdatomic.h>
#include <stdint.h>

struct cloud_watch;

/* Returns 0 with *out (caller frees with cloud_watch_close()) or
 * ERR_NOMEM. */
int cloud_watch_open(struct cloud_watch **out);
/* Frees w; no waiter may remain. NULL is a no-op. */
void cloud_watch_close(struct cloud_watch *w);

/* The current generation of cluster. */
uint64_t cloud_watch_gen(struct cloud_watch *w, const char *cluster);

/* Moves cluster to a new generation and wakes its waiters. Out of memory
 * for a new cluster's entry, every waiter of every cluster is woken and
 * the base generation moves instead (a spurious wake, never a missed one). */
void cloud_watch_bump(struct cloud_watch *w, const char *cluster);

/* Waits until cluster's generation differs from gen, *stop becomes true
 * (checked every 50 ms) or timeout_ms passed. Returns the generation at
 * the end. */
uint64_t cloud_watch_wait(struct cloud_watch *w, const char *cluster, uint64_t gen, int64_t timeout_ms,
			  const atomic_bool *stop);

#endif
