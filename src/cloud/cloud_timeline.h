/*
 * cloud_timeline.h — the dashboard's view of the histories of a cluster's
 * databases: GET /dbs and GET /db/timeline (docs/cloud-api.md).
 *
 * WHY AN INDEX. A timeline of 30 days may hold a million positions; the
 * catalog can list them, but reading a million rows takes seconds and
 * holds the catalog's lock that every ingest needs. So each database that
 * was asked about gets an in-memory index of its positions (TXID, upload's
 * first TXID, monotonic timestamp, bytes of the upload: 32 bytes each),
 * built once from the catalog in chunks (the lock is released between
 * chunks) and brought up to date at the start of every request: one head
 * read (the catalog row, the first position, the compaction marks) and
 * the positions committed since the last request. Retention is followed
 * by dropping the positions below the first one; a delete and re-create
 * by the head's incarnation changing. Queries are binary searches on the
 * timestamps (monotonic, so sorted) and one pass over the range for
 * buckets and compaction spans.
 *
 * An index lives until the service stops (32 MB per million positions;
 * only databases that exist get one); a deleted database's index is
 * emptied at its next request.
 *
 * Compaction spans are derived, not listed: level k groups the positions
 * whose timestamps fall into one aligned interval of level k's length
 * (cloud_store.c, LEVELS), up to the level's progress mark, and stores a
 * file for a group that holds more than one group of the level below
 * (level_spans() has the rule; tests/unit/test_cloud_timeline.c checks it
 * against the files the engine stored). Reading those files from the
 * catalog would read every L0 row of the range as well (the files table
 * is keyed by TXID, not level).
 *
 * Thread-safe. LOCK ORDER: an index's mutex, then the engine's locks
 * (cloud_store.h); the registry's mutex is a leaf.
 */
#ifndef LITEFS_CLOUD_TIMELINE_H
#define LITEFS_CLOUD_TIMELINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct cloud_store;
struct cloud_timeline;

/* A node pushed within this long: "pushing" in GET /dbs. */
#define CLOUD_TIMELINE_PUSHING_MS 10000
/* GET /db/timeline's max: the default and the cap. */
#define CLOUD_TIMELINE_MAX_DEFAULT 500
#define CLOUD_TIMELINE_MAX_CAP 5000

/* cs is borrowed and must outlive the timeline. 0 or ERR_NOMEM; caller
 * frees with cloud_timeline_close() (NULL is a no-op). */
int cloud_timeline_open(struct cloud_store *cs, struct cloud_timeline **out);
void cloud_timeline_close(struct cloud_timeline *tl);

/* Records that a node's upload of db was stored now (wall clock, ms). */
void cloud_timeline_pushed(struct cloud_timeline *tl, const char *cluster, const char *db, int64_t now_ms);

/* The body of GET /dbs for cluster. 0 with *out (caller frees with
 * json_decref), or ERR_NOMEM / a catalog error. */
int cloud_timeline_dbs(struct cloud_timeline *tl, const char *cluster, json_t **out);

struct cloud_timeline_query {
	bool has_from, has_to;
	int64_t from_ms, to_ms; /* inclusive; default: the restorable window */
	unsigned max;           /* 1..CLOUD_TIMELINE_MAX_CAP */
};

/* The body of GET /db/timeline. 0 with *out (caller frees), or
 * ERR_CLOUD_NAME, ERR_CLOUD_NOT_FOUND, ERR_INVAL (from after to), ERR_NOMEM,
 * a catalog error. */
int cloud_timeline_query(struct cloud_timeline *tl, const char *cluster, const char *db,
			 const struct cloud_timeline_query *q, json_t **out);

#endif
