/*
 * pagesums.h — the page checksums of a database file, kept in memory, so
 * that applying an LTX file never reads the pages it replaces.
 *
 * Why: dbfile_apply() proves the post-apply checksum before it writes,
 * by reading every page an LTX file replaces and hashing it again
 * (chk ^= pc(old) ^ pc(new)). For a large upload to the backup service
 * that read, its CRC and its syscall per page were a third of the work
 * (BENCHMARKS.md, "Ingest of large transactions"). The database checksum
 * is the XOR of the page checksums (LTX.md), so with pc(old) for every
 * page at hand the same proof needs only the new pages, whose checksums
 * the decoder computes anyway for the file checksum.
 *
 * struct pagesums holds pc(p) for p = 1..n of one file (0 for the lock
 * page, which never counts) and the position it describes. It is built by
 * reading the file once (pagesums_build) and kept exact by
 * pagesums_apply(), which applies an LTX file old-or-new like
 * dbfile_apply(): the whole input is decoded and checked (file checksum,
 * decoder rules, the post-apply checksum from the kept sums) before the
 * first byte of the database is written. Decoded pages are staged in
 * memory up to PAGESUMS_STAGE_MAX (or in a buffer the caller lends:
 * pagesums_apply_io()); a larger file is decoded a second time
 * from replay_fd (a file holding the same bytes, e.g. the object the
 * upload is being stored in), and every page of that second pass must
 * have the checksum the first pass verified.
 *
 * I/O only on the caller's descriptors (writes of the database through
 * sys.h, so faults can be injected); no logging.
 */
#ifndef LITEFS_PAGESUMS_H
#define LITEFS_PAGESUMS_H

#include <stdbool.h>
#include <stdint.h>

#include "ltx/dbfile.h"
#include "ltx/ltx.h"

/* Pages staged in memory by one apply (bytes); above, the replay pass. */
#define PAGESUMS_STAGE_MAX (8u << 20)
/* Largest database the sums are kept for (pages): 8 bytes a page, so
 * 256 MiB of memory at most. Larger: ERR_DB_SIZE, use dbfile_apply(). */
#define PAGESUMS_MAX_PAGES (1u << 25)

struct pagesums {
	uint32_t page_size; /* 0 while empty (n == 0) */
	uint32_t n;         /* pages in the file */
	uint64_t *sum;      /* sum[p - 1] = pc(p) with the flag, 0 for the lock page */
	uint32_t cap;
	struct ltx_pos pos; /* the position the file (and the sums) are at */
	size_t stage_max;   /* 0: PAGESUMS_STAGE_MAX (tests set less) */
};

/* Frees the sums and empties s (it may be reused; stage_max is kept).
 * NULL is a no-op. */
void pagesums_clear(struct pagesums *s);

/* Reads all of fd (whole pages of page_size) and fills s, which is at
 * position pos. *checksum (may be NULL) gets the database checksum.
 * Returns 0, ERR_DB_SIZE (not whole pages, or more than
 * PAGESUMS_MAX_PAGES), ERR_LTX_PAGE_SIZE, ERR_IO_SHORT, ERR_NOMEM or
 * -errno; s is empty on error. */
int pagesums_build(struct pagesums *s, int fd, uint32_t page_size, struct ltx_pos pos, uint64_t *checksum);

/* The database checksum the sums add up to. */
uint64_t pagesums_checksum(const struct pagesums *s);

/*
 * Applies the LTX file read through read(ctx) to db_fd, whose content s
 * describes (s->pos is its position and s->n its size in pages; anything
 * else is ERR_INVAL and nothing is touched). replay_fd: a descriptor from
 * which the same bytes can be read again from offset 0 once read() hit the
 * end, or -1 (then every page is staged in memory, whatever its size).
 * Same rules, errors and result as dbfile_apply() (res->written is always
 * NULL here); on success s describes the new content. On error s is
 * unchanged, unless res->db_changed (the database was written half-way):
 * then s is emptied, like the database's trust.
 */
int pagesums_apply(struct pagesums *s, int db_fd, ltx_read_fn read, void *read_ctx, int replay_fd,
		   struct dbfile_apply_result *res);

/* What a caller may add to an apply (pagesums_apply_io()). */
struct pagesums_io {
	int replay_fd; /* as pagesums_apply()'s */
	/* Borrowed, may be NULL: a buffer of stage_cap bytes the pages are
	 * decoded straight into while they fit (no copy, no allocation: a
	 * caller that applies large files one after the other keeps one and
	 * lends it to each). Used only with a replay_fd; when the pages
	 * outgrow it, the replay pass writes them, whatever stage_max says. */
	uint8_t *stage;
	size_t stage_cap;
	/* May be NULL: called once the input is proven good (end of phase 1),
	 * before the first write of the database, e.g. to start making the
	 * input durable while the database is written. */
	void (*validated)(void *ctx);
	void *ctx;
};

/* pagesums_apply() with the options of io. */
int pagesums_apply_io(struct pagesums *s, int db_fd, ltx_read_fn read, void *read_ctx, const struct pagesums_io *io,
		      struct dbfile_apply_result *res);

#endif
