/*
 * fullrec.c — a full-image LTX file encoded as the database's bytes
 * arrive (fullrec.h says what and why).
 *
 * Layout written, from `base`:
 *
 *   LTX header (100)                                      fullrec_finish()
 *   plain:  be32(1) | page 1                              fullrec_finish()
 *   LZ4:    frame header (7) | page 1's frame in stored
 *           blocks: le32(n | 1<<31) | n bytes, n <= 64 KiB fullrec_finish()
 *   pages 2..N (lock page skipped) as frames: plain, or in LZ4 blocks of
 *   64 KiB of frame bytes, each compressed (LZ4_compress_fast) or stored
 *   when it does not shrink                                   as they come
 *   end marker be32(0) (inside the LZ4 frame), LZ4 end mark le32(0)
 *   trailer: post-apply checksum, file checksum           fullrec_finish()
 *
 * Checksums: each page's CRC is computed once; it is both its page
 * checksum and, folded in with the CRC combine identity, part of the CRC
 * of the stream after page 1 ("rest"). At the end: file CRC =
 * combine(crc(header | be32(1) | page 1), crc(rest), len(rest)), then the
 * post-apply checksum's 8 bytes.
 */
#include <errno.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/sys.h"
#include "ltx/crc64.h"
#include "ltx/fullrec.h"

#define FULLREC_WBUF (1u << 20)   /* output buffer */
/* Writeback is started every FULLREC_KICK bytes, and the cache of what is
 * on disk dropped (sys_writeback): the record is read by replicas and the
 * backup, not by this node, and new cache is slow on a VM. */
#define FULLREC_KICK (16 << 20)
#define FULLREC_BLOCK (64u << 10) /* LZ4 block (the frame's maximum) */
#define FULLREC_LZ4_HDR 7         /* frame header without content size or dictionary */
/* LZ4 acceleration: 1 is LZ4's default. On bigdb.py's data 4 takes 0.56x the
 * CPU of 1 for 0.1 % more bytes (BENCHMARKS.md); the records are mostly read
 * back once (replicas, the backup service), so ratio matters less than
 * the time spent on the commit path. */
#define FULLREC_LZ4_ACCEL 4

struct fullrec {
	int fd;
	off_t base;
	uint32_t page_size, lock, next; /* next: the page number the next full page gets */
	bool compress;
	int err;
	uint8_t *page;   /* a page being assembled from pieces */
	size_t page_fill;
	uint8_t *page1;  /* page 1 as fed */
	uint64_t fed;
	uint64_t rest_crc, rest_len, pages_xor;
	uint64_t xpow_frame; /* x^(8 * (4 + page_size)) */
	uint8_t *blk;    /* LZ4: frame bytes of the block being filled */
	size_t blk_len;
	uint8_t *zbuf;   /* LZ4: a compressed block */
	struct sys_writer w;
};

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/* Page 1's frame in stored LZ4 blocks: how many. */
static size_t page1_blocks(uint32_t page_size)
{
	return (LTX_PAGE_HEADER_SIZE + page_size + FULLREC_BLOCK - 1) / FULLREC_BLOCK;
}

/* Bytes reserved at the front: header and page 1's frame. */
static size_t prefix_len(uint32_t page_size, bool compress)
{
	size_t n = LTX_HEADER_SIZE + LTX_PAGE_HEADER_SIZE + page_size;
	return compress ? n + FULLREC_LZ4_HDR + 4 * page1_blocks(page_size) : n;
}

static int out(struct fullrec *r, const void *p, size_t len)
{
	if (r->err)
		return r->err;
	int rc = sys_writer_write(&r->w, p, len);
	if (rc)
		r->err = rc;
	return rc;
}

/* The LZ4 block filled so far, compressed if that saves bytes. */
static int flush_block(struct fullrec *r)
{
	if (r->blk_len == 0)
		return 0;
	uint8_t sz[4];
	int n = LZ4_compress_fast((const char *)r->blk, (char *)r->zbuf, (int)r->blk_len, (int)r->blk_len - 1,
				  FULLREC_LZ4_ACCEL);
	int rc;
	if (n > 0) {
		put_le32(sz, (uint32_t)n);
		rc = out(r, sz, 4);
		if (rc == 0)
			rc = out(r, r->zbuf, (size_t)n);
	} else {
		put_le32(sz, (uint32_t)r->blk_len | 0x80000000u);
		rc = out(r, sz, 4);
		if (rc == 0)
			rc = out(r, r->blk, r->blk_len);
	}
	r->blk_len = 0;
	return rc;
}

