/*
 * cloud_rebuild.c — meta objects and the catalog rebuild (cloud_rebuild.h).
 *
 * WHY EVERY OBJECT END IS A POSITION. The engine only ever stores files
 * whose max TXID is a position it acknowledged (L0: an upload; L1..Ln and
 * snapshots: the last position of a group). Retention keeps, below the
 * window start r, exactly plan(r): one base and a chain of files from it
 * to r; each of their ends is restorable from the files that remain (the
 * greedy plan of such an end is a prefix of plan(r)). Above r every L0
 * object is kept. So the ends of the objects in the bucket are all
 * restorable, and they include every position the catalog had (rows
 * below r that retention would remove again are removed by its next
 * pass). Where an end has an L0 object, that object gives the upload's
 * first TXID and timestamp; otherwise the coarser file does.
 *
 * Header and trailer reads (two small range reads per object) run on
 * REBUILD_THREADS threads (objects up to 64 KiB in one read): the rebuild
 * time is dominated by request latency, not bandwidth.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloud/cloud_object.h"
#include "cloud/cloud_rebuild.h"
#include "cloud/cloud_zltx.h"
#include "base/err.h"
#include "base/log.h"
#include "ltx/ltx.h"

#define REBUILD_THREADS 16
/* Objects up to this size are read whole (one request instead of two
 * range reads: the request, not the bytes, is the cost). */
#define SMALL_OBJECT (64 * 1024)
#define META_MAX 512

void cloud_meta_name(char *buf, size_t size, int64_t db_id)
{
	snprintf(buf, size, "%016" PRIx64 "/meta", (uint64_t)db_id);
}

