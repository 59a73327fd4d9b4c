/*
 * outq.c — pending output of a streamed response (outq.h).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/outq.h"

void outq_init(struct outq *q)
{
	memset(q, 0, sizeof(*q));
	q->fd = -1;
}

bool outq_put(struct outq *q, const void *data, size_t len)
{
	if (q->off == q->len)
		q->off = q->len = 0;
	if (q->len + len > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		while (cap < q->len + len)
			cap *= 2;
		uint8_t *b = realloc(q->buf, cap);
		if (!b)
			return false;
		q->buf = b;
		q->cap = cap;
	}
	memcpy(q->buf + q->len, data, len);
	q->len += len;
	return true;
}

void outq_drop_fd(struct outq *q)
{
	if (q->fd >= 0 && q->fd_owned)
		close(q->fd);
	q->fd = -1;
	q->fd_owned = false;
	q->fd_left = 0;
}

void outq_free(struct outq *q)
{
	outq_drop_fd(q);
	free(q->buf);
	memset(q, 0, sizeof(*q));
	q->fd = -1;
}

ssize_t outq_take(struct outq *q, char *buf, size_t max)
{
	if (q->off < q->len) {
		size_t n = q->len - q->off < max ? q->len - q->off : max;
		memcpy(buf, q->buf + q->off, n);
		q->off += n;
		return (ssize_t)n;
	}
	if (q->fd_left == 0)
		return 0;
	size_t want = q->fd_left < max ? (size_t)q->fd_left : max;
	ssize_t n = pread(q->fd, buf, want, (off_t)q->fd_off);
	if (n <= 0)
		return -1;
	q->fd_off += (uint64_t)n;
	q->fd_left -= (uint64_t)n;
	if (q->fd_left == 0)
		outq_drop_fd(q);
	return n;
}
