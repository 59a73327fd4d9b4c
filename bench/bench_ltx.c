/*
 * bench_ltx.c — throughput of CRC-64 and the LTX codec, each next to
 * memcpy over the same working set. Prints numbers; never fails on
 * timing. Each measurement repeats until it has run for ~0.4 s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ltx/crc64.h"
#include "ltx/ltx.h"

#define PAGE_SIZE 4096
#define N_PAGES 4096
#define MIN_SECONDS 0.4

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Keeps results alive so the compiler cannot drop the work. */
static volatile uint64_t sink;

struct job {
	void (*fn)(struct job *j);
	uint8_t *buf;       /* input */
	uint8_t *dst;       /* memcpy destination / scratch */
	size_t len;         /* bytes per run */
	size_t chunk;       /* 0 = whole buffer at once */
	struct ltx_growbuf *file;
	struct ltx_header h;
};

/* Runs j until MIN_SECONDS have passed; returns MB/s of j->len. */
static double measure(struct job *j)
{
	double start = now(), elapsed;
	long runs = 0;

	j->fn(j); /* warm up caches and lazy tables */
	do {
		j->fn(j);
		runs++;
		elapsed = now() - start;
	} while (elapsed < MIN_SECONDS);
	return (double)j->len * (double)runs / elapsed / 1e6;
}

static void run_memcpy(struct job *j)
{
	size_t step = j->chunk ? j->chunk : j->len;

	for (size_t off = 0; off < j->len; off += step)
		memcpy(j->dst + off, j->buf + off, step);
	sink += j->dst[j->len - 1];
}

static void run_crc_fast(struct job *j)
{
	size_t step = j->chunk ? j->chunk : j->len;
	uint64_t c = 0;

	for (size_t off = 0; off < j->len; off += step)
		c ^= crc64_update(0, j->buf + off, step);
	sink += c;
}

static void run_crc_generic(struct job *j)
{
	size_t step = j->chunk ? j->chunk : j->len;
	uint64_t c = 0;

	for (size_t off = 0; off < j->len; off += step)
		c ^= crc64_update_generic(0, j->buf + off, step);
	sink += c;
}

static void run_page_checksum(struct job *j)
{
	uint64_t c = 0;

	for (size_t i = 0; i < j->len / PAGE_SIZE; i++)
		c ^= ltx_page_checksum((uint32_t)i + 1, j->buf + i * PAGE_SIZE, PAGE_SIZE);
	sink += c;
}

static void run_encode(struct job *j)
{
	struct ltx_encoder *e = NULL;
	uint32_t lock = ltx_lock_pgno(PAGE_SIZE);

	j->file->len = 0; /* keep the capacity: measure the codec, not realloc */
	if (ltx_encoder_new(&e, &j->h, ltx_growbuf_write, j->file) != 0)
		abort();
	for (uint32_t i = 0; i < N_PAGES; i++) {
		uint32_t pgno = i + 1 >= lock ? i + 2 : i + 1;

		if (ltx_encoder_write_page(e, pgno, j->buf + (size_t)i * PAGE_SIZE) != 0)
			abort();
	}
	if (ltx_encoder_finish(e, LTX_CHECKSUM_FLAG | 1, NULL) != 0)
		abort();
	ltx_encoder_free(e);
}

static void run_decode(struct job *j)
{
	struct ltx_membuf m = {.data = j->file->data, .len = j->file->len, .off = 0};

	if (ltx_decode_all(ltx_membuf_read, &m, NULL, NULL, NULL, NULL, NULL) != 0)
		abort();
}

static void report(const char *what, const char *detail, double mbs, double memcpy_mbs)
{
	printf("%-10s %-16s %9.1f MB/s  (memcpy %.1f MB/s, %.2fx)\n", what, detail, mbs, memcpy_mbs,
	       mbs / memcpy_mbs);
}

/* Page contents that compress roughly like SQLite b-tree pages: a header,
 * some random-looking cells, text, and free space. */
static void fill_pages(uint8_t *buf, size_t n_pages)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	static const char text[] = "id=12345 name=alice email=alice@example.com status=active; ";

	for (size_t p = 0; p < n_pages; p++) {
		uint8_t *page = buf + p * PAGE_SIZE;

		memset(page, 0, PAGE_SIZE);
		for (size_t i = 0; i < PAGE_SIZE / 4; i++) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			page[i] = (uint8_t)s;
		}
		for (size_t i = PAGE_SIZE / 4; i < PAGE_SIZE * 3 / 4; i++)
			page[i] = (uint8_t)text[(i + p) % (sizeof(text) - 1)];
	}
}

int main(void)
{
	const size_t small = 1 << 20, big = (size_t)N_PAGES * PAGE_SIZE;
	uint8_t *buf = malloc(big), *dst = malloc(big);
	struct ltx_growbuf file = {0};
	struct job j = {.buf = buf, .dst = dst, .file = &file};
	double mc_small, mc_pages, mc_big, r;

	if (buf == NULL || dst == NULL)
		return 1;
	fill_pages(buf, N_PAGES);
	memset(dst, 1, big);

	j.len = small;
	j.chunk = 0;
	j.fn = run_memcpy;
	mc_small = measure(&j);
	j.chunk = PAGE_SIZE;
	mc_pages = measure(&j);
	j.len = big;
	j.chunk = 0;
	mc_big = measure(&j);

	j.len = small;
	j.chunk = 0;
	j.fn = run_crc_generic;
	report("crc64", "generic 1MiB", measure(&j), mc_small);
	j.fn = run_crc_fast;
	report("crc64", "1MiB", measure(&j), mc_small);
	j.chunk = PAGE_SIZE;
	j.fn = run_crc_generic;
	report("crc64", "generic 4KiB pgs", measure(&j), mc_pages);
	j.fn = run_crc_fast;
	report("crc64", "4KiB pages", measure(&j), mc_pages);
	j.fn = run_page_checksum;
	report("page_cksum", "4KiB pages", measure(&j), mc_pages);

	j.len = big;
	j.chunk = 0;
	for (int compress = 0; compress <= 1; compress++) {
		const char *name = compress ? "lz4 4096x4KiB" : "plain 4096x4KiB";

		j.h = (struct ltx_header){
			.flags = compress ? LTX_FLAG_COMPRESS : 0,
			.page_size = PAGE_SIZE,
			.commit = N_PAGES + 1,
			.min_txid = 2,
			.max_txid = 2,
			.pre_apply_checksum = LTX_CHECKSUM_FLAG | 1,
		};
		j.fn = run_encode;
		r = measure(&j);
		report("encode", name, r, mc_big);
		j.fn = run_decode;
		report("decode", name, measure(&j), mc_big);
		if (compress)
			printf("%-10s %-16s %9.2f (%zu bytes for %zu of pages)\n", "ratio", name,
			       (double)big / (double)file.len, file.len, big);
	}
	free(file.data);
	free(dst);
	free(buf);
	return 0;
}
