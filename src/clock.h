/*
 * clock.h — the clocks every module reads, and deadlines for timed waits.
 */
#ifndef LITEFS_CLOCK_H
#define LITEFS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since the epoch (CLOCK_REALTIME): timestamps. */
int64_t clock_wall_ms(void);
/* Milliseconds of CLOCK_MONOTONIC: durations and intervals. */
int64_t clock_mono_ms(void);
/* The CLOCK_REALTIME instant ms from now, for pthread_cond_timedwait and
 * pthread_timedjoin_np (whose condition variables use the default clock). */
struct timespec clock_deadline(int64_t ms);

#endif
