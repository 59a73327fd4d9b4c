/*
 * backup.c — the backup client (see backup.h; docs/backup.md follows this
 * comment, which is the authority).
 *
 * Service API (LiteFS Cloud compatible; every request carries
 * `Authorization: FlyV1 <token>` unless the token already names its
 * scheme, and `Litefs-Cluster-Id: <this cluster's ID>`):
 *
 *   GET  /pos                   {"<db>": {"txid": "%016x", "postApplyChecksum": "%016x"}, ...}
 *   POST /db/tx?db=NAME         body: one LTX file that follows the service's
 *                               position -> 200 + `Litefs-Hwm: %016x`, or
 *                               409 {"code": "EPOSMISMATCH", "pos": {...}}
 *   GET  /db/snapshot?db=NAME   a snapshot LTX (TXID 1..N) of the service's state
 *   GET  /db/changes?db=NAME&after=TXID/CHECKSUM   (litefs-cloud only) one LTX
 *                               file from this node's position to the
 *                               service's; 409/413/404 when it cannot be
 *                               made (or a service without the endpoint)
 *
 * One thread, and only the primary acts (node_is_primary(), checked on
 * every round). Per database the thread remembers the service's last known
 * position (from /pos, from a 409, or from its own accepted upload) and the
 * last high-water mark the service acknowledged.
 *
 * The loop:
 *
 *   sync      at least every BACKUP_POLL_MAX_MS (or full-sync-interval if
 *             shorter), after any error, and whenever a database appears
 *             that the thread has not seen: GET /pos, then decide for every
 *             database (the table below), local ones first, then the ones
 *             only the service has.
 *   push      woken by node_wait_change() after every commit: for every
 *             database whose position differs from the service's known
 *             one, push from the service's position.
 *   wait      node_wait_change() until the next commit or the next sync.
 *
 * The decision for one database, local position L, service position S:
 *
 *   S absent, L empty            nothing
 *   S absent                     push from TXID 0 (the whole chain), or a
 *                                snapshot upload when the chain no longer
 *                                starts at TXID 1
 *   S == L                       nothing (S is durable on the service: it
 *                                becomes the high-water mark)
 *   S on L's chain, behind       push from S (db_cursor_open(S) returns 0)
 *   S ahead of L                 restore: fetch the changes from L to S
 *                                and apply them as one transaction
 *                                (restore_changes; replicas follow as after
 *                                any commit); when the service cannot make
 *                                them or they are refused, fetch the
 *                                service's snapshot and apply it
 *                                (store_apply); the chain restarts at the
 *                                snapshot, replicas follow by themselves
 *   S diverged at a retained     restore, when S.txid >= the HWM this node
 *   TXID (checksum differs)      last saw acknowledged (a restore happened
 *                                on the service, which appends a new TXID);
 *                                otherwise the service lost what it had
 *                                acknowledged: upload a snapshot
 *   S older than the oldest      upload a snapshot (the node cannot tell
 *   retained record              whether S is on its chain, and the local
 *                                data is never thrown away on a guess)
 *   only the service has it      restore
 *
 * Pushing: records are read with a cursor from S. Up to BACKUP_SINGLE_MAX
 * pending records are sent one by one, each as it is (its bytes straight
 * from the segment), so that every transaction stays a restorable point
 * on the service; a longer backlog (the service was down, or ingest
 * outruns one upload per commit) is merged with compact_run() into one
 * LTX file spooled under <data.dir>/tmp (at most BACKUP_MAX_BATCH records
 * or BACKUP_MAX_BATCH_BYTES per upload): the service catches up in one
 * request, at the price of restoring to the end of that upload only. A
 * 200 moves S to the upload's end and its `Litefs-Hwm` goes to
 * db_set_backup_hwm(), so local retention keeps every record the service
 * has not acknowledged. A 409 EPOSMISMATCH takes the service's position
 * from the reply and triggers a sync (decide again); three in a row back
 * off like an error.
 *
 * Restoring: the snapshot is spooled to a temp file (never held in
 * memory), checked to be a snapshot LTX, and applied with
 * store_apply_guarded(), which validates it in full before it changes
 * anything and excludes readers and writers with SQLite's own locks. A
 * truncated or corrupt snapshot is refused and nothing changes. Its guard
 * (keep_unacked) runs once writers are excluded: every local record after
 * the last TXID the service acknowledged (the HWM) was committed to a
 * client and is in neither the restored state nor the service's history,
 * so it is copied under <data.dir>/lost/ (lost.h) first; if that fails
 * the restore is refused and tried again at the next sync.
 *
 * Watching (watch_main, a second thread with its own connection): while
 * this node is primary, one GET /pos?wait=<generation> is kept open; the
 * service answers it when a restore moved a database of the cluster, and
 * a new generation makes the main thread sync at once (poke). Services
 * without Litefs-Pos-Generation are never sent wait= and the once-a-
 * second sync is all there is; it stays in any case.
 *
 * Errors (service down, 401, 422, 5xx, truncated bodies, refused applies)
 * are logged once with the reason, repeated ones at debug level; the
 * thread backs off from 200 ms doubling to 5 s and syncs again. Local data
 * is never changed except by a validated snapshot apply.
 *
 * Start-up: backup_wait_synced() lets `litefs mount` hold the application
 * until the first sync is complete, so a node started on an empty data
 * directory gets every database back from the service first. A database
 * the service answers for but that cannot be restored (an HTTP error for
 * its snapshot, a snapshot the node refuses, a name the node cannot take)
 * is logged at level=error and skipped: one bad database must not keep
 * the others and the application down. Only a failure of the service as
 * a whole (unreachable, token refused) holds the first sync back.
 *
 * Stopping: backup_stop() sets a flag that libcurl's progress callback
 * checks (about once a second on an idle long poll) and wakes
 * node_wait_change() with node_notify_change() and the watcher's sleeps
 * with the condition variable.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "node/backup.h"
#include "proto/cluster.h"
#include "ltx/compact.h"
#include "node/config.h"
#include "node/db.h"
#include "node/lost.h"
#include "base/err.h"
#include "proto/dbname.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/httpc.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "node/store.h"

#define BACKUP_MAX_BATCH 256
#define BACKUP_SINGLE_MAX 16
#define BACKUP_MAX_BATCH_BYTES (64u << 20)
#define BACKUP_CONNECT_TIMEOUT_MS 2000L
#define BACKUP_POS_TIMEOUT_MS 5000L
/* Uploads and snapshots: no byte for this long means the peer is gone. */
#define BACKUP_STALL_S 30L
/* Error bodies and /pos replies are read into memory up to these sizes. */
#define BACKUP_MAX_ERROR_BODY HTTPC_MAX_ERROR_BODY
#define BACKUP_MAX_POS_BODY (16u << 20)
/* store_apply() takes a 32-bit length. */
#define BACKUP_MAX_SNAPSHOT 0xFFFFFFF0u
/* libcurl's receive buffer for a snapshot: fewer, larger writes into the
 * spool than its default 16 KiB. */
#define BACKUP_SNAPSHOT_RECV_BUFFER (1L << 20)
#define BACKUP_MSG_LEN 512
#define BACKUP_MAX_MISMATCHES 3

/* What the thread knows of one database on the service (thread only). */
struct bdb {
	bool seen;            /* the HWM was set to 0 when first seen */
	bool known;           /* remote is the service's position */
	struct ltx_pos remote;
	uint64_t hwm;         /* last acknowledged high-water mark */
};

