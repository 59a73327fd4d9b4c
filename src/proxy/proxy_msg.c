/*
 * proxy_msg.c — HTTP message plumbing for the proxy (proxy_msg.h).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/httphead.h"
#include "proxy/proxy_msg.h"

/* ---- Heads ---------------------------------------------------------------- */

void proxy_head_reset(struct proxy_head *hd)
{
	hd->len = 0;
	hd->url = NULL;
	hd->reason = NULL;
	hd->n = 0;
	hd->cur = 0;
	hd->too_big = false;
	hd->complete = false;
}

/* Ends the string being collected with a NUL. */
static int terminate(struct proxy_head *hd)
{
	if (hd->len >= sizeof(hd->arena)) {
		hd->too_big = true;
		return -1;
	}
	hd->arena[hd->len++] = '\0';
	return 0;
}

static int append(struct proxy_head *hd, const char *at, size_t len)
{
	/* Room for this piece and the NULs still to come. */
	if (len > PROXY_MAX_HEAD - hd->len) {
		hd->too_big = true;
		return -1;
	}
	memcpy(hd->arena + hd->len, at, len);
	hd->len += len;
	return 0;
}

int proxy_head_url(struct proxy_head *hd, const char *at, size_t len)
{
	if (!hd->url && !hd->reason) {
		/* The first piece: the string starts here. */
		hd->url = hd->arena + hd->len;
		hd->reason = hd->url;
	}
	return append(hd, at, len);
}

int proxy_head_field(struct proxy_head *hd, const char *at, size_t len)
{
	if (hd->cur != 1) {
		if (!hd->url)
			hd->url = hd->reason = hd->arena + hd->len;
		if (terminate(hd) < 0)
			return -1;
		if (hd->n >= PROXY_MAX_HEADERS) {
			hd->too_big = true;
			return -1;
		}
		hd->h[hd->n].name = hd->arena + hd->len;
		hd->h[hd->n].value = "";
		hd->n++;
		hd->cur = 1;
	}
	return append(hd, at, len);
}

int proxy_head_value(struct proxy_head *hd, const char *at, size_t len)
{
	if (hd->cur != 2) {
		if (terminate(hd) < 0)
			return -1;
		hd->h[hd->n - 1].value = hd->arena + hd->len;
		hd->cur = 2;
	}
	return append(hd, at, len);
}

void proxy_head_finish(struct proxy_head *hd)
{
	/* append() kept room for this NUL (the arena has 8 spare bytes). */
	hd->arena[hd->len++] = '\0';
	if (!hd->url) {
		hd->url = "";
		hd->reason = "";
	}
	hd->complete = true;
}

const char *proxy_head_get(const struct proxy_head *hd, const char *name)
{
	for (int i = 0; i < hd->n; i++)
		if (!strcasecmp(hd->h[i].name, name))
			return hd->h[i].value;
	return NULL;
}

bool proxy_head_is_hop(const struct proxy_head *hd, const char *name)
{
	static const char *const hop[] = { "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
					   "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
					   "Content-Length", "Expect" };
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (!strcasecmp(name, hop[i]))
			return true;
	for (int i = 0; i < hd->n; i++)
		if (!strcasecmp(hd->h[i].name, "Connection") && httphead_has_token(hd->h[i].value, name))
			return true;
	return false;
}

bool proxy_cookie(const char *cookie_hdr, const char *name, char *buf, size_t len)
{
	size_t nl = strlen(name);
	const char *p = cookie_hdr;
	while (p && *p) {
		while (*p == ' ' || *p == ';')
			p++;
		const char *e = strchr(p, ';');
		if (!e)
			e = p + strlen(p);
		if ((size_t)(e - p) > nl && !strncmp(p, name, nl) && p[nl] == '=') {
			size_t vl = (size_t)(e - p) - nl - 1;
			if (vl >= len)
				return false;
			memcpy(buf, p + nl + 1, vl);
			buf[vl] = '\0';
			return true;
		}
		p = e;
	}
	return false;
}

/* ---- Output ---------------------------------------------------------------- */

void proxy_out_init(struct proxy_out *o, int fd)
{
	o->fd = fd;
	o->len = 0;
	o->failed = false;
}

int proxy_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int proxy_out_flush(struct proxy_out *o)
{
	if (o->failed)
		return -EPIPE;
	if (o->len == 0)
		return 0;
	int rc = proxy_write_all(o->fd, o->buf, o->len);
	o->len = 0;
	if (rc < 0)
		o->failed = true;
	return rc;
}

void proxy_out_put(struct proxy_out *o, const void *p, size_t n)
{
	if (o->failed)
		return;
	if (o->len + n > sizeof(o->buf) && proxy_out_flush(o) < 0)
		return;
	if (n > sizeof(o->buf)) {
		if (proxy_write_all(o->fd, p, n) < 0)
			o->failed = true;
		return;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

void proxy_out_printf(struct proxy_out *o, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	proxy_out_put(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* ---- Sockets ---------------------------------------------------------------- */

int proxy_resolve(const char *addr, bool passive, struct sockaddr_storage *ss, socklen_t *sslen)
{
	char host[256], port[16];
	const char *a = addr;
	if (!strncmp(a, "http://", 7))
		a += 7;
	const char *end = a + strcspn(a, "/?#");
	const char *colon = NULL;
	for (const char *p = a; p < end; p++)
		if (*p == ':')
			colon = p;
	if (!colon || (size_t)(colon - a) >= sizeof(host) || (size_t)(end - colon - 1) >= sizeof(port) ||
	    end == colon + 1)
		return ERR_INVAL;
	memcpy(host, a, (size_t)(colon - a));
	host[colon - a] = '\0';
	memcpy(port, colon + 1, (size_t)(end - colon - 1));
	port[end - colon - 1] = '\0';
	/* [::1]:port */
	char *h = host;
	size_t hl = strlen(h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h[hl - 1] = '\0';
		h++;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
	struct addrinfo *res = NULL;
	if (getaddrinfo(h[0] ? h : (passive ? NULL : "127.0.0.1"), port, &hints, &res) != 0 || !res)
		return ERR_INVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int proxy_dial(const struct sockaddr_storage *ss, socklen_t sslen)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)ss, sslen) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

ssize_t proxy_read(int fd, void *buf, size_t len, int64_t timeout_ms)
{
	int64_t deadline = timeout_ms > 0 ? clock_mono_ms() + timeout_ms : 0;
	for (;;) {
		if (timeout_ms > 0) {
			int64_t left = deadline - clock_mono_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			int pr = poll(&pfd, 1, (int)left);
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr < 0)
				return -errno;
			if (pr == 0)
				return -ETIMEDOUT;
		}
		ssize_t n = recv(fd, buf, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -errno : n;
	}
}

/* ---- Globs ------------------------------------------------------------------ */

bool proxy_glob(const char *pattern, const char *path)
{
	const char *star = NULL, *resume = NULL;
	while (*path) {
		if (*pattern == '*') {
			star = pattern++;
			resume = path;
		} else if (*pattern == *path) {
			pattern++;
			path++;
		} else if (star) {
			pattern = star + 1;
			path = ++resume;
		} else {
			return false;
		}
	}
	while (*pattern == '*')
		pattern++;
	return *pattern == '\0';
}
