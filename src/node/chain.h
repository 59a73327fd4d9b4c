/*
 * chain.h — a database's chain of LTX records on disk: the segment files
 * in data/dbs/<name>/ltx/ (ltxlog.h: records back to back, each a whole
 * LTX file behind a small header written last), the open segment new
 * commits are appended to, retention, recovery of the chain after a crash,
 * and a cursor that reads the records back in TXID order.
 *
 *   ltx/0000000000000001.ltxlog   records 1..k      (closed)
 *   ltx/00000000000000k+1.ltxlog  records k+1..n    (open: log_fd)
 *
 * A segment is named after its first record's TXID, so the chain is
 * ordered by name alone; it is closed once it reaches CHAIN_SEGMENT_MAX
 * bytes or a quarter of the retention window in age, so that retention
 * frees space in steps. The newest segment is never deleted: it carries
 * the position.
 *
 * Invariants (the callers keep them; chain.c checks the cheap ones):
 *   C1. Record TXIDs are contiguous across segments: each record's
 *       min TXID is the previous record's max TXID + 1.
 *   C2. Only records before `end` of the open segment are committed; a
 *       record being appended (or cut back) lies beyond it.
 *   C3. [oldest_txid, last TXID] is exactly what the segments hold.
 *
 * The chain knows nothing of pages, SQLite or the database's lock: its
 * owner (db.c, apply.c, dbread.c) holds db.mu around every call, and
 * decides which TXID is the last committed one (the `limit` of a cursor).
 * The only lock here is the shared syncer's own (chain_sync_alongside), a
 * leaf taken under db.mu and never held while taking another. Only
 * recovery, retention and a failed close log (with the database's name).
 */
#ifndef LITEFS_CHAIN_H
#define LITEFS_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "ltx/ltx.h"
#include "ltx/ltxlog.h"

/* A segment is closed at this size (or age, see chain_rotation_due()). */
#define CHAIN_SEGMENT_MAX (64u << 20)

struct chain {
	const char *name;       /* borrowed: the database's name, for log lines */
	int dir_fd;             /* ltx/, owned; -1 before chain_open_dir() */
	int log_fd;             /* the open segment, -1 when none (until the
				   first append after a start or a rotation) */
	uint64_t first_txid;    /* the open segment's first record's TXID */
	uint64_t end;           /* records [0, end) of the open segment */
	uint64_t synced_end;    /* durable up to here */
	int64_t created_ms;     /* when the open segment was created */
	uint64_t oldest_txid;   /* first TXID of the oldest segment kept (0 = none) */
	uint64_t generation;    /* bumped by chain_replace(): open cursors are stale */
};

/* An empty chain of database name (borrowed for the chain's life). */
void chain_init(struct chain *c, const char *name);
/* Creates (if needed) and opens ltx/ under the database's directory
 * (replacing the directory open before, if any). 0 or -errno. */
int chain_open_dir(struct chain *c, int db_dir_fd);
/* Closes the descriptors, without a sync (chain_close_segment() first for
 * that: a node that stops cleanly syncs, one that gives up does not). */
void chain_close(struct chain *c);

/* ---- Appending ----------------------------------------------------------- */

/* Opens a new segment whose first record will be first_txid (O_EXCL: a
 * segment of that name would hold records) and syncs ltx/ so that its
 * name is durable. 0 or -errno (no segment is left behind). */
int chain_open_segment(struct chain *c, uint64_t first_txid);
/* Closes the open segment, made durable first (an error is logged: the
 * records stay in the file, and the next sync of the file system, or a
 * crash recovery, decides). No-op without one. */
void chain_close_segment(struct chain *c);
/* Makes a complete, durable file (open as fd, holding records [0, end)
 * whose first is first_txid) the open segment: the open one is closed
 * (or, if empty and of that name, removed), the file is renamed into
 * ltx/ from src_dir_fd/src_path (never over an existing segment) and the
 * directory synced. The chain owns fd on success. 0 or -errno (the file
 * is where it was, or gone from ltx/: the caller still owns fd). Lets a
 * record written beside the chain (an import's, encoded while it was
 * uploaded) join it without a copy. */
int chain_adopt_segment(struct chain *c, int src_dir_fd, const char *src_path, int fd, uint64_t first_txid,
			uint64_t end);
/* Removes the open segment altogether (an adopted one whose transaction
 * did not happen after all). Logs a failure. */
