/*
 * replica.h — the replication client of a replica (lease.candidate: false
 * with the static lease): a thread that follows the primary's POST /stream
 * (protocol in stream.c) and applies every LTX it receives with
 * store_apply(), reconnecting with a backoff after any error.
 *
 * While connected the node's role (node.h) names the primary (its hostname from
 * the stream's Litefs-Primary-Hostname header, else lease.hostname);
 * while disconnected it names none, so `.primary` disappears.
 */
#ifndef LITEFS_REPLICA_H
#define LITEFS_REPLICA_H

#include <stdbool.h>

struct store;
struct config;
struct cluster;
struct replica;

#define REPLICA_BACKOFF_MIN_MS 100
#define REPLICA_BACKOFF_MAX_MS 2000

/* Starts following the primary at cfg->lease.advertise_url. The store and
 * the cluster are borrowed and must outlive the replica; what it needs of
 * cfg is copied. Spool files go to <data_dir>/tmp. Returns 0 or ERR_CONFIG
 * (no advertise-url), ERR_NOMEM, -errno. Caller stops it with
 * replica_stop(). */
int replica_start(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
		  struct replica **out);

/* Starts a replication client with no primary to follow yet: the etcd
 * lease (lease.c) names it with replica_follow(). Same ownership and
 * errors as replica_start(); advertise-url is not needed. */
int replica_start_follower(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
			   struct replica **out);

/* Follows the primary at advertise_url (its hostname for `.primary`), or
 * nobody (NULL). Returns once the connection to the previous primary has
 * ended, so that the caller may then make this node the primary without
 * an apply racing it. Returns 0 or ERR_NOMEM. */
int replica_follow(struct replica *r, const char *advertise_url, const char *hostname);

/* Waits up to timeout_ms for the first full sync (the primary's "ready"
 * frame). Returns true once it has happened (it stays true). */
bool replica_wait_synced(struct replica *r, int timeout_ms);

/* The primary's base URL (the stream's, without "/stream") into buf, and
 * the shared secret (borrowed; NULL: none) into *secret, for the write
 * lock (writelock.c). Returns false when no primary is followed now. */
bool replica_primary_url(struct replica *r, char *buf, size_t len, const char **secret);

/* Ends the connection, joins the thread and frees. NULL is a no-op. */
void replica_stop(struct replica *r);

#endif
