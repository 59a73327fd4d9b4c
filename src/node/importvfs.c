/*
 * importvfs.c — SQLite reads of an upload as it arrives (importvfs.h).
 *
 * Only the main database is ever opened (the URI says immutable=1: no
 * journal, no WAL, no locks); every other file is refused. Reads wait in
 * importrec_wait() for the upload to reach them and then pread the upload
 * file from the page cache. Writes, truncation and deletion are refused:
 * the VFS never changes a byte.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "node/importrec.h"
#include "node/importvfs.h"

struct upfile {
	sqlite3_file base;
	struct importrec *rec;
	uint64_t size;
	uint8_t *map; /* the whole upload file (size bytes), or NULL */
};

static int up_close(sqlite3_file *f)
{
	struct upfile *u = (struct upfile *)f;
	if (u->map)
		munmap(u->map, u->size);
	u->map = NULL;
	return SQLITE_OK;
}

static int up_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
	struct upfile *u = (struct upfile *)f;
	ssize_t n = importrec_wait(u->rec, (uint64_t)off, (size_t)amt);
	if (n < 0)
		return SQLITE_IOERR_READ;
	int got = n > 0 ? fdio_pread_full(importrec_src_fd(u->rec), buf, (size_t)n, (off_t)off) : 0;
	if (got < 0)
		return SQLITE_IOERR_READ;
	if (off <= 18 && off + got >= 20) /* rollback mode, as the header check makes it */
		((uint8_t *)buf)[18 - off] = ((uint8_t *)buf)[19 - off] = 1;
	if (got < amt) {
		memset((uint8_t *)buf + got, 0, (size_t)(amt - got));
		return SQLITE_IOERR_SHORT_READ;
	}
	return SQLITE_OK;
}

static int up_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
	(void)f, (void)buf, (void)amt, (void)off;
	return SQLITE_READONLY;
}

static int up_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	(void)f, (void)size;
	return SQLITE_READONLY;
}

static int up_sync(sqlite3_file *f, int flags)
{
	(void)f, (void)flags;
	return SQLITE_OK;
}

static int up_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	struct upfile *u = (struct upfile *)f;
	uint64_t s = u->size;
	if (s == 0) {
		/* A body without a length: its size once it has ended. */
		ssize_t n = importrec_wait(u->rec, 0, SIZE_MAX);
		if (n < 0)
			return SQLITE_IOERR_FSTAT;
		s = (uint64_t)n;
	}
	*size = (sqlite3_int64)s;
	return SQLITE_OK;
}

static int up_lock(sqlite3_file *f, int level)
{
	(void)f, (void)level;
	return SQLITE_OK;
}

static int up_check_reserved(sqlite3_file *f, int *out)
{
	(void)f;
	*out = 0;
	return SQLITE_OK;
}

static int up_file_control(sqlite3_file *f, int op, void *arg)
{
	(void)f, (void)op, (void)arg;
	return SQLITE_NOTFOUND;
}

static int up_sector_size(sqlite3_file *f)
{
	(void)f;
	return 4096;
}

static int up_device_chars(sqlite3_file *f)
{
	(void)f;
	return SQLITE_IOCAP_IMMUTABLE;
}

/* Memory-mapped reads (PRAGMA mmap_size): a page straight from the map
 * once the upload holds it. Not page 1 (its bytes 18/19 are read through
 * up_read, which sets them), nor past the map. */
static int up_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
	struct upfile *u = (struct upfile *)f;
	*pp = NULL;
	if (!u->map || off < 100 || (uint64_t)off + (uint64_t)amt > u->size)
		return SQLITE_OK;
	ssize_t n = importrec_wait(u->rec, (uint64_t)off, (size_t)amt);
	if (n < 0)
		return SQLITE_IOERR_READ;
	if (n == amt)
		*pp = u->map + off;
	return SQLITE_OK;
}

