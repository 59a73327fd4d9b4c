/*
 * cloud_http.c — litefs-cloud's HTTP API. The reference for clients is
 * docs/cloud-api.md; this comment says why the code is shaped this way.
 *
 * THREADING. Like the node's API (http.c): base/httpd.c gives a request a
 * worker thread from its complete head to the end of its reply, because
 * ingest waits for fsync and exports read whole databases; a slow request
 * only ever delays itself. RESERVED_WORKERS of them serve only requests
 * with a valid token once the others are busy (is_trusted). Every request gets a
 * struct creq on its first call; all checks that need only the headers run
 * there (route, token, cluster ID, query parameters, Content-Length), and
 * the reply is sent on the last call, after the body.
 *
 * REFUSING A REQUEST WITH A BODY. A reply queued before the body was read
 * makes the server close the socket with unread bytes, which the kernel turns into
 * a reset that can reach the client before the reply. So a refused body is
 * drained (discarded) when it is small (up to DRAIN_MAX) and the reply
 * follows; only when the client waits for "100 Continue" or the body is
 * large is the refusal sent at once.
 *
 * POST /db/tx with a Content-Length up to INLINE_TX_MAX (a LiteFS node's
 * usual upload: a few pages) is received into memory and ingested on the
 * connection's own thread at the end of the body. A larger or chunked body
 * is pulled by the engine itself, on the connection's thread, from the
 * handler's first call (tx_pull(): cloud_ingest() reading through
 * httpd_body_read(), which receives large reads straight from the socket
 * into the decoder's buffer). Nothing is copied between the socket and the
 * decoder and no thread is woken: a byte pipe to an ingest thread (and a
 * socketpair before it) cost two user-space copies and a futex round trip
 * per read, more than the receive itself (BENCHMARKS.md, issue 15 item
 * 3). The body is never held whole in memory, and the engine sees exactly
 * the bytes the client sent, ending at end of body. If the engine stops
 * early (a bad header, a position mismatch), the rest of the body is read
 * and discarded so the connection carries the next request. The reply
 * (with Litefs-Hwm) is queued only after the engine returned, i.e. after it
 * made the file durable. A client that hangs up mid-body gives the engine
 * a read error: it stores nothing.
 *
 * POST /db/upload spools the SQLite file into an unnamed temp file
 * (O_TMPFILE, so nothing is left behind by a crash) and hands the fd to the
 * engine. GET /db/snapshot has the engine build the export in such a file
 * (for SQLite the built state itself, not a copy of it) and sends it with
 * sendfile (httpd_response_fd), so errors are still proper
 * JSON replies and the response has a Content-Length.
 *
 * AUTHENTICATION. Every endpoint but /healthz needs a token (cloud_auth.c);
 * the token decides the cluster. An optional ?cluster= (sent by LiteFS's
 * client) must name the token's cluster. A Litefs-Cluster-Id header is
 * bound to the cluster on first sight and must match afterwards (422),
 * unless `cluster rebind` opened a window that admits it (check_rebind();
 * REBIND in cloud_auth.c).
 *
 * ERRORS are JSON {"code": "E...", "error": "..."} (+ "pos" for
 * EPOSMISMATCH); the code says what kind, the message says what exactly.
 * Each refusal is logged once (mod=cloud-http).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloud/cloud_auth.h"
#include "cloud/cloud_changes.h"
#include "cloud/cloud_events.h"
#include "cloud/cloud_http.h"
#include "cloud/cloud_preview.h"
#include "cloud/cloud_progress.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_ui.h"
#include "cloud/cloud_timeline.h"
#include "cloud/cloud_watch.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/httpd.h"
#include "ltx/ltx.h"
#include "proto/dbname.h"

#define DRAIN_MAX (1u << 20)
#define MSG_LEN 512
#define CONNECTION_LIMIT 256u
/* Of the CONNECTION_LIMIT workers, these serve only requests with a valid
 * token once the others are busy (is_trusted, docs/http.md). */
#define RESERVED_WORKERS 64u
#define STOP_GRACE_MS 10000
/* Bytes read and thrown away at a time when the engine refused a body
 * before its end (tx_pull()). */
#define DISCARD_BYTES (16u << 10)
/* POST /db/tx bodies up to this size (by Content-Length) are received in
 * memory and ingested on the connection's thread. */
#define INLINE_TX_MAX (256u << 10)
#define DB_NAME_MAX 255
/* GET /pos?wait=: how long a long poll waits at most, by default and at
 * the client's request (timeout=). */
#define POS_WAIT_DEFAULT_MS 25000
#define POS_WAIT_MAX_MS 30000

struct cloud_http {
	struct cloud_store *cs;  /* borrowed */
	struct cloud_auth *auth; /* borrowed */
	char *tmp_dir;           /* owned */
	uint64_t max_upload_bytes, max_db_bytes;
	struct cloud_watch *watch; /* owned: restore generations for /pos?wait= */
	struct cloud_ui *ui;       /* owned: the dashboard (docs/dashboard.md) */
	/* Owned: the dashboard's data (GET /dbs, /db/timeline, /db/preview,
	 * /events; docs/cloud-api.md "Dashboard"). */
	struct cloud_timeline *timeline;
	struct cloud_preview *preview;
	struct cloud_events *events;
	struct httpd *daemon;
	unsigned port;
	atomic_bool stopping;
	atomic_int n_active;     /* requests between their first call and completion */
};

enum route {
	R_NONE, R_HEALTH, R_POS, R_TX, R_SNAPSHOT, R_RESTORE, R_RESTORE_CHECK, R_UPLOAD, R_INFO, R_DELETE, R_CHANGES,
	R_UI, /* the dashboard's pages and sign-in (cloud_ui.c) */
	R_DBS, R_TIMELINE, R_PREVIEW, R_PREVIEW_ROWS, R_EVENTS,
};

static const struct {
	const char *path, *method;
	enum route r;
	bool needs_db;
} routes[] = {
	{ "/healthz", "GET", R_HEALTH, false },
	{ "/pos", "GET", R_POS, false },
	{ "/db/tx", "POST", R_TX, true },
	{ "/db/snapshot", "GET", R_SNAPSHOT, true },
	{ "/db/changes", "GET", R_CHANGES, true },
	{ "/db/restore", "POST", R_RESTORE, true },
	{ "/db/restore/check", "GET", R_RESTORE_CHECK, true },
	{ "/db/upload", "POST", R_UPLOAD, true },
	{ "/db/info", "GET", R_INFO, true },
	{ "/db", "DELETE", R_DELETE, true },
	{ "/dbs", "GET", R_DBS, false },
	{ "/db/timeline", "GET", R_TIMELINE, true },
	{ "/db/preview", "GET", R_PREVIEW, true },
	{ "/db/preview/rows", "GET", R_PREVIEW_ROWS, true },
	{ "/events", "GET", R_EVENTS, false },
};

/* A request from its first call to the completion callback, which frees it. */
struct creq {
	enum route r;
	char cluster[CLOUD_CLUSTER_NAME_MAX + 1];
	char db[DB_NAME_MAX + 1];
	uint64_t n_bytes;            /* body bytes received */
	unsigned fail_status;        /* non-zero: discard the body, then reply this */
	bool refused_early;          /* failed before the body: drain at most DRAIN_MAX */
	char fail_code[24];
	char fail_msg[MSG_LEN];

	/* POST /db/tx, small: the body in memory (body_cap > 0). */
	uint8_t *body;
	size_t body_len, body_cap;
	bool ingested;
	/* POST /db/tx, large or chunked: pulled by the engine (tx_pull()). */
	struct httpd_conn *conn;
	struct cloud_http *srv;
	int ingest_rc;
	struct cloud_ingest_result res;

	/* POST /db/upload: the spooled body. */
	int spool_fd;

	/* ENOTRESTORABLE: where the TXID asked for lies (cloud_gap()). */
	struct cloud_gap gap;

	/* Admitted as the candidate of an open rebind window (not bound yet):
	 * its cluster ID. */
	char rebind_id[CLOUD_CLUSTER_ID_MAX + 1];
};

static void hex16(char *buf, uint64_t v)
{
	snprintf(buf, 17, "%016" PRIx64, v);
}

static json_t *jhex(uint64_t v)
{
	char b[17];
	hex16(b, v);
	return json_string(b);
}

static json_t *jtime(int64_t ms)
{
	char b[40];
	if (ms <= 0)
		return json_null();
	ltx_format_time(b, sizeof(b), ms);
	return json_string(b);
}

/* ---- Responses ---------------------------------------------------------- */

/* Takes ownership of obj; hwm, if not NULL, becomes Litefs-Hwm. */
static enum httpd_result reply_json(struct httpd_conn *conn, unsigned status, json_t *obj, const char *hwm)
{
	return httpd_respond_json(conn, status, obj, "Litefs-Hwm", hwm);
}

