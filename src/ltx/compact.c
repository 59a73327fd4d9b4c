/*
 * compact.c — streaming k-way merge of a contiguous run of LTX files.
 *
 * Design
 * ------
 * Every input gets its own ltx_decoder and one page buffer holding its
 * current page. A binary min-heap orders the inputs by (pgno ascending,
 * input index descending), so the heap top is always the *latest* version
 * of the smallest page number still pending. Each step writes the top's
 * page to the output encoder and advances every input positioned on that
 * page number. Each input is read exactly once, front to back; memory is
 * n_inputs x (page size + decoder state).
 *
 * Invariants
 * ----------
 * 1. Output pages are strictly increasing (the heap yields page numbers in
 *    order and each number is consumed from every input at once). Checked
 *    with CHECK() in write_page(): a break is a bug here, not bad input.
 * 2. Page p is taken from input i only if no input after i truncated the
 *    database below p (see "Truncated and regrown pages").
 * 3. Every trailer is read (and its file checksum verified by the decoder)
 *    before the output trailer is written; the pre-apply/post-apply chain
 *    is checked then, because post-apply checksums live in trailers.
 *
 * Truncated and regrown pages
 * ---------------------------
 * LTX.md says "pages beyond the final commit are dropped". That is not
 * enough when a file in the middle of the run shrinks the database and a
 * later file grows it again without rewriting every regrown page (apply
 * extends with zeros). Applying the run one file at a time then leaves
 * zeros in those pages, while a merge that only looked at the final commit
 * would resurrect the pre-truncation content. So, with j*(p) the last
 * input whose commit is below p:
 *   - page p comes from the latest input after j*(p) that holds it;
 *   - if there is none but j*(p) exists, page p is written as zeros;
 *   - if j*(p) does not exist (p <= every commit), p is written only if
 *     some input holds it.
 * Every page above the smallest commit of the run is therefore present in
 * the output, which also makes the output of a snapshot-first run a
 * complete snapshot. For ordinary LiteFS runs (no shrink followed by a
 * sparse regrow) the output is identical to that of Go's ltx.Compactor.
 * j*(p) only moves forward as p grows, so it is tracked with a pointer into
 * the inputs sorted by commit.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/compact.h"
#include "base/check.h"
#include "base/err.h"

/* Byte offsets of header fields, reported with header-level errors. */
#define HDR_OFF_PAGE_SIZE 8
#define HDR_OFF_MIN_TXID 16
#define HDR_OFF_PRE_APPLY 40

struct input_state {
	struct ltx_decoder *dec;
	struct ltx_header hdr;
	struct ltx_trailer trailer;
	uint8_t *page;  /* current page, hdr.page_size bytes */
	uint32_t pgno;  /* current page number; 0 once the input is exhausted */
};

/* Counts output bytes so that output errors can report an offset. */
struct counting_writer {
	ltx_write_fn write;
	void *ctx;
	uint64_t n_bytes;
};

struct compactor {
	struct input_state *in;
	size_t n;
	size_t *heap; /* input indices */
	size_t heap_len;
	struct compact_error *err;
};

static int counting_write(void *ctx, const void *buf, size_t len)
{
	struct counting_writer *w = ctx;
	int rc = w->write(w->ctx, buf, len);

	if (rc == 0)
		w->n_bytes += len;
	return rc;
}

static void set_err(struct compact_error *err, size_t input, uint64_t offset)
{
	if (err) {
		err->input = input;
		err->offset = offset;
	}
}

/* Heap order: smaller page number first; on equal page numbers the later
 * input first, because its version of the page wins. */
static bool heap_before(const struct compactor *c, size_t a, size_t b)
{
	uint32_t pa = c->in[a].pgno, pb = c->in[b].pgno;

	return pa < pb || (pa == pb && a > b);
}

static void heap_push(struct compactor *c, size_t idx)
{
	/* Each input is on the heap at most once (advance() pushes only the
	 * input it just popped or started). */
	CHECK(c->heap_len < c->n);
	size_t i = c->heap_len++;

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!heap_before(c, idx, c->heap[parent]))
			break;
		c->heap[i] = c->heap[parent];
		i = parent;
	}
	c->heap[i] = idx;
}

static size_t heap_pop(struct compactor *c)
{
	CHECK(c->heap_len > 0);
	size_t top = c->heap[0];
	size_t last = c->heap[--c->heap_len];
	size_t i = 0;

	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = l;
		if (l >= c->heap_len)
			break;
		if (r < c->heap_len && heap_before(c, c->heap[r], c->heap[l]))
			m = r;
		if (!heap_before(c, c->heap[m], last))
			break;
		c->heap[i] = c->heap[m];
		i = m;
	}
	if (c->heap_len > 0)
		c->heap[i] = last;
	return top;
}

