/*
 * dbfile.c — page size, checksum, snapshot and apply on a database file.
 *
 * Checksums
 * ---------
 * The database checksum is LTX_CHECKSUM_FLAG | XOR of page checksums, so
 * everything here accumulates a plain XOR of page checksums ("raw" sums;
 * bit 63 is noise) and ORs the flag in once at the end.
 *
 * All-zero pages are frequent (sparse files, the region around the lock
 * page, growth by ftruncate) and have a shortcut. For fixed page data the
 * CRC of be32(pgno) || data is an affine function of the 32 bits of pgno
 * over GF(2): g(p) = g(0) ^ XOR_{bit k set in p} d_k, d_k = g(1<<k) ^ g(0).
 * struct dbfile_zero_sum holds g(0) and d_0..d_31 for one page size (33 CRCs of a
 * zero page), after which the checksum of any zero page is 32 XORs and the
 * XOR over a whole range of zero pages follows from the parity of how many
 * numbers in the range have each bit set. This makes checksumming a 1 GiB
 * hole or growing a database past the lock page cost O(1) instead of
 * O(size).
 *
 * Apply: old-or-new
 * -----------------
 * The LTX decoder only proves a file intact at its very end (file checksum
 * in the trailer), so dbfile_apply() works in two phases:
 *
 *  1. Validate. Decode the whole input. For each page, read the page it
 *     replaces from the database (non-snapshots), update the running
 *     database checksum (chk ^= pc(old) ^ pc(new)), and stage the page in
 *     the spool (a scratch file, or memory). Growth adds the checksums of
 *     the zero pages it creates; truncation removes those of the pages it
 *     drops. After the trailer: the file checksum is verified (decoder)
 *     and the computed checksum must equal the post-apply checksum. The
 *     database has not been written yet, so every error so far leaves it
 *     untouched.
 *  2. Write. Extend the file first if it grows (ftruncate: sparse, so the
 *     lock page region and unwritten growth cost nothing and read as
 *     zeros), copy staged pages in runs of consecutive page numbers, then
 *     shrink it if it shrinks. Only an I/O error of the database itself can
 *     fail here; the result then reports db_changed so the caller treats
 *     the database as untrustworthy until a resync. These writes and
 *     truncations go through sys.h, so tests can make the Nth one fail.
 *
 * Pages that would not change anything are not staged: an all-zero page
 * beyond the old end of file (the extension already reads as zeros), and,
 * for non-snapshots, a page identical to the one it replaces.
 *
 * The spool holds page data back to back; page numbers stay in memory
 * (4 bytes per staged page, bounded by the LTX file's own page count).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ltx/crc64.h"
#include "ltx/dbfile.h"
#include "base/check.h"
#include "base/fileio.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/sys.h"

/* Read/write chunk for whole-file passes; a multiple of every page size. */
#define CHUNK_SIZE (1u << 20)

/* ---- Zero-page checksums ---------------------------------------------- */

static uint64_t zero_page_crc(uint32_t pgno, uint32_t page_size)
{
	static const uint8_t zeros[4096];
	uint8_t be[4] = { (uint8_t)(pgno >> 24), (uint8_t)(pgno >> 16), (uint8_t)(pgno >> 8), (uint8_t)pgno };
	uint64_t crc = crc64_update(0, be, sizeof(be));

	for (uint32_t left = page_size; left > 0;) {
		uint32_t n = left < sizeof(zeros) ? left : (uint32_t)sizeof(zeros);
		crc = crc64_update(crc, zeros, n);
		left -= n;
	}
	return crc;
}

void dbfile_zero_sum_init(struct dbfile_zero_sum *z, uint32_t page_size)
{
	z->page_size = page_size;
	z->g0 = zero_page_crc(0, page_size);
	for (int k = 0; k < 32; k++)
		z->d[k] = zero_page_crc(UINT32_C(1) << k, page_size) ^ z->g0;
}

uint64_t dbfile_zero_sum_page(const struct dbfile_zero_sum *z, uint32_t pgno)
{
	uint64_t g = z->g0;

	for (int k = 0; k < 32; k++)
		if (pgno & (UINT32_C(1) << k))
			g ^= z->d[k];
	return g;
}

/* How many integers in 0..x have bit k set. */
static uint64_t count_bit_upto(uint64_t x, int k)
{
	uint64_t period = UINT64_C(1) << (k + 1), half = UINT64_C(1) << k;
	uint64_t n = x + 1;
	uint64_t rem = n % period;

	return (n / period) * half + (rem > half ? rem - half : 0);
}

