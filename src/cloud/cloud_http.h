/*
 * cloud_http.h — litefs-cloud's HTTP API (base/httpd.h), compatible with
 * LiteFS Cloud: GET /pos, POST /db/tx, GET /db/snapshot, POST /db/restore,
 * GET /db/restore/check, POST /db/upload, GET /db/info, DELETE /db, and
 * GET /healthz. See docs/cloud-api.md.
 */
#ifndef LITEFS_CLOUD_HTTP_H
#define LITEFS_CLOUD_HTTP_H

#include <stdint.h>

struct cloud_store;
struct cloud_auth;
struct cloud_http;

struct cloud_http_opts {
	const char *addr;           /* "host:port", "[v6]:port" or ":port" (all interfaces) */
	const char *tmp_dir;        /* spool files (O_TMPFILE) for uploads and exports */
	uint64_t max_upload_bytes;  /* POST /db/tx bodies */
	uint64_t max_db_bytes;      /* POST /db/upload bodies */
	int64_t ui_session_ms;      /* dashboard session lifetime; 0: CLOUD_UI_SESSION_DEFAULT_MS */
};

/* Starts serving. The store and the auth store are borrowed and must
 * outlive the server; the strings are copied. Caller stops it with
 * cloud_http_stop(). Returns 0, ERR_INVAL (bad address) or -errno. */
int cloud_http_start(struct cloud_store *cs, struct cloud_auth *auth, const struct cloud_http_opts *opts,
		     struct cloud_http **out);
/* The port actually bound (useful with port 0). */
unsigned cloud_http_port(const struct cloud_http *srv);
/* Refuses new requests, lets requests in flight finish (up to 10 s), stops
 * and frees. NULL is a no-op. */
void cloud_http_stop(struct cloud_http *srv);

#endif