static bool hex16(const char *s)
{
	for (int i = 0; i < 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool cloud_meta_is_engine_name(const char *name)
{
	return strlen(name) > 17 && hex16(name) && name[16] == '/';
}

bool cloud_meta_parse(const char *name, int64_t *db_id)
{
	if (!cloud_meta_is_engine_name(name) || strcmp(name + 16, "/meta") != 0)
		return false;
	uint64_t id = strtoull(name, NULL, 16);
	if (id == 0 || id > INT64_MAX)
		return false;
	*db_id = (int64_t)id;
	return true;
}

int cloud_meta_put(struct cloud_backend *be, const char *tmp_dir, int64_t db_id, const char *cluster,
		   const char *name, int64_t created_ms)
{
	char path[4096], obj[64], text[META_MAX];
	int n = snprintf(text, sizeof(text), "litefs-cloud-db 1\n%s\n%s\n%" PRId64 "\n", cluster, name, created_ms);
	if (n < 0 || (size_t)n >= sizeof(text))
		return ERR_INVAL;
	int fd = cloud_object_tmp_create(tmp_dir, path, sizeof(path));
	if (fd < 0)
		return fd;
	int rc = write(fd, text, (size_t)n) == n ? 0 : -EIO;
	close(fd);
	if (rc < 0) {
		unlink(path);
		return rc;
	}
	cloud_meta_name(obj, sizeof(obj), db_id);
	return be->ops->put(be, obj, path);
}

/* ---- The rebuild ---------------------------------------------------------------- */

struct rb_item {
	int64_t id;
	bool is_meta;
	/* LTX objects */
	int level;
	uint64_t min_txid, max_txid, size, post;
	struct ltx_header h;
	/* metas */
	char cluster[CLOUD_CLUSTER_MAX + 1];
	char name[CLOUD_DB_NAME_MAX + 1];
	int64_t created_ms;
	bool keep;
	bool hinted; /* filled from the hint: not read */
	int rc;
};

struct rb {
	struct cloud_backend *be;
	struct rb_item *v;
	size_t n, cap;
	size_t next; /* atomic: the next item to read */
};

static int rb_collect(void *ctx, const char *name, uint64_t size)
{
	struct rb *r = ctx;
	struct rb_item it = { 0 };
	if (cloud_meta_parse(name, &it.id))
		it.is_meta = true;
	else if (cloud_object_parse(name, &it.id, &it.level, &it.min_txid, &it.max_txid) != 0)
		return 0; /* not the engine's */
	it.size = size;
	if (cloud_catalog_grow((void **)&r->v, r->n, &r->cap, sizeof(*r->v)) < 0)
		return ERR_NOMEM;
	r->v[r->n++] = it;
	return 0;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static int read_meta(struct cloud_backend *be, struct rb_item *it)
{
	char obj[64], text[META_MAX + 1];
	size_t n = 0;
	cloud_meta_name(obj, sizeof(obj), it->id);
	int rc = be->ops->read_at(be, obj, 0, text, META_MAX, &n);
	if (rc < 0)
		return rc;
	text[n] = '\0';
	char *save = NULL, *magic = strtok_r(text, "\n", &save), *cluster = strtok_r(NULL, "\n", &save);
	char *name = strtok_r(NULL, "\n", &save), *created = strtok_r(NULL, "\n", &save);
	if (!magic || strcmp(magic, "litefs-cloud-db 1") != 0 || !cluster || !name || !created ||
	    strlen(cluster) > CLOUD_CLUSTER_MAX || strlen(name) > CLOUD_DB_NAME_MAX)
		return -EIO;
	snprintf(it->cluster, sizeof(it->cluster), "%s", cluster);
	snprintf(it->name, sizeof(it->name), "%s", name);
	it->created_ms = strtoll(created, NULL, 10);
	return 0;
}

static int read_ends(struct cloud_backend *be, struct rb_item *it)
{
	char obj[96];
	uint8_t hdr[LTX_HEADER_SIZE], tr[LTX_TRAILER_SIZE];
	size_t n = 0;
	if (it->size < LTX_HEADER_SIZE + LTX_TRAILER_SIZE)
		return -EIO;
	cloud_object_name(obj, sizeof(obj), it->id, it->level, it->min_txid, it->max_txid);
	int rc = 0;
	if (it->size <= SMALL_OBJECT) {
		/* One request for both ends. */
		uint8_t *all = malloc(it->size);
		rc = all ? be->ops->read_at(be, obj, 0, all, it->size, &n) : ERR_NOMEM;
		if (rc == 0 && n != it->size)
			rc = -EIO;
		if (rc == 0) {
			memcpy(hdr, all, sizeof(hdr));
			memcpy(tr, all + it->size - LTX_TRAILER_SIZE, sizeof(tr));
		}
		free(all);
	} else {
		rc = be->ops->read_at(be, obj, 0, hdr, sizeof(hdr), &n);
		if (rc == 0 && n != sizeof(hdr))
			rc = -EIO;
		if (rc == 0)
			rc = be->ops->read_at(be, obj, it->size - LTX_TRAILER_SIZE, tr, sizeof(tr), &n);
		if (rc == 0 && n != sizeof(tr))
			rc = -EIO;
	}
	if (rc == 0 && cloud_zltx_header_decode(hdr, &it->h, NULL) != 0)
		rc = -EIO;
	if (rc == 0 && (it->h.min_txid != it->min_txid || it->h.max_txid != it->max_txid))
		rc = -EIO;
	if (rc == 0)
		it->post = be64(tr);
	if (rc < 0)
		LOG_WARN("cloud", "msg=\"rebuild: cannot read an object's header and trailer\" object=%s err=\"%s\"",
			 obj, err_str(rc));
	return rc;
}

static void *rb_worker(void *arg)
{
	struct rb *r = arg;
	for (;;) {
		size_t i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
		if (i >= r->n)
			return NULL;
		struct rb_item *it = &r->v[i];
		if (!it->hinted)
			it->rc = it->is_meta ? read_meta(r->be, it) : read_ends(r->be, it);
	}
}

static int cmp_meta_desc(const void *a, const void *b)
{
	const struct rb_item *x = a, *y = b;
	if (x->is_meta != y->is_meta)
		return x->is_meta ? -1 : 1;
	return x->id > y->id ? -1 : x->id < y->id;
}

/* Objects by database, then end, then level (L0 first for each end). */
static int cmp_obj(const void *a, const void *b)
{
	const struct rb_item *x = a, *y = b;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	if (x->max_txid != y->max_txid)
		return x->max_txid < y->max_txid ? -1 : 1;
	return x->level - y->level;
}

/* Writes one database's rows: objs[0..n) are its objects, sorted. */
static int rebuild_db(struct cloud_catalog *cat, const struct rb_item *meta, const struct rb_item *objs, size_t n)
{
	struct cat_db db = { .id = meta->id, .created_ms = meta->created_ms };
	uint64_t done[CLOUD_MAX_LEVELS + 2] = { 0 };
	snprintf(db.cluster, sizeof(db.cluster), "%s", meta->cluster);
	snprintf(db.name, sizeof(db.name), "%s", meta->name);
	int64_t mts = INT64_MIN;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const struct rb_item *o = &objs[i];
		if (o->rc < 0)
			continue; /* unreadable: left out (logged) */
		bool first_of_end = i == 0 || objs[i - 1].max_txid != o->max_txid || objs[i - 1].rc < 0;
		if (first_of_end) {
			mts = o->h.timestamp_ms > mts ? o->h.timestamp_ms : mts;
			struct cat_tx tx = { o->max_txid, o->min_txid, o->post, o->h.timestamp_ms, mts, o->h.page_size };
			rc = cloud_catalog_tx_insert(cat, db.id, &tx);
			db.page_size = o->h.page_size;
			db.commit = o->h.commit;
			db.txid = o->max_txid;
			db.checksum = o->post;
			db.ts_ms = o->h.timestamp_ms;
			db.mts_ms = mts;
		}
		struct cat_file f = { o->level, o->min_txid, o->max_txid, o->h.pre_apply_checksum, o->post, mts,
				      o->h.page_size, o->size };
		if (rc == 0)
			rc = cloud_catalog_file_insert(cat, db.id, &f);
		if (o->level > 0 && o->level <= CLOUD_MAX_LEVELS + 1 && o->max_txid > done[o->level])
			done[o->level] = o->max_txid;
	}
	if (rc == 0 && db.txid == 0)
		return 0; /* nothing readable: its objects stay orphans */
	if (rc == 0)
		rc = cloud_catalog_db_put(cat, &db, true);
	for (int l = 1; rc == 0 && l <= CLOUD_MAX_LEVELS + 1; l++)
		if (done[l])
			rc = cloud_catalog_done_set(cat, db.id, l, done[l]);
	return rc;
}

/* Fills it from the hint's rows if they describe this very object (see
 * cloud_rebuild.h); true if so. */
static bool from_hint(struct cloud_catalog *hint, struct rb_item *it)
{
	struct cat_db db;
	if (cloud_catalog_db_get_id(hint, it->id, &db) != 0)
		return false;
	if (it->is_meta) {
		snprintf(it->cluster, sizeof(it->cluster), "%s", db.cluster);
		snprintf(it->name, sizeof(it->name), "%s", db.name);
		it->created_ms = db.created_ms;
		return true;
	}
	struct cat_file f;
	struct cat_tx tx;
	if (cloud_catalog_file_ending(hint, it->id, it->min_txid, it->max_txid, it->level, it->level, &f) != 0 ||
	    f.min_txid != it->min_txid || f.size != it->size ||
	    cloud_catalog_tx_get(hint, it->id, it->max_txid, &tx) != 0)
		return false;
	/* The size in pages is kept only for the database's position. */
	if (db.txid == it->max_txid && db.checksum == f.post)
		it->h.commit = db.commit;
	else if (db.txid <= it->max_txid)
		return false;
	it->h.min_txid = it->min_txid;
	it->h.max_txid = it->max_txid;
	it->h.page_size = f.page_size;
	it->h.timestamp_ms = tx.ts_ms;
	it->h.pre_apply_checksum = f.pre;
	it->post = f.post;
	return true;
}

static void unlink_catalog(const char *data_dir, const char *name, bool main_file)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };
	for (size_t i = main_file ? 0 : 1; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s%s", data_dir, name, sfx[i]);
		unlink(path);
	}
}

