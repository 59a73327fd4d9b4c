/*
 * replserver.h — the primary's side of replication: the POST /stream
 * request of the node's HTTP API (see replserver.c and docs/protocol.md).
 * http.c owns the HTTP server (base/httpd.h) and routes the request here; this
 * module never calls back into http.c.
 */
#ifndef LITEFS_REPLSERVER_H
#define LITEFS_REPLSERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/httpd.h"

struct store;
struct cluster;

/* What the replication server needs from the HTTP server. Borrowed; valid
 * until the HTTP server has stopped (every session has ended). */
struct replserver {
	struct store *st;
	struct cluster *cluster;   /* NULL: no cluster ID */
	const char *secret;        /* NULL: no authentication (http.secret) */
	const char *hostname;      /* sent as Litefs-Primary-Hostname */
	const char *tmp_dir;       /* where snapshots are spooled */
	const atomic_bool *stopping; /* set when the server stops: sessions end */
};

/* The first int of the per-request state, so that the HTTP layer can tell
 * a stream request from its own. */
#define REPLSERVER_REQ 0x7265706c

struct replserver_req;

/* First call for POST /stream: checks the headers (secret, role, cluster
 * ID) and answers a refusal, or sets *con_cls to a new request (freed with
 * replserver_req_free() by the completion callback). */
enum httpd_result replserver_begin(const struct replserver *rs, struct httpd_conn *conn, void **con_cls);
/* A chunk of the request body (the replica's hello and positions). */
enum httpd_result replserver_chunk(struct replserver_req *sr, const char *data, size_t len);
/* The body is complete: answers a refusal, or starts the session's
 * streamed response (which frees the session when the connection ends). */
enum httpd_result replserver_finish(const struct replserver *rs, struct httpd_conn *conn,
				  struct replserver_req *sr);
void replserver_req_free(struct replserver_req *sr); /* NULL is a no-op */
/* First call for POST /stream/ack (synchronous replication): checks the
 * headers as for /stream plus Litefs-Stream-Id, then like
 * replserver_begin(); replserver_chunk() and replserver_finish() take
 * the body (hello, one ack frame) and answer 200 {} or 404 (no such open
 * session). */
enum httpd_result replserver_begin_ack(const struct replserver *rs, struct httpd_conn *conn, void **con_cls);
/* True if no secret is configured or the request's Authorization is
 * "Bearer <secret>" (compared in constant time). */
bool replserver_auth_ok(const struct replserver *rs, struct httpd_conn *conn);

#endif
