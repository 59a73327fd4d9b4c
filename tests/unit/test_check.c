/*
 * test_check.c — CHECK()/CHECK_MSG() (base/check.h): a failure aborts
 * (SIGABRT, so a core dump is possible) after one level=error line that
 * names the file, line, condition and context; a passing check does
 * nothing and evaluates its condition once; NDEBUG does not turn it off.
 * Also the checks of other modules that are cheap to trigger on purpose
 * (pgmap's page number 0).
 *
 * Death tests run the failing check in a forked child and look at how
 * the child ended and what it wrote to stderr.
 */
#define NDEBUG 1 /* CHECK must stay on regardless */

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/check.h"
#include "base/log.h"
#include "base/pgmap.h"

/* The failing checks are each on the line after a __LINE__ constant. */
static const int plain_line = __LINE__ + 4;
static void fail_plain(void)
{
	volatile int pgno = 0;
	CHECK(pgno != 0);
}

static const int msg_line = __LINE__ + 4;
static void fail_msg_ctx(void)
{
	volatile uint32_t pgno = 3, last = 5;
	CHECK_MSG(pgno > last && "\"quoted\"", "pgno=%u last=%u", (unsigned)pgno, (unsigned)last);
}

/* Page number 0 is pgmap's empty-slot marker: a caller passing it is a
 * bug that would otherwise lose the entry (put) or return an empty slot
 * (get). */
static void pgmap_put_zero(void)
{
	struct pgmap m;
	pgmap_init(&m);
	pgmap_put(&m, 1, 0, 1);
	pgmap_put(&m, 0, 0, 1);
}

static void pgmap_get_zero(void)
{
	struct pgmap m;
	pgmap_init(&m);
	pgmap_put(&m, 1, 0, 1);
	(void)pgmap_get(&m, 0);
}

/* Runs fn in a child with stderr on a pipe; returns the child's wait
 * status and its stderr in out (NUL-terminated). */
static int run_child(void (*fn)(void), char *out, size_t size)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* No core file from an expected abort. */
		struct rlimit rl = { 0, 0 };
		setrlimit(RLIMIT_CORE, &rl);
		close(p[0]);
		dup2(p[1], STDERR_FILENO);
		/* Even at the quietest level the failure is logged. */
		log_min_level = LOG_LEVEL_ERROR + 1;
		fn();
		_exit(0); /* not reached when the check fires */
	}
	close(p[1]);
	size_t n = 0;
	ssize_t r;
	while (n + 1 < size && (r = read(p[0], out + n, size - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void assert_aborted(int status, const char *out)
{
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
		fail_msg("child did not abort: status 0x%x, stderr [%s]", status, out);
}

static void test_check_aborts_and_logs(void **state)
{
	char out[4096], at[128];
	int status = run_child(fail_plain, out, sizeof(out));
	assert_aborted(status, out);
	assert_non_null(strstr(out, "level=error mod=check msg=\"invariant violated\""));
	snprintf(at, sizeof(at), "at=%s:%d ", __FILE__, plain_line);
	if (!strstr(out, at))
		fail_msg("no [%s] in [%s]", at, out);
	assert_non_null(strstr(out, "cond=\"pgno != 0\""));
	/* One line. */
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void test_check_msg_context(void **state)
{
	char out[4096], at[128];
	int status = run_child(fail_msg_ctx, out, sizeof(out));
	assert_aborted(status, out);
	snprintf(at, sizeof(at), "at=%s:%d ", __FILE__, msg_line);
	if (!strstr(out, at))
		fail_msg("no [%s] in [%s]", at, out);
	/* Quotes inside the condition cannot end the logfmt value early. */
	assert_non_null(strstr(out, "cond=\"pgno > last && '\\'quoted\\''\" pgno=3 last=5\n"));
}

static void test_pgmap_zero_aborts(void **state)
{
	char out[4096];
	void (*fns[])(void) = { pgmap_put_zero, pgmap_get_zero };
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		int status = run_child(fns[i], out, sizeof(out));
		assert_aborted(status, out);
		assert_non_null(strstr(out, "pgmap.c:"));
		assert_non_null(strstr(out, "cond=\"pgno != 0\""));
	}
}

static void test_check_passes_once(void **state)
{
	int n = 0;
	CHECK(++n == 1);
	assert_int_equal(n, 1);
	CHECK_MSG(++n == 2, "n=%d", n);
	assert_int_equal(n, 2);
	/* The context is evaluated only on failure. */
	int evaluated = 0;
	CHECK_MSG(n == 2, "side=%d", ++evaluated);
	assert_int_equal(evaluated, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_aborts_and_logs),
		cmocka_unit_test(test_check_msg_context),
		cmocka_unit_test(test_check_passes_once),
		cmocka_unit_test(test_pgmap_zero_aborts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