int cloud_rebuild_hint_open(const char *data_dir, struct cloud_catalog **out)
{
	char path[4096];
	*out = NULL;
	snprintf(path, sizeof(path), "%s/%s", data_dir, CLOUD_REBUILD_HINT);
	if (access(path, F_OK) != 0)
		return 0;
	return cloud_catalog_open(path, out);
}

void cloud_rebuild_hint_done(const char *data_dir, struct cloud_catalog *hint)
{
	cloud_catalog_close(hint);
	unlink_catalog(data_dir, CLOUD_REBUILD_HINT, true);
}

#define HINT_NEXT "catalog.next.db"

void cloud_rebuild_hint_set_aside(const char *data_dir, bool warm_hint)
{
	if (warm_hint) {
		unlink_catalog(data_dir, "catalog.db", true);
		return;
	}
	/* A hint left by a crash must not lend its -wal to this one. */
	unlink_catalog(data_dir, CLOUD_REBUILD_HINT, true);
	static const char *const sfx[] = { "", "-wal", "-shm" };
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		char from[4096], to[4096];
		snprintf(from, sizeof(from), "%s/catalog.db%s", data_dir, sfx[i]);
		snprintf(to, sizeof(to), "%s/%s%s", data_dir, CLOUD_REBUILD_HINT, sfx[i]);
		if (rename(from, to) < 0 && errno != ENOENT)
			LOG_WARN("cloud", "msg=\"cannot set the old catalog aside\" path=\"%s\" err=\"%s\"", from,
				 strerror(errno));
	}
}

