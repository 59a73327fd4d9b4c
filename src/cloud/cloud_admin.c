/*
 * cloud_admin.c — the admin view of the dashboard (cloud_admin.h). Why it
 * is guarded this way:
 *
 * The `litefs-cloud cluster` / `token` commands trust whoever can open the
 * data directory. A browser view must not be easier to reach than that, so
 * it needs both of:
 *   1. network: its own listener, off unless -admin-addr is set, that
 *      refuses to bind anything but loopback — only someone on the service
 *      host (or with a tunnel to it) reaches it;
 *   2. a secret from the data directory: <data_dir>/admin.key, 32 random
 *      bytes made at the first start with the listener, mode 0600. Signing
 *      in takes that key, compared in constant time, rate-limited per
 *      address like the dashboard's sign-in.
 * Then the same session machinery as the dashboard (cloud_session.c) with a
 * cookie of its own name (lfsc_admin: cookies are not kept apart by port),
 * its own CSRF token on every POST, and the same headers and CSP. A new
 * token is in exactly one reply (the one that created it); the service
 * never stores or logs it, only its hash and public ID.
 *
 *   path                     method  what
 *   /, /admin/               GET     the admin page (ui/admin.html)
 *   /ui/admin.js, app.css …  GET     its assets
 *   /admin/session           GET     {"signed_in","csrf"}
 *   /admin/login             POST    form "key=…"
 *   /admin/logout            POST
 *   /admin/clusters          GET     clusters with their tokens' IDs
 *   /admin/clusters?name=    POST    creates a cluster: {"cluster","token","token_id"} (shown once)
 *   /admin/tokens?cluster=   POST    a new token: {"cluster","token","token_id"} (shown once)
 *   /admin/tokens/revoke?id= POST    revokes a token (its sessions end with it)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fileio.h"
#include "base/httpd.h"
#include "base/log.h"
#include "cloud/cloud_admin.h"
#include "cloud/cloud_session.h"
#include "cloud/cloud_ui.h"

#define ADMIN_COOKIE "lfsc_admin"
#define KEY_BYTES 32
#define KEY_HEX (2 * KEY_BYTES)

struct cloud_admin {
	struct cloud_auth *auth; /* borrowed */
	struct cloud_sessions *sessions;
	char key[KEY_HEX + 1];
	struct httpd *daemon;
	unsigned port;
};

/* A request's body (the sign-in form), up to CLOUD_UI_BODY_MAX bytes. */
struct areq {
	char body[CLOUD_UI_BODY_MAX];
	size_t len;
	bool too_big;
};

/* ---- The key ------------------------------------------------------------ */

/* Reads <data_dir>/admin.key, making it first if missing. */
static int load_key(const char *data_dir, char *key)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", data_dir, CLOUD_ADMIN_KEY_FILE);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		unsigned char r[KEY_BYTES];
		if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
			return -errno;
		char text[KEY_HEX + 2];
		for (size_t i = 0; i < sizeof(r); i++)
			snprintf(text + 2 * i, 3, "%02x", r[i]);
		text[KEY_HEX] = '\n';
		int rc = fileio_replace_file(path, text, KEY_HEX + 1, 0600);
		if (rc != 0)
			return rc;
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	char buf[KEY_HEX + 2] = "";
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < KEY_HEX)
		return ERR_INVAL;
	memcpy(key, buf, KEY_HEX);
	key[KEY_HEX] = '\0';
	for (size_t i = 0; i < KEY_HEX; i++)
		if (!strchr("0123456789abcdef", key[i]))
			return ERR_INVAL;
	return 0;
}

/* ---- Sessions ----------------------------------------------------------- */

/* 0 with the session, or -1. */
static int admin_session(struct cloud_admin *a, struct httpd_conn *conn, struct cloud_session *s)
{
	char id[CLOUD_SESSION_ID_LEN + 1];
	if (!cloud_ui_cookie(conn, ADMIN_COOKIE, id) || cloud_session_get(a->sessions, id, s) != 0)
		return -1;
	return 0;
}

