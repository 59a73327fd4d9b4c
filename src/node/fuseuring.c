/*
 * fuseuring.c — FUSE over io_uring for a libfuse 3.14 session.
 *
 * DESIGN
 *
 * Since Linux 6.14 a FUSE server may take its requests from io_uring
 * instead of read() and write() of /dev/fuse (the kernel's
 * Documentation/filesystems/fuse-io-uring.rst). The kernel keeps one
 * queue per possible CPU and puts a request on the queue of the CPU its
 * client runs on. The server registers "entries" on each queue: an
 * IORING_OP_URING_CMD on /dev/fuse (128-byte SQE) whose command is
 * FUSE_IO_URING_CMD_REGISTER and whose iovec names two buffers of its
 * own, a header block and a payload buffer. A request is delivered by
 * completing that command: the kernel has written
 *
 *   header.in_out          struct fuse_in_header
 *   header.op_in           the opcode's fixed argument (fuse_write_in, …)
 *   header.ring_ent_in_out commit ID (the request's unique) and payload size
 *   payload                the rest of the arguments (names, write data)
 *
 * The server answers with FUSE_IO_URING_CMD_COMMIT_AND_FETCH on the same
 * entry: fuse_out_header in header.in_out, the reply's body in payload,
 * its length in ring_ent_in_out.payload_sz. The same command hands the
 * entry back for the next request, so a request costs one io_uring_enter
 * (submit the reply, wait for the next request) where /dev/fuse costs a
 * writev and a read. The kernel switches the connection to the rings only
 * once every queue has an entry; until then, and for FORGET and INTERRUPT
 * always, requests come through /dev/fuse, whose readers stay.
 *
 * libfuse 3.14 knows nothing of this. We reuse its request decoding and
 * reply encoding unchanged:
 *
 *   in    the fixed header and argument are copied in front of the payload
 *         (the payload buffer has room for them before it), which makes
 *         the linear message /dev/fuse would have delivered, and
 *         fuse_session_process_buf() runs the handler on it. The fixed
 *         argument's size is not in the entry; it is what in.len leaves
 *         after the header and the payload.
 *   out   the reply comes back through the session's writev hook
 *         (fusepass.c), which hands it to fuseuring_take_reply(): a thread
 *         serving a ring request keeps the reply whose unique matches and
 *         commits it once the handler has returned (a handler may still
 *         read its arguments, which live in the payload, after replying).
 *         Notifications and /dev/fuse readers' replies pass through.
 *
 * Threads: eight in all, or two per queue on machines with more than four
 * possible CPUs (FUSEURING_THREADS),
 * each with its own ring (single
 * issuer, task work deferred to its own io_uring_enter) and one entry,
 * pinned to the queue's CPU so that a request is served where its client
 * runs. A handler that blocks (an fsync) holds one entry of its queue; the
 * others serve the rest. Every handler replies before it returns (all of
 * fusefs.c's do); one that did not gets EIO, so an entry is never lost.
 *
 * Stop: fuseuring_free() interrupts the threads' waits with the wake
 * signal; each commits what it is serving and exits, and closing its ring
 * cancels its entry. Requests that reach a queue left without entries wait
 * until the connection ends (the unmount that follows), which fails them.
 *
 * The layouts below are the kernel's (include/uapi/linux/fuse.h, protocol
 * 7.42), which the installed 7.38 header lacks.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/io_uring.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include "base/clock.h"
#include "base/log.h"
#include "node/fusekern.h"
#include "node/fuseuring.h"

#define K_CMD_REGISTER 1u
#define K_CMD_COMMIT_AND_FETCH 2u
#define K_IN_OUT_SZ 128
#define K_OP_IN_SZ 128
#define K_IORING_SETUP_NO_MMAP (1u << 14)

struct k_ent_in_out { /* struct fuse_uring_ent_in_out */
	uint64_t flags, commit_id;
	uint32_t payload_sz, padding;
	uint64_t reserved;
};
struct k_req_header { /* struct fuse_uring_req_header */
	char in_out[K_IN_OUT_SZ];
	char op_in[K_OP_IN_SZ];
	struct k_ent_in_out ent;
};
struct k_cmd_req { /* struct fuse_uring_cmd_req, in the SQE's command area */
	uint64_t flags, commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
_Static_assert(sizeof(struct k_req_header) == 288, "fuse_uring_req_header layout");
_Static_assert(sizeof(struct k_cmd_req) == 24, "fuse_uring_cmd_req layout");

/* Ring threads in all, as many as /dev/fuse readers (fusefs.c), but at
 * least two per queue so that one blocked handler never stalls a CPU's
 * requests. */
#define FUSEURING_THREADS 8

/* Room in front of the payload for the fixed header and argument. */
#define FRONT (sizeof(struct k_in_header) + K_OP_IN_SZ)

enum { UD_REGISTER = 1, UD_COMMIT = 2 };

struct ring_thread {
	struct fuseuring *u;
	pthread_t tid;
	bool started;
	int qid;
	/* the ring, in two pages of our own */
	int fd;
	char *ring_mem; /* head, tail, masks, CQEs, SQ index array */
	char *sqes;     /* 128-byte entries */
	size_t mem_len; /* of each: one page */
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
	unsigned to_submit;
	/* the entry */
	struct k_req_header *hdr;
	char *mem;     /* FRONT bytes, then the payload */
	char *payload;
	struct iovec iov[2];
	/* the reply of the request being served */
	uint64_t unique;
	bool serving, replied;
	struct k_out_header oh;
	char *reply;
	size_t reply_len;
};

struct fuseuring {
	struct fuse_session *se;
	int devfd;
	size_t payload_size;
	int wake_signal;
	atomic_bool stopping;
	atomic_ulong served;
	pthread_mutex_t mu; /* guards n_ready, first_err */
	pthread_cond_t cond;
	int n_ready, first_err;
	int n_threads;
	struct ring_thread *threads;
};

static _Thread_local struct ring_thread *serving_thread;

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static void ring_close(struct ring_thread *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	/* The kernel tears a ring down after its last close, in the background,
	 * and may still write completions into these pages, which it keeps
	 * pinned until then: unmapped, they are no longer ours to reuse (freed
	 * to malloc, they were: a late completion corrupted the heap). */
	if (t->ring_mem != NULL)
		munmap(t->ring_mem, t->mem_len);
	if (t->sqes != NULL)
		munmap(t->sqes, t->mem_len);
	t->ring_mem = NULL;
	t->sqes = NULL;
}

static char *ring_page(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* A ring of 2 entries (one command is ever in flight) whose task work runs
 * only when this thread waits in io_uring_enter, in memory of our own
 * (IORING_SETUP_NO_MMAP, 6.5+; see ring_close) rather than mapped from the
 * ring's file: a
 * mapping would hold that file, and with it the ring and every command on
 * it, for as long as the process has its memory. Those commands hold
 * /dev/fuse open, so after a kill -9 of the node a thread of it waiting
 * on its own mount (ownmount.c) would keep the connection from being
 * aborted, and itself from ever being answered. */
static int ring_open(struct ring_thread *t)
{
	long page = sysconf(_SC_PAGESIZE);
	t->mem_len = (size_t)page;
	t->ring_mem = ring_page(t->mem_len); /* zeroed */
	t->sqes = ring_page(t->mem_len);
	if (t->ring_mem == NULL || t->sqes == NULL) {
		ring_close(t);
		return -ENOMEM;
	}
	unsigned base = IORING_SETUP_SQE128 | K_IORING_SETUP_NO_MMAP;
	unsigned extra[] = { IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0 };
	struct io_uring_params p;
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = base | extra[i];
		p.cq_off.resv2 = (uint64_t)(uintptr_t)t->ring_mem; /* user_addr since 6.5 */
		p.sq_off.resv2 = (uint64_t)(uintptr_t)t->sqes;
		t->fd = sys_io_uring_setup(2, &p);
		if (t->fd >= 0 || errno != EINVAL)
			break;
	}
	if (t->fd < 0) {
		int err = -errno;
		ring_close(t);
		return err;
	}
	char *r = t->ring_mem;
	if (p.sq_off.array + p.sq_entries * sizeof(unsigned) > (size_t)page ||
	    p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe) > (size_t)page ||
	    p.sq_entries * 128u > (size_t)page) {
		ring_close(t); /* cannot be: the kernel took a page for each */
		return -EOVERFLOW;
	}
	t->sq_tail = (unsigned *)(r + p.sq_off.tail);
	t->sq_mask = (unsigned *)(r + p.sq_off.ring_mask);
	t->sq_array = (unsigned *)(r + p.sq_off.array);
	t->cq_head = (unsigned *)(r + p.cq_off.head);
	t->cq_tail = (unsigned *)(r + p.cq_off.tail);
	t->cq_mask = (unsigned *)(r + p.cq_off.ring_mask);
	t->cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
	return 0;
}