struct backup {
	struct store *st;        /* borrowed */
	struct cluster *cluster; /* borrowed */
	char *base_url;          /* owned, no trailing '/' */
	char *auth;              /* owned: the Authorization header line; NULL: none */
	char *cluster_name;      /* owned: backup.cluster; NULL: none */
	char *data_dir;          /* owned: data.dir (lost/ goes there) */
	char *tmp_dir;           /* owned: <data.dir>/tmp */
	int poll_ms;

	pthread_t thread;
	bool started;
	atomic_bool stopping;
	pthread_mutex_t mu;      /* guards synced; leaf lock */
	pthread_cond_t cond;     /* synced became true, or stopping */
	bool synced;

	/* The watcher thread (watch_main): the long poll GET /pos?wait=. */
	pthread_t watch_thread;
	bool watch_started;
	CURL *watch_curl;        /* the watcher's own handle and connection */
	atomic_bool poke;        /* the service said positions moved: sync now */

	/* Thread only. */
	CURL *curl;              /* reused, so the connection is kept alive */
	struct bdb *dbs;         /* indexed by db id */
	size_t n_dbs;
	bool need_sync;
	int n_mismatch;
	char probe_id[CLUSTER_ID_LEN + 1]; /* sent while this node has no cluster ID */
	char last_error[BACKUP_MSG_LEN]; /* "" while the service answers */
	int last_rc;
};

/* The error of the step that failed, for the one log line. */
struct fail {
	int rc;
	char msg[BACKUP_MSG_LEN];
};

