/*
 * fuzz_stream_decode.c — libFuzzer target for the replication stream
 * decoder (src/proto/stream.c).
 *
 * INPUT
 *
 *   offset size  field
 *        0    1  chunking seed: drives the pseudo-random chunk sizes
 *        1    1  max_ltx_len selector: 0 = the default (STREAM_MAX_LTX_LEN),
 *                k > 0 = STREAM_MIN_LTX_LEN + 8 * (k - 1), so the "LTX
 *                larger than the limit" rule is reachable with small inputs
 *        2    n  the stream bytes
 *
 * Seeds for it (tests/fuzz/seed-corpus) carry these two bytes before valid
 * streams built with the encoder.
 *
 * WHAT IT CHECKS
 *
 * The stream bytes are decoded in both directions (STREAM_DIR_REQUEST and
 * STREAM_DIR_RESPONSE), each three times: as one chunk, one byte at a
 * time (the first BYTES_PREFIX bytes), and in chunks whose sizes come
 * from the seed byte (mostly small, some empty, some large). Each run
 * handles every event, then calls stream_parser_finish and
 * stream_parser_free. Per run:
 *
 *   C1. stream_parse returns 1, 0, ERR_REPL_PROTOCOL or ERR_NOMEM; *used
 *       never exceeds the chunk, and 0 means the whole chunk was taken.
 *   C2. Progress: at most one event in a row consumes no input (only
 *       LTX_END may), so a caller looping until 0 cannot spin.
 *   C3. p->offset is exactly the bytes consumed.
 *   C4. Every event is well formed and belongs to its direction: hello
 *       first and once; names 1..255 bytes without NUL; LTX_DATA points
 *       into the caller's chunk and the data events of a frame add up to
 *       ltx_len, which lies in [STREAM_MIN_LTX_LEN, max_ltx_len]; nothing
 *       after END.
 *   C5. Round trip: the encoder reproduces, byte for byte, the input that
 *       produced each hello, LTX prefix and list event (the decoder
 *       accepts nothing the encoder would not write, and loses nothing).
 *   C6. Errors are sticky: another call (with or without input) returns
 *       the same error, and so does stream_parser_finish.
 *   C7. After input without error, finish succeeds exactly when the
 *       input ended with the last byte of a frame whose event came;
 *       p->ended iff an END event came.
 *   C8. Memory: what the parser holds never exceeds PARSER_MEM_BOUND
 *       (a whole list frame's body plus its entries at the densest
 *       packing the length check allows), and nothing after free. That
 *       bound is about 182 MiB for a 16 MiB list frame: the entries cost
 *       10.4 times the bytes that describe them (280 bytes per entry of
 *       a 27-byte minimum), and a 5-byte header alone makes the parser
 *       allocate the declared body (up to 16 MiB) before any of it came.
 *       The latter is also why inputs with such a header run slowly
 *       here: ASan spends about 12 ms on each 16 MiB malloc.
 *
 * Across the three chunkings of one direction, the outcome must be the
 * same (C9): the same events with the same contents (LTX data compared as
 * one byte stream, since its split follows the chunks), the same error,
 * rule (`why`) and error offset, the same finish result and ended flag.
 *
 * In the request direction the positions entries are taken over from the
 * parser the way src/node/replserver.c does (entries = NULL, n = 0), in
 * the response direction they are left to the parser: both ownership
 * paths run. Leaks are LeakSanitizer's; hangs libFuzzer's -timeout.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/allocator_interface.h>

#include "base/err.h"
#include "proto/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                             \
		}                                                                            \
	} while (0)

#define LIST_FIXED 16u  /* time_ms, flags, n (stream.c) */
#define ENTRY_FIXED 26u /* name length, txid, checksum, hwm (stream.c) */
/* C8: the body of the largest list frame, plus the entries of the densest
 * list that the decoder's "more entries than the length can hold" check
 * lets through (1-byte names), plus allocator slack. */
#define PARSER_MEM_BOUND                                                                        \
	((size_t)STREAM_MAX_LIST_LEN +                                                          \
	 (size_t)((STREAM_MAX_LIST_LEN - LIST_FIXED) / (ENTRY_FIXED + 1)) * sizeof(struct stream_entry) + 4096)

enum chunking { CHUNK_WHOLE, CHUNK_BYTES, CHUNK_RANDOM };
/* One-byte chunks cost an event per byte of LTX payload; past this many
 * bytes CHUNK_BYTES hands over the rest at once (CHUNK_RANDOM still
 * splits large inputs everywhere). */
