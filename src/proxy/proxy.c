/*
 * proxy.c — the proxy's server, routing and relaying (proxy.h; the design
 * and its reasons are in docs/proxy.md).
 *
 * THREADS: one accept thread, and one thread per client connection (a
 * small stack; buffers of a request live on the heap only while it is
 * served), which does blocking I/O on the client socket and on at most one
 * upstream socket (the application, or the primary's proxy) that it keeps
 * alive between requests.
 *
 * ONE REQUEST (the client's bytes go through http-parser, which pauses the
 * connection thread at two points):
 *
 *   headers complete ──► route (on_head):
 *     /litefs/health                 answer 200 OK / 503 (lag > max-lag)
 *     passthrough glob               TARGET
 *     GET/HEAD, not always-forward   replica: wait until proxy.db reaches
 *                                    the __txid cookie (txid-timeout, 504)
 *                                    ──► TARGET
 *     anything else (a write)        wait for a primary (primary-redirect-
 *                                    timeout, 503): this node may write ──►
 *                                    TARGET + __txid cookie; another node
 *                                    ──► FORWARD to its proxy (or answer
 *                                    fly-replay)
 *     then: dial (TARGET: retried while refused, the app starting), send
 *     the head; the body streams as the parser delivers it (re-framed;
 *     the first REPLAY_MAX bytes also kept for a replay)
 *   message complete ──► relay the response (relay):
 *     status line + headers, filtered; Litefs-Replay: primary from the
 *     app on a replica, with the body kept whole ──► the same request to
 *     the primary's proxy, whose answer the client gets (REPLAYED)
 *     101 ──► tunnel both ways until either side closes
 *
 * FAILURES: the app refusing connections is retried for DIAL_RETRY_MS then
 * 502; the app dying mid-response ends the client's connection without a
 * terminating chunk (the client sees a truncated response, never a short
 * one that looks complete); a client leaving mid-body closes the upstream
 * connection; a malformed request (the parser's verdict: bad chunking,
 * Content-Length with Transfer-Encoding, oversized head) gets 400/431 and
 * the connection closes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/sbuf.h"
#include "node/config.h"
#include "node/db.h"
#include "node/node.h"
#include "node/proxystat.h"
#include "node/store.h"
#include "proxy/proxy.h"
#include "proxy/proxy_msg.h"

/* A request body up to this size is kept so that it can be re-sent to the
 * primary (replay); a longer one streams and cannot be replayed. */
#define PROXY_REPLAY_MAX (1024 * 1024)
/* How long a refused connection to the application is retried. */
#define PROXY_DIAL_RETRY_MS 10000
/* A forwarded request that arrives forwarded this many times is refused
 * (a loop while the nodes disagree on the primary for longer than the
 * settling waits below). */
#define PROXY_MAX_HOPS 8
/* A forwarded request reaching a node that is not the primary waits this
 * long per hop so far for the node's view to settle (during a handoff the
 * new primary holds the lease a few milliseconds before it says so, and
 * the old one already points at it) before it is sent on. */
#define PROXY_SETTLE_MS_PER_HOP 100
#define PROXY_STACK_SIZE (256 * 1024)
/* How long an idle connection keeps its request state (~150 KiB of
 * virtual memory, a few pages touched) for the next request. */
#define PROXY_KEEP_RQ_MS 1000
#define PROXY_REPLAY_HEADER "Litefs-Replay"
#define PROXY_HOPS_HEADER "Litefs-Forwarded"

struct proxy {
	struct store *st;
	struct node *node;
	const struct config *cfg; /* borrowed */
	char hostname[256];
	struct sockaddr_storage target;
	socklen_t target_len;
	int lfd;
	pthread_t accept_tid;
	atomic_bool stopping;
	struct proxystat *stats; /* the node's */

	pthread_mutex_t mu; /* guards conns, n_conns and each conn's fd/up_fd while in the list */
	pthread_cond_t cond;
	struct pconn *conns;
	size_t n_conns;
};

enum route { R_NONE, R_TARGET, R_FORWARD };
enum ev { EV_NONE, EV_HEAD, EV_DONE };
enum resp { RESP_DONE, RESP_REPLAY, RESP_UPGRADED, RESP_FAIL_EARLY, RESP_FAIL_LATE };

/* The state of one request; heap-allocated while it is served, freed when
 * the connection goes idle. The fields before `req` are reset per request. */
struct preq {
	enum route route;
	enum ev ev;
	int status;
	char path[512];
	char fwd_url[256];
	int hops;
	bool begun;          /* between message begin and the end of the relay */
	bool responded;      /* the proxy answered itself; the body is discarded */
	bool passthrough, set_cookie, replayed, waited;
	bool has_body, chunked_up, body_overflow;
	bool resp_head_done, resp_done, client_chunked, resp_upgrade;
	int64_t t0_ms;
	char cl[32];         /* the request's Content-Length, as sent */
	struct sbuf body;    /* the first PROXY_REPLAY_MAX bytes of the body */
	struct proxy_head req, resp;
	struct proxy_out uo; /* to the upstream */
	struct proxy_out co; /* to the client */
	char rbuf[16384];    /* reads from the upstream */
};

struct pconn {
	struct proxy *px;
	struct pconn *next, *prev;
	int fd;
	int up_fd;            /* kept-alive upstream, -1 none */
	char up_key[256];     /* "" the target, else the primary's proxy URL */
	bool up_reused;
	bool close_after;
	char peer[64];
	http_parser p;
	struct preq *rq;
	size_t in_off, in_len;
	char in[8192];
};

/* ---- Logging --------------------------------------------------------------- */

#define DBG(c, fmt, ...)                                                                                   \
	do {                                                                                               \
		if ((c)->px->cfg->proxy.debug)                                                             \
			LOG_INFO("proxy", "msg=\"" fmt "\" method=%s path=\"%s\" peer=%s" , ##__VA_ARGS__, \
				 http_method_str((enum http_method)(c)->p.method), (c)->rq->path, (c)->peer); \
	} while (0)

/* ---- Upstream socket ------------------------------------------------------- */

static void up_close(struct pconn *c)
{
	if (c->up_fd < 0)
		return;
	pthread_mutex_lock(&c->px->mu);
	close(c->up_fd);
	c->up_fd = -1;
	pthread_mutex_unlock(&c->px->mu);
	c->up_key[0] = '\0';
}

