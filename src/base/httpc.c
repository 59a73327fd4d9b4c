/*
 * httpc.c — the libcurl client (see httpc.h).
 *
 * The sink is chosen per write callback from the status known at that
 * moment: a 2xx body goes where the caller asked, anything else to memory,
 * so an error reply never lands in the caller's output file.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/httpc.h"
#include "base/sys.h"

#define HTTPC_CONNECT_TIMEOUT_MS 10000L
/* A file body is read in pieces of at most this size. */
#define HTTPC_READ_MAX (1u << 20)

void httpc_req_init(struct httpc_req *q, CURL *c)
{
	memset(q, 0, sizeof(*q));
	q->curl = c;
	q->connect_timeout_ms = HTTPC_CONNECT_TIMEOUT_MS;
	q->up_fd = -1;
	q->down_fd = -1;
	q->mem_max = HTTPC_MAX_ERROR_BODY;
}

void httpc_req_init_post(struct httpc_req *q, CURL *c, const char *url)
{
	httpc_req_init(q, c);
	q->method = "POST";
	q->url = url;
	q->up_buf = "";
	q->up_buf_len = 0;
}

void httpc_req_free(struct httpc_req *q)
{
	free(q->mem);
	q->mem = NULL;
	q->mem_len = 0;
}

/* ---- libcurl callbacks ------------------------------------------------------ */

static size_t mem_append(struct httpc_req *q, const char *buf, size_t len)
{
	if (len > q->mem_max - q->mem_len) {
		q->down_err = ERR_CLOUD_TOO_LARGE;
		return 0;
	}
	char *p = realloc(q->mem, q->mem_len + len + 1);
	if (!p) {
		q->down_err = ERR_NOMEM;
		return 0;
	}
	q->mem = p;
	memcpy(q->mem + q->mem_len, buf, len);
	q->mem_len += len;
	q->mem[q->mem_len] = '\0';
	return len;
}

static size_t on_write(char *buf, size_t size, size_t n, void *arg)
{
	struct httpc_req *q = arg;
	size_t len = size * n;
	if (q->status == 0)
		curl_easy_getinfo(q->curl, CURLINFO_RESPONSE_CODE, &q->status);
	bool ok = q->status >= 200 && q->status < 300;
	if (ok && q->ok_write)
		return q->ok_write(q->ok_ctx, buf, len);
	if (ok && q->down_fd >= 0) {
		if (q->down_max && q->down_len + len > q->down_max) {
			q->down_err = ERR_CLOUD_TOO_LARGE;
			return 0;
		}
		int rc = sys_pwrite_all(q->down_fd, buf, len, (off_t)q->down_len);
		if (rc != 0) {
			q->down_err = rc;
			return 0;
		}
		q->down_len += len;
		return len;
	}
	return mem_append(q, buf, len);
}

/* Keeps the reason phrase of the last status line ("HTTP/1.1 503 Service
 * Unavailable"): the error text of a reply without a body. */
static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
	struct httpc_req *q = arg;
	size_t len = size * n;
	if (len > 5 && !strncmp(buf, "HTTP/", 5)) {
		const char *p = memchr(buf, ' ', len), *end = buf + len;
		p = p ? memchr(p + 1, ' ', (size_t)(end - p - 1)) : NULL;
		q->reason[0] = '\0';
		if (p) {
			p++;
			while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
				end--;
			snprintf(q->reason, sizeof(q->reason), "%.*s", (int)(end - p), p);
		}
	}
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
	struct httpc_req *q = arg;
	size_t want = size * n;
	if (want > q->up_len)
		want = (size_t)q->up_len;
	if (want > HTTPC_READ_MAX)
		want = HTTPC_READ_MAX;
	if (want == 0)
		return 0;
	int got = fdio_pread_full(q->up_fd, buf, want, (off_t)q->up_off);
	if (got < 0 || (size_t)got != want) {
		/* Never send a short body: the server would take a truncated file. */
		q->up_err = got < 0 ? got : ERR_IO_SHORT;
		return CURL_READFUNC_ABORT;
	}
	q->up_off += want;
	q->up_len -= want;
	return want;
}