static void fail_set(struct fail *f, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_set(struct fail *f, int rc, const char *fmt, ...)
{
	if (f->rc)
		return;
	f->rc = rc;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
	va_end(ap);
	for (char *p = f->msg; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
			*p = '\'';
}


/* ---- HTTP ----------------------------------------------------------------- */

/* Requests are struct httpc_req (base/httpc.h) on the kept handle: an
 * optional body read from a file range, a reply body kept in memory
 * (bounded) or written to a spool file. */

static int on_progress(void *arg, int64_t dt, int64_t dn, int64_t ut, int64_t un)
{
	struct backup *b = arg;
	(void)dt, (void)dn, (void)ut, (void)un;
	return atomic_load(&b->stopping) ? 1 : 0;
}

static struct curl_slist *request_headers(struct backup *b, bool has_body)
{
	char id[CLUSTER_ID_LEN + 1];
	struct curl_slist *h = NULL;
	int rc = httpc_add_header(&h, "Expect:");
	if (rc == 0 && has_body)
		rc = httpc_add_header(&h, "Content-Type: application/octet-stream");
	cluster_get(b->cluster, id);
	if (!id[0])
		snprintf(id, sizeof(id), "%s", b->probe_id);
	if (rc == 0 && id[0])
		rc = httpc_add_header(&h, "Litefs-Cluster-Id: %s", id);
	if (rc == 0 && b->auth)
		rc = httpc_add_header(&h, "%s", b->auth);
	return h;
}

/* Runs method path?db= with x's body and sinks. Returns 0 when a 2xx
 * reply arrived complete; otherwise an error described in f:
 * ERR_CLOUD_POS_MISMATCH for 409 EPOSMISMATCH (x->mem holds the reply),
 * -EACCES for 401/403, -EPROTO for other statuses, -ECONNRESET for
 * transport failures and truncated bodies. */
static int xfer_run_query(struct backup *b, const char *method, const char *path, const char *const *query,
			  struct httpc_req *x, long timeout_ms, struct fail *f)
{
	char *url = httpc_url(x->curl, b->base_url, path, query);
	struct curl_slist *hdrs = request_headers(b, x->up_fd >= 0);
	if (!url || !hdrs) {
		free(url);
		curl_slist_free_all(hdrs);
		fail_set(f, ERR_NOMEM, "out of memory preparing a request");
		return f->rc;
	}
	x->method = method;
	x->url = url;
	x->headers = hdrs;
	x->timeout_ms = timeout_ms;
	CURLcode cc = httpc_perform(x);
	curl_slist_free_all(hdrs);
	free(url);
	if (atomic_load(&b->stopping)) {
		fail_set(f, -ECANCELED, "stopping");
	} else if (x->up_err) {
		fail_set(f, x->up_err, "the upload's source changed while it was sent: %s", err_str(x->up_err));
	} else if (x->down_err) {
		fail_set(f, x->down_err, "%s %s: cannot keep the reply: %s", method, path, err_str(x->down_err));
	} else if (cc != CURLE_OK) {
		fail_set(f, -ECONNRESET, "%s %s: %s", method, path, httpc_transport_error(x));
	} else if (x->status < 200 || x->status > 299) {
		struct httpc_error e;
		httpc_error_parse(x, &e);
		httpc_text_for_log(e.text);
		const char *text = e.text;
		int rc = x->status == 401 || x->status == 403 ? -EACCES : -EPROTO;
		if (x->status == 409 && x->mem && strstr(x->mem, "EPOSMISMATCH"))
			rc = ERR_CLOUD_POS_MISMATCH;
		fail_set(f, rc, "%s %s: HTTP %ld: %.*s", method, path, x->status, BACKUP_MSG_LEN / 2 - 1, text);
	}
	return f->rc;
}

/* xfer_run_query() with the query ?db=&cluster= (either may be absent). */
static int xfer_run(struct backup *b, const char *method, const char *path, const char *db, struct httpc_req *x,
		    long timeout_ms, struct fail *f)
{
	const char *const query[] = { "db", db, "cluster", b->cluster_name, NULL };
	return xfer_run_query(b, method, path, query, x, timeout_ms, f);
}

/* Readies x for a request on the main thread's handle. */
static void xfer_init(struct httpc_req *x, struct backup *b, size_t mem_max)
{
	httpc_req_init(x, b->curl);
	x->mem_max = mem_max;
	x->user_agent = "litefs-backup";
	x->connect_timeout_ms = BACKUP_CONNECT_TIMEOUT_MS;
	x->stall_s = BACKUP_STALL_S;
	x->progress = on_progress;
	x->progress_ctx = b;
}

/* ---- JSON ------------------------------------------------------------------ */

static int parse_hex64(const char *s, uint64_t *out)
{
	if (!s || !*s || strlen(s) > 16)
		return ERR_INVAL;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
						     : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
		if (d < 0)
			return ERR_INVAL;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return 0;
}

/* {"txid": "%016x", "postApplyChecksum": "%016x"} */
static int parse_pos(const json_t *v, struct ltx_pos *pos)
{
	if (!json_is_object(v))
		return ERR_INVAL;
	if (parse_hex64(json_string_value(json_object_get(v, "txid")), &pos->txid) != 0 ||
	    parse_hex64(json_string_value(json_object_get(v, "postApplyChecksum")), &pos->checksum) != 0)
		return ERR_INVAL;
	return 0;
}

/* ---- Per-database state ------------------------------------------------------ */

static struct bdb *state_of(struct backup *b, struct db *db)
{
	if (db->id >= b->n_dbs) {
		size_t n = (size_t)db->id + 16;
		struct bdb *p = realloc(b->dbs, n * sizeof(*p));
		if (!p)
			return NULL;
		memset(p + b->n_dbs, 0, (n - b->n_dbs) * sizeof(*p));
		b->dbs = p;
		b->n_dbs = n;
	}
	struct bdb *s = &b->dbs[db->id];
	if (!s->seen) {
		/* From now on retention keeps what the service has not
		 * acknowledged. */
		db_set_backup_hwm(db, 0);
		s->seen = true;
	}
	return s;
}

/* Records the service's high-water mark. Retention keeps the segment
 * holding the record AT the mark too (db_enforce_retention), because
 * positioning a cursor after the service's position (db_cursor_open)
 * checks that record's checksum. */
static void set_hwm(struct db *db, struct bdb *s, uint64_t hwm)
{
	s->hwm = hwm;
	db_set_backup_hwm(db, hwm);
}


/* Decisions are logged at info level, but only at debug while they repeat
 * during a failure streak (the failure itself was logged once). */
static enum log_level decision_level(const struct backup *b)
{
	return b->last_error[0] ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO;
}

/* ---- Uploads ------------------------------------------------------------------- */

/* The records of one upload: descriptors of their segments (dup'ed, so
 * that the cursor may move on) and their places. */
struct batch {
	int fds[BACKUP_MAX_BATCH];
	struct ltxlog_rec recs[BACKUP_MAX_BATCH];
	size_t n;
	uint64_t bytes;
};

static void batch_clear(struct batch *bt)
{
	for (size_t i = 0; i < bt->n; i++)
		close(bt->fds[i]);
	bt->n = 0;
	bt->bytes = 0;
}

/* Collects the pending records after the cursor. Returns 0 (bt->n may be
 * 0: nothing pending) or an error of db_cursor_next. */
static int batch_collect(struct db_cursor *c, struct batch *bt)
{
	while (bt->n < BACKUP_MAX_BATCH && bt->bytes < BACKUP_MAX_BATCH_BYTES) {
		int fd;
		struct ltxlog_rec rec;
		int rc = db_cursor_next(c, &fd, &rec);
		if (rc <= 0)
			return rc;
		int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (d < 0)
			return -errno;
		bt->fds[bt->n] = d;
		bt->recs[bt->n++] = rec;
		bt->bytes += rec.len;
	}
	return 0;
}

/* The body of one upload: a file range and the position it ends at. */
struct body {
	int fd;
	uint64_t off, len;
	struct ltx_header h;
	uint64_t post;
};

/* Merges the batch into one LTX file in a spool file. */
static int batch_compact(struct backup *b, struct batch *bt, struct body *out)
{
	struct ltxlog_reader readers[BACKUP_MAX_BATCH];
	struct compact_input inputs[BACKUP_MAX_BATCH];
	for (size_t i = 0; i < bt->n; i++) {
		ltxlog_reader_init(&readers[i], bt->fds[i], &bt->recs[i]);
		inputs[i] = (struct compact_input){ .read = ltxlog_read, .ctx = &readers[i] };
	}
	int fd = fileio_spool_open(b->tmp_dir);
	if (fd < 0)
		return fd;
	struct ltx_trailer t;
	int rc = compact_run(inputs, bt->n, b->st->node.compress, fdio_write, &fd, &out->h, &t, NULL);
	off_t size = rc == 0 ? lseek(fd, 0, SEEK_END) : 0;
	if (rc == 0 && size < 0)
		rc = -errno;
	if (rc != 0) {
		close(fd);
		return rc;
	}
	*out = (struct body){ .fd = fd, .off = 0, .len = (uint64_t)size, .h = out->h,
			      .post = t.post_apply_checksum };
	return 0;
}

/* POST /db/tx of body. On 200 the service is at the body's end and its
 * HWM is recorded; on 409 its position is taken from the reply. */
static int post_tx(struct backup *b, struct db *db, struct bdb *s, const struct body *body, struct fail *f)
{
	struct httpc_req x;
	xfer_init(&x, b, BACKUP_MAX_ERROR_BODY);
	x.up_fd = body->fd;
	x.up_off = body->off;
	x.up_len = body->len;
	int rc = xfer_run(b, "POST", "/db/tx", db->name, &x, 0, f);
	if (rc == ERR_CLOUD_POS_MISMATCH) {
		json_error_t jerr;
		json_t *root = json_loads(x.mem, 0, &jerr);
		struct ltx_pos p;
		if (root && parse_pos(json_object_get(root, "pos"), &p) == 0) {
			s->remote = p;
			s->known = true;
		} else {
			s->known = false;
		}
		json_decref(root);
		LOG(decision_level(b), "backup", "msg=\"the service is not where this node thought; comparing positions again\" "
				   "db=%s txid=%016" PRIx64 " service_txid=%016" PRIx64,
			 db->name, body->h.min_txid, s->known ? s->remote.txid : 0);
	} else if (rc == 0) {
		uint64_t hwm = 0;
		char hwm_text[40] = "";
		httpc_header(&x, "Litefs-Hwm", hwm_text, sizeof(hwm_text));
		if (parse_hex64(hwm_text, &hwm) != 0) {
			fail_set(f, -EPROTO, "POST /db/tx: missing or bad Litefs-Hwm header '%.40s'", hwm_text);
			rc = f->rc;
		} else {
			s->remote = (struct ltx_pos){ body->h.max_txid, body->post };
			s->known = true;
			set_hwm(db, s, hwm);
			b->n_mismatch = 0;
			LOG_DEBUG("backup", "msg=\"pushed\" db=%s txid=%016" PRIx64 "-%016" PRIx64 " bytes=%" PRIu64
					    " hwm=%016" PRIx64,
				  db->name, body->h.min_txid, body->h.max_txid, body->len, hwm);
		}
	}
	httpc_req_free(&x);
	return rc;
}

/* The body of record i of the batch, as it is. */
static int record_body(struct batch *bt, size_t i, struct body *out)
{
	*out = (struct body){ .fd = bt->fds[i], .off = bt->recs[i].offset + LTXLOG_HDR_SIZE, .len = bt->recs[i].len };
	return ltxlog_read_ends(out->fd, out->off, out->len, &out->h, &out->post);
}

/* Uploads a batch: up to BACKUP_SINGLE_MAX records one by one (each stays
 * a restorable point on the service), a longer backlog merged into one
 * LTX file (the service then restores to its end, not inside it). */
static int post_batch(struct backup *b, struct db *db, struct bdb *s, struct batch *bt, struct fail *f)
{
	struct body body;
	int rc;
	if (bt->n > BACKUP_SINGLE_MAX) {
		if ((rc = batch_compact(b, bt, &body)) != 0) {
			fail_set(f, rc, "db %s: cannot merge %zu records into one upload: %s", db->name, bt->n,
				 err_str(rc));
			return rc;
		}
		rc = post_tx(b, db, s, &body, f);
		close(body.fd);
		return rc;
	}
	for (size_t i = 0; i < bt->n; i++) {
		if ((rc = record_body(bt, i, &body)) != 0) {
			fail_set(f, rc, "db %s: cannot read a record: %s", db->name, err_str(rc));
			return rc;
		}
		if ((rc = post_tx(b, db, s, &body, f)) != 0)
			return rc;
	}
	return 0;
}

/* Uploads a snapshot of the whole database (when the chain the service
 * needs is no longer retained). */
static int push_snapshot(struct backup *b, struct db *db, struct bdb *s, const char *why, struct fail *f)
{
	int fd = fileio_spool_open(b->tmp_dir);
	if (fd < 0) {
		fail_set(f, fd, "cannot create a spool file in %s: %s", b->tmp_dir, err_str(fd));
		return fd;
	}
	struct ltx_pos pos;
	int rc = db_snapshot(db, fdio_write, &fd, &pos);
	if (rc == ERR_NEED_SNAPSHOT) { /* empty or deleted: nothing to send */
		close(fd);
		return 0;
	}
	struct body body = { .fd = fd };
	off_t size = rc == 0 ? lseek(fd, 0, SEEK_END) : -1;
	if (rc == 0 && size >= 0) {
		body.len = (uint64_t)size;
		rc = ltxlog_read_ends(fd, 0, body.len, &body.h, &body.post);
	} else if (rc == 0) {
		rc = -errno;
	}
	if (rc != 0) {
		fail_set(f, rc, "cannot write a snapshot of %s: %s", db->name, err_str(rc));
		close(fd);
		return rc;
	}
	LOG(decision_level(b), "backup", "msg=\"uploading a snapshot: %s\" db=%s txid=%016" PRIx64 " bytes=%" PRIu64, why, db->name,
		 pos.txid, body.len);
	rc = post_tx(b, db, s, &body, f);
	close(fd);
	return rc;
}

/* Pushes every record after `from` (the service's position), in batches,
 * until the cursor reaches the current position. */
static int push_from(struct backup *b, struct db *db, struct bdb *s, struct ltx_pos from, struct fail *f)
{
	struct db_cursor c;
	int rc = db_cursor_open(db, from, &c);
	if (rc != 0) {
		fail_set(f, rc, "db %s: cannot read the records after %016" PRIx64 ": %s", db->name, from.txid,
			 err_str(rc));
		return rc;
	}
	struct batch *bt = calloc(1, sizeof(*bt));
	if (!bt) {
		db_cursor_close(&c);
		fail_set(f, ERR_NOMEM, "out of memory");
		return ERR_NOMEM;
	}
	int64_t began = clock_mono_ms();
	while (rc == 0 && !atomic_load(&b->stopping)) {
		rc = batch_collect(&c, bt);
		if (rc != 0) {
			fail_set(f, rc, "db %s: reading records: %s", db->name, err_str(rc));
			break;
		}
		if (bt->n == 0)
			break;
		rc = post_batch(b, db, s, bt, f);
		batch_clear(bt);
		/* A long backlog must not delay the next comparison. */
		if (clock_mono_ms() - began > b->poll_ms)
			break;
	}
	batch_clear(bt);
	free(bt);
	db_cursor_close(&c);
	return rc;
}

/* ---- Restores -------------------------------------------------------------------- */

static bool service_wide(int rc);

/* What a restore keeps of the transactions it replaces (keep_unacked). */
struct keep {
	struct backup *b;
	uint64_t acked;          /* the service acknowledged every TXID up to this */
	struct ltx_pos replaced_by;
	struct fail *f;
};

/* Writes a snapshot of db's current state into ev: the fallback when the
 * records after the acknowledged TXID are not all retained. */
static int keep_snapshot(struct backup *b, struct db *db, struct lost_event *ev)
{
	int fd = fileio_spool_open(b->tmp_dir);
	if (fd < 0)
		return fd;
	struct ltx_pos pos;
	int rc = db_snapshot(db, fdio_write, &fd, &pos);
	off_t size = rc == 0 ? lseek(fd, 0, SEEK_END) : 0;
	if (rc == 0 && size < 0)
		rc = -errno;
	if (rc == 0)
		rc = size > UINT32_MAX ? -EFBIG : lost_add(ev, fd, 0, (uint32_t)size);
	close(fd);
	return rc;
}

/* The guard of a restore's apply (apply_ltx_guarded): runs with readers
 * and writers excluded, so db's position is final. Every local
 * transaction after the last TXID the service acknowledged is one a
 * client was told was committed and that the restored state will not
 * hold: it is written under lost/ (lost.h) before anything changes. If
 * that fails the restore is refused and tried again at the next sync:
 * an acknowledged transaction never vanishes silently. */
static int keep_unacked(void *ctx, struct db *db)
{
	struct keep *k = ctx;
	struct ltx_pos local = db_pos(db);
	if (local.txid <= k->acked)
		return 0;
	struct lost_event *ev = NULL;
	struct db_cursor c;
	db_cursor_init(&c);
	int rc = lost_begin(k->b->data_dir, db->name, &ev);
	if (rc == 0 && (rc = db_cursor_open_oldest(db, &c)) == ERR_NEED_SNAPSHOT)
		rc = keep_snapshot(k->b, db, ev);
	else if (rc == 0) {
		int fd;
		struct ltxlog_rec rec;
		while ((rc = db_cursor_next(&c, &fd, &rec)) == 1) {
			struct ltx_header h;
			uint64_t post, off = rec.offset + LTXLOG_HDR_SIZE;
			if ((rc = ltxlog_read_ends(fd, off, rec.len, &h, &post)) != 0)
				break;
			if (h.max_txid <= k->acked)
				continue;
			if (lost_count(ev) == 0 && h.min_txid > k->acked + 1) {
				/* A gap: the records from acked+1 are gone. */
				rc = keep_snapshot(k->b, db, ev);
				break;
			}
			if ((rc = lost_add(ev, fd, off, rec.len)) != 0)
				break;
		}
	}
	db_cursor_close(&c);
	char dir[PATH_MAX] = "";
	size_t n = ev ? lost_count(ev) : 0;
	uint64_t base = n ? lost_base(ev).txid : 0;
	if (rc == 0 && ev)
		rc = lost_commit(ev, "a restore on the backup service replaced these transactions before the service "
				     "had acknowledged them", &k->replaced_by, dir, sizeof(dir));
	else
		lost_abort(ev);
	if (rc != 0) {
		fail_set(k->f, rc, "db %s: cannot keep the %016" PRIx64 "-%016" PRIx64 " transactions a restore "
				   "would replace under %s/%s, so the restore is not applied: %s",
			 db->name, k->acked + 1, local.txid, k->b->data_dir, LOST_DIR, err_str(rc));
		return rc;
	}
	LOG_WARN("backup", "msg=\"a restore on the backup service replaces transactions this node committed that the "
			   "service had not acknowledged; they are kept, not applied: inspect with 'litefs ltx dump', "
			   "re-apply as docs/backup.md says (litefs ltx apply onto the state at base_txid)\" db=%s "
			   "txid=%016" PRIx64 "-%016" PRIx64 " files=%zu base_txid=%016" PRIx64 " dir=\"%s\"",
		 db->name, base + 1, local.txid, n, base, dir);
	return 0;
}

/* The guard of a restore by changes (restore_changes): they follow the
 * position this node had when it asked, which the service holds (it
 * answered from it), so nothing this node committed is replaced. A local
 * commit that landed since makes them not follow: refused before anything
 * changes, and the snapshot path (keep_unacked) takes over. */
static int changes_guard(void *ctx, struct db *db)
{
	const struct ltx_pos *base = ctx;
	struct ltx_pos now = db_pos(db);
	return now.txid == base->txid && now.checksum == base->checksum ? 0 : ERR_LTX_NOT_CONTIGUOUS;
}

/* What a restore fetched and how long it took, for its log line. */
struct fetched {
	uint64_t bytes;
	int64_t fetch_ms;
	struct ltx_pos to;
};

/* GET /db/changes after db's position (docs/cloud-api.md): the service's
 * stored files from there to its position merged into one LTX file,
 * spooled, checked to follow this node's position and to end at svc (or
 * past it), and applied as one transaction (apply_ltx: validated in full
 * first, the post-apply checksum computed from this node's own pages
 * must be the service's, readers excluded while pages are written). A
 * restore on the service is one transaction of the pages it changed, so
 * this moves a few MB where a snapshot moves the whole database. Returns
 * 0, or an error described in f (nothing changed): the caller falls back
 * to the snapshot unless the service as a whole failed. */
static int restore_changes(struct backup *b, struct db *db, struct ltx_pos svc, struct fetched *out, struct fail *f)
{
	struct ltx_pos base = db_pos(db);
	if (base.txid == 0) {
		fail_set(f, ERR_NEED_SNAPSHOT, "db %s: no local position to take changes from", db->name);
		return f->rc;
	}
	int fd = fileio_spool_open(b->tmp_dir);
	if (fd < 0) {
		fail_set(f, fd, "cannot create a spool file in %s: %s", b->tmp_dir, err_str(fd));
		return fd;
	}
	char after[LTX_POS_STR_LEN];
	ltx_format_pos(after, base);
	const char *const query[] = { "db", db->name, "after", after, "cluster", b->cluster_name, NULL };
	struct httpc_req x;
	xfer_init(&x, b, BACKUP_MAX_ERROR_BODY);
	x.down_fd = fd;
	x.down_max = BACKUP_MAX_SNAPSHOT;
	x.recv_buffer = BACKUP_SNAPSHOT_RECV_BUFFER;
	int64_t began = clock_mono_ms();
	int rc = xfer_run_query(b, "GET", "/db/changes", query, &x, 0, f);
	out->fetch_ms = clock_mono_ms() - began;
	struct ltx_header h = { 0 };
	uint64_t post = 0;
	if (rc == 0 && (rc = ltxlog_read_ends(fd, 0, x.down_len, &h, &post)) != 0)
		fail_set(f, rc, "db %s: the service's changes are not an LTX file: %s", db->name, err_str(rc));
	if (rc == 0 && (ltx_header_is_snapshot(&h) || h.min_txid != base.txid + 1 ||
			h.pre_apply_checksum != base.checksum || h.max_txid < svc.txid ||
			(h.max_txid == svc.txid && post != svc.checksum))) {
		rc = ERR_LTX_NOT_CONTIGUOUS;
		fail_set(f, rc, "db %s: the service's changes (txid %016" PRIx64 "-%016" PRIx64 ") do not lead from this "
				"node's position to the service's", db->name, h.min_txid, h.max_txid);
	}
	if (rc == 0 && (rc = store_apply_guarded(b->st, db->name, fd, 0, (uint32_t)x.down_len, changes_guard, &base)) != 0)
		fail_set(f, rc, "db %s: the service's changes (txid %016" PRIx64 ") were refused: %s", db->name,
			 h.max_txid, err_str(rc));
	out->bytes = x.down_len;
	out->to = (struct ltx_pos){ h.max_txid, post };
	close(fd);
	httpc_req_free(&x);
	return rc;
}

/* Brings db to the service's state by its changes when it can (restore_changes);
 * 1 when the snapshot must be taken instead (logged), 0 done, or a
 * failure of the service as a whole (described in f). */
static int restore_db_changes(struct backup *b, struct db *db, const char *why, struct ltx_pos svc, struct fail *f)
{
	int64_t began = clock_mono_ms();
	struct fetched got = { 0 };
	struct fail one = { 0 };
	int rc = restore_changes(b, db, svc, &got, &one);
	if (rc != 0 && service_wide(rc)) {
		*f = one;
		return rc;
	}
	if (rc != 0) {
		LOG(decision_level(b), "backup", "msg=\"cannot restore by the service's changes: taking its whole snapshot\" "
				   "db=%s reason=\"%s\"", db->name, one.msg);
		return 1;
	}
	struct bdb *s = state_of(b, db);
	if (s) {
		s->remote = got.to;
		s->known = true;
		set_hwm(db, s, got.to.txid);
	}
	LOG_INFO("backup", "msg=\"restored from the backup service by its changes: %s\" db=%s txid=%016" PRIx64
			   " service_txid=%016" PRIx64 " bytes=%" PRIu64 " ms=%" PRId64 " fetch_ms=%" PRId64,
		 why, db->name, got.to.txid, svc.txid, got.bytes, clock_mono_ms() - began, got.fetch_ms);
	return 0;
}

/* Fetches the service's snapshot of name and applies it. */
static int restore_db(struct backup *b, const char *name, const char *why, struct ltx_pos svc, struct fail *f)
{
	int64_t began = clock_mono_ms();
	int fd = fileio_spool_open(b->tmp_dir);
	if (fd < 0) {
		fail_set(f, fd, "cannot create a spool file in %s: %s", b->tmp_dir, err_str(fd));
		return fd;
	}
	struct httpc_req x;
	xfer_init(&x, b, BACKUP_MAX_ERROR_BODY);
	x.down_fd = fd;
	x.down_max = BACKUP_MAX_SNAPSHOT;
	x.recv_buffer = BACKUP_SNAPSHOT_RECV_BUFFER;
	int rc = xfer_run(b, "GET", "/db/snapshot", name, &x, 0, f);
	int64_t fetched = clock_mono_ms();
	struct ltx_header h;
	uint64_t post = 0;
	if (rc == 0 && (rc = ltxlog_read_ends(fd, 0, x.down_len, &h, &post)) != 0)
		fail_set(f, rc, "db %s: the service's snapshot is not an LTX file: %s", name, err_str(rc));
	if (rc == 0 && !ltx_header_is_snapshot(&h)) {
		rc = ERR_LTX_NOT_CONTIGUOUS;
		fail_set(f, rc, "db %s: the service sent an LTX file that is not a snapshot", name);
	}
	struct db *had = store_find(b->st, name, true);
	struct keep keep = { .b = b, .acked = had && had->id < b->n_dbs ? b->dbs[had->id].hwm : 0,
			     .replaced_by = { h.max_txid, post }, .f = f };
	if (rc == 0 && (rc = store_apply_guarded(b->st, name, fd, 0, (uint32_t)x.down_len, keep_unacked, &keep)) != 0)
		fail_set(f, rc, "db %s: the service's snapshot (txid %016" PRIx64 ") was refused: %s", name,
			 h.max_txid, err_str(rc));
	close(fd);
	httpc_req_free(&x);
	if (rc != 0)
		return rc;
	struct db *db = store_find(b->st, name, true);
	struct bdb *s = db ? state_of(b, db) : NULL;
	if (s) {
		s->remote = (struct ltx_pos){ h.max_txid, post };
		s->known = true;
		set_hwm(db, s, h.max_txid);
	}
	LOG_INFO("backup", "msg=\"restored from the backup service: %s\" db=%s txid=%016" PRIx64
			   " service_txid=%016" PRIx64 " bytes=%" PRIu64 " ms=%" PRId64 " fetch_ms=%" PRId64,
		 why, name, h.max_txid, svc.txid, x.down_len, clock_mono_ms() - began, fetched - began);
	return 0;
}

/* ---- Decisions -------------------------------------------------------------------- */

/* The table in the design comment, for one local database. */
static int decide(struct backup *b, struct db *db, const struct ltx_pos *svc, struct fail *f)
{
	struct bdb *s = state_of(b, db);
	if (!s) {
		fail_set(f, ERR_NOMEM, "out of memory");
		return ERR_NOMEM;
	}
	struct ltx_pos local = db_pos(db);
	char lbuf[LTX_POS_STR_LEN], sbuf[LTX_POS_STR_LEN];
	ltx_format_pos(lbuf, local);
	if (!svc) {
		s->known = false;
		if (local.txid == 0)
			return 0;
		struct db_cursor c;
		if (db_cursor_open(db, (struct ltx_pos){ 0, 0 }, &c) == 0) {
			db_cursor_close(&c);
			LOG(decision_level(b), "backup", "msg=\"the service does not have this database: pushing its whole history\" "
					   "db=%s pos=%s",
				 db->name, lbuf);
			s->remote = (struct ltx_pos){ 0, 0 };
			s->known = true;
			return push_from(b, db, s, s->remote, f);
		}
		return push_snapshot(b, db, s, "the service does not have this database", f);
	}
	ltx_format_pos(sbuf, *svc);
	s->remote = *svc;
	s->known = true;
	if (svc->txid == local.txid && svc->checksum == local.checksum) {
		if (s->hwm != svc->txid)
			set_hwm(db, s, svc->txid);
		return 0;
	}
	struct db_cursor c;
	int rc = db_cursor_open(db, *svc, &c);
	if (rc == 0) {
		db_cursor_close(&c);
		LOG_DEBUG("backup", "msg=\"the service is behind: pushing\" db=%s pos=%s service=%s", db->name, lbuf,
			  sbuf);
		return push_from(b, db, s, *svc, f);
	}
	if (rc != ERR_NEED_SNAPSHOT) {
		fail_set(f, rc, "db %s: cannot compare with the service's position %s: %s", db->name, sbuf, err_str(rc));
		return rc;
	}
	if (svc->txid > local.txid) {
		LOG(decision_level(b), "backup", "msg=\"the service is ahead of this node (a restore?): taking its state\" "
				   "db=%s pos=%s service=%s",
			 db->name, lbuf, sbuf);
		rc = restore_db_changes(b, db, "the service was ahead", *svc, f);
		return rc == 1 ? restore_db(b, db->name, "the service was ahead", *svc, f) : rc;
	}
	struct db_stats stats;
	db_stats(db, -1, &stats);
	uint64_t oldest = stats.oldest_txid;
	if (oldest != 0 && svc->txid >= oldest && svc->txid >= s->hwm) {
		LOG(decision_level(b), "backup", "msg=\"the service diverged from this node (a restore?): applying its snapshot\" "
				   "db=%s pos=%s service=%s hwm=%016" PRIx64,
			 db->name, lbuf, sbuf, s->hwm);
		return restore_db(b, db->name, "the service had diverged", *svc, f);
	}
	LOG(decision_level(b) == LOG_LEVEL_INFO ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG, "backup", "msg=\"the service is behind and not on this node's retained history: uploading a "
			   "snapshot, local data is kept\" db=%s pos=%s service=%s hwm=%016" PRIx64 " oldest=%016" PRIx64,
		 db->name, lbuf, sbuf, s->hwm, oldest);
	return push_snapshot(b, db, s, "the service is behind this node's retained history", f);
}

/* The first valid cluster ID in text other than not_this. */
static bool find_other_id(const char *text, const char *not_this, char *out)
{
	for (const char *p = text ? strstr(text, "LFSC") : NULL; p; p = strstr(p + 1, "LFSC")) {
		char cand[CLUSTER_ID_LEN + 1];
		snprintf(cand, sizeof(cand), "%.*s", CLUSTER_ID_LEN, p);
		if (cluster_id_valid(cand) && strcmp(cand, not_this) != 0) {
			memcpy(out, cand, sizeof(cand));
			return true;
		}
	}
	return false;
}

/* A node that started with no database and no cluster ID (disaster
 * recovery: every node lost its data directory) takes the cluster ID the
 * service remembers for its token's cluster (named in its 422 reply to
 * another ID), or, when the service remembers none, a new one that the
 * service now remembers. Until then the node serves replicas without an
 * ID and they adopt it on their next connection. */
static int ensure_cluster_id(struct backup *b, struct fail *f)
{
	char id[CLUSTER_ID_LEN + 1], known[CLUSTER_ID_LEN + 1];
	cluster_get(b->cluster, id);
	if (id[0])
		return 0;
	int rc = cluster_id_generate(b->probe_id);
	if (rc != 0) {
		fail_set(f, rc, "cannot generate a cluster ID: %s", err_str(rc));
		return rc;
	}
	struct httpc_req x;
	xfer_init(&x, b, BACKUP_MAX_ERROR_BODY);
	rc = xfer_run(b, "GET", "/pos", NULL, &x, BACKUP_POS_TIMEOUT_MS, f);
	const char *adopt = rc == 0 ? b->probe_id : NULL;
	if (rc != 0 && x.status == 422 && find_other_id(x.mem, b->probe_id, known)) {
		adopt = known;
		memset(f, 0, sizeof(*f));
		rc = 0;
	}
	httpc_req_free(&x);
	if (rc == 0 && (rc = cluster_adopt(b->cluster, adopt)) != 0)
		fail_set(f, rc, "cannot store the cluster ID %s: %s", adopt, err_str(rc));
	if (rc == 0)
		LOG_INFO("backup", "msg=\"%s\" cluster_id=%s",
			 adopt == known ? "took the cluster ID the backup service remembers (this node started empty)"
					: "the backup service knew no cluster ID: this node's new one is now the cluster's",
			 adopt);
	b->probe_id[0] = '\0';
	return rc;
}

/* True for a failure that says nothing about one database: the service
 * is unreachable, refuses the token, or the node is stopping. */
static bool service_wide(int rc)
{
	return rc == -ECONNRESET || rc == -ECANCELED || rc == -EACCES || rc == ERR_NOMEM;
}

/* A name from the service for a log line: bytes outside printable ASCII
 * as \xHH, since it may not be valid UTF-8. */
static void escape_name(const char *name, char *out, size_t len)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < len; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", *p);
	}
	out[o] = '\0';
}

