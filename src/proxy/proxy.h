/*
 * proxy.h — the HTTP proxy in front of the application (proxy.addr →
 * proxy.target) with read-your-writes, write forwarding to the primary's
 * proxy, replay on read-only, and Upgrade tunnels. Design, semantics and
 * measurements: docs/proxy.md.
 *
 * Layering: src/proxy/ sits above src/node/ (it reads the node's role,
 * the primary's proxy URL and a database's position) and below src/cmd/
 * (the mount starts and stops it).
 */
#ifndef LITEFS_PROXY_H
#define LITEFS_PROXY_H

#include <stddef.h>

struct config;
struct store;
struct proxy;

/* The URL this node's proxy advertises to the others (lease value, stream
 * handshake): proxy.advertise-url if set, else http://HOST:PORT with PORT
 * from proxy.addr and HOST from lease.advertise-url, else proxy.addr's
 * host, else hostname. "" when the proxy is off (no proxy.target). */
void proxy_advertise_url(const struct config *cfg, const char *hostname, char *buf, size_t len);

/* Listens on cfg->proxy.addr and serves until proxy_stop(). cfg is
 * borrowed and must outlive the proxy; so must st. The counters are
 * st->node.proxy_stats (/metrics prints them once node.proxy_on is set).
 * Returns 0, ERR_INVAL (an address that does not resolve), ERR_NOMEM or
 * -errno (bind, listen, thread). */
int proxy_start(struct store *st, const struct config *cfg, const char *hostname, struct proxy **out);

/* Stops accepting, ends every connection (open tunnels included), waits
 * for their threads (at most 3 s) and frees the proxy. NULL is a no-op. */
void proxy_stop(struct proxy *px);

#endif
