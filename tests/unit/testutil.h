/*
 * testutil.h — helpers shared by the C unit tests: a seeded PRNG, test data
 * paths, temporary files, a fake environment, and an in-memory model of a
 * database used to build and check random LTX chains. Every helper asserts (cmocka) instead
 * of returning errors.
 */
#ifndef LITEFS_TESTUTIL_H
#define LITEFS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ltx/ltx.h"

/* Directory for new_file(); each test program fills it in (mkdtemp), or
 * lets run_in_tmp_dir() do it. */
extern char tmp_dir[256];

struct CMUnitTest;
/* Makes tmp_dir ($TMPDIR or /tmp, "<prog>.XXXXXX"), runs the tests
 * (TEST_FILTER selects by name), removes tmp_dir; returns cmocka's result,
 * or 1 if tmp_dir could not be made. */
int run_in_tmp_dir(const char *prog, const struct CMUnitTest *tests, size_t n);
#define RUN_IN_TMP_DIR(prog, tests) run_in_tmp_dir(prog, tests, sizeof(tests) / sizeof((tests)[0]))

void seed(uint64_t s);
uint64_t rnd(void);
uint32_t rnd_below(uint32_t n);

/* Path of rel under the shared test data ($LITEFS_TESTDATA or
 * ../shared/testdata), written into buf. */
const char *testdata(const char *rel, char *buf, size_t size);
/* Whole file; caller frees with free(). */
uint8_t *read_file(const char *path, size_t *len);
/* A fresh empty file in tmp_dir, opened O_RDWR. */
int new_file(const char *name);
void write_all(int fd, const void *buf, size_t len);
off_t file_size(int fd);
/* Whole content of fd; caller frees with free(). */
uint8_t *slurp(int fd, size_t *len);
void assert_fd_content(int fd, const uint8_t *data, size_t len);

/* A fake environment for the goenv_getenv_fn hooks (base/goenv.h), so that
 * tests never touch the process environment. */
struct env_var {
	const char *key, *val;
};

struct fake_env {
	const struct env_var *vars;
	size_t n;
};

/* goenv_getenv_fn over ctx, a struct fake_env * (NULL: empty). */
const char *fake_getenv(const char *name, void *ctx);

struct model {
	uint32_t page_size;
	uint32_t n_pages;
	uint8_t *data;
};

uint8_t *model_page(struct model *m, uint32_t pgno);
void model_resize(struct model *m, uint32_t n);
struct model model_copy(const struct model *m);
void model_free(struct model *m);
uint64_t model_checksum(struct model *m);
/* Encodes the pages listed (pgnos[0..n)) of m under header h. */
void encode_ltx(struct ltx_growbuf *out, const struct ltx_header *h, struct model *m,
		       const uint32_t *pgnos, size_t n, uint64_t post);
/* Snapshot of m at txid (TXIDs 1..txid) as an LTX file, built by the test
 * itself rather than by dbfile. */
void encode_model_snapshot(struct ltx_growbuf *out, struct model *m, uint64_t txid, bool compress);

/* Appends the LTX file of TXIDs min..max after a database whose checksum
 * is pre: one page of page_size (at most 4096), page 1, filled with the
 * byte max. Returns the post-apply checksum. */
uint64_t encode_filled_record(struct ltx_growbuf *gb, uint32_t page_size, uint64_t min, uint64_t max, uint64_t pre);

#endif