static void set_fail(struct creq *q, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void set_fail(struct creq *q, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;
	q->fail_status = status;
	snprintf(q->fail_code, sizeof(q->fail_code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(q->fail_msg, sizeof(q->fail_msg), fmt, ap);
	va_end(ap);
}

static json_t *pos_json(const char *db, const struct cloud_pos *pos);

/* Adds the fields of an ENOTRESTORABLE reply (docs/cloud-api.md) to o:
 * the TXID asked for, the upload covering it, and the nearest restorable
 * positions on either side. */
static void gap_json(json_t *o, const struct cloud_gap *g)
{
	json_object_set_new(o, "txid", jhex(g->txid));
	json_object_set_new(o, "upload", json_pack("{s:o, s:o}", "min_txid", jhex(g->upload_min), "max_txid",
						   jhex(g->upload_max)));
	json_t *near = json_pack("{s:o, s:o}", "before", pos_json(NULL, &g->before), "after",
				 pos_json(NULL, &g->after));
	json_object_set_new(o, "nearest", near);
}

/* Sends the failure recorded in q (with the stored position for
 * EPOSMISMATCH, the covering upload for ENOTRESTORABLE) and logs it. */
static enum httpd_result reply_fail(struct httpd_conn *conn, const char *url, struct creq *q)
{
	char logmsg[MSG_LEN], dbname[DB_NAME_MAX + 1];
	snprintf(logmsg, sizeof(logmsg), "%s", q->fail_msg);
	snprintf(dbname, sizeof(dbname), "%s", q->db[0] ? q->db : "-");
	httpd_log_clean(logmsg);
	httpd_log_clean(dbname);
	LOG_WARN("cloud-http", "msg=\"request refused\" path=%s cluster=%s db=\"%s\" status=%u code=%s reason=\"%s\"",
		 url, q->cluster[0] ? q->cluster : "-", dbname, q->fail_status, q->fail_code, logmsg);
	json_t *o = json_object();
	if (!o)
		return HTTPD_NO;
	json_object_set_new(o, "code", json_string(q->fail_code));
	json_object_set_new(o, "error", httpd_json_str(q->fail_msg));
	if (!strcmp(q->fail_code, "EPOSMISMATCH"))
		json_object_set_new(o, "pos", json_pack("{s:o, s:o}", "txid", jhex(q->res.pos.txid),
							"postApplyChecksum", jhex(q->res.pos.checksum)));
	if (!strcmp(q->fail_code, "ENOTRESTORABLE"))
		gap_json(o, &q->gap);
	return reply_json(conn, q->fail_status, o, NULL);
}

/* Records an engine error rc as the request's failure. what names the
 * operation for the message; msg, if not empty, is the engine's reason. */
static void fail_from_rc(struct creq *q, int rc, const char *what, const char *msg)
{
	const char *why = msg && msg[0] ? msg : err_str(rc);
	switch (rc) {
	case ERR_CLOUD_POS_MISMATCH:
		set_fail(q, HTTP_CONFLICT, "EPOSMISMATCH",
			 "%s: position mismatch: %s (the service is at %016" PRIx64 "/%016" PRIx64 ")", what, why,
			 q->res.pos.txid, q->res.pos.checksum);
		return;
	case ERR_CLOUD_NOT_FOUND:
		set_fail(q, HTTP_NOT_FOUND, "ENOTFOUND", "%s: database not found: %s", what, q->db);
		return;
	case ERR_CLOUD_WINDOW:
		set_fail(q, HTTP_NOT_FOUND, "EWINDOW", "%s: %s", what, why);
		return;
	case ERR_CLOUD_NAME:
	case ERR_INVAL:
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "%s: %s", what, why);
		return;
	case ERR_CLOUD_TOO_LARGE:
		set_fail(q, HTTP_CONTENT_TOO_LARGE, "ETOOLARGE", "%s: %s", what, why);
		return;
	case ERR_CLOUD_PAGE_SIZE:
	case ERR_LTX_PAGE_SIZE_MISMATCH:
		set_fail(q, HTTP_CONFLICT, "EPAGESIZE", "%s: %s", what, why);
		return;
	case ERR_CLOUD_EXISTS:
		set_fail(q, HTTP_CONFLICT, "EEXISTS", "%s: %s", what, why);
		return;
	case ERR_DB_HEADER:
	case ERR_DB_SIZE:
		set_fail(q, HTTP_BAD_REQUEST, "EBADDB", "%s: %s", what, why);
		return;
	case -ENOSPC:
	case -EDQUOT:
		set_fail(q, HTTP_INSUFFICIENT_STORAGE, "ENOSPACE", "%s: %s", what, why);
		return;
	default:
		break;
	}
	if (rc <= ERR_LTX_MAGIC && rc >= ERR_LTX_COMMIT_ZERO_PAGES)
		set_fail(q, HTTP_BAD_REQUEST, "EBADLTX", "%s: invalid LTX file: %s", what, why);
	else if (rc == ERR_IO_SHORT)
		set_fail(q, HTTP_BAD_REQUEST, "EBADLTX", "%s: invalid LTX file: %s", what, why);
	else
		set_fail(q, HTTP_INTERNAL_SERVER_ERROR, "EINTERNAL", "%s: %s", what, why);
}

/* Records the failure of a restore, check or export of target t: for a
 * TXID inside a multi-transaction upload, which upload and the nearest
 * restorable positions (a 422 ENOTRESTORABLE that says what to ask for
 * instead); anything else as fail_from_rc(). */
static void fail_target(struct cloud_http *srv, struct creq *q, int rc, const char *what,
			const struct cloud_target *t)
{
	if (rc != ERR_CLOUD_NOT_RESTORABLE || cloud_gap(srv->cs, q->cluster, q->db, t->txid, &q->gap) != 0) {
		fail_from_rc(q, rc == ERR_CLOUD_NOT_RESTORABLE ? ERR_CLOUD_WINDOW : rc, what, NULL);
		return;
	}
	const struct cloud_gap *g = &q->gap;
	char tb[40], ta[40];
	ltx_format_time(tb, sizeof(tb), g->before.ts_ms);
	ltx_format_time(ta, sizeof(ta), g->after.ts_ms);
	set_fail(q, HTTP_UNPROCESSABLE_CONTENT, "ENOTRESTORABLE",
		 "%s: TXID %016" PRIx64 " is inside one upload that brought TXIDs %016" PRIx64 "-%016" PRIx64
		 " at once (%s), so only its end is restorable; nearest restorable: %016" PRIx64 " (%s) and %016" PRIx64
		 " (%s)",
		 what, g->txid, g->upload_min, g->upload_max,
		 g->upload_min == 1 ? "a snapshot upload" : "LiteFS sends about a second of transactions as one file",
		 g->before.txid, tb, g->after.txid, ta);
}

/* ---- Query parameters --------------------------------------------------- */

/* The value of query parameter key, NULL if absent. A value holding a
 * decoded NUL (%00) sets *bad. */
static const char *arg(struct httpd_conn *conn, const char *key, bool *bad)
{
	const char *v = NULL;
	size_t n = 0;
	if (httpd_arg(conn, key, &v, &n) != HTTPD_YES)
		return NULL;
	if (!v)
		return "";
	if (memchr(v, '\0', n) != NULL)
		*bad = true;
	return v;
}

/* Copies a database name parameter into out after validating it; 0 or -1
 * with the failure recorded. */
static int take_db_name(struct httpd_conn *conn, struct creq *q, const char *key, char *out, bool required)
{
	bool bad = false;
	const char *v = arg(conn, key, &bad);
	out[0] = '\0';
	if (!v && !required)
		return 0;
	if (!v || !v[0]) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "missing query parameter: %s", key);
		return -1;
	}
	if (bad || strlen(v) > DB_NAME_MAX || !dbname_valid(v)) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "invalid database name in %s: 1 to 200 bytes of UTF-8, no '/', no control characters, no NUL, "
			 "no leading '.', not ending in -journal, -wal, -shm or -pos", key);
		return -1;
	}
	snprintf(out, DB_NAME_MAX + 1, "%s", v);
	return 0;
}

/* A TXID: 16 hex digits (LiteFS's form), "0x" and hex, or decimal. */
static int parse_txid(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	int base = 10;
	if (n == 16) {
		base = 16;
	} else if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -1;
	for (const char *p = s; *p; p++) {
		bool dig = *p >= '0' && *p <= '9';
		bool hx = (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F');
		if (!dig && !(base == 16 && hx))
			return -1;
	}
	errno = 0;
	unsigned long long v = strtoull(s, NULL, base);
	if (errno == ERANGE || v == 0)
		return -1;
	*out = v;
	return 0;
}

/* Reads exactly n digits at *p into *v. */
static bool digits(const char **p, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (**p < '0' || **p > '9')
			return false;
		*v = *v * 10 + (**p - '0');
	}
	return true;
}

/* RFC 3339 ("2026-11-26T16:09:15.123Z", any fraction, Z or +hh:mm) or
 * integer milliseconds since the epoch. Fractions below 1 ms are
 * truncated. */
