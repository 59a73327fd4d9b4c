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
 * verification started by an O(1) (clean) start. Another, the lock
 * watchdog (store.h), only reads atomics, so it keeps reporting while
 * the first is stuck behind a database's mutex.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "node/adopt.h"
#include "node/apply.h"
#include "node/db.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "node/store.h"
#include "proto/dbname.h"

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
			return dbname_check(name_out);
		}
	}
	if (n + 1 > name_len)
		return -ENAMETOOLONG;
	memcpy(name_out, fname, n + 1);
	*kind = DB_KIND_DB;
	return dbname_check(name_out);
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
		lockwatch_lock(&found->mu, "lookup");
		bool exists = found->exists[DB_KIND_DB];
		lockwatch_unlock(&found->mu);
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
	if (!dbname_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&st->mu);
	for (size_t i = 0; i < st->n_dbs; i++) {
		if (strcmp(st->dbs[i]->name, name) == 0) {
			*out = st->dbs[i];
			pthread_mutex_unlock(&st->mu);
			/* A database forgotten unwritten lost its directory. */
			return db_ensure_dir(*out);
		}
	}
	struct db *db;
	rc = db_load(&st->node, name, (uint32_t)st->n_dbs, true, &db);
	if (rc == 0 && (rc = add_db_locked(st, db)) != 0)
		db_free(db);
	if (rc == 0)
		*out = db;
	pthread_mutex_unlock(&st->mu);
	return rc;
}

/*
 * One node per data directory. Two nodes on one data.dir would both
 * "recover" the same databases and the second one's clean stop would mark
 * them cleanly closed under the first, so the node holds an exclusive
 * flock on data.dir/lock for its whole life. flock (not fcntl) because the
 * lock belongs to the open file description: it cannot be dropped by a
 * close() of another descriptor of the same file in this process, and the
 * kernel releases it when the node dies however it dies. The holder's pid
 * is written into the file only to name it in the refusal.
 */
static int lock_data_dir(struct store *st)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/lock", st->node.data_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, FILEIO_FILE_MODE);
	if (fd < 0) {
		int rc = -errno;
		LOG_ERROR("store", "msg=\"cannot open the data directory lock\" path=%s err=\"%s\"", path,
			  strerror(errno));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int rc = errno == EWOULDBLOCK ? ERR_DATA_DIR_BUSY : -errno;
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (rc == ERR_DATA_DIR_BUSY)
			LOG_ERROR("store", "msg=\"the data directory is in use by another litefs node; refusing to "
					   "share it\" dir=%s holder_pid=%s", st->node.data_dir, pid[0] ? pid : "unknown");
		close(fd);
		return rc;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		LOG_WARN("store", "msg=\"cannot record the pid in the data directory lock\" path=%s", path);
	st->lock_fd = fd;
	return 0;
}

int store_data_dir_holder(const char *data_dir)
{
	char path[4096], pid[32];
	snprintf(path, sizeof(path), "%s/lock", data_dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
	close(fd);
	pid[n > 0 ? n : 0] = '\0';
	return atoi(pid);
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

static size_t n_tightened;

static int tighten_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)ftw;
	bool t = false;
	if ((type == FTW_F || type == FTW_D) && (sb->st_mode & 077) != 0 && fileio_private_path(path, &t) == 0 && t)
		n_tightened++;
	return 0;
}

/*
 * Everything in the data directory is the node's alone (FILEIO_FILE_MODE,
 * FILEIO_DIR_MODE). A directory written by an older version or by LiteFS
 * (0755 directories, 0644 files) is tightened at start, once, and the log
 * says so. The walk costs a stat per file: a handful per database plus its
 * segments. The node holds data.dir/lock, so nothing else writes here.
 */
