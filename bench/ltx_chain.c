/*
 * ltx_chain — writes a chain of LTX files for the ingest benchmark of the
 * backup service (bench/cloud.py, case 6): a snapshot of a database of
 * N pages (TXID 1), then T transactions that each rewrite K distinct
 * random pages, LZ4-compressed as LiteFS sends them. Each page is half
 * random bytes and half a repeated byte, so it compresses about 2:1 like
 * the "big" chain of case 1. Post-apply checksums are maintained from the
 * page checksums (LTX.md), so the service verifies them like any upload.
 *
 * Usage: ltx_chain OUT_DIR PAGES TXNS PAGES_PER_TX [PAGE_SIZE [SEED [RUN]]]
 * RUN (default 1): the pages of a transaction come in runs of 1..2*RUN-1
 * consecutive pages at random places (1: scattered single pages, the
 * worst case for the writer; a bulk insert writes long runs).
 * Prints the file names, one a line, in TXID order.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/fdio.h"
#include "ltx/ltx.h"

static unsigned short rng_state[3] = { 0x330e, 0xabcd, 0x1234 };

static uint64_t rng(void)
{
	return (uint64_t)(uint32_t)jrand48(rng_state) << 32 | (uint32_t)jrand48(rng_state);
}

static void fill_page(uint8_t *page, uint32_t ps)
{
	for (uint32_t i = 0; i < ps / 2; i += 8) {
		uint64_t v = rng();
		memcpy(page + i, &v, 8);
	}
	memset(page + ps / 2, (int)(rng() & 0xff), ps / 2);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: ltx_chain OUT_DIR PAGES TXNS PAGES_PER_TX [PAGE_SIZE [SEED [RUN]]]\n");
		return 2;
	}
	const char *dir = argv[1];
	uint32_t n = (uint32_t)strtoul(argv[2], NULL, 10);
	uint32_t txns = (uint32_t)strtoul(argv[3], NULL, 10);
	uint32_t k = (uint32_t)strtoul(argv[4], NULL, 10);
	uint32_t ps = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 10) : 4096;
	if (argc > 6)
		rng_state[2] = (unsigned short)strtoul(argv[6], NULL, 10);
	uint32_t run = argc > 7 ? (uint32_t)strtoul(argv[7], NULL, 10) : 1;
	uint32_t lock = ltx_lock_pgno(ps);
	if (!ltx_is_valid_page_size(ps) || n == 0 || k == 0 || k > n / 2 || n >= lock || run == 0 || run > k) {
		fprintf(stderr, "ltx_chain: bad arguments (pages must stay below the lock page)\n");
		return 2;
	}
	uint64_t *sums = calloc(n + 1, sizeof(*sums));
	uint32_t *pick = malloc(k * sizeof(*pick));
	uint8_t *seen = calloc(n + 1, 1);
	uint8_t *page = malloc(ps);
	if (!sums || !pick || !seen || !page)
		return 1;
	uint64_t chk = 0;
	int64_t ts = (int64_t)time(NULL) * 1000;
	for (uint32_t t = 0; t <= txns; t++) {
		bool snap = t == 0;
		uint32_t cnt = snap ? n : k;
		if (!snap) {
			memset(seen, 0, n + 1);
			for (uint32_t i = 0; i < k;) {
				uint32_t p = 1 + (uint32_t)(rng() % n);
				uint32_t len = 1 + (uint32_t)(rng() % (2 * run - 1));
				for (uint32_t j = 0; j < len && i < k && p + j <= n; j++) {
					if (!seen[p + j]) {
						seen[p + j] = 1;
						pick[i++] = p + j;
					}
				}
			}
			qsort(pick, k, sizeof(*pick), cmp_u32);
		}
		struct ltx_header h = { .flags = LTX_FLAG_COMPRESS, .page_size = ps, .commit = n,
					.min_txid = t + 1, .max_txid = t + 1, .timestamp_ms = ts + t,
					.pre_apply_checksum = snap ? 0 : (LTX_CHECKSUM_FLAG | chk) };
		char path[4096], name[LTX_FILENAME_LEN];
		ltx_format_filename(name, t + 1, t + 1);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		struct ltx_encoder *e;
		if (fd < 0 || ltx_encoder_new(&e, &h, fdio_write, &fd) != 0) {
			fprintf(stderr, "ltx_chain: %s: %s\n", path, strerror(errno));
			return 1;
		}
		for (uint32_t i = 0; i < cnt; i++) {
			uint32_t p = snap ? i + 1 : pick[i];
			fill_page(page, ps);
			uint64_t pc = ltx_page_checksum(p, page, ps);
			chk ^= sums[p] ^ pc;
			sums[p] = pc;
			if (ltx_encoder_write_page(e, p, page) != 0)
				return 1;
		}
		if (ltx_encoder_finish(e, LTX_CHECKSUM_FLAG | chk, NULL) != 0)
			return 1;
		ltx_encoder_free(e);
		close(fd);
		printf("%s\n", path);
	}
	free(sums);
	free(pick);
	free(seen);
	free(page);
	return 0;
}
