/*
 * writelock.h — writes from a replica without the proxy: the write lock
 * behind `litefs run --with-write-lock DB -- CMD` (LiteFS's
 * -with-halt-lock-on). See the design comment in writelock.c and
 * docs/write-lock.md.
 *
 * One struct writelock per node. On the primary it grants at most one
 * lock per database, holds the primary's own writers back while it is
 * held (SQLite's writer lock, apply.h) and applies the holder's
 * transactions; on a replica it forwards the requests of `litefs run` to
 * the primary, lets the mount write the locked database (node.h hooks)
 * and sends each commit captured there to the primary before the client
 * sees it commit.
 *
 * Locking: writelock.mu guards the tables; it is a leaf lock except
 * around an apply on the primary, which it holds (the apply takes db.mu
 * under it; db.c never calls into this module with writelock.mu held).
 */
#ifndef LITEFS_WRITELOCK_H
#define LITEFS_WRITELOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/httpd.h"

/* A lock lives this long after its last renewal (or transaction): the
 * bound within which the cluster takes writes again when its holder dies. */
#define WRITELOCK_TTL_MS 5000
/* `litefs run` renews this often. */
#define WRITELOCK_RENEW_MS 1000
/* *con_cls of a /writelock/ request (http.c's dispatch). */
#define WRITELOCK_REQ 0x776c6b21

struct store;
struct cluster;
struct replica;
struct writelock;

/* Creates the module and sets the node's hooks (node.h). The store and
 * the cluster are borrowed; secret is copied (NULL: none). Returns 0 or
 * ERR_NOMEM; *out is freed with writelock_free(). */
int writelock_start(struct store *st, struct cluster *cluster, const char *secret, struct writelock **out);
/* The replication client that knows the primary's URL (a replica; NULL:
 * none). Borrowed until writelock_stop(). */
void writelock_set_replica(struct writelock *wl, struct replica *rep);
/* Releases every lock (granted or held) and stops the expiry thread;
 * the hooks stay set and refuse. Before the mount stops. NULL: no-op. */
void writelock_stop(struct writelock *wl);
/* Clears the node's hooks and frees (after the mount stopped). NULL: no-op. */
void writelock_free(struct writelock *wl);

/* Writes the module's Prometheus families to f (NULL wl: none). */
void writelock_metrics(struct writelock *wl, FILE *f);

/* True for the URLs this module serves (/writelock/...). */
bool writelock_url(const char *url);
/* The access handler for those URLs (http.c calls it on every call of
 * its own, with the same arguments); trusted says whether the request
 * carries the cluster's secret (or none is configured). */
enum httpd_result writelock_http(struct writelock *wl, struct httpd_conn *conn, const char *url, const char *method,
				 const char *upload_data, size_t *upload_data_size, void **con_cls, bool trusted);
/* Frees a request's state (http.c's completion callback). */
void writelock_req_free(void *req);

#endif
