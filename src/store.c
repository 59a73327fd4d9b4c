/*
 * store.c — the registry of databases in a data directory.
 *
 * Databases get an id in load order; the id never changes during a mount
 * and is the base of the inode numbers the FUSE layer hands out, so st_ino
 * is stable as SQLite requires (SQLITE-FILES.md §5). A deleted database
 * keeps its id and its LTX history, so re-creating the name continues the
 * TXID sequence.
 *
 * One background thread enforces local retention and runs the incremental
 * verification started by an O(1) (clean) start.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "store.h"

#define MAX_DB_NAME 200

bool store_valid_db_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > MAX_DB_NAME || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '/' || c < 0x20 || c == 0x7f)
			return false;
	}
	for (int k = DB_KIND_JOURNAL; k < DB_KIND_COUNT; k++) {
		size_t sl = strlen(db_kind_suffix[k]);
		if (n >= sl && strcmp(name + n - sl, db_kind_suffix[k]) == 0)
			return false;
	}
	/* SQLite's super-journal "<db>-mjXXXXXX9XX" (multi-database commits,
	 * SQLITE-FILES.md §2.6) is not a database; refusing it makes such a
	 * commit fail cleanly instead of creating a bogus database. */
	if (n >= 12 && memcmp(name + n - 12, "-mj", 3) == 0)
		return false;
	return true;
}

int store_parse_name(const char *fname, char *name_out, size_t name_len, int *kind)
{
	size_t n = strlen(fname);
	for (int k = DB_KIND_JOURNAL; k < DB_KIND_COUNT; k++) {
		size_t sl = strlen(db_kind_suffix[k]);
		if (n > sl && strcmp(fname + n - sl, db_kind_suffix[k]) == 0) {
			if (n - sl + 1 > name_len)
				return -ENAMETOOLONG;
			memcpy(name_out, fname, n - sl);
			name_out[n - sl] = '\0';
			*kind = k;
			return store_valid_db_name(name_out) ? 0 : -EINVAL;
		}
	}
	if (n + 1 > name_len)
		return -ENAMETOOLONG;
	memcpy(name_out, fname, n + 1);
	*kind = DB_KIND_DB;
	return store_valid_db_name(name_out) ? 0 : -EINVAL;
}

static int add_db_locked(struct store *st, struct db *db)
{
	if (st->n_dbs == st->cap_dbs) {
		size_t cap = st->cap_dbs ? st->cap_dbs * 2 : 16;
		struct db **v = realloc(st->dbs, cap * sizeof(*v));
		if (v == NULL)
			return ERR_NOMEM;
		st->dbs = v;
		st->cap_dbs = cap;
	}
	st->dbs[st->n_dbs++] = db;
	return 0;
}

struct db *store_find(struct store *st, const char *name, bool include_deleted)
{
	struct db *found = NULL;
	pthread_mutex_lock(&st->mu);
	for (size_t i = 0; i < st->n_dbs; i++) {
		if (strcmp(st->dbs[i]->name, name) == 0) {
			found = st->dbs[i];
			break;
		}
	}
	pthread_mutex_unlock(&st->mu);
	if (found && !include_deleted) {
		pthread_mutex_lock(&found->mu);
		bool exists = found->exists[DB_KIND_DB];
		pthread_mutex_unlock(&found->mu);
		if (!exists)
			found = NULL;
	}
	return found;
}

struct db *store_by_id(struct store *st, uint32_t id)
{
	struct db *db = NULL;
	pthread_mutex_lock(&st->mu);
	if (id < st->n_dbs)
		db = st->dbs[id];
	pthread_mutex_unlock(&st->mu);
	return db;
}

size_t store_count(struct store *st)
{
	pthread_mutex_lock(&st->mu);
	size_t n = st->n_dbs;
	pthread_mutex_unlock(&st->mu);
	return n;
}

int store_create(struct store *st, const char *name, struct db **out)
{
	int rc = 0;
	if (!store_valid_db_name(name))
		return -EINVAL;
	pthread_mutex_lock(&st->mu);
	for (size_t i = 0; i < st->n_dbs; i++) {
		if (strcmp(st->dbs[i]->name, name) == 0) {
			*out = st->dbs[i];
			pthread_mutex_unlock(&st->mu);
			return 0;
		}
	}
	struct db *db;
	rc = db_load(st, name, (uint32_t)st->n_dbs, true, &db);
	if (rc == 0 && (rc = add_db_locked(st, db)) != 0)
		db_free(db);
	if (rc == 0)
		*out = db;
	pthread_mutex_unlock(&st->mu);
	return rc;
}