/* GET /pos and a decision for every database. */
static int full_sync(struct backup *b, struct fail *f)
{
	if (ensure_cluster_id(b, f) != 0)
		return f->rc;
	struct httpc_req x;
	xfer_init(&x, b, BACKUP_MAX_POS_BODY);
	int rc = xfer_run(b, "GET", "/pos", NULL, &x, BACKUP_POS_TIMEOUT_MS, f);
	json_error_t jerr;
	json_t *root = rc == 0 ? json_loads(x.mem ? x.mem : "", 0, &jerr) : NULL;
	httpc_req_free(&x);
	if (rc != 0)
		return rc;
	if (!json_is_object(root)) {
		json_decref(root);
		fail_set(f, -EPROTO, "GET /pos: the reply is not a JSON object");
		return f->rc;
	}
	int first = 0;
	size_t n = store_count(b->st);
	for (size_t i = 0; i < n && !atomic_load(&b->stopping); i++) {
		struct db *db = store_by_id(b->st, (uint32_t)i);
		if (!db)
			continue;
		struct ltx_pos svc;
		json_t *v = json_object_get(root, db->name);
		bool have = v && parse_pos(v, &svc) == 0;
		if (v && !have)
			LOG_WARN("backup", "msg=\"GET /pos: ignoring a malformed position\" db=%s", db->name);
		rc = decide(b, db, have ? &svc : NULL, f);
		if (rc != 0 && !first)
			first = rc;
	}
	const char *name;
	json_t *v;
	json_object_foreach(root, name, v)
	{
		struct ltx_pos svc;
		if (atomic_load(&b->stopping) || store_find(b->st, name, true))
			continue;
		if (!dbname_valid(name) || parse_pos(v, &svc) != 0) {
			char shown[64];
			escape_name(name, shown, sizeof(shown));
			LOG_ERROR("backup", "msg=\"GET /pos: the service holds a database this node cannot restore (its name "
					    "or position is invalid); skipping it, the others are restored\" name=\"%s\"", shown);
			continue;
		}
		if (svc.txid == 0)
			continue;
		LOG(decision_level(b), "backup", "msg=\"the service has a database this node does not: restoring it\" db=%s "
				   "service_txid=%016" PRIx64,
			 name, svc.txid);
		struct fail one = { 0 };
		rc = restore_db(b, name, "missing on this node", svc, &one);
		if (rc != 0 && !service_wide(rc)) {
			/* The service answered, but about this one database: it must
			 * not keep every other database, and the application, from
			 * starting. It is tried again at every sync. */
			LOG_ERROR("backup", "msg=\"cannot restore a database from the backup service; the others and the "
					    "application go on without it, retrying at every sync\" db=%s err=\"%s\"",
				  name, one.msg);
			continue;
		}
		if (rc != 0) {
			if (!f->rc)
				*f = one;
			if (!first)
				first = rc;
		}
	}
	json_decref(root);
	return first;
}

