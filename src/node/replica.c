/*
 * replica.c — the replication client (see replica.h; the protocol is at
 * the top of stream.c).
 *
 * One thread, one connection at a time:
 *
 *   connect:  POST <advertise-url>/stream with hello + this node's
 *             positions (every database it has, or the lease.databases
 *             filter with the ONLY flag), the cluster ID if it has one,
 *             and the shared secret if configured.
 *   200:      check or adopt the primary's cluster ID, set the role
 *             (replica of <primary hostname>), then feed every body chunk
 *             libcurl delivers to the incremental decoder:
 *               ltx           spooled to one temp file in data.dir/tmp
 *                             (never held in memory), then store_apply();
 *               full image    of 1 MiB or more (a snapshot frame, or
 *                             the chain's first record for a database
 *                             this node has no position of): staged
 *                             into the database's chain and decoded into
 *                             its new file while it arrives (snappipe.h),
 *                             then applied; spooled as above when that
 *                             cannot start;
 *               ready         the first full sync: replica_wait_synced()
 *                             returns true; caught up now;
 *               heartbeat     caught up as of its arrival once every
 *                             position in it has been applied;
 *               end           the primary stops: reconnect.
 *   failure:  any error (connection refused or lost, HTTP error, a bad
 *             cluster ID or secret, a malformed frame, an LTX the store
 *             refuses) ends the connection with ONE log line saying why;
 *             the role loses its primary (`.primary` disappears); every
 *             database keeps its last good state (store_apply validates
 *             a whole LTX before it changes anything); after a backoff of
 *             100 ms doubling to 2 s (reset by a connection that got its
 *             first frame) the thread connects again with its new
 *             positions, so the stream resumes exactly where it broke.
 *
 * A failure that repeats with the same message is logged at debug level
 * after the first time, so a primary that is down for an hour does not
 * write 1800 identical warnings.
 *
 * Stopping: replica_stop() sets a flag that libcurl's progress callback
 * (called at least once a second) and the write callback check.
 *
 * Acknowledgements (synchronous replication; stream.c "ACKNOWLEDGEMENTS"):
 * when the primary's 200 names a Litefs-Stream-Id, a second thread (the
 * acker) makes the positions applied since its last ack durable —
 * db_sync_position(): the db file and the segment fsynced — and POSTs
 * them to /stream/ack on a kept-alive connection of its own. The stream
 * thread only flags that something was applied, so applies never wait
 * for the disk or the network of an ack, and one ack covers every record
 * applied while the previous one was in flight. A primary that names no
 * token (it does not wait, or is older) is never acked.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "base/clock.h"
#include "proto/cluster.h"
#include "node/config.h"
#include "node/db.h"
#include "base/err.h"
#include "proto/dbname.h"
#include "base/fileio.h"
#include "base/httpc.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "node/replica.h"
#include "node/snappipe.h"
#include "node/store.h"
#include "proto/stream.h"

#define REPLICA_CONNECT_TIMEOUT_MS 2000L
/* No byte for this long (heartbeats come every second) means the peer is
 * gone even if the connection is not closed. Long enough for the primary
 * to spool a big snapshot before it starts sending it. */
#define REPLICA_STALL_S 30L
#define REPLICA_MSG_LEN 512
/* libcurl's receive buffer: a snapshot of a big database arrives in
 * fewer, larger pieces (its default is 16 KiB). */
#define REPLICA_RECV_BUFFER (512L << 10)
/* Full images from this size on go through snappipe.h; smaller ones are
 * not worth a thread. */
#define REPLICA_PIPE_MIN (1u << 20)
/* An ack is a few hundred bytes on a kept-alive connection; one that takes
 * longer than this is retried (a commit waits at most lease.sync-timeout). */
#define REPLICA_ACK_TIMEOUT_MS 5000L

struct replica {
	struct store *st;          /* borrowed */
	struct cluster *cluster;   /* borrowed */
	char *url;                 /* owned: <advertise-url>/stream */
	char *secret;              /* owned; NULL: none */
	char *fallback_host;       /* owned: lease.hostname ("" if unset) */
	char *tmp_dir;             /* owned: <data.dir>/tmp */
	char **only;               /* owned: lease.databases (NULL: all) */
	size_t n_only;

	pthread_t thread;
	bool started;
	atomic_bool stopping;
	pthread_mutex_t mu;        /* guards synced, the ack_* fields, url (dynamic), gen, acked_gen; leaf lock */
	pthread_cond_t cond;       /* synced became true, stopping, gen or acked_gen moved */
	bool synced;

	uint64_t replica_id;       /* Litefs-Replica-Id, drawn at start */
	char *ack_url;             /* owned: <the primary's URL>/stream/ack; NULL: none */
	pthread_t ack_thread;
	bool ack_started;
	pthread_cond_t ack_cond;   /* ack_pending set, or stopping */
	uint64_t ack_token;        /* the current stream's Litefs-Stream-Id; 0: none */
	bool ack_pending;          /* something was applied since the last ack */

	/* Following a primary that moves (the etcd lease, replica_follow):
	 * url is NULL while there is none to follow; gen counts the
	 * changes, acked_gen the last one the thread has taken (its
	 * connection to the previous primary has ended); drop ends the
	 * current connection. */
	bool dynamic;
	uint64_t gen, acked_gen;
	atomic_bool drop;

	char last_error[REPLICA_MSG_LEN]; /* thread only: the last failure logged */
};

/* The state of one connection (thread only). */
struct conn {
	struct replica *r;
	struct httpc_req q;        /* the request; its status and error body */
	struct stream_parser parser;
	bool began;                /* the 200 was accepted (cluster checked, role set) */
	bool got_frame;            /* at least one frame after hello arrived */
	char primary_id[CLUSTER_ID_LEN + 8];
	char primary_host[256];

