/*
 * fusepass.c — FUSE passthrough for a libfuse 3.14 session, and the
 * session hooks that FUSE over io_uring rides on.
 *
 * DESIGN
 *
 * Linux 6.9 lets a FUSE server hand the kernel an open file (a "backing
 * file") and reply to OPEN with FOPEN_PASSTHROUGH and its backing id; the
 * kernel then serves read, write, splice and mmap of that open file from
 * the backing file itself, without a request to the server. Every other
 * operation (lookup, getattr, setattr/truncate, fsync, release, unlink)
 * still reaches the server. Debian 12's libfuse 3.14 predates the
 * feature: it neither offers it at INIT nor can put it in an open reply.
 *
 * libfuse 3.14 does let a server replace the read and writev of the
 * session's /dev/fuse descriptor (fuse_session_custom_io), and every
 * message passes through them. That is the whole mechanism here:
 *
 *   read    notes the unique ID of the kernel's INIT request and whether
 *           it offers passthrough (FUSE_INIT_EXT set and FUSE_PASSTHROUGH,
 *           bit 37, in flags2);
 *   writev  in libfuse's INIT reply, adds FUSE_INIT_EXT and
 *           FUSE_PASSTHROUGH and sets max_stack_depth to 1 (backing files
 *           on a file system that is not itself stacked); in an open or
 *           create reply that the replying thread marked with
 *           fusepass_reply_next(), sets FOPEN_PASSTHROUGH and the backing
 *           id in the fuse_open_out, which libfuse always puts last.
 *
 * Backing ids come from the FUSE_DEV_IOC_BACKING_OPEN ioctl on the same
 * descriptor (CAP_SYS_ADMIN). The kernel accepts passthrough only when it
 * offered it, max_stack_depth is valid and the writeback cache is off; it
 * does not say so in a reply, so the first registration is the proof: it
 * fails with EPERM if the INIT did not take. Any failure switches the
 * feature off for the session with one log line, and the mount goes on
 * as before (every read and write a request).
 *
 * The same hooks carry FUSE over io_uring (fuseuring.c): read notes
 * whether the INIT request offers it (FUSE_OVER_IO_URING, bit 41), writev
 * asks for it in the INIT reply and, once the kernel has taken that reply,
 * starts the ring threads; every later reply is handed to the rings first
 * (send_reply), which keep the ones that answer a ring request.
 *
 * The layouts below are the kernel's (include/uapi/linux/fuse.h, protocol
 * 7.42), which the installed 7.38 header lacks.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include "base/log.h"
#include "node/fusepass.h"
#include "node/fusekern.h"
#include "node/fuseuring.h"

#define K_FUSE_INIT 26
#define K_FUSE_INIT_EXT (1u << 30)
#define K_FUSE_PASSTHROUGH_FLAGS2 (1u << (37 - 32))
#define K_FUSE_OVER_IO_URING_FLAGS2 (1u << (41 - 32))
#define K_FUSE_MAX_PAGES (1u << 22)
#define K_FUSE_DEFAULT_MAX_PAGES 32
#define K_FOPEN_PASSTHROUGH (1u << 7)
#define K_FOPEN_NOFLUSH (1u << 5)
#define K_MAX_STACK_DEPTH 1

struct k_init_in { /* struct fuse_init_in (prefix) */
	uint32_t major, minor, max_readahead, flags, flags2;
};
struct k_init_out { /* struct fuse_init_out, 64 bytes */
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2, max_stack_depth;
	uint16_t request_timeout, unused[11];
};
struct k_open_out { /* struct fuse_open_out */
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};
struct k_backing_map { /* struct fuse_backing_map */
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define K_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct k_backing_map)
#define K_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

_Static_assert(sizeof(struct k_init_out) == 64, "fuse_init_out layout");
_Static_assert(sizeof(struct k_open_out) == 16, "fuse_open_out layout");

enum { INIT_WAITING, INIT_SEEN, INIT_DONE };

