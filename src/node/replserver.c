/*
 * replserver.c — the primary's side of replication: POST /stream, one
 * session per replica connection (the frames are proto/stream.h; the
 * client is replica.c). http.c routes the request here.
 *
 * One replica connection (the protocol is in stream.c). The response is a
 * callback response; the server calls stream_read() from the connection's
 * thread whenever the socket can take more, and stream_read() blocks (at
 * most until the next heartbeat is due) when there is nothing to send.
 *
 * Per database the session keeps a cursor over the chain (db_cursor_*);
 * the frame of the record the cursor returned is queued (header in
 * memory, the LTX bytes read from the segment as they are sent), so a big
 * record is never held in memory and the cursor is not advanced before
 * its record has gone out. A snapshot is written by db_snapshot() into a
 * spool file in data.dir/tmp (db_snapshot holds the database's lock, so it
 * must not wait for the network) and sent from there.
 *
 * Synchronous replication (node/syncrepl.h): when the node has a table of
 * acknowledgements, each session is entered in it under the replica's ID
 * (Litefs-Replica-Id) and the reply names the session's token
 * (Litefs-Stream-Id); the replica then POSTs /stream/ack with that token
 * whenever positions became durable on it (replserver_*_ack below), and
 * the commits waiting in db.c are woken. The session leaves the table
 * when it ends.
 */
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/httpd.h"
#include "base/outq.h"
#include "ltx/ltx.h"
#include "node/db.h"
#include "node/replserver.h"
#include "node/store.h"
#include "node/syncrepl.h"
#include "proto/cluster.h"
#include "proto/dbname.h"
#include "proto/stream.h"

#define STREAM_HEARTBEAT_MS 1000
#define STREAM_IDLE_HEARTBEAT_MS 20
#define STREAM_BLOCK_SIZE (64u << 10)

struct stream_db {
	struct db *db;           /* borrowed */
	bool wanted;             /* the replica follows it */
	bool cursor_open;
	struct db_cursor cur;
	struct ltx_pos from;     /* the replica's position when the cursor opens */
	uint64_t sent_txid;      /* the replica has (or is being sent) up to here */
	uint64_t target_txid;    /* this node's TXID at connect (0: none) */
	bool idle;               /* nothing to send until the position moves */
	struct ltx_pos idle_pos;
};

struct stream_sess {
	const struct replserver *rs;
	int sock_fd;
	char peer[64];
	struct stream_list req;  /* the replica's positions (owned entries) */
	struct stream_db *dbs;
	size_t n_dbs;
	size_t next;             /* round-robin start */
	struct outq q;
	uint64_t seq;
	int64_t last_hb_ms;
	bool ready_sent, finished;
	uint64_t n_frames;
	uint64_t n_frames_at_hb; /* n_frames when the last idle heartbeat went out */
	uint64_t ack_token;      /* syncrepl session; 0: none */
};

/* The per-request state of POST /stream while its body arrives. */
struct replserver_req {
	int kind;                /* REPLSERVER_REQ (http.c tells requests apart by it) */
	struct stream_parser parser;
	bool have_positions;
	bool ack;                /* POST /stream/ack rather than /stream */
	uint64_t token;          /* ack: Litefs-Stream-Id */
	unsigned fail_status;
	char fail_msg[HTTPD_MSG_LEN];
	struct stream_list req;  /* copied out of the parser */
};

static const struct stream_entry *req_find(const struct stream_list *l, const char *name)
{
	for (uint32_t i = 0; i < l->n; i++)
		if (!strcmp(l->entries[i].name, name))
			return &l->entries[i];
	return NULL;
}

/* Adds the databases registered since the last call. */
static bool sess_sync_dbs(struct stream_sess *s, bool at_connect)
{
	size_t n = store_count(s->rs->st);
	if (n <= s->n_dbs)
		return true;
	struct stream_db *d = realloc(s->dbs, n * sizeof(*d));
	if (!d)
		return false;
	s->dbs = d;
	for (size_t i = s->n_dbs; i < n; i++) {
		struct stream_db *sd = &s->dbs[i];
		memset(sd, 0, sizeof(*sd));
		db_cursor_init(&sd->cur);
		sd->db = store_by_id(s->rs->st, (uint32_t)i);
		if (!sd->db)
			continue;
		const struct stream_entry *e = req_find(&s->req, sd->db->name);
		sd->wanted = dbname_valid(sd->db->name) &&
			     (!(s->req.flags & STREAM_LIST_ONLY) || e != NULL);
		if (e) {
			sd->from.txid = e->txid;
			sd->from.checksum = e->checksum;
		}
		sd->sent_txid = sd->from.txid;
		struct db_stats v;
		db_stats(sd->db, -1, &v);
		if (at_connect)
			sd->target_txid = v.pos.txid;
		/* A database that does not exist here and that the replica never
		 * had: nothing to send until it is created. */
		if (!v.exists && sd->from.txid == 0) {
			sd->idle = true;
			sd->idle_pos = v.pos;
		}
	}
	s->n_dbs = n;
	return true;
}

