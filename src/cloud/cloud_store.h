/*
 * cloud_store.h — litefs-cloud's storage engine: every transaction of every
 * database of every cluster, verified, durable, compacted, kept for the
 * retention window, and restorable to any transaction in it.
 *
 * This header is the contract between the engine (cloud_store.c and the
 * files it owns) and the HTTP API / CLI (cloud_http.c, cmd_cloud.c). The
 * API layer authenticates and resolves a token to a cluster name before it
 * calls anything here; the engine trusts `cluster` to be a valid cluster
 * name (1..64 bytes of [A-Za-z0-9_.-], not "." or "..") and validates `db`
 * names itself (dbname_valid(), proto/dbname.h; ERR_CLOUD_NAME otherwise).
 *
 * Storage sits behind a backend boundary (local disk now, S3 next): the
 * catalog (a SQLite database in data_dir) records every stored file; the
 * files themselves are LTX files written through the backend.
 *
 * Thread-safe: every function may be called from any HTTP thread. Ingest of
 * one database never waits for another database's compaction.
 *
 * LAYERING. Each file calls only the ones below it, never back up:
 *
 *   cloud_http.c          the API: authentication, JSON, HTTP status
 *   cloud_store.c         this contract: open/close, the registry of
 *                         databases, the background thread, ingest,
 *                         export, restore, info, delete
 *   cloud_store_maint.c   compaction, snapshots, retention of one
 *                         database (cloud_store_maint.h)
 *   cloud_fork.c          a fork: a whole state stored as a new database
 *                         in one pass (cloud_fork.h)
 *   cloud_state.c         a whole state read page by page (a file or a
 *                         merge)
 *   cloud_plan.c          which stored files build a position
 *   cloud_merge.c         a plan's objects merged into the state they build
 *   cloud_object.c        object names, reads, deletes, staging files
 *   cloud_rebuild.c       meta objects; the catalog rebuilt from the backend
 *   cloud_catalog.c       the catalog's queries
 *   cloud_backend_local.c the objects themselves (cloud_backend.h), or
 *   cloud_backend_s3.c    in an S3-compatible bucket
 *
 * The engine's state (struct cloud_store, struct cdb) is in
 * cloud_store_int.h, for cloud_store.c and cloud_store_maint.c only.
 *
 * LOCK ORDER (outermost first): cdb.mu (one database's writers) ->
 * cdb.files (its objects: read to read them, write to delete them) ->
 * cloud_store.mu (the registry, the id counter, the spools, the thread's
 * stop flag) -> the catalog's mutex (innermost). No function holds the
 * locks of two databases at once; maintenance never takes cdb.mu.
 */
#ifndef LITEFS_CLOUD_STORE_H
#define LITEFS_CLOUD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"
#include "proto/dbname.h"

struct cloud_store;
struct cloud_backend;

struct cloud_store_opts {
	const char *data_dir;          /* created if missing */
	int64_t retention_ms;          /* 0: 30 days */
	/* Compaction levels above L0 (L0 = one file per uploaded transaction),
	 * each an interval in ms, ascending, e.g. {10 s, 5 min, 1 h}; NULL:
	 * those three. Daily snapshots (snapshot_interval_ms, 0: 24 h) are the
	 * top level. */
	const int64_t *levels_ms;
	size_t n_levels;
	int64_t snapshot_interval_ms;
	uint64_t max_upload_bytes;     /* 0: 1 GiB */
	/* Where the objects go (cloud_backend_s3.h); NULL: the local disk,
	 * <data_dir>/objects. Takes ownership (closed by cloud_store_close(),
	 * and by cloud_store_open() when it fails). */
	struct cloud_backend *backend;
	/* Snapshots are spaced by size as well as time: at the end of a
	 * snapshot interval one is made only if the restore plan of that
	 * position reads, beyond its base, at least snapshot_ratio times the
	 * base's bytes or more than CLOUD_SNAP_PLAN_FILES files (so a restore
	 * reads at most about 1 + snapshot_ratio databases' worth). 0: 4;
	 * negative: one every interval. */
	double snapshot_ratio;
	/* A group of a compaction level is merged only from at least min_merge
	 * files of the levels below; a sparse group stays as its files (a
	 * level that would only copy them costs storage and saves no reads).
	 * 0: 8; 2: every group of more than one file. */
	unsigned min_merge;
	/* How objects are stored: false (the default) in the zstd stored form
	 * (cloud_zltx.h: compacted files and snapshots, and uploads of at
	 * most CLOUD_ZLTX_INGEST_MAX bytes); true: as LTX with LZ4, uploads
	 * exactly as sent. Either form is read whatever this says. */
	bool store_lz4;
};

