/*
 * test_lost.c — node/lost: the layout of an event (names, modes,
 * info.json), contiguity, and that a failed write or fsync leaves no
 * event and no temporary directory behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/sys.h"
#include "ltx/ltx.h"
#include "node/lost.h"
#include "testutil.h"

#define PAGE_SIZE 512

static uint64_t encode_record(struct ltx_growbuf *gb, uint64_t min, uint64_t max, uint64_t pre)
{
	return encode_filled_record(gb, PAGE_SIZE, min, max, pre);
}

/* A file holding the records of TXIDs first..last back to back (as in a
 * segment, without record headers); offs[i]/lens[i] locate record i. */
struct recs {
	int fd;
	uint64_t offs[8];
	uint32_t lens[8];
	uint64_t pre_first, post_last;
	size_t n;
};

static void make_recs(struct recs *r, const char *name, uint64_t first, uint64_t last)
{
	struct ltx_growbuf gb = { 0 };
	uint64_t pre = LTX_CHECKSUM_FLAG | 0x1234;
	memset(r, 0, sizeof(*r));
	r->pre_first = pre;
	for (uint64_t t = first; t <= last; t++) {
		size_t at = gb.len;
		pre = encode_record(&gb, t, t, pre);
		r->offs[r->n] = at;
		r->lens[r->n++] = (uint32_t)(gb.len - at);
	}
	r->post_last = pre;
	r->fd = new_file(name);
	write_all(r->fd, gb.data, gb.len);
	free(gb.data);
}

static char data_dir[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	static int k;
	snprintf(data_dir, sizeof(data_dir), "%s/data%d", tmp_dir, k++);
	assert_int_equal(mkdir(data_dir, 0755), 0);
	return 0;
}

/* Names in dir other than . and .., sorted, joined with ','. */
static void list_dir(const char *dir, char *out, size_t len)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);
	out[0] = '\0';
	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, ".."))
			snprintf(out + strlen(out), len - strlen(out), "%s%s", out[0] ? "," : "", names[i]->d_name);
		free(names[i]);
	}
	free(names);
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void test_event_layout(void **state)
{
	(void)state;
	struct recs r;
	make_recs(&r, "recs-layout", 5, 7);
	struct lost_event *ev;
	assert_int_equal(lost_begin(data_dir, "app.db", &ev), 0);
	for (size_t i = 0; i < r.n; i++)
		assert_int_equal(lost_add(ev, r.fd, r.offs[i], r.lens[i]), 0);
	assert_int_equal(lost_count(ev), 3);
	assert_int_equal(lost_base(ev).txid, 4);
	assert_int_equal(lost_base(ev).checksum, r.pre_first);
	struct ltx_pos by = { 8, LTX_CHECKSUM_FLAG | 99 };
	char dir[PATH_MAX];
	assert_int_equal(lost_commit(ev, "a test", &by, dir, sizeof(dir)), 0);

	char path[PATH_MAX + 64], names[1024];
	snprintf(path, sizeof(path), "%s/lost/app.db", data_dir);
	assert_int_equal(strncmp(dir, path, strlen(path)), 0);
	/* <stamp>-<first>-<last>: 20261126T160915.123Z-...-... */
	const char *base = dir + strlen(path) + 1;
	assert_int_equal(strlen(base), 20 + 1 + 16 + 1 + 16);
	assert_int_equal(base[8], 'T');
	assert_int_equal(base[19], 'Z');
	assert_string_equal(base + 21, "0000000000000005-0000000000000007");
	list_dir(path, names, sizeof(names));
	assert_string_equal(names, base); /* no temporary directory left */
	list_dir(dir, names, sizeof(names));
	assert_string_equal(names, "0000000000000005-0000000000000005.ltx,0000000000000006-0000000000000006.ltx,"
				   "0000000000000007-0000000000000007.ltx,info.json");
	snprintf(path, sizeof(path), "%s/lost", data_dir);
	assert_int_equal(mode_of(path), 0700);
	assert_int_equal(mode_of(dir), 0700);
	snprintf(path, sizeof(path), "%s/info.json", dir);
	assert_int_equal(mode_of(path), 0600);
	snprintf(path, sizeof(path), "%s/0000000000000006-0000000000000006.ltx", dir);
	assert_int_equal(mode_of(path), 0600);

	/* Each file is its record, byte for byte. */
	size_t len;
	uint8_t *got = read_file(path, &len);
	assert_int_equal(len, r.lens[1]);
	uint8_t *want = malloc(len);
	assert_int_equal(pread(r.fd, want, len, (off_t)r.offs[1]), (ssize_t)len);
	assert_memory_equal(got, want, len);
	free(got);
	free(want);

	snprintf(path, sizeof(path), "%s/info.json", dir);
	json_error_t jerr;
	json_t *o = json_load_file(path, 0, &jerr);
	assert_non_null(o);
	char chk[17];
	snprintf(chk, sizeof(chk), "%016" PRIx64, r.pre_first);
	assert_string_equal(json_string_value(json_object_get(o, "db")), "app.db");
	assert_string_equal(json_string_value(json_object_get(o, "reason")), "a test");
	assert_string_equal(json_string_value(json_object_get(o, "first_txid")), "0000000000000005");
	assert_string_equal(json_string_value(json_object_get(o, "last_txid")), "0000000000000007");
	assert_int_equal(json_integer_value(json_object_get(o, "files")), 3);
	json_t *b = json_object_get(o, "base");
	assert_string_equal(json_string_value(json_object_get(b, "txid")), "0000000000000004");
	assert_string_equal(json_string_value(json_object_get(b, "checksum")), chk);
	json_t *rb = json_object_get(o, "replaced_by");
	assert_string_equal(json_string_value(json_object_get(rb, "txid")), "0000000000000008");
	assert_non_null(json_string_value(json_object_get(o, "time")));
	json_decref(o);
	close(r.fd);
}

