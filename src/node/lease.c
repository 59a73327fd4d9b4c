/*
 * lease.c — the etcd lease (lease.h; the argument is in docs/lease.md).
 *
 * KEYS (K = lease.etcd.key):
 *
 *   K                 the primary: {"hostname","advertise_url","cluster_id",
 *                     "node_id","base":{db:{"txid","checksum"}},
 *                     "proxy_url" (with a proxy)}, created
 *                     with put-if-absent bound to the holder's session;
 *                     base = the holder's positions when it took over
 *   K/nodes/<host>    every live node: {"hostname","node_id","candidate",
 *                     "primary","following","pos":{db:"txid"}}, bound to
 *                     its session; rewritten at every transition
 *   K/cluster         the cluster ID, no lease (put-if-absent once)
 *
 * STATES (one thread; transitions and the function behind each):
 *
 *   no session ──grant──► session (entry published)        ensure_session
 *   session: K held by another ──► following it            follow
 *            (lost/ first: local TXIDs after the holder's base)
 *   session: K absent ──► detached (entry: following "", final positions)
 *            candidate, every other entry detached (or SETTLE_MS passed),
 *            no live node ahead of it (or catch-up-timeout passed)
 *            ──put-if-absent──► primary                    try_acquire
 *   primary: keep-alive ok ──► deadline = sent + TTL − margin
 *   primary: keep-alive says expired, or deadline passed ──► demoted
 *            (role replica, deadline 0: the commit path refuses at once)
 *   primary: lease_release ──► deadline 0, role replica, revoke
 *
 * HANDOFF (K/handoff, bound to the candidate's session; docs/lease.md):
 *
 *   following, promote asked ──put-if-absent K/handoff "requested"──►
 *            requesting                                candidate_handoff
 *   primary: a valid request ──deadline 0 (role stays primary), final
 *            positions, K/handoff "fenced"+pos──► fenced primary_handoff
 *   requesting, "fenced" seen, positions reached ──txn: K mod == P's and
 *            request unchanged → put K (own session), delete request──►
 *            primary                                   candidate_handoff
 *   fenced primary: K names another ──► following it   handed_off
 *   fenced primary: request gone, or 5 s and the request deleted
 *            unchanged ──► primary accepting again     handoff_unfence
 *
 * I4 (handoff): the fenced primary's positions are final (db.c checks the
 *    fence under db.mu), and K moves only in a transaction that also
 *    deletes the request P answered; P un-fences only after that request
 *    is gone while K is still its own. So the new holder has every commit
 *    P acknowledged, and P never accepts a commit after K moved.
 *
 * I1 (fencing): node_may_write() is true only while clock_mono_ms() is
 *    before sent + TTL − margin of a keep-alive etcd answered with a TTL;
 *    etcd cannot expire the session before sent + TTL (it renewed it after
 *    the request was sent), and K exists until the session expires, so no
 *    other node holds K while this one accepts a commit (docs/lease.md for
 *    the clock assumption).
 * I2 a node follows (replica_follow) only a holder of the same cluster ID.
 * I3 the role becomes primary only after replica_follow(NULL) returned:
 *    no apply from the old primary runs on a new primary.
 *
 * The thread waits with etcd watches on K's prefix (a long poll until the
 * next keep-alive), so a change of holder reaches it in milliseconds.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/log.h"
#include "ltx/ltxlog.h"
#include "node/config.h"
#include "node/db.h"
#include "proto/etcd.h"
#include "node/lease.h"
#include "node/lost.h"
#include "node/replica.h"
#include "node/store.h"
#include "proto/cluster.h"

/* How long a candidate waits for the other live nodes to say they
 * detached from the old primary (their positions final) before it
 * compares with what they last published. */
#define LEASE_SETTLE_MS 1000
/* How long lease_start() retries an unreachable etcd. */
#define LEASE_START_RETRY_MS 30000
#define LEASE_MAX_DBS 1024
/* How long a primary stays fenced for a handoff before it gives up (drops
 * the request and accepts commits again), and how long the candidate
 * waits, from its request, before it gives up too. */
#define LEASE_HANDOFF_TIMEOUT_MS 5000

enum lease_state { ST_NONE, ST_FOLLOWING, ST_DETACHED, ST_PRIMARY };
static const char *const state_names[] = { "no-session", "following", "electing", "primary" };

struct lease {
	struct store *st;        /* borrowed */
	struct replica *rep;     /* borrowed */
	struct cluster *cluster; /* borrowed */
	struct etcd *etcd;       /* owned; thread only after start */
	char *key, *nodes_prefix, *my_entry_key, *cluster_key, *handoff_key;
	char *hostname, *advertise_url, *data_dir;
	bool candidate;
	bool auto_promote;       /* lease.promote: request a handoff once synced */
	int64_t ttl_ms, margin_ms, interval_ms, catch_up_timeout_ms;

	pthread_t thread;
	bool started;
	atomic_bool stopping;
	atomic_bool wake;        /* lease_promote: end the watch in flight */

	/* Thread only. */
	int64_t sess_id;
	int64_t sess_sent_ms;     /* clock_mono_ms() when the last successful keep-alive was sent */
	int64_t sess_ttl_ms;
	int64_t next_ka_ms;
	int64_t following_rev;    /* mod_revision of the K we follow (K changes only when
				   * created or handed off); 0: none */
	int64_t absent_since_ms;  /* K seen absent since (mono); 0: not absent */
	char last_log[256];
	/* Handoff, on the primary: the mod_revision of the request it fenced
	 * itself for (0: none), since when, and for whom. */
	int64_t ho_rev;
	int64_t ho_fenced_ms;
	/* The revision of the handoff step this thread wrote last (thread
	 * only; 0: none since the last watch). */
	int64_t own_rev;
	char ho_to[256];
	/* Handoff, on the candidate: the create_revision of its request
	 * (0: none) and when it was made. */
	int64_t req_rev;
	int64_t req_ms;
	bool auto_promote_done;

	pthread_mutex_t mu;       /* leaf: guards the fields below */
	pthread_cond_t cond;
	enum lease_state state;
	char holder[256];
	char holder_url[512];
	int64_t deadline_ms;      /* own write deadline (mono), 0: none */
	int64_t expiry_ms;        /* own session's expiry as etcd sees it (mono, estimate) */
	uint64_t n_acquired, n_lost, n_ka_fail, n_lost_saved, n_handoffs;
	/* lease_promote() and the thread: a request is wanted when
	 * promote_gen > promote_taken; it is answered when promote_done
	 * reaches its generation. */
	uint64_t promote_gen, promote_taken, promote_done;
	int promote_rc;
	char promote_msg[256];
	int64_t last_pause_ms;    /* the last handoff's fence-to-handover time here (mono) */
};