/* Moves what fits of the *len bytes at *p into buf after its *fill bytes
 * (cap in all). */
static void fill_buf(uint8_t *buf, size_t *fill, size_t cap, const uint8_t **p, size_t *len)
{
	size_t k = cap - *fill < *len ? cap - *fill : *len;
	memcpy(buf + *fill, *p, k);
	*fill += k;
	*p += k;
	*len -= k;
}

/* Bytes of the page block after page 1's frame. */
static int emit(struct fullrec *r, const uint8_t *p, size_t len)
{
	if (!r->compress)
		return out(r, p, len);
	while (len > 0) {
		fill_buf(r->blk, &r->blk_len, FULLREC_BLOCK, &p, &len);
		if (r->blk_len == FULLREC_BLOCK) {
			int rc = flush_block(r);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int add_page(struct fullrec *r, const uint8_t *data)
{
	uint32_t pgno = r->next++;
	if (pgno == 1) {
		memcpy(r->page1, data, r->page_size);
		return 0;
	}
	if (pgno == r->lock)
		return 0;
	uint8_t be[LTX_PAGE_HEADER_SIZE];
	put_be32(be, pgno);
	uint64_t c = crc64_update(crc64_update(0, be, sizeof(be)), data, r->page_size);
	r->rest_crc = ltx_crc64_combine(r->rest_crc, c, r->xpow_frame);
	r->rest_len += sizeof(be) + r->page_size;
	r->pages_xor ^= LTX_CHECKSUM_FLAG | c;
	int rc = emit(r, be, sizeof(be));
	return rc ? rc : emit(r, data, r->page_size);
}

int fullrec_new(struct fullrec **outp, int fd, off_t base, uint32_t page_size, bool compress)
{
	*outp = NULL;
	if (!ltx_is_valid_page_size(page_size))
		return ERR_LTX_PAGE_SIZE;
	struct fullrec *r = calloc(1, sizeof(*r));
	if (!r)
		return ERR_NOMEM;
	r->fd = fd;
	r->base = base;
	r->page_size = page_size;
	r->lock = ltx_lock_pgno(page_size);
	r->next = 1;
	r->compress = compress;
	r->xpow_frame = ltx_crc64_xpow8((uint64_t)LTX_PAGE_HEADER_SIZE + page_size);
	r->page = malloc(page_size);
	r->page1 = malloc(page_size);
	r->w = (struct sys_writer){ .fd = fd, .off = base + (off_t)prefix_len(page_size, compress),
				    .wb = { .kick = FULLREC_KICK, .keep = SYS_WB_KEEP }, .cap = FULLREC_WBUF };
	r->w.wb.kicked = r->w.wb.dropped = r->w.off;
	r->w.buf = malloc(FULLREC_WBUF);
	if (compress) {
		r->blk = malloc(FULLREC_BLOCK);
		r->zbuf = malloc(FULLREC_BLOCK);
	}
	if (!r->page || !r->page1 || !r->w.buf || (compress && (!r->blk || !r->zbuf))) {
		fullrec_free(r);
		return ERR_NOMEM;
	}
	*outp = r;
	return 0;
}

void fullrec_free(struct fullrec *r)
{
	if (!r)
		return;
	free(r->page);
	free(r->page1);
	free(r->w.buf);
	free(r->blk);
	free(r->zbuf);
	free(r);
}

uint64_t fullrec_fed(const struct fullrec *r)
{
	return r->fed;
}

int fullrec_feed(struct fullrec *r, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	const size_t ps = r->page_size;
	int rc = r->err;
	r->fed += len;
	while (rc == 0 && len > 0) {
		if (r->page_fill == 0 && len >= ps) {
			rc = add_page(r, p); /* whole pages straight from the caller's buffer */
			p += ps;
			len -= ps;
			continue;
		}
		fill_buf(r->page, &r->page_fill, ps, &p, &len);
		if (r->page_fill == ps) {
			r->page_fill = 0;
			rc = add_page(r, r->page);
		}
	}
	if (rc && !r->err)
		r->err = rc;
	return rc;
}

/* The front of the file: header and page 1's frame (pbuf holds it). */
static size_t build_prefix(struct fullrec *r, const struct ltx_header *h, uint8_t *pbuf)
{
	size_t n = 0;
	ltx_header_encode(h, pbuf);
	n += LTX_HEADER_SIZE;
	if (r->compress) {
		/* The frame header LZ4F writes for 64 KiB independent blocks,
		 * no content size, no content checksum. */
		LZ4F_preferences_t prefs = { 0 };
		prefs.frameInfo.blockSizeID = LZ4F_max64KB;
		prefs.frameInfo.blockMode = LZ4F_blockIndependent;
		LZ4F_cctx *cctx = NULL;
		size_t k = 0;
		if (!LZ4F_isError(LZ4F_createCompressionContext(&cctx, LZ4F_VERSION)))
			k = LZ4F_compressBegin(cctx, pbuf + n, LZ4F_HEADER_SIZE_MAX, &prefs);
		LZ4F_freeCompressionContext(cctx);
		if (LZ4F_isError(k) || k != FULLREC_LZ4_HDR)
			return 0;
		n += k;
	}
	/* Page 1's frame: be32(1) | page 1. */
	uint8_t frame1_hdr[LTX_PAGE_HEADER_SIZE];
	put_be32(frame1_hdr, 1);
	size_t total = LTX_PAGE_HEADER_SIZE + r->page_size, done = 0;
	while (done < total) {
		size_t k = total - done < FULLREC_BLOCK ? total - done : FULLREC_BLOCK;
		if (r->compress) {
			put_le32(pbuf + n, (uint32_t)k | 0x80000000u);
			n += 4;
		}
		for (size_t i = 0; i < k; i++, done++)
			pbuf[n++] = done < LTX_PAGE_HEADER_SIZE ? frame1_hdr[done]
								 : r->page1[done - LTX_PAGE_HEADER_SIZE];
	}
	return n;
}

int fullrec_finish(struct fullrec *r, struct ltx_header *h, const uint8_t sqlite_header[100],
		   struct ltx_trailer *t, uint64_t *len)
{
	static const uint8_t zero[LTX_PAGE_HEADER_SIZE];
	if (r->err)
		return r->err;
	if (r->page_fill != 0 || r->next <= 1)
		return ERR_IO_SHORT;
	h->flags = r->compress ? LTX_FLAG_COMPRESS : 0;
	h->page_size = r->page_size;
	h->commit = r->next - 1;
	int rc = ltx_header_validate(h);
	if (rc)
		return rc;
	memcpy(r->page1, sqlite_header, 100);

	/* The end marker closes the page block; LZ4: the last block, the
	 * frame's end mark. */
	r->rest_crc = crc64_update(r->rest_crc, zero, sizeof(zero));
	r->rest_len += sizeof(zero);
	rc = emit(r, zero, sizeof(zero));
	if (rc == 0 && r->compress && (rc = flush_block(r)) == 0)
		rc = out(r, zero, 4);

	uint8_t be1[LTX_PAGE_HEADER_SIZE];
	put_be32(be1, 1);
	uint64_t c1 = crc64_update(crc64_update(0, be1, sizeof(be1)), r->page1, r->page_size);
	uint64_t post = LTX_CHECKSUM_FLAG | (r->pages_xor ^ (LTX_CHECKSUM_FLAG | c1));
	uint8_t pbuf_hdr[LTX_HEADER_SIZE];
	ltx_header_encode(h, pbuf_hdr);
	uint64_t crc = crc64_update(0, pbuf_hdr, sizeof(pbuf_hdr));
	crc = crc64_update(crc64_update(crc, be1, sizeof(be1)), r->page1, r->page_size);
	crc = ltx_crc64_combine(crc, r->rest_crc, ltx_crc64_xpow8(r->rest_len));
	uint8_t tr[LTX_TRAILER_SIZE];
	put_be64(tr, post);
	crc = crc64_update(crc, tr, 8);
	put_be64(tr + 8, LTX_CHECKSUM_FLAG | crc);
	if (rc == 0)
		rc = out(r, tr, sizeof(tr));
	if (rc == 0 && (rc = sys_writer_flush(&r->w)) != 0)
		r->err = rc;
	if (rc)
		return rc;

	size_t plen = prefix_len(r->page_size, r->compress);
	uint8_t *pbuf = malloc(plen);
	if (!pbuf)
		return ERR_NOMEM;
	size_t n = build_prefix(r, h, pbuf);
	rc = n != plen ? ERR_LTX_LZ4 : sys_pwrite_all(r->fd, pbuf, plen, r->base);
	free(pbuf);
	if (rc)
		return r->err = rc;
	if (t) {
		t->post_apply_checksum = post;
		t->file_checksum = LTX_CHECKSUM_FLAG | crc;
	}
	*len = (uint64_t)(r->w.off - r->base);
	return 0;
}