/* libcurl rewinds the body when it must send it again. */
static int on_seek(void *arg, curl_off_t off, int origin)
{
	struct httpc_req *q = arg;
	if (origin != SEEK_SET || off < 0 || (uint64_t)off > q->up_total)
		return CURL_SEEKFUNC_CANTSEEK;
	q->up_off = q->up_start + (uint64_t)off;
	q->up_len = q->up_total - (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct httpc_req *q = arg;
	return q->progress(q->progress_ctx, (int64_t)dt, (int64_t)dn, (int64_t)ut, (int64_t)un);
}

/* ---- Requests --------------------------------------------------------------- */

CURLcode httpc_perform(struct httpc_req *q)
{
	CURL *c = q->curl;
	curl_easy_reset(c);
	q->status = 0;
	q->reason[0] = '\0';
	q->errbuf[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, q->url);
	if (q->up_fd >= 0) {
		q->up_start = q->up_off;
		q->up_total = q->up_len;
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, q);
		curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(c, CURLOPT_SEEKDATA, q);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->up_len);
		/* A file of any size: libcurl's largest upload buffer, so the
		 * body goes out in 2 MB reads and sends, not 64 KB ones. */
		curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 2L << 20);
	} else if (q->up_buf) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->up_buf);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->up_buf_len);
	}
	if (q->method) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
		/* A POST without a body still says so (Content-Length: 0). */
		if (!strcmp(q->method, "POST") && q->up_fd < 0 && !q->up_buf)
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
	}
	if (q->headers)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, q->headers);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, q);
	if (q->progress) {
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, q);
	}
	if (q->recv_buffer)
		curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)q->recv_buffer);
	if (q->ca_file && q->ca_file[0])
		curl_easy_setopt(c, CURLOPT_CAINFO, q->ca_file);
	if (q->cert_file && q->cert_file[0])
		curl_easy_setopt(c, CURLOPT_SSLCERT, q->cert_file);
	if (q->key_file && q->key_file[0])
		curl_easy_setopt(c, CURLOPT_SSLKEY, q->key_file);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, q->errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, q->connect_timeout_ms);
	if (q->timeout_ms > 0)
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms);
	if (q->stall_s > 0) {
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, q->stall_s);
	}
	if (q->keepalive)
		curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	if (q->user_agent)
		curl_easy_setopt(c, CURLOPT_USERAGENT, q->user_agent);
	q->cc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status != 0)
		q->status = status;
	/* The handle must not point at q once q is gone. */
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	return q->cc;
}

const char *httpc_transport_error(const struct httpc_req *q)
{
	return q->errbuf[0] ? q->errbuf : curl_easy_strerror(q->cc);
}

bool httpc_header(const struct httpc_req *q, const char *name, char *out, size_t len)
{
	struct curl_header *h = NULL;
	if (curl_easy_header(q->curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h || !h->value)
		return false;
	snprintf(out, len, "%s", h->value);
	return true;
}

/* ---- Replies ------------------------------------------------------------------ */

void httpc_error_parse(const struct httpc_req *q, struct httpc_error *e)
{
	json_error_t jerr;
	json_t *root = q->mem ? json_loads(q->mem, 0, &jerr) : NULL;
	const char *msg = json_string_value(json_object_get(root, "error"));
	const char *code = json_string_value(json_object_get(root, "code"));
	e->from_json = msg != NULL;
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	if (msg)
		snprintf(e->text, sizeof(e->text), "%s", msg);
	else if (q->mem && q->mem[0])
		snprintf(e->text, sizeof(e->text), "%s", q->mem);
	else
		snprintf(e->text, sizeof(e->text), "%s", q->reason[0] ? q->reason : "(no body)");
	json_decref(root);
}

void httpc_text_for_log(char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
			*s = '\'';
}

int httpc_add_header(struct curl_slist **list, const char *fmt, ...)
{
	char *line = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	struct curl_slist *next = n >= 0 ? curl_slist_append(*list, line) : NULL;
	if (n >= 0)
		free(line);
	if (!next) {
		curl_slist_free_all(*list);
		*list = NULL;
		return ERR_NOMEM;
	}
	*list = next;
	return 0;
}

char *httpc_url(CURL *c, const char *base, const char *path, const char *const *query)
{
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	char *url = NULL;
	if (asprintf(&url, "%.*s%s", (int)n, base, path) < 0)
		return NULL;
	for (size_t i = 0; query && query[i]; i += 2) {
		if (!query[i + 1])
			continue;
		char *esc = curl_easy_escape(c, query[i + 1], 0), *next = NULL;
		if (!esc || asprintf(&next, "%s%c%s=%s", url, strchr(url, '?') ? '&' : '?', query[i], esc) < 0)
			next = NULL;
		curl_free(esc);
		free(url);
		if (!next)
			return NULL;
		url = next;
	}
	return url;
}
