/*
 * ltxmerge.c — the state at the end of a chain of LTX files, by a k-way
 * merge on the page number (contract and rationale: ltxmerge.h).
 *
 * The files are read side by side: each decoder stands on its next page
 * (cur[i], 0 once the file ended). Page numbers p = 1, 2, ... up to the
 * largest commit of any file are visited in order; for each p, walking
 * the files in apply order gives the version of p in the state after each
 * file i:
 *
 *   - file i has p              -> its version (j = i)
 *   - else commit_i < p         -> p is cut off by file i; if a later file
 *                                  grows the database again without
 *                                  writing p, p is a zero page (j = none)
 *   - else                      -> unchanged from the state before (j)
 *
 * and state i counts p in its checksum when p <= commit_i (the lock page
 * never counts, and no file holds it). acc[i] is the running XOR of the
 * page checksums of state i; at the end every acc[i] must equal file i's
 * post-apply checksum and every pre-apply checksum the one before it.
 * The page of the final state is buf[j] (or zeros). Files holding p move
 * on to their next page only when the caller asks for the page after p,
 * so the page handed out stays valid until then.
 *
 * The last page of the final state (LAST) is copied aside, the rest of
 * the files (pages past the final commit that earlier states had) read to
 * their ends, and everything verified before LAST is returned.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "ltx/ltx.h"
#include "ltx/ltxmerge.h"

struct ltxmerge {
	size_t n;
	struct ltx_decoder **dec;
	struct ltx_header *h;
	struct ltx_trailer *t;
	uint32_t *cur;   /* page each decoder stands on; 0: its file ended */
	uint64_t *csum;  /* whole CRC of that page (its checksum without the flag) */
	uint64_t *acc;   /* XOR of the page CRCs of state i so far (the flag
			  * is added when compared) */
	uint8_t *pages;  /* n pages: the page each decoder stands on */
	uint8_t *zero;   /* one zero page */
	uint8_t *last;   /* the final state's last page, held back */
	uint32_t ps, commit, max_commit, lock;
	uint32_t last_pgno;  /* last page of the final state (0: none) */
	uint32_t p;          /* last page number visited */
	uint64_t crc;        /* the CRC of the page ltxmerge_next() returned */
	uint32_t out_p;      /* next page of ltxmerge_read()'s bytes */
	int err;             /* sticky */
	bool verified, has_want;
	struct ltx_pos want;
};

static struct ltx_pos merge_pos(const struct ltxmerge *m)
{
	return (struct ltx_pos){ m->h[m->n - 1].max_txid, m->t[m->n - 1].post_apply_checksum };
}

static uint8_t *page_of(struct ltxmerge *m, size_t i)
{
	return m->pages + i * m->ps;
}

/* Moves decoder i to its next page, finishing its file at the end. */
static int advance(struct ltxmerge *m, size_t i)
{
	uint32_t pgno;
	int rc = ltx_decoder_next_page(m->dec[i], &pgno, page_of(m, i));
	if (rc == 1) {
		m->cur[i] = pgno;
		m->csum[i] = ltx_decoder_last_page_crc(m->dec[i]);
		return 0;
	}
	m->cur[i] = 0;
	return rc < 0 ? rc : ltx_decoder_finish(m->dec[i], &m->t[i]);
}

