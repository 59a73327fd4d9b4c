/*
 * clock.c — see clock.h.
 */
#include "base/clock.h"

static int64_t ms_of(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_wall_ms(void)
{
	return ms_of(CLOCK_REALTIME);
}

int64_t clock_mono_ms(void)
{
	return ms_of(CLOCK_MONOTONIC);
}

struct timespec clock_deadline(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

bool clock_wait_flag(pthread_mutex_t *mu, pthread_cond_t *cond, const bool *flag, const atomic_bool *stop,
		     int64_t timeout_ms)
{
	struct timespec until = clock_deadline(timeout_ms);
	pthread_mutex_lock(mu);
	while (!(flag && *flag) && !atomic_load(stop))
		if (pthread_cond_timedwait(cond, mu, &until) != 0)
			break;
	bool set = flag && *flag;
	pthread_mutex_unlock(mu);
	return set;
}
