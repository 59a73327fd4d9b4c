/*
 * pagesums.c — page checksums kept in memory; apply without reading the
 * replaced pages (pagesums.h says why).
 *
 * Apply, like dbfile_apply(), has two phases:
 *
 *  1. Validate. Decode the whole input. The running checksum starts at
 *     the position's; growth XORs in the zero pages it creates, a shrink
 *     XORs out sum[commit+1..n]; each decoded page p swaps sum[p] (or the
 *     zero page's, beyond the old end) for the checksum the decoder
 *     computed. (pgno, checksum) of every page to write is recorded, and
 *     the page staged in memory while the stage stays under
 *     PAGESUMS_STAGE_MAX (or, in a buffer the caller lends, decoded right
 *     into it while it fits). After the trailer the file checksum (decoder)
 *     and the post-apply checksum are checked. Nothing was written; the
 *     caller's validated hook runs.
 *  2. Write. Extend the file if it grows, write the pages in runs of
 *     consecutive numbers (from the stage, or decoded again from
 *     replay_fd, each page checked against what phase 1 recorded and the
 *     file checksum verified again), shrink it if it shrinks. Then the
 *     recorded checksums go into the sums.
 *
 * Every page of a non-snapshot is written, even one whose checksum did
 * not change: an equal CRC is not proof of equal bytes. All-zero pages
 * beyond the old end of file are skipped (the extension reads as zeros),
 * in both passes by the same rule.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/sys.h"
#include "ltx/pagesums.h"

/* Read and write size of whole-file passes and of runs written in the
 * replay pass; a multiple of every page size. */
#define RUN_BYTES (1u << 20)

static bool is_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

void pagesums_clear(struct pagesums *s)
{
	if (s == NULL)
		return;
	size_t stage_max = s->stage_max;
	free(s->sum);
	memset(s, 0, sizeof(*s));
	s->stage_max = stage_max;
}

static int reserve(struct pagesums *s, uint32_t n)
{
	if (n <= s->cap)
		return 0;
	uint64_t cap = (uint64_t)s->cap + s->cap / 2;
	if (cap < n)
		cap = n;
	if (cap > PAGESUMS_MAX_PAGES)
		cap = PAGESUMS_MAX_PAGES;
	uint64_t *p = realloc(s->sum, cap * sizeof(*p));
	if (p == NULL)
		return ERR_NOMEM;
	s->sum = p;
	s->cap = (uint32_t)cap;
	return 0;
}

/* Sets sum[first..last] to the zero page's checksums (lock page: 0). */
static void fill_zero(struct pagesums *s, const struct dbfile_zero_sum *z, uint32_t first, uint32_t last)
{
	uint32_t lock = ltx_lock_pgno(s->page_size);
	for (uint64_t p = first; p <= last; p++)
		s->sum[p - 1] = p == lock ? 0 : LTX_CHECKSUM_FLAG | dbfile_zero_sum_page(z, (uint32_t)p);
}

int pagesums_build(struct pagesums *s, int fd, uint32_t page_size, struct ltx_pos pos, uint64_t *checksum)
{
	struct stat st;
	struct dbfile_zero_sum z;
	uint8_t *buf = NULL;
	int rc;

	pagesums_clear(s);
	if (!ltx_is_valid_page_size(page_size))
		return ERR_LTX_PAGE_SIZE;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size % page_size != 0 || (uint64_t)st.st_size / page_size > PAGESUMS_MAX_PAGES)
		return ERR_DB_SIZE;
	const uint32_t n = (uint32_t)((uint64_t)st.st_size / page_size), lock = ltx_lock_pgno(page_size);
	const uint32_t per_run = RUN_BYTES / page_size;
	s->page_size = page_size;
	rc = reserve(s, n);
	if (rc == 0 && (buf = malloc(RUN_BYTES)) == NULL)
		rc = ERR_NOMEM;
	dbfile_zero_sum_init(&z, page_size);
	uint64_t x = 0;
	for (uint32_t p = 1; rc == 0 && p <= n;) {
		uint32_t cnt = n - p + 1 < per_run ? n - p + 1 : per_run;
		int got = fdio_pread_full(fd, buf, (size_t)cnt * page_size, (off_t)(p - 1) * page_size);
		if (got < 0) {
			rc = got;
			break;
		}
		if ((size_t)got != (size_t)cnt * page_size) {
			rc = ERR_IO_SHORT;
			break;
		}
		for (uint32_t i = 0; i < cnt; i++, p++) {
			const uint8_t *page = buf + (size_t)i * page_size;
			uint64_t pc = p == lock ? 0
				      : is_zero(page, page_size) ? LTX_CHECKSUM_FLAG | dbfile_zero_sum_page(&z, p)
								 : ltx_page_checksum(p, page, page_size);
			s->sum[p - 1] = pc;
			x ^= pc;
		}
	}
	free(buf);
	if (rc < 0) {
		pagesums_clear(s);
		return rc;
	}
	s->n = n;
	s->pos = pos;
	if (checksum)
		*checksum = LTX_CHECKSUM_FLAG | x;
	return 0;
}

