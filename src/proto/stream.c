/*
 * stream.c — the replication protocol: how a replica follows the primary.
 * This comment is the authority; docs/protocol.md explains it for users.
 *
 * SESSION (HTTP, src/node/replserver.c serves it, src/node/replica.c is the client)
 *
 *   POST /stream on the primary's API (the replica's lease.advertise-url).
 *   Request headers:
 *     Content-Type: application/vnd.litefs.stream
 *     Litefs-Cluster-Id: LFSC0123456789ABCDEF   (absent if the replica has none)
 *     Authorization: Bearer <http.secret>      (when a secret is configured)
 *   Request body: frames, DIR_REQUEST: hello, then one positions frame.
 *   Request headers may also carry Litefs-Replica-Id: <16 hex> (a random
 *   ID the replica draws at start, so that a reconnected replica is not
 *   counted twice by synchronous replication).
 *   Response 200, chunked, Content-Type application/vnd.litefs.stream:
 *     Litefs-Cluster-Id: <the primary's cluster ID>
 *     Litefs-Primary-Hostname: <lease.hostname or the OS hostname>
 *   and a body of frames, DIR_RESPONSE: hello, then any number of ltx,
 *   snapshot, heartbeat frames, one ready frame, and an end frame when the
 *   primary stops. Errors before the body are JSON with a status: 400
 *   malformed request, 401 missing or wrong secret, 409 cluster ID
 *   mismatch, 409/503 this node is not the primary, 503 shutting down.
 *   The 200 also carries Litefs-Stream-Id: <16 hex>, the session's token
 *   for acknowledgements (absent from primaries without them).
 *
 * ACKNOWLEDGEMENTS (synchronous replication, lease.sync-replicas)
 *
 *   The stream's body only flows primary -> replica (the request body is
 *   read whole before the reply starts), so acknowledgements travel on
 *   requests of their own, on one kept-alive connection per replica:
 *     POST /stream/ack, Litefs-Stream-Id: <the token>, the same
 *     Authorization and Litefs-Cluster-Id as the stream; body DIR_REQUEST:
 *     hello, then one ack frame: every database whose position moved since
 *     the last ack, at the position that is now DURABLE on the replica
 *     (its segment and db file fsynced).
 *   200 {} recorded; 404 the token names no open session (the stream
 *   ended: the replica stops acking on it); 400/401/503 as for /stream.
 *   A replica that never acks (an older one) is simply never counted.
 *
 * FRAME
 *
 *   offset size  field
 *        0    1  type (ASCII letter, enum stream_type)
 *        1    4  payload length, big-endian u32
 *        5    n  payload
 *
 *   type  payload
 *   'H'   hello: "LFSS" + version u32 (1). Exactly 8 bytes. First frame of
 *         each direction, and only there.
 *   'P'   positions (replica -> primary): a list (below). Flag ONLY (bit 0)
 *         asks for the listed databases only (lease.databases); without it
 *         the primary also sends every database the list lacks, from
 *         position 0. An entry with txid 0 means "I do not have it".
 *   'L'   ltx: name length u16, name, then one LTX file (the bytes of one
 *         record of the primary's chain, byte for byte).
 *   'S'   snapshot: same layout; the LTX is a snapshot (TXID 1..pos, every
 *         page) that replaces the replica's database.
 *   'D'   snapshot, same layout, sent because the replica's position is not
 *         on the primary's chain (ahead of it, or another checksum at its
 *         TXID): the replica's own transactions are discarded.
 *   'R'   ready: empty. Every database has reached the position it had
 *         on the primary when the request arrived.
 *   'B'   heartbeat: a list: the primary's wall clock and the position
 *         (and backup high-water mark, 0 for none) of every database it
 *         streams, about once a second, also when idle.
 *   'E'   end: empty. The primary is stopping; nothing follows.
 *   'A'   ack (replica -> primary, POST /stream/ack only): a list; each
 *         entry a database and the position durable on the replica.
 *
 *   list: time_ms i64, flags u32, n u32, then n entries of
 *         name length u16, name, txid u64, checksum u64, hwm u64.
 *
 * RULES the decoder enforces (each is its own `why`):
 *   1. The first frame is a hello with the right magic and version.
 *   2. A type belongs to its direction; unknown types are errors (a new
 *      version bumps the hello version instead).
 *   3. Lengths are checked before anything is allocated: hello exactly 8,
 *      ready and end 0, lists at most STREAM_MAX_LIST_LEN and exactly the
 *      size of their entries, an LTX at least STREAM_MIN_LTX_LEN and at
 *      most the decoder's max_ltx_len.
 *   4. Names are 1..255 bytes without NUL (the receiver applies the
 *      store's own name rules on top).
 *   5. Nothing follows an end frame; input that stops inside a frame is
 *      "truncated" (stream_parser_finish).
 *   LTX content is not checked here: the receiver applies it through the
 *   LTX decoder, which validates every byte before anything changes.
 *
 * ORDER on the primary, per connection: for each database, the records
 * after the replica's position (or a snapshot when they are gone, when the
 * checksums differ, or when the replica is ahead; then the records after
 * the snapshot), in TXID order; ready once every database reached its
 * connect-time position; then live records as commits land, heartbeats
 * between them. Frames of different databases interleave; frames of one
 * database never do.
 */
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "proto/stream.h"

