/*
 * cloud_events.c — see cloud_events.h for the design (rings, the writer
 * thread, bounds).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_events.h"

/* Messages kept per cluster for streams that are behind. */
#define EVENTS_RING 256
/* A stream's send buffer: whole messages, a few at a time. */
#define SEND_BUF 16384
/* The thread wakes at least this often (heartbeats, stop). */
#define POLL_MAX_MS 1000
/* A client that takes no byte for this long while events wait for it is
 * dropped: it would hold its place forever. */
#define STUCK_MS 60000

static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
			   "X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 2000\n: connected\n\n";
static const char heartbeat[] = ": heartbeat\n\n";
static const char lost[] = "event: lost\ndata: {}\n\n";

struct ring {
	struct ring *next;
	char cluster[CLOUD_CLUSTER_MAX + 1];
	uint64_t next_seq;       /* sequence number of the next message */
	char *msgs[EVENTS_RING]; /* message seq is msgs[seq % EVENTS_RING] */
	unsigned n_streams;      /* reserved or attached */
};

struct cloud_events_stream {
	struct cloud_events_stream *next; /* ev->streams, once attached */
	struct ring *r;
	uint64_t seq;                     /* next message to send */
	int fd;
	bool lost_pending, dead;
	int64_t last_sent_ms;             /* monotonic */
	int64_t stuck_since_ms;           /* monotonic; 0: the socket takes bytes */
	char buf[SEND_BUF];               /* the thread's: buf[off, len) to send */
	size_t off, len;
};

struct cloud_events {
	pthread_mutex_t mu; /* guards rings, streams (the list), n_streams, stop; leaf */
	struct ring *rings;
	struct cloud_events_stream *streams;
	unsigned n_streams; /* reserved or attached */
	bool stop;
	int wake_fd;        /* eventfd: a publish, an attach, stop */
	pthread_t thread;
};