static void test_refusals(void **state)
{
	(void)state;
	struct recs r;
	make_recs(&r, "recs-refusals", 1, 3);
	struct lost_event *ev;
	assert_int_equal(lost_begin(data_dir, "../x", &ev), ERR_INVAL);
	assert_int_equal(lost_begin(data_dir, ".hidden", &ev), ERR_INVAL);
	assert_int_equal(lost_begin(data_dir, "db", &ev), 0);
	/* Nothing added: nothing to commit, and nothing left behind. */
	assert_int_equal(lost_commit(ev, "empty", NULL, NULL, 0), ERR_INVAL);
	assert_int_equal(lost_begin(data_dir, "db", &ev), 0);
	assert_int_equal(lost_add(ev, r.fd, r.offs[0], r.lens[0]), 0);
	/* A gap (3 after 1), then a record that is not an LTX file. */
	assert_int_equal(lost_add(ev, r.fd, r.offs[2], r.lens[2]), ERR_LTX_NOT_CONTIGUOUS);
	assert_true(lost_add(ev, r.fd, r.offs[0] + 1, r.lens[0] - 1) <= -1000);
	assert_int_equal(lost_add(ev, r.fd, 0, 10), ERR_LTX_TRUNCATED);
	lost_abort(ev);
	lost_abort(NULL);
	char path[PATH_MAX + 16], names[256];
	snprintf(path, sizeof(path), "%s/lost/db", data_dir);
	list_dir(path, names, sizeof(names));
	assert_string_equal(names, "");
	close(r.fd);
}

/* Fails the Nth fsync of an event of two files (2 files, info.json, the
 * directory, the database's directory: 5) and the Nth pwrite: before the
 * rename nothing remains; a failure of the last fsync (after the rename)
 * leaves the complete event and is reported. */
static void test_faults(void **state)
{
	(void)state;
	struct recs r;
	make_recs(&r, "recs-faults", 10, 11);
	for (int kind = 0; kind < 2; kind++) {
		for (long nth = 1;; nth++) {
			char db[32];
			snprintf(db, sizeof(db), "f%d-%ld", kind, nth);
			struct lost_event *ev;
			assert_int_equal(lost_begin(data_dir, db, &ev), 0);
			sys_fault_arm_ex(kind ? SYS_PWRITE : SYS_FSYNC, nth, EIO, 0, "/lost/");
			int rc = 0;
			for (size_t i = 0; rc == 0 && i < r.n; i++)
				rc = lost_add(ev, r.fd, r.offs[i], r.lens[i]);
			if (rc == 0)
				rc = lost_commit(ev, "faults", NULL, NULL, 0);
			else
				lost_abort(ev);
			sys_fault_arm_ex(kind ? SYS_PWRITE : SYS_FSYNC, 0, 0, 0, NULL);
			char path[PATH_MAX + 64], names[256];
			snprintf(path, sizeof(path), "%s/lost/%s", data_dir, db);
			list_dir(path, names, sizeof(names));
			if (rc == 0) {
				assert_true(nth > 1);
				assert_int_not_equal(names[0], '\0');
				break;
			}
			assert_int_equal(rc, -EIO);
			/* The database directory's fsync comes after the rename. */
			if (kind == 0 && nth == 5)
				assert_int_not_equal(names[0], '\0');
			else
				assert_string_equal(names, "");
		}
	}
	close(r.fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_event_layout, setup),
		cmocka_unit_test_setup(test_refusals, setup),
		cmocka_unit_test_setup(test_faults, setup),
	};
	return RUN_IN_TMP_DIR("test_lost", tests);
}
