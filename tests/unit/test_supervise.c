/*
 * test_supervise.c — the if-primary workers follow a role that changes at
 * run time (supervise.h): a fake role source stands in for the node, as
 * the etcd lease will flip it. Real processes (sh) are started, signalled
 * and reaped; each writes what happened to it into a file in tmp_dir.
 *
 * Checked: a worker starts on promotion and only then; demotion stops it
 * with SIGTERM, or SIGKILL once the grace period passed when it ignores
 * SIGTERM; an exit while primary is restarted after a doubling backoff,
 * capped, and reset by a long run; the node's stop ends the manager (no
 * restart afterwards) and stops workers and application together; a
 * program that does not exist is retried with the backoff; if-candidate
 * keeps its meaning beside if-primary workers.
 *
 * Bounds on waiting times are lower bounds or generous upper ones: what
 * is asserted is "reacts to the feed, not to a poll" and "backs off",
 * never a latency figure.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/err.h"
#include "node/config.h"
#include "node/supervise.h"
#include "testutil.h"

/* ---- A role source the test flips --------------------------------------- */

struct fake_role {
	pthread_mutex_t mu; /* guards primary, seq */
	pthread_cond_t cond;
	bool primary;
	uint64_t seq;
};

static struct fake_role fake = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 1 };

static bool fake_is_primary(void *ctx)
{
	struct fake_role *f = ctx;
	pthread_mutex_lock(&f->mu);
	bool p = f->primary;
	pthread_mutex_unlock(&f->mu);
	return p;
}

static uint64_t fake_wait(void *ctx, uint64_t seen, int timeout_ms)
{
	struct fake_role *f = ctx;
	struct timespec until = clock_deadline(timeout_ms);
	pthread_mutex_lock(&f->mu);
	while (f->seq == seen && pthread_cond_timedwait(&f->cond, &f->mu, &until) == 0)
		;
	uint64_t seq = f->seq;
	pthread_mutex_unlock(&f->mu);
	return seq;
}

static void fake_set(bool primary)
{
	pthread_mutex_lock(&fake.mu);
	fake.primary = primary;
	fake.seq++;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.mu);
}

static const struct supervise_role fake_role = { &fake, fake_is_primary, fake_wait };

/* ---- Helpers ------------------------------------------------------------ */

static char marker[300];

static void new_marker(const char *name)
{
	snprintf(marker, sizeof(marker), "%s/%s", tmp_dir, name);
	remove(marker);
}