/* Queues (does not submit) a command on the thread's entry. */
static void ring_queue_cmd(struct ring_thread *t, unsigned cmd_op, uint64_t commit_id, uint64_t user_data)
{
	unsigned tail = *t->sq_tail;
	unsigned idx = tail & *t->sq_mask;
	struct io_uring_sqe *sqe = (struct io_uring_sqe *)(t->sqes + (size_t)idx * 128u);
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = t->u->devfd;
	sqe->cmd_op = cmd_op;
	sqe->user_data = user_data;
	if (cmd_op == K_CMD_REGISTER) {
		sqe->addr = (uint64_t)(uintptr_t)t->iov;
		sqe->len = 2;
	}
	struct k_cmd_req req = { .commit_id = commit_id, .qid = (uint16_t)t->qid };
	memcpy(sqe->cmd, &req, sizeof(req));
	t->sq_array[idx] = idx;
	atomic_store_explicit((_Atomic unsigned *)t->sq_tail, tail + 1, memory_order_release);
	t->to_submit++;
}

/* Submits what is queued and, if wait, waits for one completion. Returns
 * 0 or -errno (-EINTR: a signal came while waiting). */
static int ring_enter(struct ring_thread *t, bool wait)
{
	int n = sys_io_uring_enter(t->fd, t->to_submit, wait ? 1 : 0, wait ? IORING_ENTER_GETEVENTS : 0);
	if (n < 0)
		return -errno;
	t->to_submit -= (unsigned)n < t->to_submit ? (unsigned)n : t->to_submit;
	return 0;
}

