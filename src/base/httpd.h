/*
 * httpd.h — the HTTP/1.1 server of the node's API (node/http.c) and of
 * litefs-cloud's (cloud/cloud_http.c). docs/http.md "The server" is the
 * design: why it exists, its limits and what a client sees at each.
 *
 * In short: one event thread (epoll) accepts connections and reads request
 * heads; a connection costs a thread only from a complete, valid head until
 * its reply is sent. The head must be complete within head_timeout_ms of
 * the connection (or of its previous reply), whatever trickles in; a body
 * and a reply must move 64 KiB per io_timeout_ms of waiting for the peer.
 * Connections are capped per client address and in all; of the worker
 * threads, `reserved` serve only requests that the owner's trusted()
 * callback vouches for (a peer of the cluster, a valid token), so strangers
 * holding every other worker cannot shut those out. Every error the server
 * answers itself is JSON {"code", "error"}.
 *
 * The handler interface keeps the shape of libmicrohttpd's access handler,
 * which the handlers were written for: called once with the head, once per
 * body piece (*upload_data_size = bytes; set it to 0), then once more with
 * *upload_data_size == 0; a reply queued on any call is sent and ends the
 * request (queued before the end of the body: the rest is not read and the
 * connection closes after the reply).
 */
#ifndef LITEFS_HTTPD_H
#define LITEFS_HTTPD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum httpd_result { HTTPD_NO = 0, HTTPD_YES = 1 };

/* How a request ended, for the completion callback. */
enum httpd_end { HTTPD_END_OK = 0, HTTPD_END_ERROR = 1 };

/* Status codes and header names the handlers use. */
#define HTTP_OK 200
#define HTTP_BAD_REQUEST 400
#define HTTP_UNAUTHORIZED 401
#define HTTP_NOT_FOUND 404
#define HTTP_METHOD_NOT_ALLOWED 405
#define HTTP_REQUEST_TIMEOUT 408
#define HTTP_CONFLICT 409
#define HTTP_LENGTH_REQUIRED 411
#define HTTP_CONTENT_TOO_LARGE 413
#define HTTP_URI_TOO_LONG 414
#define HTTP_UNPROCESSABLE_CONTENT 422
#define HTTP_TOO_MANY_REQUESTS 429
#define HTTP_HEADER_FIELDS_TOO_LARGE 431
#define HTTP_INTERNAL_SERVER_ERROR 500
#define HTTP_NOT_IMPLEMENTED 501
#define HTTP_SERVICE_UNAVAILABLE 503
#define HTTP_VERSION_NOT_SUPPORTED 505
#define HTTP_INSUFFICIENT_STORAGE 507

#define HTTP_METHOD_GET "GET"
#define HTTP_METHOD_HEAD "HEAD"
#define HTTP_METHOD_POST "POST"

#define HTTP_HEADER_ALLOW "Allow"
#define HTTP_HEADER_AUTHORIZATION "Authorization"
#define HTTP_HEADER_CACHE_CONTROL "Cache-Control"
#define HTTP_HEADER_CONTENT_LENGTH "Content-Length"
#define HTTP_HEADER_CONTENT_TYPE "Content-Type"
#define HTTP_HEADER_EXPECT "Expect"
#define HTTP_HEADER_TRANSFER_ENCODING "Transfer-Encoding"

struct httpd;          /* a server */
struct httpd_conn;     /* a connection and the request it carries */
struct httpd_response; /* a reply not yet queued */

typedef enum httpd_result (*httpd_handler)(void *cls, struct httpd_conn *conn, const char *url,
					   const char *method, const char *version, const char *upload_data,
					   size_t *upload_data_size, void **req_cls);
/* Called once per request that reached the handler, after its reply went
 * out (HTTPD_END_OK) or the connection failed (HTTPD_END_ERROR). */
typedef void (*httpd_completed)(void *cls, struct httpd_conn *conn, void **req_cls, enum httpd_end how);
/* True if the request (its head: httpd_header) comes from a known peer or
 * an authenticated client. Called on the event thread, and only while the
 * workers not reserved are all busy: must be quick and must not block on
 * anything a request holds. NULL: nobody is trusted. */
typedef bool (*httpd_trusted_fn)(void *cls, struct httpd_conn *conn);

