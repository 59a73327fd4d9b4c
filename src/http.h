/*
 * http.h — the node's HTTP API on http.addr (libmicrohttpd): GET /info,
 * GET /metrics, POST /import?name=, GET /export?name=. See docs/http.md.
 */
#ifndef LITEFS_HTTP_H
#define LITEFS_HTTP_H

struct store;
struct fusefs;
struct http_server;

/* Starts serving on addr ("host:port" or ":port"). The store and the file
 * system are borrowed; they must outlive the server. Caller stops it with
 * http_stop(). Returns 0 or an error code. */
int http_start(struct store *st, struct fusefs *fs, const char *addr, struct http_server **out);
/* Stops serving and frees. NULL is a no-op. */
void http_stop(struct http_server *srv);

#endif
