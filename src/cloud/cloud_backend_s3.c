/*
 * cloud_backend_s3.c — the S3-compatible backend (cloud_backend_s3.h).
 *
 * REQUESTS. Every request goes through s3_do(): one pooled libcurl handle,
 * signed by libcurl (CURLOPT_AWS_SIGV4 "aws:amz:<region>:s3") with our own
 * x-amz-content-sha256 header holding the payload's SHA-256 (libcurl then
 * signs that hash instead of hashing the body itself, which it cannot do
 * for a streamed body). libcurl 7.88 signs the query string as given, so
 * every query here is built already canonical: parameters sorted by name,
 * values percent-encoded with upper-case hex, "name=" for empty values.
 *
 * RETRIES. Network errors (connect, send, receive, timeouts), 5xx and 429
 * are retried up to max_attempts with exponential backoff (100 ms base,
 * 5 s cap) and full jitter; a body streamed from a file is re-read from
 * its offset and a download is truncated before each attempt. 404 is
 * -ENOENT; other 4xx are mapped from the S3 error code and not retried.
 * A transfer slower than 1 byte/s for 30 s counts as a timeout.
 *
 * PUT. Objects up to part_size are one PutObject: the file is read once
 * to hash it, then streamed. Bigger ones are a multipart upload of
 * part_size parts, each hashed then streamed from its offset; a failed
 * upload is aborted. Memory is bounded by the copy buffers, never by the
 * object. CompleteMultipartUpload may fail with 200 and an <Error> body:
 * the body is checked.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloud/cloud_backend_s3.h"
#include "base/err.h"
#include "base/log.h"
#include "base/sbuf.h"

#define S3_DEFAULT_PART (16ULL << 20)
#define S3_MIN_PART (5ULL << 20)
#define S3_MAX_PARTS 10000
#define S3_DEFAULT_ATTEMPTS 8
#define S3_BACKOFF_BASE_MS 100
#define S3_BACKOFF_CAP_MS 5000
#define S3_MAX_XML (16u << 20) /* a listing page of 1,000 keys is ~300 KB */
#define S3_DELETE_BATCH 1000
#define S3_POOL 16
#define S3_IO_BUF (64 * 1024)

struct s3_backend {
	struct cloud_backend base;
	char *scheme_host; /* "http://127.0.0.1:9000" or "https://bucket.s3..." */
	char *path_base;   /* "/bucket/prefix/" (path style) or "/prefix/" */
	char *prefix;      /* "" or "prefix/" */
	char *bucket, *region, *sigv4, *userpwd, *token_hdr, *tmp_dir;
	uint64_t part_size;
	int max_attempts;
	pthread_mutex_t mu; /* guards pool, n_pool */
	CURL *pool[S3_POOL];
	int n_pool;
	uint64_t n_requests; /* atomic */
	bool ready;          /* the probe passed */
};

/* One request. The body comes from body_mem or from body_fd at body_off
 * (body_len bytes); the response body goes to out_fd (downloads) or
 * out_mem (XML, bounded by S3_MAX_XML). */
struct s3_req {
	const char *method;
	const char *key;   /* without the prefix; NULL for the bucket */
	const char *query; /* canonical, without '?'; NULL for none */
	const char *range; /* "bytes=a-b" or NULL */
	const char *content_type;
	const char *content_md5;
	const void *body_mem;
	int body_fd;
	uint64_t body_off, body_len;
	int out_fd;
	struct sbuf *out_mem;
	char etag[128];   /* out: the ETag response header */
	long status;      /* out */
	char code[64];    /* out: the S3 error code of a failed request */
	char msg[160];    /* out: its message */
	int attempts;     /* 0: the backend's max_attempts */
	bool quiet;       /* no logs (the start-up probe says it all in one line) */
	bool write_failed; /* out: writing out_fd failed (a stream's reader left) */
	bool stream;      /* out_fd is a socket: written in order, no retry once
			   * bytes went in (they cannot be taken back) */
	/* transfer state */
	uint64_t sent;
	uint64_t received;
	bool too_big;
};

/* ---- Helpers ----------------------------------------------------------------- */

/* SHA-256 (hex, 65 bytes) of len bytes of fd at off, or of mem. */
static int payload_sha256(int fd, uint64_t off, uint64_t len, const void *mem, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c)
		return ERR_NOMEM;
	int rc = EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
	if (mem && rc == 0) {
		rc = EVP_DigestUpdate(c, mem, len) == 1 ? 0 : -EIO;
	} else if (rc == 0 && len > 0) {
		char *buf = malloc(S3_IO_BUF);
		uint64_t done = 0;
		rc = buf ? 0 : ERR_NOMEM;
		while (rc == 0 && done < len) {
			size_t want = len - done < S3_IO_BUF ? (size_t)(len - done) : S3_IO_BUF;
			ssize_t r = pread(fd, buf, want, (off_t)(off + done));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				rc = r < 0 ? -errno : ERR_IO_SHORT;
			else if (EVP_DigestUpdate(c, buf, (size_t)r) != 1)
				rc = -EIO;
			else
				done += (uint64_t)r;
		}
		free(buf);
	}
	if (rc == 0 && EVP_DigestFinal_ex(c, md, &mdlen) != 1)
		rc = -EIO;
	EVP_MD_CTX_free(c);
	for (unsigned int i = 0; rc == 0 && i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return rc;
}

