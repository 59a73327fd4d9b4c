/*
 * cloud_catalog.h — litefs-cloud's catalog: one SQLite database
 * (<data_dir>/catalog.db, WAL, synchronous=FULL) that records every
 * database, every restorable position and every stored LTX object. The
 * design and the invariants are in cloud_store.c; this module only runs
 * the queries.
 *
 * One connection, guarded by the catalog's mutex: callers take it with
 * cloud_catalog_lock() around a query or a whole transaction (it is the
 * innermost lock of the engine). Checksums and TXIDs are u64 stored as
 * SQLite integers (the same 64 bits).
 *
 * Errors: 0, ERR_CLOUD_NOT_FOUND (no such row), -EIO (the SQLite message
 * is logged), ERR_NOMEM.
 */
#ifndef LITEFS_CLOUD_CATALOG_H
#define LITEFS_CLOUD_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cloud_catalog;

/* Makes room for one more element in the growable array *v (n used, *cap
 * allocated, elements of size elem). 0 or ERR_NOMEM (*v unchanged). */
int cloud_catalog_grow(void **v, size_t n, size_t *cap, size_t elem);

#define CLOUD_CLUSTER_MAX 64
#define CLOUD_DB_NAME_MAX 200
/* Compaction levels above L0; a file's level is 0..CLOUD_MAX_LEVELS + 1
 * (the level above the last compacted one holds snapshots). */
#define CLOUD_MAX_LEVELS 8

/* A database: its identity and current position. */
struct cat_db {
	int64_t id;
	char cluster[CLOUD_CLUSTER_MAX + 1];
	char name[CLOUD_DB_NAME_MAX + 1];
	uint32_t page_size;  /* of the last transaction */
	uint32_t commit;     /* size in pages */
	uint64_t txid, checksum;
	int64_t ts_ms;       /* header timestamp of the last transaction */
	int64_t mts_ms;      /* its monotonic timestamp (see cloud_store.c) */
	int64_t created_ms;
};

/* A restorable position: the state after one uploaded LTX file. */
struct cat_tx {
	uint64_t txid, min_txid, checksum;
	int64_t ts_ms, mts_ms;
	uint32_t page_size;
};

/* A stored LTX object. */
struct cat_file {
	int level;
	uint64_t min_txid, max_txid, pre, post;
	int64_t mts_ms;      /* monotonic timestamp of its last transaction */
	uint32_t page_size;
	uint64_t size;
};

int cloud_catalog_open(const char *path, struct cloud_catalog **out);
void cloud_catalog_close(struct cloud_catalog *cat); /* NULL is a no-op */
void cloud_catalog_lock(struct cloud_catalog *cat);
void cloud_catalog_unlock(struct cloud_catalog *cat);

/* Everything below: caller holds the lock. */
int cloud_catalog_begin(struct cloud_catalog *cat);
int cloud_catalog_commit(struct cloud_catalog *cat);
void cloud_catalog_rollback(struct cloud_catalog *cat);

int cloud_catalog_db_get(struct cloud_catalog *cat, const char *cluster, const char *name, struct cat_db *out);
int cloud_catalog_db_get_id(struct cloud_catalog *cat, int64_t id, struct cat_db *out);
/* Inserts (db->id given) or updates the position of db. */
int cloud_catalog_db_put(struct cloud_catalog *cat, const struct cat_db *db, bool insert);
/* Deletes the database row and all its txs, files and compaction rows. */
int cloud_catalog_db_delete(struct cloud_catalog *cat, int64_t id);
/* Calls fn for each database of cluster (every database if NULL), by name. */
int cloud_catalog_db_list(struct cloud_catalog *cat, const char *cluster,
			  int (*fn)(void *ctx, const struct cat_db *db), void *ctx);
int64_t cloud_catalog_max_db_id(struct cloud_catalog *cat);

int cloud_catalog_tx_insert(struct cloud_catalog *cat, int64_t db_id, const struct cat_tx *tx);
int cloud_catalog_tx_get(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cat_tx *out);
/* The last position with mts_ms <= mts (ERR_CLOUD_NOT_FOUND if none). */
int cloud_catalog_tx_at_time(struct cloud_catalog *cat, int64_t db_id, int64_t mts, struct cat_tx *out);
/* The positions on either side of txid (itself not one): *before the last
 * one below it (zeroed if none), *after the first one above it (whose
 * upload, min_txid..txid, covers txid). ERR_CLOUD_NOT_FOUND if none is
 * above. */
