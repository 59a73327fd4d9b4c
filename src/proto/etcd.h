/*
 * etcd.h — a small etcd v3 client over the JSON gateway (/v3/...), for the
 * node's lease (node/lease.c) and the service's database ownership
 * (cloud/cloud_owner.c). It speaks only what they need: lease grant,
 * keep-alive, revoke; range; put; transactions (put-if-absent,
 * delete-if-unchanged, and etcd_txn: puts and deletes guarded by
 * mod_revision comparisons, for the handoff); and a watch used as a long
 * poll.
 *
 * The gateway's quirks, handled here once: keys and values are base64;
 * every int64 is a JSON string; fields that are false, 0 or empty are
 * omitted (a failed txn has no "succeeded"; a keep-alive on an expired
 * lease has no "TTL").
 *
 * Endpoints: requests go to the endpoint that answered last; a transport
 * error, an HTTP 5xx or a timeout moves to the next one, each endpoint
 * tried at most once per request. https:// endpoints use the CA and client
 * certificate given; a username makes the client authenticate
 * (/v3/auth/authenticate) and send the token, re-authenticating once when
 * etcd says the token is no longer valid.
 *
 * Threads: a struct etcd is used by one thread at a time (it owns one
 * libcurl handle). Errors: ERR_ETCD (no endpoint answered), ERR_ETCD_REPLY
 * (an answer that is not what etcd sends), ERR_ETCD_AUTH, ERR_NOMEM. No
 * logging: the lease logs, with its context.
 */
#ifndef LITEFS_ETCD_H
#define LITEFS_ETCD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct etcd_opts {
	const char *const *endpoints; /* "http://127.0.0.1:2379", ...; copied */
	size_t n_endpoints;
	const char *username;         /* NULL or "": no authentication */
	const char *password;
	const char *ca_file;          /* https: NULL or "": the system's CAs */
	const char *cert_file;        /* https: client certificate, NULL: none */
	const char *key_file;
	long timeout_ms;              /* per request and endpoint (0: 2000) */
	const atomic_bool *stop;      /* borrowed; set: requests in flight end soon */
	const atomic_bool *wake;      /* borrowed, or NULL; set: a watch in flight ends
				       * soon with no event (other requests go on) */
};

struct etcd_kv {
	char *key;             /* NUL-terminated */
	char *value;           /* NUL-terminated (values are text here) */
	int64_t create_revision;
	int64_t mod_revision;
	int64_t lease;
};

struct etcd;

/* Returns 0 with *out (caller frees with etcd_free()), ERR_INVAL with no
 * endpoint, or ERR_NOMEM. Makes no request. */
int etcd_new(const struct etcd_opts *opts, struct etcd **out);
void etcd_free(struct etcd *e); /* NULL is a no-op */

/* The endpoint that answered last (borrowed; valid until etcd_free). */
const char *etcd_endpoint(const struct etcd *e);

/* Grants a lease of ttl_s seconds: *id and the TTL etcd granted. */
int etcd_grant(struct etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_s);
/* One keep-alive. *ttl_s is the lease's new TTL, 0 when it had expired
 * (the lease is lost). */
int etcd_keepalive(struct etcd *e, int64_t id, int64_t *ttl_s);
int etcd_revoke(struct etcd *e, int64_t id);

/* Range: key alone, or every key starting with key when prefix. *kvs
 * (caller frees with etcd_kvs_free) and *n; *revision is the store's
 * revision of the answer. */
int etcd_get(struct etcd *e, const char *key, bool prefix, struct etcd_kv **kvs, size_t *n, int64_t *revision);
void etcd_kvs_free(struct etcd_kv *kvs, size_t n);

/* Put, bound to lease (0: none). */
int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease);
/* Creates key = value bound to lease only if key does not exist
 * (create_revision == 0). *won says whether it did; *revision is the
 * store's revision after the transaction. */
int etcd_put_if_absent(struct etcd *e, const char *key, const char *value, int64_t lease, bool *won,
		       int64_t *revision);
/* Deletes key only if its mod_revision is still mod_revision. */
int etcd_delete_if(struct etcd *e, const char *key, int64_t mod_revision, bool *deleted);

/* A transaction: if every cmps[i].key has mod_revision cmps[i].mod_revision
 * (0: the key does not exist), run ops in order. *succeeded says whether
 * the comparisons held; *revision is the store's revision after it (the
 * mod_revision of what the ops put). The arrays are borrowed. */
struct etcd_cmp {
	const char *key;
	int64_t mod_revision;
};
struct etcd_op {
	const char *key;
	const char *value; /* NULL: delete key */
	int64_t lease;     /* for a put; 0: none */
};
int etcd_txn(struct etcd *e, const struct etcd_cmp *cmps, size_t n_cmps, const struct etcd_op *ops, size_t n_ops,
	     bool *succeeded, int64_t *revision);

/* Watches key (or the prefix) from start_revision and returns as soon as
 * one event arrives (*event true), or after timeout_ms with none, or when
 * the stop flag is set. A long poll: call again with the revision after
 * what was read. */
int etcd_watch(struct etcd *e, const char *key, bool prefix, int64_t start_revision, long timeout_ms, bool *event);

#endif