	int spool_fd;              /* reused for every LTX */
	char db_name[STREAM_MAX_NAME + 1];
	uint32_t ltx_len;
	bool skip;                 /* frame of a database we do not follow */
	bool snapshot;
	struct snappipe *pipe;     /* the snapshot being received, if staged on the way */
	bool diverged;       /* the frame says the local history diverged */

	/* The last heartbeat not yet reached. */
	struct stream_entry *hb;
	uint32_t n_hb;
	int64_t hb_ms;

	int fail;                  /* first error decided by a callback */
	char fail_msg[REPLICA_MSG_LEN];
	uint64_t n_applied;
};


static bool followed(const struct replica *r, const char *name)
{
	if (!r->only)
		return true;
	for (size_t i = 0; i < r->n_only; i++)
		if (!strcmp(r->only[i], name))
			return true;
	return false;
}

/* Records the connection's first failure (a later one is dropped). The
 * stream callbacks then return c->fail, the code that ends the stream. */
static void conn_fail(struct conn *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_fail(struct conn *c, int rc, const char *fmt, ...)
{
	if (c->fail)
		return;
	c->fail = rc;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
	va_end(ap);
}

/* ---- Request body --------------------------------------------------------- */

/* hello + positions: every database this node has a position for (or the
 * filter's names, with txid 0 for those it lacks). Caller frees *out. */
static int build_request(struct replica *r, uint8_t **out, size_t *out_len)
{
	size_t n = store_count(r->st);
	size_t cap = n + r->n_only + 1;
	struct stream_list l = { .time_ms = clock_wall_ms(), .flags = r->only ? STREAM_LIST_ONLY : 0 };
	l.entries = calloc(cap, sizeof(*l.entries));
	if (!l.entries)
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(r->st, (uint32_t)i);
		if (!db || !followed(r, db->name))
			continue;
		struct ltx_pos p = db_pos(db);
		if (p.txid == 0 || strlen(db->name) > STREAM_MAX_NAME)
			continue;
		struct stream_entry *e = &l.entries[l.n++];
		snprintf(e->name, sizeof(e->name), "%s", db->name);
		e->txid = p.txid;
		e->checksum = p.checksum;
	}
	for (size_t i = 0; i < r->n_only; i++) {
		bool have = false;
		for (uint32_t k = 0; k < l.n && !have; k++)
			have = !strcmp(l.entries[k].name, r->only[i]);
		if (!have && strlen(r->only[i]) <= STREAM_MAX_NAME)
			snprintf(l.entries[l.n++].name, STREAM_MAX_NAME + 1, "%s", r->only[i]);
	}
	uint8_t *list = NULL;
	size_t list_len = 0;
	int rc = stream_encode_list(STREAM_POSITIONS, &l, &list, &list_len);
	free(l.entries);
	if (rc != 0)
		return rc;
	uint8_t *buf = malloc(STREAM_HDR_SIZE + STREAM_HELLO_LEN + list_len);
	if (!buf) {
		free(list);
		return ERR_NOMEM;
	}
	size_t h = stream_encode_hello(buf);
	memcpy(buf + h, list, list_len);
	free(list);
	*out = buf;
	*out_len = h + list_len;
	return 0;
}

/* ---- Frames --------------------------------------------------------------- */

static void ack_applied(struct replica *r); /* below: Acknowledgements */

/* After an apply or a heartbeat: caught up as of the heartbeat once every
 * position in it has been reached. */
static void check_caught_up(struct conn *c)
{
	if (!c->hb)
		return;
	for (uint32_t i = 0; i < c->n_hb; i++) {
		struct db *db = store_find(c->r->st, c->hb[i].name, true);
		struct ltx_pos p = db ? db_pos(db) : (struct ltx_pos){ 0 };
		if (p.txid < c->hb[i].txid || (p.txid == c->hb[i].txid && p.checksum != c->hb[i].checksum))
			return;
	}
	node_set_caught_up(&c->r->st->node, c->hb_ms);
	free(c->hb);
	c->hb = NULL;
	c->n_hb = 0;
}

static void on_heartbeat(struct conn *c, const struct stream_list *l)
{
	free(c->hb);
	c->hb = NULL;
	c->n_hb = 0;
	c->hb_ms = clock_wall_ms();
	if (l->n > 0 && !(c->hb = calloc(l->n, sizeof(*c->hb))))
		return; /* out of memory: lag simply grows until the next one */
	for (uint32_t i = 0; i < l->n; i++)
		if (followed(c->r, l->entries[i].name))
			c->hb[c->n_hb++] = l->entries[i];
	if (!c->hb) /* an empty heartbeat: nothing to reach */
		c->hb = calloc(1, sizeof(*c->hb));
	check_caught_up(c);
}

static void on_ready(struct conn *c)
{
	struct replica *r = c->r;
	node_set_caught_up(&r->st->node, clock_wall_ms());
	pthread_mutex_lock(&r->mu);
	bool first = !r->synced;
	r->synced = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	LOG_INFO("repl", "msg=\"caught up with the primary\" primary=%s applied=%" PRIu64 " first=%s",
		 c->primary_host, c->n_applied, first ? "true" : "false");
}

static int on_ltx_begin(struct conn *c, const struct stream_event *ev)
{
	snprintf(c->db_name, sizeof(c->db_name), "%s", ev->name);
	c->ltx_len = ev->ltx_len;
	c->snapshot = ev->snapshot;
	c->diverged = ev->diverged;
	c->skip = !followed(c->r, ev->name);
	if (!dbname_valid(ev->name)) {
		conn_fail(c, ERR_REPL_PROTOCOL, "invalid database name in an ltx frame");
		return c->fail;
	}
	snappipe_abort(c->pipe); /* never one here: the parser ends a frame before the next */
	c->pipe = NULL;
	if (!c->skip && ftruncate(c->spool_fd, 0) != 0) {
		conn_fail(c, -errno, "cannot reset the spool file: %s", strerror(errno));
		return c->fail;
	}
	return 0;
}

