/*
 * writelock.c — the write lock: `litefs run --with-write-lock DB -- CMD`
 * lets CMD on a replica write DB (a cron job, a one-off migration) while
 * the primary holds its own writers back.
 *
 * DESIGN
 *
 *   litefs run ──► replica node ──────────────► primary node
 *   (CMD's         POST /writelock/acquire       grant: SQLite's writer lock
 *    parent)                                     on the mount (apply.h), one
 *                                                lock per database, a token,
 *                                                its position P
 *                  waits until its own db is at P
 *   CMD writes DB  FUSE write: the commit is     POST /writelock/tx: the LTX
 *                  captured as usual (db.c);     must follow the primary's
 *                  before the client's commit    position, applied like a
 *                  operation, submit() sends     replicated one (apply.c,
 *                  the LTX and waits             checksums verified), stored
 *                                                byte for byte in its chain
 *                  then the client's commit      and streamed to every node
 *                  happens; the stream brings    (the holder skips the record
 *                  the same record back          it already has: replica.c)
 *   renew every WRITELOCK_RENEW_MS ──────────►   expiry moves on
 *   CMD exits: release ──────────────────────►   writer lock released
 *
 * The primary's local writers meet SQLite's own writer lock (WAL mode:
 * WAL_WRITE_LOCK in -shm; rollback modes: RESERVED on the db file), held
 * on a descriptor of the mounted file: they get SQLITE_BUSY, their busy
 * handler retries, and they proceed once the lock goes (or report
 * "database is locked" when their busy timeout runs out). Readers are
 * not affected. Taking the lock waits for a local transaction in progress
 * to end, so P is final while the lock is held.
 *
 * Invariants:
 *   W1. No transaction is acknowledged to CMD that the primary has not
 *       stored: db.c calls submit() after writing the LTX to this node's
 *       segment and before the client's operation that commits; an error
 *       cuts the record back and the client sees an I/O error.
 *   W2. None lands twice: the primary applies an LTX only when it
 *       follows its position (TXID and checksum); a resent one that it
 *       already holds (same TXID, same post-apply checksum) is answered
 *       "stored" without a second apply; the holder's stream skips a
 *       record equal to its own position.
 *   W3. A lock lives WRITELOCK_TTL_MS after its last renewal or
 *       transaction; the expiry thread then releases the writer lock, so
 *       the cluster takes writes again within that bound when the holder
 *       or CMD dies. The replica's own view of the lock expires no later
 *       than the primary's (it counts from when it sent the renewal).
 *   W4. Fencing: a transaction lands only while the primary may commit
 *       (node_may_write(), checked under db.mu by apply_ltx_held()), and
 *       the expiry thread drops every lock of a node that may not commit
 *       (lost lease, demoted): a lock on an old primary lets nothing
 *       through.
 *   W5. If submit() fails after the primary stored the transaction (its
 *       answer was lost), the client sees an error for a transaction that
 *       landed; the stream then brings it to this node like any other.
 *       A resend within the deadline turns most of these into successes
 *       (W2), never into a second copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/httpc.h"
#include "base/log.h"
#include "ltx/ltxlog.h"
#include "node/apply.h"
#include "node/db.h"
#include "node/node.h"
#include "node/ownmount.h"
#include "node/replica.h"
#include "node/store.h"
#include "node/writelock.h"
#include "proto/cluster.h"

#define WL_MAX 64                 /* locks granted or held at once */
#define WL_GRANT_WAIT_MS 10000    /* a local writer's transaction must end within this */
#define WL_SUBMIT_DEADLINE_MS 10000
#define WL_CATCHUP_DEFAULT_MS 30000
#define WL_NAME_MAX 256
#define WL_CLEAN_GRACE_MS 30000   /* an expired lock's writer may still roll back */

/* A lock this node granted (primary). */
struct wl_grant {
	bool used;
	char name[WL_NAME_MAX];
	uint64_t token;
	char holder[64];
	int64_t expires_ms;       /* clock_mono_ms() */
	int fd;                   /* apply_writer_lock()'s descriptor */
	bool wal;
};

/* A lock this node holds (replica). */
struct wl_held {
	bool used;
	char name[WL_NAME_MAX];
	uint64_t token;
	int64_t expires_ms;       /* clock_mono_ms(); never after the primary's */
	bool cleaning;            /* expired: writable until no transaction is left */
	int64_t next_clean_ms;    /* when to try rolling back again */
};

struct writelock {
	struct store *st;          /* borrowed */
	struct cluster *cluster;   /* borrowed */
	char *secret;              /* owned; NULL: none */
	_Atomic(struct replica *) rep;

	/* Guards grants; held across a holder's apply on the primary (which
	 * takes db.mu under it). */
	pthread_mutex_t mu;
	pthread_cond_t cond;       /* with mu: wakes the expiry thread */
	struct wl_grant grants[WL_MAX];
	/* Guards held: a leaf lock, taken under db.mu by the mount's hooks. */
	pthread_mutex_t held_mu;
	struct wl_held held[WL_MAX];
	atomic_bool stopping;
	pthread_t thread;
	bool started;

	pthread_mutex_t submit_mu; /* one submission at a time; guards curl */
	CURL *curl;

