/*
 * etcd.c — the etcd v3 JSON-gateway client (etcd.h).
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/httpc.h"
#include "proto/etcd.h"

#define ETCD_DEFAULT_TIMEOUT_MS 2000L
#define ETCD_MAX_REPLY (4u << 20)
#define ETCD_MAX_WATCH_BUF (64u << 10)

struct etcd {
	char **endpoints; /* owned, without trailing slashes */
	size_t n;
	size_t cur;       /* the endpoint that answered last */
	char *username, *password, *ca_file, *cert_file, *key_file; /* owned; NULL: unset */
	char *token;      /* owned; NULL: none yet */
	long timeout_ms;
	const atomic_bool *stop;
	const atomic_bool *wake;
	bool watching;          /* a watch is in flight: the wake flag may end it */
	CURL *curl;
};

/* ---- base64 ------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const char *s, size_t n)
{
	char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
	if (!out)
		return NULL;
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
		*o++ = b64chars[v >> 18 & 63];
		*o++ = b64chars[v >> 12 & 63];
		*o++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? b64chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* Decodes s into a NUL-terminated string (caller frees); NULL on a
 * malformed input or no memory. */
static char *b64_decode(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n / 4 * 3 + 1);
	size_t o = 0;
	uint32_t v = 0;
	int bits = 0;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n && s[i] != '='; i++) {
		const char *c = strchr(b64chars, s[i]);
		if (!c || !s[i]) {
			free(out);
			return NULL;
		}
		v = v << 6 | (uint32_t)(c - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)(v >> bits & 0xff);
		}
	}
	out[o] = '\0';
	return out;
}

/* An int64 the gateway sends as a string (or, defensively, a number);
 * an omitted field is 0. */
