/*
 * fileio.c — replace-by-rename and scratch files (see fileio.h).
 *
 * The replace temp file is created with open(O_CREAT | O_EXCL, mode) under
 * a random name rather than mkostemp(): the kernel then applies the umask
 * to mode, which a multi-threaded process cannot read safely itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/sys.h"

/* Splits path into its directory ("." when there is no slash) and base. */
static int split_path(const char *path, char *dir, size_t dir_size, const char **base)
{
	const char *slash = strrchr(path, '/');
	*base = slash ? slash + 1 : path;
	int n = slash == path ? snprintf(dir, dir_size, "/")
	      : slash	      ? snprintf(dir, dir_size, "%.*s", (int)(slash - path), path)
			      : snprintf(dir, dir_size, ".");
	return n < 0 || (size_t)n >= dir_size ? -ENAMETOOLONG : 0;
}

int fileio_private_path(const char *path, bool *tightened)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISLNK(st.st_mode) || (st.st_mode & 077) == 0)
		return 0;
	if (chmod(path, st.st_mode & 07700) != 0)
		return -errno;
	*tightened = true;
	return 0;
}

int fileio_private_dir(const char *dir, bool *tightened)
{
	if (mkdir(dir, FILEIO_DIR_MODE) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	struct stat st;
	if (stat(dir, &st) != 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return fileio_private_path(dir, tightened);
}

int fileio_private_file(const char *path, bool *tightened)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, FILEIO_FILE_MODE);
	if (fd < 0)
		return -errno;
	close(fd);
	return fileio_private_path(path, tightened);
}

int fileio_private_sqlite(const char *path, bool *tightened)
{
	static const char *const suffix[] = { "-wal", "-shm", "-journal" };
	char side[PATH_MAX];
	int rc = fileio_private_file(path, tightened);
	for (size_t i = 0; rc == 0 && i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		if (snprintf(side, sizeof(side), "%s%s", path, suffix[i]) >= (int)sizeof(side))
			return -ENAMETOOLONG;
		rc = fileio_private_path(side, tightened);
	}
	return rc;
}

int fileio_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = sys_fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}

int fileio_replace_open(struct fileio_replace *r, const char *path, mode_t mode)
{
	static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
	r->fd = -1;
	r->off = 0;
	r->err = 0;
	r->tmp[0] = '\0';
	if ((size_t)snprintf(r->path, sizeof(r->path), "%s", path) >= sizeof(r->path))
		return -ENAMETOOLONG;
	/* "dir/.base.tmp-XXXXXX": hidden, and in the target's directory. */
	int n = snprintf(r->tmp, sizeof(r->tmp), "%.*s.%s.tmp-XXXXXX", (int)(base - path), path, base);
	if (n < 0 || (size_t)n >= sizeof(r->tmp)) {
		r->tmp[0] = '\0';
		return -ENAMETOOLONG;
	}
	for (int tries = 0; tries < 100; tries++) {
		unsigned char rnd[6];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return -EIO;
		for (int i = 0; i < 6; i++)
			r->tmp[n - 6 + i] = digits[rnd[i] % (sizeof(digits) - 1)];
		r->fd = open(r->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (r->fd >= 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	int rc = -errno;
	r->tmp[0] = '\0';
	return rc;
}

int fileio_replace_write(void *ctx, const void *buf, size_t len)
{
	struct fileio_replace *r = ctx;
	if (r->err)
		return r->err;
	int rc = sys_pwrite_all(r->fd, buf, len, r->off);
	if (rc != 0)
		return r->err = rc;
	r->off += (off_t)len;
	return 0;
}

void fileio_replace_abort(struct fileio_replace *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	if (r->tmp[0])
		unlink(r->tmp);
	r->tmp[0] = '\0';
}

int fileio_replace_commit(struct fileio_replace *r)
{
	int rc = r->err;
	if (rc == 0 && sys_fsync(r->fd) != 0)
		rc = -errno;
	if (rc == 0) {
		rc = close(r->fd) == 0 ? 0 : -errno;
		r->fd = -1;
	}
	if (rc == 0 && sys_renameat(AT_FDCWD, r->tmp, AT_FDCWD, r->path) != 0)
		rc = -errno;
	if (rc != 0) {
		fileio_replace_abort(r);
		return rc;
	}
	r->tmp[0] = '\0';
	char dir[PATH_MAX];
	const char *base;
	rc = split_path(r->path, dir, sizeof(dir), &base);
	return rc == 0 ? fileio_sync_dir(dir) : rc;
}

int fileio_replace_file(const char *path, const void *buf, size_t len, mode_t mode)
{
	struct fileio_replace r;
	int rc = fileio_replace_open(&r, path, mode);
	if (rc != 0)
		return rc;
	if (fileio_replace_write(&r, buf, len) != 0) {
		rc = r.err;
		fileio_replace_abort(&r);
		return rc;
	}
	return fileio_replace_commit(&r);
}

int fileio_spool_open(const char *dir)
{
	char path[PATH_MAX];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, FILEIO_FILE_MODE);
	if (fd >= 0)
		return fd;
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return -errno;
	if (snprintf(path, sizeof(path), "%s/.litefs-spool-XXXXXX", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (unlink(path) != 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int fileio_tmp_create(const char *dir, const char *prefix, char *path, size_t size)
{
	int n = snprintf(path, size, "%s/%sXXXXXX", dir, prefix);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	int fd = mkostemp(path, O_CLOEXEC);
	return fd >= 0 ? fd : -errno;
}
