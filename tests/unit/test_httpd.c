/*
 * test_httpd.c — the HTTP server (base/httpd.h) over real loopback sockets,
 * byte for byte: pipelining, keep-alive, chunked bodies cut at every byte,
 * 100-continue, HEAD, streamed replies, an early reply to a large body, the
 * head deadline, the per-address cap (eviction of the oldest incomplete
 * head), the workers reserved for trusted requests, and a file reply whose
 * holder is asked before its last byte.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/httpd.h"
#include "base/httphead.h"

struct req {
	size_t n;
	char body[1 << 16];
};

static atomic_bool release_slow;

static uint64_t body_sum(uint64_t sum, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sum = sum * 31 + (unsigned char)p[i];
	return sum;
}

/* The held file reply (/held?ok=0|1): the holder's answer and how often
 * it was asked and freed. */
static atomic_int held_asked, held_freed;

static int held_hold(void *cls)
{
	atomic_fetch_add(&held_asked, 1);
	return *(const char *)cls == '1' ? 0 : -1;
}

static void held_free(void *cls)
{
	atomic_fetch_add(&held_freed, 1);
	free(cls);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos >= 30)
		return HTTPD_END_OF_STREAM;
	size_t n = max < 10 ? max : 10;
	memset(buf, (int)('a' + pos / 10), n);
	return (ssize_t)n;
}

