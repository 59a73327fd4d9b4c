/*
 * cloud_owner.c — the writer lease of a bucket (design in cloud_owner.h).
 *
 * STATES of an instance, and the function behind each transition:
 *
 *   standby --cloud_owner_campaign() wins the key--> writer
 *   writer  --keep-alive says expired, or deadline passed--> lost (lost_fn)
 *   writer  --cloud_owner_close()--> gone (lease revoked: key deleted)
 *
 * The key's value is JSON: {"url": advertise_url, "instance": id,
 * "started_ms": when the instance started}. A standby reads it to know where
 * to forward.
 *
 * INVARIANT F1: deadline_ms (monotonic) is only ever set from the send
 * time of a request etcd answered with a live lease, plus TTL − TTL/10;
 * it is set to 0 when the lease is lost. cloud_owner_valid() compares
 * the clock with it and nothing else.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cloud/cloud_owner.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "proto/etcd.h"

/* A failed keep-alive is retried this often until the deadline. */
#define RETRY_MS 200

struct cloud_owner {
	struct etcd *etcd;
	char *key, *value, *url, *instance;
	int64_t ttl_ms, poll_ms;
	const atomic_bool *stop;
	atomic_bool stop_thread;
	int64_t lease;       /* 0: none */
	int64_t granted_ms;  /* the TTL etcd granted */
	int64_t renewed_ms;  /* send time of the last request that renewed the lease */
	_Atomic int64_t deadline_ms; /* F1 */
	pthread_t thread;
	bool thread_started;
	void (*lost_fn)(void *ctx);
	void *lost_ctx;
	char seen[512];      /* the writer URL last reported to writer_fn */
	int last_err;        /* last etcd error logged (0: none) */
};

int cloud_owner_open(const struct cloud_owner_opts *opts, struct cloud_owner **out)
{
	*out = NULL;
	if (!opts->n_endpoints || !opts->key || !opts->key[0] || !opts->advertise_url || !opts->advertise_url[0] ||
	    (opts->ttl_ms && opts->ttl_ms < 1000))
		return ERR_INVAL;
	struct cloud_owner *o = calloc(1, sizeof(*o));
	if (!o)
		return ERR_NOMEM;
	o->ttl_ms = opts->ttl_ms ? opts->ttl_ms : CLOUD_OWNER_TTL_DEFAULT_MS;
	o->poll_ms = opts->poll_ms ? opts->poll_ms : CLOUD_OWNER_POLL_DEFAULT_MS;
	o->stop = opts->stop;
	atomic_init(&o->stop_thread, false);
	atomic_init(&o->deadline_ms, 0);
	o->key = strdup(opts->key);
	o->url = strdup(opts->advertise_url);
	o->instance = strdup(opts->instance_id && opts->instance_id[0] ? opts->instance_id : opts->advertise_url);
	json_t *v = json_pack("{s:s, s:s, s:I}", "url", opts->advertise_url, "instance",
			      o->instance ? o->instance : "", "started_ms", (json_int_t)clock_wall_ms());
	o->value = v ? json_dumps(v, JSON_COMPACT) : NULL;
	json_decref(v);
	struct etcd_opts eo = { .endpoints = opts->endpoints, .n_endpoints = opts->n_endpoints,
				.timeout_ms = o->ttl_ms / 3 > 500 ? o->ttl_ms / 3 : 500, .stop = &o->stop_thread };
	int rc = o->key && o->url && o->instance && o->value ? etcd_new(&eo, &o->etcd) : ERR_NOMEM;
	if (rc != 0) {
		cloud_owner_close(o);
		return rc;
	}
	*out = o;
	return 0;
}

static bool stopped(struct cloud_owner *o)
{
	return atomic_load(&o->stop_thread) || (o->stop && atomic_load(o->stop));
}

/* Sleeps ms, waking early when stopped. */
static void nap(struct cloud_owner *o, int64_t ms)
{
	for (int64_t left = ms; left > 0 && !stopped(o); left -= 50) {
		struct timespec t = { 0, (left < 50 ? left : 50) * 1000000L };
		nanosleep(&t, NULL);
	}
}

static void log_etcd(struct cloud_owner *o, int rc, const char *what)
{
	if (rc == o->last_err)
		return;
	o->last_err = rc;
	if (rc != 0)
		LOG_WARN("cloud-owner", "msg=\"etcd: %s failed; retrying\" endpoint=\"%s\" err=\"%s\"", what,
			 etcd_endpoint(o->etcd), err_str(rc));
	else
		LOG_INFO("cloud-owner", "msg=\"etcd answers again\" endpoint=\"%s\"", etcd_endpoint(o->etcd));
}

