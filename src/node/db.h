/*
 * db.h — one replicated SQLite database: its backing files, its position,
 * and the capture of every committed transaction as one LTX record.
 *
 * See the design comment at the top of db.c for how commits are
 * recognised in each journal mode and why the result is exact.
 *
 * Locking: db.mu guards every field below it. FUSE handlers and the HTTP
 * API call db_* functions, which take db.mu themselves; the lock order is
 * store.mu (registry) before db.mu, never the reverse.
 */
#ifndef LITEFS_DB_H
#define LITEFS_DB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "base/lockwatch.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "node/chain.h"
#include "base/pgmap.h"

enum db_kind {
	DB_KIND_DB = 0,   /* "x" */
	DB_KIND_JOURNAL,  /* "x-journal" */
	DB_KIND_WAL,      /* "x-wal" */
	DB_KIND_SHM,      /* "x-shm" */
	DB_KIND_POS,      /* "x-pos", read-only, generated */
	DB_KIND_COUNT
};

/* Name suffix of each kind ("" for the database itself). */
extern const char *const db_kind_suffix[DB_KIND_COUNT];
/* Name of the backing file of each kind inside the db's directory. */
extern const char *const db_kind_backing[DB_KIND_COUNT];

struct node;

/* Incremental background verification of the database checksum: pages
 * [1, cursor) have been summed into partial; commits adjust partial for
 * pages below the cursor so the final comparison is exact. */
struct db_verify {
	bool active;
	uint32_t cursor;
	uint64_t partial;
};

/* The WAL as seen through the mount since its last reset. */
struct db_wal {
	bool valid;            /* a header has been seen */
	bool big_endian;       /* checksum word order (magic 0x377f0683) */
	uint32_t page_size;
	uint32_t salt1, salt2; /* raw big-endian values from the header */
	uint32_t s0, s1;       /* checksum after the last committed frame */
	uint32_t mx_frame;     /* last committed frame (0 = none) */
	struct pgmap pages;    /* pgno -> latest committed frame + page checksum */
};

struct db {
	struct node *node;     /* borrowed: options, role, change feed (node.h) */
	char *name;            /* owned */
	uint32_t id;           /* stable for the life of the mount; inode base */

	/* Guards everything below. Taken through lockwatch_lock() with the
	 * operation's name ("write", "fsync", "apply", ...), which the store's
	 * watchdog reports when it is held too long. */
	struct lockwatch mu;
	int dir_fd;            /* data/dbs/<name> */
	int db_fd;             /* backing database, O_RDWR, -1 if absent */
	bool exists[DB_KIND_COUNT];
	uint32_t generation[DB_KIND_COUNT]; /* bumped when a file is re-created */

	uint32_t page_size;    /* 0 while the database is empty */
	uint32_t n_pages;      /* logical size in pages (last commit) */
	bool wal_mode;         /* logical header says WAL (bytes 18/19 == 2) */
	struct ltx_pos pos;    /* last captured transaction */
	int64_t pos_ts_ms;     /* its timestamp */
	bool write_refused;    /* sticky: verification failed; refuse writes */
	bool dir_dirty;        /* a backing file was created or removed since the last directory sync */
	int n_handles;         /* open FUSE handles on any of its files */
	bool forgotten;        /* the file went because it was never written */
	bool dir_removed;      /* forgotten with no history: data/dbs/<name> is gone */

	/* Rollback-journal transaction in progress: pages written to the db
	 * file since the last commit point, with their checksum at first
	 * write (0 = the page did not exist). */
	struct pgmap dirty;

	/* -journal handles that the kernel writes without requests (FUSE
	 * passthrough, fusefs.c). A commit that zeroes the journal header
	 * (PERSIST, locking_mode=EXCLUSIVE) is then not a write the node
	 * sees: it is found by reading the header (journal_pt_check). */
	int journal_pt;          /* open passthrough handles of -journal */
	bool journal_zeroes;     /* seen committing by a zeroed header: no more passthrough */
	uint32_t journal_nonce;  /* nonce of the transaction whose pages are dirty; 0: unknown */

