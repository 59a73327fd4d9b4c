/*
 * test_cloud_session.c — the dashboard's sessions (cloud_session.c): IDs
 * and CSRF tokens are random and distinct, a session is found only by its
 * exact ID, expires, closes; the table stays bounded; the sign-in limit
 * refuses an address after CLOUD_SESSION_FAIL_MAX failures and not another
 * address, and a success clears it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/err.h"
#include "cloud/cloud_session.h"

static void test_open_get_close(void **state)
{
	(void)state;
	struct cloud_sessions *s;
	assert_int_equal(cloud_sessions_new(60000, &s), 0);
	struct cloud_session a, b, got;
	assert_int_equal(cloud_session_open(s, "prod", "0123456789ab", &a), 0);
	assert_int_equal(cloud_session_open(s, "other", "ba9876543210", &b), 0);
	assert_int_equal(strlen(a.id), CLOUD_SESSION_ID_LEN);
	assert_int_equal(strlen(a.csrf), CLOUD_SESSION_CSRF_LEN);
	assert_string_not_equal(a.id, b.id);
	assert_string_not_equal(a.id, a.csrf);
	assert_int_equal(cloud_session_get(s, a.id, &got), 0);
	assert_string_equal(got.cluster, "prod");
	assert_string_equal(got.token_id, "0123456789ab");
	assert_string_equal(got.csrf, a.csrf);
	/* One character off, a prefix, an empty string: not found. */
	char wrong[CLOUD_SESSION_ID_LEN + 1];
	memcpy(wrong, a.id, sizeof(wrong));
	wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
	assert_int_equal(cloud_session_get(s, wrong, &got), ERR_REPL_AUTH);
	wrong[10] = a.id[10];
	wrong[40] = '\0';
	assert_int_equal(cloud_session_get(s, wrong, &got), ERR_REPL_AUTH);
	assert_int_equal(cloud_session_get(s, "", &got), ERR_REPL_AUTH);
	cloud_session_close(s, a.id);
	assert_int_equal(cloud_session_get(s, a.id, &got), ERR_REPL_AUTH);
	assert_int_equal(cloud_session_get(s, b.id, &got), 0);
	cloud_session_close(s, "not a session");
	cloud_sessions_free(s);
	cloud_sessions_free(NULL);
	assert_int_equal(cloud_sessions_new(0, &s), ERR_INVAL);
}

static void test_expiry(void **state)
{
	(void)state;
	struct cloud_sessions *s;
	assert_int_equal(cloud_sessions_new(50, &s), 0);
	struct cloud_session a, got;
	assert_int_equal(cloud_session_open(s, "prod", "0123456789ab", &a), 0);
	assert_int_equal(cloud_session_get(s, a.id, &got), 0);
	struct timespec t = { 0, 80 * 1000000L };
	nanosleep(&t, NULL);
	assert_int_equal(cloud_session_get(s, a.id, &got), ERR_REPL_AUTH);
	cloud_sessions_free(s);
}

static void test_table_is_bounded(void **state)
{
	(void)state;
	struct cloud_sessions *s;
	assert_int_equal(cloud_sessions_new(60000, &s), 0);
	struct cloud_session first, x, got;
	assert_int_equal(cloud_session_open(s, "prod", "0123456789ab", &first), 0);
	for (int i = 0; i < CLOUD_SESSION_MAX; i++)
		assert_int_equal(cloud_session_open(s, "prod", "0123456789ab", &x), 0);
	/* The one that expires first made room. */
	assert_int_equal(cloud_session_get(s, first.id, &got), ERR_REPL_AUTH);
	assert_int_equal(cloud_session_get(s, x.id, &got), 0);
	cloud_sessions_free(s);
}

static void test_equal(void **state)
{
	(void)state;
	assert_true(cloud_session_equal("abc", "abc"));
	assert_false(cloud_session_equal("abd", "abc"));
	assert_false(cloud_session_equal("ab", "abc"));
	assert_false(cloud_session_equal("abcd", "abc"));
	assert_true(cloud_session_equal("", ""));
}

static void test_rate_limit(void **state)
{
	(void)state;
	struct cloud_sessions *s;
	int64_t retry = -1;
	assert_int_equal(cloud_sessions_new(60000, &s), 0);
	for (int i = 0; i < CLOUD_SESSION_FAIL_MAX; i++) {
		assert_int_equal(cloud_session_may_try(s, "10.0.0.1", &retry), 0);
		cloud_session_tried(s, "10.0.0.1", false);
	}
	assert_int_equal(cloud_session_may_try(s, "10.0.0.1", &retry), -EBUSY);
	assert_true(retry > 0 && retry <= CLOUD_SESSION_FAIL_WINDOW_MS);
	assert_int_equal(cloud_session_may_try(s, "10.0.0.2", &retry), 0);
	/* A success clears the address's count. */
	cloud_session_tried(s, "10.0.0.1", true);
	assert_int_equal(cloud_session_may_try(s, "10.0.0.1", &retry), 0);
	/* Many addresses: the table stays bounded and keeps working. */
	char addr[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(addr, sizeof(addr), "192.0.2.%d", i);
		cloud_session_tried(s, addr, false);
	}
	assert_int_equal(cloud_session_may_try(s, "203.0.113.9", &retry), 0);
	cloud_sessions_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_get_close), cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_table_is_bounded), cmocka_unit_test(test_equal),
		cmocka_unit_test(test_rate_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
