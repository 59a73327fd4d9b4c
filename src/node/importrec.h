/*
 * importrec.h — an import's record encoded while its body arrives: a
 * thread of its own reads the upload file behind the connection's thread
 * that writes it, computes the page checksums and writes the LTX record
 * (ltx/fullrec.h) into a spool file beside the upload, compressed or
 * not. When the body ends, only the record's header and page 1 remain
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
struct upfeed;

/* Starts the encoding thread reading src_fd (the upload file) as far as
 * feed says it goes and writing into fd (the spool); all three borrowed,
 * valid until importrec_free. 0, ERR_NOMEM or -errno; -EBUSY when as
 * many encoders as the node allows are running. */
int importrec_start(struct importrec **out, struct upfeed *feed, int src_fd, int fd, bool compress);
/* End of the body (upfeed_end of the feed without stop; done here if
 * not yet): waits for the encoder. 0 with *rec (owned by r, valid
 * until importrec_free) when every byte was encoded, else the encoder's
 * error. */
int importrec_end(struct importrec *r, struct fullrec **rec);
/* CPU milliseconds the encoder thread used (0 before importrec_end). */
int64_t importrec_cpu_ms(const struct importrec *r);
/* Stops the encoder if running (upfeed_end of the feed with stop, which
 * stops every other reader of the feed too) and frees r. NULL is a
 * no-op. */
void importrec_free(struct importrec *r);

#endif
