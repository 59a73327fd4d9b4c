/*
 * httpd.c — the HTTP/1.1 server; see httpd.h for the interface and
 * docs/http.md "The server" for the design and its numbers.
 *
 * THREADS AND STATES. A connection is in exactly one of these states:
 *
 *   HEAD    owned by the event thread: in epoll, reading a request head
 *           into c->in, on the `heads` list (deadline: head_timeout_ms
 *           after accept, or after its first byte when it was IDLE).
 *   IDLE    owned by the event thread: kept alive between requests, on
 *           the `idles` list (deadline: idle_timeout_ms after the reply).
 *   QUEUED  a complete, valid head; on the ready queue (d->mu).
 *   ACTIVE  owned by one worker: the handler runs, the body is read, the
 *           reply is written; on the active list (d->mu) so that stop can
 *           shut its socket down.
 *
 * HEAD -> QUEUED when the head is complete and admitted (admit()), HEAD ->
 * closed on a bad head (a JSON error first), a deadline or eviction;
 * ACTIVE -> IDLE through the handback list (d->mu, then the eventfd) when
 * the request ended cleanly and both sides keep the connection.
 *
 * The two lists of the event thread are FIFOs whose deadlines never
 * decrease (every entry of a list gets now + the same timeout), so expiry
 * looks only at their heads, and the oldest connection reading a head is
 * the first to be evicted when a cap is reached: a connection that is slow
 * to send its head loses its place to one that sends it at once.
 *
 * d->mu guards: n_conns, the per-address counts, busy, the ready queue,
 * the active list, the handback list, the worker threads. It is a leaf
 * lock: nothing else is taken while it is held, no callback runs under it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/httpd.h"
#include "base/httphead.h"
#include "base/log.h"

#define HEAD_MAX (16u << 10)       /* request line and headers */
#define LINE_MAX_CHUNK 4096u       /* a chunk-size line or a trailer line */
#define TRAILERS_MAX 64u
#define IN_CAP (1u << 20)          /* input buffer once a body is read (grows up to this) */
#define PROGRESS_BYTES (64u << 10) /* per io_timeout_ms of waiting */
#define LINGER_MS 1000             /* reading what a closed-early client still sends */
#define LINGER_BYTES (1u << 20)
#define BUCKETS 1024u
#define LOG_EVERY_MS 10000

enum conn_state { C_HEAD, C_IDLE, C_QUEUED, C_ACTIVE };
enum resp_kind { R_BUF, R_FD, R_CB };
enum body_state { B_NONE, B_LENGTH, B_CHUNK_SIZE, B_CHUNK_DATA, B_CHUNK_CRLF, B_TRAILER, B_DONE };

struct httpd_response {
	enum resp_kind kind;
	char *buf;
	size_t len;
	bool take;
	int fd;
	uint64_t size;
	httpd_reader reader;
	void *cls;
	void (*free_cb)(void *);
	int (*hold)(void *); /* R_FD: checked before the last byte */
	size_t block;
	char *hdrs; /* "Name: value\r\n"... */
	size_t hdrs_len;
};

struct ipcount {
	unsigned char addr[16];
	unsigned n;
	struct ipcount *next;
};

struct httpd_conn {
	struct httpd *d;
	int fd;
	enum conn_state state;
	struct sockaddr_storage peer;
	unsigned char addr[16]; /* the peer's address, IPv4 mapped into IPv6 */
	struct httpd_conn *prev, *next; /* heads / idles / ready / active / handback */
	int64_t deadline_ms;
	bool peer_eof;                  /* the peer shut down its side */
	bool dead;                      /* closed; memory freed after the epoll batch */
	bool taken;                     /* the handler took the socket (httpd_take_socket) */

	char *in; /* bytes read: in[off, len) not consumed yet */
	size_t off, len, cap;
	bool in_full; /* the last body read filled all the room there was */

	struct httphead rq; /* the request being served */
	enum body_state body;
	uint64_t body_left;
	unsigned n_trailers;
	bool continued; /* "100 Continue" was sent (or is not to be) */

	/* Progress accounting while a worker waits for the peer. */
	int64_t wait_ms;
	size_t win_bytes;

	struct httpd_response *resp;
	unsigned status;
};

struct list {
	struct httpd_conn *first, *last;
};

struct httpd {
	struct httpd_listen l; /* copy; l.addr not kept */
	char mod[32];
	int lfds[2];
	int n_lfds;
	int epfd, evfd;
	pthread_t event_thread;
	atomic_bool quiesce_called; /* httpd_quiesce() ran (once) */
	atomic_bool quiesced;       /* ...and shut the listeners down: the event thread may close them */
	atomic_bool stopping;
	struct list heads, idles; /* event thread only */
	struct list graveyard;    /* event thread only: dropped during this epoll batch */
	int64_t accept_paused_until;

	pthread_mutex_t mu;
	pthread_cond_t cond;
	unsigned n_conns, busy, n_ready, idle_workers, n_threads;
	pthread_t *threads;
	struct list ready, active, handback;
	struct ipcount *buckets[BUCKETS];

	/* Refusals since the last log line, per reason (event thread only). */
	unsigned long n_refused_client, n_refused_busy, n_evicted, n_head_timeout, n_bad_head;
	int64_t last_log_ms;
};

/* ---- Small helpers ------------------------------------------------------ */

static void list_push(struct list *l, struct httpd_conn *c)
{
	c->next = NULL;
	c->prev = l->last;
	if (l->last)
		l->last->next = c;
	else
		l->first = c;
	l->last = c;
}

static void list_del(struct list *l, struct httpd_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		l->first = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->last = c->prev;
	c->prev = c->next = NULL;
}

static struct httpd_conn *list_pop(struct list *l)
{
	struct httpd_conn *c = l->first;
	if (c)
		list_del(l, c);
	return c;
}

static unsigned addr_hash(const unsigned char *a)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 16777619u;
	return h % BUCKETS;
}

/* The count of connections from addr; d->mu held. */
static unsigned *ip_count(struct httpd *d, const unsigned char *addr, bool create)
{
	struct ipcount **pp = &d->buckets[addr_hash(addr)];
	for (struct ipcount *e = *pp; e; e = e->next)
		if (!memcmp(e->addr, addr, 16))
			return &e->n;
	if (!create)
		return NULL;
	struct ipcount *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	memcpy(e->addr, addr, 16);
	e->next = *pp;
	*pp = e;
	return &e->n;
}

static void ip_release(struct httpd *d, const unsigned char *addr)
{
	struct ipcount **pp = &d->buckets[addr_hash(addr)];
	for (struct ipcount *e = *pp; e; pp = &e->next, e = e->next) {
		if (memcmp(e->addr, addr, 16) != 0)
			continue;
		if (--e->n == 0) {
			*pp = e->next;
			free(e);
		}
		return;
	}
}

static void addr_key(const struct sockaddr_storage *ss, unsigned char out[16])
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	} else if (ss->ss_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	}
}