/* Whether this node has a position for the frame's database (then a
 * record that is not a snapshot frame may be one it already has: see
 * on_ltx_end()). */
static bool has_state(struct conn *c)
{
	struct db *db = store_find(c->r->st, c->db_name, true);
	return db && db_pos(db).txid != 0;
}

static int on_ltx_data(struct conn *c, const struct stream_event *ev)
{
	if (c->skip)
		return 0;
	off_t off = (off_t)(c->ltx_len - (uint32_t)(c->parser.ltx_left + ev->len));
	/* A big record that is a full image (a snapshot frame, or the chain's
	 * first record sent to a replica that starts from nothing) is staged
	 * and decoded on the way; its header is in the first piece. */
	if (off == 0 && c->ltx_len >= REPLICA_PIPE_MIN && ev->len >= LTX_HEADER_SIZE && (c->snapshot || !has_state(c))) {
		struct ltx_header h;
		int rc = ltx_header_decode(ev->data, &h) == 0 && ltx_header_is_snapshot(&h)
				 ? snappipe_begin(c->r->st, c->db_name, c->ltx_len, &c->pipe)
				 : 0;
		if (rc != 0)
			LOG_WARN("repl", "msg=\"cannot stage a snapshot as it arrives; spooling it\" db=%s err=\"%s\"",
				 c->db_name, err_str(rc));
	}
	if (c->pipe) {
		int rc = snappipe_write(c->pipe, ev->data, ev->len);
		if (rc != 0)
			conn_fail(c, rc, "cannot stage a snapshot: %s", err_str(rc));
		return rc;
	}
	const uint8_t *p = ev->data;
	size_t left = ev->len;
	while (left > 0) {
		ssize_t n = pwrite(c->spool_fd, p, left, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			conn_fail(c, n < 0 ? -errno : -EIO, "cannot spool an LTX file: %s", n < 0 ? strerror(errno) : "short write");
			return c->fail;
		}
		p += n;
		off += n;
		left -= (size_t)n;
	}
	return 0;
}

/* The TXID range of the spooled LTX, for log lines (0 when unreadable). */
static void spooled_txids(struct conn *c, uint64_t *min_txid, uint64_t *max_txid)
{
	uint8_t hdr[LTX_HEADER_SIZE];
	struct ltx_header h;
	*min_txid = *max_txid = 0;
	if (pread(c->spool_fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) && ltx_header_decode(hdr, &h) == 0) {
		*min_txid = h.min_txid;
		*max_txid = h.max_txid;
	}
}

static int on_ltx_end(struct conn *c)
{
	if (c->skip) {
		LOG_DEBUG("repl", "msg=\"ignored a database outside lease.databases\" db=%s", c->db_name);
		return 0;
	}
	struct db *db = store_find(c->r->st, c->db_name, true);
	struct ltx_pos local = db ? db_pos(db) : (struct ltx_pos){ 0 };
	uint64_t min_txid, max_txid, post = 0;
	struct ltx_header own;
	if (db && !c->snapshot && !c->pipe && ltxlog_read_ends(c->spool_fd, 0, c->ltx_len, &own, &post) == 0 &&
	    local.txid != 0 && (own.max_txid < local.txid || (own.max_txid == local.txid && post == local.checksum))) {
		/* Transactions committed here under the write lock
		 * (writelock.h): the primary stored the same LTX files that
		 * this node's chain already holds, and the stream may bring
		 * them back after later ones were committed here. (A history
		 * that diverged is found when the stream reconnects: the
		 * primary checks this node's position against its chain.) */
		LOG_DEBUG("repl", "msg=\"already have it (write lock)\" db=%s txid=%016" PRIx64, c->db_name, local.txid);
		c->n_applied++;
		check_caught_up(c);
		return 0;
	}
	int rc;
	if (c->pipe) {
		rc = snappipe_finish(c->pipe, &min_txid, &max_txid);
		c->pipe = NULL;
	} else {
		rc = store_apply(c->r->st, c->db_name, c->spool_fd, 0, c->ltx_len);
		spooled_txids(c, &min_txid, &max_txid);
	}
	if (rc == 0 && c->diverged)
		LOG_WARN("repl", "msg=\"this node's history diverged from the primary's: its local transactions were "
				 "discarded and the database replaced by the primary's snapshot\" db=%s local_txid=%016" PRIx64
				 " local_checksum=%016" PRIx64 " primary_txid=%016" PRIx64,
			 c->db_name, local.txid, local.checksum, max_txid);
	if (rc != 0) {
		conn_fail(c, rc, "the primary's %s for db %s (txid %016" PRIx64 "-%016" PRIx64 ") was refused: %s",
			  c->snapshot ? "snapshot" : "LTX", c->db_name, min_txid, max_txid, err_str(rc));
		return c->fail;
	}
	/* What is applied only moves forward: apply accepts an LTX file only
	 * when it follows the local position (a snapshot may replace it). */
	if (db && !c->snapshot) {
		struct ltx_pos now = db_pos(db);
		CHECK_MSG(now.txid > local.txid, "db=%s txid=%016" PRIx64 " before=%016" PRIx64, c->db_name,
			  now.txid, local.txid);
	}
	c->n_applied++;
	ack_applied(c->r);
	if (c->snapshot)
		LOG_INFO("repl", "msg=\"applied a snapshot from the primary\" db=%s txid=%016" PRIx64 " bytes=%u",
			 c->db_name, max_txid, c->ltx_len);
	else
		LOG_DEBUG("repl", "msg=\"applied\" db=%s txid=%016" PRIx64, c->db_name, max_txid);
	check_caught_up(c);
	return 0;
}

