/* Unit tests of stream.c: the replication frame codec, including every
 * rejection rule, truncation at every byte and input in chunks of any size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "proto/stream.h"

/* A growable byte buffer for building streams. */
struct buf {
	uint8_t *p;
	size_t len;
};

static void buf_add(struct buf *b, const void *data, size_t len)
{
	b->p = realloc(b->p, b->len + len + 1);
	assert_non_null(b->p);
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void add_hello(struct buf *b)
{
	uint8_t h[STREAM_HDR_SIZE + STREAM_HELLO_LEN];
	buf_add(b, h, stream_encode_hello(h));
}

static void add_ltx(struct buf *b, uint8_t type, const char *name, uint32_t ltx_len, uint8_t fill)
{
	uint8_t pre[STREAM_LTX_PREFIX_MAX];
	int n = stream_encode_ltx_prefix(pre, type, name, ltx_len);
	assert_true(n > 0);
	buf_add(b, pre, (size_t)n);
	for (uint32_t i = 0; i < ltx_len; i++) {
		uint8_t c = (uint8_t)(fill + i);
		buf_add(b, &c, 1);
	}
}

static void add_empty(struct buf *b, uint8_t type)
{
	uint8_t h[STREAM_HDR_SIZE];
	stream_encode_header(h, type, 0);
	buf_add(b, h, sizeof(h));
}

static void add_list(struct buf *b, uint8_t type, uint32_t flags, uint32_t n)
{
	struct stream_entry *e = calloc(n ? n : 1, sizeof(*e));
	assert_non_null(e);
	for (uint32_t i = 0; i < n; i++) {
		snprintf(e[i].name, sizeof(e[i].name), "db%u.sqlite", i);
		e[i].txid = 1000 + i;
		e[i].checksum = 0x8000000000000000ull | i;
		e[i].hwm = i;
	}
	struct stream_list l = { .time_ms = 1700000000123, .flags = flags, .n = n, .entries = e };
	uint8_t *out;
	size_t out_len;
	assert_int_equal(stream_encode_list(type, &l, &out, &out_len), 0);
	buf_add(b, out, out_len);
	free(out);
	free(e);
}

/* What a decoder saw, summarised. */
struct seen {
	char log[4096];    /* one letter per event, names in brackets */
	uint64_t ltx_sum;  /* sum of LTX bytes (weighted by position) */
	size_t ltx_bytes;
	uint32_t list_n;
	int64_t list_time;
	uint64_t list_txid_sum;
};

static void seen_event(struct seen *s, const struct stream_event *ev)
{
	char tmp[300];
	switch (ev->kind) {
	case STREAM_EV_HELLO: strcat(s->log, "H"); break;
	case STREAM_EV_READY: strcat(s->log, "R"); break;
	case STREAM_EV_END: strcat(s->log, "E"); break;
	case STREAM_EV_LTX_BEGIN:
		snprintf(tmp, sizeof(tmp), "%c[%s:%u]", ev->snapshot ? 'S' : 'L', ev->name, ev->ltx_len);
		strcat(s->log, tmp);
		break;
	case STREAM_EV_LTX_DATA:
		for (size_t i = 0; i < ev->len; i++)
			s->ltx_sum += (uint64_t)ev->data[i] * (s->ltx_bytes + i + 1);
		s->ltx_bytes += ev->len;
		break;
	case STREAM_EV_LTX_END: strcat(s->log, "."); break;
	case STREAM_EV_LIST:
		snprintf(tmp, sizeof(tmp), "%c{%u}", ev->type, ev->list->n);
		strcat(s->log, tmp);
		s->list_n = ev->list->n;
		s->list_time = ev->list->time_ms;
		for (uint32_t i = 0; i < ev->list->n; i++)
			s->list_txid_sum += ev->list->entries[i].txid;
		break;
	}
}

/* Feeds data in chunks of `chunk` bytes (0: all at once). Returns the
 * first error, or what stream_parser_finish says. */
static int feed(enum stream_dir dir, uint32_t max_ltx, const uint8_t *data, size_t len, size_t chunk,
		struct seen *s, struct stream_parser *out_p)
{
	struct stream_parser p;
	stream_parser_init(&p, dir, max_ltx);
	memset(s, 0, sizeof(*s));
	int rc = 0;
	size_t off = 0;
	while (rc >= 0 && (off < len || off == 0)) {
		size_t n = chunk == 0 || len - off < chunk ? len - off : chunk;
		const uint8_t *in = data + off;
		size_t left = n;
		for (;;) {
			struct stream_event ev;
			size_t used = 0;
			rc = stream_parse(&p, in, left, &used, &ev);
			assert_true(used <= left);
			in += used;
			left -= used;
			if (rc <= 0)
				break;
			seen_event(s, &ev);
		}
		off += n;
		if (n == 0)
			break;
	}
	if (rc >= 0)
		rc = stream_parser_finish(&p);
	if (out_p)
		*out_p = p;
	else
		stream_parser_free(&p);
	return rc;
}

static struct buf sample_response(void)
{
	struct buf b = { 0 };
	add_hello(&b);
	add_ltx(&b, STREAM_LTX, "app.db", 300, 7);
	add_list(&b, STREAM_HEARTBEAT, 0, 3);
	add_ltx(&b, STREAM_SNAPSHOT, "other db", STREAM_MIN_LTX_LEN, 1);
	add_empty(&b, STREAM_READY);
	add_list(&b, STREAM_HEARTBEAT, 0, 0);
	add_empty(&b, STREAM_END);
	return b;
}

static void test_round_trip_any_chunking(void **state)
{
	(void)state;
	struct buf b = sample_response();
	struct seen ref;
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, b.p, b.len, 0, &ref, NULL), 0);
	assert_string_equal(ref.log, "HL[app.db:300].B{3}S[other db:116].RB{0}E");
	assert_int_equal(ref.ltx_bytes, 300 + STREAM_MIN_LTX_LEN);
	size_t chunks[] = { 1, 2, 3, 5, 7, 64, 301, 4096 };
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct seen s;
		assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, b.p, b.len, chunks[i], &s, NULL), 0);
		assert_string_equal(s.log, ref.log);
		assert_int_equal(s.ltx_sum, ref.ltx_sum);
		assert_int_equal(s.ltx_bytes, ref.ltx_bytes);
	}
	free(b.p);
}

