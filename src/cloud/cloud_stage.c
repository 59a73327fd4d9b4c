/*
 * cloud_stage.c — the kept staging buffer and the early fsync of large
 * uploads (cloud_stage.h says why).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "base/err.h"
#include "base/sys.h"
#include "cloud/cloud_stage.h"

struct cloud_stage {
	pthread_mutex_t mu; /* guards everything below */
	uint8_t *buf;       /* NULL until the first take */
	size_t cap;
	bool busy;          /* held by an ingest */
};

int cloud_stage_new(size_t cap, struct cloud_stage **out)
{
	struct cloud_stage *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return ERR_NOMEM;
	pthread_mutex_init(&st->mu, NULL);
	st->cap = cap;
	*out = st;
	return 0;
}

void cloud_stage_free(struct cloud_stage *st)
{
	if (st == NULL)
		return;
	free(st->buf);
	pthread_mutex_destroy(&st->mu);
	free(st);
}

uint8_t *cloud_stage_take(struct cloud_stage *st, size_t *cap)
{
	uint8_t *buf = NULL;
	pthread_mutex_lock(&st->mu);
	if (!st->busy && st->buf == NULL)
		st->buf = malloc(st->cap);
	if (!st->busy && st->buf != NULL) {
		st->busy = true;
		buf = st->buf;
		*cap = st->cap;
	}
	pthread_mutex_unlock(&st->mu);
	return buf;
}

void cloud_stage_give(struct cloud_stage *st, uint8_t *buf)
{
	if (buf == NULL)
		return;
	pthread_mutex_lock(&st->mu);
	st->busy = false;
	pthread_mutex_unlock(&st->mu);
}

static void *presync_main(void *arg)
{
	struct cloud_presync *p = arg;
	p->rc = sys_fsync(p->fd) < 0 ? -errno : 0;
	if (p->rc == 0) /* clean now: dropped at once (cloud_stage.h says why) */
		(void)posix_fadvise(p->fd, 0, 0, POSIX_FADV_DONTNEED);
	return NULL;
}

void cloud_presync_start(struct cloud_presync *p, int fd)
{
	if (p->started)
		return;
	p->fd = fd;
	p->rc = 0;
	p->started = pthread_create(&p->thread, NULL, presync_main, p) == 0;
}

int cloud_presync_wait(struct cloud_presync *p)
{
	if (!p->started)
		return 0;
	pthread_join(p->thread, NULL);
	p->started = false;
	return p->rc;
}