/* Grants a lease if there is none, else renews it when a third of the
 * TTL went by. 0 with a live lease, or the error (lease dropped if etcd
 * says it expired). */
static int keep_lease(struct cloud_owner *o, bool force)
{
	int64_t now = clock_mono_ms();
	if (o->lease == 0) {
		int64_t granted = 0;
		int rc = etcd_grant(o->etcd, (o->ttl_ms + 999) / 1000, &o->lease, &granted);
		if (rc != 0) {
			o->lease = 0;
			return rc;
		}
		o->granted_ms = granted * 1000;
		o->renewed_ms = now;
		return 0;
	}
	if (!force && now - o->renewed_ms < o->granted_ms / 3)
		return 0;
	int64_t ttl = 0;
	int rc = etcd_keepalive(o->etcd, o->lease, &ttl);
	if (rc != 0)
		return rc;
	if (ttl <= 0) {
		o->lease = 0;
		return -ETIMEDOUT;
	}
	o->granted_ms = ttl * 1000;
	o->renewed_ms = now;
	return 0;
}

static void set_deadline(struct cloud_owner *o)
{
	atomic_store(&o->deadline_ms, o->renewed_ms + o->granted_ms - o->granted_ms / 10);
}

/* Reports the writer's URL from the key's value (NULL if none). */
static void report_writer(struct cloud_owner *o, const char *value, void (*fn)(void *, const char *), void *ctx)
{
	const char *url = NULL;
	json_t *v = value ? json_loads(value, 0, NULL) : NULL;
	if (v)
		url = json_string_value(json_object_get(v, "url"));
	if (strcmp(o->seen, url ? url : "") != 0) {
		snprintf(o->seen, sizeof(o->seen), "%s", url ? url : "");
		LOG_INFO("cloud-owner", "msg=\"standby: the bucket's writer is %s\" writer=\"%s\"",
			 url ? "known" : "unknown", url ? url : "-");
		if (fn)
			fn(ctx, url);
	}
	json_decref(v);
}

int cloud_owner_campaign(struct cloud_owner *o, void (*writer_fn)(void *ctx, const char *url), void *ctx)
{
	while (!stopped(o)) {
		int rc = keep_lease(o, false);
		bool won = false;
		int64_t rev = 0;
		if (rc == 0)
			rc = etcd_put_if_absent(o->etcd, o->key, o->value, o->lease, &won, &rev);
		if (rc == 0 && won) {
			/* The key is ours from the lease's last renewal on. */
			set_deadline(o);
			log_etcd(o, 0, "");
			LOG_INFO("cloud-owner", "msg=\"this instance is now the bucket's writer\" key=\"%s\" instance=\"%s\" "
						"lease=%" PRIx64 " ttl_ms=%" PRId64,
				 o->key, o->instance, (uint64_t)o->lease, o->granted_ms);
			return 0;
		}
		struct etcd_kv *kvs = NULL;
		size_t n = 0;
		if (rc == 0)
			rc = etcd_get(o->etcd, o->key, false, &kvs, &n, &rev);
		log_etcd(o, rc, "taking the writer key");
		report_writer(o, rc == 0 && n ? kvs[0].value : NULL, writer_fn, ctx);
		etcd_kvs_free(kvs, n);
		nap(o, o->poll_ms);
	}
	return -EINTR;
}

static void *hold_main(void *arg)
{
	struct cloud_owner *o = arg;
	while (!stopped(o)) {
		int64_t now = clock_mono_ms();
		int64_t next = o->renewed_ms + o->granted_ms / 3;
		if (now < next) {
			nap(o, next - now < RETRY_MS ? next - now : RETRY_MS);
			continue;
		}
		int rc = keep_lease(o, true);
		if (rc == 0) {
			set_deadline(o);
			log_etcd(o, 0, "");
			continue;
		}
		if (stopped(o))
			break;
		bool expired = o->lease == 0;
		if (expired || clock_mono_ms() >= atomic_load(&o->deadline_ms)) {
			atomic_store(&o->deadline_ms, 0);
			LOG_ERROR("cloud-owner", "msg=\"the writer lease is lost: this instance stops writing\" key=\"%s\" "
						 "reason=\"%s\"",
				  o->key, expired ? "etcd says the lease expired" : err_str(rc));
			if (o->lost_fn)
				o->lost_fn(o->lost_ctx);
			return NULL;
		}
		log_etcd(o, rc, "keep-alive of the writer lease");
		nap(o, RETRY_MS);
	}
	return NULL;
}

