/*
 * dlsink.c — the file end of a long download (see dlsink.h).
 *
 * A ring of DLSINK_BUFS buffers: the receiver fills the one after the
 * queued ones and queues it when full; the writer thread writes the
 * oldest queued one and gives it back. Nothing is copied twice: the
 * receiver's copy into a buffer is the one copy the old single-threaded
 * sinks made too. 256 KiB pieces: what the receiver copied in is still in
 * a shared cache when the kernel copies it out (4 MiB pieces took twice
 * the system time in cmd_cloud.c's measurements).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/dlsink.h"
#include "base/err.h"
#include "base/sys.h"

#define DLSINK_BUFS 8
#define DLSINK_BUF (256u << 10)
/* Writeback is started every this many bytes. */
#define DLSINK_KICK ((off_t)8 << 20)

struct dlsink {
	struct fileio_replace *out; /* the writer thread's until finish */
	struct sys_wb wb;           /* the writer thread's */
	pthread_t thread;
	pthread_mutex_t mu; /* guards head, queued, done, err */
	pthread_cond_t can_write, can_fill;
	unsigned head, queued; /* buffers [head, head + queued) wait to be written */
	bool done;             /* the receiver queued its last buffer */
	int err;               /* the first write error, -errno */
	unsigned fill_i;       /* the receiver's: the buffer it fills, (head + queued) */
	size_t fill;           /* the receiver's: bytes in it */
	size_t len[DLSINK_BUFS];
	uint8_t *buf[DLSINK_BUFS];
};

static void *writer_main(void *arg)
{
	struct dlsink *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->queued == 0 && !s->done)
			pthread_cond_wait(&s->can_write, &s->mu);
		if (s->queued == 0)
			break;
		unsigned i = s->head;
		int err = s->err;
		pthread_mutex_unlock(&s->mu);
		/* After a failure the rest is dropped, so the receiver never
		 * waits for room: it sees the error on its next write. */
		if (err == 0)
			err = fileio_replace_write(s->out, s->buf[i], s->len[i]);
		if (err == 0)
			err = sys_writeback(&s->wb, s->out->fd, s->out->off);
		pthread_mutex_lock(&s->mu);
		if (err != 0 && s->err == 0)
			s->err = err;
		s->head = (s->head + 1) % DLSINK_BUFS;
		s->queued--;
		pthread_cond_signal(&s->can_fill);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void sink_free(struct dlsink *s)
{
	for (unsigned i = 0; i < DLSINK_BUFS; i++)
		free(s->buf[i]);
	pthread_cond_destroy(&s->can_fill);
	pthread_cond_destroy(&s->can_write);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int dlsink_start(struct dlsink **sp, struct fileio_replace *out)
{
	*sp = NULL;
	struct dlsink *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	s->out = out;
	s->wb = (struct sys_wb){ .kick = DLSINK_KICK, .keep = SYS_WB_KEEP, .kicked = out->off, .dropped = out->off };
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->can_write, NULL);
	pthread_cond_init(&s->can_fill, NULL);
	for (unsigned i = 0; i < DLSINK_BUFS; i++) {
		if (!(s->buf[i] = malloc(DLSINK_BUF))) {
			sink_free(s);
			return ERR_NOMEM;
		}
	}
	int rc = pthread_create(&s->thread, NULL, writer_main, s);
	if (rc != 0) {
		sink_free(s);
		return -rc;
	}
	*sp = s;
	return 0;
}

/* Queues the buffer being filled; waits for a free one unless last. */
static int queue_fill(struct dlsink *s, bool last)
{
	pthread_mutex_lock(&s->mu);
	if (s->fill > 0) {
		s->len[s->fill_i] = s->fill;
		s->queued++;
		s->fill = 0;
		s->fill_i = (s->fill_i + 1) % DLSINK_BUFS;
	}
	s->done = last;
	pthread_cond_signal(&s->can_write);
	/* The next buffer to fill is free once fewer than all are queued
	 * (the writer moves head and queued together, so fill_i stays the
	 * one after the queued ones). */
	while (!last && s->queued == DLSINK_BUFS)
		pthread_cond_wait(&s->can_fill, &s->mu);
	int err = s->err;
	pthread_mutex_unlock(&s->mu);
	return err;
}

size_t dlsink_write(void *ctx, const char *buf, size_t len)
{
	struct dlsink *s = ctx;
	pthread_mutex_lock(&s->mu);
	int err = s->err;
	pthread_mutex_unlock(&s->mu);
	if (err != 0)
		return 0;
	for (size_t done = 0; done < len;) {
		/* The buffer being filled is not queued: the writer does not
		 * touch it, so it is filled without the lock. */
		size_t k = DLSINK_BUF - s->fill < len - done ? DLSINK_BUF - s->fill : len - done;
		memcpy(s->buf[s->fill_i] + s->fill, buf + done, k);
		s->fill += k;
		done += k;
		if (s->fill == DLSINK_BUF && queue_fill(s, false) != 0)
			return 0;
	}
	return len;
}

int dlsink_finish(struct dlsink *s)
{
	queue_fill(s, true);
	pthread_join(s->thread, NULL);
	int err = s->err;
	if (err != 0 && s->out->err == 0)
		s->out->err = err;
	sink_free(s);
	return err;
}
