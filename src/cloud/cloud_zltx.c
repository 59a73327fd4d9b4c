/*
 * cloud_zltx.c — the stored form of litefs-cloud's objects (format and
 * reasons: cloud_zltx.h).
 *
 * The reader is a state machine over the stored bytes:
 *
 *   HDR   collect the 100 header bytes; a plain LTX header goes to PLAIN,
 *         a stored-form header has its flag cleared and goes to FRAME
 *   PLAIN every later byte passes through unchanged
 *   FRAME bytes come out of the zstd frame; when the frame ends, the
 *         input left over (and everything after it) is the trailer: TAIL
 *   TAIL  pass-through of the rest; the LTX decoder checks that exactly a
 *         trailer is left
 *
 * The writer holds back the last 16 bytes it was given, so that when the
 * input ends the trailer is known to be those 16 bytes and is written
 * after the frame, uncompressed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "cloud/cloud_zltx.h"

enum { ST_HDR, ST_PLAIN, ST_FRAME, ST_TAIL };

#define ZLTX_IN_SIZE (64 * 1024)

/* zstd contexts kept for reuse. A new one allocates and clears its
 * tables (about 1 MiB for the compressor), which measured ~300 us per
 * small upload; a reused one keeps them. At most POOL_MAX of each kind
 * are kept (one per concurrent user is enough), the rest are freed. */
#define POOL_MAX 8
struct pool {
	void *items[POOL_MAX];
	int n;
};
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pool cpool, dpool;

/* A kept context, or NULL. */
static void *pool_take(struct pool *p)
{
	void *z = NULL;
	pthread_mutex_lock(&pool_mu);
	if (p->n > 0)
		z = p->items[--p->n];
	pthread_mutex_unlock(&pool_mu);
	return z;
}

/* Keeps z (already reset) if there is room; false: the caller frees it. */
static bool pool_keep(struct pool *p, void *z)
{
	pthread_mutex_lock(&pool_mu);
	bool kept = p->n < POOL_MAX;
	if (kept)
		p->items[p->n++] = z;
	pthread_mutex_unlock(&pool_mu);
	return kept;
}

static ZSTD_CCtx *cctx_get(void)
{
	ZSTD_CCtx *z = pool_take(&cpool);
	return z ? z : ZSTD_createCCtx();
}

static void cctx_put(ZSTD_CCtx *z)
{
	if (z && (ZSTD_isError(ZSTD_CCtx_reset(z, ZSTD_reset_session_and_parameters)) || !pool_keep(&cpool, z)))
		ZSTD_freeCCtx(z);
}

static ZSTD_DCtx *dctx_get(void)
{
	ZSTD_DCtx *z = pool_take(&dpool);
	return z ? z : ZSTD_createDCtx();
}

static void dctx_put(ZSTD_DCtx *z)
{
	if (z && (ZSTD_isError(ZSTD_DCtx_reset(z, ZSTD_reset_session_and_parameters)) || !pool_keep(&dpool, z)))
		ZSTD_freeDCtx(z);
}

/* The header's flags (big-endian u32 at offset 4). */
static uint32_t hdr_flags(const uint8_t *hdr)
{
	uint32_t v;
	memcpy(&v, hdr + 4, sizeof(v));
	return ntohl(v);
}

static void hdr_set_flags(uint8_t *hdr, uint32_t flags)
{
	uint32_t v = htonl(flags);
	memcpy(hdr + 4, &v, sizeof(v));
}

void cloud_zltx_reader_init(struct cloud_zltx_reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->src = fdio_read;
	r->state = ST_HDR;
}

void cloud_zltx_reader_set_source(struct cloud_zltx_reader *r, ltx_read_fn src)
{
	r->src = src;
}

void cloud_zltx_reader_done(struct cloud_zltx_reader *r)
{
	dctx_put(r->z);
	free(r->in);
	r->z = NULL;
	r->in = NULL;
}

/* Reads the header (as much of it as there is) and picks the state. */
static int read_header(struct cloud_zltx_reader *r)
{
	while (r->hdr_len < LTX_HEADER_SIZE) {
		ssize_t n = r->src(&r->fd, r->hdr + r->hdr_len, LTX_HEADER_SIZE - r->hdr_len);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		r->hdr_len += (size_t)n;
	}
	uint32_t flags = r->hdr_len == LTX_HEADER_SIZE ? hdr_flags(r->hdr) : 0;
	if (r->hdr_len < LTX_HEADER_SIZE || memcmp(r->hdr, LTX_MAGIC, 4) != 0 || !(flags & CLOUD_ZLTX_FLAG)) {
		r->state = ST_PLAIN; /* the LTX decoder judges it */
		return 0;
	}
	if (flags != CLOUD_ZLTX_FLAG)
		return ERR_CLOUD_OBJECT_CORRUPT;
	hdr_set_flags(r->hdr, 0);
	r->z = dctx_get();
	r->in = malloc(ZLTX_IN_SIZE);
	if (r->z == NULL || r->in == NULL)
		return ERR_NOMEM;
	if (ZSTD_isError(ZSTD_DCtx_setParameter(r->z, ZSTD_d_windowLogMax, CLOUD_ZLTX_WLOG_MAX)))
		return ERR_NOMEM;
	r->state = ST_FRAME;
	return 0;
}