#define BYTES_PREFIX 16384u

/* What one run saw, compared across chunkings (C9). */
struct outcome {
	uint64_t digest;      /* FNV-1a over the events and their contents */
	size_t n_events;      /* not counting LTX_DATA, whose count follows the chunks */
	int rc;               /* 0 or the error */
	const char *why;
	uint64_t err_offset;
	int finish_rc;
	bool ended;
	uint64_t consumed;
};

/* The harness's own loops are left out of the coverage that guides the
 * fuzzer: they say nothing about the parser and cost most of the time. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

NO_COVERAGE static void mix(uint64_t *h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++) {
		*h ^= p[i];
		*h *= 0x100000001b3ull;
	}
}

static void mix_u64(uint64_t *h, uint64_t v)
{
	mix(h, &v, sizeof(v));
}

/* A small PRNG for the chunk sizes (xorshift32; never 0). */
static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static size_t next_chunk(enum chunking how, uint32_t *s, size_t done, size_t left)
{
	size_t n;
	if (how == CHUNK_WHOLE)
		return left;
	if (how == CHUNK_BYTES)
		return done < BYTES_PREFIX ? 1 : left; /* see BYTES_PREFIX */
	uint32_t r = rnd(s);
	switch (r & 7) {
	case 0:
		n = 0; /* an empty chunk (curl can deliver one) */
		break;
	case 1:
		n = (r >> 8) % 4096;
		break;
	default:
		n = 1 + (r >> 8) % 16; /* about a header, name length, or so */
		break;
	}
	return n < left ? n : left;
}

/* The state of one run, for the checks of C4 and C5. */
struct run {
	enum stream_dir dir;
	uint32_t max_ltx_len;
	const uint8_t *stream; /* the whole input, to compare re-encodings with */
	uint64_t consumed;
	bool seen_hello, in_ltx, ended;
	uint8_t ltx_type;
	uint32_t ltx_len;
	uint64_t ltx_got;
	char ltx_name[STREAM_MAX_NAME + 1];
	uint64_t frame_end; /* input offset after the last complete frame */
};

static void check_name(const char *name)
{
	CHECK(name != NULL);
	size_t n = strnlen(name, STREAM_MAX_NAME + 1);
	CHECK(n >= 1 && n <= STREAM_MAX_NAME);
}

/* The bytes that ended at the current offset must be exactly enc. */
static void check_reencoded(const struct run *r, const uint8_t *enc, size_t len)
{
	CHECK(r->consumed >= len);
	CHECK(memcmp(r->stream + r->consumed - len, enc, len) == 0);
}

static void on_list(struct run *r, struct stream_parser *p, const struct stream_event *ev, uint64_t *h)
{
	const struct stream_list *l = ev->list;
	CHECK(l != NULL);
	/* A request carries positions or (POST /stream/ack) acks; a response heartbeats. */
	if (r->dir == STREAM_DIR_REQUEST)
		CHECK(ev->type == STREAM_POSITIONS || ev->type == STREAM_ACK);
	else
		CHECK(ev->type == STREAM_HEARTBEAT);
	CHECK((l->n == 0) == (l->entries == NULL));
	if (ev->type == STREAM_POSITIONS)
		CHECK((l->flags & ~STREAM_LIST_ONLY) == 0);
	else
		CHECK(l->flags == 0);
	mix_u64(h, (uint64_t)l->time_ms);
	mix_u64(h, l->flags);
	mix_u64(h, l->n);
	for (uint32_t i = 0; i < l->n; i++) {
		const struct stream_entry *e = &l->entries[i];
		check_name(e->name);
		mix(h, e->name, strlen(e->name) + 1);
		mix_u64(h, e->txid);
		mix_u64(h, e->checksum);
		mix_u64(h, e->hwm);
	}
	/* C5: the list re-encodes to the frame it came from. */
	uint8_t *enc = NULL;
	size_t enc_len = 0;
	CHECK(stream_encode_list(ev->type, l, &enc, &enc_len) == 0);
	check_reencoded(r, enc, enc_len);
	free(enc);
	/* C8: the entries are the largest thing the parser keeps. */
	CHECK((size_t)l->n * sizeof(*l->entries) <= PARSER_MEM_BOUND);
	if (r->dir == STREAM_DIR_REQUEST) {
		/* Take the entries over, as replserver.c does. */
		free(p->list.entries);
		p->list.entries = NULL;
		p->list.n = 0;
	}
}

