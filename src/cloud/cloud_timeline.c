/*
 * cloud_timeline.c — see cloud_timeline.h for the design (the index, why
 * it exists, how it follows the catalog).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/httpd.h"
#include "cloud/cloud_catalog.h"
#include "cloud/cloud_json.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_timeline.h"

/* Positions read from the catalog per lock. */
#define SYNC_CHUNK 8192
/* History bytes: a sum over every stored file of the database, which for
 * a month of positions is a million catalog rows (600 ms). So it is a
 * walk in chunks, BYTES_ROWS files per request, started again at most
 * every BYTES_EVERY_MS; the bytes shown are those of the last complete
 * walk (the first one is completed in the request that builds the
 * index). */
#define BYTES_ROWS 32768
#define BYTES_EVERY_MS 10000

/* The compaction part of the last answer of a database (what
 * compaction_entries() put in "compactions", "compactions_omitted" and
 * "levels"), with what it was made from. Working it out walks every
 * position of the range once per level and again per level below it:
 * most of a whole-window query (perf: ~55% of 70-240 ms for a million
 * positions), while its inputs change only with a push, a compaction or
 * retention. Opening a database asks for the same whole window each
 * time, so the second look is the cheap one. */
struct tl_memo {
	bool valid;
	int64_t incarnation;
	uint64_t first, last; /* TXIDs of the index's ends */
	uint64_t lo, hi;      /* TXIDs of the range's ends (0, 0: empty) */
	unsigned max;
	int n_levels;
	unsigned min_merge;
	int64_t level_ms[CLOUD_HIST_LEVELS_MAX + 1];
	uint64_t level_done[CLOUD_HIST_LEVELS_MAX + 1];
	json_t *comp, *omitted, *levels; /* owned */
};

/* The index of one database. */
struct tl_db {
	struct tl_db *next;
	char cluster[CLOUD_CLUSTER_MAX + 1];
	char name[CLOUD_DB_NAME_MAX + 1];
	pthread_mutex_t mu;          /* guards everything below */
	int64_t incarnation;         /* 0: nothing indexed */
	struct cloud_hist_tx *v;     /* positions, ascending TXID and ts_ms */
	size_t n, cap;
	struct cloud_hist_head head; /* as of the last sync */
	struct cloud_snapshot_info *snaps;
	size_t n_snaps;
	uint64_t bytes;              /* of the last complete walk */
	bool bytes_known;
	struct cloud_hist_bytes walk;
	bool walking;
	int64_t walk_started_ms;     /* monotonic */
	int64_t last_push_ms;        /* wall clock; 0: none since start */
	struct tl_memo memo;
};

struct cloud_timeline {
	struct cloud_store *cs;
	pthread_mutex_t mu; /* guards dbs (the list, not the entries); leaf */
	struct tl_db *dbs;
};

int cloud_timeline_open(struct cloud_store *cs, struct cloud_timeline **out)
{
	struct cloud_timeline *tl = calloc(1, sizeof(*tl));
	if (!tl)
		return ERR_NOMEM;
	tl->cs = cs;
	pthread_mutex_init(&tl->mu, NULL);
	*out = tl;
	return 0;
}

static void memo_clear(struct tl_memo *m)
{
	json_decref(m->comp);
	json_decref(m->omitted);
	json_decref(m->levels);
	memset(m, 0, sizeof(*m));
}

static void tl_reset(struct tl_db *d)
{
	memo_clear(&d->memo);
	free(d->v);
	free(d->snaps);
	d->v = NULL;
	d->snaps = NULL;
	d->n = d->cap = d->n_snaps = 0;
	d->incarnation = 0;
	d->bytes = 0;
	d->bytes_known = d->walking = false;
}

void cloud_timeline_close(struct cloud_timeline *tl)
{
	if (!tl)
		return;
	for (struct tl_db *d = tl->dbs, *next; d; d = next) {
		next = d->next;
		tl_reset(d);
		pthread_mutex_destroy(&d->mu);
		free(d);
	}
	pthread_mutex_destroy(&tl->mu);
	free(tl);
}

/* The entry of (cluster, name), created if missing; NULL on OOM or a name
 * too long to be a database's. Borrowed; valid until close. */
