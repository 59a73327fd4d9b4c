/*
 * cloud_state.c — a whole database state read page by page (contract:
 * cloud_state.h).
 */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "cloud/cloud_merge.h"
#include "cloud/cloud_state.h"
#include "ltx/ltx.h"

void cloud_state_close(struct cloud_state *st)
{
	cloud_merge_free(st->merge);
	st->merge = NULL;
	if (st->fd >= 0)
		close(st->fd);
	st->fd = -1;
}

int cloud_pagerd_get(struct cloud_pagerd *r, uint32_t pgno, const uint8_t **page)
{
	if (pgno < r->first || pgno >= r->first + r->count) {
		uint32_t want = CLOUD_PAGERD_BYTES / r->ps;
		if (want > r->n - pgno + 1)
			want = r->n - pgno + 1;
		int got = fdio_pread_full(r->fd, r->buf, (size_t)want * r->ps, (off_t)(pgno - 1) * r->ps);
		if (got < 0)
			return got;
		r->first = pgno;
		r->count = (uint32_t)got / r->ps;
		if (r->count == 0)
			return 0;
	}
	*page = r->buf + (size_t)(pgno - r->first) * r->ps;
	return 1;
}

int cloud_state_next(struct cloud_state_iter *it, uint32_t *pgno, const uint8_t **page, uint64_t *sum,
		     uint64_t *crc)
{
	if (it->st->merge) {
		int rc = cloud_merge_next(it->st->merge, pgno, page, sum);
		if (rc == 1 && crc)
			*crc = cloud_merge_page_crc(it->st->merge);
		return rc;
	}
	if (++it->p == ltx_lock_pgno(it->rd.ps))
		it->p++;
	if (it->p > it->rd.n)
		return 0;
	int rc = cloud_pagerd_get(&it->rd, it->p, page);
	if (rc <= 0)
		return rc < 0 ? rc : ERR_IO_SHORT;
	*pgno = it->p;
	uint64_t c = ltx_page_crc(it->p, *page, it->rd.ps);
	*sum = LTX_CHECKSUM_FLAG | c;
	if (crc)
		*crc = c;
	return 1;
}

int cloud_state_pages(struct cloud_state *st, uint32_t *n)
{
	if (st->merge) {
		*n = (uint32_t)(cloud_merge_size(st->merge) / st->ps);
		return 0;
	}
	struct stat sb;
	if (fstat(st->fd, &sb) < 0)
		return -errno;
	if (sb.st_size % st->ps != 0 || sb.st_size / st->ps > UINT32_MAX)
		return ERR_DB_SIZE;
	*n = (uint32_t)(sb.st_size / st->ps);
	return 0;
}