uint64_t dbfile_zero_sum_range(const struct dbfile_zero_sum *z, uint64_t first, uint64_t last)
{
	uint64_t x = 0;
	uint32_t lock = ltx_lock_pgno(z->page_size);

	if (first > last)
		return 0;
	if ((last - first + 1) & 1)
		x ^= z->g0;
	for (int k = 0; k < 32; k++) {
		uint64_t c = count_bit_upto(last, k) - (first > 0 ? count_bit_upto(first - 1, k) : 0);
		if (c & 1)
			x ^= z->d[k];
	}
	if (lock >= first && lock <= last)
		x ^= dbfile_zero_sum_page(z, lock);
	return x;
}

uint64_t dbfile_zero_pages_checksum(uint32_t page_size, uint32_t first, uint32_t last)
{
	struct dbfile_zero_sum z;

	dbfile_zero_sum_init(&z, page_size);
	return LTX_CHECKSUM_FLAG | dbfile_zero_sum_range(&z, first, last);
}

static bool is_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* ---- Header, size ----------------------------------------------------- */

int dbfile_read_page_size(int fd, uint32_t *page_size)
{
	uint8_t hdr[18];
	int n = fdio_pread_full(fd, hdr, sizeof(hdr), 0);

	if (n < 0)
		return n;
	if ((size_t)n < sizeof(hdr) || memcmp(hdr, DBFILE_HEADER_MAGIC, 16) != 0)
		return ERR_DB_HEADER;
	uint32_t v = (uint32_t)hdr[16] << 8 | hdr[17];
	if (v == 1)
		v = 65536;
	if (!ltx_is_valid_page_size(v))
		return ERR_DB_HEADER;
	*page_size = v;
	return 0;
}

/* Size of fd in pages; ERR_DB_SIZE unless whole pages and < 2^32 pages. */
static int db_pages(int fd, uint32_t page_size, off_t *size, uint32_t *n_pages)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size % page_size != 0 || (uint64_t)st.st_size / page_size > UINT32_MAX)
		return ERR_DB_SIZE;
	*size = st.st_size;
	*n_pages = (uint32_t)((uint64_t)st.st_size / page_size);
	return 0;
}

/* ---- Checksums of page ranges ----------------------------------------- */

/* Raw XOR of page checksums of pages in buf (n whole pages, the first
 * being first_pgno), lock page skipped, zero pages via the shortcut. */
static uint64_t buf_checksum(const uint8_t *buf, size_t n, uint32_t first_pgno,
			     uint32_t page_size, const struct dbfile_zero_sum *z)
{
	uint32_t lock = ltx_lock_pgno(page_size);
	uint64_t x = 0;

	for (size_t i = 0; i < n; i++) {
		uint32_t pgno = first_pgno + (uint32_t)i;
		const uint8_t *page = buf + i * page_size;
		if (pgno == lock)
			continue;
		x ^= is_zero(page, page_size) ? dbfile_zero_sum_page(z, pgno)
					      : ltx_page_checksum(pgno, page, page_size);
	}
	return x;
}

/* Raw XOR of the page checksums of pages first..last of fd (all inside
 * the file). Holes found with SEEK_DATA/SEEK_HOLE are summed as zero pages
 * without being read; where those are unsupported everything is read. */
