/*
 * cloud_auth.h — litefs-cloud's clusters and tokens.
 *
 * A cluster is a name (1..64 bytes of [A-Za-z0-9_.-], not "." or "..")
 * that owns databases in the storage engine (cloud_store.h). A token is
 * 32 random bytes shown once as text ("lfsc_" and 64 hex digits); only its
 * SHA-256 is stored. Each token belongs to one cluster and has a public ID
 * (the first 12 hex digits of its hash) used to list and revoke it.
 *
 * The store is its own SQLite file, <data_dir>/auth.db (WAL, synchronous
 * FULL), kept apart from the engine's catalog so that either can change
 * without the other. Admin commands (`litefs-cloud cluster ...`, `token
 * ...`) open it directly while the server runs; SQLite's locking makes
 * that safe, and the server reads it on every request, so a revoked token
 * stops working at once.
 *
 * Deleting a cluster removes it and its tokens in one transaction and
 * records a pending purge of its data; whoever can open the engine (the
 * admin command, or the server within seconds) purges it and then clears
 * the record (cloud_auth_purge_done). A name with a pending purge cannot
 * be created again until the purge is done.
 *
 * Thread-safe: one connection guarded by a mutex (a leaf lock).
 * Errors: 0, ERR_CLOUD_EXISTS, ERR_CLOUD_NOT_FOUND, ERR_INVAL, ERR_NOMEM,
 * ERR_REPL_AUTH (authentication failed), ERR_REPL_CLUSTER (cluster ID
 * mismatch), or -EIO for SQLite failures (logged with the SQLite message).
 */
#ifndef LITEFS_CLOUD_AUTH_H
#define LITEFS_CLOUD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLOUD_CLUSTER_NAME_MAX 64
#define CLOUD_TOKEN_PREFIX "lfsc_"
#define CLOUD_TOKEN_LEN (5 + 64)   /* "lfsc_" + hex of 32 bytes */
#define CLOUD_TOKEN_ID_LEN 12
#define CLOUD_CLUSTER_ID_MAX 20    /* "LFSC" + 16 hex digits */

struct cloud_auth;

/* Opens (creating) <data_dir>/auth.db; data_dir is created if missing.
 * Caller frees with cloud_auth_close(). */
int cloud_auth_open(const char *data_dir, struct cloud_auth **out);
/* True if data_dir holds a token store (<data_dir>/auth.db), i.e. a
 * service has been set up there. Admin commands other than `cluster
 * create` check it first, so that a mistyped or missing -data-dir is an
 * error instead of a new, empty service. */
bool cloud_auth_exists(const char *data_dir);
/* NULL is a no-op. */
void cloud_auth_close(struct cloud_auth *a);

bool cloud_auth_valid_cluster_name(const char *name);

/* A new token as text (CLOUD_TOKEN_LEN + 1 bytes) and its ID. */
struct cloud_token {
	char text[CLOUD_TOKEN_LEN + 1];
	char id[CLOUD_TOKEN_ID_LEN + 1];
};

/* Creates a cluster and its first token. ERR_INVAL for a bad name,
 * ERR_CLOUD_EXISTS if it exists or its purge is still pending. */
int cloud_auth_cluster_create(struct cloud_auth *a, const char *name, struct cloud_token *tok);
/* Deletes a cluster and its tokens and records a pending purge.
 * ERR_CLOUD_NOT_FOUND if there is no such cluster. */
int cloud_auth_cluster_delete(struct cloud_auth *a, const char *name);

struct cloud_cluster_info {
	const char *name;
	const char *cluster_id; /* "" until the first request that sent one */
	int64_t created_ms;
	unsigned n_tokens;
};
/* Calls fn for every cluster, by name; the strings are borrowed for the
 * duration of the call. */
int cloud_auth_cluster_list(struct cloud_auth *a, void (*fn)(void *ctx, const struct cloud_cluster_info *c),
			    void *ctx);

/* A new token for an existing cluster (ERR_CLOUD_NOT_FOUND otherwise). */
int cloud_auth_token_create(struct cloud_auth *a, const char *cluster, struct cloud_token *tok);
/* Revokes a token by ID. ERR_CLOUD_NOT_FOUND if there is none. */
int cloud_auth_token_revoke(struct cloud_auth *a, const char *id);

