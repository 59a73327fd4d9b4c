/*
 * test_pagesums.c — unit tests of pagesums.c: the kept page checksums
 * always equal those of the file (checked against a fresh
 * pagesums_build() and the in-memory model of testutil), applies of
 * random chains give the model's bytes and checksum whether pages are
 * staged in memory (grown, or in a lent buffer) or decoded again from the
 * replay file, and every
 * rejected file (bit flips, truncation, wrong position, a replay file
 * that differs) leaves the database and the sums as they were — or, when
 * the replay pass finds a difference after writing began, reports
 * db_changed and empties the sums.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "ltx/dbfile.h"
#include "ltx/ltx.h"
#include "ltx/pagesums.h"
#include "testutil.h"

static void fill_page(uint8_t *page, uint32_t ps)
{
	switch (rnd_below(4)) {
	case 0:
		memset(page, 0, ps);
		break;
	case 1:
		memset(page, (int)rnd_below(256), ps);
		break;
	default:
		for (uint32_t i = 0; i < ps; i += 8) {
			uint64_t v = rnd();
			memcpy(page + i, &v, 8);
		}
	}
}

/* A random transaction on m, encoded as LTX txid: growth (sometimes
 * sparse), changed pages, shrinking, deletion. */
static void random_txn(struct ltx_growbuf *out, struct model *m, uint64_t txid, uint32_t max_n)
{
	uint32_t ps = m->page_size, old_n = m->n_pages, commit = old_n, r = rnd_below(100);
	uint64_t pre = model_checksum(m);
	if (r < 45)
		commit = old_n + rnd_below(6);
	else if (r < 70)
		commit = old_n > 0 ? old_n - rnd_below(old_n < 4 ? old_n + 1 : 4) : 0;
	else if (r < 74)
		commit = 0;
	if (commit > max_n)
		commit = max_n;
	bool sparse = rnd_below(3) == 0;
	model_resize(m, commit);
	uint32_t *pgnos = malloc(sizeof(uint32_t) * (commit + 1));
	size_t n = 0;
	for (uint32_t p = 1; p <= commit; p++) {
		if ((p > old_n && !sparse) || rnd_below(100) < 35) {
			fill_page(model_page(m, p), ps);
			pgnos[n++] = p;
		}
	}
	struct ltx_header h = { .flags = rnd_below(2) ? LTX_FLAG_COMPRESS : 0, .page_size = ps, .commit = commit,
				.min_txid = txid, .max_txid = txid, .timestamp_ms = 1700000000000 + (int64_t)txid,
				.pre_apply_checksum = pre };
	encode_ltx(out, &h, m, pgnos, n, model_checksum(m));
	free(pgnos);
}

static void count_call(void *ctx)
{
	(*(int *)ctx)++;
}

/* Applies ltx with a replay file holding the same bytes (or none). With
 * a replay file, half the time through pagesums_apply_io() with a lent
 * stage of 0 to 12 pages and a bit (the pages that do not fit are
 * replayed), and the validated callback must then run exactly once when
 * the apply got to writing (and never when it was refused before). */
static int apply(struct pagesums *s, int db, const struct ltx_growbuf *ltx, bool replay,
		 struct dbfile_apply_result *res)
{
	struct ltx_membuf mb = { .data = ltx->data, .len = ltx->len };
	int rfd = -1, rc;
	if (replay) {
		rfd = new_file("replay.ltx");
		write_all(rfd, ltx->data, ltx->len);
	}
	if (replay && rnd_below(2)) {
		int calls = 0;
		size_t cap = (size_t)rnd_below(13) * 4096 + rnd_below(600);
		uint8_t *stage = malloc(cap ? cap : 1);
		struct pagesums_io io = { .replay_fd = rfd, .stage = stage, .stage_cap = cap, .validated = count_call,
					  .ctx = &calls };
		rc = pagesums_apply_io(s, db, ltx_membuf_read, &mb, &io, res);
		assert_int_equal(calls, rc == 0 || res->db_changed ? 1 : 0);
		free(stage);
	} else {
		rc = pagesums_apply(s, db, ltx_membuf_read, &mb, rfd, res);
	}
	if (rfd >= 0)
		close(rfd);
	return rc;
}