/* The marker's contents, whitespace-separated words joined by one space. */
static const char *marker_words(void)
{
	static char out[4096];
	out[0] = '\0';
	FILE *f = fopen(marker, "r");
	if (!f)
		return out;
	char w[256];
	while (fscanf(f, "%255s", w) == 1) {
		if (out[0])
			strncat(out, " ", sizeof(out) - strlen(out) - 1);
		strncat(out, w, sizeof(out) - strlen(out) - 1);
	}
	fclose(f);
	return out;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static struct supervise_worker_state worker0(struct supervisor *s)
{
	struct supervise_worker_state st;
	assert_int_equal(supervisor_workers(s, 0, &st), 1);
	return st;
}

/* Waits up to timeout_ms for worker 0 to be running (want_pid) or not;
 * returns the milliseconds it took, or fails. */
static int64_t wait_worker(struct supervisor *s, bool want_pid, unsigned min_starts, int timeout_ms)
{
	int64_t t0 = clock_mono_ms();
	for (;;) {
		struct supervise_worker_state st = worker0(s);
		if ((st.pid > 0) == want_pid && st.starts >= min_starts)
			return clock_mono_ms() - t0;
		if (clock_mono_ms() - t0 > timeout_ms)
			fail_msg("worker %s (starts %u) after %d ms", want_pid ? "not running" : "still running",
				 st.starts, timeout_ms);
		sleep_ms(5);
	}
}

static void wait_words(const char *want, int timeout_ms)
{
	int64_t t0 = clock_mono_ms();
	while (strcmp(marker_words(), want) != 0) {
		if (clock_mono_ms() - t0 > timeout_ms)
			fail_msg("marker: got [%s], want [%s]", marker_words(), want);
		sleep_ms(5);
	}
}

static bool alive(pid_t pid)
{
	return kill(pid, 0) == 0;
}

/* A config of the given exec items (cmd, if_candidate, if_primary). */
static struct config_exec items[4];
static struct config cfg;

static void set_exec(size_t n, const struct config_exec *e)
{
	memset(&cfg, 0, sizeof(cfg));
	for (size_t i = 0; i < n; i++)
		items[i] = e[i];
	cfg.exec = items;
	cfg.n_exec = n;
}

/* Starts a supervisor with one if-primary worker, cmd, on a primary. */
static struct supervisor *start_primary_worker(const char *cmd, const struct supervise_opts *o)
{
	static char keep[1024]; /* the config borrows the command */
	snprintf(keep, sizeof(keep), "%s", cmd);
	fake_set(true);
	set_exec(1, (struct config_exec[]){ { keep, false, true, 0 } });
	struct supervisor *s = NULL;
	assert_int_equal(supervisor_start(&cfg, NULL, true, &fake_role, o, &s), 0);
	return s;
}

/* A worker that logs "start" and, on SIGTERM, "term" (then exits 0). The
 * trap is set first, so a SIGTERM after "start" is always seen. */
static char polite_cmd[1024];

static void make_polite(void)
{
	snprintf(polite_cmd, sizeof(polite_cmd),
		 "sh -c 'trap \"echo term >> %s; exit 0\" TERM; echo start >> %s; while :; do sleep 0.02; done'",
		 marker, marker);
}

/* ---- Tests -------------------------------------------------------------- */

static void test_follows_role(void **state)
{
	new_marker("follow");
	make_polite();
	fake_set(false);
	set_exec(1, (struct config_exec[]){ { polite_cmd, false, true, 0 } });
	/* A long poll: the worker can follow the role within the bounds below
	 * only by listening to the change feed. */
	struct supervise_opts o = { .poll_ms = 3000 };
	struct supervisor *s = NULL;
	assert_int_equal(supervisor_start(&cfg, NULL, true, &fake_role, &o, &s), 0);
	assert_false(supervisor_running(s)); /* no application: only a worker */

	/* A replica runs nothing. */
	sleep_ms(200);
	assert_int_equal(worker0(s).starts, 0);
	assert_string_equal(marker_words(), "");

	/* Promotion starts it. */
	fake_set(true);
	assert_true(wait_worker(s, true, 1, 1500) < 1500);
	wait_words("start", 2000);
	pid_t first = worker0(s).pid;

	/* Demotion stops it with SIGTERM; it is reaped. */
	fake_set(false);
	assert_true(wait_worker(s, false, 1, 1500) < 1500);
	wait_words("start term", 2000);
	struct supervise_worker_state st = worker0(s);
	assert_int_equal(st.stops, 1);
	assert_int_equal(st.kills, 0);
	assert_false(alive(first));

	/* Promoted again: a new process. */
	fake_set(true);
	wait_worker(s, true, 2, 1500);
	wait_words("start term start", 2000);

	/* Freeing stops it too. */
	supervisor_free(s);
	assert_string_equal(marker_words(), "start term start term");
}

static void test_sigkill_after_grace(void **state)
{
	new_marker("stubborn");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "sh -c 'trap \"\" TERM; echo up >> %s; while :; do sleep 0.02; done'", marker);
	struct supervise_opts o = { .grace_ms = 400, .poll_ms = 20 };
	struct supervisor *s = start_primary_worker(cmd, &o);
	wait_words("up", 2000);
	pid_t pid = worker0(s).pid;
	assert_true(pid > 0);

	int64_t t0 = clock_mono_ms();
	fake_set(false);
	wait_worker(s, false, 1, 5000);
	int64_t took = clock_mono_ms() - t0;
	assert_true(took >= 400); /* SIGTERM was ignored: it lived out the grace */
	struct supervise_worker_state st = worker0(s);
	assert_int_equal(st.stops, 1);
	assert_int_equal(st.kills, 1);
	assert_false(alive(pid));
	supervisor_free(s);
}

