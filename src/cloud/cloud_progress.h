/*
 * cloud_progress.h — how far a long export, restore or fork has got, so
 * that the dashboard can show it (docs/dashboard.md "Progress").
 *
 * The store's functions keep their signatures: the HTTP handler that runs
 * an operation on its worker thread installs a reporter for that thread
 * (cloud_progress_begin()), the store announces phases and advances them
 * through the hooks below, which do nothing on a thread without a
 * reporter (the CLI, maintenance, a request that asked for no progress).
 *
 *   phase    unit    what the store does
 *   "build"  bytes   reads the stored files of the restore plan (snapshot,
 *                    compacted files, uploads) and applies them
 *   "write"  pages   turns the built state into the new transaction of a
 *                    restore or fork (compares it with the current state)
 *
 * Reports are throttled here: the reporter is called when a phase starts,
 * when it reaches its total, every CLOUD_PROGRESS_STEP_PCT percent, and in
 * between when the whole percentage moved and CLOUD_PROGRESS_INTERVAL_MS
 * passed since the last report. So a phase makes at most about 100
 * reports however large (the event ring holds 256), even a fast one shows
 * its steps, and a slow one is seen moving percent by percent.
 *
 * Pure apart from the clock: no logging, no I/O beyond cloud_progress_read's
 * read of the caller's file.
 */
#ifndef LITEFS_CLOUD_PROGRESS_H
#define LITEFS_CLOUD_PROGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CLOUD_PROGRESS_INTERVAL_MS 250
#define CLOUD_PROGRESS_STEP_PCT 10

struct cloud_progress {
	/* Called on the operation's thread with the phase's name, how much is
	 * done and the phase's total (same unit). Must not block for long. */
	void (*report)(struct cloud_progress *p, const char *phase, uint64_t done, uint64_t total);
	void *ctx; /* the reporter's own */
	/* Kept by this module. */
	const char *phase;
	uint64_t done, total;
	unsigned last_pct; /* of the last report */
	int64_t last_ms;
};

/* Installs p (borrowed; valid until cloud_progress_end()) as this thread's
 * reporter. */
void cloud_progress_begin(struct cloud_progress *p);
/* Removes this thread's reporter. */
void cloud_progress_end(void);

/* Starts phase (a static string) of total units at 0, and reports it. */
void cloud_progress_phase(const char *phase, uint64_t total);
/* Advances the current phase by n units (capped at its total). */
void cloud_progress_add(uint64_t n);
/* ltx_read_fn over a file descriptor (ctx points to an int fd, as
 * fdio_read) that advances the current phase by the bytes read. */
ssize_t cloud_progress_read(void *ctx, void *buf, size_t len);

#endif
