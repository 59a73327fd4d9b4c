/*
 * cloud_fork.c — a new database made from a whole state in one pass
 * (contract and design: cloud_fork.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/sys.h"
#include "cloud/cloud_fork.h"
#include "cloud/cloud_object.h"
#include "cloud/cloud_progress.h"
#include "cloud/cloud_rebuild.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_zltx.h"
#include "ltx/ltx.h"

/* The size of the writes to both files: small enough that the pages
 * copied into the buffer are still in the CPU cache when the kernel copies
 * them out (as cloud_merge.c measured). */
#define FORK_WRITE_BYTES (256u << 10)

/* Both files' writeback is started every this many bytes, and what lies
 * more than SYS_WB_KEEP behind the write is waited for and dropped from
 * the page cache (sys_writeback), so that a fork of gigabytes writes into
 * the same few megabytes of memory over and over. Fresh memory costs a
 * fault to the hypervisor per page on its first touch on this project's
 * VMs (Firecracker, free page reporting): writing 2 GB into new page
 * cache took 4-6 s of CPU on an idle machine, dropping behind 1 s in all
 * (BENCHMARKS.md, "a fork that reuses its memory"). The put's fsync then
 * finds the object on disk; the current copy, a cache never fsync'd, is
 * on disk too, and read from there later. Where other work churns the
 * memory, new memory is mostly recently freed memory and the waits are
 * the cost: an earlier session measured the drops 1.3-1.5x slower under
 * other engineers' builds, this one 1.7-2.2x faster under a synthetic
 * churn (BENCHMARKS.md). */
#define FORK_KICK_BYTES (8u << 20)

/* The object's writes: the encoder's buffer (64 KiB) goes straight to
 * the file, with no second buffer in between. */
struct obj_out {
	int fd;
	off_t off;        /* written */
	struct sys_wb wb;
};

static int obj_write(void *ctx, const void *buf, size_t len)
{
	struct obj_out *o = ctx;
	int rc = sys_pwrite_all(o->fd, buf, len, o->off);
	if (rc < 0)
		return rc;
	o->off += (off_t)len;
	return sys_writeback(&o->wb, o->fd, o->off);
}

/* The two files being written and what the pass learns. */
struct fork_pass {
	struct sys_writer cur;
	struct obj_out obj;
	struct cloud_zltx_writer *zw; /* the zstd stored form, or NULL */
	struct ltx_encoder *enc;
	uint32_t page_size, n;        /* pages of the state */
	uint32_t cur_pages;           /* pages written to the copy */
	int64_t ts_ms;                /* the snapshot's header timestamp */
	struct ltx_trailer trailer;
};

/* Appends page pgno to the current copy, the lock page before it as
 * zeros when the state skips it. */
static int cur_page(struct fork_pass *fp, uint32_t pgno, const uint8_t *page, const uint8_t *zero)
{
	int rc = 0;
	while (rc == 0 && fp->cur_pages + 1 < pgno) {
		rc = sys_writer_write(&fp->cur, zero, fp->page_size);
		fp->cur_pages++;
	}
	if (rc == 0)
		rc = sys_writer_write(&fp->cur, page, fp->page_size);
	fp->cur_pages++;
	return rc;
}

/* Reads st to its end into both files; sums (may be NULL) gets every
 * page's checksum. */
