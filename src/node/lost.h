/*
 * lost.h — transactions this node committed (and its clients were told
 * were committed) but then had to give up, kept as LTX files under
 * <data.dir>/lost/ so that none vanishes without a trace.
 *
 * Who gives transactions up: the backup client, when a restore made on
 * the backup service replaces transactions the service never acknowledged
 * (backup.c); and, later, a demoted primary whose last transactions never
 * reached the new primary. Both write through this module, so operators
 * find them in one place with one layout.
 *
 * LAYOUT (directories 0700, files 0600; every file, every directory and
 * every new name is fsynced before lost_commit() returns):
 *
 *   <data.dir>/lost/
 *     <db>/                                      one directory per database
 *       <stamp>-<first>-<last>[-<n>]/            one event: a contiguous run
 *                                                given up at once
 *         <min>-<max>.ltx                        each transaction exactly as
 *                                                the node recorded it
 *         info.json                              what, why, and onto what it
 *                                                applies (below)
 *       .tmp-<stamp>-XXXXXX/                     an event being written; one
 *                                                left by a crash is incomplete
 *                                                and may be deleted
 *
 *   <stamp>        UTC time of the event, 20261126T160915.123Z: names sort
 *                  by time
 *   <first>,<last> the TXID range of the event, %016x
 *   -<n>           2, 3, ... when the name is taken (two events in the same
 *                  millisecond with the same range)
 *   <min>-<max>    as in the node's chain and LiteFS: %016x-%016x.ltx
 *
 * info.json:
 *
 *   {"db": "app.db", "reason": "…", "time": "2026-11-26T16:09:15.123Z",
 *    "first_txid": "%016x", "last_txid": "%016x", "files": N,
 *    "base": {"txid": "%016x", "checksum": "%016x"},
 *    "replaced_by": {"txid": "%016x", "checksum": "%016x"}}
 *
 * base is the position the first file applies to (its min TXID - 1 and
 * its pre-apply checksum): a database at base plus the files, in name
 * order, is this node's state before it gave them up. `litefs ltx apply`
 * checks both checksums, so the files can only be re-applied onto exactly
 * that state (docs/backup.md says how to get it). replaced_by, when
 * known, is the position that took their place.
 *
 * The files of one event are contiguous: each one's min TXID is the
 * previous one's max + 1 and its pre-apply checksum the previous one's
 * post-apply checksum (lost_add() refuses anything else).
 *
 * Boundary module: touches files, never logs (the caller logs where the
 * event went, with its context). Writes and fsyncs go through sys.h, so
 * tests can fail the Nth one.
 */
#ifndef LITEFS_LOST_H
#define LITEFS_LOST_H

#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

/* The name of the directory under data.dir. */
#define LOST_DIR "lost"

struct lost_event;

/* Starts an event for database db: creates <data_dir>/lost/<db>/ if
 * needed and a temporary directory in it. Returns 0 with *out (caller
 * ends it with lost_commit() or lost_abort()), ERR_INVAL for a db name
 * that cannot be a directory name, ERR_NOMEM or -errno. */
int lost_begin(const char *data_dir, const char *db, struct lost_event **out);

/* Copies the LTX file at [off, off+len) of fd into the event as
 * <min>-<max>.ltx and fsyncs it. Returns 0, ERR_LTX_* for bytes that are
 * not an LTX header, ERR_LTX_NOT_CONTIGUOUS when the file does not follow
 * the previous one, or -errno. The event stays usable only for
 * lost_abort() after a failure. */
int lost_add(struct lost_event *ev, int fd, uint64_t off, uint32_t len);

/* Number of files added so far. */
size_t lost_count(const struct lost_event *ev);
/* The position the first file applies to (valid once a file was added). */
struct ltx_pos lost_base(const struct lost_event *ev);

/* Writes info.json (reason: a sentence for operators; replaced_by may be
 * NULL), fsyncs the event, renames it to its final name and fsyncs the
 * database's directory. path (path_len bytes, may be NULL) gets the
 * event's final directory. Frees ev whatever the outcome: on failure the
 * temporary directory is removed. Returns 0, ERR_INVAL for an event with
 * no file, or -errno. */
int lost_commit(struct lost_event *ev, const char *reason, const struct ltx_pos *replaced_by, char *path,
		size_t path_len);

/* Removes the temporary directory and frees ev. NULL is a no-op. */
void lost_abort(struct lost_event *ev);

#endif