/* ---- Helpers ------------------------------------------------------------- */

static void set_state(struct lease *l, enum lease_state s, const char *holder, const char *url)
{
	pthread_mutex_lock(&l->mu);
	l->state = s;
	snprintf(l->holder, sizeof(l->holder), "%s", holder ? holder : "");
	snprintf(l->holder_url, sizeof(l->holder_url), "%s", url ? url : "");
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
}

static enum lease_state get_state(struct lease *l)
{
	pthread_mutex_lock(&l->mu);
	enum lease_state s = l->state;
	pthread_mutex_unlock(&l->mu);
	return s;
}

/* Logs a repeated etcd failure once (then at debug level). */
static void log_etcd(struct lease *l, const char *what, int rc)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "%s: %s", what, err_str(rc));
	if (!strcmp(msg, l->last_log)) {
		LOG_DEBUG("lease", "msg=\"%s (repeated)\" endpoint=%s", msg, etcd_endpoint(l->etcd));
		return;
	}
	snprintf(l->last_log, sizeof(l->last_log), "%s", msg);
	LOG_WARN("lease", "msg=\"%s\" endpoint=%s", msg, etcd_endpoint(l->etcd));
}

/* Sleeps ms unless stopping. */
static void nap(struct lease *l, int64_t ms)
{
	struct timespec until = clock_deadline(ms > 0 ? (int)ms : 0);
	pthread_mutex_lock(&l->mu);
	while (!atomic_load(&l->stopping))
		if (pthread_cond_timedwait(&l->cond, &l->mu, &until) != 0)
			break;
	pthread_mutex_unlock(&l->mu);
}

/* {db: "txid"} of every database this node has. */
static json_t *positions_json(struct lease *l, bool with_checksum)
{
	json_t *o = json_object();
	size_t n = store_count(l->st);
	for (size_t i = 0; o && i < n && i < LEASE_MAX_DBS; i++) {
		struct db *db = store_by_id(l->st, (uint32_t)i);
		if (!db)
			continue;
		struct ltx_pos p = db_pos(db);
		if (p.txid == 0)
			continue;
		char t[17], c[17];
		snprintf(t, sizeof(t), "%016" PRIx64, p.txid);
		snprintf(c, sizeof(c), "%016" PRIx64, p.checksum);
		json_object_set_new(o, db->name,
				    with_checksum ? json_pack("{s:s, s:s}", "txid", t, "checksum", c) : json_string(t));
	}
	return o;
}

static uint64_t hex64(const char *s)
{
	return s ? strtoull(s, NULL, 16) : 0;
}

/* Publishes this node's entry (bound to the session). */
static int publish_entry(struct lease *l, bool primary, const char *following)
{
	char id[17];
	snprintf(id, sizeof(id), "%016" PRIx64, l->st->node.node_id);
	json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:s, s:o}", "hostname", l->hostname, "node_id", id, "candidate",
			      l->candidate, "primary", primary, "following", following ? following : "", "pos",
			      positions_json(l, false));
	char *v = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!v)
		return ERR_NOMEM;
	int rc = etcd_put(l->etcd, l->my_entry_key, v, l->sess_id);
	free(v);
	return rc;
}

/* ---- Session ------------------------------------------------------------- */

static void update_deadline(struct lease *l)
{
	int64_t expiry = l->sess_sent_ms + l->sess_ttl_ms;
	int64_t deadline = expiry - l->margin_ms;
	pthread_mutex_lock(&l->mu);
	l->expiry_ms = expiry;
	bool accepting = l->state == ST_PRIMARY && l->ho_rev == 0; /* not fenced for a handoff */
	l->deadline_ms = accepting ? deadline : 0;
	pthread_mutex_unlock(&l->mu);
	if (accepting)
		node_set_write_deadline(&l->st->node, deadline);
}

/* Stops accepting commits now and becomes a replica (of nobody yet). */
static void demote(struct lease *l, const char *why)
{
	node_set_write_deadline(&l->st->node, 0);
	node_set_role(&l->st->node, false, NULL);
	pthread_mutex_lock(&l->mu);
	l->n_lost++;
	l->deadline_ms = 0;
	pthread_mutex_unlock(&l->mu);
	set_state(l, ST_DETACHED, NULL, NULL);
	l->following_rev = 0;
	l->ho_rev = 0;
	LOG_ERROR("lease", "msg=\"fenced: %s; this node no longer accepts commits (SQLite sees a read-only "
			   "database) and will follow the next primary\" key=%s",
		  why, l->key);
}

static int ensure_session(struct lease *l)
{
	if (l->sess_id != 0)
		return 0;
	int64_t sent = clock_mono_ms(), id, granted;
	int rc = etcd_grant(l->etcd, l->ttl_ms / 1000, &id, &granted);
	if (rc != 0) {
		log_etcd(l, "cannot grant a session lease", rc);
		return rc;
	}
	l->sess_id = id;
	l->sess_sent_ms = sent;
	l->sess_ttl_ms = granted * 1000;
	l->next_ka_ms = sent + l->interval_ms;
	update_deadline(l);
	l->last_log[0] = '\0';
	LOG_INFO("lease", "msg=\"session granted\" lease=%016" PRIx64 " ttl_s=%" PRId64 " endpoint=%s", (uint64_t)id,
		 granted, etcd_endpoint(l->etcd));
	return publish_entry(l, false, "");
}

/* One keep-alive when it is due. Returns 0, or an error (the session is
 * then gone or unknown). */
static int keepalive(struct lease *l)
{
	int64_t now = clock_mono_ms();
	if (l->sess_id == 0 || now < l->next_ka_ms)
		return 0;
	int64_t ttl_s = 0;
	int rc = etcd_keepalive(l->etcd, l->sess_id, &ttl_s);
	if (rc != 0) {
		pthread_mutex_lock(&l->mu);
		l->n_ka_fail++;
		pthread_mutex_unlock(&l->mu);
		log_etcd(l, "keep-alive failed", rc);
		/* Try again soon: the deadline is what protects commits. */
		l->next_ka_ms = clock_mono_ms() + l->interval_ms / 4;
		return rc;
	}
	if (ttl_s <= 0) {
		LOG_WARN("lease", "msg=\"session expired in etcd\" lease=%016" PRIx64, (uint64_t)l->sess_id);
		if (l->state == ST_PRIMARY)
			demote(l, "the lease expired in etcd");
		l->sess_id = 0;
		return ERR_ETCD_REPLY;
	}
	l->sess_sent_ms = now;
	l->sess_ttl_ms = ttl_s * 1000;
	l->next_ka_ms = now + l->interval_ms;
	l->last_log[0] = '\0';
	update_deadline(l);
	return 0;
}