/* Largest upload that ingest stores in the zstd form (it is decoded and
 * encoded once more before the put); larger ones are stored as sent, so
 * that large transactions keep their ingest rate. */
#define CLOUD_ZLTX_INGEST_MAX (1u << 20)

/* Most files a restore plan reads beyond its base before the end of a
 * snapshot interval takes a snapshot whatever the sizes. */
#define CLOUD_SNAP_PLAN_FILES 200

/* Opens the store. An empty catalog over a backend that holds objects
 * (a new data directory on an existing bucket) is rebuilt from them first
 * (cloud_rebuild.h). */
int cloud_store_open(const struct cloud_store_opts *opts, struct cloud_store **out);
/* Starts the background compaction and retention work. */
int cloud_store_start(struct cloud_store *cs);
/* One pass of the background work, now (0: the clock): compaction of
 * every level, snapshots, retention, for every database. cloud_store_start()
 * runs it periodically; tests and admin tools may call it directly.
 * Returns 0 or the first error (the pass goes on past it). */
int cloud_store_maintain(struct cloud_store *cs, int64_t now_ms);
/* Stops background work and frees; in-flight calls must have returned. */
void cloud_store_close(struct cloud_store *cs);

/* A position: the database after transaction txid, with its checksum, and
 * the commit timestamp of that transaction (ms since the epoch). */
struct cloud_pos {
	uint64_t txid;
	uint64_t checksum;
	int64_t ts_ms;
};

/* Calls fn for every live (not deleted) database of the cluster, by name. */
int cloud_positions(struct cloud_store *cs, const char *cluster,
		    void (*fn)(void *ctx, const char *db, const struct cloud_pos *pos), void *ctx);

struct cloud_ingest_result {
	struct cloud_pos pos; /* new position; on ERR_CLOUD_POS_MISMATCH the stored one */
	uint64_t hwm;         /* every TXID <= hwm is durable (fsync'd) */
	char msg[256];        /* a human-readable reason on error */
};

/*
 * Verifies and stores one uploaded LTX file, streamed through read(ctx)
 * (never held whole in memory). It must follow the stored position by
 * TXID and pre-apply checksum (ERR_CLOUD_POS_MISMATCH otherwise, with the
 * stored position in res->pos), or be a snapshot (min TXID 1) when the
 * database is new or after it was deleted; its file checksum, page size
 * (ERR_CLOUD_PAGE_SIZE) and the post-apply checksum recomputed from the
 * stored pages must hold (ERR_LTX_* otherwise). Returns 0 only once the
 * file and the catalog are durable. Nothing is stored on any error.
 * Bodies over max_upload_bytes: ERR_CLOUD_TOO_LARGE.
 */
int cloud_ingest(struct cloud_store *cs, const char *cluster, const char *db, ltx_read_fn read, void *ctx,
		 struct cloud_ingest_result *res);

/* A whole SQLite database file (fd, validated: header and integrity) stored
 * as a new transaction of db (POST /db/upload). */
int cloud_upload_sqlite(struct cloud_store *cs, const char *cluster, const char *db, int fd,
			struct cloud_ingest_result *res);

/* Target of a restore or export: by TXID, or by timestamp (the last
 * transaction committed at or before ts_ms), or the latest when both are 0. */
struct cloud_target {
	uint64_t txid;
	int64_t ts_ms;
};

/* The exact position a target resolves to (`restore --check`).
 * ERR_CLOUD_NOT_FOUND, ERR_CLOUD_WINDOW (outside the restorable window),
 * ERR_CLOUD_NOT_RESTORABLE (a TXID inside a multi-transaction upload; see
 * cloud_gap()). Export and restore fail the same way. */
int cloud_resolve(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		  struct cloud_pos *out);

/* Where a TXID lies that cloud_resolve(), cloud_export() or cloud_restore()
 * refused with ERR_CLOUD_NOT_RESTORABLE: inside one upload that brought
 * several transactions at once (a batching client such as LiteFS, a
 * compacted backlog, or a snapshot upload that skipped TXIDs). Only the
 * ends of uploads are positions the engine can rebuild. */
struct cloud_gap {
	uint64_t txid;                   /* the TXID asked for */
	uint64_t upload_min, upload_max; /* the upload covering it (min is 1 for a snapshot) */
	struct cloud_pos before;         /* the nearest restorable position below txid */
	struct cloud_pos after;          /* the nearest above: the upload's end (upload_max) */
};

