/*
 * apply.h — applying a received LTX file to a live database (replica side
 * of replication, and restores from the backup service). See apply.c.
 */
#ifndef LITEFS_APPLY_H
#define LITEFS_APPLY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ltx/ltx.h"

struct db;

/* Applies one LTX file received from the primary (bytes [off, off+len) of
 * fd) to this replica's database: validated in full first (it must follow
 * db->pos, or be a snapshot); readers are excluded with SQLite's own locks
 * while pages are written; the kernel cache is invalidated for the pages
 * that changed; WAL-mode readers see the new state; the record is appended
 * to this node's chain byte for byte and pos advances. A commit of 0
 * pages deletes the database. Returns 0, an ERR_LTX_* code (nothing
 * changed: the input was refused), or another error. Only the replication
 * client calls it, one at a time per database — and the backup client on a
 * primary, to apply a state restored on the backup service: writers are
 * then excluded by the same locks, and committed WAL frames are first
 * folded into the db file. */
int apply_ltx(struct db *db, int fd, off_t off, uint32_t len);

/* A check run by apply_ltx_guarded() once readers and writers are
 * excluded and before anything changes, so that db->pos is final until
 * the apply ends: the backup client keeps the transactions a restore is
 * about to replace (lost.h). db->mu is not held. A non-zero return
 * refuses the apply (nothing changes) and is returned by
 * apply_ltx_guarded(). */
typedef int (*apply_guard_fn)(void *ctx, struct db *db);

/* apply_ltx() with guard(ctx, db) run as said above (guard may be NULL). */
int apply_ltx_guarded(struct db *db, int fd, off_t off, uint32_t len, apply_guard_fn guard, void *ctx);

/* A snapshot record staged (and perhaps decoded) while it arrived
 * (snappipe.h). Borrowed: the apply uses its own descriptors. */
struct apply_staged {
	int seg_fd;                /* APPLY_PIPE_SEGMENT: the record at LTXLOG_HDR_SIZE, no record header yet */
	uint32_t len;              /* the record's length */
	int new_db_fd;             /* -1, or APPLY_PIPE_DB: the snapshot decoded, every decoder check passed */
	struct ltx_header header;  /* of the decode (with new_db_fd) */
	struct ltx_pos pos;        /* likewise: the position after it */
};

/* apply_ltx() of a staged snapshot: the record becomes the chain's
 * (chain_replace() of APPLY_PIPE_SEGMENT), and a decoded file becomes the
 * db file (renamed) when the database still has no file and no client;
 * otherwise the record is decoded from the segment as by apply_ltx(). The
 * caller removes what was not used. */
int apply_snapshot_staged(struct db *db, const struct apply_staged *s);

/* The write lock (writelock.h) on the primary. Takes SQLite's writer lock
 * on the mounted database on a new descriptor, so that every other writer
 * gets SQLITE_BUSY (its busy handler retries) while readers go on: in WAL
 * mode WAL_WRITE_LOCK of -shm, else RESERVED of the db file. Waits up to
 * timeout_ms for a writer's transaction in progress to end. Returns 0
 * with *out the descriptor (release it with apply_writer_unlock()),
 * -EAGAIN at the limit, or -errno. The descriptor is a number in the
 * descriptor table of the mount's own threads (ownmount.h): only pass it
 * to apply_ltx_held() and apply_writer_unlock(), never use it directly. */
int apply_writer_lock(struct db *db, bool wal_mode, int64_t timeout_ms, int *out);
/* Releases the writer lock and closes fd (-1: no-op). */
void apply_writer_unlock(int fd);
/* apply_ltx_guarded() on the primary under the write lock: held_fd is
 * apply_writer_lock()'s descriptor (held_wal: of -shm), whose writer lock
 * the apply shares and leaves held; the LTX lands only while this node may
 * commit (node_may_write(), checked under db.mu), else -EROFS. */
int apply_ltx_held(struct db *db, int fd, off_t off, uint32_t len, apply_guard_fn guard, void *ctx, int held_fd,
		   bool held_wal);

/* How apply_import() waits and checks. */
struct fullrec;

struct apply_import_opts {
	uint32_t page_size, n_pages; /* of the file: validated SQLite header, size = n_pages * page_size */
	/* Where the file is (a private temp file on the data directory's file
	 * system): when no client has the database open, it is renamed into
	 * place instead of copied. NULL / -1: always copied. */
	int src_dir_fd;
	const char *src_path;
	const atomic_bool *cancel;   /* set while waiting for readers: give up, -ECANCELED */
	int64_t max_wait_us;         /* waiting for readers longer than this: -ETIMEDOUT (0: no limit) */
	/* Run once readers and writers are excluded, before anything changes
	 * (the db's position and page size are final then; db->mu not held):
	 * non-zero refuses the import and is returned. May be NULL. */
	int (*check)(void *ctx, struct db *db);
	/* Run after the record was written and before it is made durable or
	 * the database file is touched: the validation that ran beside the
	 * encoding. Non-zero refuses the import (the record is cut off) and is
	 * returned. May be NULL. */
	int (*validated)(void *ctx);
	void *ctx;
	/* The record already encoded while the file was uploaded (importrec.h):
	 * only its header and page 1 are written here, and the spool file
	 * (rec_fd, at rec_dir_fd/rec_path) becomes a segment of the chain
	 * (*rec_taken set: the chain owns rec_fd and the file). NULL: the
	 * record is encoded from src_fd. */
	struct fullrec *rec;
	int rec_fd, rec_dir_fd;
	const char *rec_path;
	bool *rec_taken;
};

/*
 * Makes the SQLite database file src_fd (a private copy: its header is
 * rewritten as SQLite's backup API would, see apply.c) the new content of
 * db as ONE transaction, without going through the mount: readers and
 * writers are excluded with SQLite's locks as for apply_ltx(); the record
 * (every page, following db->pos; LZ4 when data.compress) is encoded from
 * src_fd straight into the open segment in one pass and made durable;
 * then the file is renamed into place (nobody has the database open) or
 * copied into the db file in the kernel, and synced; the position
 * advances. A crash after the record is durable is completed at
 * the next start (db_redo_full_record). Returns 0 with *pos, or an error
 * (nothing changed, except when writing the db file itself failed: the
 * database then refuses writes until a restart repairs it).
 */
int apply_import(struct db *db, int src_fd, const struct apply_import_opts *o, struct ltx_pos *pos);

#endif
