/*
 * cloud_store_maint.h — the engine's background work on one database:
 * compaction of every level, snapshots, retention (design: the top of
 * cloud_store_maint.c and cloud_store.c). cloud_store.c calls it, from
 * cloud_store_maintain() and the background thread; it calls only the
 * layers below the engine (cloud_store.h: layering and lock order).
 */
#ifndef LITEFS_CLOUD_STORE_MAINT_H
#define LITEFS_CLOUD_STORE_MAINT_H

#include <stdbool.h>
#include <stdint.h>

#include "cloud/cloud_store_int.h"

/* One pass over database d, whose catalog row (as listed at the start of
 * the pass) is row, at now_ms. real_clock: now_ms is the wall clock, so an
 * interval is closed by time only once d had no upload for a grace; a
 * simulated now closes it regardless. Takes d->files (read for
 * compaction, then write for deletions) and the catalog lock, never
 * d->mu, so ingest of d goes on meanwhile. Does nothing if d was deleted
 * (or recreated) since row was read. Returns 0 or the first error, logged
 * here with the database. */
int cloud_store_maint_db(struct cloud_store *cs, struct cdb *d, const struct cat_db *row, int64_t now_ms,
			 bool real_clock);

#endif
