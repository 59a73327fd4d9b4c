/*
 * cloud_state.h — a whole database state of litefs-cloud's engine, as
 * the writers that store it or send it read it: a file, or the pages of a
 * restore plan being merged (cloud_merge.h), either way page by page in
 * order with each page's checksum.
 *
 * Why a module of its own: a restore in place (cloud_store.c: the pages
 * that differ from the current copy) and a fork (cloud_fork.h: every page,
 * into a new database) read states the same way. No locks, no logging;
 * I/O only on the descriptors given.
 */
#ifndef LITEFS_CLOUD_STATE_H
#define LITEFS_CLOUD_STATE_H

#include <stdint.h>

struct cloud_merge;

/* A state to store or send: a file (fd, owned), or the pages of a plan
 * being merged (merge, owned), with its page size. */
struct cloud_state {
	int fd;
	struct cloud_merge *merge;
	uint32_t ps;
};

/* Frees the merge and closes the file; st may be closed again. */
void cloud_state_close(struct cloud_state *st);

/* Sequential page reads of a file in large blocks (the page-per-pread
 * loop this replaces cost a syscall per page of a gigabyte). */
#define CLOUD_PAGERD_BYTES (1u << 20)

struct cloud_pagerd {
	int fd;               /* borrowed */
	uint32_t ps, n;       /* page size, pages of the file */
	uint8_t *buf;         /* CLOUD_PAGERD_BYTES, the caller's */
	uint32_t first, count;
};

/* Page pgno (<= n): 1 with *page (valid until the next call), 0 if the
 * file is shorter than that, or -errno. */
int cloud_pagerd_get(struct cloud_pagerd *r, uint32_t pgno, const uint8_t **page);

/* The pages of a state in order (the lock page skipped) with their page
 * checksums. Set st, and for a file rd's fd (st->fd), ps, n and buf. */
struct cloud_state_iter {
	struct cloud_state *st;
	struct cloud_pagerd rd;
	uint32_t p;
};

/* 1 with the next page (*page valid until the next call) and its page
 * checksum, 0 at the end, or a negative code (a merge's: the state does
 * not verify). crc (may be NULL) gets the page's whole CRC
 * (ltx_page_crc(): the checksum without the flag, which hides a bit). */
int cloud_state_next(struct cloud_state_iter *it, uint32_t *pgno, const uint8_t **page, uint64_t *sum,
		     uint64_t *crc);

/* The number of pages of state st into *n (a file: its size; ERR_DB_SIZE
 * unless whole pages). */
int cloud_state_pages(struct cloud_state *st, uint32_t *n);

#endif