static const char *reason_phrase(unsigned status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 422: return "Unprocessable Content";
	case 423: return "Locked";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

/* The code of a JSON error the server answers itself. */
static const char *error_code(unsigned status)
{
	switch (status) {
	case 408: return "ETIMEOUT";
	case 413: case 414: case 431: return "ETOOLARGE";
	case 429: return "ETOOMANY";
	case 501: case 505: return "EUNSUPPORTED";
	case 503: return "EBUSY";
	default: return status >= 500 ? "EINTERNAL" : "EBADREQUEST";
	}
}

/* A complete response with a JSON error body, closing the connection, into
 * buf. Returns its length (cut to fit). */
static size_t format_error(char *buf, size_t cap, unsigned status, const char *msg, const char *extra_header)
{
	char body[HTTPD_MSG_LEN + 96];
	json_t *o = json_object();
	char *s = NULL;
	if (o) {
		json_object_set_new(o, "code", json_string(error_code(status)));
		json_object_set_new(o, "error", httpd_json_str(msg));
		s = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	snprintf(body, sizeof(body), "%s\n", s ? s : "{}");
	free(s);
	int n = snprintf(buf, cap,
			 "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
			 "%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 status, reason_phrase(status), extra_header ? extra_header : "", strlen(body), body);
	return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

/* Sends a JSON error without waiting (the event thread never blocks): it
 * fits in an empty socket buffer; if it does not, the client loses it. */
static void send_error_now(int fd, unsigned status, const char *msg, const char *extra_header)
{
	char buf[2048];
	size_t n = format_error(buf, sizeof(buf), status, msg, extra_header);
	ssize_t w = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w;
}

static void maybe_log(struct httpd *d)
{
	int64_t now = clock_mono_ms();
	if (now - d->last_log_ms < LOG_EVERY_MS)
		return;
	if (d->n_refused_client + d->n_refused_busy + d->n_evicted + d->n_head_timeout + d->n_bad_head == 0)
		return;
	LOG_WARN(d->mod,
		 "msg=\"connections refused or closed by the limits (docs/http.md)\" per_client=%lu busy=%lu "
		 "evicted=%lu head_timeout=%lu bad_head=%lu conns=%u",
		 d->n_refused_client, d->n_refused_busy, d->n_evicted, d->n_head_timeout, d->n_bad_head, d->n_conns);
	d->n_refused_client = d->n_refused_busy = d->n_evicted = d->n_head_timeout = d->n_bad_head = 0;
	d->last_log_ms = now;
}

/* ---- Connections -------------------------------------------------------- */

static void request_reset(struct httpd_conn *c)
{
	httphead_free(&c->rq);
	c->body = B_NONE;
	c->body_left = 0;
	c->n_trailers = 0;
	c->continued = false;
	httpd_response_free(c->resp);
	c->resp = NULL;
	c->status = 0;
}

/* Closes c's socket and gives back its place in the counts. */
static void conn_release(struct httpd_conn *c)
{
	struct httpd *d = c->d;
	request_reset(c);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->in);
	c->in = NULL;
	c->off = c->len = c->cap = 0;
	c->in_full = false;
	pthread_mutex_lock(&d->mu);
	ip_release(d, c->addr);
	d->n_conns--;
	pthread_mutex_unlock(&d->mu);
}

/* Closes and frees c, which is on no list and not in epoll. */
static void conn_free(struct httpd_conn *c)
{
	conn_release(c);
	free(c);
}

/* Event thread: takes c off its list and out of epoll and closes it. Its
 * memory is freed after the current epoll batch, which may still hold an
 * event that points to it. */
static void conn_drop(struct httpd_conn *c)
{
	struct httpd *d = c->d;
	if (c->state == C_HEAD)
		list_del(&d->heads, c);
	else if (c->state == C_IDLE)
		list_del(&d->idles, c);
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	conn_release(c);
	c->dead = true;
	list_push(&d->graveyard, c);
}

/* Closes after a reply that may have left request bytes unread: shut the
 * sending side, then read and discard for a moment, so that the kernel does
 * not answer unread bytes with a reset that can overtake the reply. */
static void conn_linger_close(struct httpd_conn *c)
{
	shutdown(c->fd, SHUT_WR);
	int64_t end = clock_mono_ms() + LINGER_MS;
	size_t got = 0;
	char buf[16384];
	while (got < LINGER_BYTES) {
		int64_t left = end - clock_mono_ms();
		if (left <= 0)
			break;
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		if (poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
}

/* Room for at least one more byte in c->in, up to cap bytes in all. */
static int in_room(struct httpd_conn *c, size_t cap)
{
	if (c->off > 0 && (c->len == c->cap || c->off == c->len)) {
		memmove(c->in, c->in + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len < c->cap)
		return 0;
	if (c->cap >= cap)
		return ERR_INVAL;
	size_t ncap = c->cap ? c->cap * 2 : 2048;
	if (ncap > cap)
		ncap = cap;
	char *n = realloc(c->in, ncap);
	if (!n)
		return ERR_NOMEM;
	c->in = n;
	c->cap = ncap;
	return 0;
}

/* ---- The event thread --------------------------------------------------- */

static void wake(struct httpd *d)
{
	uint64_t one = 1;
	ssize_t w = write(d->evfd, &one, sizeof(one));
	(void)w;
}

static void worker_spawn_locked(struct httpd *d);

/* Hands c (head parsed into c) to a worker, or answers 503. */
static void admit(struct httpd *d, struct httpd_conn *c)
{
	unsigned workers = d->l.workers, open_to_all = workers - d->l.reserved;
	pthread_mutex_lock(&d->mu);
	unsigned busy = d->busy;
	pthread_mutex_unlock(&d->mu);
	/* Only when the workers open to all are busy does it matter who asks:
	 * the trusted() callback runs then, outside d->mu. */
	bool trusted = busy >= open_to_all && busy < workers && d->l.trusted && d->l.trusted(d->l.cls, c);
	pthread_mutex_lock(&d->mu);
	bool ok = d->busy < open_to_all || (trusted && d->busy < workers);
	if (ok) {
		d->busy++;
		d->n_ready++;
		c->state = C_QUEUED;
		list_push(&d->ready, c);
		if (d->n_ready > d->idle_workers)
			worker_spawn_locked(d);
		pthread_cond_signal(&d->cond);
	}
	pthread_mutex_unlock(&d->mu);
	if (!ok) {
		d->n_refused_busy++;
		send_error_now(c->fd, HTTP_SERVICE_UNAVAILABLE, "the server is busy; retry", "Retry-After: 1\r\n");
		conn_free(c);
	}
}

/* A complete head is in c->in: parse it, then admit. c is off its list and
 * out of epoll. */
static void head_complete(struct httpd *d, struct httpd_conn *c, size_t hl)
{
	struct httphead p;
	char msg[HTTPD_MSG_LEN];
	unsigned st = httphead_parse(c->in + c->off, hl, &p, msg, sizeof(msg));
	if (st != 0) {
		d->n_bad_head++;
		send_error_now(c->fd, st, msg, NULL);
		httphead_free(&p);
		conn_free(c);
		return;
	}
	c->off += hl;
	c->rq = p;
	c->rq.keep_alive = p.keep_alive && !c->peer_eof;
	if (p.chunked) {
		c->body = B_CHUNK_SIZE;
	} else if (p.has_length && p.length > 0) {
		c->body = B_LENGTH;
		c->body_left = p.length;
	} else {
		c->body = B_DONE;
	}
	admit(d, c);
}

/* Looks for a complete head in what c has read; hands it on if there is
 * one. Returns true if c left the event thread (handed on or closed). */
static bool try_head(struct httpd *d, struct httpd_conn *c)
{
	size_t avail = c->len - c->off;
	size_t hl = httphead_end(c->in + c->off, avail);
	if (hl == 0) {
		if (avail >= HEAD_MAX) {
			d->n_bad_head++;
			send_error_now(c->fd, HTTP_HEADER_FIELDS_TOO_LARGE, "request head larger than 16 KiB", NULL);
			conn_drop(c);
			return true;
		}
		if (c->peer_eof) {
			if (avail > 0)
				send_error_now(c->fd, HTTP_BAD_REQUEST, "the connection ended inside the request head",
					       NULL);
			conn_drop(c);
			return true;
		}
		return false;
	}
	if (c->state == C_HEAD)
		list_del(&d->heads, c);
	else
		list_del(&d->idles, c);
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	head_complete(d, c, hl);
	return true;
}

static void on_readable(struct httpd *d, struct httpd_conn *c)
{
	for (;;) {
		if (in_room(c, HEAD_MAX) != 0)
			break; /* full: try_head() answers 431 */
		ssize_t n = recv(c->fd, c->in + c->len, c->cap - c->len, MSG_DONTWAIT);
		if (n > 0) {
			c->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			c->peer_eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_drop(c);
			return;
		}
		break;
	}
	if (c->state == C_IDLE && c->len > c->off) {
		/* The first byte of the next request: the head deadline starts. */
		list_del(&d->idles, c);
		c->state = C_HEAD;
		c->deadline_ms = clock_mono_ms() + d->l.head_timeout_ms;
		list_push(&d->heads, c);
	}
	if (!try_head(d, c) && c->peer_eof && c->len == c->off)
		conn_drop(c);
}

/* Closes the oldest connection that is reading a head (or idle) — of addr
 * if addr is not NULL. Returns false if there is none. */
static bool evict_oldest(struct httpd *d, const unsigned char *addr)
{
	struct list *lists[2] = { &d->heads, &d->idles };
	for (int i = 0; i < 2; i++) {
		for (struct httpd_conn *c = lists[i]->first; c; c = c->next) {
			if (addr && memcmp(c->addr, addr, 16) != 0)
				continue;
			if (c->state == C_HEAD && c->len > c->off)
				send_error_now(c->fd, HTTP_SERVICE_UNAVAILABLE,
					       "connection closed to make room: send the request head at once", NULL);
			d->n_evicted++;
			conn_drop(c);
			return true;
		}
	}
	return false;
}

static void on_accept(struct httpd *d, int lfd)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if ((errno == EMFILE || errno == ENFILE) && evict_oldest(d, NULL))
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				/* Nothing to evict: stop listening for a moment
				 * instead of spinning on a readable socket. */
				d->accept_paused_until = clock_mono_ms() + 100;
				for (int i = 0; i < d->n_lfds; i++)
					epoll_ctl(d->epfd, EPOLL_CTL_DEL, d->lfds[i], NULL);
			}
			return;
		}
		unsigned char key[16];
		addr_key(&ss, key);
		pthread_mutex_lock(&d->mu);
		unsigned *cnt = ip_count(d, key, false);
		bool over_client = cnt && *cnt >= d->l.per_client;
		bool over_all = d->n_conns >= d->l.max_conns;
		pthread_mutex_unlock(&d->mu);
		/* At a cap, the oldest connection still sending its head (of that
		 * address for the per-address cap) makes room; if every one is
		 * being served, the newcomer is refused. */
		if (over_client && !evict_oldest(d, key)) {
			d->n_refused_client++;
			send_error_now(fd, HTTP_TOO_MANY_REQUESTS, "too many connections from this address",
				       "Retry-After: 1\r\n");
			close(fd);
			continue;
		}
		if (over_all && !evict_oldest(d, NULL)) {
			d->n_refused_busy++;
			send_error_now(fd, HTTP_SERVICE_UNAVAILABLE, "too many connections; retry", "Retry-After: 1\r\n");
			close(fd);
			continue;
		}
		struct httpd_conn *c = calloc(1, sizeof(*c));
		pthread_mutex_lock(&d->mu);
		cnt = c ? ip_count(d, key, true) : NULL;
		if (cnt) {
			(*cnt)++;
			d->n_conns++;
		}
		pthread_mutex_unlock(&d->mu);
		if (!cnt) {
			free(c);
			close(fd);
			continue;
		}
		c->d = d;
		c->fd = fd;
		c->peer = ss;
		memcpy(c->addr, key, 16);
		c->state = C_HEAD;
		c->deadline_ms = clock_mono_ms() + d->l.head_timeout_ms;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			conn_free(c);
			continue;
		}
		list_push(&d->heads, c);
	}
}

/* Takes back the connections that workers kept alive. */
static void on_handback(struct httpd *d)
{
	uint64_t v;
	ssize_t r = read(d->evfd, &v, sizeof(v));
	(void)r;
	struct list l;
	pthread_mutex_lock(&d->mu);
	l = d->handback;
	d->handback = (struct list){ 0 };
	pthread_mutex_unlock(&d->mu);
	struct httpd_conn *c;
	while ((c = list_pop(&l))) {
		if (atomic_load(&d->quiesced)) {
			conn_free(c);
			continue;
		}
		int64_t now = clock_mono_ms();
		bool pending = c->len > c->off;
		c->state = pending ? C_HEAD : C_IDLE;
		c->deadline_ms = now + (pending ? d->l.head_timeout_ms : d->l.idle_timeout_ms);
		list_push(pending ? &d->heads : &d->idles, c);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
			list_del(pending ? &d->heads : &d->idles, c);
			conn_free(c);
			continue;
		}
		if (pending)
			try_head(d, c); /* a pipelined request */
	}
}