/* ---- Following ----------------------------------------------------------- */

/* Keeps every local transaction after the new primary's base position
 * for db under lost/: this node committed them and the new primary never
 * received them. */
static void save_lost(struct lease *l, struct db *db, struct ltx_pos base, const char *holder)
{
	struct ltx_pos local = db_pos(db);
	if (local.txid <= base.txid)
		return;
	struct lost_event *ev = NULL;
	struct db_cursor c;
	db_cursor_init(&c);
	int rc = lost_begin(l->data_dir, db->name, &ev);
	if (rc == 0 && (rc = db_cursor_open(db, base, &c)) == 0) {
		int fd;
		struct ltxlog_rec rec;
		while ((rc = db_cursor_next(&c, &fd, &rec)) == 1)
			if ((rc = lost_add(ev, fd, rec.offset + LTXLOG_HDR_SIZE, rec.len)) != 0)
				break;
	} else if (rc == ERR_NEED_SNAPSHOT) {
		/* Not on the new primary's chain at its base, or not
		 * retained: keep the whole local state instead. */
		char tmp[PATH_MAX];
		snprintf(tmp, sizeof(tmp), "%s/tmp", l->data_dir);
		int fd = fileio_spool_open(tmp);
		rc = fd < 0 ? fd : 0;
		struct ltx_pos pos;
		if (rc == 0 && (rc = db_snapshot(db, fdio_write, &fd, &pos)) == 0) {
			off_t size = lseek(fd, 0, SEEK_END);
			rc = size < 0 ? -errno : size > UINT32_MAX ? -EFBIG : lost_add(ev, fd, 0, (uint32_t)size);
		}
		if (fd >= 0)
			close(fd);
	}
	db_cursor_close(&c);
	char dir[PATH_MAX] = "";
	if (rc == 0 && ev && lost_count(ev) > 0) {
		rc = lost_commit(ev, "this node was the primary and committed these transactions, but the new primary "
				     "took over without them (failover)", &base, dir, sizeof(dir));
		ev = NULL;
	}
	lost_abort(ev);
	if (rc != 0) {
		LOG_ERROR("lease", "msg=\"cannot keep the transactions the new primary lacks under lost/; they will be "
				   "replaced by its snapshot\" db=%s first_txid=%016" PRIx64 " last_txid=%016" PRIx64
				   " err=\"%s\"",
			  db->name, base.txid + 1, local.txid, err_str(rc));
		return;
	}
	pthread_mutex_lock(&l->mu);
	l->n_lost_saved++;
	pthread_mutex_unlock(&l->mu);
	LOG_WARN("lease", "msg=\"transactions this node committed never reached the new primary: kept as LTX files; "
			  "inspect with litefs ltx, re-apply with litefs ltx apply onto a copy at the base position "
			  "(docs/lease.md)\" db=%s first_txid=%016" PRIx64 " last_txid=%016" PRIx64
			  " primary=%s dir=\"%s\"",
		  db->name, base.txid + 1, local.txid, holder, dir);
}

static void follow(struct lease *l, const struct etcd_kv *kv, json_t *v)
{
	const char *host = json_string_value(json_object_get(v, "hostname"));
	const char *url = json_string_value(json_object_get(v, "advertise_url"));
	if (!host || !url) {
		LOG_WARN("lease", "msg=\"the lease key holds no hostname or URL; not following it\" key=%s", l->key);
		return;
	}
	if (l->state == ST_FOLLOWING && l->following_rev == kv->mod_revision)
		return;
	/* A node that wrote transactions the new primary lacks keeps them
	 * before the replica's first connection replaces them. */
	json_t *base = json_object_get(v, "base");
	size_t n = store_count(l->st);
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(l->st, (uint32_t)i);
		if (!db)
			continue;
		json_t *b = json_object_get(base, db->name);
		struct ltx_pos bp = { hex64(json_string_value(json_object_get(b, "txid"))),
				      hex64(json_string_value(json_object_get(b, "checksum"))) };
		save_lost(l, db, bp, host);
	}
	l->following_rev = kv->mod_revision;
	set_state(l, ST_FOLLOWING, host, url);
	node_set_role(&l->st->node, false, host);
	node_set_primary_proxy(&l->st->node, json_string_value(json_object_get(v, "proxy_url")));
	replica_follow(l->rep, url, host);
	int rc = publish_entry(l, false, host);
	if (rc != 0)
		log_etcd(l, "cannot publish this node's entry", rc);
	LOG_INFO("lease", "msg=\"following the primary\" primary=%s url=\"%s\"", host, url);
}

/* ---- Election ------------------------------------------------------------ */

/* Whether this candidate may take the lease now, given every node entry.
 * *why says what it waits for. */
static bool may_acquire(struct lease *l, const struct etcd_kv *kvs, size_t n, int64_t now, char *why, size_t why_len)
{
	bool settled = now - l->absent_since_ms >= LEASE_SETTLE_MS;
	bool bound = l->catch_up_timeout_ms > 0 && now - l->absent_since_ms >= l->catch_up_timeout_ms;
	size_t plen = strlen(l->nodes_prefix);
	for (size_t i = 0; i < n; i++) {
		if (strncmp(kvs[i].key, l->nodes_prefix, plen) != 0 || !strcmp(kvs[i].key, l->my_entry_key))
			continue;
		json_error_t jerr;
		json_t *v = json_loads(kvs[i].value, 0, &jerr);
		if (!v)
			continue;
		const char *host = json_string_value(json_object_get(v, "hostname"));
		const char *following = json_string_value(json_object_get(v, "following"));
		if (following && following[0] && !settled) {
			snprintf(why, why_len, "node %s still follows %s", host ? host : "?", following);
			json_decref(v);
			return false;
		}
		const char *name;
		json_t *t;
		json_object_foreach(json_object_get(v, "pos"), name, t)
		{
			struct db *db = store_find(l->st, name, true);
			uint64_t mine = db ? db_pos(db).txid : 0;
			uint64_t theirs = hex64(json_string_value(t));
			if (theirs > mine && !bound) {
				snprintf(why, why_len, "node %s is ahead on db %s (txid %016" PRIx64 " > %016" PRIx64 ")",
					 host ? host : "?", name, theirs, mine);
				json_decref(v);
				return false;
			}
		}
		json_decref(v);
	}
	return true;
}

/* K's value naming this node (caller frees), NULL when out of memory. */
static char *holder_value(struct lease *l)
{
	char id[CLUSTER_ID_LEN + 1], nid[17];
	cluster_get(l->cluster, id);
	snprintf(nid, sizeof(nid), "%016" PRIx64, l->st->node.node_id);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o}", "hostname", l->hostname, "advertise_url", l->advertise_url,
			      "cluster_id", id, "node_id", nid, "base", positions_json(l, true));
	/* Where replicas' proxies forward writes (docs/proxy.md). */
	if (o && l->st->node.proxy_url[0])
		json_object_set_new(o, "proxy_url", json_string(l->st->node.proxy_url));
	char *v = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return v;
}