/* Takes the next completion, if any. */
static bool ring_reap(struct ring_thread *t, struct io_uring_cqe *out)
{
	unsigned head = *t->cq_head;
	unsigned tail = atomic_load_explicit((_Atomic unsigned *)t->cq_tail, memory_order_acquire);
	if (head == tail)
		return false;
	*out = t->cqes[head & *t->cq_mask];
	atomic_store_explicit((_Atomic unsigned *)t->cq_head, head + 1, memory_order_release);
	return true;
}

bool fuseuring_take_reply(const struct iovec *iov, int count, ssize_t *res)
{
	struct ring_thread *t = serving_thread;
	struct k_out_header oh;
	if (t == NULL || !t->serving || count < 1 || iov[0].iov_len != sizeof(oh))
		return false;
	memcpy(&oh, iov[0].iov_base, sizeof(oh));
	if (oh.unique != t->unique || t->replied)
		return false;
	size_t n = 0;
	for (int i = 1; i < count; i++) {
		if (iov[i].iov_len > t->u->payload_size - n) {
			/* Larger than the kernel's buffer: it would refuse it. */
			t->oh = (struct k_out_header){ sizeof(oh), -EIO, oh.unique };
			t->reply_len = 0;
			t->replied = true;
			*res = (ssize_t)(sizeof(oh) + n);
			return true;
		}
		memcpy(t->reply + n, iov[i].iov_base, iov[i].iov_len);
		n += iov[i].iov_len;
	}
	t->oh = oh;
	t->reply_len = n;
	t->replied = true;
	*res = (ssize_t)(sizeof(oh) + n);
	return true;
}

