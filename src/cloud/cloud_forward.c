/*
 * cloud_forward.c — a standby's HTTP server (design in cloud_forward.h).
 *
 * A request's life: first call (headers) → body chunks into a spool →
 * last call: the request is sent on with libcurl (one handle per
 * request: standbys carry little traffic, and a handle per request
 * never sends to a writer that changed since), the reply's body goes
 * into a second spool, and it is returned with the writer's status and
 * headers. Everything is logged once per failure (mod=cloud-forward).
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cloud/cloud_forward.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/httpd.h"
#include "base/log.h"
#include "base/sbuf.h"

#define WORKERS 256u
/* Stopping (this instance takes the bucket): requests in flight were
 * going to a writer that is gone; they get this long, then are cut. */
#define STOP_GRACE_MS 2000
/* The writer may hold a long poll for 30 s (GET /pos?wait=): a reply may
 * take that long to start; a transfer that then stalls is cut. */
#define STALL_S 90
#define URL_MAX 512

struct cloud_forward {
	struct httpd *daemon;
	unsigned port;
	char *tmp_dir, *instance;
	uint64_t max_body;
	pthread_mutex_t mu; /* guards writer */
	char writer[URL_MAX];
	atomic_int n_active;
	atomic_int n_relays; /* GET /events streams being relayed */
	atomic_bool stopping;
};

struct freq {
	int spool_fd;       /* the request body, -1 if none yet */
	uint64_t n_bytes;
	bool too_large;
	/* The reply from the writer. */
	int reply_fd;
	uint64_t reply_len;
	struct curl_slist *reply_hdrs; /* "Name: value" lines to pass back */
	int reply_err;
};

static bool hop_by_hop(const char *name, size_t len)
{
	static const char *const skip[] = { "connection", "keep-alive", "transfer-encoding", "content-length",
					    "expect", "host", "proxy-connection", "te", "trailer", "upgrade" };
	for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strlen(skip[i]) == len && !strncasecmp(name, skip[i], len))
			return true;
	return false;
}

static enum httpd_result reply_unavailable(struct httpd_conn *conn, const char *msg)
{
	return httpd_respond_json(conn, HTTP_SERVICE_UNAVAILABLE,
				  json_pack("{s:s, s:o}", "code", "EUNAVAILABLE", "error", httpd_json_str(msg)),
				  "Retry-After", "1");
}

/* The writer's URL for this request: base + path + the query, encoded
 * again from the decoded arguments. Caller frees with free(). */
static char *target_url(CURL *c, const char *base, const char *path, struct httpd_conn *conn)
{
	struct sbuf b = { 0 };
	sbuf_printf(&b, "%s%s", base, path);
	const char *key, *value;
	size_t len;
	for (unsigned i = 0; httpd_arg_at(conn, i, &key, &value, &len); i++) {
		char *k = curl_easy_escape(c, key, 0);
		char *v = value ? curl_easy_escape(c, value, (int)len) : NULL;
		if (!k || (value && !v)) {
			curl_free(k);
			curl_free(v);
			sbuf_free(&b);
			return NULL;
		}
		sbuf_printf(&b, "%c%s%s%s", i ? '&' : '?', k, v ? "=" : "", v ? v : "");
		curl_free(k);
		curl_free(v);
	}
	if (b.oom) {
		sbuf_free(&b);
		return NULL;
	}
	return b.p; /* the caller frees it */
}

static size_t on_reply_header(char *buf, size_t size, size_t n, void *ctx)
{
	struct freq *q = ctx;
	size_t len = size * n;
	const char *colon = memchr(buf, ':', len);
	if (!strncmp(buf, "HTTP/", 5)) {
		/* A new status line (after a 100 Continue): start over. */
		curl_slist_free_all(q->reply_hdrs);
		q->reply_hdrs = NULL;
		return len;
	}
	if (!colon || hop_by_hop(buf, (size_t)(colon - buf)) || !strncasecmp(buf, "date:", 5))
		return len;
	size_t end = len;
	while (end > 0 && (buf[end - 1] == '\r' || buf[end - 1] == '\n'))
		end--;
	char *line = strndup(buf, end);
	struct curl_slist *l = line ? curl_slist_append(q->reply_hdrs, line) : NULL;
	free(line);
	if (!l)
		return 0;
	q->reply_hdrs = l;
	return len;
}

