/*
 * cloud_session.h — the dashboard's sign-in sessions and sign-in rate
 * limit (docs/dashboard.md "Security model").
 *
 * A session is created when a person signs in with a cluster token; the
 * browser holds only its random ID (a cookie), the service holds the rest
 * in memory: the cluster, the public ID of the token that opened it (so
 * that revoking the token ends the session), a per-session CSRF token and
 * the expiry. Nothing is written to disk: a restart signs everybody out.
 *
 * Pure apart from getrandom(2) and the clock; no logging. Thread-safe:
 * one mutex (a leaf lock) guards the table and the attempt counters.
 * Errors: 0, ERR_REPL_AUTH (unknown, expired or revoked), -EBUSY (too
 * many sign-in attempts), ERR_NOMEM, -errno from getrandom.
 */
#ifndef LITEFS_CLOUD_SESSION_H
#define LITEFS_CLOUD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloud/cloud_auth.h"

#define CLOUD_SESSION_ID_LEN 64 /* hex of 32 random bytes */
#define CLOUD_SESSION_CSRF_LEN 64
/* Sessions held at once; the oldest is dropped to make room. */
#define CLOUD_SESSION_MAX 4096
/* Failed sign-ins per client address within CLOUD_SESSION_FAIL_WINDOW_MS
 * before further attempts are refused until the window has passed. */
#define CLOUD_SESSION_FAIL_MAX 5
#define CLOUD_SESSION_FAIL_WINDOW_MS 60000

struct cloud_sessions;

/* A session as seen by a request (copied out of the table). */
struct cloud_session {
	char id[CLOUD_SESSION_ID_LEN + 1];
	char csrf[CLOUD_SESSION_CSRF_LEN + 1];
	char cluster[CLOUD_CLUSTER_NAME_MAX + 1];
	char token_id[CLOUD_TOKEN_ID_LEN + 1];
	int64_t expires_ms; /* wall clock */
};

/* ttl_ms: how long a session lives from sign-in (> 0). Caller frees with
 * cloud_sessions_free(). */
int cloud_sessions_new(int64_t ttl_ms, struct cloud_sessions **out);
/* NULL is a no-op. */
void cloud_sessions_free(struct cloud_sessions *s);
int64_t cloud_sessions_ttl_ms(const struct cloud_sessions *s);

/* Opens a session for a checked token; *out gets a copy. */
int cloud_session_open(struct cloud_sessions *s, const char *cluster, const char *token_id,
		       struct cloud_session *out);
/* Finds the live session with this ID (compared in constant time); an
 * expired one is removed. 0 and *out, or ERR_REPL_AUTH. */
int cloud_session_get(struct cloud_sessions *s, const char *id, struct cloud_session *out);
/* Ends the session with this ID (sign-out, revoked token); unknown IDs
 * are ignored. */
void cloud_session_close(struct cloud_sessions *s, const char *id);
/* True if a and b (NUL-terminated) are equal, in time that depends only on
 * the length of b. */
bool cloud_session_equal(const char *a, const char *b);

/* Before a sign-in attempt from addr (an IP address without port): 0 if
 * it may go on, -EBUSY with *retry_ms (how long until it may) if addr
 * failed CLOUD_SESSION_FAIL_MAX times within the window. */
int cloud_session_may_try(struct cloud_sessions *s, const char *addr, int64_t *retry_ms);
/* Records a failed attempt from addr; a success clears its count. */
void cloud_session_tried(struct cloud_sessions *s, const char *addr, bool ok);

#endif
