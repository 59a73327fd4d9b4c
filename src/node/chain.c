/*
 * chain.c — a database's chain of LTX records on disk (see chain.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/sys.h"
#include "node/chain.h"

/* Syncer threads shared by every database of the node (LITEFS_SYNCERS
 * overrides, for benchmarks). One serialised the segments' fsyncs of
 * databases that commit at once: with four WAL/FULL writers the mount
 * reached 0.23-0.26x plain SQLite with one syncer and 0.31-0.40x with four
 * (BENCHMARKS.md, "Several databases at once"); one database is the same. */
#define CHAIN_SYNCERS 4

void chain_init(struct chain *c, const char *name)
{
	memset(c, 0, sizeof(*c));
	c->name = name;
	c->dir_fd = -1;
	c->log_fd = -1;
}

int chain_open_dir(struct chain *c, int db_dir_fd)
{
	if (mkdirat(db_dir_fd, "ltx", FILEIO_DIR_MODE) != 0 && errno != EEXIST)
		return -errno;
	int fd = openat(db_dir_fd, "ltx", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (c->dir_fd >= 0)
		close(c->dir_fd);
	c->dir_fd = fd;
	return 0;
}

void chain_close(struct chain *c)
{
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = -1;
	if (c->dir_fd >= 0)
		close(c->dir_fd);
	c->dir_fd = -1;
}

/* ---- Appending ----------------------------------------------------------- */

int chain_open_segment(struct chain *c, uint64_t first_txid)
{
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, first_txid);
	int fd = openat(c->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, FILEIO_FILE_MODE);
	if (fd < 0)
		return -errno;
	/* The new name must be durable before a record in it is acknowledged
	 * (I3): syncing the file alone does not promise its directory entry.
	 * Once per segment, so rare on the commit path. */
	if (sys_fsync(c->dir_fd) != 0) {
		int rc = -errno;
		close(fd);
		sys_unlinkat(c->dir_fd, name, 0);
		return rc;
	}
	c->log_fd = fd;
	c->first_txid = first_txid;
	c->end = 0;
	c->synced_end = 0;
	c->created_ms = clock_wall_ms();
	return 0;
}

void chain_close_segment(struct chain *c)
{
	if (c->log_fd < 0)
		return;
	if (c->synced_end < c->end && sys_fsync(c->log_fd) != 0)
		LOG_ERROR("db", "msg=\"cannot sync LTX segment\" db=%s err=\"%s\"", c->name, strerror(errno));
	close(c->log_fd);
	c->log_fd = -1;
}

int chain_adopt_segment(struct chain *c, int src_dir_fd, const char *src_path, int fd, uint64_t first_txid,
			uint64_t end)
{
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, first_txid);
	if (c->log_fd >= 0 && c->end == 0 && c->first_txid == first_txid) {
		/* Opened for this TXID but never written: the adopted file
		 * takes its name. */
		close(c->log_fd);
		c->log_fd = -1;
		sys_unlinkat(c->dir_fd, name, 0);
	}
	chain_close_segment(c);
	if (renameat2(src_dir_fd, src_path, c->dir_fd, name, RENAME_NOREPLACE) != 0)
		return -errno;
	if (sys_fsync(c->dir_fd) != 0) {
		int rc = -errno;
		sys_unlinkat(c->dir_fd, name, 0);
		return rc;
	}
	c->log_fd = fd;
	c->first_txid = first_txid;
	c->end = end;
	c->synced_end = end;
	c->created_ms = clock_wall_ms();
	return 0;
}

void chain_drop_segment(struct chain *c)
{
	if (c->log_fd < 0)
		return;
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, c->first_txid);
	close(c->log_fd);
	c->log_fd = -1;
	if (sys_unlinkat(c->dir_fd, name, 0) != 0 || sys_fsync(c->dir_fd) != 0)
		LOG_ERROR("db", "msg=\"cannot remove LTX segment\" db=%s segment=%s err=\"%s\"", c->name, name,
			  strerror(errno));
}

int chain_sync(struct chain *c)
{
	if (c->log_fd < 0 || c->synced_end >= c->end)
		return 0;
	if (sys_fsync(c->log_fd) != 0)
		return -errno;
	c->synced_end = c->end;
	return 0;
}