/* C4, C5 and the digest for one event. */
static void on_event(struct run *r, struct stream_parser *p, const struct stream_event *ev, const uint8_t *chunk,
		     size_t chunk_len, uint64_t *h, size_t *n_events)
{
	CHECK(!r->ended);
	if (ev->kind != STREAM_EV_LTX_DATA) {
		mix_u64(h, ev->kind);
		mix_u64(h, ev->type);
		(*n_events)++;
	}
	if (ev->kind != STREAM_EV_HELLO)
		CHECK(r->seen_hello);
	if (ev->kind != STREAM_EV_LTX_DATA && ev->kind != STREAM_EV_LTX_END)
		CHECK(!r->in_ltx);
	switch (ev->kind) {
	case STREAM_EV_HELLO: {
		uint8_t enc[STREAM_HDR_SIZE + STREAM_HELLO_LEN];
		CHECK(!r->seen_hello);
		CHECK(ev->type == STREAM_HELLO);
		r->seen_hello = true;
		check_reencoded(r, enc, stream_encode_hello(enc));
		break;
	}
	case STREAM_EV_LIST:
		on_list(r, p, ev, h);
		break;
	case STREAM_EV_LTX_BEGIN: {
		uint8_t enc[STREAM_LTX_PREFIX_MAX];
		CHECK(r->dir == STREAM_DIR_RESPONSE);
		CHECK(ev->type == STREAM_LTX || ev->type == STREAM_SNAPSHOT || ev->type == STREAM_SNAPSHOT_DIVERGED);
		CHECK(ev->snapshot == (ev->type != STREAM_LTX));
		CHECK(ev->diverged == (ev->type == STREAM_SNAPSHOT_DIVERGED));
		check_name(ev->name);
		CHECK(ev->ltx_len >= STREAM_MIN_LTX_LEN && ev->ltx_len <= r->max_ltx_len);
		int n = stream_encode_ltx_prefix(enc, ev->type, ev->name, ev->ltx_len);
		CHECK(n > 0);
		check_reencoded(r, enc, (size_t)n);
		r->in_ltx = true;
		r->ltx_type = ev->type;
		r->ltx_len = ev->ltx_len;
		r->ltx_got = 0;
		strcpy(r->ltx_name, ev->name);
		mix(h, ev->name, strlen(ev->name) + 1);
		mix_u64(h, ev->ltx_len);
		break;
	}
	case STREAM_EV_LTX_DATA:
		CHECK(r->in_ltx);
		CHECK(ev->type == r->ltx_type && strcmp(ev->name, r->ltx_name) == 0);
		CHECK(ev->len > 0 && ev->data >= chunk && ev->data + ev->len <= chunk + chunk_len);
		/* The data is the input at the current offset, not a copy of it. */
		CHECK(memcmp(ev->data, r->stream + r->consumed - ev->len, ev->len) == 0);
		r->ltx_got += ev->len;
		CHECK(r->ltx_got <= r->ltx_len);
		mix(h, ev->data, ev->len);
		break;
	case STREAM_EV_LTX_END:
		CHECK(r->in_ltx && r->ltx_got == r->ltx_len);
		CHECK(ev->type == r->ltx_type && strcmp(ev->name, r->ltx_name) == 0);
		r->in_ltx = false;
		break;
	case STREAM_EV_READY:
	case STREAM_EV_END:
		CHECK(r->dir == STREAM_DIR_RESPONSE);
		CHECK(ev->type == (ev->kind == STREAM_EV_END ? STREAM_END : STREAM_READY));
		r->ended = ev->kind == STREAM_EV_END;
		break;
	default:
		CHECK(!"unknown event kind");
	}
	if (ev->kind != STREAM_EV_LTX_BEGIN && ev->kind != STREAM_EV_LTX_DATA)
		r->frame_end = r->consumed;
}

static size_t parser_bytes(size_t base)
{
	size_t now = __sanitizer_get_current_allocated_bytes();
	return now > base ? now - base : 0;
}

