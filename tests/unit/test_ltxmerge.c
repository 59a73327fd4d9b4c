/*
 * test_ltxmerge.c — unit tests of ltxmerge.c: random chains (growth,
 * sparse growth, shrinking, deletion, regrowth after a cut, compressed or
 * not) merge into exactly the bytes and checksum of the in-memory model
 * applied file by file, through both ltxmerge_read() (random buffer sizes)
 * and ltxmerge_next() (with each page's whole CRC); and every broken chain is refused before the last
 * page is handed out: a flipped byte anywhere in any file, a wrong
 * post-apply checksum of an intermediate file, a wrong pre-apply
 * checksum, a TXID gap or overlap, another page size, a wanted position
 * that is not the chain's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "ltx/ltx.h"
#include "ltx/ltxmerge.h"
#include "testutil.h"

#define MAX_FILES 16

struct chain {
	struct ltx_growbuf f[MAX_FILES];
	size_t n;
	struct model final;
	struct ltx_pos pos;
};

static void fill_page(uint8_t *page, uint32_t ps)
{
	if (rnd_below(5) == 0) {
		memset(page, (int)rnd_below(3), ps);
		return;
	}
	for (uint32_t i = 0; i < ps; i += 8) {
		uint64_t v = rnd();
		memcpy(page + i, &v, 8);
	}
}

/* One file of TXIDs txid..txid+span-1 on m: growth (sometimes without
 * writing the new pages), changed pages, a cut, or deletion. bad_post:
 * encode a wrong post-apply checksum. */
static void add_file(struct chain *c, struct model *m, uint64_t txid, uint64_t span, bool bad_post)
{
	uint32_t ps = m->page_size, old_n = m->n_pages, commit = old_n, r = rnd_below(100);
	uint64_t pre = model_checksum(m);
	if (r < 40)
		commit = old_n + rnd_below(8);
	else if (r < 70)
		commit = old_n > 0 ? old_n - rnd_below(old_n < 6 ? old_n + 1 : 6) : 0;
	else if (r < 74)
		commit = 0;
	if (commit > 60)
		commit = 60;
	if (bad_post && commit == 0)
		commit = 1; /* commit 0 has one valid post-apply checksum only */
	bool sparse = rnd_below(3) == 0;
	model_resize(m, commit);
	uint32_t pgnos[64];
	size_t n = 0;
	for (uint32_t p = 1; p <= commit; p++) {
		if ((p > old_n && !sparse) || rnd_below(100) < 30) {
			fill_page(model_page(m, p), ps);
			pgnos[n++] = p;
		}
	}
	struct ltx_header h = { .flags = rnd_below(2) ? LTX_FLAG_COMPRESS : 0, .page_size = ps, .commit = commit,
				.min_txid = txid, .max_txid = txid + span - 1, .timestamp_ms = 1700000000000,
				.pre_apply_checksum = pre };
	uint64_t post = model_checksum(m);
	encode_ltx(&c->f[c->n++], &h, m, pgnos, n, bad_post ? post ^ 0x10 : post);
}

/* A snapshot then n_more files; bad_post_at: index of a file encoded with
 * a wrong post-apply checksum (0: none). */
static void make_chain(struct chain *c, uint32_t ps, size_t n_more, size_t bad_post_at)
{
	memset(c, 0, sizeof(*c));
	struct model m = { .page_size = ps };
	model_resize(&m, 1 + rnd_below(40));
	for (uint32_t p = 1; p <= m.n_pages; p++)
		fill_page(model_page(&m, p), ps);
	uint64_t txid = 1 + rnd_below(3);
	encode_model_snapshot(&c->f[c->n++], &m, txid, rnd_below(2));
	for (size_t i = 0; i < n_more; i++) {
		uint64_t span = 1 + rnd_below(3);
		add_file(c, &m, txid + 1, span, c->n == bad_post_at);
		txid += span;
	}
	c->pos = (struct ltx_pos){ txid, model_checksum(&m) };
	c->final = m;
}

