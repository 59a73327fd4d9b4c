/*
 * proxy_msg.h — HTTP/1.1 message plumbing for the proxy, on the nodejs
 * http-parser library (libhttp-parser): a message head collected from the
 * parser's callbacks into one bounded arena, header look-ups, hop-by-hop
 * filtering, a write buffer, socket dialing and timed reads.
 *
 * The parser does the parsing and the rejections (bad chunk sizes, both
 * Content-Length and Transfer-Encoding, invalid tokens, oversized heads);
 * this module never looks at raw request bytes itself.
 *
 * No logging; errors are returned as -errno or ERR_*.
 */
#ifndef LITEFS_PROXY_MSG_H
#define LITEFS_PROXY_MSG_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A head (request line or status line, and the header fields) larger
 * than this is refused: 431 from a client, 502 from an upstream. */
#define PROXY_MAX_HEAD (64 * 1024)
#define PROXY_MAX_HEADERS 128

struct proxy_hdr {
	const char *name;  /* NUL-terminated, in the arena */
	const char *value; /* NUL-terminated, in the arena */
};

/* A message head. Strings point into arena; valid until the next
 * proxy_head_reset(). */
struct proxy_head {
	char arena[PROXY_MAX_HEAD + 8];
	size_t len;
	const char *url;    /* requests */
	const char *reason; /* responses */
	struct proxy_hdr h[PROXY_MAX_HEADERS];
	int n;
	int cur;            /* 0: url/reason, 1: a field name, 2: a value */
	bool too_big;
	bool complete;
};

void proxy_head_reset(struct proxy_head *hd);
/* Callbacks' bodies: append a piece of the URL/reason, a header name or a
 * value. Return 0, or -1 (too_big set) past the bounds, which makes the
 * parser fail. */
int proxy_head_url(struct proxy_head *hd, const char *at, size_t len);
int proxy_head_field(struct proxy_head *hd, const char *at, size_t len);
int proxy_head_value(struct proxy_head *hd, const char *at, size_t len);
/* Terminates the last string (at headers_complete). */
void proxy_head_finish(struct proxy_head *hd);
/* The first value of header name (case-insensitive), or NULL. */
const char *proxy_head_get(const struct proxy_head *hd, const char *name);
/* Whether a header is hop-by-hop (RFC 9110 7.6.1), including every name
 * listed in the head's own Connection header, or one the proxy writes
 * itself (Content-Length, Transfer-Encoding, Expect). */
bool proxy_head_is_hop(const struct proxy_head *hd, const char *name);
/* The value of cookie `name` in a Cookie header into buf; false if absent. */
bool proxy_cookie(const char *cookie_hdr, const char *name, char *buf, size_t len);

/* A write buffer in front of a socket: small pieces are gathered and sent
 * with one write at proxy_out_flush(), which the proxy calls after every
 * parsed input so that streamed data (SSE, chunks) leaves at once. */
struct proxy_out {
	int fd;
	size_t len;
	bool failed; /* a write failed: later writes are dropped */
	char buf[16384];
};
void proxy_out_init(struct proxy_out *o, int fd);
void proxy_out_put(struct proxy_out *o, const void *p, size_t n);
void proxy_out_printf(struct proxy_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns 0 or -errno (the first failure, sticky). */
int proxy_out_flush(struct proxy_out *o);
/* Writes all of p (no buffering). Returns 0 or -errno. */
int proxy_write_all(int fd, const void *p, size_t n);

/* "host:port" (empty host: loopback for dialing, every interface for
 * listening) or "http://host:port[/...]" into a socket address. Returns 0,
 * ERR_INVAL or a getaddrinfo failure as ERR_INVAL. */
int proxy_resolve(const char *addr, bool passive, struct sockaddr_storage *ss, socklen_t *sslen);
/* Connects (blocking, TCP_NODELAY). Returns the fd or -errno. */
int proxy_dial(const struct sockaddr_storage *ss, socklen_t sslen);
/* Reads into buf waiting at most timeout_ms (<= 0: no limit). Returns the
 * count, 0 at EOF, -ETIMEDOUT, or -errno. */
ssize_t proxy_read(int fd, void *buf, size_t len, int64_t timeout_ms);

/* Matches a path against a LiteFS glob: `*` matches any run of bytes
 * (slashes included), everything else itself; the whole path must match. */
bool proxy_glob(const char *pattern, const char *path);

#endif