/* The kept sums are exactly those of the file. */
static void assert_sums_match(const struct pagesums *s, int db, const struct model *m)
{
	struct pagesums fresh = { 0 };
	uint64_t chk;
	assert_int_equal(pagesums_build(&fresh, db, m->page_size, s->pos, &chk), 0);
	assert_int_equal(fresh.n, s->n);
	assert_int_equal(s->n, m->n_pages);
	if (s->n)
		assert_memory_equal(fresh.sum, s->sum, s->n * sizeof(uint64_t));
	assert_int_equal(chk, pagesums_checksum(s));
	pagesums_clear(&fresh);
}

static void test_random_chains(void **state)
{
	(void)state;
	seed(21);
	for (int iter = 0; iter < 24; iter++) {
		uint32_t ps = 512u << rnd_below(4);
		uint32_t max_n = 40;
		struct model m = { .page_size = ps };
		model_resize(&m, 1 + rnd_below(max_n));
		for (uint32_t p = 1; p <= m.n_pages; p++)
			fill_page(model_page(&m, p), ps);
		struct pagesums s = { 0 };
		/* Half the runs stage at most 3 pages: the replay pass. */
		s.stage_max = iter & 1 ? 3 * ps : 0;
		int db = new_file("chain.db");
		struct ltx_growbuf g;
		struct dbfile_apply_result res;
		encode_model_snapshot(&g, &m, 1, iter & 2);
		assert_int_equal(apply(&s, db, &g, true, &res), 0);
		free(g.data);
		assert_int_equal(res.pos.checksum, model_checksum(&m));
		assert_fd_content(db, m.data, (size_t)m.n_pages * ps);
		assert_sums_match(&s, db, &m);
		for (uint64_t txid = 2; txid <= 30; txid++) {
			random_txn(&g, &m, txid, max_n);
			assert_int_equal(apply(&s, db, &g, rnd_below(4) != 0, &res), 0);
			free(g.data);
			assert_int_equal(res.pos.txid, txid);
			assert_int_equal(res.pos.checksum, model_checksum(&m));
			assert_int_equal(s.pos.checksum, res.pos.checksum);
			assert_fd_content(db, m.data, (size_t)m.n_pages * ps);
			assert_sums_match(&s, db, &m);
		}
		/* A snapshot of another state replaces everything. */
		struct model m2 = { .page_size = ps };
		model_resize(&m2, 1 + rnd_below(max_n));
		for (uint32_t p = 1; p <= m2.n_pages; p++)
			fill_page(model_page(&m2, p), ps);
		encode_model_snapshot(&g, &m2, 40, true);
		assert_int_equal(apply(&s, db, &g, true, &res), 0);
		free(g.data);
		assert_fd_content(db, m2.data, (size_t)m2.n_pages * ps);
		assert_sums_match(&s, db, &m2);
		pagesums_clear(&s);
		close(db);
		model_free(&m);
		model_free(&m2);
	}
}

