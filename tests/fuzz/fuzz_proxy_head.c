/*
 * fuzz_proxy_head.c — libFuzzer target for the proxy's request and
 * response heads (proxy/proxy_msg.c's callbacks on http-parser): any
 * bytes, fed in pieces whose sizes the input's first byte picks, must be
 * parsed or refused without a memory error, a complete head must have
 * every name and value NUL-terminated inside its arena, and look-ups,
 * hop-by-hop checks and the __txid cookie must work on whatever came out.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_url = cb_url,
	.on_status = cb_url,
	.on_header_field = cb_field,
	.on_header_value = cb_value,
	.on_headers_complete = cb_done,
};

static struct proxy_head hd;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 100000)
		return 0;
	size_t step = (size_t)(data[0] % 64) + 1;
	http_parser p;
	http_parser_init(&p, (data[0] & 0x80) ? HTTP_RESPONSE : HTTP_REQUEST);
	p.data = &hd;
	proxy_head_reset(&hd);
	for (size_t off = 1; off < size && HTTP_PARSER_ERRNO(&p) == HPE_OK && !hd.complete; off += step) {
		size_t k = size - off < step ? size - off : step;
		http_parser_execute(&p, &settings, (const char *)data + off, k);
	}
	if (!hd.complete)
		return 0;
	const char *end = hd.arena + sizeof(hd.arena);
	for (int i = 0; i < hd.n; i++) {
		const char *n = hd.h[i].name, *v = hd.h[i].value;
		if (n < hd.arena || n >= end || (v[0] && (v < hd.arena || v >= end)) || !memchr(n, 0, (size_t)(end - n)))
			abort();
		(void)proxy_head_is_hop(&hd, n);
	}
	char buf[32];
	const char *ck = proxy_head_get(&hd, "Cookie");
	if (ck)
		(void)proxy_cookie(ck, "__txid", buf, sizeof(buf));
	(void)proxy_glob("/a*b*", hd.url);
	return 0;
}