struct fusepass {
	struct fuse_session *se;
	int fd;                     /* the session's /dev/fuse descriptor */
	bool want;
	bool want_uring;
	int wake_signal;            /* interrupts the ring threads' waits */
	atomic_int init_state;      /* INIT_* */
	atomic_ullong init_unique;  /* unique ID of the kernel's INIT request */
	atomic_bool offered;        /* the kernel offered passthrough */
	atomic_bool offered_uring;  /* the kernel offered FUSE over io_uring */
	atomic_bool enabled;        /* asked for at INIT, and not switched off since */
	atomic_ulong opened;
	/* Set once, by the thread that writes the INIT reply, before any ring
	 * request can arrive; read by fusepass_stop_rings after every worker
	 * is joined. */
	struct fuseuring *uring;
};

/* The sessions with hooks installed, found by descriptor (libfuse passes
 * the hooks the session's userdata, which belongs to fusefs). */
#define MAX_SESSIONS 8
static _Atomic(struct fusepass *) sessions[MAX_SESSIONS];

/* The backing id the calling thread's next open reply carries (0: none). */
static _Thread_local int next_backing_id;

static struct fusepass *by_fd(int fd)
{
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct fusepass *p = atomic_load(&sessions[i]);
		if (p != NULL && p->fd == fd)
			return p;
	}
	return NULL;
}

static ssize_t hook_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	ssize_t n = read(fd, buf, len);
	if (n < (ssize_t)(sizeof(struct k_in_header) + sizeof(struct k_init_in)))
		return n;
	struct k_in_header in;
	memcpy(&in, buf, sizeof(in));
	if (in.opcode != K_FUSE_INIT)
		return n;
	struct fusepass *p = by_fd(fd);
	if (p == NULL)
		return n;
	struct k_init_in init;
	memcpy(&init, (char *)buf + sizeof(in), sizeof(init));
	atomic_store(&p->offered, (init.flags & K_FUSE_INIT_EXT) && (init.flags2 & K_FUSE_PASSTHROUGH_FLAGS2));
	atomic_store(&p->offered_uring, (init.flags & K_FUSE_INIT_EXT) && (init.flags2 & K_FUSE_OVER_IO_URING_FLAGS2));
	atomic_store(&p->init_unique, in.unique);
	atomic_store(&p->init_state, INIT_SEEN);
	return n;
}

/* Total payload length after the out header. */
static size_t payload_len(const struct iovec *iov, int count)
{
	size_t n = 0;
	for (int i = 1; i < count; i++)
		n += iov[i].iov_len;
	return n;
}

/* Writes a reply: into the ring entry of the request the calling thread
 * serves, if it serves one (fuseuring.c), or to /dev/fuse. */
static ssize_t send_reply(int fd, struct iovec *iov, int count)
{
	ssize_t n;
	if (fuseuring_take_reply(iov, count, &n))
		return n;
	return writev(fd, iov, count);
}

/* The kernel's buffer size for one ring request (fs/fuse/dev_uring.c:
 * the largest of 8 KiB, max_write and max_pages pages). */
static size_t ring_payload_size(const struct k_init_out *out)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = (out->flags & K_FUSE_MAX_PAGES) && out->max_pages > 0 ? out->max_pages : K_FUSE_DEFAULT_MAX_PAGES;
	size_t n = 8192;
	if (out->max_write > n)
		n = out->max_write;
	if (pages * page > n)
		n = pages * page;
	return n;
}

static void start_rings(struct fusepass *p, const struct k_init_out *out)
{
	int rc = fuseuring_start(p->se, p->fd, ring_payload_size(out), p->wake_signal, &p->uring);
	if (rc != 0)
		LOG_WARN("fuse", "msg=\"FUSE over io_uring refused; requests keep coming through /dev/fuse\" err=\"%s\"",
			 strerror(-rc));
	else
		LOG_INFO("fuse", "msg=\"FUSE requests come through io_uring\"");
}