static size_t on_reply_body(char *buf, size_t size, size_t n, void *ctx)
{
	struct freq *q = ctx;
	int rc = fdio_write(&q->reply_fd, buf, size * n);
	if (rc != 0) {
		q->reply_err = rc;
		return 0;
	}
	q->reply_len += size * n;
	return size * n;
}

/* Cuts transfers when the server stops (they would hold its threads). */
static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	struct cloud_forward *f = ctx;
	return atomic_load(&f->stopping) ? 1 : 0;
}

static size_t on_request_body(char *buf, size_t size, size_t n, void *ctx)
{
	struct freq *q = ctx;
	ssize_t r;
	do
		r = read(q->spool_fd, buf, size * n);
	while (r < 0 && errno == EINTR);
	return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

/* Builds the headers passed on: the client's, minus hop-by-hop ones. */
static struct curl_slist *pass_headers(struct httpd_conn *conn, const char *instance)
{
	struct curl_slist *l = NULL;
	const char *name, *value;
	char line[8192];
	for (unsigned i = 0; httpd_header_at(conn, i, &name, &value); i++) {
		if (hop_by_hop(name, strlen(name)))
			continue;
		snprintf(line, sizeof(line), "%s: %s", name, value);
		struct curl_slist *n = curl_slist_append(l, line);
		if (!n)
			goto err;
		l = n;
	}
	snprintf(line, sizeof(line), "Litefs-Cloud-Forwarded-By: %s", instance);
	struct curl_slist *n = curl_slist_append(l, line);
	/* No "Expect: 100-continue": the body is here already. */
	n = n ? curl_slist_append(n, "Expect:") : NULL;
	if (n)
		return n;
err:
	curl_slist_free_all(l);
	return NULL;
}

/* Sends the request on; 0 with q->reply_* filled, or -1 with a 503 sent
 * (*ret). */
static int send_on(struct cloud_forward *f, struct httpd_conn *conn, const char *url, const char *method,
		   struct freq *q, const char *writer, enum httpd_result *ret)
{
	CURL *c = curl_easy_init();
	char *target = c ? target_url(c, writer, url, conn) : NULL;
	struct curl_slist *hdrs = target ? pass_headers(conn, f->instance) : NULL;
	q->reply_fd = hdrs ? fileio_spool_open(f->tmp_dir) : -1;
	if (q->reply_fd < 0) {
		*ret = reply_unavailable(conn, "cannot forward the request to the writer: out of resources; retry");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, target);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)STALL_S);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_reply_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, q);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, q);
	if (q->spool_fd >= 0 || !strcmp(method, "POST")) {
		/* A body (an empty one for a bodiless POST), sent as it came. */
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(q->spool_fd >= 0 ? q->n_bytes : 0));
		if (q->spool_fd >= 0) {
			lseek(q->spool_fd, 0, SEEK_SET);
			curl_easy_setopt(c, CURLOPT_READFUNCTION, on_request_body);
			curl_easy_setopt(c, CURLOPT_READDATA, q);
		} else {
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
		}
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	CURLcode cc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK || status < 100 || q->reply_err) {
		LOG_WARN("cloud-forward", "msg=\"cannot forward a request to the writer\" writer=\"%s\" path=%s err=\"%s\"",
			 writer, url, q->reply_err ? err_str(q->reply_err) : curl_easy_strerror(cc));
		char msg[URL_MAX + 64];
		snprintf(msg, sizeof(msg), "the bucket's writer %s cannot be reached; retry", writer);
		*ret = reply_unavailable(conn, msg);
		goto out;
	}
	curl_slist_free_all(hdrs);
	free(target);
	curl_easy_cleanup(c);
	return (int)status;