/* Before taking K: the session must leave time to commit, so a deadline
 * already near is renewed first. Returns 0 or the keep-alive's error. */
static int renew_if_near(struct lease *l)
{
	int64_t now = clock_mono_ms();
	if (l->sess_sent_ms + l->sess_ttl_ms - l->margin_ms - now < l->interval_ms) {
		l->next_ka_ms = now;
		return keepalive(l);
	}
	return 0;
}

static void become_primary(struct lease *l, int64_t mod_rev)
{
	/* I3: the replica is idle before the role changes. */
	replica_follow(l->rep, NULL, NULL);
	set_state(l, ST_PRIMARY, l->hostname, l->advertise_url);
	update_deadline(l);
	node_set_role(&l->st->node, true, NULL);
	pthread_mutex_lock(&l->mu);
	l->n_acquired++;
	int64_t left = l->deadline_ms - clock_mono_ms();
	pthread_mutex_unlock(&l->mu);
	l->following_rev = mod_rev;
	int rc = publish_entry(l, true, "");
	if (rc != 0)
		log_etcd(l, "cannot publish this node's entry", rc);
	LOG_INFO("lease", "msg=\"acquired the lease: this node is the primary\" key=%s lease=%016" PRIx64
			  " deadline_in_ms=%" PRId64 " endpoint=%s",
		 l->key, (uint64_t)l->sess_id, left, etcd_endpoint(l->etcd));
}

static void try_acquire(struct lease *l, const struct etcd_kv *kvs, size_t n)
{
	int64_t now = clock_mono_ms();
	char why[256] = "";
	if (!may_acquire(l, kvs, n, now, why, sizeof(why))) {
		if (strcmp(why, l->last_log)) {
			snprintf(l->last_log, sizeof(l->last_log), "%s", why);
			LOG_INFO("lease", "msg=\"not taking the lease yet: %s\"", why);
		}
		return;
	}
	if (renew_if_near(l) != 0)
		return;
	char *v = holder_value(l);
	if (!v)
		return;
	bool won = false;
	int64_t rev = 0;
	int rc = etcd_put_if_absent(l->etcd, l->key, v, l->sess_id, &won, &rev);
	free(v);
	if (rc != 0) {
		log_etcd(l, "cannot take the lease", rc);
		return;
	}
	if (won)
		become_primary(l, rev);
}

/* ---- Handoff ------------------------------------------------------------- */

/* Takes a litefs promote request that is waiting, if any. */
static bool promote_take(struct lease *l)
{
	pthread_mutex_lock(&l->mu);
	bool wanted = l->promote_gen > l->promote_taken;
	l->promote_taken = l->promote_gen;
	pthread_mutex_unlock(&l->mu);
	return wanted;
}

/* Answers the promote requests taken so far. */
static void promote_finish(struct lease *l, int rc, const char *msg)
{
	pthread_mutex_lock(&l->mu);
	l->promote_done = l->promote_taken;
	l->promote_rc = rc;
	snprintf(l->promote_msg, sizeof(l->promote_msg), "%s", msg);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
}

static const struct etcd_kv *find_kv(const struct etcd_kv *kvs, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(kvs[i].key, key))
			return &kvs[i];
	return NULL;
}

/* Deletes the request kv if it is unchanged; logs a failure. */
static bool drop_request(struct lease *l, const struct etcd_kv *ho)
{
	struct etcd_cmp c = { l->handoff_key, ho->mod_revision };
	struct etcd_op op = { l->handoff_key, NULL, 0 };
	bool ok = false;
	int64_t rev;
	int rc = etcd_txn(l->etcd, &c, 1, &op, 1, &ok, &rev);
	if (rc != 0)
		log_etcd(l, "cannot delete the handoff request", rc);
	return rc == 0 && ok;
}

/* Primary: accepts commits again (the deadline of the last keep-alive). */
static void handoff_unfence(struct lease *l, const char *why)
{
	int64_t fenced_ms = clock_mono_ms() - l->ho_fenced_ms;
	l->ho_rev = 0;
	update_deadline(l);
	LOG_WARN("lease", "msg=\"handoff abandoned: %s; accepting commits again\" to=%s fenced_ms=%" PRId64, why,
		 l->ho_to, fenced_ms);
}

/* Primary: K now names another node while this one was fenced for a
 * handoff: the candidate took it over (step 4). */
static void handed_off(struct lease *l, const char *to)
{
	node_set_write_deadline(&l->st->node, 0);
	node_set_role(&l->st->node, false, NULL);
	int64_t fenced_ms = clock_mono_ms() - l->ho_fenced_ms;
	pthread_mutex_lock(&l->mu);
	l->deadline_ms = 0;
	l->n_handoffs++;
	l->last_pause_ms = fenced_ms;
	pthread_mutex_unlock(&l->mu);
	set_state(l, ST_DETACHED, NULL, NULL);
	l->following_rev = 0;
	l->ho_rev = 0;
	LOG_INFO("lease", "msg=\"handed the lease off: this node follows the new primary\" to=%s fenced_ms=%" PRId64,
		 to ? to : l->ho_to, fenced_ms);
}

/* Primary, holding K (holder): steps 2 and 3 of a handoff request ho (or
 * NULL), and its timeout. */
