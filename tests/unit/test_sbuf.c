/*
 * test_sbuf.c — the string buffer: growth past its first allocation,
 * NUL termination, message quoting, and freeing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/sbuf.h"

static void test_append(void **state)
{
	struct sbuf b = { 0 };
	sbuf_putn(&b, "", 0);
	assert_non_null(b.p);
	assert_string_equal(b.p, "");
	for (int i = 0; i < 1000; i++)
		sbuf_printf(&b, "%d,", i % 10);
	assert_int_equal(b.len, 2000);
	assert_int_equal(strlen(b.p), 2000);
	assert_memory_equal(b.p + 1990, "5,6,7,8,9,", 10);
	sbuf_puts(&b, "end");
	assert_string_equal(b.p + 2000, "end");
	assert_false(b.oom);
	sbuf_free(&b);
	assert_null(b.p);
	assert_int_equal(b.len, 0);
	sbuf_free(&b);
	sbuf_free(NULL);
}

/* A sticky OOM: later appends do nothing, the text so far stays. */
static void test_oom_is_sticky(void **state)
{
	struct sbuf b = { 0 };
	sbuf_puts(&b, "ab");
	assert_false(sbuf_reserve(&b, (size_t)-1 / 2));
	assert_true(b.oom);
	sbuf_puts(&b, "cd");
	assert_string_equal(b.p, "ab");
	assert_false(sbuf_reserve(&b, 1));
	sbuf_free(&b);
	assert_false(b.oom);
}

static void test_quote(void **state)
{
	struct sbuf b = { 0 };
	sbuf_quote(&b, "a\"b\\c\n\t\r\x01\x7f" "d", 11, 64);
	assert_string_equal(b.p, "\"a\\\"b\\\\c\\n\\t\\r\\x01\\x7fd\"");
	sbuf_free(&b);
	sbuf_quote(&b, "abcdef", 6, 3);
	assert_string_equal(b.p, "\"abc...\"");
	sbuf_free(&b);
	sbuf_quote(&b, "a\0b", 3, 10);
	assert_string_equal(b.p, "\"a\\x00b\"");
	sbuf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_oom_is_sticky),
		cmocka_unit_test(test_quote),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
