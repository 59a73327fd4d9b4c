/*
 * cloud_ui.c — the dashboard's pages, sign-in, sign-out and the session
 * check of API requests. docs/dashboard.md is the reference; this comment
 * says why the code is shaped this way.
 *
 * ONE ORIGIN. The dashboard lives on the API's own port under /ui/, and its
 * script calls the API endpoints themselves (GET /pos, /db/info, POST
 * /db/restore, ...) with the session cookie instead of a token. There is
 * no second copy of any handler, and a person sees exactly what the API
 * would show the token that opened the session.
 *
 *   path              method  what
 *   /                 GET     303 to /ui/
 *   /ui/, /ui/<file>  GET     a compiled-in asset (ETag, If-None-Match)
 *   /ui/session       GET     {"signed_in","cluster","csrf","expires_ms","ttl_ms"}
 *   /ui/login         POST    form "token=lfsc_...": sets the cookie
 *   /ui/logout        POST    ends the session (CSRF-checked)
 *
 * SESSIONS (cloud_session.c) are random IDs held in memory; the cookie is
 * HttpOnly, SameSite=Strict, Path=/, Max-Age (the session's lifetime) and
 * Secure when the browser reached us over https (an Origin of https://:
 * a TLS front; cloud_ui_over_tls() says why nothing else is trusted).
 * Every API request with a session re-checks that the token
 * which opened it still exists, so revoking a token ends its sessions at
 * once.
 *
 * CSRF. A state-changing request (anything but GET and HEAD) with a
 * session must carry X-CSRF-Token equal to the session's (compared in
 * constant time), and its Origin, when sent, must be this host, and its
 * Sec-Fetch-Site, when sent, "same-origin". SameSite=Strict already keeps
 * the cookie off cross-site requests; the header check also covers
 * same-site but cross-origin pages (another port of the same host), which
 * SameSite does not. Sign-in (no session yet) gets the Origin checks.
 *
 * THE TOKEN is only ever in the body of POST /ui/login, never in a URL;
 * nothing here logs it (the log names the token's public ID).
 *
 * HEADERS on every dashboard reply: a Content-Security-Policy that allows
 * only this origin's scripts and styles (no inline script, no eval),
 * frame-ancestors 'none', X-Content-Type-Options: nosniff, Referrer-Policy:
 * no-referrer. Assets are served with their ETag and "no-cache" (always
 * revalidated, so an upgrade is seen at once; a revalidation is a 304).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/err.h"
#include "base/log.h"
#include "cloud/cloud_session.h"
#include "cloud/cloud_ui.h"

#define COOKIE_NAME "lfsc_session"
#define CSRF_HEADER "X-CSRF-Token"

static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
			  "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct cloud_ui {
	struct cloud_auth *auth; /* borrowed */
	struct cloud_sessions *sessions;
};

int cloud_ui_new(struct cloud_auth *auth, int64_t session_ms, struct cloud_ui **out)
{
	*out = NULL;
	struct cloud_ui *ui = calloc(1, sizeof(*ui));
	if (!ui)
		return ERR_NOMEM;
	ui->auth = auth;
	int rc = cloud_sessions_new(session_ms, &ui->sessions);
	if (rc != 0) {
		free(ui);
		return rc;
	}
	*out = ui;
	return 0;
}

void cloud_ui_free(struct cloud_ui *ui)
{
	if (!ui)
		return;
	cloud_sessions_free(ui->sessions);
	free(ui);
}

bool cloud_ui_owns(const char *url)
{
	return !strcmp(url, "/") || !strcmp(url, "/ui") || !strncmp(url, "/ui/", 4) || !strcmp(url, "/favicon.ico");
}

/* ---- Replies ------------------------------------------------------------ */

static int security_headers(struct httpd_response *r)
{
	int rc = httpd_response_header(r, "Content-Security-Policy", csp);
	if (rc == 0)
		rc = httpd_response_header(r, "X-Content-Type-Options", "nosniff");
	if (rc == 0)
		rc = httpd_response_header(r, "Referrer-Policy", "no-referrer");
	if (rc == 0)
		rc = httpd_response_header(r, "X-Frame-Options", "DENY");
	return rc;
}

