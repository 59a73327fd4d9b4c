/*
 * cloud_store_maint.c — litefs-cloud's background work: compaction of
 * every level, periodic snapshots and retention (design: cloud_store.c).
 *
 * Compaction never takes a database's writer mutex: it reads immutable
 * objects under the database's files lock (read side), writes a new
 * object and adds one catalog row. Ingest of the same database goes on
 * meanwhile; only retention and delete (files lock, write side) wait.
 *
 * Progress per (database, level) is a TXID mark in the catalog: every
 * position at or below it was already grouped at that level. A group is
 * a run of consecutive positions (no snapshot upload, no page size change
 * inside) whose monotonic timestamps fall into one interval of the level;
 * it is done once a later position exists or the interval ended a grace
 * (the finest interval) ago. The second is a guess that a backlog with
 * past timestamps can prove wrong: positions after the mark that fall into
 * the interval of the group before it regroup the interval from its start,
 * and the new file supersedes the old one (prev_group()). A crash between
 * the object put and the catalog commit leaves an orphan that open()
 * removes; the group is then simply compacted again.
 *
 * Layering: cloud_store.c calls cloud_store_maint_db() for each database;
 * this file calls only the layers below (plans, objects, the catalog, the
 * backend), never back into cloud_store.c. The registry, the list of
 * databases and the thread belong to cloud_store.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/log.h"
#include "cloud/cloud_object.h"
#include "cloud/cloud_plan.h"
#include "cloud/cloud_store_maint.h"
#include "cloud/cloud_zltx.h"
#include "ltx/compact.h"

#define SCAN_ROWS 4096
/* Most inputs one compact_run() merges; longer runs go in batches. */
#define CLOUD_COMPACT_BATCH 64

static int64_t bucket_of(int64_t mts, int64_t interval)
{
	return mts >= 0 ? mts / interval : -((-mts + interval - 1) / interval);
}

/* compact_run() of in[0..k) into out, in the stored form the store
 * writes (cloud_zltx.h) or as LTX with LZ4. */
static int merge_write(struct cloud_store *cs, const struct compact_input *in, size_t k, int out, int zlevel,
		       struct ltx_header *oh, struct ltx_trailer *ot)
{
	struct compact_error ce;
	if (cs->store_lz4)
		return compact_run(in, k, true, fdio_write, &out, oh, ot, &ce);
	struct cloud_zltx_writer *w = NULL;
	int rc = cloud_zltx_writer_new(&w, zlevel, fdio_write, &out);
	if (rc == 0)
		rc = compact_run(in, k, false, cloud_zltx_write, w, oh, ot, &ce);
	if (rc == 0)
		rc = cloud_zltx_writer_finish(w);
	cloud_zltx_writer_free(w);
	return rc;
}

/* Merges files[0..n) into the temporary file out_path (created). The
 * inputs are objects of db_id, or (first_path != NULL) the first input is
 * that temporary file instead. */
static int merge_batch(struct cloud_store *cs, int64_t db_id, const char *first_path, const struct cat_file *files,
		       size_t n, char *out_path, size_t out_size, int zlevel, struct ltx_header *oh,
		       struct ltx_trailer *ot)
{
	int fds[CLOUD_COMPACT_BATCH + 1];
	struct cloud_zltx_reader zr[CLOUD_COMPACT_BATCH + 1];
	struct compact_input in[CLOUD_COMPACT_BATCH + 1];
	size_t k = 0;
	int rc = 0;
	if (first_path) {
		fds[k] = open(first_path, O_RDONLY | O_CLOEXEC);
		if (fds[k] < 0)
			return -errno;
		k++;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = cloud_object_open(cs->be, db_id, &files[i], &fds[k]);
		if (rc == 0)
			k++;
	}
	for (size_t i = 0; i < k; i++) {
		cloud_zltx_reader_init(&zr[i], fds[i]);
		in[i] = (struct compact_input){ cloud_zltx_read, &zr[i] };
	}
	int out = rc < 0 ? rc : cloud_object_tmp_create(cs->tmp_dir, out_path, out_size);
	if (rc == 0 && out < 0)
		rc = out;
	if (rc == 0) {
		rc = merge_write(cs, in, k, out, zlevel, oh, ot);
		close(out);
		if (rc < 0)
			unlink(out_path);
	}
	for (size_t i = 0; i < k; i++) {
		cloud_zltx_reader_done(&zr[i]);
		close(fds[i]);
	}
	return rc;
}