static enum httpd_result handler(void *cls, struct httpd_conn *conn, const char *url, const char *method,
				 const char *version, const char *data, size_t *size, void **req_cls)
{
	(void)cls;
	(void)version;
	if (!strcmp(url, "/early"))
		return httpd_respond_error(conn, 403, "no");
	if (!strcmp(url, "/upgrade")) {
		/* Takes the socket: 101, then echoes until "bye". */
		char *pre;
		size_t n;
		int fd = httpd_take_socket(conn, &pre, &n);
		if (fd < 0)
			return HTTPD_NO;
		const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n";
		(void)!send(fd, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
		(void)!send(fd, pre, n, MSG_NOSIGNAL);
		free(pre);
		char buf[256];
		for (;;) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (poll(&p, 1, 5000) <= 0)
				break;
			ssize_t r = recv(fd, buf, sizeof(buf), 0);
			if (r <= 0 || (r == 3 && !memcmp(buf, "bye", 3)))
				break;
			(void)!send(fd, buf, (size_t)r, MSG_NOSIGNAL);
		}
		close(fd);
		return HTTPD_YES;
	}
	if (!strcmp(url, "/splice")) {
		/* Pulls the body into a file with httpd_body_splice (calls of
		 * 100,000 bytes), then replies with its length and sum as read
		 * back from the file; a chunked body is refused by the call. */
		char path[] = "/tmp/test_httpd_splice.XXXXXX";
		int fd = mkstemp(path);
		int pfd[2];
		if (fd < 0 || pipe(pfd) != 0)
			return HTTPD_NO;
		unlink(path);
		off_t off = 0;
		ssize_t r;
		bool file_failed = false;
		while ((r = httpd_body_splice(conn, pfd, fd, off, 100000, &file_failed)) > 0)
			off += r;
		close(pfd[0]);
		close(pfd[1]);
		char *buf = malloc((size_t)off + 1);
		bool same = pread(fd, buf, (size_t)off + 1, 0) == (ssize_t)off;
		close(fd);
		char *b = malloc(80);
		int len = r < 0 ? snprintf(b, 80, "SPLICE error %d%s.", (int)r, file_failed ? " file" : "")
				: snprintf(b, 80, "SPLICE %lld:%016" PRIx64 "%s.", (long long)off,
					   body_sum(0, buf, (size_t)off), same ? "" : " short");
		free(buf);
		return httpd_respond_buf(conn, HTTP_OK, "text/plain", b, (size_t)len, NULL, NULL);
	}
	if (!strcmp(url, "/pull")) {
		/* Pulls the whole body on the first call, in reads of 7 bytes
		 * and of 64 KiB by turns; replies with its length and sum. */
		char *buf = malloc(1 << 16);
		uint64_t n = 0, sum = 0;
		ssize_t r;
		bool small = true;
		while ((r = httpd_body_read(conn, buf, small ? 7 : 1 << 16)) > 0) {
			n += (uint64_t)r;
			sum = body_sum(sum, buf, (size_t)r);
			small = !small;
		}
		free(buf);
		if (r < 0)
			return httpd_respond_error(conn, 400, "pull failed");
		char *b = malloc(64);
		int len = snprintf(b, 64, "PULL %" PRIu64 ":%016" PRIx64 ".", n, sum);
		return httpd_respond_buf(conn, HTTP_OK, "text/plain", b, (size_t)len, NULL, NULL);
	}
	if (*req_cls == NULL && !strcmp(url, "/splicefail")) {
		/* One splice into a file opened read-only: the bytes it took
		 * from the socket are lost, the rest of the body comes piece by
		 * piece as for any request. */
		char path[] = "/tmp/test_httpd_splice.XXXXXX";
		int wfd = mkstemp(path), pfd[2];
		int fd = open(path, O_RDONLY);
		unlink(path);
		bool file_failed = false;
		if (wfd < 0 || fd < 0 || pipe(pfd) != 0)
			return HTTPD_NO;
		ssize_t r = httpd_body_splice(conn, pfd, fd, 0, 100000, &file_failed);
		close(pfd[0]);
		close(pfd[1]);
		close(fd);
		close(wfd);
		if (r >= 0 || !file_failed)
			return httpd_respond_error(conn, 500, "the splice into a read-only file did not fail");
	}
	if (*req_cls == NULL) {
		*req_cls = calloc(1, sizeof(struct req));
		return *req_cls ? HTTPD_YES : HTTPD_NO;
	}
	struct req *r = *req_cls;
	if (*size) {
		size_t room = sizeof(r->body) - r->n;
		size_t take = *size < room ? *size : room;
		memcpy(r->body + r->n, data, take);
		r->n += take;
		*size = 0;
		return HTTPD_YES;
	}
	if (!strcmp(url, "/slow"))
		while (!atomic_load(&release_slow))
			usleep(1000);
	if (!strcmp(url, "/stream")) {
		struct httpd_response *resp = httpd_response_callback(HTTPD_SIZE_UNKNOWN, 7, stream_reader, NULL, NULL);
		return httpd_queue(conn, HTTP_OK, resp);
	}
	if (!strcmp(url, "/held")) {
		const char *v;
		size_t n;
		FILE *f = tmpfile();
		assert_non_null(f);
		fputs("0123456789", f);
		fflush(f);
		int fd = dup(fileno(f));
		fclose(f);
		char *ok = strdup(httpd_arg(conn, "ok", &v, &n) == HTTPD_YES && n == 1 && v[0] == '1' ? "1" : "0");
		struct httpd_response *resp = httpd_response_fd_held(fd, 10, held_hold, ok, held_free);
		return httpd_queue(conn, HTTP_OK, resp);
	}
	if (!strcmp(url, "/arg")) {
		const char *v;
		size_t n;
		if (httpd_arg(conn, "k", &v, &n) != HTTPD_YES)
			return httpd_respond_error(conn, 404, "none");
		char *b = malloc(n + 1);
		memcpy(b, v, n);
		return httpd_respond_buf(conn, HTTP_OK, "text/plain", b, n, NULL, NULL);
	}
	if (!strcmp(url, "/all")) {
		/* Every header and argument, in order (what a proxy passes on). */
		char *b = malloc(4096);
		size_t len = 0;
		const char *k, *v;
		size_t n;
		for (unsigned i = 0; httpd_header_at(conn, i, &k, &v); i++)
			len += (size_t)snprintf(b + len, 4096 - len, "H %s=%s\n", k, v);
		for (unsigned i = 0; httpd_arg_at(conn, i, &k, &v, &n); i++)
			len += (size_t)snprintf(b + len, 4096 - len, "A %s=%.*s%s\n", k, (int)n, v ? v : "",
						v ? "" : "(none)");
		assert_false(httpd_header_at(conn, 99, &k, &v));
		return httpd_respond_buf(conn, HTTP_OK, "text/plain", b, len, NULL, NULL);
	}
	char *b = malloc(r->n + 32);
	int len = snprintf(b, 32, "%s %zu:", method, r->n);
	memcpy(b + len, r->body, r->n);
	return httpd_respond_buf(conn, HTTP_OK, "text/plain", b, (size_t)len + r->n, NULL, NULL);
}

static void completed(void *cls, struct httpd_conn *conn, void **req_cls, enum httpd_end how)
{
	(void)cls;
	(void)conn;
	(void)how;
	free(*req_cls);
	*req_cls = NULL;
}

