/* Unit tests of syncrepl.c: the table of replicas' acknowledgements and
 * the commit wait (SYNC/DEGRADED states, fail mode, distinct replicas). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/err.h"
#include "node/syncrepl.h"

static void test_off(void **state)
{
	(void)state;
	assert_int_equal(syncrepl_wait(NULL, 0, "db", 1), 0);
	struct syncrepl_opts o = { .replicas = 0, .timeout_ms = 10000 };
	struct syncrepl *s = syncrepl_new(&o);
	assert_non_null(s);
	assert_int_equal(syncrepl_wait(s, 0, "db", 1), 0);
	struct syncrepl_stats v;
	syncrepl_stats(s, &v);
	assert_int_equal(v.waits, 0);
	syncrepl_free(s);
	syncrepl_free(NULL);
}

static void test_async_degrades_and_recovers(void **state)
{
	(void)state;
	struct syncrepl_opts o = { .replicas = 1, .timeout_ms = 30 };
	struct syncrepl *s = syncrepl_new(&o);
	int64_t t0 = clock_mono_ms();
	assert_int_equal(syncrepl_wait(s, 0, "db", 1), 0); /* no replica: times out, returns */
	assert_true(clock_mono_ms() - t0 >= 25);
	struct syncrepl_stats v;
	syncrepl_stats(s, &v);
	assert_true(v.degraded);
	assert_int_equal(v.timeouts, 1);
	assert_int_equal(v.degrade_events, 1);
	/* Degraded: no wait at all. */
	t0 = clock_mono_ms();
	assert_int_equal(syncrepl_wait(s, 0, "db", 2), 0);
	assert_int_equal(syncrepl_wait(s, 0, "db", 3), 0);
	assert_true(clock_mono_ms() - t0 < 25);
	syncrepl_stats(s, &v);
	assert_int_equal(v.async_commits, 2);
	/* A replica catches up to the probe (txid 3): back to SYNC. */
	uint64_t tok = syncrepl_open(s, 42);
	assert_true(tok != 0);
	assert_true(syncrepl_ack(s, tok, 0, 2));
	syncrepl_stats(s, &v);
	assert_true(v.degraded);
	assert_true(syncrepl_ack(s, tok, 0, 3));
	syncrepl_stats(s, &v);
	assert_false(v.degraded);
	assert_int_equal(v.sessions, 1);
	/* And the next commit waits, and is acknowledged. */
	assert_true(syncrepl_ack(s, tok, 0, 4));
	assert_int_equal(syncrepl_wait(s, 0, "db", 4), 0);
	syncrepl_stats(s, &v);
	assert_int_equal(v.acked, 1);
	syncrepl_free(s);
}

static void test_fail_mode(void **state)
{
	(void)state;
	struct syncrepl_opts o = { .replicas = 1, .timeout_ms = 20, .fail_on_timeout = true };
	struct syncrepl *s = syncrepl_new(&o);
	assert_int_equal(syncrepl_wait(s, 3, "db", 7), ERR_REPL_SYNC_TIMEOUT);
	assert_int_equal(syncrepl_wait(s, 3, "db", 7), ERR_REPL_SYNC_TIMEOUT); /* never degrades */
	uint64_t tok = syncrepl_open(s, 1);
	assert_true(syncrepl_ack(s, tok, 3, 7));
	assert_int_equal(syncrepl_wait(s, 3, "db", 7), 0);
	assert_int_equal(syncrepl_wait(s, 3, "db", 6), 0);
	assert_int_equal(syncrepl_wait(s, 3, "db", 8), ERR_REPL_SYNC_TIMEOUT);
	assert_int_equal(syncrepl_wait(s, 2, "other", 1), ERR_REPL_SYNC_TIMEOUT); /* another database */
	/* An older ack does not move the position back. */
	assert_true(syncrepl_ack(s, tok, 3, 5));
	assert_int_equal(syncrepl_wait(s, 3, "db", 7), 0);
	struct syncrepl_stats v;
	syncrepl_stats(s, &v);
	assert_int_equal(v.failed, 4);
	assert_int_equal(v.timeouts, 4);
	assert_int_equal(v.acked, 3);
	assert_false(v.degraded);
	syncrepl_free(s);
}

/* A replica that reconnects replaces its session: never counted twice. */
static void test_distinct_replicas(void **state)
{
	(void)state;
	struct syncrepl_opts o = { .replicas = 2, .timeout_ms = 20, .fail_on_timeout = true };
	struct syncrepl *s = syncrepl_new(&o);
	uint64_t a1 = syncrepl_open(s, 0xa);
	assert_true(syncrepl_ack(s, a1, 0, 10));
	uint64_t a2 = syncrepl_open(s, 0xa);
	assert_true(a2 != a1);
	assert_false(syncrepl_ack(s, a1, 0, 10)); /* the old session is gone */
	assert_true(syncrepl_ack(s, a2, 0, 10));
	assert_int_equal(syncrepl_wait(s, 0, "db", 10), ERR_REPL_SYNC_TIMEOUT);
	uint64_t b = syncrepl_open(s, 0xb);
	assert_true(syncrepl_ack(s, b, 0, 12));
	assert_int_equal(syncrepl_wait(s, 0, "db", 10), 0);
	/* Unknown replicas (id 0) count as their own. */
	syncrepl_close(s, b);
	assert_false(syncrepl_ack(s, b, 0, 13));
	uint64_t u1 = syncrepl_open(s, 0), u2 = syncrepl_open(s, 0);
	assert_true(syncrepl_ack(s, u1, 0, 11) && syncrepl_ack(s, u2, 0, 11));
	assert_int_equal(syncrepl_wait(s, 0, "db", 11), 0);
	syncrepl_close(s, 0);
	assert_false(syncrepl_ack(s, 12345, 0, 1));
	syncrepl_free(s);
}

struct acker {
	struct syncrepl *s;
	uint64_t tok;
};

static void *ack_later(void *arg)
{
	struct acker *a = arg;
	usleep(20000);
	syncrepl_ack(a->s, a->tok, 1, 100);
	syncrepl_wake(a->s);
	return NULL;
}

static void test_wait_is_woken(void **state)
{
	(void)state;
	struct syncrepl_opts o = { .replicas = 1, .timeout_ms = 10000 };
	struct syncrepl *s = syncrepl_new(&o);
	struct acker a = { s, syncrepl_open(s, 9) };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, ack_later, &a), 0);
	int64_t t0 = clock_mono_ms();
	assert_int_equal(syncrepl_wait(s, 1, "db", 100), 0);
	assert_true(clock_mono_ms() - t0 < 5000);
	pthread_join(t, NULL);
	struct syncrepl_stats v;
	syncrepl_stats(s, &v);
	assert_int_equal(v.acked, 1);
	assert_int_equal(v.timeouts, 0);
	assert_true(v.wait_seconds > 0);
	syncrepl_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_async_degrades_and_recovers),
		cmocka_unit_test(test_fail_mode),
		cmocka_unit_test(test_distinct_replicas),
		cmocka_unit_test(test_wait_is_woken),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
