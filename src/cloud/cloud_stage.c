/*
 * cloud_stage.c — the kept staging buffer and the background store of
 * large uploads (cloud_stage.h says why).
 */
#include <stdlib.h>

#include "base/err.h"
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

static void *bg_main(void *arg)
{
	struct cloud_bg *b = arg;
	b->rc = b->fn(b->arg);
	return NULL;
}

bool cloud_bg_start(struct cloud_bg *b, int (*fn)(void *arg), void *arg)
{
	if (b->started)
		return false;
	b->fn = fn;
	b->arg = arg;
	b->rc = 0;
	b->started = pthread_create(&b->thread, NULL, bg_main, b) == 0;
	return b->started;
}

int cloud_bg_wait(struct cloud_bg *b)
{
	if (!b->started)
		return 0;
	pthread_join(b->thread, NULL);
	b->started = false;
	return b->rc;
}