/* Finds the mount point of the file system holding path: the last
 * directory walking up from path that is still on path's device. */
static void mount_point_of(const char *path, char *out, size_t out_len)
{
	char *p = realpath(path, NULL);
	struct stat st, up;
	snprintf(out, out_len, "%s", p ? p : path);
	if (p == NULL || stat(p, &st) != 0) {
		free(p);
		return;
	}
	for (;;) {
		char *slash = strrchr(p, '/');
		if (slash == NULL || slash == p) {
			/* The parent is "/". */
			if (stat("/", &up) == 0 && up.st_dev == st.st_dev)
				snprintf(out, out_len, "/");
			break;
		}
		*slash = '\0';
		if (stat(p, &up) != 0 || up.st_dev != st.st_dev)
			break;
		snprintf(out, out_len, "%s", p);
	}
	free(p);
}

/* A full file system is the operator's to fix, and every start fails the
 * same way until they do: say which file system, and how full. */
static void log_fs_full(const char *data_dir)
{
	char fs[4096];
	struct statvfs sv;
	mount_point_of(data_dir, fs, sizeof(fs));
	unsigned long long avail = 0, size = 0;
	if (statvfs(data_dir, &sv) == 0) {
		avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
		size = (unsigned long long)sv.f_blocks * sv.f_frsize;
	}
	LOG_ERROR("store", "msg=\"no space left on the file system holding the data directory; free space there and start again\" "
			   "fs=%s dir=%s avail_bytes=%llu size_bytes=%llu",
		  fs, data_dir, avail, size);
}

int store_open(const struct store_opts *opts, struct store **out)
{
	struct store *st = calloc(1, sizeof(*st));
	char path[4096];
	int rc;

	if (st == NULL)
		return ERR_NOMEM;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cond, NULL);
	pthread_cond_init(&st->change_cond, NULL);
	pthread_mutex_init(&st->change_mu, NULL);
	atomic_init(&st->is_primary, true);
	st->dbs_fd = -1;
	st->compress = opts->compress;
	st->retention_ms = opts->retention_ms;
	st->retention_monitor_ms = opts->retention_monitor_ms > 0 ? opts->retention_monitor_ms : 60000;
	st->node_id = opts->node_id;
	if ((st->data_dir = strdup(opts->data_dir)) == NULL) {
		rc = ERR_NOMEM;
		goto err;
	}
	if (mkdir(st->data_dir, 0755) != 0 && errno != EEXIST) {
		rc = -errno;
		LOG_ERROR("store", "msg=\"cannot create data directory\" dir=%s err=\"%s\"", st->data_dir, strerror(errno));
		goto err;
	}
	snprintf(path, sizeof(path), "%s/dbs", st->data_dir);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		rc = -errno;
		goto err;
	}
	if ((st->dbs_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto err;
	}

	DIR *d = opendir(path);
	if (d == NULL) {
		rc = -errno;
		goto err;
	}
	struct dirent *de;
	rc = 0;
	while ((de = readdir(d)) != NULL) {
		if (!store_valid_db_name(de->d_name))
			continue;
		struct db *db;
		rc = db_load(st, de->d_name, (uint32_t)st->n_dbs, false, &db);
		if (rc)
			break;
		if ((rc = add_db_locked(st, db)) != 0) {
			db_free(db);
			break;
		}
		LOG_INFO("store", "msg=\"database loaded\" db=%s txid=%016llx checksum=%016llx pages=%u", db->name,
			 (unsigned long long)db->pos.txid, (unsigned long long)db->pos.checksum, db->n_pages);
	}
	closedir(d);
	if (rc)
		goto err;
	*out = st;
	return 0;
err:
	if (rc == -ENOSPC || rc == -EDQUOT)
		log_fs_full(opts->data_dir);
	store_close(st);
	return rc;
}