enum httpd_result cloud_ui_reply(struct httpd_conn *conn, unsigned status, const char *ctype, const void *body,
			       size_t len, bool take, const char *cache, const char *name, const char *value)
{
	struct httpd_response *r = httpd_response_buf((void *)body, len, take);
	if (!r)
		return HTTPD_NO;
	if (security_headers(r) != 0 || (ctype && httpd_response_header(r, HTTP_HEADER_CONTENT_TYPE, ctype) != 0) ||
	    httpd_response_header(r, HTTP_HEADER_CACHE_CONTROL, cache) != 0 ||
	    (name && httpd_response_header(r, name, value) != 0)) {
		httpd_response_free(r);
		return HTTPD_NO;
	}
	return httpd_queue(conn, status, r);
}

enum httpd_result cloud_ui_json(struct httpd_conn *conn, unsigned status, json_t *obj, const char *cookie)
{
	char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!text)
		return HTTPD_NO;
	return cloud_ui_reply(conn, status, "application/json", text, strlen(text), true, "no-store",
		     cookie ? "Set-Cookie" : NULL, cookie);
}

enum httpd_result cloud_ui_error(struct httpd_conn *conn, unsigned status, const char *code, const char *msg)
{
	return cloud_ui_json(conn, status, json_pack("{s:s, s:s}", "code", code, "error", msg), NULL);
}

enum httpd_result cloud_ui_asset(struct httpd_conn *conn, const char *url)
{
	const char *path = !strcmp(url, "/ui/") ? "/ui/index.html" : !strcmp(url, "/favicon.ico") ? "/ui/icon.svg" : url;
	for (size_t i = 0; i < cloud_ui_n_assets; i++) {
		const struct cloud_ui_asset *a = &cloud_ui_assets[i];
		if (strcmp(a->path, path) != 0)
			continue;
		const char *inm = httpd_header(conn, "If-None-Match");
		if (inm && strstr(inm, a->etag))
			return cloud_ui_reply(conn, 304, NULL, "", 0, false, "no-cache", "ETag", a->etag);
		return cloud_ui_reply(conn, HTTP_OK, a->ctype, a->data, a->len, false, "no-cache", "ETag", a->etag);
	}
	return cloud_ui_error(conn, HTTP_NOT_FOUND, "ENOTFOUND", "no such page");
}

/* ---- Request checks ----------------------------------------------------- */

bool cloud_ui_cookie(struct httpd_conn *conn, const char *name, char *id)
{
	const char *c = httpd_header(conn, "Cookie");
	size_t n = strlen(name);
	while (c && *c) {
		while (*c == ' ' || *c == ';')
			c++;
		if (!strncmp(c, name, n) && c[n] == '=') {
			const char *v = c + n + 1;
			size_t len = strcspn(v, "; ");
			if (len != CLOUD_SESSION_ID_LEN)
				return false;
			memcpy(id, v, len);
			id[len] = '\0';
			return true;
		}
		c = strchr(c, ';');
	}
	return false;
}

bool cloud_ui_same_origin(struct httpd_conn *conn)
{
	const char *site = httpd_header(conn, "Sec-Fetch-Site");
	if (site && strcmp(site, "same-origin") != 0)
		return false;
	const char *origin = httpd_header(conn, "Origin");
	if (!origin)
		return true;
	const char *host = httpd_header(conn, "Host");
	const char *rest = !strncmp(origin, "http://", 7) ? origin + 7 : !strncmp(origin, "https://", 8) ? origin + 8 : NULL;
	return host && rest && !strcmp(rest, host);
}

/* The browser's own word: it sends Origin on every POST (sign-in,
 * sign-out) and no page script can change it, and a TLS front that passes
 * the request on leaves it as it is. Headers that any client can send
 * itself (X-Forwarded-Proto, Forwarded) are not read: the service cannot
 * tell a proxy's from a client's. */
bool cloud_ui_over_tls(struct httpd_conn *conn)
{
	const char *origin = httpd_header(conn, "Origin");
	return origin && !strncmp(origin, "https://", 8);
}

void cloud_ui_client_addr(struct httpd_conn *conn, char *buf, size_t len)
{
	httpd_peer_name(conn, buf, len);
	char *colon = strrchr(buf, ':');
	if (colon)
		*colon = '\0';
}

/* Looks the cookie's session up and re-checks its token. 0, 1 (no
 * cookie) or -1 (unknown, expired or revoked: the session is ended). */
