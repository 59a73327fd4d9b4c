/*
 * adopt.h — taking over a LiteFS 0.5 data directory (docs/migrating.md).
 *
 * LiteFS 0.5 keeps a database `x` as
 *
 *   dbs/x/database         the database file (rollback journal mode, or the
 *                          main file of a WAL database)
 *   dbs/x/journal          a hot rollback journal (a crash mid-transaction)
 *   dbs/x/wal, dbs/x/shm   WAL mode: the WAL (committed frames not yet
 *                          checkpointed) and its index
 *   dbs/x/ltx/<min>-<max>.ltx   one LTX file per transaction, retained
 *   clusterid              "LFSC" + 16 hex digits (the same as ours)
 *
 * and this node keeps it as dbs/x/db (+ db-wal, db-journal, db-shm) and a
 * chain of segments dbs/x/ltx/<first>.ltxlog (chain.h). The LTX files are
 * the same format (LTX v1), so adoption keeps the position exactly: the
 * retained LTX files become the records of one segment, byte for byte, and
 * the database becomes `db`. Backups to litefs-cloud and replicas at a
 * retained position then continue without a snapshot; the cluster ID file
 * is read as it is.
 *
 * Steps for each dbs/x holding `database` but no `db` (adopt_prepare):
 *   1. every LTX file in dbs/x/ltx/ is decoded in full (file checksum); the
 *      newest contiguous run of them (TXIDs and checksums chained) is
 *      kept, the position is the newest file's (max TXID, post-apply);
 *   2. database (+ journal, wal) are copied to adopt-db (+ -journal, -wal)
 *      and SQLite rolls back / checkpoints the copy and checks it
 *      (PRAGMA quick_check); its checksum is compared with the position;
 *   3. the run is written as ltx/adopt.tmp, fsync'd, renamed to its
 *      segment name; then adopt-db is renamed to db, and the directory is
 *      fsync'd: from here on the database is ours.
 * db_load() then loads it like a database after a crash: it compares the
 * database with the chain once more and, if SQLite's view is ahead of
 * LiteFS's last LTX file (LiteFS may lose the last WAL transaction at a
 * kill -9), records the difference as the next transaction.
 *   4. adopt_finish(), after a successful load, moves LiteFS's files to
 *      <data.dir>/litefs-0.5-adopted/x/ (never read again; the operator
 *      deletes them) and logs what was adopted.
 *
 * Until step 3's rename nothing of LiteFS's is touched and a failure
 * leaves only our temporaries, removed at the next try; a crash between 3
 * and 4 finds `db` and `database` both present and resumes at 4.
 *
 * Boundary module: logs each decision with the database's name.
 */
#ifndef LITEFS_ADOPT_H
#define LITEFS_ADOPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

/* Where adopted LiteFS files go, under data.dir. */
#define ADOPT_DIR "litefs-0.5-adopted"

struct adopt_info {
	bool litefs;           /* dbs/<name> holds LiteFS files (to move once loaded) */
	bool staged;           /* adopt_prepare() converted it just now */
	bool verified;         /* the staged database's checksum equals want */
	struct ltx_pos want;   /* LiteFS's position (0/0: no LTX file to take it from) */
	size_t n_files;        /* LTX files carried over as records */
};

/* Converts dbs/<name> if it is a LiteFS 0.5 database not yet adopted
 * (steps 1-3 above). Returns 0 (info says what was found and done) or a
 * negative code, after logging why; the node must then not start: LiteFS's
 * files are untouched. */
int adopt_prepare(const char *data_dir, int dbs_fd, const char *name, struct adopt_info *info);

/* After db_load() succeeded on an adopted database at pos: logs the
 * adoption and moves LiteFS's files out (step 4). Failures to move are
 * logged and left for the next start. */
void adopt_finish(const char *data_dir, int dbs_fd, const char *name, const struct adopt_info *info,
		  struct ltx_pos pos);

#endif