static int on_event(struct conn *c, const struct stream_event *ev)
{
	if (ev->kind != STREAM_EV_HELLO)
		c->got_frame = true;
	switch (ev->kind) {
	case STREAM_EV_LTX_BEGIN: return on_ltx_begin(c, ev);
	case STREAM_EV_LTX_DATA: return on_ltx_data(c, ev);
	case STREAM_EV_LTX_END: return on_ltx_end(c);
	case STREAM_EV_LIST: on_heartbeat(c, ev->list); return 0;
	case STREAM_EV_READY: on_ready(c); return 0;
	case STREAM_EV_END:
		LOG_INFO("repl", "msg=\"the primary ended the stream (it is stopping)\" primary=%s", c->primary_host);
		return 0;
	default: return 0;
	}
}

/* ---- Acknowledgements ---------------------------------------------------- */

/* A new stream (token != 0) acks its positions at once: a record applied
 * in an earlier connection may be what a commit waits for. stream_url is
 * the stream's URL (acks go to <stream_url>/ack: with a moving primary it
 * is the current one); NULL keeps the last. */
static void ack_set_token(struct replica *r, uint64_t token, const char *stream_url)
{
	char *url = NULL;
	if (stream_url && asprintf(&url, "%s/ack", stream_url) < 0)
		url = NULL;
	pthread_mutex_lock(&r->mu);
	if (url) {
		free(r->ack_url);
		r->ack_url = url;
	}
	if (!r->ack_url)
		token = 0; /* nowhere to send acks (out of memory) */
	r->ack_token = token;
	r->ack_pending = token != 0;
	pthread_cond_broadcast(&r->ack_cond);
	pthread_mutex_unlock(&r->mu);
}

static void ack_applied(struct replica *r)
{
	pthread_mutex_lock(&r->mu);
	if (r->ack_token && !r->ack_pending) {
		r->ack_pending = true;
		pthread_cond_broadcast(&r->ack_cond);
	}
	pthread_mutex_unlock(&r->mu);
}

/* The ack frame of every followed database whose durable position moved
 * past sent[] (indexed by database id, grown as needed). Caller frees
 * *out. 0 with *out NULL when nothing moved. */
static int ack_build(struct replica *r, uint64_t **sent, size_t *n_sent, uint64_t *txids, uint8_t **out,
		     size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	size_t n = store_count(r->st);
	if (n > *n_sent) {
		uint64_t *t = realloc(*sent, n * sizeof(*t));
		if (!t)
			return ERR_NOMEM;
		memset(t + *n_sent, 0, (n - *n_sent) * sizeof(*t));
		*sent = t;
		*n_sent = n;
	}
	struct stream_list l = { .time_ms = clock_wall_ms() };
	if (!(l.entries = calloc(n ? n : 1, sizeof(*l.entries))))
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(r->st, (uint32_t)i);
		txids[i] = (*sent)[i];
		if (!db || !followed(r, db->name) || strlen(db->name) > STREAM_MAX_NAME || db_pos(db).txid <= (*sent)[i])
			continue;
		struct ltx_pos p;
		if (db_sync_position(db, &p) != 0 || p.txid <= (*sent)[i])
			continue; /* not durable: not acked (the commit may time out) */
		struct stream_entry *e = &l.entries[l.n++];
		snprintf(e->name, sizeof(e->name), "%s", db->name);
		e->txid = p.txid;
		e->checksum = p.checksum;
		txids[i] = p.txid;
	}
	int rc = 0;
	if (l.n > 0) {
		uint8_t *list = NULL;
		size_t list_len = 0;
		rc = stream_encode_list(STREAM_ACK, &l, &list, &list_len);
		uint8_t *buf = rc == 0 ? malloc(STREAM_HDR_SIZE + STREAM_HELLO_LEN + list_len) : NULL;
		if (rc == 0 && !buf)
			rc = ERR_NOMEM;
		if (rc == 0) {
			size_t h = stream_encode_hello(buf);
			memcpy(buf + h, list, list_len);
			*out = buf;
			*out_len = h + list_len;
		}
		free(list);
	}
	free(l.entries);
	return rc;
}

/* POSTs one ack. Returns 0 (recorded), 1 when the primary no longer
 * knows the token (404: stop acking on it), or an error with msg set. */
static int ack_post(struct replica *r, CURL *curl, const char *url, uint64_t token, const uint8_t *body,
		    size_t len, char *msg, size_t msg_len)
{
	char id[CLUSTER_ID_LEN + 1];
	struct curl_slist *h = NULL;
	int rc = httpc_add_header(&h, "Content-Type: application/vnd.litefs.stream");
	if (rc == 0)
		rc = httpc_add_header(&h, "Expect:");
	if (rc == 0)
		rc = httpc_add_header(&h, "Litefs-Stream-Id: %016" PRIx64, token);
	cluster_get(r->cluster, id);
	if (rc == 0 && id[0])
		rc = httpc_add_header(&h, "Litefs-Cluster-Id: %s", id);
	if (rc == 0 && r->secret)
		rc = httpc_add_header(&h, "Authorization: Bearer %s", r->secret);
	if (rc != 0) {
		snprintf(msg, msg_len, "cannot prepare an ack: %s", err_str(rc));
		return rc;
	}
	struct httpc_req q;
	httpc_req_init(&q, curl);
	q.method = "POST";
	q.url = url;
	q.headers = h;
	q.up_buf = body;
	q.up_buf_len = len;
	q.connect_timeout_ms = REPLICA_CONNECT_TIMEOUT_MS;
	q.timeout_ms = REPLICA_ACK_TIMEOUT_MS;
	q.user_agent = "litefs-replica";
	CURLcode cc = httpc_perform(&q);
	if (cc != CURLE_OK) {
		snprintf(msg, msg_len, "cannot send an acknowledgement to the primary: %s", httpc_transport_error(&q));
		rc = -ECONNRESET;
	} else if (q.status == 404) {
		rc = 1;
	} else if (q.status != 200) {
		struct httpc_error e;
		httpc_error_parse(&q, &e);
		httpc_text_for_log(e.text);
		snprintf(msg, msg_len, "the primary refused an acknowledgement: HTTP %ld: %.300s", q.status, e.text);
		rc = ERR_REPL_PROTOCOL;
	}
	httpc_req_free(&q);
	curl_slist_free_all(h);
	return rc;
}