static void up_set(struct pconn *c, int fd, const char *key)
{
	pthread_mutex_lock(&c->px->mu);
	c->up_fd = fd;
	pthread_mutex_unlock(&c->px->mu);
	snprintf(c->up_key, sizeof(c->up_key), "%s", key);
}

/* Whether a kept-alive upstream connection is still usable: nothing to
 * read on it (an idle connection the other side closed reads as EOF). */
static bool up_alive(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLRDHUP };
	return poll(&pfd, 1, 0) == 0;
}

/* Connects to the application, retrying while it refuses (it may be
 * starting). Returns 0 or -errno. */
static int dial_target(struct pconn *c)
{
	struct proxy *px = c->px;
	if (c->up_fd >= 0 && c->up_key[0] == '\0' && up_alive(c->up_fd)) {
		c->up_reused = true;
		return 0;
	}
	up_close(c);
	c->up_reused = false;
	int64_t deadline = clock_mono_ms() + PROXY_DIAL_RETRY_MS;
	for (;;) {
		int fd = proxy_dial(&px->target, px->target_len);
		if (fd >= 0) {
			up_set(c, fd, "");
			return 0;
		}
		if (fd != -ECONNREFUSED || clock_mono_ms() >= deadline || atomic_load(&px->stopping))
			return fd;
		DBG(c, "application not listening yet; retrying");
		usleep(50 * 1000);
	}
}

/* Connects to the primary's proxy at url. Returns 0 or -errno/ERR_INVAL. */
static int dial_forward(struct pconn *c, const char *url)
{
	if (c->up_fd >= 0 && !strcmp(c->up_key, url) && up_alive(c->up_fd)) {
		c->up_reused = true;
		return 0;
	}
	up_close(c);
	c->up_reused = false;
	struct sockaddr_storage ss;
	socklen_t sl;
	int rc = proxy_resolve(url, false, &ss, &sl);
	if (rc != 0)
		return rc;
	int fd = proxy_dial(&ss, sl);
	if (fd < 0)
		return fd;
	up_set(c, fd, url);
	return 0;
}

/* ---- Answers of the proxy itself --------------------------------------------- */

static void respond(struct pconn *c, int status, const char *reason, const char *extra, const char *body)
{
	struct preq *rq = c->rq;
	/* The body of the request is not read: the connection ends after the
	 * answer unless there is none. */
	if (rq->has_body || !http_should_keep_alive(&c->p))
		c->close_after = true;
	struct proxy_out *o = &rq->co;
	proxy_out_printf(o, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%sContent-Length: %zu\r\n%s\r\n",
			 status, reason, extra ? extra : "", strlen(body),
			 c->close_after ? "Connection: close\r\n" : "");
	if (c->p.method != HTTP_HEAD)
		proxy_out_put(o, body, strlen(body));
	proxy_out_flush(o);
	rq->responded = true;
}

/* The raw answer to a request the parser refused; no request state. */
static void respond_raw(struct pconn *c, int status, const char *reason)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
					   "Connection: close\r\n\r\n%s\n",
			 status, reason, strlen(reason) + 1, reason);
	proxy_write_all(c->fd, buf, (size_t)n);
}

/* ---- Waiting ------------------------------------------------------------------ */

static uint64_t db_txid(struct proxy *px)
{
	struct db *db = store_find(px->st, px->cfg->proxy.db, false);
	return db ? db_pos(db).txid : 0;
}

/* Waits until proxy.db reaches txid. Returns true when it did, or when
 * this node has no such database (LiteFS proxies such a read at once). */
static bool wait_txid(struct pconn *c, uint64_t txid)
{
	struct proxy *px = c->px;
	if (!store_find(px->st, px->cfg->proxy.db, false)) {
		DBG(c, "no such database; to the target without waiting" "\" db=\"%s", px->cfg->proxy.db);
		return true;
	}
	int64_t start = clock_mono_ms(), deadline = start + px->cfg->proxy.txid_timeout_ms;
	for (;;) {
		uint64_t seq = node_change_seq(px->node);
		uint64_t have = db_txid(px);
		int64_t now = clock_mono_ms();
		if (have >= txid || node_is_primary(px->node)) {
			if (now > start || c->rq->waited) {
				proxystat_wait(px->stats, now - start);
				DBG(c, "position reached after waiting" "\" wait_ms=\"%" PRId64, now - start);
			}
			return true;
		}
		if (now >= deadline || atomic_load(&px->stopping)) {
			proxystat_wait(px->stats, now - start);
			return false;
		}
		c->rq->waited = true;
		int64_t left = deadline - now;
		node_wait_change(px->node, seq, (int)(left < 100 ? left : 100));
	}
}

enum primary { P_NONE, P_LOCAL, P_REMOTE };

/* Waits until a primary is known: this node accepting writes (P_LOCAL) or
 * another node with a proxy URL (P_REMOTE, url filled), at most until
 * deadline_ms (monotonic). */
static enum primary wait_primary(struct pconn *c, int64_t deadline_ms, char *url, size_t len)
{
	struct proxy *px = c->px;
	int64_t start = clock_mono_ms();
	bool waited = false;
	enum primary r = P_NONE;
	for (;;) {
		uint64_t seq = node_change_seq(px->node);
		if (node_may_write(px->node)) {
			r = P_LOCAL;
			break;
		}
		if (!node_is_primary(px->node)) {
			node_primary_proxy(px->node, url, len);
			if (url[0]) {
				r = P_REMOTE;
				break;
			}
		}
		int64_t now = clock_mono_ms();
		if (now >= deadline_ms || atomic_load(&px->stopping))
			break;
		waited = true;
		int64_t left = deadline_ms - now;
		node_wait_change(px->node, seq, (int)(left < 50 ? left : 50));
	}
	if (waited) {
		c->rq->waited = true;
		proxystat_wait(px->stats, clock_mono_ms() - start);
		DBG(c, "held while no primary was known" "\" result=\"%s", r == P_NONE ? "none" : "known");
	}
	return r;
}

/* Waits up to ms (not past deadline_ms) for this node to become a
 * writable primary; returns early when it does. */