/* Runs the handler of the request the entry holds and queues its commit. */
static void serve(struct ring_thread *t)
{
	struct k_in_header in;
	struct k_ent_in_out eio;
	memcpy(&in, t->hdr->in_out, sizeof(in));
	memcpy(&eio, &t->hdr->ent, sizeof(eio));
	size_t psz = eio.payload_sz;
	t->unique = in.unique;
	t->replied = false;
	if (psz > t->u->payload_size || in.len < sizeof(in) + psz || in.len - sizeof(in) - psz > K_OP_IN_SZ) {
		LOG_WARN("fuse", "msg=\"malformed io_uring request; answered EIO\" opcode=%u len=%u payload=%zu",
			 in.opcode, in.len, psz);
		t->oh = (struct k_out_header){ sizeof(t->oh), -EIO, in.unique };
		t->reply_len = 0;
		t->replied = true;
	} else {
		size_t op_size = in.len - sizeof(in) - psz;
		char *msg = t->payload - sizeof(in) - op_size;
		memcpy(msg, &in, sizeof(in));
		memcpy(msg + sizeof(in), t->hdr->op_in, op_size);
		struct fuse_buf buf = { .size = in.len, .mem = msg };
		t->serving = true;
		fuse_session_process_buf(t->u->se, &buf);
		t->serving = false;
		if (!t->replied) {
			LOG_WARN("fuse", "msg=\"a request was not answered; answered EIO\" opcode=%u", in.opcode);
			t->oh = (struct k_out_header){ sizeof(t->oh), -EIO, in.unique };
			t->reply_len = 0;
		}
	}
	memcpy(t->hdr->in_out, &t->oh, sizeof(t->oh));
	memcpy(t->payload, t->reply, t->reply_len);
	eio.payload_sz = (uint32_t)t->reply_len;
	memcpy(&t->hdr->ent, &eio, sizeof(eio));
	atomic_fetch_add_explicit(&t->u->served, 1, memory_order_relaxed);
	ring_queue_cmd(t, K_CMD_COMMIT_AND_FETCH, eio.commit_id, UD_COMMIT);
}

static void report(struct fuseuring *u, int rc)
{
	pthread_mutex_lock(&u->mu);
	u->n_ready++;
	if (rc != 0 && u->first_err == 0)
		u->first_err = rc;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->mu);
}

static void *ring_main(void *arg)
{
	struct ring_thread *t = arg;
	struct fuseuring *u = t->u;
	sigset_t wake;
	sigemptyset(&wake);
	sigaddset(&wake, u->wake_signal);
	pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
	serving_thread = t;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(t->qid, &set);
	(void)sched_setaffinity(0, sizeof(set), &set); /* a CPU set that excludes it: run anywhere */
	int rc = ring_open(t);
	if (rc == 0) {
		ring_queue_cmd(t, K_CMD_REGISTER, 0, UD_REGISTER);
		rc = ring_enter(t, false);
		struct io_uring_cqe cqe;
		if (rc == 0 && ring_reap(t, &cqe)) /* completes at once only when refused */
			rc = cqe.res < 0 ? cqe.res : -EPROTO;
	}
	report(u, rc);
	if (rc != 0)
		goto out;
	for (;;) {
		bool stopping = atomic_load(&u->stopping);
		rc = ring_enter(t, !stopping);
		if (rc != 0 && rc != -EINTR) {
			LOG_WARN("fuse", "msg=\"io_uring wait failed; this ring thread stops\" qid=%d err=\"%s\"", t->qid,
				 strerror(-rc));
			break;
		}
		struct io_uring_cqe cqe;
		if (!ring_reap(t, &cqe)) {
			if (stopping)
				break;
			continue;
		}
		if (cqe.res == -ENOTCONN || cqe.res == -ECANCELED || cqe.res == -ENODEV)
			break; /* the connection ended */
		if (cqe.res < 0) {
			/* The kernel refused the command; the entry is ours again.
			 * Hand it back once; if that is refused too, stop. */
			LOG_WARN("fuse", "msg=\"io_uring command refused\" qid=%d cmd=%s err=\"%s\"", t->qid,
				 cqe.user_data == UD_REGISTER ? "register" : "commit", strerror(-cqe.res));
			if (cqe.user_data == UD_REGISTER)
				break;
			ring_queue_cmd(t, K_CMD_REGISTER, 0, UD_REGISTER);
			continue;
		}
		serve(t);
		if (atomic_load(&u->stopping)) {
			(void)ring_enter(t, false); /* the reply goes; no more requests */
			break;
		}
	}
out:
	serving_thread = NULL;
	ring_close(t);
	return NULL;
}