/* Merges plan p (all objects of db_id) into one new temporary file,
 * CLOUD_COMPACT_BATCH inputs at a time, the previous batch's output
 * being the first input of the next. */
static int merge_plan(struct cloud_store *cs, int64_t db_id, const struct cloud_plan *p, char *out_path,
		      size_t out_size, int zlevel, struct ltx_header *oh, struct ltx_trailer *ot)
{
	char prev[PATH_MAX] = "";
	int rc = 0;
	for (size_t i = 0; i < p->n && rc == 0;) {
		size_t take = p->n - i;
		size_t room = prev[0] ? CLOUD_COMPACT_BATCH - 1 : CLOUD_COMPACT_BATCH;
		if (take > room)
			take = room;
		rc = merge_batch(cs, db_id, prev[0] ? prev : NULL, p->f + i, take, out_path, out_size, zlevel, oh,
				 ot);
		if (prev[0])
			unlink(prev);
		snprintf(prev, sizeof(prev), "%s", out_path);
		i += take;
	}
	return rc;
}

/* Removes the catalog row of old (superseded by a file of the same
 * interval, committed already or in this transaction) and lists it in
 * gone; its object is deleted at the end of the pass under the files lock
 * (write), so a reader that planned it still finds it. Caller holds the
 * catalog lock. */
static int supersede(struct cloud_store *cs, int64_t db_id, const struct cat_file *old, struct cloud_plan *gone)
{
	int rc = cloud_catalog_file_delete(cs->cat, db_id, old);
	return rc == 0 ? cloud_plan_add(gone, old) : rc;
}

/* Compacts plan p into one object at level, recorded in the catalog in
 * one transaction with the removal of old (if any), the file of the same
 * interval that the new one supersedes. Caller holds the database's files
 * lock (read). */
static int store_merge(struct cloud_store *cs, int64_t db_id, int level, const struct cloud_plan *p, int64_t mts,
		       const struct cat_file *old, struct cloud_plan *gone)
{
	char tmp[PATH_MAX], name[96];
	struct ltx_header oh;
	struct ltx_trailer ot;
	const struct cat_file *first = &p->f[0], *last = &p->f[p->n - 1];
	int zlevel = level == cs->snap_level ? CLOUD_ZLTX_LEVEL : CLOUD_ZLTX_LEVEL_COMPACT;
	int rc = merge_plan(cs, db_id, p, tmp, sizeof(tmp), zlevel, &oh, &ot);
	if (rc < 0)
		return rc;
	if (oh.min_txid != first->min_txid || oh.max_txid != last->max_txid || oh.pre_apply_checksum != first->pre ||
	    ot.post_apply_checksum != last->post) {
		unlink(tmp);
		return ERR_LTX_NOT_CONTIGUOUS;
	}
	struct stat st;
	if (stat(tmp, &st) < 0) {
		rc = -errno;
		unlink(tmp);
		return rc;
	}
	cloud_object_name(name, sizeof(name), db_id, level, oh.min_txid, oh.max_txid);
	rc = cs->be->ops->put(cs->be, name, tmp);
	if (rc < 0)
		return rc;
	struct cat_file f = { level, oh.min_txid, oh.max_txid, first->pre, last->post, mts, oh.page_size,
			      (uint64_t)st.st_size };
	cloud_catalog_lock(cs->cat);
	rc = cloud_catalog_begin(cs->cat);
	if (rc == 0)
		rc = cloud_catalog_file_insert(cs->cat, db_id, &f);
	if (rc == 0 && old)
		rc = cloud_catalog_file_delete(cs->cat, db_id, old);
	if (rc == 0)
		rc = cloud_catalog_commit(cs->cat);
	else
		cloud_catalog_rollback(cs->cat);
	cloud_catalog_unlock(cs->cat);
	if (rc < 0)
		cs->be->ops->del(cs->be, name);
	else if (old)
		rc = cloud_plan_add(gone, old);
	return rc;
}