static int parse_timestamp(const char *s, int64_t *out)
{
	const char *p = s;
	int y, mo, d, h, mi, sec, zh = 0, zm = 0;
	if (*s && strspn(s, "0123456789") == strlen(s)) {
		errno = 0;
		long long v = strtoll(s, NULL, 10);
		if (errno == ERANGE || v <= 0)
			return -1;
		*out = v;
		return 0;
	}
	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' || !digits(&p, 2, &d) ||
	    (*p != 'T' && *p != 't' && *p != ' ') || !(++p, digits(&p, 2, &h)) || *p++ != ':' ||
	    !digits(&p, 2, &mi) || *p++ != ':' || !digits(&p, 2, &sec))
		return -1;
	int64_t ms = 0;
	if (*p == '.') {
		int n = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				ms = ms * 10 + (*p - '0');
		if (n == 0)
			return -1;
		for (; n < 3; n++)
			ms *= 10;
	}
	int sign = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '+' ? 1 : -1;
		if (!digits(&p, 2, &zh) || *p++ != ':' || !digits(&p, 2, &zm))
			return -1;
	} else {
		return -1;
	}
	if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi,
			 .tm_sec = sec };
	int64_t t = (int64_t)timegm(&tm) - (int64_t)sign * (zh * 3600 + zm * 60);
	if (t <= 0)
		return -1;
	*out = t * 1000 + ms;
	return 0;
}

/* The restore/export target from ?txid= and ?timestamp=. With required,
 * exactly one must be given. 0 or -1 with the failure recorded. */
static int take_target(struct httpd_conn *conn, struct creq *q, bool required, struct cloud_target *t)
{
	bool bad = false;
	const char *txid = arg(conn, "txid", &bad);
	const char *ts = arg(conn, "timestamp", &bad);
	memset(t, 0, sizeof(*t));
	if (txid && ts) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "give either txid or timestamp, not both");
		return -1;
	}
	if (required && !txid && !ts) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "missing query parameter: txid or timestamp");
		return -1;
	}
	if (txid && (bad || parse_txid(txid, &t->txid) != 0)) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "invalid txid: expected 16 hex digits, 0x and hex digits, or a decimal number > 0");
		return -1;
	}
	if (ts && (bad || parse_timestamp(ts, &t->ts_ms) != 0)) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "invalid timestamp: expected RFC 3339 (2006-01-02T15:04:05.000Z) or milliseconds since the epoch");
		return -1;
	}
	return 0;
}

/* ---- Checks on the headers ---------------------------------------------- */

static enum route find_route(const char *url, const char *method, bool *needs_db, bool *path_known)
{
	*path_known = false;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(url, routes[i].path) != 0)
			continue;
		*path_known = true;
		if (!strcmp(method, routes[i].method)) {
			*needs_db = routes[i].needs_db;
			return routes[i].r;
		}
	}
	return R_NONE;
}

/* A request whose Litefs-Cluster-Id (id) differs from the one the cluster
 * is bound to (known): admitted only as the candidate of an open rebind
 * window (REBIND in cloud_auth.c), else 422 ECLUSTERID naming both ways
 * out. 0 admitted, -1 with the failure recorded. */
static int check_rebind(struct cloud_http *srv, struct creq *q, const char *id, const char *known)
{
	enum cloud_rebind_step step = CLOUD_REBIND_WRITE;
	if (q->r == R_POS || q->r == R_INFO || q->r == R_RESTORE_CHECK || q->r >= R_DBS)
		step = CLOUD_REBIND_LOOK;
	else if (q->r == R_SNAPSHOT)
		step = CLOUD_REBIND_TAKE;
	char why[128];
	int rc = cloud_auth_rebind_step(srv->auth, q->cluster, id, step, why, sizeof(why));
	if (rc == 1) {
		LOG_WARN("cloud-http", "msg=\"cluster rebound: a node that holds no data took the cluster under a new "
				       "cluster ID\" cluster=%s cluster_id=%s old_cluster_id=%s",
			 q->cluster, id, known);
		return 0;
	}
	if (rc == 0) {
		snprintf(q->rebind_id, sizeof(q->rebind_id), "%s", id);
		return 0;
	}
	if (rc != ERR_REPL_CLUSTER) {
		set_fail(q, HTTP_SERVICE_UNAVAILABLE, "EUNAVAILABLE", "the token store is unavailable; retry");
		return -1;
	}
	set_fail(q, HTTP_UNPROCESSABLE_CONTENT, "ECLUSTERID",
		 "cluster ID mismatch: cluster %s belongs to LiteFS cluster %s, this request came from %.20s (%s). "
		 "A node that lost its data directory: put its old data.dir/clusterid back, or run "
		 "`litefs-cloud cluster rebind %s` on the service host to let the next node holding no data "
		 "take the cluster under its new ID",
		 q->cluster, known, id, why, q->cluster);
	return -1;
}

/* A request without a token may carry a dashboard session (cloud_ui.c):
 * 0 authenticated, 1 no session either, -1 refused (failure in q). */
static int check_session(struct cloud_http *srv, struct httpd_conn *conn, const char *method, struct creq *q)
{
	unsigned status = 0;
	char msg[MSG_LEN];
	int rc = cloud_ui_auth(srv->ui, conn, method, q->cluster, &status, msg, sizeof(msg));
	if (rc < 0)
		set_fail(q, status, status == HTTP_UNAUTHORIZED ? "EUNAUTHORIZED" : "EFORBIDDEN", "%s", msg);
	return rc;
}

static int check_auth(struct cloud_http *srv, struct httpd_conn *conn, const char *method, struct creq *q)
{
	const char *h = httpd_header(conn, HTTP_HEADER_AUTHORIZATION);
	if (!h) {
		int src = check_session(srv, conn, method, q);
		if (src <= 0)
			return src;
	}
	int rc = cloud_auth_check(srv->auth, h, q->cluster);
	if (rc == -EIO) {
		set_fail(q, HTTP_SERVICE_UNAVAILABLE, "EUNAVAILABLE", "the token store is unavailable; retry");
		return -1;
	}
	if (rc != 0) {
		set_fail(q, HTTP_UNAUTHORIZED, "EUNAUTHORIZED",
			 h ? "invalid or revoked token" : "missing Authorization header (a cluster token)");
		return -1;
	}
	bool bad = false;
	const char *want = arg(conn, "cluster", &bad);
	if (want && want[0] && (bad || strcmp(want, q->cluster) != 0)) {
		set_fail(q, HTTP_UNAUTHORIZED, "EUNAUTHORIZED", "this token is not valid for cluster %.64s", want);
		return -1;
	}
	const char *id = httpd_header(conn, "Litefs-Cluster-Id");
	if (!id || !id[0])
		return 0;
	char known[CLOUD_CLUSTER_ID_MAX + 1] = "";
	rc = cloud_auth_bind_cluster_id(srv->auth, q->cluster, id, known);
	if (rc == ERR_REPL_CLUSTER)
		return check_rebind(srv, q, id, known);
	if (rc == ERR_INVAL)
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "invalid Litefs-Cluster-Id header: expected LFSC and 16 upper-case hex digits");
	else if (rc == ERR_CLOUD_NOT_FOUND)
		set_fail(q, HTTP_UNAUTHORIZED, "EUNAUTHORIZED", "the cluster of this token was deleted");
	else if (rc != 0)
		set_fail(q, HTTP_SERVICE_UNAVAILABLE, "EUNAVAILABLE", "the token store is unavailable; retry");
	return rc == 0 ? 0 : -1;
}

/* Content-Length against the route's limit. */
static int check_length(struct cloud_http *srv, struct httpd_conn *conn, struct creq *q)
{
	const char *cl = httpd_header(conn, HTTP_HEADER_CONTENT_LENGTH);
	uint64_t limit = q->r == R_UPLOAD ? srv->max_db_bytes : srv->max_upload_bytes;
	if (!cl)
		return 0;
	errno = 0;
	unsigned long long n = strtoull(cl, NULL, 10);
	if (errno == ERANGE || n > limit) {
		set_fail(q, HTTP_CONTENT_TOO_LARGE, "ETOOLARGE", "body too large: the limit is %" PRIu64 " bytes",
			 limit);
		return -1;
	}
	return 0;
}

/* Every check that needs only the headers. 0 or -1 (failure in q). */
static int check_request(struct cloud_http *srv, struct httpd_conn *conn, const char *url, const char *method,
			 struct creq *q)
{
	bool needs_db = false, known = false;
	if (cloud_ui_owns(url)) {
		q->r = R_UI;
		return 0;
	}
	q->r = find_route(url, method, &needs_db, &known);
	if (q->r == R_NONE) {
		if (known)
			set_fail(q, HTTP_METHOD_NOT_ALLOWED, "EMETHOD", "method %.20s not allowed on %s", method, url);
		else
			set_fail(q, HTTP_NOT_FOUND, "ENOTFOUND", "no such endpoint: %.200s", url);
		return -1;
	}
	if (q->r == R_HEALTH)
		return 0;
	if (check_auth(srv, conn, method, q) != 0)
		return -1;
	if (needs_db && take_db_name(conn, q, "db", q->db, true) != 0)
		return -1;
	if ((q->r == R_TX || q->r == R_UPLOAD) && check_length(srv, conn, q) != 0)
		return -1;
	return 0;
}

/* ---- The dashboard's data (docs/cloud-api.md "Dashboard") ------------------ */

/* Longest table name GET /db/preview/rows takes. */
#define TABLE_NAME_MAX 1024
/* Bound of the timeline's from_ms/to_ms and of a rows offset. */
#define QUERY_INT_MAX (INT64_C(1) << 53)

