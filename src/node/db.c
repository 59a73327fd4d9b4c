/*
 * db.c — commit capture for one database.
 *
 * DESIGN
 *
 * Every SQLite client talks to the backing files through the FUSE mount,
 * so the node sees every write, truncate, unlink and fsync, but none of
 * the locks (the kernel arbitrates fcntl locks itself; see docs/mount.md).
 * A transaction is recognised from the file operations alone, at the exact
 * point where SQLite itself considers it committed (SQLITE-FILES.md §2.3,
 * §3.2):
 *
 *   mode       commit point seen by the node
 *   DELETE     unlink of -journal
 *   TRUNCATE   truncate of -journal to 0
 *   PERSIST    write of a zeroed header at offset 0 of -journal
 *   WAL        write that completes a valid frame whose "commit size" is
 *              non-zero (the salts match and the checksum chain holds)
 *
 * The "logical database" is the database as a new reader would see it:
 * the db file overlaid, in WAL mode, with the committed frames of the WAL.
 * Its checksum (LTX.md) is kept in pos.checksum and maintained
 * incrementally, so no commit ever reads more than the pages it changed.
 *
 * Rollback-journal modes. While a journal exists, every db write is part
 * of a transaction; before a page is first overwritten (or truncated away)
 * its current checksum is recorded in `dirty` (the pre-image checksum; 0 if
 * the page was beyond the logical end). At the commit point each dirty page
 * is re-read and compared: only pages whose checksum changed go into the
 * LTX. ROLLBACK and hot-journal recovery write the pre-images back and then
 * finalise the journal exactly like a commit (§2.3), so they produce no net
 * change and no LTX — which is the rule, not a special case. The new size
 * is the header's "in-header database size" (offset 28), because a
 * shrinking commit truncates the file only after the commit point (§2.2).
 *
 * WAL mode. The node parses the WAL as SQLite's recovery does: header,
 * salts, the cumulative checksum. When a write completes a commit frame,
 * frames mx_frame+1..k form the transaction; the latest version of each
 * page wins, pages beyond the commit size are dropped. `wal.pages` maps
 * each page committed since the last WAL reset to its frame and checksum,
 * so the pre-image checksum of a page is found without reading it again.
 * Checkpoint writes to the db file copy committed frames and so do not
 * change the logical database: with no journal present and the logical
 * header in WAL mode, db writes pass through untracked.
 *
 * Ordering (what makes every failure old-or-new, never a mix):
 *   1. build the LTX and append it as a record of the open segment
 *      (ltxlog.h: data first, record header last);
 *   2. perform the client's operation that commits (unlink, truncate,
 *      the write of the commit frame) on the backing file;
 *   3. only then advance pos, n_pages, the WAL index and clear `dirty`.
 * If 1 fails, the client's operation fails and nothing changed. If 2
 * fails, the record is cut off the segment again and the state is as
 * before (SQLite sees an I/O error and its journal or WAL still describes
 * the old state). A crash between 1 and 2 leaves a record whose pre-apply
 * equals the database: recovery (db_load) drops it. The segment is synced
 * with the client's next fsync (concurrently, on a helper thread), or by
 * the store's background flush: synchronous=FULL is durable and NORMAL
 * stays fast, as in SQLite. SQLite treats a WAL commit whose fsync fails
 * as not committed, so the state before the first unsynced WAL commit is
 * kept (db->undo) and restored when that fsync fails.
 *
 * Invariants (checked by the tests, tests/integration/test_mount.py):
 *   I1. pos.checksum == checksum of the logical database.
 *   I2. Applying ltx/ files 1..pos.txid to an empty file reproduces the
 *       logical database byte for byte.
 *   I3. Every transaction acknowledged to a client has its LTX on disk.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "base/clock.h"
#include "node/db.h"
#include "node/db_int.h"
#include "ltx/dbfile.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/fdio.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "node/node.h"
#include "node/syncrepl.h"
#include "base/sys.h"

const char *const db_kind_suffix[DB_KIND_COUNT] = { "", "-journal", "-wal", "-shm", "-pos" };
const char *const db_kind_backing[DB_KIND_COUNT] = { "db", "db-journal", "db-wal", "db-shm", NULL };

#define SQLITE_HDR_MAGIC "SQLite format 3"


static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Page size from a SQLite header (offset 16; 1 means 65536); 0 if invalid. */
static uint32_t sqlite_page_size(const uint8_t *hdr)
{
	uint32_t v = (uint32_t)hdr[16] << 8 | hdr[17];
	if (v == 1)
		v = 65536;
	return ltx_is_valid_page_size(v) ? v : 0;
}

static bool is_lock_page(const struct db *db, uint32_t pgno)
{
	return db->page_size != 0 && pgno == ltx_lock_pgno(db->page_size);
}

/* ---- Reading pages ------------------------------------------------------ */

/* Reads page pgno of the backing db file into buf; zeros beyond EOF. */
int db_read_page(struct db *db, uint32_t pgno, uint8_t *buf)
{
	off_t off = (off_t)(pgno - 1) * db->page_size;
	int n = db->db_fd < 0 ? 0 : fdio_pread_full(db->db_fd, buf, db->page_size, off);
	if (n < 0)
		return n;
	if ((uint32_t)n < db->page_size)
		memset(buf + n, 0, db->page_size - (uint32_t)n);
	return 0;
}

/* Checksum of page pgno of the logical database as of the last commit. */
int db_logical_page_checksum(struct db *db, uint32_t pgno, uint8_t *scratch, uint64_t *out)
{
	struct pgmap_entry *e;

	if (pgno > db->n_pages || is_lock_page(db, pgno)) {
		*out = 0;
		return 0;
	}
	if ((e = pgmap_get(&db->dirty, pgno)) != NULL) {
		*out = e->checksum;
		return 0;
	}
	if ((e = pgmap_get(&db->wal.pages, pgno)) != NULL) {
		*out = e->checksum;
		return 0;
	}
	int rc = db_read_page(db, pgno, scratch);
	if (rc)
		return rc;
	*out = ltx_page_checksum(pgno, scratch, db->page_size);
	return 0;
}

int db_compute_checksum_locked(struct db *db, uint64_t *out)
{
	uint64_t chk = 0;
	uint8_t *buf = db->page_size ? malloc(db->page_size) : NULL;
	if (db->page_size && !buf)
		return ERR_NOMEM;
	for (uint32_t pgno = 1; pgno <= db->n_pages; pgno++) {
		uint64_t pc;
		int rc = db_logical_page_checksum(db, pgno, buf, &pc);
		if (rc) {
			free(buf);
			return rc;
		}
		chk ^= pc;
	}
	free(buf);
	*out = LTX_CHECKSUM_FLAG | chk;
	return 0;
}

/* ---- Writing LTX files -------------------------------------------------- */

#define LTX_WBUF (1u << 16) /* the buffer of a commit's LTX writer */

/* One page change of a commit being prepared. */
struct change {
	uint32_t pgno;
	uint32_t frame;  /* WAL frame holding the new version (WAL mode) */
	uint64_t old_pc; /* 0 = page absent before */
	uint64_t new_pc; /* 0 = page absent after */
};

/* Where the new content of a page comes from. */
typedef int (*page_reader_fn)(struct db *db, void *ctx, uint32_t pgno, uint8_t *buf, uint32_t *frame);

/* A commit built and written but not yet made visible (see ordering in
 * the design comment). */
struct pending {
	bool active;
	uint64_t rec_off;      /* where its record starts in the open segment */
	uint64_t rec_end;      /* where it ends */
	struct ltx_header hdr;
	uint64_t post_checksum;
	uint64_t file_size;
	struct change *changes;
	size_t n_changes, cap_changes;
	bool new_wal_mode;
	bool wal_mode_known;
};

static void pending_free(struct pending *p)
{
	free(p->changes);
	memset(p, 0, sizeof(*p));
}

static int pending_add(struct pending *p, uint32_t pgno, uint32_t frame, uint64_t old_pc, uint64_t new_pc)
{
	if (p->n_changes == p->cap_changes) {
		size_t cap = p->cap_changes ? p->cap_changes * 2 : 64;
		struct change *c = realloc(p->changes, cap * sizeof(*c));
		if (c == NULL)
			return ERR_NOMEM;
		p->changes = c;
		p->cap_changes = cap;
	}
	p->changes[p->n_changes++] = (struct change){ pgno, frame, old_pc, new_pc };
	return 0;
}

/* Cuts a prepared record off the segment again (step 2 failed). */
static void pending_abort(struct db *db, struct pending *p)
{
	if (p->active && db->chain.log_fd >= 0 && sys_ftruncate(db->chain.log_fd, (off_t)p->rec_off) != 0)
		LOG_ERROR("db", "msg=\"cannot remove aborted LTX record\" db=%s txid=%016" PRIx64 " err=\"%s\"",
			  db->name, p->hdr.min_txid, strerror(errno));
	pending_free(p);
}

/*
 * Builds and writes the LTX of a commit whose new size is new_n_pages.
 * `keys` are the touched pages (sorted, any of them may be unchanged);
 * every page in (n_pages, new_n_pages] is included whether touched or not,
 * and pages in (new_n_pages, n_pages] are removed. old_pc_of(pgno) gives
 * the pre-image checksum, read(pgno) the new content.
 */
