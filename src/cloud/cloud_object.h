/*
 * cloud_object.h — the stored LTX objects of litefs-cloud's engine, below
 * the engine's writers and its maintenance: how a catalog file row maps to
 * an object name in the backend, reading and deleting one, and the
 * temporary files an object is written into before the backend's put
 * takes it. No locks of its own, and no state: callers pass the backend
 * and the directory, and hold whatever lock their caller's protocol
 * requires (cloud_store.h: layering and lock order).
 */
#ifndef LITEFS_CLOUD_OBJECT_H
#define LITEFS_CLOUD_OBJECT_H

#include <stddef.h>
#include <stdint.h>

#include "cloud/cloud_backend.h"
#include "cloud/cloud_catalog.h"

/* The object name of a stored file, "<db id>/l<level>/<min>-<max>.ltx"
 * (16 hex digits each; at most 64 bytes). */
void cloud_object_name(char *buf, size_t size, int64_t db_id, int level, uint64_t min_txid, uint64_t max_txid);
/* Parses what cloud_object_name() writes; 0 or ERR_INVAL (then the object
 * is not one of the engine's, and open() sweeps it away). */
int cloud_object_parse(const char *name, int64_t *db_id, int *level, uint64_t *min_txid, uint64_t *max_txid);

/* Opens stored file f of db_id for reading (backend get); *fd gets a
 * descriptor the caller closes. A failure is logged here, with the object
 * name, because a catalog row without its object breaks invariant 1
 * (cloud_store.c). */
int cloud_object_open(struct cloud_backend *be, int64_t db_id, const struct cat_file *f, int *fd);
/* Like cloud_object_open(), but the object may still be arriving: *fd is
 * read in order only (no seek), and *stream (NULL when the backend gave a
 * whole file) is ended with cloud_object_stream_end() after *fd is
 * closed. */
int cloud_object_stream(struct cloud_backend *be, int64_t db_id, const struct cat_file *f, int *fd, void **stream);
/* 0, or why the download behind a stream failed (logged by the backend,
 * unless the reader closed *fd before the end). */
int cloud_object_stream_end(struct cloud_backend *be, void *stream);
/* Deletes the object of file f of db_id (its row must be gone already, so
 * that a crash leaves only an orphan). 0 if it was absent. */
int cloud_object_delete(struct cloud_backend *be, int64_t db_id, const struct cat_file *f);

/* A new empty temporary file in tmp_dir (an object before its put, or any
 * other scratch file of the engine); path gets its name, which the caller
 * unlinks unless a put consumed it. Returns the fd (O_RDWR) or -errno. */
int cloud_object_tmp_create(const char *tmp_dir, char *path, size_t size);

#endif
