/* Unit tests of ltxlog.c: record framing of LTX segments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/err.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"

/* Writes a segment of n one-page LTX records (TXIDs 1..n) into a fresh
 * temporary file; returns its fd and the record offsets. */
static int make_segment(int n, uint64_t *offs, uint32_t *lens)
{
	char path[] = "/tmp/test_ltxlog_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	uint64_t off = 0, chk = 0;
	uint8_t page[512];
	for (int i = 1; i <= n; i++) {
		struct ltx_growbuf gb = { 0 };
		struct ltx_encoder *e;
		memset(page, i, sizeof(page));
		struct ltx_header h = { .page_size = 512, .commit = 1, .min_txid = (uint64_t)i,
					.max_txid = (uint64_t)i, .timestamp_ms = i,
					.pre_apply_checksum = i == 1 ? 0 : chk };
		assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, &gb), 0);
		assert_int_equal(ltx_encoder_write_page(e, 1, page), 0);
		chk = LTX_CHECKSUM_FLAG | ltx_page_checksum(1, page, 512);
		assert_int_equal(ltx_encoder_finish(e, chk, NULL), 0);
		ltx_encoder_free(e);
		uint8_t hdr[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(hdr, (uint32_t)gb.len);
		assert_int_equal(pwrite(fd, hdr, sizeof(hdr), (off_t)off), (ssize_t)sizeof(hdr));
		assert_int_equal(pwrite(fd, gb.data, gb.len, (off_t)off + LTXLOG_HDR_SIZE), (ssize_t)gb.len);
		offs[i - 1] = off;
		lens[i - 1] = (uint32_t)gb.len;
		off += LTXLOG_HDR_SIZE + gb.len;
		free(gb.data);
	}
	return fd;
}

static void test_records_round_trip(void **state)
{
	uint64_t offs[5];
	uint32_t lens[5];
	int fd = make_segment(5, offs, lens);
	uint64_t size = offs[4] + LTXLOG_HDR_SIZE + lens[4];
	struct ltxlog_rec rec;
	uint64_t off = 0;
	assert_true(ltxlog_is_segment(fd));
	for (int i = 0; i < 5; i++) {
		assert_int_equal(ltxlog_read_rec(fd, off, size, &rec), 1);
		assert_int_equal(rec.offset, offs[i]);
		assert_int_equal(rec.len, lens[i]);
		struct ltxlog_reader r;
		struct ltx_header h;
		struct ltx_trailer t;
		uint64_t eoff;
		ltxlog_reader_init(&r, fd, &rec);
		assert_int_equal(ltx_decode_all(ltxlog_read, &r, NULL, NULL, &h, &t, &eoff), 0);
		assert_int_equal(h.min_txid, (uint64_t)i + 1);
		off = rec.offset + LTXLOG_HDR_SIZE + rec.len;
	}
	assert_int_equal(ltxlog_read_rec(fd, off, size, &rec), 0);
	close(fd);
}

static void test_torn_and_garbage(void **state)
{
	uint64_t offs[3];
	uint32_t lens[3];
	int fd = make_segment(3, offs, lens);
	uint64_t size = offs[2] + LTXLOG_HDR_SIZE + lens[2];
	struct ltxlog_rec rec;
	/* Cut anywhere inside the last record: torn. */
	for (uint64_t cut = offs[2] + 1; cut < size; cut++)
		assert_int_equal(ltxlog_read_rec(fd, offs[2], cut, &rec), ERR_LTXLOG_TORN);
	/* A zeroed header (an append that did not finish) is a clean end. */
	static const uint8_t zero[LTXLOG_HDR_SIZE];
	assert_int_equal(pwrite(fd, zero, sizeof(zero), (off_t)offs[2]), (ssize_t)sizeof(zero));
	assert_int_equal(ltxlog_read_rec(fd, offs[2], size, &rec), 0);
	/* Garbage where a header should be. */
	assert_int_equal(pwrite(fd, "XXXXXXXX", 8, (off_t)offs[1]), 8);
	assert_int_equal(ltxlog_read_rec(fd, offs[1], size, &rec), ERR_LTXLOG_MAGIC);
	/* A length too small to be an LTX file. */
	uint8_t hdr[LTXLOG_HDR_SIZE];
	ltxlog_encode_hdr(hdr, 10);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), (off_t)offs[1]), (ssize_t)sizeof(hdr));
	assert_int_equal(ltxlog_read_rec(fd, offs[1], size, &rec), ERR_LTXLOG_MAGIC);
	close(fd);
}

static void test_names(void **state)
{
	char name[LTXLOG_NAME_LEN];
	uint64_t v;
	ltxlog_format_name(name, 0x1f);
	assert_string_equal(name, "000000000000001f.ltxlog");
	assert_int_equal(ltxlog_parse_name(name, &v), 0);
	assert_int_equal(v, 0x1f);
	assert_int_equal(ltxlog_parse_name("000000000000001F.ltxlog", &v), ERR_INVAL);
	assert_int_equal(ltxlog_parse_name("000000000000001f.ltx", &v), ERR_INVAL);
	assert_int_equal(ltxlog_parse_name(".spare-0000000000000001", &v), ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_records_round_trip),
		cmocka_unit_test(test_torn_and_garbage),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