/* Start times (ms, monotonic) of a worker that writes its start and exits. */
static int read_starts(int64_t *t, int max)
{
	FILE *f = fopen(marker, "r");
	int n = 0;
	if (!f)
		return 0;
	long long ns;
	while (n < max && fscanf(f, "%lld", &ns) == 1)
		t[n++] = ns / 1000000;
	fclose(f);
	return n;
}

static void test_restart_with_backoff(void **state)
{
	new_marker("crashy");
	char cmd[1024];
	/* /proc/uptime's resolution is 10 ms; date's is finer, so use it. */
	snprintf(cmd, sizeof(cmd), "sh -c 'date +%%s%%N >> %s; exit 3'", marker);
	struct supervise_opts o = { .backoff_min_ms = 100, .backoff_max_ms = 400, .backoff_reset_ms = 60000,
				    .poll_ms = 10 };
	struct supervisor *s = start_primary_worker(cmd, &o);
	sleep_ms(1700);
	supervisor_free(s);

	int64_t t[64];
	int n = read_starts(t, 64);
	/* Delays 100, 200, 400, 400...: starts near 0, 100, 300, 700, 1100,
	 * 1500. Without a backoff (10 ms poll) there would be ~100. */
	if (n < 4 || n > 7)
		fail_msg("%d starts in 1.7 s", n);
	static const int want[] = { 100, 200, 400, 400, 400, 400 };
	for (int i = 1; i < n; i++) {
		int64_t gap = t[i] - t[i - 1];
		if (gap < want[i - 1] - 15) /* date and the reap each round a little */
			fail_msg("restart %d came %lld ms after the previous start; backoff %d", i, (long long)gap,
				 want[i - 1]);
	}
}

static void test_backoff_resets_after_a_long_run(void **state)
{
	new_marker("slowcrash");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "sh -c 'date +%%s%%N >> %s; sleep 0.3; exit 1'", marker);
	fake_set(true);
	set_exec(1, (struct config_exec[]){ { cmd, false, true, 0 } });
	/* Each run (300 ms) is longer than the reset (200 ms), so every
	 * restart waits the minimum: gaps ~400 ms. Without the reset the
	 * fifth gap would be 300 + 1600 ms. */
	struct supervise_opts o = { .backoff_min_ms = 100, .backoff_max_ms = 5000, .backoff_reset_ms = 200,
				    .poll_ms = 10 };
	struct supervisor *s = NULL;
	assert_int_equal(supervisor_start(&cfg, NULL, true, &fake_role, &o, &s), 0);
	int64_t t[64];
	int64_t t0 = clock_mono_ms();
	while (read_starts(t, 64) < 5 && clock_mono_ms() - t0 < 8000)
		sleep_ms(20);
	supervisor_free(s);
	int n = read_starts(t, 64);
	assert_true(n >= 5);
	for (int i = 1; i < n; i++) {
		int64_t gap = t[i] - t[i - 1];
		if (gap < 385 || gap > 1200)
			fail_msg("restart %d came %lld ms after the previous start", i, (long long)gap);
	}
}

static void test_missing_program_is_retried(void **state)
{
	struct supervise_opts o = { .backoff_min_ms = 100, .backoff_max_ms = 200, .poll_ms = 10 };
	struct supervisor *s = start_primary_worker("/nonexistent/worker --x", &o);
	sleep_ms(700);
	struct supervise_worker_state st = worker0(s);
	assert_int_equal(st.pid, 0);
	/* 0, 100, 300, 500, 700: a handful of tries, not one per poll. */
	assert_true(st.starts >= 2 && st.starts <= 6);
	supervisor_free(s);
}