static void free_chain(struct chain *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->f[i].data);
	model_free(&c->final);
}

struct merge_run {
	struct ltx_membuf mb[MAX_FILES];
	struct ltxmerge_input in[MAX_FILES];
};

static int merge_new(struct merge_run *r, struct chain *c, struct ltxmerge **m, const struct ltx_pos *want)
{
	for (size_t i = 0; i < c->n; i++) {
		r->mb[i] = (struct ltx_membuf){ .data = c->f[i].data, .len = c->f[i].len };
		r->in[i] = (struct ltxmerge_input){ ltx_membuf_read, &r->mb[i] };
	}
	return ltxmerge_new(m, r->in, c->n, want);
}

/* Reads the whole merge; returns the first error or 0; *len: bytes got. */
static int read_all(struct ltxmerge *m, uint8_t *out, size_t cap, size_t *len, uint32_t ps)
{
	*len = 0;
	for (;;) {
		size_t max = ps * (1 + rnd_below(5));
		if (max > cap - *len)
			max = cap - *len < ps ? ps : cap - *len;
		ssize_t n = ltxmerge_read(m, out + *len, max);
		if (n <= 0)
			return (int)n;
		*len += (size_t)n;
		assert_true(*len <= cap);
	}
}

static void test_random_chains(void **state)
{
	(void)state;
	seed(31);
	for (int iter = 0; iter < 300; iter++) {
		uint32_t ps = 512u << rnd_below(3);
		struct chain c;
		make_chain(&c, ps, rnd_below(MAX_FILES), 0);
		size_t size = (size_t)c.final.n_pages * ps;
		uint8_t *out = malloc(size + ps);
		struct merge_run r;
		struct ltxmerge *m;
		size_t len;
		assert_int_equal(merge_new(&r, &c, &m, &c.pos), 0);
		assert_int_equal(ltxmerge_header(m)->commit, c.final.n_pages);
		assert_int_equal(read_all(m, out, size + ps, &len, ps), 0);
		assert_int_equal(len, size);
		if (size)
			assert_memory_equal(out, c.final.data, size);
		assert_int_equal(ltxmerge_pos(m).txid, c.pos.txid);
		assert_int_equal(ltxmerge_pos(m).checksum, c.pos.checksum);
		assert_int_equal(ltxmerge_read(m, out, ps), 0);
		ltxmerge_free(m);

		/* Page by page: every page once, in order, with its checksum. */
		assert_int_equal(merge_new(&r, &c, &m, NULL), 0);
		uint32_t pgno, want = 1;
		const uint8_t *page;
		uint64_t sum, chk = LTX_CHECKSUM_FLAG;
		int rc;
		while ((rc = ltxmerge_next(m, &pgno, &page, &sum)) == 1) {
			assert_int_equal(pgno, want++);
			assert_memory_equal(page, model_page(&c.final, pgno), ps);
			assert_int_equal(sum, ltx_page_checksum(pgno, page, ps));
			/* The whole CRC too, also of a last page held back while
			 * the longer files are drained. */
			assert_int_equal(ltxmerge_page_crc(m), ltx_page_crc(pgno, page, ps));
			chk ^= sum;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(want, c.final.n_pages + 1);
		assert_int_equal(LTX_CHECKSUM_FLAG | chk, c.pos.checksum);
		ltxmerge_free(m);
		free(out);
		free_chain(&c);
	}
}

/* The merge fails with an error, and never hands out the whole state.
 * same_ok: a success is allowed if it gives exactly the right state (a
 * flipped LZ4 byte that decodes to the same pages; the file checksum
 * covers the decoded content). */
static void assert_refused(struct chain *c, const struct ltx_pos *want, bool same_ok)
{
	struct merge_run r;
	struct ltxmerge *m;
	uint32_t ps = c->final.page_size;
	size_t size = (size_t)c->final.n_pages * ps, len = 0;
	uint8_t *out = malloc(size + 64 * 1024);
	int rc = merge_new(&r, c, &m, want);
	if (rc == 0)
		rc = read_all(m, out, size + 64 * 1024, &len, ps);
	if (rc == 0 && same_ok && len == size && (size == 0 || memcmp(out, c->final.data, size) == 0)) {
		ltxmerge_free(m);
		free(out);
		return;
	}
	assert_true(rc < 0);
	assert_true(len < size || size == 0);
	ltxmerge_free(m);
	free(out);
}

static void test_broken_chains(void **state)
{
	(void)state;
	seed(32);
	for (int iter = 0; iter < 40; iter++) {
		struct chain c;
		/* A wrong post-apply checksum anywhere after the snapshot. */
		size_t n_more = 2 + rnd_below(6);
		make_chain(&c, 1024, n_more, 1 + rnd_below((uint32_t)n_more));
		assert_refused(&c, &c.pos, false);
		free_chain(&c);
	}
	seed(33);
	for (int iter = 0; iter < 12; iter++) {
		struct chain c;
		make_chain(&c, 512, 3 + rnd_below(5), 0);
		/* A wanted position that is not the chain's. */
		struct ltx_pos other = { c.pos.txid, c.pos.checksum ^ 1 };
		assert_refused(&c, &other, false);
		other = (struct ltx_pos){ c.pos.txid + 1, c.pos.checksum };
		assert_refused(&c, &other, false);
		/* Every byte of one file flipped in turn. */
		size_t k = rnd_below((uint32_t)c.n);
		for (size_t off = 0; off < c.f[k].len; off += 1 + rnd_below(7)) {
			c.f[k].data[off] ^= 0x04;
			assert_refused(&c, &c.pos, true);
			c.f[k].data[off] ^= 0x04;
		}
		/* A file dropped: a TXID gap, or the pre-apply checksum. */
		if (c.n > 2) {
			struct ltx_growbuf keep = c.f[1];
			memmove(&c.f[1], &c.f[2], (c.n - 2) * sizeof(c.f[0]));
			c.n--;
			assert_refused(&c, &c.pos, false);
			c.n++;
			memmove(&c.f[2], &c.f[1], (c.n - 2) * sizeof(c.f[0]));
			c.f[1] = keep;
		}
		/* A file twice: an overlap. */
		if (c.n < MAX_FILES && c.n > 1) {
			c.f[c.n] = c.f[c.n - 1];
			c.n++;
			assert_refused(&c, NULL, false);
			c.n--;
		}
		/* A snapshot that is not first. */
		if (c.n > 1) {
			struct ltx_growbuf t = c.f[0];
			c.f[0] = c.f[1];
			c.f[1] = t;
			assert_refused(&c, NULL, false);
			c.f[1] = c.f[0];
			c.f[0] = t;
		}
		free_chain(&c);
	}
}

/* A later file with another page size is refused at the start. */
static void test_page_size_mismatch(void **state)
{
	(void)state;
	seed(34);
	struct chain a, b;
	make_chain(&a, 512, 2, 0);
	make_chain(&b, 1024, 2, 0);
	struct ltx_growbuf t = a.f[1];
	a.f[1] = b.f[1];
	struct merge_run r;
	struct ltxmerge *m;
	int rc = merge_new(&r, &a, &m, NULL);
	assert_true(rc == ERR_LTX_PAGE_SIZE_MISMATCH || rc == ERR_LTX_NOT_CONTIGUOUS || rc == ERR_LTX_OVERLAP);
	ltxmerge_free(m);
	a.f[1] = t;
	free_chain(&a);
	free_chain(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_chains),
		cmocka_unit_test(test_broken_chains),
		cmocka_unit_test(test_page_size_mismatch),
	};
	return RUN_IN_TMP_DIR("test_ltxmerge", tests);
}