static struct tl_db *tl_get(struct cloud_timeline *tl, const char *cluster, const char *name)
{
	if (strlen(cluster) > CLOUD_CLUSTER_MAX || strlen(name) > CLOUD_DB_NAME_MAX)
		return NULL;
	pthread_mutex_lock(&tl->mu);
	struct tl_db *d;
	for (d = tl->dbs; d; d = d->next)
		if (!strcmp(d->cluster, cluster) && !strcmp(d->name, name))
			break;
	if (!d && (d = calloc(1, sizeof(*d))) != NULL) {
		strcpy(d->cluster, cluster);
		strcpy(d->name, name);
		pthread_mutex_init(&d->mu, NULL);
		d->next = tl->dbs;
		tl->dbs = d;
	}
	pthread_mutex_unlock(&tl->mu);
	return d;
}

void cloud_timeline_pushed(struct cloud_timeline *tl, const char *cluster, const char *db, int64_t now_ms)
{
	struct tl_db *d = tl_get(tl, cluster, db);
	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	d->last_push_ms = now_ms;
	pthread_mutex_unlock(&d->mu);
}

/* The first index whose TXID is >= txid. */
static size_t lower_txid(const struct tl_db *d, uint64_t txid)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (d->v[mid].txid < txid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The first index whose timestamp is > ts (after = true) or >= ts. */
static size_t bound_ts(const struct tl_db *d, int64_t ts, bool after)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (d->v[mid].ts_ms < ts || (after && d->v[mid].ts_ms == ts))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Goes on with (or starts) the walk that sums the history bytes of d
 * (BYTES_ROWS). Caller holds d->mu. */
static int tl_bytes(struct cloud_timeline *tl, struct tl_db *d, int64_t now)
{
	if (!d->walking && d->bytes_known && now - d->walk_started_ms < BYTES_EVERY_MS)
		return 0;
	if (!d->walking) {
		memset(&d->walk, 0, sizeof(d->walk));
		d->walking = true;
		d->walk_started_ms = now;
	}
	do {
		int rc = cloud_hist_bytes_step(tl->cs, d->cluster, d->name, d->incarnation, &d->walk, BYTES_ROWS);
		if (rc < 0) {
			d->walking = false;
			return rc;
		}
	} while (!d->walk.done && !d->bytes_known);
	if (d->walk.done) {
		d->bytes = d->walk.bytes;
		d->bytes_known = true;
		d->walking = false;
	}
	return 0;
}

/* Brings the index of d up to the catalog. Caller holds d->mu. */
static int tl_sync(struct cloud_timeline *tl, struct tl_db *d)
{
	struct cloud_hist_head h;
	int rc = cloud_hist_head(tl->cs, d->cluster, d->name, &h);
	if (rc == 0 && h.incarnation != d->incarnation) {
		tl_reset(d);
		d->incarnation = h.incarnation;
	}
	if (rc < 0) {
		tl_reset(d);
		return rc;
	}
	/* Retention removed the positions below the first one. */
	size_t k = lower_txid(d, h.first_txid);
	if (k > 0) {
		memmove(d->v, d->v + k, (d->n - k) * sizeof(*d->v));
		d->n -= k;
	}
	while (d->n == 0 || d->v[d->n - 1].txid < h.pos.txid) {
		if (d->cap - d->n < SYNC_CHUNK) {
			size_t cap = d->cap ? d->cap * 2 : SYNC_CHUNK;
			while (cap - d->n < SYNC_CHUNK)
				cap *= 2;
			struct cloud_hist_tx *v = realloc(d->v, cap * sizeof(*v));
			if (!v)
				return ERR_NOMEM;
			d->v = v;
			d->cap = cap;
		}
		size_t got = 0;
		rc = cloud_hist_scan(tl->cs, d->cluster, d->name, d->incarnation, d->n ? d->v[d->n - 1].txid : 0,
				     d->v + d->n, SYNC_CHUNK, &got);
		if (rc < 0) {
			tl_reset(d);
			return rc;
		}
		d->n += got;
		if (got < SYNC_CHUNK)
			break;
	}
	d->head = h;
	int64_t now = clock_mono_ms();
	/* The bases are a keyed read of a few rows (one per snapshot
	 * interval in the window): read every time. */
	struct cloud_snapshot_info *snaps = NULL;
	size_t n_snaps = 0;
	rc = cloud_hist_snapshots(tl->cs, d->cluster, d->name, d->incarnation, &snaps, &n_snaps);
	if (rc < 0)
		return rc;
	free(d->snaps);
	d->snaps = snaps;
	d->n_snaps = n_snaps;
	rc = tl_bytes(tl, d, now);
	if (rc < 0)
		return rc;
	return d->n ? 0 : ERR_CLOUD_NOT_FOUND;
}

/* ---- GET /dbs --------------------------------------------------------------- */

static json_t *db_json(const struct tl_db *d, int64_t now_ms)
{
	const struct cloud_hist_head *h = &d->head;
	json_t *o = json_pack("{s:o, s:o, s:o, s:I, s:i, s:I, s:I, s:o, s:o, s:{s:o, s:o, s:I, s:I}, s:I, s:b, s:I}",
			      "name", httpd_json_str(d->name), "txid", cloud_json_hex(h->pos.txid), "checksum",
			      cloud_json_hex(h->pos.checksum), "ts_ms", (json_int_t)h->pos.ts_ms, "page_size",
			      (int)h->page_size, "pages", (json_int_t)h->pages, "size",
			      (json_int_t)((uint64_t)h->page_size * h->pages), "last_push_ms",
			      d->last_push_ms ? json_integer(d->last_push_ms) : json_null(), "hwm",
			      cloud_json_hex(h->pos.txid), "restorable", "min_txid", cloud_json_hex(d->v[0].txid),
			      "max_txid", cloud_json_hex(d->v[d->n - 1].txid), "min_ts_ms", (json_int_t)d->v[0].ts_ms,
			      "max_ts_ms", (json_int_t)d->v[d->n - 1].ts_ms, "history_bytes", (json_int_t)d->bytes,
			      "pushing", d->last_push_ms && now_ms - d->last_push_ms < CLOUD_TIMELINE_PUSHING_MS,
			      "transactions", (json_int_t)d->n);
	return o;
}

struct names {
	char **v;
	size_t n, cap;
	bool oom;
};

static void name_one(void *ctx, const char *db, const struct cloud_pos *pos)
{
	struct names *nm = ctx;
	char *s = strdup(db);
	if (!s || cloud_catalog_grow((void **)&nm->v, nm->n, &nm->cap, sizeof(*nm->v)) < 0) {
		free(s);
		nm->oom = true;
		return;
	}
	nm->v[nm->n++] = s;
}

int cloud_timeline_dbs(struct cloud_timeline *tl, const char *cluster, json_t **out)
{
	struct names nm = { 0 };
	int rc = cloud_positions(tl->cs, cluster, name_one, &nm);
	if (rc == 0 && nm.oom)
		rc = ERR_NOMEM;
	json_t *arr = rc == 0 ? json_array() : NULL;
	if (rc == 0 && !arr)
		rc = ERR_NOMEM;
	int64_t now = clock_wall_ms();
	for (size_t i = 0; rc == 0 && i < nm.n; i++) {
		struct tl_db *d = tl_get(tl, cluster, nm.v[i]);
		if (!d) {
			rc = ERR_NOMEM;
			break;
		}
		pthread_mutex_lock(&d->mu);
		int src = tl_sync(tl, d);
		/* Deleted since the list was read: not listed. */
		if (src == 0)
			rc = json_array_append_new(arr, db_json(d, now)) == 0 ? 0 : ERR_NOMEM;
		else if (src != ERR_CLOUD_NOT_FOUND)
			rc = src;
		pthread_mutex_unlock(&d->mu);
	}
	for (size_t i = 0; i < nm.n; i++)
		free(nm.v[i]);
	free(nm.v);
	if (rc < 0) {
		json_decref(arr);
		return rc;
	}
	*out = json_pack("{s:o, s:I}", "databases", arr, "now_ms", (json_int_t)now);
	return *out ? 0 : ERR_NOMEM;
}

/* ---- GET /db/timeline --------------------------------------------------------- */

static int append(json_t *arr, json_t *v)
{
	return v && json_array_append_new(arr, v) == 0 ? 0 : ERR_NOMEM;
}

static int tx_entries(const struct tl_db *d, size_t lo, size_t hi, json_t *arr)
{
	int rc = 0;
	for (size_t i = lo; rc == 0 && i < hi; i++) {
		const struct cloud_hist_tx *t = &d->v[i];
		/* Every position is an upload's end, which the engine can
		 * rebuild; an upload that brought several TXIDs at once says so
		 * with min_txid (only its end is restorable). */
		json_t *o = json_pack("{s:o, s:I, s:I, s:b}", "txid", cloud_json_hex(t->txid), "ts_ms",
				      (json_int_t)t->ts_ms, "size", (json_int_t)t->size, "restorable", 1);
		if (o && t->min_txid < t->txid)
			json_object_set_new(o, "min_txid", cloud_json_hex(t->min_txid));
		rc = append(arr, o);
	}
	return rc;
}

/* About max buckets of equal length over [from, to]; empty ones omitted. */
static int bucket_entries(const struct tl_db *d, size_t lo, size_t hi, int64_t from, int64_t to, unsigned max,
			  json_t *arr)
{
	int64_t width = (to - from) / (int64_t)max + 1;
	int rc = 0;
	for (size_t i = lo; rc == 0 && i < hi;) {
		int64_t b = (d->v[i].ts_ms - from) / width;
		int64_t b_from = from + b * width, b_to = b_from + width - 1;
		size_t j = i;
		uint64_t bytes = 0;
		for (; j < hi && d->v[j].ts_ms <= b_to; j++)
			bytes += d->v[j].size;
		rc = append(arr, json_pack("{s:I, s:I, s:I, s:o, s:o, s:I}", "from_ms", (json_int_t)b_from, "to_ms",
					   (json_int_t)b_to, "count", (json_int_t)(j - i), "first_txid",
					   cloud_json_hex(d->v[i].txid), "last_txid", cloud_json_hex(d->v[j - 1].txid),
					   "bytes", (json_int_t)bytes));
		i = j;
	}
	return rc;
}

/* The spans level l keeps as one merged file each, for the groups that
 * overlap [lo, hi). The engine's rule (cloud_store_maint.c, run_level and
 * compact_group): a group is the positions of one aligned interval of
 * the level that follow each other (each upload starts right after the
 * previous one), up to the level's progress mark; an uploaded snapshot is
 * a base and never compacted; and a group gets a file only when the
 * levels below cover it with at least min_merge files (and more than one):
 * cover_files(). Page-size changes, which also break a group, are not in
 * the index. With emit false only counts. */
static size_t cover_files(const struct tl_db *d, int l, size_t i, size_t j);

static bool merged(const struct tl_db *d, size_t cover)
{
	return cover > 1 && cover >= (d->head.min_merge > 1 ? d->head.min_merge : 2);
}

/* How many files the engine's cover at levels <= l reads for positions
 * v[i..j) (one chain inside one interval of level l + 1): an upload is one
 * file at L0; at level l each group (aligned interval, up to the level's
 * mark) is one file when merged() from its own cover below, else that
 * cover. */
static size_t cover_files(const struct tl_db *d, int l, size_t i, size_t j)
{
	if (l == 0)
		return j - i;
	const int64_t iv = d->head.level_ms[l];
	const uint64_t done = d->head.level_done[l];
	size_t n = 0;
	while (i < j) {
		if (d->v[i].txid > done)
			return n + cover_files(d, l - 1, i, j); /* not grouped at l yet */
		const int64_t key = d->v[i].ts_ms / iv;
		size_t k = i + 1;
		while (k < j && d->v[k].txid <= done && d->v[k].ts_ms / iv == key)
			k++;
		size_t c = cover_files(d, l - 1, i, k);
		n += merged(d, c) ? 1 : c;
		i = k;
	}
	return n;
}

static size_t level_spans(const struct tl_db *d, int l, size_t lo, size_t hi, bool emit, json_t *arr)
{
	int64_t iv = d->head.level_ms[l];
	uint64_t done = d->head.level_done[l];
	size_t n = 0;
	if (iv <= 0 || lo >= hi)
		return 0;
	/* Whole groups: from the start of lo's interval, past hi if needed. */
	size_t i = bound_ts(d, d->v[lo].ts_ms / iv * iv, false);
	while (i < hi && d->v[i].txid <= done) {
		if (d->v[i].min_txid == 1) {
			i++;
			continue;
		}
		int64_t key = d->v[i].ts_ms / iv;
		size_t j = i + 1;
		for (; j < d->n && d->v[j].txid <= done && d->v[j].ts_ms / iv == key &&
		       d->v[j].min_txid == d->v[j - 1].txid + 1; j++)
			;
		bool overlaps = j > lo;
		if (overlaps && merged(d, cover_files(d, l - 1, i, j))) {
			if (emit && append(arr, json_pack("{s:i, s:o, s:o, s:I, s:I}", "level", l, "from_txid",
							  cloud_json_hex(d->v[i].min_txid), "to_txid",
							  cloud_json_hex(d->v[j - 1].txid), "from_ms",
							  (json_int_t)d->v[i].ts_ms, "to_ms",
							  (json_int_t)d->v[j - 1].ts_ms)) < 0)
				return SIZE_MAX;
			n++;
		}
		i = j;
	}
	return n;
}

static int compaction_entries(const struct tl_db *d, size_t lo, size_t hi, unsigned max, json_t *arr,
			      json_t *omitted, json_t *levels)
{
	for (int l = 1; l <= d->head.n_levels; l++) {
		size_t n = level_spans(d, l, lo, hi, false, NULL);
		if (append(levels, json_pack("{s:i, s:I, s:o}", "level", l, "interval_ms",
					     (json_int_t)d->head.level_ms[l], "done_txid",
					     cloud_json_hex(d->head.level_done[l]))) < 0)
			return ERR_NOMEM;
		if (n > max) {
			/* Too many to list at this zoom: counted, the UI zooms in. */
			if (append(omitted, json_pack("{s:i, s:I}", "level", l, "spans", (json_int_t)n)) < 0)
				return ERR_NOMEM;
			continue;
		}
		if (level_spans(d, l, lo, hi, true, arr) == SIZE_MAX)
			return ERR_NOMEM;
	}
	return 0;
}

/* The memo's key for the range v[lo..hi) of d (into m, zeroed first). */
static void memo_key(const struct tl_db *d, size_t lo, size_t hi, unsigned max, struct tl_memo *m)
{
	memset(m, 0, sizeof(*m));
	m->incarnation = d->incarnation;
	m->first = d->v[0].txid;
	m->last = d->v[d->n - 1].txid;
	m->lo = lo < hi ? d->v[lo].txid : 0;
	m->hi = lo < hi ? d->v[hi - 1].txid : 0;
	m->max = max;
	m->n_levels = d->head.n_levels;
	m->min_merge = d->head.min_merge;
	memcpy(m->level_ms, d->head.level_ms, sizeof(m->level_ms));
	memcpy(m->level_done, d->head.level_done, sizeof(m->level_done));
}

static bool memo_same(const struct tl_memo *a, const struct tl_memo *b)
{
	return a->incarnation == b->incarnation && a->first == b->first && a->last == b->last && a->lo == b->lo &&
	       a->hi == b->hi && a->max == b->max && a->n_levels == b->n_levels && a->min_merge == b->min_merge &&
	       !memcmp(a->level_ms, b->level_ms, sizeof(a->level_ms)) &&
	       !memcmp(a->level_done, b->level_done, sizeof(a->level_done));
}

/* Appends deep copies of src's items to dst (replies never share items:
 * each is dumped and freed on its own thread). */
static int extend_copy(json_t *dst, json_t *src)
{
	json_t *c = json_deep_copy(src);
	int rc = c && json_array_extend(dst, c) == 0 ? 0 : ERR_NOMEM;
	json_decref(c);
	return rc;
}

/* compaction_entries() through d's memo. */
static int compactions(struct tl_db *d, size_t lo, size_t hi, unsigned max, json_t *comp, json_t *omitted,
		       json_t *levels)
{
	struct tl_memo key;
	memo_key(d, lo, hi, max, &key);
	struct tl_memo *m = &d->memo;
	if (!m->valid || !memo_same(m, &key)) {
		memo_clear(m);
		key.comp = json_array();
		key.omitted = json_array();
		key.levels = json_array();
		int rc = key.comp && key.omitted && key.levels ? 0 : ERR_NOMEM;
		if (rc == 0)
			rc = compaction_entries(d, lo, hi, max, key.comp, key.omitted, key.levels);
		*m = key;
		if (rc < 0) {
			memo_clear(m);
			return rc;
		}
		m->valid = true;
	}
	if (extend_copy(comp, m->comp) < 0 || extend_copy(omitted, m->omitted) < 0 ||
	    extend_copy(levels, m->levels) < 0)
		return ERR_NOMEM;
	return 0;
}

static int snapshot_entries(const struct tl_db *d, int64_t from, int64_t to, json_t *arr)
{
	for (size_t i = 0; i < d->n_snaps; i++) {
		const struct cloud_snapshot_info *s = &d->snaps[i];
		if (s->ts_ms < from || s->ts_ms > to)
			continue;
		if (append(arr, json_pack("{s:o, s:I, s:I, s:i}", "txid", cloud_json_hex(s->txid), "ts_ms",
					  (json_int_t)s->ts_ms, "size", (json_int_t)s->size, "level", s->level)) < 0)
			return ERR_NOMEM;
	}
	return 0;
}

static int query_locked(struct tl_db *d, const struct cloud_timeline_query *q, json_t *o)
{
	int64_t from = q->has_from ? q->from_ms : d->v[0].ts_ms;
	int64_t to = q->has_to ? q->to_ms : d->v[d->n - 1].ts_ms;
	unsigned max = q->max ? q->max : CLOUD_TIMELINE_MAX_DEFAULT;
	if (from > to)
		return ERR_INVAL;
	size_t lo = bound_ts(d, from, false), hi = bound_ts(d, to, true);
	json_t *list = json_array(), *snaps = json_array(), *comp = json_array(), *omitted = json_array(),
	       *levels = json_array();
	bool tx_mode = hi - lo <= max;
	int rc = list && snaps && comp && omitted && levels ? 0 : ERR_NOMEM;
	if (rc == 0)
		rc = tx_mode ? tx_entries(d, lo, hi, list) : bucket_entries(d, lo, hi, from, to, max, list);
	if (rc == 0)
		rc = snapshot_entries(d, from, to, snaps);
	if (rc == 0)
		rc = compactions(d, lo, hi, max, comp, omitted, levels);
	json_t *window = json_pack("{s:I, s:I, s:o, s:o}", "min_ts_ms", (json_int_t)d->v[0].ts_ms, "max_ts_ms",
				   (json_int_t)d->v[d->n - 1].ts_ms, "min_txid", cloud_json_hex(d->v[0].txid),
				   "max_txid", cloud_json_hex(d->v[d->n - 1].txid));
	if (rc == 0 && !window)
		rc = ERR_NOMEM;
	if (rc == 0) {
		json_object_set_new(o, "mode", json_string(tx_mode ? "transactions" : "buckets"));
		json_object_set_new(o, tx_mode ? "transactions" : "buckets", list);
		json_object_set_new(o, "count", json_integer((json_int_t)(hi - lo)));
		json_object_set_new(o, "snapshots", snaps);
		json_object_set_new(o, "compactions", comp);
		json_object_set_new(o, "levels", levels);
		if (json_array_size(omitted))
			json_object_set_new(o, "compactions_omitted", omitted);
		else
			json_decref(omitted);
		json_object_set_new(o, "window", window);
		json_object_set_new(o, "from_ms", json_integer(from));
		json_object_set_new(o, "to_ms", json_integer(to));
		return 0;
	}
	json_decref(list);
	json_decref(snaps);
	json_decref(comp);
	json_decref(omitted);
	json_decref(levels);
	json_decref(window);
	return rc;
}

int cloud_timeline_query(struct cloud_timeline *tl, const char *cluster, const char *db,
			 const struct cloud_timeline_query *q, json_t **out)
{
	/* Only a database that exists gets an index entry (entries live
	 * until the service stops: names that were merely asked about must
	 * not grow the registry). */
	struct cloud_hist_head h;
	int rc = cloud_hist_head(tl->cs, cluster, db, &h);
	if (rc < 0)
		return rc;
	struct tl_db *d = tl_get(tl, cluster, db);
	json_t *o = json_object();
	if (!d || !o) {
		json_decref(o);
		return d ? ERR_NOMEM : ERR_CLOUD_NAME;
	}
	pthread_mutex_lock(&d->mu);
	rc = tl_sync(tl, d);
	if (rc == 0)
		rc = query_locked(d, q, o);
	pthread_mutex_unlock(&d->mu);
	if (rc < 0) {
		json_decref(o);
		return rc;
	}
	json_object_set_new(o, "db", httpd_json_str(db));
	*out = o;
	return 0;
}
