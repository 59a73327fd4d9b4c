/*
 * test_bpipe.c — unit tests of base/bpipe.c: bytes arrive complete and in
 * order through a small pipe whatever the read and write sizes (wrapping
 * the buffer many times), the reader sees the end after the last byte,
 * and a reader that stops makes the writer's writes fail instead of
 * blocking.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/bpipe.h"
#include "testutil.h"

#define TOTAL (3u << 20)

static uint8_t byte_at(size_t i)
{
	return (uint8_t)(i * 131 + (i >> 9));
}

static void *writer(void *arg)
{
	struct bpipe *p = arg;
	static uint8_t chunk[70000];
	uint64_t x = 88172645463325252ull; /* its own PRNG: rnd() is the reader's */
	size_t off = 0;
	while (off < TOTAL) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t n = 1 + (size_t)(x % sizeof(chunk));
		if (n > TOTAL - off)
			n = TOTAL - off;
		for (size_t i = 0; i < n; i++)
			chunk[i] = byte_at(off + i);
		if (bpipe_write(p, chunk, n) != 0)
			return (void *)1;
		off += n;
	}
	bpipe_close_write(p);
	return NULL;
}

static void test_stream_in_order(void **state)
{
	(void)state;
	seed(31);
	struct bpipe p;
	assert_int_equal(bpipe_init(&p, 4099), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer, &p), 0);
	static uint8_t buf[9000];
	size_t off = 0;
	for (;;) {
		size_t want = 1 + (size_t)(rnd() % sizeof(buf));
		ssize_t n = bpipe_read(&p, buf, want);
		assert_true(n >= 0);
		if (n == 0)
			break;
		assert_true((size_t)n <= want);
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != byte_at(off + (size_t)i))
				fail_msg("byte %zu differs", off + (size_t)i);
		off += (size_t)n;
	}
	void *ret;
	pthread_join(t, &ret);
	assert_null(ret);
	assert_int_equal(off, TOTAL);
	assert_int_equal(bpipe_read(&p, buf, 10), 0); /* the end stays the end */
	bpipe_destroy(&p);
}

static void test_reader_gone(void **state)
{
	(void)state;
	struct bpipe p;
	uint8_t b[100] = { 0 };
	assert_int_equal(bpipe_init(&p, 64), 0);
	assert_int_equal(bpipe_write(&p, b, 10), 0);
	assert_int_equal(bpipe_read(&p, b, 5), 5);
	bpipe_close_read(&p);
	/* More than fits: it would block forever if the close were ignored. */
	assert_int_equal(bpipe_write(&p, b, sizeof(b)), -EPIPE);
	bpipe_destroy(&p);

	/* A writer already waiting for room is released by the close. */
	assert_int_equal(bpipe_init(&p, 64), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer, &p), 0);
	assert_int_equal(bpipe_read(&p, b, 10), 10);
	bpipe_close_read(&p);
	void *ret;
	pthread_join(t, &ret);
	assert_ptr_equal(ret, (void *)1);
	bpipe_destroy(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_in_order),
		cmocka_unit_test(test_reader_gone),
	};
	return RUN_IN_TMP_DIR("test_bpipe", tests);
}
