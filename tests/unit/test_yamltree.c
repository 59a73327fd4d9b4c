/*
 * test_yamltree.c — the YAML tree: structure and lines, anchors and
 * aliases (shared, acyclic, optionally unique), first document only,
 * every refusal (syntax, depth, undefined alias, duplicate anchor) with
 * its line, line mapping, and yaml.v3's scalar resolution.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/sbuf.h"
#include "base/yamltree.h"

static int load(struct yamltree *t, const char *text, unsigned flags, struct yamltree_error *err)
{
	return yamltree_load(t, text, strlen(text), flags, NULL, NULL, err);
}

/* Loads text expecting ERR_INVAL at line, with needle in msg. */
static void expect_refused(const char *text, unsigned flags, int line, const char *needle)
{
	struct yamltree t;
	struct yamltree_error err;
	int rc = load(&t, text, flags, &err);
	if (rc != ERR_INVAL)
		fail_msg("expected ERR_INVAL for:\n%s\ngot %d", text, rc);
	if (err.line != line || !strstr(err.msg, needle))
		fail_msg("for:\n%s\ngot line %d: %s\nwant line %d: ...%s...", text, err.line, err.msg, line, needle);
	/* Nothing is left to free, and freeing is still safe. */
	assert_int_equal(t.n, 0);
	assert_null(t.nodes);
	yamltree_free(&t);
}

static void test_structure(void **state)
{
	struct yamltree t;
	const char *text = "# comment\n"
			   "a: 1\n"
			   "b:\n"
			   "  - x\n"
			   "  - 'y'\n"
			   "c: {d: !!str 5}\n";
	assert_int_equal(load(&t, text, 0, NULL), 0);
	const struct yamltree_node *root = yamltree_root(&t);
	assert_non_null(root);
	assert_int_equal(root->kind, YAMLTREE_MAP);
	assert_int_equal(root->line, 2);
	assert_int_equal(root->n_kids, 6);

	const struct yamltree_node *k = yamltree_kid(&t, root, 0), *v = yamltree_kid(&t, root, 1);
	assert_string_equal(k->val, "a");
	assert_int_equal(k->len, 1);
	assert_true(k->plain);
	assert_string_equal(v->val, "1");
	assert_int_equal(v->line, 2);

	const struct yamltree_node *seq = yamltree_kid(&t, root, 3);
	assert_int_equal(seq->kind, YAMLTREE_SEQ);
	assert_null(seq->val);
	assert_int_equal(seq->n_kids, 2);
	assert_int_equal(yamltree_kid(&t, seq, 0)->line, 4);
	assert_true(yamltree_kid(&t, seq, 0)->plain);
	assert_false(yamltree_kid(&t, seq, 1)->plain);
	assert_string_equal(yamltree_kid(&t, seq, 1)->val, "y");
	assert_int_equal(yamltree_kid(&t, seq, 1)->line, 5);

	const struct yamltree_node *flow = yamltree_kid(&t, root, 5);
	assert_int_equal(flow->kind, YAMLTREE_MAP);
	assert_int_equal(flow->line, 6);
	const struct yamltree_node *five = yamltree_kid(&t, flow, 1);
	assert_string_equal(five->tag, "tag:yaml.org,2002:str");
	assert_null(k->tag);
	yamltree_free(&t);
	assert_null(t.nodes);
	yamltree_free(&t); /* twice is safe */
	yamltree_free(NULL);
}

/* Duplicate keys are kept; the caller decides what they mean. */
static void test_duplicate_keys_kept(void **state)
{
	struct yamltree t;
	assert_int_equal(load(&t, "a: 1\na: 2\n", 0, NULL), 0);
	assert_int_equal(yamltree_root(&t)->n_kids, 4);
	assert_string_equal(yamltree_kid(&t, yamltree_root(&t), 3)->val, "2");
	yamltree_free(&t);
}

