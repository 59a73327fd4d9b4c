/*
 * lockwatch.c — see lockwatch.h.
 */
#include <errno.h>

#include "base/clock.h"
#include "base/lockwatch.h"

void lockwatch_init(struct lockwatch *lw)
{
	pthread_mutex_init(&lw->mu, NULL);
	atomic_init(&lw->op, NULL);
	atomic_init(&lw->since_ms, 0);
	atomic_init(&lw->n_waiters, 0);
	atomic_init(&lw->n_acquired, 0);
}

void lockwatch_destroy(struct lockwatch *lw)
{
	pthread_mutex_destroy(&lw->mu);
}

/* Records the new holder (the mutex is held). since_ms is stored last, so
 * an observer that sees it non-zero also sees this holder's op (or a
 * later one). A monotonic clock of 0 ms is taken as 1: 0 means free. */
static void took(struct lockwatch *lw, const char *op)
{
	int64_t now = clock_mono_ms();
	atomic_store_explicit(&lw->op, op, memory_order_relaxed);
	atomic_fetch_add_explicit(&lw->n_acquired, 1, memory_order_relaxed);
	atomic_store_explicit(&lw->since_ms, now > 0 ? now : 1, memory_order_release);
}

void lockwatch_lock(struct lockwatch *lw, const char *op)
{
	/* The uncontended case costs no more than a plain lock: the waiter
	 * count is for the watchdog, which only cares when someone waits. */
	if (pthread_mutex_trylock(&lw->mu) != 0) {
		atomic_fetch_add_explicit(&lw->n_waiters, 1, memory_order_relaxed);
		pthread_mutex_lock(&lw->mu);
		atomic_fetch_sub_explicit(&lw->n_waiters, 1, memory_order_relaxed);
	}
	took(lw, op);
}

int lockwatch_timedlock(struct lockwatch *lw, const char *op, int64_t timeout_ms)
{
	if (pthread_mutex_trylock(&lw->mu) != 0) {
		struct timespec until = clock_deadline(timeout_ms);
		atomic_fetch_add_explicit(&lw->n_waiters, 1, memory_order_relaxed);
		int rc;
		do
			rc = pthread_mutex_timedlock(&lw->mu, &until);
		while (rc == EINTR);
		atomic_fetch_sub_explicit(&lw->n_waiters, 1, memory_order_relaxed);
		if (rc != 0)
			return -ETIMEDOUT;
	}
	took(lw, op);
	return 0;
}

int lockwatch_trylock(struct lockwatch *lw, const char *op)
{
	if (pthread_mutex_trylock(&lw->mu) != 0)
		return -EBUSY;
	took(lw, op);
	return 0;
}

void lockwatch_unlock(struct lockwatch *lw)
{
	atomic_store_explicit(&lw->since_ms, 0, memory_order_release);
	pthread_mutex_unlock(&lw->mu);
}

void lockwatch_peek(struct lockwatch *lw, int64_t now_ms, struct lockwatch_state *out)
{
	int64_t since = atomic_load_explicit(&lw->since_ms, memory_order_acquire);
	out->op = since ? atomic_load_explicit(&lw->op, memory_order_relaxed) : NULL;
	out->held_ms = since && now_ms > since ? now_ms - since : 0;
	out->n_waiters = atomic_load_explicit(&lw->n_waiters, memory_order_relaxed);
	out->seq = atomic_load_explicit(&lw->n_acquired, memory_order_relaxed);
}