NO_COVERAGE static void run_one(const uint8_t *s, size_t size, enum stream_dir dir, uint32_t max_ltx_len, enum chunking how,
		    uint32_t seed, struct outcome *o)
{
	struct stream_parser p;
	struct run r = {.dir = dir, .stream = s};
	uint64_t h = 0xcbf29ce484222325ull;
	size_t pos = 0;
	int rc = 0;

	memset(o, 0, sizeof(*o));
	stream_parser_init(&p, dir, max_ltx_len);
	r.max_ltx_len = p.max_ltx_len;
	CHECK(max_ltx_len == 0 || p.max_ltx_len == max_ltx_len);
	size_t base = __sanitizer_get_current_allocated_bytes();

	while (rc == 0 && pos < size) {
		size_t chunk_len = next_chunk(how, &seed, pos, size - pos);
		const uint8_t *chunk = s + pos;
		size_t left = chunk_len;
		int zero_used = 0;
		/* Loop as replica.c and replserver.c do: until 0 or an error. */
		for (;;) {
			struct stream_event ev;
			size_t used = (size_t)-1;
			int got = stream_parse(&p, chunk, left, &used, &ev);
			CHECK(got == 0 || got == 1 || got == ERR_REPL_PROTOCOL || got == ERR_NOMEM); /* C1 */
			CHECK(used <= left);
			CHECK(got != 0 || used == left);
			chunk += used;
			left -= used;
			r.consumed += used;
			CHECK(p.offset == r.consumed); /* C3 */
			if (got < 0) {
				rc = got;
				break;
			}
			if (got == 0)
				break;
			zero_used = used == 0 ? zero_used + 1 : 0;
			CHECK(zero_used <= 1); /* C2 */
			CHECK(used > 0 || ev.kind == STREAM_EV_LTX_END);
			/* C8, where the parser may hold the most: a list
			 * frame's body and entries (taken once per frame, as
			 * asking the allocator is slow). */
			if (ev.kind == STREAM_EV_LIST)
				CHECK(parser_bytes(base) <= PARSER_MEM_BOUND);
			on_event(&r, &p, &ev, chunk - used, left + used, &h, &o->n_events);
		}
		pos += chunk_len - left;
		if (rc == 0)
			CHECK(left == 0);
	}

	/* C8 when the input ended or broke off inside a frame (a list body
	 * allocated from a header whose payload never came). */
	CHECK(parser_bytes(base) <= PARSER_MEM_BOUND);
	o->rc = rc;
	o->consumed = r.consumed;
	if (rc != 0) {
		/* C6: sticky, with or without more input. */
		struct stream_event ev;
		size_t used = 0;
		CHECK(p.why != NULL && p.error == rc);
		o->why = p.why;
		o->err_offset = p.offset;
		CHECK(stream_parse(&p, s + pos, size - pos, &used, &ev) == rc);
		CHECK(used == 0);
		CHECK(stream_parse(&p, s, 0, &used, &ev) == rc);
		CHECK(p.offset == o->err_offset);
	}
	o->finish_rc = stream_parser_finish(&p);
	if (rc != 0) {
		CHECK(o->finish_rc == rc);
	} else {
		/* C7: a clean finish exactly when the input ended with the
		 * event of a complete frame. */
		CHECK(r.consumed == size);
		CHECK(o->finish_rc == 0 || o->finish_rc == ERR_REPL_PROTOCOL);
		CHECK((o->finish_rc == 0) == (r.frame_end == size));
		CHECK(stream_parser_finish(&p) == o->finish_rc);
	}
	o->ended = p.ended;
	CHECK(p.ended == r.ended);
	o->digest = h;
	stream_parser_free(&p);
	stream_parser_free(&p); /* idempotent */
	CHECK(parser_bytes(base) == 0);
}

static void check_same(const struct outcome *a, const struct outcome *b)
{
	CHECK(a->rc == b->rc);
	CHECK(a->why == b->why || (a->why && b->why && strcmp(a->why, b->why) == 0));
	CHECK(a->err_offset == b->err_offset);
	CHECK(a->n_events == b->n_events);
	CHECK(a->digest == b->digest);
	CHECK(a->finish_rc == b->finish_rc);
	CHECK(a->ended == b->ended);
	CHECK(a->consumed == b->consumed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint32_t seed = 0x9e3779b9u ^ ((uint32_t)data[0] << 8 | data[0]);
	uint32_t max_ltx_len = data[1] ? STREAM_MIN_LTX_LEN + 8u * (data[1] - 1u) : 0;
	const uint8_t *s = data + 2;
	size -= 2;

	static const enum stream_dir dirs[] = {STREAM_DIR_REQUEST, STREAM_DIR_RESPONSE};
	for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
		struct outcome whole, bytes, random;
		run_one(s, size, dirs[d], max_ltx_len, CHUNK_WHOLE, seed, &whole);
		run_one(s, size, dirs[d], max_ltx_len, CHUNK_BYTES, seed, &bytes);
		run_one(s, size, dirs[d], max_ltx_len, CHUNK_RANDOM, seed, &random);
		check_same(&whole, &bytes); /* C9 */
		check_same(&whole, &random);
	}
	return 0;
}
