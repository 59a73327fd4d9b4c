/*
 * sys.h — the system calls of the commit path, routed through one table so
 * that tests can make the Nth call fail (SQLite's os-layer trick).
 *
 * Every write, sync, rename, unlink and truncate that decides what is on
 * disk after a commit (backing database files, LTX files, the position
 * file) goes through these wrappers. Reads do not: a failed read cannot
 * leave a mix of old and new state.
 *
 * Fault injection: LITEFS_FAULT="call:N[:errno],..." (read by
 * sys_fault_init_from_env()) makes the Nth call of that kind (1-based,
 * counted over the whole process) fail with errno (default EIO). Kinds:
 * pwrite, fsync, rename, unlink, ftruncate. Example: LITEFS_FAULT=fsync:3.
 * Each fault fires once; counting is atomic, so it is exact even with the
 * multi-threaded FUSE loop.
 */
#ifndef LITEFS_SYS_H
#define LITEFS_SYS_H

#include <sys/types.h>

enum sys_call { SYS_PWRITE = 0, SYS_FSYNC, SYS_RENAME, SYS_UNLINK, SYS_FTRUNCATE, SYS_CALL_COUNT };

/* Returns 0, or -1 with errno set (like the libc calls they wrap). */
ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t off);
int sys_fsync(int fd);     /* fdatasync() */
int sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
int sys_unlinkat(int dirfd, const char *path, int flags);
int sys_ftruncate(int fd, off_t len);

/* Writes all len bytes at off (looping over short writes): 0 or -errno. */
int sys_pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* Parses LITEFS_FAULT. Returns 0, or -1 if the variable is malformed
 * (a message is printed to stderr). */
int sys_fault_init_from_env(void);
/* Arms a fault programmatically: the nth call of kind fails with err. */
void sys_fault_arm(enum sys_call kind, long nth, int err);
/* How many calls of kind have been made (for tests). */
long sys_call_count(enum sys_call kind);

#endif