/* Compacts the group of positions rows[0..n) at level (n >= 1), extended
 * back to position lo (the start of the interval's earlier group when the
 * rows continue it): the covering files of the levels below, if more than
 * one. old: this level's file of the earlier group, superseded. */
static int compact_group(struct cloud_store *cs, int64_t db_id, int level, uint64_t lo, const struct cat_tx *rows,
			 size_t n, const struct cat_file *old, struct cloud_plan *gone)
{
	struct cloud_plan p = { 0 };
	uint64_t hi = rows[n - 1].txid;
	cloud_catalog_lock(cs->cat);
	int rc = cloud_plan_cover(cs->cat, db_id, lo - 1, hi, level - 1, &p);
	bool exists = cloud_catalog_file_exists(cs->cat, db_id, level, lo, hi);
	/* Too few files to be worth a copy: the group stays as they are (an
	 * earlier file of the interval, if any, stays too: it is valid). */
	bool sparse = rc == 0 && p.n > 1 && p.n < cs->min_merge;
	bool merge = rc == 0 && p.n > 1 && !exists && !sparse;
	if (rc == 0 && !merge && !sparse && old)
		rc = supersede(cs, db_id, old, gone); /* covered by one file already */
	cloud_catalog_unlock(cs->cat);
	if (merge)
		rc = store_merge(cs, db_id, level, &p, rows[n - 1].mts_ms, old, gone);
	free(p.f);
	return rc;
}

/* Whether a snapshot should be made for plan p (base first): snapshots
 * are spaced by size, so a database that changes little relative to its
 * size gets few, and a restore still reads a bounded amount — at most
 * about (1 + snap_ratio) times the base, in at most CLOUD_SNAP_PLAN_FILES
 * files after it. */
static bool snapshot_due(const struct cloud_store *cs, const struct cloud_plan *p)
{
	if (cs->snap_ratio < 0 || p->n - 1 > CLOUD_SNAP_PLAN_FILES || p->f[0].min_txid != 1)
		return true;
	uint64_t beyond = 0;
	for (size_t i = 1; i < p->n; i++)
		beyond += p->f[i].size;
	return (double)beyond >= cs->snap_ratio * (double)p->f[0].size;
}

/* Makes the snapshot of position row (level snap_level), superseding old
 * (an earlier snapshot of the same interval) if not NULL. */
static int snapshot_at(struct cloud_store *cs, int64_t db_id, const struct cat_tx *row, const struct cat_file *old,
		       struct cloud_plan *gone)
{
	struct cloud_plan p = { 0 };
	cloud_catalog_lock(cs->cat);
	int rc = cloud_plan_restore(cs->cat, db_id, row->txid, &p);
	/* A plan of one file is a snapshot already. */
	if (rc == 0 && p.n <= 1 && old)
		rc = supersede(cs, db_id, old, gone);
	cloud_catalog_unlock(cs->cat);
	if (rc == 0 && p.n > 1 && !snapshot_due(cs, &p))
		p.n = 0; /* its base is near enough; an earlier snapshot of the interval stays */
	if (rc == 0 && p.n > 1)
		rc = store_merge(cs, db_id, cs->snap_level, &p, row->mts_ms, old, gone);
	free(p.f);
	return rc;
}

