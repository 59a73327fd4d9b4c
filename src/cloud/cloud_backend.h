/*
 * cloud_backend.h — where litefs-cloud keeps its LTX objects: a flat
 * namespace of immutable named objects with put / get / list / delete.
 *
 * The storage engine (cloud_store.c) never touches object storage except
 * through this table of operations, so an S3-compatible backend can slot
 * in beside the local-disk one (cloud_backend_local.c). Object names are
 * relative paths of [0-9a-z/.-] chosen by the engine ("<db id>/l1/<min>-
 * <max>.ltx"); a backend may map '/' to directories or keep it in keys.
 *
 * Contract of every backend:
 *  - put is atomic and durable: once it returns 0 the object is complete
 *    and survives a crash (local: fsync file, rename, fsync directory;
 *    S3: the PUT was acknowledged). Before that, readers see the old
 *    object or none, never a part. Putting an existing name replaces it.
 *  - get gives a readable file descriptor positioned at 0 (local: the
 *    file itself; S3: a downloaded, unlinked temporary file).
 *  - delete of a missing object is 0 (idempotent), so interrupted
 *    clean-ups can simply be repeated.
 *  - list calls fn for every object whose name starts with prefix, in no
 *    particular order; fn returns 0 to go on. fn may delete the object it
 *    is given.
 *  - Names outside "<16 hex digits>/..." are not the engine's LTX objects
 *    (the token store's copy lives at "auth/auth.db"); the engine leaves
 *    them alone.
 * Thread-safe: any operation from any thread.
 */
#ifndef LITEFS_CLOUD_BACKEND_H
#define LITEFS_CLOUD_BACKEND_H

#include <stdint.h>

struct cloud_backend;

struct cloud_backend_ops {
	/* Stores the content of the file at tmp_path under name and consumes
	 * tmp_path (renamed or unlinked, on success and on error). */
	int (*put)(struct cloud_backend *be, const char *name, const char *tmp_path);
	/* *fd gets a read-only descriptor (caller closes). -ENOENT if absent. */
	int (*get)(struct cloud_backend *be, const char *name, int *fd);
	int (*list)(struct cloud_backend *be, const char *prefix,
		    int (*fn)(void *ctx, const char *name, uint64_t size), void *ctx);
	int (*del)(struct cloud_backend *be, const char *name);
	void (*close)(struct cloud_backend *be);
	/* Reads up to len bytes at off of the object into buf; *n gets the
	 * count (less than len only at the end). -ENOENT if absent. A rebuild
	 * of the catalog reads only LTX headers and trailers with it. */
	int (*read_at)(struct cloud_backend *be, const char *name, uint64_t off, void *buf, size_t len,
		       size_t *n);
	/* Deletes n objects (missing ones count as deleted); the first error
	 * is returned and the others still tried. May be NULL: then
	 * cloud_backend_del_many() calls del for each. */
	int (*del_many)(struct cloud_backend *be, const char *const *names, size_t n);
	/* Like get, but *fd is the read end of a stream (pipe-like) that the
	 * object's bytes arrive in while it downloads (a reader needs no seek), so the
	 * caller starts on the first bytes instead of after the last. *stream
	 * is ended with stream_end() after the caller closed *fd: 0, or why
	 * the download failed (the reader saw a short object then). May be
	 * NULL (cloud_object_stream() falls back to get). */
	int (*get_stream)(struct cloud_backend *be, const char *name, int *fd, void **stream);
	int (*stream_end)(struct cloud_backend *be, void *stream);
	/* "local" or "s3", for logs. */
	const char *kind;
};

struct cloud_backend {
	const struct cloud_backend_ops *ops;
};

/* The local-disk backend: objects are files under root (created if
 * missing). Caller frees with be->ops->close(be). */
int cloud_backend_local_open(const char *root, struct cloud_backend **out);

/* be->ops->del_many, or del for each name when the backend has none. */
static inline int cloud_backend_del_many(struct cloud_backend *be, const char *const *names, size_t n)
{
	if (be->ops->del_many)
		return be->ops->del_many(be, names, n);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		int r = be->ops->del(be, names[i]);
		if (rc == 0)
			rc = r;
	}
	return rc;
}

#endif