static enum httpd_result sign_in(struct cloud_admin *a, struct httpd_conn *conn, const struct areq *q)
{
	char addr[64], key[KEY_HEX + 2];
	enum httpd_result res;
	if (cloud_ui_sign_in_refused(a->sessions, conn, addr, sizeof(addr), &res))
		return res;
	bool ok = cloud_ui_form_value(q->body, q->len, "key", key, sizeof(key)) && cloud_session_equal(key, a->key);
	explicit_bzero(key, sizeof(key));
	cloud_session_tried(a->sessions, addr, ok);
	if (!ok) {
		LOG_WARN("cloud-admin", "msg=\"admin sign-in refused: wrong key\" peer=%s", addr);
		return cloud_ui_error(conn, HTTP_UNAUTHORIZED, "EUNAUTHORIZED",
				      "wrong admin key (it is in the service's data directory: " CLOUD_ADMIN_KEY_FILE ")");
	}
	struct cloud_session s;
	int rc = cloud_session_open(a->sessions, "-", "-", &s);
	if (rc != 0)
		return cloud_ui_error(conn, HTTP_INTERNAL_SERVER_ERROR, "EINTERNAL", err_str(rc));
	char cookie[256];
	snprintf(cookie, sizeof(cookie), ADMIN_COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s", s.id,
		 (long long)cloud_sessions_ttl_ms(a->sessions) / 1000, cloud_ui_over_tls(conn) ? "; Secure" : "");
	LOG_INFO("cloud-admin", "msg=\"admin signed in\" peer=%s", addr);
	return cloud_ui_json(conn, HTTP_OK, json_pack("{s:b, s:s}", "signed_in", 1, "csrf", s.csrf), cookie);
}

/* ---- Clusters and tokens ------------------------------------------------ */

static void token_one(void *ctx, const struct cloud_token_info *t)
{
	json_array_append_new(ctx, json_pack("{s:s, s:I}", "id", t->id, "created_ms", (json_int_t)t->created_ms));
}

static void cluster_one(void *ctx, const struct cloud_cluster_info *c)
{
	json_array_append_new(ctx, json_pack("{s:s, s:s, s:I}", "name", c->name, "cluster_id", c->cluster_id,
					     "created_ms", (json_int_t)c->created_ms));
}

/* Every cluster with its tokens' IDs. The tokens are listed after the
 * clusters: a list's callback runs under the auth store's lock. */
static int list_clusters(struct cloud_admin *a, json_t *clusters)
{
	int rc = cloud_auth_cluster_list(a->auth, cluster_one, clusters);
	size_t i;
	json_t *c;
	json_array_foreach(clusters, i, c) {
		json_t *tokens = json_array();
		if (rc == 0)
			rc = cloud_auth_token_list(a->auth, json_string_value(json_object_get(c, "name")), token_one, tokens);
		json_object_set_new(c, "tokens", tokens);
	}
	return rc;
}

/* The reply for a failed admin operation. */
static enum httpd_result op_failed(struct httpd_conn *conn, int rc, const char *what)
{
	char msg[160];
	snprintf(msg, sizeof(msg), "%s: %s", what, err_str(rc));
	unsigned st = rc == ERR_CLOUD_EXISTS ? HTTP_CONFLICT : rc == ERR_CLOUD_NOT_FOUND ? HTTP_NOT_FOUND
				 : rc == ERR_INVAL ? HTTP_BAD_REQUEST : HTTP_INTERNAL_SERVER_ERROR;
	return cloud_ui_error(conn, st, st == HTTP_INTERNAL_SERVER_ERROR ? "EINTERNAL" : "EINVALID", msg);
}

static enum httpd_result new_token_reply(struct httpd_conn *conn, const char *cluster, struct cloud_token *tok)
{
	LOG_INFO("cloud-admin", "msg=\"token created\" cluster=%s token_id=%s", cluster, tok->id);
	enum httpd_result r = cloud_ui_json(conn, HTTP_OK, json_pack("{s:s, s:s, s:s}", "cluster", cluster, "token",
								     tok->text, "token_id", tok->id), NULL);
	explicit_bzero(tok->text, sizeof(tok->text));
	return r;
}