/* Whether the positions after a level's mark (next is the first) continue
 * the group that ended at the mark. That group was closed by time (its
 * interval had ended a grace ago when a pass ran), but a node may still
 * send positions of that interval: a backlog pushed after an outage has
 * past timestamps. Then the interval is grouped again, from its start,
 * and the new file supersedes the earlier one, so that each interval
 * ends with one file per level (one snapshot).
 *
 * *start gets the earlier group's first position, *old this level's file
 * of it (to be superseded; *has_old false if the group was covered by one
 * lower file alone). Not continued (*found false) unless the earlier group
 * starts after every position retention may have cut at (the first stored
 * position, and the position in effect at now - retention): then
 * everything after its start is still stored at level 0, so the interval
 * can be merged again from its start and every position stays
 * restorable without the superseded file (see RETENTION in
 * cloud_store.c). Caller holds the catalog lock. */
static int prev_group(struct cloud_store *cs, int64_t db_id, int level, uint64_t done, const struct cat_tx *next,
		      int64_t now, uint64_t *start, struct cat_file *old, bool *has_old, bool *found)
{
	const int64_t interval = cs->levels_ms[level];
	const bool snap = level == cs->snap_level;
	struct cat_tx last, t;
	*found = *has_old = false;
	if (done == 0 || (!snap && (next->min_txid != done + 1)))
		return 0;
	int rc = cloud_catalog_tx_get(cs->cat, db_id, done, &last);
	if (rc < 0)
		return rc == ERR_CLOUD_NOT_FOUND ? 0 : rc;
	int64_t bucket = bucket_of(last.mts_ms, interval);
	if (bucket != bucket_of(next->mts_ms, interval) || (!snap && last.page_size != next->page_size))
		return 0;
	rc = cloud_catalog_tx_first(cs->cat, db_id, &t);
	if (rc < 0)
		return rc;
	uint64_t cut = t.txid, from = t.min_txid;
	rc = cloud_catalog_tx_at_time(cs->cat, db_id, now - cs->retention_ms, &t);
	if (rc < 0 && rc != ERR_CLOUD_NOT_FOUND)
		return rc;
	if (rc == 0 && t.txid > cut)
		cut = t.txid;
	if (snap) {
		/* The snapshot of the mark, if one was made (a plan of one
		 * file is not copied). */
		rc = cloud_catalog_file_ending(cs->cat, db_id, 1, done, level, level, old);
		*has_old = rc == 0 && old->min_txid == 1;
		*found = done > cut;
		*start = 1;
		return rc == ERR_CLOUD_NOT_FOUND ? 0 : rc;
	}
	/* The group starts at the interval's first position, or after the
	 * last chain break (snapshot upload, page size change) in it. */
	rc = cloud_catalog_tx_at_time(cs->cat, db_id, bucket * interval - 1, &t);
	if (rc < 0 && rc != ERR_CLOUD_NOT_FOUND)
		return rc;
	if (rc == 0)
		from = t.txid + 1;
	uint64_t brk;
	rc = cloud_catalog_tx_last_break(cs->cat, db_id, from - 1, done, last.page_size, &brk);
	if (rc < 0)
		return rc;
	if (brk) {
		struct cat_tx b;
		rc = cloud_catalog_tx_get(cs->cat, db_id, brk, &b);
		if (rc < 0)
			return rc;
		from = b.min_txid == 1 ? brk + 1 : b.min_txid;
	}
	if (from < 2 || from > done || from - 1 < cut)
		return 0;
	*start = from;
	*found = true;
	rc = cloud_catalog_file_ending(cs->cat, db_id, from, done, level, level, old);
	*has_old = rc == 0;
	return rc == ERR_CLOUD_NOT_FOUND ? 0 : rc;
}