static void settle(struct pconn *c, int64_t ms, int64_t deadline_ms)
{
	struct proxy *px = c->px;
	int64_t until = clock_mono_ms() + ms;
	if (until > deadline_ms)
		until = deadline_ms;
	DBG(c, "forwarded here but this node is not the primary; letting the roles settle" "\" hops=\"%d", c->rq->hops);
	for (;;) {
		uint64_t seq = node_change_seq(px->node);
		int64_t left = until - clock_mono_ms();
		if (node_may_write(px->node) || left <= 0 || atomic_load(&px->stopping))
			return;
		node_wait_change(px->node, seq, (int)(left < 20 ? left : 20));
	}
}

/* ---- Request head to the upstream -------------------------------------------------- */

/* Writes the request head to rq->uo. buffered: the body is rq->body
 * (Content-Length framing); otherwise it streams with the client's
 * framing (chunked re-framed). */
static void send_req_head(struct pconn *c, bool buffered)
{
	struct preq *rq = c->rq;
	struct proxy_head *h = &rq->req;
	struct proxy_out *o = &rq->uo;
	proxy_out_init(o, c->up_fd);
	proxy_out_printf(o, "%s ", http_method_str((enum http_method)c->p.method));
	proxy_out_put(o, h->url, strlen(h->url));
	proxy_out_put(o, " HTTP/1.1\r\n", 11);
	const char *xff = NULL;
	for (int i = 0; i < h->n; i++) {
		const char *name = h->h[i].name;
		if (proxy_head_is_hop(h, name) || !strcasecmp(name, PROXY_HOPS_HEADER))
			continue;
		if (!strcasecmp(name, "X-Forwarded-For")) {
			xff = h->h[i].value;
			continue;
		}
		proxy_out_printf(o, "%s: ", name);
		proxy_out_put(o, h->h[i].value, strlen(h->h[i].value));
		proxy_out_put(o, "\r\n", 2);
	}
	/* The first hop names the client; the next ones append. */
	if (rq->hops == 0 || !xff)
		proxy_out_printf(o, "X-Forwarded-For: %s%s%s\r\n", xff ? xff : "", xff ? ", " : "", c->peer);
	else
		proxy_out_printf(o, "X-Forwarded-For: %s\r\n", xff);
	if (!proxy_head_get(h, "X-Forwarded-Proto"))
		proxy_out_printf(o, "X-Forwarded-Proto: http\r\n");
	const char *host = proxy_head_get(h, "Host");
	if (host && !proxy_head_get(h, "X-Forwarded-Host"))
		proxy_out_printf(o, "X-Forwarded-Host: %s\r\n", host);
	if (rq->route == R_FORWARD)
		proxy_out_printf(o, "%s: %d\r\n", PROXY_HOPS_HEADER, rq->hops + 1);
	if (c->p.upgrade) {
		const char *up = proxy_head_get(h, "Upgrade");
		proxy_out_printf(o, "Connection: Upgrade\r\nUpgrade: %s\r\n", up ? up : "");
	}
	rq->chunked_up = false;
	if (buffered) {
		if (rq->has_body)
			proxy_out_printf(o, "Content-Length: %zu\r\n", rq->body.len);
	} else if (rq->has_body && !rq->cl[0]) {
		proxy_out_printf(o, "Transfer-Encoding: chunked\r\n");
		rq->chunked_up = true;
	} else if (rq->cl[0]) {
		proxy_out_printf(o, "Content-Length: %s\r\n", rq->cl);
	}
	proxy_out_put(o, "\r\n", 2);
	if (buffered && rq->body.len)
		proxy_out_put(o, rq->body.p, rq->body.len);
}

/* Opens the upstream for the route chosen and sends the head. A write
 * whose primary's proxy refuses connections (a failover, a handoff) waits
 * for the next primary until the redirect deadline. Returns 0, or -1 after
 * answering the client. */
static int open_upstream(struct pconn *c, bool buffered, int64_t deadline_ms)
{
	struct preq *rq = c->rq;
	for (;;) {
		int rc;
		if (rq->route == R_TARGET) {
			rc = dial_target(c);
			if (rc != 0) {
				LOG_WARN("proxy", "msg=\"cannot reach the application\" target=%s err=\"%s\"",
					 c->px->cfg->proxy.target, err_str(rc));
				proxystat_outcome(c->px->stats, PROXYSTAT_BAD_GATEWAY);
				respond(c, 502, "Bad Gateway", NULL, "Proxy error: cannot reach the application\n");
				return -1;
			}
			break;
		}
		rc = dial_forward(c, rq->fwd_url);
		if (rc == 0)
			break;
		DBG(c, "primary's proxy unreachable; waiting for a primary" "\" url=\"%s\" err=\"%s", rq->fwd_url,
		    err_str(rc));
		usleep(50 * 1000);
		enum primary p = wait_primary(c, deadline_ms, rq->fwd_url, sizeof(rq->fwd_url));
		if (p == P_LOCAL) {
			rq->route = R_TARGET;
			rq->set_cookie = !rq->passthrough;
		} else if (p == P_NONE || clock_mono_ms() >= deadline_ms) {
			proxystat_outcome(c->px->stats, PROXYSTAT_NO_PRIMARY);
			respond(c, 503, "Service Unavailable", NULL, "Proxy error: no primary available\n");
			return -1;
		}
	}
	send_req_head(c, buffered);
	return 0;
}

/* ---- Routing (headers complete) ------------------------------------------------ */

static bool match_any(const struct config_strlist *l, const char *path)
{
	for (size_t i = 0; i < l->n; i++)
		if (proxy_glob(l->items[i], path))
			return true;
	return false;
}

