/*
 * db_int.h — what the modules of the database wing share beyond db.h:
 * the capture module (db.c) owns these; the replica-side apply (apply.c),
 * the readers (dbread.c) and the verification (dbverify.c) use them. Nothing else includes this header,
 * and db.c never calls into apply.c, dbread.c or dbverify.c: the order is one-way.
 *
 * Every function here expects db->mu held by the caller.
 */
#ifndef LITEFS_DB_INT_H
#define LITEFS_DB_INT_H

#include <fcntl.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include "base/sys.h"
#include "node/db.h"

/* SQLite's WAL layout (SQLITE-FILES.md §3.1). */
#define WAL_HDR_SIZE 32
#define WAL_FRAME_HDR_SIZE 24

/* Where a replica stages a snapshot's record until it replaces the chain
 * (apply.c); a start removes one left behind (db.c). */
#define APPLY_TMP_SEGMENT "snapshot.ltxlog.tmp"
/* The db file a snapshot is written into before it replaces "db" (apply.c). */
#define APPLY_NEW_DB_TMP "db.snapshot-tmp"
/* The same two for a snapshot staged and decoded while it arrives
 * (snappipe.c). */
#define APPLY_PIPE_SEGMENT "snapshot.ltxlog.pipe"
#define APPLY_PIPE_DB "db.snapshot-pipe"
/* How both write a snapshot's new db file (a struct sys_wb): writeback
 * started every 16 MiB (the file is not fsync'd there, but a gigabyte of
 * dirty pages left behind would throttle every writer after it) and the
 * cache of what is on disk dropped. Clients then read the new database
 * from the disk at first, as after a restart; a replica's catch-up of
 * 1 GB took 1.6 s instead of 3.7 s and a quarter of the CPU (new page
 * cache is slow on a VM; BENCHMARKS.md, "first touch"). */
#define APPLY_NEW_DB_WB { .kick = (off_t)16 << 20, .keep = SYS_WB_KEEP }

/* Removes what a snapshot a replica was receiving or writing when it
 * stopped left behind (db.c, at the start). */
static inline void db_remove_scratch(struct db *db)
{
	unlinkat(db->chain.dir_fd, APPLY_TMP_SEGMENT, 0);
	unlinkat(db->chain.dir_fd, APPLY_PIPE_SEGMENT, 0);
	unlinkat(db->dir_fd, APPLY_NEW_DB_TMP, 0);
	unlinkat(db->dir_fd, APPLY_PIPE_DB, 0);
}

/* Reads page pgno of the backing db file into buf (page_size bytes);
 * zeros beyond its end. 0 or a negative code. */
int db_read_page(struct db *db, uint32_t pgno, uint8_t *buf);
/* The checksum of page pgno of the logical database (the db file overlaid
 * with the committed WAL frames) into *out; scratch holds a page. 0 or a
 * negative code. */
int db_logical_page_checksum(struct db *db, uint32_t pgno, uint8_t *scratch, uint64_t *out);
/* The checksum of the whole logical database (LTX_CHECKSUM_FLAG set). */
int db_compute_checksum_locked(struct db *db, uint64_t *out);
/* Drops the kernel's cached lookups of every name of the database. */
void db_invalidate_names(struct db *db);
/* Makes the open segment durable and finalises the commits it holds
 * (db_flush_pending() without taking the lock). 0 or -errno. */
int db_flush_unsynced(struct db *db);
/* Closes the backing files' descriptors and forgets which exist (after a
 * deletion). */
void db_forget_files(struct db *db);
/* Opens the backing file of kind with flags. Returns the fd or -errno. */
int db_open_backing(struct db *db, enum db_kind kind, int flags);
/* Offset of WAL frame `frame` (1-based) in the -wal file. */
off_t db_wal_frame_off(const struct db *db, uint32_t frame);
/* Forgets the WAL's frames (it was reset or checkpointed to empty). */
void db_wal_reset_state(struct db *db);

/* dbredo.c: when the last record (at rec_off of segment seg_first, header
 * h, trailer t) holds every page of the database, writes them into the db
 * file again and checks the post-apply checksum: an import interrupted
 * after its record was durable. 0 (done), 1 (not a full image: nothing
 * written), or an error. */
struct ltx_header;
struct ltx_trailer;
int db_redo_full_record(struct db *db, uint64_t seg_first, uint64_t rec_off, const struct ltx_header *h,
			const struct ltx_trailer *t);

/* dbfence.c: at a start, after crash recovery, unlinks the journal left
 * at backing (the journal's backing name), so that a descriptor a client
 * still holds on it (FUSE passthrough) writes into an orphan inode. Sets
 * exists[DB_KIND_JOURNAL] false. 0 or -errno. */
int db_fence_journal(struct db *db, const char *backing);

#endif