static bool trusted(void *cls, struct httpd_conn *conn)
{
	(void)cls;
	const char *v = httpd_header(conn, "X-Trusted");
	return v && !strcmp(v, "yes");
}

static struct httpd *start(struct httpd_listen *l, uint16_t *port)
{
	l->addr = "127.0.0.1:0";
	l->mod = "test";
	l->handler = handler;
	l->completed = completed;
	l->trusted = trusted;
	struct httpd *d = NULL;
	assert_int_equal(httpd_start(l, &d, port), 0);
	return d;
}

static int dial(uint16_t port, const char *src)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct timeval tv = { 5, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (src) {
		struct sockaddr_in s = { .sin_family = AF_INET };
		inet_pton(AF_INET, src, &s.sin_addr);
		assert_int_equal(bind(fd, (struct sockaddr *)&s, sizeof(s)), 0);
	}
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void put(int fd, const char *s, size_t n)
{
	assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads until the peer closes or `want` bytes of text contain `until`. */
static size_t get(int fd, char *buf, size_t cap, const char *until)
{
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = '\0';
		if (until && strstr(buf, until))
			break;
	}
	buf[n] = '\0';
	return n;
}

static int count(const char *hay, const char *needle)
{
	int c = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		c++;
	return c;
}

static void test_pipelining_and_keep_alive(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	const char two[] = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
	put(fd, two, sizeof(two) - 1);
	char buf[8192];
	get(fd, buf, sizeof(buf), "GET 0:");
	assert_non_null(strstr(buf, "POST 3:abc"));
	assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 2);
	/* Still open: a third request on the same connection. */
	put(fd, "GET /c?k=x%00y+z HTTP/1.1\r\n\r\n", 29);
	get(fd, buf, sizeof(buf), "Content-Length: 5\r\n\r\n");
	/* /c is not /arg: echo; the connection stays usable. */
	assert_non_null(strstr(buf, "200 OK"));
	close(fd);
	fd = dial(port, NULL);
	put(fd, "GET /arg?k=x%00y+z HTTP/1.0\r\n\r\n", 31);
	size_t n = get(fd, buf, sizeof(buf), NULL); /* 1.0: closed after the reply */
	assert_true(n > 5);
	assert_memory_equal(buf + n - 5, "x\0y z", 5);
	assert_non_null(strstr(buf, "Connection: close"));
	close(fd);
	httpd_stop(d);
}

/* httpd_header_at / httpd_arg_at give every header and argument in the
 * order received, arguments decoded, a bare key with an empty value. */
static void test_every_header_and_argument(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	const char rq[] = "GET /all?a=1&b&c=x%20y HTTP/1.1\r\nX-One: 1\r\nX-Two: two words\r\n\r\n";
	put(fd, rq, sizeof(rq) - 1);
	char buf[8192];
	get(fd, buf, sizeof(buf), "A c=x y\n");
	assert_non_null(strstr(buf, "H X-One=1\nH X-Two=two words\nA a=1\nA b=\nA c=x y\n"));
	close(fd);
	httpd_stop(d);
}