uint64_t pagesums_checksum(const struct pagesums *s)
{
	uint64_t x = 0;
	for (uint32_t i = 0; i < s->n; i++)
		x ^= s->sum[i];
	return LTX_CHECKSUM_FLAG | x;
}

/* ---- Apply ------------------------------------------------------------ */

/* What phase 1 found: the pages to write, in order. */
struct plan {
	uint32_t *pgno;
	uint64_t *pc;
	size_t n, cap;
	struct ltx_growbuf stage; /* their data back to back, while staging */
	uint8_t *lent;   /* or the caller's buffer (pagesums_io.stage) */
	size_t lent_len, lent_cap;
	bool replay;     /* the stage was given up: decode replay_fd again */
};

/* Where the next page is decoded: its place in a lent stage while it
 * fits (plan_add() then copies nothing), else page. */
static uint8_t *plan_slot(const struct plan *pl, uint8_t *page, uint32_t ps)
{
	return !pl->replay && pl->lent && pl->lent_cap - pl->lent_len >= ps ? pl->lent + pl->lent_len : page;
}

static int plan_add(struct plan *pl, uint32_t pgno, uint64_t pc, const uint8_t *page, uint32_t ps, size_t stage_max)
{
	if (pl->n == pl->cap) {
		size_t cap = pl->cap ? pl->cap * 2 : 64;
		uint32_t *a = realloc(pl->pgno, cap * sizeof(*a));
		if (a == NULL)
			return ERR_NOMEM;
		pl->pgno = a;
		uint64_t *b = realloc(pl->pc, cap * sizeof(*b));
		if (b == NULL)
			return ERR_NOMEM;
		pl->pc = b;
		pl->cap = cap;
	}
	pl->pgno[pl->n] = pgno;
	pl->pc[pl->n++] = pc;
	if (pl->replay)
		return 0;
	if (pl->lent) {
		if (page == pl->lent + pl->lent_len)
			pl->lent_len += ps;
		else
			pl->replay = true; /* it did not fit */
		return 0;
	}
	if (stage_max > 0 && pl->stage.len + ps > stage_max) {
		free(pl->stage.data);
		memset(&pl->stage, 0, sizeof(pl->stage));
		pl->replay = true;
		return 0;
	}
	return ltx_growbuf_write(&pl->stage, page, ps);
}

static void plan_free(struct plan *pl)
{
	free(pl->pgno);
	free(pl->pc);
	free(pl->stage.data);
}

static int fail_at(struct dbfile_apply_result *res, int rc, enum dbfile_err_source src, uint64_t offset)
{
	res->err_source = src;
	res->err_offset = offset;
	return rc;
}

/* Header checks against the position and the size of the database. */
static int check_follows(const struct pagesums *s, const struct ltx_header *h, struct dbfile_apply_result *res)
{
	if (ltx_header_is_snapshot(h))
		return 0;
	if (h->min_txid <= s->pos.txid)
		return fail_at(res, ERR_LTX_OVERLAP, DBFILE_ERR_LTX, 16);
	if (h->min_txid != s->pos.txid + 1)
		return fail_at(res, ERR_LTX_NOT_CONTIGUOUS, DBFILE_ERR_LTX, 16);
	if (h->pre_apply_checksum != s->pos.checksum)
		return fail_at(res, ERR_LTX_PRE_MISMATCH, DBFILE_ERR_LTX, 40);
	if (s->n > 0 && h->page_size != s->page_size)
		return fail_at(res, ERR_LTX_PAGE_SIZE_MISMATCH, DBFILE_ERR_LTX, 8);
	return 0;
}

/* Phase 1: decode and verify; fills pl. */
static int validate(const struct pagesums *s, struct ltx_decoder *dec, const struct ltx_header *h,
		    const struct dbfile_zero_sum *z, size_t stage_max, struct plan *pl, struct ltx_trailer *t,
		    struct dbfile_apply_result *res)
{
	const uint32_t ps = h->page_size;
	const bool snapshot = ltx_header_is_snapshot(h);
	const uint32_t old_n = s->n;
	const uint64_t old_size = (uint64_t)s->n * s->page_size;
	uint64_t chk = s->pos.checksum;
	uint8_t *page = malloc(ps);
	int rc = 0;