static void wake(struct cloud_events *ev)
{
	uint64_t one = 1;
	ssize_t n = write(ev->wake_fd, &one, sizeof(one));
	(void)n; /* a full counter wakes the thread anyway */
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

/* Refills an empty send buffer with the messages s has not had, or a
 * heartbeat after a silence. With ev->mu held. */
static void refill(struct cloud_events_stream *s, int64_t now)
{
	struct ring *r = s->r;
	s->off = s->len = 0;
	if (r->next_seq - s->seq > EVENTS_RING) {
		s->seq = r->next_seq - EVENTS_RING;
		s->lost_pending = true;
	}
	if (s->lost_pending && put(s->buf, &s->len, SEND_BUF, lost, sizeof(lost) - 1))
		s->lost_pending = false;
	while (!s->lost_pending && s->seq < r->next_seq) {
		const char *m = r->msgs[s->seq % EVENTS_RING];
		if (!put(s->buf, &s->len, SEND_BUF, m, strlen(m)))
			break;
		s->seq++;
	}
	if (s->len == 0 && now - s->last_sent_ms >= CLOUD_EVENTS_HEARTBEAT_MS)
		put(s->buf, &s->len, SEND_BUF, heartbeat, sizeof(heartbeat) - 1);
}

/* Sends what s has pending, as far as the socket takes it now. */
static void flush(struct cloud_events_stream *s, int64_t now)
{
	while (s->off < s->len) {
		ssize_t n = send(s->fd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			s->off += (size_t)n;
			s->last_sent_ms = now;
			s->stuck_since_ms = 0;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (s->stuck_since_ms == 0)
				s->stuck_since_ms = now;
			else if (now - s->stuck_since_ms >= STUCK_MS)
				s->dead = true;
			return;
		}
		s->dead = true;
		return;
	}
}

/* The peer sends nothing after its request: data is discarded, an end
 * or an error ends the stream. */
static void check_peer(struct cloud_events_stream *s, short revents)
{
	if (revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) {
		s->dead = true;
		return;
	}
	if (revents & POLLIN) {
		char junk[1024];
		ssize_t n = recv(s->fd, junk, sizeof(junk), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			s->dead = true;
	}
}

static void stream_end(struct cloud_events *ev, struct cloud_events_stream *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->r->n_streams--;
	ev->n_streams--;
	free(s);
}

static void *events_main(void *arg)
{
	struct cloud_events *ev = arg;
	struct pollfd pfds[CLOUD_EVENTS_TOTAL + 1];
	struct cloud_events_stream *ss[CLOUD_EVENTS_TOTAL];
	for (;;) {
		int64_t now = clock_mono_ms();
		int timeout = POLL_MAX_MS;
		size_t n = 0;
		pthread_mutex_lock(&ev->mu);
		if (ev->stop) {
			pthread_mutex_unlock(&ev->mu);
			break;
		}
		for (struct cloud_events_stream *s = ev->streams; s && n < CLOUD_EVENTS_TOTAL; s = s->next) {
			if (s->off == s->len)
				refill(s, now);
			ss[n++] = s;
			int64_t left = s->last_sent_ms + CLOUD_EVENTS_HEARTBEAT_MS - now;
			if (left < timeout)
				timeout = left < 0 ? 0 : (int)left;
		}
		pthread_mutex_unlock(&ev->mu);
		for (size_t i = 0; i < n; i++) {
			flush(ss[i], now);
			pfds[i] = (struct pollfd){ .fd = ss[i]->fd,
						   .events = POLLIN | POLLRDHUP | (ss[i]->off < ss[i]->len ? POLLOUT : 0) };
		}
		pfds[n] = (struct pollfd){ .fd = ev->wake_fd, .events = POLLIN };
		if (poll(pfds, n + 1, timeout) > 0) {
			uint64_t v;
			if ((pfds[n].revents & POLLIN) && read(ev->wake_fd, &v, sizeof(v)) < 0)
				v = 0;
			for (size_t i = 0; i < n; i++)
				check_peer(ss[i], pfds[i].revents);
		}
		pthread_mutex_lock(&ev->mu);
		for (struct cloud_events_stream **p = &ev->streams; *p;) {
			struct cloud_events_stream *s = *p;
			if (s->dead) {
				*p = s->next;
				stream_end(ev, s);
			} else {
				p = &s->next;
			}
		}
		pthread_mutex_unlock(&ev->mu);
	}
	return NULL;
}

int cloud_events_open(struct cloud_events **out)
{
	struct cloud_events *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return ERR_NOMEM;
	pthread_mutex_init(&ev->mu, NULL);
	ev->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int rc = ev->wake_fd < 0 ? -errno : -pthread_create(&ev->thread, NULL, events_main, ev);
	if (rc < 0) {
		if (ev->wake_fd >= 0)
			close(ev->wake_fd);
		pthread_mutex_destroy(&ev->mu);
		free(ev);
		return rc;
	}
	*out = ev;
	return 0;
}

void cloud_events_close(struct cloud_events *ev)
{
	if (!ev)
		return;
	pthread_mutex_lock(&ev->mu);
	ev->stop = true;
	pthread_mutex_unlock(&ev->mu);
	wake(ev);
	pthread_join(ev->thread, NULL);
	while (ev->streams) {
		struct cloud_events_stream *s = ev->streams;
		ev->streams = s->next;
		stream_end(ev, s);
	}
	for (struct ring *r = ev->rings, *next; r; r = next) {
		next = r->next;
		for (size_t i = 0; i < EVENTS_RING; i++)
			free(r->msgs[i]);
		free(r);
	}
	close(ev->wake_fd);
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
	}
	pthread_mutex_unlock(&ev->mu);
	free(msg);
	if (r)
		wake(ev);
}

int cloud_events_reserve(struct cloud_events *ev, const char *cluster, struct cloud_events_stream **out)
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
		s->r = r;
		s->fd = -1;
	}
	pthread_mutex_unlock(&ev->mu);
	if (rc < 0) {
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void cloud_events_unreserve(struct cloud_events *ev, struct cloud_events_stream *s)
{
	pthread_mutex_lock(&ev->mu);
	stream_end(ev, s);
	pthread_mutex_unlock(&ev->mu);
}

void cloud_events_attach(struct cloud_events *ev, struct cloud_events_stream *s, int sock)
{
	s->fd = sock;
	s->len = sizeof(head) - 1;
	memcpy(s->buf, head, s->len);
	pthread_mutex_lock(&ev->mu);
	s->seq = s->r->next_seq;
	s->last_sent_ms = clock_mono_ms();
	s->next = ev->streams;
	ev->streams = s;
	pthread_mutex_unlock(&ev->mu);
	wake(ev);
}