static void publish_pos(struct cloud_http *srv, const char *cluster, const char *db, const struct cloud_pos *pos,
			uint64_t hwm)
{
	cloud_events_publish(srv->events, cluster, "pos",
			     json_pack("{s:o, s:o, s:o, s:I, s:o}", "db", httpd_json_str(db), "txid", jhex(pos->txid),
				       "checksum", jhex(pos->checksum), "ts_ms", (json_int_t)pos->ts_ms, "hwm",
				       jhex(hwm)));
}

/* A restore (in place, or `as` a new database) is a `pos` event of the
 * database that moved and a `restore` event saying what was restored. */
static void publish_restore(struct cloud_http *srv, struct creq *q, const char *as, const struct cloud_pos *pos,
			    const struct cloud_target *t, uint64_t undo)
{
	const char *moved = as[0] ? as : q->db;
	publish_pos(srv, q->cluster, moved, pos, pos->txid);
	json_t *o = json_pack("{s:o, s:o, s:o, s:I}", "db", httpd_json_str(q->db), "txid", jhex(pos->txid),
			      "checksum", jhex(pos->checksum), "ts_ms", (json_int_t)pos->ts_ms);
	if (o && as[0])
		json_object_set_new(o, "as", httpd_json_str(as));
	if (o && t->txid)
		json_object_set_new(o, "target_txid", jhex(t->txid));
	if (o && t->ts_ms)
		json_object_set_new(o, "target_ts_ms", json_integer(t->ts_ms));
	if (o && undo)
		json_object_set_new(o, "undo_txid", jhex(undo));
	cloud_events_publish(srv->events, q->cluster, "restore", o);
}

/* An integer parameter in [min, max]: 0 absent, 1 read into *v, -1 with
 * the failure recorded. */
static int take_int(struct httpd_conn *conn, struct creq *q, const char *key, int64_t min, int64_t max, int64_t *v)
{
	bool bad = false;
	const char *s = arg(conn, key, &bad);
	if (!s)
		return 0;
	char *end = NULL;
	errno = 0;
	long long n = s[0] ? strtoll(s, &end, 10) : 0;
	if (bad || !s[0] || *end || errno || n < min || n > max) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "invalid %s: expected an integer from %" PRId64 " to %" PRId64,
			 key, min, max);
		return -1;
	}
	*v = n;
	return 1;
}

/* A time parameter of the timeline: milliseconds or RFC 3339. */
static int take_time(struct httpd_conn *conn, struct creq *q, const char *key, bool *has, int64_t *ms)
{
	bool bad = false;
	const char *s = arg(conn, key, &bad);
	*has = s != NULL;
	if (s && (bad || parse_timestamp(s, ms) != 0 || *ms > QUERY_INT_MAX)) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "invalid %s: expected milliseconds since the epoch or RFC 3339 (2006-01-02T15:04:05.000Z)", key);
		return -1;
	}
	return 0;
}

/* Replies with the dashboard module's result: its JSON, or its error as
 * the API's codes (msg, if set, says what exactly was not found). */
static enum httpd_result reply_dash(struct httpd_conn *conn, const char *url, struct creq *q, int rc, json_t *o,
				    const char *what, const char *msg)
{
	if (rc == 0)
		return reply_json(conn, HTTP_OK, o, NULL);
	if (rc == ERR_CLOUD_NOT_FOUND && msg && msg[0])
		set_fail(q, HTTP_NOT_FOUND, "ENOTFOUND", "%s: %s", what, msg);
	else if (rc == ERR_INVAL)
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "%s: from_ms is after to_ms", what);
	else
		fail_from_rc(q, rc, what, NULL);
	return reply_fail(conn, url, q);
}

static enum httpd_result handle_dbs(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				  struct creq *q)
{
	json_t *o = NULL;
	int rc = cloud_timeline_dbs(srv->timeline, q->cluster, &o);
	return reply_dash(conn, url, q, rc, o, "cannot list databases", NULL);
}

static enum httpd_result handle_timeline(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				       struct creq *q)
{
	struct cloud_timeline_query tq = { 0 };
	int64_t max = CLOUD_TIMELINE_MAX_DEFAULT;
	if (take_time(conn, q, "from_ms", &tq.has_from, &tq.from_ms) != 0 ||
	    take_time(conn, q, "to_ms", &tq.has_to, &tq.to_ms) != 0 ||
	    take_int(conn, q, "max", 1, CLOUD_TIMELINE_MAX_CAP, &max) < 0)
		return reply_fail(conn, url, q);
	tq.max = (unsigned)max;
	json_t *o = NULL;
	int rc = cloud_timeline_query(srv->timeline, q->cluster, q->db, &tq, &o);
	return reply_dash(conn, url, q, rc, o, "timeline failed", NULL);
}

static enum httpd_result handle_preview(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				      struct creq *q, bool rows)
{
	struct cloud_target t;
	if (take_target(conn, q, false, &t) != 0)
		return reply_fail(conn, url, q);
	json_t *o = NULL;
	int rc;
	char msg[MSG_LEN] = "";
	if (rows) {
		bool bad = false;
		const char *table = arg(conn, "table", &bad);
		int64_t limit = CLOUD_PREVIEW_LIMIT_DEFAULT, offset = 0;
		if (!table || !table[0] || bad || strlen(table) > TABLE_NAME_MAX) {
			set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "invalid or missing table: 1 to %d bytes, no NUL",
				 TABLE_NAME_MAX);
			return reply_fail(conn, url, q);
		}
		if (take_int(conn, q, "limit", 1, CLOUD_PREVIEW_LIMIT_MAX, &limit) < 0 ||
		    take_int(conn, q, "offset", 0, QUERY_INT_MAX, &offset) < 0)
			return reply_fail(conn, url, q);
		rc = cloud_preview_rows(srv->preview, q->cluster, q->db, &t, table, (unsigned)limit, (uint64_t)offset,
					&o, msg, sizeof(msg));
	} else {
		rc = cloud_preview_tables(srv->preview, q->cluster, q->db, &t, &o);
	}
	if (rc != 0 && !(rc == ERR_CLOUD_NOT_FOUND && msg[0])) {
		fail_target(srv, q, rc, "preview failed", &t);
		return reply_fail(conn, url, q);
	}
	return reply_dash(conn, url, q, rc, o, "preview failed", msg);
}

/* GET /events, on the request's first call (a connection can only be
 * taken then): the stream is reserved (a refusal is still an ordinary
 * reply), then the connection is handed to the events module, which
 * writes the reply and every event from its own thread. */
static enum httpd_result take_events(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				     struct creq *q)
{
	struct cloud_events_stream *st = NULL;
	int rc = cloud_events_reserve(srv->events, q->cluster, &st);
	if (rc == -EBUSY) {
		set_fail(q, HTTP_TOO_MANY_REQUESTS, "EBUSY",
			 "too many event streams: at most %d per cluster and %d in all", CLOUD_EVENTS_PER_CLUSTER,
			 CLOUD_EVENTS_TOTAL);
		return reply_fail(conn, url, q);
	}
	if (rc != 0) {
		fail_from_rc(q, rc, "cannot open an event stream", NULL);
		return reply_fail(conn, url, q);
	}
	char *buffered = NULL;
	size_t len = 0;
	int fd = httpd_take_socket(conn, &buffered, &len);
	free(buffered); /* an event stream's client sends nothing more */
	if (fd < 0) {
		cloud_events_unreserve(srv->events, st);
		return HTTPD_NO;
	}
	cloud_events_attach(srv->events, st, fd);
	return HTTPD_YES;
}

/* ---- POST /db/tx ------------------------------------------------------- */

/* ltx_read_fn over the request's body, counted against the upload limit
 * (a chunked body has no Content-Length that was checked). */
static ssize_t tx_body_read(void *ctx, void *buf, size_t len)
{
	struct creq *q = ctx;
	if (q->fail_status)
		return ERR_CLOUD_TOO_LARGE;
	ssize_t n = httpd_body_read(q->conn, buf, len);
	if (n > 0 && (q->n_bytes += (uint64_t)n) > q->srv->max_upload_bytes) {
		set_fail(q, HTTP_CONTENT_TOO_LARGE, "ETOOLARGE", "body too large: the limit is %" PRIu64 " bytes",
			 q->srv->max_upload_bytes);
		q->refused_early = true;
		return ERR_CLOUD_TOO_LARGE;
	}
	return n;
}

/* A large or chunked body, on the handler's first call: the engine reads
 * it from the connection; the rest of a refused one is discarded. The
 * reply follows on the last call (tx_finish()), or at once for a body over
 * the limit (the connection then closes). A broken connection ends the
 * request in the server, as for any body. */
static enum httpd_result tx_pull(struct cloud_http *srv, struct httpd_conn *conn, const char *url, struct creq *q)
{
	q->conn = conn;
	q->srv = srv;
	q->ingest_rc = cloud_ingest(srv->cs, q->cluster, q->db, tx_body_read, q, &q->res);
	char buf[DISCARD_BYTES];
	ssize_t n;
	while ((n = tx_body_read(q, buf, sizeof(buf))) > 0)
		;
	if (q->fail_status)
		return reply_fail(conn, url, q);
	q->ingested = n == 0;
	return HTTPD_YES;
}

/* A small body: room for all of it, filled by body_chunk(). */
static int tx_begin_inline(struct creq *q, size_t len)
{
	q->body = malloc(len ? len : 1);
	if (!q->body)
		return ERR_NOMEM;
	q->body_cap = len ? len : 1;
	return 0;
}

