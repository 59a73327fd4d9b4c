/*
 * fileio.h — whole files replaced by rename, and scratch files: the one
 * way the tree writes a file that must be either old or new after a crash
 * or a failed call, and the one way it opens a temporary file.
 *
 * Replace-by-rename: fileio_replace_open() creates a temp file beside the
 * target (same directory, so the rename is atomic); the caller writes it
 * with fileio_replace_write(); fileio_replace_commit() fsyncs it, renames
 * it over the target and fsyncs the directory so the new name survives a
 * crash. Until the rename the target is untouched; after it, it holds the
 * new content. On every failure before the rename the temp file is
 * removed, so nothing is left behind and the target keeps the old bytes.
 *
 * Every write, fsync and rename goes through the syscall table (sys.h),
 * so LITEFS_FAULT and sys_fault_arm() reach all of them. Errors are
 * negative errnos taken right after the failing call. No logging.
 */
#ifndef LITEFS_FILEIO_H
#define LITEFS_FILEIO_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Modes of everything the two programs create in their data directories:
 * the databases they protect are nobody else's to read. The FUSE mount's
 * default_permissions keeps other users out of the mount only; without
 * these a local user could read every database from the data directory. */
#define FILEIO_FILE_MODE 0600
#define FILEIO_DIR_MODE 0700

struct fileio_replace {
	int fd;               /* the temp file; -1 once committed or aborted */
	off_t off;            /* bytes written so far by fileio_replace_write() */
	int err;              /* first write error (-errno); sticky */
	char tmp[PATH_MAX];   /* "<dir>/.<base>.tmp-XXXXXX" */
	char path[PATH_MAX];  /* the target */
};

/* Starts replacing path: creates the temp file with mode (less the umask,
 * as open() does). Returns 0 or -errno (-ENAMETOOLONG for a path that
 * does not fit); on failure nothing exists and r needs no abort. */
int fileio_replace_open(struct fileio_replace *r, const char *path, mode_t mode);

/* Appends len bytes to the temp file (an ltx_write_fn: ctx is the struct
 * fileio_replace). Returns 0 or -errno; the first error is kept in r->err
 * and fails the commit. */
int fileio_replace_write(void *ctx, const void *buf, size_t len);

/* fsyncs the temp file, closes it, renames it over the target and fsyncs
 * the directory. Returns 0, r->err if a write failed, or -errno. Any
 * failure before the rename removes the temp file (the target is old);
 * a failure of the directory fsync is returned with the target already
 * new but its name perhaps not yet durable. r needs no abort afterwards. */
int fileio_replace_commit(struct fileio_replace *r);

/* Closes and removes the temp file; the target is untouched. A no-op
 * after commit or abort. */
void fileio_replace_abort(struct fileio_replace *r);

/* The whole sequence for a small file: path gets exactly buf[0, len). */
int fileio_replace_file(const char *path, const void *buf, size_t len, mode_t mode);

/* Makes dir private: creates it with FILEIO_DIR_MODE if missing, or, if it
 * exists with any group or other permission bit, chmods it to its owner
 * bits only (*tightened then true). Returns 0, -ENOTDIR or -errno. */
int fileio_private_dir(const char *dir, bool *tightened);

/* Makes an existing file or directory private in the same way (owner bits
 * only); a missing path is no error. Used for files another library
 * creates (SQLite's), before and after it opens them. 0 or -errno. */
int fileio_private_path(const char *path, bool *tightened);

/* Creates path empty with FILEIO_FILE_MODE if it does not exist, and
 * tightens it (fileio_private_path) if it does: SQLite gives a database's
 * -wal, -shm and -journal the mode of the database file, so pre-creating
 * it 0600 makes all four private. 0 or -errno. */
int fileio_private_file(const char *path, bool *tightened);

/* fileio_private_file() for a SQLite database at path, then
 * fileio_private_path() for its -wal, -shm and -journal (left by an older
 * version with wider modes). 0 or -errno. */
int fileio_private_sqlite(const char *path, bool *tightened);

/* fsyncs the directory dir (through the syscall table). 0 or -errno. */
int fileio_sync_dir(const char *dir);

/* Opens an unnamed scratch file in dir, read-write (O_TMPFILE; where the
 * file system lacks it, a named file unlinked at once). Nothing is left
 * behind by a crash. Returns the fd (caller closes it) or -errno. */
int fileio_spool_open(const char *dir);

/* Creates a new named file "<dir>/<prefix>XXXXXX" (mode 0600) for data
 * that will be renamed into place elsewhere; its name is written to path.
 * Returns the fd (caller closes it and removes the file if it is not
 * renamed) or -errno. */
int fileio_tmp_create(const char *dir, const char *prefix, char *path, size_t size);

#endif
