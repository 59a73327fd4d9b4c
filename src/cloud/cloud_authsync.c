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

struct cloud_authsync {
	struct cloud_auth *auth;
	struct cloud_backend *be;
	char data_dir[PATH_MAX];
	int first_err; /* atomic */
};

int cloud_authsync_push(struct cloud_auth *a, struct cloud_backend *be, const char *data_dir)
{
	char lock[PATH_MAX], tmp[PATH_MAX];
	snprintf(lock, sizeof(lock), "%s/auth.sync", data_dir);
	int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0)
		return -errno;
	int rc = flock(lfd, LOCK_EX) < 0 ? -errno : 0;
	if (rc == 0) {
		snprintf(tmp, sizeof(tmp), "%s/auth.sync.%ld.tmp", data_dir, (long)getpid());
		unlink(tmp);
		rc = cloud_auth_copy_to(a, tmp);
		if (rc == 0)
			rc = be->ops->put(be, CLOUD_AUTHSYNC_OBJECT, tmp); /* consumes tmp */
		else
			unlink(tmp);
	}
	close(lfd);
	if (rc < 0)
		LOG_ERROR("cloud", "msg=\"cannot copy the token store to the bucket\" err=\"%s\"", err_str(rc));
	return rc;
}

int cloud_authsync_pull(struct cloud_backend *be, const char *data_dir)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/auth.db", data_dir);
	if (access(path, F_OK) == 0)
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
	int rc = cloud_authsync_push(s->auth, s->be, s->data_dir);
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