static void primary_handoff(struct lease *l, const struct etcd_kv *holder, const struct etcd_kv *ho,
			    const struct etcd_kv *kvs, size_t n)
{
	if (l->ho_rev != 0) {
		if (!ho || ho->mod_revision != l->ho_rev)
			/* K is still ours and the request is gone: the
			 * candidate's transfer can no longer succeed. */
			handoff_unfence(l, "the candidate withdrew its request or went away");
		else if (clock_mono_ms() - l->ho_fenced_ms >= LEASE_HANDOFF_TIMEOUT_MS && drop_request(l, ho))
			handoff_unfence(l, "the candidate did not reach this node's positions in time");
		return;
	}
	if (!ho)
		return;
	json_error_t jerr;
	json_t *v = json_loads(ho->value, 0, &jerr);
	const char *host = json_string_value(json_object_get(v, "hostname"));
	const char *nid = json_string_value(json_object_get(v, "node_id"));
	const char *state = json_string_value(json_object_get(v, "state"));
	char why[256] = "";
	char entry_key[512];
	snprintf(entry_key, sizeof(entry_key), "%s%s", l->nodes_prefix, host ? host : "");
	const struct etcd_kv *entry = host ? find_kv(kvs, n, entry_key) : NULL;
	json_t *ev = entry ? json_loads(entry->value, 0, &jerr) : NULL;
	const char *following = json_string_value(json_object_get(ev, "following"));
	if (!host || !nid || !state || strcmp(state, "requested"))
		snprintf(why, sizeof(why), "the request is malformed or stale");
	else if (!entry || entry->lease != ho->lease)
		snprintf(why, sizeof(why), "%s has no live entry on the request's session", host);
	else if (!json_is_true(json_object_get(ev, "candidate")))
		snprintf(why, sizeof(why), "%s is not a candidate", host);
	else if (!following || strcmp(following, l->hostname))
		snprintf(why, sizeof(why), "%s does not follow this node", host);
	json_decref(ev);
	if (why[0]) {
		LOG_WARN("lease", "msg=\"refused a handoff request: %s\" key=%s", why, l->handoff_key);
		drop_request(l, ho);
		json_decref(v);
		return;
	}
	/* Step 2: fence, as at the deadline (the streams go on: the role
	 * stays primary). db_pos() takes db.mu, under which every commit
	 * checks the fence (db.c fenced), so the positions read after this
	 * are final. */
	l->ho_rev = -1;
	l->ho_fenced_ms = clock_mono_ms();
	snprintf(l->ho_to, sizeof(l->ho_to), "%s", host);
	node_set_write_deadline(&l->st->node, 0);
	pthread_mutex_lock(&l->mu);
	l->deadline_ms = 0;
	pthread_mutex_unlock(&l->mu);
	char rev[32];
	snprintf(rev, sizeof(rev), "%" PRId64, holder->mod_revision);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "hostname", host, "node_id", nid, "state", "fenced",
			      "from", l->hostname, "primary_rev", rev, "pos", positions_json(l, true));
	char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	json_decref(v);
	bool ok = false;
	int64_t new_rev = 0;
	int rc = ERR_NOMEM;
	if (val) {
		struct etcd_cmp c = { l->handoff_key, ho->mod_revision };
		struct etcd_op op = { l->handoff_key, val, ho->lease };
		rc = etcd_txn(l->etcd, &c, 1, &op, 1, &ok, &new_rev);
		free(val);
	}
	if (rc != 0 || !ok) {
		if (rc != 0)
			log_etcd(l, "cannot answer the handoff request", rc);
		handoff_unfence(l, "the request changed before this node answered it");
		return;
	}
	l->ho_rev = new_rev;
	l->own_rev = new_rev;
	LOG_INFO("lease", "msg=\"handoff requested: no new commits; waiting for the candidate to reach this node's "
			  "positions\" to=%s timeout_ms=%d",
		 l->ho_to, LEASE_HANDOFF_TIMEOUT_MS);
}

/* Candidate: whether every position in pos ({db: {"txid","checksum"}})
 * has been applied here. */
static bool reached(struct lease *l, json_t *pos)
{
	const char *name;
	json_t *p;
	json_object_foreach(pos, name, p)
	{
		uint64_t txid = hex64(json_string_value(json_object_get(p, "txid")));
		uint64_t sum = hex64(json_string_value(json_object_get(p, "checksum")));
		struct db *db = store_find(l->st, name, true);
		struct ltx_pos mine = db ? db_pos(db) : (struct ltx_pos){ 0 };
		if (mine.txid < txid || (mine.txid == txid && mine.checksum != sum))
			return false;
	}
	return true;
}

/* Candidate: gives its request up (deleting it when it is still there). */
static void request_fail(struct lease *l, const struct etcd_kv *ho, const char *why)
{
	if (ho && ho->create_revision == l->req_rev)
		drop_request(l, ho);
	l->req_rev = 0;
	LOG_WARN("lease", "msg=\"handoff failed: %s\" key=%s", why, l->handoff_key);
	promote_finish(l, ERR_LEASE_HANDOFF, why);
}

/* Candidate, following the holder of K: step 1 (the request, from
 * litefs promote or lease.promote) and step 4 (catch up with the fenced
 * primary's final positions, then move K to this node in one
 * transaction). */
static void candidate_handoff(struct lease *l, const struct etcd_kv *ho)
{
	char nid[17];
	snprintf(nid, sizeof(nid), "%016" PRIx64, l->st->node.node_id);
	if (l->req_rev == 0) {
		bool asked = promote_take(l);
		if (!asked && l->auto_promote && !l->auto_promote_done && l->candidate &&
		    replica_wait_synced(l->rep, 0)) {
			asked = true;
			l->auto_promote_done = true;
		}
		if (!asked)
			return;
		const char *why = NULL;
		if (!l->candidate)
			why = "this node is not a candidate (lease.candidate: false)";
		else if (!replica_wait_synced(l->rep, 0))
			why = "this node has not finished its first sync with the primary";
		else if (ho)
			why = "another handoff is pending";
		json_t *o = why ? NULL : json_pack("{s:s, s:s, s:s}", "hostname", l->hostname, "node_id", nid, "state",
						     "requested");
		char *v = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		if (!why && v) {
			bool won = false;
			int64_t rev = 0;
			int rc = etcd_put_if_absent(l->etcd, l->handoff_key, v, l->sess_id, &won, &rev);
			if (rc != 0)
				why = "cannot write the handoff request to etcd";
			else if (!won)
				why = "another handoff is pending";
			else {
				l->req_rev = rev;
				l->own_rev = rev;
				l->req_ms = clock_mono_ms();
				LOG_INFO("lease", "msg=\"requested a handoff from the primary\" primary=%s key=%s", l->holder,
					 l->handoff_key);
			}
		} else if (!why) {
			why = "out of memory";
		}
		free(v);
		if (why)
			request_fail(l, NULL, why);
		return;
	}
	json_error_t jerr;
	json_t *v = ho ? json_loads(ho->value, 0, &jerr) : NULL;
	const char *rnid = json_string_value(json_object_get(v, "node_id"));
	const char *state = json_string_value(json_object_get(v, "state"));
	if (!ho || ho->create_revision != l->req_rev || !rnid || strcmp(rnid, nid)) {
		request_fail(l, NULL, "the primary dropped the request (refused, or timed out: see its log)");
	} else if (!state || strcmp(state, "fenced")) {
		if (clock_mono_ms() - l->req_ms > LEASE_HANDOFF_TIMEOUT_MS)
			request_fail(l, ho, "the primary did not answer the request in time");
	} else {
		/* Step 4: the primary accepts no commits; reach its final
		 * positions, keeping this node's session alive meanwhile. */
		json_t *pos = json_object_get(v, "pos");
		int64_t until = clock_mono_ms() + LEASE_HANDOFF_TIMEOUT_MS;
		bool ok = false;
		while (!(ok = reached(l, pos)) && clock_mono_ms() < until && !atomic_load(&l->stopping)) {
			uint64_t seq = node_change_seq(&l->st->node);
			if (reached(l, pos))
				continue;
			keepalive(l);
			node_wait_change(&l->st->node, seq, 50);
		}
		char *val = ok && renew_if_near(l) == 0 ? holder_value(l) : NULL;
		int64_t primary_rev = strtoll(json_string_value(json_object_get(v, "primary_rev")) ?: "0", NULL, 10);
		bool moved = false;
		int64_t rev = 0;
		if (val) {
			/* K still the fenced primary's, the request unchanged:
			 * nobody else can hold K in between. */
			struct etcd_cmp c[2] = { { l->key, primary_rev }, { l->handoff_key, ho->mod_revision } };
			struct etcd_op op[2] = { { l->key, val, l->sess_id }, { l->handoff_key, NULL, 0 } };
			int rc = etcd_txn(l->etcd, c, 2, op, 2, &moved, &rev);
			if (rc != 0)
				log_etcd(l, "cannot take the lease over", rc);
			free(val);
		}
		if (moved) {
			l->req_rev = 0;
			int64_t took_ms = clock_mono_ms() - l->req_ms;
			become_primary(l, rev);
			LOG_INFO("lease", "msg=\"handoff done: took the lease over from the primary\" took_ms=%" PRId64,
				 took_ms);
			promote_finish(l, 0, "this node is the primary");
		} else if (!ok) {
			request_fail(l, ho, "this node did not reach the primary's final positions in time");
		}
		/* Else: the request or K changed; the next look says how. */
	}
	json_decref(v);
}

