/*
 * lockwatch.h — a mutex that says who holds it, what for, since when, and
 * how many threads wait for it, so that a hang is never silent.
 *
 * Why: a FUSE request that waits for ever on a database's mutex (a stuck
 * fsync, a lost wake-up) blocks every other request on that database, the
 * HTTP API and the background threads, with no trace in the log. With the
 * holder's operation recorded at each acquisition, a watchdog (store.c)
 * can name the stuck operation, /metrics can show it, and readers that
 * must not hang (/info, /metrics, shutdown) can give up after a bound and
 * report the database as busy instead.
 *
 * Cost on the commit path: one clock_gettime(CLOCK_MONOTONIC) per
 * acquisition (vDSO, no system call) and a few relaxed atomic stores; the
 * waiter count is only touched when trylock fails (contention). The
 * state is written by the holder and read racily by observers: a reader
 * may see an operation name that belongs to the previous or the next
 * holder, which is harmless for a report.
 *
 * Pure apart from the mutex and the clock; no logging.
 */
#ifndef LITEFS_LOCKWATCH_H
#define LITEFS_LOCKWATCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct lockwatch {
	pthread_mutex_t mu;
	_Atomic(const char *) op;       /* holder's operation (a static string); stale when free */
	_Atomic int64_t since_ms;       /* clock_mono_ms() at acquisition; 0 while free */
	atomic_int n_waiters;           /* threads blocked acquiring it now */
	atomic_uint_fast64_t n_acquired; /* acquisitions so far: tells one holding from the next */
};

/* What an observer sees of a lockwatch at one instant. */
struct lockwatch_state {
	const char *op;     /* NULL while free */
	int64_t held_ms;    /* 0 while free */
	int n_waiters;
	uint64_t seq;       /* n_acquired: changes when the holder changes */
};

void lockwatch_init(struct lockwatch *lw);
void lockwatch_destroy(struct lockwatch *lw);

/* Acquires the mutex for op (a string literal: it is kept by pointer and
 * shown in reports). Never fails. */
void lockwatch_lock(struct lockwatch *lw, const char *op);
/* Like lockwatch_lock(), but gives up after timeout_ms: returns 0 when
 * acquired, -ETIMEDOUT otherwise. */
int lockwatch_timedlock(struct lockwatch *lw, const char *op, int64_t timeout_ms);
/* Acquires the mutex only if it is free: 0, or -EBUSY. */
int lockwatch_trylock(struct lockwatch *lw, const char *op);
void lockwatch_unlock(struct lockwatch *lw);

/* Reads the state without taking the mutex (never blocks). now_ms is
 * clock_mono_ms(). */
void lockwatch_peek(struct lockwatch *lw, int64_t now_ms, struct lockwatch_state *out);

#endif
