/*
 * dbread.c — what other modules read from a database, each under db.mu and
 * never longer than a copy takes: a cursor over its committed records
 * (replication streams; the records themselves are chain.c's), a snapshot
 * of the logical database (a replica that is too far behind, a backup
 * service that lost its history), and statistics for /info, /metrics and
 * the backup client. db.c captures; this file only reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/lockwatch.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "node/chain.h"
#include "node/db.h"
#include "node/db_int.h"
#include "node/node.h"

/* ---- Replication, primary side ------------------------------------------ */

/* Reads the header and the post-apply checksum of a record. */
void db_cursor_init(struct db_cursor *c)
{
	memset(c, 0, sizeof(*c));
	chain_cursor_init(&c->cc, 0);
}

int db_cursor_open(struct db *db, struct ltx_pos after, struct db_cursor *c)
{
	db_cursor_init(c);
	c->db = db;
	int rc = 0;
	lockwatch_lock(&db->mu, "stream");
	c->cc.next_txid = after.txid + 1;
	if (after.txid > db->pos.txid) {
		rc = ERR_NEED_SNAPSHOT; /* the replica is ahead: it diverged */
		c->diverged = true;
	} else if (after.txid == db->pos.txid) {
		if (after.txid != 0 && after.checksum != db->pos.checksum) {
			rc = ERR_NEED_SNAPSHOT;
			c->diverged = true;
		}
	} else if (after.txid == 0) {
		if (db->chain.oldest_txid != 1)
			rc = ERR_NEED_SNAPSHOT;
	} else {
		uint64_t post = 0;
		rc = chain_cursor_seek(&db->chain, &c->cc, after.txid, &post);
		if (rc == 0 && post != after.checksum) {
			rc = ERR_NEED_SNAPSHOT;
			c->diverged = true;
		}
	}
	lockwatch_unlock(&db->mu);
	if (rc)
		db_cursor_close(c);
	return rc;
}

int db_cursor_open_oldest(struct db *db, struct db_cursor *c)
{
	db_cursor_init(c);
	c->db = db;
	lockwatch_lock(&db->mu, "stream");
	uint64_t oldest = db->chain.oldest_txid;
	c->cc.next_txid = oldest;
	lockwatch_unlock(&db->mu);
	return oldest == 0 ? ERR_NEED_SNAPSHOT : 0;
}

int db_cursor_next(struct db_cursor *c, int *fd, struct ltxlog_rec *rec)
{
	struct db *db = c->db;
	lockwatch_lock(&db->mu, "stream");
	int rc = chain_cursor_next(&db->chain, &c->cc, db->pos.txid, fd, rec);
	lockwatch_unlock(&db->mu);
	return rc;
}

void db_cursor_close(struct db_cursor *c)
{
	chain_cursor_close(&c->cc);
}

/* Reads page pgno of the logical database (committed WAL frames over the
 * db file) with db->mu held. */
static int read_logical_page(struct db *db, int wal_fd, uint32_t pgno, uint8_t *buf)
{
	struct pgmap_entry *e = pgmap_get(&db->wal.pages, pgno);
	if (e == NULL || wal_fd < 0)
		return db_read_page(db, pgno, buf);
	int n = fdio_pread_full(wal_fd, buf, db->page_size, db_wal_frame_off(db, e->frame) + WAL_FRAME_HDR_SIZE);
	if (n < 0)
		return n;
	return (uint32_t)n == db->page_size ? 0 : ERR_IO_SHORT;
}

/* Encodes the snapshot with db->mu held and no transaction in progress. */
static int snapshot_locked(struct db *db, ltx_write_fn write, void *ctx, struct ltx_pos *pos)
{
	uint32_t ps = db->page_size ? db->page_size : 4096;
	struct ltx_header h = {
		.flags = db->node->compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = ps,
		.commit = db->n_pages,
		.min_txid = 1,
		.max_txid = db->pos.txid,
		.timestamp_ms = db->pos_ts_ms,
		.node_id = db->node->node_id,
	};
	struct ltx_encoder *enc = NULL;
	uint8_t *page = malloc(ps);
	int wal_fd = db->wal.pages.count > 0 ? db_open_backing(db, DB_KIND_WAL, O_RDONLY) : -1;
	int rc = page ? ltx_encoder_new(&enc, &h, write, ctx) : ERR_NOMEM;
	uint64_t chk = 0;
	uint32_t lock = ltx_lock_pgno(ps);
	for (uint32_t pgno = 1; rc == 0 && pgno <= db->n_pages; pgno++) {
		if (pgno == lock)
			continue;
		if ((rc = read_logical_page(db, wal_fd, pgno, page)) != 0)
			break;
		chk ^= ltx_page_checksum(pgno, page, ps);
		rc = ltx_encoder_write_page(enc, pgno, page);
	}
	chk |= LTX_CHECKSUM_FLAG;
	if (rc == 0 && chk != db->pos.checksum) {
		LOG_ERROR("db", "msg=\"snapshot does not match the position's checksum\" db=%s txid=%016" PRIx64
				" checksum=%016" PRIx64 " computed=%016" PRIx64, db->name, db->pos.txid, db->pos.checksum, chk);
		rc = ERR_LTX_POST_CHECKSUM;
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, chk, NULL);
	if (rc == 0)
		*pos = db->pos;
	if (wal_fd >= 0)
		close(wal_fd);
	ltx_encoder_free(enc);
	free(page);
	return rc;
}