static ssize_t write_init_reply(struct fusepass *p, int fd, struct iovec *iov, int count)
{
	struct k_init_out out;
	bool offered = atomic_load(&p->offered);
	bool offered_uring = atomic_load(&p->offered_uring);
	atomic_store(&p->init_state, INIT_DONE);
	if (count != 2 || iov[1].iov_len < sizeof(out))
		return writev(fd, iov, count);
	memcpy(&out, iov[1].iov_base, sizeof(out));
	bool pass = p->want && offered;
	if (p->want && !offered)
		LOG_INFO("fuse", "msg=\"FUSE passthrough not available (kernel 6.9+ with FUSE_PASSTHROUGH); "
				 "every read and write of the database files is a request\" offered=%d",
			 offered);
	if (pass && (out.flags & (1u << 16) /* FUSE_WRITEBACK_CACHE excludes passthrough */)) {
		LOG_INFO("fuse", "msg=\"FUSE passthrough off: writeback cache is on\"");
		pass = false;
	}
	bool ring = p->want_uring && offered_uring;
	if (p->want_uring && !offered_uring)
		LOG_INFO("fuse", "msg=\"FUSE over io_uring not offered by the kernel (6.14+, and "
				 "/sys/module/fuse/parameters/enable_uring must be Y); requests come through /dev/fuse\"");
	if (!pass && !ring)
		return writev(fd, iov, count);
	out.flags |= K_FUSE_INIT_EXT;
	if (pass) {
		out.flags2 |= K_FUSE_PASSTHROUGH_FLAGS2;
		out.max_stack_depth = K_MAX_STACK_DEPTH;
	}
	if (ring)
		out.flags2 |= K_FUSE_OVER_IO_URING_FLAGS2;
	struct iovec patched[2] = { iov[0], { &out, sizeof(out) } };
	ssize_t n = writev(fd, patched, 2);
	if (n > 0 && pass) {
		atomic_store(&p->enabled, true);
		LOG_INFO("fuse", "msg=\"FUSE passthrough offered by the kernel and requested\"");
	}
	/* The kernel has taken the INIT reply (the connection is initialized),
	 * which it requires before it accepts ring entries. */
	if (n > 0 && ring)
		start_rings(p, &out);
	return n;
}

static ssize_t hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	int backing_id = next_backing_id;
	struct k_out_header oh;
	if (count < 1 || iov[0].iov_len != sizeof(oh))
		return send_reply(fd, iov, count);
	memcpy(&oh, iov[0].iov_base, sizeof(oh));
	struct fusepass *p = by_fd(fd);
	if (p != NULL && atomic_load(&p->init_state) == INIT_SEEN && oh.unique == atomic_load(&p->init_unique) &&
	    oh.unique != 0)
		return write_init_reply(p, fd, iov, count);
	if (backing_id == 0 || oh.unique == 0 || oh.error != 0)
		return send_reply(fd, iov, count);
	next_backing_id = 0;
	/* An open or create reply: its fuse_open_out ends the payload. */
	size_t plen = payload_len(iov, count);
	if (plen < sizeof(struct k_open_out) || iov[count - 1].iov_len < sizeof(struct k_open_out))
		return send_reply(fd, iov, count);
	/* libfuse sends an open reply as header + fuse_open_out and a create
	 * reply as header + one buffer of fuse_entry_out and fuse_open_out. */
	size_t last = iov[count - 1].iov_len;
	char copy[512];
	struct iovec v[4];
	if (last > sizeof(copy) || count > 4) {
		/* Never so with libfuse 3.14. The open fails (EIO to the
		 * client); ENOENT tells the caller, as for an interrupted
		 * request, to drop its handle. */
		struct k_out_header eh = { sizeof(eh), -EIO, oh.unique };
		struct iovec ev = { &eh, sizeof(eh) };
		if (send_reply(fd, &ev, 1) < 0)
			LOG_WARN("fuse", "msg=\"cannot refuse an open\" err=\"%s\"", strerror(errno));
		errno = ENOENT;
		return -1;
	}
	memcpy(copy, iov[count - 1].iov_base, last);
	struct k_open_out oo;
	memcpy(&oo, copy + last - sizeof(oo), sizeof(oo));
	/* The kernel refuses any other flag beside FOPEN_PASSTHROUGH but
	 * FOPEN_NOFLUSH (KEEP_CACHE has no meaning without the FUSE page
	 * cache, and DIRECT_IO would win over passthrough). */
	oo.open_flags = (oo.open_flags & K_FOPEN_NOFLUSH) | K_FOPEN_PASSTHROUGH;
	oo.backing_id = backing_id;
	memcpy(copy + last - sizeof(oo), &oo, sizeof(oo));
	memcpy(v, iov, sizeof(*v) * (size_t)count);
	v[count - 1].iov_base = copy;
	ssize_t n = send_reply(fd, v, count);
	if (n > 0 && p != NULL)
		atomic_fetch_add(&p->opened, 1);
	return n;
}