static int prepare_commit(struct db *db, const uint32_t *keys, size_t n_keys, uint32_t new_n_pages,
			  uint32_t new_page_size, page_reader_fn read, void *read_ctx, bool sync,
			  const struct ltx_header *wal_fields, bool full, struct pending *p)
{
	/* full: the file replaces the whole database (every page is written
	 * and the post-apply checksum is computed from the new pages alone). */
	uint32_t old_n = full ? 0 : db->n_pages;
	uint32_t ps = new_page_size;
	uint64_t chk = db->pos.txid == 0 ? LTX_CHECKSUM_FLAG : db->pos.checksum;
	uint8_t *page = NULL, *scratch = NULL;
	struct ltx_encoder *enc = NULL;
	struct sys_writer *w = NULL;
	int rc;

	memset(p, 0, sizeof(*p));

	if (db->page_size != 0 && ps != db->page_size && old_n != 0) {
		LOG_ERROR("db", "msg=\"page size change is not supported\" db=%s old=%u new=%u", db->name,
			  db->page_size, ps);
		return -EINVAL;
	}
	page = malloc(ps);
	scratch = malloc(ps);
	w = malloc(sizeof(*w) + LTX_WBUF);
	if (!page || !scratch || !w) {
		rc = ERR_NOMEM;
		goto err;
	}

	struct ltx_header h = {
		.flags = db->node->compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = ps,
		.commit = new_n_pages,
		.min_txid = db->pos.txid + 1,
		.max_txid = db->pos.txid + 1,
		.timestamp_ms = clock_wall_ms(),
		.pre_apply_checksum = db->pos.txid == 0 ? 0 : chk,
		.node_id = db->node->node_id,
	};
	if (full)
		chk = LTX_CHECKSUM_FLAG;
	if (wal_fields) {
		h.wal_offset = wal_fields->wal_offset;
		h.wal_size = wal_fields->wal_size;
		h.wal_salt1 = wal_fields->wal_salt1;
		h.wal_salt2 = wal_fields->wal_salt2;
	}
	/* The LTX bytes are appended to the open segment after a blank record
	 * header, which is written last: see ltxlog.h. */
	if (db->chain.log_fd < 0) {
		if ((rc = chain_open_segment(&db->chain, h.min_txid)) != 0)
			goto err;
		db->dir_dirty = true;
	}
	p->rec_off = db->chain.end;
	p->active = true; /* from here on, an error cuts the segment back */
	*w = (struct sys_writer){ .fd = db->chain.log_fd, .off = (off_t)(p->rec_off + LTXLOG_HDR_SIZE),
				  .cap = LTX_WBUF, .buf = (uint8_t *)(w + 1) };
	rc = ltx_encoder_new(&enc, &h, sys_writer_write, w);
	if (rc)
		goto err;

	/* Merge the touched pages with the range of new pages (old_n, new_n]. */
	uint32_t lock = ltx_lock_pgno(ps);
	size_t ki = 0;
	uint32_t next_new = old_n + 1, last_pgno = 0;
	for (;;) {
		uint32_t pgno;
		while (ki < n_keys && keys[ki] > new_n_pages && keys[ki] > old_n)
			ki++; /* touched but beyond both sizes: nothing to do */
		uint32_t kp = ki < n_keys ? keys[ki] : UINT32_MAX;
		uint32_t np = next_new <= new_n_pages ? next_new : UINT32_MAX;
		if (kp == UINT32_MAX && np == UINT32_MAX)
			break;
		if (kp <= np) {
			pgno = kp;
			ki++;
			if (kp == np)
				next_new++;
		} else {
			pgno = np;
			next_new++;
		}
		if (pgno == lock)
			continue;

		uint64_t old_pc = 0, new_pc = 0;
		uint32_t frame = 0;
		if (pgno <= old_n) {
			rc = db_logical_page_checksum(db, pgno, scratch, &old_pc);
			if (rc)
				goto err;
		}
		if (pgno <= new_n_pages) {
			rc = read(db, read_ctx, pgno, page, &frame);
			if (rc)
				goto err;
			new_pc = ltx_page_checksum(pgno, page, ps);
			if (new_pc != old_pc) {
				/* The merge of sorted keys with the new-page range
				 * yields each page once, in order: the encoder's
				 * order check must never be what stops a commit. */
				CHECK_MSG(pgno > last_pgno, "db=%s pgno=%u last_pgno=%u", db->name, pgno, last_pgno);
				last_pgno = pgno;
				rc = ltx_encoder_write_page(enc, pgno, page);
				if (rc)
					goto err;
			}
			if (pgno == 1) {
				p->new_wal_mode = page[18] == 2 && page[19] == 2;
				p->wal_mode_known = true;
			}
		}
		if (new_pc != old_pc || frame != 0) {
			rc = pending_add(p, pgno, frame, old_pc, new_pc);
			if (rc)
				goto err;
			chk = ltx_checksum_swap(chk, old_pc, new_pc);
		}
	}
	/* Pages cut off by a shrink that were not touched. */
	for (uint32_t pgno = new_n_pages + 1; pgno <= old_n; pgno++) {
		if (pgno == lock)
			continue;
		bool touched = false;
		/* keys is sorted: binary search. */
		size_t lo = 0, hi = n_keys;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (keys[mid] < pgno)
				lo = mid + 1;
			else
				hi = mid;
		}
		touched = lo < n_keys && keys[lo] == pgno;
		if (touched) {
			/* Already handled in the merge above (pgno <= old_n). */
			continue;
		}
		uint64_t old_pc;
		rc = db_logical_page_checksum(db, pgno, scratch, &old_pc);
		if (rc)
			goto err;
		rc = pending_add(p, pgno, 0, old_pc, 0);
		if (rc)
			goto err;
		chk = ltx_checksum_swap(chk, old_pc, 0);
	}
	if (new_n_pages == 0)
		chk = LTX_CHECKSUM_FLAG;

	struct ltx_trailer t;
	rc = ltx_encoder_finish(enc, chk, &t);
	if (rc)
		goto err;
	rc = sys_writer_flush(w);
	if (rc)
		goto err;
	uint64_t len = (uint64_t)w->off - p->rec_off - LTXLOG_HDR_SIZE;
	if (len > LTXLOG_MAX_RECORD) {
		rc = -EFBIG;
		goto err;
	}
	uint8_t rh[LTXLOG_HDR_SIZE];
	ltxlog_encode_hdr(rh, (uint32_t)len);
	if ((rc = sys_pwrite_all(db->chain.log_fd, rh, sizeof(rh), (off_t)p->rec_off)) != 0)
		goto err;
	if (sync && sys_fsync(db->chain.log_fd) != 0) {
		rc = -errno;
		goto err;
	}
	p->rec_end = (uint64_t)w->off;
	p->hdr = h;
	p->post_checksum = chk;
	p->file_size = len;
	ltx_encoder_free(enc);
	free(w);
	free(page);
	free(scratch);
	return 0;

err:
	LOG_ERROR("db", "msg=\"cannot write LTX file\" db=%s txid=%016" PRIx64 " err=\"%s\"", db->name,
		  db->pos.txid + 1, err_str(rc));
	ltx_encoder_free(enc);
	free(w);
	free(page);
	free(scratch);
	pending_abort(db, p);
	return rc;
}

/* Rotates a segment that grew large or old, unless a WAL commit may still
 * have to be taken back (its records must stay in one segment). */
static void maybe_rotate(struct db *db)
{
	if (!db->undo.active && chain_rotation_due(&db->chain, clock_wall_ms(), db->node->retention_ms))
		chain_close_segment(&db->chain);
}

/* The deferred commits are final: forget how to take them back. */
static void finalize_unsynced(struct db *db)
{
	db->undo.active = false;
	/* In WAL mode every commit is revocable when it lands, so this is
	 * where its segment gets its chance to rotate. */
	maybe_rotate(db);
}

int db_flush_unsynced(struct db *db)
{
	int rc = chain_sync(&db->chain);
	finalize_unsynced(db);
	return rc;
}

/* Makes a written commit visible: position, size, WAL index, verifier. */
static void pending_finish(struct db *db, struct pending *p, bool wal_commit, bool defer_sync)
{
	for (size_t i = 0; i < p->n_changes; i++) {
		struct change *c = &p->changes[i];
		if (db->verify.active && c->pgno < db->verify.cursor)
			db->verify.partial ^= c->old_pc ^ c->new_pc;
		if (wal_commit) {
			if (c->new_pc != 0 && c->frame != 0)
				pgmap_put(&db->wal.pages, c->pgno, c->frame, c->new_pc);
			else if (c->new_pc == 0)
				pgmap_del(&db->wal.pages, c->pgno);
		}
	}
	CHECK_MSG(p->hdr.min_txid == db->pos.txid + 1, "db=%s min_txid=%" PRIu64 " pos=%" PRIu64, db->name,
		  p->hdr.min_txid, db->pos.txid);
	db->pos.txid = p->hdr.max_txid;
	db->pos.checksum = p->post_checksum;
	db->pos_ts_ms = p->hdr.timestamp_ms;
	db->n_pages = p->hdr.commit;
	db->page_size = p->hdr.commit ? p->hdr.page_size : db->page_size;
	if (p->wal_mode_known)
		db->wal_mode = p->new_wal_mode;
	if (db->chain.oldest_txid == 0)
		db->chain.oldest_txid = p->hdr.min_txid;
	db->n_commits++;
	db->n_ltx_bytes += p->file_size;
	db->chain.end = p->rec_end;
	if (!defer_sync)
		db->chain.synced_end = p->rec_end;
	node_notify_change(db->node); /* wakes the replication streams */
	maybe_rotate(db);
	LOG_DEBUG("db", "msg=commit db=%s txid=%016" PRIx64 " pages=%zu commit=%u checksum=%016" PRIx64,
		  db->name, db->pos.txid, p->n_changes, db->n_pages, db->pos.checksum);
	pending_free(p);
}

