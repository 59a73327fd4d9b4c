/*
 * test_fullrec.c — unit tests of ltx/fullrec.c: a full-image record fed
 * in pieces of random sizes decodes to the database's pages with page 1's
 * header replaced, and its trailer (post-apply and file checksum) equals
 * that of dbfile_encode_snapshot() over the same file with the same
 * header, plain and LZ4, for small and the largest page size; a file that
 * is not a whole number of pages is refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/sys.h"
#include "ltx/dbfile.h"
#include "ltx/fullrec.h"
#include "ltx/ltx.h"
#include "testutil.h"

struct check {
	const uint8_t *db;
	const uint8_t *hdr;
	uint32_t page_size, next;
};

static int check_page(void *ctx, const struct ltx_header *h, uint32_t pgno, const uint8_t *page)
{
	struct check *c = ctx;
	(void)h;
	assert_int_equal(pgno, c->next);
	c->next++;
	if (pgno == 1) {
		assert_memory_equal(page, c->hdr, 100);
		assert_memory_equal(page + 100, c->db + 100, c->page_size - 100);
	} else {
		assert_memory_equal(page, c->db + (size_t)(pgno - 1) * c->page_size, c->page_size);
	}
	return 0;
}

static void round_trip(uint32_t page_size, uint32_t n_pages, bool compress)
{
	size_t size = (size_t)page_size * n_pages;
	uint8_t *db = malloc(size);
	assert_non_null(db);
	for (size_t i = 0; i < size; i++)
		db[i] = (i / 700) % 3 == 0 ? (uint8_t)rnd() : (uint8_t)(i >> 12); /* some of it compresses */
	uint8_t hdr[100];
	for (size_t i = 0; i < sizeof(hdr); i++)
		hdr[i] = (uint8_t)(i * 7 + 1);

	/* The reference: the one-pass encoder over the file. */
	int src = new_file("src.db");
	write_all(src, db, size);
	struct dbfile_snapshot_opts so = { .page_size = page_size, .timestamp_ms = 1234, .compress = compress,
					   .follows_txid = 5, .pre_apply_checksum = LTX_CHECKSUM_FLAG | 77,
					   .node_id = 9, .sqlite_header = hdr };
	struct ltx_growbuf ref = { 0 };
	struct ltx_header rh;
	struct ltx_trailer rt;
	assert_int_equal(dbfile_encode_snapshot(src, &so, ltx_growbuf_write, &ref, &rh, &rt), 0);

	/* fullrec behind an 8-byte prefix, fed in random pieces. */
	int out = new_file("rec");
	struct fullrec *r;
	assert_int_equal(fullrec_new(&r, out, 8, page_size, compress), 0);
	for (size_t off = 0; off < size;) {
		size_t k = 1 + rnd_below(3 * page_size);
		if (k > size - off)
			k = size - off;
		assert_int_equal(fullrec_feed(r, db + off, k), 0);
		off += k;
	}
	assert_int_equal(fullrec_fed(r), size);
	struct ltx_header h = { .min_txid = 6, .max_txid = 6, .timestamp_ms = 1234,
				.pre_apply_checksum = LTX_CHECKSUM_FLAG | 77, .node_id = 9 };
	struct ltx_trailer t;
	uint64_t len = 0;
	assert_int_equal(fullrec_finish(r, &h, hdr, &t, &len), 0);
	fullrec_free(r);
	assert_int_equal(h.commit, n_pages);
	assert_int_equal((uint64_t)file_size(out), 8 + len);
	assert_int_equal(t.post_apply_checksum, rt.post_apply_checksum);
	assert_int_equal(t.file_checksum, rt.file_checksum);
	if (!compress)
		assert_int_equal(len, ref.len);

	size_t got_len;
	uint8_t *got = slurp(out, &got_len);
	struct ltx_membuf in = { .data = got + 8, .len = got_len - 8 };
	struct check c = { .db = db, .hdr = hdr, .page_size = page_size, .next = 1 };
	struct ltx_header dh;
	struct ltx_trailer dt;
	assert_int_equal(ltx_decode_all(ltx_membuf_read, &in, check_page, &c, &dh, &dt, NULL), 0);
	assert_int_equal(c.next, n_pages + 1);
	assert_int_equal(dt.file_checksum, rt.file_checksum);
	assert_int_equal(dh.min_txid, 6);
	assert_int_equal(dh.flags, compress ? LTX_FLAG_COMPRESS : 0);

	free(got);
	free(ref.data);
	free(db);
	close(out);
	close(src);
	unlink("rec");
}

static void test_round_trips(void **state)
{
	(void)state;
	seed(15);
	round_trip(512, 300, false);
	round_trip(512, 300, true);
	round_trip(4096, 700, false);
	round_trip(4096, 700, true);
	round_trip(65536, 5, false);
	round_trip(65536, 5, true);
	round_trip(4096, 1, true);
}

static void test_partial_page_refused(void **state)
{
	(void)state;
	int out = new_file("partial");
	struct fullrec *r;
	uint8_t buf[1000] = { 0 };
	assert_int_equal(fullrec_new(&r, out, 0, 512, true), 0);
	assert_int_equal(fullrec_feed(r, buf, sizeof(buf)), 0);
	struct ltx_header h = { .min_txid = 1, .max_txid = 1 };
	struct ltx_trailer t;
	uint64_t len;
	assert_int_equal(fullrec_finish(r, &h, buf, &t, &len), ERR_IO_SHORT);
	fullrec_free(r);
	assert_int_equal(fullrec_new(&r, out, 0, 1000, false), ERR_LTX_PAGE_SIZE);
	close(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_partial_page_refused),
	};
	return RUN_IN_TMP_DIR("test_fullrec", tests);
}