static void *ack_main(void *arg)
{
	struct replica *r = arg;
	CURL *curl = curl_easy_init();
	uint64_t *sent = NULL, *txids = NULL;
	size_t n_sent = 0, n_txids = 0;
	uint64_t sent_token = 0;
	bool failing = false;
	pthread_mutex_lock(&r->mu);
	while (!atomic_load(&r->stopping)) {
		if (!r->ack_token || !r->ack_pending) {
			pthread_cond_wait(&r->ack_cond, &r->mu);
			continue;
		}
		uint64_t token = r->ack_token;
		r->ack_pending = false;
		/* A copy: ack_set_token() replaces the URL when the primary moves. */
		char *url = strdup(r->ack_url);
		pthread_mutex_unlock(&r->mu);
		if (token != sent_token && sent)
			memset(sent, 0, n_sent * sizeof(*sent));
		sent_token = token;
		size_t n = store_count(r->st);
		uint8_t *body = NULL;
		size_t len = 0;
		char msg[REPLICA_MSG_LEN] = "";
		int rc = 0;
		if (n > n_txids) {
			uint64_t *t = realloc(txids, n * sizeof(*t));
			rc = t ? 0 : ERR_NOMEM;
			if (t) {
				txids = t;
				n_txids = n;
			}
		}
		if (rc == 0)
			rc = ack_build(r, &sent, &n_sent, txids, &body, &len);
		if (rc == 0 && body && (!curl || !url))
			rc = ERR_NOMEM;
		if (rc == 0 && body)
			rc = ack_post(r, curl, url, token, body, len, msg, sizeof(msg));
		free(body);
		if (rc == 0 && len > 0) {
			for (size_t i = 0; i < n && i < n_sent; i++)
				sent[i] = txids[i];
			if (failing)
				LOG_INFO("repl", "msg=\"acknowledgements reach the primary again\"");
			failing = false;
		} else if (rc == 1) {
			LOG_DEBUG("repl", "msg=\"the primary no longer knows this stream; acks stop until it reconnects\"");
		} else if (rc != 0) {
			if (!msg[0])
				snprintf(msg, sizeof(msg), "cannot acknowledge: %s", err_str(rc));
			if (!failing)
				LOG_WARN("repl", "msg=\"%s; retrying\" url=\"%s\"", msg, url ? url : "");
			failing = true;
		}
		free(url);
		pthread_mutex_lock(&r->mu);
		if (rc == 1 && r->ack_token == token)
			r->ack_token = 0;
		if (rc < 0 && r->ack_token == token) {
			/* Retry after a pause (the stream reconnects if the
			 * primary is gone, and brings a new token). */
			r->ack_pending = true;
			struct timespec until = clock_deadline(REPLICA_BACKOFF_MIN_MS);
			pthread_cond_timedwait(&r->ack_cond, &r->mu, &until);
		}
	}
	pthread_mutex_unlock(&r->mu);
	free(sent);
	free(txids);
	if (curl)
		curl_easy_cleanup(curl);
	return NULL;
}

/* ---- libcurl callbacks ---------------------------------------------------- */

/* The first body bytes of a 200: the cluster ID, then the role. */
static int begin_stream(struct conn *c)
{
	struct replica *r = c->r;
	httpc_header(&c->q, "Litefs-Cluster-Id", c->primary_id, sizeof(c->primary_id));
	httpc_header(&c->q, "Litefs-Primary-Hostname", c->primary_host, sizeof(c->primary_host));
	char tok[32] = "";
	httpc_header(&c->q, "Litefs-Stream-Id", tok, sizeof(tok));
	char *end = NULL;
	uint64_t token = tok[0] ? strtoull(tok, &end, 16) : 0;
	ack_set_token(r, tok[0] && !*end ? token : 0, c->q.url);
	if (c->primary_id[0]) {
		int rc = cluster_adopt(r->cluster, c->primary_id);
		if (rc == ERR_REPL_CLUSTER || rc == ERR_INVAL) {
			char mine[CLUSTER_ID_LEN + 1];
			cluster_get(r->cluster, mine);
			conn_fail(c, ERR_REPL_CLUSTER, "the primary is in cluster %.24s, this node in %s", c->primary_id,
				  mine);
			return c->fail;
		}
		if (rc != 0) {
			conn_fail(c, rc, "cannot store the cluster ID: %s", err_str(rc));
			return c->fail;
		}
	}
	if (!c->primary_host[0])
	{
		pthread_mutex_lock(&r->mu);
		snprintf(c->primary_host, sizeof(c->primary_host), "%s", r->fallback_host);
		pthread_mutex_unlock(&r->mu);
	}
	node_set_role(&r->st->node, false, c->primary_host);
	char proxy_url[256] = "";
	httpc_header(&c->q, "Litefs-Proxy-Url", proxy_url, sizeof(proxy_url));
	if (proxy_url[0])
		node_set_primary_proxy(&r->st->node, proxy_url);
	c->began = true;
	/* While a failure repeats, each retry connects again: say so once. */
	if (r->last_error[0])
		LOG_DEBUG("repl", "msg=\"connected to the primary\" primary=%s url=\"%s\"", c->primary_host, c->q.url);
	else
		LOG_INFO("repl", "msg=\"connected to the primary\" primary=%s url=\"%s\"", c->primary_host, c->q.url);
	return 0;
}