static void test_list_fields(void **state)
{
	(void)state;
	struct buf b = { 0 };
	add_hello(&b);
	add_list(&b, STREAM_POSITIONS, STREAM_LIST_ONLY, 5);
	struct stream_parser p;
	struct seen s;
	assert_int_equal(feed(STREAM_DIR_REQUEST, 0, b.p, b.len, 3, &s, &p), 0);
	assert_int_equal(s.list_n, 5);
	assert_int_equal(s.list_time, 1700000000123);
	assert_int_equal(s.list_txid_sum, 1000 + 1001 + 1002 + 1003 + 1004);
	assert_int_equal(p.list.flags, STREAM_LIST_ONLY);
	assert_string_equal(p.list.entries[4].name, "db4.sqlite");
	assert_int_equal(p.list.entries[4].checksum, 0x8000000000000004ull);
	assert_int_equal(p.list.entries[4].hwm, 4);
	stream_parser_free(&p);
	stream_parser_free(&p); /* idempotent */
	free(b.p);
}

/* Acknowledgements (POST /stream/ack): an ack frame is a list in the
 * request direction, without flags, and never part of a response. */
static void test_ack_frames(void **state)
{
	(void)state;
	struct buf b = { 0 };
	add_hello(&b);
	add_list(&b, STREAM_ACK, 0, 3);
	struct stream_parser p;
	struct seen s;
	assert_int_equal(feed(STREAM_DIR_REQUEST, 0, b.p, b.len, 2, &s, &p), 0);
	assert_int_equal(s.list_n, 3);
	assert_int_equal(s.list_txid_sum, 1000 + 1001 + 1002);
	assert_int_equal(p.type, STREAM_ACK);
	assert_string_equal(p.list.entries[2].name, "db2.sqlite");
	stream_parser_free(&p);
	/* Not in a response. */
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, b.p, b.len, b.len, &s, NULL), ERR_REPL_PROTOCOL);
	free(b.p);
	/* No flags: ONLY belongs to positions. */
	struct buf f = { 0 };
	add_hello(&f);
	add_list(&f, STREAM_ACK, STREAM_LIST_ONLY, 1);
	assert_int_equal(feed(STREAM_DIR_REQUEST, 0, f.p, f.len, f.len, &s, NULL), ERR_REPL_PROTOCOL);
	free(f.p);
}