	struct db_wal wal;

	/* The LTX records on disk (chain.h). In WAL mode the open segment's
	 * sync is deferred to the client's next fsync of -wal
	 * (synchronous=FULL semantics). */
	struct chain chain;

	/* The state before the first WAL commit not yet followed by a
	 * successful fsync of -wal. SQLite treats a commit whose sync fails as
	 * not committed (walFrames does not publish it), so the node must be
	 * able to take back what it captured. */
	struct db_wal_undo {
		bool active;
		struct ltx_pos pos;
		int64_t pos_ts_ms;
		uint32_t n_pages;
		bool wal_mode;
		uint32_t mx_frame, s0, s1;
		struct pgmap pages;
		uint64_t n_commits;
		uint64_t log_end;
	} undo;
	/* The last operation on -wal was a commit frame: a following fsync is
	 * that commit's sync. */
	bool wal_commit_unsynced;

	struct db_verify verify;

	/* Replication and backup. */
	uint64_t backup_hwm;   /* records after it are kept (UINT64_MAX: no backup) */
	bool wal_folded;       /* set by an apply that emptied the WAL */

	/* The store's lock watchdog's own report state (only its thread
	 * touches them; not guarded by mu, which may be stuck). */
	uint64_t watch_seq;       /* holding (lockwatch seq) last reported */
	int64_t watch_next_ms;    /* when to report it again */

	/* Counters for /metrics. */
	uint64_t n_commits;
	uint64_t n_ltx_bytes;
};

/* Loads (or creates when create is true) the database called name under
 * the store's data directory, recovering from a crash if needed. On
 * success *out is owned by the caller (the store), freed with db_free(). */
int db_load(struct node *node, const char *name, uint32_t id, bool create, struct db **out);
void db_free(struct db *db); /* NULL is a no-op; closes fds */

/* Marks a clean shutdown (so the next start need not re-verify). */
void db_close_clean(struct db *db);
/* For a forced stop (the process exits right after): takes db->mu for at
 * most timeout_ms; if it gets it, writes the clean marker as
 * db_close_clean() does and keeps the mutex for ever, so nothing changes
 * the database after its marker. Returns 0, or -ETIMEDOUT when the mutex
 * stayed held (the database is left without a marker and is recovered at
 * the next start, never trusted as clean). */
int db_close_forced(struct db *db, int64_t timeout_ms);

/* ---- Used by the FUSE layer (each takes db->mu) ------------------------ */

/* Opens a new fd on the backing file of kind for a FUSE handle, creating
 * it when create is set (and the database's directory if it was
 * forgotten). Returns the fd (0 for -pos) or -errno; the handle is counted
 * until db_close_file(). */
/* FUSE passthrough of -journal (fusefs.c). db_journal_pass_ok() says
 * whether the first open of -journal, whose backing descriptor is fd, may
 * be served by the kernel: the file is empty (DELETE and TRUNCATE modes
 * start from nothing) and the database was never seen committing by
 * zeroing the header. db_journal_pass_count() counts such handles
 * (+1 at open, -1 at release; the release looks for a commit made by
 * zeroing the header meanwhile). */
bool db_journal_pass_ok(struct db *db, int fd);
void db_journal_pass_count(struct db *db, int delta);

int db_open_file(struct db *db, enum db_kind kind, bool create, bool for_write);
/* Closes a handle's fd (-1 or the 0 of -pos: none) and uncounts it. When
 * the last handle of a database that was created but never written goes
 * (an empty file, no journal, no WAL: a refused copy, or a client that
 * only read a new name), the database is forgotten: its file goes, and
 * with no history at all its directory too, so nothing is left behind.
 * Call it after replying to the kernel: it may invalidate cached names. */
void db_close_file(struct db *db, enum db_kind kind, int fd);
/* Re-creates the directory of a forgotten database (see db_close_file);
 * 0 or -errno. */
