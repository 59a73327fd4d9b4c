/*
 * cloud_fork.h — a new database of litefs-cloud's engine made from a
 * whole state handed over page by page: the fork (`litefs-cloud restore
 * DB --txid T --as NEW`, cloud_restore() with as_db).
 *
 * Why a module of its own: a fork used to encode the state as one
 * LZ4-compressed snapshot transaction into a spool and ingest that like an
 * upload: compressed, decompressed again, every page's CRC computed twice,
 * the current copy written, the object written and fsync'd — 4-6x cp +
 * fsync of the same bytes (BENCHMARKS.md). Here each page of the state is
 * read once and written in the same pass to the new database's current
 * copy (large sequential writes) and to its first object, a snapshot at
 * TXID 1, whose file checksum is derived from the page checksums the
 * merge's decoders computed (ltx_encoder_write_page_crc()): no
 * compression round trip, no second CRC. The object is plain LTX (flags
 * 0), or the zstd stored form (cloud_zltx.h) for a state of at most
 * CLOUD_ZLTX_INGEST_MAX bytes, which is what an ingest of the same
 * snapshot would store; every reader takes both.
 *
 * Then exactly what the ingest of a new database does after its checks
 * (cloud_store.c, INGEST and DURABILITY): the database's meta object, the
 * put of the object (fsync, rename, fsync of the directory), one catalog
 * transaction (database row, position, file) with synchronous=FULL, and
 * only then the current copy renamed into place. So the fork is returned
 * only once durable, and a crash (kill -9) before the commit leaves
 * orphans that cloud_store_open() sweeps: no new database, or a complete
 * one. The result is the database a fork of the old path made (TXID 1, a
 * snapshot, the same catalog rows), so every later operation treats it
 * the same.
 *
 * Locks: the caller holds the new database's writer mutex (cdb.mu) and
 * has made sure it does not exist; the catalog lock is taken here for the
 * commit. Logs once on failure.
 */
#ifndef LITEFS_CLOUD_FORK_H
#define LITEFS_CLOUD_FORK_H

#include <stdbool.h>
#include <stdint.h>

#include "cloud/cloud_backend.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_state.h"
#include "ltx/pagesums.h"

/* Where the new database goes. All borrowed for the call. */
struct cloud_fork_dst {
	struct cloud_backend *be;
	struct cloud_catalog *cat;
	const char *tmp_dir;      /* the engine's tmp/: temporary files */
	const char *cur_path;     /* the new database's current copy */
	int64_t id;               /* its new catalog id */
	const char *cluster, *name;
	bool zstd;                /* a small state in the zstd stored form */
};

/* Stores state st (read to its end; its checksum must be checksum, else
 * ERR_LTX_POST_CHECKSUM) as the new database dst: 0 with *row its
 * committed catalog row and *cur_ok whether its current copy is in place
 * (a failed rename after the commit leaves it to be rebuilt, like an
 * ingest's). sums (may be NULL): emptied, then filled with the page
 * checksums of the new copy at its position when at most
 * PAGESUMS_MAX_PAGES pages (the caller keeps them, like ingest's). On
 * error nothing of the new database remains (temporary files removed, an
 * object put before a failed commit deleted). */
int cloud_fork_create(struct cloud_state *st, uint64_t checksum, const struct cloud_fork_dst *dst,
		      struct cat_db *row, bool *cur_ok, struct pagesums *sums);

#endif
