/*
 * importrec.h — an import's record encoded while its body arrives: the
 * connection's thread hands each piece of the body to a thread of its
 * own (a bpipe), which computes the page checksums and writes the LTX
 * record (ltx/fullrec.h) into a spool file beside the upload, compressed
 * or not. When the body ends, only the record's header and page 1 remain
 * to be written (apply.c, once the import's position is known), and the
 * spool becomes a segment of the chain by a rename (chain_adopt_segment).
 *
 * The spool holds one record: an ltxlog header (IMPORTREC_BASE bytes,
 * written by the apply) and the LTX file after it.
 */
#ifndef LITEFS_IMPORTREC_H
#define LITEFS_IMPORTREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltxlog.h"

#define IMPORTREC_BASE LTXLOG_HDR_SIZE

struct importrec;
struct fullrec;

/* Starts the encoding thread writing into fd (the spool, borrowed).
 * 0, ERR_NOMEM or -errno. */
int importrec_start(struct importrec **out, int fd, bool compress);
/* The next piece of the body. 0, or -EPIPE once the encoder gave up (a
 * file that is no database, a write error): the caller stops feeding and
 * the import encodes from the uploaded file instead. */
int importrec_feed(struct importrec *r, const void *buf, size_t len);
/* End of the body: waits for the encoder. 0 with *rec (owned by r, valid
 * until importrec_free) when every byte was encoded, else the encoder's
 * error. */
int importrec_end(struct importrec *r, struct fullrec **rec);
/* Stops the encoder (if running) and frees r. NULL is a no-op. */
void importrec_free(struct importrec *r);

#endif