	atomic_ulong n_grants, n_tx, n_tx_dup, n_tx_refused, n_expired;
};

/* Per-request state of POST /writelock/tx (the LTX body is spooled). */
struct wl_req {
	int kind;                  /* WRITELOCK_REQ */
	int fd;                    /* spool, -1: none */
	uint64_t len;
	bool too_large;
};

/* ---- Tables (wl->mu held) ----------------------------------------------- */

static struct wl_grant *grant_find(struct writelock *wl, const char *name)
{
	for (size_t i = 0; i < WL_MAX; i++)
		if (wl->grants[i].used && !strcmp(wl->grants[i].name, name))
			return &wl->grants[i];
	return NULL;
}

static struct wl_held *held_find(struct writelock *wl, const char *name)
{
	for (size_t i = 0; i < WL_MAX; i++)
		if (wl->held[i].used && !strcmp(wl->held[i].name, name))
			return &wl->held[i];
	return NULL;
}

static void grant_drop(struct wl_grant *g, const char *why)
{
	LOG_INFO("writelock", "msg=\"write lock released: %s\" db=%s holder=%s", why, g->name, g->holder);
	apply_writer_unlock(g->fd);
	memset(g, 0, sizeof(*g));
	g->fd = -1;
}

/* ---- Node hooks (replica side) ------------------------------------------ */

static bool hook_held(void *ctx, const char *db_name)
{
	struct writelock *wl = ctx;
	pthread_mutex_lock(&wl->held_mu);
	struct wl_held *h = held_find(wl, db_name);
	bool ok = h && !wl->stopping && (clock_mono_ms() < h->expires_ms || h->cleaning);
	pthread_mutex_unlock(&wl->held_mu);
	return ok;
}

static int add_peer_headers(struct writelock *wl, struct curl_slist **hdrs)
{
	char id[CLUSTER_ID_LEN + 1] = "";
	if (wl->cluster)
		cluster_get(wl->cluster, id);
	int rc = 0;
	if (id[0])
		rc = httpc_add_header(hdrs, "Litefs-Cluster-Id: %s", id);
	if (rc == 0 && wl->secret)
		rc = httpc_add_header(hdrs, "Authorization: Bearer %s", wl->secret);
	return rc;
}

/* POSTs to the primary's path with query; a body from fd [off, off+len)
 * when fd >= 0. The reply's status, body and error are in *q (caller
 * frees with httpc_req_free()). Returns 0 once a reply arrived, -EAGAIN
 * when no primary is known, or a transport error (-EIO). */
static int primary_post(struct writelock *wl, CURL *c, const char *path, const char *const *query, int fd,
			off_t off, uint64_t len, long timeout_ms, struct httpc_req *q)
{
	char base[1024];
	const char *secret = NULL;
	httpc_req_init(q, c);
	if (!replica_primary_url(atomic_load(&wl->rep), base, sizeof(base), &secret))
		return -EAGAIN;
	char *url = httpc_url(c, base, path, query);
	struct curl_slist *hdrs = NULL;
	if (!url || add_peer_headers(wl, &hdrs) != 0) {
		free(url);
		return ERR_NOMEM;
	}
	httpc_req_init_post(q, c, url);
	q->headers = hdrs;
	q->timeout_ms = timeout_ms;
	q->connect_timeout_ms = timeout_ms < 2000 ? timeout_ms : 2000;
	q->mem_max = 1 << 16;
	if (fd >= 0) {
		q->up_buf = NULL;
		q->up_fd = fd;
		q->up_off = (uint64_t)off;
		q->up_len = len;
	}
	CURLcode cc = httpc_perform(q);
	curl_slist_free_all(hdrs);
	free(url);
	q->url = NULL;
	return cc == CURLE_OK ? 0 : -EIO;
}