/*
 * A helper thread that fsyncs LTX segments while the FUSE thread syncs the
 * client's file: on a journalling ext4 two concurrent syncs share one
 * journal commit instead of paying for two in a row (an ext4 without a
 * journal gains nothing over syncing in turn: docs/mount.md).
 *
 * Every database of the node shares a few such threads (CHAIN_SYNCERS), so
 * each submission is its own job with its own completion: a FUSE thread
 * waits for exactly the job it queued (a job lives on its submitter's
 * stack and is unlinked by a syncer before `done` is set, both under
 * syncer.mu). Jobs of several databases queue up and are taken in order by
 * whichever syncer is free; none can be lost or taken by another waiter.
 */
struct sync_job {
	int fd;               /* the segment to sync, borrowed until done */
	int rc;               /* 0 or -errno, valid once done */
	bool done;
	struct sync_job *next;
};

static struct {
	pthread_once_t once;
	pthread_mutex_t mu;   /* guards everything below */
	pthread_cond_t work;  /* a job was queued */
	pthread_cond_t done;  /* a job finished */
	struct sync_job *head, *tail;
	bool ok;
} syncer = { .once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER,
	     .work = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER };

static void *syncer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&syncer.mu);
	for (;;) {
		while (syncer.head == NULL)
			pthread_cond_wait(&syncer.work, &syncer.mu);
		struct sync_job *job = syncer.head;
		syncer.head = job->next;
		if (syncer.head == NULL)
			syncer.tail = NULL;
		pthread_mutex_unlock(&syncer.mu);
		int rc = sys_fsync(job->fd) == 0 ? 0 : -errno;
		pthread_mutex_lock(&syncer.mu);
		job->rc = rc;
		job->done = true;
		pthread_cond_broadcast(&syncer.done);
	}
	return NULL;
}

static void syncer_init(void)
{
	const char *env = getenv("LITEFS_SYNCERS");
	int n = env ? atoi(env) : CHAIN_SYNCERS;
	for (int i = 0; i < (n > 0 ? n : 1); i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, syncer_main, NULL) != 0)
			break;
		pthread_detach(t);
		syncer.ok = true;
	}
}

int chain_sync_alongside(struct chain *c, int fd)
{
	pthread_once(&syncer.once, syncer_init);
	if (c->log_fd < 0 || c->synced_end >= c->end || !syncer.ok) {
		int rc = sys_fsync(fd) == 0 ? 0 : -errno;
		return rc == 0 ? chain_sync(c) : rc;
	}
	struct sync_job job = { .fd = c->log_fd };
	uint64_t end = c->end;
	pthread_mutex_lock(&syncer.mu);
	if (syncer.tail)
		syncer.tail->next = &job;
	else
		syncer.head = &job;
	syncer.tail = &job;
	pthread_cond_signal(&syncer.work);
	pthread_mutex_unlock(&syncer.mu);

	int rc = sys_fsync(fd) == 0 ? 0 : -errno;

	pthread_mutex_lock(&syncer.mu);
	while (!job.done)
		pthread_cond_wait(&syncer.done, &syncer.mu);
	pthread_mutex_unlock(&syncer.mu);
	if (rc == 0)
		rc = job.rc;
	if (job.rc == 0)
		c->synced_end = end;
	return rc;
}

bool chain_rotation_due(const struct chain *c, int64_t now_ms, int64_t retention_ms)
{
	return c->log_fd >= 0 && (c->end >= CHAIN_SEGMENT_MAX || now_ms - c->created_ms >= retention_ms / 4 + 1000);
}