out:
	curl_slist_free_all(hdrs);
	free(target);
	if (c)
		curl_easy_cleanup(c);
	return -1;
}

static enum httpd_result forward(struct cloud_forward *f, struct httpd_conn *conn, const char *url,
				 const char *method, struct freq *q)
{
	char writer[URL_MAX];
	pthread_mutex_lock(&f->mu);
	snprintf(writer, sizeof(writer), "%s", f->writer);
	pthread_mutex_unlock(&f->mu);
	if (!strcmp(url, "/healthz"))
		return httpd_respond_json(conn, HTTP_OK,
					  json_pack("{s:b, s:s, s:o}", "ok", 1, "role", "standby", "writer",
						    writer[0] ? json_string(writer) : json_null()),
					  NULL, NULL);
	if (!writer[0])
		return reply_unavailable(conn, "no instance holds the bucket's writer lease yet; retry");
	/* Forwarded already: the sender saw this instance as the writer, which
	 * it no longer (or not yet) is. Never a loop between standbys. */
	if (httpd_header(conn, "Litefs-Cloud-Forwarded-By"))
		return reply_unavailable(conn, "the bucket's writer is changing; retry");
	if (q->too_large)
		return httpd_respond_json(conn, HTTP_CONTENT_TOO_LARGE,
					  json_pack("{s:s, s:s}", "code", "ETOOLARGE", "error", "body too large"), NULL,
					  NULL);
	if (!strcmp(url, "/events"))
		return reply_unavailable(conn, "cannot relay the event stream from the writer; retry");
	enum httpd_result ret = HTTPD_NO;
	int status = send_on(f, conn, url, method, q, writer, &ret);
	if (status < 0)
		return ret;
	struct httpd_response *r = httpd_response_fd(q->reply_fd, q->reply_len);
	if (!r)
		return HTTPD_NO;
	q->reply_fd = -1; /* the response owns it */
	for (struct curl_slist *h = q->reply_hdrs; h; h = h->next) {
		char *colon = strchr(h->data, ':');
		if (!colon)
			continue;
		*colon = '\0';
		const char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		httpd_response_header(r, h->data, v);
	}
	return httpd_queue(conn, (unsigned)status, r);
}

/* ---- GET /events: a stream relayed byte for byte ------------------------- */

struct relay {
	struct cloud_forward *f;
	int client, upstream;
};

static bool send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t k = send(fd, buf, len, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		buf += k;
		len -= (size_t)k;
	}
	return true;
}

/* Pumps the writer's reply to the client until either side ends or the
 * standby stops (checked every 200 ms). The client sends nothing more; a
 * byte or a hang-up from it ends the relay. */
static void *relay_main(void *arg)
{
	struct relay *r = arg;
	char buf[16384];
	while (!atomic_load(&r->f->stopping)) {
		struct pollfd p[2] = { { .fd = r->upstream, .events = POLLIN }, { .fd = r->client, .events = POLLIN } };
		int n = poll(p, 2, 200);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		ssize_t k = recv(r->upstream, buf, sizeof(buf), 0);
		if (k <= 0 || !send_all(r->client, buf, (size_t)k))
			break;
	}
	close(r->upstream);
	close(r->client);
	atomic_fetch_sub(&r->f->n_relays, 1);
	free(r);
	return NULL;
}

