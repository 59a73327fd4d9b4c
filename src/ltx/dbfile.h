/*
 * dbfile.h — operations on a SQLite database file: page size, database
 * checksum, snapshot to LTX, apply LTX.
 *
 * The module does I/O only on file descriptors its caller opened (plus
 * the optional spool file of fileio_spool_open()) and never logs. LTX
 * bytes come and go through ltx_read_fn / ltx_write_fn callbacks.
 *
 * A "database file" here is any file of whole pages: apply and checksum
 * do not require a SQLite header, so raw page files (tests) work too.
 * Only dbfile_read_page_size() insists on one.
 */
#ifndef LITEFS_DBFILE_H
#define LITEFS_DBFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "ltx/ltx.h"

#define DBFILE_HEADER_MAGIC "SQLite format 3" /* plus its NUL: 16 bytes */

/* Reads the page size from the SQLite header of fd (offset 16, big-endian
 * u16, 1 meaning 65536). Returns 0, ERR_DB_HEADER (short file, wrong
 * magic, or a page size that is not a power of two in 512..65536), or
 * -errno. */
int dbfile_read_page_size(int fd, uint32_t *page_size);

/* Computes the database checksum of fd's content in pages of page_size:
 * LTX_CHECKSUM_FLAG | XOR of the page checksums of pages 1..N, lock page
 * skipped, N = file size / page_size (an empty file gives exactly
 * LTX_CHECKSUM_FLAG). Reads in large chunks and skips holes of sparse
 * files. *n_pages (may be NULL) gets N. Returns 0, ERR_LTX_PAGE_SIZE
 * (invalid page_size), ERR_DB_SIZE (size not a multiple of page_size, or
 * more than 2^32-1 pages), ERR_IO_SHORT (file shrank while being read),
 * ERR_NOMEM or -errno. */
int dbfile_checksum(int fd, uint32_t page_size, uint64_t *checksum, uint32_t *n_pages);

/* LTX_CHECKSUM_FLAG | XOR of the page checksums of all-zero pages
 * first..last (inclusive, lock page skipped); LTX_CHECKSUM_FLAG when
 * first > last. O(32) whatever the range: a page checksum is an affine
 * function of the page number when the data is fixed. page_size must be
 * valid and first >= 1. */
uint64_t dbfile_zero_pages_checksum(uint32_t page_size, uint32_t first, uint32_t last);

/* Checksums of all-zero pages of one page size (the shortcut above),
 * "raw": without LTX_CHECKSUM_FLAG, for XOR-ing into a running sum. */
struct dbfile_zero_sum {
	uint32_t page_size;
	uint64_t g0;     /* raw CRC of be32(0) || zero page */
	uint64_t d[32];  /* g(1<<k) ^ g(0) */
};
/* 33 CRCs of a zero page; page_size must be valid. */
void dbfile_zero_sum_init(struct dbfile_zero_sum *z, uint32_t page_size);
/* Raw checksum of the zero page pgno (32 XORs). */
uint64_t dbfile_zero_sum_page(const struct dbfile_zero_sum *z, uint32_t pgno);
/* Raw XOR of the checksums of zero pages first..last, lock page skipped
 * (0 when first > last). */
uint64_t dbfile_zero_sum_range(const struct dbfile_zero_sum *z, uint64_t first, uint64_t last);

/* Options of dbfile_encode_snapshot(). */
struct dbfile_snapshot_opts {
	uint32_t page_size;   /* 0: read it from the SQLite header */
	uint64_t txid;        /* max TXID of the snapshot (min is 1); 0 means 1 */
	int64_t timestamp_ms; /* header timestamp */
	bool compress;        /* LZ4-compress the page block */
	/* A full-image transaction instead of a snapshot: the file then
	 * follows position (follows_txid, pre_apply_checksum) with every page
	 * of the database, TXID range follows_txid+1..txid (txid 0: that + 1).
	 * 0: a snapshot. */
	uint64_t follows_txid;
	uint64_t pre_apply_checksum;
	uint64_t node_id;     /* header node ID */
	/* Non-NULL: the first 100 bytes of page 1 (the SQLite header) as they
	 * should be, in place of those of the file (which is not modified). */
	const uint8_t *sqlite_header;
};