static void *bg_main(void *arg)
{
	struct store *st = arg;
	int64_t next_retention = clock_mono_ms() + st->retention_monitor_ms;

	pthread_mutex_lock(&st->mu);
	while (!st->stopping) {
		size_t n = st->n_dbs;
		pthread_mutex_unlock(&st->mu);

		bool more = false;
		for (size_t i = 0; i < n; i++) {
			struct db *db = store_by_id(st, (uint32_t)i);
			/* Small steps keep the database's mutex free for commits. */
			if (db_verify_step(db, 256) == 1)
				more = true;
			db_flush_pending(db);
		}
		if (clock_mono_ms() >= next_retention) {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
			for (size_t i = 0; i < n; i++)
				db_enforce_retention(store_by_id(st, (uint32_t)i), now_ms, st->retention_ms);
			next_retention = clock_mono_ms() + st->retention_monitor_ms;
		}

		pthread_mutex_lock(&st->mu);
		if (!more && !st->stopping) {
			struct timespec until = clock_deadline(200);
			pthread_cond_timedwait(&st->cond, &st->mu, &until);
		}
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

int store_start(struct store *st)
{
	int rc = pthread_create(&st->bg_thread, NULL, bg_main, st);
	if (rc)
		return -rc;
	st->bg_started = true;
	return 0;
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->change_mu);
	st->change_stopping = true;
	pthread_cond_broadcast(&st->change_cond);
	pthread_mutex_unlock(&st->change_mu);
	if (st->bg_started) {
		pthread_mutex_lock(&st->mu);
		st->stopping = true;
		pthread_cond_broadcast(&st->cond);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->bg_thread, NULL);
	}
	for (size_t i = 0; i < st->n_dbs; i++) {
		db_close_clean(st->dbs[i]);
		db_free(st->dbs[i]);
	}
	free(st->dbs);
	if (st->dbs_fd >= 0)
		close(st->dbs_fd);
	pthread_cond_destroy(&st->cond);
	pthread_cond_destroy(&st->change_cond);
	pthread_mutex_destroy(&st->change_mu);
	pthread_mutex_destroy(&st->mu);
	free(st->data_dir);
	free(st);
}

/* ---- Cluster role and replication -------------------------------------- */


bool store_is_primary(struct store *st)
{
	return atomic_load(&st->is_primary);
}

void store_set_role(struct store *st, bool primary, const char *primary_host)
{
	pthread_mutex_lock(&st->mu);
	atomic_store(&st->is_primary, primary);
	snprintf(st->primary_host, sizeof(st->primary_host), "%s", primary || !primary_host ? "" : primary_host);
	if (st->caught_up_ms == 0)
		st->caught_up_ms = clock_wall_ms();
	pthread_mutex_unlock(&st->mu);
	store_notify_change(st);
}

void store_primary_host(struct store *st, char *buf, size_t len)
{
	pthread_mutex_lock(&st->mu);
	snprintf(buf, len, "%s", atomic_load(&st->is_primary) ? "" : st->primary_host);
	pthread_mutex_unlock(&st->mu);
}

void store_set_caught_up(struct store *st, int64_t now)
{
	pthread_mutex_lock(&st->mu);
	st->caught_up_ms = now;
	pthread_mutex_unlock(&st->mu);
}

int64_t store_lag_ms(struct store *st)
{
	pthread_mutex_lock(&st->mu);
	int64_t lag = 0;
	if (!atomic_load(&st->is_primary) && st->caught_up_ms > 0) {
		lag = clock_wall_ms() - st->caught_up_ms;
		if (lag < 0)
			lag = 0;
	}
	pthread_mutex_unlock(&st->mu);
	return lag;
}

uint64_t store_change_seq(struct store *st)
{
	pthread_mutex_lock(&st->change_mu);
	uint64_t seq = st->change_seq;
	pthread_mutex_unlock(&st->change_mu);
	return seq;
}

void store_notify_change(struct store *st)
{
	pthread_mutex_lock(&st->change_mu);
	st->change_seq++;
	pthread_cond_broadcast(&st->change_cond);
	pthread_mutex_unlock(&st->change_mu);
}

uint64_t store_wait_change(struct store *st, uint64_t seen, int timeout_ms)
{
	struct timespec until = clock_deadline(timeout_ms);
	pthread_mutex_lock(&st->change_mu);
	while (st->change_seq == seen && !st->change_stopping) {
		if (pthread_cond_timedwait(&st->change_cond, &st->change_mu, &until) != 0)
			break;
	}
	uint64_t seq = st->change_seq;
	pthread_mutex_unlock(&st->change_mu);
	return seq;
}

int store_apply(struct store *st, const char *name, int fd, off_t off, uint32_t len)
{
	struct db *db;
	int rc = store_create(st, name, &db);
	if (rc != 0)
		return rc;
	return db_apply(db, fd, off, len);
}

void store_cancel_applies(struct store *st)
{
	atomic_store(&st->cancel_applies, true);
}

bool store_applies_cancelled(struct store *st)
{
	return atomic_load(&st->cancel_applies);
}

void store_request_resync(struct store *st)
{
	atomic_store(&st->resync, true);
}

bool store_take_resync(struct store *st)
{
	return atomic_exchange(&st->resync, false);
}