/* Connects to the writer (an http:// URL); the socket or -errno. */
static int dial_writer(const char *writer)
{
	char host[300], port[16] = "80";
	const char *hp = writer + strlen("http://");
	size_t n = strcspn(hp, "/");
	char addr[300];
	snprintf(addr, sizeof(addr), "%.*s", (int)n, hp);
	char *colon = strrchr(addr, ':');
	if (colon && !strchr(colon, ']')) {
		snprintf(port, sizeof(port), "%s", colon + 1);
		*colon = '\0';
	}
	snprintf(host, sizeof(host), "%s", addr[0] == '[' ? addr + 1 : addr);
	char *rb = strchr(host, ']');
	if (rb)
		*rb = '\0';
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -EHOSTUNREACH;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { 3, 0 }; /* bounds connect() too */
	int rc = fd < 0 ? -errno : 0;
	if (rc == 0) {
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			rc = -errno;
			close(fd);
		}
	}
	freeaddrinfo(ai);
	return rc < 0 ? rc : fd;
}

/* On the first call of GET /events: sends the request on to the writer
 * (Connection: close) and hands both sockets to a relay thread. Returns
 * true when the client's socket was taken; false to answer normally. */
static bool relay_events(struct cloud_forward *f, struct httpd_conn *conn, const char *url, const char *writer)
{
	if (strncmp(writer, "http://", 7) != 0)
		return false;
	CURL *c = curl_easy_init();
	char *target = c ? target_url(c, "", url, conn) : NULL;
	struct curl_slist *hdrs = target ? pass_headers(conn, f->instance) : NULL;
	if (c)
		curl_easy_cleanup(c);
	struct sbuf head = { 0 };
	const char *hp = writer + 7;
	sbuf_printf(&head, "GET %s HTTP/1.1\r\nHost: %.*s\r\n", target ? target : "/", (int)strcspn(hp, "/"), hp);
	for (struct curl_slist *h = hdrs; h; h = h->next)
		if (strcmp(h->data, "Expect:") != 0)
			sbuf_printf(&head, "%s\r\n", h->data);
	sbuf_puts(&head, "Connection: close\r\n\r\n");
	curl_slist_free_all(hdrs);
	free(target);
	struct relay *r = hdrs && !head.oom ? calloc(1, sizeof(*r)) : NULL;
	int up = r ? dial_writer(writer) : -1;
	if (up < 0 || !send_all(up, head.p, head.len)) {
		if (up >= 0)
			close(up);
		free(r);
		sbuf_free(&head);
		return false;
	}
	sbuf_free(&head);
	char *buffered = NULL;
	size_t len = 0;
	int fd = httpd_take_socket(conn, &buffered, &len);
	free(buffered); /* an event stream's client sends nothing more */
	if (fd < 0) {
		close(up);
		free(r);
		return false;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	struct timeval tv = { 10, 0 }; /* a client that stops reading is cut */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	*r = (struct relay){ .f = f, .client = fd, .upstream = up };
	atomic_fetch_add(&f->n_relays, 1);
	pthread_t th;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &at, relay_main, r) != 0) {
		atomic_fetch_sub(&f->n_relays, 1);
		close(up);
		close(fd);
		free(r);
	}
	pthread_attr_destroy(&at);
	return true;
}

static enum httpd_result on_request(void *cls, struct httpd_conn *conn, const char *url, const char *method,
				    const char *version, const char *upload_data, size_t *upload_data_size,
				    void **con_cls)
{
	struct cloud_forward *f = cls;
	if (*con_cls == NULL) {
		struct freq *q = calloc(1, sizeof(*q));
		if (!q)
			return HTTPD_NO;
		q->spool_fd = q->reply_fd = -1;
		*con_cls = q;
		atomic_fetch_add(&f->n_active, 1);
		if (!strcmp(url, "/events") && !strcmp(method, "GET")) {
			char writer[URL_MAX];
			pthread_mutex_lock(&f->mu);
			snprintf(writer, sizeof(writer), "%s", f->writer);
			pthread_mutex_unlock(&f->mu);
			if (writer[0] && relay_events(f, conn, url, writer))
				return HTTPD_YES;
		}
		return HTTPD_YES;
	}
	struct freq *q = *con_cls;
	if (*upload_data_size != 0) {
		size_t len = *upload_data_size;
		*upload_data_size = 0;
		q->n_bytes += len;
		if (q->n_bytes > f->max_body)
			q->too_large = true;
		if (q->too_large)
			return HTTPD_YES; /* discarded */
		if (q->spool_fd < 0)
			q->spool_fd = fileio_spool_open(f->tmp_dir);
		if (q->spool_fd < 0 || fdio_write(&q->spool_fd, upload_data, len) != 0)
			return HTTPD_NO;
		return HTTPD_YES;
	}
	if (atomic_load(&f->stopping))
		return reply_unavailable(conn, "this instance is stopping; retry");
	return forward(f, conn, url, method, q);
}