static void test_node_stop_ends_workers_with_the_app(void **state)
{
	new_marker("stop");
	make_polite();
	fake_set(true);
	set_exec(2, (struct config_exec[]){ { polite_cmd, false, true, 0 }, { "sleep 30", false, false, 0 } });
	struct supervisor *s = NULL;
	assert_int_equal(supervisor_start(&cfg, NULL, true, &fake_role, NULL, &s), 0);
	assert_true(supervisor_running(s));
	wait_words("start", 3000);
	int code = -1;
	assert_false(supervisor_reap(s, &code));

	supervisor_signal(s, SIGTERM);
	/* The manager has ended: a primary node that is stopping starts no
	 * worker again, even though the worker exits and the role says
	 * primary. */
	assert_int_equal(supervisor_wait(s, 5000), 128 + SIGTERM);
	assert_false(supervisor_running(s));
	fake_set(true);
	sleep_ms(300);
	struct supervise_worker_state st = worker0(s);
	assert_int_equal(st.pid, 0);
	assert_int_equal(st.starts, 1);
	assert_int_equal(st.stops, 1);
	assert_int_equal(st.kills, 0);
	assert_string_equal(marker_words(), "start term");
	supervisor_free(s);
}

static void test_if_candidate_keeps_its_meaning(void **state)
{
	new_marker("cand");
	char pre[1024], cand[1024], app[1024], last_cand[1024];
	snprintf(pre, sizeof(pre), "sh -c 'echo pre >> %s'", marker);
	snprintf(cand, sizeof(cand), "sh -c 'echo cand >> %s'", marker);
	snprintf(app, sizeof(app), "sh -c 'echo app >> %s; exit 5'", marker);
	snprintf(last_cand, sizeof(last_cand), "sh -c 'echo lastcand >> %s; exit 6'", marker);
	/* On a non-candidate, if-candidate items are skipped, so the
	 * application is the last remaining item, not the last item; an
	 * if-primary item is never the application. */
	fake_set(false);
	set_exec(4, (struct config_exec[]){ { pre, false, false, 0 },
					    { cand, true, false, 0 },
					    { app, false, false, 0 },
					    { last_cand, true, false, 0 } });
	struct supervisor *s = NULL;
	assert_int_equal(supervisor_start(&cfg, NULL, false, &fake_role, NULL, &s), 0);
	assert_int_equal(supervisor_wait(s, 5000), 5);
	assert_string_equal(marker_words(), "pre app");
	supervisor_free(s);

	/* On a candidate every item runs; the worker item does not change
	 * which one is the application. */
	new_marker("cand");
	snprintf(pre, sizeof(pre), "sh -c 'echo pre >> %s'", marker);
	snprintf(cand, sizeof(cand), "sh -c 'echo cand >> %s'", marker);
	snprintf(app, sizeof(app), "sh -c 'echo app >> %s; exit 5'", marker);
	snprintf(last_cand, sizeof(last_cand), "sh -c 'echo lastcand >> %s; exit 6'", marker);
	set_exec(4, (struct config_exec[]){ { pre, false, false, 0 },
					    { cand, true, false, 0 },
					    { last_cand, true, false, 0 },
					    { "sleep 30", false, true, 0 } });
	assert_int_equal(supervisor_start(&cfg, NULL, true, &fake_role, NULL, &s), 0);
	assert_int_equal(supervisor_wait(s, 5000), 6);
	assert_string_equal(marker_words(), "pre cand lastcand");
	assert_int_equal(worker0(s).starts, 0); /* a replica: the worker never ran */
	supervisor_free(s);
}

static void test_workers_need_a_role(void **state)
{
	set_exec(1, (struct config_exec[]){ { "sleep 30", false, true, 0 } });
	struct supervisor *s = NULL;
	assert_int_equal(supervisor_start(&cfg, NULL, true, NULL, NULL, &s), ERR_INVAL);
	supervisor_free(s);
	supervisor_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_follows_role),
		cmocka_unit_test(test_sigkill_after_grace),
		cmocka_unit_test(test_restart_with_backoff),
		cmocka_unit_test(test_backoff_resets_after_a_long_run),
		cmocka_unit_test(test_missing_program_is_retried),
		cmocka_unit_test(test_node_stop_ends_workers_with_the_app),
		cmocka_unit_test(test_if_candidate_keeps_its_meaning),
		cmocka_unit_test(test_workers_need_a_role),
	};
	return RUN_IN_TMP_DIR("test_supervise", tests);
}