static void tx_feed_inline(struct creq *q, const char *data, size_t len)
{
	if (len > q->body_cap - q->body_len) {
		/* More than Content-Length said: the server does not pass that on. */
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "body longer than its Content-Length");
		return;
	}
	memcpy(q->body + q->body_len, data, len);
	q->body_len += len;
}

static enum httpd_result tx_finish(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				 struct creq *q)
{
	if (q->body_cap) {
		struct ltx_membuf mb = { q->body, q->body_len, 0 };
		memset(&q->res, 0, sizeof(q->res));
		q->ingest_rc = cloud_ingest(srv->cs, q->cluster, q->db, ltx_membuf_read, &mb, &q->res);
		q->ingested = true;
	}
	if (q->ingest_rc != 0) {
		fail_from_rc(q, q->ingest_rc, "upload rejected", q->res.msg);
		return reply_fail(conn, url, q);
	}
	char hwm[17];
	hex16(hwm, q->res.hwm);
	LOG_DEBUG("cloud-http", "msg=\"ltx stored\" cluster=%s db=%s txid=%016" PRIx64 " hwm=%s bytes=%" PRIu64,
		  q->cluster, q->db, q->res.pos.txid, hwm, q->n_bytes);
	cloud_timeline_pushed(srv->timeline, q->cluster, q->db, clock_wall_ms());
	publish_pos(srv, q->cluster, q->db, &q->res.pos, q->res.hwm);
	json_t *o = json_pack("{s:o, s:o, s:o}", "txid", jhex(q->res.pos.txid), "postApplyChecksum",
			      jhex(q->res.pos.checksum), "hwm", jhex(q->res.hwm));
	return reply_json(conn, HTTP_OK, o, hwm);
}

/* ---- POST /db/upload ---------------------------------------------------- */

static enum httpd_result upload_finish(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				     struct creq *q)
{
	memset(&q->res, 0, sizeof(q->res));
	if (q->n_bytes == 0) {
		set_fail(q, HTTP_BAD_REQUEST, "EBADDB", "empty body: expected a SQLite database file");
		return reply_fail(conn, url, q);
	}
	int rc = lseek(q->spool_fd, 0, SEEK_SET) < 0 ? -errno : 0;
	if (rc == 0)
		rc = cloud_upload_sqlite(srv->cs, q->cluster, q->db, q->spool_fd, &q->res);
	if (rc != 0) {
		fail_from_rc(q, rc, "upload rejected", q->res.msg);
		return reply_fail(conn, url, q);
	}
	cloud_watch_bump(srv->watch, q->cluster);
	publish_pos(srv, q->cluster, q->db, &q->res.pos, q->res.hwm);
	LOG_INFO("cloud-http", "msg=\"database uploaded\" cluster=%s db=%s txid=%016" PRIx64 " bytes=%" PRIu64,
		 q->cluster, q->db, q->res.pos.txid, q->n_bytes);
	char hwm[17];
	hex16(hwm, q->res.hwm);
	json_t *o = json_pack("{s:o, s:o, s:o}", "txID", jhex(q->res.pos.txid), "postApplyChecksum",
			      jhex(q->res.pos.checksum), "timestamp", jtime(q->res.pos.ts_ms));
	return reply_json(conn, HTTP_OK, o, hwm);
}

/* A chunk of a body: fed to the engine, spooled, or discarded. */
static enum httpd_result body_chunk(struct cloud_http *srv, struct creq *q, const char *data, size_t len)
{
	q->n_bytes += len;
	if (q->fail_status)
		return q->refused_early && q->n_bytes > DRAIN_MAX ? HTTPD_NO : HTTPD_YES;
	uint64_t limit = q->r == R_UPLOAD ? srv->max_db_bytes : srv->max_upload_bytes;
	if (q->n_bytes > limit) {
		/* Only a chunked body gets here (Content-Length was checked). */
		set_fail(q, HTTP_CONTENT_TOO_LARGE, "ETOOLARGE", "body too large: the limit is %" PRIu64 " bytes",
			 limit);
		q->refused_early = true;
		return HTTPD_YES;
	}
	if (q->r == R_UI) {
		tx_feed_inline(q, data, len);
		return HTTPD_YES;
	}
	if (q->r == R_TX) {
		tx_feed_inline(q, data, len);
		return HTTPD_YES;
	}
	if (q->r == R_UPLOAD) {
		int rc = fdio_write(&q->spool_fd, data, len);
		if (rc != 0)
			set_fail(q, rc == -ENOSPC || rc == -EDQUOT ? HTTP_INSUFFICIENT_STORAGE
								  : HTTP_INTERNAL_SERVER_ERROR,
				 rc == -ENOSPC || rc == -EDQUOT ? "ENOSPACE" : "EINTERNAL", "cannot spool the upload: %s",
				 err_str(rc));
	}
	return HTTPD_YES;
}

/* ---- Requests without a body -------------------------------------------- */

struct pos_ctx {
	json_t *map;
};

static void pos_one(void *ctx, const char *db, const struct cloud_pos *pos)
{
	struct pos_ctx *p = ctx;
	json_t *v = json_pack("{s:o, s:o}", "txid", jhex(pos->txid), "postApplyChecksum", jhex(pos->checksum));
	char *key = strdup(db);
	if (!v || !key) {
		json_decref(v);
		free(key);
		return;
	}
	/* Keys must be UTF-8; other bytes become '?'. json_object_set does
	 * not steal v, so a refused key leaves it usable for the retry. */
	if (json_object_set(p->map, key, v) != 0) {
		for (char *c = key; *c; c++)
			if ((unsigned char)*c >= 0x80)
				*c = '?';
		json_object_set(p->map, key, v);
	}
	json_decref(v);
	free(key);
}

/* The rebind candidate of a cluster with no database: there is nothing
 * to take, so nothing can mix; bind it now. */
static void rebind_empty(struct cloud_http *srv, struct creq *q)
{
	char why[128];
	if (cloud_auth_rebind_step(srv->auth, q->cluster, q->rebind_id, CLOUD_REBIND_TAKE, why, sizeof(why)) == 1)
		LOG_WARN("cloud-http", "msg=\"cluster rebound: a node took the cluster, which holds no database, under a "
				       "new cluster ID\" cluster=%s cluster_id=%s",
			 q->cluster, q->rebind_id);
}

/* GET /pos?wait=<generation>[&timeout=<ms>]: the long poll (design in
 * docs/cloud-api.md). Reads the parameters: 0 with *wait set when the
 * request waits, -1 with the failure recorded. */
static int take_wait(struct httpd_conn *conn, struct creq *q, bool *wait, uint64_t *gen, int64_t *timeout_ms)
{
	bool bad = false;
	const char *w = arg(conn, "wait", &bad);
	const char *t = arg(conn, "timeout", &bad);
	*wait = false;
	*timeout_ms = POS_WAIT_DEFAULT_MS;
	if (!w)
		return 0;
	uint64_t v = 0;
	bool ok = !bad && w[0] && strlen(w) <= 16;
	for (const char *c = w; ok && *c; c++) {
		int d = *c >= '0' && *c <= '9' ? *c - '0' : *c >= 'a' && *c <= 'f' ? *c - 'a' + 10
							  : *c >= 'A' && *c <= 'F' ? *c - 'A' + 10 : -1;
		ok = d >= 0;
		v = v << 4 | (uint64_t)(d & 0xf);
	}
	if (!ok) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "invalid wait: expected the Litefs-Pos-Generation of an earlier /pos reply (16 hex digits)");
		return -1;
	}
	if (t) {
		char *end = NULL;
		errno = 0;
		long long ms = strtoll(t, &end, 10);
		if (!t[0] || *end || errno || ms < 0 || ms > POS_WAIT_MAX_MS) {
			set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "invalid timeout: expected milliseconds, 0 to %d",
				 POS_WAIT_MAX_MS);
			return -1;
		}
		*timeout_ms = ms;
	}
	*wait = true;
	*gen = v;
	return 0;
}

static enum httpd_result handle_pos(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				  struct creq *q)
{
	bool wait;
	uint64_t gen = 0;
	int64_t timeout_ms;
	if (take_wait(conn, q, &wait, &gen, &timeout_ms) != 0)
		return reply_fail(conn, url, q);
	/* The generation is read before the positions: a restore between the
	 * two is seen by the client's next wait, never missed. */
	uint64_t now = wait ? cloud_watch_wait(srv->watch, q->cluster, gen, timeout_ms, &srv->stopping)
			    : cloud_watch_gen(srv->watch, q->cluster);
	struct pos_ctx p = { json_object() };
	if (!p.map)
		return HTTPD_NO;
	int rc = cloud_positions(srv->cs, q->cluster, pos_one, &p);
	if (rc != 0) {
		json_decref(p.map);
		fail_from_rc(q, rc, "cannot list positions", NULL);
		return reply_fail(conn, url, q);
	}
	if (q->rebind_id[0] && json_object_size(p.map) == 0)
		rebind_empty(srv, q);
	char hdr[17];
	hex16(hdr, now);
	return httpd_respond_json(conn, HTTP_OK, p.map, "Litefs-Pos-Generation", hdr);
}