/* Whether row b may continue the group that row a belongs to. */
static bool same_group(const struct cat_tx *a, const struct cat_tx *b, int64_t interval, bool chain)
{
	if (bucket_of(a->mts_ms, interval) != bucket_of(b->mts_ms, interval))
		return false;
	return !chain || (b->min_txid == a->txid + 1 && b->page_size == a->page_size);
}

/* Runs level (1..snap_level) over the positions after its mark, one scan
 * of SCAN_ROWS; files it supersedes go to gone. Returns 1 when a full
 * scan was consumed (call again). */
static int run_level(struct cloud_store *cs, int64_t db_id, int level, int64_t now, bool quiet,
		     struct cloud_plan *gone)
{
	const int64_t interval = cs->levels_ms[level], grace = cs->levels_ms[1];
	const bool snap = level == cs->snap_level;
	struct cat_tx *rows = malloc(SCAN_ROWS * sizeof(*rows));
	struct cat_file prev;
	uint64_t start = 0;
	bool cont = false, has_old = false;
	uint64_t done;
	size_t n = 0;
	int rc = rows ? 0 : ERR_NOMEM;
	cloud_catalog_lock(cs->cat);
	if (rc == 0)
		rc = cloud_catalog_done_get(cs->cat, db_id, level, &done);
	if (rc == 0)
		rc = cloud_catalog_tx_scan(cs->cat, db_id, done, rows, SCAN_ROWS, &n);
	if (rc == 0 && n > 0 && (snap || rows[0].min_txid != 1))
		rc = prev_group(cs, db_id, level, done, &rows[0], now, &start, &prev, &has_old, &cont);
	cloud_catalog_unlock(cs->cat);
	size_t i = 0;
	while (rc == 0 && i < n) {
		size_t j = i + 1;
		if (!snap && rows[i].min_txid == 1)
			j = i + 1; /* an uploaded snapshot is a base already */
		else
			while (j < n && same_group(&rows[j - 1], &rows[j], interval, !snap))
				j++;
		int64_t end = (bucket_of(rows[j - 1].mts_ms, interval) + 1) * interval;
		bool complete = j < n || n == SCAN_ROWS || (quiet && now >= end + grace);
		if (!complete)
			break;
		/* Only the first group can continue the one before the mark. */
		bool more = cont && i == 0;
		const struct cat_file *old = more && has_old ? &prev : NULL;
		if (snap)
			rc = snapshot_at(cs, db_id, &rows[j - 1], old, gone);
		else if (rows[i].min_txid != 1)
			rc = compact_group(cs, db_id, level, more ? start : rows[i].min_txid, rows + i, j - i,
					   old, gone);
		if (rc == 0) {
			cloud_catalog_lock(cs->cat);
			rc = cloud_catalog_done_set(cs->cat, db_id, level, rows[j - 1].txid);
			cloud_catalog_unlock(cs->cat);
		}
		i = j;
	}
	free(rows);
	return rc == 0 && n == SCAN_ROWS && i == n ? 1 : rc;
}

/* ---- Retention ------------------------------------------------------------ */

struct ret_ctx {
	const struct cloud_plan *keep;
	struct cloud_plan drop;
};

static int ret_file(void *ctx, const struct cat_file *f)
{
	struct ret_ctx *rc = ctx;
	for (size_t i = 0; i < rc->keep->n; i++) {
		const struct cat_file *k = &rc->keep->f[i];
		if (k->level == f->level && k->min_txid == f->min_txid && k->max_txid == f->max_txid)
			return 0;
	}
	return cloud_plan_add(&rc->drop, f);
}

/* Drops what the position in effect at now - retention does not need.
 * Caller holds the files lock (write). */