/* A 2xx body: the stream (any other reply's body is kept by httpc for
 * its error text). */
static size_t on_body(void *arg, const char *buf, size_t len)
{
	struct conn *c = arg;
	if (atomic_load(&c->r->stopping) || atomic_load(&c->r->drop))
		return 0;
	if (!c->began && begin_stream(c) != 0)
		return 0;
	const uint8_t *p = (const uint8_t *)buf;
	size_t left = len;
	for (;;) {
		struct stream_event ev;
		size_t used = 0;
		int rc = stream_parse(&c->parser, p, left, &used, &ev);
		p += used;
		left -= used;
		if (rc == 0)
			return len;
		if (rc < 0) {
			conn_fail(c, rc, "malformed stream from the primary: %s at byte %" PRIu64,
				  c->parser.why ? c->parser.why : err_str(rc), c->parser.offset);
			return 0;
		}
		if (on_event(c, &ev) != 0)
			return 0;
	}
}

static int on_progress(void *arg, int64_t dt, int64_t dn, int64_t ut, int64_t un)
{
	struct conn *c = arg;
	(void)dt, (void)dn, (void)ut, (void)un;
	if (atomic_load(&c->r->stopping) || atomic_load(&c->r->drop))
		return 1;
	if (node_take_resync(&c->r->st->node)) {
		conn_fail(c, ERR_NEED_SNAPSHOT, "a database failed verification; reconnecting to get the primary's snapshot");
		return 1;
	}
	return 0;
}

/* ---- One connection ------------------------------------------------------- */

/* Decides what the connection's end means: 0 for a clean end (an end
 * frame), or an error with c->fail_msg set. */
static int conn_outcome(struct conn *c, CURLcode cc)
{
	long status = c->q.status;
	if (c->fail)
		return c->fail;
	if (atomic_load(&c->r->stopping) || atomic_load(&c->r->drop))
		return 0;
	if (status != 0 && status != 200) {
		struct httpc_error e;
		httpc_error_parse(&c->q, &e);
		httpc_text_for_log(e.text);
		const char *text = e.text;
		int rc = status == 401 ? ERR_REPL_AUTH : status == 409 && strstr(text, "cluster") ? ERR_REPL_CLUSTER
											   : ERR_REPL_PROTOCOL;
		conn_fail(c, rc, "the primary refused the stream: HTTP %ld: %s", status, text);
		return rc;
	}
	if (cc != CURLE_OK) {
		conn_fail(c, -ECONNRESET, "%s: %s", c->began ? "connection to the primary lost" : "cannot connect to the primary",
			  httpc_transport_error(&c->q));
		return c->fail;
	}
	int rc = stream_parser_finish(&c->parser);
	if (rc != 0) {
		conn_fail(c, rc, "the stream broke off: %s", c->parser.why);
		return rc;
	}
	if (!c->parser.ended) {
		conn_fail(c, ERR_REPL_PROTOCOL, "the stream ended without an end frame");
		return c->fail;
	}
	return 0;
}

static struct curl_slist *request_headers(struct replica *r)
{
	char id[CLUSTER_ID_LEN + 1];
	struct curl_slist *h = NULL;
	int rc = httpc_add_header(&h, "Content-Type: application/vnd.litefs.stream");
	if (rc == 0)
		rc = httpc_add_header(&h, "Expect:");
	cluster_get(r->cluster, id);
	if (rc == 0 && id[0])
		rc = httpc_add_header(&h, "Litefs-Cluster-Id: %s", id);
	if (rc == 0 && r->secret)
		rc = httpc_add_header(&h, "Authorization: Bearer %s", r->secret);
	if (rc == 0)
		rc = httpc_add_header(&h, "Litefs-Replica-Id: %016" PRIx64, r->replica_id);
	return h;
}

/* Runs one connection to its end. Returns 0 for a clean end, else an
 * error (already described in c->fail_msg). *got_frame says whether the
 * primary sent anything beyond its hello. */
static int run_conn(struct replica *r, const char *url, int spool_fd, bool *got_frame, char *msg, size_t msg_len)
{
	struct conn c;
	memset(&c, 0, sizeof(c));
	c.r = r;
	c.spool_fd = spool_fd;
	stream_parser_init(&c.parser, STREAM_DIR_RESPONSE, 0);
	uint8_t *body = NULL;
	size_t body_len = 0;
	struct curl_slist *hdrs = NULL;
	CURL *curl = NULL;
	httpc_req_init(&c.q, NULL);
	int rc = build_request(r, &body, &body_len);
	if (rc == 0 && (!(curl = curl_easy_init()) || !(hdrs = request_headers(r))))
		rc = ERR_NOMEM;
	if (rc != 0) {
		conn_fail(&c, rc, "cannot prepare the request: %s", err_str(rc));
		goto out;
	}
	c.q.curl = curl;
	c.q.url = url;
	c.q.headers = hdrs;
	c.q.up_buf = body;
	c.q.up_buf_len = body_len;
	c.q.ok_write = on_body;
	c.q.ok_ctx = &c;
	c.q.progress = on_progress;
	c.q.progress_ctx = &c;
	c.q.connect_timeout_ms = REPLICA_CONNECT_TIMEOUT_MS;
	c.q.stall_s = REPLICA_STALL_S;
	c.q.keepalive = true;
	c.q.user_agent = "litefs-replica";
	c.q.recv_buffer = REPLICA_RECV_BUFFER;
	CURLcode cc = httpc_perform(&c.q);
	rc = conn_outcome(&c, cc);
out:
	snappipe_abort(c.pipe); /* the stream broke off inside a snapshot */
	*got_frame = c.got_frame;
	snprintf(msg, msg_len, "%s", c.fail_msg);
	curl_slist_free_all(hdrs);
	httpc_req_free(&c.q);
	if (curl)
		curl_easy_cleanup(curl);
	free(body);
	free(c.hb);
	stream_parser_free(&c.parser);
	return c.fail ? c.fail : rc;
}