static int hook_submit(void *ctx, const char *db_name, int fd, off_t off, uint32_t len)
{
	struct writelock *wl = ctx;
	char token[17];
	pthread_mutex_lock(&wl->held_mu);
	struct wl_held *h = held_find(wl, db_name);
	bool ok = h && !wl->stopping && clock_mono_ms() < h->expires_ms;
	int64_t deadline = clock_mono_ms() + WL_SUBMIT_DEADLINE_MS;
	if (ok) {
		snprintf(token, sizeof(token), "%016" PRIx64, h->token);
		/* No point trying once the primary has let the lock go. */
		if (h->expires_ms < deadline)
			deadline = h->expires_ms;
	}
	pthread_mutex_unlock(&wl->held_mu);
	if (!ok)
		return -EROFS;

	const char *query[] = { "name", db_name, "token", token, NULL };
	int rc = -EIO;
	pthread_mutex_lock(&wl->submit_mu);
	if (!wl->curl)
		wl->curl = curl_easy_init();
	for (int attempt = 0; wl->curl; attempt++) {
		int64_t sent = clock_mono_ms();
		long left = (long)(deadline - sent);
		if (left <= 0)
			break;
		struct httpc_req q;
		int prc = primary_post(wl, wl->curl, "/writelock/tx", query, fd, off, len, left, &q);
		if (prc == 0 && q.status == HTTP_OK) {
			pthread_mutex_lock(&wl->held_mu);
			if ((h = held_find(wl, db_name)) != NULL && sent + WRITELOCK_TTL_MS > h->expires_ms)
				h->expires_ms = sent + WRITELOCK_TTL_MS;
			pthread_mutex_unlock(&wl->held_mu);
			rc = 0;
			httpc_req_free(&q);
			break;
		}
		if (prc == 0) {
			/* The primary answered no: final (a refusal is never
			 * turned into a success by sending it again). */
			struct httpc_error e;
			httpc_error_parse(&q, &e);
			httpc_text_for_log(e.text);
			LOG_WARN("writelock", "msg=\"the primary refused a transaction\" db=%s status=%ld err=\"%s\"",
				 db_name, q.status, e.text);
			httpc_req_free(&q);
			rc = -EIO;
			break;
		}
		if (attempt == 0 || attempt % 10 == 0)
			LOG_WARN("writelock", "msg=\"cannot reach the primary to commit; retrying\" db=%s err=\"%s\"",
				 db_name, prc == -EAGAIN ? "no primary known" : httpc_transport_error(&q));
		httpc_req_free(&q);
		usleep(200000);
	}
	pthread_mutex_unlock(&wl->submit_mu);
	if (rc == 0)
		atomic_fetch_add(&wl->n_tx, 1);
	else
		atomic_fetch_add(&wl->n_tx_refused, 1);
	return rc;
}

/* ---- Expiry ----------------------------------------------------------- */

/* True when the journal at jpath is not one SQLite would roll back: its
 * magic (written when its header is synced) is still zero. */
