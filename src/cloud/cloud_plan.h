/*
 * cloud_plan.h — restore plans of litefs-cloud's engine: which stored
 * files, in apply order, build a position (RESTORE PLAN in cloud_store.c).
 * Export, the rebuild of a current copy, compaction, snapshots and
 * retention all plan through here, so they agree on what a position
 * needs. Queries of the catalog only: no objects are read, nothing is
 * logged; the caller holds the catalog lock (cloud_store.h: lock order).
 */
#ifndef LITEFS_CLOUD_PLAN_H
#define LITEFS_CLOUD_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "cloud/cloud_catalog.h"

/* A list of stored files, in apply order; start from { 0 }. Caller frees
 * f with free(). */
struct cloud_plan {
	struct cat_file *f;
	size_t n, cap;
};

/* Appends a copy of f. 0 or ERR_NOMEM (p unchanged). */
int cloud_plan_add(struct cloud_plan *p, const struct cat_file *f);

/* Appends the files covering the positions after `from` up to `to`
 * (inclusive) at levels <= max_level, greedily: each step the file that
 * reaches furthest without passing `to`. ERR_CLOUD_WINDOW if there is a
 * hole; p may then hold part of the cover. */
int cloud_plan_cover(struct cloud_catalog *cat, int64_t db_id, uint64_t from, uint64_t to, int max_level,
		     struct cloud_plan *p);
/* The snapshot at or before txid, then cloud_plan_cover() up to txid.
 * ERR_CLOUD_WINDOW when txid has no base or the cover has a hole. */
int cloud_plan_restore(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cloud_plan *p);

#endif
