/*
 * test_proxy_msg.c — the proxy's message plumbing (src/proxy/proxy_msg.h):
 * heads collected from http-parser's callbacks (split at every byte, as a
 * slow client sends them), their bounds, header look-ups, hop-by-hop
 * names, cookies, globs and address parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "proxy/proxy_msg.h"

static int cb_url(http_parser *p, const char *at, size_t len)
{
	return proxy_head_url(p->data, at, len);
}

static int cb_field(http_parser *p, const char *at, size_t len)
{
	return proxy_head_field(p->data, at, len);
}

static int cb_value(http_parser *p, const char *at, size_t len)
{
	return proxy_head_value(p->data, at, len);
}

static int cb_done(http_parser *p)
{
	proxy_head_finish(p->data);
	return 0;
}

static const http_parser_settings settings = {
	.on_url = cb_url,
	.on_status = cb_url,
	.on_header_field = cb_field,
	.on_header_value = cb_value,
	.on_headers_complete = cb_done,
};

/* Parses text in pieces of step bytes; returns the parser's error. */
static enum http_errno parse(struct proxy_head *hd, enum http_parser_type type, const char *text, size_t step)
{
	http_parser p;
	http_parser_init(&p, type);
	p.data = hd;
	proxy_head_reset(hd);
	size_t n = strlen(text);
	for (size_t off = 0; off < n; off += step) {
		size_t k = n - off < step ? n - off : step;
		http_parser_execute(&p, &settings, text + off, k);
		if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
			break;
	}
	return HTTP_PARSER_ERRNO(&p);
}

static void test_head_any_split(void **state)
{
	static const char req[] = "POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nConnection: keep-alive, X-Hop\r\n"
				  "X-Hop: 1\r\nCookie: a=b; __txid=00000000000000ff\r\nContent-Length: 0\r\n\r\n";
	struct proxy_head *hd = malloc(sizeof(*hd));
	assert_non_null(hd);
	for (size_t step = 1; step <= sizeof(req); step++) {
		assert_int_equal(parse(hd, HTTP_REQUEST, req, step), HPE_OK);
		assert_true(hd->complete);
		assert_string_equal(hd->url, "/a/b?x=1");
		assert_int_equal(hd->n, 6);
		assert_string_equal(proxy_head_get(hd, "host"), "h");
		assert_string_equal(proxy_head_get(hd, "X-Empty"), "");
		assert_string_equal(proxy_head_get(hd, "x-hop"), "1");
		assert_null(proxy_head_get(hd, "Missing"));
		/* Hop-by-hop: the fixed list and what Connection names. */
		assert_true(proxy_head_is_hop(hd, "X-Hop"));
		assert_true(proxy_head_is_hop(hd, "transfer-encoding"));
		assert_true(proxy_head_is_hop(hd, "Content-Length"));
		assert_false(proxy_head_is_hop(hd, "Host"));
		char v[32];
		assert_true(proxy_cookie(proxy_head_get(hd, "Cookie"), "__txid", v, sizeof(v)));
		assert_string_equal(v, "00000000000000ff");
	}
	/* A response: the reason phrase. */
	assert_int_equal(parse(hd, HTTP_RESPONSE, "HTTP/1.1 404 Not Found\r\nA: b\r\n\r\n", 3), HPE_OK);
	assert_string_equal(hd->reason, "Not Found");
	assert_string_equal(proxy_head_get(hd, "a"), "b");
	free(hd);
}

static void test_head_bounds(void **state)
{
	struct proxy_head *hd = malloc(sizeof(*hd));
	assert_non_null(hd);
	/* More fields than PROXY_MAX_HEADERS. */
	size_t cap = 64 + (PROXY_MAX_HEADERS + 1) * 8;
	char *many = malloc(cap);
	strcpy(many, "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= PROXY_MAX_HEADERS; i++)
		strcat(many, "A: b\r\n");
	strcat(many, "\r\n");
	assert_int_not_equal(parse(hd, HTTP_REQUEST, many, 7), HPE_OK);
	assert_true(hd->too_big);
	free(many);
	/* A value past PROXY_MAX_HEAD (below the parser's own 80 KB bound). */
	char *big = malloc(PROXY_MAX_HEAD + 100);
	strcpy(big, "GET / HTTP/1.1\r\nX: ");
	size_t n = strlen(big);
	memset(big + n, 'a', PROXY_MAX_HEAD + 10);
	strcpy(big + n + PROXY_MAX_HEAD + 10, "\r\n\r\n");
	assert_int_not_equal(parse(hd, HTTP_REQUEST, big, 4096), HPE_OK);
	assert_true(hd->too_big);
	free(big);
	/* Smuggling shapes are the parser's to refuse. */
	assert_int_not_equal(parse(hd, HTTP_REQUEST,
				   "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 5),
			     HPE_OK);
	free(hd);
}

static void test_cookie_token_glob(void **state)
{
	char v[8];
	assert_false(proxy_cookie("a=b; x__txid=1", "__txid", v, sizeof(v)));
	assert_true(proxy_cookie("__txid=12", "__txid", v, sizeof(v)));
	assert_string_equal(v, "12");
	assert_false(proxy_cookie("__txid=123456789", "__txid", v, sizeof(v))); /* longer than buf */
	assert_false(proxy_cookie("", "__txid", v, sizeof(v)));

	assert_true(proxy_glob("/static/*", "/static/a/b.png"));
	assert_true(proxy_glob("*.png", "/x/y.png"));
	assert_false(proxy_glob("*.png", "/x/y.pngx"));
	assert_true(proxy_glob("/a*b*c", "/aXbYbZc"));
	assert_false(proxy_glob("/login", "/login/x"));
	assert_true(proxy_glob("*", ""));
}

static void test_resolve(void **state)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	assert_int_equal(proxy_resolve("127.0.0.1:80", false, &ss, &sl), 0);
	assert_int_equal(proxy_resolve(":8080", false, &ss, &sl), 0);
	assert_int_equal(proxy_resolve("http://127.0.0.1:9/path", false, &ss, &sl), 0);
	assert_int_equal(proxy_resolve("[::1]:80", false, &ss, &sl), 0);
	assert_int_equal(proxy_resolve("127.0.0.1", false, &ss, &sl), ERR_INVAL);
	assert_int_equal(proxy_resolve("127.0.0.1:", false, &ss, &sl), ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head_any_split),
		cmocka_unit_test(test_head_bounds),
		cmocka_unit_test(test_cookie_token_glob),
		cmocka_unit_test(test_resolve),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
