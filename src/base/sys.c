#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/fdio.h"
#include "base/sys.h"

static const char *const call_names[SYS_CALL_COUNT] = { "pwrite", "fsync", "rename", "unlink", "ftruncate",
								    "selfopen" };

static atomic_long call_count[SYS_CALL_COUNT];
static long fault_nth[SYS_CALL_COUNT]; /* 0 = none */
static int fault_errno[SYS_CALL_COUNT];
static int64_t fault_stall_ms[SYS_CALL_COUNT];  /* > 0: sleep instead of failing */
static char *fault_path[SYS_CALL_COUNT];         /* NULL: every call counts */
static atomic_long match_count[SYS_CALL_COUNT]; /* calls on a matching path */

/* Does the call (on fd, or on name when fd < 0) concern a path the fault
 * of kind is restricted to? Only asked when a path is armed, so the
 * readlink costs nothing in production. */
static bool path_matches(enum sys_call kind, int fd, const char *name)
{
	char link[64], target[4096];
	if (fd >= 0) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			return false;
		target[n] = '\0';
		name = target;
	}
	return name != NULL && strstr(name, fault_path[kind]) != NULL;
}

/* Counts the call and says whether it must fail; sets errno if so. A
 * stall sleeps here and then lets the call proceed. */
static int inject(enum sys_call kind, int fd, const char *name)
{
	long n = atomic_fetch_add(&call_count[kind], 1) + 1;
	if (fault_nth[kind] == 0)
		return 0;
	if (fault_path[kind] != NULL) {
		if (!path_matches(kind, fd, name))
			return 0;
		n = atomic_fetch_add(&match_count[kind], 1) + 1;
	}
	if (n != fault_nth[kind])
		return 0;
	if (fault_stall_ms[kind] > 0) {
		fprintf(stderr, "level=warn mod=sys msg=\"injected stall\" call=%s n=%ld stall_ms=%" PRId64 "\n",
			call_names[kind], n, fault_stall_ms[kind]);
		struct timespec left = { (time_t)(fault_stall_ms[kind] / 1000), (long)(fault_stall_ms[kind] % 1000) * 1000000L };
		/* Signals (the FUSE loop's wake-up) do not cut a stall short. */
		while (nanosleep(&left, &left) != 0 && errno == EINTR)
			;
		return 0;
	}
	fprintf(stderr, "level=warn mod=sys msg=\"injected fault\" call=%s n=%ld errno=%d\n", call_names[kind], n,
		fault_errno[kind]);
	errno = fault_errno[kind];
	return 1;
}

ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	if (inject(SYS_PWRITE, fd, NULL))
		return -1;
	return pwrite(fd, buf, len, off);
}

int sys_fsync(int fd)
{
	if (inject(SYS_FSYNC, fd, NULL))
		return -1;
	return fdatasync(fd);
}

int sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	if (inject(SYS_RENAME, -1, newpath))
		return -1;
	return renameat(olddirfd, oldpath, newdirfd, newpath);
}

int sys_unlinkat(int dirfd, const char *path, int flags)
{
	if (inject(SYS_UNLINK, -1, path))
		return -1;
	return unlinkat(dirfd, path, flags);
}

int sys_ftruncate(int fd, off_t len)
{
	if (inject(SYS_FTRUNCATE, fd, NULL))
		return -1;
	return ftruncate(fd, len);
}