static void expire(struct httpd *d, int64_t now)
{
	struct httpd_conn *c;
	while ((c = d->heads.first) && c->deadline_ms <= now) {
		d->n_head_timeout++;
		char msg[128];
		snprintf(msg, sizeof(msg), "the request head was not complete within %u ms", d->l.head_timeout_ms);
		send_error_now(c->fd, HTTP_REQUEST_TIMEOUT, msg, NULL);
		conn_drop(c);
	}
	while ((c = d->idles.first) && c->deadline_ms <= now)
		conn_drop(c); /* an idle keep-alive connection ends quietly */
}

static void close_listeners(struct httpd *d)
{
	for (int i = 0; i < d->n_lfds; i++) {
		epoll_ctl(d->epfd, EPOLL_CTL_DEL, d->lfds[i], NULL);
		close(d->lfds[i]);
	}
	d->n_lfds = 0;
}

static void *event_main(void *arg)
{
	struct httpd *d = arg;
	struct epoll_event evs[256];
	bool listeners_open = true;
	for (;;) {
		if (atomic_load(&d->stopping))
			break;
		if (listeners_open && atomic_load(&d->quiesced)) {
			close_listeners(d);
			listeners_open = false;
			while (d->idles.first)
				conn_drop(d->idles.first);
		}
		int64_t now = clock_mono_ms();
		if (d->accept_paused_until && now >= d->accept_paused_until) {
			d->accept_paused_until = 0;
			for (int i = 0; listeners_open && i < d->n_lfds; i++) {
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &d->lfds[i] };
				epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->lfds[i], &ev);
			}
		}
		int64_t next = now + 1000;
		if (d->heads.first && d->heads.first->deadline_ms < next)
			next = d->heads.first->deadline_ms;
		if (d->idles.first && d->idles.first->deadline_ms < next)
			next = d->idles.first->deadline_ms;
		if (d->accept_paused_until && d->accept_paused_until < next)
			next = d->accept_paused_until;
		int timeout = next > now ? (int)(next - now) : 0;
		int n = epoll_wait(d->epfd, evs, 256, timeout);
		for (int i = 0; i < n; i++) {
			void *ptr = evs[i].data.ptr;
			if (ptr == &d->evfd) {
				on_handback(d);
			} else if (ptr == &d->lfds[0] || ptr == &d->lfds[1]) {
				if (listeners_open && !atomic_load(&d->quiesced))
					on_accept(d, *(int *)ptr);
			} else if (!((struct httpd_conn *)ptr)->dead) {
				on_readable(d, ptr);
			}
		}
		expire(d, clock_mono_ms());
		maybe_log(d);
		struct httpd_conn *g;
		while ((g = list_pop(&d->graveyard)))
			free(g);
	}
	if (listeners_open)
		close_listeners(d);
	while (d->heads.first)
		conn_drop(d->heads.first);
	while (d->idles.first)
		conn_drop(d->idles.first);
	struct httpd_conn *g;
	while ((g = list_pop(&d->graveyard)))
		free(g);
	return NULL;
}

