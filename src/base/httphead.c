/*
 * httphead.c — the request-head parser of the HTTP server; see httphead.h.
 * Pure: no I/O, no logging.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/httpd.h"
#include "base/httphead.h"

static bool is_tchar(unsigned char ch)
{
	return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int httphead_hex_digit(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..n) into a new buffer (plus: '+' is a space).
 * Returns the buffer (NUL-terminated; *out_len bytes before it) or NULL:
 * *bad set for a malformed escape, clear for OOM. */
static char *pct_decode(const char *s, size_t n, bool plus, size_t *out_len, bool *bad)
{
	char *o = malloc(n + 1);
	size_t j = 0;
	*bad = false;
	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi = i + 1 < n ? httphead_hex_digit((unsigned char)s[i + 1]) : -1;
			int lo = i + 2 < n ? httphead_hex_digit((unsigned char)s[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				free(o);
				*bad = true;
				return NULL;
			}
			o[j++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			o[j++] = plus && s[i] == '+' ? ' ' : s[i];
		}
	}
	o[j] = '\0';
	*out_len = j;
	return o;
}

void httphead_free(struct httphead *p)
{
	free(p->head);
	for (unsigned i = 0; i < p->n_args; i++) {
		free(p->args[i].key);
		free(p->args[i].value);
	}
	memset(p, 0, sizeof(*p));
}

#define FAIL(st, ...)                                       \
	do {                                                \
		snprintf(msg, msg_len, __VA_ARGS__);        \
		return (st);                                \
	} while (0)

bool httphead_has_token(const char *v, const char *tok)
{
	size_t tl = strlen(tok);
	const char *p = v;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - p) == tl && !strncasecmp(p, tok, tl))
			return true;
		p = e;
	}
	return false;
}

/* Splits the query string q[0..n) into p->args. */
static unsigned parse_query(struct httphead *p, const char *q, size_t n, char *msg, size_t msg_len)
{
	size_t i = 0;
	while (i < n) {
		size_t e = i;
		while (e < n && q[e] != '&')
			e++;
		if (e > i) {
			if (p->n_args == HTTPHEAD_ARGS_MAX)
				FAIL(HTTP_BAD_REQUEST, "too many query arguments (at most %u)", HTTPHEAD_ARGS_MAX);
			const char *eq = memchr(q + i, '=', e - i);
			size_t kl = eq ? (size_t)(eq - (q + i)) : e - i;
			size_t klen, vlen = 0;
			bool bad;
			struct httphead_arg *a = &p->args[p->n_args];
			a->key = pct_decode(q + i, kl, true, &klen, &bad);
			if (!a->key)
				FAIL(bad ? HTTP_BAD_REQUEST : HTTP_INTERNAL_SERVER_ERROR, "%s",
				     bad ? "malformed percent-encoding in the query" : "out of memory");
			a->value = eq ? pct_decode(eq + 1, e - i - kl - 1, true, &vlen, &bad) : strdup("");
			if (!a->value) {
				free(a->key);
				a->key = NULL;
				FAIL(eq && bad ? HTTP_BAD_REQUEST : HTTP_INTERNAL_SERVER_ERROR, "%s",
				     eq && bad ? "malformed percent-encoding in the query" : "out of memory");
			}
			if (strlen(a->key) != klen) {
				free(a->key);
				free(a->value);
				a->key = a->value = NULL;
				FAIL(HTTP_BAD_REQUEST, "a query argument name holds a NUL byte");
			}
			a->len = vlen;
			p->n_args++;
		}
		i = e + 1;
	}
	return 0;
}

/* Parses the head raw[0..len) (ending in its blank line) into p. Returns 0
 * or the status to answer with, and msg. */