static int retain(struct cloud_store *cs, int64_t db_id, int64_t now)
{
	struct cat_tx r;
	struct cloud_plan keep = { 0 };
	struct ret_ctx ctx = { &keep, { 0 } };
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_tx_at_time(cs->cat, db_id, now - cs->retention_ms, &r);
	if (rc == ERR_CLOUD_NOT_FOUND) {
		cloud_catalog_unlock(cs->cat);
		return 0;
	}
	if (rc == 0)
		rc = cloud_plan_restore(cs->cat, db_id, r.txid, &keep);
	if (rc == 0)
		rc = cloud_catalog_file_list(cs->cat, db_id, r.txid, ret_file, &ctx);
	if (rc == 0)
		rc = cloud_catalog_begin(cs->cat);
	for (size_t i = 0; rc == 0 && i < ctx.drop.n; i++)
		rc = cloud_catalog_file_delete(cs->cat, db_id, &ctx.drop.f[i]);
	if (rc == 0)
		rc = cloud_catalog_tx_delete_below(cs->cat, db_id, r.txid);
	if (rc == 0)
		rc = cloud_catalog_commit(cs->cat);
	else
		cloud_catalog_rollback(cs->cat);
	cloud_catalog_unlock(cs->cat);
	for (size_t i = 0; rc == 0 && i < ctx.drop.n; i++)
		rc = cloud_object_delete(cs->be, db_id, &ctx.drop.f[i]);
	if (rc == 0 && ctx.drop.n)
		LOG_DEBUG("cloud", "msg=\"retention\" db_id=%" PRId64 " keep_from_txid=%016" PRIx64 " deleted=%zu",
			  db_id, r.txid, ctx.drop.n);
	free(keep.f);
	free(ctx.drop.f);
	return rc;
}

/* ---- Passes --------------------------------------------------------------- */

/* Deletes the objects of superseded files (their rows are gone already).
 * Caller holds the files lock (write): no reader has one open. */
static int drop_gone(struct cloud_store *cs, int64_t db_id, const struct cloud_plan *gone)
{
	int rc = 0;
	for (size_t i = 0; i < gone->n; i++) {
		int drc = cloud_object_delete(cs->be, db_id, &gone->f[i]);
		if (rc == 0)
			rc = drc;
	}
	if (gone->n)
		LOG_DEBUG("cloud", "msg=\"superseded\" db_id=%" PRId64 " deleted=%zu", db_id, gone->n);
	return rc;
}

int cloud_store_maint_db(struct cloud_store *cs, struct cdb *d, const struct cat_db *row, int64_t now,
			 bool real_clock)
{
	struct cloud_plan gone = { 0 };
	int rc = 0;
	/* With the real clock, an interval is closed by time only when no
	 * upload came for a grace: a node pushing a backlog of past intervals
	 * keeps them open (a later position closes them for good) instead of
	 * having them regrouped pass after pass. A simulated now (tests,
	 * tools) has no relation to the wall clock of uploads. */
	bool quiet = !real_clock ||
		     now - __atomic_load_n(&d->last_ingest_ms, __ATOMIC_RELAXED) >= cs->levels_ms[1];
	pthread_rwlock_rdlock(&d->files);
	/* The database may have been deleted (and recreated) meanwhile. */
	for (int level = 1; d->id == row->id && rc == 0 && level <= cs->snap_level; level++)
		while ((rc = run_level(cs, row->id, level, now, quiet, &gone)) == 1)
			;
	pthread_rwlock_unlock(&d->files);
	pthread_rwlock_wrlock(&d->files);
	/* Superseded rows were committed as deleted even if a later step
	 * failed; an object left by a crash here is an orphan that open()
	 * removes. A deleted database's objects went with it. */
	int grc = d->id == row->id ? drop_gone(cs, row->id, &gone) : 0;
	if (rc == 0 && d->id == row->id)
		rc = retain(cs, row->id, now);
	pthread_rwlock_unlock(&d->files);
	if (rc == 0)
		rc = grc;
	free(gone.f);
	if (rc < 0)
		LOG_WARN("cloud", "msg=\"maintenance failed\" cluster=%s db=%s err=\"%s\"", row->cluster, row->name,
			 err_str(rc));
	return rc;
}