static int pass_pages(struct fork_pass *fp, struct cloud_state *st, uint64_t *sums)
{
	struct cloud_state_iter it = { .st = st, .rd = { .fd = st->fd, .ps = fp->page_size, .n = fp->n } };
	uint8_t *zero = calloc(1, fp->page_size);
	if (st->merge == NULL)
		it.rd.buf = malloc(CLOUD_PAGERD_BYTES);
	int rc = zero && (st->merge || it.rd.buf) ? 0 : ERR_NOMEM;
	uint32_t lock = ltx_lock_pgno(fp->page_size), pgno;
	const uint8_t *page;
	uint64_t sum, crc;
	cloud_progress_phase("write", fp->n);
	while (rc == 0 && (rc = cloud_state_next(&it, &pgno, &page, &sum, &crc)) == 1) {
		cloud_progress_add(pgno == lock + 1 ? 2 : 1); /* the lock page is skipped */
		rc = cur_page(fp, pgno, page, zero);
		if (rc == 0)
			rc = ltx_encoder_write_page_crc(fp->enc, pgno, page, crc);
		if (sums)
			sums[pgno - 1] = sum;
	}
	if (rc == 0 && fp->cur_pages != fp->n)
		rc = ERR_IO_SHORT; /* a file state shorter than it was */
	free(zero);
	free(it.rd.buf);
	return rc;
}

/* Writes state st (whose checksum must be checksum) into the copy cur_fd
 * and the object obj_fd; *stored gets the object's size. */
static int write_state(struct cloud_state *st, uint64_t checksum, const struct cloud_fork_dst *dst, int cur_fd,
		       int obj_fd, struct fork_pass *fp, uint64_t *sums, uint64_t *stored)
{
	int rc = cloud_state_pages(st, &fp->n);
	if (rc < 0)
		return rc;
	fp->page_size = st->ps;
	fp->cur = (struct sys_writer){ .fd = cur_fd, .cap = FORK_WRITE_BYTES, .buf = malloc(FORK_WRITE_BYTES),
				       .wb = { .kick = FORK_KICK_BYTES, .keep = SYS_WB_KEEP } };
	fp->obj = (struct obj_out){ .fd = obj_fd, .wb = { .kick = FORK_KICK_BYTES, .keep = SYS_WB_KEEP } };
	if (fp->cur.buf == NULL)
		return ERR_NOMEM;
	ltx_write_fn write = obj_write;
	void *ctx = &fp->obj;
	if (dst->zstd && (uint64_t)fp->n * fp->page_size <= CLOUD_ZLTX_INGEST_MAX) {
		rc = cloud_zltx_writer_new(&fp->zw, CLOUD_ZLTX_LEVEL, obj_write, &fp->obj);
		if (rc < 0)
			return rc;
		write = cloud_zltx_write;
		ctx = fp->zw;
	}
	fp->ts_ms = clock_wall_ms();
	struct ltx_header h = { .page_size = fp->page_size, .commit = fp->n, .min_txid = 1, .max_txid = 1,
				.timestamp_ms = fp->ts_ms };
	rc = ltx_encoder_new(&fp->enc, &h, write, ctx);
	if (rc == 0)
		rc = pass_pages(fp, st, sums);
	/* A snapshot's post-apply checksum is its pages' (0: computed). */
	if (rc == 0)
		rc = ltx_encoder_finish(fp->enc, 0, &fp->trailer);
	if (rc == 0 && fp->trailer.post_apply_checksum != checksum)
		rc = ERR_LTX_POST_CHECKSUM;
	if (rc == 0 && fp->zw)
		rc = cloud_zltx_writer_finish(fp->zw);
	if (rc == 0)
		rc = sys_writer_flush(&fp->cur);
	*stored = (uint64_t)fp->obj.off;
	return rc;
}

static void pass_free(struct fork_pass *fp)
{
	ltx_encoder_free(fp->enc);
	cloud_zltx_writer_free(fp->zw);
	free(fp->cur.buf);
}

/* Makes the written object durable and the database known: meta object,
 * put, catalog commit (cloud_fork.h). row is the row to commit. */