struct httpd_listen {
	const char *addr;       /* as for httpd_parse_addr() */
	const char *mod;        /* log module, e.g. "http" */
	httpd_handler handler;
	httpd_completed completed;
	httpd_trusted_fn trusted;
	void *cls;              /* passed to the callbacks */
	/* Limits; 0 takes the default in brackets (docs/http.md). */
	unsigned workers;         /* requests served at once [64] */
	unsigned reserved;        /* of those, only for trusted requests [workers/4] */
	unsigned per_client;      /* connections per client address [64] */
	unsigned max_conns;       /* connections in all [4096, within RLIMIT_NOFILE] */
	unsigned head_timeout_ms; /* a whole request head [10000] */
	unsigned idle_timeout_ms; /* a kept-alive connection between requests [30000] */
	unsigned io_timeout_ms;   /* waiting for 64 KiB of body or reply [30000] */
};

/* Splits "host:port", "[v6]:port" or ":port" (host "" = all interfaces).
 * Returns 0 or ERR_INVAL (unbracketed IPv6, bad or missing port). */
int httpd_parse_addr(const char *addr, char *host, size_t host_len, char *port, size_t port_len);

/* Listens on l->addr (all interfaces, dual stack where the kernel has
 * IPv6, or the resolved host) and starts the event thread. *port gets the
 * bound port (useful with port 0). Logs and returns 0, ERR_INVAL or -errno. */
int httpd_start(const struct httpd_listen *l, struct httpd **out, uint16_t *port);
/* Stops accepting: the listening socket is closed (new connections are
 * refused at once) and connections between requests are closed; requests
 * in flight go on. */
void httpd_quiesce(struct httpd *d);
/* Quiesces, shuts down every connection still open (a handler blocked in
 * its own wait must be woken by its owner first) and joins the threads. */
void httpd_stop(struct httpd *d);
/* Requests being served now (for tests and metrics). */
unsigned httpd_busy(struct httpd *d);

/* ---- The request ------------------------------------------------------- */

/* The first header of that name (case-insensitive), or NULL. Names that
 * must not repeat (Authorization, Content-Length, Host, Transfer-Encoding)
 * were refused when repeated; no value holds a NUL or a control byte. */
const char *httpd_header(struct httpd_conn *conn, const char *name);
/* A query argument, percent-decoded ('+' is a space): HTTPD_YES with its
 * bytes (which may hold a NUL: check *len) or HTTPD_NO when absent. */
enum httpd_result httpd_arg(struct httpd_conn *conn, const char *key, const char **value, size_t *len);
/* The i-th header (in the order received) and the i-th query argument
 * (decoded, as httpd_arg; a key without '=' has an empty value), for a
 * proxy that passes the request on whole. False past the last one. */
bool httpd_header_at(struct httpd_conn *conn, unsigned i, const char **name, const char **value);
bool httpd_arg_at(struct httpd_conn *conn, unsigned i, const char **key, const char **value, size_t *len);
/* Takes the connection over (an Upgrade such as a WebSocket, a tunnel):
 * only on the first call of the handler, before any reply. Returns the
 * socket (blocking mode is the caller's to set; it stays non-blocking),
 * and in *buffered (caller frees with free()) the *len bytes the server had
 * already read past the head. From then on the caller owns the socket and
 * closes it before the handler returns; the server sends nothing, reads
 * nothing, and counts the connection (per-address cap, workers) until the
 * handler returns. httpd_stop() shuts it down like any other. A caller
 * may also keep the socket past the handler's return (litefs-cloud's
 * event streams, cloud/cloud_events.h): the server then forgets it — it
 * is no longer counted, never closed by the server nor shut down by
 * httpd_stop() — so that caller bounds and closes such connections
 * itself. -ERR_INVAL (as ERR_INVAL) when called too late, ERR_NOMEM. */
int httpd_take_socket(struct httpd_conn *conn, char **buffered, size_t *len);
/* Pulls the request's body instead of being handed it piece by piece:
 * only from the handler's first call (then no body piece follows; the
 * last call comes once the handler returns HTTPD_YES). Reads up to len
 * bytes of the body (de-chunked; a large read, of a body with a
 * Content-Length or of a large chunk, goes straight from the socket into
 * buf, with no copy in between), sending "100 Continue" first if the client waits for it.
 * Returns the count, 0 at the end of the body, ERR_INVAL (malformed
 * chunked encoding), -ETIMEDOUT (no progress within the I/O timeout),
 * -ECONNRESET (the peer closed) or -errno. After an error the server
 * ends the request as it would have (a 400 or 408 reply, or the close),
 * unless the handler queued a reply. */