static bool hot_journal_gone(const char *jpath)
{
	uint8_t magic[8];
	int fd = open(jpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	int n = fdio_pread_full(fd, magic, sizeof(magic), 0);
	close(fd);
	static const uint8_t zero[8];
	return n != (int)sizeof(magic) || memcmp(magic, zero, sizeof(zero)) == 0;
}

/* A lock that expires on this replica while a rollback-journal transaction
 * of CMD's spilled pages into the database file (CMD and `litefs run`
 * killed together) leaves a hot journal, which no client could roll back
 * once writes are refused, and under which no replicated transaction
 * applies. This node rolls it back through its own mount, as the first
 * SQLite client would, while the database is still writable. Rollback
 * modes only: nothing maps -shm, so a client of the mount in this process
 * cannot deadlock with the FUSE workers (http.c THREADING). It runs on the
 * mount's own threads, so that a kill -9 meanwhile cannot leave the
 * process unkillable (ownmount.c). */
struct rollback_job {
	const char *path, *name; /* the database in the mount, its name */
};

/* Runs on the mount's own threads (ownmount.h): 1 when no hot journal
 * is left, else 0. */
static int roll_back_in_mount(void *arg)
{
	const struct rollback_job *j = arg;
	char jpath[4200];
	struct stat st;
	snprintf(jpath, sizeof(jpath), "%s-journal", j->path);
	if (stat(jpath, &st) != 0 || st.st_size == 0)
		return 1;
	sqlite3 *conn = NULL;
	int rc = sqlite3_open_v2(j->path, &conn, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(conn, 2000);
		rc = sqlite3_exec(conn, "PRAGMA schema_version", NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK)
		LOG_WARN("writelock", "msg=\"cannot roll back an unfinished transaction after the lock expired\" db=%s "
				      "err=\"%s\"", j->name, conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
	sqlite3_close(conn);
	/* A journal SQLite did not take as hot (a writer still holds its
	 * lock, or the header was never synced) may stay. */
	bool gone = stat(jpath, &st) != 0 || st.st_size == 0;
	if (gone)
		LOG_INFO("writelock", "msg=\"rolled back what the lock holder left unfinished\" db=%s", j->name);
	return gone || hot_journal_gone(jpath);
}

static bool roll_back_hot_journal(struct writelock *wl, const char *name)
{
	const char *mnt = wl->st->node.hooks.mountpoint;
	struct db *db = store_find(wl->st, name, false);
	struct db_stats s;
	char path[4096];
	if (!mnt || !db || !db_stats(db, 1000, &s) || !s.exists || s.wal_mode)
		return true;
	snprintf(path, sizeof(path), "%s/%s", mnt, name);
	struct rollback_job j = { .path = path, .name = name };
	return ownmount_call(roll_back_in_mount, &j) != 0;
}

static void *expiry_main(void *arg)
{
	struct writelock *wl = arg;
	struct node *n = &wl->st->node;
	pthread_mutex_lock(&wl->mu);
	while (!wl->stopping) {
		int64_t now = clock_mono_ms();
		bool may = node_may_write(n);
		for (size_t i = 0; i < WL_MAX; i++) {
			struct wl_grant *g = &wl->grants[i];
			if (!g->used)
				continue;
			if (!may) {
				grant_drop(g, "this node may no longer commit (not the primary, or its lease passed)");
				atomic_fetch_add(&wl->n_expired, 1);
			} else if (now >= g->expires_ms) {
				grant_drop(g, "expired (no renewal)");
				atomic_fetch_add(&wl->n_expired, 1);
			}
		}
		pthread_mutex_unlock(&wl->mu);
		pthread_mutex_lock(&wl->held_mu);
		for (size_t i = 0; i < WL_MAX; i++) {
			struct wl_held *h = &wl->held[i];
			if (!h->used || now < h->expires_ms || now < h->next_clean_ms)
				continue;
			/* Expired: no commit is sent any more (hook_submit), but
			 * the database stays writable until a rollback-journal
			 * transaction left behind is rolled back (by its writer,
			 * whose commit failed, or here), for at most
			 * WL_CLEAN_GRACE_MS. */
			if (!h->cleaning)
				LOG_WARN("writelock", "msg=\"write lock expired on this replica: no more commits; writes "
						      "are refused again once no transaction is left\" db=%s",
					 h->name);
			char name[WL_NAME_MAX];
			snprintf(name, sizeof(name), "%s", h->name);
			h->cleaning = true;
			pthread_mutex_unlock(&wl->held_mu);
			bool clean = roll_back_hot_journal(wl, name);
			pthread_mutex_lock(&wl->held_mu);
			if (!h->used || strcmp(h->name, name) != 0 || !h->cleaning)
				continue;
			if (clean || now >= h->expires_ms + WL_CLEAN_GRACE_MS) {
				if (!clean)
					LOG_ERROR("writelock", "msg=\"a transaction left by the lock holder could not be rolled "
							       "back; the replica's database waits for a restart of this node "
							       "(recovery rolls it back)\" db=%s",
						  name);
				memset(h, 0, sizeof(*h));
			} else {
				h->next_clean_ms = now + 500;
			}
		}
		pthread_mutex_unlock(&wl->held_mu);
		pthread_mutex_lock(&wl->mu);
		if (wl->stopping)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&wl->cond, &wl->mu, &ts);
	}
	pthread_mutex_unlock(&wl->mu);
	return NULL;
}

/* ---- Start and stop ---------------------------------------------------- */

int writelock_start(struct store *st, struct cluster *cluster, const char *secret, struct writelock **out)
{
	struct writelock *wl = calloc(1, sizeof(*wl));
	*out = NULL;
	if (!wl)
		return ERR_NOMEM;
	wl->st = st;
	wl->cluster = cluster;
	if (secret && secret[0] && !(wl->secret = strdup(secret))) {
		free(wl);
		return ERR_NOMEM;
	}
	for (size_t i = 0; i < WL_MAX; i++)
		wl->grants[i].fd = -1;
	pthread_mutex_init(&wl->mu, NULL);
	pthread_mutex_init(&wl->held_mu, NULL);
	pthread_cond_init(&wl->cond, NULL);
	pthread_mutex_init(&wl->submit_mu, NULL);
	if (pthread_create(&wl->thread, NULL, expiry_main, wl) != 0) {
		writelock_free(wl);
		return ERR_NOMEM;
	}
	wl->started = true;
	st->node.writelock = (struct node_writelock_hooks){ wl, hook_held, hook_submit };
	*out = wl;
	return 0;
}

void writelock_set_replica(struct writelock *wl, struct replica *rep)
{
	if (wl)
		atomic_store(&wl->rep, rep);
}

void writelock_stop(struct writelock *wl)
{
	if (!wl)
		return;
	pthread_mutex_lock(&wl->mu);
	atomic_store(&wl->stopping, true);
	for (size_t i = 0; i < WL_MAX; i++)
		if (wl->grants[i].used)
			grant_drop(&wl->grants[i], "the node stops");
	pthread_cond_broadcast(&wl->cond);
	pthread_mutex_unlock(&wl->mu);
	pthread_mutex_lock(&wl->held_mu);
	memset(wl->held, 0, sizeof(wl->held));
	pthread_mutex_unlock(&wl->held_mu);
	if (wl->started) {
		pthread_join(wl->thread, NULL);
		wl->started = false;
	}
	atomic_store(&wl->rep, NULL);
}

void writelock_free(struct writelock *wl)
{
	if (!wl)
		return;
	writelock_stop(wl);
	wl->st->node.writelock = (struct node_writelock_hooks){ NULL, NULL, NULL };
	if (wl->curl)
		curl_easy_cleanup(wl->curl);
	pthread_mutex_destroy(&wl->mu);
	pthread_mutex_destroy(&wl->held_mu);
	pthread_cond_destroy(&wl->cond);
	pthread_mutex_destroy(&wl->submit_mu);
	free(wl->secret);
	free(wl);
}

/* ---- HTTP: the primary's side ------------------------------------------ */

static bool arg_copy(struct httpd_conn *conn, const char *key, char *out, size_t out_len)
{
	const char *v;
	size_t n;
	if (httpd_arg(conn, key, &v, &n) != HTTPD_YES || v == NULL || n == 0 || n >= out_len ||
	    memchr(v, '\0', n) != NULL)
		return false;
	memcpy(out, v, n);
	out[n] = '\0';
	return true;
}

static bool arg_u64(struct httpd_conn *conn, const char *key, int base, uint64_t *out)
{
	char buf[32], *end;
	if (!arg_copy(conn, key, buf, sizeof(buf)))
		return false;
	errno = 0;
	*out = strtoull(buf, &end, base);
	return errno == 0 && *end == '\0';
}

static enum httpd_result respond_pos(struct httpd_conn *conn, json_t *o, struct ltx_pos pos)
{
	char txid[17], chk[17];
	snprintf(txid, sizeof(txid), "%016" PRIx64, pos.txid);
	snprintf(chk, sizeof(chk), "%016" PRIx64, pos.checksum);
	json_object_set_new(o, "txid", json_string(txid));
	json_object_set_new(o, "checksum", json_string(chk));
	json_object_set_new(o, "ttlMs", json_integer(WRITELOCK_TTL_MS));
	return httpd_respond_json(conn, HTTP_OK, o, NULL, NULL);
}

static enum httpd_result primary_grant(struct writelock *wl, struct httpd_conn *conn, const char *name,
				       const char *holder)
{
	struct node *n = &wl->st->node;
	struct db *db = store_find(wl->st, name, false);
	struct db_stats s;
	if (!db || !db_stats(db, 1000, &s) || !s.exists || s.pos.txid == 0)
		return httpd_respond_errorf(conn, HTTP_NOT_FOUND,
					    "database %s does not exist on the primary (create it there first)", name);
	if (!node_may_write(n))
		return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "this node is not the primary (or its lease passed)");
	pthread_mutex_lock(&wl->mu);
	struct wl_grant *g = grant_find(wl, name);
	if (g && strcmp(g->holder, holder) != 0) {
		long left = (long)(g->expires_ms - clock_mono_ms());
		char other[64];
		snprintf(other, sizeof(other), "%s", g->holder);
		pthread_mutex_unlock(&wl->mu);
		return httpd_respond_errorf(conn, HTTP_CONFLICT, "the write lock on %s is held by node %s (expires in %ld ms)",
					    name, other, left);
	}
	if (g) /* the same holder asks again (its release was lost) */
		grant_drop(g, "taken again by its holder");
	pthread_mutex_unlock(&wl->mu);

	int fd;
	int rc = apply_writer_lock(db, s.wal_mode, WL_GRANT_WAIT_MS, &fd);
	if (rc)
		return httpd_respond_errorf(conn, HTTP_SERVICE_UNAVAILABLE,
					    "cannot take the writer lock on the primary's %s: %s", name,
					    rc == -EAGAIN ? "a local transaction did not end in time" : err_str(rc));
	struct ltx_pos pos = db_pos(db); /* final: no local writer can commit now */
	uint64_t token = 0;
	if (getrandom(&token, sizeof(token), 0) != (ssize_t)sizeof(token))
		token = (uint64_t)clock_wall_ms() ^ (uint64_t)getpid() << 32;
	token |= 1;
	pthread_mutex_lock(&wl->mu);
	struct wl_grant *slot = grant_find(wl, name);
	for (size_t i = 0; !slot && i < WL_MAX; i++)
		if (!wl->grants[i].used)
			slot = &wl->grants[i];
	if (!slot || slot->used || wl->stopping || !node_may_write(n)) {
		pthread_mutex_unlock(&wl->mu);
		apply_writer_unlock(fd);
		return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "the write lock cannot be granted now");
	}
	*slot = (struct wl_grant){ .used = true, .token = token, .expires_ms = clock_mono_ms() + WRITELOCK_TTL_MS,
				   .fd = fd, .wal = s.wal_mode };
	snprintf(slot->name, sizeof(slot->name), "%s", name);
	snprintf(slot->holder, sizeof(slot->holder), "%s", holder);
	pthread_mutex_unlock(&wl->mu);
	atomic_fetch_add(&wl->n_grants, 1);
	LOG_INFO("writelock", "msg=\"write lock granted: local writers wait\" db=%s holder=%s txid=%016" PRIx64, name,
		 holder, pos.txid);
	char tok[17];
	snprintf(tok, sizeof(tok), "%016" PRIx64, token);
	return respond_pos(conn, json_pack("{s:s}", "token", tok), pos);
}