/* ---- Thread --------------------------------------------------------------- */

/* Sleeps up to ms unless stopping. */
static void backoff_sleep(struct replica *r, int ms)
{
	clock_wait_flag(&r->mu, &r->cond, NULL, &r->stopping, ms);
}

/* ERR_REPL_AUTH, ECONNRESET, ...: a name for the err= field. */
static const char *code_name(int rc)
{
	if (rc > -1000 && rc < 0) {
		const char *n = strerrorname_np(-rc);
		return n ? n : "errno";
	}
	return err_name(rc);
}

static void log_failure(struct replica *r, const char *url, int rc, const char *msg)
{
	if (!strcmp(msg, r->last_error)) {
		LOG_DEBUG("repl", "msg=\"%s (repeated)\" url=\"%s\" err=%s", msg, url, code_name(rc));
		return;
	}
	snprintf(r->last_error, sizeof(r->last_error), "%s", msg);
	LOG_WARN("repl", "msg=\"%s; keeping the last good state and retrying\" url=\"%s\" err=%s", msg, url,
		 code_name(rc));
}


/* Dynamic mode: waits for a primary to follow and takes the latest
 * change (acknowledging it to replica_follow()). Returns a copy of its
 * URL (caller frees), or NULL when stopping. */
static char *take_url(struct replica *r)
{
	char *url = NULL;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		if (r->acked_gen != r->gen) {
			r->acked_gen = r->gen;
			atomic_store(&r->drop, false);
			pthread_cond_broadcast(&r->cond);
		}
		if (atomic_load(&r->stopping) || r->url)
			break;
		pthread_cond_wait(&r->cond, &r->mu);
	}
	if (!atomic_load(&r->stopping))
		url = strdup(r->url);
	pthread_mutex_unlock(&r->mu);
	return url;
}

/* Sleeps up to ms unless stopping or (dynamic) the primary changed. */
static void backoff_wait(struct replica *r, int ms)
{
	if (!r->dynamic) {
		backoff_sleep(r, ms);
		return;
	}
	struct timespec until = clock_deadline(ms);
	pthread_mutex_lock(&r->mu);
	while (!atomic_load(&r->stopping) && r->acked_gen == r->gen)
		if (pthread_cond_timedwait(&r->cond, &r->mu, &until) != 0)
			break;
	pthread_mutex_unlock(&r->mu);
}