/* Every strict prefix either ends at a frame boundary (finish says 0) or
 * is reported as truncated; never a crash, never a wrong event. */
static void test_truncated_everywhere(void **state)
{
	(void)state;
	struct buf b = sample_response();
	size_t boundaries[16], nb = 0;
	/* Recompute frame boundaries from the headers. */
	for (size_t off = 0; off < b.len;) {
		boundaries[nb++] = off;
		uint32_t len = (uint32_t)b.p[off + 1] << 24 | (uint32_t)b.p[off + 2] << 16 |
			       (uint32_t)b.p[off + 3] << 8 | b.p[off + 4];
		off += STREAM_HDR_SIZE + len;
	}
	for (size_t cut = 0; cut < b.len; cut++) {
		struct seen s;
		struct stream_parser p;
		int rc = feed(STREAM_DIR_RESPONSE, 0, b.p, cut, 2, &s, &p);
		bool at_boundary = false;
		for (size_t k = 0; k < nb; k++)
			at_boundary |= boundaries[k] == cut;
		if (at_boundary) {
			assert_int_equal(rc, 0);
			assert_false(p.ended);
		} else {
			assert_int_equal(rc, ERR_REPL_PROTOCOL);
			assert_non_null(strstr(p.why, "truncated"));
		}
		stream_parser_free(&p);
	}
	free(b.p);
}

/* Builds a response stream: hello, then the given raw frame bytes. */
static int feed_after_hello(enum stream_dir dir, uint32_t max_ltx, const uint8_t *frame, size_t len,
			    const char **why)
{
	static char why_buf[200];
	struct buf b = { 0 };
	add_hello(&b);
	buf_add(&b, frame, len);
	struct seen s;
	struct stream_parser p;
	int rc = feed(dir, max_ltx, b.p, b.len, 0, &s, &p);
	snprintf(why_buf, sizeof(why_buf), "%s", p.why ? p.why : "");
	*why = why_buf;
	stream_parser_free(&p);
	free(b.p);
	return rc;
}

static void test_oversized_lengths(void **state)
{
	(void)state;
	const char *why;
	uint8_t f[STREAM_LTX_PREFIX_MAX + 8];

	/* An LTX larger than the decoder's limit is refused from its header,
	 * before a byte of it is read. */
	int n = stream_encode_ltx_prefix(f, STREAM_LTX, "a", 1000);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 999, f, (size_t)n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "larger than the limit"));
	/* The same frame is fine with a limit of 1000 (then truncated). */
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 1000, f, (size_t)n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "truncated"));

	/* A list frame of 4 GiB is refused without allocating it. */
	stream_encode_header(f, STREAM_HEARTBEAT, 0xffffffffu);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "list frame length"));
	stream_encode_header(f, STREAM_HEARTBEAT, STREAM_MAX_LIST_LEN + 1);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);

	/* A name length larger than the frame. */
	stream_encode_header(f, STREAM_LTX, 2 + 1 + STREAM_MIN_LTX_LEN);
	f[5] = 0x01;
	f[6] = 0x00; /* 256 */
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, 7, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "bad name length"));
	f[5] = 0;
	f[6] = 0; /* empty name */
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, 7, &why), ERR_REPL_PROTOCOL);

	/* A name that leaves too little for an LTX. */
	stream_encode_header(f, STREAM_LTX, 2 + 10 + STREAM_MIN_LTX_LEN - 1);
	f[5] = 0;
	f[6] = 10;
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, 7, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "shorter than"));

	/* Frames too short for any LTX. */
	stream_encode_header(f, STREAM_SNAPSHOT, 5);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);

	/* Control frames with payloads. */
	stream_encode_header(f, STREAM_READY, 1);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);
	stream_encode_header(f, STREAM_END, 4);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);
}