/* ---- Segments, retention, recovery ----------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int chain_list_segments(int dir_fd, uint64_t **out, size_t *n_out)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	uint64_t *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		uint64_t first;
		if (ltxlog_parse_name(de->d_name, &first) != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			uint64_t *nv = realloc(v, cap * sizeof(*nv));
			if (nv == NULL) {
				free(v);
				closedir(d);
				return ERR_NOMEM;
			}
			v = nv;
		}
		v[n++] = first;
	}
	closedir(d);
	if (n > 0)
		qsort(v, n, sizeof(*v), cmp_u64);
	*out = v;
	*n_out = n;
	return 0;
}

int chain_enforce_retention(struct chain *c, int64_t now_ms, int64_t retention_ms, uint64_t backup_hwm)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	int removed = 0;
	int rc = chain_list_segments(c->dir_fd, &firsts, &n);
	if (rc)
		return rc;
	/* The newest segment is always kept: it carries the position. A
	 * segment's last append is its mtime. */
	size_t keep_from = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		char name[LTXLOG_NAME_LEN];
		struct stat st;
		ltxlog_format_name(name, firsts[i]);
		if (fstatat(c->dir_fd, name, &st, 0) != 0)
			break;
		int64_t mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
		if (now_ms - mtime_ms < retention_ms)
			break;
		/* Records the backup service has not acknowledged stay, and so
		 * does the record at the HWM itself: the backup client checks
		 * the service's position against it. */
		if (backup_hwm != UINT64_MAX && firsts[i + 1] - 1 >= backup_hwm)
			break;
		if (sys_unlinkat(c->dir_fd, name, 0) != 0)
			break;
		removed++;
		keep_from = i + 1;
	}
	c->oldest_txid = n > keep_from ? firsts[keep_from] : 0;
	free(firsts);
	return removed;
}

static int check_record(int fd, const struct ltxlog_rec *rec, struct ltx_header *h, struct ltx_trailer *t)
{
	struct ltxlog_reader r;
	uint64_t off = 0;
	ltxlog_reader_init(&r, fd, rec);
	return ltx_decode_all(ltxlog_read, &r, NULL, NULL, h, t, &off);
}

/* The record headers of a segment of `size` bytes, in order, up to the
 * first torn one. *out: caller frees. 0 or ERR_NOMEM. */
static int read_records(int fd, uint64_t size, struct ltxlog_rec **out, size_t *n_out)
{
	struct ltxlog_rec *recs = NULL, rec;
	size_t nr = 0, cap = 0;
	uint64_t off = 0;
	while (ltxlog_read_rec(fd, off, size, &rec) == 1) {
		if (nr == cap) {
			cap = cap ? cap * 2 : 256;
			struct ltxlog_rec *nv = realloc(recs, cap * sizeof(*nv));
			if (nv == NULL) {
				free(recs);
				return ERR_NOMEM;
			}
			recs = nv;
		}
		recs[nr++] = rec;
		off = rec.offset + LTXLOG_HDR_SIZE + rec.len;
	}
	*out = recs;
	*n_out = nr;
	return 0;
}

int chain_recover(struct chain *c, bool *have, struct ltx_header *h, struct ltx_trailer *t,
		  uint64_t *seg_first, uint64_t *rec_off)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	int rc = chain_list_segments(c->dir_fd, &firsts, &n);
	if (rc)
		return rc;
	*have = false;
	c->oldest_txid = n > 0 ? firsts[0] : 0;
	while (n > 0 && !*have) {
		char name[LTXLOG_NAME_LEN];
		ltxlog_format_name(name, firsts[n - 1]);
		int fd = openat(c->dir_fd, name, O_RDWR | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) != 0) {
			rc = -errno;
			if (fd >= 0)
				close(fd);
			break;
		}
		struct ltxlog_rec *recs = NULL;
		size_t nr = 0;
		if ((rc = read_records(fd, (uint64_t)st.st_size, &recs, &nr)) != 0) {
			close(fd);
			break;
		}
		uint64_t off = nr > 0 ? recs[nr - 1].offset + LTXLOG_HDR_SIZE + recs[nr - 1].len : 0;
		while (nr > 0) {
			int crc = check_record(fd, &recs[nr - 1], h, t);
			if (crc == 0)
				break;
			LOG_WARN("db", "msg=\"dropping an incomplete LTX record left by a crash\" db=%s segment=%s offset=%" PRIu64
				       " err=\"%s\"", c->name, name, recs[nr - 1].offset, err_str(crc));
			off = recs[--nr].offset;
		}
		if (off < (uint64_t)st.st_size) {
			LOG_WARN("db", "msg=\"cutting a torn tail off an LTX segment\" db=%s segment=%s size=%lld end=%" PRIu64,
				 c->name, name, (long long)st.st_size, off);
			if (sys_ftruncate(fd, (off_t)off) != 0)
				rc = -errno;
		}
		if (nr > 0) {
			*have = true;
			*seg_first = firsts[n - 1];
			*rec_off = recs[nr - 1].offset;
		} else {
			sys_unlinkat(c->dir_fd, name, 0);
			n--;
		}
		free(recs);
		close(fd);
		if (rc)
			break;
	}
	if (n == 0)
		c->oldest_txid = 0;
	free(firsts);
	return rc;
}

