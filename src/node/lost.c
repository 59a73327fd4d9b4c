/*
 * lost.c — see lost.h for the layout and the contract.
 *
 * An event is written into a temporary directory and renamed into place
 * only once every file and info.json are durable, so a crash leaves either
 * no event or a complete one (plus, at worst, a .tmp-* directory that says
 * by its name that it is incomplete). The rename uses RENAME_NOREPLACE:
 * rename(2) would silently replace an empty directory of the same name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/sys.h"
#include "ltx/ltxlog.h"
#include "node/lost.h"
#include "proto/dbname.h"

#define LOST_MAX_SUFFIX 1000

struct lost_event {
	char db[256];
	char db_dir[PATH_MAX];   /* <data.dir>/lost/<db> */
	char tmp[PATH_MAX];      /* the temporary event directory */
	char stamp[32];          /* 20261126T160915.123Z */
	int64_t time_ms;
	size_t n;
	struct ltx_pos base;     /* what the first file applies to */
	struct ltx_pos last;     /* the position after the last file */
};

/* mkdir 0700 that accepts an existing directory; fsyncs the parent when
 * the directory is new, so that its name survives a crash. */
static int mkdir_durable(const char *parent, const char *path)
{
	if (mkdir(path, 0700) == 0)
		return fileio_sync_dir(parent);
	if (errno != EEXIST)
		return -errno;
	struct stat st;
	if (stat(path, &st) != 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static void format_stamp(char *buf, size_t size, int64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	char head[24];
	strftime(head, sizeof(head), "%Y%m%dT%H%M%S", &tm);
	snprintf(buf, size, "%s.%03dZ", head, (int)(ms % 1000));
}

int lost_begin(const char *data_dir, const char *db, struct lost_event **out)
{
	*out = NULL;
	if (!dbname_valid(db) || strlen(db) >= sizeof(((struct lost_event *)0)->db))
		return ERR_INVAL;
	struct lost_event *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return ERR_NOMEM;
	snprintf(ev->db, sizeof(ev->db), "%s", db);
	char top[PATH_MAX];
	int rc = 0;
	if (snprintf(top, sizeof(top), "%s/%s", data_dir, LOST_DIR) >= (int)sizeof(top) ||
	    snprintf(ev->db_dir, sizeof(ev->db_dir), "%s/%s", top, db) >= (int)sizeof(ev->db_dir))
		rc = -ENAMETOOLONG;
	if (rc == 0)
		rc = mkdir_durable(data_dir, top);
	if (rc == 0)
		rc = mkdir_durable(top, ev->db_dir);
	ev->time_ms = clock_wall_ms();
	format_stamp(ev->stamp, sizeof(ev->stamp), ev->time_ms);
	if (rc == 0 && snprintf(ev->tmp, sizeof(ev->tmp), "%s/.tmp-%s-XXXXXX", ev->db_dir, ev->stamp) >=
			       (int)sizeof(ev->tmp))
		rc = -ENAMETOOLONG;
	if (rc == 0 && !mkdtemp(ev->tmp)) /* mode 0700 */
		rc = -errno;
	if (rc != 0) {
		free(ev);
		return rc;
	}
	*out = ev;
	return 0;
}

size_t lost_count(const struct lost_event *ev)
{
	return ev->n;
}

struct ltx_pos lost_base(const struct lost_event *ev)
{
	return ev->base;
}

/* Copies [off, off+len) of fd to a new file path (0600) and fsyncs it. */
static int copy_out(int fd, uint64_t off, uint32_t len, const char *path)
{
	int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	uint8_t buf[65536];
	int rc = 0;
	for (uint32_t done = 0; rc == 0 && done < len;) {
		size_t k = len - done < sizeof(buf) ? len - done : sizeof(buf);
		int n = fdio_pread_full(fd, buf, k, (off_t)(off + done));
		if (n < 0)
			rc = n;
		else if ((size_t)n != k)
			rc = ERR_IO_SHORT;
		else
			rc = sys_pwrite_all(out, buf, k, (off_t)done);
		done += (uint32_t)k;
	}
	if (rc == 0 && sys_fsync(out) != 0)
		rc = -errno;
	close(out);
	if (rc != 0)
		unlink(path);
	return rc;
}

int lost_add(struct lost_event *ev, int fd, uint64_t off, uint32_t len)
{
	struct ltx_header h;
	uint64_t post;
	int rc = ltxlog_read_ends(fd, off, len, &h, &post);
	if (rc != 0)
		return rc;
	if (ev->n > 0 && (h.min_txid != ev->last.txid + 1 || h.pre_apply_checksum != ev->last.checksum))
		return ERR_LTX_NOT_CONTIGUOUS;
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%016" PRIx64 "-%016" PRIx64 ".ltx", ev->tmp, h.min_txid, h.max_txid) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	if ((rc = copy_out(fd, off, len, path)) != 0)
		return rc;
	if (ev->n == 0)
		ev->base = (struct ltx_pos){ h.min_txid - 1, h.pre_apply_checksum };
	ev->last = (struct ltx_pos){ h.max_txid, post };
	ev->n++;
	return 0;
}

static json_t *jpos(struct ltx_pos p)
{
	char t[17], c[17];
	snprintf(t, sizeof(t), "%016" PRIx64, p.txid);
	snprintf(c, sizeof(c), "%016" PRIx64, p.checksum);
	return json_pack("{s:s, s:s}", "txid", t, "checksum", c);
}

static int write_info(struct lost_event *ev, const char *reason, const struct ltx_pos *replaced_by)
{
	char when[40], first[17], last[17];
	ltx_format_time(when, sizeof(when), ev->time_ms);
	snprintf(first, sizeof(first), "%016" PRIx64, ev->base.txid + 1);
	snprintf(last, sizeof(last), "%016" PRIx64, ev->last.txid);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:o}", "db", ev->db, "reason", reason, "time", when,
			      "first_txid", first, "last_txid", last, "files", (json_int_t)ev->n, "base",
			      jpos(ev->base));
	if (o && replaced_by)
		json_object_set_new(o, "replaced_by", jpos(*replaced_by));
	char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (!text)
		return ERR_NOMEM;
	char path[PATH_MAX];
	int rc = 0;
	if (snprintf(path, sizeof(path), "%s/info.json", ev->tmp) >= (int)sizeof(path))
		rc = -ENAMETOOLONG;
	int fd = rc == 0 ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
	if (rc == 0 && fd < 0)
		rc = -errno;
	size_t len = strlen(text);
	if (rc == 0)
		rc = sys_pwrite_all(fd, text, len, 0);
	if (rc == 0)
		rc = sys_pwrite_all(fd, "\n", 1, (off_t)len);
	if (rc == 0 && sys_fsync(fd) != 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(text);
	return rc;
}

/* Renames the temporary directory to its final name, never over another
 * event. */
static int rename_final(struct lost_event *ev, char *path, size_t path_len)
{
	char final[PATH_MAX];
	for (int k = 1; k <= LOST_MAX_SUFFIX; k++) {
		char suffix[16] = "";
		if (k > 1)
			snprintf(suffix, sizeof(suffix), "-%d", k);
		if (snprintf(final, sizeof(final), "%s/%s-%016" PRIx64 "-%016" PRIx64 "%s", ev->db_dir, ev->stamp,
			     ev->base.txid + 1, ev->last.txid, suffix) >= (int)sizeof(final))
			return -ENAMETOOLONG;
		if (renameat2(AT_FDCWD, ev->tmp, AT_FDCWD, final, RENAME_NOREPLACE) == 0) {
			if (path)
				snprintf(path, path_len, "%s", final);
			return 0;
		}
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/* Removes the temporary directory and everything in it (only files). */
static void remove_tmp(struct lost_event *ev)
{
	DIR *d = opendir(ev->tmp);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(ev->tmp);
}

int lost_commit(struct lost_event *ev, const char *reason, const struct ltx_pos *replaced_by, char *path,
		size_t path_len)
{
	if (path && path_len)
		path[0] = '\0';
	int rc = ev->n == 0 ? ERR_INVAL : write_info(ev, reason, replaced_by);
	if (rc == 0)
		rc = fileio_sync_dir(ev->tmp);
	if (rc == 0)
		rc = rename_final(ev, path, path_len);
	if (rc != 0) {
		lost_abort(ev);
		return rc;
	}
	rc = fileio_sync_dir(ev->db_dir);
	free(ev);
	return rc;
}

void lost_abort(struct lost_event *ev)
{
	if (!ev)
		return;
	remove_tmp(ev);
	free(ev);
}