int cloud_owner_hold(struct cloud_owner *o, void (*lost_fn)(void *ctx), void *ctx)
{
	o->lost_fn = lost_fn;
	o->lost_ctx = ctx;
	o->stop = NULL; /* borrowed for the campaign only; cloud_owner_close() stops the thread */
	int rc = pthread_create(&o->thread, NULL, hold_main, o);
	if (rc != 0)
		return -rc;
	o->thread_started = true;
	return 0;
}

bool cloud_owner_valid(struct cloud_owner *o)
{
	return clock_mono_ms() < atomic_load(&o->deadline_ms);
}

void cloud_owner_close(struct cloud_owner *o)
{
	if (!o)
		return;
	atomic_store(&o->stop_thread, true);
	if (o->thread_started)
		pthread_join(o->thread, NULL);
	atomic_store(&o->deadline_ms, 0);
	if (o->etcd && o->lease) {
		/* The stop flag is set: let the revoke through once. */
		atomic_store(&o->stop_thread, false);
		etcd_revoke(o->etcd, o->lease);
	}
	etcd_free(o->etcd);
	free(o->key);
	free(o->value);
	free(o->url);
	free(o->instance);
	free(o);
}

/* ---- The fence: a backend that writes only while the lease holds ---------------- */

struct fenced {
	struct cloud_backend be;
	struct cloud_backend *inner;
	struct cloud_owner *o;
};

static int fence_refuse(const char *op, const char *name)
{
	LOG_ERROR("cloud-owner", "msg=\"refused a write to the bucket: the writer lease is not held\" op=%s "
				 "object=\"%s\"",
		  op, name);
	return ERR_CLOUD_NOT_WRITER;
}

static int f_put(struct cloud_backend *be, const char *name, const char *tmp_path)
{
	struct fenced *f = (struct fenced *)be;
	if (!cloud_owner_valid(f->o)) {
		unlink(tmp_path);
		return fence_refuse("put", name);
	}
	int rc = f->inner->ops->put(f->inner, name, tmp_path);
	/* Completed after the deadline: maybe after a new writer listed the
	 * bucket, so it must not be acknowledged. */
	if (rc == 0 && !cloud_owner_valid(f->o))
		rc = fence_refuse("put (completed late)", name);
	return rc;
}

static int f_get(struct cloud_backend *be, const char *name, int *fd)
{
	struct fenced *f = (struct fenced *)be;
	return f->inner->ops->get(f->inner, name, fd);
}

static int f_list(struct cloud_backend *be, const char *prefix, int (*fn)(void *ctx, const char *name, uint64_t size),
		  void *ctx)
{
	struct fenced *f = (struct fenced *)be;
	return f->inner->ops->list(f->inner, prefix, fn, ctx);
}

static int f_del(struct cloud_backend *be, const char *name)
{
	struct fenced *f = (struct fenced *)be;
	if (!cloud_owner_valid(f->o))
		return fence_refuse("delete", name);
	return f->inner->ops->del(f->inner, name);
}

static int f_read_at(struct cloud_backend *be, const char *name, uint64_t off, void *buf, size_t len, size_t *n)
{
	struct fenced *f = (struct fenced *)be;
	return f->inner->ops->read_at(f->inner, name, off, buf, len, n);
}

static int f_del_many(struct cloud_backend *be, const char *const *names, size_t n)
{
	struct fenced *f = (struct fenced *)be;
	if (!cloud_owner_valid(f->o))
		return fence_refuse("delete", n ? names[0] : "-");
	return cloud_backend_del_many(f->inner, names, n);
}

static void f_close(struct cloud_backend *be)
{
	struct fenced *f = (struct fenced *)be;
	f->inner->ops->close(f->inner);
	free(f);
}

static const struct cloud_backend_ops fenced_ops = {
	.put = f_put, .get = f_get, .list = f_list, .del = f_del, .close = f_close, .read_at = f_read_at,
	.del_many = f_del_many, .kind = "s3",
};

int cloud_owner_fence(struct cloud_owner *o, struct cloud_backend *inner, struct cloud_backend **out)
{
	struct fenced *f = calloc(1, sizeof(*f));
	if (!f)
		return ERR_NOMEM;
	f->be.ops = &fenced_ops;
	f->inner = inner;
	f->o = o;
	*out = &f->be;
	return 0;
}