/* ---- Thread -------------------------------------------------------------- */

/* One look at K's prefix: follow, elect, or notice what changed. Returns
 * the revision to watch from (0 on error). */
static int64_t look(struct lease *l)
{
	struct etcd_kv *kvs = NULL;
	size_t n = 0;
	int64_t rev = 0;
	int rc = etcd_get(l->etcd, l->key, true, &kvs, &n, &rev);
	if (rc != 0) {
		log_etcd(l, "cannot read the lease key", rc);
		return 0;
	}
	const struct etcd_kv *holder = find_kv(kvs, n, l->key);
	const struct etcd_kv *ho = find_kv(kvs, n, l->handoff_key);
	json_error_t jerr;
	json_t *v = holder ? json_loads(holder->value, 0, &jerr) : NULL;
	char nid[17];
	snprintf(nid, sizeof(nid), "%016" PRIx64, l->st->node.node_id);
	const char *hid = json_string_value(json_object_get(v, "node_id"));
	if (holder && hid && !strcmp(hid, nid)) {
		if (holder->lease == l->sess_id && l->state != ST_PRIMARY) {
			/* Our own key on our live session (etcd came back
			 * before it expired): nobody else could take it. */
			become_primary(l, holder->mod_revision);
		} else if (holder->lease == l->sess_id) {
			primary_handoff(l, holder, ho, kvs, n);
		} else {
			/* Left by this node's previous run: no process
			 * holds it any more. */
			bool deleted = false;
			if (etcd_delete_if(l->etcd, l->key, holder->mod_revision, &deleted) == 0 && deleted)
				LOG_INFO("lease", "msg=\"removed the lease key left by this node's previous run\" key=%s",
					 l->key);
		}
	} else if (holder) {
		char mine[CLUSTER_ID_LEN + 1];
		cluster_get(l->cluster, mine);
		const char *cid = json_string_value(json_object_get(v, "cluster_id"));
		l->absent_since_ms = 0;
		if (l->state == ST_PRIMARY && l->ho_rev > 0) {
			/* Fenced for a handoff: the candidate took K over. */
			handed_off(l, json_string_value(json_object_get(v, "hostname")));
		} else if (l->state == ST_PRIMARY) {
			/* Impossible while I1 holds; say so loudly. */
			demote(l, "another node holds the lease key");
		}
		if (!cid || (mine[0] && strcmp(cid, mine))) {
			char msg[256];
			snprintf(msg, sizeof(msg), "the primary is in cluster %s, this node in %s; not following it",
				 cid ? cid : "(none)", mine);
			if (strcmp(msg, l->last_log)) {
				snprintf(l->last_log, sizeof(l->last_log), "%s", msg);
				LOG_ERROR("lease", "msg=\"%s\"", msg);
			}
		} else {
			follow(l, holder, v);
			if (l->state == ST_FOLLOWING)
				candidate_handoff(l, ho);
		}
	} else if (l->state != ST_PRIMARY) {
		if (l->req_rev != 0)
			request_fail(l, ho, "the primary's lease is gone (an election follows)");
		if (l->absent_since_ms == 0) {
			l->absent_since_ms = clock_mono_ms();
			if (l->state == ST_FOLLOWING) {
				LOG_WARN("lease", "msg=\"the primary's lease is gone; detaching from it\" primary=%s",
					 l->holder);
				replica_follow(l->rep, NULL, NULL);
				node_set_role(&l->st->node, false, NULL);
				l->following_rev = 0;
			}
			set_state(l, ST_DETACHED, NULL, NULL);
			/* Final positions: nothing streams in any more. */
			if ((rc = publish_entry(l, false, "")) != 0)
				log_etcd(l, "cannot publish this node's entry", rc);
		}
		if (l->candidate)
			try_acquire(l, kvs, n);
	}
	json_decref(v);
	etcd_kvs_free(kvs, n);
	return rev;
}

