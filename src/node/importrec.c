/*
 * importrec.c — an import's record encoded on its own thread while the
 * body arrives (importrec.h).
 *
 * The connection's thread writes each piece to the upload file and
 * copies it into a bpipe; this thread takes 1 MiB at a time and feeds it
 * to a fullrec encoder. The page size comes from the first 100 bytes; a
 * bad header ends the encoder early (the upload's own check refuses the
 * file with its reason), and the connection's thread then finds
 * bpipe_write failing with -EPIPE and stops feeding.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/bpipe.h"
#include "base/err.h"
#include "ltx/fullrec.h"
#include "ltx/ltx.h"
#include "node/importrec.h"

#define IMPORTREC_PIPE (8u << 20)
#define IMPORTREC_READ (1u << 20)

struct importrec {
	struct bpipe pipe;
	pthread_t thread;
	bool running, closed;
	int fd;
	bool compress;
	struct fullrec *rec;
	int rc; /* the encoder's result, once joined */
};

/* Reads exactly len bytes (fewer only at the end of the body). */
static ssize_t read_full(struct bpipe *p, uint8_t *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = bpipe_read(p, buf + got, len - got);
		if (n <= 0)
			return n < 0 ? n : (ssize_t)got;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static void *importrec_main(void *arg)
{
	struct importrec *r = arg;
	uint8_t *buf = malloc(IMPORTREC_READ);
	int rc = buf ? 0 : ERR_NOMEM;
	ssize_t n = rc ? 0 : read_full(&r->pipe, buf, 100);
	if (rc == 0 && n != 100)
		rc = n < 0 ? (int)n : ERR_IO_SHORT;
	uint32_t ps = 0;
	if (rc == 0) {
		ps = (uint32_t)buf[16] << 8 | buf[17];
		if (ps == 1)
			ps = 65536;
		rc = fullrec_new(&r->rec, r->fd, IMPORTREC_BASE, ps, r->compress);
	}
	if (rc == 0)
		rc = fullrec_feed(r->rec, buf, 100);
	while (rc == 0) {
		n = bpipe_read(&r->pipe, buf, IMPORTREC_READ);
		if (n <= 0) {
			rc = (int)n;
			break;
		}
		rc = fullrec_feed(r->rec, buf, (size_t)n);
	}
	if (rc)
		bpipe_close_read(&r->pipe); /* the writer stops feeding */
	free(buf);
	r->rc = rc;
	return NULL;
}

int importrec_start(struct importrec **out, int fd, bool compress)
{
	*out = NULL;
	struct importrec *r = calloc(1, sizeof(*r));
	if (!r)
		return ERR_NOMEM;
	r->fd = fd;
	r->compress = compress;
	int rc = bpipe_init(&r->pipe, IMPORTREC_PIPE);
	if (rc) {
		free(r);
		return rc;
	}
	if ((rc = pthread_create(&r->thread, NULL, importrec_main, r)) != 0) {
		bpipe_destroy(&r->pipe);
		free(r);
		return -rc;
	}
	r->running = true;
	*out = r;
	return 0;
}

int importrec_feed(struct importrec *r, const void *buf, size_t len)
{
	return bpipe_write(&r->pipe, buf, len);
}

static void importrec_join(struct importrec *r)
{
	if (!r->closed) {
		bpipe_close_write(&r->pipe);
		r->closed = true;
	}
	if (r->running) {
		pthread_join(r->thread, NULL);
		r->running = false;
	}
}

int importrec_end(struct importrec *r, struct fullrec **rec)
{
	*rec = NULL;
	importrec_join(r);
	if (r->rc == 0 && !r->rec)
		r->rc = ERR_IO_SHORT;
	if (r->rc == 0)
		*rec = r->rec;
	return r->rc;
}

void importrec_free(struct importrec *r)
{
	if (!r)
		return;
	if (r->running) {
		bpipe_close_read(&r->pipe); /* a blocked writer, if any, returns */
		importrec_join(r);
	}
	fullrec_free(r->rec);
	bpipe_destroy(&r->pipe);
	free(r);
}