/* Explains why txid is not restorable. 0 with *out filled; ERR_CLOUD_WINDOW
 * when txid is not inside an upload in the window (outside it, or itself
 * a position); ERR_CLOUD_NOT_FOUND for an unknown database. */
int cloud_gap(struct cloud_store *cs, const char *cluster, const char *db, uint64_t txid, struct cloud_gap *out);

enum cloud_format { CLOUD_FORMAT_LTX, CLOUD_FORMAT_SQLITE };

/* Writes the database as of target through write(ctx): a snapshot LTX
 * (TXID 1..pos.txid) or a plain SQLite file. Reads one snapshot plus a
 * bounded number of compacted files. *pos gets the state written. */
int cloud_export(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		 enum cloud_format format, ltx_write_fn write, void *ctx, struct cloud_pos *pos);

/* cloud_export into a file: *out_fd gets an unnamed file (caller closes)
 * holding the export, positioned at offset 0, and *size its length. For
 * SQLite it is the built state itself, so a server can send it with
 * sendfile without another copy. */
int cloud_export_fd(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		    enum cloud_format format, int *out_fd, uint64_t *size, struct cloud_pos *pos);

/* A SQLite export being read: either a file (fd >= 0: its first size
 * bytes, which a server may send with sendfile) or the state streamed
 * from the stored files as it is built (merge != NULL: read it with
 * cloud_export_read(); a stored file that fails its checks fails a read
 * before the last byte, so whoever got every byte got the verified
 * state). */
struct cloud_merge;
struct cdb;
struct cloud_export_src {
	int fd;
	struct cloud_merge *merge;
	uint64_t size;
	uint64_t off;           /* cloud_export_read()'s offset in fd */
	struct cloud_pos pos;
	/* The latest state streamed while d has no current copy: what is
	 * sent is also written to tee_fd, the copy once verified. */
	int tee_fd;
	char tee_path[4096];
	struct cloud_store *cs;
	struct cdb *d;
};

/* Opens the export of target (format LTX: always a file). 0 or the errors
 * of cloud_export(). Caller closes with cloud_export_close(). */
int cloud_export_open(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		      enum cloud_format format, struct cloud_export_src *out);
/* Up to max bytes (at least 64 KiB) of the export in order; 0 at the end,
 * or a negative code. */
ssize_t cloud_export_read(struct cloud_export_src *x, void *buf, size_t max);
void cloud_export_close(struct cloud_export_src *x);

/* Restores db to target, appended as a new transaction (so restoring again
 * undoes it); with as_db, writes the state into a new database as_db
 * instead (a fork; ERR_CLOUD_EXISTS if it exists). *new_pos gets the
 * resulting position of db (or of as_db). */
int cloud_restore(struct cloud_store *cs, const char *cluster, const char *db, const struct cloud_target *t,
		  const char *as_db, struct cloud_pos *new_pos);

/* What one level of a database's history holds (struct cloud_db_info). */
enum cloud_level_kind {
	CLOUD_LEVEL_UPLOAD,    /* L0: the uploaded files as they came */
	CLOUD_LEVEL_COMPACTED, /* L1..Ln: merges per interval */
	CLOUD_LEVEL_SNAPSHOT,  /* the top level: full snapshots per interval */
};

struct cloud_level_info {
	int level;
	enum cloud_level_kind kind;
	int64_t interval_ms;   /* 0 for L0 */
	uint64_t files, bytes; /* stored now */
};

/* A stored file that is a whole database (min TXID 1): an uploaded
 * snapshot (level 0) or one the engine made (the snapshot level). */
struct cloud_snapshot_info {
	uint64_t txid;  /* its max TXID */
	int64_t ts_ms;  /* monotonic timestamp of that position */
	uint64_t size;  /* bytes stored */
	int level;
};

/* A run of the restorable history. per_tx: every TXID from_txid..to_txid
 * is restorable (one upload per transaction). Otherwise a run of uploads
 * that each brought several transactions at once (a batching client such
 * as LiteFS, a compacted backlog, a snapshot upload): only the `points`
 * upload ends in from_txid..to_txid are restorable, to_txid the last. */
struct cloud_range {
	uint64_t from_txid, to_txid;
	bool per_tx;
	uint64_t points;
};

/* Runs kept in struct cloud_db_info: the newest ones. */
#define CLOUD_INFO_RANGES_MAX 100