int chain_truncate(struct chain *c, uint64_t seg_first, uint64_t rec_off)
{
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, seg_first);
	int fd = openat(c->dir_fd, name, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || sys_ftruncate(fd, (off_t)rec_off) != 0) {
		int rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	close(fd);
	if (rec_off == 0)
		sys_unlinkat(c->dir_fd, name, 0);
	return 0;
}

int chain_replace(struct chain *c, const char *tmp, int tmp_fd, uint64_t rec_end)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	chain_close_segment(c);
	int rc = chain_list_segments(c->dir_fd, &firsts, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char name[LTXLOG_NAME_LEN];
		ltxlog_format_name(name, firsts[i]);
		if (sys_unlinkat(c->dir_fd, name, 0) != 0 && errno != ENOENT)
			rc = -errno;
	}
	free(firsts);
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, 1);
	if (rc == 0 && sys_renameat(c->dir_fd, tmp, c->dir_fd, name) != 0)
		rc = -errno;
	/* The new name (and the old names' absence) must be durable before
	 * the snapshot's position is acknowledged. */
	if (rc == 0 && sys_fsync(c->dir_fd) != 0)
		rc = -errno;
	if (rc)
		return rc;
	c->log_fd = tmp_fd;
	c->first_txid = 1;
	c->end = rec_end;
	c->synced_end = 0;
	c->created_ms = clock_wall_ms();
	c->oldest_txid = 1;
	c->generation++;
	return 0;
}

/* ---- Reading ------------------------------------------------------------- */

/* The header of a record and, if post is not NULL, its post-apply
 * checksum (the first 8 bytes of the trailer). */
static int read_rec_meta(int fd, const struct ltxlog_rec *rec, struct ltx_header *h, uint64_t *post)
{
	uint8_t buf[LTX_HEADER_SIZE];
	if (rec->len < LTX_HEADER_SIZE + LTX_TRAILER_SIZE)
		return ERR_LTXLOG_TORN;
	int n = fdio_pread_full(fd, buf, sizeof(buf), (off_t)(rec->offset + LTXLOG_HDR_SIZE));
	if (n < 0)
		return n;
	if (n != (int)sizeof(buf))
		return ERR_IO_SHORT;
	int rc = ltx_header_decode(buf, h);
	if (rc)
		return rc;
	if (post) {
		uint8_t t[8];
		off_t toff = (off_t)(rec->offset + LTXLOG_HDR_SIZE + rec->len - LTX_TRAILER_SIZE);
		n = fdio_pread_full(fd, t, sizeof(t), toff);
		if (n != (int)sizeof(t))
			return n < 0 ? n : ERR_IO_SHORT;
		*post = 0;
		for (int i = 0; i < 8; i++)
			*post = *post << 8 | t[i];
	}
	return 0;
}

/* End of the committed records of segment seg_first (C2): the open
 * segment's `end`, or a closed segment's size. */
static int segment_bound(const struct chain *c, int fd, uint64_t seg_first, uint64_t *end)
{
	if (c->log_fd >= 0 && c->first_txid == seg_first) {
		*end = c->end;
		return 0;
	}
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -errno;
	*end = (uint64_t)st.st_size;
	return 0;
}

void chain_cursor_init(struct chain_cursor *cur, uint64_t next_txid)
{
	memset(cur, 0, sizeof(*cur));
	cur->fd = -1;
	cur->next_txid = next_txid;
}

void chain_cursor_close(struct chain_cursor *cur)
{
	if (cur->fd >= 0)
		close(cur->fd);
	cur->fd = -1;
}

