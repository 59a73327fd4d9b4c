/*
 * dlsink.h — the file end of a long download (`litefs export`,
 * `litefs-cloud export`): the receiving thread copies what arrives into
 * one of a few buffers, and a thread of the sink's own writes each full
 * buffer to a file being replaced (fileio_replace), starting writeback as
 * it goes and dropping the cache of what is on disk (sys_writeback, keep
 * SYS_WB_KEEP). Receiving then never waits for the kernel's copy into the
 * page cache or for the disk; the two overlap, and a download of
 * gigabytes holds tens of megabytes of cache.
 *
 * One receiving thread. No logging.
 */
#ifndef LITEFS_DLSINK_H
#define LITEFS_DLSINK_H

#include <stddef.h>

#include "base/fileio.h"

struct dlsink;

/* Starts a sink writing at out->off of out (borrowed until
 * dlsink_finish()). 0, ERR_NOMEM or -errno (no thread). */
int dlsink_start(struct dlsink **s, struct fileio_replace *out);

/* Appends len bytes (the shape of a libcurl write callback with its ctx
 * first): len, or 0 once a write of the file failed. */
size_t dlsink_write(void *ctx, const char *buf, size_t len);

/* Writes what is left, stops the thread and frees s. Afterwards
 * out->off is what was written and out->err the first write error, which
 * is also returned (0 or -errno); the caller commits or aborts out. */
int dlsink_finish(struct dlsink *s);

#endif
