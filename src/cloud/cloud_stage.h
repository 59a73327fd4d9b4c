/*
 * cloud_stage.h — what makes one large upload cheap to ingest, kept
 * across uploads by the engine (cloud_store.c, INGEST):
 *
 *  - A staging buffer, one per store, that pagesums_apply_io() decodes an
 *    upload's pages straight into, so a 16 MB transaction is decoded once
 *    (no second decode from its object file) and no buffer is grown or
 *    faulted in per upload (BENCHMARKS.md: growing one per upload cost as
 *    much as the second decode). One ingest holds it at a time; another
 *    one meanwhile takes the older path (a small stage, then the replay).
 *    Memory: CLOUD_STAGE_BYTES once the first upload used it.
 *  - An early fsync of the object file, started on a thread of its own
 *    once the upload is proven good, so the disk finishes the object while
 *    the engine writes the current copy (two cores: the wait for the disk
 *    and the page-cache writes overlap). The put's own fsync then finds the
 *    file clean; durability still rests on it alone. Once on disk, the
 *    object's pages are dropped from the page cache: the next upload's
 *    object is written into the memory they free instead of into fresh
 *    memory, whose first touch on this project's VMs (Firecracker, free
 *    page reporting) costs a fault to the hypervisor per page and halved
 *    the ingest rate in the rounds where it struck (BENCHMARKS.md). Only
 *    compaction and restores read an object again, from the disk then.
 *
 * Thread-safe (the stage); a presync belongs to one ingest. Logs nothing.
 */
#ifndef LITEFS_CLOUD_STAGE_H
#define LITEFS_CLOUD_STAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of decoded pages staged without a second decode: a transaction
 * of up to 8,192 pages of 4 KiB. */
#define CLOUD_STAGE_BYTES (32u << 20)

struct cloud_stage;

/* A stage of cap bytes, allocated on first take. 0 or ERR_NOMEM. Caller
 * frees with cloud_stage_free() (NULL is a no-op). */
int cloud_stage_new(size_t cap, struct cloud_stage **out);
void cloud_stage_free(struct cloud_stage *st);

/* The buffer (*cap bytes) for the caller alone until cloud_stage_give(),
 * or NULL when another ingest holds it or it cannot be allocated. */
uint8_t *cloud_stage_take(struct cloud_stage *st, size_t *cap);
/* Gives back what cloud_stage_take() returned (NULL is a no-op). */
void cloud_stage_give(struct cloud_stage *st, uint8_t *buf);

/* An fsync of one descriptor on a thread of its own. */
struct cloud_presync {
	pthread_t thread;
	int fd;         /* borrowed; valid until cloud_presync_wait() */
	int rc;
	bool started;
};

/* Starts fsync(fd), then the drop of fd's cached pages, unless started
 * already; if no thread can be made, nothing is started (the put's fsync
 * does it all). */
void cloud_presync_start(struct cloud_presync *p, int fd);
/* Waits for it: 0 (also when none was started) or -errno of the fsync.
 * Again after that: 0. */
int cloud_presync_wait(struct cloud_presync *p);

#endif
