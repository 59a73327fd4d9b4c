/*
 * cloud_owner.h — which litefs-cloud instance writes a bucket, when
 * several `serve` processes share one (docs/cloud-s3.md, "Several
 * instances").
 *
 * One etcd lease decides it: the instance that created the key
 * opts.key (put-if-absent, bound to its lease) is the WRITER; it serves
 * every request of the bucket. The others are STANDBYS: they forward
 * every request to the writer's advertised URL (cloud_forward.h) and try
 * to take the key every poll interval. When the writer dies its lease
 * expires (TTL), etcd deletes the key, and a standby takes it.
 *
 * THE FENCE. A writer acts only while its lease is valid by its own
 * clock: valid until (when the last grant or keep-alive that etcd
 * answered was SENT) + TTL − TTL/10. etcd counts the TTL from when it
 * received that request, so the writer's deadline is always before the
 * key can go to another instance. cloud_owner_fence() wraps the
 * writer's backend so that every put, delete and batch delete is checked
 * against the deadline before it is sent, and every put again after it
 * returned: a put that completed while the lease was valid completed
 * before any other instance could list the bucket (a new writer lists it
 * only after taking the key), so the new writer sees the object; a put
 * that returned after the deadline fails (ERR_CLOUD_NOT_WRITER), and so
 * is never acknowledged. A writer that loses its lease (a keep-alive
 * answered "expired", or no keep-alive succeeded before the deadline)
 * calls lost_fn; `serve` exits there (fail-stop), and a supervisor
 * starts it again as a standby.
 *
 * What the fence cannot do without conditional writes in the object
 * store: a process paused for longer than the TTL between a check and
 * the moment its request reaches the store (docs/cloud-s3.md says what
 * that can and cannot damage).
 *
 * Threads: cloud_owner_campaign() runs on the caller's thread; after it
 * won, cloud_owner_hold() starts one keep-alive thread that owns the etcd
 * client from then on. cloud_owner_valid() may be called from any
 * thread. Errors: the etcd client's (ERR_ETCD, ERR_ETCD_REPLY, ...),
 * ERR_INVAL, ERR_NOMEM, -EINTR (stopped).
 */
#ifndef LITEFS_CLOUD_OWNER_H
#define LITEFS_CLOUD_OWNER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloud/cloud_backend.h"

#define CLOUD_OWNER_TTL_DEFAULT_MS 5000
#define CLOUD_OWNER_POLL_DEFAULT_MS 250

struct cloud_owner_opts {
	const char *const *endpoints; /* etcd: "http://127.0.0.1:2379", ...; copied */
	size_t n_endpoints;
	const char *key;              /* the bucket's writer key; copied */
	const char *advertise_url;    /* how the other instances reach this one */
	const char *instance_id;      /* for logs and the key's value */
	int64_t ttl_ms;               /* lease TTL, >= 1000 (0: 5 s) */
	int64_t poll_ms;              /* standby: how often it tries the key (0: 250 ms) */
	const atomic_bool *stop;      /* borrowed until the campaign returns: set, it ends */
};

struct cloud_owner;

/* Checks the options and makes the etcd client (no request yet). Caller
 * frees with cloud_owner_close(). 0, ERR_INVAL or ERR_NOMEM. */
int cloud_owner_open(const struct cloud_owner_opts *opts, struct cloud_owner **out);

/* Returns 0 once this instance is the writer. Until then, every poll
 * interval, tries to create the key under its lease (granted, then kept
 * alive, here), and calls writer_fn(ctx, url) each time the writer it
 * sees changes (url NULL: none, or etcd unreachable). -EINTR when the stop
 * flag is set. etcd errors are logged once per change, then retried. */
int cloud_owner_campaign(struct cloud_owner *o, void (*writer_fn)(void *ctx, const char *url), void *ctx);

/* After a won campaign: starts the keep-alive thread. lost_fn(ctx) is
 * called once, from that thread, when the lease is lost. 0 or -errno. */
int cloud_owner_hold(struct cloud_owner *o, void (*lost_fn)(void *ctx), void *ctx);

/* True while this instance holds the lease (by the deadline above). */
bool cloud_owner_valid(struct cloud_owner *o);

/* Wraps inner (takes ownership of it: closing the wrapper closes it) in
 * the fence described above. *out is closed with (*out)->ops->close(). */
int cloud_owner_fence(struct cloud_owner *o, struct cloud_backend *inner, struct cloud_backend **out);

/* Stops the keep-alive thread and revokes the lease (so that a standby
 * takes over at once rather than after the TTL). NULL is a no-op. */
void cloud_owner_close(struct cloud_owner *o);

#endif
