/*
 * chkvfs.h — a read-only SQLite VFS for checking a private database file
 * (an import's upload) with PRAGMA quick_check or integrity_check.
 *
 * Why: on this project's machines, mapping a file costs a fault per 4 KiB
 * page on first touch (about 1 s for 1.4 GB, more than half of
 * quick_check's time with mmap_size set), and SQLite's plain reads cost
 * one pread per page. This VFS reads the file in large aligned windows
 * into a small set of reused buffers and serves SQLite's page reads from
 * them with a copy: the same checks, the same bytes, about 2.3x less time
 * (BENCHMARKS.md, "quick_check through windowed reads").
 *
 * Only the main database file goes through the windows; any other file
 * SQLite opens (none with immutable=1) is passed to the default VFS.
 * Writes are refused (SQLITE_READONLY). The file must not change while a
 * connection has it open: the windows are not invalidated.
 */
#ifndef LITEFS_CHKVFS_H
#define LITEFS_CHKVFS_H

#include <sqlite3.h>

struct upfeed;

/* Registers the VFS (once per process; not as the default) and returns
 * its name for sqlite3_open_v2(), or NULL if SQLite refused it (the
 * caller then opens with the default VFS). */
const char *chkvfs_name(void);

/* The next main database file this thread opens through the VFS is an
 * upload still arriving, of size bytes once complete: its reads wait
 * until feed says their bytes are in the file, and fail with
 * SQLITE_IOERR_READ if the feed is stopped or ends short. feed is
 * borrowed until that file is closed. */
void chkvfs_follow(struct upfeed *feed, sqlite3_int64 size);

#endif