static int range_checksum(int fd, uint32_t page_size, uint32_t first, uint32_t last,
			  const struct dbfile_zero_sum *z, uint64_t *out)
{
	const uint64_t ps = page_size;
	uint64_t pg = first, end = (uint64_t)last + 1; /* page numbers [pg, end) */
	/* No bigger than the range: small ranges are common in apply. */
	const uint64_t pages_per_chunk = end - pg < CHUNK_SIZE / ps ? end - pg : CHUNK_SIZE / ps;
	uint64_t x = 0;
	bool use_seek = true;
	uint8_t *buf = NULL;
	int rc = 0;

	if (first > last) {
		*out = 0;
		return 0;
	}
	buf = malloc(pages_per_chunk * ps);
	if (!buf)
		return ERR_NOMEM;

	while (pg < end) {
		uint64_t data_end = end; /* pages [pg, data_end) are read */
		if (use_seek) {
			off_t d = lseek(fd, (off_t)((pg - 1) * ps), SEEK_DATA);
			if (d < 0 && errno == ENXIO) {
				d = (off_t)((end - 1) * ps); /* hole up to EOF */
			} else if (d < 0) {
				use_seek = false; /* not supported here: read it all */
				d = (off_t)((pg - 1) * ps);
			}
			if (use_seek) {
				uint64_t dpg = (uint64_t)d / ps + 1; /* page holding the data */
				if (dpg > end)
					dpg = end;
				x ^= dbfile_zero_sum_range(z, pg, dpg - 1);
				pg = dpg;
				if (pg >= end)
					break;
				off_t h = lseek(fd, d, SEEK_HOLE);
				if (h < 0) {
					rc = -errno;
					goto out;
				}
				uint64_t hpg = ((uint64_t)h + ps - 1) / ps + 1; /* first page after the data */
				data_end = hpg < end ? hpg : end;
			}
		}
		while (pg < data_end) {
			uint64_t n = data_end - pg;
			if (n > pages_per_chunk)
				n = pages_per_chunk;
			int got = fdio_pread_full(fd, buf, n * ps, (off_t)((pg - 1) * ps));
			if (got < 0) {
				rc = got;
				goto out;
			}
			if ((uint64_t)got != n * ps) {
				rc = ERR_IO_SHORT;
				goto out;
			}
			x ^= buf_checksum(buf, n, (uint32_t)pg, page_size, z);
			pg += n;
		}
	}
	*out = x;
out:
	free(buf);
	return rc;
}

int dbfile_checksum(int fd, uint32_t page_size, uint64_t *checksum, uint32_t *n_pages)
{
	struct dbfile_zero_sum z;
	off_t size;
	uint32_t n = 0;
	uint64_t x;
	int rc;

	if (!ltx_is_valid_page_size(page_size))
		return ERR_LTX_PAGE_SIZE;
	rc = db_pages(fd, page_size, &size, &n);
	if (rc < 0)
		return rc;
	dbfile_zero_sum_init(&z, page_size);
	rc = range_checksum(fd, page_size, 1, n, &z, &x);
	if (rc < 0)
		return rc;
	*checksum = LTX_CHECKSUM_FLAG | x;
	if (n_pages)
		*n_pages = n;
	return 0;
}

/* ---- Snapshot --------------------------------------------------------- */

int dbfile_encode_snapshot(int fd, const struct dbfile_snapshot_opts *opts,
			   ltx_write_fn write, void *write_ctx,
			   struct ltx_header *h, struct ltx_trailer *t)
{
	struct ltx_encoder *enc = NULL;
	struct ltx_header hdr;
	struct ltx_trailer trailer;
	struct dbfile_zero_sum z;
	uint32_t page_size = opts->page_size, n = 0, lock;
	uint8_t *buf = NULL;
	uint64_t x = 0;
	off_t size;
	int rc;

	if (page_size == 0) {
		rc = dbfile_read_page_size(fd, &page_size);
		if (rc < 0)
			return rc;
	} else if (!ltx_is_valid_page_size(page_size)) {
		return ERR_LTX_PAGE_SIZE;
	}
	rc = db_pages(fd, page_size, &size, &n);
	if (rc < 0)
		return rc;
	dbfile_zero_sum_init(&z, page_size);
	lock = ltx_lock_pgno(page_size);

	hdr = (struct ltx_header){
		.flags = opts->compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = page_size,
		.commit = n,
		.min_txid = opts->follows_txid + 1,
		.max_txid = opts->txid ? opts->txid : opts->follows_txid + 1,
		.timestamp_ms = opts->timestamp_ms,
		.pre_apply_checksum = opts->follows_txid ? opts->pre_apply_checksum : 0,
		.node_id = opts->node_id,
	};
	buf = malloc(CHUNK_SIZE);
	if (!buf)
		return ERR_NOMEM;
	rc = ltx_encoder_new(&enc, &hdr, write, write_ctx);
	if (rc < 0)
		goto out;