enum {
	S_HDR = 0,
	S_NAME_LEN,
	S_NAME,
	S_LTX_BODY,
	S_LTX_END,
	S_SMALL,
	S_FAILED,
};

#define LIST_FIXED 16u        /* time_ms, flags, n */
#define ENTRY_FIXED 26u       /* name length, txid, checksum, hwm */

/* ---- Big-endian helpers ---------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* ---- Encoder --------------------------------------------------------------- */

void stream_encode_header(uint8_t *out, uint8_t type, uint32_t payload_len)
{
	out[0] = type;
	put_u32(out + 1, payload_len);
}

size_t stream_encode_hello(uint8_t *out)
{
	stream_encode_header(out, STREAM_HELLO, STREAM_HELLO_LEN);
	memcpy(out + STREAM_HDR_SIZE, STREAM_MAGIC, 4);
	put_u32(out + STREAM_HDR_SIZE + 4, STREAM_VERSION);
	return STREAM_HDR_SIZE + STREAM_HELLO_LEN;
}

static size_t name_len_ok(const char *name)
{
	size_t n = name ? strnlen(name, STREAM_MAX_NAME + 1) : 0;
	return n >= 1 && n <= STREAM_MAX_NAME ? n : 0;
}

int stream_encode_ltx_prefix(uint8_t *out, uint8_t type, const char *name, uint32_t ltx_len)
{
	size_t n = name_len_ok(name);
	if ((type != STREAM_LTX && type != STREAM_SNAPSHOT && type != STREAM_SNAPSHOT_DIVERGED) || n == 0 || ltx_len < STREAM_MIN_LTX_LEN ||
	    ltx_len > STREAM_MAX_LTX_LEN)
		return ERR_INVAL;
	stream_encode_header(out, type, (uint32_t)(2 + n) + ltx_len);
	put_u16(out + STREAM_HDR_SIZE, (uint16_t)n);
	memcpy(out + STREAM_HDR_SIZE + 2, name, n);
	return (int)(STREAM_HDR_SIZE + 2 + n);
}

int stream_encode_list(uint8_t type, const struct stream_list *list, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	if (type != STREAM_POSITIONS && type != STREAM_HEARTBEAT && type != STREAM_ACK)
		return ERR_INVAL;
	size_t payload = LIST_FIXED;
	for (uint32_t i = 0; i < list->n; i++) {
		size_t n = name_len_ok(list->entries[i].name);
		if (n == 0)
			return ERR_INVAL;
		payload += ENTRY_FIXED + n;
		if (payload > STREAM_MAX_LIST_LEN)
			return ERR_INVAL;
	}
	uint8_t *buf = malloc(STREAM_HDR_SIZE + payload);
	if (!buf)
		return ERR_NOMEM;
	stream_encode_header(buf, type, (uint32_t)payload);
	uint8_t *p = buf + STREAM_HDR_SIZE;
	put_u64(p, (uint64_t)list->time_ms);
	put_u32(p + 8, list->flags);
	put_u32(p + 12, list->n);
	p += LIST_FIXED;
	for (uint32_t i = 0; i < list->n; i++) {
		const struct stream_entry *e = &list->entries[i];
		size_t n = strlen(e->name);
		put_u16(p, (uint16_t)n);
		memcpy(p + 2, e->name, n);
		p += 2 + n;
		put_u64(p, e->txid);
		put_u64(p + 8, e->checksum);
		put_u64(p + 16, e->hwm);
		p += 24;
	}
	*out = buf;
	*out_len = STREAM_HDR_SIZE + payload;
	return 0;
}