static int spool_write(void *ctx, const void *buf, size_t len)
{
	int fd = *(int *)ctx;
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Queues a frame whose LTX bytes are [off, off+len) of fd. */
static int sess_queue_ltx(struct stream_sess *s, uint8_t type, const char *name, int fd, bool owned, uint64_t off,
			  uint64_t len)
{
	uint8_t pre[STREAM_LTX_PREFIX_MAX];
	int n = len <= STREAM_MAX_LTX_LEN ? stream_encode_ltx_prefix(pre, type, name, (uint32_t)len) : ERR_INVAL;
	if (n < 0 || !outq_put(&s->q, pre, (size_t)n)) {
		if (owned)
			close(fd);
		return n < 0 ? n : ERR_NOMEM;
	}
	s->q.fd = fd;
	s->q.fd_owned = owned;
	s->q.fd_off = off;
	s->q.fd_left = len;
	s->n_frames++;
	return 1;
}

/* Sends a snapshot of d: 1 when queued, 0 when there is nothing to send
 * (an empty or deleted database: wait for it to change), or an error. */
static int sess_snapshot(struct stream_sess *s, struct stream_db *d, bool diverged)
{
	struct ltx_pos pos = { 0 };
	int fd = fileio_spool_open(s->rs->tmp_dir);
	if (fd < 0)
		return fd;
	int rc = db_snapshot(d->db, spool_write, &fd, &pos);
	struct stat sb;
	if (rc == 0 && fstat(fd, &sb) != 0)
		rc = -errno;
	if (rc == ERR_NEED_SNAPSHOT) {
		close(fd);
		d->idle = true;
		d->idle_pos = db_pos(d->db);
		d->sent_txid = d->target_txid; /* nothing more to reach */
		return 0;
	}
	if (rc != 0) {
		close(fd);
		LOG_WARN("repl", "msg=\"stream: cannot take a snapshot\" peer=%s db=%s err=\"%s\"", s->peer,
			 d->db->name, err_str(rc));
		return rc;
	}
	LOG_INFO("repl", "msg=\"stream: sending a snapshot\" peer=%s db=%s from_txid=%016" PRIx64
			 " txid=%016" PRIx64 " bytes=%lld reason=%s",
		 s->peer, d->db->name, d->from.txid, pos.txid, (long long)sb.st_size,
		 diverged ? "diverged" : "behind-retention");
	d->from = pos;
	d->sent_txid = pos.txid;
	return sess_queue_ltx(s, diverged ? STREAM_SNAPSHOT_DIVERGED : STREAM_SNAPSHOT, d->db->name, fd, true, 0,
			      (uint64_t)sb.st_size);
}

/* One step for one database: 1 when a frame was queued, 0 when it has
 * nothing to send now, or an error that ends the stream. */
static int sess_db_step(struct stream_sess *s, struct stream_db *d)
{
	if (!d->db || !d->wanted)
		return 0;
	if (d->idle) {
		struct ltx_pos p = db_pos(d->db);
		if (p.txid == d->idle_pos.txid && p.checksum == d->idle_pos.checksum)
			return 0;
		d->idle = false;
	}
	if (!d->cursor_open) {
		int rc = db_cursor_open(d->db, d->from, &d->cur);
		if (rc == ERR_NEED_SNAPSHOT) {
			db_cursor_close(&d->cur);
			return sess_snapshot(s, d, d->cur.diverged);
		}
		if (rc != 0) {
			db_cursor_close(&d->cur);
			LOG_WARN("repl", "msg=\"stream: cannot read the chain\" peer=%s db=%s txid=%016" PRIx64
					 " err=\"%s\"", s->peer, d->db->name, d->from.txid, err_str(rc));
			return rc;
		}
		d->cursor_open = true;
	}
	int fd = -1;
	struct ltxlog_rec rec;
	const uint64_t prev_next = d->cur.cc.next_txid;
	int rc = db_cursor_next(&d->cur, &fd, &rec);
	if (rc == 1) {
		/* What is sent only moves forward: db_cursor_next() returns the
		 * record starting at next_txid and moves past its max TXID. */
		CHECK_MSG(d->cur.cc.next_txid > prev_next, "db=%s next_txid=%016" PRIx64 " prev_next_txid=%016" PRIx64,
			  d->db->name, d->cur.cc.next_txid, prev_next);
		d->sent_txid = d->cur.cc.next_txid > 0 ? d->cur.cc.next_txid - 1 : d->sent_txid;
		return sess_queue_ltx(s, STREAM_LTX, d->db->name, fd, false, rec.offset + LTXLOG_HDR_SIZE, rec.len);
	}
	if (rc == ERR_NEED_SNAPSHOT) {
		/* Retention removed what comes next before it was sent. */
		db_cursor_close(&d->cur);
		d->cursor_open = false;
		d->from.txid = d->sent_txid;
		return sess_snapshot(s, d, false);
	}
	if (rc < 0)
		LOG_WARN("repl", "msg=\"stream: cannot read the chain\" peer=%s db=%s txid=%016" PRIx64 " err=\"%s\"",
			 s->peer, d->db->name, d->sent_txid, err_str(rc));
	return rc;
}

static int sess_heartbeat(struct stream_sess *s)
{
	struct stream_list l = { .time_ms = clock_wall_ms() };
	l.entries = calloc(s->n_dbs ? s->n_dbs : 1, sizeof(*l.entries));
	if (!l.entries)
		return ERR_NOMEM;
	for (size_t i = 0; i < s->n_dbs; i++) {
		struct stream_db *d = &s->dbs[i];
		if (!d->db || !d->wanted || d->idle)
			continue;
		struct ltx_pos p = db_pos(d->db);
		if (p.txid == 0)
			continue;
		struct stream_entry *e = &l.entries[l.n++];
		snprintf(e->name, sizeof(e->name), "%s", d->db->name);
		e->txid = p.txid;
		e->checksum = p.checksum;
	}
	uint8_t *buf;
	size_t len;
	int rc = stream_encode_list(STREAM_HEARTBEAT, &l, &buf, &len);
	free(l.entries);
	if (rc != 0)
		return rc;
	bool ok = outq_put(&s->q, buf, len);
	free(buf);
	s->last_hb_ms = l.time_ms;
	return ok ? 0 : ERR_NOMEM;
}

static bool sess_reached_targets(const struct stream_sess *s)
{
	for (size_t i = 0; i < s->n_dbs; i++) {
		const struct stream_db *d = &s->dbs[i];
		if (d->db && d->wanted && !d->idle && d->sent_txid < d->target_txid)
			return false;
	}
	return true;
}

static void sess_queue_empty_frame(struct stream_sess *s, uint8_t type)
{
	uint8_t h[STREAM_HDR_SIZE];
	stream_encode_header(h, type, 0);
	if (!outq_put(&s->q, h, sizeof(h)))
		s->finished = true; /* cannot even say goodbye: just end */
}

/* Queues what comes next, waiting for a change (up to the next heartbeat)
 * when there is nothing. 0, or an error that ends the stream. */
static int sess_fill(struct stream_sess *s)
{
	struct store *st = s->rs->st;
	if (atomic_load(s->rs->stopping)) {
		LOG_INFO("repl", "msg=\"stream: the node is stopping; ending the stream\" peer=%s", s->peer);
		sess_queue_empty_frame(s, STREAM_END);
		s->finished = true;
		return 0;
	}
	if (!node_is_primary(&st->node)) {
		LOG_WARN("repl", "msg=\"stream: this node is no longer the primary; ending the stream\" peer=%s", s->peer);
		return ERR_READONLY;
	}
	if (httpd_peer_gone(s->sock_fd)) {
		LOG_INFO("repl", "msg=\"stream: the replica went away\" peer=%s", s->peer);
		return -ECONNRESET;
	}
	uint64_t seq = node_change_seq(&st->node);
	if (!sess_sync_dbs(s, false))
		return ERR_NOMEM;
	int64_t now = clock_wall_ms();
	if (now - s->last_hb_ms >= STREAM_HEARTBEAT_MS)
		return sess_heartbeat(s);
	for (size_t k = 0; k < s->n_dbs; k++) {
		size_t i = (s->next + k) % s->n_dbs;
		int rc = sess_db_step(s, &s->dbs[i]);
		if (rc < 0)
			return rc;
		if (rc > 0) {
			s->next = i + 1;
			return 0;
		}
	}
	/* Idle after sending records: a heartbeat now tells the replica it is
	 * caught up (its lag drops to zero) without waiting for the timer. */
	if (s->n_frames != s->n_frames_at_hb && now - s->last_hb_ms >= STREAM_IDLE_HEARTBEAT_MS) {
		s->n_frames_at_hb = s->n_frames;
		return sess_heartbeat(s);
	}
	if (!s->ready_sent && sess_reached_targets(s)) {
		s->ready_sent = true;
		LOG_INFO("repl", "msg=\"stream: replica caught up\" peer=%s frames=%" PRIu64, s->peer, s->n_frames);
		sess_queue_empty_frame(s, STREAM_READY);
		return 0;
	}
	int64_t wait = STREAM_HEARTBEAT_MS - (now - s->last_hb_ms);
	if (s->n_frames != s->n_frames_at_hb && wait > STREAM_IDLE_HEARTBEAT_MS)
		wait = STREAM_IDLE_HEARTBEAT_MS;
	node_wait_change(&st->node, seq, (int)(wait > 0 ? wait : 1));
	return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream_sess *s = cls;
	(void)pos;
	for (;;) {
		ssize_t n = outq_take(&s->q, buf, max);
		if (n > 0)
			return n;
		if (n < 0) {
			/* The record shrank under us (taken back) or the spool
			 * could not be read: the frame cannot be finished, so the
			 * replica must see a broken stream and reconnect. */
			LOG_WARN("repl", "msg=\"stream: cannot read a record while sending it; ending the stream\" peer=%s",
				 s->peer);
			return HTTPD_END_WITH_ERROR;
		}
		if (s->finished)
			return HTTPD_END_OF_STREAM;
		if (sess_fill(s) != 0)
			return HTTPD_END_WITH_ERROR;
	}
}

static void sess_free(void *cls)
{
	struct stream_sess *s = cls;
	if (!s)
		return;
	LOG_INFO("repl", "msg=\"stream closed\" peer=%s frames=%" PRIu64, s->peer, s->n_frames);
	syncrepl_close(s->rs->st->node.sync, s->ack_token);
	for (size_t i = 0; i < s->n_dbs; i++)
		db_cursor_close(&s->dbs[i].cur);
	free(s->dbs);
	free(s->req.entries);
	outq_free(&s->q);
	free(s);
}

static enum httpd_result finish_ack(const struct replserver *rs, struct httpd_conn *conn, struct replserver_req *sr);

/* Compares the Authorization header with "Bearer <secret>" in constant
 * time (both sides are hashed first, so the length does not leak). */
bool replserver_auth_ok(const struct replserver *rs, struct httpd_conn *conn)
{
	if (!rs->secret)
		return true;
	const char *h = httpd_header(conn, HTTP_HEADER_AUTHORIZATION);
	if (!h || strncmp(h, "Bearer ", 7) != 0)
		return false;
	unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
	unsigned int na = 0, nb = 0;
	if (!EVP_Digest(h + 7, strlen(h + 7), a, &na, EVP_sha256(), NULL) ||
	    !EVP_Digest(rs->secret, strlen(rs->secret), b, &nb, EVP_sha256(), NULL) || na != nb)
		return false;
	return CRYPTO_memcmp(a, b, na) == 0;
}

/* Checks everything that can be refused from the headers of POST /stream
 * (and of GET /events for the secret). 0 or an HTTP status with msg. */
static unsigned check_headers(const struct replserver *rs, struct httpd_conn *conn, char *msg, size_t len)
{
	if (!replserver_auth_ok(rs, conn)) {
		snprintf(msg, len, "authentication failed: missing or wrong shared secret (http.secret)");
		return HTTP_UNAUTHORIZED;
	}
	if (!node_is_primary(&rs->st->node)) {
		char host[256];
		node_primary_host(&rs->st->node, host, sizeof(host));
		snprintf(msg, len, "this node is a replica, not the primary%s%s", host[0] ? "; the primary is " : "",
			 host);
		return HTTP_SERVICE_UNAVAILABLE;
	}
	const char *peer_id = httpd_header(conn, "Litefs-Cluster-Id");
	char id[CLUSTER_ID_LEN + 1] = "";
	if (rs->cluster)
		cluster_get(rs->cluster, id);
	if (peer_id && peer_id[0] && !cluster_id_valid(peer_id)) {
		snprintf(msg, len, "invalid Litefs-Cluster-Id header: expected LFSC and 16 upper-case hex digits");
		return HTTP_BAD_REQUEST;
	}
	if (peer_id && peer_id[0] && id[0] && strcmp(peer_id, id) != 0) {
		snprintf(msg, len, "cluster ID mismatch: this node is in cluster %s, the replica in %.20s", id, peer_id);
		return HTTP_CONFLICT;
	}
	return 0;
}

void replserver_req_free(struct replserver_req *sr)
{
	if (!sr)
		return;
	stream_parser_free(&sr->parser);
	free(sr->req.entries);
	free(sr);
}

/* The per-request state of POST /stream (ack false) or /stream/ack. */
static enum httpd_result new_req(bool ack, uint64_t token, void **con_cls)
{
	struct replserver_req *sr = calloc(1, sizeof(*sr));
	if (!sr)
		return HTTPD_NO;
	sr->kind = REPLSERVER_REQ;
	sr->ack = ack;
	sr->token = token;
	stream_parser_init(&sr->parser, STREAM_DIR_REQUEST, 0);
	*con_cls = sr;
	return HTTPD_YES;
}

enum httpd_result replserver_begin(const struct replserver *rs, struct httpd_conn *conn, void **con_cls)
{
	char msg[HTTPD_MSG_LEN], peer[64];
	unsigned status = check_headers(rs, conn, msg, sizeof(msg));
	if (status) {
		httpd_peer_name(conn, peer, sizeof(peer));
		LOG_WARN("repl", "msg=\"stream refused\" peer=%s status=%u reason=\"%s\"", peer, status, msg);
		return httpd_respond_error(conn, status, msg);
	}
	return new_req(false, 0, con_cls);
}

/* A chunk of the request body (hello, positions). */
enum httpd_result replserver_chunk(struct replserver_req *sr, const char *data, size_t len)
{
	const uint8_t *p = (const uint8_t *)data;
	while (!sr->fail_status) {
		struct stream_event ev;
		size_t used = 0;
		int rc = stream_parse(&sr->parser, p, len, &used, &ev);
		p += used;
		len -= used;
		if (rc == 0)
			break;
		if (rc < 0) {
			sr->fail_status = HTTP_BAD_REQUEST;
			snprintf(sr->fail_msg, sizeof(sr->fail_msg), "malformed positions: %s at byte %" PRIu64,
				 sr->parser.why ? sr->parser.why : err_str(rc), sr->parser.offset);
			break;
		}
		if (ev.kind != STREAM_EV_LIST)
			continue;
		if ((ev.type == STREAM_ACK) != sr->ack) {
			sr->fail_status = HTTP_BAD_REQUEST;
			snprintf(sr->fail_msg, sizeof(sr->fail_msg), "malformed %s: a %s frame", sr->ack ? "ack" : "positions",
				 ev.type == STREAM_ACK ? "ack" : "positions");
			break;
		}
		if (sr->have_positions) {
			sr->fail_status = HTTP_BAD_REQUEST;
			snprintf(sr->fail_msg, sizeof(sr->fail_msg), "malformed positions: more than one positions frame");
			break;
		}
		/* Take the entries over from the parser. */
		sr->req = *ev.list;
		sr->parser.list.entries = NULL;
		sr->parser.list.n = 0;
		sr->have_positions = true;
	}
	return HTTPD_YES;
}

enum httpd_result replserver_finish(const struct replserver *rs, struct httpd_conn *conn,
				  struct replserver_req *sr)
{
	char peer[64];
	httpd_peer_name(conn, peer, sizeof(peer));
	if (!sr->fail_status && stream_parser_finish(&sr->parser) != 0) {
		sr->fail_status = HTTP_BAD_REQUEST;
		snprintf(sr->fail_msg, sizeof(sr->fail_msg), "malformed positions: %s", sr->parser.why);
	}
	if (!sr->fail_status && !sr->have_positions) {
		sr->fail_status = HTTP_BAD_REQUEST;
		snprintf(sr->fail_msg, sizeof(sr->fail_msg), "malformed %s: no %s frame", sr->ack ? "ack" : "positions",
			 sr->ack ? "ack" : "positions");
	}
	if (sr->fail_status) {
		LOG_WARN("repl", "msg=\"%s refused\" peer=%s status=%u reason=\"%s\"", sr->ack ? "ack" : "stream", peer,
			 sr->fail_status, sr->fail_msg);
		return httpd_respond_error(conn, sr->fail_status, sr->fail_msg);
	}
	if (sr->ack)
		return finish_ack(rs, conn, sr);
	struct stream_sess *s = calloc(1, sizeof(*s));
	if (!s)
		return HTTPD_NO;
	s->rs = rs;
	s->sock_fd = httpd_sock_of(conn);
	struct syncrepl *sync = rs->st->node.sync;
	if (sync) {
		const char *rid = httpd_header(conn, "Litefs-Replica-Id");
		char *end = NULL;
		uint64_t replica_id = rid ? strtoull(rid, &end, 16) : 0;
		if (!rid || !*rid || *end)
			replica_id = 0;
		s->ack_token = syncrepl_open(sync, replica_id);
	}
	outq_init(&s->q);
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	s->req = sr->req;
	memset(&sr->req, 0, sizeof(sr->req));
	uint8_t hello[STREAM_HDR_SIZE + STREAM_HELLO_LEN];
	if (!sess_sync_dbs(s, true) || !outq_put(&s->q, hello, stream_encode_hello(hello))) {
		sess_free(s);
		return HTTPD_NO;
	}
	s->last_hb_ms = clock_wall_ms(); /* the first heartbeat follows the catch-up frames */
	struct httpd_response *r = httpd_response_callback(HTTPD_SIZE_UNKNOWN, STREAM_BLOCK_SIZE, stream_read,
								    s, sess_free);
	if (!r) {
		sess_free(s);
		return HTTPD_NO;
	}
	char id[CLUSTER_ID_LEN + 1] = "";
	if (rs->cluster)
		cluster_get(rs->cluster, id);
	httpd_response_header(r, HTTP_HEADER_CONTENT_TYPE, "application/vnd.litefs.stream");
	httpd_response_header(r, HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (id[0])
		httpd_response_header(r, "Litefs-Cluster-Id", id);
	httpd_response_header(r, "Litefs-Primary-Hostname", rs->hostname);
	if (rs->st->node.proxy_url[0])
		httpd_response_header(r, "Litefs-Proxy-Url", rs->st->node.proxy_url);
	char token[17];
	if (s->ack_token) {
		snprintf(token, sizeof(token), "%016" PRIx64, s->ack_token);
		httpd_response_header(r, "Litefs-Stream-Id", token);
	}
	LOG_INFO("repl", "msg=\"stream opened\" peer=%s positions=%u only=%s", peer, s->req.n,
		 (s->req.flags & STREAM_LIST_ONLY) ? "true" : "false");
	enum httpd_result ret = httpd_queue(conn, HTTP_OK, r);
	return ret;
}

/* ---- POST /stream/ack ------------------------------------------------------ */

enum httpd_result replserver_begin_ack(const struct replserver *rs, struct httpd_conn *conn, void **con_cls)
{
	char msg[HTTPD_MSG_LEN];
	unsigned status = check_headers(rs, conn, msg, sizeof(msg));
	const char *tok = httpd_header(conn, "Litefs-Stream-Id");
	char *end = NULL;
	uint64_t token = tok ? strtoull(tok, &end, 16) : 0;
	if (!status && (!tok || !*tok || *end || token == 0)) {
		status = HTTP_BAD_REQUEST;
		snprintf(msg, sizeof(msg), "missing or invalid Litefs-Stream-Id header");
	}
	if (status) {
		char peer[64];
		httpd_peer_name(conn, peer, sizeof(peer));
		LOG_DEBUG("repl", "msg=\"ack refused\" peer=%s status=%u reason=\"%s\"", peer, status, msg);
		return httpd_respond_error(conn, status, msg);
	}
	return new_req(true, token, con_cls);
}

static enum httpd_result finish_ack(const struct replserver *rs, struct httpd_conn *conn, struct replserver_req *sr)
{
	struct syncrepl *sync = rs->st->node.sync;
	bool known = sync != NULL;
	for (uint32_t i = 0; known && i < sr->req.n; i++) {
		const struct stream_entry *e = &sr->req.entries[i];
		struct db *db = store_find(rs->st, e->name, false);
		if (db)
			known = syncrepl_ack(sync, sr->token, db->id, e->txid);
	}
	if (sr->req.n == 0 && sync)
		known = syncrepl_ack(sync, sr->token, 0, 0);
	syncrepl_wake(sync);
	if (!known)
		return httpd_respond_error(conn, HTTP_NOT_FOUND,
					   "no open stream has this Litefs-Stream-Id (it ended, or this node does not "
					   "wait for acknowledgements)");
	return httpd_respond_json(conn, HTTP_OK, json_object(), NULL, NULL);
}