	const uint32_t pages_per_chunk = CHUNK_SIZE / page_size;
	for (uint64_t pg = 1; pg <= n;) {
		uint64_t cnt = n - pg + 1;
		if (cnt > pages_per_chunk)
			cnt = pages_per_chunk;
		const size_t len = cnt * page_size;
		const off_t off = (off_t)((pg - 1) * page_size);
		off_t data = lseek(fd, off, SEEK_DATA);
		if ((data < 0 && errno == ENXIO) || (data >= 0 && data >= off + (off_t)len)) {
			/* A hole: zeros, without reading them. */
			memset(buf, 0, len);
			x ^= dbfile_zero_sum_range(&z, pg, pg + cnt - 1);
		} else {
			int got = fdio_pread_full(fd, buf, len, off);
			if (got < 0) {
				rc = got;
				goto out;
			}
			if ((size_t)got != len) {
				rc = ERR_IO_SHORT;
				goto out;
			}
			if (pg == 1 && opts->sqlite_header)
				memcpy(buf, opts->sqlite_header, 100);
			x ^= buf_checksum(buf, cnt, (uint32_t)pg, page_size, &z);
		}
		for (uint64_t i = 0; i < cnt; i++) {
			if (pg + i == lock)
				continue;
			rc = ltx_encoder_write_page(enc, (uint32_t)(pg + i), buf + i * page_size);
			if (rc < 0)
				goto out;
		}
		pg += cnt;
	}
	rc = ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG | x, &trailer);
	if (rc < 0)
		goto out;
	if (h)
		*h = hdr;
	if (t)
		*t = trailer;
out:
	ltx_encoder_free(enc);
	free(buf);
	return rc;
}

/* ---- Spool ------------------------------------------------------------ */

/* Staged pages: data back to back in a file (fd >= 0, written through a
 * buffer) or in memory (fd < 0); page numbers in pgnos[]. */
struct spool {
	int fd;
	uint32_t page_size;
	uint32_t *pgnos;
	size_t n_pages, cap_pages;
	uint8_t *buf;     /* file: write buffer of CHUNK_SIZE; memory: all data */
	size_t buf_len;   /* bytes used in buf */
	size_t buf_cap;
	uint64_t flushed; /* file: bytes already written to fd */
};

static int spool_flush(struct spool *s)
{
	if (s->fd < 0 || s->buf_len == 0)
		return 0;
	int rc = fdio_pwrite_full(s->fd, s->buf, s->buf_len, (off_t)s->flushed);
	if (rc < 0)
		return rc;
	s->flushed += s->buf_len;
	s->buf_len = 0;
	return 0;
}

static int spool_add(struct spool *s, uint32_t pgno, const uint8_t *page)
{
	int rc;

	if (s->n_pages == s->cap_pages) {
		size_t cap = s->cap_pages ? s->cap_pages * 2 : 256;
		uint32_t *p = realloc(s->pgnos, cap * sizeof(*p));
		if (!p)
			return ERR_NOMEM;
		s->pgnos = p;
		s->cap_pages = cap;
	}
	if (s->buf_len + s->page_size > s->buf_cap) {
		/* A file spool's buffer grows up to CHUNK_SIZE and is then
		 * flushed; a memory spool's grows without bound. */
		if (s->fd >= 0 && s->buf_cap >= CHUNK_SIZE) {
			rc = spool_flush(s);
			if (rc < 0)
				return rc;
		} else {
			size_t cap = s->buf_cap ? s->buf_cap * 2 : (size_t)s->page_size * 16;
			if (s->fd >= 0 && cap > CHUNK_SIZE)
				cap = CHUNK_SIZE;
			uint8_t *p = realloc(s->buf, cap);
			if (!p)
				return ERR_NOMEM;
			s->buf = p;
			s->buf_cap = cap;
		}
	}
	CHECK_MSG(s->buf_len + s->page_size <= s->buf_cap, "buf_len=%zu buf_cap=%zu", s->buf_len, s->buf_cap);
	/* The decoder yields ascending page numbers, and res->written is
	 * documented as ascending. */
	CHECK_MSG(s->n_pages == 0 || pgno > s->pgnos[s->n_pages - 1], "pgno=%" PRIu32 " last=%" PRIu32, pgno,
		  s->pgnos[s->n_pages - 1]);
	memcpy(s->buf + s->buf_len, page, s->page_size);
	s->buf_len += s->page_size;
	s->pgnos[s->n_pages++] = pgno;
	return 0;
}

/* Copies staged pages to db_fd, one pwrite per run of consecutive page
 * numbers inside a chunk. Returns 0, or an error with *in_db telling
 * whether the database (rather than the spool) failed. */