void chain_drop_segment(struct chain *c);
/* fdatasyncs the open segment up to its end. 0 or -errno. */
int chain_sync(struct chain *c);
/* fsyncs fd (a client's file) and, at the same time on a helper thread,
 * the open segment's unsynced records: on a journalling ext4 the two syncs
 * share one journal commit instead of paying for two in a row (without a
 * journal each pays its own cache flush: docs/mount.md). Returns the
 * first error; synced_end advances only if the segment's sync succeeded.
 * Every chain of the process shares the one helper thread. */
int chain_sync_alongside(struct chain *c, int fd);
/* True when the open segment is big or old enough to be closed. */
bool chain_rotation_due(const struct chain *c, int64_t now_ms, int64_t retention_ms);

/* ---- Segments, retention, recovery ----------------------------------------- */

/* The first TXIDs of the segments in dir_fd, ascending. *out: caller frees
 * with free(). 0, ERR_NOMEM or -errno. */
int chain_list_segments(int dir_fd, uint64_t **out, size_t *n_out);

/* Deletes segments last written before now_ms - retention_ms, oldest
 * first, stopping at the first one that must stay: the newest, and any
 * holding a record after backup_hwm (UINT64_MAX: no constraint) or the
 * record at backup_hwm itself. Updates oldest_txid. Returns the number of
 * segments deleted (>= 0) or a negative code. */
int chain_enforce_retention(struct chain *c, int64_t now_ms, int64_t retention_ms, uint64_t backup_hwm);

/* Recovery: finds the last good record of the newest segment, cutting off
 * a torn or undecodable tail (a crash mid-append) and removing segments
 * left empty; sets oldest_txid. On return *have says whether there is a
 * record; if so *h and *t are its header and trailer and *seg_first and
 * *rec_off where it starts. 0 or a negative code. */
int chain_recover(struct chain *c, bool *have, struct ltx_header *h, struct ltx_trailer *t,
		  uint64_t *seg_first, uint64_t *rec_off);
/* Cuts the chain back to just before the record at rec_off of segment
 * seg_first (removing the segment if it is left empty). 0 or -errno. Only
 * for recovery, with no segment open: end and oldest_txid are the
 * caller's to reload (chain_recover()). */
int chain_truncate(struct chain *c, uint64_t seg_first, uint64_t rec_off);

/* Replaces the whole chain with one segment starting at TXID 1: the file
 * tmp (in ltx/, open as tmp_fd, holding records [0, rec_end)) becomes it
 * and the open segment. Takes ownership of tmp_fd on success. 0 or -errno
 * (the old segments may be partly gone: the caller resyncs). */
int chain_replace(struct chain *c, const char *tmp, int tmp_fd, uint64_t rec_end);

/* Bytes of LTX data in the ltx/ directory open as dir_fd (takes
 * ownership of dir_fd): segments and LTX files, not temporaries. */
uint64_t chain_dir_bytes(int dir_fd);

/* ---- Reading ------------------------------------------------------------- */

/* A position in the chain: the next record to read is at off of the
 * segment seg_first (fd open on it), with min TXID next_txid. */
struct chain_cursor {
	int fd;                 /* -1 before the first seek */
	uint64_t generation;    /* the chain's when fd was opened */
	uint64_t seg_first;
	uint64_t off;
	uint64_t next_txid;
};

void chain_cursor_init(struct chain_cursor *cur, uint64_t next_txid);
void chain_cursor_close(struct chain_cursor *cur); /* idempotent */

/* Positions cur at the record whose min TXID is txid; or, if want_post is
 * not NULL, just after the record whose max TXID is txid, storing that
 * record's post-apply checksum in *want_post. ERR_NEED_SNAPSHOT when no
 * retained record fits (older than the oldest segment, or inside a
 * multi-transaction record). */
int chain_cursor_seek(struct chain *c, struct chain_cursor *cur, uint64_t txid, uint64_t *want_post);

/* Next record, never one that ends past TXID limit (the owner's last
 * committed TXID): 1 with *fd (borrowed, valid until the next call) and
 * *rec, 0 when there is none up to limit yet, ERR_NEED_SNAPSHOT when the
 * next record is no longer retained, was taken back, or the chain was
 * replaced (chain_replace()) since the cursor opened its segment, or
 * another negative code. */
int chain_cursor_next(struct chain *c, struct chain_cursor *cur, uint64_t limit, int *fd,
		      struct ltxlog_rec *rec);

#endif
