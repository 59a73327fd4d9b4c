/*
 * cloud_store_int.h — the engine's state, shared by cloud_store.c (which
 * owns it: open, close, the registry, the writers) and the maintenance it
 * calls (cloud_store_maint.c). Not part of the contract (that is
 * cloud_store.h, which also has the layering and the lock order); the
 * design is at the top of cloud_store.c.
 */
#ifndef LITEFS_CLOUD_STORE_INT_H
#define LITEFS_CLOUD_STORE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cloud/cloud_backend.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_store.h"
#include "ltx/pagesums.h"

/* Staging spools kept for reuse (one per concurrent ingest or rebuild). */
#define CLOUD_SPOOLS_KEPT 8

/* One database name of one cluster. Entries live until the store closes. */
struct cdb {
	struct cdb *next;
	char cluster[CLOUD_CLUSTER_MAX + 1];
	char name[CLOUD_DB_NAME_MAX + 1];
	/* Serialises the writers of this database (ingest, restore, upload,
	 * delete); guards cur_ok and the current copy's content. */
	pthread_mutex_t mu;
	/* Read: reading stored objects (export, rebuild, compaction).
	 * Write: deleting objects (retention, superseded files, delete). */
	pthread_rwlock_t files;
	/* Catalog id, 0 when the database does not exist. Written with both
	 * mu and files (write) held; read with either. */
	int64_t id;
	bool cur_ok; /* current copy checked against the catalog since open */
	/* Wall clock of the last stored upload (atomic): maintenance with the
	 * real clock closes an interval by time only once the database was
	 * quiet for a grace, so a backlog being pushed is grouped once. */
	int64_t last_ingest_ms;
	/* Page checksums of the current copy (guarded by mu), so ingest
	 * never reads the pages an upload replaces; used only while
	 * sums.pos is the catalog's position (apply_upload()). */
	struct pagesums sums;
	bool sums_off; /* too large to keep them: dbfile_apply() instead */
};

struct cloud_store {
	char data_dir[PATH_MAX - 128];
	char tmp_dir[PATH_MAX - 64];
	char cur_dir[PATH_MAX - 64];
	struct cloud_backend *be;
	struct cloud_catalog *cat;
	int64_t retention_ms;
	int64_t levels_ms[CLOUD_MAX_LEVELS + 2]; /* [1..n_levels]; [snap] = snapshot interval */
	int n_levels;
	int snap_level;                          /* n_levels + 1 */
	uint64_t max_upload_bytes;
	double snap_ratio;   /* < 0: a snapshot every interval (opts.snapshot_ratio) */
	unsigned min_merge;  /* opts.min_merge, >= 2 */
	bool store_lz4;      /* opts.store_lz4 */

	pthread_mutex_t mu; /* guards dbs, next_id, stop, spools */
	pthread_cond_t cond;
	struct cdb *dbs;
	int spools[CLOUD_SPOOLS_KEPT]; /* empty dbfile spools for reuse */
	int n_spools;
	struct cloud_stage *stage; /* ingest's kept staging buffer (cloud_stage.h) */
	int64_t next_id;
	bool started, stop;
	pthread_t thread;
};

/* The database cluster/db, ERR_CLOUD_NOT_FOUND if unknown (cloud_store.c). */
int store_lookup(struct cloud_store *cs, const char *cluster, const char *db, struct cdb **out);
/* d's catalog row. */
int store_db_row(struct cloud_store *cs, struct cdb *d, struct cat_db *row);

static inline struct cloud_pos pos_of(const struct cat_db *db)
{
	return (struct cloud_pos){ db->txid, db->checksum, db->ts_ms };
}

#endif
