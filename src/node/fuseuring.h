/*
 * fuseuring.h — FUSE over io_uring (Linux 6.14+) for a libfuse 3.14
 * session, which does not know the feature. See the design comment in
 * fuseuring.c.
 *
 * Thread safety: fuseuring_take_reply() applies to the calling thread
 * only; the others may be called from any thread.
 */
#ifndef LITEFS_FUSEURING_H
#define LITEFS_FUSEURING_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct fuse_session;
struct fuseuring;

/* Registers ring entries for every CPU queue of the connection on devfd
 * (the session's /dev/fuse descriptor, after the kernel took an INIT
 * reply that asked for io_uring) and starts threads to serve them
 * (eight in all, or two per queue where there are more than four queues;
 * each pinned to its queue's CPU). payload_size is the kernel's per-request buffer size
 * (max of 8 KiB, max_write and max_pages pages). wake_signal interrupts
 * the threads' waits at stop (its handler must not use SA_RESTART).
 * Returns 0 or -errno; on error nothing is left running and requests keep
 * coming through read() of /dev/fuse. Caller frees with fuseuring_free()
 * before the session is destroyed. */
int fuseuring_start(struct fuse_session *se, int devfd, size_t payload_size, int wake_signal,
		    struct fuseuring **out);

/* From the session's writev hook: if the calling thread is serving a ring
 * request with the unique ID in iov[0]'s fuse_out_header, keeps the reply
 * for that request's commit, sets *res to the bytes taken and returns true.
 * Otherwise (a notification, or a thread reading /dev/fuse) returns false
 * and the caller writes the message to /dev/fuse. */
bool fuseuring_take_reply(const struct iovec *iov, int count, ssize_t *res);

/* Requests served through the rings so far; NULL: 0. */
unsigned long fuseuring_served(const struct fuseuring *u);

/* Stops and joins the threads (each finishes the request it is serving).
 * The entries it registered end with the connection. NULL is a no-op. */
void fuseuring_free(struct fuseuring *u);

#endif