static void test_framing_rules(void **state)
{
	(void)state;
	const char *why;
	uint8_t f[64];
	struct seen s;
	struct stream_parser p;

	/* Rule 1: hello first, right magic and version, once. */
	stream_encode_header(f, STREAM_READY, 0);
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, 0, &s, &p), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(p.why, "hello"));
	stream_parser_free(&p);
	size_t n = stream_encode_hello(f);
	f[STREAM_HDR_SIZE] = 'X';
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, f, n, 0, &s, &p), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(p.why, "magic"));
	stream_parser_free(&p);
	n = stream_encode_hello(f);
	f[n - 1] = 2;
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, f, n, 0, &s, &p), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(p.why, "version"));
	stream_parser_free(&p);
	n = stream_encode_hello(f);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "second hello"));
	stream_encode_header(f, STREAM_HELLO, 9);
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, 0, &s, &p), ERR_REPL_PROTOCOL);
	stream_parser_free(&p);

	/* Rule 2: types by direction; unknown types. */
	stream_encode_header(f, STREAM_READY, 0);
	assert_int_equal(feed_after_hello(STREAM_DIR_REQUEST, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);
	stream_encode_header(f, STREAM_POSITIONS, 16);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);
	stream_encode_header(f, 'Z', 0);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, STREAM_HDR_SIZE, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "unknown frame type"));

	/* Rule 5: nothing after end. */
	struct buf b = { 0 };
	add_hello(&b);
	add_empty(&b, STREAM_END);
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, b.p, b.len, 0, &s, &p), 0);
	assert_true(p.ended);
	stream_parser_free(&p);
	add_empty(&b, STREAM_READY);
	assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, b.p, b.len, 0, &s, &p), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(p.why, "after the end"));
	/* Errors are sticky. */
	struct stream_event ev;
	size_t used;
	assert_int_equal(stream_parse(&p, b.p, 1, &used, &ev), ERR_REPL_PROTOCOL);
	assert_int_equal(stream_parser_finish(&p), ERR_REPL_PROTOCOL);
	stream_parser_free(&p);
	free(b.p);
}

/* A list frame built by hand: header, time, flags, n, then raw entry bytes. */
static size_t raw_list(uint8_t *f, uint8_t type, uint32_t flags, uint32_t n, const uint8_t *entries, size_t elen)
{
	stream_encode_header(f, type, (uint32_t)(16 + elen));
	memset(f + 5, 0, 8);
	f[13] = (uint8_t)(flags >> 24), f[14] = (uint8_t)(flags >> 16), f[15] = (uint8_t)(flags >> 8);
	f[16] = (uint8_t)flags;
	f[17] = (uint8_t)(n >> 24), f[18] = (uint8_t)(n >> 16), f[19] = (uint8_t)(n >> 8), f[20] = (uint8_t)n;
	memcpy(f + 21, entries, elen);
	return 21 + elen;
}

static void test_list_rules(void **state)
{
	(void)state;
	const char *why;
	uint8_t f[256], e[64];
	memset(e, 0, sizeof(e));
	e[1] = 3;
	memcpy(e + 2, "a.d", 3); /* one entry: 2 + 3 + 24 = 29 bytes */

	size_t n = raw_list(f, STREAM_HEARTBEAT, 0, 1, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), 0);
	/* Unknown flags; ONLY is for positions only. */
	n = raw_list(f, STREAM_HEARTBEAT, STREAM_LIST_ONLY, 1, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "flags"));
	n = raw_list(f, STREAM_POSITIONS, 0x80, 1, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_REQUEST, 0, f, n, &why), ERR_REPL_PROTOCOL);
	/* A count the length cannot hold (refused before allocating). */
	n = raw_list(f, STREAM_HEARTBEAT, 0, 0xffffffffu, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "more entries"));
	/* More entries than any node may follow (each decoded entry costs
	 * memory: a cap, whatever the length allows). */
	{
		uint32_t cnt = STREAM_MAX_LIST_ENTRIES + 1;
		size_t elen = (size_t)cnt * 27;
		uint8_t *many = calloc(1, elen), *big = malloc(21 + elen);
		assert_non_null(many);
		assert_non_null(big);
		for (uint32_t i = 0; i < cnt; i++) {
			many[(size_t)i * 27 + 1] = 1;
			many[(size_t)i * 27 + 2] = 'x';
		}
		n = raw_list(big, STREAM_HEARTBEAT, 0, cnt, many, elen);
		assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, big, n, &why), ERR_REPL_PROTOCOL);
		assert_non_null(strstr(why, "a node may follow"));
		n = raw_list(big, STREAM_HEARTBEAT, 0, cnt - 1, many, elen - 27);
		assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, big, n, &why), 0);
		free(many);
		free(big);
	}
	/* Two entries announced, one present. */
	uint8_t e2[64];
	memcpy(e2, e, 29);
	memset(e2 + 29, 0, 10);
	n = raw_list(f, STREAM_HEARTBEAT, 0, 2, e2, 39);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	/* Bytes after the last entry. */
	n = raw_list(f, STREAM_HEARTBEAT, 0, 1, e2, 30);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "bytes after"));
	/* NUL inside a name; zero-length name; name past the end. */
	e[3] = '\0';
	n = raw_list(f, STREAM_HEARTBEAT, 0, 1, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "NUL"));
	e[3] = '.';
	e[1] = 0;
	n = raw_list(f, STREAM_HEARTBEAT, 0, 1, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);
	e[1] = 200;
	n = raw_list(f, STREAM_HEARTBEAT, 0, 1, e, 29);
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, f, n, &why), ERR_REPL_PROTOCOL);

	/* NUL in an LTX frame's name. */
	uint8_t pre[STREAM_LTX_PREFIX_MAX];
	int pn = stream_encode_ltx_prefix(pre, STREAM_LTX, "ab", STREAM_MIN_LTX_LEN);
	pre[STREAM_HDR_SIZE + 2] = '\0';
	assert_int_equal(feed_after_hello(STREAM_DIR_RESPONSE, 0, pre, (size_t)pn, &why), ERR_REPL_PROTOCOL);
	assert_non_null(strstr(why, "NUL"));
}