/* Remembers the state before the first not-yet-synced WAL commit. */
static int wal_undo_save(struct db *db)
{
	if (db->undo.active)
		return 0;
	struct db_wal_undo *u = &db->undo;
	pgmap_clear(&u->pages);
	for (size_t i = 0; i < db->wal.pages.cap; i++) {
		struct pgmap_entry *e = &db->wal.pages.slots[i];
		if (e->pgno && pgmap_put(&u->pages, e->pgno, e->frame, e->checksum) != 0)
			return ERR_NOMEM;
	}
	u->pos = db->pos;
	u->pos_ts_ms = db->pos_ts_ms;
	u->n_pages = db->n_pages;
	u->wal_mode = db->wal_mode;
	u->mx_frame = db->wal.mx_frame;
	u->s0 = db->wal.s0;
	u->s1 = db->wal.s1;
	u->n_commits = db->n_commits;
	u->log_end = db->chain.end;
	u->active = true;
	return 0;
}

/* The client's sync of its WAL commit failed: SQLite will not publish the
 * commit, and its next transaction overwrites those frames. Take back
 * every capture since the last successful sync. */
static void wal_undo_restore(struct db *db)
{
	struct db_wal_undo *u = &db->undo;
	if (!u->active)
		return;
	LOG_WARN("db", "msg=\"WAL sync failed; the commits since the last sync are taken back\" db=%s txid=%016" PRIx64
		       " back_to=%016" PRIx64, db->name, db->pos.txid, u->pos.txid);
	struct pgmap tmp = db->wal.pages;
	db->wal.pages = u->pages;
	u->pages = tmp;
	db->pos = u->pos;
	db->pos_ts_ms = u->pos_ts_ms;
	db->n_pages = u->n_pages;
	db->wal_mode = u->wal_mode;
	db->wal.mx_frame = u->mx_frame;
	db->wal.s0 = u->s0;
	db->wal.s1 = u->s1;
	db->n_commits = u->n_commits;
	if (db->chain.log_fd >= 0 && db->chain.end > u->log_end) {
		if (sys_ftruncate(db->chain.log_fd, (off_t)u->log_end) != 0)
			LOG_ERROR("db", "msg=\"cannot cut back the LTX segment\" db=%s err=\"%s\"", db->name,
				  strerror(errno));
		db->chain.end = u->log_end;
		if (db->chain.synced_end > db->chain.end)
			db->chain.synced_end = db->chain.end;
	}
	if (db->verify.active)
		db->verify = (struct db_verify){ .active = true, .cursor = 1, .partial = 0 };
	u->active = false;
}

/* ---- Commits under the write lock (writelock.h) ------------------------ */

/* On a replica that holds the write lock, a prepared commit reaches the
 * primary before the client's operation: the primary stores it or the
 * commit fails (and is cut back here), so no transaction acknowledged to
 * a client is missing on the primary. On the primary: nothing to do. */
static int submit_if_replica(struct db *db, struct pending *p)
{
	if (!p->active || node_is_primary(db->node))
		return 0;
	const struct node_writelock_hooks *w = &db->node->writelock;
	int rc = w->submit ? w->submit(w->ctx, db->name, db->chain.log_fd, (off_t)(p->rec_off + LTXLOG_HDR_SIZE),
				       (uint32_t)p->file_size)
			   : -EROFS;
	if (rc)
		pending_abort(db, p);
	return rc;
}

/* ---- Rollback-journal capture ------------------------------------------ */

static int read_db_new(struct db *db, void *ctx, uint32_t pgno, uint8_t *buf, uint32_t *frame)
{
	(void)ctx;
	*frame = 0;
	return db_read_page(db, pgno, buf);
}

/*
 * Called at a rollback-journal commit point, before the client's operation
 * is performed. Prepares the LTX of the net change since the last commit
 * (none for a rollback). *p->active tells whether there is one.
 */
static int prepare_rollback_commit(struct db *db, struct pending *p)
{
	uint8_t hdr[100];
	uint32_t new_n, ps;
	uint32_t *keys = NULL;
	size_t n_keys = 0;
	int rc;

	memset(p, 0, sizeof(*p));
	if (db->dirty.count == 0 || db->db_fd < 0)
		return 0;

	int n = fdio_pread_full(db->db_fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return n;
	if (n < (int)sizeof(hdr) || memcmp(hdr, SQLITE_HDR_MAGIC, 16) != 0 || (ps = sqlite_page_size(hdr)) == 0) {
		/* Rolled back to an empty database, or never became one. */
		struct stat st;
		if (fstat(db->db_fd, &st) == 0 && st.st_size == 0 && db->n_pages == 0) {
			pgmap_clear(&db->dirty);
			return 0;
		}
		LOG_ERROR("db", "msg=\"database header is not valid at commit\" db=%s", db->name);
		return -EIO;
	}
	new_n = be32(hdr + 28);
	if (new_n == 0 || be32(hdr + 24) != be32(hdr + 92)) {
		struct stat st;
		if (fstat(db->db_fd, &st) != 0)
			return -errno;
		new_n = (uint32_t)(st.st_size / ps);
	}
	if (db->page_size == 0)
		db->page_size = ps;

	rc = pgmap_sorted_keys(&db->dirty, &keys, &n_keys);
	if (rc)
		return rc;
	rc = prepare_commit(db, keys, n_keys, new_n, ps, read_db_new, NULL, false, NULL, false, p);
	free(keys);
	if (rc)
		return rc;
	if (p->n_changes == 0 && new_n == db->n_pages) {
		/* No net change: a rollback. Discard the empty LTX. */
		pending_abort(db, p);
		pgmap_clear(&db->dirty);
	}
	return submit_if_replica(db, p);
}

/* Records pre-image checksums of the pages in [first, last] not yet dirty. */
static int track_pages(struct db *db, uint32_t first, uint32_t last)
{
	uint8_t *scratch = NULL;
	int rc = 0;

	for (uint32_t pgno = first; pgno <= last; pgno++) {
		if (pgmap_get(&db->dirty, pgno))
			continue;
		uint64_t pc = 0;
		if (pgno <= db->n_pages && !is_lock_page(db, pgno)) {
			if (scratch == NULL && (scratch = malloc(db->page_size)) == NULL) {
				rc = ERR_NOMEM;
				break;
			}
			rc = db_logical_page_checksum(db, pgno, scratch, &pc);
			if (rc)
				break;
		}
		rc = pgmap_put(&db->dirty, pgno, 0, pc);
		if (rc)
			break;
	}
	free(scratch);
	return rc;
}

/* ---- WAL capture -------------------------------------------------------- */

static void wal_checksum(bool big_endian, const uint8_t *p, size_t n, uint32_t *s0, uint32_t *s1)
{
	uint32_t a = *s0, b = *s1;
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint32_t x0 = big_endian ? be32(p + i) : le32(p + i);
		uint32_t x1 = big_endian ? be32(p + i + 4) : le32(p + i + 4);
		a += x0 + b;
		b += x1 + a;
	}
	*s0 = a;
	*s1 = b;
}

void db_wal_reset_state(struct db *db)
{
	db->wal.valid = false;
	db->wal.mx_frame = 0;
	pgmap_clear(&db->wal.pages);
}

/* A read of the WAL that sees the bytes of an in-flight write (not yet on
 * the backing file) where they overlap. Only the parts outside the write
 * are read from the file: a frame whose last bytes are the write costs one
 * pread, not a short one and a second that finds the end of the file. */
struct wal_view {
	int fd;
	const uint8_t *wbuf;
	off_t woff;
	size_t wlen;
	struct pgmap frames; /* pgno -> latest frame in the transaction */
	uint32_t last_frame; /* the frame whose page last_page holds (0: none) */
	const uint8_t *last_page;
};

/* Reads [off, off + n) of the backing file into dst; bytes past its end
 * are zeros. Returns the bytes read or a negative error. */
static int wal_file_read(const struct wal_view *v, uint8_t *dst, size_t n, off_t off)
{
	int got = n == 0 ? 0 : fdio_pread_full(v->fd, dst, n, off);
	if (got >= 0 && (size_t)got < n)
		memset(dst + got, 0, n - (size_t)got);
	return got;
}

static int wal_view_read(struct wal_view *v, uint8_t *dst, size_t n, off_t off)
{
	off_t end = off + (off_t)n, wend = v->woff + (off_t)v->wlen;
	off_t lo = off > v->woff ? off : v->woff;
	off_t hi = end < wend ? end : wend;
	if (lo >= hi) {
		/* Not touched by the write: all of it must be in the file. */
		int got = wal_file_read(v, dst, n, off);
		return got < 0 ? got : (size_t)got < n ? ERR_IO_SHORT : 0;
	}
	/* Before the write, the write, after it (zeros past the file's end,
	 * as the write extends it). */
	int got = wal_file_read(v, dst, (size_t)(lo - off), off);
	if (got >= 0)
		got = wal_file_read(v, dst + (hi - off), (size_t)(end - hi), hi);
	if (got < 0)
		return got;
	memcpy(dst + (lo - off), v->wbuf + (lo - v->woff), (size_t)(hi - lo));
	return 0;
}

off_t db_wal_frame_off(const struct db *db, uint32_t frame)
{
	return WAL_HDR_SIZE + (off_t)(frame - 1) * (WAL_FRAME_HDR_SIZE + db->wal.page_size);
}

static int read_wal_new(struct db *db, void *ctx, uint32_t pgno, uint8_t *buf, uint32_t *frame)
{
	struct wal_view *v = ctx;
	struct pgmap_entry *e = pgmap_get(&v->frames, pgno);
	if (e == NULL) {
		/* A page inside the new size that the transaction did not write:
		 * the logical content is what a reader would read. */
		struct pgmap_entry *we = pgmap_get(&db->wal.pages, pgno);
		*frame = 0;
		if (we == NULL)
			return db_read_page(db, pgno, buf);
		return wal_view_read(v, buf, db->page_size, db_wal_frame_off(db, we->frame) + WAL_FRAME_HDR_SIZE);
	}
	*frame = e->frame;
	if (e->frame == v->last_frame && db->page_size == db->wal.page_size) {
		/* Read and checked moments ago by prepare_wal_write's walk. */
		memcpy(buf, v->last_page, db->page_size);
		return 0;
	}
	return wal_view_read(v, buf, db->page_size, db_wal_frame_off(db, e->frame) + WAL_FRAME_HDR_SIZE);
}