static void test_chunked_body_byte_by_byte(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	const char req[] = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n";
	int fd = dial(port, NULL);
	for (size_t i = 0; i < sizeof(req) - 1; i++) {
		put(fd, req + i, 1);
		if (i % 16 == 0)
			usleep(500);
	}
	char buf[4096];
	get(fd, buf, sizeof(buf), "0123456789");
	assert_non_null(strstr(buf, "POST 16:hello 0123456789"));
	/* A malformed chunk size: a JSON 400. */
	put(fd, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\n", 52);
	get(fd, buf, sizeof(buf), NULL);
	assert_non_null(strstr(buf, "HTTP/1.1 400"));
	assert_non_null(strstr(buf, "\"code\":\"EBADREQUEST\""));
	close(fd);
	httpd_stop(d);
}

static void test_continue_head_and_stream(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	put(fd, "POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n", 61);
	char buf[4096];
	get(fd, buf, sizeof(buf), "\r\n\r\n");
	assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
	put(fd, "ok", 2);
	get(fd, buf, sizeof(buf), "POST 2:ok");
	put(fd, "HEAD /x HTTP/1.1\r\n\r\n", 20);
	get(fd, buf, sizeof(buf), "\r\n\r\n");
	assert_non_null(strstr(buf, "Content-Length: 7\r\n"));
	assert_true(strstr(buf, "\r\n\r\n")[4] == '\0'); /* no body */
	put(fd, "GET /stream HTTP/1.1\r\n\r\n", 24);
	get(fd, buf, sizeof(buf), "0\r\n\r\n");
	assert_non_null(strstr(buf, "Transfer-Encoding: chunked"));
	assert_non_null(strstr(buf, "7\r\naaaaaaa\r\n7\r\naaaaaaa\r\n7\r\nbbbbbbb\r\n7\r\nccccccc\r\n7\r\nccccccc\r\n0\r\n\r\n"));
	close(fd);
	httpd_stop(d);
}

/* httpd_body_read(): a large body with a Content-Length (read straight
 * from the socket), a chunked one, one behind "100 Continue", then an
 * ordinary request on the same connection. */
static void test_handler_pulls_the_body(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	const size_t n = 300000;
	char *body = malloc(n), head[128], want[64], buf[4096];
	for (size_t i = 0; i < n; i++)
		body[i] = (char)(i * 7 % 251);
	snprintf(want, sizeof(want), "PULL %zu:%016" PRIx64 ".", n, body_sum(0, body, n));
	int hl = snprintf(head, sizeof(head), "POST /pull HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
	put(fd, head, (size_t)hl);
	put(fd, body, n);
	get(fd, buf, sizeof(buf), want);
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, want));
	put(fd, "POST /pull HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 51);
	for (size_t off = 0; off < n; off += 100000) {
		/* The handler's 7-byte read takes the head of the chunk from
		 * the buffer; its next, large, read finds the buffer empty and
		 * reads the chunk's data straight from the socket. */
		hl = snprintf(head, sizeof(head), "%x\r\n", 100000);
		put(fd, head, (size_t)hl);
		put(fd, body + off, 7);
		usleep(20000);
		put(fd, body + off + 7, 100000 - 7);
		put(fd, "\r\n", 2);
	}
	put(fd, "0\r\n\r\n", 5);
	get(fd, buf, sizeof(buf), want);
	assert_non_null(strstr(buf, want));
	put(fd, "POST /pull HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 64);
	get(fd, buf, sizeof(buf), "\r\n\r\n");
	assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
	put(fd, "hello", 5);
	snprintf(want, sizeof(want), "PULL 5:%016" PRIx64 ".", body_sum(0, "hello", 5));
	get(fd, buf, sizeof(buf), want);
	assert_non_null(strstr(buf, want));
	put(fd, "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nok", 41);
	get(fd, buf, sizeof(buf), "POST 2:ok");
	assert_non_null(strstr(buf, "POST 2:ok"));
	free(body);
	close(fd);
	httpd_stop(d);
}

/* httpd_body_splice: a body whose first bytes came with the head (written
 * from the buffer) and the rest later (spliced from the socket) lands in
 * the file whole, with "100 Continue" sent first when asked for; a chunked
 * body is refused (ERR_INVAL), nothing of it read. */
static void test_handler_splices_the_body(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	const size_t n = 1500000;
	char *body = malloc(n), *msg = malloc(n + 256), want[80], buf[4096];
	for (size_t i = 0; i < n; i++)
		body[i] = (char)(i * 13 % 253);
	snprintf(want, sizeof(want), "SPLICE %zu:%016" PRIx64 ".", n, body_sum(0, body, n));
	int hl = snprintf(msg, 256, "POST /splice HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
	memcpy(msg + hl, body, 1000);
	put(fd, msg, (size_t)hl + 1000);
	usleep(20000);
	put(fd, body + 1000, n - 1000);
	get(fd, buf, sizeof(buf), want);
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, want));
	put(fd, "POST /splice HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 66);
	get(fd, buf, sizeof(buf), "\r\n\r\n");
	assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
	put(fd, "hello", 5);
	snprintf(want, sizeof(want), "SPLICE 5:%016" PRIx64 ".", body_sum(0, "hello", 5));
	get(fd, buf, sizeof(buf), want);
	assert_non_null(strstr(buf, want));
	put(fd, "POST /splice HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 68);
	snprintf(want, sizeof(want), "SPLICE error %d.", ERR_INVAL);
	get(fd, buf, sizeof(buf), want);
	assert_non_null(strstr(buf, want));
	close(fd);
	/* The file write fails: what the splice took still counts as read,
	 * so the rest of the body ends the request (no wait for bytes that
	 * will never come). */
	fd = dial(port, NULL);
	hl = snprintf(msg, 256, "POST /splicefail HTTP/1.1\r\nContent-Length: %d\r\n\r\n", 200000);
	put(fd, msg, (size_t)hl);
	usleep(20000);
	put(fd, body, 200000);
	get(fd, buf, sizeof(buf), "POST ");
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, "POST "));
	free(body);
	free(msg);
	close(fd);
	httpd_stop(d);
}

/* A held file goes out whole when its holder confirms before the last
 * byte, and is cut one byte short (the connection closed) when it does
 * not; the holder is asked once and freed once either way. */
static void test_held_file_reply(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	char buf[4096];
	int fd = dial(port, NULL);
	put(fd, "GET /held?ok=1 HTTP/1.1\r\n\r\n", 27);
	get(fd, buf, sizeof(buf), "0123456789");
	assert_non_null(strstr(buf, "Content-Length: 10\r\n\r\n0123456789"));
	close(fd);
	fd = dial(port, NULL);
	put(fd, "GET /held?ok=0 HTTP/1.1\r\n\r\n", 27);
	get(fd, buf, sizeof(buf), NULL); /* until the server closes */
	char *body = strstr(buf, "\r\n\r\n");
	assert_non_null(body);
	assert_string_equal(body + 4, "012345678");
	close(fd);
	for (int i = 0; i < 500 && atomic_load(&held_freed) < 2; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&held_asked), 2);
	assert_int_equal(atomic_load(&held_freed), 2);
	httpd_stop(d);
}