/* Finds the grant of name with token, not expired; renews it. wl->mu held. */
static struct wl_grant *grant_check(struct writelock *wl, const char *name, uint64_t token)
{
	struct wl_grant *g = grant_find(wl, name);
	if (!g || g->token != token || clock_mono_ms() >= g->expires_ms)
		return NULL;
	g->expires_ms = clock_mono_ms() + WRITELOCK_TTL_MS;
	return g;
}

static enum httpd_result primary_tx(struct writelock *wl, struct httpd_conn *conn, const char *name, uint64_t token,
				    struct wl_req *r)
{
	struct db *db = store_find(wl->st, name, false);
	struct ltx_header h;
	uint64_t post = 0;
	if (!db)
		return httpd_respond_errorf(conn, HTTP_NOT_FOUND, "no database %s", name);
	if (r->fd < 0 || r->too_large || ltxlog_read_ends(r->fd, 0, r->len, &h, &post) != 0)
		return httpd_respond_error(conn, HTTP_BAD_REQUEST, "the body is not an LTX file");
	pthread_mutex_lock(&wl->mu);
	struct wl_grant *g = grant_check(wl, name, token);
	if (!g) {
		pthread_mutex_unlock(&wl->mu);
		atomic_fetch_add(&wl->n_tx_refused, 1);
		return httpd_respond_errorf(conn, HTTP_CONFLICT, "the write lock on %s is not held with this token "
								 "(it expired or was released)", name);
	}
	/* Held across the apply: the expiry thread cannot release the
	 * writer lock under it, and transactions land one at a time. */
	struct ltx_pos pos = db_pos(db);
	int rc;
	if (h.max_txid == pos.txid && post == pos.checksum && pos.txid != 0) {
		pthread_mutex_unlock(&wl->mu);
		atomic_fetch_add(&wl->n_tx_dup, 1);
		return respond_pos(conn, json_pack("{s:b}", "duplicate", 1), pos);
	}
	if (h.min_txid != pos.txid + 1 || ltx_header_is_snapshot(&h))
		rc = ERR_LTX_NOT_CONTIGUOUS;
	else
		rc = apply_ltx_held(db, r->fd, 0, (uint32_t)r->len, NULL, NULL, g->fd, g->wal);
	pos = db_pos(db);
	pthread_mutex_unlock(&wl->mu);
	/* "Stored" means durable here, as a local commit with
	 * synchronous=FULL is once it returns: the db file and the segment. */
	struct ltx_pos durable;
	if (rc == 0 && (rc = db_sync_position(db, &durable)) == 0 && durable.txid < h.max_txid)
		rc = -EIO;
	if (rc == -EROFS) {
		atomic_fetch_add(&wl->n_tx_refused, 1);
		LOG_WARN("writelock", "msg=\"refused a transaction from the lock holder: this node may no longer commit "
				      "(fenced)\" db=%s txid=%016" PRIx64, name, h.max_txid);
		return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "this node may no longer commit (lease)");
	}
	if (rc) {
		atomic_fetch_add(&wl->n_tx_refused, 1);
		LOG_WARN("writelock", "msg=\"refused a transaction from the lock holder\" db=%s txid=%016" PRIx64
				      " primary_txid=%016" PRIx64 " err=\"%s\"",
			 name, h.max_txid, pos.txid, err_str(rc));
		return httpd_respond_errorf(conn, HTTP_CONFLICT,
					    "transaction %016" PRIx64 " does not follow the primary's position %016" PRIx64
					    "/%016" PRIx64 ": %s",
					    h.min_txid, pos.txid, pos.checksum, err_str(rc));
	}
	atomic_fetch_add(&wl->n_tx, 1);
	return respond_pos(conn, json_object(), pos);
}