/* Scalars keep their bytes, NULs included. */
static void test_scalar_bytes(void **state)
{
	struct yamltree t;
	assert_int_equal(load(&t, "a: \"x\\0y\"\n", 0, NULL), 0);
	const struct yamltree_node *v = yamltree_kid(&t, yamltree_root(&t), 1);
	assert_int_equal(v->len, 3);
	assert_memory_equal(v->val, "x\0y", 4);
	yamltree_free(&t);
	/* The text need not be NUL-terminated: only len bytes are read. */
	assert_int_equal(yamltree_load(&t, "a: bcdef", 4, 0, NULL, NULL, NULL), 0);
	assert_string_equal(yamltree_kid(&t, yamltree_root(&t), 1)->val, "b");
	yamltree_free(&t);
}

static void test_anchors(void **state)
{
	struct yamltree t;
	/* An alias is the anchored node itself. */
	assert_int_equal(load(&t, "a: &x [1, 2]\nb: *x\nc: &s v\nd: *s\n", 0, NULL), 0);
	const struct yamltree_node *root = yamltree_root(&t);
	assert_ptr_equal(yamltree_kid(&t, root, 1), yamltree_kid(&t, root, 3));
	assert_ptr_equal(yamltree_kid(&t, root, 5), yamltree_kid(&t, root, 7));
	yamltree_free(&t);

	/* A redefined anchor: the later one wins, as in yaml.v3 ... */
	assert_int_equal(load(&t, "a: &x 1\nb: &x 2\nc: *x\n", 0, NULL), 0);
	assert_string_equal(yamltree_kid(&t, yamltree_root(&t), 5)->val, "2");
	yamltree_free(&t);
	/* ... unless anchors must be unique, as libyaml's loader has them. */
	expect_refused("a: &x 1\nb: &x 2\nc: *x\n", YAMLTREE_UNIQUE_ANCHORS, 2,
		       "duplicate anchor \"x\" (first defined at line 1)");
	expect_refused("a: &x [1]\nb: &x {c: 2}\n", YAMLTREE_UNIQUE_ANCHORS, 2, "duplicate anchor \"x\"");
	assert_int_equal(load(&t, "a: &x 1\nb: &y 2\n", YAMLTREE_UNIQUE_ANCHORS, NULL), 0);
	yamltree_free(&t);

	/* An undefined alias, and an alias to an enclosing node (which would
	 * make a cycle), are refused. */
	expect_refused("a: 1\nb: *nope\n", 0, 2, "unknown anchor \"nope\" referenced");
	expect_refused("a: &a\n  b: *a\n", 0, 2, "unknown anchor \"a\"");
	expect_refused("&s [*s]\n", 0, 1, "unknown anchor \"s\"");
	/* A long anchor name is cut in the message. */
	char text[400] = "a: *";
	memset(text + 4, 'n', 300);
	text[304] = '\0';
	struct yamltree_error err;
	assert_int_equal(load(&t, text, 0, &err), ERR_INVAL);
	assert_true(strlen(err.msg) < sizeof(err.msg));
}

static void test_documents(void **state)
{
	struct yamltree t;
	/* Only the first document is read; what follows is not parsed. */
	assert_int_equal(load(&t, "a: 1\n---\nb: [\n", 0, NULL), 0);
	assert_int_equal(yamltree_root(&t)->n_kids, 2);
	yamltree_free(&t);
	/* No document at all. */
	assert_int_equal(load(&t, "", 0, NULL), 0);
	assert_false(t.has_root);
	assert_null(yamltree_root(&t));
	yamltree_free(&t);
	assert_int_equal(load(&t, "# only a comment\n\n", 0, NULL), 0);
	assert_null(yamltree_root(&t));
	yamltree_free(&t);
	/* An explicit empty document is an empty plain scalar. */
	assert_int_equal(load(&t, "---\n", 0, NULL), 0);
	assert_int_equal(yamltree_root(&t)->kind, YAMLTREE_SCALAR);
	assert_int_equal(yamltree_root(&t)->len, 0);
	assert_true(yamltree_is_null(yamltree_root(&t)));
	yamltree_free(&t);
	/* A BOM and CRLF line ends. */
	assert_int_equal(load(&t, "\xef\xbb\xbf" "a: 1\r\nb: 2\r\n", 0, NULL), 0);
	assert_int_equal(yamltree_kid(&t, yamltree_root(&t), 2)->line, 2);
	yamltree_free(&t);
}