/* Base64 of the MD5 of mem (DeleteObjects requires Content-MD5). */
static int md5_base64(const void *mem, size_t len, char *out, size_t size)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(mem, len, md, &mdlen, EVP_md5(), NULL) != 1 || size < 4 * ((mdlen + 2) / 3) + 1)
		return -EIO;
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
	return 0;
}

/* Appends s percent-encoded for a canonical query (RFC 3986 unreserved
 * characters kept). */
static void query_encode(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '_' || c == '.' || c == '~')
			sbuf_putn(b, (const char *)&c, 1);
		else
			sbuf_printf(b, "%%%02X", c);
	}
}

/* Appends s with the five XML entities escaped. */
static void xml_escape(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': sbuf_puts(b, "&amp;"); break;
		case '<': sbuf_puts(b, "&lt;"); break;
		case '>': sbuf_puts(b, "&gt;"); break;
		case '"': sbuf_puts(b, "&quot;"); break;
		case '\'': sbuf_puts(b, "&apos;"); break;
		default: sbuf_putn(b, s, 1);
		}
	}
}

/* The text of the first element named name (any namespace) under node, in
 * document order; NULL if none. Caller frees with xmlFree(). */
static xmlChar *xml_find_text(xmlNode *node, const char *name)
{
	for (xmlNode *n = node; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (!strcmp((const char *)n->name, name))
			return xmlNodeGetContent(n);
		xmlChar *t = xml_find_text(n->children, name);
		if (t)
			return t;
	}
	return NULL;
}

static xmlDoc *xml_parse(const struct sbuf *b)
{
	if (!b->p || b->len == 0)
		return NULL;
	return xmlReadMemory(b->p, (int)b->len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
			     XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS);
}

/* Copies <Code> and <Message> of an S3 error body into the request. */
static void error_of(struct s3_req *r)
{
	xmlDoc *doc = r->out_mem ? xml_parse(r->out_mem) : NULL;
	if (!doc)
		return;
	xmlNode *root = xmlDocGetRootElement(doc);
	if (root && !strcmp((const char *)root->name, "Error")) {
		xmlChar *code = xml_find_text(root->children, "Code");
		xmlChar *msg = xml_find_text(root->children, "Message");
		snprintf(r->code, sizeof(r->code), "%s", code ? (const char *)code : "");
		snprintf(r->msg, sizeof(r->msg), "%s", msg ? (const char *)msg : "");
		xmlFree(code);
		xmlFree(msg);
	}
	xmlFreeDoc(doc);
}

/* ---- Handles ---------------------------------------------------------------- */

static CURL *handle_get(struct s3_backend *s)
{
	CURL *h = NULL;
	pthread_mutex_lock(&s->mu);
	if (s->n_pool > 0)
		h = s->pool[--s->n_pool];
	pthread_mutex_unlock(&s->mu);
	return h ? h : curl_easy_init();
}

