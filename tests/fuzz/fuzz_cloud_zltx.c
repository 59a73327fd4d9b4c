/*
 * fuzz_cloud_zltx.c — libFuzzer target for the reader of litefs-cloud's
 * stored objects (cloud_zltx.h): arbitrary bytes as a stored object,
 * through the reader into the LTX decoder.
 *
 * Whatever the bytes, the decode returns 0 or an error (no crash, no
 * unbounded allocation: frames asking for a window over 2^20 are
 * refused). Whatever decodes, written again in the stored form by the
 * writer (as an uncompressed LTX file), must read back as the same plain
 * bytes: the writer's hold-back of the trailer and the reader's hand-over
 * from the frame to the trailer agree on every input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/err.h"
#include "cloud/cloud_zltx.h"
#include "ltx/ltx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                       \
		}                                                                      \
	} while (0)

static int fd_of(const uint8_t *data, size_t size)
{
	int fd = memfd_create("zltx", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	return fd;
}

/* All the reader gives for fd, as plain bytes; its result in *rc. */
static struct ltx_growbuf read_all(int fd, int *rc)
{
	struct cloud_zltx_reader r;
	struct ltx_growbuf out = { 0 };
	uint8_t buf[4096];
	cloud_zltx_reader_init(&r, fd);
	for (;;) {
		ssize_t n = cloud_zltx_read(&r, buf, sizeof(buf));
		if (n <= 0) {
			*rc = (int)n;
			break;
		}
		CHECK(ltx_growbuf_write(&out, buf, (size_t)n) == 0);
		CHECK(out.len <= (64u << 20));
	}
	cloud_zltx_reader_done(&r);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = fd_of(data, size);
	struct cloud_zltx_reader r;
	cloud_zltx_reader_init(&r, fd);
	int rc = ltx_decode_all(cloud_zltx_read, &r, NULL, NULL, NULL, NULL, NULL);
	cloud_zltx_reader_done(&r);
	CHECK(rc <= 0);
	if (rc == 0) {
		int rrc;
		CHECK(lseek(fd, 0, SEEK_SET) == 0);
		struct ltx_growbuf plain = read_all(fd, &rrc);
		CHECK(rrc == 0 && plain.len >= LTX_HEADER_SIZE + LTX_TRAILER_SIZE);
		if (plain.data[4] == 0 && plain.data[5] == 0 && plain.data[6] == 0 && plain.data[7] == 0) {
			struct ltx_growbuf z = { 0 };
			struct cloud_zltx_writer *w;
			CHECK(cloud_zltx_writer_new(&w, 1, ltx_growbuf_write, &z) == 0);
			CHECK(cloud_zltx_write(w, plain.data, plain.len) == 0);
			CHECK(cloud_zltx_writer_finish(w) == 0);
			cloud_zltx_writer_free(w);
			int zfd = fd_of(z.data, z.len);
			struct ltx_growbuf back = read_all(zfd, &rrc);
			CHECK(rrc == 0 && back.len == plain.len && memcmp(back.data, plain.data, plain.len) == 0);
			close(zfd);
			free(back.data);
			free(z.data);
		}
		free(plain.data);
	}
	close(fd);
	return 0;
}