static int64_t jint(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

/* ---- Setup -------------------------------------------------------------- */

static char *dup_opt(const char *s, bool *oom)
{
	if (!s || !s[0])
		return NULL;
	char *d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

int etcd_new(const struct etcd_opts *o, struct etcd **out)
{
	*out = NULL;
	if (o->n_endpoints == 0)
		return ERR_INVAL;
	struct etcd *e = calloc(1, sizeof(*e));
	bool oom = !e;
	if (e && !(e->endpoints = calloc(o->n_endpoints, sizeof(char *))))
		oom = true;
	for (size_t i = 0; !oom && i < o->n_endpoints; i++, e->n++) {
		size_t len = strlen(o->endpoints[i]);
		while (len > 0 && o->endpoints[i][len - 1] == '/')
			len--;
		if (!(e->endpoints[i] = strndup(o->endpoints[i], len)))
			oom = true;
	}
	if (!oom) {
		e->username = dup_opt(o->username, &oom);
		e->password = dup_opt(o->password, &oom);
		e->ca_file = dup_opt(o->ca_file, &oom);
		e->cert_file = dup_opt(o->cert_file, &oom);
		e->key_file = dup_opt(o->key_file, &oom);
		e->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
		e->stop = o->stop;
		e->wake = o->wake;
		if (!(e->curl = curl_easy_init()))
			oom = true;
	}
	if (oom) {
		etcd_free(e);
		return ERR_NOMEM;
	}
	*out = e;
	return 0;
}

void etcd_free(struct etcd *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++)
		free(e->endpoints[i]);
	free(e->endpoints);
	free(e->username);
	free(e->password);
	free(e->ca_file);
	free(e->cert_file);
	free(e->key_file);
	free(e->token);
	if (e->curl)
		curl_easy_cleanup(e->curl);
	free(e);
}

const char *etcd_endpoint(const struct etcd *e)
{
	return e->endpoints[e->cur];
}

/* ---- Requests ------------------------------------------------------------ */

struct watch_sink {
	char buf[ETCD_MAX_WATCH_BUF];
	size_t len;
	bool event;
	bool canceled;
};

static size_t watch_write(void *ctx, const char *buf, size_t len)
{
	struct watch_sink *w = ctx;
	size_t room = sizeof(w->buf) - 1 - w->len;
	size_t n = len < room ? len : room;
	memcpy(w->buf + w->len, buf, n);
	w->len += n;
	w->buf[w->len] = '\0';
	/* Each message is one JSON object; the first says "created", later
	 * ones carry "events". One is enough: this is a long poll. */
	if (strstr(w->buf, "\"events\""))
		w->event = true;
	if (strstr(w->buf, "\"canceled\":true") || strstr(w->buf, "\"error\""))
		w->canceled = true;
	if (w->event || w->canceled || w->len >= sizeof(w->buf) - 1)
		return 0; /* ends the transfer */
	return len;
}

/* ctx: the struct etcd. The stop flag ends every request; the wake flag
 * only a watch (e->watching), which then reports no event. */
static int stop_progress(void *ctx, int64_t a, int64_t b, int64_t c, int64_t d)
{
	const struct etcd *e = ctx;
	(void)a, (void)b, (void)c, (void)d;
	if (e->stop && atomic_load(e->stop))
		return 1;
	return e->watching && e->wake && atomic_load(e->wake) ? 1 : 0;
}

/* One POST of body to path on endpoint i. Returns 0 with the HTTP status
 * and, for a JSON reply, *reply (caller decrefs); ERR_ETCD on a transport
 * error (the next endpoint may do). */
static int post_once(struct etcd *e, size_t i, const char *path, const char *body, long timeout_ms,
		     struct watch_sink *w, long *status, json_t **reply)
{
	char url[2048];
	struct curl_slist *hdrs = NULL;
	struct httpc_req q;
	int rc = 0;
	snprintf(url, sizeof(url), "%s%s", e->endpoints[i], path);
	if ((rc = httpc_add_header(&hdrs, "Content-Type: application/json")) == 0 && e->token)
		rc = httpc_add_header(&hdrs, "Authorization: %s", e->token);
	if (rc != 0)
		return rc;
	httpc_req_init(&q, e->curl);
	q.method = "POST";
	q.url = url;
	q.headers = hdrs;
	q.up_buf = body;
	q.up_buf_len = strlen(body);
	q.connect_timeout_ms = timeout_ms < 1000 ? timeout_ms : 1000;
	q.timeout_ms = timeout_ms;
	q.mem_max = ETCD_MAX_REPLY;
	q.ca_file = e->ca_file;
	q.cert_file = e->cert_file;
	q.key_file = e->key_file;
	q.user_agent = "litefs-etcd";
	q.progress = stop_progress;
	q.progress_ctx = e;
	e->watching = w != NULL;
	if (w) {
		q.ok_write = watch_write;
		q.ok_ctx = w;
	}
	CURLcode cc = httpc_perform(&q);
	*status = q.status;
	*reply = NULL;
	if (w && (w->event || w->canceled || cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_ABORTED_BY_CALLBACK))
		rc = 0; /* a watch ends by our choice */
	else if (cc != CURLE_OK)
		rc = ERR_ETCD;
	else if (!w && q.mem) {
		json_error_t jerr;
		*reply = json_loadb(q.mem, q.mem_len, 0, &jerr);
		if (!*reply && q.status == 200)
			rc = ERR_ETCD_REPLY;
	}
	httpc_req_free(&q);
	curl_slist_free_all(hdrs);
	return rc;
}

static int authenticate(struct etcd *e, size_t i, long timeout_ms)
{
	json_t *req = json_pack("{s:s, s:s}", "name", e->username, "password", e->password ? e->password : "");
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body)
		return ERR_NOMEM;
	free(e->token);
	e->token = NULL;
	long status = 0;
	json_t *reply = NULL;
	int rc = post_once(e, i, "/v3/auth/authenticate", body, timeout_ms, NULL, &status, &reply);
	free(body);
	if (rc == 0) {
		const char *tok = json_string_value(json_object_get(reply, "token"));
		if (status != 200 || !tok)
			rc = status >= 500 ? ERR_ETCD : ERR_ETCD_AUTH;
		else if (!(e->token = strdup(tok)))
			rc = ERR_NOMEM;
	}
	json_decref(reply);
	return rc;
}

