/*
 * cloud_preview.c — see cloud_preview.h for the design (how a past state
 * is opened, the cache, the bounds).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/httpd.h"
#include "base/log.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_json.h"
#include "cloud/cloud_preview.h"
#include "cloud/cloud_store.h"

/* The progress handler runs every this many virtual machine steps. */
#define PROGRESS_STEPS 1000
#define BLOB_HEX_BYTES 32

/* A built state. */
struct pv_entry {
	struct pv_entry *prev, *next; /* the LRU list, most recent first */
	char cluster[CLOUD_CLUSTER_MAX + 1];
	char db[CLOUD_DB_NAME_MAX + 1];
	struct cloud_pos pos;
	int fd;                       /* the unnamed file */
	uint64_t size;
	void *map;                    /* all of it, read-only; NULL when empty */
	unsigned refs;                /* requests using it */
	bool cached;                  /* on the list */
};

struct cloud_preview {
	struct cloud_store *cs;
	pthread_mutex_t mu; /* guards the list, bytes, and every entry's refs and cached; leaf */
	struct pv_entry *head, *tail;
	size_t n;
	uint64_t bytes;
};

int cloud_preview_open(struct cloud_store *cs, struct cloud_preview **out)
{
	struct cloud_preview *p = calloc(1, sizeof(*p));
	if (!p)
		return ERR_NOMEM;
	p->cs = cs;
	pthread_mutex_init(&p->mu, NULL);
	*out = p;
	return 0;
}

static void entry_free(struct pv_entry *e)
{
	if (e->map)
		munmap(e->map, e->size);
	if (e->fd >= 0)
		close(e->fd);
	free(e);
}