static enum httpd_result primary_renew(struct writelock *wl, struct httpd_conn *conn, const char *name,
				       uint64_t token, bool release)
{
	pthread_mutex_lock(&wl->mu);
	struct wl_grant *g = grant_check(wl, name, token);
	if (g && release)
		grant_drop(g, "released by its holder");
	pthread_mutex_unlock(&wl->mu);
	if (!g && !release)
		return httpd_respond_errorf(conn, HTTP_CONFLICT, "the write lock on %s is not held with this token", name);
	return httpd_respond_json(conn, HTTP_OK, json_pack("{s:b, s:i}", "held", !release, "ttlMs", WRITELOCK_TTL_MS),
				  NULL, NULL);
}

/* ---- HTTP: the replica's side ------------------------------------------ */

/* Forwards acquire/renew/release to the primary and answers with its reply
 * (body and status) after the local bookkeeping. */
static enum httpd_result replica_forward(struct writelock *wl, struct httpd_conn *conn, const char *op,
					 const char *name, const char *token, int64_t timeout_ms)
{
	char holder[32], path[64];
	snprintf(holder, sizeof(holder), "%016" PRIx64, wl->st->node.node_id);
	snprintf(path, sizeof(path), "/writelock/%s", op);
	const char *query[] = { "name", name, "holder", holder, "token", token, NULL };
	bool release = !strcmp(op, "release");
	uint64_t tok_num = token ? strtoull(token, NULL, 16) : 0;
	pthread_mutex_lock(&wl->held_mu);
	struct wl_held *mine = held_find(wl, name);
	bool busy = !token && mine != NULL; /* an acquire while a litefs run here holds it */
	if (release && mine && mine->token == tok_num) /* writes stop here first */
		memset(mine, 0, sizeof(*mine));
	pthread_mutex_unlock(&wl->held_mu);
	if (busy)
		return httpd_respond_errorf(conn, HTTP_CONFLICT, "the write lock on %s is already held on this node", name);
	CURL *c = curl_easy_init();
	if (!c)
		return httpd_respond_error(conn, HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	struct httpc_req q;
	int64_t sent = clock_mono_ms();
	int rc = primary_post(wl, c, path, query, -1, 0, 0, WL_GRANT_WAIT_MS + 5000, &q);
	enum httpd_result res;
	if (rc != 0) {
		res = httpd_respond_errorf(conn, HTTP_SERVICE_UNAVAILABLE, "cannot reach the primary: %s",
					   rc == -EAGAIN ? "no primary known" : httpc_transport_error(&q));
	} else if (q.status != HTTP_OK) {
		struct httpc_error e;
		httpc_error_parse(&q, &e);
		if (!release && token) { /* the primary no longer knows this lock */
			pthread_mutex_lock(&wl->held_mu);
			struct wl_held *h = held_find(wl, name);
			if (h && h->token == tok_num)
				memset(h, 0, sizeof(*h));
			pthread_mutex_unlock(&wl->held_mu);
		}
		res = httpd_respond_errorf(conn, (unsigned)q.status, "the primary: %s", e.text);
	} else if (release) {
		res = httpd_respond_json(conn, HTTP_OK, json_pack("{s:b}", "held", 0), NULL, NULL);
	} else {
		json_error_t jerr;
		json_t *o = q.mem ? json_loads(q.mem, 0, &jerr) : NULL;
		const char *tok = json_string_value(json_object_get(o, "token"));
		const char *txid_s = json_string_value(json_object_get(o, "txid"));
		const char *chk_s = json_string_value(json_object_get(o, "checksum"));
		res = HTTPD_NO;
		if (!strcmp(op, "renew")) {
			pthread_mutex_lock(&wl->held_mu);
			struct wl_held *h = held_find(wl, name);
			if (h && h->token != tok_num)
				h = NULL;
			if (h) {
				h->expires_ms = sent + WRITELOCK_TTL_MS;
				h->cleaning = false;
			}
			pthread_mutex_unlock(&wl->held_mu);
			res = h ? httpd_respond_json(conn, HTTP_OK, json_pack("{s:b, s:i}", "held", 1, "ttlMs",
									      WRITELOCK_TTL_MS), NULL, NULL)
				: httpd_respond_error(conn, HTTP_CONFLICT, "the write lock expired on this replica");
		} else if (!tok || !txid_s || !chk_s) {
			res = httpd_respond_error(conn, HTTP_INTERNAL_SERVER_ERROR, "the primary's answer is not understood");
		} else {
			/* Acquire: wait until this node holds what the primary
			 * has, then let the mount write. */
			struct ltx_pos want = { strtoull(txid_s, NULL, 16), strtoull(chk_s, NULL, 16) };
			int64_t deadline = clock_mono_ms() + timeout_ms;
			struct node *n = &wl->st->node;
			struct ltx_pos now = { 0 };
			for (;;) {
				uint64_t seen = node_change_seq(n);
				struct db *db = store_find(wl->st, name, false);
				now = db ? db_pos(db) : (struct ltx_pos){ 0 };
				if (now.txid >= want.txid || clock_mono_ms() >= deadline)
					break;
				node_wait_change(n, seen, 100);
			}
			if (now.txid != want.txid || now.checksum != want.checksum) {
				const char *rq[] = { "name", name, "holder", holder, "token", tok, NULL };
				struct httpc_req q2;
				if (primary_post(wl, c, "/writelock/release", rq, -1, 0, 0, 5000, &q2) == 0)
					httpc_req_free(&q2);
				else
					httpc_req_free(&q2);
				res = httpd_respond_errorf(conn, HTTP_SERVICE_UNAVAILABLE,
							   "this replica did not reach the primary's position %016" PRIx64
							   " (it is at %016" PRIx64 ")",
							   want.txid, now.txid);
			} else {
				pthread_mutex_lock(&wl->held_mu);
				struct wl_held *h = held_find(wl, name);
				for (size_t i = 0; !h && i < WL_MAX; i++)
					if (!wl->held[i].used)
						h = &wl->held[i];
				if (h) {
					*h = (struct wl_held){ .used = true, .token = strtoull(tok, NULL, 16),
							       .expires_ms = sent + WRITELOCK_TTL_MS };
					snprintf(h->name, sizeof(h->name), "%s", name);
				}
				pthread_mutex_unlock(&wl->held_mu);
				LOG_INFO("writelock", "msg=\"write lock held: this replica may write the database\" db=%s "
						      "txid=%016" PRIx64, name, now.txid);
				res = h ? httpd_respond_json(conn, HTTP_OK, json_pack("{s:s, s:s, s:i}", "token", tok, "txid",
										      txid_s, "ttlMs", WRITELOCK_TTL_MS),
							     NULL, NULL)
					: httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "too many write locks");
			}
		}
		json_decref(o);
	}
	httpc_req_free(&q);
	curl_easy_cleanup(c);
	return res;
}

