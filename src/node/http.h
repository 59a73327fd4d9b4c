/*
 * http.h — the node's HTTP API on http.addr (base/httpd.h): GET /info,
 * GET /metrics, GET /events, POST /import?name=, GET /export?name=, and
 * POST /stream (routed to replserver.c; protocol: proto/stream.c). See
 * docs/http.md.
 */
#ifndef LITEFS_HTTP_H
#define LITEFS_HTTP_H

#include <stdbool.h>

struct store;
struct fusefs;
struct cluster;
struct lease;
struct http_server;

struct http_opts {
	const char *addr;         /* "host:port", "[v6]:port" or ":port" */
	const char *secret;       /* http.secret; NULL or "": /stream is open */
	const char *hostname;     /* this node's name, sent to replicas */
	bool candidate;           /* lease.candidate, for /info */
	struct cluster *cluster;  /* borrowed; NULL: no cluster ID */
	struct lease *lease;      /* borrowed; NULL: a static lease (/info, /metrics) */
	struct writelock *writelock; /* borrowed; NULL: /writelock/ answers 503 */
};

/* Starts serving. The store, the file system and the cluster are
 * borrowed and must outlive the server; the strings are copied. Caller
 * stops it with http_stop(). Returns 0 or an error code. */
int http_start(struct store *st, struct fusefs *fs, const struct http_opts *opts, struct http_server **out);
/* Stops serving and frees. NULL is a no-op. */
void http_stop(struct http_server *srv);

#endif
