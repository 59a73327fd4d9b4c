/*
 * importvfs.h — a read-only SQLite VFS over an upload that is still
 * arriving, so that an import's PRAGMA quick_check runs while the body is
 * uploaded instead of after it: a read of bytes the upload file does not
 * hold yet waits for them (importrec_wait); the file's size is the
 * request's Content-Length. The check still reads exactly the bytes of
 * the complete file, each once it is there.
 *
 * Bytes 18/19 of the header read as 1 (rollback mode), as the upload's
 * header check rewrites them, so that a WAL-mode file opens without a WAL.
 * A stopped upload (importrec_free, or the body ended short) fails the
 * read, and with it the check.
 */
#ifndef LITEFS_IMPORTVFS_H
#define LITEFS_IMPORTVFS_H

#include <stdint.h>

struct importrec;

/* The VFS's name, registered by importvfs_register(). */
#define IMPORTVFS_NAME "litefs-upload"

/* Registers the VFS with SQLite (once per process; not the default).
 * 0 or -EINVAL. */
int importvfs_register(void);

/* A URI for sqlite3_open_v2(..., SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
 * IMPORTVFS_NAME) that reads r's upload file at path (size bytes when
 * complete). Caller frees; NULL when out of memory. r must outlive the
 * connection. */
char *importvfs_uri(const char *path, struct importrec *r, uint64_t size);

#endif