/* ---- Metrics ------------------------------------------------------------- */

void writelock_metrics(struct writelock *wl, FILE *f)
{
	if (!wl)
		return;
	unsigned granted = 0, held = 0;
	pthread_mutex_lock(&wl->mu);
	for (size_t i = 0; i < WL_MAX; i++)
		granted += wl->grants[i].used;
	pthread_mutex_unlock(&wl->mu);
	pthread_mutex_lock(&wl->held_mu);
	for (size_t i = 0; i < WL_MAX; i++)
		held += wl->held[i].used;
	pthread_mutex_unlock(&wl->held_mu);
	fprintf(f, "# HELP litefs_write_locks Write locks granted by this primary (granted) or held by this replica (held).\n"
		   "# TYPE litefs_write_locks gauge\nlitefs_write_locks{side=\"granted\"} %u\n"
		   "litefs_write_locks{side=\"held\"} %u\n",
		granted, held);
	fprintf(f, "# HELP litefs_write_lock_events_total Write lock grants, expiries (no renewal, or fenced), "
		   "holder transactions stored, resent ones already stored, and refused ones.\n"
		   "# TYPE litefs_write_lock_events_total counter\n"
		   "litefs_write_lock_events_total{event=\"granted\"} %lu\n"
		   "litefs_write_lock_events_total{event=\"expired\"} %lu\n"
		   "litefs_write_lock_events_total{event=\"tx\"} %lu\n"
		   "litefs_write_lock_events_total{event=\"tx_duplicate\"} %lu\n"
		   "litefs_write_lock_events_total{event=\"tx_refused\"} %lu\n",
		atomic_load(&wl->n_grants), atomic_load(&wl->n_expired), atomic_load(&wl->n_tx),
		atomic_load(&wl->n_tx_dup), atomic_load(&wl->n_tx_refused));
}