static const char *query(struct httpd_conn *conn, const char *key)
{
	const char *v = NULL;
	size_t len = 0;
	if (httpd_arg(conn, key, &v, &len) != HTTPD_YES || strlen(v) != len || len == 0 || len > 200)
		return NULL;
	return v;
}

static enum httpd_result admin_op(struct cloud_admin *a, struct httpd_conn *conn, const char *url)
{
	struct cloud_token tok;
	int rc;
	if (!strcmp(url, "/admin/clusters")) {
		const char *name = query(conn, "name");
		if (!name)
			return cloud_ui_error(conn, HTTP_BAD_REQUEST, "EINVALID", "name the new cluster");
		if ((rc = cloud_auth_cluster_create(a->auth, name, &tok)) != 0)
			return op_failed(conn, rc, "cannot create the cluster");
		LOG_INFO("cloud-admin", "msg=\"cluster created\" cluster=%s", name);
		return new_token_reply(conn, name, &tok);
	}
	if (!strcmp(url, "/admin/tokens")) {
		const char *cluster = query(conn, "cluster");
		if (!cluster)
			return cloud_ui_error(conn, HTTP_BAD_REQUEST, "EINVALID", "name the cluster");
		if ((rc = cloud_auth_token_create(a->auth, cluster, &tok)) != 0)
			return op_failed(conn, rc, "cannot create a token");
		return new_token_reply(conn, cluster, &tok);
	}
	if (!strcmp(url, "/admin/tokens/revoke")) {
		const char *id = query(conn, "id");
		if (!id)
			return cloud_ui_error(conn, HTTP_BAD_REQUEST, "EINVALID", "name the token's ID");
		if ((rc = cloud_auth_token_revoke(a->auth, id)) != 0)
			return op_failed(conn, rc, "cannot revoke the token");
		LOG_INFO("cloud-admin", "msg=\"token revoked\" token_id=%s", id);
		return cloud_ui_json(conn, HTTP_OK, json_pack("{s:s}", "revoked", id), NULL);
	}
	return cloud_ui_error(conn, HTTP_NOT_FOUND, "ENOTFOUND", "no such admin operation");
}