/*
 * Called for a write to -wal before it reaches the backing file. If the
 * write completes a valid commit frame, prepares the transaction's LTX.
 * Returns 0 (p->active says whether a commit is pending) or an error.
 */
static int prepare_wal_write(struct db *db, int fd, const uint8_t *buf, size_t len, off_t off, struct pending *p,
			     uint32_t *commit_frame, uint32_t *cs0, uint32_t *cs1)
{
	memset(p, 0, sizeof(*p));

	if (off == 0 && len >= WAL_HDR_SIZE) {
		uint32_t magic = be32(buf);
		if (magic != 0x377f0682 && magic != 0x377f0683)
			return 0;
		bool big = magic == 0x377f0683;
		uint32_t s0 = 0, s1 = 0;
		wal_checksum(big, buf, 24, &s0, &s1);
		if (s0 != be32(buf + 24) || s1 != be32(buf + 28))
			return 0;
		uint32_t ps = be32(buf + 8);
		if (!ltx_is_valid_page_size(ps))
			return 0;
		/* A new WAL generation: everything before it was checkpointed. */
		db_flush_unsynced(db);
		db_wal_reset_state(db);
		db->wal.valid = true;
		db->wal.big_endian = big;
		db->wal.page_size = ps;
		db->wal.salt1 = be32(buf + 16);
		db->wal.salt2 = be32(buf + 20);
		db->wal.s0 = s0;
		db->wal.s1 = s1;
		return 0;
	}
	if (!db->wal.valid)
		return 0;

	uint32_t fsz = WAL_FRAME_HDR_SIZE + db->wal.page_size;
	off_t end = off + (off_t)len;
	if (end <= WAL_HDR_SIZE || (end - WAL_HDR_SIZE) % fsz != 0)
		return 0;
	uint32_t k = (uint32_t)((end - WAL_HDR_SIZE) / fsz);
	if (k <= db->wal.mx_frame)
		return 0;

	struct wal_view v = { .fd = fd, .wbuf = buf, .woff = off, .wlen = len };
	pgmap_init(&v.frames);
	uint8_t fh[WAL_FRAME_HDR_SIZE];
	uint8_t *frame = NULL, *page = NULL; /* page: inside frame, after its header */
	uint32_t *keys = NULL;
	size_t n_keys = 0;
	int rc = wal_view_read(&v, fh, sizeof(fh), db_wal_frame_off(db, k));
	if (rc)
		goto out;
	uint32_t commit = be32(fh + 4);
	if (commit == 0 || be32(fh + 8) != db->wal.salt1 || be32(fh + 12) != db->wal.salt2)
		goto out; /* not a commit frame (or a stale one) */

	/* Walk the transaction's frames, checking the chain as recovery does;
	 * each frame (header and page) is one read. */
	frame = malloc(fsz);
	if (frame == NULL) {
		rc = ERR_NOMEM;
		goto out;
	}
	page = frame + WAL_FRAME_HDR_SIZE;
	uint32_t s0 = db->wal.s0, s1 = db->wal.s1;
	for (uint32_t f = db->wal.mx_frame + 1; f <= k; f++) {
		off_t fo = db_wal_frame_off(db, f);
		v.last_frame = 0;
		if ((rc = wal_view_read(&v, frame, fsz, fo)) != 0)
			goto out;
		memcpy(fh, frame, sizeof(fh));
		uint32_t pgno = be32(fh);
		if (pgno == 0 || be32(fh + 8) != db->wal.salt1 || be32(fh + 12) != db->wal.salt2) {
			rc = -EIO;
			LOG_ERROR("db", "msg=\"WAL frame does not belong to this WAL\" db=%s frame=%u", db->name, f);
			goto out;
		}
		wal_checksum(db->wal.big_endian, fh, 8, &s0, &s1);
		wal_checksum(db->wal.big_endian, page, db->wal.page_size, &s0, &s1);
		if (s0 != be32(fh + 16) || s1 != be32(fh + 20)) {
			rc = -EIO;
			LOG_ERROR("db", "msg=\"WAL checksum chain broken at commit\" db=%s frame=%u", db->name, f);
			goto out;
		}
		if (f < k && be32(fh + 4) != 0) {
			rc = -EIO;
			LOG_ERROR("db", "msg=\"uncaptured WAL commit frame\" db=%s frame=%u", db->name, f);
			goto out;
		}
		if ((rc = pgmap_put(&v.frames, pgno, f, 0)) != 0)
			goto out;
		v.last_frame = f;
		v.last_page = page;
	}
	if ((rc = pgmap_sorted_keys(&v.frames, &keys, &n_keys)) != 0)
		goto out;
	if (db->page_size == 0)
		db->page_size = db->wal.page_size;
	struct ltx_header wf = {
		.wal_offset = db_wal_frame_off(db, db->wal.mx_frame + 1),
		.wal_size = (int64_t)(k - db->wal.mx_frame) * fsz,
		.wal_salt1 = db->wal.salt1,
		.wal_salt2 = db->wal.salt2,
	};
	rc = prepare_commit(db, keys, n_keys, commit, db->wal.page_size, read_wal_new, &v, false, &wf, false, p);
	if (rc == 0)
		rc = submit_if_replica(db, p);
	if (rc)
		goto out;
	*commit_frame = k;
	*cs0 = s0;
	*cs1 = s1;
out:
	free(keys);
	free(frame);
	pgmap_free(&v.frames);
	return rc;
}

void db_invalidate_names(struct db *db)
{
	const struct node_fuse_hooks *hk = &db->node->hooks;
	if (hk->inval_entry == NULL)
		return;
	char name[300];
	for (int k = 0; k < DB_KIND_COUNT; k++) {
		snprintf(name, sizeof(name), "%s%s", db->name, db_kind_suffix[k]);
		hk->inval_entry(hk->ctx, name);
	}
}

/* ---- FUSE-facing operations --------------------------------------------- */


int db_open_backing(struct db *db, enum db_kind kind, int flags)
{
	int fd = openat(db->dir_fd, db_kind_backing[kind], flags | O_CLOEXEC, FILEIO_FILE_MODE);
	return fd < 0 ? -errno : fd;
}

