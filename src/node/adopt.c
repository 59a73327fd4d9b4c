/*
 * adopt.c — taking over a LiteFS 0.5 data directory. The design (file
 * layouts, steps, crash points) is at the top of adopt.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/sys.h"
#include "ltx/dbfile.h"
#include "ltx/ltxlog.h"
#include "node/adopt.h"

#define STAGED_DB "adopt-db"
#define STAGED_SEGMENT "adopt.tmp"

/* A directory stream over fd's directory (fd stays open and is not moved:
 * the stream reads a duplicate, rewound because the two share an offset).
 * Caller closes with closedir(). NULL with errno set on failure. */
static DIR *open_dir_stream(int fd)
{
	int dfd = dup(fd);
	DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
	if (d == NULL) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		errno = e;
		return NULL;
	}
	rewinddir(d);
	return d;
}

/* One retained LiteFS LTX file. */
struct lfile {
	char name[48];
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t size;
};

static int cmp_lfile(const void *a, const void *b)
{
	const struct lfile *x = a, *y = b;
	return x->h.min_txid < y->h.min_txid ? -1 : x->h.min_txid > y->h.min_txid;
}

/* Decodes every <min>-<max>.ltx file in ltx_fd (checksums included), sorted by
 * min TXID. *out: caller frees with free(). 0 or a negative code (a file
 * that does not decode is logged and fails the adoption: LiteFS's own
 * files should all be whole). */
static int list_ltx(const char *db, int ltx_fd, struct lfile **out, size_t *n_out)
{
	*out = NULL;
	*n_out = 0;
	DIR *d = open_dir_stream(ltx_fd);
	if (d == NULL)
		return -errno;
	struct lfile *v = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		uint64_t lo, hi;
		if (ltx_parse_filename(de->d_name, &lo, &hi) != 0 || strlen(de->d_name) >= sizeof(v->name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			struct lfile *nv = realloc(v, cap * sizeof(*nv));
			if (nv == NULL) {
				rc = ERR_NOMEM;
				break;
			}
			v = nv;
		}
		struct lfile *f = &v[n];
		memcpy(f->name, de->d_name, strlen(de->d_name) + 1); /* length checked above */
		int fd = openat(ltx_fd, de->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		struct stat st;
		uint64_t err_off = 0;
		rc = fstat(fd, &st) != 0 ? -errno : ltx_decode_all(fdio_read, &fd, NULL, NULL, &f->h, &f->t, &err_off);
		close(fd);
		f->size = (uint64_t)st.st_size;
		if (rc == 0 && (f->h.min_txid != lo || f->h.max_txid != hi))
			rc = ERR_LTX_NOT_CONTIGUOUS;
		if (rc == 0 && f->size > LTXLOG_MAX_RECORD)
			rc = ERR_LTX_TRUNCATED;
		if (rc != 0) {
			LOG_ERROR("adopt", "msg=\"a LiteFS LTX file does not verify; not adopting this database\" db=%s file=%s "
					   "offset=%" PRIu64 " err=\"%s\"", db, de->d_name, err_off, err_str(rc));
			break;
		}
		n++;
	}
	closedir(d);
	if (rc != 0) {
		free(v);
		return rc;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_lfile);
	*out = v;
	*n_out = n;
	return 0;
}

/* Copies file src of dir_fd to dst (created FILEIO_FILE_MODE, replaced if
 * present) and fdatasyncs it. 1 when copied, 0 when src does not exist or
 * is empty (nothing to carry over), or -errno. */
static int copy_file(int dir_fd, const char *src, const char *dst)
{
	int in = openat(dir_fd, src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return errno == ENOENT ? 0 : -errno;
	struct stat st;
	if (fstat(in, &st) != 0 || st.st_size == 0) {
		int rc = st.st_size == 0 ? 0 : -errno;
		close(in);
		return rc;
	}
	int out = openat(dir_fd, dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, FILEIO_FILE_MODE);
	if (out < 0) {
		int rc = -errno;
		close(in);
		return rc;
	}
	int rc = 0;
	off_t left = st.st_size;
	while (left > 0) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0) {
			rc = ERR_IO_SHORT;
			break;
		}
		left -= n;
	}
	if (rc == 0 && sys_fsync(out) != 0)
		rc = -errno;
	close(in);
	close(out);
	return rc == 0 ? 1 : rc;
}