/* ---- HTTP dispatch ----------------------------------------------------- */

bool writelock_url(const char *url)
{
	return !strncmp(url, "/writelock/", 11);
}

void writelock_req_free(void *req)
{
	struct wl_req *r = req;
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

static enum httpd_result handle(struct writelock *wl, struct httpd_conn *conn, const char *url, bool trusted,
				struct wl_req *r)
{
	const char *op = url + 11;
	char name[WL_NAME_MAX], holder[64] = "";
	uint64_t token = 0, timeout_ms = WL_CATCHUP_DEFAULT_MS;
	if (!arg_copy(conn, "name", name, sizeof(name)))
		return httpd_respond_error(conn, HTTP_BAD_REQUEST, "missing or invalid query parameter: name");
	bool from_peer = arg_copy(conn, "holder", holder, sizeof(holder)) || !strcmp(op, "tx");
	if (from_peer && !trusted)
		return httpd_respond_error(conn, HTTP_UNAUTHORIZED, "this request needs the cluster's secret");
	bool has_token = arg_u64(conn, "token", 16, &token);
	arg_u64(conn, "timeout", 10, &timeout_ms);
	if (timeout_ms > 600000)
		timeout_ms = 600000;
	bool primary = node_is_primary(&wl->st->node);

	if (!strcmp(op, "tx")) {
		if (!primary || !has_token)
			return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "this node is not the primary");
		return primary_tx(wl, conn, name, token, r);
	}
	if (strcmp(op, "acquire") && strcmp(op, "renew") && strcmp(op, "release"))
		return httpd_respond_errorf(conn, HTTP_NOT_FOUND, "not found: %.200s", url);
	if (primary && !from_peer) {
		/* litefs run on the primary itself: CMD writes as any local
		 * client does; there is nothing to lock. */
		return httpd_respond_json(conn, HTTP_OK, json_pack("{s:b}", "primary", 1), NULL, NULL);
	}
	if (primary) {
		if (!strcmp(op, "acquire"))
			return primary_grant(wl, conn, name, holder);
		if (!has_token)
			return httpd_respond_error(conn, HTTP_BAD_REQUEST, "missing query parameter: token");
		return primary_renew(wl, conn, name, token, !strcmp(op, "release"));
	}
	if (from_peer)
		return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "this node is not the primary");
	char tok[17] = "";
	if (has_token)
		snprintf(tok, sizeof(tok), "%016" PRIx64, token);
	else if (strcmp(op, "acquire"))
		return httpd_respond_error(conn, HTTP_BAD_REQUEST, "missing query parameter: token");
	return replica_forward(wl, conn, op, name, has_token ? tok : NULL, (int64_t)timeout_ms);
}

enum httpd_result writelock_http(struct writelock *wl, struct httpd_conn *conn, const char *url, const char *method,
				 const char *upload_data, size_t *upload_data_size, void **con_cls, bool trusted)
{
	struct wl_req *r = *con_cls;
	if (r == NULL) {
		/* First call: the headers. Answered after the body (keeps the
		 * connection alive: submissions reuse it). */
		if (strcmp(method, HTTP_METHOD_POST)) {
			*upload_data_size = 0;
			return httpd_respond_error(conn, HTTP_METHOD_NOT_ALLOWED, "use POST");
		}
		if (!wl)
			return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "the write lock is not available");
		if (!(r = calloc(1, sizeof(*r))))
			return HTTPD_NO;
		r->kind = WRITELOCK_REQ;
		r->fd = -1;
		*con_cls = r;
		return HTTPD_YES;
	}
	if (*upload_data_size != 0) {
		size_t len = *upload_data_size;
		*upload_data_size = 0;
		if (r->too_large || r->len + len > LTXLOG_MAX_RECORD) {
			r->too_large = true;
			return HTTPD_YES;
		}
		if (r->fd < 0 && (r->fd = fileio_spool_open(wl->st->node.data_dir)) < 0) {
			r->too_large = true;
			return HTTPD_YES;
		}
		if (fdio_pwrite_full(r->fd, upload_data, len, (off_t)r->len) < 0)
			r->too_large = true;
		r->len += len;
		return HTTPD_YES;
	}
	return handle(wl, conn, url, trusted, r);
}