static void test_syntax_errors(void **state)
{
	struct yamltree t;
	struct yamltree_error err;
	expect_refused("a:\n  b: 1\n c: [\n", 0, 3, "YAML syntax error");
	/* The problem alone (for terse messages), and the sentence with the
	 * line where the construct began. */
	assert_int_equal(load(&t, "a: 1\nb: \"open\n\n", 0, &err), ERR_INVAL);
	assert_string_equal(err.problem, "found unexpected end of stream");
	assert_non_null(strstr(err.msg, "YAML syntax error: found unexpected end of stream"));
	assert_non_null(strstr(err.msg, "while scanning a quoted scalar that began at line 2)"));
	/* err may be NULL. */
	assert_int_equal(load(&t, "[", 0, NULL), ERR_INVAL);
	/* Bytes that are not UTF-8. */
	assert_int_equal(load(&t, "a: \xff\n", 0, &err), ERR_INVAL);
	assert_non_null(strstr(err.msg, "YAML syntax error"));
}

static void test_depth(void **state)
{
	struct yamltree t;
	char text[2 * YAMLTREE_MAX_DEPTH + 8];
	/* YAMLTREE_MAX_DEPTH levels load ... */
	memset(text, '[', YAMLTREE_MAX_DEPTH);
	memset(text + YAMLTREE_MAX_DEPTH, ']', YAMLTREE_MAX_DEPTH);
	text[2 * YAMLTREE_MAX_DEPTH] = '\0';
	assert_int_equal(load(&t, text, 0, NULL), 0);
	yamltree_free(&t);
	/* ... one more does not. */
	memset(text, '[', YAMLTREE_MAX_DEPTH + 1);
	memset(text + YAMLTREE_MAX_DEPTH + 1, ']', YAMLTREE_MAX_DEPTH + 1);
	text[2 * YAMLTREE_MAX_DEPTH + 2] = '\0';
	expect_refused(text, 0, 1, "nesting deeper than 64 levels");
	/* Deep nesting is refused without the closing brackets too. */
	char open[300];
	memset(open, '{', 200);
	open[200] = '\0';
	expect_refused(open, 0, 1, "nesting deeper than");
}

static int times_ten(void *ctx, int line)
{
	int *calls = ctx;
	(*calls)++;
	return line * 10;
}

/* Every line in the tree and in errors goes through the mapping. */
static void test_line_mapping(void **state)
{
	struct yamltree t;
	struct yamltree_error err;
	int calls = 0;
	assert_int_equal(yamltree_load(&t, "a:\n  - b\n", 9, 0, times_ten, &calls, NULL), 0);
	assert_int_equal(yamltree_root(&t)->line, 10);
	assert_int_equal(yamltree_kid(&t, yamltree_kid(&t, yamltree_root(&t), 1), 0)->line, 20);
	assert_true(calls >= 3);
	yamltree_free(&t);
	assert_int_equal(yamltree_load(&t, "a: 1\nb: *x\n", 11, 0, times_ten, &calls, &err), ERR_INVAL);
	assert_int_equal(err.line, 20);
	assert_int_equal(yamltree_load(&t, "a: 1\nb: \"x\n", 11, 0, times_ten, &calls, &err), ERR_INVAL);
	assert_int_equal(err.line, 30);
	assert_non_null(strstr(err.msg, "that began at line 20)"));
}

/* Loads "v: <scalar>" and resolves the value. */
static enum yamltree_type resolve_text(const char *scalar, bool *bval)
{
	char text[256];
	snprintf(text, sizeof(text), "v: %s\n", scalar);
	struct yamltree t;
	assert_int_equal(load(&t, text, 0, NULL), 0);
	enum yamltree_type r = yamltree_resolve(yamltree_kid(&t, yamltree_root(&t), 1), bval);
	yamltree_free(&t);
	return r;
}