int cloud_rebuild_hint_refresh(struct cloud_backend *be, const char *data_dir, size_t *n_files, size_t *n_read)
{
	char next[4096], prev[4096];
	size_t n_dbs = 0, n_reused = 0;
	*n_files = *n_read = 0;
	snprintf(next, sizeof(next), "%s/%s", data_dir, HINT_NEXT);
	snprintf(prev, sizeof(prev), "%s/%s", data_dir, CLOUD_REBUILD_HINT);
	unlink_catalog(data_dir, HINT_NEXT, true);
	struct cloud_catalog *hint = NULL, *cat = NULL;
	int rc = cloud_rebuild_hint_open(data_dir, &hint);
	if (rc == 0)
		rc = cloud_catalog_open(next, &cat);
	if (rc == 0)
		rc = cloud_rebuild_catalog(be, cat, hint, &n_dbs, n_files, &n_reused);
	cloud_catalog_close(cat); /* the last connection: its log is folded in */
	cloud_catalog_close(hint);
	if (rc == 0) {
		unlink_catalog(data_dir, CLOUD_REBUILD_HINT, false);
		unlink_catalog(data_dir, HINT_NEXT, false);
		rc = rename(next, prev) < 0 ? -errno : 0;
		*n_read = *n_files - n_reused;
	}
	if (rc != 0)
		unlink_catalog(data_dir, HINT_NEXT, true);
	return rc;
}

int cloud_rebuild_catalog(struct cloud_backend *be, struct cloud_catalog *cat, struct cloud_catalog *hint,
			  size_t *n_dbs, size_t *n_files, size_t *n_reused)
{
	struct rb r = { .be = be };
	*n_dbs = *n_files = *n_reused = 0;
	int rc = be->ops->list(be, "", rb_collect, &r);
	if (rc < 0 || r.n == 0) {
		free(r.v);
		return rc;
	}
	for (size_t i = 0; hint && i < r.n; i++) {
		r.v[i].hinted = from_hint(hint, &r.v[i]);
		*n_reused += r.v[i].hinted && !r.v[i].is_meta; /* counted like *n_files */
	}
	pthread_t th[REBUILD_THREADS];
	int started = 0;
	for (; started < REBUILD_THREADS && (size_t)started < r.n; started++)
		if (pthread_create(&th[started], NULL, rb_worker, &r) != 0)
			break;
	if (started == 0)
		rb_worker(&r);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);

	/* Metas first (highest id first), then objects by database. */
	qsort(r.v, r.n, sizeof(*r.v), cmp_meta_desc);
	size_t n_meta = 0;
	while (n_meta < r.n && r.v[n_meta].is_meta)
		n_meta++;
	for (size_t i = 0; i < n_meta; i++) {
		struct rb_item *m = &r.v[i];
		m->keep = m->rc == 0;
		for (size_t j = 0; m->keep && j < i; j++)
			if (r.v[j].keep && !strcmp(r.v[j].cluster, m->cluster) && !strcmp(r.v[j].name, m->name))
				m->keep = false;
	}
	struct rb_item *objs = r.v + n_meta;
	size_t n_objs = r.n - n_meta;
	qsort(objs, n_objs, sizeof(*objs), cmp_obj);

	cloud_catalog_lock(cat);
	rc = cloud_catalog_begin(cat);
	size_t o = 0;
	for (size_t i = n_meta; rc == 0 && i-- > 0;) {
		/* Metas are by id descending; walk them ascending with the objects. */
		struct rb_item *m = &r.v[i];
		while (o < n_objs && objs[o].id < m->id)
			o++;
		size_t end = o;
		while (end < n_objs && objs[end].id == m->id)
			end++;
		if (m->keep && end > o) {
			rc = rebuild_db(cat, m, objs + o, end - o);
			if (rc == 0) {
				(*n_dbs)++;
				*n_files += end - o;
			}
		}
		o = end;
	}
	rc = rc == 0 ? cloud_catalog_commit(cat) : (cloud_catalog_rollback(cat), rc);
	cloud_catalog_unlock(cat);
	free(r.v);
	if (rc < 0) {
		*n_dbs = *n_files = 0;
		LOG_ERROR("cloud", "msg=\"rebuild of the catalog from the backend failed\" err=\"%s\"", err_str(rc));
	}
	return rc;
}