/* POSTs body to path, failing over between endpoints. Returns 0 with the
 * 200 reply (caller decrefs; NULL for a watch), or an error. */
static int post(struct etcd *e, const char *path, json_t *body_json, long timeout_ms, struct watch_sink *w,
		json_t **out)
{
	char *body = body_json ? json_dumps(body_json, JSON_COMPACT) : NULL;
	json_decref(body_json);
	if (!body)
		return ERR_NOMEM;
	int rc = ERR_ETCD;
	bool reauthed = false;
	*out = NULL;
	for (size_t tried = 0; tried < e->n; tried++) {
		size_t i = (e->cur + tried) % e->n;
		if (e->stop && atomic_load(e->stop))
			break;
		if (e->username && !e->token && (rc = authenticate(e, i, timeout_ms < e->timeout_ms ? e->timeout_ms : timeout_ms)) != 0) {
			if (rc == ERR_ETCD)
				continue;
			break;
		}
		long status = 0;
		json_t *reply = NULL;
		rc = post_once(e, i, path, body, timeout_ms, w, &status, &reply);
		if (rc == ERR_ETCD || (rc == 0 && status >= 500) || (rc == 0 && status == 0 && !w)) {
			/* etcd answers 503 without a leader: another member
			 * may have one (or be the one). */
			json_decref(reply);
			rc = ERR_ETCD;
			continue;
		}
		if (rc == 0 && (status == 401 || (status >= 400 && e->username))) {
			const char *msg = json_string_value(json_object_get(reply, "error"));
			json_decref(reply);
			if (e->username && !reauthed && (status == 401 || (msg && strstr(msg, "token")))) {
				free(e->token);
				e->token = NULL;
				reauthed = true;
				tried--;
				continue;
			}
			rc = status == 401 ? ERR_ETCD_AUTH : ERR_ETCD_REPLY;
			break;
		}
		if (rc == 0 && status != 200 && !(w && status == 0)) {
			json_decref(reply);
			rc = ERR_ETCD_REPLY;
			break;
		}
		e->cur = i;
		*out = reply;
		break;
	}
	free(body);
	return rc;
}

/* ---- Operations ---------------------------------------------------------- */

int etcd_grant(struct etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_s)
{
	json_t *reply;
	int rc = post(e, "/v3/lease/grant", json_pack("{s:I}", "TTL", (json_int_t)ttl_s), e->timeout_ms, NULL, &reply);
	if (rc != 0)
		return rc;
	*id = jint(reply, "ID");
	*granted_s = jint(reply, "TTL");
	json_decref(reply);
	return *id != 0 && *granted_s > 0 ? 0 : ERR_ETCD_REPLY;
}

int etcd_keepalive(struct etcd *e, int64_t id, int64_t *ttl_s)
{
	char idbuf[32];
	json_t *reply;
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
	int rc = post(e, "/v3/lease/keepalive", json_pack("{s:s}", "ID", idbuf), e->timeout_ms, NULL, &reply);
	if (rc != 0)
		return rc;
	/* The gateway wraps the stream's one message in "result". */
	json_t *r = json_object_get(reply, "result");
	*ttl_s = jint(r ? r : reply, "TTL");
	json_decref(reply);
	return 0;
}

int etcd_revoke(struct etcd *e, int64_t id)
{
	char idbuf[32];
	json_t *reply;
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
	int rc = post(e, "/v3/lease/revoke", json_pack("{s:s}", "ID", idbuf), e->timeout_ms, NULL, &reply);
	json_decref(reply);
	return rc;
}

/* The end of the range of every key starting with key: key with its
 * last byte incremented (keys here are text, never ending in 0xff). */