static void *replica_main(void *arg)
{
	struct replica *r = arg;
	int backoff = REPLICA_BACKOFF_MIN_MS;
	while (!atomic_load(&r->stopping)) {
		char msg[REPLICA_MSG_LEN] = "";
		bool got_frame = false;
		int rc;
		char *url = r->dynamic ? take_url(r) : strdup(r->url);
		if (!url) {
			if (atomic_load(&r->stopping))
				break;
			backoff_wait(r, backoff);
			continue;
		}
		int fd = fileio_spool_open(r->tmp_dir);
		if (fd < 0) {
			rc = fd;
			snprintf(msg, sizeof(msg), "cannot create a spool file in %s: %s", r->tmp_dir, err_str(fd));
		} else {
			rc = run_conn(r, url, fd, &got_frame, msg, sizeof(msg));
			close(fd);
		}
		/* With a moving primary the lease owns the role; the
		 * connection only names the primary while it lasts. */
		if (!node_is_primary(&r->st->node))
			node_set_role(&r->st->node, false, NULL);
		ack_set_token(r, 0, NULL);
		if (atomic_load(&r->stopping) || atomic_load(&r->drop)) {
			free(url);
			backoff = REPLICA_BACKOFF_MIN_MS;
			continue;
		}
		/* A connection that streamed something worked: its failure is
		 * news even if an earlier one said the same. */
		if (got_frame)
			r->last_error[0] = '\0';
		if (rc != 0)
			log_failure(r, url, rc, msg);
		else
			r->last_error[0] = '\0';
		free(url);
		if (got_frame)
			backoff = REPLICA_BACKOFF_MIN_MS;
		backoff_wait(r, backoff);
		backoff = backoff * 2 > REPLICA_BACKOFF_MAX_MS ? REPLICA_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

/* ---- Public --------------------------------------------------------------- */

static void replica_free(struct replica *r)
{
	if (!r)
		return;
	free(r->url);
	free(r->ack_url);
	free(r->secret);
	free(r->fallback_host);
	free(r->tmp_dir);
	for (size_t i = 0; i < r->n_only; i++)
		free(r->only[i]);
	free(r->only);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cond);
	pthread_cond_destroy(&r->ack_cond);
	free(r);
}

static int copy_config(struct replica *r, const struct config *cfg, const char *data_dir)
{
	const char *base = cfg->lease.advertise_url;
	size_t bl = strlen(base);
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (!r->dynamic && asprintf(&r->url, "%.*s/stream", (int)bl, base) < 0) {
		r->url = NULL;
		return ERR_NOMEM;
	}
	if (asprintf(&r->tmp_dir, "%s/tmp", data_dir) < 0) {
		r->tmp_dir = NULL;
		return ERR_NOMEM;
	}
	if (!(r->fallback_host = strdup(cfg->lease.hostname)))
		return ERR_NOMEM;
	if (cfg->http.secret[0] && !(r->secret = strdup(cfg->http.secret)))
		return ERR_NOMEM;
	if (cfg->lease.databases.n > 0) {
		if (!(r->only = calloc(cfg->lease.databases.n, sizeof(*r->only))))
			return ERR_NOMEM;
		for (size_t i = 0; i < cfg->lease.databases.n; i++, r->n_only++)
			if (!(r->only[i] = strdup(cfg->lease.databases.items[i])))
				return ERR_NOMEM;
	}
	return 0;
}

/* Both ways to start: a fixed primary (lease.advertise-url) or a moving
 * one (dynamic: replica_follow names it). */
static int start(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
		 bool dynamic, struct replica **out)
{
	*out = NULL;
	struct replica *r = calloc(1, sizeof(*r));
	if (!r)
		return ERR_NOMEM;
	r->st = st;
	r->cluster = cluster;
	r->dynamic = dynamic;
	atomic_init(&r->stopping, false);
	atomic_init(&r->drop, false);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	pthread_cond_init(&r->ack_cond, NULL);
	if (getrandom(&r->replica_id, sizeof(r->replica_id), 0) != (ssize_t)sizeof(r->replica_id))
		r->replica_id = (uint64_t)clock_wall_ms() ^ ((uint64_t)getpid() << 40);
	int rc = copy_config(r, cfg, data_dir);
	if (rc == 0 && mkdir(r->tmp_dir, 0700) != 0 && errno != EEXIST)
		rc = -errno;
	if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		rc = ERR_NOMEM;
	if (rc == 0 && (rc = -pthread_create(&r->ack_thread, NULL, ack_main, r)) == 0)
		r->ack_started = true;
	if (rc == 0 && (rc = -pthread_create(&r->thread, NULL, replica_main, r)) == 0)
		r->started = true;
	if (rc != 0) {
		LOG_ERROR("repl", "msg=\"cannot start the replication client\" err=\"%s\"", err_str(rc));
		if (r->ack_started) {
			pthread_mutex_lock(&r->mu);
			atomic_store(&r->stopping, true);
			pthread_cond_broadcast(&r->ack_cond);
			pthread_mutex_unlock(&r->mu);
			pthread_join(r->ack_thread, NULL);
		}
		replica_free(r);
		return rc;
	}
	if (!dynamic)
		LOG_INFO("repl", "msg=\"following the primary\" url=\"%s\" databases=%zu", r->url, r->n_only);
	*out = r;
	return 0;
}

int replica_start(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
		  struct replica **out)
{
	*out = NULL;
	if (!cfg->lease.advertise_url[0]) {
		LOG_ERROR("repl", "msg=\"a replica needs lease.advertise-url: the primary's API URL\"");
		return ERR_CONFIG;
	}
	return start(st, cfg, data_dir, cluster, false, out);
}
int replica_start_follower(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
			   struct replica **out)
{
	return start(st, cfg, data_dir, cluster, true, out);
}

int replica_follow(struct replica *r, const char *advertise_url, const char *hostname)
{
	char *url = NULL, *host = NULL;
	if (advertise_url) {
		size_t bl = strlen(advertise_url);
		while (bl > 0 && advertise_url[bl - 1] == '/')
			bl--;
		if (asprintf(&url, "%.*s/stream", (int)bl, advertise_url) < 0)
			return ERR_NOMEM;
		if (!(host = strdup(hostname ? hostname : ""))) {
			free(url);
			return ERR_NOMEM;
		}
	}
	pthread_mutex_lock(&r->mu);
	free(r->url);
	free(r->fallback_host);
	r->url = url;
	r->fallback_host = host ? host : strdup("");
	uint64_t gen = ++r->gen;
	atomic_store(&r->drop, true);
	pthread_cond_broadcast(&r->cond);
	while (r->acked_gen < gen && !atomic_load(&r->stopping))
		pthread_cond_wait(&r->cond, &r->mu);
	pthread_mutex_unlock(&r->mu);
	if (url)
		LOG_INFO("repl", "msg=\"following the primary\" primary=%s url=\"%s\"", hostname ? hostname : "", url);
	return 0;
}

bool replica_wait_synced(struct replica *r, int timeout_ms)
{
	return clock_wait_flag(&r->mu, &r->cond, &r->synced, &r->stopping, timeout_ms);
}

bool replica_primary_url(struct replica *r, char *buf, size_t len, const char **secret)
{
	if (r == NULL)
		return false;
	pthread_mutex_lock(&r->mu);
	bool ok = r->url != NULL;
	if (ok) {
		size_t n = strlen(r->url);
		const char *suffix = "/stream";
		if (n >= strlen(suffix) && !strcmp(r->url + n - strlen(suffix), suffix))
			n -= strlen(suffix);
		snprintf(buf, len, "%.*s", (int)n, r->url);
	}
	pthread_mutex_unlock(&r->mu);
	*secret = r->secret;
	return ok;
}

void replica_stop(struct replica *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	atomic_store(&r->stopping, true);
	atomic_store(&r->drop, true);
	pthread_cond_broadcast(&r->cond);
	pthread_cond_broadcast(&r->ack_cond);
	pthread_mutex_unlock(&r->mu);
	/* An apply may be waiting for a reader's transaction to end. */
	node_cancel_applies(&r->st->node);
	if (r->started)
		pthread_join(r->thread, NULL);
	if (r->ack_started)
		pthread_join(r->ack_thread, NULL);
	curl_global_cleanup();
	replica_free(r);
}