static void tighten_data_dir(const char *data_dir, bool top_tightened)
{
	n_tightened = top_tightened ? 1 : 0;
	if (nftw(data_dir, tighten_one, 16, FTW_PHYS | FTW_MOUNT) != 0)
		LOG_WARN("store", "msg=\"cannot check the modes of every file in the data directory\" dir=%s err=\"%s\"",
			 data_dir, strerror(errno));
	if (n_tightened > 0)
		LOG_WARN("store", "msg=\"the data directory was readable by other users; removed group and other "
				  "permissions\" dir=%s paths=%zu", data_dir, n_tightened);
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
	pthread_mutex_init(&st->watch_mu, NULL);
	pthread_cond_init(&st->watch_cond, NULL);
	st->lock_fd = -1;
	st->retention_monitor_ms = opts->retention_monitor_ms > 0 ? opts->retention_monitor_ms : 60000;
	st->lock_stall_ms = opts->lock_stall_ms > 0 ? opts->lock_stall_ms : STORE_LOCK_STALL_MS;
	struct node_opts no = { .data_dir = opts->data_dir, .compress = opts->compress,
				.retention_ms = opts->retention_ms, .node_id = opts->node_id };
	if ((rc = node_init(&st->node, &no)) != 0) {
		free(st);
		return rc;
	}
	bool tightened = false;
	if ((rc = fileio_private_dir(st->node.data_dir, &tightened)) != 0) {
		LOG_ERROR("store", "msg=\"cannot create data directory\" dir=%s err=\"%s\"", st->node.data_dir, err_str(rc));
		goto err;
	}
	if ((rc = lock_data_dir(st)) != 0)
		goto err;
	tighten_data_dir(st->node.data_dir, tightened);
	snprintf(path, sizeof(path), "%s/dbs", st->node.data_dir);
	if (mkdir(path, FILEIO_DIR_MODE) != 0 && errno != EEXIST) {
		rc = -errno;
		goto err;
	}
	if ((st->node.dbs_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
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
		if (!dbname_valid(de->d_name))
			continue;
		struct db *db;
		struct adopt_info adopted;
		if ((rc = adopt_prepare(st->node.data_dir, st->node.dbs_fd, de->d_name, &adopted)) != 0)
			break;
		rc = db_load(&st->node, de->d_name, (uint32_t)st->n_dbs, false, &db);
		if (rc)
			break;
		if ((rc = add_db_locked(st, db)) != 0) {
			db_free(db);
			break;
		}
		adopt_finish(st->node.data_dir, st->node.dbs_fd, db->name, &adopted, db->pos);
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
				db_enforce_retention(store_by_id(st, (uint32_t)i), now_ms, st->node.retention_ms);
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

/* One look at every database's mutex (see store.h). */
static void watch_scan(struct store *st)
{
	int64_t now = clock_mono_ms();
	size_t n = store_count(st);
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(st, (uint32_t)i);
		struct lockwatch_state ls;
		db_lock_peek(db, now, &ls);
		if (ls.op == NULL || ls.held_ms < st->lock_stall_ms) {
			if (db->watch_seq != 0 && db->watch_seq != ls.seq) {
				LOG_WARN("watchdog", "msg=\"database lock released after a stall\" db=%s", db->name);
				db->watch_seq = 0;
			}
			continue;
		}
		bool first = db->watch_seq != ls.seq;
		if (!first && now < db->watch_next_ms)
			continue;
		if (first) {
			atomic_fetch_add(&st->n_lock_stalls, 1);
			db->watch_seq = ls.seq;
		}
		db->watch_next_ms = now + st->lock_stall_ms;
		LOG_ERROR("watchdog",
			  "msg=\"database lock held too long; requests on this database are blocked\" db=%s op=%s "
			  "held_ms=%" PRId64 " waiters=%d bound_ms=%" PRId64,
			  db->name, ls.op, ls.held_ms, ls.n_waiters, st->lock_stall_ms);
	}
}

static void *watch_main(void *arg)
{
	struct store *st = arg;
	for (;;) {
		clock_wait_flag(&st->watch_mu, &st->watch_cond, NULL, &st->watch_stop, 1000);
		if (atomic_load(&st->watch_stop))
			break;
		watch_scan(st);
	}
	return NULL;
}

int store_start(struct store *st)
{
	int rc = pthread_create(&st->bg_thread, NULL, bg_main, st);
	if (rc)
		return -rc;
	st->bg_started = true;
	/* Without a watchdog the node still works; a hang is just silent. */
	if (pthread_create(&st->watch_thread, NULL, watch_main, st) == 0)
		st->watch_started = true;
	else
		LOG_WARN("store", "msg=\"cannot start the lock watchdog\"");
	return 0;
}

uint64_t store_lock_stalls(struct store *st)
{
	return atomic_load(&st->n_lock_stalls);
}

int store_locks_held_over(struct store *st, int64_t min_ms)
{
	int64_t now = clock_mono_ms();
	int held = 0;
	size_t n = store_count(st);
	for (size_t i = 0; i < n; i++) {
		struct lockwatch_state ls;
		db_lock_peek(store_by_id(st, (uint32_t)i), now, &ls);
		if (ls.op != NULL && ls.held_ms >= min_ms)
			held++;
	}
	return held;
}

int store_close_forced(struct store *st, int64_t timeout_ms)
{
	if (atomic_exchange(&st->close_claimed, true))
		return -1;
	int unclean = 0;
	size_t n = store_count(st);
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(st, (uint32_t)i);
		if (db_close_forced(db, timeout_ms) == 0)
			continue;
		struct lockwatch_state ls;
		db_lock_peek(db, clock_mono_ms(), &ls);
		LOG_ERROR("store",
			  "msg=\"database lock still held at the forced stop; not marked clean, it will be recovered "
			  "at the next start\" db=%s op=%s held_ms=%" PRId64,
			  db->name, ls.op ? ls.op : "?", ls.held_ms);
		unclean++;
	}
	return unclean;
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	/* A forced stop (store_close_forced) holds database mutexes and is
	 * about to end the process: touching the databases now would wait
	 * for ever or free what it holds. */
	if (atomic_exchange(&st->close_claimed, true))
		for (;;)
			pause();
	if (st->watch_started) {
		pthread_mutex_lock(&st->watch_mu);
		atomic_store(&st->watch_stop, true);
		pthread_cond_broadcast(&st->watch_cond);
		pthread_mutex_unlock(&st->watch_mu);
		pthread_join(st->watch_thread, NULL);
	}
	node_stop_changes(&st->node);
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
	if (st->node.dbs_fd >= 0)
		close(st->node.dbs_fd);
	/* Last: the markers written above belong to this node. */
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	pthread_cond_destroy(&st->cond);
	pthread_cond_destroy(&st->watch_cond);
	pthread_mutex_destroy(&st->watch_mu);
	pthread_mutex_destroy(&st->mu);
	node_destroy(&st->node);
	free(st);
}

/* ---- Replication ---------------------------------------------------------- */

int store_apply(struct store *st, const char *name, int fd, off_t off, uint32_t len)
{
	return store_apply_guarded(st, name, fd, off, len, NULL, NULL);
}

int store_apply_guarded(struct store *st, const char *name, int fd, off_t off, uint32_t len,
			int (*guard)(void *ctx, struct db *db), void *ctx)
{
	struct db *db;
	int rc = store_create(st, name, &db);
	if (rc != 0)
		return rc;
	return apply_ltx_guarded(db, fd, off, len, guard, ctx);
}