static int quick_check_row(void *ctx, int n, char **vals, char **cols)
{
	(void)cols;
	bool *ok = ctx;
	if (n != 1 || vals[0] == NULL || strcmp(vals[0], "ok") != 0)
		*ok = false;
	return 0;
}

/* Lets SQLite roll back a hot journal or checkpoint the WAL of the staged
 * copy, and checks its structure. EXCLUSIVE locking keeps the wal-index in
 * heap memory (see sqlite_recover() in db.c). 0, or -EIO after logging. */
static int settle_copy(const char *db, const char *path)
{
	sqlite3 *conn = NULL;
	bool ok = true;
	int rc = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(conn, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(conn, "PRAGMA quick_check", quick_check_row, &ok, NULL);
	if (rc != SQLITE_OK || !ok)
		LOG_ERROR("adopt", "msg=\"the LiteFS database does not pass SQLite's quick_check; not adopting it\" db=%s err=\"%s\"",
			  db, rc != SQLITE_OK ? (conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc)) : "quick_check found problems");
	sqlite3_close(conn);
	return rc == SQLITE_OK && ok ? 0 : -EIO;
}

/* Writes files [first, n) as the records of one segment (ltx/adopt.tmp,
 * renamed to its name once durable). 0 or a negative code. */
static int write_segment(int ltx_fd, const struct lfile *files, size_t first, size_t n)
{
	int out = openat(ltx_fd, STAGED_SEGMENT, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, FILEIO_FILE_MODE);
	if (out < 0)
		return -errno;
	int rc = 0;
	off_t off = 0;
	for (size_t i = first; rc == 0 && i < n; i++) {
		uint8_t hdr[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(hdr, (uint32_t)files[i].size);
		if ((rc = fdio_pwrite_full(out, hdr, sizeof(hdr), off)) != 0)
			break;
		off += LTXLOG_HDR_SIZE;
		int in = openat(ltx_fd, files[i].name, O_RDONLY | O_CLOEXEC);
		if (in < 0) {
			rc = -errno;
			break;
		}
		off_t in_off = 0;
		uint64_t left = files[i].size;
		while (rc == 0 && left > 0) {
			ssize_t k = copy_file_range(in, &in_off, out, &off, (size_t)left, 0);
			rc = k < 0 ? -errno : k == 0 ? ERR_IO_SHORT : 0;
			left -= k > 0 ? (uint64_t)k : 0;
		}
		close(in);
	}
	if (rc == 0 && sys_fsync(out) != 0)
		rc = -errno;
	close(out);
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, files[first].h.min_txid);
	if (rc == 0 && sys_renameat(ltx_fd, STAGED_SEGMENT, ltx_fd, name) != 0)
		rc = -errno;
	if (rc == 0 && sys_fsync(ltx_fd) != 0)
		rc = -errno;
	if (rc != 0)
		unlinkat(ltx_fd, STAGED_SEGMENT, 0);
	return rc;
}

/* Removes what an interrupted adoption left: staged copies and segments
 * (a LiteFS ltx/ directory holds no segments of its own). */
static void remove_leftovers(int dir_fd, int ltx_fd)
{
	static const char *const staged[] = { STAGED_DB, STAGED_DB "-journal", STAGED_DB "-wal", STAGED_DB "-shm" };
	for (size_t i = 0; i < sizeof(staged) / sizeof(staged[0]); i++)
		unlinkat(dir_fd, staged[i], 0);
	unlinkat(ltx_fd, STAGED_SEGMENT, 0);
	DIR *d = open_dir_stream(ltx_fd);
	if (d == NULL)
		return;
	struct dirent *de;
	uint64_t first;
	while ((de = readdir(d)) != NULL)
		if (ltxlog_parse_name(de->d_name, &first) == 0)
			unlinkat(ltx_fd, de->d_name, 0);
	closedir(d);
}