/* Moves input idx to its next page and pushes it on the heap, or, at the
 * end marker, reads its trailer. Returns 0 or the decoder's error. */
static int advance(struct compactor *c, size_t idx)
{
	struct input_state *s = &c->in[idx];
	uint32_t pgno = 0;
	int rc = ltx_decoder_next_page(s->dec, &pgno, s->page);

	if (rc == 1) {
		s->pgno = pgno;
		heap_push(c, idx);
		return 0;
	}
	s->pgno = 0;
	if (rc == 0)
		rc = ltx_decoder_finish(s->dec, &s->trailer);
	if (rc < 0)
		set_err(c->err, idx, ltx_decoder_offset(s->dec));
	return rc;
}

/* Sorts input indices by commit, stably (insertion sort: commits of a run
 * are usually non-decreasing, which makes this linear, and it needs no
 * global state the way a qsort comparator would). */
static void sort_by_commit(size_t *idx, size_t n, const struct input_state *in)
{
	for (size_t i = 1; i < n; i++) {
		size_t v = idx[i], j = i;
		while (j > 0 && in[idx[j - 1]].hdr.commit > in[v].hdr.commit) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = v;
	}
}

/* Reads every header and checks that the run is a valid sequence as far
 * as headers can tell (page sizes, TXID ranges). */
static int read_headers(struct compactor *c, const struct compact_input *inputs)
{
	for (size_t i = 0; i < c->n; i++) {
		struct input_state *s = &c->in[i];
		int rc;

		if (!inputs[i].read) {
			set_err(c->err, i, 0);
			return ERR_INVAL;
		}
		rc = ltx_decoder_new(&s->dec, inputs[i].read, inputs[i].ctx);
		if (rc < 0) {
			set_err(c->err, i, 0);
			return rc;
		}
		rc = ltx_decoder_header(s->dec, &s->hdr);
		if (rc < 0) {
			set_err(c->err, i, ltx_decoder_offset(s->dec));
			return rc;
		}
		if (i == 0)
			continue;
		const struct ltx_header *prev = &c->in[i - 1].hdr;
		if (s->hdr.page_size != c->in[0].hdr.page_size) {
			set_err(c->err, i, HDR_OFF_PAGE_SIZE);
			return ERR_LTX_PAGE_SIZE_MISMATCH;
		}
		if (s->hdr.min_txid <= prev->max_txid) {
			set_err(c->err, i, HDR_OFF_MIN_TXID);
			return ERR_LTX_OVERLAP;
		}
		if (s->hdr.min_txid != prev->max_txid + 1) {
			set_err(c->err, i, HDR_OFF_MIN_TXID);
			return ERR_LTX_NOT_CONTIGUOUS;
		}
	}
	return 0;
}

/* Writes one output page. *last_pgno is the page written before it (0
 * at first): invariant 1 is checked here, because the encoder would
 * report a break of it as ERR_LTX_PAGE_ORDER, blaming the output rather
 * than this merge. */
static int write_page(struct ltx_encoder *enc, uint32_t pgno, const uint8_t *page, uint32_t *last_pgno,
		      struct counting_writer *out, struct compact_error *err)
{
	CHECK_MSG(pgno > *last_pgno, "pgno=%" PRIu32 " last_pgno=%" PRIu32, pgno, *last_pgno);
	int rc = ltx_encoder_write_page(enc, pgno, page);

	if (rc < 0)
		set_err(err, COMPACT_OUTPUT, out->n_bytes);
	else
		*last_pgno = pgno;
	return rc;
}

int compact_run(const struct compact_input *inputs, size_t n_inputs, bool compress,
		ltx_write_fn write, void *write_ctx,
		struct ltx_header *out_header, struct ltx_trailer *out_trailer,
		struct compact_error *err)
{
	struct compactor c = { .n = n_inputs, .err = err };
	struct counting_writer out = { .write = write, .ctx = write_ctx };
	struct ltx_encoder *enc = NULL;
	struct ltx_header hdr;
	struct ltx_trailer trailer;
	size_t *by_commit = NULL;
	uint8_t *zero_page = NULL;
	int rc;

	set_err(err, COMPACT_OUTPUT, 0);
	if (n_inputs == 0 || !inputs || !write)
		return ERR_INVAL;

	c.in = calloc(n_inputs, sizeof(*c.in));
	c.heap = calloc(n_inputs, sizeof(*c.heap));
	by_commit = calloc(n_inputs, sizeof(*by_commit));
	if (!c.in || !c.heap || !by_commit) {
		rc = ERR_NOMEM;
		goto out_free;
	}