/* ---- Decoder --------------------------------------------------------------- */

void stream_parser_init(struct stream_parser *p, enum stream_dir dir, uint32_t max_ltx_len)
{
	memset(p, 0, sizeof(*p));
	p->dir = dir;
	p->max_ltx_len = max_ltx_len && max_ltx_len < STREAM_MAX_LTX_LEN ? max_ltx_len : STREAM_MAX_LTX_LEN;
	p->state = S_HDR;
}

void stream_parser_free(struct stream_parser *p)
{
	free(p->body);
	p->body = NULL;
	free(p->list.entries);
	p->list.entries = NULL;
	p->list.n = 0;
}

static int fail(struct stream_parser *p, int rc, const char *why)
{
	p->state = S_FAILED;
	p->error = rc;
	p->why = why;
	return rc;
}

static bool type_allowed(enum stream_dir dir, uint8_t type)
{
	if (type == STREAM_HELLO)
		return true;
	if (dir == STREAM_DIR_REQUEST)
		return type == STREAM_POSITIONS || type == STREAM_ACK;
	return type == STREAM_LTX || type == STREAM_SNAPSHOT || type == STREAM_SNAPSHOT_DIVERGED || type == STREAM_READY ||
	       type == STREAM_HEARTBEAT || type == STREAM_END;
}

/* A complete header is in p->hdr: checks the frame's type and length
 * (rules 1-3) and picks the next state. Returns 1 with *ev for frames
 * without payload, 0 to go on, or an error. */
static int begin_frame(struct stream_parser *p, struct stream_event *ev)
{
	p->type = p->hdr[0];
	p->len = get_u32(p->hdr + 1);
	p->hdr_have = 0;
	if (p->ended)
		return fail(p, ERR_REPL_PROTOCOL, "data after the end frame");
	if (!type_allowed(p->dir, p->type))
		return fail(p, ERR_REPL_PROTOCOL, "unknown frame type (or not allowed in this direction)");
	if (!p->seen_hello && p->type != STREAM_HELLO)
		return fail(p, ERR_REPL_PROTOCOL, "the stream does not start with a hello frame");
	switch (p->type) {
	case STREAM_HELLO:
		if (p->seen_hello)
			return fail(p, ERR_REPL_PROTOCOL, "a second hello frame");
		if (p->len != STREAM_HELLO_LEN)
			return fail(p, ERR_REPL_PROTOCOL, "hello frame of the wrong length");
		break;
	case STREAM_READY:
	case STREAM_END:
		if (p->len != 0)
			return fail(p, ERR_REPL_PROTOCOL, "ready or end frame with a payload");
		memset(ev, 0, sizeof(*ev));
		ev->type = p->type;
		ev->kind = p->type == STREAM_END ? STREAM_EV_END : STREAM_EV_READY;
		p->ended = p->type == STREAM_END;
		return 1;
	case STREAM_LTX:
	case STREAM_SNAPSHOT:
	case STREAM_SNAPSHOT_DIVERGED:
		if (p->len < 2 + 1 + STREAM_MIN_LTX_LEN)
			return fail(p, ERR_REPL_PROTOCOL, "ltx frame too short to hold a name and an LTX file");
		p->name_len_have = 0;
		p->name_have = 0;
		p->state = S_NAME_LEN;
		return 0;
	default: /* lists */
		if (p->len < LIST_FIXED || p->len > STREAM_MAX_LIST_LEN)
			return fail(p, ERR_REPL_PROTOCOL, "list frame length out of bounds");
		break;
	}
	free(p->body);
	p->body = malloc(p->len);
	if (!p->body)
		return fail(p, ERR_NOMEM, "out of memory");
	p->body_have = 0;
	p->state = S_SMALL;
	return 0;
}

