/*
 * test_fileio.c — replace-by-rename under injected faults (the target is
 * old or new, never a mix, and no temp file is left), scratch files, and
 * the pure parts of the HTTP client helper (error bodies, URLs), and the
 * download sink (dlsink.h) with its dropped cache (sys_writeback).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "base/dlsink.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/httpc.h"
#include "base/sys.h"
#include "testutil.h"

/* Names in tmp_dir/sub, sorted into one string "a,b," for comparison. */
static void list_dir(const char *dir, char *out, size_t len)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);
	assert_true(n >= 0);
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, ".."))
			snprintf(out + strlen(out), len - strlen(out), "%s,", names[i]->d_name);
		free(names[i]);
	}
	free(names);
}

static void assert_file(const char *path, const char *want)
{
	size_t len = 0;
	uint8_t *got = read_file(path, &len);
	assert_non_null(got);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

/* A new directory tmp_dir/name holding "target" with old (when not NULL). */
static void fresh_dir(const char *name, char *dir, size_t dir_len, char *path, size_t path_len, const char *old)
{
	snprintf(dir, dir_len, "%s/%s", tmp_dir, name);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(path, path_len, "%s/target", dir);
	if (old)
		assert_int_equal(fileio_replace_file(path, old, strlen(old), 0644), 0);
}

static void test_replace_file(void **state)
{
	char dir[512], path[600], names[256];
	fresh_dir("replace", dir, sizeof(dir), path, sizeof(path), "old content");
	assert_file(path, "old content");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	mode_t mask = umask(0);
	umask(mask);
	assert_int_equal(st.st_mode & 0777, 0644 & ~mask); /* the umask applies, as for open() */
	list_dir(dir, names, sizeof(names));
	assert_string_equal(names, "target,");

	assert_int_equal(fileio_replace_file(path, "new", 3, 0644), 0);
	assert_file(path, "new");
	list_dir(dir, names, sizeof(names));
	assert_string_equal(names, "target,");
}

/* Every fault on the path (the write, the file's fsync, the rename, the
 * directory's fsync): the target is whole, old or new, and the directory
 * holds nothing else. */
static void test_replace_faults(void **state)
{
	char dir[512], path[600], names[256];
	fresh_dir("faults", dir, sizeof(dir), path, sizeof(path), NULL);

	static const struct {
		enum sys_call call;
		long nth;
		bool new_after; /* the failure comes after the rename */
	} cases[] = {
		{ SYS_PWRITE, 1, false },
		{ SYS_FSYNC, 1, false },
		{ SYS_RENAME, 1, false },
		{ SYS_FSYNC, 2, true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(fileio_replace_file(path, "old", 3, 0644), 0);
		sys_fault_arm(cases[i].call, sys_call_count(cases[i].call) + cases[i].nth, EIO);
		assert_int_equal(fileio_replace_file(path, "new content", 11, 0644), -EIO);
		sys_fault_arm(cases[i].call, 0, 0);
		assert_file(path, cases[i].new_after ? "new content" : "old");
		list_dir(dir, names, sizeof(names));
		assert_string_equal(names, "target,");
	}
}

/* A caller's write error is sticky: the commit refuses, the target stays. */
static void test_replace_write_error_and_abort(void **state)
{
	char dir[512], path[600], names[256];
	fresh_dir("abort", dir, sizeof(dir), path, sizeof(path), "old");

	struct fileio_replace r;
	assert_int_equal(fileio_replace_open(&r, path, 0644), 0);
	assert_int_equal(fileio_replace_write(&r, "ne", 2), 0);
	sys_fault_arm(SYS_PWRITE, sys_call_count(SYS_PWRITE) + 1, ENOSPC);
	assert_int_equal(fileio_replace_write(&r, "w", 1), -ENOSPC);
	sys_fault_arm(SYS_PWRITE, 0, 0);
	assert_int_equal(fileio_replace_write(&r, "w", 1), -ENOSPC);
	assert_int_equal(fileio_replace_commit(&r), -ENOSPC);
	fileio_replace_abort(&r); /* a no-op after a commit */
	assert_file(path, "old");
	list_dir(dir, names, sizeof(names));
	assert_string_equal(names, "target,");

	assert_int_equal(fileio_replace_open(&r, path, 0644), 0);
	assert_int_equal(fileio_replace_write(&r, "partial", 7), 0);
	fileio_replace_abort(&r);
	fileio_replace_abort(&r);
	assert_file(path, "old");
	list_dir(dir, names, sizeof(names));
	assert_string_equal(names, "target,");

	/* A relative name replaces in the current directory. */
	char cwd[512];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	assert_int_equal(fileio_replace_file("target", "rel", 3, 0644), 0);
	assert_int_equal(chdir(cwd), 0);
	assert_file(path, "rel");

	assert_int_equal(fileio_replace_open(&r, "/nonexistent-dir-for-litefs-tests/x", 0644), -ENOENT);
}

static void test_spool_and_tmp(void **state)
{
	char names[256], dir[512], path[600];
	fresh_dir("spool", dir, sizeof(dir), path, sizeof(path), NULL);
	int fd = fileio_spool_open(dir);
	assert_true(fd >= 0);
	assert_int_equal(sys_pwrite_all(fd, "abc", 3, 0), 0);
	list_dir(dir, names, sizeof(names));
	assert_string_equal(names, "");
	close(fd);
	assert_int_equal(fileio_spool_open("/nonexistent-dir-for-litefs-tests"), -ENOENT);

	fd = fileio_tmp_create(dir, "tmp-", path, sizeof(path));
	assert_true(fd >= 0);
	assert_int_equal(strncmp(path + strlen(dir), "/tmp-", 5), 0);
	assert_int_equal(access(path, F_OK), 0);
	close(fd);
	unlink(path);
	char tiny[8];
	assert_int_equal(fileio_tmp_create(dir, "tmp-", tiny, sizeof(tiny)), -ENAMETOOLONG);
}

/* Private modes: created 0600/0700 whatever the umask, wider ones tightened
 * (and reported), a missing path no error, a file where a directory should
 * be refused. */
static void test_private_modes(void **state)
{
	(void)state;
	char dir[512], path[600], side[640];
	struct stat st;
	bool t = false;
	mode_t old = umask(0);
	snprintf(dir, sizeof(dir), "%s/private", tmp_dir);
	assert_int_equal(fileio_private_dir(dir, &t), 0);
	assert_false(t);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(fileio_private_dir(dir, &t), 0);
	assert_true(t);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);

	snprintf(path, sizeof(path), "%s/x.db", dir);
	snprintf(side, sizeof(side), "%s/x.db-wal", dir);
	int fd = open(side, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	t = false;
	assert_int_equal(fileio_private_sqlite(path, &t), 0);
	assert_true(t); /* the -wal */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(side, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	t = false;
	assert_int_equal(fileio_private_sqlite(path, &t), 0);
	assert_false(t);
	assert_int_equal(fileio_private_path("/nonexistent-path-for-litefs-tests", &t), 0);
	assert_int_equal(fileio_private_dir(path, &t), -ENOTDIR);
	umask(old);
}

/* ---- httpc: the parts that need no server ------------------------------------ */

static void error_of(const char *body, const char *reason, struct httpc_error *e)
{
	struct httpc_req q;
	httpc_req_init(&q, NULL);
	q.mem = body ? strdup(body) : NULL;
	q.mem_len = body ? strlen(body) : 0;
	snprintf(q.reason, sizeof(q.reason), "%s", reason);
	httpc_error_parse(&q, e);
	httpc_req_free(&q);
}

static void test_httpc_error_parse(void **state)
{
	struct httpc_error e;
	error_of("{\"code\": \"EPOSMISMATCH\", \"error\": \"position \\\"x\\\" mismatch\"}", "Conflict", &e);
	assert_true(e.from_json);
	assert_string_equal(e.text, "position \"x\" mismatch");
	assert_string_equal(e.code, "EPOSMISMATCH");
	httpc_text_for_log(e.text);
	assert_string_equal(e.text, "position 'x' mismatch");

	/* An "error" key that is not a string, or text that merely contains
	 * "error", is not taken for a JSON error. */
	error_of("{\"error\": 5}", "Bad Request", &e);
	assert_false(e.from_json);
	assert_string_equal(e.text, "{\"error\": 5}");
	error_of("the \"error\" is \"here\"", "", &e);
	assert_false(e.from_json);
	assert_string_equal(e.text, "the \"error\" is \"here\"");

	error_of("", "Service Unavailable", &e);
	assert_string_equal(e.text, "Service Unavailable");
	assert_string_equal(e.code, "");
	error_of(NULL, "", &e);
	assert_string_equal(e.text, "(no body)");
}

static void test_httpc_url_and_headers(void **state)
{
	CURL *c = curl_easy_init();
	assert_non_null(c);
	const char *const q[] = { "db", "a b&c.db", "txid", NULL, "cluster", "x", NULL };
	char *url = httpc_url(c, "http://h:1//", "/db/pos", q);
	assert_string_equal(url, "http://h:1/db/pos?db=a%20b%26c.db&cluster=x");
	free(url);
	url = httpc_url(c, "http://h:1", "/pos", NULL);
	assert_string_equal(url, "http://h:1/pos");
	free(url);
	curl_easy_cleanup(c);

	struct curl_slist *h = NULL;
	assert_int_equal(httpc_add_header(&h, "Expect:"), 0);
	assert_int_equal(httpc_add_header(&h, "Authorization: Bearer %s", "s3cret"), 0);
	assert_string_equal(h->data, "Expect:");
	assert_string_equal(h->next->data, "Authorization: Bearer s3cret");
	curl_slist_free_all(h);
}

/* Byte i of the test download. */
static uint8_t dl_byte(size_t i)
{
	return (uint8_t)(i * 2654435761u >> 13);
}

/* Feeds total bytes to the sink in chunks of odd sizes (as a network
 * delivers them); returns how many were accepted before a refusal. */
static size_t dl_feed(struct dlsink *s, size_t total)
{
	static uint8_t chunk[300000];
	size_t done = 0, k = 1;
	while (done < total) {
		k = (k * 7919 + 4093) % sizeof(chunk) + 1;
		if (k > total - done)
			k = total - done;
		for (size_t i = 0; i < k; i++)
			chunk[i] = dl_byte(done + i);
		if (dlsink_write(s, (const char *)chunk, k) != k)
			return done;
		done += k;
	}
	return done;
}

/* Pages of fd's first len bytes in the page cache. */
static size_t resident_pages(int fd, size_t len)
{
	void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	size_t n = (len + 4095) / 4096, in = 0;
	unsigned char *vec = malloc(n);
	assert_non_null(vec);
	assert_int_equal(mincore(m, len, vec), 0);
	for (size_t i = 0; i < n; i++)
		in += vec[i] & 1;
	free(vec);
	munmap(m, len);
	return in;
}

/* A sink into a replacement of tmp_dir/name/target, which holds "old". */
static struct dlsink *dl_begin(const char *name, char *dir, size_t dir_len, char *path, size_t path_len,
			       struct fileio_replace *out)
{
	struct dlsink *s = NULL;
	fresh_dir(name, dir, dir_len, path, path_len, "old");
	assert_int_equal(fileio_replace_open(out, path, 0600), 0);
	assert_int_equal(dlsink_start(&s, out), 0);
	return s;
}

/* A download of 96 MiB arrives whole, in order; the file holds about
 * SYS_WB_KEEP of it in the page cache (on a file system that has one to
 * drop: not tmpfs); the target appears only at the commit. */
static void test_dlsink_download(void **state)
{
	(void)state;
	char dir[512], path[600], got[64];
	struct fileio_replace out;
	struct dlsink *s = dl_begin("dl", dir, sizeof(dir), path, sizeof(path), &out);
	const size_t total = (size_t)96 << 20;
	assert_int_equal(dl_feed(s, total), total);
	assert_int_equal(dlsink_finish(s), 0);
	assert_int_equal(out.off, (off_t)total);
	assert_file(path, "old");
	struct statfs fs;
	assert_int_equal(fstatfs(out.fd, &fs), 0);
	if (fs.f_type != 0x01021994 /* TMPFS_MAGIC */) {
		size_t in = resident_pages(out.fd, total);
		assert_true(in * 4096 <= (size_t)SYS_WB_KEEP * 3 / 2 + (8u << 20));
	}
	assert_int_equal(fileio_replace_commit(&out), 0);
	size_t len = 0;
	uint8_t *data = read_file(path, &len);
	assert_non_null(data);
	assert_int_equal(len, total);
	for (size_t i = 0; i < total; i++)
		if (data[i] != dl_byte(i))
			fail_msg("byte %zu differs", i);
	free(data);
	list_dir(dir, got, sizeof(got));
	assert_string_equal(got, "target,");

	/* An empty download is an empty file. */
	assert_int_equal(fileio_replace_open(&out, path, 0600), 0);
	assert_int_equal(dlsink_start(&s, &out), 0);
	assert_int_equal(dlsink_finish(s), 0);
	assert_int_equal(fileio_replace_commit(&out), 0);
	assert_file(path, "");
}

/* A write of the file fails (disk full) mid-download: the sink refuses
 * what comes next, finish reports the error, and the target keeps its
 * old bytes once the caller aborts. */
static void test_dlsink_write_error(void **state)
{
	(void)state;
	char dir[512], path[600], got[64];
	struct fileio_replace out;
	struct dlsink *s = dl_begin("dlerr", dir, sizeof(dir), path, sizeof(path), &out);
	sys_fault_arm(SYS_PWRITE, sys_call_count(SYS_PWRITE) + 5, ENOSPC);
	size_t total = (size_t)64 << 20;
	size_t fed = dl_feed(s, total);
	assert_true(fed < total);
	assert_int_equal(dlsink_finish(s), -ENOSPC);
	assert_int_equal(out.err, -ENOSPC);
	sys_fault_arm(SYS_PWRITE, 0, 0);
	fileio_replace_abort(&out);
	assert_file(path, "old");
	list_dir(dir, got, sizeof(got));
	assert_string_equal(got, "target,");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replace_file),
		cmocka_unit_test(test_replace_faults),
		cmocka_unit_test(test_replace_write_error_and_abort),
		cmocka_unit_test(test_spool_and_tmp),
		cmocka_unit_test(test_private_modes),
		cmocka_unit_test(test_dlsink_download),
		cmocka_unit_test(test_dlsink_write_error),
		cmocka_unit_test(test_httpc_error_parse),
		cmocka_unit_test(test_httpc_url_and_headers),
	};
	return RUN_IN_TMP_DIR("test_fileio", tests);
}
