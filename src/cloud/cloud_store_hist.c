/*
 * cloud_store_hist.c — a database's history as the dashboard reads it
 * (cloud_hist_* in cloud_store.h): the catalog under the engine's locks.
 */
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_store_int.h"

_Static_assert(CLOUD_HIST_LEVELS_MAX >= CLOUD_MAX_LEVELS, "cloud_hist_head cannot hold every level");

int cloud_hist_head(struct cloud_store *cs, const char *cluster, const char *db, struct cloud_hist_head *out)
{
	struct cdb *d;
	struct cat_db row;
	struct cat_tx first;
	memset(out, 0, sizeof(*out));
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return rc;
	pthread_rwlock_rdlock(&d->files);
	rc = store_db_row(cs, d, &row);
	cloud_catalog_lock(cs->cat);
	if (rc == 0)
		rc = cloud_catalog_tx_first(cs->cat, row.id, &first);
	for (int l = 1; rc == 0 && l <= cs->n_levels; l++) {
		out->level_ms[l] = cs->levels_ms[l];
		rc = cloud_catalog_done_get(cs->cat, row.id, l, &out->level_done[l]);
	}
	cloud_catalog_unlock(cs->cat);
	pthread_rwlock_unlock(&d->files);
	if (rc < 0)
		return rc;
	out->incarnation = row.id;
	out->pos = pos_of(&row);
	out->mts_ms = row.mts_ms;
	out->page_size = row.page_size;
	out->pages = row.commit;
	out->first_txid = first.txid;
	out->n_levels = cs->n_levels;
	out->snap_level = cs->snap_level;
	out->min_merge = cs->min_merge;
	return rc;
}

/* Runs fn(cat, id, arg) on the catalog for the incarnation of db given,
 * under d->files (read) and the catalog lock; ERR_CLOUD_NOT_FOUND when the
 * database is no longer that incarnation (deleted, or made again). */
static int hist_read(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
		     int (*fn)(struct cloud_catalog *cat, int64_t id, void *arg), void *arg)
{
	struct cdb *d;
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return rc;
	pthread_rwlock_rdlock(&d->files);
	if (d->id != incarnation)
		rc = ERR_CLOUD_NOT_FOUND;
	cloud_catalog_lock(cs->cat);
	if (rc == 0)
		rc = fn(cs->cat, incarnation, arg);
	cloud_catalog_unlock(cs->cat);
	pthread_rwlock_unlock(&d->files);
	return rc;
}

struct scan_arg {
	uint64_t after;
	struct cat_tx *txs;
	uint64_t *sizes;
	size_t max, *n;
};

static int hist_scan_fn(struct cloud_catalog *cat, int64_t id, void *arg)
{
	struct scan_arg *a = arg;
	return cloud_catalog_tx_scan_sized(cat, id, a->after, a->txs, a->sizes, a->max, a->n);
}

int cloud_hist_scan(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
		    uint64_t after, struct cloud_hist_tx *out, size_t max, size_t *n)
{
	*n = 0;
	struct scan_arg a = { after, malloc(max * sizeof(*a.txs)), malloc(max * sizeof(*a.sizes)), max, n };
	int rc = a.txs && a.sizes ? hist_read(cs, cluster, db, incarnation, hist_scan_fn, &a) : ERR_NOMEM;
	for (size_t i = 0; rc == 0 && i < *n; i++)
		out[i] = (struct cloud_hist_tx){ a.txs[i].txid, a.txs[i].min_txid, a.txs[i].mts_ms, a.sizes[i] };
	free(a.txs);
	free(a.sizes);
	return rc;
}

struct bases_ctx {
	struct cloud_snapshot_info *v;
	size_t n, cap;
};

static int hist_base(void *ctx, const struct cat_file *f)
{
	struct bases_ctx *b = ctx;
	if (cloud_catalog_grow((void **)&b->v, b->n, &b->cap, sizeof(*b->v)) < 0)
		return ERR_NOMEM;
	b->v[b->n++] = (struct cloud_snapshot_info){ f->max_txid, f->mts_ms, f->size, f->level };
	return 0;
}

static int hist_bases_fn(struct cloud_catalog *cat, int64_t id, void *arg)
{
	return cloud_catalog_file_bases(cat, id, hist_base, arg);
}

int cloud_hist_snapshots(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
			 struct cloud_snapshot_info **out, size_t *n)
{
	struct bases_ctx b = { 0 };
	int rc = hist_read(cs, cluster, db, incarnation, hist_bases_fn, &b);
	if (rc < 0) {
		free(b.v);
		return rc;
	}
	*out = b.v;
	*n = b.n;
	return 0;
}

struct bytes_arg {
	struct cat_file_key k;
	struct cloud_hist_bytes *w;
	size_t max, n;
};

static int hist_bytes_fn(struct cloud_catalog *cat, int64_t id, void *arg)
{
	struct bytes_arg *a = arg;
	return cloud_catalog_file_sizes(cat, id, &a->k, a->max, &a->w->bytes, &a->n);
}

int cloud_hist_bytes_step(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
			  struct cloud_hist_bytes *w, size_t max_rows)
{
	struct bytes_arg a = { { w->key_min, w->key_max, w->key_level }, w, max_rows, 0 };
	int rc = hist_read(cs, cluster, db, incarnation, hist_bytes_fn, &a);
	w->key_min = a.k.min_txid;
	w->key_max = a.k.max_txid;
	w->key_level = a.k.level;
	w->done = rc == 0 && a.n < max_rows;
	return rc;
}