/* ---- Workers: bodies and replies ---------------------------------------- */

/* Waits for the peer (events: POLLIN or POLLOUT) within what is left of
 * the progress window. 0, ERR_TIMEOUT-like -ETIMEDOUT, or -errno. */
static int wait_peer(struct httpd_conn *c, short events)
{
	int64_t budget = (int64_t)c->d->l.io_timeout_ms - c->wait_ms;
	if (budget <= 0)
		return -ETIMEDOUT;
	struct pollfd p = { .fd = c->fd, .events = events };
	int64_t t0 = clock_mono_ms();
	int r = poll(&p, 1, (int)budget);
	c->wait_ms += clock_mono_ms() - t0;
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	if (r == 0)
		return -ETIMEDOUT;
	return 0;
}

static void progress(struct httpd_conn *c, size_t n)
{
	c->win_bytes += n;
	if (c->win_bytes >= PROGRESS_BYTES) {
		c->win_bytes = 0;
		c->wait_ms = 0;
	}
}

/* One recv of up to len bytes into buf, waiting for the peer within the
 * progress rules: the count (> 0), -ETIMEDOUT, -ECONNRESET (the peer
 * closed) or another -errno. */
static ssize_t recv_some(struct httpd_conn *c, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);
		if (n > 0) {
			progress(c, (size_t)n);
			return n;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_peer(c, POLLIN);
		if (rc != 0)
			return rc;
	}
}

/* Reads more of the body into c->in. 0, -ETIMEDOUT, -ECONNRESET (the peer
 * closed) or another -errno. */
static int fill(struct httpd_conn *c)
{
	int rc = in_room(c, IN_CAP);
	if (rc != 0)
		return rc;
	/* A body that arrives faster than it is consumed fills the buffer at
	 * every read: the buffer doubles (up to IN_CAP) so that a large body
	 * takes few recv calls and its handler few writes. A small body keeps
	 * the buffer of its head. */
	if (c->in_full && c->cap < IN_CAP) {
		size_t ncap = c->cap * 2 < IN_CAP ? c->cap * 2 : IN_CAP;
		char *n = realloc(c->in, ncap);
		if (!n)
			return ERR_NOMEM;
		c->in = n;
		c->cap = ncap;
	}
	size_t room = c->cap - c->len;
	ssize_t n = recv_some(c, c->in + c->len, room);
	if (n < 0)
		return (int)n;
	c->len += (size_t)n;
	c->in_full = (size_t)n == room;
	return 0;
}

/* A whole line (ending in LF) at c->in + c->off, or fills. Returns its
 * length with the LF (0 < n), or an error. */
static ssize_t body_line(struct httpd_conn *c)
{
	for (;;) {
		char *lf = memchr(c->in + c->off, '\n', c->len - c->off);
		if (lf)
			return lf - (c->in + c->off) + 1;
		if (c->len - c->off >= LINE_MAX_CHUNK)
			return ERR_INVAL;
		int rc = fill(c);
		if (rc != 0)
			return rc;
	}
}

/* The next piece of the body, at most max bytes: 1 with [*p, *p + *n), 0
 * at its end, ERR_INVAL for a malformed chunked encoding, -ETIMEDOUT, or
 * -errno. */
static int body_next(struct httpd_conn *c, const char **p, size_t *n, size_t max)
{
	for (;;) {
		switch (c->body) {
		case B_NONE:
		case B_DONE:
			return 0;
		case B_LENGTH:
		case B_CHUNK_DATA: {
			if (c->len == c->off) {
				int rc = fill(c);
				if (rc != 0)
					return rc;
			}
			size_t avail = c->len - c->off < max ? c->len - c->off : max;
			size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
			*p = c->in + c->off;
			*n = take;
			c->off += take;
			c->body_left -= take;
			if (c->body_left == 0)
				c->body = c->body == B_LENGTH ? B_DONE : B_CHUNK_CRLF;
			return 1;
		}
		case B_CHUNK_SIZE: {
			ssize_t ln = body_line(c);
			if (ln < 0)
				return (int)ln;
			const char *s = c->in + c->off;
			uint64_t v = 0;
			size_t i = 0, digits = 0;
			for (; i < (size_t)ln && httphead_hex_digit((unsigned char)s[i]) >= 0; i++, digits++) {
				if (v >> 58)
					return ERR_INVAL;
				v = v * 16 + (uint64_t)httphead_hex_digit((unsigned char)s[i]);
			}
			if (digits == 0)
				return ERR_INVAL;
			while (i < (size_t)ln && (s[i] == ' ' || s[i] == '\t'))
				i++;
			if (s[i] != ';' && s[i] != '\r' && s[i] != '\n')
				return ERR_INVAL;
			if (s[i] == '\r' && s[i + 1] != '\n')
				return ERR_INVAL;
			c->off += (size_t)ln;
			c->body_left = v;
			c->body = v == 0 ? B_TRAILER : B_CHUNK_DATA;
			break;
		}
		case B_CHUNK_CRLF: {
			ssize_t ln = body_line(c);
			if (ln < 0)
				return (int)ln;
			if (!(ln == 1 || (ln == 2 && c->in[c->off] == '\r')))
				return ERR_INVAL;
			c->off += (size_t)ln;
			c->body = B_CHUNK_SIZE;
			break;
		}
		case B_TRAILER: {
			ssize_t ln = body_line(c);
			if (ln < 0)
				return (int)ln;
			bool blank = ln == 1 || (ln == 2 && c->in[c->off] == '\r');
			c->off += (size_t)ln;
			if (blank)
				c->body = B_DONE;
			else if (++c->n_trailers > TRAILERS_MAX)
				return ERR_INVAL;
			break;
		}
		}
	}
}