int db_ensure_dir(struct db *db);
int db_stat_file(struct db *db, enum db_kind kind, struct stat *st);
/* Which files of the database exist, for a directory listing. Never
 * waits for db->mu: opening the mount's root (SQLite does it to sync the
 * directory after creating a journal) must not hang on another database's
 * stuck holder; when the mutex is busy the backing files are asked. */
void db_list_files(struct db *db, bool out[DB_KIND_COUNT]);
/* db_stat_file plus the file's generation (the FUSE entry's), read under
 * the same lock so that a lookup racing a re-creation of the file cannot
 * pair one file's attributes with another's generation. */
int db_stat_entry(struct db *db, enum db_kind kind, struct stat *st, uint64_t *generation);
/* Reads through the backing file (or the generated -pos text). */
ssize_t db_read(struct db *db, enum db_kind kind, int fd, void *buf, size_t len, off_t off);
/* Writes through, recognising commits. Returns bytes written or -errno. */
ssize_t db_write(struct db *db, enum db_kind kind, int fd, const void *buf, size_t len, off_t off);
int db_truncate(struct db *db, enum db_kind kind, off_t size);
int db_fsync(struct db *db, enum db_kind kind, int fd);
/* fsyncs the database's backing directory if a file was created or
 * removed since the last call (SQLite syncs the directory after creating
 * a journal or WAL); when db->mu is held by someone else, syncs it
 * without waiting for the mutex. Returns 0 or -errno. */
int db_sync_dir(struct db *db);
/* Unlinks a file; unlinking the database itself records a commit-0 LTX. */
int db_unlink(struct db *db, enum db_kind kind);

/* "%016x/%016x\n" of the current position into buf[LTX_POS_STR_LEN+1]. */
void db_pos_text(struct db *db, char *buf);
struct ltx_pos db_pos(struct db *db);

/* A copy of a database's fields for reports (/info, /metrics, /events,
 * the stream's positions), taken under db.mu so the fields agree. */
struct db_stats {
	struct db *db;
	bool exists;
	uint32_t page_size, n_pages;
	bool wal_mode, write_refused;
	struct ltx_pos pos;
	int64_t ts_ms;
	uint64_t n_commits;
	uint64_t oldest_txid;
	uint64_t ltx_count;            /* transactions kept on disk */
	uint64_t ltx_bytes;            /* 0: left to db_ltx_bytes() */
	uint64_t backup_hwm;           /* UINT64_MAX: no backup service acknowledged anything yet */
	/* Set when db.mu stayed held past the wait: only db, busy and lock
	 * are then filled in. */
	bool busy;
	struct lockwatch_state lock;   /* db.mu's holder, for a busy database */
};

/* Fills *out under db.mu, waiting at most wait_ms for it (< 0: as long as
 * it takes). Returns true, or false with out->busy and out->lock set when
 * the lock stayed held: a database stuck behind its holder must not hang
 * the endpoints an operator uses to find it. */
bool db_stats(struct db *db, int wait_ms, struct db_stats *out);

/* Who holds db.mu and for how long, without taking it (lockwatch.h):
 * for the watchdog and the held-lock gauges. */
void db_lock_peek(struct db *db, int64_t now_ms, struct lockwatch_state *out);

/* Bytes of LTX data kept for db (segments and LTX files in ltx/); 0 when
 * db.mu stayed held for wait_ms. Walks the directory without the lock. */
uint64_t db_ltx_bytes(struct db *db, int wait_ms);

/* Makes the open segment durable up to its end (the store calls it a few
 * times a second, so a commit never stays unsynced for long). */
void db_flush_pending(struct db *db);
/* Makes the current position durable on this node: fsyncs the db file
 * and the open segment (without holding the mutex while the disk works)
 * and stores in *out the position that is now durable. For a replica's
 * acknowledgements (synchronous replication): an applied record is in
 * the segment and its pages in the db file, neither synced by the apply.
 * 0 or -errno (*out is then {0, 0}). */
int db_sync_position(struct db *db, struct ltx_pos *out);

/* Deletes LTX segments last written before now - retention_ms, always
 * keeping the newest. */