static int spool_replay(struct spool *s, int db_fd, bool *in_db)
{
	const size_t ps = s->page_size;
	const size_t per_chunk = s->buf_cap / ps; /* file spool: the buffer's pages */
	int rc;

	*in_db = false;
	rc = spool_flush(s);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < s->n_pages;) {
		size_t cnt = s->n_pages - i;
		const uint8_t *data;
		if (s->fd >= 0) {
			if (cnt > per_chunk)
				cnt = per_chunk;
			int got = fdio_pread_full(s->fd, s->buf, cnt * ps, (off_t)(i * ps));
			if (got < 0)
				return got;
			if ((size_t)got != cnt * ps)
				return ERR_IO_SHORT;
			data = s->buf;
		} else {
			data = s->buf + i * ps;
		}
		for (size_t j = 0; j < cnt;) {
			size_t run = 1;
			while (j + run < cnt && s->pgnos[i + j + run] == s->pgnos[i + j] + run)
				run++;
			rc = sys_pwrite_all(db_fd, data + j * ps, run * ps,
					    (off_t)(s->pgnos[i + j] - 1) * (off_t)ps);
			if (rc < 0) {
				*in_db = true;
				return rc;
			}
			j += run;
		}
		i += cnt;
	}
	return 0;
}

/* ---- Apply ------------------------------------------------------------ */

/* Fails res with rc detected in the LTX input at offset. */
static int fail_ltx(struct dbfile_apply_result *res, int rc, uint64_t offset)
{
	res->err_source = DBFILE_ERR_LTX;
	res->err_offset = offset;
	return rc;
}

static int fail_src(struct dbfile_apply_result *res, int rc, enum dbfile_err_source src)
{
	res->err_source = src;
	return rc;
}

/* Header-level checks against the caller's position and the database. */
static int check_follows(const struct ltx_header *h, struct ltx_pos pos, int db_fd,
			 off_t old_size, struct dbfile_apply_result *res)
{
	uint32_t db_page_size;

	if (ltx_header_is_snapshot(h))
		return 0;
	if (h->min_txid <= pos.txid)
		return fail_ltx(res, ERR_LTX_OVERLAP, 16);
	if (h->min_txid != pos.txid + 1)
		return fail_ltx(res, ERR_LTX_NOT_CONTIGUOUS, 16);
	if (h->pre_apply_checksum != pos.checksum)
		return fail_ltx(res, ERR_LTX_PRE_MISMATCH, 40);
	if (old_size % h->page_size != 0 || (uint64_t)old_size / h->page_size > UINT32_MAX)
		return fail_src(res, ERR_DB_SIZE, DBFILE_ERR_DB);
	if (old_size > 0 && dbfile_read_page_size(db_fd, &db_page_size) == 0 &&
	    db_page_size != h->page_size)
		return fail_ltx(res, ERR_LTX_PAGE_SIZE_MISMATCH, 8);
	return 0;
}

int dbfile_apply(int db_fd, int spool_fd, ltx_read_fn read, void *read_ctx,
		 struct ltx_pos pos, struct dbfile_apply_result *res)
{
	struct ltx_decoder *dec = NULL;
	struct spool sp = { .fd = spool_fd };
	struct ltx_header h;
	struct ltx_trailer t;
	struct dbfile_zero_sum z;
	struct stat st;
	uint8_t *page = NULL, *old = NULL;
	uint64_t chk = 0;
	bool snapshot;
	int rc;

	memset(res, 0, sizeof(*res));
	if (fstat(db_fd, &st) < 0)
		return fail_src(res, -errno, DBFILE_ERR_DB);
	const off_t old_size = st.st_size;

	rc = ltx_decoder_new(&dec, read, read_ctx);
	if (rc < 0)
		return fail_src(res, rc, DBFILE_ERR_NONE);
	rc = ltx_decoder_header(dec, &h);
	if (rc < 0) {
		fail_ltx(res, rc, ltx_decoder_offset(dec));
		goto out;
	}
	res->header = h;
	snapshot = ltx_header_is_snapshot(&h);
	rc = check_follows(&h, pos, db_fd, old_size, res);
	if (rc < 0)
		goto out;

	const uint32_t ps = h.page_size;
	/* Whole pages of the old file (a snapshot tolerates a partial tail). */
	const uint64_t old_n = (uint64_t)old_size / ps;
	sp.page_size = ps;
	if (spool_fd >= 0) {
		struct stat sst;
		if (fstat(spool_fd, &sst) < 0 || (sst.st_size > 0 && ftruncate(spool_fd, 0) < 0)) {
			rc = fail_src(res, -errno, DBFILE_ERR_SPOOL);
			goto out;
		}
	}
	page = malloc(ps);
	old = malloc(ps);
	if (!page || !old) {
		rc = fail_src(res, ERR_NOMEM, DBFILE_ERR_NONE);
		goto out;
	}
	dbfile_zero_sum_init(&z, ps);