/* Sends all of buf within the progress rules. 0 or -errno/-ETIMEDOUT. */
static int send_all(struct httpd_conn *c, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			progress(c, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_peer(c, POLLOUT);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int send_file(struct httpd_conn *c, const struct httpd_response *r)
{
	int fd = r->fd;
	uint64_t size = r->size;
	off_t off = 0;
	bool confirmed = r->hold == NULL;
	while ((uint64_t)off < size) {
		/* A held file goes out up to its last byte, then the holder
		 * confirms that nothing could have changed it meanwhile. */
		if (!confirmed && (uint64_t)off == size - 1) {
			if (r->hold(r->cls) != 0)
				return -EIO;
			confirmed = true;
		}
		uint64_t end = confirmed ? size : size - 1;
		size_t want = end - (uint64_t)off > (1u << 30) ? (1u << 30) : (size_t)(end - (uint64_t)off);
		ssize_t n = sendfile(c->fd, fd, &off, want);
		if (n > 0) {
			progress(c, (size_t)n);
			continue;
		}
		if (n == 0)
			return -EIO; /* the file is shorter than said */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_peer(c, POLLOUT);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Writes the queued reply. *closing: whether the connection must close
 * after it (decided here, said in the reply). 0 or an error. */
static int send_reply(struct httpd_conn *c, bool *closing)
{
	struct httpd_response *r = c->resp;
	bool head_only = !strcmp(c->rq.method, HTTP_METHOD_HEAD);
	bool no_body = c->status < 200 || c->status == 204 || c->status == 304;
	bool chunked = false;
	uint64_t clen = 0;
	if (r->kind == R_BUF)
		clen = r->len;
	else if (r->kind == R_FD)
		clen = r->size;
	else if (r->size != HTTPD_SIZE_UNKNOWN)
		clen = r->size;
	else if (c->rq.minor == 1)
		chunked = true;
	else
		*closing = true; /* HTTP/1.0 without a length: the close ends the body */
	bool unknown_len = r->kind == R_CB && r->size == HTTPD_SIZE_UNKNOWN;

	/* A small body in memory goes out with the head, in one segment. */
	bool inline_body = r->kind == R_BUF && !head_only && !no_body && r->len <= PROGRESS_BYTES;
	size_t cap = r->hdrs_len + 256 + (inline_body ? r->len : 0);
	char *h = malloc(cap);
	if (!h)
		return ERR_NOMEM;
	int n = snprintf(h, cap, "HTTP/1.1 %u %s\r\n", c->status, reason_phrase(c->status));
	memcpy(h + n, r->hdrs ? r->hdrs : "", r->hdrs_len);
	n += (int)r->hdrs_len;
	if (!no_body) {
		if (chunked)
			n += snprintf(h + n, cap - (size_t)n, "Transfer-Encoding: chunked\r\n");
		else if (!unknown_len)
			n += snprintf(h + n, cap - (size_t)n, "Content-Length: %" PRIu64 "\r\n", clen);
	}
	if (*closing)
		n += snprintf(h + n, cap - (size_t)n, "Connection: close\r\n");
	else if (c->rq.minor == 0)
		n += snprintf(h + n, cap - (size_t)n, "Connection: keep-alive\r\n");
	n += snprintf(h + n, cap - (size_t)n, "\r\n");
	if (inline_body) {
		memcpy(h + n, r->buf, r->len);
		n += (int)r->len;
	}
	int rc = send_all(c, h, (size_t)n);
	free(h);
	if (rc != 0 || head_only || no_body || inline_body)
		return rc;

	switch (r->kind) {
	case R_BUF:
		return send_all(c, r->buf, r->len);
	case R_FD:
		return send_file(c, r);
	case R_CB: {
		size_t block = r->block ? r->block : 16384;
		char *buf = malloc(block + 32);
		if (!buf)
			return ERR_NOMEM;
		uint64_t pos = 0;
		rc = 0;
		for (;;) {
			if (!unknown_len && pos >= r->size)
				break;
			size_t max = block;
			if (!unknown_len && r->size - pos < max)
				max = (size_t)(r->size - pos);
			ssize_t got = r->reader(r->cls, pos, buf + 16, max);
			if (got == HTTPD_END_OF_STREAM) {
				if (!unknown_len && pos < r->size)
					rc = -EIO;
				break;
			}
			if (got < 0 || (size_t)got > max) {
				rc = -EIO;
				break;
			}
			if (got == 0)
				continue;
			pos += (uint64_t)got;
			if (chunked) {
				char sz[16];
				int sl = snprintf(sz, sizeof(sz), "%zx\r\n", (size_t)got);
				char *start = buf + 16 - sl;
				memcpy(start, sz, (size_t)sl);
				memcpy(buf + 16 + got, "\r\n", 2);
				rc = send_all(c, start, (size_t)sl + (size_t)got + 2);
			} else {
				rc = send_all(c, buf + 16, (size_t)got);
			}
			if (rc != 0)
				break;
		}
		free(buf);
		if (rc == 0 && chunked)
			rc = send_all(c, "0\r\n\r\n", 5);
		return rc;
	}
	}
	return ERR_INVAL;
}

/* Queues a JSON error as the reply (the server's own, e.g. a bad body). */
static void queue_error(struct httpd_conn *c, unsigned status, const char *msg)
{
	json_t *o = json_object();
	if (o) {
		json_object_set_new(o, "code", json_string(error_code(status)));
		json_object_set_new(o, "error", httpd_json_str(msg));
	}
	httpd_respond_json(c, status, o, NULL, NULL);
}

/* Serves one request on c, from the first call of the handler to the end
 * of its reply. Then keeps the connection (hands it back) or closes it. */
static void serve(struct httpd *d, struct httpd_conn *c)
{
	void *req_cls = NULL;
	size_t zero = 0;
	bool failed = false;
	c->wait_ms = 0;
	c->win_bytes = 0;
	const char *url = c->rq.path;

	enum httpd_result hr = d->l.handler(d->l.cls, c, url, c->rq.method, c->rq.version, NULL, &zero, &req_cls);
	if (c->taken) {
		/* The handler owned the socket (and has closed it): only the
		 * bookkeeping is left. */
		if (d->l.completed)
			d->l.completed(d->l.cls, c, &req_cls, hr == HTTPD_NO ? HTTPD_END_ERROR : HTTPD_END_OK);
		pthread_mutex_lock(&d->mu);
		list_del(&d->active, c);
		d->busy--;
		pthread_mutex_unlock(&d->mu);
		c->fd = -1;
		conn_free(c);
		return;
	}
	if (hr == HTTPD_NO) {
		failed = true;
	} else if (!c->resp) {
		if (c->body != B_DONE && c->rq.expect_continue && !c->continued)
			failed = send_all(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0;
		while (!failed && !c->resp) {
			const char *p = NULL;
			size_t n = 0;
			int rc = body_next(c, &p, &n, SIZE_MAX);
			if (rc == 0)
				break;
			if (rc < 0) {
				if (rc == ERR_INVAL) {
					queue_error(c, HTTP_BAD_REQUEST, "malformed chunked request body");
				} else if (rc == -ETIMEDOUT) {
					char msg[160];
					snprintf(msg, sizeof(msg),
						 "the request body did not progress (64 KiB per %u ms of waiting)",
						 d->l.io_timeout_ms);
					queue_error(c, HTTP_REQUEST_TIMEOUT, msg);
				} else {
					failed = true; /* the peer went away */
				}
				break;
			}
			size_t left = n;
			if (d->l.handler(d->l.cls, c, url, c->rq.method, c->rq.version, p, &left, &req_cls) == HTTPD_NO)
				failed = true;
		}
		if (!failed && !c->resp) {
			zero = 0;
			if (d->l.handler(d->l.cls, c, url, c->rq.method, c->rq.version, NULL, &zero, &req_cls) == HTTPD_NO)
				failed = true;
			else if (!c->resp)
				queue_error(c, HTTP_INTERNAL_SERVER_ERROR, "internal error: the handler sent no reply");
		}
	}
	bool body_read = c->body == B_DONE || c->body == B_NONE;
	bool closing = !c->rq.keep_alive || !body_read || atomic_load(&d->quiesced);
	if (!failed && c->resp)
		failed = send_reply(c, &closing) != 0;
	if (d->l.completed)
		d->l.completed(d->l.cls, c, &req_cls, failed ? HTTPD_END_ERROR : HTTPD_END_OK);

	bool keep = !failed && !closing && !atomic_load(&d->quiesced);
	request_reset(c);
	pthread_mutex_lock(&d->mu);
	list_del(&d->active, c);
	d->busy--;
	if (keep) {
		list_push(&d->handback, c);
	}
	pthread_mutex_unlock(&d->mu);
	if (keep) {
		wake(d);
		return;
	}
	if (!failed && !body_read)
		conn_linger_close(c);
	conn_free(c);
}

static void *worker_main(void *arg)
{
	struct httpd *d = arg;
	pthread_mutex_lock(&d->mu);
	for (;;) {
		struct httpd_conn *c = list_pop(&d->ready);
		if (c) {
			d->n_ready--;
			if (atomic_load(&d->stopping)) {
				d->busy--;
				pthread_mutex_unlock(&d->mu);
				conn_free(c);
				pthread_mutex_lock(&d->mu);
				continue;
			}
			c->state = C_ACTIVE;
			list_push(&d->active, c);
			pthread_mutex_unlock(&d->mu);
			serve(d, c);
			pthread_mutex_lock(&d->mu);
			continue;
		}
		if (atomic_load(&d->stopping))
			break;
		d->idle_workers++;
		pthread_cond_wait(&d->cond, &d->mu);
		d->idle_workers--;
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* d->mu held. A thread fails to start only under memory pressure; the
 * request then waits for a busy worker. */
static void worker_spawn_locked(struct httpd *d)
{
	if (d->n_threads >= d->l.workers)
		return;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 1u << 20);
	if (pthread_create(&d->threads[d->n_threads], &attr, worker_main, d) == 0)
		d->n_threads++;
	pthread_attr_destroy(&attr);
}

/* ---- Start and stop ----------------------------------------------------- */

int httpd_parse_addr(const char *addr, char *host, size_t host_len, char *port, size_t port_len)
{
	const char *colon, *h = addr;
	size_t hn;

	if (addr == NULL)
		return ERR_INVAL;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return ERR_INVAL;
		h = addr + 1;
		hn = (size_t)(end - h);
		colon = end + 1;
		if (hn == 0)
			return ERR_INVAL;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return ERR_INVAL;
		hn = (size_t)(colon - addr);
		/* An unbracketed IPv6 address is ambiguous. */
		if (memchr(addr, ':', hn) != NULL)
			return ERR_INVAL;
	}
	const char *p = colon + 1;
	size_t pn = strlen(p);
	if (pn == 0 || pn > 5 || pn >= port_len || hn >= host_len || strspn(p, "0123456789") != pn ||
	    strtoul(p, NULL, 10) > 65535)
		return ERR_INVAL;
	memcpy(host, h, hn);
	host[hn] = '\0';
	memcpy(port, p, pn + 1);
	return 0;
}

static int listen_one(const struct sockaddr *sa, socklen_t sl, bool dual)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual ? &zero : &one, sizeof(int));
	if (bind(fd, sa, sl) != 0 || listen(fd, 1024) != 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* Descriptors: the soft limit is raised to the hard one (a server holding
 * thousands of connections needs more than the usual 1024), and max_conns
 * stays within three quarters of it, leaving the rest to databases. */
static unsigned fd_budget(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 768;
	if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 65536) {
		struct rlimit want = rl;
		want.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
	}
	return rl.rlim_cur == RLIM_INFINITY ? 65536 : (unsigned)(rl.rlim_cur * 3 / 4);
}

/* An operator's override of a limit: LITEFS_HTTP_<NAME> in the
 * environment, a whole number in 1..10^9; anything else keeps *v. */
static void env_limit(const char *mod, const char *name, unsigned *v)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return;
	char *end;
	errno = 0;
	unsigned long n = strtoul(s, &end, 10);
	if (errno || *end || n == 0 || n > 1000000000ul) {
		LOG_WARN(mod, "msg=\"ignoring an invalid limit in the environment\" name=%s value=\"%.32s\"", name, s);
		return;
	}
	*v = (unsigned)n;
}

int httpd_start(const struct httpd_listen *l, struct httpd **out, uint16_t *port)
{
	char host[256], portstr[8];
	*out = NULL;
	if (httpd_parse_addr(l->addr, host, sizeof(host), portstr, sizeof(portstr)) != 0) {
		LOG_ERROR(l->mod, "msg=\"invalid listen address: expected host:port, [ipv6]:port or :port\" addr=\"%s\"",
			  l->addr ? l->addr : "");
		return ERR_INVAL;
	}
	struct httpd *d = calloc(1, sizeof(*d));
	if (!d)
		return ERR_NOMEM;
	d->l = *l;
	d->l.addr = NULL;
	snprintf(d->mod, sizeof(d->mod), "%s", l->mod ? l->mod : "http");
	d->l.mod = d->mod;
	if (!d->l.workers)
		d->l.workers = 64;
	if (!d->l.reserved)
		d->l.reserved = d->l.workers / 4;
	if (d->l.reserved >= d->l.workers)
		d->l.reserved = d->l.workers - 1;
	if (!d->l.per_client)
		d->l.per_client = 64;
	if (!d->l.max_conns)
		d->l.max_conns = 4096;
	if (!d->l.head_timeout_ms)
		d->l.head_timeout_ms = 10000;
	if (!d->l.idle_timeout_ms)
		d->l.idle_timeout_ms = 30000;
	if (!d->l.io_timeout_ms)
		d->l.io_timeout_ms = 30000;
	env_limit(d->mod, "LITEFS_HTTP_PER_CLIENT", &d->l.per_client);
	env_limit(d->mod, "LITEFS_HTTP_MAX_CONNS", &d->l.max_conns);
	env_limit(d->mod, "LITEFS_HTTP_HEAD_TIMEOUT_MS", &d->l.head_timeout_ms);
	env_limit(d->mod, "LITEFS_HTTP_IDLE_TIMEOUT_MS", &d->l.idle_timeout_ms);
	env_limit(d->mod, "LITEFS_HTTP_IO_TIMEOUT_MS", &d->l.io_timeout_ms);
	unsigned budget = fd_budget();
	if (d->l.max_conns > budget)
		d->l.max_conns = budget;
	d->epfd = d->evfd = -1;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cond, NULL);
	int rc = 0;
	if (!(d->threads = calloc(d->l.workers, sizeof(*d->threads)))) {
		rc = ERR_NOMEM;
		goto err;
	}

	uint16_t port_num = (uint16_t)strtoul(portstr, NULL, 10);
	if (host[0] == '\0') {
		/* All interfaces: IPv6 and IPv4 on one socket where the kernel
		 * has IPv6, IPv4 alone otherwise. */
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(port_num),
					   .sin6_addr = in6addr_any };
		int fd = listen_one((struct sockaddr *)&s6, sizeof(s6), true);
		if (fd < 0) {
			struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(port_num),
						  .sin_addr.s_addr = htonl(INADDR_ANY) };
			fd = listen_one((struct sockaddr *)&s4, sizeof(s4), false);
		}
		if (fd < 0) {
			rc = fd;
			goto err_listen;
		}
		d->lfds[d->n_lfds++] = fd;
	} else {
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
		struct addrinfo *ai = NULL;
		int grc = getaddrinfo(host, portstr, &hints, &ai);
		if (grc != 0 || !ai) {
			LOG_ERROR(l->mod, "msg=\"cannot resolve the listen address\" addr=\"%s\" err=\"%s\"", l->addr,
				  gai_strerror(grc));
			rc = ERR_INVAL;
			goto err;
		}
		int fd = listen_one(ai->ai_addr, ai->ai_addrlen, false);
		freeaddrinfo(ai);
		if (fd < 0) {
			rc = fd;
			goto err_listen;
		}
		d->lfds[d->n_lfds++] = fd;
	}
	struct sockaddr_storage bound;
	socklen_t bl = sizeof(bound);
	if (port) {
		*port = 0;
		if (getsockname(d->lfds[0], (struct sockaddr *)&bound, &bl) == 0)
			*port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
								  : ((struct sockaddr_in *)&bound)->sin_port);
	}

	if ((d->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 || (d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		rc = -errno;
		goto err_close;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &d->evfd };
	epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->evfd, &ev);
	for (int i = 0; i < d->n_lfds; i++) {
		struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &d->lfds[i] };
		epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->lfds[i], &lev);
	}
	if ((rc = pthread_create(&d->event_thread, NULL, event_main, d)) != 0) {
		rc = -rc;
		goto err_close;
	}
	*out = d;
	return 0;