static void test_encoder_rejects(void **state)
{
	(void)state;
	uint8_t pre[STREAM_LTX_PREFIX_MAX];
	char long_name[STREAM_MAX_NAME + 2];
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_LTX, "", 200), ERR_INVAL);
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_LTX, NULL, 200), ERR_INVAL);
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_LTX, long_name, 200), ERR_INVAL);
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_READY, "a", 200), ERR_INVAL);
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_LTX, "a", STREAM_MIN_LTX_LEN - 1), ERR_INVAL);
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_LTX, "a", STREAM_MAX_LTX_LEN + 1), ERR_INVAL);
	long_name[STREAM_MAX_NAME] = '\0';
	assert_int_equal(stream_encode_ltx_prefix(pre, STREAM_SNAPSHOT, long_name, STREAM_MAX_LTX_LEN),
			 STREAM_HDR_SIZE + 2 + STREAM_MAX_NAME);

	struct stream_entry e = { .name = "" };
	struct stream_list l = { .n = 1, .entries = &e };
	uint8_t *out = (uint8_t *)1;
	size_t len = 1;
	assert_int_equal(stream_encode_list(STREAM_HEARTBEAT, &l, &out, &len), ERR_INVAL);
	assert_null(out);
	assert_int_equal(len, 0);
	strcpy(e.name, "ok");
	assert_int_equal(stream_encode_list(STREAM_LTX, &l, &out, &len), ERR_INVAL);
	assert_int_equal(stream_encode_list(STREAM_HEARTBEAT, &l, &out, &len), 0);
	assert_int_equal(len, STREAM_HDR_SIZE + 16 + 2 + 2 + 24);
	free(out);
}

/* Random bytes (and random corruptions of a valid stream) never crash the
 * decoder and never end "cleanly" with garbage consumed unseen. */
static void test_garbage(void **state)
{
	(void)state;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	struct buf b = sample_response();
	uint8_t *copy = malloc(b.len);
	assert_non_null(copy);
	for (int round = 0; round < 2000; round++) {
		memcpy(copy, b.p, b.len);
		int flips = 1 + round % 4;
		for (int k = 0; k < flips; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			copy[x % b.len] ^= (uint8_t)(1u << ((x >> 32) % 8));
		}
		struct seen s;
		int rc = feed(STREAM_DIR_RESPONSE, 0, copy, b.len, 1 + round % 9, &s, NULL);
		assert_true(rc == 0 || rc == ERR_REPL_PROTOCOL);
	}
	for (int round = 0; round < 500; round++) {
		for (size_t i = 0; i < b.len; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			copy[i] = (uint8_t)x;
		}
		struct seen s;
		assert_int_equal(feed(STREAM_DIR_RESPONSE, 0, copy, b.len, 0, &s, NULL), ERR_REPL_PROTOCOL);
	}
	free(copy);
	free(b.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_any_chunking),
		cmocka_unit_test(test_list_fields),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_oversized_lengths),
		cmocka_unit_test(test_framing_rules),
		cmocka_unit_test(test_list_rules),
		cmocka_unit_test(test_ack_frames),
		cmocka_unit_test(test_encoder_rejects),
		cmocka_unit_test(test_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
