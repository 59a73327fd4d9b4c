/*
 * cloud_authsync.c — the token store's copy in the bucket
 * (cloud_authsync.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "cloud/cloud_authsync.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "ltx/crc64.h"

struct cloud_authsync {
	struct cloud_auth *auth;
	struct cloud_backend *be;
	char data_dir[PATH_MAX];
	int first_err; /* atomic */
	/* CRC-64 of the last copy this process wrote to or took from the
	 * bucket (guarded by the auth.sync flock; 0: none yet). */
	uint64_t last_crc;
};

/* CRC-64 of the file at path (0 if it cannot be read). */
static uint64_t file_crc(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[65536];
	uint64_t crc = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		crc = crc64_update(crc, buf, (size_t)n);
	close(fd);
	return n < 0 ? 0 : crc;
}

/* Takes the auth.sync lock: the fd, or -errno. */
static int sync_lock(const char *data_dir)
{
	char lock[PATH_MAX];
	snprintf(lock, sizeof(lock), "%s/auth.sync", data_dir);
	int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0)
		return -errno;
	if (flock(lfd, LOCK_EX) < 0) {
		int rc = -errno;
		close(lfd);
		return rc;
	}
	return lfd;
}

/* Copies the store to the bucket under the auth.sync lock; *crc gets
 * the copy's CRC-64 when it was stored. */
static int push(struct cloud_auth *a, struct cloud_backend *be, const char *data_dir, uint64_t *crc)
{
	char tmp[PATH_MAX];
	int lfd = sync_lock(data_dir);
	int rc = lfd < 0 ? lfd : 0;
	if (rc == 0) {
		snprintf(tmp, sizeof(tmp), "%s/auth.sync.%ld.tmp", data_dir, (long)getpid());
		unlink(tmp);
		rc = cloud_auth_copy_to(a, tmp);
		uint64_t c = rc == 0 ? file_crc(tmp) : 0;
		if (rc == 0)
			rc = be->ops->put(be, CLOUD_AUTHSYNC_OBJECT, tmp); /* consumes tmp */
		else
			unlink(tmp);
		if (rc == 0 && crc)
			*crc = c;
		close(lfd);
	}
	if (rc < 0)
		LOG_ERROR("cloud", "msg=\"cannot copy the token store to the bucket\" err=\"%s\"", err_str(rc));
	return rc;
}

int cloud_authsync_push(struct cloud_auth *a, struct cloud_backend *be, const char *data_dir)
{
	return push(a, be, data_dir, NULL);
}

int cloud_authsync_pull(struct cloud_backend *be, const char *data_dir, bool replace)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/auth.db", data_dir);
	if (!replace && access(path, F_OK) == 0)
		return 0;
	bool tightened = false;
	int rc = fileio_private_dir(data_dir, &tightened);
	int fd = -1;
	if (rc == 0)
		rc = be->ops->get(be, CLOUD_AUTHSYNC_OBJECT, &fd);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	struct fileio_replace r;
	rc = fileio_replace_open(&r, path, 0600);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	char buf[65536];
	ssize_t n;
	while (rc == 0 && (n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		rc = n < 0 ? -errno : fileio_replace_write(&r, buf, (size_t)n);
	}
	close(fd);
	if (rc == 0 && replace) {
		/* A log of the old file must not be replayed onto the new one
		 * (nothing has the store open: see cloud_authsync.h). */
		char side[PATH_MAX + 8];
		snprintf(side, sizeof(side), "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		unlink(side);
	}
	if (rc == 0)
		rc = fileio_replace_commit(&r);
	else
		fileio_replace_abort(&r);
	if (rc == 0)
		LOG_INFO("cloud", "msg=\"token store restored from the bucket\" path=\"%s\"", path);
	return rc < 0 ? rc : 1;
}

static void on_change(void *ctx)
{
	struct cloud_authsync *s = ctx;
	int rc = push(s->auth, s->be, s->data_dir, &s->last_crc);
	int zero = 0;
	if (rc < 0)
		__atomic_compare_exchange_n(&s->first_err, &zero, rc, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

int cloud_authsync_attach(struct cloud_auth *a, struct cloud_backend *be, const char *data_dir,
			  struct cloud_authsync **out)
{
	struct cloud_authsync *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	s->auth = a;
	s->be = be;
	snprintf(s->data_dir, sizeof(s->data_dir), "%s", data_dir);
	cloud_auth_on_change(a, on_change, s);
	*out = s;
	return 0;
}

int cloud_authsync_refresh(struct cloud_authsync *s)
{
	char tmp[PATH_MAX + 64];
	int fd = -1, out = -1;
	int lfd = sync_lock(s->data_dir);
	if (lfd < 0)
		return lfd;
	snprintf(tmp, sizeof(tmp), "%s/auth.refresh.%ld.tmp", s->data_dir, (long)getpid());
	unlink(tmp);
	int rc = s->be->ops->get(s->be, CLOUD_AUTHSYNC_OBJECT, &fd);
	if (rc == -ENOENT) {
		rc = 0;
		goto out;
	}
	out = rc == 0 ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
	if (rc == 0 && out < 0)
		rc = -errno;
	char buf[65536];
	ssize_t n;
	while (rc == 0 && (n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		rc = n < 0 ? -errno : write(out, buf, (size_t)n) == n ? 0 : -EIO;
	}
	if (out >= 0)
		close(out);
	uint64_t crc = rc == 0 ? file_crc(tmp) : 0;
	if (rc == 0 && crc != s->last_crc) {
		rc = cloud_auth_load(s->auth, tmp);
		if (rc == 0) {
			s->last_crc = crc;
			rc = 1;
			LOG_INFO("cloud", "msg=\"token store: took a change made on another host from the bucket\"");
		}
	}
out:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	close(lfd);
	return rc;
}

int cloud_authsync_error(const struct cloud_authsync *s)
{
	return __atomic_load_n(&s->first_err, __ATOMIC_RELAXED);
}

void cloud_authsync_free(struct cloud_authsync *s)
{
	if (!s)
		return;
	cloud_auth_on_change(s->auth, NULL, NULL);
	free(s);
}