static void expect_type(const char *scalar, enum yamltree_type want)
{
	bool bv;
	enum yamltree_type got = resolve_text(scalar, &bv);
	if (got != want)
		fail_msg("[%s] resolved to %d, want %d", scalar, got, want);
}

static void test_resolve(void **state)
{
	const char *nulls[] = { "", "~", "null", "Null", "NULL", "!!null x" };
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		expect_type(nulls[i], YAMLTREE_NULL);

	bool bv = false;
	assert_int_equal(resolve_text("True", &bv), YAMLTREE_BOOL);
	assert_true(bv);
	assert_int_equal(resolve_text("FALSE", &bv), YAMLTREE_BOOL);
	assert_false(bv);
	assert_int_equal(resolve_text("!!bool true", &bv), YAMLTREE_BOOL);
	assert_true(bv);

	const char *ints[] = { "0", "-1", "+7", "0x1F", "0o17", "017", "0b101", "1_000", "0x_1",
			       "9223372036854775807", "9223372036854775808" /* out of range is still an int */ };
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
		expect_type(ints[i], YAMLTREE_INT);

	const char *floats[] = { "1.5", ".5", "5.", "1e3", "-2.5E-3", "09" /* not octal, so a float */, ".inf", "-.Inf", ".NaN", "!!float x" };
	for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++)
		expect_type(floats[i], YAMLTREE_FLOAT);

	/* YAML 1.1 words are strings under yaml.v3's resolution; quoted
	 * scalars and the non-specific tag are strings whatever they say. */
	const char *strs[] = { "yes", "on", "n", "10s", "1_", "0x", "'true'", "\"5\"", "! 5", "!!str 5",
			       "|\n  7", "a b", "1e", "+", "." };
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		expect_type(strs[i], YAMLTREE_STR);

	expect_type("<<", YAMLTREE_MERGE);
	expect_type("'<<'", YAMLTREE_STR);

	/* Tags yaml.v3 would refuse for the value. */
	const char *bad[] = { "!!int x", "!!int 1.5", "!!bool yes", "!!bool 1", "!!map x", "!custom x",
			      "!<tag:example.com,2000:x> v" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_type(bad[i], YAMLTREE_BADTAG);
	expect_type("!!int 0x10", YAMLTREE_INT);
}

static void test_is_null(void **state)
{
	struct yamltree t;
	assert_int_equal(load(&t, "a: ~\nb: []\nc: 'null'\n", 0, NULL), 0);
	const struct yamltree_node *root = yamltree_root(&t);
	assert_true(yamltree_is_null(yamltree_kid(&t, root, 1)));
	assert_false(yamltree_is_null(yamltree_kid(&t, root, 3)));
	assert_false(yamltree_is_null(yamltree_kid(&t, root, 5)));
	assert_false(yamltree_is_null(root));
	yamltree_free(&t);
}

static void test_yaml11_bool(void **state)
{
	const char *yes[] = { "y", "Y", "yes", "Yes", "YES", "on", "On", "ON" };
	const char *no[] = { "n", "N", "no", "No", "NO", "off", "Off", "OFF" };
	bool v;
	for (size_t i = 0; i < 8; i++) {
		v = false;
		assert_true(yamltree_yaml11_bool(yes[i], &v));
		assert_true(v);
		v = true;
		assert_true(yamltree_yaml11_bool(no[i], &v));
		assert_false(v);
	}
	const char *neither[] = { "", "true", "yES", "oN", "1", "y ", "nope" };
	for (size_t i = 0; i < sizeof(neither) / sizeof(neither[0]); i++) {
		v = true;
		assert_false(yamltree_yaml11_bool(neither[i], &v));
		assert_true(v);
	}
}

static void expect_int(const char *s, int64_t want)
{
	int64_t v = 12345;
	if (yamltree_parse_int(s, &v) != 0)
		fail_msg("[%s] refused", s);
	if (v != want)
		fail_msg("[%s]: got %lld, want %lld", s, (long long)v, (long long)want);
}

