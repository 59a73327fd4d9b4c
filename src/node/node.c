/*
 * node.c — the node's options, role, change feed and flags (node.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "node/node.h"

int node_init(struct node *n, const struct node_opts *opts)
{
	memset(n, 0, sizeof(*n));
	if ((n->data_dir = strdup(opts->data_dir)) == NULL)
		return ERR_NOMEM;
	n->dbs_fd = -1;
	n->compress = opts->compress;
	n->retention_ms = opts->retention_ms;
	n->node_id = opts->node_id;
	atomic_init(&n->is_primary, true);
	atomic_init(&n->write_deadline_ms, INT64_MAX);
	atomic_init(&n->fenced_writes, 0);
	atomic_init(&n->cancel_applies, false);
	atomic_init(&n->resync, false);
	atomic_init(&n->proxy_on, false);
	pthread_mutex_init(&n->mu, NULL);
	pthread_mutex_init(&n->change_mu, NULL);
	pthread_cond_init(&n->change_cond, NULL);
	return 0;
}

void node_destroy(struct node *n)
{
	if (n->data_dir == NULL)
		return;
	pthread_cond_destroy(&n->change_cond);
	pthread_mutex_destroy(&n->change_mu);
	pthread_mutex_destroy(&n->mu);
	free(n->data_dir);
	n->data_dir = NULL;
}

/* ---- Role ----------------------------------------------------------------- */

bool node_is_primary(struct node *n)
{
	return atomic_load(&n->is_primary);
}

bool node_may_write(struct node *n)
{
	if (!atomic_load_explicit(&n->is_primary, memory_order_acquire))
		return false;
	int64_t deadline = atomic_load_explicit(&n->write_deadline_ms, memory_order_acquire);
	return deadline == INT64_MAX || clock_mono_ms() < deadline;
}

void node_set_write_deadline(struct node *n, int64_t mono_ms)
{
	atomic_store(&n->write_deadline_ms, mono_ms);
}

void node_set_role(struct node *n, bool primary, const char *primary_host)
{
	pthread_mutex_lock(&n->mu);
	atomic_store(&n->is_primary, primary);
	if (primary || !primary_host || strcmp(primary_host, n->primary_host) != 0)
		n->primary_proxy_url[0] = '\0';
	snprintf(n->primary_host, sizeof(n->primary_host), "%s", primary || !primary_host ? "" : primary_host);
	if (n->caught_up_ms == 0)
		n->caught_up_ms = clock_wall_ms();
	pthread_mutex_unlock(&n->mu);
	node_notify_change(n);
}

void node_primary_host(struct node *n, char *buf, size_t len)
{
	pthread_mutex_lock(&n->mu);
	snprintf(buf, len, "%s", atomic_load(&n->is_primary) ? "" : n->primary_host);
	pthread_mutex_unlock(&n->mu);
}

void node_set_primary_proxy(struct node *n, const char *url)
{
	pthread_mutex_lock(&n->mu);
	snprintf(n->primary_proxy_url, sizeof(n->primary_proxy_url), "%s", url ? url : "");
	pthread_mutex_unlock(&n->mu);
	node_notify_change(n);
}

void node_primary_proxy(struct node *n, char *buf, size_t len)
{
	pthread_mutex_lock(&n->mu);
	bool known = !atomic_load(&n->is_primary) && n->primary_host[0];
	snprintf(buf, len, "%s", known ? n->primary_proxy_url : "");
	pthread_mutex_unlock(&n->mu);
}

void node_set_caught_up(struct node *n, int64_t now_ms)
{
	pthread_mutex_lock(&n->mu);
	n->caught_up_ms = now_ms;
	pthread_mutex_unlock(&n->mu);
}

int64_t node_lag_ms(struct node *n)
{
	pthread_mutex_lock(&n->mu);
	int64_t lag = 0;
	if (!atomic_load(&n->is_primary) && n->caught_up_ms > 0) {
		lag = clock_wall_ms() - n->caught_up_ms;
		if (lag < 0)
			lag = 0;
	}
	pthread_mutex_unlock(&n->mu);
	return lag;
}

/* ---- Change feed ---------------------------------------------------------- */

uint64_t node_change_seq(struct node *n)
{
	pthread_mutex_lock(&n->change_mu);
	uint64_t seq = n->change_seq;
	pthread_mutex_unlock(&n->change_mu);
	return seq;
}

void node_notify_change(struct node *n)
{
	pthread_mutex_lock(&n->change_mu);
	n->change_seq++;
	pthread_cond_broadcast(&n->change_cond);
	pthread_mutex_unlock(&n->change_mu);
}

void node_stop_changes(struct node *n)
{
	pthread_mutex_lock(&n->change_mu);
	n->change_stopping = true;
	pthread_cond_broadcast(&n->change_cond);
	pthread_mutex_unlock(&n->change_mu);
}

uint64_t node_wait_change(struct node *n, uint64_t seen, int timeout_ms)
{
	struct timespec until = clock_deadline(timeout_ms);
	pthread_mutex_lock(&n->change_mu);
	while (n->change_seq == seen && !n->change_stopping) {
		if (pthread_cond_timedwait(&n->change_cond, &n->change_mu, &until) != 0)
			break;
	}
	uint64_t seq = n->change_seq;
	pthread_mutex_unlock(&n->change_mu);
	return seq;
}

/* ---- Flags ---------------------------------------------------------------- */

void node_request_resync(struct node *n)
{
	atomic_store(&n->resync, true);
}

bool node_take_resync(struct node *n)
{
	return atomic_exchange(&n->resync, false);
}

void node_cancel_applies(struct node *n)
{
	atomic_store(&n->cancel_applies, true);
}

bool node_applies_cancelled(struct node *n)
{
	return atomic_load(&n->cancel_applies);
}
