/*
 * test_ownmount.c — unit tests of node/ownmount.c: a call runs on another
 * thread and returns its result; that thread's descriptor table holds none
 * of the caller's descriptors (so none of /dev/fuse) and is shared by every
 * such thread (a descriptor opened by one call is usable by the next);
 * calls made at once run at once (two calls that wait for each other both
 * finish); a call made from such a thread runs in place.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "node/ownmount.h"
#include "testutil.h"

static int is_open(void *arg)
{
	return fcntl(*(int *)arg, F_GETFD) >= 0 ? 1 : -errno;
}

static int open_null(void *arg)
{
	(void)arg;
	return ownmount_on_own_thread() ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -EPERM;
}

static int close_fd(void *arg)
{
	return close(*(int *)arg) == 0 ? 0 : -errno;
}

static void test_own_descriptor_table(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_false(ownmount_on_own_thread());
	/* The caller's descriptors do not exist there ... */
	assert_int_equal(ownmount_call(is_open, &p[0]), -EBADF);
	/* ... and one opened there does not exist here, but is there for the
	 * next call (whichever of the threads runs it). */
	int fd = ownmount_call(open_null, NULL);
	assert_true(fd >= 3);
	if (fd != p[0] && fd != p[1])
		assert_true(fcntl(fd, F_GETFD) < 0);
	assert_int_equal(ownmount_call(is_open, &fd), 1);
	assert_int_equal(ownmount_call(close_fd, &fd), 0);
	assert_int_equal(ownmount_call(is_open, &fd), -EBADF);
	assert_int_equal(fcntl(p[0], F_GETFD), FD_CLOEXEC); /* untouched here */
	close(p[0]);
	close(p[1]);
}

/* Two calls that each wait for the other to have started. */
static atomic_int started;

static int meet(void *arg)
{
	(void)arg;
	atomic_fetch_add(&started, 1);
	for (int i = 0; i < 5000 && atomic_load(&started) < 2; i++)
		usleep(1000);
	return atomic_load(&started) >= 2 ? 7 : -ETIMEDOUT;
}

static void *call_meet(void *arg)
{
	*(int *)arg = ownmount_call(meet, NULL);
	return NULL;
}

static void test_calls_run_at_once(void **state)
{
	(void)state;
	pthread_t t;
	int a = 0, b = 0;
	atomic_store(&started, 0);
	assert_int_equal(pthread_create(&t, NULL, call_meet, &a), 0);
	call_meet(&b);
	pthread_join(t, NULL);
	assert_int_equal(a, 7);
	assert_int_equal(b, 7);
}

static int nested(void *arg)
{
	(void)arg;
	return ownmount_call(open_null, NULL); /* runs in place: same table */
}

static void test_nested_call_runs_in_place(void **state)
{
	(void)state;
	int fd = ownmount_call(nested, NULL);
	assert_true(fd >= 3);
	assert_int_equal(ownmount_call(is_open, &fd), 1);
	assert_int_equal(ownmount_call(close_fd, &fd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_own_descriptor_table),
		cmocka_unit_test(test_calls_run_at_once),
		cmocka_unit_test(test_nested_call_runs_in_place),
	};
	return RUN_IN_TMP_DIR("test_ownmount", tests);
}