static const struct fuse_custom_io hooks = {
	.read = hook_read,
	.writev = hook_writev,
};

int fusepass_install(struct fuse_session *se, bool want, bool want_uring, int wake_signal, struct fusepass **out)
{
	struct fusepass *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->se = se;
	p->fd = fuse_session_fd(se);
	p->want = want;
	p->want_uring = want_uring;
	p->wake_signal = wake_signal;
	*out = p;
	if (!want)
		LOG_INFO("fuse", "msg=\"FUSE passthrough off (fuse.passthrough: false or LITEFS_FUSE_PASSTHROUGH=0)\"");
	if (!want && !want_uring)
		return 0;
	int slot = -1;
	for (int i = 0; i < MAX_SESSIONS && slot < 0; i++) {
		struct fusepass *expected = NULL;
		if (atomic_compare_exchange_strong(&sessions[i], &expected, p))
			slot = i;
	}
	if (slot < 0) {
		p->want = p->want_uring = false;
		return 0;
	}
	int rc = fuse_session_custom_io(se, &hooks, p->fd);
	if (rc != 0) {
		atomic_store(&sessions[slot], NULL);
		p->want = p->want_uring = false;
		LOG_WARN("fuse", "msg=\"cannot hook the FUSE session; passthrough and io_uring off\" err=%d", rc);
	}
	return 0;
}

bool fusepass_enabled(const struct fusepass *p)
{
	return p != NULL && atomic_load(&p->enabled);
}

int fusepass_backing_open(struct fusepass *p, int fd)
{
	if (!fusepass_enabled(p))
		return -EOPNOTSUPP;
	struct k_backing_map map = { .fd = fd };
	int id = ioctl(p->fd, K_DEV_IOC_BACKING_OPEN, &map);
	if (id > 0)
		return id;
	int err = id < 0 ? errno : EIO;
	/* One failure switches it off: the kernel refused the INIT flags
	 * (EPERM), the capability is missing (EPERM), or the data directory
	 * is on a stacked file system (ELOOP). */
	bool was = true;
	if (atomic_compare_exchange_strong(&p->enabled, &was, false))
		LOG_WARN("fuse", "msg=\"FUSE passthrough refused by the kernel; switched off, every read and write "
				 "is a request\" err=\"%s\" why=\"%s\"", strerror(err),
			 err == ELOOP ? "the data directory is on a stacked file system (overlayfs?)"
			 : err == EPERM ? "no CAP_SYS_ADMIN, or the kernel did not take the INIT flags"
					: "unexpected");
	return -err;
}

void fusepass_backing_close(struct fusepass *p, int backing_id)
{
	uint32_t id = (uint32_t)backing_id;
	if (p != NULL && backing_id > 0 && ioctl(p->fd, K_DEV_IOC_BACKING_CLOSE, &id) != 0)
		LOG_WARN("fuse", "msg=\"cannot close a passthrough backing id\" id=%d err=\"%s\"", backing_id,
			 strerror(errno));
}

void fusepass_reply_next(int backing_id)
{
	next_backing_id = backing_id;
}

unsigned long fusepass_opened(const struct fusepass *p)
{
	return p == NULL ? 0 : atomic_load(&p->opened);
}

unsigned long fusepass_uring_served(const struct fusepass *p)
{
	return p == NULL ? 0 : fuseuring_served(p->uring);
}

void fusepass_stop_rings(struct fusepass *p)
{
	if (p == NULL)
		return;
	fuseuring_free(p->uring);
	p->uring = NULL;
}

void fusepass_free(struct fusepass *p)
{
	if (p == NULL)
		return;
	fusepass_stop_rings(p);
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct fusepass *expected = p;
		atomic_compare_exchange_strong(&sessions[i], &expected, NULL);
	}
	free(p);
}
