/*
 * clock.h — the clocks every module reads, and deadlines for timed waits.
 */
#ifndef LITEFS_CLOCK_H
#define LITEFS_CLOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds since the epoch (CLOCK_REALTIME): timestamps. */
int64_t clock_wall_ms(void);
/* Milliseconds of CLOCK_MONOTONIC: durations and intervals. */
int64_t clock_mono_ms(void);
/* The CLOCK_REALTIME instant ms from now, for pthread_cond_timedwait and
 * pthread_timedjoin_np (whose condition variables use the default clock). */
struct timespec clock_deadline(int64_t ms);

/* Waits on cond (with mu, which the caller does not hold) until *flag is
 * true (flag may be NULL: never), *stop is true, or timeout_ms passed;
 * signallers set the flags under mu and broadcast. Returns *flag (false
 * when flag is NULL). */
bool clock_wait_flag(pthread_mutex_t *mu, pthread_cond_t *cond, const bool *flag, const atomic_bool *stop,
		     int64_t timeout_ms);

#endif