static char *prefix_end(const char *key)
{
	size_t n = strlen(key);
	char *end = strdup(key);
	if (end && n > 0)
		end[n - 1]++;
	return end;
}

/* {"key": b64(key)} plus range_end for a prefix; NULL when out of memory. */
static json_t *range_req(const char *key, bool prefix)
{
	char *k = b64_encode(key, strlen(key));
	char *end = prefix ? prefix_end(key) : NULL;
	char *e64 = end ? b64_encode(end, strlen(end)) : NULL;
	json_t *o = NULL;
	if (k && (!prefix || e64)) {
		o = json_pack("{s:s}", "key", k);
		if (o && prefix)
			json_object_set_new(o, "range_end", json_string(e64));
	}
	free(k);
	free(end);
	free(e64);
	return o;
}

void etcd_kvs_free(struct etcd_kv *kvs, size_t n)
{
	for (size_t i = 0; kvs && i < n; i++) {
		free(kvs[i].key);
		free(kvs[i].value);
	}
	free(kvs);
}

static int parse_kvs(json_t *arr, struct etcd_kv **kvs, size_t *n)
{
	size_t cnt = json_array_size(arr);
	*kvs = NULL;
	*n = 0;
	if (cnt == 0)
		return 0;
	struct etcd_kv *v = calloc(cnt, sizeof(*v));
	if (!v)
		return ERR_NOMEM;
	for (size_t i = 0; i < cnt; i++) {
		json_t *kv = json_array_get(arr, i);
		const char *k = json_string_value(json_object_get(kv, "key"));
		const char *val = json_string_value(json_object_get(kv, "value"));
		v[i].key = b64_decode(k ? k : "");
		v[i].value = b64_decode(val ? val : "");
		v[i].create_revision = jint(kv, "create_revision");
		v[i].mod_revision = jint(kv, "mod_revision");
		v[i].lease = jint(kv, "lease");
		if (!v[i].key || !v[i].value) {
			etcd_kvs_free(v, cnt);
			return ERR_ETCD_REPLY;
		}
	}
	*kvs = v;
	*n = cnt;
	return 0;
}

int etcd_get(struct etcd *e, const char *key, bool prefix, struct etcd_kv **kvs, size_t *n, int64_t *revision)
{
	json_t *req = range_req(key, prefix), *reply;
	if (!req)
		return ERR_NOMEM;
	int rc = post(e, "/v3/kv/range", req, e->timeout_ms, NULL, &reply);
	if (rc != 0)
		return rc;
	*revision = jint(json_object_get(reply, "header"), "revision");
	rc = parse_kvs(json_object_get(reply, "kvs"), kvs, n);
	json_decref(reply);
	return rc;
}

/* A put request {"key", "value", "lease"}; NULL when out of memory. */
static json_t *put_req(const char *key, const char *value, int64_t lease)
{
	char *k = b64_encode(key, strlen(key)), *v = b64_encode(value, strlen(value));
	json_t *o = k && v ? json_pack("{s:s, s:s}", "key", k, "value", v) : NULL;
	if (o && lease != 0) {
		char idbuf[32];
		snprintf(idbuf, sizeof(idbuf), "%" PRId64, lease);
		json_object_set_new(o, "lease", json_string(idbuf));
	}
	free(k);
	free(v);
	return o;
}

/* Sends a txn request (taken) and reads whether it succeeded and at which
 * revision. */
static int post_txn(struct etcd *e, json_t *req, bool *succeeded, int64_t *revision)
{
	json_t *reply;
	int rc = post(e, "/v3/kv/txn", req, e->timeout_ms, NULL, &reply);
	if (rc != 0)
		return rc;
	*succeeded = json_is_true(json_object_get(reply, "succeeded"));
	*revision = jint(json_object_get(reply, "header"), "revision");
	json_decref(reply);
	return 0;
}