	/* Resize first, conceptually: growth adds zero pages, truncation
	 * removes the dropped pages (read from the database). */
	if (!snapshot) {
		chk = pos.checksum;
		if (h.commit > old_n) {
			chk ^= dbfile_zero_sum_range(&z, old_n + 1, h.commit);
		} else if (h.commit < old_n) {
			uint64_t x;
			rc = range_checksum(db_fd, ps, h.commit + 1, (uint32_t)old_n, &z, &x);
			if (rc < 0) {
				fail_src(res, rc, DBFILE_ERR_DB);
				goto out;
			}
			chk ^= x;
		}
	}

	for (;;) {
		uint32_t pgno;
		rc = ltx_decoder_next_page(dec, &pgno, page);
		if (rc < 0) {
			fail_ltx(res, rc, ltx_decoder_offset(dec));
			goto out;
		}
		if (rc == 0)
			break;
		const bool beyond_eof = (uint64_t)(pgno - 1) * ps >= (uint64_t)old_size;
		bool unchanged;
		if (!snapshot) {
			uint64_t old_pc;
			if (pgno <= old_n) {
				int got = fdio_pread_full(db_fd, old, ps, (off_t)(pgno - 1) * ps);
				if (got >= 0 && (uint32_t)got != ps)
					got = ERR_IO_SHORT;
				if (got < 0) {
					rc = fail_src(res, got, DBFILE_ERR_DB);
					goto out;
				}
				unchanged = memcmp(old, page, ps) == 0;
				old_pc = ltx_page_checksum(pgno, old, ps);
			} else {
				/* Growth already counted this page as zeros. */
				unchanged = is_zero(page, ps);
				old_pc = dbfile_zero_sum_page(&z, pgno);
			}
			/* The decoder hashed the page already (file checksum). */
			chk = ltx_checksum_swap(chk, old_pc, unchanged ? old_pc : ltx_decoder_last_page_checksum(dec));
		} else {
			unchanged = beyond_eof && is_zero(page, ps);
		}
		if (!unchanged) {
			rc = spool_add(&sp, pgno, page);
			if (rc < 0) {
				fail_src(res, rc, rc == ERR_NOMEM ? DBFILE_ERR_NONE : DBFILE_ERR_SPOOL);
				goto out;
			}
		}
	}

	rc = ltx_decoder_finish(dec, &t);
	if (rc < 0) {
		fail_ltx(res, rc, ltx_decoder_offset(dec));
		goto out;
	}
	/* The decoder checked a snapshot's post-apply against its pages. */
	if (!snapshot && (LTX_CHECKSUM_FLAG | chk) != t.post_apply_checksum) {
		uint64_t end = ltx_decoder_offset(dec);
		rc = fail_ltx(res, ERR_LTX_POST_CHECKSUM, end >= LTX_TRAILER_SIZE ? end - LTX_TRAILER_SIZE : 0);
		goto out;
	}

	/* Phase 2: the input is proven good; write the database. */
	const off_t new_size = (off_t)h.commit * ps;
	bool in_db;
	res->db_changed = true;
	if (new_size > old_size && sys_ftruncate(db_fd, new_size) < 0) {
		rc = fail_src(res, -errno, DBFILE_ERR_DB);
		goto out;
	}
	rc = spool_replay(&sp, db_fd, &in_db);
	if (rc < 0) {
		fail_src(res, rc, in_db ? DBFILE_ERR_DB : DBFILE_ERR_SPOOL);
		goto out;
	}
	if (new_size < old_size && sys_ftruncate(db_fd, new_size) < 0) {
		rc = fail_src(res, -errno, DBFILE_ERR_DB);
		goto out;
	}
	/* check_follows() and the header rules (max >= min) make a non-snapshot
	 * move the position strictly forward; a snapshot may go anywhere. */
	CHECK_MSG(snapshot || h.max_txid > pos.txid, "txid=%016" PRIx64 " max_txid=%016" PRIx64, pos.txid,
		  h.max_txid);
	res->trailer = t;
	res->pos = (struct ltx_pos){ .txid = h.max_txid, .checksum = t.post_apply_checksum };
	res->written = sp.pgnos;
	res->n_written = sp.n_pages;
	sp.pgnos = NULL;
	rc = 0;

out:
	/* Releasing the spool's space is best effort: the apply's outcome is
	 * already decided and must not be turned into a failure here. */
	if (spool_fd >= 0 && sp.flushed > 0 && ftruncate(spool_fd, 0) < 0) {
		/* Nothing to do: the spool only wastes space until closed. */
	}
	ltx_decoder_free(dec);
	free(sp.pgnos);
	free(sp.buf);
	free(page);
	free(old);
	return rc;
}