static void on_completed(void *cls, struct httpd_conn *conn, void **con_cls, enum httpd_end how)
{
	struct cloud_forward *f = cls;
	struct freq *q = *con_cls;
	if (!q)
		return;
	if (q->spool_fd >= 0)
		close(q->spool_fd);
	if (q->reply_fd >= 0)
		close(q->reply_fd);
	curl_slist_free_all(q->reply_hdrs);
	free(q);
	*con_cls = NULL;
	atomic_fetch_sub(&f->n_active, 1);
}

int cloud_forward_start(const struct cloud_forward_opts *opts, struct cloud_forward **out)
{
	*out = NULL;
	struct cloud_forward *f = calloc(1, sizeof(*f));
	if (!f)
		return ERR_NOMEM;
	pthread_mutex_init(&f->mu, NULL);
	atomic_init(&f->n_active, 0);
	atomic_init(&f->n_relays, 0);
	atomic_init(&f->stopping, false);
	f->max_body = opts->max_body_bytes;
	f->tmp_dir = strdup(opts->tmp_dir);
	f->instance = strdup(opts->instance_id ? opts->instance_id : "");
	int rc = f->tmp_dir && f->instance ? 0 : ERR_NOMEM;
	struct httpd_listen l = { .addr = opts->addr, .mod = "cloud-forward", .handler = on_request,
				  .completed = on_completed, .cls = f, .workers = WORKERS };
	uint16_t port = 0;
	if (rc == 0)
		rc = httpd_start(&l, &f->daemon, &port);
	if (rc != 0) {
		free(f->tmp_dir);
		free(f->instance);
		pthread_mutex_destroy(&f->mu);
		free(f);
		return rc;
	}
	f->port = port;
	LOG_INFO("cloud-forward", "msg=\"standby: forwarding every request to the bucket's writer\" addr=\"%s\" port=%u",
		 opts->addr, f->port);
	*out = f;
	return 0;
}

void cloud_forward_set_writer(struct cloud_forward *f, const char *url)
{
	pthread_mutex_lock(&f->mu);
	snprintf(f->writer, sizeof(f->writer), "%s", url ? url : "");
	/* "http://h:p/" and "http://h:p" alike: paths start with '/'. */
	size_t n = strlen(f->writer);
	while (n > 0 && f->writer[n - 1] == '/')
		f->writer[--n] = '\0';
	pthread_mutex_unlock(&f->mu);
}

unsigned cloud_forward_port(const struct cloud_forward *f)
{
	return f->port;
}

void cloud_forward_stop(struct cloud_forward *f)
{
	if (!f)
		return;
	atomic_store(&f->stopping, true);
	httpd_quiesce(f->daemon);
	struct timespec step = { 0, 20 * 1000000L };
	for (int waited = 0; atomic_load(&f->n_active) > 0 && waited < STOP_GRACE_MS; waited += 20)
		nanosleep(&step, NULL);
	httpd_stop(f->daemon);
	/* Relays see the stop flag within 200 ms (a send is bounded by 10 s). */
	while (atomic_load(&f->n_relays) > 0)
		nanosleep(&step, NULL);
	free(f->tmp_dir);
	free(f->instance);
	pthread_mutex_destroy(&f->mu);
	free(f);
}