static void handle_put(struct s3_backend *s, CURL *h)
{
	pthread_mutex_lock(&s->mu);
	if (s->n_pool < S3_POOL) {
		s->pool[s->n_pool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- One request, with retries ------------------------------------------------ */

static size_t body_read(char *buf, size_t size, size_t nmemb, void *ctx)
{
	struct s3_req *r = ctx;
	size_t want = size * nmemb;
	if (want > r->body_len - r->sent)
		want = (size_t)(r->body_len - r->sent);
	if (want == 0)
		return 0;
	if (r->body_mem) {
		memcpy(buf, (const char *)r->body_mem + r->sent, want);
		r->sent += want;
		return want;
	}
	ssize_t n;
	do
		n = pread(r->body_fd, buf, want, (off_t)(r->body_off + r->sent));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return CURL_READFUNC_ABORT; /* the file changed under us */
	r->sent += (uint64_t)n;
	return (size_t)n;
}

static int body_seek(void *ctx, curl_off_t off, int origin)
{
	struct s3_req *r = ctx;
	if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	r->sent = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

static size_t resp_write(char *buf, size_t size, size_t nmemb, void *ctx)
{
	struct s3_req *r = ctx;
	size_t n = size * nmemb;
	/* Bodies of errors go to memory even for downloads (to read the code). */
	if (r->out_fd >= 0 && r->status >= 200 && r->status < 300) {
		size_t done = 0;
		while (done < n) {
			ssize_t w = r->stream ? send(r->out_fd, buf + done, n - done, MSG_NOSIGNAL)
					      : pwrite(r->out_fd, buf + done, n - done, (off_t)(r->received + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				r->write_failed = true;
				return 0;
			}
			done += (size_t)w;
		}
		r->received += n;
		return n;
	}
	if (!r->out_mem)
		return n;
	if (r->out_mem->len + n > S3_MAX_XML) {
		r->too_big = true;
		return 0;
	}
	sbuf_putn(r->out_mem, buf, n);
	return r->out_mem->oom ? 0 : n;
}

static size_t resp_header(char *buf, size_t size, size_t nmemb, void *ctx)
{
	struct s3_req *r = ctx;
	size_t n = size * nmemb;
	if (n > 5 && !strncmp(buf, "HTTP/", 5)) {
		/* A new response (after a 100 Continue or a retry): its status. */
		const char *sp = memchr(buf, ' ', n);
		r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
	} else if (n > 5 && !strncasecmp(buf, "etag:", 5)) {
		size_t i = 5;
		while (i < n && buf[i] == ' ')
			i++;
		size_t end = n;
		while (end > i && (buf[end - 1] == '\r' || buf[end - 1] == '\n' || buf[end - 1] == ' '))
			end--;
		snprintf(r->etag, sizeof(r->etag), "%.*s", (int)(end - i), buf + i);
	}
	return n;
}

static bool retryable_curl(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static void backoff(int attempt)
{
	int64_t cap = S3_BACKOFF_BASE_MS << (attempt < 10 ? attempt : 10);
	if (cap > S3_BACKOFF_CAP_MS)
		cap = S3_BACKOFF_CAP_MS;
	unsigned seed = (unsigned)(time(NULL) ^ (uintptr_t)&cap ^ (unsigned)attempt);
	int64_t ms = (int64_t)(rand_r(&seed) % (unsigned)(cap + 1));
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Maps a final status (and S3 code) to an errno. */
static int status_err(const struct s3_req *r)
{
	if (r->status == 404)
		return -ENOENT;
	if (!strcmp(r->code, "RequestTimeTooSkewed"))
		return -ETIME;
	if (r->status == 401 || r->status == 403)
		return -EACCES;
	if (r->status == 412 || r->status == 409)
		return -EAGAIN;
	return -EIO;
}

static int s3_attempt(struct s3_backend *s, CURL *h, struct s3_req *r, const char *url, const char *sha,
		      CURLcode *cc)
{
	struct curl_slist *hd = NULL;
	char line[256];
	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", sha);
	hd = curl_slist_append(hd, line);
	if (s->token_hdr)
		hd = curl_slist_append(hd, s->token_hdr);
	if (r->content_type) {
		snprintf(line, sizeof(line), "Content-Type: %s", r->content_type);
		hd = curl_slist_append(hd, line);
	}
	if (r->content_md5) {
		snprintf(line, sizeof(line), "Content-MD5: %s", r->content_md5);
		hd = curl_slist_append(hd, line);
	}
	/* No "Expect:" override here: libcurl 7.88 would sign the removed
	 * header without sending it (moto answers SignatureDoesNotMatch).
	 * Bodies under 1 MiB get no 100-continue anyway. */
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
	curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, resp_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, resp_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	if (r->range)
		curl_easy_setopt(h, CURLOPT_RANGE, r->range);
	bool has_body = r->body_mem || r->body_fd >= 0;
	if (!strcmp(r->method, "PUT") || (has_body && !strcmp(r->method, "POST"))) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, body_read);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, body_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
	}
	if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "PUT") != 0)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	if (!strcmp(r->method, "HEAD"))
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	__atomic_add_fetch(&s->n_requests, 1, __ATOMIC_RELAXED);
	*cc = curl_easy_perform(h);
	if (*cc == CURLE_OK) {
		long st = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
		r->status = st;
	}
	curl_slist_free_all(hd);
	return 0;
}

static int s3_do(struct s3_backend *s, struct s3_req *r)
{
	struct sbuf url = { 0 }, err_body = { 0 };
	char sha[65];
	int rc = payload_sha256(r->body_fd, r->body_off, r->body_len, r->body_mem, sha);
	if (rc < 0)
		return rc;
	sbuf_printf(&url, "%s%s%s", s->scheme_host, r->key ? s->path_base : "", r->key ? r->key : "");
	if (!r->key) {
		/* The bucket itself: "/bucket" (path style) or "/". */
		size_t n = strlen(s->path_base) - strlen(s->prefix);
		sbuf_putn(&url, s->path_base, n > 1 ? n - 1 : n);
	}
	if (r->query)
		sbuf_printf(&url, "?%s", r->query);
	if (url.oom) {
		sbuf_free(&url);
		return ERR_NOMEM;
	}
	struct sbuf *caller_mem = r->out_mem;
	if (!caller_mem)
		r->out_mem = &err_body;
	CURL *h = handle_get(s);
	if (!h) {
		sbuf_free(&url);
		return ERR_NOMEM;
	}
	int max = r->attempts ? r->attempts : s->max_attempts;
	CURLcode cc = CURLE_OK;
	for (int attempt = 0;; attempt++) {
		r->sent = r->received = 0;
		r->status = 0;
		r->too_big = false;
		r->code[0] = r->msg[0] = r->etag[0] = '\0';
		if (r->out_mem)
			r->out_mem->len = 0;
		if (r->out_fd >= 0 && !r->stream && ftruncate(r->out_fd, 0) < 0) {
			rc = -errno;
			break;
		}
		s3_attempt(s, h, r, url.p, sha, &cc);
		bool ok = cc == CURLE_OK && r->status >= 200 && r->status < 300;
		if (ok) {
			rc = 0;
			break;
		}
		bool again = cc != CURLE_OK ? retryable_curl(cc) : (r->status >= 500 || r->status == 429);
		if (r->stream && r->received > 0)
			again = false;
		if (cc == CURLE_OK)
			error_of(r);
		if (cc == CURLE_OK && !strcmp(r->code, "SlowDown"))
			again = true;
		if (!again || attempt + 1 >= max) {
			if (cc != CURLE_OK) {
				rc = r->too_big ? -EIO : -EHOSTUNREACH;
				snprintf(r->msg, sizeof(r->msg), "%s", curl_easy_strerror(cc));
			} else {
				rc = status_err(r);
			}
			if (again && !r->quiet)
				LOG_WARN("s3", "msg=\"request failed, giving up\" method=%s key=\"%s%s\" attempts=%d "
					 "status=%ld code=\"%s\" err=\"%s\"", r->method, s->prefix, r->key ? r->key : "",
					 attempt + 1, r->status, r->code, r->msg);
			break;
		}
		if (attempt == 0 && !r->quiet)
			LOG_WARN("s3", "msg=\"request failed, retrying\" method=%s key=\"%s%s\" status=%ld err=\"%s\"",
				 r->method, s->prefix, r->key ? r->key : "", r->status,
				 cc != CURLE_OK ? curl_easy_strerror(cc) : r->code);
		backoff(attempt);
	}
	handle_put(s, h);
	if (!caller_mem)
		r->out_mem = NULL;
	sbuf_free(&err_body);
	sbuf_free(&url);
	return rc;
}

static void req_init(struct s3_req *r, const char *method, const char *key)
{
	memset(r, 0, sizeof(*r));
	r->method = method;
	r->key = key;
	r->body_fd = -1;
	r->out_fd = -1;
}

/* ---- Operations --------------------------------------------------------------- */

static int s3_put_single(struct s3_backend *s, const char *name, int fd, uint64_t size)
{
	struct s3_req r;
	req_init(&r, "PUT", name);
	r.body_fd = fd;
	r.body_len = size;
	r.content_type = "application/octet-stream";
	return s3_do(s, &r);
}

static int s3_abort_multipart(struct s3_backend *s, const char *name, const char *upload_id)
{
	struct sbuf q = { 0 };
	sbuf_puts(&q, "uploadId=");
	query_encode(&q, upload_id);
	struct s3_req r;
	req_init(&r, "DELETE", name);
	r.query = q.p;
	int rc = q.oom ? ERR_NOMEM : s3_do(s, &r);
	sbuf_free(&q);
	return rc;
}

static int s3_put_multipart(struct s3_backend *s, const char *name, int fd, uint64_t size)
{
	struct sbuf body = { 0 }, done = { 0 }, q = { 0 };
	struct s3_req r;
	char upload_id[1024] = "";
	uint64_t part = s->part_size;
	while ((size + part - 1) / part > S3_MAX_PARTS)
		part *= 2;

	req_init(&r, "POST", name);
	r.query = "uploads=";
	r.out_mem = &body;
	r.content_type = "application/octet-stream";
	int rc = s3_do(s, &r);
	if (rc == 0) {
		xmlDoc *doc = xml_parse(&body);
		xmlChar *id = doc ? xml_find_text(xmlDocGetRootElement(doc), "UploadId") : NULL;
		if (id)
			snprintf(upload_id, sizeof(upload_id), "%s", (const char *)id);
		xmlFree(id);
		xmlFreeDoc(doc);
		if (!upload_id[0])
			rc = -EIO;
	}
	if (rc < 0)
		goto out;
	sbuf_puts(&done, "<CompleteMultipartUpload>");
	unsigned n = 0;
	for (uint64_t off = 0; rc == 0 && off < size; off += part) {
		n++;
		q.len = 0;
		sbuf_printf(&q, "partNumber=%u&uploadId=", n);
		query_encode(&q, upload_id);
		req_init(&r, "PUT", name);
		r.query = q.p;
		r.body_fd = fd;
		r.body_off = off;
		r.body_len = size - off < part ? size - off : part;
		r.content_type = "application/octet-stream";
		rc = q.oom ? ERR_NOMEM : s3_do(s, &r);
		if (rc == 0 && !r.etag[0])
			rc = -EIO;
		if (rc == 0) {
			sbuf_printf(&done, "<Part><PartNumber>%u</PartNumber><ETag>", n);
			xml_escape(&done, r.etag);
			sbuf_puts(&done, "</ETag></Part>");
		}
	}
	sbuf_puts(&done, "</CompleteMultipartUpload>");
	if (rc == 0) {
		q.len = 0;
		sbuf_puts(&q, "uploadId=");
		query_encode(&q, upload_id);
		req_init(&r, "POST", name);
		r.query = q.p;
		r.body_mem = done.p;
		r.body_len = done.len;
		r.content_type = "application/xml";
		body.len = 0;
		r.out_mem = &body;
		rc = q.oom || done.oom ? ERR_NOMEM : s3_do(s, &r);
		/* A 200 whose body is an <Error> is a failure (the result's root
		 * is CompleteMultipartUploadResult on AWS, ...Response on moto). */
		xmlDoc *doc = rc == 0 ? xml_parse(&body) : NULL;
		xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
		if (rc == 0 && (!root || !strcmp((const char *)root->name, "Error"))) {
			LOG_WARN("s3", "msg=\"multipart upload not completed\" key=\"%s%s\" reply=\"%.200s\"", s->prefix,
				 name, body.p ? body.p : "");
			rc = -EIO;
		}
		xmlFreeDoc(doc);
	}
	if (rc < 0)
		s3_abort_multipart(s, name, upload_id);
out:
	sbuf_free(&body);
	sbuf_free(&done);
	sbuf_free(&q);
	return rc;
}

static int s3_put(struct cloud_backend *be, const char *name, const char *tmp_path)
{
	struct s3_backend *s = (struct s3_backend *)be;
	int fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
	int rc = fd < 0 ? -errno : 0;
	struct stat st;
	if (rc == 0 && fstat(fd, &st) < 0)
		rc = -errno;
	if (rc == 0)
		rc = (uint64_t)st.st_size > s->part_size ? s3_put_multipart(s, name, fd, (uint64_t)st.st_size)
							 : s3_put_single(s, name, fd, (uint64_t)st.st_size);
	if (fd >= 0)
		close(fd);
	unlink(tmp_path);
	return rc;
}

static int tmp_fd(struct s3_backend *s)
{
	int fd = open(s->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd < 0 ? -errno : fd;
	char path[4096];
	snprintf(path, sizeof(path), "%s/s3get.XXXXXX", s->tmp_dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

static int s3_get(struct cloud_backend *be, const char *name, int *fd)
{
	struct s3_backend *s = (struct s3_backend *)be;
	struct s3_req r;
	int out = tmp_fd(s);
	if (out < 0)
		return out;
	req_init(&r, "GET", name);
	r.out_fd = out;
	int rc = s3_do(s, &r);
	if (rc < 0) {
		close(out);
		return rc;
	}
	*fd = out;
	return 0;
}

/* A download into one end of a socket pair, on its own thread
 * (s3_get_stream(); a socket rather than a pipe so that a reader that
 * left gives the writer EPIPE without a SIGPIPE). */
struct s3_stream {
	struct s3_backend *s;
	char *name;
	int wfd;
	int rc;
	pthread_t th;
};

static void *stream_main(void *arg)
{
	struct s3_stream *st = arg;
	struct s3_req r;
	req_init(&r, "GET", st->name);
	r.out_fd = st->wfd;
	r.stream = true;
	st->rc = s3_do(st->s, &r);
	close(st->wfd); /* the reader sees the end (short if rc < 0) */
	if (st->rc < 0 && !r.write_failed) /* not a reader that stopped reading */
		LOG_WARN("s3", "msg=\"download of a stored object failed\" key=\"%s%s\" status=%ld code=\"%s\" "
			 "err=\"%s\"", st->s->prefix, st->name, r.status, r.code, r.msg[0] ? r.msg : err_str(st->rc));
	return NULL;
}

/* The socket's send buffer: the download runs ahead of the reader by up
 * to this much. */
#define STREAM_BUF_BYTES (1 << 20)

static int s3_get_stream(struct cloud_backend *be, const char *name, int *fd, void **stream)
{
	int p[2], buf = STREAM_BUF_BYTES;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
		return -errno;
	(void)setsockopt(p[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf)); /* a hint */
	struct s3_stream *st = calloc(1, sizeof(*st));
	if (st)
		st->name = strdup(name);
	int rc = st && st->name ? 0 : ERR_NOMEM;
	if (rc == 0) {
		st->s = (struct s3_backend *)be;
		st->wfd = p[1];
		rc = -pthread_create(&st->th, NULL, stream_main, st);
	}
	if (rc < 0) {
		close(p[0]);
		close(p[1]);
		if (st)
			free(st->name);
		free(st);
		return rc;
	}
	*fd = p[0];
	*stream = st;
	return 0;
}

static int s3_stream_end(struct cloud_backend *be, void *stream)
{
	struct s3_stream *st = stream;
	pthread_join(st->th, NULL); /* the reader closed its end: a write left fails with EPIPE */
	int rc = st->rc;
	free(st->name);
	free(st);
	return rc;
}

static int s3_read_at(struct cloud_backend *be, const char *name, uint64_t off, void *buf, size_t len, size_t *n)
{
	struct s3_backend *s = (struct s3_backend *)be;
	struct sbuf body = { 0 };
	char range[64];
	struct s3_req r;
	*n = 0;
	if (len == 0)
		return 0;
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, off, off + len - 1);
	req_init(&r, "GET", name);
	r.range = range;
	r.out_mem = &body;
	int rc = s3_do(s, &r);
	if (rc == 0 && r.status != 206 && r.status != 200)
		rc = -EIO;
	if (rc == 0) {
		/* A server that ignores Range sends the whole object. */
		const char *p = body.p ? body.p : "";
		size_t have = body.len;
		if (r.status == 200) {
			p = off < have ? p + off : p + have;
			have = off < have ? have - (size_t)off : 0;
		}
		*n = have < len ? have : len;
		memcpy(buf, p, *n);
	}
	sbuf_free(&body);
	return rc == -EIO && r.status == 416 ? 0 : rc;
}

/* One page of a listing: keys (without the prefix) and sizes. */
struct list_page {
	char **names;
	uint64_t *sizes;
	size_t n;
	char *next; /* continuation token, NULL on the last page */
};

static void page_free(struct list_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->names[i]);
	free(p->names);
	free(p->sizes);
	free(p->next);
	memset(p, 0, sizeof(*p));
}

static int page_parse(struct s3_backend *s, const struct sbuf *body, struct list_page *p)
{
	xmlDoc *doc = xml_parse(body);
	xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root || strcmp((const char *)root->name, "ListBucketResult") != 0) {
		xmlFreeDoc(doc);
		return -EIO;
	}
	size_t cap = 0, plen = strlen(s->prefix);
	int rc = 0;
	bool truncated = false;
	for (xmlNode *c = root->children; c && rc == 0; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (!strcmp((const char *)c->name, "IsTruncated")) {
			xmlChar *t = xmlNodeGetContent(c);
			truncated = t && !strcmp((const char *)t, "true");
			xmlFree(t);
		} else if (!strcmp((const char *)c->name, "NextContinuationToken")) {
			xmlChar *t = xmlNodeGetContent(c);
			free(p->next);
			p->next = t ? strdup((const char *)t) : NULL;
			xmlFree(t);
		} else if (!strcmp((const char *)c->name, "Contents")) {
			xmlChar *key = xml_find_text(c->children, "Key");
			xmlChar *size = xml_find_text(c->children, "Size");
			if (key && strlen((const char *)key) > plen && !strncmp((const char *)key, s->prefix, plen)) {
				if (p->n == cap) {
					cap = cap ? cap * 2 : 64;
					char **nn = realloc(p->names, cap * sizeof(*nn));
					uint64_t *ns = nn ? realloc(p->sizes, cap * sizeof(*ns)) : NULL;
					if (nn)
						p->names = nn;
					if (ns)
						p->sizes = ns;
					if (!nn || !ns)
						rc = ERR_NOMEM;
				}
				if (rc == 0 && (p->names[p->n] = strdup((const char *)key + plen)) == NULL)
					rc = ERR_NOMEM;
				if (rc == 0)
					p->sizes[p->n++] = size ? strtoull((const char *)size, NULL, 10) : 0;
			}
			xmlFree(key);
			xmlFree(size);
		}
	}
	xmlFreeDoc(doc);
	if (rc == 0 && !truncated) {
		free(p->next);
		p->next = NULL;
	}
	if (rc == 0 && truncated && !p->next)
		rc = -EIO; /* truncated without a token: cannot go on */
	return rc;
}

/* One ListObjectsV2 request. */
static int list_request(struct s3_backend *s, const char *prefix, const char *token, int max_keys, int attempts,
			struct s3_req *r, struct sbuf *body)
{
	struct sbuf q = { 0 };
	if (token) {
		sbuf_puts(&q, "continuation-token=");
		query_encode(&q, token);
		sbuf_puts(&q, "&");
	}
	sbuf_puts(&q, "list-type=2");
	if (max_keys > 0)
		sbuf_printf(&q, "&max-keys=%d", max_keys);
	sbuf_puts(&q, "&prefix=");
	struct sbuf full = { 0 };
	sbuf_printf(&full, "%s%s", s->prefix, prefix);
	query_encode(&q, full.p ? full.p : "");
	req_init(r, "GET", NULL);
	r->query = q.p;
	r->out_mem = body;
	r->attempts = attempts < 0 ? -attempts : attempts;
	r->quiet = attempts < 0;
	body->len = 0;
	int rc = q.oom || full.oom ? ERR_NOMEM : s3_do(s, r);
	sbuf_free(&q);
	sbuf_free(&full);
	return rc;
}

static int s3_list(struct cloud_backend *be, const char *prefix,
		   int (*fn)(void *ctx, const char *name, uint64_t size), void *ctx)
{
	struct s3_backend *s = (struct s3_backend *)be;
	struct sbuf body = { 0 };
	char *token = NULL;
	int rc = 0;
	do {
		struct s3_req r;
		struct list_page p = { 0 };
		rc = list_request(s, prefix, token, 0, 0, &r, &body);
		if (rc == 0)
			rc = page_parse(s, &body, &p);
		for (size_t i = 0; rc == 0 && i < p.n; i++)
			rc = fn(ctx, p.names[i], p.sizes[i]);
		free(token);
		token = rc == 0 ? p.next : NULL;
		if (rc == 0)
			p.next = NULL;
		page_free(&p);
	} while (rc == 0 && token);
	free(token);
	sbuf_free(&body);
	return rc;
}

static int s3_del(struct cloud_backend *be, const char *name)
{
	struct s3_backend *s = (struct s3_backend *)be;
	struct s3_req r;
	req_init(&r, "DELETE", name);
	int rc = s3_do(s, &r);
	return rc == -ENOENT ? 0 : rc;
}

/* One DeleteObjects request of at most S3_DELETE_BATCH names. */
static int del_batch(struct s3_backend *s, const char *const *names, size_t n)
{
	struct sbuf body = { 0 }, resp = { 0 };
	char md5[32];
	sbuf_puts(&body, "<Delete><Quiet>true</Quiet>");
	for (size_t i = 0; i < n; i++) {
		sbuf_puts(&body, "<Object><Key>");
		xml_escape(&body, s->prefix);
		xml_escape(&body, names[i]);
		sbuf_puts(&body, "</Key></Object>");
	}
	sbuf_puts(&body, "</Delete>");
	int rc = body.oom ? ERR_NOMEM : md5_base64(body.p, body.len, md5, sizeof(md5));
	if (rc == 0) {
		struct s3_req r;
		req_init(&r, "POST", NULL);
		r.query = "delete=";
		r.body_mem = body.p;
		r.body_len = body.len;
		r.content_type = "application/xml";
		r.content_md5 = md5;
		r.out_mem = &resp;
		rc = s3_do(s, &r);
	}
	if (rc == 0) {
		/* Quiet mode lists only the keys that failed. */
		xmlDoc *doc = xml_parse(&resp);
		xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
		xmlChar *code = root ? xml_find_text(root->children, "Code") : NULL;
		if (code) {
			LOG_WARN("s3", "msg=\"batch delete: some keys failed\" code=\"%s\"", (const char *)code);
			rc = -EIO;
		}
		xmlFree(code);
		xmlFreeDoc(doc);
	}
	sbuf_free(&body);
	sbuf_free(&resp);
	return rc;
}

static int s3_del_many(struct cloud_backend *be, const char *const *names, size_t n)
{
	struct s3_backend *s = (struct s3_backend *)be;
	int rc = 0;
	for (size_t i = 0; i < n; i += S3_DELETE_BATCH) {
		int r = del_batch(s, names + i, n - i < S3_DELETE_BATCH ? n - i : S3_DELETE_BATCH);
		if (rc == 0)
			rc = r;
	}
	return rc;
}

static void s3_close(struct cloud_backend *be)
{
	struct s3_backend *s = (struct s3_backend *)be;
	if (!s)
		return;
	if (s->ready)
		LOG_INFO("s3", "msg=\"closed\" bucket=%s requests=%" PRIu64, s->bucket ? s->bucket : "",
			 __atomic_load_n(&s->n_requests, __ATOMIC_RELAXED));
	for (int i = 0; i < s->n_pool; i++)
		curl_easy_cleanup(s->pool[i]);
	pthread_mutex_destroy(&s->mu);
	free(s->scheme_host);
	free(s->path_base);
	free(s->prefix);
	free(s->bucket);
	free(s->region);
	free(s->sigv4);
	free(s->userpwd);
	free(s->token_hdr);
	free(s->tmp_dir);
	free(s);
}

static const struct cloud_backend_ops s3_ops = {
	.put = s3_put,
	.get = s3_get,
	.list = s3_list,
	.del = s3_del,
	.close = s3_close,
	.read_at = s3_read_at,
	.del_many = s3_del_many,
	.get_stream = s3_get_stream,
	.stream_end = s3_stream_end,
	.kind = "s3",
};

uint64_t cloud_backend_s3_requests(struct cloud_backend *be)
{
	return __atomic_load_n(&((struct s3_backend *)be)->n_requests, __ATOMIC_RELAXED);
}

/* ---- Open and the start-up probe --------------------------------------------- */

static bool prefix_valid(const char *p)
{
	for (; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '/' ||
		      *p == '-' || *p == '_' || *p == '.'))
			return false;
	return true;
}

static bool bucket_valid(const char *b)
{
	size_t n = strlen(b);
	if (n < 3 || n > 63)
		return false;
	for (; *b; b++)
		if (!((*b >= 'a' && *b <= 'z') || (*b >= '0' && *b <= '9') || *b == '-' || *b == '.'))
			return false;
	return true;
}

/* Builds the URL parts from the configuration. */
static int s3_setup(struct s3_backend *s, const struct cloud_s3_config *c, char *why, size_t why_len)
{
	const char *region = c->region && c->region[0] ? c->region : "us-east-1";
	const char *prefix = c->prefix ? c->prefix : "";
	while (*prefix == '/')
		prefix++;
	if (!c->bucket || !bucket_valid(c->bucket)) {
		snprintf(why, why_len, "s3-bucket: \"%s\" is not a valid bucket name (3 to 63 of a-z 0-9 . -)",
			 c->bucket ? c->bucket : "");
		return ERR_CONFIG;
	}
	if (!prefix_valid(prefix) || strstr(prefix, "..") || strstr(prefix, "//")) {
		snprintf(why, why_len, "s3-prefix: \"%s\" may hold only A-Z a-z 0-9 / - _ .", prefix);
		return ERR_CONFIG;
	}
	if (!c->access_key_id || !c->access_key_id[0] || !c->secret_access_key || !c->secret_access_key[0]) {
		snprintf(why, why_len, "S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
			 "(or s3-access-key-id / s3-secret-access-key)");
		return ERR_CONFIG;
	}
	char scheme[16] = "https", host[512];
	if (c->endpoint && c->endpoint[0]) {
		const char *e = c->endpoint, *sep = strstr(e, "://");
		if (sep) {
			snprintf(scheme, sizeof(scheme), "%.*s", (int)(sep - e), e);
			e = sep + 3;
		}
		snprintf(host, sizeof(host), "%s", e);
		size_t hl = strlen(host);
		while (hl > 0 && host[hl - 1] == '/')
			host[--hl] = '\0';
		if ((strcmp(scheme, "http") && strcmp(scheme, "https")) || hl == 0 || strchr(host, '/')) {
			snprintf(why, why_len, "s3-endpoint: \"%s\" is not http(s)://host[:port]", c->endpoint);
			return ERR_CONFIG;
		}
	} else {
		snprintf(host, sizeof(host), "s3.%s.amazonaws.com", region);
	}
	bool path_style = c->addressing == CLOUD_S3_PATH ||
			  (c->addressing == CLOUD_S3_AUTO && c->endpoint && c->endpoint[0]);
	size_t pl = strlen(prefix);
	char *norm = NULL;
	if (asprintf(&norm, "%s%s", prefix, pl && prefix[pl - 1] != '/' ? "/" : "") < 0)
		return ERR_NOMEM;
	s->prefix = norm;
	int ok = 1;
	if (path_style) {
		ok &= asprintf(&s->scheme_host, "%s://%s", scheme, host) >= 0;
		ok &= asprintf(&s->path_base, "/%s/%s", c->bucket, norm) >= 0;
	} else {
		ok &= asprintf(&s->scheme_host, "%s://%s.%s", scheme, c->bucket, host) >= 0;
		ok &= asprintf(&s->path_base, "/%s", norm) >= 0;
	}
	ok &= asprintf(&s->sigv4, "aws:amz:%s:s3", region) >= 0;
	ok &= asprintf(&s->userpwd, "%s:%s", c->access_key_id, c->secret_access_key) >= 0;
	if (c->session_token && c->session_token[0])
		ok &= asprintf(&s->token_hdr, "x-amz-security-token: %s", c->session_token) >= 0;
	ok &= (s->bucket = strdup(c->bucket)) != NULL;
	ok &= (s->region = strdup(region)) != NULL;
	ok &= (s->tmp_dir = strdup(c->tmp_dir ? c->tmp_dir : "/tmp")) != NULL;
	return ok ? 0 : ERR_NOMEM;
}

/* One listing of at most one key: proves the endpoint, the bucket, the
 * credentials and the clock, with one sentence on failure. */
static int s3_probe(struct s3_backend *s, const char *endpoint, char *why, size_t why_len)
{
	struct sbuf body = { 0 };
	struct s3_req r;
	int rc = list_request(s, "", NULL, 1, -2, &r, &body);
	if (rc == 0) {
		struct list_page p = { 0 };
		rc = page_parse(s, &body, &p);
		page_free(&p);
		if (rc < 0)
			snprintf(why, why_len, "S3 endpoint %s answered the bucket listing with something that is "
				 "not a ListBucketResult", endpoint);
	} else if (rc == -EHOSTUNREACH) {
		snprintf(why, why_len, "cannot reach the S3 endpoint %s: %s", endpoint, r.msg);
	} else if (!strcmp(r.code, "NoSuchBucket") || rc == -ENOENT) {
		rc = -ENOENT;
		snprintf(why, why_len, "S3 bucket \"%s\" does not exist at %s (create it first)", s->bucket, endpoint);
	} else if (!strcmp(r.code, "InvalidAccessKeyId")) {
		snprintf(why, why_len, "S3 rejected the access key ID (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID "
			 "or s3-access-key-id");
	} else if (!strcmp(r.code, "SignatureDoesNotMatch")) {
		snprintf(why, why_len, "S3 rejected the request signature (SignatureDoesNotMatch): wrong secret "
			 "access key (AWS_SECRET_ACCESS_KEY or s3-secret-access-key) or region (%s)", s->region);
	} else if (rc == -ETIME) {
		snprintf(why, why_len, "S3 refused the request because this machine's clock is too far from the "
			 "server's (RequestTimeTooSkewed): fix the clock (NTP)");
	} else if (rc == -EACCES) {
		snprintf(why, why_len, "S3 denied access to bucket \"%s\" (%s%s%s): check the credentials and the "
			 "bucket policy", s->bucket, r.code[0] ? r.code : "HTTP ", r.code[0] ? "" : "",
			 r.code[0] ? "" : (r.status == 401 ? "401" : "403"));
	} else {
		snprintf(why, why_len, "S3 bucket \"%s\" at %s: HTTP %ld %s %s", s->bucket, endpoint, r.status, r.code,
			 r.msg);
	}
	sbuf_free(&body);
	return rc;
}

int cloud_backend_s3_open(const struct cloud_s3_config *cfg, struct cloud_backend **out, char *why,
			  size_t why_len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, xmlInitParser);
	why[0] = '\0';
	struct s3_backend *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	s->base.ops = &s3_ops;
	pthread_mutex_init(&s->mu, NULL);
	s->part_size = cfg->part_size ? cfg->part_size : S3_DEFAULT_PART;
	if (s->part_size < S3_MIN_PART)
		s->part_size = S3_MIN_PART;
	s->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : S3_DEFAULT_ATTEMPTS;
	int rc = s3_setup(s, cfg, why, why_len);
	if (rc == 0)
		rc = s3_probe(s, s->scheme_host, why, why_len);
	if (rc < 0) {
		if (!why[0])
			snprintf(why, why_len, "S3: %s", err_str(rc));
		s3_close(&s->base);
		return rc;
	}
	s->ready = true;
	LOG_INFO("s3", "msg=\"bucket reachable\" endpoint=%s bucket=%s prefix=\"%s\" region=%s", s->scheme_host,
		 s->bucket, s->prefix, s->region);
	*out = &s->base;
	return 0;
}
