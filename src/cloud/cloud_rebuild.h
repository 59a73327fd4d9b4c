/*
 * cloud_rebuild.h — "the bucket is the truth": what litefs-cloud keeps in
 * object storage besides the LTX objects, and the rebuild of the local
 * catalog from the objects alone.
 *
 * The catalog (catalog.db) is a local index. Everything it holds can be
 * derived from the backend:
 *  - "<id>/meta" (one small object per database, written before its first
 *    LTX object, deleted first when the database is deleted) names the
 *    database: cluster, name, creation time;
 *  - every LTX object's header and trailer give its level (from the name),
 *    TXID range, page size, size in pages, timestamp and checksums; every
 *    object's max TXID is a restorable position (docs/cloud-s3.md,
 *    "The bucket is the truth": why), the L0 objects give the upload boundaries.
 *
 * Below cloud_store.c; calls cloud_catalog, cloud_object and the backend.
 * No locks of its own: cloud_store_open() calls it before anything else
 * can touch the store.
 */
#ifndef LITEFS_CLOUD_REBUILD_H
#define LITEFS_CLOUD_REBUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloud/cloud_backend.h"
#include "cloud/cloud_catalog.h"

/* "<16 hex digits>/meta" for database id. */
void cloud_meta_name(char *buf, size_t size, int64_t db_id);
/* True if name is a database's meta object; *db_id gets its id. */
bool cloud_meta_parse(const char *name, int64_t *db_id);
/* True if name is under a database id ("<16 hex digits>/..."), i.e. the
 * engine's: an LTX object or a meta object. */
bool cloud_meta_is_engine_name(const char *name);

/* Stores the meta object of a new database (before its first LTX object,
 * so that the bucket never holds objects it cannot name). tmp_dir holds
 * the temporary file. 0 or the put's error. */
int cloud_meta_put(struct cloud_backend *be, const char *tmp_dir, int64_t db_id, const char *cluster,
		   const char *name, int64_t created_ms);

/* A catalog from an earlier run on this data directory, kept as a hint
 * for the next rebuild (several instances: an instance that becomes the
 * bucket's writer again renames its old catalog to this name instead of
 * deleting it; docs/cloud-s3.md, "Failover"). */
#define CLOUD_REBUILD_HINT "catalog.prev.db"

/* Opens <data_dir>/CLOUD_REBUILD_HINT if it exists: 0 with *out (NULL if
 * there is none), or the error. cloud_rebuild_hint_done() closes it and
 * removes the files. */
int cloud_rebuild_hint_open(const char *data_dir, struct cloud_catalog **out);
void cloud_rebuild_hint_done(const char *data_dir, struct cloud_catalog *hint);
/* Before a rebuild by an instance that becomes the bucket's writer: the
 * catalog it kept (<data_dir>/catalog.db, stale: another writer wrote
 * since) becomes the hint, or, when the hint is newer (warm_hint: kept
 * warm by cloud_rebuild_hint_refresh), is removed. */
void cloud_rebuild_hint_set_aside(const char *data_dir, bool warm_hint);

/* A standby keeps its hint warm: rebuilds a new catalog from the backend
 * (the current hint as ITS hint, so only new objects are read) and makes
 * it the hint. Reads the backend only. *n_read gets the objects read. 0 or
 * the error; the old hint stays on error. */
int cloud_rebuild_hint_refresh(struct cloud_backend *be, const char *data_dir, size_t *n_files, size_t *n_read);

/*
 * Fills an EMPTY catalog from the backend: one row per database with a
 * meta object (the highest id wins if two name the same database), every
 * LTX object of it as a file row, every object end as a position, the
 * compaction marks at each level's last file. Objects of ids without a
 * meta are left for cloud_store_open()'s orphan sweep. *n_dbs and
 * *n_files get what was rebuilt (0, 0 for an empty backend). With a hint
 * (NULL: none), what an object's header and trailer would say is taken
 * from the hint's rows when it has a file of the same id, level, TXID
 * range and size, a position at its end and, for the last object of a
 * database, that same position as the database's (its size in pages);
 * metas from its database rows. Objects are immutable and ids never
 * reused, so those rows are what the reads would give; *n_reused counts
 * the objects not read. One catalog
 * transaction: all or nothing. Errors: the backend's, -EIO (a header that
 * does not decode), ERR_NOMEM.
 */
int cloud_rebuild_catalog(struct cloud_backend *be, struct cloud_catalog *cat, struct cloud_catalog *hint,
			  size_t *n_dbs, size_t *n_files, size_t *n_reused);

#endif