static int possible_cpus(void)
{
	/* The kernel has one queue per possible CPU ("0-1", "0-3,8-11"). */
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	int max = -1;
	if (f != NULL) {
		int a, b;
		char sep;
		while (fscanf(f, "%d", &a) == 1) {
			b = a;
			if (fscanf(f, "%c", &sep) == 1 && sep == '-' && fscanf(f, "%d", &b) == 1)
				(void)fscanf(f, "%c", &sep);
			if (b > max)
				max = b;
		}
		fclose(f);
	}
	if (max < 0) {
		long n = sysconf(_SC_NPROCESSORS_CONF);
		max = n > 0 ? (int)n - 1 : 0;
	}
	return max + 1;
}

static void stop_threads(struct fuseuring *u)
{
	atomic_store(&u->stopping, true);
	for (int i = 0; i < u->n_threads; i++) {
		struct ring_thread *t = &u->threads[i];
		if (!t->started)
			continue;
		for (;;) {
			struct timespec ts = clock_deadline(50);
			if (pthread_timedjoin_np(t->tid, NULL, &ts) == 0)
				break;
			pthread_kill(t->tid, u->wake_signal);
		}
		t->started = false;
	}
}

int fuseuring_start(struct fuse_session *se, int devfd, size_t payload_size, int wake_signal,
		    struct fuseuring **out)
{
	*out = NULL;
	if (payload_size < 8192 || payload_size > (64u << 20))
		return -EINVAL;
	struct fuseuring *u = calloc(1, sizeof(*u));
	if (u == NULL)
		return -ENOMEM;
	u->se = se;
	u->devfd = devfd;
	u->payload_size = payload_size;
	u->wake_signal = wake_signal;
	pthread_mutex_init(&u->mu, NULL);
	pthread_cond_init(&u->cond, NULL);
	int n_queues = possible_cpus();
	int per_queue = FUSEURING_THREADS / n_queues < 2 ? 2 : FUSEURING_THREADS / n_queues;
	u->threads = calloc((size_t)(n_queues * per_queue), sizeof(*u->threads));
	if (u->threads == NULL) {
		fuseuring_free(u);
		return -ENOMEM;
	}
	int rc = 0, n_started = 0;
	for (int q = 0; q < n_queues && rc == 0; q++) {
		for (int k = 0; k < per_queue && rc == 0; k++) {
			struct ring_thread *t = &u->threads[u->n_threads++];
			t->u = u;
			t->qid = q;
			t->fd = -1;
			t->hdr = aligned_alloc(64, sizeof(*t->hdr));
			t->mem = malloc(FRONT + payload_size);
			t->reply = malloc(payload_size);
			if (t->hdr == NULL || t->mem == NULL || t->reply == NULL) {
				rc = -ENOMEM;
				break;
			}
			memset(t->hdr, 0, sizeof(*t->hdr));
			t->payload = t->mem + FRONT;
			t->iov[0] = (struct iovec){ t->hdr, sizeof(*t->hdr) };
			t->iov[1] = (struct iovec){ t->payload, payload_size };
			if ((rc = -pthread_create(&t->tid, NULL, ring_main, t)) == 0) {
				t->started = true;
				n_started++;
			}
		}
	}
	/* Wait until every thread has registered its entry or failed. */
	pthread_mutex_lock(&u->mu);
	while (u->n_ready < n_started)
		pthread_cond_wait(&u->cond, &u->mu);
	if (rc == 0)
		rc = u->first_err;
	pthread_mutex_unlock(&u->mu);
	if (rc != 0) {
		fuseuring_free(u);
		return rc;
	}
	*out = u;
	return 0;
}

unsigned long fuseuring_served(const struct fuseuring *u)
{
	return u == NULL ? 0 : atomic_load(&((struct fuseuring *)u)->served);
}

void fuseuring_free(struct fuseuring *u)
{
	if (u == NULL)
		return;
	stop_threads(u);
	for (int i = 0; i < u->n_threads; i++) {
		free(u->threads[i].hdr);
		free(u->threads[i].mem);
		free(u->threads[i].reply);
	}
	free(u->threads);
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->cond);
	free(u);
}