/* ---- Progress of an export, restore or fork (?op=) ----------------------
 *
 * The dashboard names a long operation with ?op=ID (its own random ID) and
 * follows it on its /events stream: `progress` events {op, db, phase,
 * done, total} while the store builds and writes (cloud_progress.h), then
 * for an export `ready` {op, db, size} once the file is built and its
 * sending starts, or `failed` {op, db, error} with the reply's message.
 * The browser's own download shows the sending (Content-Length). */

#define OP_ID_MAX 40

struct op_progress {
	struct cloud_progress p; /* first: the reporter's callback gets it */
	struct cloud_http *srv;
	struct creq *q;
	char op[OP_ID_MAX + 1];
};

static void op_report(struct cloud_progress *p, const char *phase, uint64_t done, uint64_t total)
{
	struct op_progress *o = (struct op_progress *)p;
	cloud_events_publish(o->srv->events, o->q->cluster, "progress",
			     json_pack("{s:s, s:o, s:s, s:I, s:I}", "op", o->op, "db", httpd_json_str(o->q->db), "phase",
				       phase, "done", (json_int_t)done, "total", (json_int_t)total));
}

/* Reads ?op= (1 to OP_ID_MAX letters, digits, '-' or '_') and, when it is
 * there, installs the reporter on this thread. 0, or -1 with the failure
 * recorded. */
static int op_begin(struct cloud_http *srv, struct httpd_conn *conn, struct creq *q, struct op_progress *o)
{
	bool bad = false;
	const char *v = arg(conn, "op", &bad);
	*o = (struct op_progress){ .p.report = op_report, .srv = srv, .q = q };
	if (!v)
		return 0;
	size_t n = strlen(v);
	bad = bad || n == 0 || n > OP_ID_MAX || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
							"0123456789-_") != n;
	if (bad) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "invalid op: 1 to %d letters, digits, '-' or '_'", OP_ID_MAX);
		return -1;
	}
	memcpy(o->op, v, n + 1);
	cloud_progress_begin(&o->p);
	return 0;
}

/* Ends the reporter; an export that was built (size) or an operation that
 * failed (q's message) is said on the stream. */
static void op_end(struct op_progress *o, int rc, const uint64_t *size)
{
	if (!o->op[0])
		return;
	cloud_progress_end();
	json_t *e = json_pack("{s:s, s:o}", "op", o->op, "db", httpd_json_str(o->q->db));
	if (e && rc != 0)
		json_object_set_new(e, "error", json_string(o->q->fail_msg));
	else if (e && size)
		json_object_set_new(e, "size", json_integer((json_int_t)*size));
	if (rc != 0 || size)
		cloud_events_publish(o->srv->events, o->q->cluster, rc != 0 ? "failed" : "ready", e);
	else
		json_decref(e);
}

/* A streamed export's pieces: few sends, yet small enough to stay in the
 * CPU cache between the merge's copy and the kernel's. */
#define EXPORT_BLOCK (256u << 10)

static ssize_t export_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	ssize_t n = cloud_export_read(cls, buf, max);
	return n > 0 ? n : n == 0 ? HTTPD_END_OF_STREAM : HTTPD_END_WITH_ERROR;
}

/* A node (it sends its cluster ID) taking the latest state, whole or as
 * the changes after its position: after a restore, that is the primary
 * taking the restored state (the dashboard's "fetch" event). */
static void publish_fetch(struct cloud_http *srv, struct httpd_conn *conn, struct creq *q, const struct cloud_pos *pos)
{
	const char *node_id = httpd_header(conn, "Litefs-Cluster-Id");
	if (node_id && node_id[0])
		cloud_events_publish(srv->events, q->cluster, "fetch",
				     json_pack("{s:o, s:o, s:o}", "db", httpd_json_str(q->db), "txid", jhex(pos->txid),
					       "checksum", jhex(pos->checksum)));
}

static void export_free(void *cls)
{
	cloud_export_close(cls);
	free(cls);
}

static enum httpd_result handle_snapshot(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				       struct creq *q)
{
	struct cloud_target t;
	bool bad = false;
	const char *fmt = arg(conn, "format", &bad);
	enum cloud_format f = CLOUD_FORMAT_LTX;
	if (fmt && !strcmp(fmt, "sqlite"))
		f = CLOUD_FORMAT_SQLITE;
	else if (fmt && fmt[0] && strcmp(fmt, "ltx") != 0) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "invalid format: expected ltx or sqlite");
		return reply_fail(conn, url, q);
	}
	struct op_progress op;
	if (take_target(conn, q, false, &t) != 0 || op_begin(srv, conn, q, &op) != 0)
		return reply_fail(conn, url, q);
	/* A file (the latest state's copy, or an LTX snapshot) goes out with
	 * sendfile; a past state streams from the stored files as it is built,
	 * its length known in advance, so a state that fails its checks ends
	 * in a cut connection before its last byte (cloud_store.h). With ?op=
	 * (the dashboard shows the build, then the download) it is built into
	 * a file first, as before streaming. */
	struct cloud_export_src *x = malloc(sizeof(*x));
	int rc = ERR_NOMEM;
	if (x && op.op[0]) {
		*x = (struct cloud_export_src){ .fd = -1, .tee_fd = -1 }; /* both closed by export_free() */
		rc = cloud_export_fd(srv->cs, q->cluster, q->db, &t, f, &x->fd, &x->size, &x->pos);
	} else if (x) {
		rc = cloud_export_open(srv->cs, q->cluster, q->db, &t, f, x);
	}
	if (rc != 0)
		fail_target(srv, q, rc, "export failed", &t);
	op_end(&op, rc, x ? &x->size : NULL);
	if (rc != 0) {
		free(x);
		return reply_fail(conn, url, q);
	}
	struct cloud_pos pos = x->pos;
	struct httpd_response *r;
	if (x->merge == NULL) {
		r = httpd_response_fd(x->fd, x->size);
		if (r)
			x->fd = -1;
		export_free(x);
	} else {
		r = httpd_response_callback(x->size, EXPORT_BLOCK, export_reader, x, export_free);
		if (!r)
			export_free(x);
	}
	if (!r)
		return HTTPD_NO;
	char buf[64], ts[40];
	snprintf(buf, sizeof(buf), "%016" PRIx64 "/%016" PRIx64, pos.txid, pos.checksum);
	httpd_response_header(r, HTTP_HEADER_CONTENT_TYPE,
				f == CLOUD_FORMAT_SQLITE ? "application/vnd.sqlite3" : "application/octet-stream");
	httpd_response_header(r, HTTP_HEADER_CACHE_CONTROL, "no-store");
	httpd_response_header(r, "Litefs-Pos", buf);
	if (pos.ts_ms > 0) {
		ltx_format_time(ts, sizeof(ts), pos.ts_ms);
		httpd_response_header(r, "Litefs-Timestamp", ts);
	}
	enum httpd_result ret = httpd_queue(conn, HTTP_OK, r);
	if (ret == HTTPD_YES && !t.txid && !t.ts_ms)
		publish_fetch(srv, conn, q, &pos);
	return ret;
}

/* GET /db/changes?db=&after=TXID/CHECKSUM: the stored files after a
 * position the node has, merged into one LTX file (cloud_changes.h), sent
 * with sendfile. A node that is not on the history (409 EPOSMISMATCH),
 * too far behind (413 ETOOLARGE) or past the window (404 EWINDOW) takes a
 * snapshot instead. */
static enum httpd_result handle_changes(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
					struct creq *q)
{
	bool bad = false;
	const char *after = arg(conn, "after", &bad);
	struct ltx_pos from;
	if (!after || bad || ltx_parse_pos(after, &from) != 0) {
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID",
			 "missing or invalid after: expected TXID/CHECKSUM (16 hex digits each)");
		return reply_fail(conn, url, q);
	}
	int fd = -1;
	uint64_t size = 0;
	struct cloud_pos pos;
	int rc = cloud_changes_fd(srv->cs, q->cluster, q->db, from, &fd, &size, &pos);
	if (rc != 0) {
		q->res.pos = pos;
		fail_from_rc(q, rc, "changes",
			     rc == ERR_CLOUD_POS_MISMATCH ? "the position asked from is not on the service's history" : NULL);
		return reply_fail(conn, url, q);
	}
	struct httpd_response *r = httpd_response_fd(fd, size);
	if (!r) {
		close(fd);
		return HTTPD_NO;
	}
	char buf[LTX_POS_STR_LEN];
	ltx_format_pos(buf, (struct ltx_pos){ pos.txid, pos.checksum });
	httpd_response_header(r, HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	httpd_response_header(r, HTTP_HEADER_CACHE_CONTROL, "no-store");
	httpd_response_header(r, "Litefs-Pos", buf);
	enum httpd_result ret = httpd_queue(conn, HTTP_OK, r);
	if (ret == HTTPD_YES)
		publish_fetch(srv, conn, q, &pos);
	return ret;
}

/* A position as restore replies give it; without "db" when db is NULL. */
static json_t *pos_json(const char *db, const struct cloud_pos *pos)
{
	json_t *o = json_pack("{s:o, s:o, s:o}", "txID", jhex(pos->txid), "postApplyChecksum", jhex(pos->checksum),
			      "timestamp", jtime(pos->ts_ms));
	if (o && db)
		json_object_set_new(o, "db", httpd_json_str(db));
	return o;
}

