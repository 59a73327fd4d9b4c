/* testutil.c — see testutil.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ltx/dbfile.h"
#include "base/fdio.h"
#include "ltx/ltx.h"
#include "testutil.h"

char tmp_dir[256];
static uint64_t rng_state;

uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

uint32_t rnd_below(uint32_t n)
{
	return n ? (uint32_t)(rnd() % n) : 0;
}

void seed(uint64_t s)
{
	rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

const char *testdata(const char *rel, char *buf, size_t size)
{
	const char *dir = getenv("LITEFS_TESTDATA");

	snprintf(buf, size, "%s/%s", dir && *dir ? dir : "../shared/testdata", rel);
	/* Say what is missing and how to fix it here, instead of letting the
	 * caller fail on an opaque `fd >= 0`. */
	if (access(buf, F_OK) != 0) {
		char cwd[1024];
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			snprintf(cwd, sizeof(cwd), "?");
		fail_msg("golden file %s is missing (%s; working directory %s). The test data live in "
			 "../shared/testdata relative to the repository root; point LITEFS_TESTDATA at that "
			 "directory, e.g. LITEFS_TESTDATA=/path/to/shared/testdata make unit",
			 buf, strerror(errno), cwd);
	}
	return buf;
}

uint8_t *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	uint8_t *buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(fdio_pread_full(fd, buf, (size_t)st.st_size, 0), (int)st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* A fresh empty file in tmp_dir, opened O_RDWR. */
int new_file(const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	return fd;
}

void write_all(int fd, const void *buf, size_t len)
{
	assert_int_equal(ftruncate(fd, 0), 0);
	if (len)
		assert_int_equal(fdio_pwrite_full(fd, buf, len, 0), 0);
}

off_t file_size(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_size;
}

/* The whole content of fd; caller frees. */
uint8_t *slurp(int fd, size_t *len)
{
	off_t size = file_size(fd);
	uint8_t *buf = malloc((size_t)size + 1);

	assert_non_null(buf);
	assert_int_equal(fdio_pread_full(fd, buf, (size_t)size, 0), (int)size);
	*len = (size_t)size;
	return buf;
}

void assert_fd_content(int fd, const uint8_t *data, size_t len)
{
	size_t got_len;
	uint8_t *got = slurp(fd, &got_len);

	assert_int_equal(got_len, len);
	assert_true(len == 0 || memcmp(got, data, len) == 0);
	free(got);
}

uint8_t *model_page(struct model *m, uint32_t pgno)
{
	return m->data + (size_t)(pgno - 1) * m->page_size;
}

void model_resize(struct model *m, uint32_t n)
{
	size_t old = (size_t)m->n_pages * m->page_size, new = (size_t)n * m->page_size;

	m->data = realloc(m->data, new ? new : 1);
	assert_non_null(m->data);
	if (new > old)
		memset(m->data + old, 0, new - old);
	m->n_pages = n;
}

struct model model_copy(const struct model *m)
{
	struct model c = { .page_size = m->page_size, .n_pages = m->n_pages };
	size_t len = (size_t)m->n_pages * m->page_size;

	c.data = malloc(len ? len : 1);
	assert_non_null(c.data);
	memcpy(c.data, m->data, len);
	return c;
}

void model_free(struct model *m)
{
	free(m->data);
	m->data = NULL;
	m->n_pages = 0;
}

uint64_t model_checksum(struct model *m)
{
	uint64_t chk = LTX_CHECKSUM_FLAG;
	uint32_t lock = ltx_lock_pgno(m->page_size);

	for (uint32_t p = 1; p <= m->n_pages; p++)
		if (p != lock)
			chk ^= ltx_page_checksum(p, model_page(m, p), m->page_size);
	return LTX_CHECKSUM_FLAG | chk;
}

/* Encodes an LTX file; pages are pgnos[0..n) taken from m (which must be
 * the state after the transaction). Caller frees out->data. */
void encode_ltx(struct ltx_growbuf *out, const struct ltx_header *h, struct model *m,
		       const uint32_t *pgnos, size_t n, uint64_t post)
{
	struct ltx_encoder *e = NULL;

	memset(out, 0, sizeof(*out));
	assert_int_equal(ltx_encoder_new(&e, h, ltx_growbuf_write, out), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ltx_encoder_write_page(e, pgnos[i], model_page(m, pgnos[i])), 0);
	assert_int_equal(ltx_encoder_finish(e, post, NULL), 0);
	ltx_encoder_free(e);
}

void encode_model_snapshot(struct ltx_growbuf *out, struct model *m, uint64_t txid, bool compress)
{
	uint32_t lock = ltx_lock_pgno(m->page_size);
	uint32_t *pgnos = malloc(sizeof(uint32_t) * (m->n_pages + 1));
	size_t n = 0;

	assert_non_null(pgnos);
	for (uint32_t p = 1; p <= m->n_pages; p++)
		if (p != lock)
			pgnos[n++] = p;
	struct ltx_header h = {
		.flags = compress ? LTX_FLAG_COMPRESS : 0,
		.page_size = m->page_size,
		.commit = m->n_pages,
		.min_txid = 1,
		.max_txid = txid,
		.timestamp_ms = 1700000000000 + (int64_t)txid,
	};
	encode_ltx(out, &h, m, pgnos, n, model_checksum(m));
	free(pgnos);
}

const char *fake_getenv(const char *name, void *ctx)
{
	const struct fake_env *e = ctx;
	for (size_t i = 0; e && i < e->n; i++)
		if (!strcmp(e->vars[i].key, name))
			return e->vars[i].val;
	return NULL;
}

int run_in_tmp_dir(const char *prog, const struct CMUnitTest *tests, size_t n)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/%s.XXXXXX", base && *base ? base : "/tmp", prog);
	if (!mkdtemp(tmp_dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	int rc = _cmocka_run_group_tests(prog, tests, n, NULL, NULL);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp_dir);
	return rc;
}

uint64_t encode_filled_record(struct ltx_growbuf *gb, uint32_t page_size, uint64_t min, uint64_t max, uint64_t pre)
{
	uint8_t page[4096];
	struct ltx_encoder *e;
	assert_true(page_size <= sizeof(page));
	memset(page, (int)(max & 0xff), page_size);
	struct ltx_header h = { .page_size = page_size, .commit = 1, .min_txid = min, .max_txid = max,
				.timestamp_ms = (int64_t)max, .pre_apply_checksum = min == 1 ? 0 : pre };
	assert_int_equal(ltx_encoder_new(&e, &h, ltx_growbuf_write, gb), 0);
	assert_int_equal(ltx_encoder_write_page(e, 1, page), 0);
	uint64_t post = LTX_CHECKSUM_FLAG | ltx_page_checksum(1, page, page_size);
	assert_int_equal(ltx_encoder_finish(e, post, NULL), 0);
	ltx_encoder_free(e);
	return post;
}