err_listen:
	LOG_ERROR(l->mod, "msg=\"cannot listen\" addr=\"%s\" err=\"%s\"", l->addr, err_str(rc));
err_close:
	for (int i = 0; i < d->n_lfds; i++)
		close(d->lfds[i]);
	if (d->epfd >= 0)
		close(d->epfd);
	if (d->evfd >= 0)
		close(d->evfd);
err:
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cond);
	free(d->threads);
	free(d);
	return rc;
}

void httpd_quiesce(struct httpd *d)
{
	if (!d || atomic_exchange(&d->quiesce_called, true))
		return;
	/* Shutting the listening sockets down refuses new connections at
	 * once (instead of leaving them in the backlog); the event thread
	 * closes them, but only once `quiesced` says the shutdowns are done. */
	for (int i = 0; i < d->n_lfds; i++)
		shutdown(d->lfds[i], SHUT_RDWR);
	atomic_store(&d->quiesced, true);
	wake(d);
}

void httpd_stop(struct httpd *d)
{
	if (!d)
		return;
	httpd_quiesce(d);
	atomic_store(&d->stopping, true);
	wake(d);
	pthread_join(d->event_thread, NULL);
	pthread_mutex_lock(&d->mu);
	for (struct httpd_conn *c = d->active.first; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_cond_broadcast(&d->cond);
	unsigned n = d->n_threads;
	pthread_mutex_unlock(&d->mu);
	for (unsigned i = 0; i < n; i++)
		pthread_join(d->threads[i], NULL);
	struct httpd_conn *c;
	while ((c = list_pop(&d->handback)))
		conn_free(c);
	while ((c = list_pop(&d->ready)))
		conn_free(c);
	for (unsigned i = 0; i < BUCKETS; i++) {
		while (d->buckets[i]) {
			struct ipcount *e = d->buckets[i];
			d->buckets[i] = e->next;
			free(e);
		}
	}
	close(d->epfd);
	close(d->evfd);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cond);
	free(d->threads);
	free(d);
}