int chain_cursor_seek(struct chain *c, struct chain_cursor *cur, uint64_t txid, uint64_t *want_post)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	int rc = chain_list_segments(c->dir_fd, &firsts, &n);
	if (rc)
		return rc;
	size_t i = n;
	while (i > 0 && firsts[i - 1] > txid)
		i--;
	if (i == 0) {
		free(firsts);
		return ERR_NEED_SNAPSHOT;
	}
	uint64_t seg = firsts[i - 1];
	free(firsts);
	chain_cursor_close(cur);
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, seg);
	int fd = openat(c->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? ERR_NEED_SNAPSHOT : -errno;
	uint64_t end = 0, off = 0;
	if ((rc = segment_bound(c, fd, seg, &end)) != 0) {
		close(fd);
		return rc;
	}
	struct ltxlog_rec rec;
	while ((rc = ltxlog_read_rec(fd, off, end, &rec)) == 1) {
		struct ltx_header h;
		uint64_t post;
		if ((rc = read_rec_meta(fd, &rec, &h, &post)) != 0)
			break;
		if (want_post == NULL && h.min_txid == txid) {
			rc = 1;
			break;
		}
		off = rec.offset + LTXLOG_HDR_SIZE + rec.len;
		if (want_post != NULL && h.max_txid == txid) {
			*want_post = post;
			rc = 1;
			break;
		}
		if (h.max_txid >= txid) {
			rc = ERR_NEED_SNAPSHOT; /* txid falls inside a record */
			break;
		}
	}
	if (rc == 1) {
		cur->fd = fd;
		cur->generation = c->generation;
		cur->seg_first = seg;
		cur->off = want_post ? off : rec.offset;
		cur->next_txid = want_post ? txid + 1 : txid;
		return 0;
	}
	close(fd);
	/* The record may start the next segment: the caller retries there. */
	return rc == 0 ? ERR_NEED_SNAPSHOT : rc;
}

int chain_cursor_next(struct chain *c, struct chain_cursor *cur, uint64_t limit, int *fd, struct ltxlog_rec *rec)
{
	int rc;
	if (cur->next_txid > limit + 1) {
		/* Records this cursor returned were taken back (a WAL commit
		 * whose sync failed): the reader's copy is no longer ours. */
		return ERR_NEED_SNAPSHOT;
	}
	if (cur->next_txid > limit)
		return 0;
	if (cur->fd >= 0 && cur->generation != c->generation)
		return ERR_NEED_SNAPSHOT; /* the chain was replaced under the cursor */
	for (int tries = 0; tries < 2; tries++) {
		if (cur->fd < 0 && (rc = chain_cursor_seek(c, cur, cur->next_txid, NULL)) != 0)
			return rc;
		uint64_t end = 0;
		if ((rc = segment_bound(c, cur->fd, cur->seg_first, &end)) != 0)
			return rc;
		rc = ltxlog_read_rec(cur->fd, cur->off, end, rec);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			/* End of this segment: the record starts the next one. */
			chain_cursor_close(cur);
			continue;
		}
		struct ltx_header h;
		if ((rc = read_rec_meta(cur->fd, rec, &h, NULL)) != 0)
			return rc;
		if (h.min_txid != cur->next_txid)
			return ERR_LTX_NOT_CONTIGUOUS; /* C1 broken on disk */
		if (h.max_txid > limit)
			return 0; /* a record that ends past the limit waits for it */
		cur->off = rec->offset + LTXLOG_HDR_SIZE + rec->len;
		cur->next_txid = h.max_txid + 1;
		*fd = cur->fd;
		return 1;
	}
	return ERR_NEED_SNAPSHOT;
}

/* ---- Disk use -------------------------------------------------------------- */

/* Every "*.ltx" file and every "*.ltxlog" segment counts (names starting
 * with '.' are temporaries or spares, not data). */
uint64_t chain_dir_bytes(int dir_fd)
{
	uint64_t bytes = 0;
	DIR *d = fdopendir(dir_fd);
	if (!d) {
		close(dir_fd);
		return 0;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		const char *dot = strrchr(e->d_name, '.');
		struct stat sb;
		if (e->d_name[0] == '.' || !dot || (strcmp(dot, ".ltx") != 0 && strcmp(dot, ".ltxlog") != 0))
			continue;
		/* Retention may remove a file between readdir and stat. */
		if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
			continue;
		bytes += (uint64_t)sb.st_size;
	}
	closedir(d);
	return bytes;
}