/* Every rejected file leaves the database and the sums untouched. */
static void test_rejected_unchanged(void **state)
{
	(void)state;
	seed(22);
	const uint32_t ps = 1024;
	struct model m = { .page_size = ps };
	model_resize(&m, 12);
	for (uint32_t p = 1; p <= m.n_pages; p++)
		fill_page(model_page(&m, p), ps);
	struct pagesums s = { .stage_max = 2 * ps };
	int db = new_file("rej.db");
	struct ltx_growbuf g;
	struct dbfile_apply_result res;
	encode_model_snapshot(&g, &m, 1, true);
	assert_int_equal(apply(&s, db, &g, true, &res), 0);
	free(g.data);

	struct model after = model_copy(&m);
	random_txn(&g, &after, 2, 20);
	uint64_t *sums = malloc(s.n * sizeof(uint64_t));
	memcpy(sums, s.sum, s.n * sizeof(uint64_t));
	const uint32_t n = s.n;
	for (size_t pos = 0; pos < g.len; pos++) {
		g.data[pos] ^= 0x10;
		int rc = apply(&s, db, &g, pos & 1, &res);
		g.data[pos] ^= 0x10;
		if (rc == 0) {
			/* Only an LZ4 flip that decodes to the same bytes; then
			 * back to the old state for the next flip. */
			assert_true(g.data[7] & LTX_FLAG_COMPRESS);
			assert_true(pos >= LTX_HEADER_SIZE && pos < g.len - LTX_TRAILER_SIZE);
			assert_int_equal(ftruncate(db, 0), 0);
			write_all(db, m.data, (size_t)m.n_pages * ps);
			assert_int_equal(pagesums_build(&s, db, ps, (struct ltx_pos){ 1, model_checksum(&m) }, NULL), 0);
			continue;
		}
		assert_false(res.db_changed);
		assert_fd_content(db, m.data, (size_t)m.n_pages * ps);
		assert_int_equal(s.n, n);
		assert_memory_equal(s.sum, sums, n * sizeof(uint64_t));
		assert_int_equal(s.pos.txid, 1);
	}
	for (size_t len = 0; len + 1 < g.len; len += 1 + rnd_below(9)) {
		struct ltx_growbuf cut = { .data = g.data, .len = len };
		assert_true(apply(&s, db, &cut, true, &res) < 0);
		assert_false(res.db_changed);
		assert_fd_content(db, m.data, (size_t)m.n_pages * ps);
		assert_memory_equal(s.sum, sums, n * sizeof(uint64_t));
	}
	/* Position: a gap, an overlap and a wrong pre-apply checksum. */
	struct model other = model_copy(&m);
	struct ltx_growbuf bad;
	random_txn(&bad, &other, 3, 20);
	assert_int_equal(apply(&s, db, &bad, true, &res), ERR_LTX_NOT_CONTIGUOUS);
	free(bad.data);
	model_free(&other);
	s.pos.txid = 2;
	assert_int_equal(apply(&s, db, &g, true, &res), ERR_LTX_OVERLAP);
	s.pos.txid = 1;
	s.pos.checksum ^= 2;
	assert_int_equal(apply(&s, db, &g, true, &res), ERR_LTX_PRE_MISMATCH);
	s.pos.checksum ^= 2;
	assert_fd_content(db, m.data, (size_t)m.n_pages * ps);
	/* Sums that do not describe the file's size: refused, untouched. */
	s.n--;
	assert_int_equal(apply(&s, db, &g, true, &res), ERR_INVAL);
	s.n++;
	assert_fd_content(db, m.data, (size_t)m.n_pages * ps);

	/* The intact file applies. */
	assert_int_equal(apply(&s, db, &g, true, &res), 0);
	assert_fd_content(db, after.data, (size_t)after.n_pages * ps);
	assert_sums_match(&s, db, &after);
	free(g.data);
	free(sums);
	pagesums_clear(&s);
	close(db);
	model_free(&m);
	model_free(&after);
}

/* A replay file that is not the bytes phase 1 verified: the apply fails
 * with db_changed (writing had begun) and the sums are emptied. */
static void test_replay_differs(void **state)
{
	(void)state;
	seed(23);
	const uint32_t ps = 512;
	struct model m = { .page_size = ps };
	model_resize(&m, 16);
	for (uint32_t p = 1; p <= m.n_pages; p++)
		fill_page(model_page(&m, p), ps);
	struct pagesums s = { .stage_max = ps };
	int db = new_file("replay.db");
	struct ltx_growbuf g, g2;
	struct dbfile_apply_result res;
	encode_model_snapshot(&g, &m, 1, false);
	assert_int_equal(apply(&s, db, &g, false, &res), 0);
	free(g.data);

	struct model a = model_copy(&m), b = model_copy(&m);
	uint32_t pg[] = { 2, 3, 9 };
	for (size_t i = 0; i < 3; i++) {
		memset(model_page(&a, pg[i]), 0xa0 + (int)i, ps);
		memset(model_page(&b, pg[i]), 0xa0 + (int)i, ps);
	}
	memset(model_page(&b, 9), 0x55, ps);
	struct ltx_header h = { .page_size = ps, .commit = 16, .min_txid = 2, .max_txid = 2,
				.timestamp_ms = 1700000000000, .pre_apply_checksum = model_checksum(&m) };
	encode_ltx(&g, &h, &a, pg, 3, model_checksum(&a));
	encode_ltx(&g2, &h, &b, pg, 3, model_checksum(&b));
	struct ltx_membuf mb = { .data = g.data, .len = g.len };
	int rfd = new_file("other.ltx");
	write_all(rfd, g2.data, g2.len);
	assert_int_equal(pagesums_apply(&s, db, ltx_membuf_read, &mb, rfd, &res), ERR_LTX_FILE_CHECKSUM);
	assert_true(res.db_changed);
	assert_null(s.sum);
	assert_int_equal(s.n, 0);
	close(rfd);
	free(g.data);
	free(g2.data);
	pagesums_clear(&s);
	close(db);
	model_free(&m);
	model_free(&a);
	model_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_chains),
		cmocka_unit_test(test_rejected_unchanged),
		cmocka_unit_test(test_replay_differs),
	};
	return RUN_IN_TMP_DIR("test_pagesums", tests);
}
