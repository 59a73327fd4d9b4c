/*
 * bpipe.c — a bounded byte pipe between two threads (bpipe.h).
 *
 * A circular buffer under one mutex. Each side sleeps on its own
 * condition variable and the other side signals it only when it is
 * recorded as waiting (the reader: for as many bytes as it asked for), so
 * a fast pair of threads streaming through a buffer that never fills or
 * empties takes no futex call at all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/bpipe.h"
#include "base/err.h"

int bpipe_init(struct bpipe *p, size_t cap)
{
	memset(p, 0, sizeof(*p));
	p->buf = malloc(cap ? cap : 1);
	if (p->buf == NULL)
		return ERR_NOMEM;
	p->cap = cap ? cap : 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->can_read, NULL);
	pthread_cond_init(&p->can_write, NULL);
	return 0;
}

void bpipe_destroy(struct bpipe *p)
{
	if (p->buf == NULL)
		return;
	pthread_cond_destroy(&p->can_read);
	pthread_cond_destroy(&p->can_write);
	pthread_mutex_destroy(&p->mu);
	free(p->buf);
	p->buf = NULL;
}

int bpipe_write(struct bpipe *p, const void *buf, size_t len)
{
	const unsigned char *src = buf;
	int rc = 0;
	pthread_mutex_lock(&p->mu);
	while (len > 0) {
		if (p->reader_gone || p->eof) {
			rc = -EPIPE;
			break;
		}
		if (p->len == p->cap) {
			p->writer_waits = true;
			pthread_cond_wait(&p->can_write, &p->mu);
			p->writer_waits = false;
			continue;
		}
		size_t tail = (p->head + p->len) % p->cap;
		size_t n = p->cap - p->len;         /* room */
		if (n > p->cap - tail)
			n = p->cap - tail;          /* up to the wrap */
		if (n > len)
			n = len;
		memcpy(p->buf + tail, src, n);
		p->len += n;
		src += n;
		len -= n;
		if (p->reader_waits && p->len >= p->want)
			pthread_cond_signal(&p->can_read);
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

void bpipe_close_write(struct bpipe *p)
{
	pthread_mutex_lock(&p->mu);
	p->eof = true;
	pthread_cond_signal(&p->can_read);
	pthread_mutex_unlock(&p->mu);
}

ssize_t bpipe_read(void *ctx, void *buf, size_t len)
{
	struct bpipe *p = ctx;
	size_t got = 0;
	pthread_mutex_lock(&p->mu);
	/* Wait for all of len (up to the buffer's size), not just a byte: one
	 * wake-up per buffer-full instead of one per network read. */
	p->want = len < p->cap ? len : p->cap;
	while (p->len < p->want && !p->eof) {
		p->reader_waits = true;
		pthread_cond_wait(&p->can_read, &p->mu);
		p->reader_waits = false;
	}
	while (got < len && p->len > 0) {
		size_t n = p->cap - p->head; /* up to the wrap */
		if (n > p->len)
			n = p->len;
		if (n > len - got)
			n = len - got;
		memcpy((unsigned char *)buf + got, p->buf + p->head, n);
		p->head = (p->head + n) % p->cap;
		p->len -= n;
		got += n;
	}
	if (got > 0 && p->writer_waits)
		pthread_cond_signal(&p->can_write);
	pthread_mutex_unlock(&p->mu);
	return (ssize_t)got;
}

void bpipe_close_read(struct bpipe *p)
{
	pthread_mutex_lock(&p->mu);
	p->reader_gone = true;
	pthread_cond_signal(&p->can_write);
	pthread_mutex_unlock(&p->mu);
}
