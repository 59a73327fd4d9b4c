/*
 * ownmount.c — threads with a descriptor table of their own for the
 * node's calls into its own mount.
 *
 * Why. A thread of the node that opens (or reads, or closes) a file in
 * the node's own mount sends a FUSE request that one of the node's FUSE
 * workers answers. Once a worker has read the request, the kernel waits
 * for the answer uninterruptibly (fuse's request_wait_answer). If the node
 * is killed (kill -9) at that moment, the worker dies without answering,
 * and the waiting thread can only go when the connection is aborted,
 * which happens when the last /dev/fuse descriptor closes, which happens
 * when the descriptor table holding it is released, which waits for every
 * thread sharing that table to exit, including the waiting one. The
 * process stays a zombie holding the data directory's lock until someone
 * writes to /sys/fs/fuse/connections/N/abort. Seen in CI: a replica killed
 * while its apply opened `<mount>/<db>-shm`.
 *
 * The fix. Those calls run on threads whose descriptor table is not the
 * node's: the first of them unshares its table (unshare(CLONE_FILES)) and
 * closes every descriptor above stderr in its copy, so no /dev/fuse
 * descriptor is in it; the threads it starts share that table. A killed
 * node's other threads then release the node's table, /dev/fuse closes,
 * the kernel aborts the connection, and the waiting call returns an error
 * to a thread that is already being killed.
 *
 * A descriptor opened here is a number in the other table: it may only be
 * used by code that ownmount_call() runs (apply.c keeps its lock
 * descriptors this way). The threads block every signal. They are never
 * stopped: they sleep until the process exits.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "node/ownmount.h"

/* A call blocks its caller, so calls at once never outnumber the
 * threads that make them (a database's apply, a write lock's grant, an
 * import), and a call may wait long for a reader's transaction: a thread
 * is started whenever none is free. This is only a bound against a
 * runaway; past it, calls wait for a free thread. */
#define OWNMOUNT_MAX_THREADS 1024

struct job {
	int (*fn)(void *);
	void *arg;
	int rc;
	bool done;
	struct job *next;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t work;  /* a job was queued */
	pthread_cond_t done;  /* a job finished */
	pthread_cond_t spawn; /* the starter has threads to start */
	struct job *head, *tail;
	int queued, idle, threads, to_start;
	bool ready;  /* the starter has its own table */
	bool failed; /* it could not: calls run on the caller's thread */
} om = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.work = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.spawn = PTHREAD_COND_INITIALIZER,
};

static pthread_once_t om_once = PTHREAD_ONCE_INIT;
static _Thread_local bool on_own_thread;

static void *worker_main(void *arg)
{
	(void)arg;
	on_own_thread = true;
	pthread_mutex_lock(&om.mu);
	for (;;) {
		while (om.head == NULL) {
			om.idle++;
			pthread_cond_wait(&om.work, &om.mu);
			om.idle--;
		}
		struct job *j = om.head;
		om.head = j->next;
		if (om.head == NULL)
			om.tail = NULL;
		om.queued--;
		pthread_mutex_unlock(&om.mu);
		int rc = j->fn(j->arg);
		pthread_mutex_lock(&om.mu);
		j->rc = rc;
		j->done = true;
		pthread_cond_broadcast(&om.done);
	}
	return NULL;
}

static int start_detached(void *(*fn)(void *))
{
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&t, &attr, fn, NULL);
	pthread_attr_destroy(&attr);
	return rc;
}

/* Starts threads on request. Threads it starts share its table. */
static void *starter_main(void *arg)
{
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); /* inherited by the workers */
	bool ok = unshare(CLONE_FILES) == 0;
	int err = errno;
	if (ok && close_range(3, ~0U, 0) != 0) {
		/* Older kernels: close them one by one. */
		long max = sysconf(_SC_OPEN_MAX);
		for (long fd = 3; fd < (max > 0 ? max : 65536); fd++)
			close((int)fd);
	}
	pthread_mutex_lock(&om.mu);
	om.ready = ok;
	om.failed = !ok;
	pthread_cond_broadcast(&om.done);
	if (!ok) {
		pthread_mutex_unlock(&om.mu);
		LOG_WARN("ownmount", "msg=\"cannot give the mount's own calls a descriptor table of their own: a kill -9 "
				     "during one may leave the process unkillable\" err=\"%s\"",
			 strerror(err));
		return NULL;
	}
	for (;;) {
		while (om.to_start == 0)
			pthread_cond_wait(&om.spawn, &om.mu);
		pthread_mutex_unlock(&om.mu);
		int rc = start_detached(worker_main);
		pthread_mutex_lock(&om.mu);
		om.to_start--;
		if (rc == 0) {
			om.threads++;
		} else if (om.threads == 0) {
			om.failed = true; /* queued calls would wait forever */
			pthread_cond_broadcast(&om.done);
		}
	}
	return NULL;
}

static void om_init(void)
{
	int rc = start_detached(starter_main);
	pthread_mutex_lock(&om.mu);
	if (rc != 0)
		om.failed = true;
	while (!om.ready && !om.failed)
		pthread_cond_wait(&om.done, &om.mu);
	pthread_mutex_unlock(&om.mu);
	if (rc != 0)
		LOG_WARN("ownmount", "msg=\"cannot start the mount's own threads: its calls run on the caller's\" "
				     "err=\"%s\"",
			 strerror(rc));
}

int ownmount_call(int (*fn)(void *arg), void *arg)
{
	if (on_own_thread)
		return fn(arg); /* already in the table (a call made by a call) */
	pthread_once(&om_once, om_init);
	struct job j = { .fn = fn, .arg = arg };
	pthread_mutex_lock(&om.mu);
	if (om.failed) {
		pthread_mutex_unlock(&om.mu);
		return fn(arg);
	}
	if (om.tail)
		om.tail->next = &j;
	else
		om.head = &j;
	om.tail = &j;
	om.queued++;
	if (om.queued > om.idle + om.to_start && om.threads + om.to_start < OWNMOUNT_MAX_THREADS) {
		om.to_start++;
		pthread_cond_signal(&om.spawn);
	}
	pthread_cond_signal(&om.work);
	while (!j.done && !om.failed)
		pthread_cond_wait(&om.done, &om.mu);
	bool run_here = !j.done;
	if (run_here) {
		/* No thread could be started: take the job back. */
		struct job **p = &om.head;
		while (*p && *p != &j)
			p = &(*p)->next;
		if (*p)
			*p = j.next;
		om.tail = NULL;
		for (struct job *q = om.head; q; q = q->next)
			om.tail = q;
		om.queued--;
	}
	pthread_mutex_unlock(&om.mu);
	return run_here ? fn(arg) : j.rc;
}

bool ownmount_on_own_thread(void)
{
	return on_own_thread;
}
