/*
 * cloud_watch.c — see cloud_watch.h. A small array searched linearly:
 * there are few clusters per service, and each entry is touched only by a
 * restore, a /pos reply or a waiter's wake-up.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "cloud/cloud_auth.h"
#include "cloud/cloud_watch.h"

#define WATCH_SLICE_MS 50

struct watch_entry {
	char cluster[CLOUD_CLUSTER_NAME_MAX + 1];
	uint64_t gen;
};

struct cloud_watch {
	pthread_mutex_t mu;      /* guards everything below; leaf lock */
	pthread_cond_t cond;     /* some generation moved */
	uint64_t base;           /* the generation of a cluster without an entry */
	struct watch_entry *entries;
	size_t n, cap;
};

int cloud_watch_open(struct cloud_watch **out)
{
	struct cloud_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return ERR_NOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->base = (uint64_t)clock_wall_ms() << 16;
	*out = w;
	return 0;
}

void cloud_watch_close(struct cloud_watch *w)
{
	if (!w)
		return;
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cond);
	free(w->entries);
	free(w);
}

/* With w->mu held. */
static struct watch_entry *find(struct cloud_watch *w, const char *cluster)
{
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->entries[i].cluster, cluster))
			return &w->entries[i];
	return NULL;
}

static uint64_t gen_locked(struct cloud_watch *w, const char *cluster)
{
	struct watch_entry *e = find(w, cluster);
	return e ? e->gen : w->base;
}

uint64_t cloud_watch_gen(struct cloud_watch *w, const char *cluster)
{
	pthread_mutex_lock(&w->mu);
	uint64_t g = gen_locked(w, cluster);
	pthread_mutex_unlock(&w->mu);
	return g;
}

void cloud_watch_bump(struct cloud_watch *w, const char *cluster)
{
	pthread_mutex_lock(&w->mu);
	struct watch_entry *e = find(w, cluster);
	if (!e && w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 8;
		struct watch_entry *p = realloc(w->entries, cap * sizeof(*p));
		if (p) {
			w->entries = p;
			w->cap = cap;
		}
	}
	if (!e && w->n < w->cap && strlen(cluster) <= CLOUD_CLUSTER_NAME_MAX) {
		e = &w->entries[w->n++];
		strcpy(e->cluster, cluster);
		e->gen = w->base;
	}
	if (e) {
		e->gen++;
	} else {
		/* Every cluster without an entry moves. */
		w->base++;
	}
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

uint64_t cloud_watch_wait(struct cloud_watch *w, const char *cluster, uint64_t gen, int64_t timeout_ms,
			  const atomic_bool *stop)
{
	int64_t end = clock_mono_ms() + timeout_ms;
	pthread_mutex_lock(&w->mu);
	uint64_t g = gen_locked(w, cluster);
	while (g == gen && !atomic_load(stop)) {
		int64_t left = end - clock_mono_ms();
		if (left <= 0)
			break;
		struct timespec until = clock_deadline(left < WATCH_SLICE_MS ? left : WATCH_SLICE_MS);
		pthread_cond_timedwait(&w->cond, &w->mu, &until);
		g = gen_locked(w, cluster);
	}
	pthread_mutex_unlock(&w->mu);
	return g;
}