static enum httpd_result serve(struct cloud_admin *a, struct httpd_conn *conn, const char *url, const char *method,
			       const struct areq *q)
{
	bool get = !strcmp(method, "GET");
	struct cloud_session s;
	bool signed_in = admin_session(a, conn, &s) == 0;
	if (get && (!strcmp(url, "/") || !strcmp(url, "/admin/")))
		return cloud_ui_asset(conn, "/ui/admin.html");
	if (get && (!strcmp(url, "/ui/admin.js") || !strcmp(url, "/ui/dom.js") || !strcmp(url, "/ui/app.css") || !strcmp(url, "/ui/icon.svg")))
		return cloud_ui_asset(conn, url);
	if (get && !strcmp(url, "/admin/session"))
		return cloud_ui_json(conn, HTTP_OK, signed_in ? json_pack("{s:b, s:s}", "signed_in", 1, "csrf", s.csrf)
							    : json_pack("{s:b}", "signed_in", 0), NULL);
	if (!get && !strcmp(url, "/admin/login"))
		return sign_in(a, conn, q);
	if (!signed_in)
		return cloud_ui_error(conn, HTTP_UNAUTHORIZED, "EUNAUTHORIZED", "sign in with the admin key");
	if (get && !strcmp(url, "/admin/clusters")) {
		json_t *clusters = json_array();
		int rc = clusters ? list_clusters(a, clusters) : ERR_NOMEM;
		if (rc != 0) {
			json_decref(clusters);
			return op_failed(conn, rc, "cannot list the clusters");
		}
		return cloud_ui_json(conn, HTTP_OK, json_pack("{s:o}", "clusters", clusters), NULL);
	}
	if (get)
		return cloud_ui_error(conn, HTTP_NOT_FOUND, "ENOTFOUND", "no such page");
	const char *h = httpd_header(conn, "X-CSRF-Token");
	if (!h || !cloud_session_equal(h, s.csrf) || !cloud_ui_same_origin(conn))
		return cloud_ui_error(conn, 403, "EFORBIDDEN", "refused: not from the admin page (CSRF token and origin)");
	if (!strcmp(url, "/admin/logout")) {
		cloud_session_close(a->sessions, s.id);
		return cloud_ui_json(conn, HTTP_OK, json_pack("{s:b}", "signed_out", 1),
				     ADMIN_COOKIE "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
	}
	return admin_op(a, conn, url);
}

static enum httpd_result on_request(void *cls, struct httpd_conn *conn, const char *url, const char *method,
				    const char *version, const char *upload_data, size_t *upload_data_size,
				    void **req_cls)
{
	struct cloud_admin *a = cls;
	struct areq *q = *req_cls;
	if (!q) {
		q = calloc(1, sizeof(*q));
		*req_cls = q;
		return q ? HTTPD_YES : HTTPD_NO;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (n > sizeof(q->body) - q->len)
			q->too_big = true;
		else {
			memcpy(q->body + q->len, upload_data, n);
			q->len += n;
		}
		return HTTPD_YES;
	}
	if (q->too_big)
		return cloud_ui_error(conn, HTTP_CONTENT_TOO_LARGE, "ETOOLARGE", "body too large");
	return serve(a, conn, url, method, q);
}

static void on_completed(void *cls, struct httpd_conn *conn, void **req_cls, enum httpd_end how)
{
	struct areq *q = *req_cls;
	if (q)
		explicit_bzero(q, sizeof(*q));
	free(q);
	*req_cls = NULL;
}

/* ---- Start and stop ----------------------------------------------------- */

static bool loopback(const char *host)
{
	struct in_addr v4;
	struct in6_addr v6;
	if (!strcmp(host, "localhost"))
		return true;
	if (inet_pton(AF_INET, host, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

int cloud_admin_start(struct cloud_auth *auth, const char *data_dir, const char *addr, int64_t session_ms,
		      struct cloud_admin **out)
{
	*out = NULL;
	char host[256], port[16];
	if (httpd_parse_addr(addr, host, sizeof(host), port, sizeof(port)) != 0 || !loopback(host)) {
		LOG_ERROR("cloud-admin", "msg=\"the admin listener binds only loopback (127.0.0.1:PORT, [::1]:PORT)\" "
					 "addr=\"%s\"", addr);
		return ERR_INVAL;
	}
	struct cloud_admin *a = calloc(1, sizeof(*a));
	if (!a)
		return ERR_NOMEM;
	a->auth = auth;
	int rc = load_key(data_dir, a->key);
	if (rc != 0)
		LOG_ERROR("cloud-admin", "msg=\"cannot read or make the admin key\" file=%s/%s err=\"%s\"", data_dir,
			  CLOUD_ADMIN_KEY_FILE, err_str(rc));
	if (rc == 0)
		rc = cloud_sessions_new(session_ms, &a->sessions);
	if (rc == 0) {
		struct httpd_listen l = { .addr = addr, .mod = "cloud-admin", .handler = on_request,
					  .completed = on_completed, .cls = a, .workers = 8, .reserved = 1 };
		uint16_t p = 0;
		rc = httpd_start(&l, &a->daemon, &p);
		a->port = p;
	}
	if (rc != 0) {
		cloud_sessions_free(a->sessions);
		explicit_bzero(a, sizeof(*a));
		free(a);
		return rc;
	}
	LOG_INFO("cloud-admin", "msg=\"admin view on loopback; sign in with the key in the data directory\" addr=\"%s\" "
				"port=%u key_file=%s/%s",
		 addr, a->port, data_dir, CLOUD_ADMIN_KEY_FILE);
	*out = a;
	return 0;
}

unsigned cloud_admin_port(const struct cloud_admin *a)
{
	return a->port;
}

void cloud_admin_stop(struct cloud_admin *a)
{
	if (!a)
		return;
	httpd_stop(a->daemon);
	cloud_sessions_free(a->sessions);
	explicit_bzero(a, sizeof(*a));
	free(a);
}
