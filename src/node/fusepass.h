/*
 * fusepass.h — FUSE passthrough (Linux 6.9+) for a libfuse 3.14 session,
 * which does not know the feature. See the design comment in fusepass.c.
 *
 * Thread safety: every function may be called from any worker thread.
 * fusepass_reply_next() applies to the calling thread's next open or
 * create reply only.
 */
#ifndef LITEFS_FUSEPASS_H
#define LITEFS_FUSEPASS_H

#include <stdbool.h>

struct fuse_session;
struct fusepass;

/* Installs the session's I/O hooks on se's /dev/fuse descriptor (after
 * fuse_session_mount, before the first request is read). want asks for
 * passthrough, want_uring for FUSE over io_uring (fuseuring.c: its
 * threads start once the kernel has taken the INIT reply, and
 * wake_signal interrupts them at stop). With neither, installs nothing
 * and returns a state whose fusepass_enabled() is false. Caller frees
 * with fusepass_free() after the session is destroyed. Returns 0 or
 * -errno. */
int fusepass_install(struct fuse_session *se, bool want, bool want_uring, int wake_signal, struct fusepass **out);

/* True once the kernel accepted passthrough in its INIT exchange.
 * Logs once, at INIT, whether it did and why not. NULL: false. */
bool fusepass_enabled(const struct fusepass *p);

/* Registers fd (a backing file; the caller keeps it) with the kernel.
 * Returns a backing id > 0, or -errno (-EPERM without CAP_SYS_ADMIN,
 * -ELOOP when the backing file system is itself stacked too deep). */
int fusepass_backing_open(struct fusepass *p, int fd);

/* Drops a backing id: files opened with it keep working. */
void fusepass_backing_close(struct fusepass *p, int backing_id);

/* Makes the calling thread's next open or create reply ask the kernel to
 * serve reads and writes of that file from backing_id itself. */
void fusepass_reply_next(int backing_id);

/* Counters for /metrics and tests: files opened in passthrough mode. */
unsigned long fusepass_opened(const struct fusepass *p);

/* Requests served through io_uring so far (0: none, or not in use). */
unsigned long fusepass_uring_served(const struct fusepass *p);

/* Joins the ring threads, if any: call once no /dev/fuse reader is left
 * and before the session is unmounted or destroyed. NULL is a no-op. */
void fusepass_stop_rings(struct fusepass *p);

/* Stops the rings too. NULL is a no-op. */
void fusepass_free(struct fusepass *p);

#endif