/* Writes a snapshot LTX of the database in fd through write(write_ctx):
 * TXID range 1..opts->txid, pre-apply 0, commit N, every page 1..N except
 * the lock page, post-apply = the database checksum (or, with
 * opts->follows_txid, the same pages as a transaction that follows it).
 * One pass over fd in 1 MiB reads. *h and *t (may be
 * NULL) get the header and trailer written. Returns 0, a dbfile_checksum()
 * error, ERR_DB_HEADER (opts->page_size == 0 and no valid header), an
 * encoder error, or the write callback's error. On error the output is
 * incomplete and must be discarded. */
int dbfile_encode_snapshot(int fd, const struct dbfile_snapshot_opts *opts,
			   ltx_write_fn write, void *write_ctx,
			   struct ltx_header *h, struct ltx_trailer *t);

/* Where a dbfile_apply() error was detected. */
enum dbfile_err_source {
	DBFILE_ERR_NONE = 0,
	DBFILE_ERR_LTX,   /* in the LTX input; err_offset is a byte offset in it */
	DBFILE_ERR_DB,    /* reading or writing the database fd */
	DBFILE_ERR_SPOOL, /* reading or writing the spool */
};

struct dbfile_apply_result {
	struct ltx_header header;   /* valid once the header was decoded */
	struct ltx_trailer trailer; /* valid on success */
	struct ltx_pos pos;         /* the database's new position, on success */
	enum dbfile_err_source err_source;
	uint64_t err_offset;        /* see DBFILE_ERR_LTX */
	/* False on every error detected before the database was touched,
	 * which is every error that the LTX input can cause. True only if
	 * writing the database itself failed half-way: its content is then
	 * neither old nor new and must be resynchronised. */
	bool db_changed;
	/* On success: the pages written (ascending), in a heap array the
	 * caller frees with free(); pages whose content was already right are
	 * not written and not listed. NULL when none. */
	uint32_t *written;
	size_t n_written;
};

/*
 * Applies one LTX file, read through read(read_ctx), to the database in
 * db_fd (opened O_RDWR; it may be empty). pos is the database's current
 * position and must describe db_fd's current content: a non-snapshot file
 * must follow it (min TXID == pos.txid + 1, pre-apply == pos.checksum);
 * a snapshot follows any position and pos is then ignored.
 *
 * Old-or-new: the whole LTX input is decoded and validated (file checksum,
 * every decoder rule, and the post-apply checksum that the database would
 * have) *before* the first byte of db_fd is written. Decoded pages are
 * staged in spool_fd (an empty scratch file, see fileio_spool_open(); the
 * module truncates it back to empty before returning), or in memory if
 * spool_fd is -1. So any corrupt, truncated, non-following or wrong input
 * leaves db_fd byte-for-byte unchanged: not one write or truncate is
 * issued on it. Only then is db_fd written (through sys.h, so faults can
 * be injected); it is not fsync'd.
 *
 * Returns 0 with res->pos set, or a negative code with res->err_source:
 *   ERR_LTX_OVERLAP          min TXID <= pos.txid (non-snapshot)
 *   ERR_LTX_NOT_CONTIGUOUS   min TXID >  pos.txid + 1 (non-snapshot)
 *   ERR_LTX_PRE_MISMATCH     pre-apply != pos.checksum (non-snapshot)
 *   ERR_LTX_PAGE_SIZE_MISMATCH  the database has a SQLite header with
 *                            another page size (non-snapshot)
 *   ERR_LTX_POST_CHECKSUM    the result would not have the trailer's
 *                            post-apply checksum
 *   ERR_DB_SIZE              the database is not whole pages of the LTX
 *                            page size (non-snapshot)
 *   any decoder error, ERR_NOMEM, -errno.
 * res must not be NULL.
 */
int dbfile_apply(int db_fd, int spool_fd, ltx_read_fn read, void *read_ctx,
		 struct ltx_pos pos, struct dbfile_apply_result *res);

#endif