int db_snapshot(struct db *db, ltx_write_fn write, void *ctx, struct ltx_pos *pos)
{
	/* A rollback-mode transaction in progress has overwritten pages of the
	 * db file whose committed content is only in its journal: wait for it
	 * to end (SQLite holds such transactions briefly). */
	for (int waited_ms = 0;; waited_ms++) {
		lockwatch_lock(&db->mu, "snapshot");
		if (db->pos.txid == 0) {
			lockwatch_unlock(&db->mu);
			return ERR_NEED_SNAPSHOT;
		}
		if (db->dirty.count == 0 || waited_ms >= 10000)
			break;
		lockwatch_unlock(&db->mu);
		usleep(1000);
	}
	int rc = db->dirty.count == 0 ? snapshot_locked(db, write, ctx, pos) : -EAGAIN;
	lockwatch_unlock(&db->mu);
	return rc;
}

int db_open_clean_file(struct db *db, int *fd, uint64_t *size)
{
	*fd = -1;
	lockwatch_lock(&db->mu, "export");
	bool clean = db->dirty.count == 0 && db->wal.pages.count == 0 && db->exists[DB_KIND_DB];
	uint64_t len = (uint64_t)db->n_pages * db->page_size;
	lockwatch_unlock(&db->mu);
	if (!clean || len == 0)
		return -EAGAIN;
	int f = db_open_backing(db, DB_KIND_DB, O_RDONLY);
	if (f < 0)
		return f;
	struct stat sb;
	if (fstat(f, &sb) != 0 || (uint64_t)sb.st_size < len) {
		close(f);
		return ERR_IO_SHORT;
	}
	*fd = f;
	*size = len;
	return 0;
}

/* ---- Reports ---------------------------------------------------------------- */

/* Locks db.mu for a report: for ever (wait_ms < 0) or at most wait_ms. */
static bool report_lock(struct db *db, int wait_ms)
{
	if (wait_ms < 0) {
		lockwatch_lock(&db->mu, "report");
		return true;
	}
	return lockwatch_timedlock(&db->mu, "report", wait_ms) == 0;
}

bool db_stats(struct db *db, int wait_ms, struct db_stats *v)
{
	memset(v, 0, sizeof(*v));
	v->db = db;
	if (!report_lock(db, wait_ms)) {
		v->busy = true;
		db_lock_peek(db, clock_mono_ms(), &v->lock);
		return false;
	}
	v->exists = db->exists[DB_KIND_DB];
	v->page_size = db->page_size;
	v->n_pages = db->n_pages;
	v->wal_mode = db->wal_mode;
	v->write_refused = db->write_refused;
	v->pos = db->pos;
	v->ts_ms = db->pos_ts_ms;
	v->n_commits = db->n_commits;
	v->oldest_txid = db->chain.oldest_txid;
	v->backup_hwm = db->backup_hwm;
	lockwatch_unlock(&db->mu);
	v->ltx_count = v->oldest_txid != 0 && v->pos.txid >= v->oldest_txid ? v->pos.txid - v->oldest_txid + 1 : 0;
	return true;
}

void db_lock_peek(struct db *db, int64_t now_ms, struct lockwatch_state *out)
{
	lockwatch_peek(&db->mu, now_ms, out);
}

uint64_t db_ltx_bytes(struct db *db, int wait_ms)
{
	if (!report_lock(db, wait_ms))
		return 0;
	int fd = db->chain.dir_fd >= 0 ? openat(db->chain.dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	lockwatch_unlock(&db->mu);
	if (fd < 0)
		return 0;
	return chain_dir_bytes(fd);
}

/* ---- Position, attributes and listing (the FUSE layer, /info) --------------- */

struct ltx_pos db_pos(struct db *db)
{
	lockwatch_lock(&db->mu, "pos");
	struct ltx_pos p = db->pos;
	lockwatch_unlock(&db->mu);
	return p;
}

int db_stat_file(struct db *db, enum db_kind kind, struct stat *st)
{
	uint64_t generation;
	return db_stat_entry(db, kind, st, &generation);
}

int db_stat_entry(struct db *db, enum db_kind kind, struct stat *st, uint64_t *generation)
{
	int rc = 0;
	memset(st, 0, sizeof(*st));
	lockwatch_lock(&db->mu, "stat");
	*generation = db->generation[kind];
	if (!db->exists[DB_KIND_DB] || (kind != DB_KIND_POS && !db->exists[kind])) {
		rc = -ENOENT;
	} else if (kind == DB_KIND_POS) {
		st->st_mode = S_IFREG | 0444;
		st->st_size = LTX_POS_STR_LEN; /* 33 characters and a newline */
		st->st_nlink = 1;
	} else if (fstatat(db->dir_fd, db_kind_backing[kind], st, 0) != 0) {
		rc = -errno;
	}
	lockwatch_unlock(&db->mu);
	return rc;
}

void db_list_files(struct db *db, bool out[DB_KIND_COUNT])
{
	if (lockwatch_trylock(&db->mu, "list") == 0) {
		for (int k = 0; k < DB_KIND_COUNT; k++)
			out[k] = db->exists[DB_KIND_DB] && (k == DB_KIND_POS || db->exists[k]);
		lockwatch_unlock(&db->mu);
		return;
	}
	/* Busy: the backing files say the same thing, a moment late at most
	 * (dir_fd never changes after the load). */
	struct stat st;
	bool have_db = fstatat(db->dir_fd, db_kind_backing[DB_KIND_DB], &st, 0) == 0;
	for (int k = 0; k < DB_KIND_COUNT; k++)
		out[k] = have_db && (k == DB_KIND_POS || k == DB_KIND_DB ||
				     fstatat(db->dir_fd, db_kind_backing[k], &st, 0) == 0);
}
