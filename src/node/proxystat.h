/*
 * proxystat.h — the proxy's counters (docs/proxy.md "Metrics"), kept in
 * the node layer so that /metrics (http.c) can print them without calling
 * up into src/proxy/. They live in struct node (node.proxy_stats), zeroed
 * with it, for the node's whole life.
 *
 * Every field is atomic: connection threads bump them without a lock.
 */
#ifndef LITEFS_PROXYSTAT_H
#define LITEFS_PROXYSTAT_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

/* Outcomes of a request, one counter each (the `outcome` label). */
enum proxystat_outcome {
	PROXYSTAT_LOCAL,       /* served by the local application */
	PROXYSTAT_PASSTHROUGH, /* matched proxy.passthrough */
	PROXYSTAT_FORWARDED,   /* sent to the primary's proxy */
	PROXYSTAT_REPLAYED,    /* the app asked for a replay; the primary answered */
	PROXYSTAT_FLY_REPLAY,  /* answered with a fly-replay header */
	PROXYSTAT_TIMED_OUT,   /* 504: the __txid position was not reached */
	PROXYSTAT_NO_PRIMARY,  /* 503: no primary within primary-redirect-timeout */
	PROXYSTAT_BAD_GATEWAY, /* 502: the application or the primary failed */
	PROXYSTAT_BAD_REQUEST, /* 4xx from the proxy itself (malformed, too large) */
	PROXYSTAT_HEALTH,      /* GET /litefs/health */
	PROXYSTAT_N_OUTCOMES
};

/* Upper bounds (ms) of the wait-time histogram's buckets; +Inf follows. */
#define PROXYSTAT_N_BUCKETS 9
extern const int64_t proxystat_bucket_ms[PROXYSTAT_N_BUCKETS];

struct proxystat {
	atomic_uint_fast64_t outcomes[PROXYSTAT_N_OUTCOMES];
	/* Requests that had to wait (for the __txid position, or for a
	 * primary): cumulative histogram buckets, count and sum. */
	atomic_uint_fast64_t wait_buckets[PROXYSTAT_N_BUCKETS + 1];
	atomic_uint_fast64_t wait_count;
	atomic_uint_fast64_t wait_sum_ms;
	atomic_uint_fast64_t upgrades;    /* WebSocket / Upgrade tunnels opened */
	atomic_uint_fast64_t open_conns;  /* client connections now open (gauge) */
};

void proxystat_outcome(struct proxystat *s, enum proxystat_outcome o);
/* Records one wait of wait_ms (only waits that blocked are recorded). */
void proxystat_wait(struct proxystat *s, int64_t wait_ms);
/* Prints the Prometheus families; s NULL (no proxy) prints nothing. */
void proxystat_metrics(const struct proxystat *s, FILE *f);

#endif