	rc = read_headers(&c, inputs);
	if (rc < 0)
		goto out_free;

	const struct ltx_header *first = &c.in[0].hdr, *last = &c.in[n_inputs - 1].hdr;
	const uint32_t page_size = first->page_size;
	const uint32_t lock_pgno = ltx_lock_pgno(page_size);
	uint32_t min_commit = UINT32_MAX;

	for (size_t i = 0; i < n_inputs; i++) {
		c.in[i].page = malloc(page_size);
		if (!c.in[i].page) {
			rc = ERR_NOMEM;
			goto out_free;
		}
		if (c.in[i].hdr.commit < min_commit)
			min_commit = c.in[i].hdr.commit;
		by_commit[i] = i;
	}
	sort_by_commit(by_commit, n_inputs, c.in);
	zero_page = calloc(1, page_size);
	if (!zero_page) {
		rc = ERR_NOMEM;
		goto out_free;
	}

	hdr = (struct ltx_header){
		.flags = compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = page_size,
		.commit = last->commit,
		.min_txid = first->min_txid,
		.max_txid = last->max_txid,
		.timestamp_ms = last->timestamp_ms,
		.pre_apply_checksum = first->pre_apply_checksum,
	};
	rc = ltx_encoder_new(&enc, &hdr, counting_write, &out);
	if (rc < 0) {
		set_err(err, COMPACT_OUTPUT, out.n_bytes);
		goto out_free;
	}

	for (size_t i = 0; i < n_inputs; i++) {
		rc = advance(&c, i);
		if (rc < 0)
			goto out_free;
	}

	/* Pages above the run's smallest commit are all written (invariant 2);
	 * next_zero is the smallest such page not yet written. 64-bit so that
	 * commit == UINT32_MAX cannot overflow it. */
	uint64_t next_zero = (uint64_t)min_commit + 1;
	const uint64_t final_commit = last->commit;
	size_t n_truncating = 0;     /* prefix of by_commit with commit < p */
	bool have_jstar = false;
	size_t jstar = 0;            /* max index in that prefix: j*(p) */
	uint32_t last_out = 0;       /* last page written (invariant 1) */

	for (;;) {
		uint64_t top_pgno = c.heap_len ? c.in[c.heap[0]].pgno : UINT64_MAX;

		for (; next_zero <= final_commit && next_zero < top_pgno; next_zero++) {
			if (next_zero == lock_pgno)
				continue;
			rc = write_page(enc, (uint32_t)next_zero, zero_page, &last_out, &out, err);
			if (rc < 0)
				goto out_free;
		}
		if (c.heap_len == 0)
			break;

		const uint32_t pgno = (uint32_t)top_pgno;
		if (pgno <= final_commit) {
			while (n_truncating < n_inputs && c.in[by_commit[n_truncating]].hdr.commit < pgno) {
				size_t j = by_commit[n_truncating++];
				if (!have_jstar || j > jstar)
					jstar = j;
				have_jstar = true;
			}
			size_t winner = c.heap[0];
			const uint8_t *src = (!have_jstar || winner > jstar) ? c.in[winner].page : zero_page;
			rc = write_page(enc, pgno, src, &last_out, &out, err);
			if (rc < 0)
				goto out_free;
			if (pgno >= next_zero)
				next_zero = (uint64_t)pgno + 1;
		}
		while (c.heap_len > 0 && c.in[c.heap[0]].pgno == pgno) {
			rc = advance(&c, heap_pop(&c));
			if (rc < 0)
				goto out_free;
		}
	}

	/* Every trailer has been read: the checksum chain can be checked. */
	for (size_t i = 1; i < n_inputs; i++) {
		if (c.in[i].hdr.pre_apply_checksum != c.in[i - 1].trailer.post_apply_checksum) {
			set_err(err, i, HDR_OFF_PRE_APPLY);
			rc = ERR_LTX_NOT_CONTIGUOUS;
			goto out_free;
		}
	}

	rc = ltx_encoder_finish(enc, c.in[n_inputs - 1].trailer.post_apply_checksum, &trailer);
	if (rc < 0) {
		set_err(err, COMPACT_OUTPUT, out.n_bytes);
		goto out_free;
	}
	if (out_header)
		*out_header = hdr;
	if (out_trailer)
		*out_trailer = trailer;

out_free:
	ltx_encoder_free(enc);
	free(zero_page);
	if (c.in) {
		for (size_t i = 0; i < n_inputs; i++) {
			ltx_decoder_free(c.in[i].dec);
			free(c.in[i].page);
		}
	}
	free(by_commit);
	free(c.heap);
	free(c.in);
	return rc;
}
