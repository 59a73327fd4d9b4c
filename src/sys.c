#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sys.h"

static const char *const call_names[SYS_CALL_COUNT] = { "pwrite", "fsync", "rename", "unlink", "ftruncate" };

static atomic_long call_count[SYS_CALL_COUNT];
static long fault_nth[SYS_CALL_COUNT]; /* 0 = none */
static int fault_errno[SYS_CALL_COUNT];

/* Counts the call and says whether it must fail; sets errno if so. */
static int inject(enum sys_call kind)
{
	long n = atomic_fetch_add(&call_count[kind], 1) + 1;
	if (fault_nth[kind] != 0 && n == fault_nth[kind]) {
		fprintf(stderr, "level=warn mod=sys msg=\"injected fault\" call=%s n=%ld errno=%d\n",
			call_names[kind], n, fault_errno[kind]);
		errno = fault_errno[kind];
		return 1;
	}
	return 0;
}

ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	if (inject(SYS_PWRITE))
		return -1;
	return pwrite(fd, buf, len, off);
}

int sys_fsync(int fd)
{
	if (inject(SYS_FSYNC))
		return -1;
	return fdatasync(fd);
}

int sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	if (inject(SYS_RENAME))
		return -1;
	return renameat(olddirfd, oldpath, newdirfd, newpath);
}

int sys_unlinkat(int dirfd, const char *path, int flags)
{
	if (inject(SYS_UNLINK))
		return -1;
	return unlinkat(dirfd, path, flags);
}

int sys_ftruncate(int fd, off_t len)
{
	if (inject(SYS_FTRUNCATE))
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

void sys_fault_arm(enum sys_call kind, long nth, int err)
{
	fault_nth[kind] = nth;
	fault_errno[kind] = err ? err : EIO;
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
		char name[32];
		long nth = 0;
		int err = EIO;
		if (sscanf(tok, "%31[a-z]:%ld:%d", name, &nth, &err) < 2 || nth <= 0) {
			fprintf(stderr, "litefs: LITEFS_FAULT: malformed entry \"%s\" (want call:N[:errno])\n", tok);
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
		sys_fault_arm((enum sys_call)kind, nth, err);
	}
	free(copy);
	return 0;
}