int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease)
{
	json_t *req = put_req(key, value, lease), *reply;
	if (!req)
		return ERR_NOMEM;
	int rc = post(e, "/v3/kv/put", req, e->timeout_ms, NULL, &reply);
	json_decref(reply);
	return rc;
}

int etcd_put_if_absent(struct etcd *e, const char *key, const char *value, int64_t lease, bool *won,
		       int64_t *revision)
{
	char *k = b64_encode(key, strlen(key));
	json_t *put = put_req(key, value, lease);
	json_t *req = k && put ? json_pack("{s:[{s:s, s:s, s:s, s:s}], s:[{s:o}]}", "compare", "key", k, "result",
					     "EQUAL", "target", "CREATE", "create_revision", "0", "success",
					     "request_put", put)
			       : NULL;
	free(k);
	if (!req) {
		json_decref(put);
		return ERR_NOMEM;
	}
	return post_txn(e, req, won, revision);
}

int etcd_delete_if(struct etcd *e, const char *key, int64_t mod_revision, bool *deleted)
{
	struct etcd_cmp c = { key, mod_revision };
	struct etcd_op op = { key, NULL, 0 };
	int64_t rev;
	return etcd_txn(e, &c, 1, &op, 1, deleted, &rev);
}

int etcd_txn(struct etcd *e, const struct etcd_cmp *cmps, size_t n_cmps, const struct etcd_op *ops, size_t n_ops,
	     bool *succeeded, int64_t *revision)
{
	json_t *cmp = json_array(), *succ = json_array(), *req = NULL;
	bool oom = !cmp || !succ;
	for (size_t i = 0; !oom && i < n_cmps; i++) {
		char *k = b64_encode(cmps[i].key, strlen(cmps[i].key));
		char rev[32];
		snprintf(rev, sizeof(rev), "%" PRId64, cmps[i].mod_revision);
		json_t *c = k ? json_pack("{s:s, s:s, s:s, s:s}", "key", k, "result", "EQUAL", "target", "MOD",
					  "mod_revision", rev)
			      : NULL;
		free(k);
		oom = !c || json_array_append_new(cmp, c) != 0;
	}
	for (size_t i = 0; !oom && i < n_ops; i++) {
		json_t *op = NULL;
		if (ops[i].value) {
			json_t *put = put_req(ops[i].key, ops[i].value, ops[i].lease);
			op = put ? json_pack("{s:o}", "request_put", put) : NULL;
		} else {
			char *k = b64_encode(ops[i].key, strlen(ops[i].key));
			op = k ? json_pack("{s:{s:s}}", "request_delete_range", "key", k) : NULL;
			free(k);
		}
		oom = !op || json_array_append_new(succ, op) != 0;
	}
	if (!oom)
		req = json_pack("{s:o, s:o}", "compare", cmp, "success", succ);
	else {
		json_decref(cmp);
		json_decref(succ);
	}
	if (!req)
		return ERR_NOMEM;
	return post_txn(e, req, succeeded, revision);
}

int etcd_watch(struct etcd *e, const char *key, bool prefix, int64_t start_revision, long timeout_ms, bool *event)
{
	json_t *create = range_req(key, prefix), *reply = NULL;
	*event = false;
	if (!create)
		return ERR_NOMEM;
	char rev[32];
	snprintf(rev, sizeof(rev), "%" PRId64, start_revision);
	json_object_set_new(create, "start_revision", json_string(rev));
	json_t *req = json_pack("{s:o}", "create_request", create);
	if (!req)
		return ERR_NOMEM;
	struct watch_sink *w = calloc(1, sizeof(*w));
	if (!w) {
		json_decref(req);
		return ERR_NOMEM;
	}
	int rc = post(e, "/v3/watch", req, timeout_ms, w, &reply);
	json_decref(reply);
	if (rc == 0 && w->canceled && !w->event)
		rc = ERR_ETCD_REPLY; /* e.g. the revision was compacted */
	*event = w->event;
	free(w);
	return rc;
}
