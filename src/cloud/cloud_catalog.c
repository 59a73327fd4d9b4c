/*
 * cloud_catalog.c — the catalog's schema and queries (see cloud_catalog.h;
 * the design is in cloud_store.c).
 *
 * Statements are prepared once and cached by their SQL text's address
 * (every SQL string here is a literal), so the hot path of an ingest costs
 * no parsing.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloud/cloud_catalog.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"

/* More than the distinct statements of this file (asserted in q()). */
#define STMT_CACHE 64

struct cloud_catalog {
	pthread_mutex_t mu; /* guards conn and the statement cache */
	sqlite3 *conn;
	struct {
		const char *sql;
		sqlite3_stmt *st;
	} cache[STMT_CACHE];
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS dbs ("
	"  id INTEGER PRIMARY KEY, cluster TEXT NOT NULL, name TEXT NOT NULL,"
	"  page_size INTEGER NOT NULL, n_pages INTEGER NOT NULL, txid INTEGER NOT NULL,"
	"  checksum INTEGER NOT NULL, ts_ms INTEGER NOT NULL, mts_ms INTEGER NOT NULL,"
	"  created_ms INTEGER NOT NULL, UNIQUE (cluster, name));"
	"CREATE TABLE IF NOT EXISTS txs ("
	"  db_id INTEGER NOT NULL, txid INTEGER NOT NULL, min_txid INTEGER NOT NULL,"
	"  checksum INTEGER NOT NULL, ts_ms INTEGER NOT NULL, mts_ms INTEGER NOT NULL,"
	"  page_size INTEGER NOT NULL, PRIMARY KEY (db_id, txid)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS txs_time ON txs (db_id, mts_ms);"
	"CREATE TABLE IF NOT EXISTS files ("
	"  db_id INTEGER NOT NULL, level INTEGER NOT NULL, min_txid INTEGER NOT NULL,"
	"  max_txid INTEGER NOT NULL, pre INTEGER NOT NULL, post INTEGER NOT NULL,"
	"  mts_ms INTEGER NOT NULL, page_size INTEGER NOT NULL, size INTEGER NOT NULL,"
	"  PRIMARY KEY (db_id, min_txid, max_txid, level)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS compaction ("
	"  db_id INTEGER NOT NULL, level INTEGER NOT NULL, done_txid INTEGER NOT NULL,"
	"  PRIMARY KEY (db_id, level)) WITHOUT ROWID;";

static int fail(struct cloud_catalog *cat, const char *what)
{
	LOG_ERROR("cloud", "msg=\"catalog %s failed\" err=\"%s\"", what, sqlite3_errmsg(cat->conn));
	return -EIO;
}

/* The cached, reset statement for sql with its parameters bound to the
 * int64 values given (n of them). NULL on failure (logged). */
static sqlite3_stmt *q(struct cloud_catalog *cat, const char *sql, int n, ...)
{
	sqlite3_stmt *st = NULL;
	size_t i;

	for (i = 0; i < STMT_CACHE && cat->cache[i].sql; i++) {
		if (cat->cache[i].sql == sql) {
			st = cat->cache[i].st;
			break;
		}
	}
	if (st == NULL) {
		if (sqlite3_prepare_v3(cat->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
			fail(cat, "prepare");
			return NULL;
		}
		assert(i < STMT_CACHE); /* else the statement would leak */
		cat->cache[i].sql = sql;
		cat->cache[i].st = st;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	va_list ap;
	va_start(ap, n);
	for (int k = 1; k <= n; k++)
		sqlite3_bind_int64(st, k, va_arg(ap, int64_t));
	va_end(ap);
	return st;
}

/* Runs a statement that returns no rows. */
static int exec_done(struct cloud_catalog *cat, sqlite3_stmt *st)
{
	if (st == NULL)
		return -EIO;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : fail(cat, "write");
}

/* Steps once: 1 with a row, 0 at the end, -EIO on error. */
static int step_row(struct cloud_catalog *cat, sqlite3_stmt *st)
{
	if (st == NULL)
		return -EIO;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 1;
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : fail(cat, "read");
}

int cloud_catalog_grow(void **v, size_t n, size_t *cap, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 16;
	void *nv = realloc(*v, ncap * elem);
	if (nv == NULL)
		return ERR_NOMEM;
	*v = nv;
	*cap = ncap;
	return 0;
}

#define I64(x) ((int64_t)(x))
/* A TXID bound as a SQL integer: "no bound" (UINT64_MAX) becomes INT64_MAX. */
#define TXB(x) ((x) > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)(x))
#define COL(st, i) ((uint64_t)sqlite3_column_int64((st), (i)))

int cloud_catalog_open(const char *path, struct cloud_catalog **out)
{
	struct cloud_catalog *cat = calloc(1, sizeof(*cat));
	if (cat == NULL)
		return ERR_NOMEM;
	pthread_mutex_init(&cat->mu, NULL);
	/* Pre-created 0600: SQLite gives its -wal and -shm the same mode. */
	bool tightened = false;
	int prc = fileio_private_sqlite(path, &tightened);
	if (prc != 0) {
		LOG_ERROR("cloud", "msg=\"cannot create the catalog\" path=%s err=\"%s\"", path, err_str(prc));
		cloud_catalog_close(cat);
		return prc;
	}
	if (tightened)
		LOG_WARN("cloud", "msg=\"the catalog was readable by other users; removed group and other "
				  "permissions\" path=%s", path);
	if (sqlite3_open_v2(path, &cat->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
			    NULL) != SQLITE_OK) {
		LOG_ERROR("cloud", "msg=\"cannot open catalog\" path=%s err=\"%s\"", path,
			  cat->conn ? sqlite3_errmsg(cat->conn) : "out of memory");
		cloud_catalog_close(cat);
		return -EIO;
	}
	sqlite3_busy_timeout(cat->conn, 10000);
	if (sqlite3_exec(cat->conn, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(cat->conn, schema, NULL, NULL, NULL) != SQLITE_OK) {
		int rc = fail(cat, "schema");
		cloud_catalog_close(cat);
		return rc;
	}
	*out = cat;
	return 0;
}

void cloud_catalog_close(struct cloud_catalog *cat)
{
	if (cat == NULL)
		return;
	for (size_t i = 0; i < STMT_CACHE && cat->cache[i].sql; i++)
		sqlite3_finalize(cat->cache[i].st);
	sqlite3_close(cat->conn);
	pthread_mutex_destroy(&cat->mu);
	free(cat);
}

void cloud_catalog_lock(struct cloud_catalog *cat)
{
	pthread_mutex_lock(&cat->mu);
}

void cloud_catalog_unlock(struct cloud_catalog *cat)
{
	pthread_mutex_unlock(&cat->mu);
}

int cloud_catalog_begin(struct cloud_catalog *cat)
{
	return exec_done(cat, q(cat, "BEGIN IMMEDIATE", 0));
}

int cloud_catalog_commit(struct cloud_catalog *cat)
{
	int rc = exec_done(cat, q(cat, "COMMIT", 0));
	if (rc < 0)
		cloud_catalog_rollback(cat);
	return rc;
}

void cloud_catalog_rollback(struct cloud_catalog *cat)
{
	if (!sqlite3_get_autocommit(cat->conn))
		sqlite3_exec(cat->conn, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- dbs ---------------------------------------------------------------- */

#define DB_COLS "id, cluster, name, page_size, n_pages, txid, checksum, ts_ms, mts_ms, created_ms"

static void db_row(sqlite3_stmt *st, struct cat_db *d)
{
	memset(d, 0, sizeof(*d));
	d->id = sqlite3_column_int64(st, 0);
	snprintf(d->cluster, sizeof(d->cluster), "%s", (const char *)sqlite3_column_text(st, 1));
	snprintf(d->name, sizeof(d->name), "%s", (const char *)sqlite3_column_text(st, 2));
	d->page_size = (uint32_t)COL(st, 3);
	d->commit = (uint32_t)COL(st, 4);
	d->txid = COL(st, 5);
	d->checksum = COL(st, 6);
	d->ts_ms = sqlite3_column_int64(st, 7);
	d->mts_ms = sqlite3_column_int64(st, 8);
	d->created_ms = sqlite3_column_int64(st, 9);
}

/* One db row from st: 0, ERR_CLOUD_NOT_FOUND or -EIO. */
static int db_one(struct cloud_catalog *cat, sqlite3_stmt *st, struct cat_db *out)
{
	int rc = step_row(cat, st);
	if (rc <= 0)
		return rc == 0 ? ERR_CLOUD_NOT_FOUND : rc;
	db_row(st, out);
	sqlite3_reset(st);
	return 0;
}

int cloud_catalog_db_get(struct cloud_catalog *cat, const char *cluster, const char *name, struct cat_db *out)
{
	sqlite3_stmt *st = q(cat, "SELECT " DB_COLS " FROM dbs WHERE cluster = ?1 AND name = ?2", 0);
	if (st == NULL)
		return -EIO;
	sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
	return db_one(cat, st, out);
}

int cloud_catalog_db_get_id(struct cloud_catalog *cat, int64_t id, struct cat_db *out)
{
	return db_one(cat, q(cat, "SELECT " DB_COLS " FROM dbs WHERE id = ?1", 1, id), out);
}

int cloud_catalog_db_put(struct cloud_catalog *cat, const struct cat_db *d, bool insert)
{
	sqlite3_stmt *st;
	if (insert)
		st = q(cat, "INSERT INTO dbs (" DB_COLS ") VALUES (?1, ?11, ?12, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", 8,
		       d->id, I64(d->page_size), I64(d->commit), I64(d->txid), I64(d->checksum), d->ts_ms,
		       d->mts_ms, d->created_ms);
	else
		st = q(cat, "UPDATE dbs SET page_size = ?2, n_pages = ?3, txid = ?4, checksum = ?5, ts_ms = ?6,"
			    " mts_ms = ?7 WHERE id = ?1", 7,
		       d->id, I64(d->page_size), I64(d->commit), I64(d->txid), I64(d->checksum), d->ts_ms, d->mts_ms);
	if (st && insert) {
		sqlite3_bind_text(st, 11, d->cluster, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 12, d->name, -1, SQLITE_TRANSIENT);
	}
	return exec_done(cat, st);
}

int cloud_catalog_db_delete(struct cloud_catalog *cat, int64_t id)
{
	int rc = exec_done(cat, q(cat, "DELETE FROM dbs WHERE id = ?1", 1, id));
	if (rc == 0)
		rc = exec_done(cat, q(cat, "DELETE FROM txs WHERE db_id = ?1", 1, id));
	if (rc == 0)
		rc = exec_done(cat, q(cat, "DELETE FROM files WHERE db_id = ?1", 1, id));
	if (rc == 0)
		rc = exec_done(cat, q(cat, "DELETE FROM compaction WHERE db_id = ?1", 1, id));
	return rc;
}

int cloud_catalog_db_list(struct cloud_catalog *cat, const char *cluster,
			  int (*fn)(void *ctx, const struct cat_db *db), void *ctx)
{
	/* Rows are copied out first so that fn may run other queries. */
	sqlite3_stmt *st = cluster
		? q(cat, "SELECT " DB_COLS " FROM dbs WHERE cluster = ?1 ORDER BY name", 0)
		: q(cat, "SELECT " DB_COLS " FROM dbs ORDER BY id", 0);
	if (st == NULL)
		return -EIO;
	if (cluster)
		sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
	struct cat_db *v = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = step_row(cat, st)) == 1) {
		if (cloud_catalog_grow((void **)&v, n, &cap, sizeof(*v)) < 0) {
			sqlite3_reset(st);
			free(v);
			return ERR_NOMEM;
		}
		db_row(st, &v[n++]);
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = fn(ctx, &v[i]);
	free(v);
	return rc;
}

int64_t cloud_catalog_max_db_id(struct cloud_catalog *cat)
{
	sqlite3_stmt *st = q(cat, "SELECT coalesce(max(id), 0) FROM dbs", 0);
	int64_t id = 0;
	if (step_row(cat, st) == 1) {
		id = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
	}
	return id;
}

/* ---- txs ---------------------------------------------------------------- */

#define TX_COLS "txid, min_txid, checksum, ts_ms, mts_ms, page_size"

static void tx_row(sqlite3_stmt *st, struct cat_tx *t)
{
	t->txid = COL(st, 0);
	t->min_txid = COL(st, 1);
	t->checksum = COL(st, 2);
	t->ts_ms = sqlite3_column_int64(st, 3);
	t->mts_ms = sqlite3_column_int64(st, 4);
	t->page_size = (uint32_t)COL(st, 5);
}

static int tx_one(struct cloud_catalog *cat, sqlite3_stmt *st, struct cat_tx *out)
{
	int rc = step_row(cat, st);
	if (rc <= 0)
		return rc == 0 ? ERR_CLOUD_NOT_FOUND : rc;
	tx_row(st, out);
	sqlite3_reset(st);
	return 0;
}

int cloud_catalog_tx_insert(struct cloud_catalog *cat, int64_t db_id, const struct cat_tx *t)
{
	return exec_done(cat, q(cat, "INSERT INTO txs (db_id, " TX_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", 7,
				db_id, I64(t->txid), I64(t->min_txid), I64(t->checksum), t->ts_ms, t->mts_ms,
				I64(t->page_size)));
}

int cloud_catalog_tx_get(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cat_tx *out)
{
	return tx_one(cat, q(cat, "SELECT " TX_COLS " FROM txs WHERE db_id = ?1 AND txid = ?2", 2, db_id, I64(txid)),
		      out);
}

int cloud_catalog_tx_at_time(struct cloud_catalog *cat, int64_t db_id, int64_t mts, struct cat_tx *out)
{
	return tx_one(cat, q(cat, "SELECT " TX_COLS " FROM txs WHERE db_id = ?1 AND mts_ms <= ?2"
				  " ORDER BY mts_ms DESC, txid DESC LIMIT 1", 2, db_id, mts), out);
}

int cloud_catalog_tx_around(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cat_tx *before,
			    struct cat_tx *after)
{
	int rc = tx_one(cat, q(cat, "SELECT " TX_COLS " FROM txs WHERE db_id = ?1 AND txid < ?2 ORDER BY txid DESC"
				    " LIMIT 1", 2, db_id, I64(txid)), before);
	if (rc == ERR_CLOUD_NOT_FOUND) {
		memset(before, 0, sizeof(*before));
		rc = 0;
	}
	if (rc == 0)
		rc = tx_one(cat, q(cat, "SELECT " TX_COLS " FROM txs WHERE db_id = ?1 AND txid > ?2 ORDER BY txid"
					" LIMIT 1", 2, db_id, I64(txid)), after);
	return rc;
}

int cloud_catalog_tx_first(struct cloud_catalog *cat, int64_t db_id, struct cat_tx *out)
{
	return tx_one(cat, q(cat, "SELECT " TX_COLS " FROM txs WHERE db_id = ?1 ORDER BY txid LIMIT 1", 1, db_id),
		      out);
}

int64_t cloud_catalog_tx_count(struct cloud_catalog *cat, int64_t db_id)
{
	sqlite3_stmt *st = q(cat, "SELECT count(*) FROM txs WHERE db_id = ?1", 1, db_id);
	int64_t n = 0;
	if (step_row(cat, st) == 1) {
		n = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
	}
	return n;
}

int cloud_catalog_tx_last_break(struct cloud_catalog *cat, int64_t db_id, uint64_t after, uint64_t upto,
				uint32_t page_size, uint64_t *txid)
{
	sqlite3_stmt *st = q(cat, "SELECT max(txid) FROM txs WHERE db_id = ?1 AND txid > ?2 AND txid <= ?3"
				  " AND (min_txid = 1 OR page_size != ?4)", 4,
			     db_id, I64(after), I64(upto), I64(page_size));
	int rc = step_row(cat, st);
	if (rc < 0)
		return rc;
	*txid = rc == 1 ? (uint64_t)sqlite3_column_int64(st, 0) : 0; /* NULL reads as 0 */
	if (rc == 1)
		sqlite3_reset(st);
	return 0;
}

int cloud_catalog_tx_scan(struct cloud_catalog *cat, int64_t db_id, uint64_t after, struct cat_tx *out,
			  size_t max, size_t *n)
{
	sqlite3_stmt *st = q(cat, "SELECT " TX_COLS " FROM txs WHERE db_id = ?1 AND txid > ?2 ORDER BY txid LIMIT ?3",
			     3, db_id, I64(after), I64(max));
	int rc;
	*n = 0;
	while ((rc = step_row(cat, st)) == 1)
		tx_row(st, &out[(*n)++]);
	return rc;
}

int cloud_catalog_tx_scan_sized(struct cloud_catalog *cat, int64_t db_id, uint64_t after, struct cat_tx *out,
				uint64_t *sizes, size_t max, size_t *n)
{
	/* The upload of a position is the L0 object min_txid..txid (a PK
	 * lookup per row); gone once retention removed it. */
	sqlite3_stmt *st = q(cat, "SELECT t.txid, t.min_txid, t.checksum, t.ts_ms, t.mts_ms, t.page_size,"
				  " coalesce(f.size, 0) FROM txs t LEFT JOIN files f ON f.db_id = t.db_id"
				  " AND f.min_txid = t.min_txid AND f.max_txid = t.txid AND f.level = 0"
				  " WHERE t.db_id = ?1 AND t.txid > ?2 ORDER BY t.txid LIMIT ?3",
			     3, db_id, I64(after), I64(max));
	int rc;
	*n = 0;
	while ((rc = step_row(cat, st)) == 1) {
		sizes[*n] = COL(st, 6);
		tx_row(st, &out[(*n)++]);
	}
	return rc;
}

int cloud_catalog_tx_delete_below(struct cloud_catalog *cat, int64_t db_id, uint64_t txid)
{
	return exec_done(cat, q(cat, "DELETE FROM txs WHERE db_id = ?1 AND txid < ?2", 2, db_id, I64(txid)));
}

/* ---- files -------------------------------------------------------------- */

#define FILE_COLS "level, min_txid, max_txid, pre, post, mts_ms, page_size, size"

static void file_row(sqlite3_stmt *st, struct cat_file *f)
{
	f->level = (int)sqlite3_column_int(st, 0);
	f->min_txid = COL(st, 1);
	f->max_txid = COL(st, 2);
	f->pre = COL(st, 3);
	f->post = COL(st, 4);
	f->mts_ms = sqlite3_column_int64(st, 5);
	f->page_size = (uint32_t)COL(st, 6);
	f->size = COL(st, 7);
}

static int file_one(struct cloud_catalog *cat, sqlite3_stmt *st, struct cat_file *out)
{
	int rc = step_row(cat, st);
	if (rc <= 0)
		return rc == 0 ? ERR_CLOUD_NOT_FOUND : rc;
	file_row(st, out);
	sqlite3_reset(st);
	return 0;
}

int cloud_catalog_file_insert(struct cloud_catalog *cat, int64_t db_id, const struct cat_file *f)
{
	return exec_done(cat, q(cat, "INSERT OR REPLACE INTO files (db_id, " FILE_COLS ")"
				     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", 9,
				db_id, I64(f->level), I64(f->min_txid), I64(f->max_txid), I64(f->pre), I64(f->post),
				f->mts_ms, I64(f->page_size), I64(f->size)));
}

int cloud_catalog_add_upload(struct cloud_catalog *cat, const struct cat_db *db, bool insert,
			     const struct cat_file *f, const struct cat_tx *tx)
{
	int rc = cloud_catalog_begin(cat);
	if (rc == 0)
		rc = cloud_catalog_db_put(cat, db, insert);
	if (rc == 0)
		rc = cloud_catalog_tx_insert(cat, db->id, tx);
	if (rc == 0)
		rc = cloud_catalog_file_insert(cat, db->id, f);
	if (rc == 0)
		rc = cloud_catalog_commit(cat);
	else
		cloud_catalog_rollback(cat);
	return rc;
}

int cloud_catalog_file_delete(struct cloud_catalog *cat, int64_t db_id, const struct cat_file *f)
{
	return exec_done(cat, q(cat, "DELETE FROM files WHERE db_id = ?1 AND level = ?2 AND min_txid = ?3"
				     " AND max_txid = ?4", 4,
				db_id, I64(f->level), I64(f->min_txid), I64(f->max_txid)));
}

bool cloud_catalog_file_exists(struct cloud_catalog *cat, int64_t db_id, int level, uint64_t min_txid,
			       uint64_t max_txid)
{
	sqlite3_stmt *st = q(cat, "SELECT 1 FROM files WHERE db_id = ?1 AND level = ?2 AND min_txid = ?3"
				  " AND max_txid = ?4", 4, db_id, I64(level), I64(min_txid), I64(max_txid));
	bool found = step_row(cat, st) == 1;
	if (found)
		sqlite3_reset(st);
	return found;
}

int cloud_catalog_file_base(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cat_file *out)
{
	return file_one(cat, q(cat, "SELECT " FILE_COLS " FROM files WHERE db_id = ?1 AND min_txid = 1"
				    " AND max_txid <= ?2 ORDER BY max_txid DESC, level DESC LIMIT 1", 2,
			       db_id, TXB(txid)), out);
}

int cloud_catalog_file_next(struct cloud_catalog *cat, int64_t db_id, uint64_t min_txid, uint64_t max_txid,
			    int max_level, struct cat_file *out)
{
	return file_one(cat, q(cat, "SELECT " FILE_COLS " FROM files WHERE db_id = ?1 AND min_txid = ?2"
				    " AND max_txid <= ?3 AND level <= ?4 ORDER BY max_txid DESC, level DESC LIMIT 1", 4,
			       db_id, I64(min_txid), TXB(max_txid), I64(max_level)), out);
}

int cloud_catalog_file_ending(struct cloud_catalog *cat, int64_t db_id, uint64_t min_from, uint64_t max_txid,
			      int min_level, int max_level, struct cat_file *out)
{
	return file_one(cat, q(cat, "SELECT " FILE_COLS " FROM files WHERE db_id = ?1 AND min_txid >= ?2"
				    " AND min_txid <= ?3 AND max_txid = ?3 AND level >= ?4 AND level <= ?5"
				    " ORDER BY min_txid, level DESC LIMIT 1", 5,
			       db_id, I64(min_from), I64(max_txid), I64(min_level), I64(max_level)), out);
}

int cloud_catalog_file_list(struct cloud_catalog *cat, int64_t db_id, uint64_t max_txid,
			    int (*fn)(void *ctx, const struct cat_file *f), void *ctx)
{
	sqlite3_stmt *st = q(cat, "SELECT " FILE_COLS " FROM files WHERE db_id = ?1 AND max_txid <= ?2"
				  " ORDER BY level, min_txid, max_txid", 2, db_id, TXB(max_txid));
	struct cat_file *v = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = step_row(cat, st)) == 1) {
		if (cloud_catalog_grow((void **)&v, n, &cap, sizeof(*v)) < 0) {
			sqlite3_reset(st);
			free(v);
			return ERR_NOMEM;
		}
		file_row(st, &v[n++]);
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = fn(ctx, &v[i]);
	free(v);
	return rc;
}

int cloud_catalog_file_bases(struct cloud_catalog *cat, int64_t db_id,
			     int (*fn)(void *ctx, const struct cat_file *f), void *ctx)
{
	sqlite3_stmt *st = q(cat, "SELECT " FILE_COLS " FROM files WHERE db_id = ?1 AND min_txid = 1"
				  " ORDER BY max_txid, level", 1, db_id);
	struct cat_file f;
	int rc;
	while ((rc = step_row(cat, st)) == 1) {
		file_row(st, &f);
		rc = fn(ctx, &f);
		if (rc != 0) {
			sqlite3_reset(st);
			return rc;
		}
	}
	return rc;
}

int cloud_catalog_file_sizes(struct cloud_catalog *cat, int64_t db_id, struct cat_file_key *after, size_t max,
			     uint64_t *bytes, size_t *n)
{
	sqlite3_stmt *st = q(cat, "SELECT min_txid, max_txid, level, size FROM files WHERE db_id = ?1"
				  " AND (min_txid, max_txid, level) > (?2, ?3, ?4)"
				  " ORDER BY min_txid, max_txid, level LIMIT ?5",
			     5, db_id, I64(after->min_txid), I64(after->max_txid), I64(after->level), I64(max));
	int rc;
	*n = 0;
	while ((rc = step_row(cat, st)) == 1) {
		after->min_txid = COL(st, 0);
		after->max_txid = COL(st, 1);
		after->level = sqlite3_column_int(st, 2);
		*bytes += COL(st, 3);
		(*n)++;
	}
	return rc;
}

/* ---- compaction progress ------------------------------------------------ */

int cloud_catalog_done_get(struct cloud_catalog *cat, int64_t db_id, int level, uint64_t *txid)
{
	sqlite3_stmt *st = q(cat, "SELECT done_txid FROM compaction WHERE db_id = ?1 AND level = ?2", 2,
			     db_id, I64(level));
	int rc = step_row(cat, st);
	*txid = 0;
	if (rc == 1) {
		*txid = COL(st, 0);
		sqlite3_reset(st);
		rc = 0;
	}
	return rc;
}

int cloud_catalog_done_set(struct cloud_catalog *cat, int64_t db_id, int level, uint64_t txid)
{
	return exec_done(cat, q(cat, "INSERT OR REPLACE INTO compaction (db_id, level, done_txid) VALUES (?1, ?2, ?3)",
				3, db_id, I64(level), I64(txid)));
}
