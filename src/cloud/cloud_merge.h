/*
 * cloud_merge.h — a restore plan's stored files read side by side into
 * the state they build (ltx/ltxmerge.h), for litefs-cloud's export,
 * restore, fork and the rebuild of a current copy.
 *
 * Why a module of its own: the engine (cloud_store.c) used to apply a
 * plan file by file to a scratch file and read that file again to send
 * or compare it; this reads each stored object once and hands out each
 * page of the result once, as bytes (a streamed export, a file) or as
 * pages (a restore's diff against the current copy). Objects are opened
 * through cloud_object.h, so how they are stored stays that module's.
 *
 * No locks: the caller holds the database's files lock (read) while
 * cloud_merge_open() opens the objects; once open, the merge reads only
 * its own descriptors (a deleted object stays readable through them), so
 * the lock may be released before reading. Logs once on failure.
 */
#ifndef LITEFS_CLOUD_MERGE_H
#define LITEFS_CLOUD_MERGE_H

#include <stdint.h>
#include <sys/types.h>

#include "cloud/cloud_backend.h"
#include "cloud/cloud_plan.h"
#include "ltx/ltx.h"

struct cloud_merge;

/* Opens the objects of plan (of database db_id; name for the logs) and
 * starts their merge; the state it builds must be position want (else
 * ERR_LTX_POST_CHECKSUM when the end is reached). read: how each object's
 * descriptor is read (ctx points to an int fd: fdio_read, or a reader
 * that also counts progress); either stored form is read (cloud_zltx.h).
 * Caller frees with cloud_merge_free(). */
int cloud_merge_open(struct cloud_backend *be, int64_t db_id, const char *name, const struct cloud_plan *plan,
		     struct ltx_pos want, ltx_read_fn read, struct cloud_merge **out);
void cloud_merge_free(struct cloud_merge *m); /* NULL is a no-op */

/* Page size and size in bytes of the state. */
uint32_t cloud_merge_page_size(const struct cloud_merge *m);
uint64_t cloud_merge_size(const struct cloud_merge *m);

/* The state's bytes in order (ltxmerge_read()): up to max bytes (at least
 * a page), 0 at the end, or a negative code. The last bytes come only
 * once the whole plan and the wanted position verified. */
ssize_t cloud_merge_read(struct cloud_merge *m, void *buf, size_t max);
/* The state's pages in order (ltxmerge_next()), the same guarantee. */
int cloud_merge_next(struct cloud_merge *m, uint32_t *pgno, const uint8_t **page, uint64_t *sum);

/* The whole CRC of the page cloud_merge_next() returned last
 * (ltxmerge_page_crc()). */
uint64_t cloud_merge_page_crc(const struct cloud_merge *m);

/* Writes the whole state into fd (emptied first) in large sequential
 * writes. 0 or a negative code (fd's content is then undefined). */
int cloud_merge_to_fd(struct cloud_merge *m, int fd);

#endif
