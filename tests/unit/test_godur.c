/*
 * test_godur.c — Go durations: what time.ParseDuration accepts and
 * refuses (units, signs, fractions, overflow at Go's int64 nanosecond
 * limit), truncation to the millisecond, and formatting that reads back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/godur.h"

static void expect_dur(const char *s, int64_t want)
{
	int64_t ms = -12345;
	if (godur_parse_ms(s, &ms) != 0)
		fail_msg("duration [%s] refused", s);
	if (ms != want)
		fail_msg("duration [%s]: got %lld, want %lld", s, (long long)ms, (long long)want);
}

static void expect_bad_dur(const char *s)
{
	int64_t ms;
	if (godur_parse_ms(s, &ms) != ERR_INVAL)
		fail_msg("duration [%s] accepted", s);
}

static void expect_fmt(int64_t ms, const char *want)
{
	char buf[GODUR_BUF_SIZE];
	godur_format_ms(ms, buf, sizeof(buf));
	assert_string_equal(buf, want);
	int64_t back;
	assert_int_equal(godur_parse_ms(buf, &back), 0);
	assert_int_equal(back, ms);
}

static void test_durations(void **state)
{
	expect_dur("10s", 10000);
	expect_dur("1m30s", 90000);
	expect_dur("500ms", 500);
	expect_dur("1h", 3600000);
	expect_dur("60m", 3600000);
	expect_dur("1.5h", 5400000);
	expect_dur(".5s", 500);
	expect_dur("5.s", 5000);
	expect_dur("0", 0);
	expect_dur("+0", 0);
	expect_dur("0s", 0);
	expect_dur("-2s", -2000);
	expect_dur("+5s", 5000);
	expect_dur("1h1m1s1ms", 3661001);
	expect_dur("1000us", 1);
	expect_dur("1000\xc2\xb5s", 1);
	expect_dur("1000\xce\xbcs", 1);
	expect_dur("999999ns", 0); /* below a millisecond is truncated */
	expect_dur("2562047h", 2562047LL * 3600000);
	expect_dur("1.0000000000000000000001s", 1000);

	expect_bad_dur("");
	expect_bad_dur("10");
	expect_bad_dur("-");
	expect_bad_dur("s");
	expect_bad_dur(".s");
	expect_bad_dur("1x");
	expect_bad_dur("1e3s");
	expect_bad_dur("10 s");
	expect_bad_dur(" 10s");
	expect_bad_dur("1d");
	expect_bad_dur("9223372036854775808ns");
	expect_bad_dur("2562048h");
	expect_bad_dur("99999999999999999999h");

	expect_fmt(0, "0s");
	expect_fmt(600000, "10m");
	expect_fmt(90000, "1m30s");
	expect_fmt(1500, "1s500ms");
	expect_fmt(3600000, "1h");
	expect_fmt(-2000, "-2s");
	expect_fmt(3661001, "1h1m1s1ms");
}

static void test_rejection_leaves_output(void **state)
{
	int64_t ms = 42;
	assert_int_equal(godur_parse_ms(NULL, &ms), ERR_INVAL);
	assert_int_equal(godur_parse_ms("1y", &ms), ERR_INVAL);
	assert_int_equal(godur_parse_ms("1s2", &ms), ERR_INVAL); /* a number without its unit */
	assert_int_equal(godur_parse_ms("1..5s", &ms), ERR_INVAL);
	assert_int_equal(godur_parse_ms("--1s", &ms), ERR_INVAL);
	assert_int_equal(ms, 42);
	/* The negative limit is one nanosecond further than the positive. */
	assert_int_equal(godur_parse_ms("-9223372036854775808ns", &ms), 0);
	assert_int_equal(ms, -9223372036854);
	assert_int_equal(godur_parse_ms("9223372036854775807ns", &ms), 0);
	assert_int_equal(ms, 9223372036854);
}

static void test_format_bounds(void **state)
{
	char buf[GODUR_BUF_SIZE];
	/* The longest there is fits. */
	godur_format_ms(INT64_MIN + 1, buf, sizeof(buf));
	assert_string_equal(buf, "-2562047788015h12m55s807ms");
	godur_format_ms(INT64_MIN, buf, sizeof(buf));
	assert_string_equal(buf, "-2562047788015h12m55s808ms");
	/* A short buffer gets a truncated, terminated string. */
	godur_format_ms(90000, buf, 4);
	assert_string_equal(buf, "1m3");
	/* Nothing is written without room. */
	buf[0] = 'x';
	godur_format_ms(90000, buf, 0);
	assert_int_equal(buf[0], 'x');
	godur_format_ms(90000, NULL, 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_rejection_leaves_output),
		cmocka_unit_test(test_format_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
