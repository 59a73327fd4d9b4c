/*
 * chkvfs.c — the read-only windowed VFS used to check imports (chkvfs.h).
 *
 * A file opened through it keeps n_slots windows of CHKVFS_WINDOW bytes,
 * direct-mapped (window w lives in slot w % n_slots). A page read that
 * misses reads its whole window with one pread; the next pages of the
 * same window are then copies from memory. quick_check walks each b-tree
 * depth first and then scans each table's rows: both go through leaves
 * that were mostly written in file order, so a window serves many reads
 * (1.4 GB of bench/bigdb.py: 680,000 page reads, 21,000 misses with 128
 * slots of 128 KiB). The buffers are reused, so the memory is touched
 * once; at most CHKVFS_MAX_SLOTS windows (16 MiB) per open file, fewer
 * for a smaller file.
 *
 * Reads past the end zero-fill and return SQLITE_IOERR_SHORT_READ, as
 * SQLite's unix VFS does. There is no locking: the file is private to the
 * import and opened with immutable=1, and it must not change while open.
 *
 * A file still being uploaded (chkvfs_follow) has the size the body will
 * have, and a window is read only once the feed says its bytes are in the
 * file: the check walks the b-trees as the upload arrives, instead of
 * starting after it. Page 1's file format bytes (offsets 18 and 19) are
 * read as 1 when they say 2 (WAL): the import rewrites them so (http.c),
 * perhaps after the check read page 1, and a check with immutable=1
 * cannot open a WAL-mode file anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/chkvfs.h"
#include "node/upfeed.h"

#define CHKVFS_NAME "litefs-check"
#define CHKVFS_WINDOW (128 * 1024) /* a multiple of every SQLite page size */
#define CHKVFS_MAX_SLOTS 128

struct chkvfs_file {
	sqlite3_file base; /* first: SQLite's view of the file */
	int fd;
	sqlite3_int64 size;
	uint8_t *buf;       /* n_slots windows */
	int64_t *window;    /* the window each slot holds, -1 if none */
	int n_slots;
	struct upfeed *feed; /* borrowed; NULL: the file is complete */
};

/* chkvfs_follow()'s, for the next open on this thread. */
static _Thread_local struct upfeed *follow_feed;
static _Thread_local sqlite3_int64 follow_size;

static sqlite3_vfs *chkvfs_dflt; /* the default VFS, set once before registration */

static int chkvfs_close(sqlite3_file *f)
{
	struct chkvfs_file *c = (struct chkvfs_file *)f;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	free(c->window);
	c->buf = NULL;
	c->window = NULL;
	return SQLITE_OK;
}

/* Loads window w into its slot unless it is there. */
static int chkvfs_load(struct chkvfs_file *c, int64_t w, uint8_t **out)
{
	int s = (int)(w % c->n_slots);
	uint8_t *p = c->buf + (size_t)s * CHKVFS_WINDOW;
	if (c->window[s] != w) {
		int64_t start = w * CHKVFS_WINDOW;
		if (c->feed && start < c->size) {
			size_t want = c->size - start < CHKVFS_WINDOW ? (size_t)(c->size - start) : CHKVFS_WINDOW;
			if (upfeed_wait(c->feed, (uint64_t)start, want) < want) {
				c->window[s] = -1;
				return SQLITE_IOERR_READ; /* the upload failed or ended short */
			}
		}
		size_t got = 0;
		while (got < CHKVFS_WINDOW) {
			ssize_t n = pread(c->fd, p + got, CHKVFS_WINDOW - got, (off_t)(w * CHKVFS_WINDOW + (int64_t)got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				c->window[s] = -1;
				return SQLITE_IOERR_READ;
			}
			if (n == 0)
				break;
			got += (size_t)n;
		}
		memset(p + got, 0, CHKVFS_WINDOW - got);
		if (w == 0 && got >= 20) {
			if (p[18] == 2)
				p[18] = 1;
			if (p[19] == 2)
				p[19] = 1;
		}
		c->window[s] = w;
	}
	*out = p;
	return SQLITE_OK;
}

static int chkvfs_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
	struct chkvfs_file *c = (struct chkvfs_file *)f;
	uint8_t *dst = out;
	sqlite3_int64 end = off + amt;
	while (off < end) {
		uint8_t *win;
		int rc = chkvfs_load(c, off / CHKVFS_WINDOW, &win);
		if (rc != SQLITE_OK)
			return rc;
		size_t in = (size_t)(off % CHKVFS_WINDOW);
		size_t k = CHKVFS_WINDOW - in;
		if ((sqlite3_int64)k > end - off)
			k = (size_t)(end - off);
		memcpy(dst, win + in, k);
		dst += k;
		off += (sqlite3_int64)k;
	}
	return end > c->size ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

static int chkvfs_write(sqlite3_file *f, const void *p, int amt, sqlite3_int64 off)
{
	(void)f, (void)p, (void)amt, (void)off;
	return SQLITE_READONLY;
}

static int chkvfs_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	(void)f, (void)size;
	return SQLITE_READONLY;
}

static int chkvfs_sync(sqlite3_file *f, int flags)
{
	(void)f, (void)flags;
	return SQLITE_OK;
}

static int chkvfs_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	*size = ((struct chkvfs_file *)f)->size;
	return SQLITE_OK;
}

static int chkvfs_lock(sqlite3_file *f, int level)
{
	(void)f, (void)level;
	return SQLITE_OK;
}

static int chkvfs_check_reserved(sqlite3_file *f, int *out)
{
	(void)f;
	*out = 0;
	return SQLITE_OK;
}

