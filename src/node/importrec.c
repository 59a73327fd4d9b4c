/*
 * importrec.c — an import's record encoded on its own thread while the
 * body arrives (importrec.h).
 *
 * The connection's thread writes each piece of the body to the upload
 * file and announces how far the file goes (upfeed.h); this thread
 * reads the file behind it, 1 MiB at a time, from the page cache, and
 * feeds a fullrec encoder. The body is copied once into the file and once
 * out of it: the encoder never holds the upload back (the file is the
 * buffer), and if it falls behind it catches up after the body's end
 * (encoder_lag_ms in the log). The page size comes from the first 100
 * bytes; a bad header ends the encoder early (the upload's own check
 * refuses the file with its reason).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "base/fdio.h"
#include "ltx/fullrec.h"
#include "ltx/ltx.h"
#include "node/importrec.h"
#include "node/upfeed.h"

#define IMPORTREC_READ (1u << 20)

struct importrec {
	struct upfeed *feed;  /* borrowed */
	pthread_t thread;
	bool running;
	int src_fd, fd;
	bool compress;
	struct fullrec *rec;
	int rc;         /* the encoder's result, once joined */
	int64_t cpu_ms; /* the encoder thread's CPU time, once joined */
};

static int64_t thread_cpu_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *importrec_main(void *arg)
{
	struct importrec *r = arg;
	uint8_t *buf = malloc(IMPORTREC_READ);
	int rc = buf ? 0 : ERR_NOMEM;
	uint64_t off = 0;
	if (rc == 0 && upfeed_wait(r->feed, 0, 100) < 100)
		rc = ERR_IO_SHORT;
	if (rc == 0 && (rc = fdio_pread_full(r->src_fd, buf, 100, 0)) == 100) {
		uint32_t ps = (uint32_t)buf[16] << 8 | buf[17];
		rc = fullrec_new(&r->rec, r->fd, IMPORTREC_BASE, ps == 1 ? 65536 : ps, r->compress);
	} else if (rc >= 0) {
		rc = ERR_IO_SHORT;
	}
	while (rc == 0) {
		size_t k = upfeed_wait(r->feed, off, IMPORTREC_READ);
		if (k == 0)
			break;
		int n = fdio_pread_full(r->src_fd, buf, k, (off_t)off);
		if (n != (int)k) {
			rc = n < 0 ? n : ERR_IO_SHORT;
			break;
		}
		rc = fullrec_feed(r->rec, buf, k);
		off += k;
	}
	free(buf);
	/* The loop ends at the body's end, every byte encoded, or stopped. */
	if (rc == 0 && upfeed_stopped(r->feed))
		rc = ERR_IO_SHORT;
	r->rc = rc;
	r->cpu_ms = thread_cpu_ms();
	return NULL;
}

/* Encoder threads running at once, across the node: each import would
 * otherwise add a thread beyond the HTTP worker cap, and a client opening
 * many slow imports would multiply them (test_hostile.py's starvation
 * attack). Past the cap an import encodes its record after the upload. */
#define IMPORTREC_MAX 2
static atomic_int n_running;

int importrec_start(struct importrec **out, struct upfeed *feed, int src_fd, int fd, bool compress)
{
	*out = NULL;
	if (atomic_fetch_add(&n_running, 1) >= IMPORTREC_MAX) {
		atomic_fetch_sub(&n_running, 1);
		return -EBUSY;
	}
	struct importrec *r = calloc(1, sizeof(*r));
	if (!r) {
		atomic_fetch_sub(&n_running, 1);
		return ERR_NOMEM;
	}
	r->feed = feed;
	r->src_fd = src_fd;
	r->fd = fd;
	r->compress = compress;
	int rc = pthread_create(&r->thread, NULL, importrec_main, r);
	if (rc) {
		free(r);
		atomic_fetch_sub(&n_running, 1);
		return -rc;
	}
	r->running = true;
	*out = r;
	return 0;
}

static void importrec_join(struct importrec *r, bool stop)
{
	upfeed_end(r->feed, stop);
	if (r->running) {
		pthread_join(r->thread, NULL);
		r->running = false;
		atomic_fetch_sub(&n_running, 1);
	}
}

int importrec_end(struct importrec *r, struct fullrec **rec)
{
	*rec = NULL;
	importrec_join(r, false);
	if (r->rc == 0 && !r->rec)
		r->rc = ERR_IO_SHORT;
	if (r->rc == 0)
		*rec = r->rec;
	return r->rc;
}

int64_t importrec_cpu_ms(const struct importrec *r)
{
	return r->running ? 0 : r->cpu_ms;
}

void importrec_free(struct importrec *r)
{
	if (!r)
		return;
	importrec_join(r, true);
	fullrec_free(r->rec);
	free(r);
}