ssize_t httpd_body_read(struct httpd_conn *conn, void *buf, size_t len);
/* Like httpd_body_read(), for a body with a Content-Length only, written
 * into fd at off instead of a buffer: the bytes move from the socket into
 * the file through pipe_fds (the caller's pipe, empty between calls) with
 * splice, never through user space (bytes that came with the head are
 * written from the buffer). Returns the count written (at most len), 0 at
 * the end of the body, ERR_INVAL for a chunked body (use
 * httpd_body_read), or an error as httpd_body_read; *file_failed is set
 * when the error was writing fd (its -errno is returned; the bytes taken
 * from the socket count as read and are lost, some of them left in the
 * pipe: close it). */
ssize_t httpd_body_splice(struct httpd_conn *conn, const int pipe_fds[2], int fd, off_t off, size_t len,
			  bool *file_failed);
/* The connection's socket (for httpd_peer_gone()). */
int httpd_sock_of(struct httpd_conn *conn);
/* "address:port" of the peer. */
void httpd_peer_name(struct httpd_conn *conn, char *buf, size_t len);
/* True if the peer of a streamed response has gone (it only ever sends
 * its request, so a hang-up or an error is all there is to see). */
bool httpd_peer_gone(int sock_fd);

/* ---- Replies ----------------------------------------------------------- */

#define HTTPD_SIZE_UNKNOWN UINT64_MAX
#define HTTPD_END_OF_STREAM ((ssize_t)-1)
#define HTTPD_END_WITH_ERROR ((ssize_t)-2)

/* Fills buf with up to max bytes of the body from offset pos; returns the
 * count (> 0), HTTPD_END_OF_STREAM or HTTPD_END_WITH_ERROR (the connection
 * is cut: the client sees a truncated reply). May block. */
typedef ssize_t (*httpd_reader)(void *cls, uint64_t pos, char *buf, size_t max);

/* A body in memory; take: free(buf) when done. NULL on OOM (buf freed if take). */
struct httpd_response *httpd_response_buf(void *buf, size_t len, bool take);
/* The first size bytes of fd (sent with sendfile; fd closed when done). */
struct httpd_response *httpd_response_fd(int fd, uint64_t size);
/* The first size bytes of fd (sendfile, fd closed when done) from a file
 * that something else keeps unchanged only while it holds a lock (a
 * node's export sends the live db file while a helper pins it): once
 * every byte but the last is sent, hold(cls) confirms the lock was held
 * the whole time; nonzero cuts the connection before the last byte, so
 * the client sees a truncated reply, never a torn one. free_cb(cls) runs
 * when the reply is done or dropped (also when hold was never called).
 * NULL on OOM (nothing freed). */
struct httpd_response *httpd_response_fd_held(int fd, uint64_t size, int (*hold)(void *), void *cls,
					      void (*free_cb)(void *));
/* A body produced by reader in pieces of up to block bytes; size may be
 * HTTPD_SIZE_UNKNOWN (then chunked). free_cb(cls) runs when done. */
struct httpd_response *httpd_response_callback(uint64_t size, size_t block, httpd_reader reader, void *cls,
					       void (*free_cb)(void *));
/* Adds a header (copied). 0 or ERR_INVAL (a CR, LF or NUL in it) / ERR_NOMEM. */
int httpd_response_header(struct httpd_response *r, const char *name, const char *value);
void httpd_response_free(struct httpd_response *r);
/* Queues r (takes it in every case) with status. HTTPD_NO if a reply was
 * already queued or the arguments are bad. */
enum httpd_result httpd_queue(struct httpd_conn *conn, unsigned status, struct httpd_response *r);

/* Replaces characters that would break a logfmt quoted value. */
void httpd_log_clean(char *s);

/* A JSON string of s; bytes that are not valid UTF-8 (database names may
 * hold any byte but '/' and controls) are replaced by '?'. NULL on OOM. */
json_t *httpd_json_str(const char *s);

/* Longest error message a response carries (longer ones are cut). */
#define HTTPD_MSG_LEN 512

/* Queues a response of body (takes ownership of a malloc'd buffer) with
 * Content-Type ctype, Cache-Control: no-store and, when header and value
 * are both not NULL, one more header (Allow, Litefs-Hwm...). */
enum httpd_result httpd_respond_buf(struct httpd_conn *conn, unsigned status, const char *ctype, char *body,
				    size_t len, const char *header, const char *value);
/* obj as compact JSON and a newline. Takes ownership of obj. */
enum httpd_result httpd_respond_json(struct httpd_conn *conn, unsigned status, json_t *obj, const char *header,
				     const char *value);
/* {"error": msg}. */
enum httpd_result httpd_respond_error(struct httpd_conn *conn, unsigned status, const char *msg);
enum httpd_result httpd_respond_errorf(struct httpd_conn *conn, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
