/*
 * cloud_changes.h — the changes of a database after a position the caller
 * already has (GET /db/changes, docs/cloud-api.md): the stored files
 * covering the positions after it, merged into one LTX file.
 *
 * Why: a restore on the service appends ONE transaction that holds the
 * pages that differ between the current state and the restored one
 * (cloud_store.c, encode_transition). The primary that pushed everything
 * up to the restore is exactly one transaction behind, and that file is
 * what it needs: a restore 899 transactions back in a 1 GB database
 * changed a few thousand pages, where a snapshot is the whole database
 * LZ4-encoded on demand (BENCHMARKS.md, "A restore reaching a node").
 *
 * Above the engine like cloud_fork.c: it reads the catalog and the stored
 * objects through cloud_store_int.h and is called by cloud_http.c only.
 */
#ifndef LITEFS_CLOUD_CHANGES_H
#define LITEFS_CLOUD_CHANGES_H

#include <stdint.h>

#include "cloud/cloud_store.h"
#include "ltx/ltx.h"

/* Most stored files one answer merges; a node further behind than that
 * takes a snapshot. */
#define CLOUD_CHANGES_MAX_FILES 64

/*
 * The changes of db from position `from` (a restorable position of the
 * service's history with exactly that checksum) up to the current
 * position, as one LTX file (LZ4; min TXID from.txid + 1, pre-apply
 * checksum from.checksum) in an unnamed spool file of the store.
 *
 * Returns 0 with *out_fd (caller closes; positioned at offset 0), *size
 * and *to (where the file ends: the current position). Errors, nothing
 * open: ERR_CLOUD_NAME, ERR_CLOUD_NOT_FOUND; ERR_CLOUD_POS_MISMATCH when
 * `from` is not a position of the history with that checksum, or is the
 * current position (*to gets the current one either way);
 * ERR_CLOUD_WINDOW when the files after it are no longer all stored;
 * ERR_CLOUD_TOO_LARGE when they are more than CLOUD_CHANGES_MAX_FILES
 * files or more stored bytes than half the database (a snapshot is then
 * the cheaper answer); a merge error (ERR_LTX_*, -errno) otherwise.
 * The merge re-checks the chain: contiguity, every file checksum, and
 * that it ends at the catalog's position.
 */
int cloud_changes_fd(struct cloud_store *cs, const char *cluster, const char *db, struct ltx_pos from,
		     int *out_fd, uint64_t *size, struct cloud_pos *to);

#endif
