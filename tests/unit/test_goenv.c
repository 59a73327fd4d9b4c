/*
 * test_goenv.c — environment expansion as LiteFS does it: Go's os.Expand
 * syntax, LiteFS's == / != expressions, the size bound, and the map from
 * output offsets back to the input (which litefs.yml line numbers use).
 * The environment is a fake one passed through the getenv hook, so the
 * process environment is never touched.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#include "base/err.h"
#include "base/goenv.h"

/* litefs.yml's bound (CONFIG_MAX_EXPANDED_SIZE). */
#define MAX_EXPANDED (4u << 20)

static void expect_expand(struct fake_env *env, const char *in, const char *want)
{
	char *out = NULL;
	size_t len = 0;
	assert_int_equal(goenv_expand(in, strlen(in), fake_getenv, env, MAX_EXPANDED, &out, &len, NULL), 0);
	if (strcmp(out, want) != 0 || len != strlen(want))
		fail_msg("expand [%s]: got [%s], want [%s]", in, out, want);
	free(out);
}

static void test_expand(void **state)
{
	static const struct env_var vars[] = {
		{ "A", "x" }, { "B", "x" }, { "C", "y" }, { "NESTED", "$A" },
		{ "PODS > 0", "weird" }, { "A.B", "dotted" }, { "1", "one" }, { "EMPTY", "" },
	};
	struct fake_env env = { vars, sizeof(vars) / sizeof(vars[0]) };

	expect_expand(&env, "", "");
	expect_expand(&env, "no dollars", "no dollars");
	expect_expand(&env, "$A", "x");
	expect_expand(&env, "${A}", "x");
	expect_expand(&env, "a$A-b", "ax-b");
	expect_expand(&env, "$A_B", "");
	expect_expand(&env, "${UNSET}z", "z");
	expect_expand(&env, "$EMPTY|", "|");
	expect_expand(&env, "end$", "end$");
	expect_expand(&env, "$ x", "$ x");
	expect_expand(&env, "$-", "");
	expect_expand(&env, "$1", "one");
	expect_expand(&env, "${1}", "one");
	expect_expand(&env, "a${}b", "ab");
	expect_expand(&env, "abc${", "abc");
	expect_expand(&env, "ab${cd", "abcd");
	expect_expand(&env, "$NESTED", "$A"); /* one pass only */
	expect_expand(&env, "${A.B}", "dotted");
	expect_expand(&env, "${ A }", "x");

	/* Expressions. */
	expect_expand(&env, "${A == 'x'}", "true");
	expect_expand(&env, "${A == 'y'}", "false");
	expect_expand(&env, "${A != 'x'}", "false");
	expect_expand(&env, "${A != \"y\"}", "true");
	expect_expand(&env, "${A==\"x\"}", "true");
	expect_expand(&env, "${  A   ==   'x'  }", "true");
	expect_expand(&env, "${A == B}", "true");
	expect_expand(&env, "${A == C}", "false");
	expect_expand(&env, "${A != C}", "true");
	expect_expand(&env, "${UNSET1 == UNSET2}", "true");
	expect_expand(&env, "${UNSET == ''}", "true");
	expect_expand(&env, "${A == 'x y'}", "false");
	expect_expand(&env, "${A == 'x' || B == 'x'}", "false"); /* literal is "x' || B == 'x" */
	expect_expand(&env, "${A == x}", "false");                /* x is a variable name */
	expect_expand(&env, "${PODS > 0}", "weird");               /* not an expression: a name */
	expect_expand(&env, "${A = 'x'}", "");
	expect_expand(&env, "candidate: ${A == \"x\"}\"", "candidate: true\"");

	/* Comments are expanded too, like everything else. */
	expect_expand(&env, "# see $A\nk: v", "# see x\nk: v");

	/* Too large after expansion. */
	size_t big = MAX_EXPANDED / 4 + 1;
	char *val = malloc(big + 1);
	memset(val, 'v', big);
	val[big] = '\0';
	struct env_var bigvar[] = { { "BIG", val } };
	struct fake_env bigenv = { bigvar, 1 };
	const char *text = "$BIG$BIG$BIG$BIG";
	char *out = NULL;
	size_t len;
	assert_int_equal(goenv_expand(text, strlen(text), fake_getenv, &bigenv, MAX_EXPANDED, &out, &len, NULL), -E2BIG);
	assert_null(out);
	free(val);
}