unsigned httphead_parse(const char *raw, size_t len, struct httphead *p, char *msg, size_t msg_len)
{
	memset(p, 0, sizeof(*p));
	if (memchr(raw, '\0', len))
		FAIL(HTTP_BAD_REQUEST, "a NUL byte in the request head");
	if (!(p->head = malloc(len + 1)))
		FAIL(HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	memcpy(p->head, raw, len);
	p->head[len] = '\0';

	/* Lines end in LF, with an optional CR before it; a CR anywhere else
	 * is refused (it lets a request be read two ways). */
	char *lines[HTTPHEAD_FIELDS_MAX + 2];
	unsigned n_lines = 0;
	char *s = p->head;
	/* One empty line before the request line is tolerated (RFC 9112 2.2). */
	if (s[0] == '\n')
		s++;
	else if (s[0] == '\r' && s[1] == '\n')
		s += 2;
	for (;;) {
		char *lf = strchr(s, '\n');
		if (!lf)
			break;
		char *end = lf;
		if (end > s && end[-1] == '\r')
			end--;
		*end = '\0';
		if (memchr(s, '\r', (size_t)(end - s)))
			FAIL(HTTP_BAD_REQUEST, "a bare CR in the request head");
		if (s == end)
			break; /* the blank line */
		if (n_lines == HTTPHEAD_FIELDS_MAX + 1)
			FAIL(HTTP_HEADER_FIELDS_TOO_LARGE, "too many header fields (at most %u)", HTTPHEAD_FIELDS_MAX);
		lines[n_lines++] = s;
		s = lf + 1;
	}
	if (n_lines == 0)
		FAIL(HTTP_BAD_REQUEST, "empty request: no request line");

	/* Request line: method SP request-target SP HTTP-version. */
	char *rl = lines[0];
	char *sp1 = strchr(rl, ' ');
	if (!sp1 || sp1 == rl)
		FAIL(HTTP_BAD_REQUEST, "malformed request line");
	for (char *q = rl; q < sp1; q++)
		if (!is_tchar((unsigned char)*q))
			FAIL(HTTP_BAD_REQUEST, "malformed request line: bad method");
	*sp1 = '\0';
	p->method = rl;
	char *target = sp1 + 1;
	char *sp2 = strchr(target, ' ');
	if (!sp2 || sp2 == target)
		FAIL(HTTP_BAD_REQUEST, "malformed request line");
	*sp2 = '\0';
	size_t tlen = (size_t)(sp2 - target);
	if (tlen > HTTPHEAD_URI_MAX)
		FAIL(HTTP_URI_TOO_LONG, "request target longer than %u bytes", HTTPHEAD_URI_MAX);
	for (size_t i = 0; i < tlen; i++) {
		unsigned char ch = (unsigned char)target[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '#')
			FAIL(HTTP_BAD_REQUEST, "malformed request target");
	}
	if (target[0] != '/')
		FAIL(HTTP_BAD_REQUEST, "request target must be a path (origin form)");
	char *ver = sp2 + 1;
	if (!strcmp(ver, "HTTP/1.1"))
		p->minor = 1;
	else if (!strcmp(ver, "HTTP/1.0"))
		p->minor = 0;
	else if (!strncmp(ver, "HTTP/", 5) && isdigit((unsigned char)ver[5]) && ver[6] == '.' &&
		 isdigit((unsigned char)ver[7]) && ver[8] == '\0')
		FAIL(HTTP_VERSION_NOT_SUPPORTED, "HTTP version not supported: only HTTP/1.0 and HTTP/1.1");
	else
		FAIL(HTTP_BAD_REQUEST, "malformed request line: bad HTTP version");
	p->version = ver;

	char *qm = strchr(target, '?');
	size_t plen = qm ? (size_t)(qm - target) : tlen;
	size_t dlen;
	bool bad;
	char *path = pct_decode(target, plen, false, &dlen, &bad);
	if (!path)
		FAIL(bad ? HTTP_BAD_REQUEST : HTTP_INTERNAL_SERVER_ERROR, "%s",
		     bad ? "malformed percent-encoding in the path" : "out of memory");
	for (size_t i = 0; i < dlen; i++) {
		if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f) {
			free(path);
			FAIL(HTTP_BAD_REQUEST, "a control byte in the path");
		}
	}
	/* The decoded path lives in the head buffer's place of the raw one,
	 * which is at least as long. */
	memcpy(target, path, dlen + 1);
	free(path);
	p->path = target;
	unsigned st;
	if (qm && (st = parse_query(p, qm + 1, strlen(qm + 1), msg, msg_len)) != 0)
		return st;

	/* Header fields: token ":" OWS value OWS. */
	for (unsigned i = 1; i < n_lines; i++) {
		char *h = lines[i];
		if (h[0] == ' ' || h[0] == '\t')
			FAIL(HTTP_BAD_REQUEST, "obsolete line folding in a header");
		char *colon = strchr(h, ':');
		if (!colon || colon == h)
			FAIL(HTTP_BAD_REQUEST, "malformed header line (no name or no colon)");
		for (char *q = h; q < colon; q++)
			if (!is_tchar((unsigned char)*q))
				FAIL(HTTP_BAD_REQUEST, "malformed header name");
		*colon = '\0';
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		char *e = v + strlen(v);
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		for (char *q = v; q < e; q++) {
			unsigned char ch = (unsigned char)*q;
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
				FAIL(HTTP_BAD_REQUEST, "a control byte in header %.64s", h);
		}
		static const char *const once[] = { "Authorization", "Content-Length", "Transfer-Encoding", "Host",
						    "Litefs-Cluster-Id", "Expect" };
		for (size_t k = 0; k < sizeof(once) / sizeof(once[0]); k++) {
			if (strcasecmp(h, once[k]) != 0)
				continue;
			for (unsigned j = 0; j < p->n_hdrs; j++)
				if (!strcasecmp(p->hdrs[j].name, h))
					FAIL(HTTP_BAD_REQUEST, "header %s appears more than once", once[k]);
		}
		p->hdrs[p->n_hdrs++] = (struct httphead_field){ h, v };
	}

	/* What the server itself needs: framing and the connection. */
	bool close = false, keep = false;
	for (unsigned i = 0; i < p->n_hdrs; i++) {
		const char *name = p->hdrs[i].name, *v = p->hdrs[i].value;
		if (!strcasecmp(name, "Content-Length")) {
			if (!v[0] || strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
				FAIL(HTTP_BAD_REQUEST, "invalid Content-Length");
			p->length = strtoull(v, NULL, 10);
			p->has_length = true;
		} else if (!strcasecmp(name, "Transfer-Encoding")) {
			if (strcasecmp(v, "chunked") != 0)
				FAIL(HTTP_NOT_IMPLEMENTED, "unsupported Transfer-Encoding (only chunked)");
			if (p->minor == 0)
				FAIL(HTTP_BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request");
			p->chunked = true;
		} else if (!strcasecmp(name, "Connection")) {
			close = close || httphead_has_token(v, "close");
			keep = keep || httphead_has_token(v, "keep-alive");
		} else if (!strcasecmp(name, "Expect")) {
			if (strcasecmp(v, "100-continue") != 0)
				FAIL(417, "unsupported Expect (only 100-continue)");
			p->expect_continue = p->minor == 1;
		}
	}
	if (p->chunked && p->has_length)
		FAIL(HTTP_BAD_REQUEST, "both Content-Length and Transfer-Encoding");
	p->keep_alive = p->minor == 1 ? !close : keep && !close;
	return 0;
}

unsigned httphead_check(const char *head, size_t len, char *msg, size_t msg_len)
{
	struct httphead p;
	unsigned st = httphead_parse(head, len, &p, msg, msg_len);
	httphead_free(&p);
	return st;
}

/* The length of the head at the start of s[0..n) (through its blank
 * line), or 0 if it is not complete. */
size_t httphead_end(const char *s, size_t n)
{
	/* Skip the one tolerated leading empty line. */
	size_t i = 0;
	if (n >= 1 && s[0] == '\n')
		i = 1;
	else if (n >= 2 && s[0] == '\r' && s[1] == '\n')
		i = 2;
	/* A second empty line: an empty request, which httphead_parse() refuses. */
	if (i > 0 && i < n && s[i] == '\n')
		return i + 1;
	if (i > 0 && i + 1 < n && s[i] == '\r' && s[i + 1] == '\n')
		return i + 2;
	for (; i < n; i++) {
		if (s[i] != '\n')
			continue;
		/* A blank line: LF LF or LF CR LF. */
		if (i + 1 < n && s[i + 1] == '\n')
			return i + 2;
		if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}