unsigned httpd_busy(struct httpd *d)
{
	pthread_mutex_lock(&d->mu);
	unsigned n = d->busy;
	pthread_mutex_unlock(&d->mu);
	return n;
}

/* ---- The request -------------------------------------------------------- */

const char *httpd_header(struct httpd_conn *conn, const char *name)
{
	for (unsigned i = 0; i < conn->rq.n_hdrs; i++)
		if (!strcasecmp(conn->rq.hdrs[i].name, name))
			return conn->rq.hdrs[i].value;
	return NULL;
}

enum httpd_result httpd_arg(struct httpd_conn *conn, const char *key, const char **value, size_t *len)
{
	for (unsigned i = 0; i < conn->rq.n_args; i++) {
		if (!strcmp(conn->rq.args[i].key, key)) {
			*value = conn->rq.args[i].value;
			*len = conn->rq.args[i].len;
			return HTTPD_YES;
		}
	}
	return HTTPD_NO;
}

bool httpd_header_at(struct httpd_conn *conn, unsigned i, const char **name, const char **value)
{
	if (i >= conn->rq.n_hdrs)
		return false;
	*name = conn->rq.hdrs[i].name;
	*value = conn->rq.hdrs[i].value;
	return true;
}

bool httpd_arg_at(struct httpd_conn *conn, unsigned i, const char **key, const char **value, size_t *len)
{
	if (i >= conn->rq.n_args)
		return false;
	*key = conn->rq.args[i].key;
	*value = conn->rq.args[i].value;
	*len = conn->rq.args[i].len;
	return true;
}

/* Sends "100 Continue" before the first body read of a client that waits
 * for it. */
