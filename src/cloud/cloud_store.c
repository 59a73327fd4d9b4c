/*
 * cloud_store.c — litefs-cloud's storage engine (contract: cloud_store.h).
 * This comment is the authority for the design; docs/cloud-storage.md
 * explains it at more length.
 *
 * LAYOUT under data_dir
 *
 *   catalog.db           SQLite catalog (WAL, synchronous=FULL):
 *                        dbs (one row per live database: id, cluster,
 *                        name, position, page size, size), txs (one row
 *                        per restorable position), files (one row per
 *                        stored LTX object), compaction (progress marks)
 *   objects/<id>/l<k>/<min>-<max>.ltx   LTX objects, written through the
 *                        backend (cloud_backend.h; local disk here). <id>
 *                        is the database's catalog id in 16 hex digits,
 *                        never reused while objects of it may remain.
 *                        Stored as LTX or in the zstd form of LTX
 *                        (cloud_zltx.h: compacted files, snapshots and
 *                        uploads up to CLOUD_ZLTX_INGEST_MAX, unless
 *                        opts.store_lz4); every reader takes both.
 *   current/<id>.db      the materialised current state of each database
 *                        (a cache: verified against the catalog, rebuilt
 *                        from objects when it disagrees)
 *   tmp/                 spools and temporary files; emptied at open
 *
 * LEVELS. L0 holds every uploaded LTX file (one per upload; an upload may
 * span several TXIDs), as it came or in the zstd form. L1..Ln (opts.levels_ms, default 10 s,
 * 5 min, 1 h) hold merges of consecutive positions whose timestamps fall
 * into one aligned interval [j*I, (j+1)*I); level k is built from level
 * k-1 (whatever level k-1 lacks, from finer levels). The snapshot level
 * (n+1, opts.snapshot_interval_ms, default 24 h) holds full snapshots
 * (TXID 1..T) of the last position of each interval, made by merging the
 * previous snapshot with the covering files — but only when the restore
 * plan of that position reads, after its base, at least
 * opts.snapshot_ratio times the base's bytes or more than
 * CLOUD_SNAP_PLAN_FILES files (snapshots spaced by size, so a database
 * that changes little for its size is not copied whole every day). A
 * compaction group is merged only from opts.min_merge files or more (a
 * level that would only copy two or three files costs storage and saves
 * no read). Any file starting at TXID 1
 * (an uploaded snapshot, or a snapshot-level file) is a "base".
 * An interval is grouped once a later position exists or it ended a
 * grace ago; positions that still arrive for it (a backlog with past
 * timestamps) make it grouped again from its start, and the new file
 * supersedes the earlier one of the interval (row swapped in one catalog
 * transaction, object deleted under the files lock, write side), so each
 * interval ends with one file per level and one snapshot.
 *
 * TIMESTAMPS. A position's timestamp is its LTX header timestamp (the
 * commit time on the node). Because node clocks may step back, the engine
 * also keeps a monotonic timestamp mts = max(ts, previous mts); restore by
 * time ("the last transaction with timestamp <= T") and interval alignment
 * use mts, so the set of positions at or before T is always a prefix of
 * the history. With well-behaved clocks mts == ts.
 *
 * INVARIANTS
 *  1. Every row of txs with txid t is restorable: the plan of t (below)
 *     exists in files, and every file in files exists in the backend.
 *  2. txs rows form a suffix of the history: retention deletes only
 *     below a bound, ingest only appends.
 *  3. Objects are immutable once their catalog row is committed; a name
 *     is only ever rewritten with the same logical content (a compaction
 *     redone after a crash) or after its row was deleted.
 *  4. dbs.(txid, checksum) is the last txs row; current/<id>.db has that
 *     checksum whenever cdb.cur_ok is true.
 *
 * INGEST (cloud_ingest, under the database's mutex): read the 100-byte
 * header, check it against the stored position (contiguity by TXID and
 * pre-apply checksum, page size) -> ERR_CLOUD_POS_MISMATCH early; then
 * stream the body once, teeing every byte into a temporary object file
 * while pagesums_apply() decodes it onto the current copy (apply_upload()).
 * It validates everything (file checksum, decoder rules, the post-apply
 * checksum from the kept page checksums of the copy, cdb.sums, and those
 * the decoder computes of the uploaded pages) before it writes a byte of
 * the current copy, so a bad upload leaves nothing. The pages are decoded
 * once, into the store's kept staging buffer (cloud_stage.h; while another
 * ingest holds it, or past its size, a large upload is decoded a second
 * time from its object file for the write). Once proven good, a large
 * upload's object is fsync'd on a thread of its own while the copy is
 * written (local backend). Databases too large to keep the sums for use
 * dbfile_apply(), which reads the replaced pages. Then: backend put
 * (fsync file, rename, fsync directory), and one catalog transaction
 * (dbs, txs, files) committed with synchronous=FULL. Only then 0 is
 * returned and the HWM (the new TXID) acknowledged.
 *
 * SNAPSHOT UPLOADS. A snapshot (min TXID 1) is accepted when the database
 * is new (or was deleted), and for an existing database only as a forward
 * position jump: its max TXID must be greater than the stored TXID (a node
 * that lost its history or restored sends its whole state at its own,
 * newer, TXID). It becomes a base; the TXIDs it skipped are not
 * restorable. A snapshot at or below the stored TXID is a replay or a
 * rewind and gets ERR_CLOUD_POS_MISMATCH, so the node fetches the
 * service's state instead. A non-snapshot with another page size is
 * refused (ERR_CLOUD_PAGE_SIZE) unless the database is empty (commit 0).
 *
 * RESTORE PLAN of position t: the base with the largest max TXID <= t,
 * then repeatedly the file starting right after the current position
 * with the largest max TXID <= t (the coarsest level on a tie). So a
 * plan reads one snapshot plus a bounded number of files: at most
 * CLOUD_SNAP_PLAN_FILES up to the last snapshot interval's end before t
 * (or about 1 + snapshot_ratio databases' worth of bytes), then per level
 * the intervals of the level above (fewer than min_merge lower files in
 * an interval without a file of its own), then the L0 files of one
 * finest interval.
 *
 * BUILDING A STATE from its plan (export of a past state, restore, fork,
 * the rebuild of the current copy): the plan's objects are read side by
 * side and merged page by page (cloud_merge.h, ltx/ltxmerge.h), so each
 * page of the state is written once, or streamed, or compared with the
 * current copy, and never staged; every file's checks and every
 * intermediate post-apply checksum are verified before the last page. A
 * fork writes the pages once into the new database's current copy and
 * its first object in the same pass, then commits like an ingest
 * (cloud_fork.h).
 *
 * RETENTION (every level): with W = now - retention, let r be the last
 * position with mts <= W (the state in effect at the window start). Every
 * file that is not in plan(r) and whose max TXID <= r is deleted, then
 * the txs rows below r. Files ending after r stay, so every position >= r
 * keeps its plan: the greedy plan of t >= r follows plan(r) until it
 * jumps past r, and every L0 file after r is kept.
 *
 * DURABILITY. An ingest returns 0 only after its object is fsync'd and
 * renamed into place and the catalog commit is fsync'd (WAL, FULL). On a
 * crash before the commit, the object is an orphan: cloud_store_open()
 * lists the backend and deletes every object without a row, and empties
 * tmp/. The current copy is never fsync'd: it is a cache whose checksum
 * is verified against the catalog on first use after open and rebuilt
 * from the objects (plan of the current position) when it disagrees —
 * behind, ahead or torn. Deletes (retention, database delete) commit the
 * catalog first and remove objects after, so a crash leaves only orphans.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "cloud/cloud_backend.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_fork.h"
#include "cloud/cloud_merge.h"
#include "cloud/cloud_object.h"
#include "cloud/cloud_plan.h"
#include "cloud/cloud_progress.h"
#include "cloud/cloud_rebuild.h"
#include "cloud/cloud_state.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_store_int.h"
#include "cloud/cloud_store_maint.h"
#include "cloud/cloud_stage.h"
#include "cloud/cloud_zltx.h"
#include "ltx/dbfile.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "base/sys.h"
#include "proto/dbname.h"

static const int64_t default_levels_ms[] = { 10 * 1000, 5 * 60 * 1000, 60 * 60 * 1000 };

/* ---- Small helpers -------------------------------------------------------- */

/* A staging spool for dbfile_apply(): a kept one, or a new unnamed file.
 * Spools are reused because creating (and freeing) an inode per upload
 * was the largest cost of ingest (ext4's inode allocator). */
static int spool_get(struct cloud_store *cs)
{
	int fd = -1;
	pthread_mutex_lock(&cs->mu);
	if (cs->n_spools > 0)
		fd = cs->spools[--cs->n_spools];
	pthread_mutex_unlock(&cs->mu);
	return fd >= 0 ? fd : fileio_spool_open(cs->tmp_dir);
}

/* Gives a spool back: kept (emptied) while there is room, else closed. */
static void spool_put(struct cloud_store *cs, int fd)
{
	struct stat st;
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || (st.st_size > 0 && ftruncate(fd, 0) < 0)) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&cs->mu);
	if (cs->n_spools < CLOUD_SPOOLS_KEPT) {
		cs->spools[cs->n_spools++] = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&cs->mu);
	if (fd >= 0)
		close(fd);
}