/* Decompresses into buf; 0 only when the frame ended with nothing more to
 * give (the state is then ST_TAIL). */
static ssize_t read_frame(struct cloud_zltx_reader *r, void *buf, size_t len)
{
	ZSTD_outBuffer out = { buf, len, 0 };
	while (out.pos == 0) {
		if (r->in_off == r->in_len) {
			ssize_t n = r->src(&r->fd, r->in, ZLTX_IN_SIZE);
			if (n < 0)
				return n;
			if (n == 0)
				return ERR_CLOUD_OBJECT_CORRUPT; /* truncated inside the frame */
			r->in_len = (size_t)n;
			r->in_off = 0;
		}
		ZSTD_inBuffer in = { r->in, r->in_len, r->in_off };
		size_t ret = ZSTD_decompressStream(r->z, &out, &in);
		r->in_off = in.pos;
		if (ZSTD_isError(ret))
			return ERR_CLOUD_OBJECT_CORRUPT;
		if (ret == 0) {
			r->state = ST_TAIL;
			break;
		}
	}
	return (ssize_t)out.pos;
}

ssize_t cloud_zltx_read(void *ctx, void *buf, size_t len)
{
	struct cloud_zltx_reader *r = ctx;
	if (r->err)
		return r->err;
	if (len == 0)
		return 0;
	ssize_t n = 0;
	if (r->state == ST_HDR) {
		int rc = read_header(r);
		if (rc < 0)
			return r->err = rc;
	}
	if (r->hdr_off < r->hdr_len) {
		size_t k = r->hdr_len - r->hdr_off < len ? r->hdr_len - r->hdr_off : len;
		memcpy(buf, r->hdr + r->hdr_off, k);
		r->hdr_off += k;
		return (ssize_t)k;
	}
	if (r->state == ST_FRAME) {
		n = read_frame(r, buf, len);
		if (n < 0)
			return r->err = (int)n;
		if (n > 0)
			return n;
	}
	if (r->state == ST_TAIL && r->in_off < r->in_len) {
		size_t k = r->in_len - r->in_off < len ? r->in_len - r->in_off : len;
		memcpy(buf, r->in + r->in_off, k);
		r->in_off += k;
		return (ssize_t)k;
	}
	n = r->src(&r->fd, buf, len);
	if (n < 0)
		r->err = (int)n;
	return n;
}

struct cloud_zltx_writer {
	ltx_write_fn write;
	void *ctx;
	ZSTD_CCtx *z;
	uint8_t hdr[LTX_HEADER_SIZE];
	size_t hdr_len;
	uint8_t hold[LTX_TRAILER_SIZE];
	size_t hold_len;
	uint8_t *out;
	size_t out_cap;
	int err;
};

int cloud_zltx_writer_new(struct cloud_zltx_writer **out, int level, ltx_write_fn write, void *ctx)
{
	struct cloud_zltx_writer *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return ERR_NOMEM;
	w->write = write;
	w->ctx = ctx;
	w->out_cap = ZSTD_CStreamOutSize();
	w->out = malloc(w->out_cap);
	w->z = cctx_get();
	if (w->out == NULL || w->z == NULL ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_windowLog, CLOUD_ZLTX_WLOG)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_checksumFlag, 1))) {
		cloud_zltx_writer_free(w);
		return ERR_NOMEM;
	}
	*out = w;
	return 0;
}

void cloud_zltx_writer_free(struct cloud_zltx_writer *w)
{
	if (w == NULL)
		return;
	cctx_put(w->z);
	free(w->out);
	free(w);
}

/* Compresses data[0..len) with mode, writing whatever comes out. */
static int feed(struct cloud_zltx_writer *w, const uint8_t *data, size_t len, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = { data, len, 0 };
	for (;;) {
		ZSTD_outBuffer o = { w->out, w->out_cap, 0 };
		size_t left = ZSTD_compressStream2(w->z, &o, &in, mode);
		if (ZSTD_isError(left))
			return ERR_NOMEM;
		if (o.pos > 0) {
			int rc = w->write(w->ctx, w->out, o.pos);
			if (rc < 0)
				return rc;
		}
		if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size)
			return 0;
	}
}

