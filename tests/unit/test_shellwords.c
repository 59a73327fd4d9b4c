/*
 * test_shellwords.c — exec commands split like go-shellwords (quotes,
 * escapes, empty arguments, nothing expanded) and every refusal: an
 * unterminated quote, a trailing backslash, an unquoted shell operator.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/shellwords.h"

static char errbuf[512];

static void expect_argv(const char *cmd, size_t n, ...)
{
	char **argv;
	size_t argc;
	if (shellwords_split(cmd, &argv, &argc, errbuf, sizeof(errbuf)) != 0)
		fail_msg("[%s] refused: %s", cmd, errbuf);
	assert_int_equal(argc, n);
	va_list ap;
	va_start(ap, n);
	for (size_t i = 0; i < n; i++) {
		const char *want = va_arg(ap, const char *);
		if (strcmp(argv[i], want))
			fail_msg("[%s] arg %zu: got [%s], want [%s]", cmd, i, argv[i], want);
	}
	va_end(ap);
	assert_null(argv[n]);
	shellwords_free(argv);
}

static void test_exec_argv(void **state)
{
	expect_argv("", 0);
	expect_argv("   ", 0);
	expect_argv("app", 1, "app");
	expect_argv("  app  -x   1 ", 3, "app", "-x", "1");
	expect_argv("a 'b c' \"d e\"", 3, "a", "b c", "d e");
	expect_argv("a '' \"\"", 3, "a", "", "");
	expect_argv("a b\\ c", 2, "a", "b c");
	expect_argv("a \"x\\\"y\"", 2, "a", "x\"y");
	expect_argv("a 'x\\y'", 2, "a", "x\\y");
	expect_argv("a \"it's\"", 2, "a", "it's");
	expect_argv("sqlite3 db \"PRAGMA journal_mode = WAL;\"", 3, "sqlite3", "db", "PRAGMA journal_mode = WAL;");
	expect_argv("sh -c 'a && b | c > d'", 3, "sh", "-c", "a && b | c > d");
	expect_argv("a$B `c`", 2, "a$B", "`c`");
	expect_argv("x\ty\nz", 3, "x", "y", "z");

	const char *bad[] = { "a 'b", "a \"b", "a \\", "a; b", "a | b", "a > f", "a < f", "a & " };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char **argv = (char **)1;
		size_t argc = 7;
		if (shellwords_split(bad[i], &argv, &argc, errbuf, sizeof(errbuf)) != ERR_INVAL)
			fail_msg("[%s] accepted", bad[i]);
		assert_null(argv);
		assert_int_equal(argc, 0);
		assert_true(errbuf[0] != '\0');
	}
	shellwords_free(NULL);
}

static void test_messages(void **state)
{
	char **argv;
	size_t argc;
	assert_int_equal(shellwords_split("a 'b", &argv, &argc, errbuf, sizeof(errbuf)), ERR_INVAL);
	assert_string_equal(errbuf, "unterminated quote in the command");
	assert_int_equal(shellwords_split("a \\", &argv, &argc, errbuf, sizeof(errbuf)), ERR_INVAL);
	assert_string_equal(errbuf, "the command ends with a lone backslash");
	assert_int_equal(shellwords_split("a;b", &argv, &argc, errbuf, sizeof(errbuf)), ERR_INVAL);
	assert_non_null(strstr(errbuf, "shell operator ';'"));
	assert_int_equal(shellwords_split("a && b", &argv, &argc, errbuf, sizeof(errbuf)), ERR_INVAL);
	assert_non_null(strstr(errbuf, "shell operator '&&'"));
	/* Quoted, an operator is an ordinary byte. */
	assert_int_equal(shellwords_split("a ';' \"|\" \\&", &argv, &argc, errbuf, sizeof(errbuf)), 0);
	assert_int_equal(argc, 4);
	assert_string_equal(argv[1], ";");
	assert_string_equal(argv[2], "|");
	assert_string_equal(argv[3], "&");
	shellwords_free(argv);
	/* errbuf may be absent or tiny. */
	assert_int_equal(shellwords_split("a 'b", &argv, &argc, NULL, 0), ERR_INVAL);
	char small[4];
	assert_int_equal(shellwords_split("a 'b", &argv, &argc, small, sizeof(small)), ERR_INVAL);
	assert_string_equal(small, "unt");
}

static void test_operators(void **state)
{
	struct shellwords_op ops[4];
	size_t n;
	/* Every unquoted operator, two-byte ones as one. */
	const char *cmd = "a && 'b|c' \"d;e\" f\\& g | h >> i 2>&1;";
	assert_int_equal(shellwords_operators(cmd, ops, 4, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(ops[0].off, 2);
	assert_int_equal(ops[0].len, 2);
	assert_int_equal(ops[1].off, (size_t)(strchr(cmd, 'h') - cmd - 2));
	assert_int_equal(ops[1].len, 1);
	assert_int_equal(ops[2].off, (size_t)(strstr(cmd, ">>") - cmd));
	assert_int_equal(ops[2].len, 2);
	assert_int_equal(ops[3].off, (size_t)(strstr(cmd, ">&") - cmd));
	assert_int_equal(ops[3].len, 2);
	/* None. */
	assert_int_equal(shellwords_operators("echo 'a|b' \"c && d\"", ops, 4, &n), 0);
	assert_int_equal(n, 0);
	/* Operators before an unterminated quote are still reported. */
	assert_int_equal(shellwords_operators("a; 'b", ops, 4, &n), ERR_INVAL);
	assert_int_equal(n, 1);
	assert_int_equal(ops[0].off, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exec_argv),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_operators),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