/* A database's history, for the CLI and the dashboard (GET /db/info). */
struct cloud_db_info {
	char cluster[64 + 1];
	char name[DBNAME_MAX + 1];
	struct cloud_pos pos;     /* the current position */
	uint32_t page_size;
	uint32_t pages;           /* database size in pages */
	int64_t transactions;     /* restorable positions */
	/* The restorable range: the first and the current position, with
	 * their monotonic timestamps (see TIMESTAMPS in cloud_store.c). */
	uint64_t min_txid, max_txid;
	int64_t min_ts_ms, max_ts_ms;
	struct cloud_snapshot_info *snapshots; /* by level, then TXID */
	size_t n_snapshots;
	struct cloud_level_info *levels;       /* levels[l] is level l, 0..top */
	size_t n_levels;
	/* The restorable history as runs, oldest first: the newest
	 * CLOUD_INFO_RANGES_MAX, after ranges_omitted older ones. */
	struct cloud_range ranges[CLOUD_INFO_RANGES_MAX];
	size_t n_ranges;
	uint64_t ranges_omitted;
	uint64_t bytes;           /* stored, every level */
	int64_t retention_ms;
};

/* The history of db: position, restorable range, snapshots, files and
 * bytes per level. ERR_CLOUD_NAME, ERR_CLOUD_NOT_FOUND, ERR_NOMEM, or a
 * catalog error. Caller frees *out with cloud_db_info_free(). */
int cloud_db_info(struct cloud_store *cs, const char *cluster, const char *db, struct cloud_db_info **out);
/* Frees what cloud_db_info() returned; NULL is a no-op. */
void cloud_db_info_free(struct cloud_db_info *info);

/* ---- History for the dashboard (cloud_timeline.c) ------------------------
 * Cheap reads that let a caller keep its own index of a database's
 * positions up to date incrementally: the head (one catalog row and a few
 * keyed lookups), then the positions after the last one it has. */

#define CLOUD_HIST_LEVELS_MAX 8

struct cloud_hist_head {
	/* Changes when the database is deleted and created again: an index
	 * of the old one must be dropped. */
	int64_t incarnation;
	struct cloud_pos pos;      /* current position (header timestamp) */
	int64_t mts_ms;            /* its monotonic timestamp */
	uint32_t page_size, pages;
	uint64_t first_txid;       /* the oldest restorable position */
	/* Compacted levels 1..n_levels: interval and how far compaction
	 * considered positions (every position <= done was grouped). */
	int n_levels;
	int64_t level_ms[CLOUD_HIST_LEVELS_MAX + 1];
	uint64_t level_done[CLOUD_HIST_LEVELS_MAX + 1];
	int snap_level;
	unsigned min_merge;        /* a group is merged from this many lower files or more */
};

/* One restorable position and the bytes its upload stored (0 when that
 * object is gone). ts_ms is the monotonic timestamp. */
struct cloud_hist_tx {
	uint64_t txid, min_txid;
	int64_t ts_ms;
	uint64_t size;
};

/* ERR_CLOUD_NAME, ERR_CLOUD_NOT_FOUND or a catalog error. */
int cloud_hist_head(struct cloud_store *cs, const char *cluster, const char *db, struct cloud_hist_head *out);
/* Up to max positions with TXID > after, ascending, of the incarnation
 * given (ERR_CLOUD_NOT_FOUND if the database is no longer that one). */
int cloud_hist_scan(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
		    uint64_t after, struct cloud_hist_tx *out, size_t max, size_t *n);
/* The stored bases (min TXID 1: snapshots) by TXID. Caller frees *out
 * with free(). */
int cloud_hist_snapshots(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
			 struct cloud_snapshot_info **out, size_t *n);

/* A walk over every stored file of a database summing their bytes, in
 * chunks (each under the catalog lock once): zero it to start. */
struct cloud_hist_bytes {
	uint64_t key_min, key_max; /* the last file read */
	int key_level;
	uint64_t bytes;            /* sum so far */
	bool done;
};
/* Goes on with the walk w over up to max_rows files. */
int cloud_hist_bytes_step(struct cloud_store *cs, const char *cluster, const char *db, int64_t incarnation,
			  struct cloud_hist_bytes *w, size_t max_rows);

/* Deletes a database and all its history. */
int cloud_db_delete(struct cloud_store *cs, const char *cluster, const char *db);

/* Deletes everything of a cluster (when the cluster is deleted). */
int cloud_cluster_purge(struct cloud_store *cs, const char *cluster);

#endif
