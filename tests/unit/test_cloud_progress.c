/*
 * test_cloud_progress.c — progress of a long operation (cloud_progress.c):
 * nothing is reported on a thread without a reporter; a phase reports its
 * start, its steps of CLOUD_PROGRESS_STEP_PCT percent and its end, never
 * more than its total; cloud_progress_read counts the bytes it read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cloud/cloud_progress.h"

#define MAX_SEEN 256

struct seen {
	size_t n;
	const char *phase[MAX_SEEN];
	uint64_t done[MAX_SEEN], total[MAX_SEEN];
};

static void record(struct cloud_progress *p, const char *phase, uint64_t done, uint64_t total)
{
	struct seen *s = p->ctx;
	assert_true(s->n < MAX_SEEN);
	s->phase[s->n] = phase;
	s->done[s->n] = done;
	s->total[s->n] = total;
	s->n++;
}

static void test_no_reporter(void **state)
{
	(void)state;
	/* Hooks without a reporter are no-ops (the CLI, maintenance). */
	cloud_progress_phase("build", 100);
	cloud_progress_add(50);
	struct seen s = { 0 };
	struct cloud_progress p = { .report = record, .ctx = &s };
	cloud_progress_begin(&p);
	cloud_progress_add(10); /* before any phase: ignored */
	cloud_progress_end();
	cloud_progress_phase("build", 100);
	assert_int_equal(s.n, 0);
}

static void test_steps(void **state)
{
	(void)state;
	struct seen s = { 0 };
	struct cloud_progress p = { .report = record, .ctx = &s };
	cloud_progress_begin(&p);
	cloud_progress_phase("write", 1000);
	for (int i = 0; i < 1000; i++)
		cloud_progress_add(1);
	cloud_progress_add(5); /* past the total: nothing more */
	cloud_progress_phase("build", 0); /* an empty phase starts and ends */
	cloud_progress_end();
	/* 0, 10%, 20% ... 100% (the interval may add a few between). */
	assert_true(s.n >= 12 && s.n < 12 + 100);
	assert_string_equal(s.phase[0], "write");
	assert_int_equal(s.done[0], 0);
	uint64_t last = 0;
	int steps = 0;
	for (size_t i = 0; i + 1 < s.n; i++) {
		assert_int_equal(s.total[i], 1000);
		assert_true(s.done[i] >= last);
		if (s.done[i] % 100 == 0)
			steps++;
		last = s.done[i];
	}
	assert_int_equal(steps, 11);
	assert_int_equal(s.done[s.n - 2], 1000);
	assert_string_equal(s.phase[s.n - 1], "build");
	assert_int_equal(s.total[s.n - 1], 0);
}

static void test_read_counts(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "0123456789", 10), 10);
	close(fds[1]);
	struct seen s = { 0 };
	struct cloud_progress p = { .report = record, .ctx = &s };
	cloud_progress_begin(&p);
	cloud_progress_phase("build", 10);
	char buf[4];
	assert_int_equal(cloud_progress_read(&fds[0], buf, 4), 4);
	assert_int_equal(p.done, 4);
	while (cloud_progress_read(&fds[0], buf, 4) > 0)
		;
	cloud_progress_end();
	close(fds[0]);
	assert_int_equal(s.done[s.n - 1], 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_reporter),
		cmocka_unit_test(test_steps),
		cmocka_unit_test(test_read_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