static int on_head(struct pconn *c)
{
	struct proxy *px = c->px;
	struct preq *rq = c->rq;
	const struct config *cfg = px->cfg;
	rq->t0_ms = clock_mono_ms();
	size_t pl = strcspn(rq->req.url, "?#");
	snprintf(rq->path, sizeof(rq->path), "%.*s", (int)(pl < sizeof(rq->path) ? pl : sizeof(rq->path) - 1),
		 rq->req.url);
	const char *hops = proxy_head_get(&rq->req, PROXY_HOPS_HEADER);
	rq->hops = hops ? atoi(hops) : 0;
	const char *cl = proxy_head_get(&rq->req, "Content-Length");
	const char *te = proxy_head_get(&rq->req, "Transfer-Encoding");
	snprintf(rq->cl, sizeof(rq->cl), "%s", cl && !te ? cl : "");
	rq->has_body = te || (cl && strtoull(cl, NULL, 10) > 0);
	if (!strcmp(rq->cl, "0"))
		rq->cl[0] = '\0';
	bool is_read = c->p.method == HTTP_GET || c->p.method == HTTP_HEAD;

	if (!strcmp(rq->path, "/litefs/health")) {
		proxystat_outcome(px->stats, PROXYSTAT_HEALTH);
		int64_t lag = node_lag_ms(px->node);
		if (cfg->proxy.max_lag_ms > 0 && lag > cfg->proxy.max_lag_ms) {
			DBG(c, "replication lag exceeds max-lag" "\" lag_ms=\"%" PRId64, lag);
			respond(c, 503, "Service Unavailable", NULL, "Replication lag exceeds max-lag\n");
		} else {
			respond(c, 200, "OK", NULL, "OK\n");
		}
		return 0;
	}
	int64_t redirect_deadline = clock_mono_ms() + cfg->proxy.primary_redirect_timeout_ms;
	if (match_any(&cfg->proxy.passthrough, rq->path)) {
		DBG(c, "matches passthrough; to the target");
		rq->route = R_TARGET;
		rq->passthrough = true;
	} else if (is_read && !match_any(&cfg->proxy.always_forward, rq->path)) {
		char v[32];
		const char *ck = proxy_head_get(&rq->req, "Cookie");
		uint64_t want = 0;
		char *end = NULL;
		if (ck && proxy_cookie(ck, "__txid", v, sizeof(v)))
			want = strtoull(v, &end, 16);
		if (want > 0 && !wait_txid(c, want)) {
			LOG_WARN("proxy", "msg=\"read timed out waiting for the cookie's position\" db=%s txid=%016" PRIx64
					  " have=%016" PRIx64 " path=\"%s\"",
				 cfg->proxy.db, want, db_txid(px), rq->path);
			proxystat_outcome(px->stats, PROXYSTAT_TIMED_OUT);
			respond(c, 504, "Gateway Timeout", NULL, "Proxy timeout\n");
			return 0;
		}
		DBG(c, "read; to the target" "\" txid=\"%016" PRIx64, want);
		rq->route = R_TARGET;
	} else {
		enum primary p = wait_primary(c, redirect_deadline, rq->fwd_url, sizeof(rq->fwd_url));
		if (p == P_REMOTE && rq->hops > 0) {
			settle(c, rq->hops * PROXY_SETTLE_MS_PER_HOP, redirect_deadline);
			p = wait_primary(c, redirect_deadline, rq->fwd_url, sizeof(rq->fwd_url));
		}
		if (p == P_NONE) {
			LOG_WARN("proxy", "msg=\"no primary within primary-redirect-timeout\" method=%s path=\"%s\"",
				 http_method_str((enum http_method)c->p.method), rq->path);
			proxystat_outcome(px->stats, PROXYSTAT_NO_PRIMARY);
			respond(c, 503, "Service Unavailable", NULL, "Proxy error: no primary available\n");
			return 0;
		}
		if (p == P_LOCAL) {
			DBG(c, "write on the primary; to the target");
			rq->route = R_TARGET;
			rq->set_cookie = true;
		} else if (cfg->proxy.fly_replay) {
			char host[256], hdr[300];
			node_primary_host(px->node, host, sizeof(host));
			snprintf(hdr, sizeof(hdr), "fly-replay: instance=%s\r\n", host);
			DBG(c, "write on a replica; fly-replay" "\" primary=\"%s", host);
			proxystat_outcome(px->stats, PROXYSTAT_FLY_REPLAY);
			respond(c, 200, "OK", hdr, "");
			return 0;
		} else if (rq->hops >= PROXY_MAX_HOPS) {
			LOG_WARN("proxy", "msg=\"refusing a request forwarded too many times (nodes disagree on the primary)\" "
					  "hops=%d path=\"%s\"",
				 rq->hops, rq->path);
			proxystat_outcome(px->stats, PROXYSTAT_NO_PRIMARY);
			respond(c, 503, "Service Unavailable", NULL, "Proxy error: forwarding loop\n");
			return 0;
		} else {
			DBG(c, "write on a replica; forwarding to the primary" "\" url=\"%s", rq->fwd_url);
			rq->route = R_FORWARD;
		}
	}
	if (open_upstream(c, false, redirect_deadline) < 0)
		return 0;
	const char *expect = proxy_head_get(&rq->req, "Expect");
	if (expect && !strcasecmp(expect, "100-continue") && c->p.http_major == 1 && c->p.http_minor >= 1) {
		/* The upstream never sees Expect; the body is asked for here. */
		proxy_out_flush(&rq->uo);
		proxy_write_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	}
	return 0;
}

/* ---- Request parser callbacks ------------------------------------------------------ */

