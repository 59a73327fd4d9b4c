/*
 * ltxmerge.h — the state at the end of a chain of LTX files (a snapshot,
 * then files that each follow the one before), produced page by page in
 * ascending page order straight from the files, without applying them one
 * after the other.
 *
 * Why: litefs-cloud exports, restores and rebuilds a past state from a
 * restore plan (a snapshot plus compacted files). Applying the files in
 * turn to a scratch file wrote every page version, then the scratch file
 * was read again to be sent or compared: two or three passes over the
 * database (BENCHMARKS.md, "Restore of 100 MB and 1 GB databases"). The
 * files of a plan each hold their pages in ascending order, so reading
 * them side by side (a k-way merge on the page number) yields, for each
 * page, the version of the newest file that has it; the older versions are
 * decoded (they must be, for the file checksums) but never written.
 *
 * Nothing is given up in checking: every file's own checks (decoder rules,
 * file checksum, a snapshot's pages checksum), the chain (TXIDs contiguous,
 * one page size, each pre-apply checksum equal to the previous file's
 * post-apply checksum) and the post-apply checksum of EVERY file of the
 * chain, i.e. of every intermediate state, not only the last: the merge
 * keeps, per file, the checksum of the state after it (the XOR of the
 * page checksums the decoders compute anyway). The last page of the
 * state is handed out only after all of that verified, so a consumer
 * that sees the whole state knows it is the verified one (a streamed
 * HTTP body that fails is cut short before its last page).
 *
 * Pure: input through ltx_read_fn callbacks, no files, no logging.
 */
#ifndef LITEFS_LTXMERGE_H
#define LITEFS_LTXMERGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ltx/ltx.h"

/* Most files one merge reads at once (a restore plan holds far fewer). */
#define LTXMERGE_MAX_FILES 4096

struct ltxmerge_input {
	ltx_read_fn read;
	void *ctx; /* borrowed; valid until ltxmerge_free() */
};

struct ltxmerge;

/* Starts a merge of the n files of in (in apply order) and reads their
 * headers: the first must be a snapshot and no other; TXIDs contiguous;
 * one page size (ERR_LTX_NOT_CONTIGUOUS, ERR_LTX_OVERLAP,
 * ERR_LTX_PAGE_SIZE_MISMATCH, or the decoder's code). want (may be NULL):
 * the position the chain must reach, checked with the rest before the last
 * page (else ERR_LTX_POST_CHECKSUM). Caller frees with ltxmerge_free()
 * (also after a failure, when *out is set). */
int ltxmerge_new(struct ltxmerge **out, const struct ltxmerge_input *in, size_t n, const struct ltx_pos *want);
void ltxmerge_free(struct ltxmerge *m); /* NULL is a no-op */

/* The last file's header: page size, commit (pages of the final state),
 * max TXID. Valid once ltxmerge_new() returned 0. */
const struct ltx_header *ltxmerge_header(const struct ltxmerge *m);

/* The next page of the final state: every page 1..commit but the lock
 * page. Returns 1 with *pgno, *page (borrowed; valid until the next call)
 * and *sum (its page checksum), 0 when all were returned, or a negative
 * code (sticky). The last page comes only after every check passed. */
int ltxmerge_next(struct ltxmerge *m, uint32_t *pgno, const uint8_t **page, uint64_t *sum);

/* The whole CRC (ltx_page_crc()) of the page ltxmerge_next() returned
 * last: its checksum without the flag, which hides one of its bits. */
uint64_t ltxmerge_page_crc(const struct ltxmerge *m);

/* The final state as bytes (commit * page size in all; the lock page as
 * zeros), for a file or a stream: fills buf with up to max bytes (max at
 * least the page size; whole pages), returns the count, 0 at the end, or a
 * negative code (sticky). */
ssize_t ltxmerge_read(struct ltxmerge *m, uint8_t *buf, size_t max);

/* The whole final state through write(ctx), in pieces of up to cap bytes
 * read into buf (cap at least the page size): 0, or the first error of
 * the merge or of write. */
int ltxmerge_copy(struct ltxmerge *m, ltx_write_fn write, void *ctx, uint8_t *buf, size_t cap);

/* The position reached (max TXID and post-apply checksum of the last
 * file); valid once ltxmerge_next() returned 0 or the last byte was read. */
struct ltx_pos ltxmerge_pos(const struct ltxmerge *m);

#endif
