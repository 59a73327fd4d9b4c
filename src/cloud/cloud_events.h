/*
 * cloud_events.h — GET /events: server-sent events (text/event-stream) of
 * a cluster's positions for the dashboard (docs/cloud-api.md).
 *
 * Publishers (the API's handlers, after a push, restore, upload or delete
 * was stored) append a message to their cluster's ring of the last
 * EVENTS_RING messages; each stream keeps its own sequence number and is
 * sent what it has not had yet. A stream that falls more than the ring
 * behind (a stalled client) skips to the oldest kept message and is told
 * with a `lost` event, so a slow reader never holds a publisher.
 *
 * THREADS. A stream does not hold one of the API's worker threads: the
 * handler takes the connection over (httpd_take_socket()) and hands it to
 * this module, whose one thread writes every stream (non-blocking sends,
 * poll() for room, for hang-ups and for the wake-up of a publish), sends
 * a comment every CLOUD_EVENTS_HEARTBEAT_MS of silence so that proxies
 * keep the connection, and closes a stream whose peer went or took no
 * byte for a minute while events waited for it. The server no
 * longer counts a taken connection, so this module bounds them itself:
 * CLOUD_EVENTS_PER_CLUSTER per cluster, CLOUD_EVENTS_TOTAL in all.
 *
 * The reply is written here as HTTP/1.1 200 with Connection: close and no
 * length: the body ends when the connection does.
 *
 * Thread-safe. One mutex (a leaf lock) guards the rings, the counts and
 * the list of streams; a stream's send buffer is the thread's alone.
 */
#ifndef LITEFS_CLOUD_EVENTS_H
#define LITEFS_CLOUD_EVENTS_H

#include <jansson.h>

#define CLOUD_EVENTS_PER_CLUSTER 8
#define CLOUD_EVENTS_TOTAL 64
#define CLOUD_EVENTS_HEARTBEAT_MS 15000

struct cloud_events;
struct cloud_events_stream;

/* Starts the writer thread. 0 with *out (caller frees with
 * cloud_events_close()), ERR_NOMEM or -errno. */
int cloud_events_open(struct cloud_events **out);
/* Stops the thread and closes every stream. NULL is a no-op. */
void cloud_events_close(struct cloud_events *ev);

/* Sends event `type` with data (taken: json_decref'd) to cluster's
 * streams. Never blocks on a stream. */
void cloud_events_publish(struct cloud_events *ev, const char *cluster, const char *type, json_t *data);

/* Reserves a stream of cluster (before the connection is taken, so that
 * a refusal can still be an ordinary reply). 0 with *out, -EBUSY when the
 * cluster or the service has its maximum of streams, ERR_NOMEM. */
int cloud_events_reserve(struct cloud_events *ev, const char *cluster, struct cloud_events_stream **out);
/* Starts a reserved stream on sock, a connection taken from the server
 * whose request was read: takes ownership of sock (closed when the
 * stream ends). Events published from now on are sent. */
void cloud_events_attach(struct cloud_events *ev, struct cloud_events_stream *s, int sock);
/* Gives back a reservation that was not attached. */
void cloud_events_unreserve(struct cloud_events *ev, struct cloud_events_stream *s);

#endif
