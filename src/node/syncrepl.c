/*
 * syncrepl.c — synchronous replication's table of acknowledgements and
 * the commit wait. The design (sessions, the SYNC/DEGRADED states) is at
 * the top of syncrepl.h.
 *
 * The table is small: one entry per open session (a handful of replicas)
 * and, per entry, an array of TXIDs indexed by the store's database id
 * (ids are dense and stable for the life of the mount). A wait scans it
 * each time it is woken, which costs microseconds next to the network
 * round trip and the replica's fsync that it waits for.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "node/syncrepl.h"

struct sess {
	uint64_t token;
	uint64_t replica_id;
	uint64_t *txids;         /* by database id; owned */
	uint32_t n_txids;
};

struct syncrepl {
	struct syncrepl_opts opts;
	pthread_mutex_t mu;      /* guards everything below; leaf lock */
	pthread_cond_t cond;     /* an ack arrived */
	struct sess *sess;
	size_t n_sess, cap_sess;
	uint64_t next_token;
	bool degraded;
	uint32_t probe_db;       /* DEGRADED: the latest commit returned without waiting */
	uint64_t probe_txid;
	bool fail_logged;        /* a run of failed commits was logged */
	struct syncrepl_stats st;
};

struct syncrepl *syncrepl_new(const struct syncrepl_opts *opts)
{
	struct syncrepl *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->opts = *opts;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	/* Tokens start at a random point so that a token of a session of a
	 * previous run of this primary does not name one of this run. */
	if (getrandom(&s->next_token, sizeof(s->next_token), 0) != (ssize_t)sizeof(s->next_token))
		s->next_token = (uint64_t)clock_wall_ms() << 20;
	return s;
}

void syncrepl_free(struct syncrepl *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_sess; i++)
		free(s->sess[i].txids);
	free(s->sess);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
	free(s);
}

static void sess_remove(struct syncrepl *s, size_t i)
{
	free(s->sess[i].txids);
	s->sess[i] = s->sess[--s->n_sess];
}

uint64_t syncrepl_open(struct syncrepl *s, uint64_t replica_id)
{
	if (!s)
		return 0;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; replica_id != 0 && i < s->n_sess; i++) {
		if (s->sess[i].replica_id == replica_id) {
			sess_remove(s, i);
			break;
		}
	}
	uint64_t token = 0;
	if (s->n_sess == s->cap_sess) {
		size_t cap = s->cap_sess ? s->cap_sess * 2 : 8;
		struct sess *n = realloc(s->sess, cap * sizeof(*n));
		if (!n)
			goto out;
		s->sess = n;
		s->cap_sess = cap;
	}
	do
		token = ++s->next_token;
	while (token == 0);
	s->sess[s->n_sess++] = (struct sess){ .token = token, .replica_id = replica_id };
out:
	pthread_mutex_unlock(&s->mu);
	return token;
}

void syncrepl_close(struct syncrepl *s, uint64_t token)
{
	if (!s || token == 0)
		return;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->n_sess; i++) {
		if (s->sess[i].token == token) {
			sess_remove(s, i);
			break;
		}
	}
	pthread_mutex_unlock(&s->mu);
}

/* Sessions holding db_id at txid or beyond (mu held). */
static unsigned count_acked(const struct syncrepl *s, uint32_t db_id, uint64_t txid)
{
	unsigned n = 0;
	for (size_t i = 0; i < s->n_sess; i++)
		if (db_id < s->sess[i].n_txids && s->sess[i].txids[db_id] >= txid)
			n++;
	return n;
}

