/*
 * test_dbname.c — the one rule for database names (dbname_check,
 * dbname_valid; both programs use it): every rejection, with the errno
 * the mount returns for it, and the names that must stay valid (UTF-8
 * beyond ASCII, the longest name). The node's splitting of file names
 * into name and kind is test_store_names.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>

#include "proto/dbname.h"

static void test_valid_names(void **state)
{
	(void)state;
	const char *ok[] = { "db", "app.db", "my app.db", "café.db", "日本語.db", "emoji-\xf0\x9f\x98\x80.db",
			     "x-journal.db", "a-mj.db", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf" };
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(dbname_check(ok[i]), 0);
		assert_true(dbname_valid(ok[i]));
	}
	char longest[201];
	memset(longest, 'a', 200);
	longest[200] = '\0';
	assert_int_equal(dbname_check(longest), 0);
	longest[199] = '\0';
	memcpy(longest + 197, "\xc3\xa9", 2); /* 199 bytes ending in é */
	assert_int_equal(dbname_check(longest), 0);
}

static void test_invalid_utf8_is_eilseq(void **state)
{
	(void)state;
	const char *bad[] = {
		"\xff.db",           /* never valid */
		"caf\xe9.db",        /* Latin-1 */
		"\xc3",              /* truncated 2-byte */
		"\xe6\x97.db",       /* truncated 3-byte */
		"\xf0\x9f\x98.db",   /* truncated 4-byte */
		"\x80x.db",          /* lone continuation */
		"\xc0\xae.db",       /* overlong '.' */
		"\xe0\x80\xaf.db",   /* overlong '/' */
		"\xf0\x80\x80\xaf",  /* overlong '/' in four bytes */
		"\xed\xa0\x80.db",   /* UTF-16 surrogate */
		"\xf4\x90\x80\x80",  /* beyond U+10FFFF */
		"\xf8\x88\x80\x80\x80", /* five-byte form */
		"a\xc2\x85" "b.db",  /* C1 control NEL */
		"a\xc2\x9f" "b.db",  /* C1 control APC */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(dbname_check(bad[i]), -EILSEQ);
		assert_false(dbname_valid(bad[i]));
	}
}

static void test_other_rejections(void **state)
{
	(void)state;
	const char *bad[] = { "", ".", "..", ".hidden", "a/b", "a\x01" "b", "tab\there", "del\x7f", "x-journal",
			      "x-wal", "x-shm", "x-pos", "x-mj012345678" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dbname_check(bad[i]), -EINVAL);
	char too_long[202];
	memset(too_long, 'a', 201);
	too_long[201] = '\0';
	assert_int_equal(dbname_check(too_long), -ENAMETOOLONG);
}

static void test_null_is_not_a_name(void **state)
{
	(void)state;
	assert_false(dbname_valid(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_names),
		cmocka_unit_test(test_invalid_utf8_is_eilseq),
		cmocka_unit_test(test_other_rejections),
		cmocka_unit_test(test_null_is_not_a_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