/* The name length is known: checks it and what it leaves for the LTX. */
static int check_name_len(struct stream_parser *p)
{
	p->name_len = get_u16(p->name_len_buf);
	if (p->name_len == 0 || p->name_len > STREAM_MAX_NAME || (uint32_t)p->name_len + 2 > p->len)
		return fail(p, ERR_REPL_PROTOCOL, "ltx frame: bad name length");
	uint32_t ltx_len = p->len - 2 - p->name_len;
	if (ltx_len < STREAM_MIN_LTX_LEN)
		return fail(p, ERR_REPL_PROTOCOL, "ltx frame: LTX shorter than a header and a trailer");
	if (ltx_len > p->max_ltx_len)
		return fail(p, ERR_REPL_PROTOCOL, "ltx frame: LTX larger than the limit");
	p->ltx_left = ltx_len;
	p->state = S_NAME;
	return 0;
}

static int decode_hello(struct stream_parser *p, struct stream_event *ev)
{
	if (memcmp(p->body, STREAM_MAGIC, 4) != 0)
		return fail(p, ERR_REPL_PROTOCOL, "hello frame: bad magic (not a litefs stream)");
	if (get_u32(p->body + 4) != STREAM_VERSION)
		return fail(p, ERR_REPL_PROTOCOL, "hello frame: unsupported protocol version");
	p->seen_hello = true;
	ev->kind = STREAM_EV_HELLO;
	return 1;
}

static int decode_list(struct stream_parser *p, struct stream_event *ev)
{
	const uint8_t *b = p->body, *end = p->body + p->len;
	struct stream_list *l = &p->list;
	free(l->entries);
	memset(l, 0, sizeof(*l));
	l->time_ms = (int64_t)get_u64(b);
	l->flags = get_u32(b + 8);
	uint32_t n = get_u32(b + 12);
	uint32_t allowed = p->type == STREAM_POSITIONS ? STREAM_LIST_ONLY : 0;
	if (l->flags & ~allowed)
		return fail(p, ERR_REPL_PROTOCOL, "list frame: unknown flags");
	if (n > (p->len - LIST_FIXED) / (ENTRY_FIXED + 1))
		return fail(p, ERR_REPL_PROTOCOL, "list frame: more entries than the length can hold");
	if (n > STREAM_MAX_LIST_ENTRIES)
		return fail(p, ERR_REPL_PROTOCOL, "list frame: more entries than a node may follow");
	if (n > 0 && !(l->entries = calloc(n, sizeof(*l->entries))))
		return fail(p, ERR_NOMEM, "out of memory");
	b += LIST_FIXED;
	for (uint32_t i = 0; i < n; i++) {
		struct stream_entry *e = &l->entries[i];
		if ((size_t)(end - b) < ENTRY_FIXED)
			return fail(p, ERR_REPL_PROTOCOL, "list frame: entry runs past the frame");
		uint16_t nl = get_u16(b);
		if (nl == 0 || nl > STREAM_MAX_NAME || (size_t)(end - b) < ENTRY_FIXED + nl)
			return fail(p, ERR_REPL_PROTOCOL, "list frame: bad name length");
		if (memchr(b + 2, '\0', nl))
			return fail(p, ERR_REPL_PROTOCOL, "list frame: NUL byte in a name");
		memcpy(e->name, b + 2, nl);
		e->name[nl] = '\0';
		b += 2 + nl;
		e->txid = get_u64(b);
		e->checksum = get_u64(b + 8);
		e->hwm = get_u64(b + 16);
		b += 24;
		l->n = i + 1;
	}
	if (b != end)
		return fail(p, ERR_REPL_PROTOCOL, "list frame: bytes after the last entry");
	ev->kind = STREAM_EV_LIST;
	ev->list = l;
	return 1;
}

