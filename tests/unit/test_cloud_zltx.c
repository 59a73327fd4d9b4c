/*
 * test_cloud_zltx.c — unit tests of the stored form of litefs-cloud's
 * objects (cloud_zltx.[ch]): every LTX file written through the writer
 * reads back as the same uncompressed LTX file, plain LTX passes through
 * the reader unchanged, and every kind of damage is refused: a broken or
 * cut zstd frame with ERR_CLOUD_OBJECT_CORRUPT, a frame that decodes to
 * other bytes by the LTX file checksum.
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
#include "cloud/cloud_zltx.h"
#include "ltx/ltx.h"
#include "testutil.h"

/* A random chain step as one LTX file: n_pages pages of text-like bytes
 * (compressible), flags as given. */
static void make_ltx(struct ltx_growbuf *out, uint32_t flags, uint32_t n_pages, bool snapshot)
{
	struct model m = { .page_size = 4096 };
	model_resize(&m, n_pages);
	uint32_t pg[64];
	size_t k = 0;
	for (uint32_t p = 1; p <= n_pages; p++) {
		uint8_t *d = model_page(&m, p);
		for (uint32_t i = 0; i < m.page_size; i++)
			d[i] = (uint8_t)"0123456789abcdef"[rnd_below(16)];
		if (snapshot || rnd_below(3) == 0)
			pg[k++] = p;
	}
	uint64_t sum = model_checksum(&m);
	struct ltx_header h = { .flags = flags, .page_size = m.page_size, .commit = n_pages,
				.min_txid = snapshot ? 1 : 7, .max_txid = 9, .timestamp_ms = 1700000000000LL,
				.pre_apply_checksum = snapshot ? 0 : LTX_CHECKSUM_FLAG | 0x1234 };
	memset(out, 0, sizeof(*out));
	encode_ltx(out, &h, &m, pg, k, sum);
	model_free(&m);
}