	if (page == NULL)
		return fail_at(res, ERR_NOMEM, DBFILE_ERR_NONE, 0);
	if (!snapshot && h->commit > old_n)
		chk ^= dbfile_zero_sum_range(z, (uint64_t)old_n + 1, h->commit);
	for (uint32_t p = h->commit + 1; !snapshot && p <= old_n; p++)
		chk ^= s->sum[p - 1];
	for (;;) {
		uint32_t pgno;
		uint8_t *slot = plan_slot(pl, page, ps);
		rc = ltx_decoder_next_page(dec, &pgno, slot);
		if (rc < 0) {
			fail_at(res, rc, DBFILE_ERR_LTX, ltx_decoder_offset(dec));
			break;
		}
		if (rc == 0)
			break;
		const uint64_t pc = ltx_decoder_last_page_checksum(dec);
		if (!snapshot)
			chk = ltx_checksum_swap(chk, pgno <= old_n ? s->sum[pgno - 1] : dbfile_zero_sum_page(z, pgno),
						pc);
		if ((uint64_t)(pgno - 1) * ps >= old_size && is_zero(slot, ps))
			continue;
		rc = plan_add(pl, pgno, pc, slot, ps, stage_max);
		if (rc < 0) {
			fail_at(res, rc, DBFILE_ERR_NONE, 0);
			break;
		}
	}
	free(page);
	if (rc < 0)
		return rc;
	rc = ltx_decoder_finish(dec, t);
	if (rc < 0)
		return fail_at(res, rc, DBFILE_ERR_LTX, ltx_decoder_offset(dec));
	/* The decoder checked a snapshot's post-apply against its pages. */
	if (!snapshot && (LTX_CHECKSUM_FLAG | chk) != t->post_apply_checksum) {
		uint64_t end = ltx_decoder_offset(dec);
		return fail_at(res, ERR_LTX_POST_CHECKSUM, DBFILE_ERR_LTX, end >= LTX_TRAILER_SIZE ? end - LTX_TRAILER_SIZE : 0);
	}
	return 0;
}

/* Writes n pages of data, numbered from pgno, at their place. */
static int write_run(int db_fd, const uint8_t *data, uint32_t pgno, size_t n, uint32_t ps)
{
	return sys_pwrite_all(db_fd, data, n * ps, (off_t)(pgno - 1) * ps);
}

/* Phase 2 from the stage. */
static int write_staged(const struct plan *pl, int db_fd, uint32_t ps)
{
	const uint8_t *data = pl->lent ? pl->lent : pl->stage.data;
	for (size_t i = 0; i < pl->n;) {
		size_t run = 1;
		while (i + run < pl->n && pl->pgno[i + run] == pl->pgno[i] + run)
			run++;
		int rc = write_run(db_fd, data + i * ps, pl->pgno[i], run, ps);
		if (rc < 0)
			return rc;
		i += run;
	}
	return 0;
}

struct preader {
	int fd;
	off_t off;
};

static ssize_t preader_read(void *ctx, void *buf, size_t len)
{
	struct preader *r = ctx;
	ssize_t n;
	do
		n = pread(r->fd, buf, len, r->off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	r->off += n;
	return n;
}

/* Phase 2 by decoding replay_fd again: every page to write must come back
 * with the checksum phase 1 verified, in the same order, and the file
 * checksum must hold again. Runs of consecutive pages go out in one write. */
static int write_replayed(const struct plan *pl, int replay_fd, int db_fd, uint64_t old_size)
{
	struct preader r = { replay_fd, 0 };
	struct ltx_decoder *dec = NULL;
	struct ltx_header h;
	struct ltx_trailer t;
	uint8_t *run = malloc(RUN_BYTES);
	size_t i = 0, run_n = 0;
	uint32_t run_first = 0;
	int rc = run ? ltx_decoder_new(&dec, preader_read, &r) : ERR_NOMEM;
	if (rc == 0)
		rc = ltx_decoder_header(dec, &h);
	if (rc < 0)
		goto out;
	const uint32_t ps = h.page_size, per_run = RUN_BYTES / ps;
	for (;;) {
		uint32_t pgno;
		uint8_t *slot = run + run_n * ps; /* run_n < per_run here */
		rc = ltx_decoder_next_page(dec, &pgno, slot);
		if (rc <= 0)
			break;
		rc = 0;
		if ((uint64_t)(pgno - 1) * ps >= old_size && is_zero(slot, ps))
			continue;
		if (i >= pl->n || pl->pgno[i] != pgno || pl->pc[i] != ltx_decoder_last_page_checksum(dec)) {
			rc = ERR_LTX_FILE_CHECKSUM;
			break;
		}
		i++;
		if (run_n > 0 && pgno != run_first + run_n) {
			/* The page does not continue the run: write the run,
			 * then move the page to the front. */
			rc = write_run(db_fd, run, run_first, run_n, ps);
			if (rc < 0)
				break;
			memmove(run, slot, ps);
			run_n = 0;
		}
		if (run_n == 0)
			run_first = pgno;
		if (++run_n == per_run) {
			rc = write_run(db_fd, run, run_first, run_n, ps);
			if (rc < 0)
				break;
			run_n = 0;
		}
	}
	if (rc == 0 && run_n > 0)
		rc = write_run(db_fd, run, run_first, run_n, ps);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, &t);
	if (rc == 0 && i != pl->n)
		rc = ERR_LTX_FILE_CHECKSUM;
out:
	ltx_decoder_free(dec);
	free(run);
	return rc;
}