/* Between syncs: push every database whose position moved past the
 * service's known one. Returns 1 when a sync is needed first. */
static int push_changed(struct backup *b, struct fail *f)
{
	size_t n = store_count(b->st);
	for (size_t i = 0; i < n && !atomic_load(&b->stopping); i++) {
		struct db *db = store_by_id(b->st, (uint32_t)i);
		if (!db)
			continue;
		if (db->id >= b->n_dbs || !b->dbs[db->id].known)
			return 1; /* a database the service's side was not compared for */
		struct bdb *s = &b->dbs[db->id];
		struct ltx_pos local = db_pos(db);
		if (local.txid == s->remote.txid && local.checksum == s->remote.checksum)
			continue;
		int rc = push_from(b, db, s, s->remote, f);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- Thread ----------------------------------------------------------------------- */

/* One warning per kind of failure (transport, refused, HTTP error, ...)
 * while failures follow one another; the repeats go to debug level. */
static void log_failure(struct backup *b, const struct fail *f)
{
	const char *code = f->rc > -1000 && f->rc < 0 ? strerrorname_np(-f->rc) : err_name(f->rc);
	if (!code)
		code = "errno";
	if (b->last_rc == f->rc && b->last_error[0]) {
		LOG_DEBUG("backup", "msg=\"%s (repeated)\" url=\"%s\" err=%s", f->msg, b->base_url, code);
		return;
	}
	b->last_rc = f->rc;
	snprintf(b->last_error, sizeof(b->last_error), "%s", f->msg);
	LOG_WARN("backup", "msg=\"%s; local data is kept, retrying\" url=\"%s\" err=%s", f->msg, b->base_url, code);
}

static void mark_synced(struct backup *b)
{
	pthread_mutex_lock(&b->mu);
	bool first = !b->synced;
	b->synced = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->mu);
	if (first)
		LOG_INFO("backup", "msg=\"in step with the backup service\" url=\"%s\" databases=%zu", b->base_url,
			 store_count(b->st));
}

/* One round: the pushes, or a sync when one is due (or when a push
 * found the service elsewhere). Returns 0 or the error (described in f). */
static int round_once(struct backup *b, int64_t *next_sync, struct fail *f)
{
	if (!b->need_sync && clock_mono_ms() < *next_sync) {
		int rc = push_changed(b, f);
		if (rc == 0)
			return 0;
		if (rc != 1 && rc != ERR_CLOUD_POS_MISMATCH && rc != ERR_NEED_SNAPSHOT)
			return rc;
		memset(f, 0, sizeof(*f)); /* decide again from the service's positions */
	}
	*next_sync = clock_mono_ms() + b->poll_ms;
	int rc = full_sync(b, f);
	if (rc != 0) {
		b->need_sync = true;
		return rc;
	}
	b->need_sync = false;
	b->n_mismatch = 0;
	if (b->last_error[0])
		LOG_INFO("backup", "msg=\"the backup service is reachable again\" url=\"%s\"", b->base_url);
	b->last_error[0] = '\0';
	mark_synced(b);
	return 0;
}

static void *backup_main(void *arg)
{
	struct backup *b = arg;
	int backoff = BACKUP_BACKOFF_MIN_MS;
	int64_t next_sync = 0;
	bool was_primary = false;
	while (!atomic_load(&b->stopping)) {
		uint64_t seq = node_change_seq(&b->st->node);
		if (atomic_exchange(&b->poke, false))
			b->need_sync = true;
		if (!node_is_primary(&b->st->node)) {
			if (was_primary)
				LOG_INFO("backup", "msg=\"this node is no longer the primary: the backup client is idle\"");
			was_primary = false;
			node_wait_change(&b->st->node, seq, 1000);
			continue;
		}
		if (!was_primary)
			b->need_sync = true;
		was_primary = true;
		struct fail f = { 0 };
		int rc = round_once(b, &next_sync, &f);
		if (atomic_load(&b->stopping))
			break;
		int wait_ms;
		if (rc != 0) {
			b->need_sync = true;
			if (rc == ERR_CLOUD_POS_MISMATCH && ++b->n_mismatch < BACKUP_MAX_MISMATCHES)
				continue;
			log_failure(b, &f);
			wait_ms = backoff;
			backoff = backoff * 2 > BACKUP_BACKOFF_MAX_MS ? BACKUP_BACKOFF_MAX_MS : backoff * 2;
			/* Only the stop wakes a backoff early. */
			int64_t until = clock_mono_ms() + wait_ms;
			while (!atomic_load(&b->stopping) && clock_mono_ms() < until)
				node_wait_change(&b->st->node, node_change_seq(&b->st->node), (int)(until - clock_mono_ms()));
			continue;
		}
		backoff = BACKUP_BACKOFF_MIN_MS;
		if (b->need_sync)
			continue;
		wait_ms = (int)(next_sync - clock_mono_ms());
		if (wait_ms > 0)
			node_wait_change(&b->st->node, seq, wait_ms);
	}
	return NULL;
}

/* ---- Watcher ---------------------------------------------------------------------- */

/* The watcher keeps one GET /pos?wait=<generation> open on its own
 * connection while this node is the primary and the first sync is done
 * (the cluster ID is settled then). The service answers when a restore
 * (or a fork, an upload, a delete) moved a database of the cluster, or
 * after BACKUP_WATCH_WAIT_MS; a reply whose Litefs-Pos-Generation differs
 * from the one sent sets poke and wakes the main thread, which compares
 * positions at once instead of within the next second. A service that
 * sends no Litefs-Pos-Generation (LiteFS Cloud, litefs-backup, an older
 * litefs-cloud) is never sent ?wait=: the first plain /pos tells, and the
 * watcher only asks again every BACKUP_WATCH_UNSUPPORTED_MS. The main
 * thread's once-a-second comparison stays either way: it covers a
 * service instance that did not see the restore (several instances
 * serving one bucket). */

#define BACKUP_WATCH_WAIT_MS 25000
#define BACKUP_WATCH_TIMEOUT_MS (BACKUP_WATCH_WAIT_MS + 10000L)
#define BACKUP_WATCH_UNSUPPORTED_MS 60000

static bool is_synced(struct backup *b)
{
	pthread_mutex_lock(&b->mu);
	bool s = b->synced;
	pthread_mutex_unlock(&b->mu);
	return s;
}

/* Sleeps ms, or less when the client stops. */
static void watch_sleep(struct backup *b, int ms)
{
	clock_wait_flag(&b->mu, &b->cond, NULL, &b->stopping, ms);
}

/* One long poll: 0 with the reply's generation in now ("" when the
 * service sent none), or an error described in f. */
static int watch_once(struct backup *b, const char *gen, char *now, size_t now_len, struct fail *f)
{
	char timeout[16];
	snprintf(timeout, sizeof(timeout), "%d", BACKUP_WATCH_WAIT_MS);
	const char *const query[] = { "wait", gen[0] ? gen : NULL, "timeout", gen[0] ? timeout : NULL,
				      "cluster", b->cluster_name, NULL };
	struct httpc_req x;
	httpc_req_init(&x, b->watch_curl);
	x.mem_max = BACKUP_MAX_POS_BODY;
	x.user_agent = "litefs-backup";
	x.connect_timeout_ms = BACKUP_CONNECT_TIMEOUT_MS;
	x.progress = on_progress;
	x.progress_ctx = b;
	int rc = xfer_run_query(b, "GET", "/pos", query, &x, gen[0] ? BACKUP_WATCH_TIMEOUT_MS : BACKUP_POS_TIMEOUT_MS, f);
	now[0] = '\0';
	if (rc == 0)
		httpc_header(&x, "Litefs-Pos-Generation", now, now_len);
	httpc_req_free(&x);
	return rc;
}

static void *watch_main(void *arg)
{
	struct backup *b = arg;
	char gen[24] = "", now[24];
	bool told_unsupported = false;
	int backoff = BACKUP_BACKOFF_MIN_MS;
	while (!atomic_load(&b->stopping)) {
		if (!node_is_primary(&b->st->node) || !is_synced(b)) {
			gen[0] = '\0';
			watch_sleep(b, 200);
			continue;
		}
		struct fail f = { 0 };
		int rc = watch_once(b, gen, now, sizeof(now), &f);
		if (atomic_load(&b->stopping))
			break;
		if (rc != 0) {
			/* The main thread reports the service's failures. */
			LOG_DEBUG("backup", "msg=\"long poll failed: %s\" err=\"%s\"", f.msg, err_str(rc));
			gen[0] = '\0';
			watch_sleep(b, backoff);
			backoff = backoff * 2 > BACKUP_BACKOFF_MAX_MS ? BACKUP_BACKOFF_MAX_MS : backoff * 2;
			continue;
		}
		backoff = BACKUP_BACKOFF_MIN_MS;
		if (!now[0]) {
			if (!told_unsupported)
				LOG_INFO("backup", "msg=\"the backup service does not notify restores (no Litefs-Pos-Generation "
						   "in GET /pos): positions are compared every second\" url=\"%s\"", b->base_url);
			told_unsupported = true;
			gen[0] = '\0';
			watch_sleep(b, BACKUP_WATCH_UNSUPPORTED_MS);
			continue;
		}
		if (strcmp(gen, now) != 0) {
			/* First reply (after a start, an error or a promotion) or a
			 * restore: compare positions now. */
			if (gen[0])
				LOG_DEBUG("backup", "msg=\"the service says positions moved (a restore?): comparing now\" "
						    "generation=%s", now);
			atomic_store(&b->poke, true);
			node_notify_change(&b->st->node);
		}
		snprintf(gen, sizeof(gen), "%s", now);
	}
	return NULL;
}

/* ---- Public ----------------------------------------------------------------------- */

bool backup_configured(const struct config *cfg)
{
	return !strcmp(cfg->backup.type, "litefs-cloud");
}

static void backup_free(struct backup *b)
{
	if (!b)
		return;
	if (b->curl)
		curl_easy_cleanup(b->curl);
	if (b->watch_curl)
		curl_easy_cleanup(b->watch_curl);
	free(b->base_url);
	free(b->auth);
	free(b->cluster_name);
	free(b->tmp_dir);
	free(b->data_dir);
	free(b->dbs);
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cond);
	free(b);
}

