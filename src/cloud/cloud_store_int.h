/*
 * cloud_store_int.h — what cloud_store.c and cloud_store_maint.c share.
 * Not part of the contract (that is cloud_store.h); the design is at the
 * top of cloud_store.c.
 *
 * Lock order (outermost first): cdb.mu -> cdb.files -> the catalog's
 * mutex; cloud_store.mu is a leaf (registry and thread control only).
 * No function holds two cdb locks of different databases.
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

#define CLOUD_MAX_LEVELS 8
/* Most inputs one compact_run() merges; longer runs go in batches. */
#define CLOUD_COMPACT_BATCH 64
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

	pthread_mutex_t mu; /* guards dbs, next_id, stop, spools */
	pthread_cond_t cond;
	struct cdb *dbs;
	int spools[CLOUD_SPOOLS_KEPT]; /* empty dbfile spools for reuse */
	int n_spools;
	int64_t next_id;
	bool started, stop;
	pthread_t thread;
};

/* A list of stored files, in apply order. Caller frees f with free(). */
struct cloud_plan {
	struct cat_file *f;
	size_t n, cap;
};

int64_t cloud_now_ms(void);
/* The object name of a stored file (at most 64 bytes). */
void cloud_object_name(char *buf, size_t size, int64_t db_id, int level, uint64_t min_txid, uint64_t max_txid);
/* Parses what cloud_object_name() writes; 0 or ERR_INVAL. */
int cloud_object_parse(const char *name, int64_t *db_id, int *level, uint64_t *min_txid, uint64_t *max_txid);
/* A new empty temporary file in tmp_dir; path gets its name. Returns the
 * fd (O_RDWR) or -errno. */
int cloud_tmp_create(struct cloud_store *cs, char *path, size_t size);

/* Files covering the positions after `from` up to `to` (inclusive) at
 * levels <= max_level, greedily: each step the file that reaches
 * furthest without passing `to`. Caller holds the catalog lock.
 * ERR_CLOUD_WINDOW if there is a hole. */
int cloud_plan_cover(struct cloud_store *cs, int64_t db_id, uint64_t from, uint64_t to, int max_level,
		     struct cloud_plan *p);
/* The snapshot at or before txid, then cloud_plan_cover() up to txid. */
int cloud_plan_restore(struct cloud_store *cs, int64_t db_id, uint64_t txid, struct cloud_plan *p);
int cloud_plan_add(struct cloud_plan *p, const struct cat_file *f);

/* Opens stored file f of db_id for reading (backend get). */
int cloud_open_file(struct cloud_store *cs, int64_t db_id, const struct cat_file *f, int *fd);

/* The registry entry of (cluster, name), created if missing. Never NULL
 * except ERR_NOMEM. Borrowed; valid until cloud_store_close(). */
int cloud_cdb_get(struct cloud_store *cs, const char *cluster, const char *name, struct cdb **out);

/* Background work (cloud_store_maint.c). */
void *cloud_maint_thread(void *arg);

#endif