/* The bound is on the output, inclusive. */
static void test_bound(void **state)
{
	static const struct env_var vars[] = { { "A", "abcd" } };
	struct fake_env env = { vars, 1 };
	char *out = (char *)1;
	size_t len = 7;
	assert_int_equal(goenv_expand("$A$A", 4, fake_getenv, &env, 8, &out, &len, NULL), 0);
	assert_string_equal(out, "abcdabcd");
	assert_int_equal(len, 8);
	free(out);
	out = (char *)1;
	assert_int_equal(goenv_expand("$A$A!", 5, fake_getenv, &env, 8, &out, &len, NULL), -E2BIG);
	assert_null(out);
	assert_int_equal(len, 0);
	/* Copied text counts as much as substituted text. */
	assert_int_equal(goenv_expand("123456789", 9, fake_getenv, &env, 8, &out, &len, NULL), -E2BIG);
	assert_null(out);
}

/* The text need not be NUL-terminated, and may hold NULs. */
static void test_lengths(void **state)
{
	static const struct env_var vars[] = { { "AB", "x" }, { "A", "y" } };
	struct fake_env env = { vars, 2 };
	char *out;
	size_t len;
	/* Only "$A" is inside the length: the name ends there. */
	assert_int_equal(goenv_expand("$AB", 2, fake_getenv, &env, 100, &out, &len, NULL), 0);
	assert_string_equal(out, "y");
	free(out);
	assert_int_equal(goenv_expand("a\0$A", 4, fake_getenv, &env, 100, &out, &len, NULL), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(out, "a\0y", 3);
	free(out);
}

/* NULL means the process environment, read with getenv(3). */
static void test_process_env(void **state)
{
	const char *home = getenv("HOME");
	char *out;
	size_t len;
	assert_int_equal(goenv_expand("${HOME}", 7, NULL, NULL, 100, &out, &len, NULL), 0);
	assert_string_equal(out, home ? home : "");
	free(out);
	assert_ptr_equal(goenv_getenv_process("HOME", NULL), home);
}

/* Every output byte maps back to where it came from: copied bytes to
 * themselves, substituted bytes to their '$'. */
static void test_map(void **state)
{
	static const struct env_var vars[] = { { "A", "1\n2\n" }, { "E", "" } };
	struct fake_env env = { vars, 2 };
	const char *in = "k: $A;${E}x\n$ y${";
	struct goenv_map map = { 0 };
	char *out;
	size_t len;
	assert_int_equal(goenv_expand(in, strlen(in), fake_getenv, &env, 100, &out, &len, &map), 0);
	assert_string_equal(out, "k: 1\n2\n;x\n$ y");
	assert_int_equal(goenv_map_offset(&map, 0), 0);   /* "k" */
	assert_int_equal(goenv_map_offset(&map, 2), 2);   /* " " */
	assert_int_equal(goenv_map_offset(&map, 3), 3);   /* "1": the '$' of $A */
	assert_int_equal(goenv_map_offset(&map, 6), 3);   /* "\n" of the value */
	assert_int_equal(goenv_map_offset(&map, 7), 5);   /* ";" */
	assert_int_equal(goenv_map_offset(&map, 8), 10);  /* "x", after the empty ${E} */
	assert_int_equal(goenv_map_offset(&map, 10), 12); /* "$" kept as written */
	assert_int_equal(goenv_map_offset(&map, 12), 14); /* "y" */
	free(out);
	goenv_map_free(&map);
	assert_null(map.segs);
	goenv_map_free(&map);
	goenv_map_free(NULL);

	/* An empty map maps everything to 0. */
	assert_int_equal(goenv_map_offset(&map, 5), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_bound),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_process_env),
		cmocka_unit_test(test_map),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
