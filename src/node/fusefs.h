/*
 * fusefs.h — the FUSE file system (libfuse3 low-level API) that presents
 * the store's databases as a flat directory. See the design comment at the
 * top of fusefs.c.
 */
#ifndef LITEFS_FUSEFS_H
#define LITEFS_FUSEFS_H

#include <stdbool.h>

struct store;
struct fusefs;

struct fusefs_opts {
	const char *mountpoint;
	bool allow_other;
	bool debug;          /* log every FUSE request (fuse.debug) */
	double attr_timeout; /* seconds the kernel may cache attributes and names */
	bool passthrough;    /* use FUSE passthrough where the kernel has it (fusepass.c) */
	bool uring;          /* take requests through io_uring where the kernel offers it (fuseuring.c) */
};

/* Mounts the file system (cleaning up a stale mount left by a crash).
 * Caller frees with fusefs_unmount(). */
int fusefs_mount(struct store *st, const struct fusefs_opts *opts, struct fusefs **out);
/* Serves requests until fusefs_stop() or a signal; returns 0 or error. */
int fusefs_run(struct fusefs *fs);
/* Ends the loop: marks the session exited and unmounts, which wakes the
 * loop threads; fusefs_run() then returns. */
void fusefs_stop(struct fusefs *fs);
/* Unmounts if still mounted and frees. Call after fusefs_run() returned
 * (or was never called). NULL is a no-op. */
void fusefs_unmount(struct fusefs *fs);
/* The mount point (borrowed; valid until fusefs_unmount()). */
const char *fusefs_mountpoint(const struct fusefs *fs);

/* Request counters by opcode, for /metrics and the debug log. */
struct fusefs_stats {
	unsigned long lookup, getattr, setattr, open, create, read, write, fsync, flush, release, unlink,
		readdir, statfs, other;
	unsigned long uring; /* of all those, the requests that came through io_uring */
};
void fusefs_get_stats(struct fusefs *fs, struct fusefs_stats *out);

#endif
