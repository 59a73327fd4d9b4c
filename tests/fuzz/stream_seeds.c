/*
 * stream_seeds.c — writes seed inputs for fuzz_stream_decode into a
 * directory: valid streams of both directions built with the encoder in
 * src/proto/stream.h, each after the target's two control bytes (see
 * fuzz_stream_decode.c). Built and run by tests/fuzz/seed-corpus; not a
 * fuzz target itself (the Makefile builds tests/fuzz/fuzz_*.c only).
 *
 *   stream_seeds DIR [LTX_FILE]
 *
 * LTX_FILE, when given, is carried as the payload of an LTX frame; other
 * LTX frames carry a synthetic payload of the minimum size (the decoder
 * does not look inside LTX payloads).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/stream.h"

struct buf {
	uint8_t *p;
	size_t len;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void add(struct buf *b, const void *data, size_t len)
{
	uint8_t *p = realloc(b->p, b->len + len + 1);
	if (!p)
		die("realloc");
	b->p = p;
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void add_hello(struct buf *b)
{
	uint8_t h[STREAM_HDR_SIZE + STREAM_HELLO_LEN];
	add(b, h, stream_encode_hello(h));
}

static void add_empty(struct buf *b, uint8_t type)
{
	uint8_t h[STREAM_HDR_SIZE];
	stream_encode_header(h, type, 0);
	add(b, h, sizeof(h));
}

static void add_ltx(struct buf *b, uint8_t type, const char *name, const uint8_t *ltx, uint32_t ltx_len)
{
	uint8_t pre[STREAM_LTX_PREFIX_MAX];
	int n = stream_encode_ltx_prefix(pre, type, name, ltx_len);
	if (n < 0) {
		fprintf(stderr, "stream_encode_ltx_prefix refused %s\n", name);
		exit(1);
	}
	add(b, pre, (size_t)n);
	if (ltx) {
		add(b, ltx, ltx_len);
	} else {
		for (uint32_t i = 0; i < ltx_len; i++) {
			uint8_t c = (uint8_t)i;
			add(b, &c, 1);
		}
	}
}

static void add_list(struct buf *b, uint8_t type, uint32_t flags, uint32_t n, int64_t time_ms)
{
	struct stream_entry *e = calloc(n ? n : 1, sizeof(*e));
	if (!e)
		die("calloc");
	for (uint32_t i = 0; i < n; i++) {
		if (i == 1) {
			memset(e[i].name, 'x', STREAM_MAX_NAME); /* the longest name */
			e[i].name[STREAM_MAX_NAME] = '\0';
		} else {
			snprintf(e[i].name, sizeof(e[i].name), "db%u.sqlite", i);
		}
		e[i].txid = (uint64_t)i * 7 + 1;
		e[i].checksum = 0x8000000000000000ull | ((uint64_t)i * 0x0123456789abull);
		e[i].hwm = i % 2 ? e[i].txid : 0;
	}
	struct stream_list l = {.time_ms = time_ms, .flags = flags, .n = n, .entries = n ? e : NULL};
	uint8_t *out;
	size_t out_len;
	if (stream_encode_list(type, &l, &out, &out_len) != 0) {
		fprintf(stderr, "stream_encode_list failed\n");
		exit(1);
	}
	add(b, out, out_len);
	free(out);
	free(e);
}

/* Writes ctrl bytes + b to DIR/stream-NAME and resets b. */
static void emit(const char *dir, const char *name, uint8_t chunk_seed, uint8_t max_sel, struct buf *b)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/stream-%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		die(path);
	uint8_t ctrl[2] = {chunk_seed, max_sel};
	if (fwrite(ctrl, 1, 2, f) != 2 || (b->len && fwrite(b->p, 1, b->len, f) != b->len) || fclose(f) != 0)
		die(path);
	free(b->p);
	b->p = NULL;
	b->len = 0;
}

static uint8_t *read_file(const char *path, uint32_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint8_t *p = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			uint8_t *q = realloc(p, cap);
			if (!q)
				die("realloc");
			p = q;
		}
		size_t got = fread(p + n, 1, cap - n, f);
		if (got == 0)
			break;
		n += got;
	}
	fclose(f);
	if (n < STREAM_MIN_LTX_LEN || n > 1u << 20) {
		free(p);
		return NULL;
	}
	*len = (uint32_t)n;
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: %s DIR [LTX_FILE]\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	uint32_t golden_len = 0;
	uint8_t *golden = argc == 3 ? read_file(argv[2], &golden_len) : NULL;
	struct buf b = {0};

	/* Request direction: what a replica sends. */
	add_hello(&b);
	add_list(&b, STREAM_POSITIONS, 0, 0, 1767225600000);
	emit(dir, "request-empty", 1, 0, &b);

	add_hello(&b);
	add_list(&b, STREAM_POSITIONS, STREAM_LIST_ONLY, 3, 1767225600123);
	emit(dir, "request-only", 2, 0, &b);

	/* POST /stream/ack: a replica's durable positions (synchronous replication). */
	add_hello(&b);
	add_list(&b, STREAM_ACK, 0, 2, 1767225600456);
	add_list(&b, STREAM_ACK, 0, 1, 1767225600789);
	emit(dir, "request-ack", 8, 0, &b);

	/* Response direction: what a primary sends. */
	add_hello(&b);
	emit(dir, "hello", 3, 0, &b);

	add_hello(&b);
	add_ltx(&b, STREAM_SNAPSHOT, "app.db", NULL, STREAM_MIN_LTX_LEN);
	add_ltx(&b, STREAM_LTX, "app.db", NULL, STREAM_MIN_LTX_LEN + 1);
	add_ltx(&b, STREAM_SNAPSHOT_DIVERGED, "other.db", NULL, STREAM_MIN_LTX_LEN + 17);
	add_empty(&b, STREAM_READY);
	add_list(&b, STREAM_HEARTBEAT, 0, 2, 1767225601000);
	add_list(&b, STREAM_HEARTBEAT, 0, 0, 1767225602000);
	add_empty(&b, STREAM_END);
	emit(dir, "response-session", 4, 0, &b);

	/* The same with a limit that the third LTX is just over. */
	add_hello(&b);
	add_ltx(&b, STREAM_LTX, "a", NULL, STREAM_MIN_LTX_LEN);
	add_ltx(&b, STREAM_LTX, "a", NULL, STREAM_MIN_LTX_LEN + 8);
	add_ltx(&b, STREAM_LTX, "a", NULL, STREAM_MIN_LTX_LEN + 9);
	emit(dir, "response-limit", 5, 2, &b);

	add_hello(&b);
	add_empty(&b, STREAM_READY);
	add_list(&b, STREAM_HEARTBEAT, 0, 4, -1);
	add_empty(&b, STREAM_END);
	emit(dir, "response-idle", 6, 0, &b);

	if (golden) {
		add_hello(&b);
		add_ltx(&b, STREAM_LTX, "golden.db", golden, golden_len);
		add_empty(&b, STREAM_READY);
		add_empty(&b, STREAM_END);
		emit(dir, "response-golden", 7, 0, &b);
		free(golden);
	}
	return 0;
}
