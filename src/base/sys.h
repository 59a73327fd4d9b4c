/*
 * sys.h — the system calls of the commit path, routed through one table so
 * that tests can make the Nth call fail (SQLite's os-layer trick).
 *
 * Every write, sync, rename, unlink and truncate that decides what is on
 * disk after a commit (backing database files, LTX files, the position
 * file) goes through these wrappers. Reads do not: a failed read cannot
 * leave a mix of old and new state.
 *
 * Fault injection: LITEFS_FAULT="call:N[:OPTION]...,..." (read by
 * sys_fault_init_from_env()) makes the Nth call of that kind (1-based,
 * counted over the whole process) fail with errno (default EIO). Kinds:
 * pwrite, fsync, rename, unlink, ftruncate, and selfopen (not a system
 * call: the node's FUSE open handler serving an open that the node's own
 * process made of its mount; the path is the database's name there).
 * Example: LITEFS_FAULT=fsync:3.
 * Each fault fires once; counting is atomic, so it is exact even with the
 * multi-threaded FUSE loop. Options after N, in any order:
 *   ERRNO       a number: the errno to fail with
 *   stall=MS    do not fail: sleep MS milliseconds, then make the call
 *               (a disk or network file system that hangs; the caller
 *               keeps whatever locks it holds, which is the point)
 *   path=TEXT   count only calls on a file whose path contains TEXT (the
 *               fd's /proc/self/fd link, or the name for rename/unlink),
 *               so a test can pick one database's file among the
 *               background syncs of the others
 * Example: LITEFS_FAULT=fsync:1:stall=60000:path=dbs/stuck.db/db makes
 * the first fsync of stuck.db's database, journal or WAL hang for 60 s
 * while the FUSE request holds the database's mutex.
 */
#ifndef LITEFS_SYS_H
#define LITEFS_SYS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum sys_call { SYS_PWRITE = 0, SYS_FSYNC, SYS_RENAME, SYS_UNLINK, SYS_FTRUNCATE, SYS_SELFOPEN, SYS_CALL_COUNT };

/* Returns 0, or -1 with errno set (like the libc calls they wrap). */
ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t off);
int sys_fsync(int fd);     /* fdatasync() */
int sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
int sys_unlinkat(int dirfd, const char *path, int flags);
int sys_ftruncate(int fd, off_t len);

/* Writes all len bytes at off (looping over short writes): 0 or -errno. */
int sys_pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* Writeback of a file written front to back; call sys_writeback() after
 * each write with off = the bytes written so far.
 *  kick > 0: the writeback of what was written is started every kick
 *            bytes, so that a final fsync finds little left and a long
 *            copy does not pile up dirty pages that throttle every writer.
 *  keep > 0: also waits until what lies more than keep bytes behind off
 *            is on disk and drops it from the page cache, so that a copy
 *            of gigabytes holds about keep bytes of cache. Only for files
 *            nobody reads soon (exports, stored objects, forks). It is
 *            faster, not only politer, on VMs whose freed memory goes back
 *            to the host (Firecracker's free page reporting, as on Fly.io
 *            and this machine): the first touch of every page of new cache
 *            is a fault to the hypervisor, 2 s of system CPU per GB of
 *            buffered writes; with keep, the same few megabytes of pages
 *            are used again and again (BENCHMARKS.md, "first touch"). */
struct sys_wb {
	off_t kick, keep;      /* settings; 0 = off */
	off_t kicked, dropped; /* writeback started, cache dropped, up to */
};
/* 0, or -errno of a failed writeback met while waiting: the caller must
 * fail the file, because the wait took the error that a later fsync of
 * the same file would have reported. */
int sys_writeback(struct sys_wb *wb, int fd, off_t off);
/* The keep of the copies that drop their cache: enough to keep the disk
 * busy (measured: 16-128 MiB alike). */
#define SYS_WB_KEEP ((off_t)32 << 20)

/* A file written front to back with sys_writeback. */
struct sys_wbfile {
	int fd;
	off_t off; /* bytes written */
	struct sys_wb wb;
};
/* An ltx_write_fn over ctx, a struct sys_wbfile: appends len bytes (plain
 * pwrite, not counted by the fault table) and calls sys_writeback().
 * 0 or -errno. */
int sys_wbfile_write(void *ctx, const void *buf, size_t len);

/* A buffered writer at increasing offsets of fd, through sys_pwrite_all
 * (so faults can be injected). buf (cap bytes) is the caller's; wb says
 * what writeback each flush starts (sys_writeback; zero: none). */
struct sys_writer {
	int fd;
	off_t off;          /* where the next flush writes */
	struct sys_wb wb;
	size_t n, cap;
	uint8_t *buf;
};
/* Appends len bytes (an ltx_write_fn: ctx is the writer). 0 or -errno. */
int sys_writer_write(void *ctx, const void *buf, size_t len);
/* Writes what is buffered. 0 or -errno. */
int sys_writer_flush(struct sys_writer *w);

/* Parses LITEFS_FAULT. Returns 0, or -1 if the variable is malformed
 * (a message is printed to stderr). */
int sys_fault_init_from_env(void);
/* Arms a fault programmatically: the nth call of kind fails with err. */
void sys_fault_arm(enum sys_call kind, long nth, int err);
/* Likewise, but the nth call sleeps stall_ms first and then proceeds
 * (stall_ms > 0), and only calls on a path containing path (NULL: any;
 * copied) count. */
void sys_fault_arm_ex(enum sys_call kind, long nth, int err, int64_t stall_ms, const char *path);
/* A point where a fault of kind may be injected outside the wrappers
 * above: counts it (name: what a path= option matches) and returns true
 * when it must fail, with errno set; a stall sleeps here. */
bool sys_fault_point(enum sys_call kind, const char *name);
/* Whether a fault of kind is armed (so a costly check before
 * sys_fault_point() is only made in tests). */
bool sys_fault_armed(enum sys_call kind);
/* How many calls of kind have been made (for tests). */
long sys_call_count(enum sys_call kind);

#endif