void cloud_preview_close(struct cloud_preview *p)
{
	if (!p)
		return;
	for (struct pv_entry *e = p->head, *next; e; e = next) {
		next = e->next;
		entry_free(e);
	}
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* ---- The cache ------------------------------------------------------------------ */

static void unlink_entry(struct cloud_preview *p, struct pv_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		p->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		p->tail = e->prev;
	e->prev = e->next = NULL;
	e->cached = false;
	p->n--;
	p->bytes -= e->size;
}

static void push_front(struct cloud_preview *p, struct pv_entry *e)
{
	e->prev = NULL;
	e->next = p->head;
	if (p->head)
		p->head->prev = e;
	p->head = e;
	if (!p->tail)
		p->tail = e;
	e->cached = true;
	p->n++;
	p->bytes += e->size;
}

/* Drops least recently used entries until the bounds hold. With p->mu
 * held; returns the entries nobody uses any more, for the caller to free
 * after unlocking, chained by next. */
static struct pv_entry *evict(struct cloud_preview *p)
{
	struct pv_entry *dead = NULL;
	while (p->tail && (p->n > CLOUD_PREVIEW_ENTRIES || p->bytes > CLOUD_PREVIEW_BYTES)) {
		struct pv_entry *e = p->tail;
		unlink_entry(p, e);
		if (e->refs == 0) {
			e->next = dead;
			dead = e;
		}
	}
	return dead;
}

static void free_chain(struct pv_entry *e)
{
	for (struct pv_entry *next; e; e = next) {
		next = e->next;
		entry_free(e);
	}
}

static struct pv_entry *find(struct cloud_preview *p, const char *cluster, const char *db,
			     const struct cloud_pos *pos)
{
	for (struct pv_entry *e = p->head; e; e = e->next)
		if (e->pos.txid == pos->txid && e->pos.checksum == pos->checksum && !strcmp(e->db, db) &&
		    !strcmp(e->cluster, cluster))
			return e;
	return NULL;
}

/* Maps the built state of e. A database in WAL mode (header bytes 18 and
 * 19 are 2) cannot be read from memory as it is: SQLite would look for
 * its WAL. The mapping is private, so the header is set to rollback mode
 * (1) in this process's copy of the first page only; the rest stays the
 * page cache's, and the mapping is read-only afterwards. */
static int map_state(struct pv_entry *e)
{
	uint8_t *m = mmap(NULL, e->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, e->fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	if (e->size >= 100 && m[18] == 2 && m[19] == 2)
		m[18] = m[19] = 1;
	if (mprotect(m, e->size, PROT_READ) != 0) {
		int rc = -errno;
		munmap(m, e->size);
		return rc;
	}
	e->map = m;
	return 0;
}

/* The built state at t, cached or built now; *out is held until
 * release(). */
static int acquire(struct cloud_preview *p, const char *cluster, const char *db, const struct cloud_target *t,
		   struct pv_entry **out)
{
	struct cloud_pos pos;
	int rc = cloud_resolve(p->cs, cluster, db, t, &pos);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&p->mu);
	struct pv_entry *e = find(p, cluster, db, &pos);
	if (e) {
		e->refs++;
		unlink_entry(p, e);
		push_front(p, e);
	}
	pthread_mutex_unlock(&p->mu);
	if (e) {
		*out = e;
		return 0;
	}
	if (strlen(cluster) > CLOUD_CLUSTER_MAX || strlen(db) > CLOUD_DB_NAME_MAX)
		return ERR_CLOUD_NAME;
	e = calloc(1, sizeof(*e));
	if (!e)
		return ERR_NOMEM;
	strcpy(e->cluster, cluster);
	strcpy(e->db, db);
	e->fd = -1;
	struct cloud_target exact = { .txid = pos.txid };
	int64_t t0 = clock_mono_ms();
	rc = cloud_export_fd(p->cs, cluster, db, &exact, CLOUD_FORMAT_SQLITE, &e->fd, &e->size, &e->pos);
	if (rc == 0 && e->size > 0)
		rc = map_state(e);
	if (rc < 0) {
		entry_free(e);
		return rc;
	}
	LOG_DEBUG("cloud-preview", "msg=\"state built\" cluster=%s db=%s txid=%016" PRIx64 " bytes=%" PRIu64
		  " ms=%" PRId64, cluster, db, e->pos.txid, e->size, clock_mono_ms() - t0);
	e->refs = 1;
	pthread_mutex_lock(&p->mu);
	struct pv_entry *other = find(p, cluster, db, &e->pos);
	if (other) {
		/* Built twice at once: keep the first, drop ours. */
		other->refs++;
		pthread_mutex_unlock(&p->mu);
		entry_free(e);
		*out = other;
		return 0;
	}
	push_front(p, e);
	struct pv_entry *dead = evict(p);
	pthread_mutex_unlock(&p->mu);
	free_chain(dead);
	*out = e;
	return 0;
}

static void release(struct cloud_preview *p, struct pv_entry *e)
{
	pthread_mutex_lock(&p->mu);
	bool drop = --e->refs == 0 && !e->cached;
	pthread_mutex_unlock(&p->mu);
	if (drop)
		entry_free(e);
}

/* ---- Reading a state --------------------------------------------------------------- */

struct deadline {
	int64_t at_ms; /* monotonic */
	bool hit;
};

static int on_progress(void *arg)
{
	struct deadline *dl = arg;
	if (clock_mono_ms() >= dl->at_ms) {
		dl->hit = true;
		return 1;
	}
	return 0;
}

/* Opens the state of e read-only with the progress handler on dl.
 * Caller closes *out with sqlite3_close(). */
static int open_state(const struct pv_entry *e, struct deadline *dl, sqlite3 **out)
{
	sqlite3 *conn = NULL;
	int src = sqlite3_open_v2(":memory:", &conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	/* The mapping is shared by every reader of the entry: SQLite only
	 * reads it (READONLY, and no FREEONCLOSE: it stays ours). */
	if (src == SQLITE_OK && e->map)
		src = sqlite3_deserialize(conn, "main", e->map, (sqlite3_int64)e->size, (sqlite3_int64)e->size,
					  SQLITE_DESERIALIZE_READONLY);
	if (src != SQLITE_OK) {
		LOG_WARN("cloud-preview", "msg=\"cannot open a built state\" db=%s err=\"%s\"", e->db,
			 conn ? sqlite3_errmsg(conn) : sqlite3_errstr(src));
		sqlite3_close(conn);
		return -EIO;
	}
	sqlite3_db_config(conn, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(conn, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	sqlite3_db_config(conn, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
	sqlite3_exec(conn, "PRAGMA query_only = 1; PRAGMA cell_size_check = 1", NULL, NULL, NULL);
	sqlite3_progress_handler(conn, PROGRESS_STEPS, on_progress, dl);
	*out = conn;
	return 0;
}

/* "name" with its double quotes doubled: an identifier SQLite reads as
 * exactly name. Caller frees. */
static char *quote_ident(const char *name)
{
	size_t n = strlen(name), q = 0;
	for (size_t i = 0; i < n; i++)
		q += name[i] == '"';
	char *s = malloc(n + q + 3), *w = s;
	if (!s)
		return NULL;
	*w++ = '"';
	for (size_t i = 0; i < n; i++) {
		*w++ = name[i];
		if (name[i] == '"')
			*w++ = '"';
	}
	*w++ = '"';
	*w = '\0';
	return s;
}

/* count(*) of name, -1 when the bound was hit or the count failed (a
 * virtual table of a module this build lacks). */
static json_int_t count_rows(sqlite3 *conn, const char *name)
{
	char *qn = quote_ident(name);
	char *sql = qn ? sqlite3_mprintf("SELECT count(*) FROM %s", qn) : NULL;
	free(qn);
	sqlite3_stmt *st = NULL;
	json_int_t n = -1;
	if (sql && sqlite3_prepare_v2(conn, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_free(sql);
	return n;
}

/* A text value, cut at max bytes on a character boundary; a cut one is
 * {"text", "truncated": true, "size"}. */
static json_t *text_json(const unsigned char *s, size_t n, size_t max)
{
	if (!s)
		return json_null();
	size_t cut = n;
	if (cut > max) {
		cut = max;
		while (cut > 0 && (s[cut] & 0xc0) == 0x80)
			cut--;
	}
	char *copy = malloc(cut + 1);
	if (!copy)
		return NULL;
	memcpy(copy, s, cut);
	copy[cut] = '\0';
	/* A NUL inside the text ends it for JSON's purposes. */
	json_t *str = httpd_json_str(copy);
	free(copy);
	if (cut == n)
		return str;
	return json_pack("{s:o, s:b, s:I}", "text", str, "truncated", 1, "size", (json_int_t)n);
}

static json_t *value_json(sqlite3_stmt *st, int i)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(st, i));
	case SQLITE_FLOAT: {
		double v = sqlite3_column_double(st, i);
		if (isfinite(v))
			return json_real(v);
		return json_string(v > 0 ? "Infinity" : "-Infinity");
	}
	case SQLITE_TEXT:
		return text_json(sqlite3_column_text(st, i), (size_t)sqlite3_column_bytes(st, i),
				 CLOUD_PREVIEW_TEXT_MAX);
	case SQLITE_BLOB: {
		const unsigned char *b = sqlite3_column_blob(st, i);
		size_t n = (size_t)sqlite3_column_bytes(st, i);
		char hex[2 * BLOB_HEX_BYTES + 1] = "";
		for (size_t k = 0; b && k < n && k < BLOB_HEX_BYTES; k++)
			snprintf(hex + 2 * k, 3, "%02x", b[k]);
		return json_pack("{s:b, s:I, s:s}", "blob", 1, "size", (json_int_t)n, "hex", hex);
	}
	default:
		return json_null();
	}
}

/* Page size from the database header (bytes 16-17, 1 meaning 65536). */
static uint32_t header_page_size(int fd)
{
	uint8_t b[2];
	if (fdio_pread_full(fd, b, 2, 16) != 2)
		return 0;
	uint32_t ps = (uint32_t)b[0] << 8 | b[1];
	return ps == 1 ? 65536 : ps;
}

static json_t *state_json(const struct pv_entry *e)
{
	uint32_t ps = header_page_size(e->fd);
	return json_pack("{s:o, s:I, s:I, s:I}", "txid", cloud_json_hex(e->pos.txid), "ts_ms",
			 (json_int_t)e->pos.ts_ms, "page_size", (json_int_t)ps, "pages",
			 (json_int_t)(ps ? e->size / ps : 0));
}

static const char *kind_of(const char *type)
{
	static const char *const kinds[] = { "table", "view", "index", "trigger" };
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (type && !strcmp(type, kinds[i]))
			return kinds[i];
	return NULL;
}

/* Lists the schema of conn into arr and counts the rows of its tables,
 * all counts within one deadline. Sets *truncated when a bound was hit. */
static int list_schema(sqlite3 *conn, struct deadline *dl, json_t *arr, bool *truncated)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(conn, "SELECT type, name, tbl_name, sql FROM sqlite_schema"
				     " ORDER BY type != 'table', type, name LIMIT ?1", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int(st, 1, CLOUD_PREVIEW_OBJECTS + 1);
	int rc = 0, src;
	size_t n = 0;
	while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
		if (++n > CLOUD_PREVIEW_OBJECTS) {
			*truncated = true;
			break;
		}
		const char *kind = kind_of((const char *)sqlite3_column_text(st, 0));
		if (!kind)
			continue;
		const unsigned char *sql = sqlite3_column_text(st, 3);
		json_t *o = json_pack("{s:s, s:o, s:o, s:o}", "name", "", "type", json_string(kind), "tbl_name",
				      httpd_json_str((const char *)sqlite3_column_text(st, 2)), "sql",
				      text_json(sql, (size_t)sqlite3_column_bytes(st, 3), CLOUD_PREVIEW_SQL_MAX));
		const char *name = (const char *)sqlite3_column_text(st, 1);
		if (o)
			json_object_set_new(o, "name", httpd_json_str(name ? name : ""));
		if (o && !strcmp(kind, "table")) {
			json_int_t rows = dl->hit ? -1 : count_rows(conn, name ? name : "");
			json_object_set_new(o, "rows", rows >= 0 ? json_integer(rows) : json_null());
			if (rows < 0)
				*truncated = true;
			/* Out of time for counts: the handler would now cut
			 * the schema listing too, which the object bound
			 * keeps short; list the rest uncounted. */
			if (dl->hit)
				sqlite3_progress_handler(conn, 0, NULL, NULL);
		}
		rc = o && json_array_append_new(arr, o) == 0 ? 0 : ERR_NOMEM;
	}
	if (rc == 0 && !*truncated && src != SQLITE_DONE && src != SQLITE_ROW)
		*truncated = true; /* the schema read itself hit the bound */
	sqlite3_finalize(st);
	return rc;
}

int cloud_preview_tables(struct cloud_preview *p, const char *cluster, const char *db,
			 const struct cloud_target *t, json_t **out)
{
	struct pv_entry *e;
	int rc = acquire(p, cluster, db, t, &e);
	if (rc < 0)
		return rc;
	struct deadline dl = { clock_mono_ms() + CLOUD_PREVIEW_COUNT_MS, false };
	sqlite3 *conn = NULL;
	json_t *o = state_json(e), *arr = json_array();
	bool truncated = false;
	rc = o && arr ? open_state(e, &dl, &conn) : ERR_NOMEM;
	if (rc == 0)
		rc = list_schema(conn, &dl, arr, &truncated);
	sqlite3_close(conn);
	release(p, e);
	if (rc < 0) {
		json_decref(o);
		json_decref(arr);
		return rc;
	}
	json_object_set_new(o, "tables", arr);
	json_object_set_new(o, "truncated", json_boolean(truncated));
	*out = o;
	return 0;
}

/* ---- Rows ------------------------------------------------------------------------ */

/* Whether table is a table or view of conn's schema (compared as bytes,
 * through a bound parameter). */
static bool has_table(sqlite3 *conn, const char *table)
{
	sqlite3_stmt *st = NULL;
	bool found = false;
	if (sqlite3_prepare_v2(conn, "SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
		found = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return found;
}

/* Runs the page query of table into o: columns, rows, and whether the
 * time bound cut it. */
static int read_rows(sqlite3 *conn, struct deadline *dl, const char *table, unsigned limit, uint64_t offset,
		     json_t *o)
{
	char *qn = quote_ident(table);
	char *sql = qn ? sqlite3_mprintf("SELECT * FROM %s LIMIT ?1 OFFSET ?2", qn) : NULL;
	free(qn);
	sqlite3_stmt *st = NULL;
	int rc = sql ? 0 : ERR_NOMEM;
	if (rc == 0 && sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK)
		rc = -EIO;
	sqlite3_free(sql);
	json_t *cols = json_array(), *rows = json_array();
	if (rc == 0 && (!cols || !rows))
		rc = ERR_NOMEM;
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, limit);
		sqlite3_bind_int64(st, 2, offset > INT64_MAX ? INT64_MAX : (sqlite3_int64)offset);
		for (int i = 0; i < sqlite3_column_count(st); i++)
			json_array_append_new(cols, httpd_json_str(sqlite3_column_name(st, i)));
	}
	int src = SQLITE_DONE;
	while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *row = json_array();
		for (int i = 0; row && i < sqlite3_column_count(st); i++)
			if (json_array_append_new(row, value_json(st, i)) != 0) {
				json_decref(row);
				row = NULL;
			}
		rc = row && json_array_append_new(rows, row) == 0 ? 0 : ERR_NOMEM;
	}
	bool cut = rc == 0 && src != SQLITE_DONE;
	if (cut && !dl->hit) {
		LOG_WARN("cloud-preview", "msg=\"row query failed\" err=\"%s\"", sqlite3_errmsg(conn));
		rc = -EIO;
	}
	sqlite3_finalize(st);
	if (rc < 0) {
		json_decref(cols);
		json_decref(rows);
		return rc;
	}
	json_object_set_new(o, "columns", cols);
	json_object_set_new(o, "rows", rows);
	json_object_set_new(o, "truncated", json_boolean(cut));
	return 0;
}

int cloud_preview_rows(struct cloud_preview *p, const char *cluster, const char *db, const struct cloud_target *t,
		       const char *table, unsigned limit, uint64_t offset, json_t **out, char *msg, size_t msg_len)
{
	struct pv_entry *e;
	msg[0] = '\0';
	int rc = acquire(p, cluster, db, t, &e);
	if (rc < 0)
		return rc;
	struct deadline dl = { clock_mono_ms() + CLOUD_PREVIEW_COUNT_MS, false };
	sqlite3 *conn = NULL;
	json_t *o = state_json(e);
	rc = o ? open_state(e, &dl, &conn) : ERR_NOMEM;
	if (rc == 0 && !has_table(conn, table)) {
		snprintf(msg, msg_len, "no table or view of that name in the state at TXID %016" PRIx64, e->pos.txid);
		rc = ERR_CLOUD_NOT_FOUND;
	}
	if (rc == 0)
		rc = read_rows(conn, &dl, table, limit, offset, o);
	if (rc == 0) {
		dl = (struct deadline){ clock_mono_ms() + CLOUD_PREVIEW_COUNT_MS, false };
		json_int_t total = count_rows(conn, table);
		json_object_set_new(o, "total", total >= 0 ? json_integer(total) : json_null());
	}
	sqlite3_close(conn);
	release(p, e);
	if (rc < 0) {
		json_decref(o);
		return rc;
	}
	json_object_set_new(o, "table", httpd_json_str(table));
	json_object_set_new(o, "limit", json_integer(limit));
	json_object_set_new(o, "offset", json_integer((json_int_t)(offset > INT64_MAX ? INT64_MAX : offset)));
	*out = o;
	return 0;
}