static void *lease_main(void *arg)
{
	struct lease *l = arg;
	int64_t watch_rev = 0;
	while (!atomic_load(&l->stopping)) {
		int64_t now = clock_mono_ms();
		if (l->state == ST_PRIMARY && now >= l->sess_sent_ms + l->sess_ttl_ms - l->margin_ms)
			demote(l, "no keep-alive was answered before the lease deadline");
		if (ensure_session(l) != 0) {
			if (l->state == ST_PRIMARY && clock_mono_ms() >= l->sess_sent_ms + l->sess_ttl_ms - l->margin_ms)
				demote(l, "etcd cannot be reached");
			nap(l, l->interval_ms / 4);
			continue;
		}
		keepalive(l);
		if (l->sess_id == 0)
			continue;
		atomic_store(&l->wake, false);
		int64_t rev = look(l);
		if (l->req_rev == 0 && l->state != ST_FOLLOWING && promote_take(l))
			promote_finish(l, l->state == ST_PRIMARY ? 0 : ERR_LEASE_HANDOFF,
				       l->state == ST_PRIMARY ? "this node is the primary"
							      : "this node follows no primary (an election is on)");
		if (rev == 0) {
			nap(l, l->interval_ms / 4);
			continue;
		}
		watch_rev = rev + 1;
		/* A handoff step this thread wrote after its look is newer than
		 * the look: a watch from before it would start "unsynced" in
		 * etcd, which delivers such a watch's events only at its 100 ms
		 * sync tick — the bulk of a handoff's pause. Events between the
		 * look and that step are seen by the next look (while a handoff
		 * is on, the wait below is at most 200 ms). */
		if (l->own_rev > rev && (l->req_rev != 0 || l->ho_rev != 0))
			watch_rev = l->own_rev + 1;
		l->own_rev = 0;
		now = clock_mono_ms();
		int64_t wait = l->next_ka_ms - now;
		if (l->state == ST_PRIMARY && l->sess_sent_ms + l->sess_ttl_ms - l->margin_ms - now < wait)
			wait = l->sess_sent_ms + l->sess_ttl_ms - l->margin_ms - now;
		/* While electing or handing off, look again soon: the settle
		 * bound, the catch-up bound and the handoff timeout are times,
		 * not events; so is the first sync lease.promote waits for. */
		bool soon = l->state == ST_DETACHED || l->ho_rev != 0 || l->req_rev != 0 ||
			    (l->auto_promote && !l->auto_promote_done && l->state == ST_FOLLOWING);
		if (soon && wait > 200)
			wait = 200;
		if (wait < 10)
			wait = 10;
		bool event = false;
		int rc = etcd_watch(l->etcd, l->key, true, watch_rev, (long)wait, &event);
		if (rc != 0) {
			log_etcd(l, "watch failed", rc);
			nap(l, 50);
		}
	}
	return NULL;
}

/* ---- Start, stop, cluster ID -------------------------------------------- */

/* I2 at start: the cluster ID in etcd and ours must agree. */
static int check_cluster(struct lease *l)
{
	int64_t start = clock_mono_ms();
	for (;;) {
		struct etcd_kv *kvs = NULL;
		size_t n = 0;
		int64_t rev;
		char mine[CLUSTER_ID_LEN + 1];
		cluster_get(l->cluster, mine);
		int rc = etcd_get(l->etcd, l->cluster_key, false, &kvs, &n, &rev);
		if (rc == 0 && n == 1) {
			char theirs[CLUSTER_ID_LEN + 1];
			snprintf(theirs, sizeof(theirs), "%s", kvs[0].value);
			etcd_kvs_free(kvs, n);
			if (mine[0] && strcmp(mine, theirs) != 0) {
				LOG_ERROR("lease", "msg=\"etcd holds another cluster's ID under this key: refusing to join "
						   "(use another lease.etcd.key, or the data.dir of this cluster)\" key=%s "
						   "etcd_cluster=%s this_cluster=%s",
					  l->cluster_key, theirs, mine);
				return ERR_LEASE_CLUSTER;
			}
			if (!mine[0] && (rc = cluster_adopt(l->cluster, theirs)) != 0)
				return rc == ERR_INVAL ? ERR_ETCD_REPLY : rc;
			return 0;
		}
		if (rc == 0) {
			etcd_kvs_free(kvs, n);
			if (!mine[0]) {
				char id[CLUSTER_ID_LEN + 1];
				if ((rc = cluster_id_generate(id)) != 0 || (rc = cluster_adopt(l->cluster, id)) != 0)
					return rc;
				cluster_get(l->cluster, mine);
			}
			bool won;
			if ((rc = etcd_put_if_absent(l->etcd, l->cluster_key, mine, 0, &won, &rev)) == 0)
				continue; /* read it back, whoever won */
		}
		if (rc == ERR_ETCD_AUTH)
			return rc;
		if (clock_mono_ms() - start > LEASE_START_RETRY_MS) {
			LOG_ERROR("lease", "msg=\"cannot reach etcd\" endpoint=%s err=\"%s\"", etcd_endpoint(l->etcd),
				  err_str(rc));
			return rc;
		}
		log_etcd(l, "cannot check the cluster ID in etcd; retrying", rc);
		nap(l, 500);
	}
}

static void lease_free(struct lease *l)
{
	if (!l)
		return;
	etcd_free(l->etcd);
	free(l->key);
	free(l->nodes_prefix);
	free(l->my_entry_key);
	free(l->cluster_key);
	free(l->handoff_key);
	free(l->hostname);
	free(l->advertise_url);
	free(l->data_dir);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cond);
	free(l);
}

int lease_start(struct store *st, struct replica *rep, struct cluster *cluster, const struct config *cfg,
		const char *hostname, struct lease **out)
{
	*out = NULL;
	struct lease *l = calloc(1, sizeof(*l));
	if (!l)
		return ERR_NOMEM;
	l->st = st;
	l->rep = rep;
	l->cluster = cluster;
	l->candidate = cfg->lease.candidate;
	l->auto_promote = cfg->lease.promote;
	l->ttl_ms = cfg->lease.etcd.ttl_ms;
	/* The margin covers the clocks' rate difference and the time a
	 * commit takes between its check and its write (docs/lease.md). */
	l->margin_ms = l->ttl_ms / 4 > 250 ? l->ttl_ms / 4 : 250;
	l->interval_ms = l->ttl_ms / 3;
	l->catch_up_timeout_ms = cfg->lease.etcd.catch_up_timeout_ms;
	atomic_init(&l->stopping, false);
	atomic_init(&l->wake, false);
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cond, NULL);
	const char *k = cfg->lease.etcd.key;
	int rc = 0;
	if (asprintf(&l->nodes_prefix, "%s/nodes/", k) < 0 || asprintf(&l->my_entry_key, "%s/nodes/%s", k, hostname) < 0 ||
	    asprintf(&l->cluster_key, "%s/cluster", k) < 0 || asprintf(&l->handoff_key, "%s/handoff", k) < 0 || !(l->key = strdup(k)) || !(l->hostname = strdup(hostname)) ||
	    !(l->advertise_url = strdup(cfg->lease.advertise_url)) || !(l->data_dir = strdup(cfg->data.dir)))
		rc = ERR_NOMEM;
	struct etcd_opts eo = {
		.endpoints = (const char *const *)cfg->lease.etcd.endpoints.items,
		.n_endpoints = cfg->lease.etcd.endpoints.n,
		.username = cfg->lease.etcd.username,
		.password = cfg->lease.etcd.password,
		.ca_file = cfg->lease.etcd.ca_file,
		.cert_file = cfg->lease.etcd.cert_file,
		.key_file = cfg->lease.etcd.key_file,
		.timeout_ms = l->interval_ms < 2000 ? l->interval_ms : 2000,
		.stop = &l->stopping,
		.wake = &l->wake,
	};
	if (rc == 0)
		rc = etcd_new(&eo, &l->etcd);
	if (rc == 0)
		rc = check_cluster(l);
	/* Until the lease says otherwise this node is a replica of nobody. */
	node_set_write_deadline(&st->node, 0);
	node_set_role(&st->node, false, NULL);
	if (rc == 0 && (rc = -pthread_create(&l->thread, NULL, lease_main, l)) == 0)
		l->started = true;
	if (rc != 0) {
		lease_free(l);
		return rc;
	}
	LOG_INFO("lease", "msg=\"etcd lease started\" key=%s ttl_ms=%" PRId64 " margin_ms=%" PRId64
			  " candidate=%s endpoints=%zu",
		 k, l->ttl_ms, l->margin_ms, l->candidate ? "true" : "false", cfg->lease.etcd.endpoints.n);
	*out = l;
	return 0;
}

