/*
 * lease.h — the etcd lease (lease.type: etcd): who is the primary, for how
 * long, and what every other node follows. The design, the fencing
 * argument and the failure table are in docs/lease.md; the state machine
 * is at the top of lease.c.
 *
 * One thread per node. It owns a session (an etcd lease of lease.etcd.ttl,
 * kept alive every ttl/3) that carries this node's entry under
 * <key>/nodes/<hostname> and, on the primary, <key> itself. It drives:
 *   - the node's role and write deadline (node_set_role,
 *     node_set_write_deadline: the fence checked at every commit);
 *   - the replication client (replica_follow) when another node holds the
 *     key;
 *   - lost/ (lost.h) when this node had transactions the new primary never
 *     received.
 *
 * Locking: lease.mu guards the fields /info and /metrics read; it is a
 * leaf lock, never held across a request or another lock.
 */
#ifndef LITEFS_LEASE_H
#define LITEFS_LEASE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct store;
struct replica;
struct cluster;
struct config;
struct lease;

/* Starts the lease for cfg (lease.type etcd). Before returning it checks
 * the cluster ID stored in etcd (<key>/cluster): a node of another
 * cluster is refused (ERR_LEASE_CLUSTER, logged with both IDs); a node
 * with none adopts it; the first node stores its own (created if
 * needed). It retries an unreachable etcd for up to 30 s (ERR_ETCD). The
 * store, replica (started with replica_start_follower) and cluster are
 * borrowed and must outlive the lease. Caller stops it with lease_stop().
 * Returns 0, ERR_LEASE_CLUSTER, ERR_ETCD*, ERR_NOMEM. */
int lease_start(struct store *st, struct replica *rep, struct cluster *cluster, const struct config *cfg,
		const char *hostname, struct lease **out);

/* Waits up to timeout_ms until this node is the primary or has finished
 * its first sync with one. */
bool lease_wait_ready(struct lease *l, struct replica *rep, int timeout_ms);

/* litefs promote: asks the primary, through etcd, to hand the lease to
 * this node (a candidate following it, synced), and waits up to
 * timeout_ms for the outcome. The primary stops accepting commits, waits
 * (at most 5 s) until this node has applied its final position of every
 * database, and this node then moves the key to itself in one
 * transaction (lease.c "HANDOFF"). Returns 0 once this node is the
 * primary, or ERR_LEASE_HANDOFF; msg (truncated to msg_len) says which
 * and why. Called from any thread but the lease's. */
int lease_promote(struct lease *l, int timeout_ms, char *msg, size_t msg_len);

/* Gives the lease up if this node holds it: stops accepting commits
 * first (role and deadline), then revokes the session so that another
 * candidate takes over at once rather than after the TTL. The hook for a
 * handoff (litefs promote) and for a clean stop. Returns 0 or an etcd
 * error (then the key expires after the TTL instead). */
int lease_release(struct lease *l);

/* Releases, ends the thread and frees. NULL is a no-op. */
void lease_stop(struct lease *l);

/* Adds "lease": {...} to an /info object. */
void lease_info_json(struct lease *l, json_t *info);
/* Writes the lease's Prometheus families. */
void lease_metrics(struct lease *l, FILE *f);

#endif