/* Re-creates data/dbs/<name>/ltx of a forgotten database (db->mu held). */
static int ensure_dir_locked(struct db *db)
{
	if (!db->dir_removed)
		return 0;
	int dbs_fd = db->node->dbs_fd;
	if (mkdirat(dbs_fd, db->name, FILEIO_DIR_MODE) != 0 && errno != EEXIST)
		return -errno;
	int dir_fd = openat(dbs_fd, db->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -errno;
	int rc = chain_open_dir(&db->chain, dir_fd);
	if (rc) {
		close(dir_fd);
		return rc;
	}
	close(db->dir_fd);
	db->dir_fd = dir_fd;
	db->dir_removed = false;
	db->dir_dirty = true;
	return 0;
}

int db_ensure_dir(struct db *db)
{
	lockwatch_lock(&db->mu, "ensure_dir");
	int rc = ensure_dir_locked(db);
	lockwatch_unlock(&db->mu);
	return rc;
}

/*
 * A database that create() made but nothing ever wrote is not a database
 * yet: it is what a refused copy (`cp notes.txt`, or a direct copy of a
 * database, whose first write is refused) leaves behind, or a client that
 * opened a new name only to read. Once no handle is open it is forgotten:
 * its empty file goes (no LTX: the logical database was empty and stays
 * so), and when it has no history at all its directory goes too, so it is
 * neither listed, nor counted, nor loaded at the next start. SQLite itself
 * creates a database file empty and writes it later through the same
 * connection, which keeps a handle open meanwhile. Returns true if it was
 * forgotten (db->mu held).
 */
static bool forget_if_unwritten_locked(struct db *db)
{
	struct stat st;
	if (db->n_handles != 0 || db->exists[DB_KIND_JOURNAL] || db->exists[DB_KIND_WAL] || db->n_pages != 0 ||
	    db->dirty.count != 0)
		return false;
	bool forgot = false;
	if (db->exists[DB_KIND_DB]) {
		if (db->db_fd < 0 || fstat(db->db_fd, &st) != 0 || st.st_size != 0)
			return false;
		if (unlinkat(db->dir_fd, db_kind_backing[DB_KIND_DB], 0) != 0 && errno != ENOENT) {
			LOG_WARN("db", "msg=\"cannot remove an empty database file\" db=%s err=\"%s\"", db->name,
				 strerror(errno));
			return false;
		}
		db_forget_files(db);
		db->dir_dirty = true;
		db->forgotten = true;
		forgot = true;
		LOG_INFO("db", "msg=\"forgot a database that was created but never written\" db=%s", db->name);
	}
	/* A name without any history (never written, or removed before its
	 * first transaction) keeps no directory. rmdir fails on an ltx/ that
	 * holds anything, which keeps history. */
	if (db->pos.txid == 0 && !db->dir_removed && unlinkat(db->dir_fd, "ltx", AT_REMOVEDIR) == 0) {
		unlinkat(db->dir_fd, "clean", 0);
		unlinkat(db->dir_fd, db_kind_backing[DB_KIND_SHM], 0);
		if (unlinkat(db->node->dbs_fd, db->name, AT_REMOVEDIR) == 0)
			db->dir_removed = true;
	}
	return forgot;
}

int db_open_file(struct db *db, enum db_kind kind, bool create, bool for_write)
{
	int fd;

	if (kind == DB_KIND_POS && for_write)
		return -EACCES;
	lockwatch_lock(&db->mu, "open");
	/* A client that looked the name up just before it was forgotten opens
	 * the inode the kernel still caches, maybe with O_CREAT, which FUSE
	 * does not pass on: it gets the empty database it would have made. */
	if (kind == DB_KIND_DB && db->forgotten)
		create = true;
	if (!db->exists[kind == DB_KIND_POS ? DB_KIND_DB : kind] && !create) {
		lockwatch_unlock(&db->mu);
		return -ENOENT;
	}
	if (kind == DB_KIND_POS) {
		db->n_handles++;
		lockwatch_unlock(&db->mu);
		return 0;
	}
	if (kind != DB_KIND_DB && !db->exists[DB_KIND_DB]) {
		lockwatch_unlock(&db->mu);
		return -ENOENT;
	}
	if (kind == DB_KIND_DB && for_write && db->write_refused) {
		lockwatch_unlock(&db->mu);
		return -EROFS;
	}
	if (create && (fd = ensure_dir_locked(db)) != 0) {
		lockwatch_unlock(&db->mu);
		return fd;
	}
	fd = db_open_backing(db, kind, O_RDWR | (create ? O_CREAT : 0));
	if (fd >= 0 && !db->exists[kind]) {
		db->exists[kind] = true;
		db->dir_dirty = true;
		db->generation[kind]++;
		if (kind == DB_KIND_DB && db->db_fd < 0)
			db->db_fd = db_open_backing(db, DB_KIND_DB, O_RDWR);
		if (kind == DB_KIND_DB)
			db->forgotten = false;
	}
	if (fd >= 0)
		db->n_handles++;
	lockwatch_unlock(&db->mu);
	return fd;
}

void db_close_file(struct db *db, enum db_kind kind, int fd)
{
	if (kind != DB_KIND_POS && fd >= 0)
		close(fd);
	lockwatch_lock(&db->mu, "release");
	db->n_handles--;
	bool forgotten = forget_if_unwritten_locked(db);
	lockwatch_unlock(&db->mu);
	if (forgotten) {
		db_invalidate_names(db);
		node_notify_change(db->node);
	}
}

void db_pos_text(struct db *db, char *buf)
{
	lockwatch_lock(&db->mu, "pos");
	ltx_format_pos(buf, db->pos);
	lockwatch_unlock(&db->mu);
	size_t n = strlen(buf);
	buf[n] = '\n';
	buf[n + 1] = '\0';
}

ssize_t db_read(struct db *db, enum db_kind kind, int fd, void *buf, size_t len, off_t off)
{
	if (kind == DB_KIND_POS) {
		char text[LTX_POS_STR_LEN + 2];
		db_pos_text(db, text);
		size_t n = strlen(text);
		if ((size_t)off >= n)
			return 0;
		if (len > n - (size_t)off)
			len = n - (size_t)off;
		memcpy(buf, text + off, len);
		return (ssize_t)len;
	}
	int n = fdio_pread_full(fd, buf, len, off);
	return n;
}

/* Writes to the database file (rollback transaction or checkpoint). */
static int journal_pt_check(struct db *db);

static ssize_t write_db(struct db *db, int fd, const uint8_t *buf, size_t len, off_t off)
{
	uint32_t ps = db->page_size;
	int rc;

	if (db->write_refused) {
		LOG_WARN("db", "msg=\"write refused: database failed verification\" db=%s", db->name);
		return -EROFS;
	}
	if (ps == 0 && off != 0 && db->exists[DB_KIND_JOURNAL]) {
		/* A brand-new database whose first transaction spills pages
		 * before page 1 (SQLite keeps page 1 pinned): the journal's
		 * header, written before any db write, has the page size. */
		uint8_t jh[28];
		int jfd = db_open_backing(db, DB_KIND_JOURNAL, O_RDONLY);
		if (jfd >= 0) {
			if (fdio_pread_full(jfd, jh, sizeof(jh), 0) == (int)sizeof(jh))
				ps = be32(jh + 24);
			close(jfd);
		}
		if (!ltx_is_valid_page_size(ps))
			ps = 0;
	}
	if (ps == 0) {
		/* A brand-new database: the first write must be a SQLite header. */
		if (off != 0 || len < 100 || memcmp(buf, SQLITE_HDR_MAGIC, 16) != 0 ||
		    (ps = sqlite_page_size(buf)) == 0) {
			LOG_WARN("db", "msg=\"refused: not a SQLite database (bad header)\" db=%s off=%lld len=%zu",
				 db->name, (long long)off, len);
			return -EINVAL;
		}
	}
	if (off % ps != 0 || len % ps != 0) {
		LOG_WARN("db", "msg=\"refused: write is not a whole number of pages\" db=%s off=%lld len=%zu page_size=%u",
			 db->name, (long long)off, len, ps);
		return -EINVAL;
	}
	if (off == 0 && (memcmp(buf, SQLITE_HDR_MAGIC, 16) != 0 || sqlite_page_size(buf) != ps)) {
		LOG_WARN("db", "msg=\"refused: page 1 is not a valid SQLite header or changes the page size\" db=%s",
			 db->name);
		return -EINVAL;
	}
	if (db->exists[DB_KIND_JOURNAL]) {
		if ((rc = journal_pt_check(db)) != 0)
			return rc;
		if (db->page_size == 0)
			db->page_size = ps;
		uint32_t first = (uint32_t)(off / ps) + 1;
		uint32_t last = first + (uint32_t)(len / ps) - 1;
		if ((rc = track_pages(db, first, last)) != 0)
			return rc;
	} else if (!db->wal_mode) {
		LOG_WARN("db", "msg=\"refused: database write outside a transaction (journal_mode MEMORY/OFF and "
			       "direct writes are not supported; use litefs import)\" db=%s", db->name);
		/* "Operation not supported" tells a user of cp what happened;
		 * EPERM's "not permitted" sent them looking at permissions. */
		return -ENOTSUP;
	}
	/* else: a WAL checkpoint copying committed frames; no logical change. */
	rc = sys_pwrite_all(fd, buf, len, off);
	return rc ? rc : (ssize_t)len;
}

/*
 * A -journal written through FUSE passthrough (db->journal_pt > 0) is
 * finalised by zeroing its header in PERSIST mode and with
 * locking_mode=EXCLUSIVE, and the node does not see that write. Called
 * under db->mu whenever the node gets control on such a database (the
 * journal's fsync and release, every db write): a zeroed header, or a
 * header of another transaction (its random nonce differs), means the
 * transaction whose pages are dirty ended, so it is committed now (a
 * rollback makes no net change, as always), and the database gets no
 * journal passthrough again. With no dirty page it notes the nonce.
 */
static int journal_pt_check(struct db *db)
{
	uint8_t h[16];
	if (db->journal_pt == 0)
		return 0;
	int jfd = db_open_backing(db, DB_KIND_JOURNAL, O_RDONLY);
	if (jfd < 0)
		return 0; /* gone: its unlink was the commit point */
	int n = fdio_pread_full(jfd, h, sizeof(h), 0);
	close(jfd);
	uint32_t magic = n == (int)sizeof(h) ? be32(h) : 0, nonce = n == (int)sizeof(h) ? be32(h + 12) : 0;
	if (db->dirty.count == 0 || (magic != 0 && (db->journal_nonce == 0 || nonce == db->journal_nonce))) {
		if (db->dirty.count == 0)
			db->journal_nonce = nonce;
		return 0;
	}
	struct pending p;
	int rc = prepare_rollback_commit(db, &p);
	if (rc)
		return rc;
	if (p.active)
		pending_finish(db, &p, false, true);
	pgmap_clear(&db->dirty);
	db->journal_nonce = magic != 0 ? nonce : 0;
	if (!db->journal_zeroes)
		LOG_INFO("db", "msg=\"the journal is finalised by zeroing its header (PERSIST or locking_mode=EXCLUSIVE); "
			       "its writes go through the node again from its next open\" db=%s", db->name);
	db->journal_zeroes = true;
	return 0;
}

bool db_journal_pass_ok(struct db *db, int fd)
{
	struct stat st;
	lockwatch_lock(&db->mu, "open");
	bool ok = !db->journal_zeroes && fstat(fd, &st) == 0 && st.st_size == 0;
	lockwatch_unlock(&db->mu);
	return ok;
}

void db_journal_pass_count(struct db *db, int delta)
{
	lockwatch_lock(&db->mu, "release");
	if (delta < 0 && journal_pt_check(db) != 0)
		LOG_WARN("db", "msg=\"cannot record a transaction committed by zeroing the journal header; retried at "
			       "the next operation\" db=%s", db->name);
	db->journal_pt += delta;
	lockwatch_unlock(&db->mu);
}

/*
 * Synchronous replication of a rollback-journal commit (db->mu released:
 * the streams read the chain under it). Such a commit returns to SQLite
 * with the operation that committed it (the unlink, truncate or header
 * write of -journal), so the wait is here. A timeout with
 * on_timeout=fail cannot take the commit back — the journal is already
 * finalised and the record streamed — so the caller reports EIO about a
 * transaction that stands: SQLite says "disk I/O error", and the outcome
 * is unknown to the client, as after a lost reply (docs/replication.md).
 * Returns 0 or ERR_REPL_SYNC_TIMEOUT.
 */
static int commit_wait_rollback(struct db *db, uint64_t txid_before, uint64_t txid_after)
{
	if (!db->node->sync || txid_after <= txid_before)
		return 0;
	int rc = syncrepl_wait(db->node->sync, db->id, db->name, txid_after);
	if (rc != 0)
		LOG_WARN("db", "msg=\"synchronous replication timed out; the rollback-journal commit stands on this "
			       "node but SQLite is told it failed (I/O error)\" db=%s txid=%016" PRIx64,
			 db->name, txid_after);
	return rc;
}

static ssize_t write_journal(struct db *db, int fd, const uint8_t *buf, size_t len, off_t off)
{
	struct pending p;
	int rc;
	/* PERSIST mode commits by zeroing the header's magic (§2.3). */
	bool zeroes_magic = off == 0 && len >= 4 && buf[0] == 0 && buf[1] == 0 && buf[2] == 0 && buf[3] == 0;
	if (zeroes_magic) {
		if ((rc = prepare_rollback_commit(db, &p)) != 0)
			return rc;
	} else {
		memset(&p, 0, sizeof(p));
	}
	rc = sys_pwrite_all(fd, buf, len, off);
	if (rc) {
		if (p.active)
			pending_abort(db, &p);
		return rc;
	}
	if (p.active)
		pending_finish(db, &p, false, true);
	if (zeroes_magic)
		pgmap_clear(&db->dirty);
	return (ssize_t)len;
}

static ssize_t write_wal(struct db *db, int fd, const uint8_t *buf, size_t len, off_t off)
{
	struct pending p;
	uint32_t frame = 0, s0 = 0, s1 = 0;
	int rc = prepare_wal_write(db, fd, buf, len, off, &p, &frame, &s0, &s1);
	if (rc)
		return rc;
	/* Everything that can fail does so before the commit frame reaches
	 * the WAL (ordering step 2): the undo state, and room in the WAL
	 * index so that pending_finish() cannot fail. */
	if (frame != 0 && ((rc = wal_undo_save(db)) != 0 || (rc = pgmap_reserve(&db->wal.pages, p.n_changes)) != 0)) {
		if (p.active)
			pending_abort(db, &p);
		return rc;
	}
	rc = sys_pwrite_all(fd, buf, len, off);
	if (rc) {
		if (p.active)
			pending_abort(db, &p);
		return rc;
	}
	if (frame != 0) {
		db->wal.mx_frame = frame;
		db->wal.s0 = s0;
		db->wal.s1 = s1;
		if (p.active)
			pending_finish(db, &p, true, true);
		db->wal_commit_unsynced = true;
	} else {
		db->wal_commit_unsynced = false;
	}
	return (ssize_t)len;
}

/* WAL-index regions are this large (SQLite's WALINDEX_PGSZ). */
#define SHM_REGION_SIZE 32768

/*
 * Allocates the backing -shm's blocks up to end rounded up to a whole
 * wal-index region, without changing its size, when a write or truncate
 * grows it. Clients map -shm through the mount; their stores reach the
 * backing file only at writeback, whose failure nobody sees: on a full
 * file system (or one whose blocks are smaller than a page, where SQLite's
 * one-byte-per-page extension leaves holes) the wal-index would silently
 * lose what the pages held once they left the page cache. Allocated when
 * SQLite extends the file, a full disk fails the extension instead, which
 * SQLite reports (SQLITE_IOERR_SHMSIZE) rather than mapping. Returns 0 or
 * -errno (-ENOSPC); a file system without fallocate keeps the old
 * behaviour.
 */
static int shm_reserve(int fd, off_t end)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -errno;
	if (end <= st.st_size)
		return 0;
	off_t want = (end + SHM_REGION_SIZE - 1) / SHM_REGION_SIZE * SHM_REGION_SIZE;
	/* From 0: a -shm left sparse by a crash is filled in too. */
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, want) != 0 && errno != EOPNOTSUPP)
		return -errno;
	return 0;
}

