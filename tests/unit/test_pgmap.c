/*
 * test_pgmap.c — the page map (base/pgmap.h): put/get/del against a plain
 * array model under random operations, sorted keys, and pgmap_reserve()'s
 * promise that the reserved puts cannot fail (no growth after it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/pgmap.h"
#include "testutil.h"

#define N_PAGES 5000

static void test_model(void **state)
{
	(void)state;
	static uint64_t model[N_PAGES + 1]; /* checksum per page, 0 = absent */
	struct pgmap m;
	pgmap_init(&m);
	seed(7);
	for (int op = 0; op < 200000; op++) {
		uint32_t pgno = 1 + rnd_below(N_PAGES);
		if (rnd_below(3) == 0) {
			pgmap_del(&m, pgno);
			model[pgno] = 0;
		} else {
			uint64_t chk = rnd() | 1;
			assert_int_equal(pgmap_put(&m, pgno, pgno * 2, chk), 0);
			model[pgno] = chk;
		}
	}
	size_t count = 0;
	for (uint32_t pgno = 1; pgno <= N_PAGES; pgno++) {
		struct pgmap_entry *e = pgmap_get(&m, pgno);
		if (model[pgno] == 0) {
			assert_null(e);
			continue;
		}
		count++;
		assert_non_null(e);
		assert_int_equal(e->checksum, model[pgno]);
		assert_int_equal(e->frame, pgno * 2);
	}
	assert_int_equal(m.count, count);
	uint32_t *keys = NULL;
	size_t n = 0;
	assert_int_equal(pgmap_sorted_keys(&m, &keys, &n), 0);
	assert_int_equal(n, count);
	for (size_t i = 1; i < n; i++)
		assert_true(keys[i - 1] < keys[i]);
	free(keys);
	pgmap_free(&m);
}

static void test_reserve(void **state)
{
	(void)state;
	struct pgmap m;
	pgmap_init(&m);
	assert_int_equal(pgmap_reserve(&m, 1000), 0);
	size_t cap = m.cap;
	struct pgmap_entry *slots = m.slots;
	assert_true(cap * 3 >= 1000 * 4);
	for (uint32_t pgno = 1; pgno <= 1000; pgno++)
		assert_int_equal(pgmap_put(&m, pgno, 0, pgno), 0);
	/* No growth: the puts that pending_finish() makes cannot fail. */
	assert_int_equal(m.cap, cap);
	assert_ptr_equal(m.slots, slots);
	assert_int_equal(m.count, 1000);
	/* Reserving what is already there is free; more grows once. */
	assert_int_equal(pgmap_reserve(&m, 0), 0);
	assert_int_equal(m.cap, cap);
	assert_int_equal(pgmap_reserve(&m, 5000), 0);
	assert_true(m.cap * 3 >= 6000 * 4);
	for (uint32_t pgno = 1; pgno <= 1000; pgno++)
		assert_int_equal(pgmap_get(&m, pgno)->checksum, pgno);
	pgmap_clear(&m);
	assert_int_equal(m.count, 0);
	assert_null(pgmap_get(&m, 1));
	pgmap_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model),
		cmocka_unit_test(test_reserve),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