/* Copies up to want - *have bytes from in into dst; returns bytes taken. */
static size_t take(uint8_t *dst, size_t *have, size_t want, const uint8_t *in, size_t in_len)
{
	size_t n = want - *have;
	if (n > in_len)
		n = in_len;
	memcpy(dst + *have, in, n);
	*have += n;
	return n;
}

/* One step of the state machine over in[0..len): returns 1 with an event,
 * 0 to go on, or an error; *used gets the bytes consumed. */
static int step(struct stream_parser *p, const uint8_t *in, size_t len, size_t *used, struct stream_event *ev)
{
	*used = 0;
	switch (p->state) {
	case S_HDR:
		*used = take(p->hdr, &p->hdr_have, STREAM_HDR_SIZE, in, len);
		return p->hdr_have == STREAM_HDR_SIZE ? begin_frame(p, ev) : 0;
	case S_NAME_LEN:
		*used = take(p->name_len_buf, &p->name_len_have, 2, in, len);
		return p->name_len_have == 2 ? check_name_len(p) : 0;
	case S_NAME:
		*used = take((uint8_t *)p->name, &p->name_have, p->name_len, in, len);
		if (p->name_have < p->name_len)
			return 0;
		p->name[p->name_len] = '\0';
		if (memchr(p->name, '\0', p->name_len))
			return fail(p, ERR_REPL_PROTOCOL, "ltx frame: NUL byte in the name");
		ev->kind = STREAM_EV_LTX_BEGIN;
		ev->name = p->name;
		ev->snapshot = p->type == STREAM_SNAPSHOT || p->type == STREAM_SNAPSHOT_DIVERGED;
		ev->diverged = p->type == STREAM_SNAPSHOT_DIVERGED;
		ev->ltx_len = p->ltx_left;
		p->state = S_LTX_BODY;
		return 1;
	case S_LTX_BODY: {
		size_t n = len < p->ltx_left ? len : p->ltx_left;
		if (n == 0)
			return 0;
		*used = n;
		p->ltx_left -= (uint32_t)n;
		if (p->ltx_left == 0)
			p->state = S_LTX_END;
		ev->kind = STREAM_EV_LTX_DATA;
		ev->name = p->name;
		ev->snapshot = p->type == STREAM_SNAPSHOT || p->type == STREAM_SNAPSHOT_DIVERGED;
		ev->diverged = p->type == STREAM_SNAPSHOT_DIVERGED;
		ev->data = in;
		ev->len = n;
		return 1;
	}
	case S_LTX_END:
		p->state = S_HDR;
		ev->kind = STREAM_EV_LTX_END;
		ev->name = p->name;
		ev->snapshot = p->type == STREAM_SNAPSHOT || p->type == STREAM_SNAPSHOT_DIVERGED;
		ev->diverged = p->type == STREAM_SNAPSHOT_DIVERGED;
		return 1;
	case S_SMALL:
		*used = take(p->body, &p->body_have, p->len, in, len);
		if (p->body_have < p->len)
			return 0;
		p->state = S_HDR;
		return p->type == STREAM_HELLO ? decode_hello(p, ev) : decode_list(p, ev);
	default:
		return p->error ? p->error : ERR_REPL_PROTOCOL;
	}
}

int stream_parse(struct stream_parser *p, const uint8_t *buf, size_t len, size_t *used, struct stream_event *ev)
{
	size_t pos = 0;
	memset(ev, 0, sizeof(*ev));
	for (;;) {
		size_t n = 0;
		/* A state that needs input waits for it; S_LTX_END needs none. */
		if (pos == len && p->state != S_LTX_END && p->state != S_FAILED) {
			*used = pos;
			return 0;
		}
		int rc = step(p, buf + pos, len - pos, &n, ev);
		pos += n;
		p->offset += n;
		if (rc != 0) {
			*used = pos;
			if (rc > 0)
				ev->type = p->type;
			return rc;
		}
	}
}

int stream_parser_finish(struct stream_parser *p)
{
	if (p->state == S_FAILED)
		return p->error;
	if (p->state != S_HDR || p->hdr_have != 0)
		return fail(p, ERR_REPL_PROTOCOL, "truncated frame: the input ended inside a frame");
	return 0;
}
