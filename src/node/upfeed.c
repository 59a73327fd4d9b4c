/*
 * upfeed.c — how far an upload file has been written (upfeed.h).
 */
#include "node/upfeed.h"

void upfeed_init(struct upfeed *f)
{
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->more, NULL);
	f->avail = 0;
	f->eof = f->stop = false;
	f->n_waiting = 0;
}

void upfeed_destroy(struct upfeed *f)
{
	pthread_cond_destroy(&f->more);
	pthread_mutex_destroy(&f->mu);
}

void upfeed_set(struct upfeed *f, uint64_t n_bytes)
{
	pthread_mutex_lock(&f->mu);
	f->avail = n_bytes;
	/* Called once per piece of the body (up to 1 MiB): no wake-up
	 * system call while every reader is busy. */
	if (f->n_waiting)
		pthread_cond_broadcast(&f->more);
	pthread_mutex_unlock(&f->mu);
}

void upfeed_end(struct upfeed *f, bool stop)
{
	pthread_mutex_lock(&f->mu);
	f->eof = true;
	if (stop)
		f->stop = true;
	pthread_cond_broadcast(&f->more);
	pthread_mutex_unlock(&f->mu);
}

size_t upfeed_wait(struct upfeed *f, uint64_t off, size_t want)
{
	pthread_mutex_lock(&f->mu);
	while (!f->stop && !f->eof && (f->avail < off || f->avail - off < want)) {
		f->n_waiting++;
		pthread_cond_wait(&f->more, &f->mu);
		f->n_waiting--;
	}
	uint64_t n = f->stop || f->avail < off ? 0 : f->avail - off;
	pthread_mutex_unlock(&f->mu);
	return n < want ? (size_t)n : want;
}

bool upfeed_stopped(struct upfeed *f)
{
	pthread_mutex_lock(&f->mu);
	bool s = f->stop;
	pthread_mutex_unlock(&f->mu);
	return s;
}