/* The Authorization line: the token as given when it names its scheme
 * (LiteFS Cloud tokens start with "FlyV1 "), else FlyV1 <token>. */
static int make_auth(struct backup *b, const char *token)
{
	if (!token[0])
		return 0;
	bool has_scheme = !strncasecmp(token, "FlyV1 ", 6) || !strncasecmp(token, "Bearer ", 7);
	if (asprintf(&b->auth, "Authorization: %s%s", has_scheme ? "" : "FlyV1 ", token) < 0) {
		b->auth = NULL;
		return ERR_NOMEM;
	}
	return 0;
}

static int copy_config(struct backup *b, const struct config *cfg, const char *data_dir)
{
	const char *base = cfg->backup.url;
	size_t bl = strlen(base);
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (bl == 0)
		return ERR_CONFIG;
	if (asprintf(&b->base_url, "%.*s", (int)bl, base) < 0) {
		b->base_url = NULL;
		return ERR_NOMEM;
	}
	if (!(b->data_dir = strdup(data_dir)))
		return ERR_NOMEM;
	if (asprintf(&b->tmp_dir, "%s/tmp", data_dir) < 0) {
		b->tmp_dir = NULL;
		return ERR_NOMEM;
	}
	if (cfg->backup.cluster[0] && !(b->cluster_name = strdup(cfg->backup.cluster)))
		return ERR_NOMEM;
	int64_t poll = cfg->backup.full_sync_interval_ms;
	b->poll_ms = poll > 0 && poll < BACKUP_POLL_MAX_MS ? (int)poll : BACKUP_POLL_MAX_MS;
	return make_auth(b, cfg->backup.auth_token);
}