static int publish(const struct cloud_fork_dst *dst, char *obj_tmp, const struct cat_db *row,
		   const struct fork_pass *fp, uint64_t stored)
{
	char name[96];
	int rc = cloud_meta_put(dst->be, dst->tmp_dir, dst->id, dst->cluster, dst->name, row->created_ms);
	if (rc < 0)
		return rc;
	cloud_object_name(name, sizeof(name), dst->id, 0, 1, 1);
	rc = dst->be->ops->put(dst->be, name, obj_tmp);
	obj_tmp[0] = '\0'; /* consumed by put */
	if (rc < 0)
		return rc;
	struct cat_file f = { 0, 1, 1, 0, row->checksum, row->mts_ms, fp->page_size, stored };
	struct cat_tx tx = { 1, 1, row->checksum, row->ts_ms, row->mts_ms, fp->page_size };
	cloud_catalog_lock(dst->cat);
	rc = cloud_catalog_add_upload(dst->cat, row, true, &f, &tx);
	cloud_catalog_unlock(dst->cat);
	if (rc < 0)
		dst->be->ops->del(dst->be, name);
	return rc;
}

int cloud_fork_create(struct cloud_state *st, uint64_t checksum, const struct cloud_fork_dst *dst,
		      struct cat_db *row, bool *cur_ok, struct pagesums *sums)
{
	char obj_tmp[PATH_MAX] = "", cur_tmp[PATH_MAX] = "";
	struct fork_pass fp = { 0 };
	uint64_t stored = 0, *sum = NULL;
	uint32_t n = 0;
	*cur_ok = false;
	if (sums)
		pagesums_clear(sums);
	int rc = cloud_state_pages(st, &n);
	if (rc == 0 && sums && n > 0 && n <= PAGESUMS_MAX_PAGES && (sum = calloc(n, sizeof(*sum))) == NULL)
		rc = ERR_NOMEM;
	/* Named for what they are, so a test can pick them out (LITEFS_FAULT
	 * path=). */
	int obj_fd = rc < 0 ? -1 : fileio_tmp_create(dst->tmp_dir, "fork-obj-", obj_tmp, sizeof(obj_tmp));
	int cur_fd = obj_fd < 0 ? -1 : fileio_tmp_create(dst->tmp_dir, "fork-cur-", cur_tmp, sizeof(cur_tmp));
	if (rc == 0 && (obj_fd < 0 || cur_fd < 0))
		rc = obj_fd < 0 ? obj_fd : cur_fd;
	if (rc == 0)
		rc = write_state(st, checksum, dst, cur_fd, obj_fd, &fp, sum, &stored);
	if (obj_fd >= 0)
		close(obj_fd);
	if (cur_fd >= 0)
		close(cur_fd);
	*row = (struct cat_db){ .id = dst->id, .page_size = fp.page_size, .commit = fp.n, .txid = 1,
				.checksum = fp.trailer.post_apply_checksum, .ts_ms = fp.ts_ms, .mts_ms = fp.ts_ms,
				.created_ms = clock_wall_ms() };
	snprintf(row->cluster, sizeof(row->cluster), "%s", dst->cluster);
	snprintf(row->name, sizeof(row->name), "%s", dst->name);
	if (rc == 0)
		rc = publish(dst, obj_tmp, row, &fp, stored);
	if (rc == 0) {
		/* The copy is a cache: if this rename is lost, it is rebuilt. */
		*cur_ok = sys_renameat(AT_FDCWD, cur_tmp, AT_FDCWD, dst->cur_path) == 0;
		if (*cur_ok)
			cur_tmp[0] = '\0';
		if (sums && sum) {
			*sums = (struct pagesums){ .page_size = fp.page_size, .n = n, .sum = sum, .cap = n,
						   .pos = { 1, row->checksum }, .stage_max = sums->stage_max };
			sum = NULL;
		}
	} else {
		LOG_ERROR("cloud", "msg=\"fork failed\" cluster=%s db=%s db_id=%016" PRIx64 " err=\"%s\"",
			  dst->cluster, dst->name, (uint64_t)dst->id, err_str(rc));
	}
	if (obj_tmp[0])
		unlink(obj_tmp);
	if (cur_tmp[0])
		unlink(cur_tmp);
	pass_free(&fp);
	free(sum);
	return rc;
}
