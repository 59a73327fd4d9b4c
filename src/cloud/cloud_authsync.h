/*
 * cloud_authsync.h — the token store's copy in the bucket.
 *
 * With an object-storage backend, <data_dir>/auth.db (clusters, tokens as
 * SHA-256 hashes, cluster IDs, pending purges) is copied whole to the
 * object "auth/auth.db" after every committed change, before the change's
 * command returns: a token printed by `token create` is in the bucket. A
 * fresh data directory on an existing bucket starts from that copy.
 *
 * Copies are serialised between processes (the server and an admin
 * command on the same data directory) by flock on <data_dir>/auth.sync,
 * and each copy is taken under that lock, so the last one written is the
 * newest state.
 */
#ifndef LITEFS_CLOUD_AUTHSYNC_H
#define LITEFS_CLOUD_AUTHSYNC_H

#include <stdbool.h>

#include "cloud/cloud_auth.h"
#include "cloud/cloud_backend.h"

#define CLOUD_AUTHSYNC_OBJECT "auth/auth.db"

/* Uploads a copy of a's store. 0 or the error (logged). */
int cloud_authsync_push(struct cloud_auth *a, struct cloud_backend *be, const char *data_dir);

/* If data_dir has no token store yet (or always, with replace: several
 * instances share the bucket, whose copy is the truth) and the bucket has
 * a copy, installs it as <data_dir>/auth.db (0600, fsync'd). 1 if
 * installed, 0 if there was nothing to do, or the error. */
int cloud_authsync_pull(struct cloud_backend *be, const char *data_dir, bool replace);

/* Makes every change of a reach the bucket (cloud_auth_on_change); a
 * failed upload is logged and retried by the next change and at start. */
struct cloud_authsync;
int cloud_authsync_attach(struct cloud_auth *a, struct cloud_backend *be, const char *data_dir,
			  struct cloud_authsync **out);
/* The first error of an upload since attach (0 if none). */
int cloud_authsync_error(const struct cloud_authsync *s);
/* Several instances: takes the bucket's copy into the store when it
 * differs from the last copy this process wrote or took (a token created
 * or revoked on another host). 1 taken, 0 unchanged, or the error. */
int cloud_authsync_refresh(struct cloud_authsync *s);
/* Detaches and frees; NULL is a no-op. */
void cloud_authsync_free(struct cloud_authsync *s);

#endif