static int rq_begin(http_parser *p)
{
	struct pconn *c = p->data;
	if (!c->rq) {
		/* Its own mapping (zeroed, touched lazily), so that dropping it
		 * gives the pages back to the system: freed to malloc, the
		 * buffers of 1,000 connections stayed resident in its arenas. */
		void *m = mmap(NULL, sizeof(*c->rq), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return -1;
		c->rq = m;
	} else {
		sbuf_free(&c->rq->body);
		memset(c->rq, 0, offsetof(struct preq, req));
	}
	c->rq->begun = true;
	proxy_head_reset(&c->rq->req);
	proxy_head_reset(&c->rq->resp);
	proxy_out_init(&c->rq->co, c->fd);
	proxy_out_init(&c->rq->uo, -1);
	return 0;
}

static int rq_url(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	return proxy_head_url(&c->rq->req, at, len);
}

static int rq_field(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	return proxy_head_field(&c->rq->req, at, len);
}

static int rq_value(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	return proxy_head_value(&c->rq->req, at, len);
}

static int rq_headers_complete(http_parser *p)
{
	struct pconn *c = p->data;
	proxy_head_finish(&c->rq->req);
	c->rq->ev = EV_HEAD;
	http_parser_pause(p, 1);
	return 0;
}

static int rq_body(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	struct preq *rq = c->rq;
	if (rq->responded)
		return 0;
	if (!rq->body_overflow) {
		if (rq->body.len + len <= PROXY_REPLAY_MAX) {
			sbuf_putn(&rq->body, at, len);
		} else {
			rq->body_overflow = true;
			sbuf_free(&rq->body);
		}
	}
	if (rq->chunked_up)
		proxy_out_printf(&rq->uo, "%zx\r\n", len);
	proxy_out_put(&rq->uo, at, len);
	if (rq->chunked_up)
		proxy_out_put(&rq->uo, "\r\n", 2);
	return 0;
}

static int rq_complete(http_parser *p)
{
	struct pconn *c = p->data;
	c->rq->ev = EV_DONE;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings req_settings = {
	.on_message_begin = rq_begin,
	.on_url = rq_url,
	.on_header_field = rq_field,
	.on_header_value = rq_value,
	.on_headers_complete = rq_headers_complete,
	.on_body = rq_body,
	.on_message_complete = rq_complete,
};

/* ---- Response ------------------------------------------------------------------------ */

static int rs_status(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	return proxy_head_url(&c->rq->resp, at, len);
}

static int rs_field(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	return proxy_head_field(&c->rq->resp, at, len);
}

static int rs_value(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	return proxy_head_value(&c->rq->resp, at, len);
}

static int rs_headers_complete(http_parser *p)
{
	struct pconn *c = p->data;
	struct preq *rq = c->rq;
	proxy_head_finish(&rq->resp);
	if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101) {
		/* An interim answer (103): dropped; the final one follows. */
		return 0;
	}
	rq->ev = EV_HEAD;
	http_parser_pause(p, 1);
	return c->p.method == HTTP_HEAD ? 1 : 0;
}

static int rs_body(http_parser *p, const char *at, size_t len)
{
	struct pconn *c = p->data;
	struct preq *rq = c->rq;
	if (rq->client_chunked)
		proxy_out_printf(&rq->co, "%zx\r\n", len);
	proxy_out_put(&rq->co, at, len);
	if (rq->client_chunked)
		proxy_out_put(&rq->co, "\r\n", 2);
	return 0;
}

static int rs_complete(http_parser *p)
{
	struct pconn *c = p->data;
	struct preq *rq = c->rq;
	if (!rq->resp_head_done && p->status_code < 200 && p->status_code != 101) {
		proxy_head_reset(&rq->resp);
		return 0;
	}
	rq->resp_done = true;
	rq->ev = EV_DONE;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings resp_settings = {
	.on_status = rs_status,
	.on_header_field = rs_field,
	.on_header_value = rs_value,
	.on_headers_complete = rs_headers_complete,
	.on_body = rs_body,
	.on_message_complete = rs_complete,
};

/* Writes the response head to the client. */
static void send_resp_head(struct pconn *c, const http_parser *rp)
{
	struct preq *rq = c->rq;
	struct proxy_head *h = &rq->resp;
	struct proxy_out *o = &rq->co;
	int status = rp->status_code;
	rq->status = status;
	proxy_out_printf(o, "HTTP/1.1 %d %s\r\n", status, h->reason && h->reason[0] ? h->reason : "Status");
	for (int i = 0; i < h->n; i++) {
		if (proxy_head_is_hop(h, h->h[i].name))
			continue;
		proxy_out_printf(o, "%s: ", h->h[i].name);
		proxy_out_put(o, h->h[i].value, strlen(h->h[i].value));
		proxy_out_put(o, "\r\n", 2);
	}
	if (rq->set_cookie) {
		uint64_t txid = db_txid(c->px);
		if (txid > 0) {
			proxy_out_printf(o, "Set-Cookie: __txid=%016" PRIx64 "; Path=/; HttpOnly\r\n", txid);
			DBG(c, "setting the txid cookie" "\" txid=\"%016" PRIx64, txid);
		}
	}
	const char *cl = proxy_head_get(h, "Content-Length");
	const char *te = proxy_head_get(h, "Transfer-Encoding");
	bool no_body = c->p.method == HTTP_HEAD || status == 204 || status == 304 || status < 200;
	rq->client_chunked = false;
	if (status == 101) {
		const char *up = proxy_head_get(h, "Upgrade");
		proxy_out_printf(o, "Connection: Upgrade\r\nUpgrade: %s\r\n\r\n", up ? up : "");
		return;
	}
	if (cl && !te) {
		proxy_out_printf(o, "Content-Length: %s\r\n", cl);
	} else if (!no_body) {
		if (c->p.http_major == 1 && c->p.http_minor >= 1) {
			proxy_out_printf(o, "Transfer-Encoding: chunked\r\n");
			rq->client_chunked = true;
		} else {
			c->close_after = true; /* close-delimited for an HTTP/1.0 client */
		}
	}
	if (!http_should_keep_alive(&c->p))
		c->close_after = true;
	if (c->close_after)
		proxy_out_printf(o, "Connection: close\r\n");
	else if (c->p.http_minor == 0)
		proxy_out_printf(o, "Connection: keep-alive\r\n");
	proxy_out_put(o, "\r\n", 2);
}

/* Copies bytes both ways between the client and the upstream until both
 * sides finished (each EOF is passed on as a half-close) or one failed.
 * The bytes each side sent after its head are passed on first. */
static void tunnel(struct pconn *c, const char *up_extra, size_t up_n)
{
	struct proxy *px = c->px;
	atomic_fetch_add(&px->stats->upgrades, 1);
	if (c->in_len > c->in_off && proxy_write_all(c->up_fd, c->in + c->in_off, c->in_len - c->in_off) < 0)
		return;
	c->in_off = c->in_len = 0;
	if (up_n && proxy_write_all(c->fd, up_extra, up_n) < 0)
		return;
	/* A tunnel may stay open for hours: the request's buffers go back to
	 * the system (the mapping stays valid; its pages read as zeroes). The
	 * first page, with the small fields the caller still reads, stays. */
	sbuf_free(&c->rq->body);
	_Static_assert(offsetof(struct preq, req) <= 4096, "small fields fit the first page");
	madvise((char *)c->rq + 4096, sizeof(*c->rq) - 4096, MADV_DONTNEED);
	char *buf = malloc(16384);
	if (!buf)
		return;
	int fds[2] = { c->fd, c->up_fd };
	bool open_rd[2] = { true, true };
	while ((open_rd[0] || open_rd[1]) && !atomic_load(&px->stopping)) {
		struct pollfd pf[2] = { { .fd = open_rd[0] ? fds[0] : -1, .events = POLLIN },
					{ .fd = open_rd[1] ? fds[1] : -1, .events = POLLIN } };
		int pr = poll(pf, 2, 1000);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			break;
		bool fail = false;
		for (int i = 0; i < 2 && !fail; i++) {
			if (!open_rd[i] || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = recv(fds[i], buf, 16384, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				open_rd[i] = false;
				shutdown(fds[1 - i], SHUT_WR);
				if (n < 0)
					fail = true;
				continue;
			}
			if (proxy_write_all(fds[1 - i], buf, (size_t)n) < 0)
				fail = true;
		}
		if (fail)
			break;
	}
	free(buf);
}

/* Reads the upstream's response and relays it. */
static enum resp read_response(struct pconn *c)
{
	struct preq *rq = c->rq;
	http_parser rp;
	http_parser_init(&rp, HTTP_RESPONSE);
	rp.data = c;
	proxy_head_reset(&rq->resp);
	rq->resp_head_done = rq->resp_done = rq->resp_upgrade = false;
	rq->ev = EV_NONE;
	proxy_out_init(&rq->co, c->fd);
	for (;;) {
		ssize_t n = proxy_read(c->up_fd, rq->rbuf, sizeof(rq->rbuf), 0);
		if (n < 0)
			return rq->resp_head_done ? RESP_FAIL_LATE : RESP_FAIL_EARLY;
		if (n == 0) {
			http_parser_execute(&rp, &resp_settings, NULL, 0);
			if (rq->resp_done) {
				proxy_out_flush(&rq->co);
				up_close(c);
				return RESP_DONE;
			}
			return rq->resp_head_done ? RESP_FAIL_LATE : RESP_FAIL_EARLY;
		}
		size_t off = 0;
		while (off < (size_t)n) {
			size_t k = http_parser_execute(&rp, &resp_settings, rq->rbuf + off, (size_t)n - off);
			off += k;
			enum http_errno err = HTTP_PARSER_ERRNO(&rp);
			if (err == HPE_PAUSED) {
				http_parser_pause(&rp, 0);
				if (rq->ev == EV_HEAD) {
					rq->ev = EV_NONE;
					const char *sig = proxy_head_get(&rq->resp, PROXY_REPLAY_HEADER);
					if (sig && !strcasecmp(sig, "primary") && rq->route == R_TARGET && !rq->replayed &&
					    !rq->body_overflow && !node_may_write(c->px->node))
						return RESP_REPLAY;
					rq->resp_head_done = true;
					rq->resp_upgrade = rp.status_code == 101 && c->p.upgrade;
					send_resp_head(c, &rp);
					continue;
				}
				if (rq->ev == EV_DONE) {
					rq->ev = EV_NONE;
					if (rq->client_chunked)
						proxy_out_put(&rq->co, "0\r\n\r\n", 5);
					if (proxy_out_flush(&rq->co) < 0)
						return RESP_FAIL_LATE;
					if (rq->resp_upgrade) {
						tunnel(c, rq->rbuf + off, (size_t)n - off);
						return RESP_UPGRADED;
					}
					if (!http_should_keep_alive(&rp) || rp.status_code == 101)
						up_close(c);
					return RESP_DONE;
				}
				continue;
			}
			if (err != HPE_OK) {
				LOG_WARN("proxy", "msg=\"malformed response from upstream\" path=\"%s\" err=\"%s\"",
					 rq->path, http_errno_description(err));
				return rq->resp_head_done ? RESP_FAIL_LATE : RESP_FAIL_EARLY;
			}
		}
		if (proxy_out_flush(&rq->co) < 0)
			return RESP_FAIL_LATE;
	}
}

static bool idempotent(unsigned method)
{
	return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS || method == HTTP_PUT ||
	       method == HTTP_DELETE;
}

/* The request is complete: finish its body and relay the answer (with a
 * replay on the primary when the application asks for one). Returns 0 to
 * keep the connection, -1 to close it. */
static int on_done(struct pconn *c)
{
	struct proxy *px = c->px;
	struct preq *rq = c->rq;
	if (rq->responded)
		return c->close_after ? -1 : 0;
	if (rq->chunked_up)
		proxy_out_put(&rq->uo, "0\r\n\r\n", 5);
	for (int attempt = 0;; attempt++) {
		if (proxy_out_flush(&rq->uo) < 0 && !(c->up_reused && attempt == 0)) {
			proxystat_outcome(px->stats, PROXYSTAT_BAD_GATEWAY);
			respond(c, 502, "Bad Gateway", NULL, "Proxy error: upstream connection failed\n");
			up_close(c);
			return -1;
		}
		enum resp r = read_response(c);
		int64_t ms = clock_mono_ms() - rq->t0_ms;
		switch (r) {
		case RESP_DONE:
		case RESP_UPGRADED: {
			enum proxystat_outcome o = rq->replayed	       ? PROXYSTAT_REPLAYED
						   : rq->route == R_FORWARD ? PROXYSTAT_FORWARDED
						   : rq->passthrough	    ? PROXYSTAT_PASSTHROUGH
									    : PROXYSTAT_LOCAL;
			proxystat_outcome(px->stats, o);
			DBG(c, "answered" "\" status=\"%d\" ms=\"%" PRId64 "\" via=\"%s",
			    rq->status, ms, rq->route == R_FORWARD ? "primary" : "target");
			return r == RESP_UPGRADED ? -1 : (c->close_after ? -1 : 0);
		}
		case RESP_REPLAY: {
			up_close(c);
			int64_t deadline = clock_mono_ms() + px->cfg->proxy.primary_redirect_timeout_ms;
			enum primary p = wait_primary(c, deadline, rq->fwd_url, sizeof(rq->fwd_url));
			DBG(c, "application asked for a replay on the primary" "\" url=\"%s", rq->fwd_url);
			if (p == P_NONE) {
				proxystat_outcome(px->stats, PROXYSTAT_NO_PRIMARY);
				respond(c, 503, "Service Unavailable", NULL, "Proxy error: no primary available\n");
				return -1;
			}
			rq->replayed = true;
			rq->route = p == P_LOCAL ? R_TARGET : R_FORWARD;
			rq->set_cookie = p == P_LOCAL;
			if (open_upstream(c, true, deadline) < 0)
				return -1;
			continue;
		}
		case RESP_FAIL_EARLY:
			/* A kept-alive connection the upstream had closed: once more
			 * on a new one, for an idempotent method (RFC 9110 9.2.2:
			 * the upstream may have acted on it before closing) whose
			 * whole body is at hand. */
			if (c->up_reused && attempt == 0 && !rq->body_overflow && idempotent(c->p.method)) {
				up_close(c);
				if (open_upstream(c, true, clock_mono_ms() + px->cfg->proxy.primary_redirect_timeout_ms) < 0)
					return -1;
				continue;
			}
			LOG_WARN("proxy", "msg=\"upstream failed before answering\" path=\"%s\" via=%s", rq->path,
				 rq->route == R_FORWARD ? rq->fwd_url : px->cfg->proxy.target);
			proxystat_outcome(px->stats, PROXYSTAT_BAD_GATEWAY);
			up_close(c);
			respond(c, 502, "Bad Gateway", NULL, "Proxy error: upstream failed\n");
			return -1;
		case RESP_FAIL_LATE:
			LOG_WARN("proxy", "msg=\"upstream or client failed mid-response; closing the client connection\" "
					  "path=\"%s\"",
				 rq->path);
			proxystat_outcome(px->stats, PROXYSTAT_BAD_GATEWAY);
			up_close(c);
			return -1;
		}
	}
}

/* ---- Connections ---------------------------------------------------------------------- */

/* Frees the request state while the connection is idle (an idle
 * keep-alive connection then holds only struct pconn). */
static void rq_drop(struct pconn *c)
{
	if (c->rq) {
		sbuf_free(&c->rq->body);
		munmap(c->rq, sizeof(*c->rq));
		c->rq = NULL;
	}
}

static void conn_free(struct pconn *c)
{
	struct proxy *px = c->px;
	pthread_mutex_lock(&px->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		px->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	if (c->up_fd >= 0)
		close(c->up_fd);
	px->n_conns--;
	atomic_fetch_sub(&px->stats->open_conns, 1);
	pthread_cond_broadcast(&px->cond);
	pthread_mutex_unlock(&px->mu);
	rq_drop(c);
	free(c);
}

/* The parser refused the request: a 4xx, then the connection closes. */
static void refuse(struct pconn *c, enum http_errno err)
{
	struct proxy *px = c->px;
	bool big = err == HPE_HEADER_OVERFLOW || (c->rq && c->rq->req.too_big && !c->rq->req.complete);
	LOG_WARN("proxy", "msg=\"malformed request refused\" peer=%s err=\"%s\"", c->peer, http_errno_description(err));
	proxystat_outcome(px->stats, PROXYSTAT_BAD_REQUEST);
	/* Mid-body: the upstream got part of a request; it must not see the
	 * rest as a new one. */
	up_close(c);
	if (!c->rq || !c->rq->resp_head_done)
		respond_raw(c, big ? 431 : 400, big ? "Request Header Fields Too Large" : "Bad Request");
}

static void *conn_main(void *arg)
{
	struct pconn *c = arg;
	struct proxy *px = c->px;
	const struct config *cfg = px->cfg;
	http_parser_init(&c->p, HTTP_REQUEST);
	c->p.data = c;
	int64_t idle_since = clock_mono_ms();
	for (;;) {
		bool in_request = c->rq && c->rq->begun;
		if (c->in_off == c->in_len) {
			/* Between requests: the idle timeout; in a head: the
			 * header timeout; in a body: the read timeout. */
			int64_t t = !in_request ? cfg->proxy.idle_timeout_ms
				    : c->rq->req.complete ? cfg->proxy.read_timeout_ms
							  : cfg->proxy.read_header_timeout_ms;
			if (!in_request) {
				/* The request state is kept for the next request
				 * of a busy connection and dropped after
				 * PROXY_KEEP_RQ_MS idle, so that an idle
				 * keep-alive connection holds only struct pconn. */
				int64_t idle = clock_mono_ms() - idle_since;
				if (c->rq && (t <= 0 || t - idle > PROXY_KEEP_RQ_MS)) {
					ssize_t n = proxy_read(c->fd, c->in, sizeof(c->in), PROXY_KEEP_RQ_MS);
					if (n == -ETIMEDOUT) {
						rq_drop(c);
						continue;
					}
					if (n <= 0)
						break;
					c->in_off = 0;
					c->in_len = (size_t)n;
					goto parse;
				}
				rq_drop(c);
				if (t > 0 && (t -= idle) <= 0)
					break;
			}
			ssize_t n = proxy_read(c->fd, c->in, sizeof(c->in), t);
			if (n <= 0) {
				if (in_request) {
					DBG(c, "client left mid-request" "\" err=\"%s", n == 0 ? "eof" : err_str((int)n));
					if (n == -ETIMEDOUT && !c->rq->req.complete)
						respond_raw(c, 408, "Request Timeout");
					up_close(c);
				}
				break;
			}
			c->in_off = 0;
			c->in_len = (size_t)n;
		}
	parse:;
		size_t k = http_parser_execute(&c->p, &req_settings, c->in + c->in_off, c->in_len - c->in_off);
		c->in_off += k;
		enum http_errno err = HTTP_PARSER_ERRNO(&c->p);
		if (err == HPE_PAUSED) {
			http_parser_pause(&c->p, 0);
			struct preq *rq = c->rq;
			enum ev ev = rq->ev;
			rq->ev = EV_NONE;
			if (ev == EV_HEAD) {
				on_head(c);
				/* A failed write shows again when the response is
				 * read (502). */
				if (!rq->responded)
					proxy_out_flush(&rq->uo);
			} else if (ev == EV_DONE) {
				int rc = on_done(c);
				rq->begun = false;
				idle_since = clock_mono_ms();
				if (rc < 0 || c->p.upgrade)
					break;
			}
			continue;
		}
		if (err != HPE_OK) {
			refuse(c, err);
			break;
		}
		/* Body bytes gathered by rq_body leave now (streaming). */
		if (c->rq && c->rq->begun && !c->rq->responded && c->rq->uo.fd >= 0)
			proxy_out_flush(&c->rq->uo);
	}
	conn_free(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct proxy *px = arg;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, PROXY_STACK_SIZE);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (!atomic_load(&px->stopping)) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(px->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (atomic_load(&px->stopping))
				break;
			LOG_WARN("proxy", "msg=\"accept failed\" err=\"%s\"", strerror(errno));
			usleep(100 * 1000);
			continue;
		}
		struct pconn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->px = px;
		c->fd = fd;
		c->up_fd = -1;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (px->cfg->proxy.write_timeout_ms > 0) {
			struct timeval tv = { .tv_sec = px->cfg->proxy.write_timeout_ms / 1000,
					      .tv_usec = (px->cfg->proxy.write_timeout_ms % 1000) * 1000 };
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		}
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer, sizeof(c->peer));
		else if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer, sizeof(c->peer));
		pthread_mutex_lock(&px->mu);
		c->next = px->conns;
		if (px->conns)
			px->conns->prev = c;
		px->conns = c;
		px->n_conns++;
		atomic_fetch_add(&px->stats->open_conns, 1);
		pthread_mutex_unlock(&px->mu);
		pthread_t tid;
		if (pthread_create(&tid, &attr, conn_main, c) != 0) {
			LOG_WARN("proxy", "msg=\"cannot start a connection thread\"");
			conn_free(c);
		}
	}
	pthread_attr_destroy(&attr);
	return NULL;
}

/* ---- Start and stop ------------------------------------------------------------------- */

void proxy_advertise_url(const struct config *cfg, const char *hostname, char *buf, size_t len)
{
	buf[0] = '\0';
	if (!cfg->proxy.target[0])
		return;
	if (cfg->proxy.advertise_url[0]) {
		snprintf(buf, len, "%s", cfg->proxy.advertise_url);
		return;
	}
	const char *colon = strrchr(cfg->proxy.addr, ':');
	const char *port = colon ? colon + 1 : "";
	char host[256] = "";
	const char *u = cfg->lease.advertise_url;
	if (!strncmp(u, "http://", 7) || !strncmp(u, "https://", 8)) {
		u = strstr(u, "//") + 2;
		size_t hl = strcspn(u, "/?#");
		const char *hc = u + hl;
		/* host[:port] or [v6]:port: cut the port. */
		for (const char *p = u + hl; p > u; p--)
			if (p[-1] == ':' && !memchr(p, ']', (size_t)(u + hl - p))) {
				hc = p - 1;
				break;
			}
		snprintf(host, sizeof(host), "%.*s", (int)(hc - u), u);
	}
	if (!host[0] && colon && colon > cfg->proxy.addr && strncmp(cfg->proxy.addr, "0.0.0.0:", 8))
		snprintf(host, sizeof(host), "%.*s", (int)(colon - cfg->proxy.addr), cfg->proxy.addr);
	if (!host[0])
		snprintf(host, sizeof(host), "%s", hostname && hostname[0] ? hostname : "localhost");
	snprintf(buf, len, "http://%s:%s", host, port);
}

int proxy_start(struct store *st, const struct config *cfg, const char *hostname, struct proxy **out)
{
	*out = NULL;
	struct proxy *px = calloc(1, sizeof(*px));
	if (!px)
		return ERR_NOMEM;
	px->st = st;
	px->node = &st->node;
	px->cfg = cfg;
	px->lfd = -1;
	snprintf(px->hostname, sizeof(px->hostname), "%s", hostname ? hostname : "");
	pthread_mutex_init(&px->mu, NULL);
	pthread_cond_init(&px->cond, NULL);
	int rc = proxy_resolve(cfg->proxy.target, false, &px->target, &px->target_len);
	struct sockaddr_storage ss;
	socklen_t sl;
	if (rc == 0)
		rc = proxy_resolve(cfg->proxy.addr, true, &ss, &sl);
	if (rc != 0)
		goto err;
	px->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (px->lfd < 0 || setsockopt(px->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(px->lfd, (struct sockaddr *)&ss, sl) < 0 || listen(px->lfd, 1024) < 0) {
		rc = -errno;
		goto err;
	}
	px->stats = &st->node.proxy_stats;
	if ((rc = -pthread_create(&px->accept_tid, NULL, accept_main, px)) != 0)
		goto err;
	atomic_store(&st->node.proxy_on, true);
	LOG_INFO("proxy", "msg=\"proxy listening\" addr=%s target=%s db=%s url=\"%s\"", cfg->proxy.addr,
		 cfg->proxy.target, cfg->proxy.db, st->node.proxy_url);
	*out = px;
	return 0;
err:
	if (px->lfd >= 0)
		close(px->lfd);
	pthread_cond_destroy(&px->cond);
	pthread_mutex_destroy(&px->mu);
	free(px);
	return rc;
}

void proxy_stop(struct proxy *px)
{
	if (!px)
		return;
	atomic_store(&px->stopping, true);
	shutdown(px->lfd, SHUT_RDWR);
	pthread_join(px->accept_tid, NULL);
	close(px->lfd);
	pthread_mutex_lock(&px->mu);
	for (struct pconn *c = px->conns; c; c = c->next) {
		shutdown(c->fd, SHUT_RDWR);
		if (c->up_fd >= 0)
			shutdown(c->up_fd, SHUT_RDWR);
	}
	struct timespec until = clock_deadline(3000);
	while (px->n_conns > 0)
		if (pthread_cond_timedwait(&px->cond, &px->mu, &until) != 0)
			break;
	size_t left = px->n_conns;
	pthread_mutex_unlock(&px->mu);
	if (left > 0) {
		/* A thread still blocked (an application that never answers):
		 * the proxy is leaked rather than freed under it. */
		LOG_WARN("proxy", "msg=\"connections still open at stop\" n=%zu", left);
		return;
	}
	pthread_cond_destroy(&px->cond);
	pthread_mutex_destroy(&px->mu);
	free(px);
}