int sys_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = sys_pwrite(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

void sys_fault_arm_ex(enum sys_call kind, long nth, int err, int64_t stall_ms, const char *path)
{
	fault_errno[kind] = err ? err : EIO;
	fault_stall_ms[kind] = stall_ms;
	free(fault_path[kind]);
	fault_path[kind] = path ? strdup(path) : NULL;
	atomic_store(&match_count[kind], 0);
	fault_nth[kind] = nth;
}

void sys_fault_arm(enum sys_call kind, long nth, int err)
{
	sys_fault_arm_ex(kind, nth, err, 0, NULL);
}

bool sys_fault_point(enum sys_call kind, const char *name)
{
	return inject(kind, -1, name) != 0;
}

bool sys_fault_armed(enum sys_call kind)
{
	return fault_nth[kind] != 0;
}

long sys_call_count(enum sys_call kind)
{
	return atomic_load(&call_count[kind]);
}

int sys_fault_init_from_env(void)
{
	const char *env = getenv("LITEFS_FAULT");
	if (env == NULL || *env == '\0')
		return 0;
	char *copy = strdup(env), *save = NULL;
	if (copy == NULL)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *fsave = NULL, *end;
		char *name = strtok_r(tok, ":", &fsave);
		char *nth_s = strtok_r(NULL, ":", &fsave);
		long nth = nth_s ? strtol(nth_s, &end, 10) : 0;
		if (name == NULL || nth_s == NULL || *end != '\0' || nth <= 0) {
			fprintf(stderr, "litefs: LITEFS_FAULT: malformed entry \"%s\" (want call:N[:errno][:stall=MS][:path=TEXT])\n",
				tok);
			free(copy);
			return -1;
		}
		int kind = -1;
		for (int i = 0; i < SYS_CALL_COUNT; i++)
			if (strcmp(name, call_names[i]) == 0)
				kind = i;
		if (kind < 0) {
			fprintf(stderr, "litefs: LITEFS_FAULT: unknown call \"%s\"\n", name);
			free(copy);
			return -1;
		}
		int err = EIO;
		int64_t stall_ms = 0;
		const char *path = NULL;
		for (char *opt = strtok_r(NULL, ":", &fsave); opt; opt = strtok_r(NULL, ":", &fsave)) {
			long v = 0;
			if (strncmp(opt, "stall=", 6) == 0 && (v = strtol(opt + 6, &end, 10)) > 0 && *end == '\0') {
				stall_ms = v;
			} else if (strncmp(opt, "path=", 5) == 0 && opt[5] != '\0') {
				path = opt + 5;
			} else if ((v = strtol(opt, &end, 10)) > 0 && *end == '\0') {
				err = (int)v;
			} else {
				fprintf(stderr, "litefs: LITEFS_FAULT: bad option \"%s\" (want errno, stall=MS or path=TEXT)\n",
					opt);
				free(copy);
				return -1;
			}
		}
		sys_fault_arm_ex((enum sys_call)kind, nth, err, stall_ms, path);
	}
	free(copy);
	return 0;
}

int sys_writer_flush(struct sys_writer *w)
{
	if (w->n == 0)
		return 0;
	int rc = sys_pwrite_all(w->fd, w->buf, w->n, w->off);
	if (rc)
		return rc;
	w->off += (off_t)w->n;
	w->n = 0;
	return sys_writeback(&w->wb, w->fd, w->off);
}

int sys_wbfile_write(void *ctx, const void *buf, size_t len)
{
	struct sys_wbfile *f = ctx;
	int rc = fdio_pwrite_full(f->fd, buf, len, f->off);
	if (rc != 0)
		return rc;
	f->off += (off_t)len;
	return sys_writeback(&f->wb, f->fd, f->off);
}

int sys_writeback(struct sys_wb *wb, int fd, off_t off)
{
	if (wb->kick > 0 && off - wb->kicked >= wb->kick) {
		/* A hint: durability comes from the caller's fsync. */
		(void)sync_file_range(fd, wb->kicked, off - wb->kicked, SYNC_FILE_RANGE_WRITE);
		wb->kicked = off;
	}
	/* Dropped in steps of a quarter of keep, at page boundaries. */
	off_t upto = (off - wb->keep) & ~(off_t)4095;
	if (wb->keep > 0 && upto - wb->dropped >= wb->keep / 4) {
		if (sync_file_range(fd, wb->dropped, upto - wb->dropped,
				    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0)
			return -errno;
		(void)posix_fadvise(fd, wb->dropped, upto - wb->dropped, POSIX_FADV_DONTNEED);
		wb->dropped = upto;
	}
	return 0;
}

int sys_writer_write(void *ctx, const void *buf, size_t len)
{
	struct sys_writer *w = ctx;
	const uint8_t *p = buf;
	while (len > 0) {
		size_t k = w->cap - w->n < len ? w->cap - w->n : len;
		memcpy(w->buf + w->n, p, k);
		w->n += k;
		p += k;
		len -= k;
		if (w->n == w->cap) {
			int rc = sys_writer_flush(w);
			if (rc)
				return rc;
		}
	}
	return 0;
}