int cloud_catalog_tx_around(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cat_tx *before,
			    struct cat_tx *after);
int cloud_catalog_tx_first(struct cloud_catalog *cat, int64_t db_id, struct cat_tx *out);
int64_t cloud_catalog_tx_count(struct cloud_catalog *cat, int64_t db_id);
/* Up to max positions with txid > after, ascending, into out; *n gets
 * the count. */
int cloud_catalog_tx_scan(struct cloud_catalog *cat, int64_t db_id, uint64_t after, struct cat_tx *out,
			  size_t max, size_t *n);
/* The last position in (after, upto] that breaks a chain of positions of
 * page_size: an uploaded snapshot (min TXID 1) or another page size; 0
 * if none. */
int cloud_catalog_tx_last_break(struct cloud_catalog *cat, int64_t db_id, uint64_t after, uint64_t upto,
				uint32_t page_size, uint64_t *txid);
/* cloud_catalog_tx_scan() with, in sizes[i], the bytes of the L0 object
 * that brought out[i] (0 when it is no longer stored). */
int cloud_catalog_tx_scan_sized(struct cloud_catalog *cat, int64_t db_id, uint64_t after, struct cat_tx *out,
				uint64_t *sizes, size_t max, size_t *n);
int cloud_catalog_tx_delete_below(struct cloud_catalog *cat, int64_t db_id, uint64_t txid);

int cloud_catalog_file_insert(struct cloud_catalog *cat, int64_t db_id, const struct cat_file *f);
/* Records one stored upload in one transaction (rolled back on error):
 * the database's row (inserted or updated: its new position), the
 * position tx and the object f. */
int cloud_catalog_add_upload(struct cloud_catalog *cat, const struct cat_db *db, bool insert,
			     const struct cat_file *f, const struct cat_tx *tx);
int cloud_catalog_file_delete(struct cloud_catalog *cat, int64_t db_id, const struct cat_file *f);
bool cloud_catalog_file_exists(struct cloud_catalog *cat, int64_t db_id, int level, uint64_t min_txid,
			       uint64_t max_txid);
/* The snapshot (min TXID 1) with the largest max TXID <= txid. */
int cloud_catalog_file_base(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cat_file *out);
/* The file starting at min_txid with the largest max TXID <= max_txid at
 * a level <= max_level (the coarsest on a tie). */
int cloud_catalog_file_next(struct cloud_catalog *cat, int64_t db_id, uint64_t min_txid, uint64_t max_txid,
			    int max_level, struct cat_file *out);
/* The file ending at max_txid that starts at or after min_from, at a
 * level in [min_level, max_level]: the one starting first (the coarsest
 * on a tie). Reads only the files starting in [min_from, max_txid]. */
int cloud_catalog_file_ending(struct cloud_catalog *cat, int64_t db_id, uint64_t min_from, uint64_t max_txid,
			      int min_level, int max_level, struct cat_file *out);
/* Calls fn for each file of the database with max TXID <= max_txid, by
 * level then TXID. */
int cloud_catalog_file_list(struct cloud_catalog *cat, int64_t db_id, uint64_t max_txid,
			    int (*fn)(void *ctx, const struct cat_file *f), void *ctx);

/* Calls fn for each base (min TXID 1) of the database, by max TXID; stops
 * at fn's first non-zero return, which it returns. The files table is
 * keyed by (db, min TXID), so this reads only the bases. */
int cloud_catalog_file_bases(struct cloud_catalog *cat, int64_t db_id,
			     int (*fn)(void *ctx, const struct cat_file *f), void *ctx);
/* Where a walk over a database's files stands: the key of the last file
 * read (all zero before the first). */
struct cat_file_key {
	uint64_t min_txid, max_txid;
	int level;
};
/* Adds the sizes of up to max files after *after (in key order) to
 * *bytes, moves *after to the last one read; *n gets the count (< max at
 * the end). A walk in chunks lets the lock go between them. */
int cloud_catalog_file_sizes(struct cloud_catalog *cat, int64_t db_id, struct cat_file_key *after, size_t max,
			     uint64_t *bytes, size_t *n);

/* Compaction progress: every position <= *txid was considered at level. */
int cloud_catalog_done_get(struct cloud_catalog *cat, int64_t db_id, int level, uint64_t *txid);
int cloud_catalog_done_set(struct cloud_catalog *cat, int64_t db_id, int level, uint64_t txid);

#endif
