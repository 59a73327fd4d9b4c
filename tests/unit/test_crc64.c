/*
 * test_crc64.c — CRC-64/GO-ISO: published vectors (Go's hash/crc64 tests),
 * chaining semantics, and the dispatched (PCLMULQDQ) path against the
 * portable table path on every length 0..4096 at every alignment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ltx/crc64.h"

/* Deterministic generator so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rng_next() >> 56);
}

static void test_check_value(void **state)
{
	(void)state;
	assert_true(crc64_update(0, "123456789", 9) == 0xb90956c775a41001ull);
	assert_true(crc64_update_generic(0, "123456789", 9) == 0xb90956c775a41001ull);
}

static void test_go_golden(void **state)
{
	static const struct {
		uint64_t crc;
		const char *in;
	} golden[] = {
		{0x0000000000000000ull, ""},
		{0x3420000000000000ull, "a"},
		{0x36c4200000000000ull, "ab"},
		{0x3776c42000000000ull, "abc"},
		{0x336776c420000000ull, "abcd"},
		{0x32d36776c4200000ull, "abcde"},
		{0x3002d36776c42000ull, "abcdef"},
		{0x31b002d36776c420ull, "abcdefg"},
		{0x0e21b002d36776c4ull, "abcdefgh"},
		{0x8b6e21b002d36776ull, "abcdefghi"},
		{0x7f5b6e21b002d367ull, "abcdefghij"},
		{0x8ec0e7c835bf9cdfull, "Discard medicine more than two years old."},
		{0xc7db1759e2be5ab4ull, "He who has a shady past knows that nice guys finish last."},
		{0xfbf9d9603a6fa020ull, "I wouldn't marry him with a ten foot pole."},
		{0xeafc4211a6daa0efull, "Free! Free!/A trip/to Mars/for 900/empty jars/Burma Shave"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(golden) / sizeof(golden[0]); i++) {
		size_t len = strlen(golden[i].in);

		assert_true(crc64_update(0, golden[i].in, len) == golden[i].crc);
		assert_true(crc64_update_generic(0, golden[i].in, len) == golden[i].crc);
	}
}

static void test_empty_is_identity(void **state)
{
	(void)state;
	assert_true(crc64_update(0, NULL, 0) == 0);
	assert_true(crc64_update(0x1234567890abcdefull, "", 0) == 0x1234567890abcdefull);
	assert_true(crc64_update_generic(0xfedcba0987654321ull, NULL, 0) == 0xfedcba0987654321ull);
}

/* crc(a || b) == update(update(0, a), b) for every split, both paths. */
static void test_chaining(void **state)
{
	enum { LEN = 3000 };
	uint8_t *buf = malloc(LEN);
	uint64_t whole;

	(void)state;
	assert_non_null(buf);
	fill_random(buf, LEN);
	whole = crc64_update_generic(0, buf, LEN);
	assert_true(crc64_update(0, buf, LEN) == whole);
	for (size_t split = 0; split <= LEN; split += 7) {
		assert_true(crc64_update(crc64_update(0, buf, split), buf + split, LEN - split) == whole);
		assert_true(crc64_update_generic(crc64_update_generic(0, buf, split), buf + split,
						 LEN - split) == whole);
	}
	free(buf);
}

/* The fast path must equal the table path for every length 0..4096 at
 * every alignment 0..15, from random starting values. */
static void test_fast_matches_generic(void **state)
{
	enum { MAX = 4096, ALIGN = 16 };
	uint8_t *buf = malloc(MAX + ALIGN);

	(void)state;
	assert_non_null(buf);
	fill_random(buf, MAX + ALIGN);
	for (size_t off = 0; off < ALIGN; off++)
		for (size_t len = 0; len <= MAX; len++) {
			uint64_t start = rng_next();
			uint64_t fast = crc64_update(start, buf + off, len);
			uint64_t slow = crc64_update_generic(start, buf + off, len);

			if (fast != slow)
				fail_msg("off %zu len %zu: fast %016llx generic %016llx", off, len,
					 (unsigned long long)fast, (unsigned long long)slow);
		}
	free(buf);
}

/* Large buffers and special patterns (all zeros, all ones) too. */
static void test_fast_matches_generic_large(void **state)
{
	enum { LEN = (1 << 20) + 77 };
	uint8_t *buf = malloc(LEN);

	(void)state;
	assert_non_null(buf);
	fill_random(buf, LEN);
	assert_true(crc64_update(7, buf, LEN) == crc64_update_generic(7, buf, LEN));
	assert_true(crc64_update(0, buf + 3, LEN - 3) == crc64_update_generic(0, buf + 3, LEN - 3));
	memset(buf, 0, LEN);
	assert_true(crc64_update(0, buf, LEN) == crc64_update_generic(0, buf, LEN));
	memset(buf, 0xff, LEN);
	assert_true(crc64_update(~0ull, buf, LEN) == crc64_update_generic(~0ull, buf, LEN));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_value),
		cmocka_unit_test(test_go_golden),
		cmocka_unit_test(test_empty_is_identity),
		cmocka_unit_test(test_chaining),
		cmocka_unit_test(test_fast_matches_generic),
		cmocka_unit_test(test_fast_matches_generic_large),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
