/*
 * cloud_events.h — GET /events: server-sent events (text/event-stream) of
 * a cluster's positions for the dashboard (docs/cloud-api.md).
 *
 * Publishers (the API's handlers, after a push, restore, upload or delete
 * was stored) append a message to their cluster's ring of the last
 * EVENTS_RING messages; each stream keeps its own sequence number and
 * copies what it has not sent yet. A stream that falls more than the ring
 * behind (a stalled client) skips to the oldest kept message and is told
 * with a `lost` event, so a slow reader never holds a publisher.
 *
 * THREADS. base/httpd.c serves a streamed reply from the request's worker
 * thread and has no way to hand a connection back to the event loop
 * (httpd_take_socket() keeps the worker until the handler returns), so a
 * stream holds one worker for its life. That is why streams are bounded:
 * CLOUD_EVENTS_PER_CLUSTER per cluster and CLOUD_EVENTS_TOTAL in all
 * (well below the API's workers; the reserved workers stay free for the
 * nodes). An idle stream wakes every 250 ms to see whether the service
 * stops or the peer hung up, and sends a comment every 15 s
 * (CLOUD_EVENTS_HEARTBEAT_MS) so proxies keep it open.
 *
 * Thread-safe; one mutex (a leaf lock) guards every ring and count.
 */
#ifndef LITEFS_CLOUD_EVENTS_H
#define LITEFS_CLOUD_EVENTS_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#define CLOUD_EVENTS_PER_CLUSTER 8
#define CLOUD_EVENTS_TOTAL 32
#define CLOUD_EVENTS_HEARTBEAT_MS 15000

struct cloud_events;
struct cloud_events_stream;

/* 0 with *out (caller frees with cloud_events_close(), after every stream
 * ended) or ERR_NOMEM. */
int cloud_events_open(struct cloud_events **out);
void cloud_events_close(struct cloud_events *ev); /* NULL is a no-op */

/* Sends event `type` with data (taken: json_decref'd) to cluster's
 * streams. Never blocks on a stream. */
void cloud_events_publish(struct cloud_events *ev, const char *cluster, const char *type, json_t *data);

/* A new stream of cluster's events from now on. stop (borrowed, may be
 * NULL) ends it when true; sock is the client's socket, watched for a
 * hang-up (-1: not watched). 0 with *out, -EBUSY when the cluster or the
 * service has its maximum of streams, ERR_NOMEM. */
int cloud_events_stream_open(struct cloud_events *ev, const char *cluster, const atomic_bool *stop, int sock,
			     struct cloud_events_stream **out);
/* An httpd_reader (base/httpd.h) over a stream: blocks until there is
 * something to send, then fills buf with whole messages. */
ssize_t cloud_events_stream_read(void *stream, uint64_t pos, char *buf, size_t max);
/* Frees a stream (the reply's free callback). */
void cloud_events_stream_free(void *stream);

#endif
