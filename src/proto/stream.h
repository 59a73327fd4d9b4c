/*
 * stream.h — the replication wire format (frames), encoder and an
 * incremental decoder. The format and its rules are described at the top
 * of stream.c and in docs/protocol.md.
 *
 * Pure module: no logging, no files, no sockets. The decoder takes the
 * input in chunks of any size (as they come off an HTTP body) and reports
 * events; LTX payloads are never buffered, they come out as data events
 * that point into the caller's input, so the caller decides where a big
 * snapshot goes (the replica spools it to a file).
 */
#ifndef LITEFS_STREAM_H
#define LITEFS_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STREAM_HDR_SIZE 5            /* type u8, payload length u32 (big-endian) */
#define STREAM_MAGIC "LFSS"
#define STREAM_VERSION 1u
#define STREAM_HELLO_LEN 8           /* magic + version u32 */
#define STREAM_MAX_NAME 255          /* a database name in a frame (the store allows 200) */
/* A list frame (positions, heartbeat) holds at most this many bytes: about
 * 60,000 databases of 255-byte names. */
#define STREAM_MAX_LIST_LEN (16u << 20)
/* And at most this many entries: a decoded entry takes about 280 bytes
 * (its name is copied), so 16 MiB of one-byte names would cost a primary
 * some 180 MiB per connection; this bounds it to about 18 MiB. */
#define STREAM_MAX_LIST_ENTRIES 65536u
/* Largest LTX payload any frame can carry (the length field is 32 bits and
 * the name prefix shares it). Decoders may set a lower bound. */
#define STREAM_MAX_LTX_LEN (UINT32_MAX - 2u - STREAM_MAX_NAME)
/* Smallest valid LTX file: a header and a trailer. */
#define STREAM_MIN_LTX_LEN (100u + 16u)
/* Bytes before the LTX payload of an LTX or snapshot frame, at most. */
#define STREAM_LTX_PREFIX_MAX (STREAM_HDR_SIZE + 2 + STREAM_MAX_NAME)

/* Frame types (ASCII, so that a hex dump reads). */
enum stream_type {
	STREAM_HELLO = 'H',      /* both directions, first frame */
	STREAM_POSITIONS = 'P',  /* request: the replica's positions */
	STREAM_LTX = 'L',        /* response: one LTX file of a database */
	STREAM_SNAPSHOT = 'S',   /* response: a snapshot LTX of a database */
	STREAM_SNAPSHOT_DIVERGED = 'D', /* response: a snapshot; the replica's own history diverged */
	STREAM_READY = 'R',      /* response: caught up with the connect-time state */
	STREAM_HEARTBEAT = 'B',  /* response: the primary's positions and time */
	STREAM_END = 'E',        /* response: clean end (the primary stops) */
	STREAM_ACK = 'A',        /* request of POST /stream/ack: durable positions */
};

/* Flags of a list frame. */
#define STREAM_LIST_ONLY 0x1u   /* positions: stream only the listed databases */

/* One database in a list frame. */
struct stream_entry {
	char name[STREAM_MAX_NAME + 1]; /* NUL-terminated; 1..255 bytes, no NUL inside */
	uint64_t txid;
	uint64_t checksum;
	uint64_t hwm;                   /* high-water mark (backups); 0 = none */
};

/* The payload of a positions, heartbeat or ack frame. */
struct stream_list {
	int64_t time_ms;                /* sender's wall clock */
	uint32_t flags;                 /* STREAM_LIST_* */
	uint32_t n;
	struct stream_entry *entries;   /* NULL when n is 0 */
};

/* ---- Encoder -------------------------------------------------------------- */

/* Writes a frame header into out[STREAM_HDR_SIZE]. */
void stream_encode_header(uint8_t *out, uint8_t type, uint32_t payload_len);
/* Writes the whole hello frame into out[STREAM_HDR_SIZE + STREAM_HELLO_LEN]
 * and returns its size. */