bool syncrepl_ack(struct syncrepl *s, uint64_t token, uint32_t db_id, uint64_t txid)
{
	if (!s)
		return false;
	bool ok = false;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->n_sess; i++) {
		struct sess *e = &s->sess[i];
		if (e->token != token)
			continue;
		if (db_id >= e->n_txids) {
			uint32_t n = db_id + 16;
			uint64_t *t = realloc(e->txids, n * sizeof(*t));
			if (!t)
				break;
			memset(t + e->n_txids, 0, (n - e->n_txids) * sizeof(*t));
			e->txids = t;
			e->n_txids = n;
		}
		if (txid > e->txids[db_id])
			e->txids[db_id] = txid;
		s->st.acks++;
		ok = true;
		break;
	}
	if (ok && s->degraded && db_id == s->probe_db &&
	    count_acked(s, s->probe_db, s->probe_txid) >= s->opts.replicas) {
		s->degraded = false;
		s->fail_logged = false;
		LOG_INFO("repl", "msg=\"synchronous replication restored: enough replicas caught up\" replicas=%u "
				 "txid=%016" PRIx64,
			 s->opts.replicas, s->probe_txid);
	}
	pthread_mutex_unlock(&s->mu);
	return ok;
}

void syncrepl_wake(struct syncrepl *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int syncrepl_wait(struct syncrepl *s, uint32_t db_id, const char *name, uint64_t txid)
{
	if (!s || s->opts.replicas == 0)
		return 0;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	if (s->degraded) {
		s->st.async_commits++;
		s->probe_db = db_id;
		s->probe_txid = txid;
		/* The replicas may have acked it already (a fast replica
		 * racing the commit's return): back to SYNC right away. */
		if (count_acked(s, db_id, txid) >= s->opts.replicas) {
			s->degraded = false;
			LOG_INFO("repl", "msg=\"synchronous replication restored: enough replicas caught up\" "
					 "replicas=%u db=%s txid=%016" PRIx64,
				 s->opts.replicas, name, txid);
		}
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	s->st.waits++;
	int64_t start = mono_ns();
	struct timespec deadline = clock_deadline(s->opts.timeout_ms);
	unsigned have;
	while ((have = count_acked(s, db_id, txid)) < s->opts.replicas) {
		if (pthread_cond_timedwait(&s->cond, &s->mu, &deadline) == ETIMEDOUT) {
			have = count_acked(s, db_id, txid);
			break;
		}
	}
	s->st.wait_seconds += (double)(mono_ns() - start) / 1e9;
	if (have >= s->opts.replicas) {
		s->st.acked++;
		if (s->fail_logged) {
			s->fail_logged = false;
			LOG_INFO("repl", "msg=\"synchronous replication: commits are acknowledged again\" db=%s "
					 "txid=%016" PRIx64,
				 name, txid);
		}
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	s->st.timeouts++;
	if (s->opts.fail_on_timeout) {
		s->st.failed++;
		if (!s->fail_logged) {
			s->fail_logged = true;
			LOG_ERROR("repl", "msg=\"synchronous replication: too few replicas acknowledged the commit in "
					  "time; failing it (lease.sync-on-timeout: fail); later failures are counted in "
					  "litefs_sync_commit_failed_total\" db=%s txid=%016" PRIx64
					  " acked=%u replicas=%u timeout_ms=%" PRId64 " sessions=%zu",
				  name, txid, have, s->opts.replicas, s->opts.timeout_ms, s->n_sess);
		}
		rc = ERR_REPL_SYNC_TIMEOUT;
	} else {
		s->st.degrade_events++;
		s->degraded = true;
		s->probe_db = db_id;
		s->probe_txid = txid;
		LOG_WARN("repl", "msg=\"synchronous replication: too few replicas acknowledged the commit in time; "
				 "degrading to asynchronous replication until they catch up (lease.sync-on-timeout: "
				 "async)\" db=%s txid=%016" PRIx64 " acked=%u replicas=%u timeout_ms=%" PRId64
				 " sessions=%zu",
			 name, txid, have, s->opts.replicas, s->opts.timeout_ms, s->n_sess);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void syncrepl_stats(struct syncrepl *s, struct syncrepl_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	*out = s->st;
	out->replicas = s->opts.replicas;
	out->fail_on_timeout = s->opts.fail_on_timeout;
	out->degraded = s->degraded;
	out->sessions = (unsigned)s->n_sess;
	pthread_mutex_unlock(&s->mu);
}
