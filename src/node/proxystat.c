/*
 * proxystat.c — the proxy's counters and their Prometheus text
 * (proxystat.h).
 */
#include <inttypes.h>

#include "node/proxystat.h"

const int64_t proxystat_bucket_ms[PROXYSTAT_N_BUCKETS] = { 1, 5, 10, 50, 100, 500, 1000, 5000, 30000 };

static const char *const outcome_names[PROXYSTAT_N_OUTCOMES] = {
	[PROXYSTAT_LOCAL] = "local",
	[PROXYSTAT_PASSTHROUGH] = "passthrough",
	[PROXYSTAT_FORWARDED] = "forwarded",
	[PROXYSTAT_REPLAYED] = "replayed",
	[PROXYSTAT_FLY_REPLAY] = "fly_replay",
	[PROXYSTAT_TIMED_OUT] = "timed_out",
	[PROXYSTAT_NO_PRIMARY] = "no_primary",
	[PROXYSTAT_BAD_GATEWAY] = "bad_gateway",
	[PROXYSTAT_BAD_REQUEST] = "bad_request",
	[PROXYSTAT_HEALTH] = "health",
};

void proxystat_outcome(struct proxystat *s, enum proxystat_outcome o)
{
	if (s && o < PROXYSTAT_N_OUTCOMES)
		atomic_fetch_add(&s->outcomes[o], 1);
}

void proxystat_wait(struct proxystat *s, int64_t wait_ms)
{
	if (!s)
		return;
	if (wait_ms < 0)
		wait_ms = 0;
	int b = 0;
	while (b < PROXYSTAT_N_BUCKETS && wait_ms > proxystat_bucket_ms[b])
		b++;
	atomic_fetch_add(&s->wait_buckets[b], 1);
	atomic_fetch_add(&s->wait_count, 1);
	atomic_fetch_add(&s->wait_sum_ms, (uint64_t)wait_ms);
}

void proxystat_metrics(const struct proxystat *s, FILE *f)
{
	if (!s)
		return;
	fputs("# HELP litefs_proxy_requests_total Requests the proxy answered, by outcome.\n"
	      "# TYPE litefs_proxy_requests_total counter\n",
	      f);
	for (int i = 0; i < PROXYSTAT_N_OUTCOMES; i++)
		fprintf(f, "litefs_proxy_requests_total{outcome=\"%s\"} %" PRIu64 "\n", outcome_names[i],
			(uint64_t)atomic_load(&s->outcomes[i]));
	fputs("# HELP litefs_proxy_wait_seconds Time requests were held (for the __txid position or a primary).\n"
	      "# TYPE litefs_proxy_wait_seconds histogram\n",
	      f);
	uint64_t cum = 0;
	for (int b = 0; b < PROXYSTAT_N_BUCKETS; b++) {
		cum += atomic_load(&s->wait_buckets[b]);
		fprintf(f, "litefs_proxy_wait_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
			(double)proxystat_bucket_ms[b] / 1000.0, cum);
	}
	cum += atomic_load(&s->wait_buckets[PROXYSTAT_N_BUCKETS]);
	fprintf(f, "litefs_proxy_wait_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
	fprintf(f, "litefs_proxy_wait_seconds_sum %.3f\n", (double)atomic_load(&s->wait_sum_ms) / 1000.0);
	fprintf(f, "litefs_proxy_wait_seconds_count %" PRIu64 "\n", (uint64_t)atomic_load(&s->wait_count));
	fputs("# HELP litefs_proxy_upgrades_total Upgrade (WebSocket) tunnels opened.\n"
	      "# TYPE litefs_proxy_upgrades_total counter\n",
	      f);
	fprintf(f, "litefs_proxy_upgrades_total %" PRIu64 "\n", (uint64_t)atomic_load(&s->upgrades));
	fputs("# HELP litefs_proxy_connections Client connections open now.\n"
	      "# TYPE litefs_proxy_connections gauge\n",
	      f);
	fprintf(f, "litefs_proxy_connections %" PRIu64 "\n", (uint64_t)atomic_load(&s->open_conns));
}