static int continue_once(struct httpd_conn *c)
{
	if (!c->rq.expect_continue || c->continued)
		return 0;
	c->continued = true;
	return send_all(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

/* Reads straight from the socket into buf: only when nothing is buffered
 * and at least this much of the body (or of its current chunk) is wanted,
 * so a large upload is copied once, from the kernel to its reader; small
 * chunks go through the buffer (fewer recv calls). */
#define DIRECT_READ_MIN (16u << 10)

ssize_t httpd_body_read(struct httpd_conn *c, void *buf, size_t len)
{
	if (len == 0 || c->body == B_NONE || c->body == B_DONE)
		return 0;
	int rc = continue_once(c);
	if (rc != 0)
		return rc;
	size_t want = len < c->body_left ? len : (size_t)c->body_left;
	if ((c->body == B_LENGTH || c->body == B_CHUNK_DATA) && c->off == c->len && want >= DIRECT_READ_MIN) {
		ssize_t n = recv_some(c, buf, want);
		if (n > 0 && (c->body_left -= (uint64_t)n) == 0)
			c->body = c->body == B_LENGTH ? B_DONE : B_CHUNK_CRLF;
		return n;
	}
	const char *p = NULL;
	size_t n = 0;
	rc = body_next(c, &p, &n, len);
	if (rc <= 0)
		return rc;
	memcpy(buf, p, n);
	return (ssize_t)n;
}

ssize_t httpd_body_splice(struct httpd_conn *c, const int pipe_fds[2], int fd, off_t off, size_t len,
			  bool *file_failed)
{
	*file_failed = false;
	if (len == 0 || c->body == B_NONE || c->body == B_DONE)
		return 0;
	if (c->body != B_LENGTH)
		return ERR_INVAL;
	int rc = continue_once(c);
	if (rc != 0)
		return rc;
	size_t want = len < c->body_left ? len : (size_t)c->body_left;
	ssize_t n;
	if (c->off < c->len) {
		/* Bytes that came with the head: written from the buffer. */
		n = (ssize_t)(c->len - c->off < want ? c->len - c->off : want);
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(fd, c->in + c->off + done, (size_t)(n - done), off + done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				*file_failed = true;
				return w < 0 ? -errno : -EIO;
			}
			done += w;
		}
		c->off += (size_t)n;
		if ((c->body_left -= (uint64_t)n) == 0)
			c->body = B_DONE;
	} else {
		for (;;) {
			n = splice(c->fd, NULL, pipe_fds[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0)
				break;
			if (n == 0)
				return -ECONNRESET;
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			if ((rc = wait_peer(c, POLLIN)) != 0)
				return rc;
		}
		progress(c, (size_t)n);
		/* Taken from the socket: part of the body read, whatever
		 * happens to the file. */
		if ((c->body_left -= (uint64_t)n) == 0)
			c->body = B_DONE;
		loff_t o = off;
		for (ssize_t left = n; left > 0;) {
			ssize_t w = splice(pipe_fds[0], NULL, fd, &o, (size_t)left, SPLICE_F_MOVE);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				*file_failed = true;
				return w < 0 ? -errno : -EIO;
			}
			left -= w;
		}
	}
	return n;
}

int httpd_take_socket(struct httpd_conn *conn, char **buffered, size_t *len)
{
	if (conn->taken || conn->resp || conn->state != C_ACTIVE)
		return ERR_INVAL;
	size_t n = conn->len - conn->off;
	char *b = malloc(n ? n : 1);
	if (!b)
		return ERR_NOMEM;
	memcpy(b, conn->in + conn->off, n);
	conn->off = conn->len;
	conn->taken = true;
	*buffered = b;
	*len = n;
	return conn->fd;
}

int httpd_sock_of(struct httpd_conn *conn)
{
	return conn->fd;
}

void httpd_peer_name(struct httpd_conn *conn, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
	socklen_t sl = conn->peer.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (conn->peer.ss_family == AF_INET6 || conn->peer.ss_family == AF_INET)
		getnameinfo((const struct sockaddr *)&conn->peer, sl, host, sizeof(host), port, sizeof(port),
			    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(buf, len, "%s:%s", host, port);
}

bool httpd_peer_gone(int sock_fd)
{
	if (sock_fd < 0)
		return false;
	struct pollfd pfd = { .fd = sock_fd, .events = POLLRDHUP };
	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* ---- Replies ------------------------------------------------------------ */

static struct httpd_response *response_new(enum resp_kind kind)
{
	struct httpd_response *r = calloc(1, sizeof(*r));
	if (r) {
		r->kind = kind;
		r->fd = -1;
	}
	return r;
}

struct httpd_response *httpd_response_buf(void *buf, size_t len, bool take)
{
	struct httpd_response *r = response_new(R_BUF);
	if (!r) {
		if (take)
			free(buf);
		return NULL;
	}
	r->buf = buf;
	r->len = len;
	r->take = take;
	return r;
}

struct httpd_response *httpd_response_fd(int fd, uint64_t size)
{
	struct httpd_response *r = response_new(R_FD);
	if (!r)
		return NULL;
	r->fd = fd;
	r->size = size;
	return r;
}

struct httpd_response *httpd_response_fd_held(int fd, uint64_t size, int (*hold)(void *), void *cls,
					      void (*free_cb)(void *))
{
	struct httpd_response *r = httpd_response_fd(fd, size);
	if (r) {
		r->hold = hold;
		r->cls = cls;
		r->free_cb = free_cb;
	}
	return r;
}

struct httpd_response *httpd_response_callback(uint64_t size, size_t block, httpd_reader reader, void *cls,
					       void (*free_cb)(void *))
{
	struct httpd_response *r = response_new(R_CB);
	if (!r)
		return NULL;
	r->size = size;
	r->block = block;
	r->reader = reader;
	r->cls = cls;
	r->free_cb = free_cb;
	return r;
}

int httpd_response_header(struct httpd_response *r, const char *name, const char *value)
{
	if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
		return ERR_INVAL;
	size_t add = strlen(name) + strlen(value) + 4;
	char *n = realloc(r->hdrs, r->hdrs_len + add + 1);
	if (!n)
		return ERR_NOMEM;
	r->hdrs = n;
	r->hdrs_len += (size_t)snprintf(n + r->hdrs_len, add + 1, "%s: %s\r\n", name, value);
	return 0;
}

void httpd_response_free(struct httpd_response *r)
{
	if (!r)
		return;
	if (r->kind == R_BUF && r->take)
		free(r->buf);
	if (r->kind == R_FD && r->fd >= 0)
		close(r->fd);
	if (r->free_cb)
		r->free_cb(r->cls);
	free(r->hdrs);
	free(r);
}

enum httpd_result httpd_queue(struct httpd_conn *conn, unsigned status, struct httpd_response *r)
{
	if (!r)
		return HTTPD_NO;
	if (conn->resp || status < 100 || status > 999) {
		httpd_response_free(r);
		return HTTPD_NO;
	}
	conn->resp = r;
	conn->status = status;
	return HTTPD_YES;
}

/* ---- Shared reply helpers ----------------------------------------------- */

void httpd_log_clean(char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
			*s = '\'';
}

json_t *httpd_json_str(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	char *c = strdup(s);
	if (!c)
		return NULL;
	for (char *p = c; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(c);
	free(c);
	return j;
}

enum httpd_result httpd_respond_buf(struct httpd_conn *conn, unsigned status, const char *ctype, char *body,
				    size_t len, const char *header, const char *value)
{
	struct httpd_response *r = httpd_response_buf(body, len, true);
	if (!r)
		return HTTPD_NO;
	if (httpd_response_header(r, HTTP_HEADER_CONTENT_TYPE, ctype) != 0 ||
	    httpd_response_header(r, HTTP_HEADER_CACHE_CONTROL, "no-store") != 0 ||
	    (header && value && httpd_response_header(r, header, value) != 0)) {
		httpd_response_free(r);
		return HTTPD_NO;
	}
	return httpd_queue(conn, status, r);
}

enum httpd_result httpd_respond_json(struct httpd_conn *conn, unsigned status, json_t *obj, const char *header,
				     const char *value)
{
	char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!s)
		return HTTPD_NO;
	size_t n = strlen(s);
	char *t = realloc(s, n + 2);
	if (!t) {
		free(s);
		return HTTPD_NO;
	}
	t[n] = '\n';
	t[n + 1] = '\0';
	return httpd_respond_buf(conn, status, "application/json", t, n + 1, header, value);
}

enum httpd_result httpd_respond_error(struct httpd_conn *conn, unsigned status, const char *msg)
{
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "error", httpd_json_str(msg));
	return httpd_respond_json(conn, status, o, NULL, NULL);
}

enum httpd_result httpd_respond_errorf(struct httpd_conn *conn, unsigned status, const char *fmt, ...)
{
	char msg[HTTPD_MSG_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return httpd_respond_error(conn, status, msg);
}