bool lease_wait_ready(struct lease *l, struct replica *rep, int timeout_ms)
{
	if (get_state(l) == ST_PRIMARY)
		return true;
	return replica_wait_synced(rep, timeout_ms) || get_state(l) == ST_PRIMARY;
}

int lease_promote(struct lease *l, int timeout_ms, char *msg, size_t msg_len)
{
	pthread_mutex_lock(&l->mu);
	if (l->state == ST_PRIMARY) {
		pthread_mutex_unlock(&l->mu);
		snprintf(msg, msg_len, "this node is already the primary");
		return 0;
	}
	uint64_t gen = ++l->promote_gen;
	pthread_mutex_unlock(&l->mu);
	atomic_store(&l->wake, true);
	struct timespec until = clock_deadline(timeout_ms);
	pthread_mutex_lock(&l->mu);
	while (l->promote_done < gen && !atomic_load(&l->stopping))
		if (pthread_cond_timedwait(&l->cond, &l->mu, &until) != 0)
			break;
	int rc = ERR_LEASE_HANDOFF;
	if (l->promote_done >= gen) {
		rc = l->promote_rc;
		snprintf(msg, msg_len, "%s", l->promote_msg);
	} else {
		snprintf(msg, msg_len, "no outcome within %d ms (see the logs)", timeout_ms);
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int lease_release(struct lease *l)
{
	if (!l || get_state(l) != ST_PRIMARY)
		return 0;
	/* Fence first: from here on no commit is accepted. */
	node_set_write_deadline(&l->st->node, 0);
	node_set_role(&l->st->node, false, NULL);
	set_state(l, ST_DETACHED, NULL, NULL);
	int rc = etcd_revoke(l->etcd, l->sess_id);
	l->sess_id = 0;
	if (rc == 0)
		LOG_INFO("lease", "msg=\"released the lease\" key=%s", l->key);
	else
		LOG_WARN("lease", "msg=\"cannot release the lease; it expires after its TTL\" err=\"%s\"", err_str(rc));
	return rc;
}

void lease_stop(struct lease *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	atomic_store(&l->stopping, true);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	if (l->started)
		pthread_join(l->thread, NULL);
	/* The thread is gone: its fields are ours. Release with a request
	 * that is not cut short by the stop flag. */
	atomic_store(&l->stopping, false);
	if (get_state(l) == ST_PRIMARY)
		lease_release(l);
	else if (l->sess_id != 0)
		etcd_revoke(l->etcd, l->sess_id);
	lease_free(l);
}

/* ---- Observability ------------------------------------------------------- */

void lease_info_json(struct lease *l, json_t *info)
{
	if (!l)
		return;
	int64_t now = clock_mono_ms();
	pthread_mutex_lock(&l->mu);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "type", "etcd", "state", state_names[l->state], "holder",
			      l->holder, "holderURL", l->holder_url, "ttlMs", (json_int_t)l->ttl_ms);
	if (o && l->state == ST_PRIMARY) {
		json_object_set_new(o, "deadlineInMs", json_integer(l->deadline_ms - now));
		json_object_set_new(o, "expiresInMs", json_integer(l->expiry_ms - now));
	}
	if (o) {
		json_object_set_new(o, "acquisitions", json_integer((json_int_t)l->n_acquired));
		json_object_set_new(o, "losses", json_integer((json_int_t)l->n_lost));
		json_object_set_new(o, "handoffs", json_integer((json_int_t)l->n_handoffs));
		json_object_set_new(o, "lastHandoffFencedMs", json_integer((json_int_t)l->last_pause_ms));
	}
	pthread_mutex_unlock(&l->mu);
	if (o)
		json_object_set_new(info, "lease", o);
}

void lease_metrics(struct lease *l, FILE *f)
{
	if (!l)
		return;
	int64_t now = clock_mono_ms();
	pthread_mutex_lock(&l->mu);
	bool holder = l->state == ST_PRIMARY;
	double left = holder ? (double)(l->deadline_ms - now) / 1000.0 : 0;
	uint64_t acq = l->n_acquired, lost = l->n_lost, kaf = l->n_ka_fail, saved = l->n_lost_saved;
	pthread_mutex_unlock(&l->mu);
	fprintf(f, "# HELP litefs_lease_holder Whether this node holds the etcd lease.\n# TYPE litefs_lease_holder gauge\n"
		   "litefs_lease_holder %d\n",
		holder ? 1 : 0);
	fprintf(f, "# HELP litefs_lease_deadline_seconds Time left before this primary stops accepting commits.\n"
		   "# TYPE litefs_lease_deadline_seconds gauge\nlitefs_lease_deadline_seconds %.3f\n",
		left);
	fprintf(f, "# HELP litefs_lease_acquisitions_total Times this node took the lease.\n"
		   "# TYPE litefs_lease_acquisitions_total counter\nlitefs_lease_acquisitions_total %" PRIu64 "\n",
		acq);
	fprintf(f, "# HELP litefs_lease_losses_total Times this node lost the lease (fenced).\n"
		   "# TYPE litefs_lease_losses_total counter\nlitefs_lease_losses_total %" PRIu64 "\n",
		lost);
	fprintf(f, "# HELP litefs_lease_keepalive_failures_total Keep-alives etcd did not answer.\n"
		   "# TYPE litefs_lease_keepalive_failures_total counter\nlitefs_lease_keepalive_failures_total %" PRIu64
		   "\n",
		kaf);
	fprintf(f, "# HELP litefs_lease_fenced_writes_total Writes refused because the lease deadline passed.\n"
		   "# TYPE litefs_lease_fenced_writes_total counter\nlitefs_lease_fenced_writes_total %" PRIu64 "\n",
		(uint64_t)atomic_load(&l->st->node.fenced_writes));
	fprintf(f, "# HELP litefs_lease_lost_events_total Databases whose unreplicated transactions were kept under lost/.\n"
		   "# TYPE litefs_lease_lost_events_total counter\nlitefs_lease_lost_events_total %" PRIu64 "\n",
		saved);
}