size_t stream_encode_hello(uint8_t *out);
/* Writes the header and the name prefix of an LTX or snapshot frame that
 * will carry ltx_len bytes of LTX into out[STREAM_LTX_PREFIX_MAX]; the
 * caller sends the LTX bytes next. Returns the prefix size, or ERR_INVAL
 * for a bad type, an empty, too long or NUL-containing name, or an LTX
 * length out of bounds. */
int stream_encode_ltx_prefix(uint8_t *out, uint8_t type, const char *name, uint32_t ltx_len);
/* Encodes a whole positions, heartbeat or ack frame. On success *out (caller
 * frees with free()) holds *out_len bytes. Returns 0, ERR_INVAL (bad type,
 * a bad name, or more than STREAM_MAX_LIST_LEN bytes) or ERR_NOMEM. */
int stream_encode_list(uint8_t type, const struct stream_list *list, uint8_t **out, size_t *out_len);

/* ---- Decoder -------------------------------------------------------------- */

enum stream_dir {
	STREAM_DIR_REQUEST,  /* hello, then positions (or ack) frames */
	STREAM_DIR_RESPONSE, /* hello, then ltx/snapshot/ready/heartbeat, end */
};

enum stream_ev {
	STREAM_EV_HELLO = 1,
	STREAM_EV_LIST,      /* positions or heartbeat: ev.list */
	STREAM_EV_LTX_BEGIN, /* ev.name, ev.snapshot, ev.ltx_len */
	STREAM_EV_LTX_DATA,  /* ev.data, ev.len: the next bytes of the LTX */
	STREAM_EV_LTX_END,   /* every byte of the LTX has been delivered */
	STREAM_EV_READY,
	STREAM_EV_END,
};

struct stream_event {
	enum stream_ev kind;
	uint8_t type;              /* the frame's type */
	const char *name;          /* LTX events: borrowed; valid until the frame ends */
	bool snapshot;             /* LTX events: a snapshot frame ('S' or 'D') */
	bool diverged;             /* LTX events: 'D': the replica's transactions are not the primary's */
	uint32_t ltx_len;          /* LTX_BEGIN */
	const uint8_t *data;       /* LTX_DATA: borrowed from the input */
	size_t len;
	const struct stream_list *list; /* LIST: borrowed; valid until the next call */
};

struct stream_parser {
	enum stream_dir dir;
	uint32_t max_ltx_len;
	int state;                 /* see stream.c */
	int error;                 /* sticky: the first error returned */
	const char *why;           /* static text describing the error */
	uint64_t offset;           /* input bytes consumed so far */
	bool seen_hello, ended;

	uint8_t hdr[STREAM_HDR_SIZE];
	size_t hdr_have;
	uint8_t type;
	uint32_t len;              /* payload length of the current frame */

	/* LTX and snapshot frames. */
	uint8_t name_len_buf[2];
	size_t name_len_have;
	uint16_t name_len;
	char name[STREAM_MAX_NAME + 1];
	size_t name_have;
	uint32_t ltx_left;

	/* Small frames (hello, lists) are collected whole, bounded. */
	uint8_t *body;
	size_t body_have;
	struct stream_list list;
};

/* Prepares p. max_ltx_len (0 = STREAM_MAX_LTX_LEN) bounds LTX payloads.
 * Caller frees with stream_parser_free(). */
void stream_parser_init(struct stream_parser *p, enum stream_dir dir, uint32_t max_ltx_len);
void stream_parser_free(struct stream_parser *p); /* idempotent */

/* Consumes input from buf[0..len). Returns 1 with *ev set and *used the
 * bytes consumed to produce it (call again with the rest), 0 when every
 * byte was consumed without completing an event (*used == len), or
 * ERR_REPL_PROTOCOL (p->why says which rule broke, p->offset where) or
 * ERR_NOMEM. Errors are sticky. */
int stream_parse(struct stream_parser *p, const uint8_t *buf, size_t len, size_t *used, struct stream_event *ev);

/* The input ended. Returns 0 when it ended at a frame boundary, else
 * ERR_REPL_PROTOCOL ("truncated frame"). Whether an end frame came is
 * p->ended. */
int stream_parser_finish(struct stream_parser *p);

#endif