struct cloud_token_info {
	const char *id;
	const char *cluster;
	int64_t created_ms;
};
/* Calls fn for every token (of cluster, or of all clusters when NULL). */
int cloud_auth_token_list(struct cloud_auth *a, const char *cluster,
			  void (*fn)(void *ctx, const struct cloud_token_info *t), void *ctx);

/* Checks an Authorization header value ("<token>", "FlyV1 <token>" or
 * "Bearer <token>"). On success copies the token's cluster into
 * cluster[CLOUD_CLUSTER_NAME_MAX + 1]. ERR_REPL_AUTH for a missing,
 * malformed, unknown or revoked token. The hash is compared in constant
 * time. */
int cloud_auth_check(struct cloud_auth *a, const char *header, char *cluster);
/* As cloud_auth_check(), and copies the token's public ID into
 * id[CLOUD_TOKEN_ID_LEN + 1] (the dashboard's sessions remember it). */
int cloud_auth_check_id(struct cloud_auth *a, const char *header, char *cluster, char *id);
/* 0 if the token with this public ID exists and belongs to cluster,
 * ERR_REPL_AUTH if it was revoked (or its cluster deleted), -EIO. */
int cloud_auth_token_alive(struct cloud_auth *a, const char *id, const char *cluster);

/* Remembers the first Litefs-Cluster-Id a cluster sends; later calls with
 * another ID fail with ERR_REPL_CLUSTER (the remembered one is copied into
 * known[CLOUD_CLUSTER_ID_MAX + 1] when not NULL). */
int cloud_auth_bind_cluster_id(struct cloud_auth *a, const char *cluster, const char *id, char *known);

/* Opens (or reopens, clearing its state) a rebind window of window_ms for
 * cluster (REBIND in cloud_auth.c): the next node that sends another
 * cluster ID and holds no data may take the cluster under its ID.
 * *until_ms gets the window's end. ERR_CLOUD_NOT_FOUND, ERR_INVAL. */
int cloud_auth_rebind_open(struct cloud_auth *a, const char *cluster, int64_t window_ms, int64_t *until_ms);

/* What a request with a cluster ID other than the bound one does. */
enum cloud_rebind_step {
	CLOUD_REBIND_LOOK,  /* reads nothing of the data: GET /pos, info, restore checks */
	CLOUD_REBIND_TAKE,  /* takes the service's state (GET /db/snapshot), or there is none to take */
	CLOUD_REBIND_WRITE, /* would store something: an upload, a restore, a delete */
};

/* For a request whose ID was refused by cloud_auth_bind_cluster_id():
 * 0 admitted as the window's candidate (not bound yet), 1 the ID is now
 * the cluster's (the rebind completed), ERR_REPL_CLUSTER refused (no open
 * window, another candidate, or this ID stored data first: why[why_len]
 * says which), ERR_INVAL, -EIO. */
int cloud_auth_rebind_step(struct cloud_auth *a, const char *cluster, const char *id, enum cloud_rebind_step step,
			   char *why, size_t why_len);

/* Calls fn for every cluster whose data still has to be purged. */
int cloud_auth_pending_purges(struct cloud_auth *a, void (*fn)(void *ctx, const char *cluster), void *ctx);
/* Clears the pending purge of cluster (after cloud_cluster_purge()). */
int cloud_auth_purge_done(struct cloud_auth *a, const char *cluster);

/* Calls fn(ctx) after every committed change (a cluster, a token, a
 * cluster ID, a rebind, a purge), outside the store's lock, from the
 * thread that made it. Set it before the store is shared. The S3 setup
 * uses it to keep the bucket's copy current (cloud_authsync.h). */
void cloud_auth_on_change(struct cloud_auth *a, void (*fn)(void *ctx), void *ctx);
/* Writes a consistent copy of the whole store (VACUUM INTO) to path, which
 * must not exist. Tokens are in it only as their SHA-256. */
int cloud_auth_copy_to(struct cloud_auth *a, const char *path);
/* Replaces the whole content of the store with that of the copy at path
 * (as cloud_auth_copy_to wrote it), in one transaction, without calling
 * the change hook: how the bucket's writer takes in a change made on
 * another host (cloud_authsync_refresh). 0 or -EIO. */
int cloud_auth_load(struct cloud_auth *a, const char *path);

#endif
