/*
 * bpipe.h — a bounded byte pipe between two threads of one process: one
 * writer pushes bytes, one reader pulls them (an ltx_read_fn-shaped
 * read), with back-pressure when the buffer is full.
 *
 * Used by the node's snapshot pipe (node/snappipe.c). Why not a
 * socketpair: litefs-cloud once streamed a large upload from the
 * connection's thread into an ingest thread this way (its engine now
 * reads the body from the socket itself: httpd_body_read()). Through a
 * socketpair every byte was copied into the kernel and out again, one
 * send and one recv per network read (about 11 KB on loopback): two
 * copies and ~1,500 syscalls per 8 MB upload, in a VM where a syscall is
 * dear. Here a byte
 * is copied once in and once out in user space, and a thread is woken
 * only when the other one waits.
 *
 * Thread-safe for exactly one writer and one reader. No logging.
 */
#ifndef LITEFS_BPIPE_H
#define LITEFS_BPIPE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct bpipe {
	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t can_read, can_write;
	unsigned char *buf;
	size_t cap, head, len; /* bytes buf[head..head+len) (circular) */
	bool eof;              /* the writer is done */
	bool reader_gone;      /* the reader stopped: writes are refused */
	bool reader_waits, writer_waits;
	size_t want;           /* what the waiting reader waits for */
};

/* A pipe holding up to cap bytes. 0 or ERR_NOMEM. Free with
 * bpipe_destroy(). */
int bpipe_init(struct bpipe *p, size_t cap);
void bpipe_destroy(struct bpipe *p);

/* Copies all len bytes in, waiting for room. 0, or -EPIPE once the
 * reader is gone (the bytes are dropped) or after bpipe_close_write(). */
int bpipe_write(struct bpipe *p, const void *buf, size_t len);
/* End of input: the reader gets what is left, then 0. */
void bpipe_close_write(struct bpipe *p);

/* ltx_read_fn over ctx, a struct bpipe *: waits until len bytes (at
 * most the pipe's size) are there or the writer closed, returns up to len
 * bytes, 0 at the end. */
ssize_t bpipe_read(void *ctx, void *buf, size_t len);
/* The reader is done: pending and later writes return -EPIPE. */
void bpipe_close_read(struct bpipe *p);

#endif