static void test_early_reply_to_a_large_body(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	put(fd, "POST /early HTTP/1.1\r\nContent-Length: 400000\r\n\r\n", 48);
	/* The client goes on sending while the reply is sent: it still reads
	 * the reply, not a reset. */
	static char junk[200000];
	(void)send(fd, junk, sizeof(junk), MSG_NOSIGNAL | MSG_DONTWAIT);
	char buf[4096];
	get(fd, buf, sizeof(buf), "}\n");
	assert_non_null(strstr(buf, "HTTP/1.1 403"));
	assert_non_null(strstr(buf, "Connection: close"));
	close(fd);
	httpd_stop(d);
}

static void test_head_deadline_is_not_reset_by_a_trickle(void **state)
{
	(void)state;
	struct httpd_listen l = { .head_timeout_ms = 400 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	put(fd, "GET / HTTP/1.1\r\n", 16);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	char buf[4096] = "";
	for (int i = 0; i < 20; i++) {
		usleep(100 * 1000);
		if (send(fd, "X-A: b\r\n", 8, MSG_NOSIGNAL) < 0)
			break;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 0) > 0)
			break;
	}
	get(fd, buf, sizeof(buf), NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_non_null(strstr(buf, "HTTP/1.1 408"));
	assert_true(s < 1.5);
	close(fd);
	httpd_stop(d);
}