/* Fencing at the commit point: a write that can commit (database, WAL,
 * journal) is refused once this node is not the primary or its lease
 * deadline passed (node_may_write, monotonic clock), whenever its file
 * was opened. A primary frozen past its deadline thus refuses the very
 * first write after it wakes; lease.c logs why (docs/lease.md).
 * Checked under db.mu, so the check and the commit it allows are one step
 * as db_pos() sees them: once the fence is set, the next db_pos() (which
 * takes db.mu) returns the final position, and no commit follows it. The
 * handoff relies on this (lease.c). */
static bool fenced(struct db *db, enum db_kind kind)
{
	if (kind == DB_KIND_SHM || kind == DB_KIND_POS || node_may_write_db(db->node, db->name))
		return false;
	atomic_fetch_add(&db->node->fenced_writes, 1);
	LOG_DEBUG("db", "msg=\"write refused: this node may not commit (not the primary, or its lease deadline "
			"passed)\" db=%s", db->name);
	return true;
}

ssize_t db_write(struct db *db, enum db_kind kind, int fd, const void *buf, size_t len, off_t off)
{
	ssize_t rc;
	if (kind == DB_KIND_POS)
		return -EACCES;
	lockwatch_lock(&db->mu, "write");
	if (fenced(db, kind)) {
		lockwatch_unlock(&db->mu);
		return -EROFS;
	}
	const uint64_t txid_before = db->pos.txid;
	if (db->write_refused && kind == DB_KIND_WAL) {
		/* A connection opened before verification failed keeps writing
		 * the WAL: its commits would be captured on top of a checksum
		 * the file does not have (I1), and replicated. */
		lockwatch_unlock(&db->mu);
		LOG_WARN("db", "msg=\"write refused: database failed verification\" db=%s", db->name);
		return -EROFS;
	}
	switch (kind) {
	case DB_KIND_DB:
		rc = write_db(db, fd, buf, len, off);
		break;
	case DB_KIND_JOURNAL:
		rc = write_journal(db, fd, buf, len, off);
		break;
	case DB_KIND_WAL:
		rc = write_wal(db, fd, buf, len, off);
		break;
	default: {
		int r = shm_reserve(fd, off + (off_t)len);
		if (r == 0)
			r = sys_pwrite_all(fd, buf, len, off);
		rc = r ? r : (ssize_t)len;
	}
	}
	const uint64_t txid_after = db->pos.txid;
	lockwatch_unlock(&db->mu);
	if (kind == DB_KIND_JOURNAL && rc >= 0 && commit_wait_rollback(db, txid_before, txid_after) != 0)
		rc = -EIO;
	if (rc == -ENOSPC && kind == DB_KIND_SHM)
		LOG_WARN("db", "msg=\"no space to extend -shm\" db=%s size=%lld", db->name, (long long)(off + (off_t)len));
	return rc;
}

static int truncate_backing(struct db *db, enum db_kind kind, off_t size)
{
	int fd = db_open_backing(db, kind, O_WRONLY);
	if (fd < 0)
		return fd;
	int rc = kind == DB_KIND_SHM ? shm_reserve(fd, size) : 0;
	if (rc == 0)
		rc = sys_ftruncate(fd, size) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}

int db_truncate(struct db *db, enum db_kind kind, off_t size)
{
	struct pending p;
	int rc = 0;

	if (kind == DB_KIND_POS)
		return -EACCES;
	lockwatch_lock(&db->mu, "truncate");
	if (fenced(db, kind)) {
		lockwatch_unlock(&db->mu);
		return -EROFS;
	}
	const uint64_t txid_before = db->pos.txid;
	switch (kind) {
	case DB_KIND_DB: {
		uint32_t ps = db->page_size;
		if (db->write_refused) {
			rc = -EROFS;
			break;
		}
		if (ps == 0) {
			rc = size == 0 ? truncate_backing(db, kind, 0) : -EINVAL;
			break;
		}
		if (db->exists[DB_KIND_JOURNAL]) {
			/* Inside a transaction (or hot-journal rollback): remember the
			 * pre-images of the pages being cut off. */
			uint32_t keep = (uint32_t)((size + ps - 1) / ps);
			if (keep < db->n_pages && (rc = track_pages(db, keep + 1, db->n_pages)) != 0)
				break;
		} else if (!db->wal_mode && size < (off_t)db->n_pages * ps) {
			LOG_WARN("db", "msg=\"refused: truncate below the committed size outside a transaction\" db=%s size=%lld",
				 db->name, (long long)size);
			rc = -EPERM;
			break;
		}
		rc = truncate_backing(db, kind, size);
		break;
	}
	case DB_KIND_JOURNAL:
		if (size == 0) {
			/* TRUNCATE mode's commit point. */
			if ((rc = prepare_rollback_commit(db, &p)) != 0)
				break;
			rc = truncate_backing(db, kind, 0);
			if (rc) {
				if (p.active)
					pending_abort(db, &p);
				break;
			}
			if (p.active)
				pending_finish(db, &p, false, true);
			pgmap_clear(&db->dirty);
		} else {
			rc = truncate_backing(db, kind, size);
		}
		break;
	case DB_KIND_WAL:
		rc = truncate_backing(db, kind, size);
		if (rc == 0 && size < WAL_HDR_SIZE) {
			db_flush_unsynced(db);
			db_wal_reset_state(db); /* TRUNCATE checkpoint: all frames are in the db */
		}
		break;
	default:
		rc = truncate_backing(db, kind, size);
	}
	const uint64_t txid_after = db->pos.txid;
	lockwatch_unlock(&db->mu);
	if (kind == DB_KIND_JOURNAL && rc == 0 && commit_wait_rollback(db, txid_before, txid_after) != 0)
		rc = -EIO;
	return rc;
}