int db_enforce_retention(struct db *db, int64_t now_ms, int64_t retention_ms);

/* Runs one step of background verification (up to max_pages pages).
 * Returns 1 while more work remains, 0 when done, or a negative code when
 * the checksum did not match (writes are then refused). */
int db_verify_step(struct db *db, uint32_t max_pages);

/* Checksum of the whole logical database, computed now under db->mu
 * (slow; for tests and recovery). */
int db_compute_checksum(struct db *db, uint64_t *out);

/* ---- Replication, primary side ----------------------------------------- */

/* Reads the committed records of a database's chain in TXID order, from
 * the segment files (catch-up) and then from the open segment as commits
 * land (live). Only records up to db->pos are returned, never one that
 * may still be cut back. */
struct db_cursor {
	struct db *db;
	struct chain_cursor cc;
	bool diverged;       /* set by db_cursor_open(): the position is not on
				this chain (ahead, or another checksum at its TXID) */
};

/* A closed cursor (db_cursor_close() is then a no-op). */
void db_cursor_init(struct db_cursor *c);
/* Positions c just after `after` (a replica's position). Returns 0 when
 * the records after it are retained and `after` is on this chain
 * (after.txid == 0 on a chain that still starts at TXID 1 counts), or
 * ERR_NEED_SNAPSHOT when the replica must be sent a snapshot: its TXID is
 * older than the oldest retained record, its checksum differs from this
 * node's at that TXID (split brain), or it is ahead of this node. */
int db_cursor_open(struct db *db, struct ltx_pos after, struct db_cursor *c);
/* Positions c at the oldest retained record, with no check of what came
 * before it (for keeping records, not for following a chain). Returns 0,
 * or ERR_NEED_SNAPSHOT when nothing is retained. */
int db_cursor_open_oldest(struct db *db, struct db_cursor *c);
/* Next record: returns 1 with *fd (borrowed, valid until the next call)
 * and *rec (offset/length of the LTX bytes of the record are
 * rec->offset + LTXLOG_HDR_SIZE, rec->len), 0 when the cursor is at the
 * current position (wait with node_wait_change() and call again),
 * ERR_NEED_SNAPSHOT when the next record is no longer retained, or
 * another negative code. Reading the bytes is the caller's job (pread);
 * a short read means the record was taken back: start over. */
int db_cursor_next(struct db_cursor *c, int *fd, struct ltxlog_rec *rec);
void db_cursor_close(struct db_cursor *c); /* idempotent */

/* Writes a snapshot LTX of the logical database (WAL frames included) at
 * its current position through write(ctx): TXID 1..pos.txid, every page.
 * Holds db->mu throughout (writers wait), so write to a local spool file,
 * not to a network peer. *pos gets the snapshot's position. Returns 0,
 * ERR_NEED_SNAPSHOT if the database never had a transaction (pos.txid ==
 * 0: nothing to send), or an error. A deleted database's snapshot has
 * commit 0: applying it deletes the database, which is what a replica
 * that missed the deletion needs. */
int db_snapshot(struct db *db, ltx_write_fn write, void *ctx, struct ltx_pos *pos);

/* Opens the db file read-only for an export whose SQLite locks pin a
 * committed state in a rollback mode, so that nobody writes the file
 * while it is sent (node/http.c, EXPORT). db->mu is held only to check
 * that no rollback transaction has pages in the file and the WAL holds no
 * frames (else -EAGAIN, also for an empty database: the caller copies
 * through SQLite instead). 0 with *fd (caller closes) and *size (n_pages
 * pages), or a negative code. */
int db_open_clean_file(struct db *db, int *fd, uint64_t *size);

/* The replica side (applying a received LTX file) is apply.h. */

/* ---- Backup -------------------------------------------------------------- */

/* The backup service holds every transaction <= hwm durably: retention may
 * delete segments whose records are all <= hwm (and old enough), never
 * later ones. Until the first call nothing constrains retention. */
void db_set_backup_hwm(struct db *db, uint64_t hwm);

#endif