static void test_parse_int(void **state)
{
	expect_int("0", 0);
	expect_int("42", 42);
	expect_int("-42", -42);
	expect_int("+42", 42);
	expect_int("0x1f", 31);
	expect_int("0X1F", 31);
	expect_int("0o17", 15);
	expect_int("017", 15);
	expect_int("0b11", 3);
	expect_int("1_000_000", 1000000);
	expect_int("0x_ff", 255);
	expect_int("9223372036854775807", INT64_MAX);
	expect_int("-9223372036854775808", INT64_MIN);

	int64_t v = 7;
	const char *bad[] = { "", "+", "-", "0x", "0b2", "08", "1__0", "_1", "1_", "1.0", "1e3", " 1", "1 ", "x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (yamltree_parse_int(bad[i], &v) != ERR_INVAL)
			fail_msg("[%s] accepted", bad[i]);
	const char *range[] = { "9223372036854775808", "-9223372036854775809", "0xffffffffffffffff",
				"99999999999999999999999" };
	for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++)
		if (yamltree_parse_int(range[i], &v) != -ERANGE)
			fail_msg("[%s] not out of range", range[i]);
	assert_int_equal(v, 7);
}

static void test_describe(void **state)
{
	struct yamltree t;
	assert_int_equal(load(&t, "[{a: 1}, [x], ~, true, 5, 1.5, \"q\\\"\\n\", plain]\n", 0, NULL), 0);
	const char *want[] = { "a mapping", "a list", "null", "the boolean true", "the integer 5", "the number 1.5",
			       "the string \"q\\\"\\n\"", "the string \"plain\"" };
	const struct yamltree_node *root = yamltree_root(&t);
	assert_int_equal(root->n_kids, 8);
	for (size_t i = 0; i < 8; i++) {
		struct sbuf b = { 0 };
		yamltree_describe(&b, yamltree_kid(&t, root, i));
		assert_false(b.oom);
		assert_string_equal(b.p, want[i]);
		sbuf_free(&b);
	}
	yamltree_free(&t);
}

static void test_break_len(void **state)
{
	assert_int_equal(yamltree_break_len("a\nb", 3, 1), 1);
	assert_int_equal(yamltree_break_len("a\r\nb", 4, 1), 2);
	assert_int_equal(yamltree_break_len("a\rb", 3, 1), 1);
	assert_int_equal(yamltree_break_len("\r", 1, 0), 1);
	assert_int_equal(yamltree_break_len("\xc2\x85", 2, 0), 2);             /* NEL */
	assert_int_equal(yamltree_break_len("\xe2\x80\xa8", 3, 0), 3);         /* LS */
	assert_int_equal(yamltree_break_len("\xe2\x80\xa9", 3, 0), 3);         /* PS */
	assert_int_equal(yamltree_break_len("\xe2\x80\xaa", 3, 0), 0);         /* not a break */
	assert_int_equal(yamltree_break_len("\xc2\x85", 1, 0), 0);             /* cut short */
	assert_int_equal(yamltree_break_len("\xe2\x80\xa8", 2, 0), 0);
	assert_int_equal(yamltree_break_len("ab", 2, 0), 0);

	/* libyaml counts lines the same way. */
	struct yamltree t;
	assert_int_equal(load(&t, "a: 1\xc2\x85" "b: 2\xe2\x80\xa8" "c: 3\n", 0, NULL), 0);
	assert_int_equal(yamltree_kid(&t, yamltree_root(&t), 2)->line, 2);
	assert_int_equal(yamltree_kid(&t, yamltree_root(&t), 4)->line, 3);
	yamltree_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_structure),
		cmocka_unit_test(test_duplicate_keys_kept),
		cmocka_unit_test(test_scalar_bytes),
		cmocka_unit_test(test_anchors),
		cmocka_unit_test(test_documents),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_line_mapping),
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_is_null),
		cmocka_unit_test(test_yaml11_bool),
		cmocka_unit_test(test_parse_int),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_break_len),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