static int live_session(struct cloud_ui *ui, struct httpd_conn *conn, struct cloud_session *s)
{
	char id[CLOUD_SESSION_ID_LEN + 1];
	if (!cloud_ui_cookie(conn, COOKIE_NAME, id))
		return 1;
	if (cloud_session_get(ui->sessions, id, s) != 0)
		return -1;
	if (cloud_auth_token_alive(ui->auth, s->token_id, s->cluster) != 0) {
		cloud_session_close(ui->sessions, id);
		LOG_INFO("cloud-ui", "msg=\"session ended: its token was revoked\" cluster=%s token_id=%s", s->cluster,
			 s->token_id);
		return -1;
	}
	return 0;
}

static bool csrf_ok(struct httpd_conn *conn, const struct cloud_session *s)
{
	const char *h = httpd_header(conn, CSRF_HEADER);
	return h && cloud_session_equal(h, s->csrf) && cloud_ui_same_origin(conn);
}

int cloud_ui_auth(struct cloud_ui *ui, struct httpd_conn *conn, const char *method, char *cluster, unsigned *status,
		  char *msg, size_t msg_len)
{
	struct cloud_session s;
	int rc = live_session(ui, conn, &s);
	if (rc == 1)
		return 1;
	if (rc != 0) {
		*status = HTTP_UNAUTHORIZED;
		snprintf(msg, msg_len, "your session has ended (expired, signed out or its token was revoked): sign in again");
		return -1;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && !csrf_ok(conn, &s)) {
		*status = 403;
		snprintf(msg, msg_len, "refused: a dashboard request that changes something must come from the "
				       "dashboard itself (CSRF token and origin)");
		return -1;
	}
	snprintf(cluster, CLOUD_CLUSTER_NAME_MAX + 1, "%s", s.cluster);
	return 0;
}

/* ---- Sign-in, sign-out, session ------------------------------------------ */

static json_t *session_json(struct cloud_ui *ui, const struct cloud_session *s)
{
	return json_pack("{s:b, s:s, s:s, s:I, s:I}", "signed_in", 1, "cluster", s->cluster, "csrf", s->csrf, "expires_ms",
			 (json_int_t)s->expires_ms, "ttl_ms", (json_int_t)cloud_sessions_ttl_ms(ui->sessions));
}

bool cloud_ui_form_value(const char *body, size_t len, const char *key, char *out, size_t out_len)
{
	size_t klen = strlen(key);
	const char *end = body + len;
	for (const char *p = body; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - p) > klen && !memcmp(p, key, klen) && p[klen] == '=') {
			p += klen + 1;
			while (p < stop && (*p == '+' || *p == ' '))
				p++;
			while (stop > p && (stop[-1] == '+' || stop[-1] == ' ' || stop[-1] == '\n' || stop[-1] == '\r'))
				stop--;
			if ((size_t)(stop - p) >= out_len)
				return false;
			memcpy(out, p, (size_t)(stop - p));
			out[stop - p] = '\0';
			return true;
		}
		p = stop + 1;
	}
	return false;
}

bool cloud_ui_sign_in_refused(struct cloud_sessions *s, struct httpd_conn *conn, char *addr, size_t addr_len,
			      enum httpd_result *res)
{
	char msg[160];
	cloud_ui_client_addr(conn, addr, addr_len);
	if (!cloud_ui_same_origin(conn)) {
		*res = cloud_ui_error(conn, 403, "EFORBIDDEN", "sign-in must come from this service's own page");
		return true;
	}
	int64_t retry_ms = 0;
	if (cloud_session_may_try(s, addr, &retry_ms) == 0)
		return false;
	LOG_WARN("cloud-ui", "msg=\"sign-in refused: too many failed attempts\" peer=%s", addr);
	snprintf(msg, sizeof(msg), "too many failed sign-in attempts from your address: try again in %" PRId64 " s",
		 (retry_ms + 999) / 1000);
	*res = cloud_ui_error(conn, HTTP_TOO_MANY_REQUESTS, "ERATELIMIT", msg);
	return true;
}