static int stage(const char *data_dir, const char *name, int dir_fd, int ltx_fd, struct adopt_info *info)
{
	struct lfile *files = NULL;
	size_t n = 0;
	int rc;

	remove_leftovers(dir_fd, ltx_fd);
	if ((rc = list_ltx(name, ltx_fd, &files, &n)) != 0)
		return rc;
	/* The newest contiguous run: older files behind a gap cannot be
	 * chained to it (LiteFS's retention removes files oldest first, so a
	 * gap is unusual) and are left with LiteFS's files. */
	size_t first = n;
	if (n > 0) {
		first = n - 1;
		while (first > 0 && files[first - 1].h.max_txid + 1 == files[first].h.min_txid &&
		       files[first - 1].t.post_apply_checksum == files[first].h.pre_apply_checksum)
			first--;
		if (first > 0)
			LOG_WARN("adopt", "msg=\"LiteFS LTX files before a gap in the history are not carried over\" db=%s "
					  "files=%zu gap_after=%016" PRIx64, name, first, files[first - 1].h.max_txid);
		info->want = (struct ltx_pos){ files[n - 1].h.max_txid, files[n - 1].t.post_apply_checksum };
		info->n_files = n - first;
	}

	char path[4096];
	if ((rc = copy_file(dir_fd, "database", STAGED_DB)) <= 0) {
		if (rc == 0)
			LOG_ERROR("adopt", "msg=\"the LiteFS database file is empty; not adopting it\" db=%s", name);
		goto out;
	}
	int have_journal = copy_file(dir_fd, "journal", STAGED_DB "-journal");
	int have_wal = have_journal < 0 ? have_journal : copy_file(dir_fd, "wal", STAGED_DB "-wal");
	if ((rc = have_wal < 0 ? have_wal : 0) != 0)
		goto out;
	snprintf(path, sizeof(path), "%s/dbs/%s/%s", data_dir, name, STAGED_DB);
	if ((rc = settle_copy(name, path)) != 0)
		goto out;
	/* Checkpointed and closed: what SQLite left beside the copy is stale. */
	unlinkat(dir_fd, STAGED_DB "-wal", 0);
	unlinkat(dir_fd, STAGED_DB "-shm", 0);
	unlinkat(dir_fd, STAGED_DB "-journal", 0);

	int fd = openat(dir_fd, STAGED_DB, O_RDONLY | O_CLOEXEC);
	uint32_t page_size = 0, n_pages = 0;
	uint64_t chk = 0;
	rc = fd < 0 ? -errno : dbfile_read_page_size(fd, &page_size);
	if (rc == 0)
		rc = dbfile_checksum(fd, page_size, &chk, &n_pages);
	if (fd >= 0)
		close(fd);
	if (rc != 0) {
		LOG_ERROR("adopt", "msg=\"cannot read the LiteFS database; not adopting it\" db=%s err=\"%s\"", name, err_str(rc));
		goto out;
	}
	info->verified = n > 0 && chk == info->want.checksum && n_pages == files[n - 1].h.commit;
	if (n > 0 && !info->verified)
		LOG_WARN("adopt", "msg=\"the LiteFS database is not at the state of its last LTX file (LiteFS can lose the "
				  "LTX of the last WAL transaction in a crash); its content is kept and recorded as the "
				  "next transaction\" db=%s txid=%016" PRIx64 " ltx_checksum=%016" PRIx64
				  " db_checksum=%016" PRIx64, name, info->want.txid, info->want.checksum, chk);
	if (n == 0)
		LOG_WARN("adopt", "msg=\"the LiteFS database has no LTX file to take its position from; it starts a new "
				  "history at TXID 1 (a backup of it needs a new snapshot)\" db=%s", name);

	if (n > 0 && (rc = write_segment(ltx_fd, files, first, n)) != 0) {
		LOG_ERROR("adopt", "msg=\"cannot write the adopted LTX history\" db=%s err=\"%s\"", name, err_str(rc));
		goto out;
	}
	if (sys_renameat(dir_fd, STAGED_DB, dir_fd, "db") != 0 || sys_fsync(dir_fd) != 0) {
		rc = -errno;
		LOG_ERROR("adopt", "msg=\"cannot install the adopted database\" db=%s err=\"%s\"", name, strerror(errno));
		goto out;
	}
	info->staged = true;
out:
	if (rc != 0)
		remove_leftovers(dir_fd, ltx_fd);
	free(files);
	return rc;
}