static int mem_fd(const char *name, const uint8_t *data, size_t len)
{
	int fd = new_file(name);
	write_all(fd, data, len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* The stored form of an uncompressed LTX file, written in pieces of
 * random sizes (the writer's hold-back of the trailer must not care). */
static void store(const struct ltx_growbuf *plain, struct ltx_growbuf *out)
{
	struct cloud_zltx_writer *w;
	memset(out, 0, sizeof(*out));
	assert_int_equal(cloud_zltx_writer_new(&w, CLOUD_ZLTX_LEVEL, ltx_growbuf_write, out), 0);
	for (size_t off = 0; off < plain->len;) {
		size_t n = 1 + rnd_below(rnd_below(2) ? 20 : 9000);
		if (n > plain->len - off)
			n = plain->len - off;
		assert_int_equal(cloud_zltx_write(w, plain->data + off, n), 0);
		off += n;
	}
	assert_int_equal(cloud_zltx_writer_finish(w), 0);
	cloud_zltx_writer_free(w);
}

/* Reads fd through the reader in pieces of random sizes; returns what
 * came out, or the error. */
static int read_back(int fd, struct ltx_growbuf *out)
{
	struct cloud_zltx_reader r;
	cloud_zltx_reader_init(&r, fd);
	memset(out, 0, sizeof(*out));
	uint8_t buf[10000];
	int rc = 0;
	for (;;) {
		ssize_t n = cloud_zltx_read(&r, buf, 1 + rnd_below(rnd_below(2) ? 7 : sizeof(buf)));
		if (n <= 0) {
			rc = (int)n;
			break;
		}
		assert_int_equal(ltx_growbuf_write(out, buf, (size_t)n), 0);
	}
	cloud_zltx_reader_done(&r);
	return rc;
}

static int decode_fd(int fd)
{
	struct cloud_zltx_reader r;
	cloud_zltx_reader_init(&r, fd);
	int rc = ltx_decode_all(cloud_zltx_read, &r, NULL, NULL, NULL, NULL, NULL);
	cloud_zltx_reader_done(&r);
	return rc;
}

static void test_round_trip(void **state)
{
	(void)state;
	seed(1);
	for (int i = 0; i < 12; i++) {
		struct ltx_growbuf plain, z, back;
		make_ltx(&plain, 0, 1 + rnd_below(40), i % 3 == 0);
		store(&plain, &z);
		/* The header stays plain but carries the flag; the trailer is
		 * the plain file's, uncompressed. */
		struct ltx_header h;
		bool zstd = false;
		assert_int_equal(cloud_zltx_header_decode(z.data, &h, &zstd), 0);
		assert_true(zstd);
		assert_int_equal(ltx_header_decode(z.data, &h), ERR_LTX_FLAGS);
		assert_memory_equal(z.data + z.len - LTX_TRAILER_SIZE, plain.data + plain.len - LTX_TRAILER_SIZE,
				    LTX_TRAILER_SIZE);
		assert_true(z.len < plain.len * 6 / 10); /* hex text: entropy coding */
		int fd = mem_fd("rt", z.data, z.len);
		assert_int_equal(read_back(fd, &back), 0);
		assert_int_equal(back.len, plain.len);
		assert_memory_equal(back.data, plain.data, plain.len);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		assert_int_equal(decode_fd(fd), 0);
		close(fd);
		free(plain.data);
		free(z.data);
		free(back.data);
	}
}

/* Plain LTX (LZ4 or not) comes out of the reader byte for byte. */
static void test_plain_passes_through(void **state)
{
	(void)state;
	seed(2);
	for (uint32_t flags = 0; flags <= LTX_FLAG_COMPRESS; flags++) {
		struct ltx_growbuf plain, back;
		make_ltx(&plain, flags, 30, false);
		bool zstd = true;
		struct ltx_header h;
		assert_int_equal(cloud_zltx_header_decode(plain.data, &h, &zstd), 0);
		assert_false(zstd);
		int fd = mem_fd("plain", plain.data, plain.len);
		assert_int_equal(read_back(fd, &back), 0);
		assert_int_equal(back.len, plain.len);
		assert_memory_equal(back.data, plain.data, plain.len);
		close(fd);
		free(plain.data);
		free(back.data);
	}
	/* Shorter than a header: passed on for the LTX decoder to refuse. */
	int fd = mem_fd("short", (const uint8_t *)"LTX1", 4);
	assert_int_equal(decode_fd(fd), ERR_LTX_TRUNCATED);
	close(fd);
}

/* Transcoding: any valid LTX file becomes the stored form of the same
 * content; an invalid one is refused with the decoder's error. */
static void test_transcode(void **state)
{
	(void)state;
	seed(3);
	struct ltx_growbuf lz4, plain, back;
	make_ltx(&lz4, LTX_FLAG_COMPRESS, 25, false);
	seed(3);
	make_ltx(&plain, 0, 25, false);
	int in = mem_fd("tc-in", lz4.data, lz4.len), out = new_file("tc-out");
	assert_int_equal(cloud_zltx_transcode(in, fdio_write, &out, CLOUD_ZLTX_LEVEL), 0);
	assert_int_equal(lseek(out, 0, SEEK_SET), 0);
	assert_int_equal(read_back(out, &back), 0);
	assert_int_equal(back.len, plain.len);
	assert_memory_equal(back.data, plain.data, plain.len);
	close(in);
	close(out);
	lz4.data[lz4.len - 1] ^= 1; /* the file checksum */
	in = mem_fd("tc-bad", lz4.data, lz4.len);
	out = new_file("tc-out2");
	assert_int_equal(cloud_zltx_transcode(in, fdio_write, &out, CLOUD_ZLTX_LEVEL), ERR_LTX_FILE_CHECKSUM);
	close(in);
	close(out);
	free(lz4.data);
	free(plain.data);
	free(back.data);
}

/* Damage anywhere in a stored object is refused with a clear error. */
static void test_damage_refused(void **state)
{
	(void)state;
	seed(4);
	struct ltx_growbuf plain, z;
	make_ltx(&plain, 0, 40, false);
	store(&plain, &z);
	size_t frame_end = z.len - LTX_TRAILER_SIZE;
	/* Cut inside the frame, or right after it (no trailer). */
	size_t cuts[] = { LTX_HEADER_SIZE + 3, LTX_HEADER_SIZE + (frame_end - LTX_HEADER_SIZE) / 2, frame_end - 1 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		int fd = mem_fd("cut", z.data, cuts[i]);
		assert_int_equal(decode_fd(fd), ERR_CLOUD_OBJECT_CORRUPT);
		close(fd);
	}
	int fd = mem_fd("notrailer", z.data, frame_end);
	assert_int_equal(decode_fd(fd), ERR_LTX_TRUNCATED);
	close(fd);
	/* A flipped byte in the frame: zstd refuses it or it decodes to bytes
	 * the file checksum refuses; never accepted. */
	int corrupt = 0;
	for (int i = 0; i < 40; i++) {
		size_t at = LTX_HEADER_SIZE + rnd_below((uint32_t)(frame_end - LTX_HEADER_SIZE));
		uint8_t was = z.data[at];
		z.data[at] ^= (uint8_t)(1u << rnd_below(8));
		fd = mem_fd("flip", z.data, z.len);
		int rc = decode_fd(fd);
		close(fd);
		z.data[at] = was;
		assert_true(rc < 0);
		corrupt += rc == ERR_CLOUD_OBJECT_CORRUPT;
	}
	assert_true(corrupt > 30); /* zstd's content checksum names most */
	print_message("flipped bytes: %d refused by zstd, %d by the LTX checks\n", corrupt, 40 - corrupt);
	/* A flag beside the stored form's, and bytes after the trailer. */
	z.data[7] |= LTX_FLAG_COMPRESS;
	fd = mem_fd("flags", z.data, z.len);
	assert_int_equal(decode_fd(fd), ERR_CLOUD_OBJECT_CORRUPT);
	close(fd);
	z.data[7] &= (uint8_t)~LTX_FLAG_COMPRESS;
	uint8_t *longer = malloc(z.len + 1);
	memcpy(longer, z.data, z.len);
	longer[z.len] = 0;
	fd = mem_fd("after", longer, z.len + 1);
	assert_true(decode_fd(fd) < 0);
	close(fd);
	free(longer);
	/* The writer takes only uncompressed LTX. */
	struct ltx_growbuf lz4, sink = { 0 };
	make_ltx(&lz4, LTX_FLAG_COMPRESS, 4, false);
	struct cloud_zltx_writer *w;
	assert_int_equal(cloud_zltx_writer_new(&w, 1, ltx_growbuf_write, &sink), 0);
	assert_int_equal(cloud_zltx_write(w, lz4.data, lz4.len), ERR_INVAL);
	assert_int_equal(cloud_zltx_writer_finish(w), ERR_INVAL);
	cloud_zltx_writer_free(w);
	free(sink.data);
	free(lz4.data);
	free(plain.data);
	free(z.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_plain_passes_through),
		cmocka_unit_test(test_transcode),
		cmocka_unit_test(test_damage_refused),
	};
	return RUN_IN_TMP_DIR("test_cloud_zltx", tests);
}
