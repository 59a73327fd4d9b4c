/*
 * cloud_session.c — the dashboard's sessions and sign-in rate limit. The
 * contract is in cloud_session.h; docs/dashboard.md is the security model.
 *
 * TABLE. A fixed array of CLOUD_SESSION_MAX slots, searched linearly: a
 * dashboard has a handful of people signed in, and a linear search whose
 * every comparison is constant-time (cloud_session_equal) leaks nothing
 * about which bytes of a guessed ID matched. A full table drops the
 * session that expires first. IDs and CSRF tokens are 32 bytes from
 * getrandom(2), as hex.
 *
 * RATE LIMIT. A small table of client addresses with the count of failed
 * sign-ins in the current window (CLOUD_SESSION_FAIL_WINDOW_MS from the
 * first failure). Past CLOUD_SESSION_FAIL_MAX the address is refused until
 * the window ends; a success clears it. The table is bounded
 * (ATTEMPT_SLOTS): when full, the entry whose window started first is
 * reused, so a flood of addresses cannot grow memory.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/clock.h"
#include "base/err.h"
#include "cloud/cloud_session.h"

#define ATTEMPT_SLOTS 1024
#define ADDR_MAX 64

struct attempt {
	char addr[ADDR_MAX];
	int64_t window_start_ms; /* monotonic; 0: free slot */
	unsigned failures;
};

struct cloud_sessions {
	pthread_mutex_t mu; /* guards slots, n_used and attempts */
	int64_t ttl_ms;
	struct cloud_session slots[CLOUD_SESSION_MAX]; /* id[0] == '\0': free */
	struct attempt attempts[ATTEMPT_SLOTS];
};

int cloud_sessions_new(int64_t ttl_ms, struct cloud_sessions **out)
{
	*out = NULL;
	if (ttl_ms <= 0)
		return ERR_INVAL;
	struct cloud_sessions *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	pthread_mutex_init(&s->mu, NULL);
	s->ttl_ms = ttl_ms;
	*out = s;
	return 0;
}

void cloud_sessions_free(struct cloud_sessions *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int64_t cloud_sessions_ttl_ms(const struct cloud_sessions *s)
{
	return s->ttl_ms;
}

bool cloud_session_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;
	for (size_t i = 0; i < lb; i++)
		diff |= (unsigned char)(i < la ? a[i] : 0) ^ (unsigned char)b[i];
	return diff == 0;
}

static int random_hex(char *out, size_t n_bytes)
{
	unsigned char r[32];
	if (n_bytes > sizeof(r))
		return ERR_INVAL;
	if (getrandom(r, n_bytes, 0) != (ssize_t)n_bytes)
		return -errno;
	for (size_t i = 0; i < n_bytes; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
	return 0;
}

int cloud_session_open(struct cloud_sessions *s, const char *cluster, const char *token_id,
		       struct cloud_session *out)
{
	memset(out, 0, sizeof(*out));
	int rc = random_hex(out->id, CLOUD_SESSION_ID_LEN / 2);
	if (rc == 0)
		rc = random_hex(out->csrf, CLOUD_SESSION_CSRF_LEN / 2);
	if (rc != 0)
		return rc;
	snprintf(out->cluster, sizeof(out->cluster), "%s", cluster);
	snprintf(out->token_id, sizeof(out->token_id), "%s", token_id);
	int64_t now = clock_wall_ms();
	out->expires_ms = now + s->ttl_ms;
	pthread_mutex_lock(&s->mu);
	size_t pick = 0;
	for (size_t i = 0; i < CLOUD_SESSION_MAX; i++) {
		struct cloud_session *e = &s->slots[i];
		if (!e->id[0] || e->expires_ms <= now) {
			pick = i;
			break;
		}
		if (e->expires_ms < s->slots[pick].expires_ms)
			pick = i;
	}
	s->slots[pick] = *out;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* The slot of id, or NULL; every live slot is compared. Under s->mu. */
static struct cloud_session *find(struct cloud_sessions *s, const char *id)
{
	struct cloud_session *hit = NULL;
	if (strlen(id) != CLOUD_SESSION_ID_LEN)
		return NULL;
	for (size_t i = 0; i < CLOUD_SESSION_MAX; i++) {
		if (s->slots[i].id[0] && cloud_session_equal(id, s->slots[i].id))
			hit = &s->slots[i];
	}
	return hit;
}

int cloud_session_get(struct cloud_sessions *s, const char *id, struct cloud_session *out)
{
	int rc = ERR_REPL_AUTH;
	pthread_mutex_lock(&s->mu);
	struct cloud_session *e = find(s, id);
	if (e && e->expires_ms <= clock_wall_ms())
		memset(e, 0, sizeof(*e));
	else if (e) {
		*out = *e;
		rc = 0;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void cloud_session_close(struct cloud_sessions *s, const char *id)
{
	pthread_mutex_lock(&s->mu);
	struct cloud_session *e = find(s, id);
	if (e)
		memset(e, 0, sizeof(*e));
	pthread_mutex_unlock(&s->mu);
}

/* The entry of addr, or a slot for it (free, stale, or the oldest). Under s->mu. */
static struct attempt *attempt_of(struct cloud_sessions *s, const char *addr, int64_t now)
{
	struct attempt *free_slot = NULL, *oldest = &s->attempts[0];
	for (size_t i = 0; i < ATTEMPT_SLOTS; i++) {
		struct attempt *a = &s->attempts[i];
		if (a->window_start_ms && now - a->window_start_ms >= CLOUD_SESSION_FAIL_WINDOW_MS)
			memset(a, 0, sizeof(*a));
		if (a->window_start_ms && !strcmp(a->addr, addr))
			return a;
		if (!a->window_start_ms && !free_slot)
			free_slot = a;
		if (a->window_start_ms < oldest->window_start_ms)
			oldest = a;
	}
	struct attempt *a = free_slot ? free_slot : oldest;
	memset(a, 0, sizeof(*a));
	snprintf(a->addr, sizeof(a->addr), "%s", addr);
	return a;
}

int cloud_session_may_try(struct cloud_sessions *s, const char *addr, int64_t *retry_ms)
{
	int64_t now = clock_mono_ms();
	int rc = 0;
	*retry_ms = 0;
	pthread_mutex_lock(&s->mu);
	struct attempt *a = attempt_of(s, addr, now);
	if (a->failures >= CLOUD_SESSION_FAIL_MAX) {
		*retry_ms = a->window_start_ms + CLOUD_SESSION_FAIL_WINDOW_MS - now;
		rc = -EBUSY;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void cloud_session_tried(struct cloud_sessions *s, const char *addr, bool ok)
{
	int64_t now = clock_mono_ms();
	pthread_mutex_lock(&s->mu);
	struct attempt *a = attempt_of(s, addr, now);
	if (ok) {
		memset(a, 0, sizeof(*a));
	} else {
		if (!a->window_start_ms)
			a->window_start_ms = now;
		a->failures++;
	}
	pthread_mutex_unlock(&s->mu);
}