static enum httpd_result sign_in(struct cloud_ui *ui, struct httpd_conn *conn, const char *body, size_t len)
{
	char addr[64], token[CLOUD_TOKEN_LEN + 2];
	enum httpd_result res;
	if (cloud_ui_sign_in_refused(ui->sessions, conn, addr, sizeof(addr), &res))
		return res;
	char cluster[CLOUD_CLUSTER_NAME_MAX + 1], token_id[CLOUD_TOKEN_ID_LEN + 1];
	int rc = cloud_ui_form_value(body, len, "token", token, sizeof(token)) ? cloud_auth_check_id(ui->auth, token, cluster, token_id)
							       : ERR_REPL_AUTH;
	explicit_bzero(token, sizeof(token));
	if (rc == -EIO)
		return cloud_ui_error(conn, HTTP_SERVICE_UNAVAILABLE, "EUNAVAILABLE", "the token store is unavailable; retry");
	cloud_session_tried(ui->sessions, addr, rc == 0);
	if (rc != 0) {
		LOG_WARN("cloud-ui", "msg=\"sign-in refused: unknown or revoked token\" peer=%s", addr);
		return cloud_ui_error(conn, HTTP_UNAUTHORIZED, "EUNAUTHORIZED",
				   "this token is not valid: it is unknown or was revoked (a cluster token starts with lfsc_)");
	}
	struct cloud_session s;
	if ((rc = cloud_session_open(ui->sessions, cluster, token_id, &s)) != 0)
		return cloud_ui_error(conn, HTTP_INTERNAL_SERVER_ERROR, "EINTERNAL", err_str(rc));
	char cookie[256];
	snprintf(cookie, sizeof(cookie), COOKIE_NAME "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%" PRId64 "%s",
		 s.id, cloud_sessions_ttl_ms(ui->sessions) / 1000, cloud_ui_over_tls(conn) ? "; Secure" : "");
	LOG_INFO("cloud-ui", "msg=\"signed in\" cluster=%s token_id=%s peer=%s", cluster, token_id, addr);
	return cloud_ui_json(conn, HTTP_OK, session_json(ui, &s), cookie);
}

static enum httpd_result sign_out(struct cloud_ui *ui, struct httpd_conn *conn)
{
	struct cloud_session s;
	char id[CLOUD_SESSION_ID_LEN + 1];
	if (live_session(ui, conn, &s) == 0) {
		if (!csrf_ok(conn, &s))
			return cloud_ui_error(conn, 403, "EFORBIDDEN", "sign-out must come from the dashboard itself");
		if (cloud_ui_cookie(conn, COOKIE_NAME, id))
			cloud_session_close(ui->sessions, id);
		LOG_INFO("cloud-ui", "msg=\"signed out\" cluster=%s token_id=%s", s.cluster, s.token_id);
	}
	return cloud_ui_json(conn, HTTP_OK, json_pack("{s:b}", "signed_out", 1),
			  cloud_ui_over_tls(conn) ? COOKIE_NAME "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
						  : COOKIE_NAME "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
}

enum httpd_result cloud_ui_serve(struct cloud_ui *ui, struct httpd_conn *conn, const char *url, const char *method,
				 const char *body, size_t body_len)
{
	bool get = !strcmp(method, "GET");
	bool post = !strcmp(method, "POST");
	if (!strcmp(url, "/") || !strcmp(url, "/ui"))
		return get ? cloud_ui_reply(conn, 303, "text/plain", "", 0, false, "no-store", "Location", "/ui/")
			   : cloud_ui_error(conn, HTTP_METHOD_NOT_ALLOWED, "EMETHOD", "method not allowed");
	if (!strcmp(url, "/ui/login"))
		return post ? sign_in(ui, conn, body, body_len)
			    : cloud_ui_error(conn, HTTP_METHOD_NOT_ALLOWED, "EMETHOD", "sign in with POST");
	if (!strcmp(url, "/ui/logout"))
		return post ? sign_out(ui, conn)
			    : cloud_ui_error(conn, HTTP_METHOD_NOT_ALLOWED, "EMETHOD", "sign out with POST");
	if (!strcmp(url, "/ui/session")) {
		struct cloud_session s;
		/* Not signed in is an answer, not an error: the page asks on load. */
		if (live_session(ui, conn, &s) != 0)
			return cloud_ui_json(conn, HTTP_OK, json_pack("{s:b}", "signed_in", 0), NULL);
		return cloud_ui_json(conn, HTTP_OK, session_json(ui, &s), NULL);
	}
	if (!get)
		return cloud_ui_error(conn, HTTP_METHOD_NOT_ALLOWED, "EMETHOD", "method not allowed");
	/* The admin page is only for the admin listener (cloud_admin.c). */
	if (!strncmp(url, "/ui/admin", 9))
		return cloud_ui_error(conn, HTTP_NOT_FOUND, "ENOTFOUND", "no such page");
	return cloud_ui_asset(conn, url);
}