static int chkvfs_file_control(sqlite3_file *f, int op, void *arg)
{
	(void)f, (void)op, (void)arg;
	return SQLITE_NOTFOUND;
}

static int chkvfs_sector_size(sqlite3_file *f)
{
	(void)f;
	return 4096;
}

static int chkvfs_device_characteristics(sqlite3_file *f)
{
	(void)f;
	return SQLITE_IOCAP_IMMUTABLE;
}

/* Version 1: no xShmMap (no WAL) and no xFetch (no memory map). */
static const sqlite3_io_methods chkvfs_io = {
	.iVersion = 1,
	.xClose = chkvfs_close,
	.xRead = chkvfs_read,
	.xWrite = chkvfs_write,
	.xTruncate = chkvfs_truncate,
	.xSync = chkvfs_sync,
	.xFileSize = chkvfs_file_size,
	.xLock = chkvfs_lock,
	.xUnlock = chkvfs_lock,
	.xCheckReservedLock = chkvfs_check_reserved,
	.xFileControl = chkvfs_file_control,
	.xSectorSize = chkvfs_sector_size,
	.xDeviceCharacteristics = chkvfs_device_characteristics,
};

static int chkvfs_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
	(void)vfs;
	if (!name || !(flags & SQLITE_OPEN_MAIN_DB))
		return chkvfs_dflt->xOpen(chkvfs_dflt, name, f, flags, out_flags);
	struct chkvfs_file *c = (struct chkvfs_file *)f;
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (flags & (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
		return SQLITE_CANTOPEN;
	struct stat st;
	c->feed = follow_feed;
	follow_feed = NULL;
	c->fd = open(name, O_RDONLY | O_CLOEXEC);
	if (c->fd < 0 || fstat(c->fd, &st) != 0) {
		chkvfs_close(f);
		return SQLITE_CANTOPEN;
	}
	c->size = c->feed ? follow_size : st.st_size;
	int64_t n_windows = (c->size + CHKVFS_WINDOW - 1) / CHKVFS_WINDOW;
	c->n_slots = n_windows < 1 ? 1 : n_windows > CHKVFS_MAX_SLOTS ? CHKVFS_MAX_SLOTS : (int)n_windows;
	c->buf = malloc((size_t)c->n_slots * CHKVFS_WINDOW);
	c->window = malloc((size_t)c->n_slots * sizeof(*c->window));
	if (!c->buf || !c->window) {
		chkvfs_close(f);
		return SQLITE_NOMEM;
	}
	for (int i = 0; i < c->n_slots; i++)
		c->window[i] = -1;
	c->base.pMethods = &chkvfs_io;
	if (out_flags)
		*out_flags = SQLITE_OPEN_READONLY;
	return SQLITE_OK;
}

/* Everything but opening the main database file is the default VFS's. */
static int chkvfs_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
	(void)v;
	return chkvfs_dflt->xDelete(chkvfs_dflt, name, sync_dir);
}

static int chkvfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
	(void)v;
	return chkvfs_dflt->xAccess(chkvfs_dflt, name, flags, out);
}

static int chkvfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
	(void)v;
	return chkvfs_dflt->xFullPathname(chkvfs_dflt, name, n, out);
}

static int chkvfs_randomness(sqlite3_vfs *v, int n, char *out)
{
	(void)v;
	return chkvfs_dflt->xRandomness(chkvfs_dflt, n, out);
}

static int chkvfs_sleep(sqlite3_vfs *v, int us)
{
	(void)v;
	return chkvfs_dflt->xSleep(chkvfs_dflt, us);
}

static int chkvfs_current_time(sqlite3_vfs *v, double *out)
{
	(void)v;
	return chkvfs_dflt->xCurrentTime(chkvfs_dflt, out);
}

static int chkvfs_last_error(sqlite3_vfs *v, int n, char *out)
{
	(void)v;
	return chkvfs_dflt->xGetLastError(chkvfs_dflt, n, out);
}

static sqlite3_vfs chkvfs_vfs = {
	.iVersion = 1,
	.zName = CHKVFS_NAME,
	.xOpen = chkvfs_open,
	.xDelete = chkvfs_delete,
	.xAccess = chkvfs_access,
	.xFullPathname = chkvfs_full_pathname,
	.xRandomness = chkvfs_randomness,
	.xSleep = chkvfs_sleep,
	.xCurrentTime = chkvfs_current_time,
	.xGetLastError = chkvfs_last_error,
};

static pthread_once_t chkvfs_once = PTHREAD_ONCE_INIT;
static int chkvfs_rc = SQLITE_ERROR;

static void chkvfs_register(void)
{
	chkvfs_dflt = sqlite3_vfs_find(NULL);
	if (!chkvfs_dflt)
		return;
	int sz = (int)sizeof(struct chkvfs_file);
	chkvfs_vfs.szOsFile = chkvfs_dflt->szOsFile > sz ? chkvfs_dflt->szOsFile : sz;
	chkvfs_vfs.mxPathname = chkvfs_dflt->mxPathname;
	chkvfs_rc = sqlite3_vfs_register(&chkvfs_vfs, 0);
}

void chkvfs_follow(struct upfeed *feed, sqlite3_int64 size)
{
	follow_feed = feed;
	follow_size = size;
}

const char *chkvfs_name(void)
{
	pthread_once(&chkvfs_once, chkvfs_register);
	return chkvfs_rc == SQLITE_OK ? CHKVFS_NAME : NULL;
}
