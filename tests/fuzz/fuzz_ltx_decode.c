/*
 * fuzz_ltx_decode.c — libFuzzer target for the LTX decoder.
 *
 * Decodes arbitrary bytes. Whatever decodes must re-encode (the encoder's
 * rules are the decoder's, so it may not refuse anything the decoder
 * accepted), and the re-encoded file must decode to the same header,
 * pages and trailer; the file checksum must even be identical, because
 * it covers only the header, the uncompressed pages and the post-apply
 * checksum. Pages are compared by page checksum to keep memory flat when
 * a small LZ4 input expands to many pages.
 *
 * Random bytes almost never carry a valid file checksum, which would keep
 * the fuzzer away from the success path. So when a decode fails only on
 * the checksums (ERR_LTX_FILE_CHECKSUM or, for snapshots,
 * ERR_LTX_POST_CHECKSUM), the target repairs the trailer from what it saw
 * and requires the repaired file to decode and round-trip.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/crc64.h"
#include "base/err.h"
#include "ltx/ltx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	size_t n, cap;
	uint32_t *pgnos;
	uint64_t *sums;
};

static void seen_add(struct seen *s, uint32_t pgno, uint64_t sum)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->pgnos = realloc(s->pgnos, s->cap * sizeof(*s->pgnos));
		s->sums = realloc(s->sums, s->cap * sizeof(*s->sums));
		if (s->pgnos == NULL || s->sums == NULL)
			abort();
	}
	s->pgnos[s->n] = pgno;
	s->sums[s->n] = sum;
	s->n++;
}

static void seen_free(struct seen *s)
{
	free(s->pgnos);
	free(s->sums);
}

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                       \
		}                                                                      \
	} while (0)

/* Decodes data, recording pages; re-encodes into *out if out != NULL.
 * *stream_crc gets the CRC of header, frames and end marker as seen, and
 * *pages the pages' checksum. Returns the decoder's result. */
static int decode(const uint8_t *data, size_t size, struct seen *s, struct ltx_header *h,
		  struct ltx_trailer *t, struct ltx_growbuf *out, uint64_t *stream_crc, uint64_t *pages)
{
	static const uint8_t zero[4];
	struct ltx_membuf m = {.data = data, .len = size, .off = 0};
	struct ltx_decoder *d = NULL;
	struct ltx_encoder *e = NULL;
	uint8_t *page = NULL;
	uint32_t pgno;
	int rc;

	if (ltx_decoder_new(&d, ltx_membuf_read, &m) != 0)
		abort();
	rc = ltx_decoder_header(d, h);
	if (rc != 0)
		goto out;
	page = malloc(h->page_size);
	CHECK(page != NULL);
	*stream_crc = crc64_update(0, data, LTX_HEADER_SIZE);
	if (out != NULL)
		CHECK(ltx_encoder_new(&e, h, ltx_growbuf_write, out) == 0);
	while ((rc = ltx_decoder_next_page(d, &pgno, page)) == 1) {
		CHECK(ltx_decoder_last_page_checksum(d) == ltx_page_checksum(pgno, page, h->page_size));
		seen_add(s, pgno, ltx_decoder_last_page_checksum(d));
		uint8_t be[4] = {(uint8_t)(pgno >> 24), (uint8_t)(pgno >> 16), (uint8_t)(pgno >> 8), (uint8_t)pgno};
		*stream_crc = crc64_update(crc64_update(*stream_crc, be, 4), page, h->page_size);
		if (e != NULL)
			CHECK(ltx_encoder_write_page(e, pgno, page) == 0);
	}
	if (rc != 0)
		goto out;
	*stream_crc = crc64_update(*stream_crc, zero, sizeof(zero));
	*pages = ltx_decoder_pages_checksum(d);
	rc = ltx_decoder_finish(d, t);
	CHECK(ltx_decoder_offset(d) <= size);
	if (rc == 0 && e != NULL)
		CHECK(ltx_encoder_finish(e, t->post_apply_checksum, NULL) == 0);
out:
	ltx_encoder_free(e);
	free(page);
	ltx_decoder_free(d);
	return rc;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void check_one(const uint8_t *data, size_t size, bool repaired)
{
	struct seen a = {0}, b = {0};
	struct ltx_header h1, h2;
	struct ltx_trailer t1, t2;
	struct ltx_growbuf out = {0};
	uint64_t off = 0, stream_crc = 0, pages = 0, unused;

	/* The convenience wrapper must agree with the streaming calls. */
	struct ltx_membuf m = {.data = data, .len = size, .off = 0};
	int rc_all = ltx_decode_all(ltx_membuf_read, &m, NULL, NULL, NULL, NULL, &off);
	int rc = decode(data, size, &a, &h1, &t1, &out, &stream_crc, &pages);

	CHECK(rc == rc_all);
	CHECK(rc <= 0);
	CHECK(off <= size);
	if (repaired)
		CHECK(rc == 0);
	if (!repaired && (rc == ERR_LTX_FILE_CHECKSUM || rc == ERR_LTX_POST_CHECKSUM)) {
		/* Only the trailer's checksums are wrong, and nothing follows
		 * the trailer (that is checked first): fix them and go on. */
		uint8_t *copy = malloc(size);
		uint64_t post;

		CHECK(copy != NULL && size >= LTX_TRAILER_SIZE);
		memcpy(copy, data, size);
		post = ltx_header_is_snapshot(&h1) ? pages : 0;
		if (post != 0)
			put_be64(copy + size - LTX_TRAILER_SIZE, post);
		stream_crc = crc64_update(stream_crc, copy + size - LTX_TRAILER_SIZE, 8);
		put_be64(copy + size - 8, LTX_CHECKSUM_FLAG | stream_crc);
		check_one(copy, size, true);
		free(copy);
	}
	if (rc == 0) {
		CHECK(off == size);
		CHECK(decode(out.data, out.len, &b, &h2, &t2, NULL, &unused, &unused) == 0);
		CHECK(memcmp(&h1.flags, &h2.flags, sizeof(h1.flags)) == 0);
		CHECK(h1.page_size == h2.page_size && h1.commit == h2.commit);
		CHECK(h1.min_txid == h2.min_txid && h1.max_txid == h2.max_txid);
		CHECK(h1.pre_apply_checksum == h2.pre_apply_checksum && h1.node_id == h2.node_id);
		CHECK(t1.post_apply_checksum == t2.post_apply_checksum);
		CHECK(t1.file_checksum == t2.file_checksum);
		CHECK(a.n == b.n);
		CHECK(a.n == 0 || memcmp(a.pgnos, b.pgnos, a.n * sizeof(*a.pgnos)) == 0);
		CHECK(a.n == 0 || memcmp(a.sums, b.sums, a.n * sizeof(*a.sums)) == 0);
	}
	free(out.data);
	seen_free(&a);
	seen_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_one(data, size, false);
	return 0;
}