int pagesums_apply(struct pagesums *s, int db_fd, ltx_read_fn read, void *read_ctx, int replay_fd,
		   struct dbfile_apply_result *res)
{
	struct pagesums_io io = { .replay_fd = replay_fd };
	return pagesums_apply_io(s, db_fd, read, read_ctx, &io, res);
}

int pagesums_apply_io(struct pagesums *s, int db_fd, ltx_read_fn read, void *read_ctx, const struct pagesums_io *io,
		      struct dbfile_apply_result *res)
{
	const int replay_fd = io->replay_fd;
	struct ltx_decoder *dec = NULL;
	struct plan pl = { 0 };
	if (replay_fd >= 0 && io->stage) {
		pl.lent = io->stage;
		pl.lent_cap = io->stage_cap;
	}
	struct ltx_header h;
	struct ltx_trailer t;
	struct stat st;
	int rc;

	memset(res, 0, sizeof(*res));
	if (fstat(db_fd, &st) < 0)
		return fail_at(res, -errno, DBFILE_ERR_DB, 0);
	if ((uint64_t)st.st_size != (uint64_t)s->n * s->page_size)
		return fail_at(res, ERR_INVAL, DBFILE_ERR_DB, 0);
	rc = ltx_decoder_new(&dec, read, read_ctx);
	if (rc < 0)
		return fail_at(res, rc, DBFILE_ERR_NONE, 0);
	rc = ltx_decoder_header(dec, &h);
	if (rc < 0) {
		fail_at(res, rc, DBFILE_ERR_LTX, ltx_decoder_offset(dec));
		goto out;
	}
	res->header = h;
	const bool snapshot = ltx_header_is_snapshot(&h);
	rc = check_follows(s, &h, res);
	if (rc == 0 && h.commit > PAGESUMS_MAX_PAGES)
		rc = fail_at(res, ERR_DB_SIZE, DBFILE_ERR_DB, 0);
	struct dbfile_zero_sum z;
	if (rc == 0)
		dbfile_zero_sum_init(&z, h.page_size);
	if (rc == 0)
		rc = validate(s, dec, &h, &z, replay_fd < 0 ? 0 : s->stage_max ? s->stage_max : PAGESUMS_STAGE_MAX, &pl, &t,
			      res);
	if (rc == 0 && reserve(s, h.commit) < 0)
		rc = fail_at(res, ERR_NOMEM, DBFILE_ERR_NONE, 0);
	if (rc < 0)
		goto out;

	/* Phase 2: the input is proven good; write the database. */
	if (io->validated)
		io->validated(io->ctx);
	const uint32_t ps = h.page_size, old_n = s->n;
	const off_t new_size = (off_t)h.commit * ps;
	res->db_changed = true;
	if (new_size > st.st_size && sys_ftruncate(db_fd, new_size) < 0)
		rc = -errno;
	if (rc == 0)
		rc = pl.replay ? write_replayed(&pl, replay_fd, db_fd, (uint64_t)st.st_size)
			       : write_staged(&pl, db_fd, ps);
	if (rc == 0 && new_size < st.st_size && sys_ftruncate(db_fd, new_size) < 0)
		rc = -errno;
	if (rc < 0) {
		fail_at(res, rc, DBFILE_ERR_DB, 0);
		pagesums_clear(s);
		goto out;
	}

	/* The sums follow: zero pages where the file grew (all of it for a
	 * snapshot, which may skip zero pages), then the pages written. */
	s->page_size = ps;
	if (snapshot || h.commit > old_n)
		fill_zero(s, &z, snapshot ? 1 : old_n + 1, h.commit);
	for (size_t i = 0; i < pl.n; i++)
		s->sum[pl.pgno[i] - 1] = pl.pc[i];
	s->n = h.commit;
	s->pos = (struct ltx_pos){ .txid = h.max_txid, .checksum = t.post_apply_checksum };
	res->trailer = t;
	res->pos = s->pos;
	rc = 0;
out:
	ltx_decoder_free(dec);
	plan_free(&pl);
	return rc;
}
