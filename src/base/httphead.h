/*
 * httphead.h — the request-head parser of the HTTP server (httpd.c):
 * strict HTTP/1.x request line and header fields, the path and query
 * percent-decoded, framing and connection headers interpreted. Pure (no
 * I/O, no logging), so that it can be fuzzed alone (tests/fuzz/
 * fuzz_http_head.c). What it refuses, and with which status, is listed in
 * docs/http.md "Strict parsing".
 */
#ifndef LITEFS_HTTPHEAD_H
#define LITEFS_HTTPHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPHEAD_URI_MAX (8u << 10)   /* request target (414 above) */
#define HTTPHEAD_FIELDS_MAX 100u      /* header fields (431 above) */
#define HTTPHEAD_ARGS_MAX 64u         /* query arguments (400 above) */

struct httphead_field {
	const char *name;
	const char *value;
};

struct httphead_arg {
	char *key;
	char *value;
	size_t len;
};

/* A parsed request head; every pointer points into head. */
struct httphead {
	char *head;
	const char *method, *path, *version;
	int minor;
	struct httphead_field hdrs[HTTPHEAD_FIELDS_MAX];
	unsigned n_hdrs;
	struct httphead_arg args[HTTPHEAD_ARGS_MAX];
	unsigned n_args;
	bool keep_alive, expect_continue, chunked, has_length;
	uint64_t length;
};

/* Parses the head raw[0..len) (ending in its blank line, as httphead_end()
 * finds it) into *h. Returns 0, or the HTTP status to answer with and a
 * message in msg. Either way the caller frees with httphead_free(). */
unsigned httphead_parse(const char *raw, size_t len, struct httphead *h, char *msg, size_t msg_len);
/* Frees what httphead_parse() allocated and clears *h. */
void httphead_free(struct httphead *h);
/* The length of the head at the start of s[0..n) (through its blank line;
 * an empty request counts as complete, and is refused by the parser), or
 * 0 if it is not complete yet. */
size_t httphead_end(const char *s, size_t n);
/* httphead_parse() and httphead_free() in one: 0 or the status the server
 * would answer with, and msg (for the fuzzer and the unit tests). */
unsigned httphead_check(const char *head, size_t len, char *msg, size_t msg_len);
/* The value of a hexadecimal digit, or -1 (also for chunk sizes). */
int httphead_hex_digit(unsigned char ch);
/* Whether the comma-separated header value v lists token tok (case-
 * insensitive, optional whitespace): `Connection: keep-alive, Upgrade`. */
bool httphead_has_token(const char *v, const char *tok);

#endif
