/*
 * cloud_preview.h — what a past state of a database contains, for the
 * dashboard: GET /db/preview (tables, schema, row counts) and GET
 * /db/preview/rows (the first rows of one table). docs/cloud-api.md has
 * the replies and the bounds.
 *
 * HOW. The state is built by the engine's export (cloud_export_fd(): an
 * unnamed temporary file, never linked, so it is private to this process
 * and gone when closed), mapped read-only, and handed to SQLite with
 * sqlite3_deserialize(SQLITE_DESERIALIZE_READONLY): no path, no locks, no
 * journal, nothing SQLite could write. (Opening /proc/self/fd/N does not
 * work: SQLite resolves the link to the file's "(deleted)" name.) Then
 * `PRAGMA query_only`, SQLITE_DBCONFIG_DEFENSIVE and an untrusted schema
 * (functions in views and triggers of a stored database do not run). A
 * progress handler cuts every statement at its time bound. Each request
 * opens its own connection over the shared mapping; the built files are
 * cached.
 *
 * CACHE. The last CLOUD_PREVIEW_ENTRIES states built (keyed by cluster,
 * database, TXID and checksum, so a database deleted and made again never
 * hits an old state), at most CLOUD_PREVIEW_BYTES in all, least recently
 * used out first. An entry in use is closed when its last user is done.
 * A state larger than the whole budget is built, used and dropped.
 *
 * BOUNDS. Schema: the first CLOUD_PREVIEW_OBJECTS objects, sql text cut at
 * CLOUD_PREVIEW_SQL_MAX bytes. Row counts: CLOUD_PREVIEW_COUNT_MS for all
 * counts of one request; the tables not counted in time get rows null and
 * the reply truncated true. Rows: limit up to CLOUD_PREVIEW_LIMIT_MAX,
 * text values cut at CLOUD_PREVIEW_TEXT_MAX bytes, blobs shown by size
 * and their first 32 bytes; the query and its count are each cut at
 * CLOUD_PREVIEW_COUNT_MS.
 *
 * Thread-safe; one mutex (a leaf lock: nothing is built or read under
 * it) guards the cache.
 */
#ifndef LITEFS_CLOUD_PREVIEW_H
#define LITEFS_CLOUD_PREVIEW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct cloud_store;
struct cloud_target;
struct cloud_preview;

#define CLOUD_PREVIEW_ENTRIES 4
#define CLOUD_PREVIEW_BYTES (1024ull << 20)
#define CLOUD_PREVIEW_OBJECTS 1000
#define CLOUD_PREVIEW_SQL_MAX 16384
#define CLOUD_PREVIEW_COUNT_MS 2000
#define CLOUD_PREVIEW_LIMIT_DEFAULT 50
#define CLOUD_PREVIEW_LIMIT_MAX 500
#define CLOUD_PREVIEW_TEXT_MAX 1024

/* cs is borrowed and must outlive the preview. 0 or ERR_NOMEM; caller
 * frees with cloud_preview_close() (NULL is a no-op), after every call
 * returned; the cached files are closed (and so deleted). */
int cloud_preview_open(struct cloud_store *cs, struct cloud_preview **out);
void cloud_preview_close(struct cloud_preview *p);

/* The body of GET /db/preview for the state at t. 0 with *out (caller
 * frees), or the errors of cloud_export_fd() (ERR_CLOUD_NOT_FOUND,
 * ERR_CLOUD_WINDOW, ERR_CLOUD_NOT_RESTORABLE, ...). */
int cloud_preview_tables(struct cloud_preview *p, const char *cluster, const char *db,
			 const struct cloud_target *t, json_t **out);

/* The body of GET /db/preview/rows: up to limit rows of table (a table or
 * a view of that state's schema, matched exactly; never pasted into SQL
 * unquoted) from offset. As cloud_preview_tables(), plus ERR_CLOUD_NOT_FOUND
 * with msg set for a table that state does not have. */
int cloud_preview_rows(struct cloud_preview *p, const char *cluster, const char *db, const struct cloud_target *t,
		       const char *table, unsigned limit, uint64_t offset, json_t **out, char *msg, size_t msg_len);

#endif
