/*
 * cloud_admin.h — the dashboard's admin view: clusters and tokens (list,
 * create with the one-time display of the new token, revoke) on a listener
 * of its own that only binds loopback, behind a sign-in with the service's
 * admin key (<data_dir>/admin.key, readable only by who can read the data
 * directory, like the `litefs-cloud cluster` / `token` commands).
 * docs/dashboard.md "The admin view".
 */
#ifndef LITEFS_CLOUD_ADMIN_H
#define LITEFS_CLOUD_ADMIN_H

#include <stdint.h>

#include "cloud/cloud_auth.h"

#define CLOUD_ADMIN_KEY_FILE "admin.key"

struct cloud_admin;

/* Starts the admin listener on addr, which must be a loopback address
 * (127.0.0.0/8, ::1 or localhost; ERR_INVAL otherwise). Creates
 * <data_dir>/admin.key (0600, 32 random bytes as hex) if missing. auth is
 * borrowed and must outlive the listener. session_ms: an admin sign-in's
 * lifetime. Caller stops it with cloud_admin_stop(). Returns 0, ERR_INVAL,
 * ERR_NOMEM or -errno. */
int cloud_admin_start(struct cloud_auth *auth, const char *data_dir, const char *addr, int64_t session_ms,
		      struct cloud_admin **out);
/* The port bound. */
unsigned cloud_admin_port(const struct cloud_admin *a);
/* Stops and frees; NULL is a no-op. */
void cloud_admin_stop(struct cloud_admin *a);

#endif