static void cur_path(struct cloud_store *cs, int64_t id, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%016" PRIx64 ".db", cs->cur_dir, (uint64_t)id);
}

static int msgf(struct cloud_ingest_result *res, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int msgf(struct cloud_ingest_result *res, int rc, const char *fmt, ...)
{
	if (res) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* ---- Registry ------------------------------------------------------------- */

/* The registry entry of (cluster, name), created if missing. Never NULL
 * except ERR_NOMEM. Borrowed; valid until cloud_store_close(). */
static int cdb_get(struct cloud_store *cs, const char *cluster, const char *name, struct cdb **out)
{
	pthread_mutex_lock(&cs->mu);
	struct cdb *d;
	for (d = cs->dbs; d; d = d->next)
		if (strcmp(d->cluster, cluster) == 0 && strcmp(d->name, name) == 0)
			break;
	if (d == NULL && (d = calloc(1, sizeof(*d))) != NULL) {
		snprintf(d->cluster, sizeof(d->cluster), "%s", cluster);
		snprintf(d->name, sizeof(d->name), "%s", name);
		pthread_mutex_init(&d->mu, NULL);
		pthread_rwlock_init(&d->files, NULL);
		struct cat_db row;
		cloud_catalog_lock(cs->cat);
		if (cloud_catalog_db_get(cs->cat, cluster, name, &row) == 0)
			d->id = row.id;
		cloud_catalog_unlock(cs->cat);
		d->next = cs->dbs;
		cs->dbs = d;
	}
	pthread_mutex_unlock(&cs->mu);
	*out = d;
	return d ? 0 : ERR_NOMEM;
}

/* The registry and the catalog hold any name the rule accepts. */
_Static_assert(CLOUD_DB_NAME_MAX >= DBNAME_MAX, "cloud database names are shorter than the rule allows");
_Static_assert(sizeof(((struct cloud_db_info *)0)->cluster) > CLOUD_CLUSTER_MAX, "cluster names are cut short");

/* Validates names and finds the entry. */
int store_lookup(struct cloud_store *cs, const char *cluster, const char *db, struct cdb **out)
{
	if (cluster == NULL || db == NULL || strlen(cluster) > CLOUD_CLUSTER_MAX || cluster[0] == '\0' ||
	    !dbname_valid(db))
		return ERR_CLOUD_NAME;
	return cdb_get(cs, cluster, db, out);
}

static int64_t alloc_id(struct cloud_store *cs)
{
	pthread_mutex_lock(&cs->mu);
	int64_t id = cs->next_id++;
	pthread_mutex_unlock(&cs->mu);
	return id;
}

static void set_id(struct cdb *d, int64_t id)
{
	pthread_rwlock_wrlock(&d->files);
	d->id = id;
	pthread_rwlock_unlock(&d->files);
}

/* The catalog row of d (d->id must be set). */
int store_db_row(struct cloud_store *cs, struct cdb *d, struct cat_db *row)
{
	if (d->id == 0)
		return ERR_CLOUD_NOT_FOUND;
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_db_get_id(cs->cat, d->id, row);
	cloud_catalog_unlock(cs->cat);
	return rc;
}

/* ---- State building ------------------------------------------------------- */

/* The dashboard's progress (cloud_progress.h): building a state reads
 * the plan's stored files, whose sizes the catalog knows. */
static void progress_plan(const struct cloud_plan *plan)
{
	uint64_t total = 0;
	for (size_t i = 0; i < plan->n; i++)
		total += plan->f[i].size;
	cloud_progress_phase("build", total);
}

/* Starts reading the state of position (txid, checksum) of d from its
 * plan's stored files (cloud_merge.h), which advance the "build" phase of
 * the dashboard's progress as they are read. Caller holds d->files (read)
 * for this call only: the merge holds its objects open. */
static int open_state(struct cloud_store *cs, struct cdb *d, uint64_t txid, uint64_t checksum,
		      struct cloud_merge **out)
{
	struct cloud_plan plan = { 0 };
	cloud_catalog_lock(cs->cat);
	int rc = cloud_plan_restore(cs->cat, d->id, txid, &plan);
	cloud_catalog_unlock(cs->cat);
	if (rc == 0) {
		progress_plan(&plan);
		rc = cloud_merge_open(cs->be, d->id, d->name, &plan, (struct ltx_pos){ txid, checksum },
				      cloud_progress_read, out);
	}
	free(plan.f);
	return rc;
}

/* Writes the state of position (txid, checksum) of d into out_fd (emptied
 * first) from the stored objects: each page written once, everything
 * verified (cloud_merge.h). Caller holds d->files (read). */
static int build_state(struct cloud_store *cs, struct cdb *d, uint64_t txid, uint64_t checksum, int out_fd)
{
	struct cloud_merge *m;
	int rc = open_state(cs, d, txid, checksum, &m);
	if (rc == 0)
		rc = cloud_merge_to_fd(m, out_fd);
	cloud_merge_free(m);
	return rc;
}

/* Makes sure the current copy of d matches the catalog (row), rebuilding
 * it from the objects if not. Caller holds d->mu. */
/* Whether d's current copy is known good, checking the file against the
 * catalog (row) once if it is not known yet. Caller holds d->mu. */
static bool cur_check(struct cloud_store *cs, struct cdb *d, const struct cat_db *row)
{
	if (d->cur_ok)
		return true;
	char path[PATH_MAX];
	cur_path(cs, d->id, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		uint64_t chk;
		uint32_t n;
		d->cur_ok = dbfile_checksum(fd, row->page_size, &chk, &n) == 0 && chk == row->checksum &&
			    n == row->commit;
		close(fd);
	}
	return d->cur_ok;
}

static int cur_ensure(struct cloud_store *cs, struct cdb *d, const struct cat_db *row)
{
	if (cur_check(cs, d, row))
		return 0;
	char path[PATH_MAX];
	cur_path(cs, d->id, path, sizeof(path));
	LOG_WARN("cloud", "msg=\"rebuilding current copy\" cluster=%s db=%s txid=%016" PRIx64, d->cluster, d->name,
		 row->txid);
	char tmp[PATH_MAX];
	int fd = cloud_object_tmp_create(cs->tmp_dir, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	pthread_rwlock_rdlock(&d->files);
	int rc = build_state(cs, d, row->txid, row->checksum, fd);
	pthread_rwlock_unlock(&d->files);
	close(fd);
	/* No fsync: the copy is a cache, checked against the catalog's
	 * checksum before use and rebuilt when it does not match. */
	if (rc == 0 && sys_renameat(AT_FDCWD, tmp, AT_FDCWD, path) < 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	d->cur_ok = rc == 0;
	return rc;
}

/* ---- Ingest --------------------------------------------------------------- */

/* The upload's bytes: first the header already read, then the rest from
 * the caller's reader; every byte is also appended to the object file. */
struct tee {
	const uint8_t *hdr;
	size_t hdr_off;
	ltx_read_fn read;
	void *ctx;
	int obj_fd;
	uint64_t total, max;
	struct sys_wb wb; /* writeback started as it goes */
	struct cloud_presync sync; /* the object's early fsync (cloud_stage.h) */
	bool local;                /* the backend's put fsyncs this very file */
};

/* The object file's writeback is started every this many bytes, so the
 * put's fsync finds most of a large upload on disk already instead of
 * writing it all while the client waits. */
#define TEE_WRITEBACK_BYTES (1u << 20)

static ssize_t tee_read(void *ctx, void *buf, size_t len)
{
	struct tee *t = ctx;
	ssize_t n;
	if (t->hdr_off < LTX_HEADER_SIZE) {
		n = (ssize_t)(LTX_HEADER_SIZE - t->hdr_off < len ? LTX_HEADER_SIZE - t->hdr_off : len);
		memcpy(buf, t->hdr + t->hdr_off, (size_t)n);
		t->hdr_off += (size_t)n;
	} else {
		n = t->read(t->ctx, buf, len);
		if (n <= 0)
			return n;
	}
	if (t->total + (uint64_t)n > t->max)
		return ERR_CLOUD_TOO_LARGE;
	int rc = sys_pwrite_all(t->obj_fd, buf, (size_t)n, (off_t)t->total);
	if (rc < 0)
		return rc;
	t->total += (uint64_t)n;
	/* Best effort: the put's fsync is what makes it durable. */
	(void)sys_writeback(&t->wb, t->obj_fd, (off_t)t->total);
	return n;
}

/* pagesums_io.validated: a large upload is proven good, so its object
 * goes to disk while the current copy is written (a small one is still
 * rewritten in its zstd form: ingest_zstd()). */
static void tee_validated(void *ctx)
{
	struct tee *t = ctx;
	if (t->local && t->total > CLOUD_ZLTX_INGEST_MAX)
		cloud_presync_start(&t->sync, t->obj_fd);
}

static int read_header(ltx_read_fn read, void *ctx, uint8_t *hdr)
{
	size_t got = 0;
	while (got < LTX_HEADER_SIZE) {
		ssize_t n = read(ctx, hdr + got, LTX_HEADER_SIZE - got);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return ERR_LTX_TRUNCATED;
		got += (size_t)n;
	}
	return 0;
}

/* Header checks against the stored position (row is NULL for a new
 * database). */
static int check_header(const struct ltx_header *h, const struct cat_db *row, struct cloud_ingest_result *res)
{
	bool snap = ltx_header_is_snapshot(h);
	if (row == NULL) {
		if (!snap)
			return msgf(res, ERR_CLOUD_POS_MISMATCH, "database does not exist: the first upload must be a "
				    "snapshot (min TXID 1), got min TXID %016" PRIx64, h->min_txid);
		return 0;
	}
	if (snap) {
		if (h->max_txid <= row->txid)
			return msgf(res, ERR_CLOUD_POS_MISMATCH, "snapshot up to TXID %016" PRIx64 " does not move "
				    "past the stored TXID %016" PRIx64, h->max_txid, row->txid);
		return 0;
	}
	if (h->min_txid != row->txid + 1 || h->pre_apply_checksum != row->checksum)
		return msgf(res, ERR_CLOUD_POS_MISMATCH, "upload starts at TXID %016" PRIx64 " after checksum %016"
			    PRIx64 ", stored position is %016" PRIx64 "/%016" PRIx64, h->min_txid,
			    h->pre_apply_checksum, row->txid, row->checksum);
	if (row->commit > 0 && h->page_size != row->page_size)
		return msgf(res, ERR_CLOUD_PAGE_SIZE, "page size %u differs from the stored %u", h->page_size,
			    row->page_size);
	return 0;
}

/* Applies an upload (read through t) to the current copy cur_fd at pos:
 * with the page checksums kept in d->sums (pagesums.h: the replaced pages
 * are not read again; a large upload is decoded a second time from its
 * object file instead of a spool), built from the copy when they describe
 * another position; with dbfile_apply() and a staging spool (*spool, the
 * caller gives it back) when the database is too large to keep them.
 * page_size is the copy's (0 for a new database). Caller holds d->mu. */
static int apply_upload(struct cloud_store *cs, struct cdb *d, int cur_fd, uint32_t page_size, struct ltx_pos pos,
			struct tee *t, int *spool, struct dbfile_apply_result *ar)
{
	struct pagesums *s = &d->sums;
	int rc = 0;
	if (pos.txid == 0) {
		pagesums_clear(s); /* a new database: an empty copy */
	} else if (!d->sums_off && (s->sum == NULL || s->pos.txid != pos.txid || s->pos.checksum != pos.checksum)) {
		uint64_t chk;
		rc = pagesums_build(s, cur_fd, page_size, pos, &chk);
		if (rc == 0 && chk != pos.checksum) {
			/* cur_ensure() checked it; it changed under us. */
			pagesums_clear(s);
			d->cur_ok = false;
			memset(ar, 0, sizeof(*ar));
			return ERR_LTX_PRE_MISMATCH;
		}
		if (rc == ERR_DB_SIZE || rc == ERR_NOMEM)
			d->sums_off = true;
	}
	if (!d->sums_off && rc == 0) {
		struct pagesums_io io = { .replay_fd = t->obj_fd, .validated = tee_validated, .ctx = t };
		io.stage = cloud_stage_take(cs->stage, &io.stage_cap);
		rc = pagesums_apply_io(s, cur_fd, tee_read, t, &io, ar);
		cloud_stage_give(cs->stage, io.stage);
		return rc;
	}
	pagesums_clear(s);
	rc = *spool = spool_get(cs);
	if (rc < 0) {
		memset(ar, 0, sizeof(*ar));
		return rc;
	}
	rc = dbfile_apply(cur_fd, *spool, tee_read, t, pos, ar);
	free(ar->written);
	return rc;
}

/* Records a verified upload in the catalog (one transaction). */
static int commit_upload(struct cloud_store *cs, struct cat_db *row, bool insert, const struct cat_file *f,
			 const struct cat_tx *tx)
{
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_add_upload(cs->cat, row, insert, f, tx);
	cloud_catalog_unlock(cs->cat);
	return rc;
}

/* Rewrites the verified upload in fd (size *size, at most
 * CLOUD_ZLTX_INGEST_MAX) in its zstd stored form (cloud_zltx.h) when that
 * is smaller, in the same file: a second file per upload would cost an
 * inode allocation, the dearest part of a small ingest. A failure to
 * encode keeps the upload as sent (as valid); a failure to write it back
 * fails the ingest (the file may be half rewritten). */
static int ingest_zstd(const char *db, int fd, uint64_t *size)
{
	struct ltx_growbuf z = { 0 };
	int rc = lseek(fd, 0, SEEK_SET) < 0 ? -errno : cloud_zltx_transcode(fd, ltx_growbuf_write, &z,
									      CLOUD_ZLTX_LEVEL);
	if (rc < 0)
		LOG_WARN("cloud", "msg=\"upload kept as sent: its zstd form failed\" db=%s err=\"%s\"", db,
			 err_str(rc));
	if (rc < 0 || z.len >= *size) {
		free(z.data);
		return 0;
	}
	rc = sys_pwrite_all(fd, z.data, z.len, 0);
	if (rc == 0 && sys_ftruncate(fd, (off_t)z.len) < 0)
		rc = -errno;
	if (rc == 0)
		*size = z.len;
	free(z.data);
	return rc;
}

/* Everything of an ingest after the header checks. */
static int ingest_body(struct cloud_store *cs, struct cdb *d, struct cat_db *row, bool exists,
		       const uint8_t *hdr, const struct ltx_header *h, ltx_read_fn read, void *ctx,
		       struct cloud_ingest_result *res)
{
	char obj_tmp[PATH_MAX], cur[PATH_MAX], cur_new[PATH_MAX] = "";
	int spool = -1, cur_fd = -1, rc;
	int64_t id = exists ? row->id : alloc_id(cs);
	struct tee t = { .hdr = hdr, .read = read, .ctx = ctx, .max = cs->max_upload_bytes,
			 .wb.kick = TEE_WRITEBACK_BYTES,
			 .local = strcmp(cs->be->ops->kind, "local") == 0 };

	t.obj_fd = cloud_object_tmp_create(cs->tmp_dir, obj_tmp, sizeof(obj_tmp));
	if (t.obj_fd < 0)
		return t.obj_fd;
	cur_path(cs, id, cur, sizeof(cur));
	if (exists)
		cur_fd = open(cur, O_RDWR | O_CLOEXEC);
	else
		cur_fd = cloud_object_tmp_create(cs->tmp_dir, cur_new, sizeof(cur_new));
	rc = cur_fd < 0 ? -errno : 0;
	if (rc < 0)
		goto out;

	struct dbfile_apply_result ar;
	struct ltx_pos pos = { exists ? row->txid : 0, exists ? row->checksum : 0 };
	rc = apply_upload(cs, d, cur_fd, exists ? row->page_size : 0, pos, &t, &spool, &ar);
	if (rc < 0) {
		if (ar.db_changed)
			d->cur_ok = false;
		if (rc == ERR_LTX_PAGE_SIZE_MISMATCH)
			rc = ERR_CLOUD_PAGE_SIZE;
		else if (rc == ERR_LTX_OVERLAP || rc == ERR_LTX_NOT_CONTIGUOUS || rc == ERR_LTX_PRE_MISMATCH)
			rc = ERR_CLOUD_POS_MISMATCH;
		msgf(res, rc, "%s (at byte %" PRIu64 ")", err_str(rc), ar.err_offset);
		goto out;
	}

	/* Verified. A new database's meta object first (cloud_rebuild.h: the
	 * bucket never holds objects it cannot name), then the object, then
	 * the catalog. */
	if (!exists && (rc = cloud_meta_put(cs->be, cs->tmp_dir, id, d->cluster, d->name, clock_wall_ms())) < 0) {
		msgf(res, rc, "storing the database's meta object failed: %s", err_str(rc));
		goto out;
	}
	uint64_t stored = t.total;
	if (!cs->store_lz4 && t.total <= CLOUD_ZLTX_INGEST_MAX)
		rc = ingest_zstd(d->name, t.obj_fd, &stored);
	else
		rc = cloud_presync_wait(&t.sync);
	if (rc < 0) {
		d->cur_ok = false; /* the copy is ahead of the catalog */
		msgf(res, rc, "storing the upload failed: %s", err_str(rc));
		goto out;
	}
	char name[96];
	cloud_object_name(name, sizeof(name), id, 0, h->min_txid, h->max_txid);
	close(t.obj_fd);
	t.obj_fd = -1;
	rc = cs->be->ops->put(cs->be, name, obj_tmp);
	obj_tmp[0] = '\0'; /* consumed by put */
	if (rc < 0) {
		d->cur_ok = false; /* the copy is ahead of the catalog */
		msgf(res, rc, "storing the upload failed: %s", err_str(rc));
		goto out;
	}
	int64_t mts = exists && row->mts_ms > h->timestamp_ms ? row->mts_ms : h->timestamp_ms;
	struct cat_db nrow = exists ? *row : (struct cat_db){ .id = id, .created_ms = clock_wall_ms() };
	if (!exists) {
		snprintf(nrow.cluster, sizeof(nrow.cluster), "%s", d->cluster);
		snprintf(nrow.name, sizeof(nrow.name), "%s", d->name);
	}
	nrow.page_size = h->page_size;
	nrow.commit = h->commit;
	nrow.txid = ar.pos.txid;
	nrow.checksum = ar.pos.checksum;
	nrow.ts_ms = h->timestamp_ms;
	nrow.mts_ms = mts;
	struct cat_file f = { 0, h->min_txid, h->max_txid, h->pre_apply_checksum, ar.pos.checksum, mts,
			      h->page_size, stored };
	struct cat_tx tx = { ar.pos.txid, h->min_txid, ar.pos.checksum, h->timestamp_ms, mts, h->page_size };
	rc = commit_upload(cs, &nrow, !exists, &f, &tx);
	if (rc < 0) {
		cs->be->ops->del(cs->be, name);
		d->cur_ok = false;
		msgf(res, rc, "catalog commit failed");
		goto out;
	}
	if (!exists) {
		/* The copy is a cache: if this rename is lost, it is rebuilt. */
		if (sys_renameat(AT_FDCWD, cur_new, AT_FDCWD, cur) == 0)
			cur_new[0] = '\0';
		d->cur_ok = cur_new[0] == '\0';
		set_id(d, id);
	}
	*row = nrow;
	res->pos = pos_of(&nrow);
	res->hwm = nrow.txid;
	__atomic_store_n(&d->last_ingest_ms, clock_wall_ms(), __ATOMIC_RELAXED);
	LOG_DEBUG("cloud", "msg=\"stored\" cluster=%s db=%s min_txid=%016" PRIx64 " max_txid=%016" PRIx64
		  " bytes=%" PRIu64, d->cluster, d->name, h->min_txid, h->max_txid, t.total);
out:
	cloud_presync_wait(&t.sync); /* before its descriptor is closed */
	if (t.obj_fd >= 0)
		close(t.obj_fd);
	if (obj_tmp[0])
		unlink(obj_tmp);
	if (cur_new[0])
		unlink(cur_new);
	if (cur_fd >= 0)
		close(cur_fd);
	spool_put(cs, spool);
	return rc;
}

/* Ingest with d->mu held. */
static int ingest_locked(struct cloud_store *cs, struct cdb *d, ltx_read_fn read, void *ctx,
			 struct cloud_ingest_result *res)
{
	struct cat_db row;
	uint8_t hdr[LTX_HEADER_SIZE];
	struct ltx_header h;
	bool exists = d->id != 0;
	int rc = 0;

	if (exists) {
		rc = store_db_row(cs, d, &row);
		if (rc == 0)
			rc = cur_ensure(cs, d, &row);
		if (rc < 0)
			return msgf(res, rc, "stored state unavailable: %s", err_str(rc));
		res->pos = pos_of(&row);
		res->hwm = row.txid;
	}
	rc = read_header(read, ctx, hdr);
	if (rc == 0)
		rc = ltx_header_decode(hdr, &h);
	if (rc < 0)
		return msgf(res, rc, "%s", err_str(rc));
	rc = check_header(&h, exists ? &row : NULL, res);
	if (rc == 0)
		rc = ingest_body(cs, d, &row, exists, hdr, &h, read, ctx, res);
	if (rc < 0 && rc != ERR_CLOUD_POS_MISMATCH)
		LOG_INFO("cloud", "msg=\"upload refused\" cluster=%s db=%s err=\"%s\" reason=\"%s\"", d->cluster,
			 d->name, err_str(rc), res ? res->msg : "");
	return rc;
}

int cloud_ingest(struct cloud_store *cs, const char *cluster, const char *db, ltx_read_fn read, void *ctx,
		 struct cloud_ingest_result *res)
{
	struct cdb *d;
	memset(res, 0, sizeof(*res));
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return msgf(res, rc, "%s", err_str(rc));
	pthread_mutex_lock(&d->mu);
	rc = ingest_locked(cs, d, read, ctx, res);
	pthread_mutex_unlock(&d->mu);
	return rc;
}

/* ---- A whole state as a new transaction ----------------------------------- */

/* Writes into out_fd an LTX that turns position row (current copy cur_fd,
 * NULL row: nothing) into state st: the pages that differ, or a snapshot
 * when there is no usable current state. Both are read once, in order, in
 * large blocks; a merged state's page checksums come from its decoders. */
static int encode_transition(struct cloud_state *st, const struct cat_db *row, int cur_fd, int out_fd)
{
	uint32_t n = 0, ps = st->ps;
	int rc = cloud_state_pages(st, &n);
	if (rc < 0)
		return rc;
	bool diff = row && (row->commit == 0 || row->page_size == ps);
	struct ltx_header h = { .flags = LTX_FLAG_COMPRESS, .page_size = ps, .commit = n,
				.min_txid = diff ? row->txid + 1 : 1, .max_txid = row ? row->txid + 1 : 1,
				.timestamp_ms = clock_wall_ms(), .pre_apply_checksum = diff ? row->checksum : 0 };
	struct ltx_encoder *enc;
	rc = ltx_encoder_new(&enc, &h, fdio_write, &out_fd);
	if (rc < 0)
		return rc;
	struct cloud_state_iter it = { .st = st,
				       .rd = { .fd = st->fd, .ps = ps, .n = n, .buf = malloc(CLOUD_PAGERD_BYTES) } };
	struct cloud_pagerd cur = { .fd = cur_fd, .ps = ps, .n = diff ? row->commit : 0,
				    .buf = malloc(CLOUD_PAGERD_BYTES) };
	uint64_t chk = LTX_CHECKSUM_FLAG, sum;
	uint32_t p;
	const uint8_t *page, *old;
	rc = it.rd.buf && cur.buf ? 0 : ERR_NOMEM;
	cloud_progress_phase("write", n);
	while (rc == 0 && (rc = cloud_state_next(&it, &p, &page, &sum, NULL)) == 1) {
		cloud_progress_add(p == ltx_lock_pgno(ps) + 1 ? 2 : 1); /* the lock page is skipped */
		chk ^= sum;
		rc = p <= cur.n ? cloud_pagerd_get(&cur, p, &old) : 0;
		if (rc < 0)
			break;
		rc = rc == 1 && memcmp(old, page, ps) == 0 ? 0 : ltx_encoder_write_page(enc, p, page);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG | chk, NULL);
	ltx_encoder_free(enc);
	free(it.rd.buf);
	free(cur.buf);
	return rc;
}

/* Stores state st as the next transaction of d (or its first, a
 * snapshot). Caller holds d->mu. */
static int store_state_locked(struct cloud_store *cs, struct cdb *d, struct cloud_state *st,
			      struct cloud_ingest_result *res)
{
	struct cat_db row;
	int cur_fd = -1, rc = 0;
	bool exists = d->id != 0;
	if (exists) {
		char path[PATH_MAX];
		rc = store_db_row(cs, d, &row);
		if (rc == 0)
			rc = cur_ensure(cs, d, &row);
		cur_path(cs, d->id, path, sizeof(path));
		if (rc == 0 && (cur_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			rc = -errno;
	}
	int ltx_fd = rc < 0 ? -1 : fileio_spool_open(cs->tmp_dir);
	if (rc == 0 && ltx_fd < 0)
		rc = ltx_fd;
	if (rc == 0)
		rc = encode_transition(st, exists ? &row : NULL, cur_fd, ltx_fd);
	if (rc == 0 && lseek(ltx_fd, 0, SEEK_SET) < 0)
		rc = -errno;
	if (cur_fd >= 0)
		close(cur_fd);
	if (rc == 0)
		rc = ingest_locked(cs, d, fdio_read, &ltx_fd, res);
	if (ltx_fd >= 0)
		close(ltx_fd);
	return rc;
}

/* ---- Resolve, export, restore --------------------------------------------- */

static int resolve_row(struct cloud_store *cs, struct cdb *d, const struct cloud_target *t, struct cat_db *row,
		       struct cloud_pos *out)
{
	int rc = store_db_row(cs, d, row);
	if (rc < 0)
		return rc;
	if (t == NULL || (t->txid == 0 && t->ts_ms == 0)) {
		*out = pos_of(row);
		return 0;
	}
	struct cat_tx tx;
	cloud_catalog_lock(cs->cat);
	if (t->txid) {
		rc = cloud_catalog_tx_get(cs->cat, row->id, t->txid, &tx);
		if (rc == ERR_CLOUD_NOT_FOUND) {
			struct cat_tx first;
			bool inside = cloud_catalog_tx_first(cs->cat, row->id, &first) == 0 && t->txid > first.txid &&
				      t->txid < row->txid;
			/* Inside the window but not a stored position: it was
			 * uploaded merged with others (LiteFS batches about a
			 * second of commits) or skipped by a snapshot.
			 * cloud_gap() says which upload and what is near. */
			rc = inside ? ERR_CLOUD_NOT_RESTORABLE : ERR_CLOUD_WINDOW;
		}
	} else {
		rc = cloud_catalog_tx_at_time(cs->cat, row->id, t->ts_ms, &tx);
		if (rc == ERR_CLOUD_NOT_FOUND)
			rc = ERR_CLOUD_WINDOW;
	}
	cloud_catalog_unlock(cs->cat);
	if (rc == 0)
		*out = (struct cloud_pos){ tx.txid, tx.checksum, tx.ts_ms };
	return rc;
}

int cloud_resolve(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		  struct cloud_pos *out)
{
	struct cdb *d;
	struct cat_db row;
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc == 0) {
		pthread_rwlock_rdlock(&d->files);
		rc = resolve_row(cs, d, t, &row, out);
		pthread_rwlock_unlock(&d->files);
	}
	return rc;
}

int cloud_gap(struct cloud_store *cs, const char *cluster, const char *db, uint64_t txid, struct cloud_gap *out)
{
	struct cdb *d;
	struct cat_db row;
	struct cat_tx before, after;
	memset(out, 0, sizeof(*out));
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return rc;
	pthread_rwlock_rdlock(&d->files);
	rc = store_db_row(cs, d, &row);
	bool found = rc == 0;
	cloud_catalog_lock(cs->cat);
	if (found)
		rc = cloud_catalog_tx_get(cs->cat, row.id, txid, &before) == 0
			     ? ERR_CLOUD_WINDOW
			     : cloud_catalog_tx_around(cs->cat, row.id, txid, &before, &after);
	cloud_catalog_unlock(cs->cat);
	pthread_rwlock_unlock(&d->files);
	if (found && rc == ERR_CLOUD_NOT_FOUND)
		rc = ERR_CLOUD_WINDOW; /* nothing above txid */
	if (rc < 0)
		return rc;
	/* A position itself, or below the window: not a gap. */
	if (before.txid == 0 || after.min_txid > txid)
		return ERR_CLOUD_WINDOW;
	out->txid = txid;
	out->upload_min = after.min_txid;
	out->upload_max = after.txid;
	out->before = (struct cloud_pos){ before.txid, before.checksum, before.mts_ms };
	out->after = (struct cloud_pos){ after.txid, after.checksum, after.mts_ms };
	return 0;
}

/* Copies the current copy of d into out_fd. Caller holds d->mu. */
static int copy_current(struct cloud_store *cs, struct cdb *d, const struct cat_db *row, int out_fd)
{
	char path[PATH_MAX];
	int rc = cur_ensure(cs, d, row);
	if (rc < 0)
		return rc;
	cur_path(cs, d->id, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	rc = fstat(fd, &st) < 0 ? -errno : 0;
	for (off_t off = 0; rc == 0 && off < st.st_size;) {
		ssize_t n = copy_file_range(fd, &off, out_fd, NULL, (size_t)(st.st_size - off), 0);
		if (n <= 0)
			rc = n < 0 ? -errno : ERR_IO_SHORT;
	}
	close(fd);
	return rc;
}

/* The state of target t of d into *st: a new anonymous file holding it
 * (the latest state: a copy of the current copy; a past one: built from
 * the stored files), or with stream, a past state as a merge of its
 * stored files that nobody has read yet. *pos gets its position. Holds
 * d->mu only for a target at the current position. */
static int build_target(struct cloud_store *cs, struct cdb *d, const struct cloud_target *t, bool have_mu,
			bool stream, struct cloud_state *st, struct cloud_pos *pos)
{
	struct cat_db row;
	*st = (struct cloud_state){ .fd = -1 };
	pthread_rwlock_rdlock(&d->files);
	int rc = resolve_row(cs, d, t, &row, pos);
	bool latest = rc == 0 && pos->txid == row.txid;
	if (rc == 0 && !latest) {
		rc = open_state(cs, d, pos->txid, pos->checksum, &st->merge);
		if (rc == 0)
			st->ps = cloud_merge_page_size(st->merge);
	}
	pthread_rwlock_unlock(&d->files);
	if (rc == 0 && (latest || !stream) && (st->fd = fileio_spool_open(cs->tmp_dir)) < 0)
		rc = st->fd;
	if (rc == 0 && st->merge && !stream) {
		rc = cloud_merge_to_fd(st->merge, st->fd);
		cloud_merge_free(st->merge);
		st->merge = NULL;
	}
	if (rc == 0 && latest) {
		if (!have_mu)
			pthread_mutex_lock(&d->mu);
		/* The position may have moved on since: take the copy's own. */
		rc = resolve_row(cs, d, NULL, &row, pos);
		st->ps = row.page_size;
		if (rc == 0)
			rc = copy_current(cs, d, &row, st->fd);
		if (!have_mu)
			pthread_mutex_unlock(&d->mu);
	}
	if (rc < 0)
		cloud_state_close(st);
	return rc;
}

int cloud_export_fd(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		    enum cloud_format format, int *out_fd, uint64_t *size, struct cloud_pos *pos)
{
	struct cdb *d;
	struct cloud_pos p = { 0 };
	struct cloud_state built;
	int out = -1;
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc == 0)
		rc = build_target(cs, d, t, false, false, &built, &p);
	if (rc < 0)
		return rc;
	int fd = built.fd;
	uint32_t ps = built.ps;
	if (format == CLOUD_FORMAT_SQLITE) {
		/* The built state is the export: hand it over as it is. */
		out = fd;
		fd = -1;
	} else {
		struct dbfile_snapshot_opts o = { .page_size = ps, .txid = p.txid, .timestamp_ms = p.ts_ms,
						  .compress = true };
		out = fileio_spool_open(cs->tmp_dir);
		rc = out < 0 ? out : dbfile_encode_snapshot(fd, &o, fdio_write, &out, NULL, NULL);
	}
	if (fd >= 0)
		close(fd);
	struct stat st;
	if (rc == 0 && fstat(out, &st) != 0)
		rc = -errno;
	if (rc == 0 && lseek(out, 0, SEEK_SET) < 0)
		rc = -errno;
	if (rc < 0) {
		if (out >= 0)
			close(out);
		return rc;
	}
	*out_fd = out;
	if (size)
		*size = (uint64_t)st.st_size;
	if (pos)
		*pos = p;
	return 0;
}

/* Whether an export of d's latest state (row) would first have to build
 * the current copy from the stored files. Not while the dashboard follows
 * the operation (it reports the build and the copy as two phases). */
static bool latest_unbuilt(struct cloud_store *cs, struct cdb *d, const struct cat_db *row)
{
	if (cloud_progress_active())
		return false;
	pthread_mutex_lock(&d->mu);
	bool ok = cur_check(cs, d, row);
	pthread_mutex_unlock(&d->mu);
	return !ok;
}

static void tee_drop(struct cloud_export_src *x)
{
	if (x->tee_fd >= 0) {
		close(x->tee_fd);
		unlink(x->tee_path);
	}
	x->tee_fd = -1;
}

/* The whole state was sent and verified: it becomes d's current copy if
 * none was made meanwhile and d is still at that position. */
static void export_tee_end(struct cloud_export_src *x)
{
	struct cdb *d = x->d;
	struct cat_db row;
	struct cloud_pos now;
	char path[PATH_MAX];
	pthread_mutex_lock(&d->mu);
	if (!d->cur_ok && resolve_row(x->cs, d, NULL, &row, &now) == 0 && now.txid == x->pos.txid &&
	    now.checksum == x->pos.checksum) {
		cur_path(x->cs, d->id, path, sizeof(path));
		/* No fsync: the copy is a cache (cur_ensure()). */
		if (sys_renameat(AT_FDCWD, x->tee_path, AT_FDCWD, path) == 0) {
			d->cur_ok = true;
			close(x->tee_fd);
			x->tee_fd = -1;
		}
	}
	pthread_mutex_unlock(&d->mu);
	tee_drop(x);
}

int cloud_export_open(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		      enum cloud_format format, struct cloud_export_src *out)
{
	struct cdb *d;
	struct cat_db row;
	memset(out, 0, sizeof(*out));
	out->fd = out->tee_fd = -1;
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return rc;
	if (format != CLOUD_FORMAT_SQLITE)
		return cloud_export_fd(cs, cluster, db, t, format, &out->fd, &out->size, &out->pos);
	/* The latest state is copied from the current copy (one copy in the
	 * kernel; a copy not checked since the start is rebuilt first, once,
	 * from the stored files, so that later exports and ingest find it);
	 * a past state is streamed from the stored files. */
	pthread_rwlock_rdlock(&d->files);
	rc = resolve_row(cs, d, t, &row, &out->pos);
	bool copy = rc == 0 && out->pos.txid == row.txid;
	if (rc == 0 && !copy)
		rc = open_state(cs, d, out->pos.txid, out->pos.checksum, &out->merge);
	pthread_rwlock_unlock(&d->files);
	if (rc == 0 && copy && !latest_unbuilt(cs, d, &row))
		return cloud_export_fd(cs, cluster, db, t, format, &out->fd, &out->size, &out->pos);
	if (rc == 0 && copy) {
		/* No good current copy (a fresh service on a bucket): stream the
		 * state from the stored files and keep what was sent as the new
		 * current copy (export_tee_end()): the objects are read once
		 * and the state written once, instead of a copy built, then
		 * copied, then sent. */
		pthread_rwlock_rdlock(&d->files);
		rc = resolve_row(cs, d, t, &row, &out->pos);
		if (rc == 0)
			rc = open_state(cs, d, out->pos.txid, out->pos.checksum, &out->merge);
		pthread_rwlock_unlock(&d->files);
		if (rc == 0 && out->pos.txid == row.txid) {
			out->tee_fd = cloud_object_tmp_create(cs->tmp_dir, out->tee_path, sizeof(out->tee_path));
			out->cs = cs;
			out->d = d;
		}
	}
	if (rc == 0)
		out->size = cloud_merge_size(out->merge);
	return rc;
}

ssize_t cloud_export_read(struct cloud_export_src *x, void *buf, size_t max)
{
	if (x->merge) {
		ssize_t n = cloud_merge_read(x->merge, buf, max);
		if (x->tee_fd >= 0 && n > 0 && fdio_write(&x->tee_fd, buf, (size_t)n) < 0)
			tee_drop(x); /* the export goes on; the copy is built later */
		else if (x->tee_fd >= 0 && n == 0)
			export_tee_end(x);
		return n;
	}
	if (max > INT_MAX)
		max = INT_MAX;
	int n = fdio_pread_full(x->fd, buf, max, x->off);
	if (n > 0)
		x->off += n;
	return n;
}

void cloud_export_close(struct cloud_export_src *x)
{
	tee_drop(x);
	cloud_merge_free(x->merge);
	x->merge = NULL;
	if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
}

int cloud_export(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		 enum cloud_format format, ltx_write_fn write, void *ctx, struct cloud_pos *pos)
{
	struct cloud_export_src x;
	int rc = cloud_export_open(cs, cluster, db, t, format, &x);
	if (rc < 0)
		return rc;
	static const size_t chunk = 1u << 20;
	uint8_t *buf = malloc(chunk);
	rc = buf ? 0 : ERR_NOMEM;
	while (rc == 0) {
		ssize_t n = cloud_export_read(&x, buf, chunk);
		if (n <= 0) {
			rc = (int)n;
			break;
		}
		rc = write(ctx, buf, (size_t)n);
	}
	free(buf);
	if (rc == 0 && pos)
		*pos = x.pos;
	cloud_export_close(&x);
	return rc;
}

/* Stores state st (of checksum) as the new database d in one pass
 * (cloud_fork.h). Caller holds d->mu; d does not exist. */
static int fork_locked(struct cloud_store *cs, struct cdb *d, struct cloud_state *st, uint64_t checksum,
		       struct cloud_pos *pos)
{
	char cur[PATH_MAX];
	int64_t id = alloc_id(cs);
	cur_path(cs, id, cur, sizeof(cur));
	struct cloud_fork_dst dst = { cs->be, cs->cat, cs->tmp_dir, cur, id, d->cluster, d->name, !cs->store_lz4 };
	struct cat_db row;
	bool cur_ok;
	int rc = cloud_fork_create(st, checksum, &dst, &row, &cur_ok, d->sums_off ? NULL : &d->sums);
	if (rc < 0)
		return rc;
	d->cur_ok = cur_ok;
	set_id(d, id);
	__atomic_store_n(&d->last_ingest_ms, clock_wall_ms(), __ATOMIC_RELAXED);
	*pos = pos_of(&row);
	return 0;
}

int cloud_restore(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		  const char *as_db, struct cloud_pos *new_pos)
{
	struct cdb *d, *dst;
	struct cloud_pos p;
	struct cloud_ingest_result res;
	struct cloud_state st = { .fd = -1 };
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc == 0 && as_db)
		rc = store_lookup(cs, cluster, as_db, &dst);
	if (rc < 0)
		return rc;
	/* A past state is merged from its stored files straight into the
	 * encoding of the new transaction: no scratch copy of it. When the
	 * dashboard follows the operation (cloud_progress.h), it is built into
	 * a file first, so that "build" and "write" are two phases. */
	bool stream = !cloud_progress_active();
	if (as_db == NULL) {
		dst = d;
		pthread_mutex_lock(&d->mu);
		rc = build_target(cs, d, t, true, stream, &st, &p);
		struct cat_db row;
		if (rc == 0 && store_db_row(cs, d, &row) == 0 && row.txid == p.txid) {
			*new_pos = p; /* already there: nothing to undo */
			cloud_state_close(&st);
			pthread_mutex_unlock(&d->mu);
			return 0;
		}
	} else {
		rc = build_target(cs, d, t, false, stream, &st, &p);
		pthread_mutex_lock(&dst->mu);
		if (rc == 0 && dst->id != 0)
			rc = ERR_CLOUD_EXISTS;
	}
	if (rc == 0)
		rc = as_db ? fork_locked(cs, dst, &st, p.checksum, &res.pos) : store_state_locked(cs, dst, &st, &res);
	pthread_mutex_unlock(&dst->mu);
	cloud_state_close(&st);
	if (rc == 0) {
		*new_pos = res.pos;
		LOG_INFO("cloud", "msg=\"restored\" cluster=%s db=%s target_txid=%016" PRIx64 " into=%s txid=%016"
			 PRIx64, cluster, db, p.txid, as_db ? as_db : db, res.pos.txid);
	}
	return rc;
}

/* ---- Upload of a SQLite file ---------------------------------------------- */

static int check_integrity(const char *path, struct cloud_ingest_result *res)
{
	char uri[PATH_MAX + 32];
	sqlite3 *conn = NULL;
	sqlite3_stmt *st = NULL;
	snprintf(uri, sizeof(uri), "file:%s?immutable=1", path);
	int rc = sqlite3_open_v2(uri, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(conn, "PRAGMA integrity_check(5)", -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
	    strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0)
		rc = 0;
	else
		rc = msgf(res, ERR_DB_HEADER, "integrity_check failed: %.200s",
			  st && sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0)
							  : sqlite3_errmsg(conn));
	sqlite3_finalize(st);
	sqlite3_close(conn);
	return rc;
}

/* Copies fd into a new temporary file (path), bounded by max bytes. */
static int copy_upload(struct cloud_store *cs, int fd, char *path, size_t size, int *out_fd)
{
	int tfd = cloud_object_tmp_create(cs->tmp_dir, path, size);
	if (tfd < 0)
		return tfd;
	uint8_t *buf = malloc(256 * 1024);
	int rc = buf ? 0 : ERR_NOMEM;
	for (uint64_t total = 0; rc == 0;) {
		ssize_t n = read(fd, buf, 256 * 1024);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		total += (uint64_t)n;
		rc = total > cs->max_upload_bytes ? ERR_CLOUD_TOO_LARGE : fdio_write(&tfd, buf, (size_t)n);
	}
	free(buf);
	if (rc < 0) {
		close(tfd);
		unlink(path);
		return rc;
	}
	*out_fd = tfd;
	return 0;
}

int cloud_upload_sqlite(struct cloud_store *cs, const char *cluster, const char *db, int fd,
			struct cloud_ingest_result *res)
{
	struct cdb *d;
	char path[PATH_MAX];
	int tfd = -1;
	uint32_t ps;
	struct stat st;
	memset(res, 0, sizeof(*res));
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc == 0)
		rc = copy_upload(cs, fd, path, sizeof(path), &tfd);
	if (rc < 0)
		return msgf(res, rc, "%s", err_str(rc));
	rc = dbfile_read_page_size(tfd, &ps);
	if (rc == 0 && (fstat(tfd, &st) < 0 || st.st_size == 0 || st.st_size % ps != 0))
		rc = ERR_DB_SIZE;
	if (rc < 0)
		msgf(res, rc, "%s", err_str(rc));
	if (rc == 0)
		rc = check_integrity(path, res);
	if (rc == 0) {
		struct cloud_state upload = { .fd = tfd, .ps = ps };
		pthread_mutex_lock(&d->mu);
		rc = store_state_locked(cs, d, &upload, res);
		pthread_mutex_unlock(&d->mu);
	}
	close(tfd);
	unlink(path);
	return rc;
}

/* ---- Positions, info, delete ---------------------------------------------- */

struct pos_ctx {
	void (*fn)(void *ctx, const char *db, const struct cloud_pos *pos);
	void *ctx;
};

static int pos_one(void *ctx, const struct cat_db *db)
{
	struct pos_ctx *pc = ctx;
	struct cloud_pos p = pos_of(db);
	pc->fn(pc->ctx, db->name, &p);
	return 0;
}

int cloud_positions(struct cloud_store *cs, const char *cluster,
		    void (*fn)(void *ctx, const char *db, const struct cloud_pos *pos), void *ctx)
{
	struct pos_ctx pc = { fn, ctx };
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_db_list(cs->cat, cluster, pos_one, &pc);
	cloud_catalog_unlock(cs->cat);
	return rc;
}

struct info_ctx {
	struct cloud_db_info *info;
	size_t cap_snapshots;
};

static int info_file(void *ctx, const struct cat_file *f)
{
	struct info_ctx *ic = ctx;
	struct cloud_db_info *info = ic->info;
	/* Files of levels that the options no longer have count in the total
	 * (they are stored) but have no level of their own to show. */
	if (f->level >= 0 && (size_t)f->level < info->n_levels) {
		info->levels[f->level].files++;
		info->levels[f->level].bytes += f->size;
	}
	info->bytes += f->size;
	if (f->min_txid != 1)
		return 0;
	if (cloud_catalog_grow((void **)&info->snapshots, info->n_snapshots, &ic->cap_snapshots,
			       sizeof(*info->snapshots)) < 0)
		return ERR_NOMEM;
	info->snapshots[info->n_snapshots++] =
		(struct cloud_snapshot_info){ f->max_txid, f->mts_ms, f->size, f->level };
	return 0;
}

/* Adds the position txid, whose upload brought the TXIDs lo..txid, to the
 * runs of info (struct cloud_range). */
static void info_range_add(struct cloud_db_info *info, uint64_t lo, uint64_t txid)
{
	bool per_tx = lo == txid;
	struct cloud_range *last = info->n_ranges ? &info->ranges[info->n_ranges - 1] : NULL;
	if (last && last->per_tx == per_tx) {
		last->to_txid = txid;
		last->points++;
		return;
	}
	if (info->n_ranges == CLOUD_INFO_RANGES_MAX) {
		memmove(info->ranges, info->ranges + 1, (CLOUD_INFO_RANGES_MAX - 1) * sizeof(info->ranges[0]));
		info->n_ranges--;
		info->ranges_omitted++;
	}
	info->ranges[info->n_ranges++] = (struct cloud_range){
		.from_txid = lo, .to_txid = txid, .per_tx = per_tx, .points = 1 };
}

/* Reads every position of db_id into the runs of info, a chunk per
 * catalog lock (the info is advisory: ingest may go on in between). */
static int info_ranges(struct cloud_store *cs, int64_t db_id, struct cloud_db_info *info)
{
	enum { CHUNK = 1024 };
	struct cat_tx *txs = malloc(CHUNK * sizeof(*txs));
	if (txs == NULL)
		return ERR_NOMEM;
	uint64_t prev = 0;
	size_t n = CHUNK;
	int rc = 0;
	while (rc == 0 && n == CHUNK) {
		cloud_catalog_lock(cs->cat);
		rc = cloud_catalog_tx_scan(cs->cat, db_id, prev, txs, CHUNK, &n);
		cloud_catalog_unlock(cs->cat);
		/* An upload covers min_txid..txid; the first one in the window
		 * may start before it (retention), the others right after the
		 * previous position (a snapshot upload may start at 1). */
		for (size_t i = 0; rc == 0 && i < n; i++) {
			uint64_t lo = prev == 0 ? txs[i].min_txid : prev + 1;
			info_range_add(info, lo < 1 ? 1 : lo, txs[i].txid);
			prev = txs[i].txid;
		}
	}
	free(txs);
	return rc;
}

/* A new info with the levels of cs, their files not counted yet. */
static struct cloud_db_info *info_new(struct cloud_store *cs)
{
	struct cloud_db_info *info = calloc(1, sizeof(*info));
	if (info == NULL)
		return NULL;
	info->n_levels = (size_t)cs->snap_level + 1;
	info->levels = calloc(info->n_levels, sizeof(*info->levels));
	if (info->levels == NULL) {
		free(info);
		return NULL;
	}
	for (int l = 0; l <= cs->snap_level; l++)
		info->levels[l] = (struct cloud_level_info){
			.level = l,
			.kind = l == 0 ? CLOUD_LEVEL_UPLOAD : l == cs->snap_level ? CLOUD_LEVEL_SNAPSHOT
										   : CLOUD_LEVEL_COMPACTED,
			.interval_ms = l ? cs->levels_ms[l] : 0,
		};
	info->retention_ms = cs->retention_ms;
	return info;
}

int cloud_db_info(struct cloud_store *cs, const char *cluster, const char *db, struct cloud_db_info **out)
{
	struct cdb *d;
	struct cat_db row;
	struct cat_tx first;
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return rc;
	struct info_ctx ic = { .info = info_new(cs) };
	if (ic.info == NULL)
		return ERR_NOMEM;
	pthread_rwlock_rdlock(&d->files);
	rc = store_db_row(cs, d, &row);
	cloud_catalog_lock(cs->cat);
	if (rc == 0)
		rc = cloud_catalog_tx_first(cs->cat, row.id, &first);
	int64_t n_txs = rc == 0 ? cloud_catalog_tx_count(cs->cat, row.id) : 0;
	if (rc == 0)
		rc = cloud_catalog_file_list(cs->cat, row.id, UINT64_MAX, info_file, &ic);
	cloud_catalog_unlock(cs->cat);
	pthread_rwlock_unlock(&d->files);
	if (rc == 0)
		rc = info_ranges(cs, row.id, ic.info);
	if (rc < 0) {
		cloud_db_info_free(ic.info);
		return rc;
	}
	struct cloud_db_info *info = ic.info;
	snprintf(info->cluster, sizeof(info->cluster), "%s", row.cluster);
	snprintf(info->name, sizeof(info->name), "%s", row.name);
	info->pos = pos_of(&row);
	info->page_size = row.page_size;
	info->pages = row.commit;
	info->transactions = n_txs;
	info->min_txid = first.txid;
	info->max_txid = row.txid;
	info->min_ts_ms = first.mts_ms;
	info->max_ts_ms = row.mts_ms;
	*out = info;
	return 0;
}

void cloud_db_info_free(struct cloud_db_info *info)
{
	if (info == NULL)
		return;
	free(info->snapshots);
	free(info->levels);
	free(info);
}

struct del_ctx {
	char **names;
	size_t n, cap;
};

static int del_collect(void *ctx, const char *name, uint64_t size)
{
	struct del_ctx *dc = ctx;
	(void)size;
	if (cloud_catalog_grow((void **)&dc->names, dc->n, &dc->cap, sizeof(*dc->names)) < 0)
		return ERR_NOMEM;
	return (dc->names[dc->n++] = strdup(name)) ? 0 : (dc->n--, ERR_NOMEM);
}

/* Removes every object of database id (after its catalog rows are gone):
 * its meta object first, so that a crash leaves objects no rebuild adopts,
 * then the others in batches. */
static int delete_objects(struct cloud_store *cs, int64_t id)
{
	char prefix[32], path[PATH_MAX];
	struct del_ctx dc = { 0 };
	snprintf(prefix, sizeof(prefix), "%016" PRIx64 "/", (uint64_t)id);
	cur_path(cs, id, path, sizeof(path));
	unlink(path);
	cloud_meta_name(path, sizeof(path), id);
	int rc = cs->be->ops->del(cs->be, path);
	if (rc == 0)
		rc = cs->be->ops->list(cs->be, prefix, del_collect, &dc);
	if (rc == 0)
		rc = cloud_backend_del_many(cs->be, (const char *const *)dc.names, dc.n);
	for (size_t i = 0; i < dc.n; i++)
		free(dc.names[i]);
	free(dc.names);
	return rc;
}

static int delete_locked(struct cloud_store *cs, struct cdb *d)
{
	if (d->id == 0)
		return ERR_CLOUD_NOT_FOUND;
	pthread_rwlock_wrlock(&d->files);
	int64_t id = d->id;
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_begin(cs->cat);
	if (rc == 0)
		rc = cloud_catalog_db_delete(cs->cat, id);
	rc = rc == 0 ? cloud_catalog_commit(cs->cat) : (cloud_catalog_rollback(cs->cat), rc);
	cloud_catalog_unlock(cs->cat);
	if (rc == 0) {
		d->id = 0;
		d->cur_ok = false;
	}
	pthread_rwlock_unlock(&d->files);
	if (rc == 0) {
		/* A crash from here on leaves orphans that open() removes. */
		rc = delete_objects(cs, id);
		LOG_INFO("cloud", "msg=\"database deleted\" cluster=%s db=%s", d->cluster, d->name);
	}
	return rc;
}

int cloud_db_delete(struct cloud_store *cs, const char *cluster, const char *db)
{
	struct cdb *d;
	int rc = store_lookup(cs, cluster, db, &d);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&d->mu);
	rc = delete_locked(cs, d);
	pthread_mutex_unlock(&d->mu);
	return rc;
}

struct names {
	char (*v)[CLOUD_DB_NAME_MAX + 1];
	size_t n, cap;
};

static int collect_name(void *ctx, const struct cat_db *db)
{
	struct names *nm = ctx;
	if (cloud_catalog_grow((void **)&nm->v, nm->n, &nm->cap, sizeof(*nm->v)) < 0)
		return ERR_NOMEM;
	snprintf(nm->v[nm->n++], sizeof(nm->v[0]), "%s", db->name);
	return 0;
}

int cloud_cluster_purge(struct cloud_store *cs, const char *cluster)
{
	struct names nm = { 0 };
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_db_list(cs->cat, cluster, collect_name, &nm);
	cloud_catalog_unlock(cs->cat);
	for (size_t i = 0; rc == 0 && i < nm.n; i++) {
		rc = cloud_db_delete(cs, cluster, nm.v[i]);
		if (rc == ERR_CLOUD_NOT_FOUND)
			rc = 0;
	}
	free(nm.v);
	return rc;
}

/* ---- Open and close ------------------------------------------------------- */

struct sweep_ctx {
	struct cloud_store *cs;
	size_t removed;
};

/* Deletes an object that has no catalog row (an ingest or compaction
 * interrupted before its commit, or a delete interrupted after it). */
static int sweep_object(void *ctx, const char *name, uint64_t size)
{
	struct sweep_ctx *sc = ctx;
	int64_t id;
	int level;
	uint64_t lo, hi;
	struct cat_db row;
	(void)size;
	if (!cloud_meta_is_engine_name(name))
		return 0; /* not the engine's (the token store's copy) */
	if (cloud_meta_parse(name, &id) && cloud_catalog_db_get_id(sc->cs->cat, id, &row) == 0)
		return 0;
	if (cloud_object_parse(name, &id, &level, &lo, &hi) == 0 &&
	    cloud_catalog_file_exists(sc->cs->cat, id, level, lo, hi))
		return 0;
	sc->removed++;
	return sc->cs->be->ops->del(sc->cs->be, name);
}

static int empty_dir(const char *dir, struct cloud_store *cs, bool only_unknown_dbs)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -errno;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (only_unknown_dbs) {
			struct cat_db row;
			uint64_t id = strtoull(de->d_name, NULL, 16);
			if (id && id <= INT64_MAX && cloud_catalog_db_get_id(cs->cat, (int64_t)id, &row) == 0)
				continue;
		}
		unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	return 0;
}

/* Brings the disk back in line with the catalog after any crash; an
 * empty catalog is first rebuilt from the backend (cloud_rebuild.h). */
static int recover(struct cloud_store *cs)
{
	struct sweep_ctx sc = { cs, 0 };
	int rc = empty_dir(cs->tmp_dir, cs, false);
	if (rc == 0 && cloud_catalog_max_db_id(cs->cat) == 0) {
		size_t n_dbs = 0, n_files = 0, n_reused = 0;
		int64_t t0 = clock_mono_ms();
		struct cloud_catalog *hint = NULL;
		rc = cloud_rebuild_hint_open(cs->data_dir, &hint);
		if (rc == 0)
			rc = cloud_rebuild_catalog(cs->be, cs->cat, hint, &n_dbs, &n_files, &n_reused);
		cloud_rebuild_hint_done(cs->data_dir, hint);
		if (rc == 0 && n_dbs > 0)
			LOG_INFO("cloud", "msg=\"catalog rebuilt from the %s backend\" dbs=%zu objects=%zu reused=%zu ms=%" PRId64,
				 cs->be->ops->kind, n_dbs, n_files, n_reused, clock_mono_ms() - t0);
	}
	cloud_catalog_lock(cs->cat);
	if (rc == 0)
		rc = empty_dir(cs->cur_dir, cs, true);
	if (rc == 0)
		rc = cs->be->ops->list(cs->be, "", sweep_object, &sc);
	cs->next_id = cloud_catalog_max_db_id(cs->cat) + 1;
	cloud_catalog_unlock(cs->cat);
	if (sc.removed)
		LOG_INFO("cloud", "msg=\"removed orphan objects\" count=%zu", sc.removed);
	return rc;
}

static int make_dir(char *buf, size_t size, const char *parent, const char *name)
{
	if (snprintf(buf, size, "%s%s%s", parent, name[0] ? "/" : "", name) >= (int)size)
		return -ENAMETOOLONG;
	return mkdir(buf, FILEIO_DIR_MODE) < 0 && errno != EEXIST ? -errno : 0;
}

static int set_opts(struct cloud_store *cs, const struct cloud_store_opts *o)
{
	const int64_t *lv = o->levels_ms ? o->levels_ms : default_levels_ms;
	size_t n = o->levels_ms ? o->n_levels : 3;
	if (o->data_dir == NULL || strlen(o->data_dir) >= sizeof(cs->data_dir) || n > CLOUD_MAX_LEVELS)
		return ERR_INVAL;
	for (size_t i = 0; i < n; i++)
		if (lv[i] <= 0 || (i > 0 && lv[i] <= lv[i - 1]))
			return ERR_INVAL;
	snprintf(cs->data_dir, sizeof(cs->data_dir), "%s", o->data_dir);
	cs->retention_ms = o->retention_ms > 0 ? o->retention_ms : 30LL * 24 * 3600 * 1000;
	cs->n_levels = (int)n;
	cs->snap_level = (int)n + 1;
	for (size_t i = 0; i < n; i++)
		cs->levels_ms[i + 1] = lv[i];
	cs->levels_ms[n + 1] = o->snapshot_interval_ms > 0 ? o->snapshot_interval_ms : 24LL * 3600 * 1000;
	cs->max_upload_bytes = o->max_upload_bytes ? o->max_upload_bytes : 1ull << 30;
	cs->snap_ratio = o->snapshot_ratio != 0 ? o->snapshot_ratio : 4.0;
	cs->min_merge = o->min_merge >= 2 ? o->min_merge : o->min_merge == 1 ? 2 : 8;
	cs->store_lz4 = o->store_lz4;
	return 0;
}

int cloud_store_open(const struct cloud_store_opts *opts, struct cloud_store **out)
{
	struct cloud_store *cs = calloc(1, sizeof(*cs));
	char path[PATH_MAX];
	if (cs == NULL) {
		if (opts->backend)
			opts->backend->ops->close(opts->backend);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&cs->mu, NULL);
	pthread_cond_init(&cs->cond, NULL);
	int rc = set_opts(cs, opts);
	bool tightened = false;
	if (rc == 0 && (rc = fileio_private_dir(cs->data_dir, &tightened)) == 0 && tightened)
		LOG_WARN("cloud", "msg=\"the data directory was readable by other users; removed group and other "
				  "permissions\" dir=\"%s\"", cs->data_dir);
	if (rc == 0)
		rc = cloud_stage_new(CLOUD_STAGE_BYTES, &cs->stage);
	if (rc == 0)
		rc = make_dir(cs->tmp_dir, sizeof(cs->tmp_dir), cs->data_dir, "tmp");
	if (rc == 0)
		rc = make_dir(cs->cur_dir, sizeof(cs->cur_dir), cs->data_dir, "current");
	if (opts->backend) {
		cs->be = opts->backend;
	} else if (rc == 0) {
		snprintf(path, sizeof(path), "%s/objects", cs->data_dir);
		rc = cloud_backend_local_open(path, &cs->be);
	}
	if (rc == 0) {
		snprintf(path, sizeof(path), "%s/catalog.db", cs->data_dir);
		rc = cloud_catalog_open(path, &cs->cat);
	}
	if (rc == 0)
		rc = recover(cs);
	if (rc < 0) {
		LOG_ERROR("cloud", "msg=\"cannot open the store\" dir=%s err=\"%s\"", opts->data_dir ? opts->data_dir : "",
			  err_str(rc));
		cloud_store_close(cs);
		return rc;
	}
	*out = cs;
	return 0;
}

/* ---- Background work ------------------------------------------------------ */

struct db_list {
	struct cat_db *v;
	size_t n, cap;
};

static int collect_db(void *ctx, const struct cat_db *db)
{
	struct db_list *l = ctx;
	if (cloud_catalog_grow((void **)&l->v, l->n, &l->cap, sizeof(*l->v)) < 0)
		return ERR_NOMEM;
	l->v[l->n++] = *db;
	return 0;
}

int cloud_store_maintain(struct cloud_store *cs, int64_t now_ms)
{
	struct db_list l = { 0 };
	bool real_clock = now_ms == 0;
	if (real_clock)
		now_ms = clock_wall_ms();
	cloud_catalog_lock(cs->cat);
	int rc = cloud_catalog_db_list(cs->cat, NULL, collect_db, &l);
	cloud_catalog_unlock(cs->cat);
	for (size_t i = 0; i < l.n; i++) {
		struct cdb *d;
		int drc = cdb_get(cs, l.v[i].cluster, l.v[i].name, &d);
		if (drc == 0)
			drc = cloud_store_maint_db(cs, d, &l.v[i], now_ms, real_clock);
		if (rc == 0)
			rc = drc;
	}
	free(l.v);
	return rc;
}

static void *maint_thread(void *arg)
{
	struct cloud_store *cs = arg;
	int64_t tick = cs->levels_ms[1] / 2;
	tick = tick < 100 ? 100 : tick > 5000 ? 5000 : tick;
	pthread_mutex_lock(&cs->mu);
	while (!cs->stop) {
		pthread_mutex_unlock(&cs->mu);
		cloud_store_maintain(cs, 0);
		pthread_mutex_lock(&cs->mu);
		struct timespec until = clock_deadline(tick);
		if (!cs->stop)
			pthread_cond_timedwait(&cs->cond, &cs->mu, &until);
	}
	pthread_mutex_unlock(&cs->mu);
	return NULL;
}

int cloud_store_start(struct cloud_store *cs)
{
	pthread_mutex_lock(&cs->mu);
	int rc = cs->started ? 0 : pthread_create(&cs->thread, NULL, maint_thread, cs);
	if (rc == 0)
		cs->started = true;
	pthread_mutex_unlock(&cs->mu);
	return -rc;
}

void cloud_store_close(struct cloud_store *cs)
{
	if (cs == NULL)
		return;
	pthread_mutex_lock(&cs->mu);
	cs->stop = true;
	pthread_cond_broadcast(&cs->cond);
	bool started = cs->started;
	pthread_mutex_unlock(&cs->mu);
	if (started)
		pthread_join(cs->thread, NULL);
	for (struct cdb *d = cs->dbs, *next; d; d = next) {
		next = d->next;
		pagesums_clear(&d->sums);
		pthread_mutex_destroy(&d->mu);
		pthread_rwlock_destroy(&d->files);
		free(d);
	}
	for (int i = 0; i < cs->n_spools; i++)
		close(cs->spools[i]);
	cloud_catalog_close(cs->cat);
	cloud_stage_free(cs->stage);
	if (cs->be)
		cs->be->ops->close(cs->be);
	pthread_cond_destroy(&cs->cond);
	pthread_mutex_destroy(&cs->mu);
	free(cs);
}
