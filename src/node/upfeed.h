/*
 * upfeed.h — how far an upload file has been written, for the threads
 * that read it behind the connection's thread that writes it (an
 * import's record encoder, importrec.h, and its check, importchk.h).
 *
 * The writer announces each new end (upfeed_set) and finally the end of
 * the body (upfeed_end with stop false) or that the upload failed and
 * every reader must give up (stop true). A reader waits until the bytes
 * it wants are in the file (upfeed_wait). The lock is a leaf: nothing
 * else is taken while it is held.
 */
#ifndef LITEFS_UPFEED_H
#define LITEFS_UPFEED_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct upfeed {
	pthread_mutex_t mu; /* guards avail, eof, stop, n_waiting */
	pthread_cond_t more;
	uint64_t avail;     /* bytes of the file written so far */
	bool eof, stop;
	int n_waiting;
};

void upfeed_init(struct upfeed *f);
/* After every reader has ended. */
void upfeed_destroy(struct upfeed *f);
/* The file now holds n_bytes bytes. */
void upfeed_set(struct upfeed *f, uint64_t n_bytes);
/* No more bytes will come; with stop, readers give up at once. */
void upfeed_end(struct upfeed *f, bool stop);
/* Waits until want bytes past off are in the file, the body ended, or
 * the readers were stopped. Returns how many of the want bytes may be
 * read: want, fewer at the end of the body, 0 when stopped. */
size_t upfeed_wait(struct upfeed *f, uint64_t off, size_t want);
/* The readers were stopped. */
bool upfeed_stopped(struct upfeed *f);

#endif
