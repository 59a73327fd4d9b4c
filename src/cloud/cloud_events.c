/*
 * cloud_events.c — see cloud_events.h for the design (rings, threads,
 * bounds).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/httpd.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_events.h"

/* Messages kept per cluster for streams that are behind. */
#define EVENTS_RING 256
/* A stream checks for a stop or a hang-up this often while idle. */
#define SLICE_MS 250

static const char hello[] = "retry: 2000\n: connected\n\n";
static const char heartbeat[] = ": heartbeat\n\n";
static const char lost[] = "event: lost\ndata: {}\n\n";

struct ring {
	struct ring *next;
	char cluster[CLOUD_CLUSTER_MAX + 1];
	uint64_t next_seq;          /* sequence number of the next message */
	char *msgs[EVENTS_RING];    /* message seq is msgs[seq % EVENTS_RING] */
	unsigned n_streams;
};

struct cloud_events {
	pthread_mutex_t mu;   /* guards everything below and every ring; leaf */
	pthread_cond_t cond;  /* a message was published */
	struct ring *rings;
	unsigned n_streams;
};

struct cloud_events_stream {
	struct cloud_events *ev;
	struct ring *r;
	uint64_t seq;               /* next message to send */
	const atomic_bool *stop;
	int sock;
	int64_t last_sent_ms;       /* monotonic */
	bool hello_sent, lost_pending;
};

int cloud_events_open(struct cloud_events **out)
{
	struct cloud_events *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return ERR_NOMEM;
	pthread_mutex_init(&ev->mu, NULL);
	pthread_cond_init(&ev->cond, NULL);
	*out = ev;
	return 0;
}

void cloud_events_close(struct cloud_events *ev)
{
	if (!ev)
		return;
	for (struct ring *r = ev->rings, *next; r; r = next) {
		next = r->next;
		for (size_t i = 0; i < EVENTS_RING; i++)
			free(r->msgs[i]);
		free(r);
	}
	pthread_cond_destroy(&ev->cond);
	pthread_mutex_destroy(&ev->mu);
	free(ev);
}

/* The ring of cluster, created if create. With ev->mu held. */
static struct ring *ring_of(struct cloud_events *ev, const char *cluster, bool create)
{
	struct ring *r;
	for (r = ev->rings; r; r = r->next)
		if (!strcmp(r->cluster, cluster))
			return r;
	if (!create || strlen(cluster) > CLOUD_CLUSTER_MAX || (r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	strcpy(r->cluster, cluster);
	r->next = ev->rings;
	ev->rings = r;
	return r;
}

void cloud_events_publish(struct cloud_events *ev, const char *cluster, const char *type, json_t *data)
{
	char *js = data ? json_dumps(data, JSON_COMPACT) : NULL;
	json_decref(data);
	if (!js)
		return;
	char *msg = NULL;
	if (asprintf(&msg, "event: %s\ndata: %s\n\n", type, js) < 0)
		msg = NULL;
	free(js);
	if (!msg)
		return;
	pthread_mutex_lock(&ev->mu);
	/* A cluster nobody watches gets no ring: nothing is kept for it. */
	struct ring *r = ring_of(ev, cluster, false);
	if (r) {
		char **slot = &r->msgs[r->next_seq % EVENTS_RING];
		free(*slot);
		*slot = msg;
		msg = NULL;
		r->next_seq++;
		pthread_cond_broadcast(&ev->cond);
	}
	pthread_mutex_unlock(&ev->mu);
	free(msg);
}

int cloud_events_stream_open(struct cloud_events *ev, const char *cluster, const atomic_bool *stop, int sock,
			     struct cloud_events_stream **out)
{
	struct cloud_events_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	pthread_mutex_lock(&ev->mu);
	struct ring *r = ring_of(ev, cluster, true);
	int rc = !r ? ERR_NOMEM
		 : r->n_streams >= CLOUD_EVENTS_PER_CLUSTER || ev->n_streams >= CLOUD_EVENTS_TOTAL ? -EBUSY : 0;
	if (rc == 0) {
		r->n_streams++;
		ev->n_streams++;
		*s = (struct cloud_events_stream){ .ev = ev, .r = r, .seq = r->next_seq, .stop = stop, .sock = sock,
						   .last_sent_ms = clock_mono_ms() };
	}
	pthread_mutex_unlock(&ev->mu);
	if (rc < 0) {
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void cloud_events_stream_free(void *stream)
{
	struct cloud_events_stream *s = stream;
	if (!s)
		return;
	pthread_mutex_lock(&s->ev->mu);
	s->r->n_streams--;
	s->ev->n_streams--;
	pthread_mutex_unlock(&s->ev->mu);
	free(s);
}

/* Appends src to buf (len used of max) if it fits whole. */
static bool put(char *buf, size_t *len, size_t max, const char *src, size_t n)
{
	if (n > max - *len)
		return false;
	memcpy(buf + *len, src, n);
	*len += n;
	return true;
}

/* Copies the messages the stream has not sent that fit into buf. With
 * ev->mu held. */
static size_t take_messages(struct cloud_events_stream *s, char *buf, size_t max)
{
	struct ring *r = s->r;
	size_t len = 0;
	if (r->next_seq - s->seq > EVENTS_RING) {
		s->seq = r->next_seq - EVENTS_RING;
		s->lost_pending = true;
	}
	if (s->lost_pending && put(buf, &len, max, lost, sizeof(lost) - 1))
		s->lost_pending = false;
	while (!s->lost_pending && s->seq < r->next_seq) {
		const char *m = r->msgs[s->seq % EVENTS_RING];
		if (!put(buf, &len, max, m, strlen(m)))
			break;
		s->seq++;
	}
	return len;
}

ssize_t cloud_events_stream_read(void *stream, uint64_t pos, char *buf, size_t max)
{
	struct cloud_events_stream *s = stream;
	size_t len = 0;
	if (!s->hello_sent) {
		s->hello_sent = true;
		put(buf, &len, max, hello, sizeof(hello) - 1);
		return (ssize_t)len;
	}
	pthread_mutex_lock(&s->ev->mu);
	for (;;) {
		len = take_messages(s, buf, max);
		if (len > 0)
			break;
		if (s->stop && atomic_load(s->stop))
			break;
		if (clock_mono_ms() - s->last_sent_ms >= CLOUD_EVENTS_HEARTBEAT_MS) {
			put(buf, &len, max, heartbeat, sizeof(heartbeat) - 1);
			break;
		}
		if (s->sock >= 0 && httpd_peer_gone(s->sock)) {
			pthread_mutex_unlock(&s->ev->mu);
			return HTTPD_END_WITH_ERROR;
		}
		struct timespec until = clock_deadline(SLICE_MS);
		pthread_cond_timedwait(&s->ev->cond, &s->ev->mu, &until);
	}
	pthread_mutex_unlock(&s->ev->mu);
	if (len == 0)
		return HTTPD_END_OF_STREAM; /* the service stops */
	s->last_sent_ms = clock_mono_ms();
	return (ssize_t)len;
}