static enum httpd_result handle_restore(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				      struct creq *q, bool check)
{
	struct cloud_target t;
	char as[DB_NAME_MAX + 1];
	struct op_progress op;
	if (take_target(conn, q, true, &t) != 0 || take_db_name(conn, q, "as", as, false) != 0 ||
	    op_begin(srv, conn, q, &op) != 0)
		return reply_fail(conn, url, q);
	struct cloud_pos pos = { 0 }, before = { 0 };
	static const struct cloud_target latest = { 0 };
	/* The position before an in-place restore: what undoes it. */
	if (!check && !as[0])
		cloud_resolve(srv->cs, q->cluster, q->db, &latest, &before);
	int rc = check ? cloud_resolve(srv->cs, q->cluster, q->db, &t, &pos)
		       : cloud_restore(srv->cs, q->cluster, q->db, &t, as[0] ? as : NULL, &pos);
	if (rc != 0)
		fail_target(srv, q, rc, check ? "restore check failed" : "restore failed", &t);
	op_end(&op, rc, NULL);
	if (rc != 0)
		return reply_fail(conn, url, q);
	json_t *o = pos_json(as[0] ? as : q->db, &pos);
	if (!check) {
		/* Wakes the cluster's long polls: its primary takes the
		 * restored state at once. */
		cloud_watch_bump(srv->watch, q->cluster);
		LOG_DEBUG("cloud-http", "msg=\"database restored\" cluster=%s db=%s as=%s txid=%016" PRIx64
				       " target_txid=%016" PRIx64 " target_ts_ms=%" PRId64,
			 q->cluster, q->db, as[0] ? as : "-", pos.txid, t.txid, t.ts_ms);
		/* A restore appends one transaction (TXID + 1) under the
		 * database's writer lock, so the state just before it is the
		 * TXID below; a restore to the current state appends nothing. */
		uint64_t undo = pos.txid == before.txid ? pos.txid : pos.txid - 1;
		if (o && !as[0] && before.txid)
			json_object_set_new(o, "undo_txid", jhex(undo));
		publish_restore(srv, q, as, &pos, &t, !as[0] && before.txid ? undo : 0);
	}
	if (o)
		json_object_set_new(o, "ts_ms", json_integer(pos.ts_ms));
	return reply_json(conn, HTTP_OK, o, NULL);
}

/* litefs-backup's CLI reads minTxId/maxTxId/minTimestamp/maxTimestamp at
 * the top level; the engine puts the range under "restorable". */
static void info_add_compat(json_t *o)
{
	static const char *const map[][2] = {
		{ "min_txid", "minTxId" }, { "max_txid", "maxTxId" },
		{ "min_timestamp", "minTimestamp" }, { "max_timestamp", "maxTimestamp" },
	};
	json_t *r = json_object_get(o, "restorable");
	for (size_t i = 0; r && i < sizeof(map) / sizeof(map[0]); i++) {
		json_t *v = json_object_get(r, map[i][0]);
		if (v && !json_object_get(o, map[i][1]))
			json_object_set(o, map[i][1], v);
	}
}

/* A timestamp of /db/info: always a string (every position there has
 * one), where jtime() writes null for a missing one. */
static json_t *jtime_str(int64_t ms)
{
	char b[40];
	ltx_format_time(b, sizeof(b), ms);
	return json_string(b);
}

/* The body of GET /db/info (docs/cloud-api.md); NULL if out of memory. */
static json_t *info_json(const struct cloud_db_info *in)
{
	static const char *const kinds[] = {
		[CLOUD_LEVEL_UPLOAD] = "upload", [CLOUD_LEVEL_COMPACTED] = "compacted", [CLOUD_LEVEL_SNAPSHOT] = "snapshot",
	};
	json_t *snapshots = json_array(), *levels = json_array();
	for (size_t i = 0; snapshots && i < in->n_snapshots; i++) {
		const struct cloud_snapshot_info *sn = &in->snapshots[i];
		json_array_append_new(snapshots, json_pack("{s:o, s:o, s:I, s:I, s:i}", "txid", jhex(sn->txid),
							   "timestamp", jtime_str(sn->ts_ms), "ts_ms", (json_int_t)sn->ts_ms,
							   "size", (json_int_t)sn->size, "level", sn->level));
	}
	for (size_t i = 0; levels && i < in->n_levels; i++) {
		const struct cloud_level_info *l = &in->levels[i];
		json_array_append_new(levels, json_pack("{s:i, s:s, s:I, s:I, s:I}", "level", l->level, "kind",
							kinds[l->kind], "interval_ms", (json_int_t)l->interval_ms,
							"files", (json_int_t)l->files, "bytes", (json_int_t)l->bytes));
	}
	json_t *ranges = json_array();
	for (size_t i = 0; ranges && i < in->n_ranges; i++) {
		const struct cloud_range *r = &in->ranges[i];
		json_array_append_new(ranges, json_pack("{s:o, s:o, s:s, s:I}", "from_txid", jhex(r->from_txid),
							"to_txid", jhex(r->to_txid), "restorable",
							r->per_tx ? "every transaction" : "batch ends", "points",
							(json_int_t)r->points));
	}
	/* "o" takes the arrays, also when the pack fails. */
	json_t *o = json_pack("{s:s, s:s, s:{s:o, s:o, s:o, s:I}, s:i, s:i, s:I, s:{s:o, s:o, s:o, s:o, s:I, s:I},"
			 " s:o, s:o, s:I, s:I}",
			 "cluster", in->cluster, "name", in->name,
			 "pos", "txid", jhex(in->pos.txid), "checksum", jhex(in->pos.checksum), "timestamp",
			 jtime_str(in->pos.ts_ms), "ts_ms", (json_int_t)in->pos.ts_ms,
			 "page_size", (int)in->page_size, "pages", (int)in->pages,
			 "transactions", (json_int_t)in->transactions,
			 "restorable", "min_txid", jhex(in->min_txid), "max_txid", jhex(in->max_txid),
			 "min_timestamp", jtime_str(in->min_ts_ms), "max_timestamp", jtime_str(in->max_ts_ms),
			 "min_ts_ms", (json_int_t)in->min_ts_ms, "max_ts_ms", (json_int_t)in->max_ts_ms,
			 "snapshots", snapshots, "levels", levels, "bytes", (json_int_t)in->bytes,
			 "retention_ms", (json_int_t)in->retention_ms);
	if (o == NULL) {
		json_decref(ranges);
		return NULL;
	}
	json_object_set_new(o, "ranges", ranges);
	if (in->ranges_omitted)
		json_object_set_new(o, "ranges_omitted", json_integer((json_int_t)in->ranges_omitted));
	return o;
}

static enum httpd_result handle_info(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				   struct creq *q)
{
	struct cloud_db_info *info = NULL;
	int rc = cloud_db_info(srv->cs, q->cluster, q->db, &info);
	json_t *o = rc == 0 ? info_json(info) : NULL;
	cloud_db_info_free(info);
	if (rc == 0 && o == NULL)
		rc = ERR_NOMEM;
	if (rc != 0) {
		fail_from_rc(q, rc, "info failed", NULL);
		return reply_fail(conn, url, q);
	}
	if (!json_object_get(o, "name"))
		json_object_set_new(o, "name", httpd_json_str(q->db));
	info_add_compat(o);
	return reply_json(conn, HTTP_OK, o, NULL);
}

static enum httpd_result handle_delete(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				     struct creq *q)
{
	int rc = cloud_db_delete(srv->cs, q->cluster, q->db);
	if (rc != 0) {
		fail_from_rc(q, rc, "delete failed", NULL);
		return reply_fail(conn, url, q);
	}
	cloud_watch_bump(srv->watch, q->cluster);
	cloud_events_publish(srv->events, q->cluster, "delete", json_pack("{s:o}", "db", httpd_json_str(q->db)));
	LOG_DEBUG("cloud-http", "msg=\"database deleted\" cluster=%s db=%s", q->cluster, q->db);
	return reply_json(conn, HTTP_OK, json_pack("{s:o, s:b}", "name", httpd_json_str(q->db), "deleted", 1), NULL);
}

/* The last call of a request: everything was received. */
static enum httpd_result dispatch(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				const char *method, struct creq *q)
{
	if (q->fail_status)
		return reply_fail(conn, url, q);
	switch (q->r) {
	case R_HEALTH: return reply_json(conn, HTTP_OK, json_pack("{s:b}", "ok", 1), NULL);
	case R_POS: return handle_pos(srv, conn, url, q);
	case R_TX: return tx_finish(srv, conn, url, q);
	case R_SNAPSHOT: return handle_snapshot(srv, conn, url, q);
	case R_CHANGES: return handle_changes(srv, conn, url, q);
	case R_RESTORE: return handle_restore(srv, conn, url, q, false);
	case R_RESTORE_CHECK: return handle_restore(srv, conn, url, q, true);
	case R_UPLOAD: return upload_finish(srv, conn, url, q);
	case R_INFO: return handle_info(srv, conn, url, q);
	case R_DELETE: return handle_delete(srv, conn, url, q);
	case R_UI: return cloud_ui_serve(srv->ui, conn, url, method, (const char *)q->body, q->body_len);
	case R_DBS: return handle_dbs(srv, conn, url, q);
	case R_TIMELINE: return handle_timeline(srv, conn, url, q);
	case R_PREVIEW: return handle_preview(srv, conn, url, q, false);
	case R_PREVIEW_ROWS: return handle_preview(srv, conn, url, q, true);
	case R_EVENTS: /* taken on the first call unless it had a body */
		set_fail(q, HTTP_BAD_REQUEST, "EINVALID", "GET /events takes no body");
		return reply_fail(conn, url, q);
	case R_NONE: break;
	}
	return HTTPD_NO;
}