static int up_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	(void)f, (void)off, (void)p;
	return SQLITE_OK;
}

static const sqlite3_io_methods up_methods = {
	.iVersion = 3,
	.xFetch = up_fetch,
	.xUnfetch = up_unfetch,
	.xClose = up_close,
	.xRead = up_read,
	.xWrite = up_write,
	.xTruncate = up_truncate,
	.xSync = up_sync,
	.xFileSize = up_file_size,
	.xLock = up_lock,
	.xUnlock = up_lock,
	.xCheckReservedLock = up_check_reserved,
	.xFileControl = up_file_control,
	.xSectorSize = up_sector_size,
	.xDeviceCharacteristics = up_device_chars,
};

static sqlite3_vfs *unix_vfs; /* for randomness, time, sleep */

static int vfs_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
	(void)vfs;
	struct upfile *u = (struct upfile *)f;
	memset(u, 0, sizeof(*u));
	const char *rec = name ? sqlite3_uri_parameter(name, "upload") : NULL;
	void *p = NULL;
	if (!(flags & SQLITE_OPEN_MAIN_DB) || !rec || sscanf(rec, "%p", &p) != 1 || !p)
		return SQLITE_CANTOPEN;
	u->rec = p;
	u->size = (uint64_t)sqlite3_uri_int64(name, "size", 0);
	if (u->size > 0) {
		/* The file grows into the map: a page is touched only once
		 * the upload holds it (up_fetch). */
		void *m = mmap(NULL, u->size, PROT_READ, MAP_SHARED, importrec_src_fd(u->rec), 0);
		u->map = m == MAP_FAILED ? NULL : m;
	}
	u->base.pMethods = &up_methods;
	if (out_flags)
		*out_flags = SQLITE_OPEN_READONLY;
	return SQLITE_OK;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	(void)vfs, (void)name, (void)sync_dir;
	return SQLITE_IOERR_DELETE;
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs, (void)name, (void)flags;
	*out = 0; /* no journal, no WAL */
	return SQLITE_OK;
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	if ((int)strlen(name) >= n)
		return SQLITE_CANTOPEN;
	strcpy(out, name);
	return SQLITE_OK;
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return unix_vfs->xRandomness(unix_vfs, n, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return unix_vfs->xSleep(unix_vfs, us);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return unix_vfs->xCurrentTime(unix_vfs, out);
}

static int vfs_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs, (void)n, (void)out;
	return 0;
}

static sqlite3_vfs up_vfs = {
	.iVersion = 1,
	.szOsFile = sizeof(struct upfile),
	.mxPathname = 4096,
	.zName = IMPORTVFS_NAME,
	.xOpen = vfs_open,
	.xDelete = vfs_delete,
	.xAccess = vfs_access,
	.xFullPathname = vfs_full_pathname,
	.xRandomness = vfs_randomness,
	.xSleep = vfs_sleep,
	.xCurrentTime = vfs_current_time,
	.xGetLastError = vfs_last_error,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int reg_rc;

static void do_register(void)
{
	unix_vfs = sqlite3_vfs_find(NULL);
	reg_rc = unix_vfs && sqlite3_vfs_register(&up_vfs, 0) == SQLITE_OK ? 0 : -EINVAL;
}

int importvfs_register(void)
{
	pthread_once(&once, do_register);
	return reg_rc;
}

char *importvfs_uri(const char *path, struct importrec *r, uint64_t size)
{
	char *u = NULL;
	/* The path is only a name here (the VFS reads r's file): any
	 * character that would end it is left out. */
	char *clean = strdup(path);
	if (!clean)
		return NULL;
	for (char *c = clean; *c; c++)
		if (*c == '?' || *c == '#' || *c == '%')
			*c = '_';
	if (asprintf(&u, "file:%s?immutable=1&upload=%p&size=%" PRIu64, clean, (void *)r, size) < 0)
		u = NULL;
	free(clean);
	return u;
}