int adopt_prepare(const char *data_dir, int dbs_fd, const char *name, struct adopt_info *info)
{
	*info = (struct adopt_info){ 0 };
	int dir_fd = openat(dbs_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return errno == ENOTDIR || errno == ENOENT ? 0 : -errno;
	if (faccessat(dir_fd, "database", F_OK, 0) != 0) {
		close(dir_fd);
		return 0;
	}
	info->litefs = true;
	int rc = 0;
	/* Adopted before (step 3 done); step 4 is adopt_finish()'s. */
	if (faccessat(dir_fd, "db", F_OK, 0) == 0) {
		close(dir_fd);
		return 0;
	}
	LOG_INFO("adopt", "msg=\"found a LiteFS 0.5 database; adopting it\" db=%s", name);
	if (mkdirat(dir_fd, "ltx", FILEIO_DIR_MODE) != 0 && errno != EEXIST)
		rc = -errno;
	int ltx_fd = rc ? -1 : openat(dir_fd, "ltx", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rc == 0 && ltx_fd < 0)
		rc = -errno;
	if (rc == 0)
		rc = stage(data_dir, name, dir_fd, ltx_fd, info);
	if (rc != 0)
		LOG_ERROR("adopt", "msg=\"cannot adopt the LiteFS database; its files are untouched (start LiteFS 0.5 on "
				   "this directory to repair it, or load the database with litefs import)\" db=%s err=\"%s\"",
			  name, err_str(rc));
	if (ltx_fd >= 0)
		close(ltx_fd);
	close(dir_fd);
	return rc;
}

/* Moves name from from_fd to to_fd; a missing source is fine. */
static int move(int from_fd, const char *name, int to_fd)
{
	if (sys_renameat(from_fd, name, to_fd, name) == 0 || errno == ENOENT)
		return 0;
	return -errno;
}

static int open_subdir(int parent_fd, const char *name)
{
	if (mkdirat(parent_fd, name, FILEIO_DIR_MODE) != 0 && errno != EEXIST)
		return -errno;
	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

void adopt_finish(const char *data_dir, int dbs_fd, const char *name, const struct adopt_info *info,
		  struct ltx_pos pos)
{
	if (!info->litefs)
		return;
	if (info->staged)
		LOG_INFO("adopt", "msg=\"adopted a LiteFS 0.5 database\" db=%s litefs_txid=%016" PRIx64
				  " litefs_checksum=%016" PRIx64 " txid=%016" PRIx64 " checksum=%016" PRIx64
				  " ltx_files=%zu verified=%s", name, info->want.txid, info->want.checksum, pos.txid,
			 pos.checksum, info->n_files, info->verified ? "true" : "false");
	char top[4096];
	snprintf(top, sizeof(top), "%s/%s", data_dir, ADOPT_DIR);
	int dir_fd = openat(dbs_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int top_fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top_fd < 0 && errno == ENOENT && mkdir(top, FILEIO_DIR_MODE) == 0)
		top_fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int to_fd = top_fd < 0 ? -1 : open_subdir(top_fd, name);
	int ltx_fd = dir_fd < 0 ? -1 : openat(dir_fd, "ltx", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int to_ltx_fd = to_fd < 0 ? -1 : open_subdir(to_fd, "ltx");
	int rc = dir_fd < 0 || top_fd < 0 || to_fd < 0 || to_ltx_fd < 0 ? -errno : 0;
	if (rc == 0 && ltx_fd >= 0) {
		DIR *d = open_dir_stream(ltx_fd);
		struct dirent *de;
		uint64_t lo, hi;
		while (d != NULL && rc == 0 && (de = readdir(d)) != NULL)
			if (ltx_parse_filename(de->d_name, &lo, &hi) == 0)
				rc = move(ltx_fd, de->d_name, to_ltx_fd);
		if (d != NULL)
			closedir(d);
	}
	/* "database" last: its presence is what marks LiteFS files as left. */
	static const char *const files[] = { "journal", "wal", "shm", "database" };
	for (size_t i = 0; rc == 0 && i < sizeof(files) / sizeof(files[0]); i++)
		rc = move(dir_fd, files[i], to_fd);
	if (rc == 0 && (sys_fsync(to_ltx_fd) != 0 || sys_fsync(to_fd) != 0 || sys_fsync(dir_fd) != 0 ||
			(ltx_fd >= 0 && sys_fsync(ltx_fd) != 0)))
		rc = -errno;
	if (rc == 0)
		LOG_INFO("adopt", "msg=\"moved the adopted LiteFS files out of the way; delete them when you no longer "
				  "need them\" db=%s path=%s/%s", name, top, name);
	else
		LOG_WARN("adopt", "msg=\"cannot move the adopted LiteFS files; trying again at the next start\" db=%s "
				  "err=\"%s\"", name, strerror(-rc));
	int fds[] = { dir_fd, top_fd, to_fd, ltx_fd, to_ltx_fd };
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
}