/* ---- The access handler ------------------------------------------------- */

static void creq_free(struct creq *q)
{
	if (!q)
		return;
	if (q->spool_fd >= 0)
		close(q->spool_fd);
	free(q->body);
	free(q);
}

static bool has_body(struct httpd_conn *conn)
{
	const char *cl = httpd_header(conn, HTTP_HEADER_CONTENT_LENGTH);
	const char *te = httpd_header(conn, HTTP_HEADER_TRANSFER_ENCODING);
	return te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
}

/* The Content-Length of a body small enough to take in memory, else
 * SIZE_MAX (large, chunked, or unknown). */
static size_t inline_length(struct httpd_conn *conn)
{
	const char *cl = httpd_header(conn, HTTP_HEADER_CONTENT_LENGTH);
	const char *te = httpd_header(conn, HTTP_HEADER_TRANSFER_ENCODING);
	if (!cl || te)
		return SIZE_MAX;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(cl, &end, 10);
	return errno == 0 && end != cl && *end == '\0' && n <= INLINE_TX_MAX ? (size_t)n : SIZE_MAX;
}

/* Whether a refusal must be sent before the body: the client waits for
 * 100 Continue, or the body is too large (or of unknown size) to drain. */
static bool refuse_at_once(struct httpd_conn *conn)
{
	if (!has_body(conn))
		return false;
	if (httpd_header(conn, HTTP_HEADER_EXPECT))
		return true;
	const char *cl = httpd_header(conn, HTTP_HEADER_CONTENT_LENGTH);
	return !cl || strtoull(cl, NULL, 10) > DRAIN_MAX;
}

/* First call: create the request state and run the header checks. */
static enum httpd_result on_first_call(struct cloud_http *srv, struct httpd_conn *conn, const char *url,
				     const char *method, void **con_cls)
{
	struct creq *q = calloc(1, sizeof(*q));
	if (!q)
		return HTTPD_NO;
	q->spool_fd = -1;
	*con_cls = q;
	if (atomic_load(&srv->stopping))
		set_fail(q, HTTP_SERVICE_UNAVAILABLE, "EUNAVAILABLE", "the service is shutting down");
	else if (check_request(srv, conn, url, method, q) == 0 && q->r == R_TX) {
		size_t len = inline_length(conn);
		if (len == SIZE_MAX)
			return tx_pull(srv, conn, url, q);
		int rc = tx_begin_inline(q, len);
		if (rc != 0)
			set_fail(q, HTTP_INTERNAL_SERVER_ERROR, "EINTERNAL", "cannot start the ingest: %s", err_str(rc));
	} else if (!q->fail_status && q->r == R_UI && has_body(conn)) {
		size_t len = inline_length(conn);
		if (len > CLOUD_UI_BODY_MAX)
			set_fail(q, HTTP_CONTENT_TOO_LARGE, "ETOOLARGE", "body too large for the dashboard");
		else if (tx_begin_inline(q, len) != 0)
			set_fail(q, HTTP_INTERNAL_SERVER_ERROR, "EINTERNAL", "out of memory");
	} else if (!q->fail_status && q->r == R_EVENTS && !has_body(conn)) {
		return take_events(srv, conn, url, q);
	} else if (!q->fail_status && q->r == R_UPLOAD) {
		q->spool_fd = fileio_spool_open(srv->tmp_dir);
		if (q->spool_fd < 0)
			fail_from_rc(q, q->spool_fd, "cannot create a temp file", NULL);
	}
	if (q->fail_status) {
		q->refused_early = true;
		if (refuse_at_once(conn))
			return reply_fail(conn, url, q);
	}
	return HTTPD_YES;
}

static enum httpd_result on_request(void *cls, struct httpd_conn *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct cloud_http *srv = cls;
	if (*con_cls == NULL) {
		atomic_fetch_add(&srv->n_active, 1);
		return on_first_call(srv, conn, url, method, con_cls);
	}
	struct creq *q = *con_cls;
	if (*upload_data_size != 0) {
		size_t len = *upload_data_size;
		*upload_data_size = 0;
		return body_chunk(srv, q, upload_data, len);
	}
	return dispatch(srv, conn, url, method, q);
}

static void on_completed(void *cls, struct httpd_conn *conn, void **con_cls, enum httpd_end toe)
{
	struct cloud_http *srv = cls;
	struct creq *q = *con_cls;
	if (q && q->r == R_TX && toe != HTTPD_END_OK && !q->ingested)
		LOG_WARN("cloud-http", "msg=\"upload connection ended early; nothing stored\" cluster=%s db=%s bytes=%" PRIu64,
			 q->cluster, q->db, q->n_bytes);
	creq_free(q);
	*con_cls = NULL;
	atomic_fetch_sub(&srv->n_active, 1);
}

/* Under pressure the server keeps RESERVED_WORKERS for requests that carry
 * a valid token: the nodes' pushes and the operators' restores are served
 * while strangers hold every other worker. */
static bool is_trusted(void *cls, struct httpd_conn *conn)
{
	struct cloud_http *srv = cls;
	char cluster[CLOUD_CLUSTER_NAME_MAX + 1];
	const char *h = httpd_header(conn, HTTP_HEADER_AUTHORIZATION);
	return h && cloud_auth_check(srv->auth, h, cluster) == 0;
}

/* ---- Start and stop ----------------------------------------------------- */

static int listen_on(struct cloud_http *srv, const char *addr)
{
	struct httpd_listen l = {
		.addr = addr, .mod = "cloud-http", .handler = on_request, .completed = on_completed,
		.trusted = is_trusted, .cls = srv, .workers = CONNECTION_LIMIT, .reserved = RESERVED_WORKERS,
	};
	uint16_t port = 0;
	int rc = httpd_start(&l, &srv->daemon, &port);
	srv->port = port;
	return rc;
}

int cloud_http_start(struct cloud_store *cs, struct cloud_auth *auth, const struct cloud_http_opts *opts,
		     struct cloud_http **out)
{
	*out = NULL;
	struct cloud_http *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return ERR_NOMEM;
	srv->cs = cs;
	srv->auth = auth;
	srv->max_upload_bytes = opts->max_upload_bytes;
	srv->max_db_bytes = opts->max_db_bytes;
	atomic_init(&srv->stopping, false);
	atomic_init(&srv->n_active, 0);
	srv->tmp_dir = strdup(opts->tmp_dir);
	int rc = srv->tmp_dir ? cloud_watch_open(&srv->watch) : ERR_NOMEM;
	if (rc == 0)
		rc = cloud_ui_new(auth, opts->ui_session_ms > 0 ? opts->ui_session_ms : CLOUD_UI_SESSION_DEFAULT_MS,
				  &srv->ui);
	if (rc == 0)
		rc = cloud_timeline_open(cs, &srv->timeline);
	if (rc == 0)
		rc = cloud_preview_open(cs, &srv->preview);
	if (rc == 0)
		rc = cloud_events_open(&srv->events);
	if (rc == 0)
		rc = listen_on(srv, opts->addr);
	if (rc != 0) {
		cloud_ui_free(srv->ui);
		cloud_events_close(srv->events);
		cloud_preview_close(srv->preview);
		cloud_timeline_close(srv->timeline);
		cloud_watch_close(srv->watch);
		free(srv->tmp_dir);
		free(srv);
		return rc;
	}
	LOG_INFO("cloud-http", "msg=\"serving the LiteFS Cloud API\" addr=\"%s\" port=%u", opts->addr, srv->port);
	*out = srv;
	return 0;
}

unsigned cloud_http_port(const struct cloud_http *srv)
{
	return srv->port;
}

void cloud_http_stop(struct cloud_http *srv)
{
	if (!srv)
		return;
	/* New requests get 503; requests in flight (an ingest waiting for
	 * fsync) get STOP_GRACE_MS to deliver their reply, so that a client
	 * never hears "failed" about an upload that was stored. */
	atomic_store(&srv->stopping, true);
	httpd_quiesce(srv->daemon);
	struct timespec step = { 0, 20 * 1000000L };
	for (int waited = 0; atomic_load(&srv->n_active) > 0 && waited < STOP_GRACE_MS; waited += 20)
		nanosleep(&step, NULL);
	if (atomic_load(&srv->n_active) > 0)
		LOG_WARN("cloud-http", "msg=\"stopping with requests in flight\" n=%d", atomic_load(&srv->n_active));
	httpd_stop(srv->daemon);
	cloud_watch_close(srv->watch); /* the long polls ended with the server */
	cloud_ui_free(srv->ui);
	cloud_events_close(srv->events); /* so did the event streams */
	cloud_preview_close(srv->preview);
	cloud_timeline_close(srv->timeline);
	free(srv->tmp_dir);
	free(srv);
}