static void test_per_client_cap_evicts_the_oldest_head(void **state)
{
	(void)state;
	struct httpd_listen l = { .per_client = 4 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int idle[4];
	for (int i = 0; i < 4; i++) {
		idle[i] = dial(port, "127.0.0.7");
		put(idle[i], "GET", 3);
	}
	usleep(100 * 1000);
	int fd = dial(port, "127.0.0.7");
	put(fd, "GET /x HTTP/1.1\r\n\r\n", 19);
	char buf[4096];
	get(fd, buf, sizeof(buf), "GET 0:");
	assert_non_null(strstr(buf, "200 OK"));
	/* The oldest one was closed (with a 503) to make room. */
	get(idle[0], buf, sizeof(buf), NULL);
	assert_non_null(strstr(buf, "HTTP/1.1 503"));
	/* Another address is not affected. */
	int other = dial(port, "127.0.0.8");
	put(other, "GET /y HTTP/1.1\r\n\r\n", 19);
	get(other, buf, sizeof(buf), "GET 0:");
	assert_non_null(strstr(buf, "200 OK"));
	for (int i = 0; i < 4; i++)
		close(idle[i]);
	close(fd);
	close(other);
	httpd_stop(d);
}

static void test_reserved_workers_serve_only_trusted(void **state)
{
	(void)state;
	struct httpd_listen l = { .workers = 2, .reserved = 1 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	atomic_store(&release_slow, false);
	int slow = dial(port, NULL);
	put(slow, "GET /slow HTTP/1.1\r\n\r\n", 22);
	while (httpd_busy(d) < 1)
		usleep(1000);
	char buf[4096];
	int s = dial(port, NULL);
	put(s, "GET /x HTTP/1.1\r\n\r\n", 19);
	get(s, buf, sizeof(buf), NULL);
	assert_non_null(strstr(buf, "HTTP/1.1 503"));
	assert_non_null(strstr(buf, "Retry-After: 1"));
	close(s);
	int t = dial(port, NULL);
	put(t, "GET /x HTTP/1.1\r\nX-Trusted: yes\r\n\r\n", 35);
	get(t, buf, sizeof(buf), "GET 0:");
	assert_non_null(strstr(buf, "200 OK"));
	close(t);
	atomic_store(&release_slow, true);
	get(slow, buf, sizeof(buf), "GET 0:");
	assert_non_null(strstr(buf, "200 OK"));
	close(slow);
	httpd_stop(d);
}

static void test_take_socket(void **state)
{
	(void)state;
	struct httpd_listen l = { 0 };
	uint16_t port;
	struct httpd *d = start(&l, &port);
	int fd = dial(port, NULL);
	const char req[] = "GET /upgrade HTTP/1.1\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhi";
	put(fd, req, sizeof(req) - 1);
	char buf[4096];
	get(fd, buf, sizeof(buf), "\r\n\r\nhi");
	assert_non_null(strstr(buf, "HTTP/1.1 101"));
	put(fd, "again", 5);
	get(fd, buf, sizeof(buf), "again");
	put(fd, "bye", 3);
	assert_int_equal(get(fd, buf, sizeof(buf), NULL), 0); /* closed */
	close(fd);
	while (httpd_busy(d) > 0)
		usleep(1000);
	httpd_stop(d);
}

static void test_parse_head_check(void **state)
{
	(void)state;
	char msg[HTTPD_MSG_LEN];
	const char ok[] = "GET /a%20b?x=1&y HTTP/1.1\r\nHost: h\r\nX:  v  \r\n\r\n";
	assert_int_equal(httphead_check(ok, sizeof(ok) - 1, msg, sizeof(msg)), 0);
	const char lf[] = "GET / HTTP/1.0\nHost: h\n\n";
	assert_int_equal(httphead_check(lf, sizeof(lf) - 1, msg, sizeof(msg)), 0);
	const char dup[] = "GET / HTTP/1.1\r\nhost: a\r\nHost: b\r\n\r\n";
	assert_int_equal(httphead_check(dup, sizeof(dup) - 1, msg, sizeof(msg)), 400);
	const char cr[] = "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n";
	assert_int_equal(httphead_check(cr, sizeof(cr) - 1, msg, sizeof(msg)), 400);
	const char abs[] = "GET http://x/ HTTP/1.1\r\n\r\n";
	assert_int_equal(httphead_check(abs, sizeof(abs) - 1, msg, sizeof(msg)), 400);
	const char pct[] = "GET /%zz HTTP/1.1\r\n\r\n";
	assert_int_equal(httphead_check(pct, sizeof(pct) - 1, msg, sizeof(msg)), 400);
	const char v2[] = "GET / HTTP/3.0\r\n\r\n";
	assert_int_equal(httphead_check(v2, sizeof(v2) - 1, msg, sizeof(msg)), 505);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_head_check),
		cmocka_unit_test(test_pipelining_and_keep_alive),
		cmocka_unit_test(test_every_header_and_argument),
		cmocka_unit_test(test_chunked_body_byte_by_byte),
		cmocka_unit_test(test_continue_head_and_stream),
		cmocka_unit_test(test_handler_pulls_the_body),
		cmocka_unit_test(test_handler_splices_the_body),
		cmocka_unit_test(test_held_file_reply),
		cmocka_unit_test(test_early_reply_to_a_large_body),
		cmocka_unit_test(test_head_deadline_is_not_reset_by_a_trickle),
		cmocka_unit_test(test_per_client_cap_evicts_the_oldest_head),
		cmocka_unit_test(test_reserved_workers_serve_only_trusted),
		cmocka_unit_test(test_take_socket),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
