/*
 * cloud_forward.h — the HTTP server of a standby instance: every request
 * goes on to the bucket's writer (cloud_owner.h), whole, and its reply
 * comes back whole, so that clients (our node, LiteFS 0.5.14's client,
 * the CLI, browsers) may talk to any instance and never see a redirect.
 *
 * A request's body is spooled into an unnamed temporary file (bounded by
 * max_body_bytes) before it is sent on, and so is the reply before it is
 * returned: a slow writer never holds a socket half-written, and an
 * upload that did not reach the writer whole is never half-forwarded.
 * Headers pass both ways except the hop-by-hop ones (Connection,
 * Keep-Alive, Transfer-Encoding, Content-Length, Expect, Host). The one
 * exception is GET /events (a never-ending stream): the client's socket
 * is taken and a thread relays the writer's reply to it byte for byte
 * (the request sent on with Connection: close) until either side ends or
 * the standby stops. GET /healthz is answered here (role "standby" and
 * the writer).
 *
 * A request that was forwarded already (Litefs-Cloud-Forwarded-By) is not
 * forwarded again: 503 (two instances never bounce a request between
 * them while the writer changes).
 *
 * With no writer known, or the writer unreachable, a request gets 503
 * EUNAVAILABLE ("retry"): clients retry, and a standby takes the bucket
 * within the lease TTL.
 *
 * Threads: each request runs on its own server worker (base/httpd.h);
 * cloud_forward_set_writer() may be called from any thread.
 */
#ifndef LITEFS_CLOUD_FORWARD_H
#define LITEFS_CLOUD_FORWARD_H

#include <stdint.h>

struct cloud_forward_opts {
	const char *addr;            /* listen address, as for the API */
	const char *tmp_dir;         /* for the spools (unnamed files) */
	uint64_t max_body_bytes;     /* largest request body passed on */
	const char *instance_id;     /* sent as Litefs-Cloud-Forwarded-By */
};

struct cloud_forward;

/* Listens and serves (every request 503 until a writer is set). Caller
 * stops it with cloud_forward_stop(). 0, ERR_NOMEM, ERR_INVAL or -errno. */
int cloud_forward_start(const struct cloud_forward_opts *opts, struct cloud_forward **out);
/* The writer's base URL ("http://host:port"; copied), NULL for none. */
void cloud_forward_set_writer(struct cloud_forward *f, const char *url);
unsigned cloud_forward_port(const struct cloud_forward *f);
/* Stops accepting, lets requests in flight finish (bounded), frees. NULL
 * is a no-op. */
void cloud_forward_stop(struct cloud_forward *f);

#endif