int backup_start(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
		 struct backup **out)
{
	*out = NULL;
	struct backup *b = calloc(1, sizeof(*b));
	if (!b)
		return ERR_NOMEM;
	b->st = st;
	b->cluster = cluster;
	atomic_init(&b->stopping, false);
	atomic_init(&b->poke, false);
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cond, NULL);
	int rc = copy_config(b, cfg, data_dir);
	if (rc == 0 && mkdir(b->tmp_dir, 0700) != 0 && errno != EEXIST)
		rc = -errno;
	if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		rc = ERR_NOMEM;
	if (rc == 0 && !(b->curl = curl_easy_init()))
		rc = ERR_NOMEM;
	if (rc == 0 && !(b->watch_curl = curl_easy_init()))
		rc = ERR_NOMEM;
	if (rc == 0 && (rc = -pthread_create(&b->thread, NULL, backup_main, b)) == 0)
		b->started = true;
	if (rc == 0 && (rc = -pthread_create(&b->watch_thread, NULL, watch_main, b)) == 0)
		b->watch_started = true;
	if (rc != 0) {
		LOG_ERROR("backup", "msg=\"cannot start the backup client\" err=\"%s\"", err_str(rc));
		if (b->started)
			backup_stop(b);
		else
			backup_free(b);
		return rc;
	}
	LOG_INFO("backup", "msg=\"backing up to the service\" url=\"%s\" poll_ms=%d auth=%s", b->base_url,
		 b->poll_ms, b->auth ? "token" : "none");
	*out = b;
	return 0;
}

bool backup_wait_synced(struct backup *b, int timeout_ms)
{
	return clock_wait_flag(&b->mu, &b->cond, &b->synced, &b->stopping, timeout_ms);
}

void backup_stop(struct backup *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	atomic_store(&b->stopping, true);
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->mu);
	node_notify_change(&b->st->node);
	/* A snapshot apply may be waiting for a reader's transaction to end. */
	node_cancel_applies(&b->st->node);
	if (b->started)
		pthread_join(b->thread, NULL);
	if (b->watch_started)
		pthread_join(b->watch_thread, NULL);
	curl_global_cleanup();
	backup_free(b);
}