/* Moves on every decoder that stood on page m->p (visited). */
static int consume(struct ltxmerge *m)
{
	for (size_t i = 0; m->p && i < m->n; i++) {
		if (m->cur[i] == m->p) {
			int rc = advance(m, i);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* Visits page p: adds its checksum to every state that has it and
 * returns the final state's version (*page: NULL for zeros; *crc, its
 * whole CRC). */
static void visit(struct ltxmerge *m, uint32_t p, const uint8_t **page, uint64_t *crc)
{
	size_t none = m->n, j = none;
	uint64_t zsum = 0;
	bool zsum_known = false;
	for (size_t i = 0; i < m->n; i++) {
		if (m->cur[i] == p)
			j = i;
		else if (m->h[i].commit < p)
			j = none;
		if (p > m->h[i].commit)
			continue;
		if (j == none && !zsum_known) {
			zsum = ltx_page_crc(p, m->zero, m->ps);
			zsum_known = true;
		}
		m->acc[i] ^= j == none ? zsum : m->csum[j];
	}
	*page = j == none ? NULL : page_of(m, j);
	*crc = j == none ? zsum : m->csum[j]; /* zsum is known when p <= commit */
}

/* Reads every file to its end (visiting the pages no one asked for) and
 * checks every post-apply and pre-apply checksum of the chain. */
static int drain_and_verify(struct ltxmerge *m)
{
	const uint8_t *page;
	uint64_t crc;
	int rc = 0;
	while (rc == 0 && m->p < m->max_commit) {
		rc = consume(m);
		m->p++;
		if (rc == 0 && m->p != m->lock)
			visit(m, m->p, &page, &crc);
	}
	if (rc == 0)
		rc = consume(m);
	for (size_t i = 0; rc == 0 && i < m->n; i++) {
		if (m->cur[i] != 0)
			rc = ERR_LTX_STATE; /* cannot be: pages are <= commit */
		else if ((LTX_CHECKSUM_FLAG | m->acc[i]) != m->t[i].post_apply_checksum)
			rc = ERR_LTX_POST_CHECKSUM;
		else if (i > 0 && m->h[i].pre_apply_checksum != m->t[i - 1].post_apply_checksum)
			rc = ERR_LTX_PRE_MISMATCH;
	}
	struct ltx_pos got = merge_pos(m);
	if (rc == 0 && m->has_want && (got.txid != m->want.txid || got.checksum != m->want.checksum))
		rc = ERR_LTX_POST_CHECKSUM;
	m->verified = rc == 0;
	return rc;
}

int ltxmerge_new(struct ltxmerge **out, const struct ltxmerge_input *in, size_t n, const struct ltx_pos *want)
{
	*out = NULL;
	if (n == 0 || n > LTXMERGE_MAX_FILES)
		return ERR_INVAL;
	struct ltxmerge *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return ERR_NOMEM;
	*out = m;
	m->n = n;
	m->has_want = want != NULL;
	if (want)
		m->want = *want;
	m->dec = calloc(n, sizeof(*m->dec));
	m->h = calloc(n, sizeof(*m->h));
	m->t = calloc(n, sizeof(*m->t));
	m->cur = calloc(n, sizeof(*m->cur));
	m->csum = calloc(n, sizeof(*m->csum));
	m->acc = calloc(n, sizeof(*m->acc));
	if (!m->dec || !m->h || !m->t || !m->cur || !m->csum || !m->acc)
		return m->err = ERR_NOMEM;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = ltx_decoder_new(&m->dec[i], in[i].read, in[i].ctx);
		if (rc == 0)
			rc = ltx_decoder_header(m->dec[i], &m->h[i]);
		if (rc < 0)
			break;
		const struct ltx_header *h = &m->h[i], *prev = i ? &m->h[i - 1] : NULL;
		if ((i == 0) != ltx_header_is_snapshot(h))
			rc = i == 0 ? ERR_LTX_NOT_CONTIGUOUS : ERR_LTX_OVERLAP;
		else if (prev && h->min_txid != prev->max_txid + 1)
			rc = h->min_txid > prev->max_txid + 1 ? ERR_LTX_NOT_CONTIGUOUS : ERR_LTX_OVERLAP;
		else if (prev && h->page_size != prev->page_size)
			rc = ERR_LTX_PAGE_SIZE_MISMATCH;
		if (m->max_commit < h->commit)
			m->max_commit = h->commit;
	}
	if (rc < 0)
		return m->err = rc;
	m->ps = m->h[0].page_size;
	m->commit = m->h[n - 1].commit;
	m->lock = ltx_lock_pgno(m->ps);
	m->last_pgno = m->commit == m->lock ? m->commit - 1 : m->commit;
	m->out_p = 1;
	m->pages = malloc(n * (size_t)m->ps);
	m->zero = calloc(1, m->ps);
	m->last = malloc(m->ps);
	if (!m->pages || !m->zero || !m->last)
		return m->err = ERR_NOMEM;
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = advance(m, i);
	return m->err = rc;
}

void ltxmerge_free(struct ltxmerge *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; m->dec && i < m->n; i++)
		ltx_decoder_free(m->dec[i]);
	free(m->dec);
	free(m->h);
	free(m->t);
	free(m->cur);
	free(m->csum);
	free(m->acc);
	free(m->pages);
	free(m->zero);
	free(m->last);
	free(m);
}

const struct ltx_header *ltxmerge_header(const struct ltxmerge *m)
{
	return &m->h[m->n - 1];
}

int ltxmerge_next(struct ltxmerge *m, uint32_t *pgno, const uint8_t **page, uint64_t *sum)
{
	if (m->err)
		return m->err;
	if (m->p >= m->last_pgno) {
		if (!m->verified && (m->err = drain_and_verify(m)) < 0)
			return m->err;
		return 0;
	}
	int rc = consume(m);
	if (rc < 0)
		return m->err = rc;
	m->p++;
	if (m->p == m->lock) {
		rc = consume(m); /* nobody holds it; keeps the invariant */
		if (rc < 0)
			return m->err = rc;
		m->p++;
	}
	visit(m, m->p, page, &m->crc);
	*sum = LTX_CHECKSUM_FLAG | m->crc;
	if (*page == NULL)
		*page = m->zero;
	*pgno = m->p;
	if (m->p == m->last_pgno) {
		memcpy(m->last, *page, m->ps);
		*page = m->last;
		if ((m->err = drain_and_verify(m)) < 0)
			return m->err;
	}
	return 1;
}

ssize_t ltxmerge_read(struct ltxmerge *m, uint8_t *buf, size_t max)
{
	if (m->err)
		return m->err;
	if (max < m->ps)
		return ERR_INVAL;
	size_t len = 0;
	while (len + m->ps <= max && m->out_p <= m->commit) {
		if (m->out_p == m->lock) {
			memset(buf + len, 0, m->ps);
		} else {
			uint32_t pgno;
			const uint8_t *page;
			uint64_t sum;
			int rc = ltxmerge_next(m, &pgno, &page, &sum);
			if (rc < 0)
				return rc;
			if (rc == 0 || pgno != m->out_p)
				return m->err = ERR_LTX_STATE; /* cannot be */
			memcpy(buf + len, page, m->ps);
		}
		len += m->ps;
		m->out_p++;
	}
	if (len > 0)
		return (ssize_t)len;
	uint32_t pgno;
	const uint8_t *page;
	uint64_t sum;
	int rc = ltxmerge_next(m, &pgno, &page, &sum);
	return rc <= 0 ? rc : (m->err = ERR_LTX_STATE);
}

int ltxmerge_copy(struct ltxmerge *m, ltx_write_fn write, void *ctx, uint8_t *buf, size_t cap)
{
	for (;;) {
		ssize_t n = ltxmerge_read(m, buf, cap);
		if (n <= 0)
			return (int)n;
		int rc = write(ctx, buf, (size_t)n);
		if (rc < 0)
			return rc;
	}
}

uint64_t ltxmerge_page_crc(const struct ltxmerge *m)
{
	return m->crc;
}

struct ltx_pos ltxmerge_pos(const struct ltxmerge *m)
{
	return merge_pos(m);
}