int db_fsync(struct db *db, enum db_kind kind, int fd)
{
	int rc;
	if (kind == DB_KIND_POS)
		return 0;
	lockwatch_lock(&db->mu, "fsync");
	const uint64_t txid_before = db->pos.txid;
	/* PERSIST and EXCLUSIVE-mode commits sync the zeroed journal header. */
	rc = kind == DB_KIND_JOURNAL ? journal_pt_check(db) : 0;
	/* The LTX files of earlier commits become durable with the client's
	 * own sync (SQLITE-FILES.md §2.7, §3.6: FULL syncs -wal after every
	 * commit; rollback modes sync the journal at the next transaction). */
	if (rc == 0)
		rc = chain_sync_alongside(&db->chain, fd);
	if (rc == 0 && kind == DB_KIND_WAL && db->wal_commit_unsynced && db->node->sync) {
		/* Synchronous replication: the WAL commit returns to SQLite
		 * with this sync, so it waits here (without the mutex: the
		 * streams read the chain under it) for the replicas. The
		 * client holds SQLite's WAL write lock until it returns, so no
		 * other commit lands meanwhile; wal_commit_unsynced keeps the
		 * background flush from making the commit final. */
		uint64_t txid = db->pos.txid;
		lockwatch_unlock(&db->mu);
		int w = syncrepl_wait(db->node->sync, db->id, db->name, txid);
		lockwatch_lock(&db->mu, "fsync");
		if (w != 0 && db->wal_commit_unsynced && db->pos.txid == txid) {
			/* on_timeout=fail: the commit is taken back as if this
			 * sync had failed, and SQLite does not publish it. */
			LOG_WARN("db", "msg=\"synchronous replication timed out; the WAL commit is taken back and "
				       "SQLite reports an I/O error\" db=%s txid=%016" PRIx64, db->name, txid);
			rc = -EIO;
		}
	}
	if (rc != 0 && kind == DB_KIND_WAL && db->wal_commit_unsynced)
		wal_undo_restore(db);
	else if (rc == 0 || kind == DB_KIND_WAL)
		finalize_unsynced(db); /* synced, or a checkpoint's sync: the commits stand */
	if (kind == DB_KIND_WAL)
		db->wal_commit_unsynced = false;
	const uint64_t txid_after = db->pos.txid;
	lockwatch_unlock(&db->mu);
	if (kind == DB_KIND_JOURNAL && rc == 0 && commit_wait_rollback(db, txid_before, txid_after) != 0)
		rc = -EIO;
	return rc;
}

int db_sync_dir(struct db *db)
{
	int rc = 0;
	/* An fsync of the mount's root syncs every database's directory, so a
	 * database stuck behind its mutex's holder must not hang the others'
	 * commits: sync its directory without the mutex (dir_fd never changes
	 * after the load) and leave dir_dirty set — one sync too many is
	 * harmless, one too few is not. */
	if (lockwatch_trylock(&db->mu, "syncdir") != 0)
		return sys_fsync(db->dir_fd) == 0 ? 0 : -errno;
	if (db->dir_dirty) {
		rc = sys_fsync(db->dir_fd) == 0 ? 0 : -errno;
		if (rc == 0)
			db->dir_dirty = false;
	}
	lockwatch_unlock(&db->mu);
	return rc;
}

void db_flush_pending(struct db *db)
{
	/* Sync a copy of the descriptor without holding db->mu, so commits go
	 * on while the disk works. */
	lockwatch_lock(&db->mu, "flush");
	int fd = db->chain.log_fd >= 0 && db->chain.synced_end < db->chain.end ? dup(db->chain.log_fd) : -1;
	uint64_t end = db->chain.end, first = db->chain.first_txid;
	lockwatch_unlock(&db->mu);
	if (fd < 0)
		return;
	int rc = sys_fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	lockwatch_lock(&db->mu, "flush");
	if (rc != 0)
		LOG_ERROR("db", "msg=\"cannot sync LTX segment\" db=%s err=\"%s\"", db->name, strerror(-rc));
	else if (db->chain.first_txid == first && db->chain.synced_end < end && end <= db->chain.end)
		db->chain.synced_end = end;
	/* A WAL commit whose client sync is still to come stays revocable;
	 * anything else is final now. */
	if (rc == 0 && !db->wal_commit_unsynced)
		finalize_unsynced(db);
	lockwatch_unlock(&db->mu);
}

int db_sync_position(struct db *db, struct ltx_pos *out)
{
	*out = (struct ltx_pos){ 0 };
	lockwatch_lock(&db->mu, "syncpos");
	struct ltx_pos pos = db->pos;
	int db_fd = db->db_fd >= 0 ? dup(db->db_fd) : -2;
	int log_fd = db->chain.log_fd >= 0 && db->chain.synced_end < db->chain.end ? dup(db->chain.log_fd) : -2;
	uint64_t end = db->chain.end, first = db->chain.first_txid;
	lockwatch_unlock(&db->mu);
	int rc = db_fd == -1 || log_fd == -1 ? -errno : 0;
	if (rc == 0 && db_fd >= 0 && sys_fsync(db_fd) != 0)
		rc = -errno;
	if (rc == 0 && log_fd >= 0 && sys_fsync(log_fd) != 0)
		rc = -errno;
	if (db_fd >= 0)
		close(db_fd);
	if (log_fd >= 0)
		close(log_fd);
	if (rc != 0)
		return rc;
	lockwatch_lock(&db->mu, "syncpos");
	if (log_fd >= 0 && db->chain.first_txid == first && db->chain.synced_end < end && end <= db->chain.end)
		db->chain.synced_end = end;
	lockwatch_unlock(&db->mu);
	*out = pos;
	return 0;
}

/* Removes the backing files other than the database itself (already
 * gone) and resets what described them. */
void db_forget_files(struct db *db)
{
	for (int k = DB_KIND_JOURNAL; k <= DB_KIND_SHM; k++) {
		if (unlinkat(db->dir_fd, db_kind_backing[k], 0) != 0 && errno != ENOENT)
			LOG_WARN("db", "msg=\"cannot remove backing file\" db=%s file=%s err=\"%s\"", db->name,
				 db_kind_backing[k], strerror(errno));
		db->exists[k] = false;
	}
	if (db->db_fd >= 0)
		close(db->db_fd);
	db->db_fd = -1;
	db->exists[DB_KIND_DB] = false;
	db->n_pages = 0;
	db->page_size = 0;
	db->wal_mode = false;
	db_wal_reset_state(db);
}

/* Records the deletion of the database as a commit-0 LTX. */
static int delete_database(struct db *db)
{
	struct pending p;
	int rc;

	pgmap_clear(&db->dirty);
	if (db->pos.txid != 0 || db->n_pages != 0) {
		rc = prepare_commit(db, NULL, 0, 0, db->page_size ? db->page_size : 4096, read_db_new, NULL, true,
				    NULL, false, &p);
		if (rc)
			return rc;
	} else {
		memset(&p, 0, sizeof(p));
	}
	if (sys_unlinkat(db->dir_fd, db_kind_backing[DB_KIND_DB], 0) != 0 && errno != ENOENT) {
		rc = -errno;
		if (p.active)
			pending_abort(db, &p);
		return rc;
	}
	if (p.active)
		pending_finish(db, &p, false, false);
	db_forget_files(db);
	LOG_INFO("db", "msg=\"database deleted\" db=%s txid=%016" PRIx64, db->name, db->pos.txid);
	return 0;
}

int db_unlink(struct db *db, enum db_kind kind)
{
	struct pending p;
	int rc = 0;

	if (kind == DB_KIND_POS)
		return -EACCES;
	lockwatch_lock(&db->mu, "unlink");
	if (kind == DB_KIND_JOURNAL && fenced(db, kind)) {
		lockwatch_unlock(&db->mu);
		return -EROFS;
	}
	const uint64_t txid_before = db->pos.txid;
	if (!db->exists[kind]) {
		rc = -ENOENT;
		goto out;
	}
	switch (kind) {
	case DB_KIND_DB:
		rc = delete_database(db);
		/* Removed before its first transaction: nothing to keep. */
		if (rc == 0)
			forget_if_unwritten_locked(db);
		break;
	case DB_KIND_JOURNAL:
		/* DELETE mode's commit point. */
		if ((rc = prepare_rollback_commit(db, &p)) != 0)
			break;
		if (sys_unlinkat(db->dir_fd, db_kind_backing[kind], 0) != 0) {
			rc = -errno;
			if (p.active)
				pending_abort(db, &p);
			break;
		}
		db->exists[kind] = false;
		if (p.active)
			pending_finish(db, &p, false, true);
		pgmap_clear(&db->dirty);
		break;
	case DB_KIND_WAL:
		if (sys_unlinkat(db->dir_fd, db_kind_backing[kind], 0) != 0) {
			rc = -errno;
			break;
		}
		db->exists[kind] = false;
		db_wal_reset_state(db);
		db_flush_unsynced(db);
		break;
	default:
		if (unlinkat(db->dir_fd, db_kind_backing[kind], 0) != 0) {
			rc = -errno;
			break;
		}
		db->exists[kind] = false;
	}
	if (rc == 0)
		db->dir_dirty = true;
out:;
	const uint64_t txid_after = db->pos.txid;
	lockwatch_unlock(&db->mu);
	if (kind == DB_KIND_JOURNAL && rc == 0 && commit_wait_rollback(db, txid_before, txid_after) != 0)
		rc = -EIO;
	return rc;
}

/* ---- Loading and recovery ----------------------------------------------- */

