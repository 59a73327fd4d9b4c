/*
 * cloud_backend_local.c — the local-disk backend of cloud_backend.h.
 *
 * An object "a/b/c.ltx" is the file <root>/a/b/c.ltx. put() fsyncs the
 * temporary file, renames it into place and fsyncs the directory (and,
 * when it had to create directories, their parents), so a put that
 * returned 0 survives a crash or a power cut. Directories left empty by
 * deletes are removed best-effort.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloud/cloud_backend.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/sys.h"

struct local_backend {
	struct cloud_backend base;
	char root[PATH_MAX];
};

static int local_path(struct local_backend *lb, const char *name, char *buf, size_t size)
{
	if (name[0] == '/' || strstr(name, "..") != NULL)
		return ERR_INVAL;
	int n = snprintf(buf, size, "%s/%s", lb->root, name);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Creates every missing directory of path's parent chain, fsyncing the
 * parent of each one created. */
static int mkdirs_for(const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	struct stat st;
	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	int rc = mkdirs_for(dir);
	if (rc < 0)
		return rc;
	if (mkdir(dir, FILEIO_DIR_MODE) < 0 && errno != EEXIST)
		return -errno;
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", dir);
	*strrchr(parent, '/') = '\0';
	return fileio_sync_dir(parent[0] ? parent : "/");
}

static int local_put(struct cloud_backend *be, const char *name, const char *tmp_path)
{
	struct local_backend *lb = (struct local_backend *)be;
	char path[PATH_MAX];
	int rc = local_path(lb, name, path, sizeof(path));
	if (rc == 0)
		rc = mkdirs_for(path);
	if (rc < 0)
		goto err_unlink;
	int fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		goto err_unlink;
	}
	rc = sys_fsync(fd) < 0 ? -errno : 0;
	close(fd);
	if (rc < 0)
		goto err_unlink;
	/* A concurrent delete may remove the directory it just emptied
	 * between mkdirs_for() and the rename: create it again once. */
	for (int tries = 0; sys_renameat(AT_FDCWD, tmp_path, AT_FDCWD, path) < 0; tries++) {
		rc = -errno;
		if (rc != -ENOENT || tries > 0 || (rc = mkdirs_for(path)) < 0)
			goto err_unlink;
	}
	*strrchr(path, '/') = '\0';
	return fileio_sync_dir(path);

err_unlink:
	unlink(tmp_path);
	return rc;
}

static int local_get(struct cloud_backend *be, const char *name, int *fd)
{
	struct local_backend *lb = (struct local_backend *)be;
	char path[PATH_MAX];
	int rc = local_path(lb, name, path, sizeof(path));
	if (rc < 0)
		return rc;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

struct walk {
	struct local_backend *lb;
	const char *prefix;
	int (*fn)(void *ctx, const char *name, uint64_t size);
	void *ctx;
};

/* Visits rel (a directory relative to the root, "" for the root). */
static int walk_dir(struct walk *w, const char *rel)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s%s%s", w->lb->root, rel[0] ? "/" : "", rel) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	DIR *d = opendir(path);
	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char name[PATH_MAX];
		struct stat st;
		snprintf(name, sizeof(name), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* deleted meanwhile */
		size_t plen = strlen(w->prefix), nlen = strlen(name);
		/* Descend only where names can still start with the prefix. */
		if (strncmp(name, w->prefix, nlen < plen ? nlen : plen) != 0)
			continue;
		if (S_ISDIR(st.st_mode))
			rc = walk_dir(w, name);
		else if (S_ISREG(st.st_mode) && nlen >= plen)
			rc = w->fn(w->ctx, name, (uint64_t)st.st_size);
	}
	closedir(d);
	return rc;
}

static int local_list(struct cloud_backend *be, const char *prefix,
		      int (*fn)(void *ctx, const char *name, uint64_t size), void *ctx)
{
	struct walk w = { (struct local_backend *)be, prefix, fn, ctx };
	return walk_dir(&w, "");
}

static int local_del(struct cloud_backend *be, const char *name)
{
	struct local_backend *lb = (struct local_backend *)be;
	char path[PATH_MAX];
	int rc = local_path(lb, name, path, sizeof(path));
	if (rc < 0)
		return rc;
	if (sys_unlinkat(AT_FDCWD, path, 0) < 0 && errno != ENOENT)
		return -errno;
	/* Remove the directories this delete emptied (rmdir fails on others). */
	size_t root_len = strlen(lb->root);
	char *slash;
	while ((slash = strrchr(path, '/')) != NULL && (size_t)(slash - path) > root_len) {
		*slash = '\0';
		if (rmdir(path) < 0)
			break;
	}
	return 0;
}

static int local_read_at(struct cloud_backend *be, const char *name, uint64_t off, void *buf, size_t len,
			 size_t *n)
{
	int fd, rc = local_get(be, name, &fd);
	if (rc < 0)
		return rc;
	*n = 0;
	while (*n < len) {
		ssize_t r = pread(fd, (char *)buf + *n, len - *n, (off_t)(off + *n));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			rc = -errno;
		if (r <= 0)
			break;
		*n += (size_t)r;
	}
	close(fd);
	return rc;
}

static void local_close(struct cloud_backend *be)
{
	free(be);
}

static const struct cloud_backend_ops local_ops = {
	.put = local_put,
	.get = local_get,
	.list = local_list,
	.del = local_del,
	.close = local_close,
	.read_at = local_read_at,
	.kind = "local",
};

int cloud_backend_local_open(const char *root, struct cloud_backend **out)
{
	if (strlen(root) + 64 >= PATH_MAX)
		return -ENAMETOOLONG;
	if (mkdir(root, FILEIO_DIR_MODE) < 0 && errno != EEXIST)
		return -errno;
	struct local_backend *lb = calloc(1, sizeof(*lb));
	if (lb == NULL)
		return ERR_NOMEM;
	lb->base.ops = &local_ops;
	snprintf(lb->root, sizeof(lb->root), "%s", root);
	*out = &lb->base;
	return 0;
}