static int write_body(struct cloud_zltx_writer *w, const uint8_t *p, size_t len)
{
	int rc = 0;
	if (w->hold_len + len <= LTX_TRAILER_SIZE) {
		memcpy(w->hold + w->hold_len, p, len);
		w->hold_len += len;
		return 0;
	}
	if (len >= LTX_TRAILER_SIZE) {
		/* Everything held and all but the last 16 new bytes go out. */
		rc = feed(w, w->hold, w->hold_len, ZSTD_e_continue);
		if (rc == 0)
			rc = feed(w, p, len - LTX_TRAILER_SIZE, ZSTD_e_continue);
		memcpy(w->hold, p + len - LTX_TRAILER_SIZE, LTX_TRAILER_SIZE);
		w->hold_len = LTX_TRAILER_SIZE;
		return rc;
	}
	/* Fewer than 16 new bytes: the oldest held ones go out. */
	uint8_t both[2 * LTX_TRAILER_SIZE];
	memcpy(both, w->hold, w->hold_len);
	memcpy(both + w->hold_len, p, len);
	size_t total = w->hold_len + len, spill = total - LTX_TRAILER_SIZE;
	rc = feed(w, both, spill, ZSTD_e_continue);
	memcpy(w->hold, both + spill, LTX_TRAILER_SIZE);
	w->hold_len = LTX_TRAILER_SIZE;
	return rc;
}

int cloud_zltx_write(void *ctx, const void *buf, size_t len)
{
	struct cloud_zltx_writer *w = ctx;
	const uint8_t *p = buf;
	if (w->err)
		return w->err;
	if (w->hdr_len < LTX_HEADER_SIZE) {
		size_t k = LTX_HEADER_SIZE - w->hdr_len < len ? LTX_HEADER_SIZE - w->hdr_len : len;
		memcpy(w->hdr + w->hdr_len, p, k);
		w->hdr_len += k;
		p += k;
		len -= k;
		if (w->hdr_len < LTX_HEADER_SIZE)
			return 0;
		if (memcmp(w->hdr, LTX_MAGIC, 4) != 0 || hdr_flags(w->hdr) != 0)
			return w->err = ERR_INVAL;
		uint8_t out[LTX_HEADER_SIZE];
		memcpy(out, w->hdr, sizeof(out));
		hdr_set_flags(out, CLOUD_ZLTX_FLAG);
		int rc = w->write(w->ctx, out, sizeof(out));
		if (rc < 0)
			return w->err = rc;
	}
	int rc = len ? write_body(w, p, len) : 0;
	return rc < 0 ? (w->err = rc) : 0;
}

int cloud_zltx_writer_finish(struct cloud_zltx_writer *w)
{
	if (w->err)
		return w->err;
	if (w->hdr_len < LTX_HEADER_SIZE || w->hold_len != LTX_TRAILER_SIZE)
		return w->err = ERR_INVAL;
	int rc = feed(w, NULL, 0, ZSTD_e_end);
	if (rc == 0)
		rc = w->write(w->ctx, w->hold, w->hold_len);
	return rc < 0 ? (w->err = rc) : 0;
}

int cloud_zltx_header_decode(const uint8_t *in, struct ltx_header *h, bool *zstd)
{
	uint8_t hdr[LTX_HEADER_SIZE];
	memcpy(hdr, in, sizeof(hdr));
	bool z = hdr_flags(hdr) == CLOUD_ZLTX_FLAG;
	if (z)
		hdr_set_flags(hdr, 0);
	if (zstd)
		*zstd = z;
	return ltx_header_decode(hdr, h);
}

int cloud_zltx_transcode(int in_fd, ltx_write_fn write, void *ctx, int level)
{
	struct ltx_decoder *dec = NULL;
	struct ltx_encoder *enc = NULL;
	struct cloud_zltx_writer *w = NULL;
	struct ltx_header h;
	struct ltx_trailer t;
	uint8_t *page = malloc(LTX_MAX_PAGE_SIZE);
	int rc = page ? ltx_decoder_new(&dec, fdio_read, &in_fd) : ERR_NOMEM;
	if (rc == 0)
		rc = ltx_decoder_header(dec, &h);
	if (rc == 0)
		rc = cloud_zltx_writer_new(&w, level, write, ctx);
	if (rc == 0) {
		h.flags = 0;
		rc = ltx_encoder_new(&enc, &h, cloud_zltx_write, w);
	}
	uint32_t pgno;
	while (rc == 0 && (rc = ltx_decoder_next_page(dec, &pgno, page)) == 1)
		rc = ltx_encoder_write_page(enc, pgno, page);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, &t);
	if (rc == 0)
		rc = ltx_encoder_finish(enc, t.post_apply_checksum, NULL);
	if (rc == 0)
		rc = cloud_zltx_writer_finish(w);
	ltx_encoder_free(enc);
	cloud_zltx_writer_free(w);
	ltx_decoder_free(dec);
	free(page);
	return rc;
}