/* Reads page_size and the in-header size from the backing db file. */
static int read_db_geometry(struct db *db, uint32_t *page_size, uint32_t *n_pages, bool *wal_mode)
{
	uint8_t hdr[100];
	struct stat st;

	*page_size = 0;
	*n_pages = 0;
	*wal_mode = false;
	if (db->db_fd < 0)
		return 0;
	if (fstat(db->db_fd, &st) != 0)
		return -errno;
	if (st.st_size == 0)
		return 0;
	int n = fdio_pread_full(db->db_fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return n;
	if (n < 100 || memcmp(hdr, SQLITE_HDR_MAGIC, 16) != 0 || (*page_size = sqlite_page_size(hdr)) == 0)
		return ERR_DB_HEADER;
	*n_pages = be32(hdr + 28);
	if (*n_pages == 0 || be32(hdr + 24) != be32(hdr + 92))
		*n_pages = (uint32_t)(st.st_size / *page_size);
	*wal_mode = hdr[18] == 2 && hdr[19] == 2;
	return 0;
}

/* Lets libsqlite3 roll back a hot journal and checkpoint a WAL left by a
 * crash, on the backing files (the mount is not serving yet).
 *
 * EXCLUSIVE locking mode, set before the first read, keeps the wal-index
 * in heap memory: SQLite then never maps the backing -shm. Mapped, a
 * crash-left -shm is rebuilt by storing into its pages, and on a full file
 * system (or one whose blocks are smaller than a page, where SQLite's
 * one-byte-per-page extension leaves holes) a page the file system cannot
 * allocate kills the node with SIGBUS before it logs a line. From heap
 * memory a full disk is an ordinary SQLITE_FULL. No other process can be
 * using the files, so the exclusive lock costs nothing; the -shm left
 * behind is stale, and the first client through the mount rebuilds it (it
 * holds the DMS lock alone and truncates the file). Returns 0, -ENOSPC when
 * the file system is full, or -EIO. */
static int sqlite_recover(struct db *db, const char *path)
{
	sqlite3 *conn = NULL;
	int rc = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(conn,
				  "PRAGMA locking_mode=EXCLUSIVE; PRAGMA schema_version; "
				  "PRAGMA wal_checkpoint(TRUNCATE);",
				  NULL, NULL, NULL);
	bool full = (rc & 0xff) == SQLITE_FULL || (conn != NULL && sqlite3_system_errno(conn) == ENOSPC);
	if (rc != SQLITE_OK)
		LOG_ERROR("db", "msg=\"sqlite recovery failed\" db=%s err=\"%s\"", db->name,
			  conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
	sqlite3_close(conn);
	if (rc == SQLITE_OK)
		return 0;
	return full ? -ENOSPC : -EIO;
}

/* Decodes one record fully (checksums included); header/trailer out. */
/* Writes an LTX holding every page of the current db file, following pos.
 * Used when recovery finds the database ahead of its LTX chain. */
static int write_full_ltx(struct db *db, uint32_t page_size, uint32_t n_pages)
{
	struct pending p;
	uint32_t *keys = NULL;
	int rc;

	db->page_size = page_size;
	if (n_pages > 0 && (keys = malloc((size_t)n_pages * sizeof(*keys))) == NULL)
		return ERR_NOMEM;
	for (uint32_t i = 0; i < n_pages; i++)
		keys[i] = i + 1;
	rc = prepare_commit(db, keys, n_pages, n_pages, page_size, read_db_new, NULL, true, NULL, true, &p);
	free(keys);
	if (rc)
		return rc;
	pending_finish(db, &p, false, false);
	return 0;
}

static int load_state(struct db *db, bool clean)
{
	struct ltx_header h = { 0 };
	struct ltx_trailer t = { 0 };
	bool have_last = false;
	uint64_t seg_first = 0, rec_off = 0;
	int rc;

	rc = chain_recover(&db->chain, &have_last, &h, &t, &seg_first, &rec_off);
	if (rc)
		return rc;
	if (have_last) {
		db->pos.txid = h.max_txid;
		db->pos.checksum = t.post_apply_checksum;
		db->pos_ts_ms = h.timestamp_ms;
	}

	char path[4096];
	snprintf(path, sizeof(path), "%s/dbs/%s/db", db->node->data_dir, db->name);
	bool leftovers = db->exists[DB_KIND_JOURNAL] || db->exists[DB_KIND_WAL];
	if (db->exists[DB_KIND_DB] && leftovers && (rc = sqlite_recover(db, path)) != 0)
		return rc;
	for (int k = DB_KIND_JOURNAL; k <= DB_KIND_SHM; k++)
		db->exists[k] = faccessat(db->dir_fd, db_kind_backing[k], F_OK, 0) == 0;
	/* A passed-through journal outlives its node (dbfence.c). */
	if (db->exists[DB_KIND_JOURNAL] && (rc = db_fence_journal(db, db_kind_backing[DB_KIND_JOURNAL])) != 0)
		return rc;

	uint32_t ps, np;
	bool walm;
	rc = read_db_geometry(db, &ps, &np, &walm);
	if (rc) {
		LOG_ERROR("db", "msg=\"backing database is not a SQLite file\" db=%s err=\"%s\"", db->name, err_str(rc));
		return rc;
	}
	db->page_size = ps;
	db->n_pages = np;
	db->wal_mode = walm;

	if (clean && have_last && h.commit == np) {
		/* O(1) start: trust the position, verify in the background. */
		db->verify = (struct db_verify){ .active = true, .cursor = 1, .partial = 0 };
		return 0;
	}

	/* Unclean shutdown: compare the database with the chain. */
	uint64_t c;
	if ((rc = db_compute_checksum_locked(db, &c)) != 0)
		return rc;
	uint64_t want = have_last ? t.post_apply_checksum : LTX_CHECKSUM_FLAG;
	if (c == want && (!have_last || h.commit == np)) {
		LOG_INFO("db", "msg=\"recovered\" db=%s txid=%016" PRIx64 " checksum=%016" PRIx64, db->name, db->pos.txid, c);
		return 0;
	}
	if (have_last && h.min_txid > 1 && c == h.pre_apply_checksum) {
		/* The last record was written but its commit never reached the
		 * database (crash between steps 1 and 2): it was not acknowledged. */
		LOG_WARN("db", "msg=\"dropping LTX of a transaction that never committed\" db=%s txid=%016" PRIx64,
			 db->name, h.min_txid);
		if ((rc = chain_truncate(&db->chain, seg_first, rec_off)) != 0)
			return rc;
		/* Reload the position from the previous record. */
		db->pos = (struct ltx_pos){ 0, 0 };
		return load_state(db, false);
	}
	if (np == 0 && !db->exists[DB_KIND_DB] && have_last && h.commit == 0)
		return 0;
	if (have_last && (rc = db_redo_full_record(db, seg_first, rec_off, &h, &t)) != 1) {
		if (rc == 0)
			return load_state(db, false);
		return rc;
	}
	LOG_WARN("db", "msg=\"database is ahead of its LTX chain; recording its full state as one transaction\" "
		       "db=%s txid=%016" PRIx64 " chain=%016" PRIx64 " db_checksum=%016" PRIx64,
		 db->name, db->pos.txid + 1, want, c);
	/* Record the full state: a file containing every page, following pos. */
	db->n_pages = have_last ? h.commit : 0;
	return write_full_ltx(db, ps ? ps : 4096, np);
}

int db_load(struct node *node, const char *name, uint32_t id, bool create, struct db **out)
{
	struct db *db = calloc(1, sizeof(*db));
	int rc;

	if (db == NULL)
		return ERR_NOMEM;
	db->node = node;
	db->id = id;
	db->dir_fd = db->db_fd = -1;
	chain_init(&db->chain, NULL);
	db->backup_hwm = UINT64_MAX;
	lockwatch_init(&db->mu);
	pgmap_init(&db->dirty);
	pgmap_init(&db->wal.pages);
	if ((db->name = strdup(name)) == NULL) {
		rc = ERR_NOMEM;
		goto err;
	}
	db->chain.name = db->name;
	if (create && mkdirat(node->dbs_fd, name, FILEIO_DIR_MODE) != 0 && errno != EEXIST) {
		rc = -errno;
		goto err;
	}
	if ((db->dir_fd = openat(node->dbs_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto err;
	}
	if ((rc = chain_open_dir(&db->chain, db->dir_fd)) != 0)
		goto err;
	db_remove_scratch(db); /* a snapshot a replica was receiving or writing when it stopped */
	for (int k = DB_KIND_DB; k <= DB_KIND_SHM; k++)
		db->exists[k] = faccessat(db->dir_fd, db_kind_backing[k], F_OK, 0) == 0;
	if (db->exists[DB_KIND_DB] && (db->db_fd = db_open_backing(db, DB_KIND_DB, O_RDWR)) < 0) {
		rc = db->db_fd;
		goto err;
	}
	bool clean = faccessat(db->dir_fd, "clean", F_OK, 0) == 0;
	if (clean && unlinkat(db->dir_fd, "clean", 0) != 0) {
		rc = -errno;
		goto err;
	}
	if ((rc = load_state(db, clean)) != 0)
		goto err;
	/* What a node that stopped between a create and the first write left. */
	if (!create)
		forget_if_unwritten_locked(db);
	if (db->exists[DB_KIND_DB] && db->db_fd < 0 && (db->db_fd = db_open_backing(db, DB_KIND_DB, O_RDWR)) < 0) {
		rc = db->db_fd;
		goto err;
	}
	*out = db;
	return 0;
err:
	LOG_ERROR("db", "msg=\"cannot load database\" db=%s err=\"%s\"", name, err_str(rc));
	db_free(db);
	return rc;
}

/* Writes the clean marker (db->mu held). */
static void write_clean_marker(struct db *db)
{
	db_flush_unsynced(db);
	chain_close_segment(&db->chain);
	int fd = -1;
	/* A clean marker is only honest when nothing is in flight. */
	if (db->dirty.count == 0 && !db->write_refused)
		fd = openat(db->dir_fd, "clean", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, FILEIO_FILE_MODE);
	if (fd >= 0) {
		if (db->db_fd >= 0)
			fdatasync(db->db_fd);
		sys_fsync(fd);
		close(fd);
		sys_fsync(db->dir_fd);
	}
}

void db_close_clean(struct db *db)
{
	lockwatch_lock(&db->mu, "close");
	write_clean_marker(db);
	lockwatch_unlock(&db->mu);
}

int db_close_forced(struct db *db, int64_t timeout_ms)
{
	int rc = lockwatch_timedlock(&db->mu, "close", timeout_ms);
	if (rc == 0)
		write_clean_marker(db);
	return rc;
}

void db_free(struct db *db)
{
	if (db == NULL)
		return;
	chain_close(&db->chain);
	pgmap_free(&db->undo.pages);
	if (db->db_fd >= 0)
		close(db->db_fd);
	if (db->dir_fd >= 0)
		close(db->dir_fd);
	pgmap_free(&db->dirty);
	pgmap_free(&db->wal.pages);
	lockwatch_destroy(&db->mu);
	free(db->name);
	free(db);
}
