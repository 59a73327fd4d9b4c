/*
 * Unit tests of chain.c: a database's chain of LTX records in segment
 * files (ltxlog.h) under <db dir>/ltx/.
 *
 * Records are real LTX files from ltx.h's encoder (one 512-byte page each,
 * checksums chained: each record's pre-apply checksum is the previous
 * one's post-apply checksum), appended the way db.c prepare_commit and
 * apply.c stage_record do it: chain_open_segment() when there is no open
 * segment, the LTX bytes at end + LTXLOG_HDR_SIZE, the record header at
 * end, then end advances. Rotation is chain_close_segment().
 *
 * What is checked: the cursor (from the start, from the middle with the
 * post-apply checksum, up to a limit, taken-back records, records no
 * longer retained, TXIDs inside a multi-transaction record, C1 broken on
 * disk, C2: bytes past `end` stay invisible); retention by mtime, the
 * newest segment and the backup HWM; crash recovery of torn, garbage and
 * undecodable tails and of segments left empty; chain_truncate;
 * chain_replace; the O_EXCL of chain_open_segment; fsync and rename
 * faults (sys_fault_arm) leaving the old state or the new one; concurrent
 * chain_sync_alongside on several chains (the regression for a deadlock
 * of the shared syncer); chain_dir_bytes; chain_list_segments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/sys.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "node/chain.h"
#include "testutil.h"

#define PAGE_SIZE 512
#define MAX_TXID 64

/* ---- Fixture: one database directory and its chain ------------------------ */

struct fixture {
	char dir[400];                 /* the database's directory */
	int db_dir_fd;
	struct chain c;
	uint64_t last_post;            /* post-apply checksum of the last record */
	/* By a record's max TXID: */
	uint64_t post[MAX_TXID];
	uint64_t off[MAX_TXID];        /* offset of the record header */
	uint32_t len[MAX_TXID];        /* LTX bytes */
	uint64_t seg[MAX_TXID];        /* first TXID of its segment */
};

static void fx_open(struct fixture *fx, const char *name)
{
	memset(fx, 0, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "%s/%s", tmp_dir, name);
	assert_int_equal(mkdir(fx->dir, 0755), 0);
	fx->db_dir_fd = open(fx->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fx->db_dir_fd >= 0);
	chain_init(&fx->c, name);
	assert_int_equal(chain_open_dir(&fx->c, fx->db_dir_fd), 0);
}

/* Drops the chain without a sync (a crash, as far as the chain knows) and
 * opens a fresh one on the same directory, as a restarted node does. */
static void fx_reopen(struct fixture *fx)
{
	chain_close(&fx->c);
	chain_init(&fx->c, "reopened");
	assert_int_equal(chain_open_dir(&fx->c, fx->db_dir_fd), 0);
}

static void fx_close(struct fixture *fx)
{
	chain_close(&fx->c);
	close(fx->db_dir_fd);
}

static uint64_t encode_record(struct ltx_growbuf *gb, uint64_t min, uint64_t max, uint64_t pre)
{
	return encode_filled_record(gb, PAGE_SIZE, min, max, pre);
}

enum { WRITE_HDR = 1, ADVANCE = 2, FULL = WRITE_HDR | ADVANCE };

/* Appends the record min..max to the open segment (opening one first if
 * there is none). With FULL it is committed; without WRITE_HDR the append
 * stopped before its header (a crash); without ADVANCE it lies past end
 * (C2: being appended). */
static void append_ex(struct fixture *fx, uint64_t min, uint64_t max, int how)
{
	struct chain *c = &fx->c;
	struct ltx_growbuf gb = { 0 };
	assert_true(max < MAX_TXID);
	if (c->log_fd < 0)
		assert_int_equal(chain_open_segment(c, min), 0);
	uint64_t post = encode_record(&gb, min, max, fx->last_post);
	uint64_t off = c->end;
	assert_int_equal(pwrite(c->log_fd, gb.data, gb.len, (off_t)(off + LTXLOG_HDR_SIZE)), (ssize_t)gb.len);
	if (how & WRITE_HDR) {
		uint8_t hdr[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(hdr, (uint32_t)gb.len);
		assert_int_equal(pwrite(c->log_fd, hdr, sizeof(hdr), (off_t)off), (ssize_t)sizeof(hdr));
	}
	fx->post[max] = post;
	fx->off[max] = off;
	fx->len[max] = (uint32_t)gb.len;
	fx->seg[max] = c->first_txid;
	if (how & ADVANCE) {
		c->end = off + LTXLOG_HDR_SIZE + gb.len;
		fx->last_post = post;
	}
	free(gb.data);
}

static void append(struct fixture *fx, uint64_t min, uint64_t max)
{
	append_ex(fx, min, max, FULL);
}

/* Appends one-transaction records first..last. */
static void append_range(struct fixture *fx, uint64_t first, uint64_t last)
{
	for (uint64_t txid = first; txid <= last; txid++)
		append(fx, txid, txid);
}

/* The standard chain: records 1..3 in segment 1 (closed), 4..6 in
 * segment 4 (open). */
static void build_two_segments(struct fixture *fx)
{
	append_range(fx, 1, 3);
	chain_close_segment(&fx->c);
	append_range(fx, 4, 6);
	assert_int_equal(fx->c.first_txid, 4);
}

static void seg_name(char *name, uint64_t first)
{
	ltxlog_format_name(name, first);
}

static bool seg_exists(struct fixture *fx, uint64_t first)
{
	char name[LTXLOG_NAME_LEN];
	struct stat st;
	seg_name(name, first);
	return fstatat(fx->c.dir_fd, name, &st, 0) == 0;
}

static uint64_t seg_size(struct fixture *fx, uint64_t first)
{
	char name[LTXLOG_NAME_LEN];
	struct stat st;
	seg_name(name, first);
	assert_int_equal(fstatat(fx->c.dir_fd, name, &st, 0), 0);
	return (uint64_t)st.st_size;
}

/* End of the record whose max TXID is txid. */
static uint64_t rec_end(struct fixture *fx, uint64_t txid)
{
	return fx->off[txid] + LTXLOG_HDR_SIZE + fx->len[txid];
}

/* Asserts that the segments are exactly want[0..n). */
static void expect_segments(struct fixture *fx, const uint64_t *want, size_t n)
{
	uint64_t *firsts = NULL;
	size_t got = 99;
	assert_int_equal(chain_list_segments(fx->c.dir_fd, &firsts, &got), 0);
	assert_int_equal(got, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(firsts[i], want[i]);
	free(firsts);
}

/* Last write of segment first set to sec_ago seconds before now. */
static void set_age(struct fixture *fx, uint64_t first, int64_t sec_ago)
{
	char name[LTXLOG_NAME_LEN];
	struct timespec ts[2];
	seg_name(name, first);
	assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts[0]), 0);
	ts[0].tv_sec -= sec_ago;
	ts[1] = ts[0];
	assert_int_equal(utimensat(fx->c.dir_fd, name, ts, 0), 0);
}

/* Asserts the cursor's next record is min..max, whole and verified. */
static void expect_next(struct fixture *fx, struct chain_cursor *cur, uint64_t limit, uint64_t min, uint64_t max)
{
	int fd = -1;
	struct ltxlog_rec rec;
	assert_int_equal(chain_cursor_next(&fx->c, cur, limit, &fd, &rec), 1);
	assert_true(fd >= 0);
	assert_int_equal(rec.offset, fx->off[max]);
	assert_int_equal(rec.len, fx->len[max]);
	struct ltxlog_reader r;
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t eoff = 0;
	ltxlog_reader_init(&r, fd, &rec);
	assert_int_equal(ltx_decode_all(ltxlog_read, &r, NULL, NULL, &h, &t, &eoff), 0);
	assert_int_equal(h.min_txid, min);
	assert_int_equal(h.max_txid, max);
	assert_int_equal(t.post_apply_checksum, fx->post[max]);
	assert_int_equal(cur->next_txid, max + 1);
	assert_int_equal(cur->seg_first, fx->seg[max]);
}

static void expect_end(struct fixture *fx, struct chain_cursor *cur, uint64_t limit)
{
	int fd = -1;
	struct ltxlog_rec rec;
	assert_int_equal(chain_cursor_next(&fx->c, cur, limit, &fd, &rec), 0);
}

static int cursor_next_rc(struct fixture *fx, struct chain_cursor *cur, uint64_t limit)
{
	int fd = -1;
	struct ltxlog_rec rec;
	return chain_cursor_next(&fx->c, cur, limit, &fd, &rec);
}

/* Arms a fault on the next call of kind. */
static void fail_next(enum sys_call kind, int err)
{
	sys_fault_arm(kind, sys_call_count(kind) + 1, err);
}

static void disarm(enum sys_call kind)
{
	sys_fault_arm(kind, 0, 0);
}

/* ---- Cursor ---------------------------------------------------------------- */

static void test_cursor_reads_all_across_segments(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	fx_open(&fx, "read_all");
	build_two_segments(&fx);
	expect_segments(&fx, (const uint64_t[]){ 1, 4 }, 2);

	chain_cursor_init(&cur, 1);
	assert_int_equal(cur.fd, -1);
	for (uint64_t txid = 1; txid <= 6; txid++)
		expect_next(&fx, &cur, 6, txid, txid);
	expect_end(&fx, &cur, 6);
	expect_end(&fx, &cur, 6); /* stays at the end */

	/* A record appended later is read by the same cursor. */
	append(&fx, 7, 7);
	expect_next(&fx, &cur, 7, 7, 7);
	expect_end(&fx, &cur, 7);
	chain_cursor_close(&cur);
	chain_cursor_close(&cur); /* idempotent */
	assert_int_equal(cur.fd, -1);
	fx_close(&fx);
}

static void test_cursor_from_the_middle(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	uint64_t post = 0;
	fx_open(&fx, "middle");
	build_two_segments(&fx);

	/* After TXID 3, the last record of the closed segment: the cursor
	 * moves on to the next segment by itself. */
	chain_cursor_init(&cur, 0);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 3, &post), 0);
	assert_int_equal(post, fx.post[3]);
	assert_int_equal(cur.next_txid, 4);
	for (uint64_t txid = 4; txid <= 6; txid++)
		expect_next(&fx, &cur, 6, txid, txid);
	expect_end(&fx, &cur, 6);

	/* After TXID 2 (inside the first segment), and after 5 (in the open
	 * one); a seek re-positions an open cursor. */
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 2, &post), 0);
	assert_int_equal(post, fx.post[2]);
	for (uint64_t txid = 3; txid <= 6; txid++)
		expect_next(&fx, &cur, 6, txid, txid);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 5, &post), 0);
	assert_int_equal(post, fx.post[5]);
	expect_next(&fx, &cur, 6, 6, 6);
	expect_end(&fx, &cur, 6);

	/* After the first record of a segment, and after the very last. */
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 4, &post), 0);
	assert_int_equal(post, fx.post[4]);
	expect_next(&fx, &cur, 6, 5, 5);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 6, &post), 0);
	assert_int_equal(post, fx.post[6]);
	expect_end(&fx, &cur, 6);

	/* At a TXID (no checksum wanted): the record starting there. */
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 4, NULL), 0);
	assert_int_equal(cur.next_txid, 4);
	expect_next(&fx, &cur, 6, 4, 4);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 2, NULL), 0);
	expect_next(&fx, &cur, 6, 2, 2);
	chain_cursor_close(&cur);

	/* A cursor initialised in the middle seeks on its first read. */
	chain_cursor_init(&cur, 5);
	expect_next(&fx, &cur, 6, 5, 5);
	chain_cursor_close(&cur);

	/* Past the last record, or before the first: nothing to stand on. */
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 7, NULL), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 7, &post), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 0, &post), ERR_NEED_SNAPSHOT);
	assert_int_equal(cur.fd, -1);
	fx_close(&fx);
}

static void test_cursor_limit_and_take_back(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	fx_open(&fx, "limit");
	build_two_segments(&fx);

	chain_cursor_init(&cur, 1);
	for (uint64_t txid = 1; txid <= 4; txid++)
		expect_next(&fx, &cur, 4, txid, txid);
	/* Record 5 exists but is past the limit. */
	expect_end(&fx, &cur, 4);
	assert_int_equal(cur.next_txid, 5);
	/* The limit moves on: the rest follows. */
	expect_next(&fx, &cur, 6, 5, 5);
	expect_next(&fx, &cur, 6, 6, 6);
	expect_end(&fx, &cur, 6);

	/* The owner took back TXIDs 5 and 6 (a WAL commit whose sync
	 * failed): what the cursor returned is no longer ours. A limit of
	 * next_txid - 1 is just the end. */
	assert_int_equal(cursor_next_rc(&fx, &cur, 5), ERR_NEED_SNAPSHOT);
	assert_int_equal(cursor_next_rc(&fx, &cur, 4), ERR_NEED_SNAPSHOT);
	assert_int_equal(cursor_next_rc(&fx, &cur, 0), ERR_NEED_SNAPSHOT);
	expect_end(&fx, &cur, 6);
	chain_cursor_close(&cur);

	/* Limit 0: an empty database's cursor reads nothing. */
	chain_cursor_init(&cur, 1);
	expect_end(&fx, &cur, 0);
	assert_int_equal(cur.fd, -1);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

/* C2: a record being appended (header written or not) lies past end and
 * no cursor sees it, even with a limit that would allow it. */
static void test_cursor_ignores_bytes_past_end(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	uint64_t post;
	fx_open(&fx, "past_end");
	append_range(&fx, 1, 3);
	append_ex(&fx, 4, 4, WRITE_HDR); /* written, not committed */
	assert_true(seg_size(&fx, 1) > fx.c.end);

	chain_cursor_init(&cur, 1);
	for (uint64_t txid = 1; txid <= 3; txid++)
		expect_next(&fx, &cur, 3, txid, txid);
	expect_end(&fx, &cur, 3);
	assert_int_equal(cursor_next_rc(&fx, &cur, 4), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 4, NULL), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 4, &post), ERR_NEED_SNAPSHOT);

	/* Committed: now it is there. */
	fx.c.end = rec_end(&fx, 4);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 3, &post), 0);
	assert_int_equal(post, fx.post[3]);
	expect_next(&fx, &cur, 4, 4, 4);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

static void test_cursor_older_than_oldest_segment(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	uint64_t post;
	fx_open(&fx, "older");
	build_two_segments(&fx);
	set_age(&fx, 1, 3600);
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), 60 * 1000, UINT64_MAX), 1);
	assert_int_equal(fx.c.oldest_txid, 4);
	expect_segments(&fx, (const uint64_t[]){ 4 }, 1);

	chain_cursor_init(&cur, 0);
	for (uint64_t txid = 1; txid <= 3; txid++) {
		assert_int_equal(chain_cursor_seek(&fx.c, &cur, txid, NULL), ERR_NEED_SNAPSHOT);
		/* Record 3's checksum is gone with its segment, so even a
		 * reader right at the boundary cannot be verified. */
		assert_int_equal(chain_cursor_seek(&fx.c, &cur, txid, &post), ERR_NEED_SNAPSHOT);
	}
	assert_int_equal(cur.fd, -1);
	chain_cursor_close(&cur);
	chain_cursor_init(&cur, 2);
	assert_int_equal(cursor_next_rc(&fx, &cur, 6), ERR_NEED_SNAPSHOT);
	chain_cursor_close(&cur);

	/* What is retained still reads. */
	chain_cursor_init(&cur, 4);
	for (uint64_t txid = 4; txid <= 6; txid++)
		expect_next(&fx, &cur, 6, txid, txid);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

/* A record of TXIDs 2..4 (a compacted or batched file): positions 2 and 3
 * (after) and 3 and 4 (at) fall inside it. */
static void test_cursor_inside_multi_txn_record(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	uint64_t post;
	fx_open(&fx, "multi");
	append(&fx, 1, 1);
	append(&fx, 2, 4);
	append(&fx, 5, 5);

	chain_cursor_init(&cur, 0);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 3, NULL), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 4, NULL), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 2, &post), ERR_NEED_SNAPSHOT);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 3, &post), ERR_NEED_SNAPSHOT);
	assert_int_equal(cur.fd, -1);
	chain_cursor_close(&cur);
	chain_cursor_init(&cur, 3);
	assert_int_equal(cursor_next_rc(&fx, &cur, 5), ERR_NEED_SNAPSHOT);
	chain_cursor_close(&cur);

	/* Its edges are fine. */
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 1, &post), 0);
	assert_int_equal(post, fx.post[1]);
	expect_next(&fx, &cur, 5, 2, 4);
	expect_next(&fx, &cur, 5, 5, 5);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 4, &post), 0);
	assert_int_equal(post, fx.post[4]);
	expect_next(&fx, &cur, 5, 5, 5);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 2, NULL), 0);
	expect_next(&fx, &cur, 5, 2, 4);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

/* C1 broken on disk: a segment whose records skip a TXID. */
static void test_cursor_not_contiguous(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	fx_open(&fx, "gap");
	append(&fx, 1, 1);
	append(&fx, 3, 3);
	chain_cursor_init(&cur, 1);
	expect_next(&fx, &cur, 3, 1, 1);
	assert_int_equal(cursor_next_rc(&fx, &cur, 3), ERR_LTX_NOT_CONTIGUOUS);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

/* ---- Rotation -------------------------------------------------------------- */

static void test_rotation_due(void **state)
{
	struct fixture fx;
	const int64_t retention_ms = 60 * 60 * 1000;
	fx_open(&fx, "rotation");
	assert_false(chain_rotation_due(&fx.c, clock_wall_ms(), retention_ms)); /* no segment */
	append(&fx, 1, 1);
	int64_t created = fx.c.created_ms;
	assert_true(created > 0);
	assert_false(chain_rotation_due(&fx.c, created, retention_ms));
	/* By age: a quarter of the retention window (plus a second). */
	assert_false(chain_rotation_due(&fx.c, created + retention_ms / 4 + 999, retention_ms));
	assert_true(chain_rotation_due(&fx.c, created + retention_ms / 4 + 1000, retention_ms));
	/* By size. */
	uint64_t end = fx.c.end;
	fx.c.end = CHAIN_SEGMENT_MAX - 1;
	assert_false(chain_rotation_due(&fx.c, created, retention_ms));
	fx.c.end = CHAIN_SEGMENT_MAX;
	assert_true(chain_rotation_due(&fx.c, created, retention_ms));
	fx.c.end = end;
	chain_close_segment(&fx.c);
	assert_int_equal(fx.c.log_fd, -1);
	assert_false(chain_rotation_due(&fx.c, created + retention_ms, retention_ms));
	chain_close_segment(&fx.c); /* no-op without a segment */
	/* The record is in the closed segment. */
	assert_int_equal(seg_size(&fx, 1), rec_end(&fx, 1));
	fx_close(&fx);
}

/* ---- Retention ------------------------------------------------------------- */

/* Segments 1 (records 1-2), 3 (3-4), 5 (5-6) closed, 7 (7) open. */
static void build_four_segments(struct fixture *fx)
{
	append_range(fx, 1, 2);
	chain_close_segment(&fx->c);
	append_range(fx, 3, 4);
	chain_close_segment(&fx->c);
	append_range(fx, 5, 6);
	chain_close_segment(&fx->c);
	append_range(fx, 7, 7);
}

static void age_all(struct fixture *fx, int64_t sec_ago)
{
	for (uint64_t first = 1; first <= 7; first += 2)
		if (seg_exists(fx, first))
			set_age(fx, first, sec_ago);
}

static void test_retention_by_mtime(void **state)
{
	struct fixture fx;
	const int64_t retention_ms = 60 * 1000;
	fx_open(&fx, "retention");
	build_four_segments(&fx);

	/* Everything recent: nothing goes. */
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), retention_ms, UINT64_MAX), 0);
	assert_int_equal(fx.c.oldest_txid, 1);

	/* Oldest first, stopping at the first recent one, even if later
	 * ones are old. */
	set_age(&fx, 1, 300);
	set_age(&fx, 3, 10);
	set_age(&fx, 5, 300);
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), retention_ms, UINT64_MAX), 1);
	assert_int_equal(fx.c.oldest_txid, 3);
	expect_segments(&fx, (const uint64_t[]){ 3, 5, 7 }, 3);

	/* All old, the open one too: the newest always stays. */
	age_all(&fx, 300);
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), retention_ms, UINT64_MAX), 2);
	assert_int_equal(fx.c.oldest_txid, 7);
	expect_segments(&fx, (const uint64_t[]){ 7 }, 1);
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), retention_ms, UINT64_MAX), 0);
	assert_int_equal(fx.c.oldest_txid, 7);

	/* The chain goes on in the open segment. */
	append(&fx, 8, 8);
	struct chain_cursor cur;
	chain_cursor_init(&cur, 7);
	expect_next(&fx, &cur, 8, 7, 7);
	expect_next(&fx, &cur, 8, 8, 8);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

static void test_retention_stops_at_backup_hwm(void **state)
{
	const int64_t retention_ms = 60 * 1000;
	/* hwm -> the oldest segment that must stay. */
	static const struct {
		uint64_t hwm, oldest;
		int removed;
	} cases[] = {
		{ 0, 1, 0 },          /* nothing acknowledged */
		{ 1, 1, 0 },          /* record 1 is the HWM: its segment stays */
		{ 2, 1, 0 },          /* the HWM is segment 1's last record */
		{ 3, 3, 1 },          /* first record of segment 3 */
		{ 4, 3, 1 },
		{ 6, 5, 2 },
		{ 7, 7, 3 },          /* all acknowledged: down to the newest */
		{ 100, 7, 3 },
		{ UINT64_MAX, 7, 3 }, /* no backup */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture fx;
		char name[32];
		snprintf(name, sizeof(name), "hwm%zu", i);
		fx_open(&fx, name);
		build_four_segments(&fx);
		age_all(&fx, 300);
		int removed = chain_enforce_retention(&fx.c, clock_wall_ms(), retention_ms, cases[i].hwm);
		assert_int_equal(removed, cases[i].removed);
		assert_int_equal(fx.c.oldest_txid, cases[i].oldest);
		for (uint64_t first = 1; first <= 7; first += 2)
			assert_int_equal(seg_exists(&fx, first), first >= cases[i].oldest);
		fx_close(&fx);
	}
}

static void test_retention_empty_and_bad_dir(void **state)
{
	struct fixture fx;
	fx_open(&fx, "retention_empty");
	fx.c.oldest_txid = 5;
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), 0, UINT64_MAX), 0);
	assert_int_equal(fx.c.oldest_txid, 0);
	/* One segment only: it is the newest. */
	append(&fx, 1, 1);
	set_age(&fx, 1, 300);
	assert_int_equal(chain_enforce_retention(&fx.c, clock_wall_ms(), 0, UINT64_MAX), 0);
	assert_int_equal(fx.c.oldest_txid, 1);
	fx_close(&fx);

	struct chain c;
	chain_init(&c, "nodir");
	assert_int_equal(chain_enforce_retention(&c, clock_wall_ms(), 0, UINT64_MAX), -EBADF);
}

/* ---- Recovery -------------------------------------------------------------- */

static void expect_recovered(struct fixture *fx, uint64_t max, uint64_t want_seg)
{
	bool have = false;
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t seg_first = 0, rec_off = 99;
	assert_int_equal(chain_recover(&fx->c, &have, &h, &t, &seg_first, &rec_off), 0);
	assert_true(have);
	assert_int_equal(h.max_txid, max);
	assert_int_equal(t.post_apply_checksum, fx->post[max]);
	assert_int_equal(seg_first, want_seg);
	assert_int_equal(rec_off, fx->off[max]);
	/* The tail is cut right after it. */
	assert_int_equal(seg_size(fx, want_seg), rec_end(fx, max));
}

static void test_recover_clean(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_clean");
	build_two_segments(&fx);
	fx_reopen(&fx);
	expect_recovered(&fx, 6, 4);
	assert_int_equal(fx.c.oldest_txid, 1);
	assert_int_equal(seg_size(&fx, 1), rec_end(&fx, 3));
	/* Recovery does not open a segment: the next append opens one. */
	assert_int_equal(fx.c.log_fd, -1);
	fx_close(&fx);
}

static void test_recover_nothing(void **state)
{
	struct fixture fx;
	bool have = true;
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t seg_first = 0, rec_off = 0;
	fx_open(&fx, "recover_none");
	fx.c.oldest_txid = 42;
	assert_int_equal(chain_recover(&fx.c, &have, &h, &t, &seg_first, &rec_off), 0);
	assert_false(have);
	assert_int_equal(fx.c.oldest_txid, 0);

	/* Only segments left empty (created, then a crash): removed. */
	assert_int_equal(chain_open_segment(&fx.c, 1), 0);
	chain_close_segment(&fx.c);
	assert_int_equal(chain_open_segment(&fx.c, 1 + 1), 0);
	fx.last_post = LTX_CHECKSUM_FLAG | 1; /* record 1's, as if it existed */
	append_ex(&fx, 2, 2, 0); /* LTX bytes, no header */
	fx_reopen(&fx);
	have = true;
	assert_int_equal(chain_recover(&fx.c, &have, &h, &t, &seg_first, &rec_off), 0);
	assert_false(have);
	assert_int_equal(fx.c.oldest_txid, 0);
	expect_segments(&fx, NULL, 0);
	fx_close(&fx);

	struct chain c;
	chain_init(&c, "nodir");
	assert_int_equal(chain_recover(&c, &have, &h, &t, &seg_first, &rec_off), -EBADF);
}

/* The append stopped before the record header: zeros where it goes. */
static void test_recover_header_not_written(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_nohdr");
	append_range(&fx, 1, 3);
	append_ex(&fx, 4, 4, 0);
	assert_true(seg_size(&fx, 1) > rec_end(&fx, 3));
	fx_reopen(&fx);
	expect_recovered(&fx, 3, 1);
	assert_int_equal(fx.c.oldest_txid, 1);
	fx_close(&fx);
}

/* The record header made it but not all the bytes (or the file was cut
 * short); every cut inside the last record. */
static void test_recover_truncated_record(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_cut");
	append_range(&fx, 1, 3);
	append_ex(&fx, 4, 4, WRITE_HDR);
	uint64_t full = rec_end(&fx, 4);
	uint64_t cuts[] = { fx.off[4] + 1, fx.off[4] + LTXLOG_HDR_SIZE, fx.off[4] + LTXLOG_HDR_SIZE + 1,
			    fx.off[4] + LTXLOG_HDR_SIZE + fx.len[4] / 2, full - 1 };
	uint8_t *whole;
	size_t whole_len;
	whole = slurp(fx.c.log_fd, &whole_len);
	assert_int_equal(whole_len, full);
	fx_reopen(&fx);
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		char name[LTXLOG_NAME_LEN];
		seg_name(name, 1);
		int fd = openat(fx.c.dir_fd, name, O_RDWR);
		assert_true(fd >= 0);
		write_all(fd, whole, (size_t)cuts[i]);
		close(fd);
		expect_recovered(&fx, 3, 1);
	}
	free(whole);
	fx_close(&fx);
}

/* Garbage where the next record header should be. */
static void test_recover_garbage_tail(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_garbage");
	append_range(&fx, 1, 2);
	assert_int_equal(pwrite(fx.c.log_fd, "XXXXXXXXXXXXXXXX", 16, (off_t)fx.c.end), 16);
	fx_reopen(&fx);
	expect_recovered(&fx, 2, 1);
	fx_close(&fx);
}

static void corrupt_byte(struct fixture *fx, uint64_t seg, uint64_t off)
{
	char name[LTXLOG_NAME_LEN];
	uint8_t b;
	seg_name(name, seg);
	int fd = openat(fx->c.dir_fd, name, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

/* A whole record that does not decode: dropped, the earlier ones kept. */
static void test_recover_undecodable_last_record(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_corrupt");
	append_range(&fx, 1, 3);
	uint64_t size = fx.c.end;
	fx_reopen(&fx);
	/* The last byte of record 3's file checksum. */
	corrupt_byte(&fx, 1, rec_end(&fx, 3) - 1);
	assert_int_equal(seg_size(&fx, 1), size);
	expect_recovered(&fx, 2, 1);
	assert_int_equal(fx.c.oldest_txid, 1);

	/* Its post-apply checksum, then a page byte of record 2: each time
	 * the last record goes. */
	fx_close(&fx);
	fx_open(&fx, "recover_corrupt2");
	append_range(&fx, 1, 3);
	fx_reopen(&fx);
	corrupt_byte(&fx, 1, rec_end(&fx, 3) - LTX_TRAILER_SIZE);
	corrupt_byte(&fx, 1, fx.off[2] + LTXLOG_HDR_SIZE + LTX_HEADER_SIZE + 8);
	expect_recovered(&fx, 1, 1);
	fx_close(&fx);
}

/* The newest segment has nothing good left: it is removed and recovery
 * carries on in the one before. */
static void test_recover_empty_segment_removed(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_empty");
	build_two_segments(&fx);
	chain_close_segment(&fx.c);
	/* Segment 7: only a record whose header was never written. */
	append_ex(&fx, 7, 7, 0);
	assert_int_equal(fx.c.first_txid, 7);
	/* Every record of segment 4 fails to decode. */
	fx_reopen(&fx);
	for (uint64_t txid = 4; txid <= 6; txid++)
		corrupt_byte(&fx, 4, rec_end(&fx, txid) - 1);
	expect_recovered(&fx, 3, 1);
	assert_false(seg_exists(&fx, 7));
	assert_false(seg_exists(&fx, 4));
	expect_segments(&fx, (const uint64_t[]){ 1 }, 1);
	assert_int_equal(fx.c.oldest_txid, 1);

	/* The chain goes on from there: a new segment for TXID 4. */
	fx.last_post = fx.post[3];
	append_range(&fx, 4, 4);
	expect_segments(&fx, (const uint64_t[]){ 1, 4 }, 2);
	struct chain_cursor cur;
	chain_cursor_init(&cur, 1);
	for (uint64_t txid = 1; txid <= 4; txid++)
		expect_next(&fx, &cur, 4, txid, txid);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

/* An empty (zero-byte) newest segment: created, then a crash. */
static void test_recover_zero_byte_segment(void **state)
{
	struct fixture fx;
	fx_open(&fx, "recover_zero");
	append_range(&fx, 1, 2);
	chain_close_segment(&fx.c);
	assert_int_equal(chain_open_segment(&fx.c, 3), 0);
	fx_reopen(&fx);
	expect_recovered(&fx, 2, 1);
	assert_false(seg_exists(&fx, 3));
	fx_close(&fx);
}

/* ---- Truncation ------------------------------------------------------------ */

static void test_truncate(void **state)
{
	struct fixture fx;
	fx_open(&fx, "truncate");
	build_two_segments(&fx);
	chain_close_segment(&fx.c);

	/* Before record 6: segment 4 keeps 4 and 5. */
	assert_int_equal(chain_truncate(&fx.c, 4, fx.off[6]), 0);
	assert_int_equal(seg_size(&fx, 4), rec_end(&fx, 5));
	struct chain_cursor cur;
	chain_cursor_init(&cur, 1);
	for (uint64_t txid = 1; txid <= 5; txid++)
		expect_next(&fx, &cur, 5, txid, txid);
	expect_end(&fx, &cur, 5);
	chain_cursor_close(&cur);

	/* Before record 4, the first of its segment: the segment goes. */
	assert_int_equal(chain_truncate(&fx.c, 4, fx.off[4]), 0);
	assert_int_equal(fx.off[4], 0);
	assert_false(seg_exists(&fx, 4));
	expect_segments(&fx, (const uint64_t[]){ 1 }, 1);
	fx_reopen(&fx);
	expect_recovered(&fx, 3, 1);

	/* A segment that does not exist. */
	assert_int_equal(chain_truncate(&fx.c, 9, 0), -ENOENT);
	assert_false(seg_exists(&fx, 9));
	fx_close(&fx);
}

/* ---- Replacement by a snapshot --------------------------------------------- */

#define TMP_SEGMENT ".snapshot-tmp"

/* A scratch segment in ltx/ holding one snapshot record of TXIDs 1..max;
 * returns its fd, *end its size. */
static int make_snapshot_segment(struct fixture *fx, uint64_t max, uint64_t *end)
{
	struct ltx_growbuf gb = { 0 };
	int fd = openat(fx->c.dir_fd, TMP_SEGMENT, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	fx->post[max] = encode_record(&gb, 1, max, 0);
	uint8_t hdr[LTXLOG_HDR_SIZE];
	ltxlog_encode_hdr(hdr, (uint32_t)gb.len);
	assert_int_equal(pwrite(fd, gb.data, gb.len, LTXLOG_HDR_SIZE), (ssize_t)gb.len);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	fx->off[max] = 0;
	fx->len[max] = (uint32_t)gb.len;
	fx->seg[max] = 1;
	*end = LTXLOG_HDR_SIZE + gb.len;
	free(gb.data);
	return fd;
}

static void test_replace(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	uint64_t end, post;
	fx_open(&fx, "replace");
	build_two_segments(&fx);
	chain_close_segment(&fx.c);
	append_range(&fx, 7, 8); /* segment 7, open */
	expect_segments(&fx, (const uint64_t[]){ 1, 4, 7 }, 3);

	int fd = make_snapshot_segment(&fx, 10, &end);
	assert_int_equal(chain_replace(&fx.c, TMP_SEGMENT, fd, end), 0);
	expect_segments(&fx, (const uint64_t[]){ 1 }, 1);
	struct stat st;
	assert_int_not_equal(fstatat(fx.c.dir_fd, TMP_SEGMENT, &st, 0), 0);
	assert_int_equal(fx.c.log_fd, fd);
	assert_int_equal(fx.c.first_txid, 1);
	assert_int_equal(fx.c.end, end);
	assert_int_equal(fx.c.synced_end, 0);
	assert_int_equal(fx.c.oldest_txid, 1);
	assert_int_equal(seg_size(&fx, 1), end);

	/* The cursor reads the snapshot, and seeks after it. */
	chain_cursor_init(&cur, 1);
	expect_next(&fx, &cur, 10, 1, 10);
	expect_end(&fx, &cur, 10);
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 10, &post), 0);
	assert_int_equal(post, fx.post[10]);
	/* Old positions inside it are gone. */
	assert_int_equal(chain_cursor_seek(&fx.c, &cur, 5, &post), ERR_NEED_SNAPSHOT);

	/* It is the open segment: appends follow it, and sync. */
	fx.last_post = fx.post[10];
	append(&fx, 11, 11);
	assert_int_equal(fx.c.first_txid, 1);
	assert_int_equal(chain_sync(&fx.c), 0);
	assert_int_equal(fx.c.synced_end, fx.c.end);
	chain_cursor_init(&cur, 1);
	expect_next(&fx, &cur, 11, 1, 10);
	expect_next(&fx, &cur, 11, 11, 11);
	chain_cursor_close(&cur);
	fx_reopen(&fx);
	expect_recovered(&fx, 11, 1);
	fx_close(&fx);
}

/* The rename fails (or the scratch file is missing): an error, no open
 * segment, the scratch file left to the caller. */
/* A cursor that had read part of the old history when the chain was
 * replaced (a snapshot applied) must not go on reading the deleted
 * segments: it is told to start over. */
static void test_replace_under_an_open_cursor(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	uint64_t end;
	fx_open(&fx, "replace_cursor");
	build_two_segments(&fx);
	chain_close_segment(&fx.c);
	chain_cursor_init(&cur, 1);
	for (uint64_t txid = 1; txid <= 4; txid++)
		expect_next(&fx, &cur, 6, txid, txid);
	int fd = make_snapshot_segment(&fx, 10, &end);
	assert_int_equal(chain_replace(&fx.c, TMP_SEGMENT, fd, end), 0);
	assert_int_equal(cursor_next_rc(&fx, &cur, 10), ERR_NEED_SNAPSHOT);
	chain_cursor_close(&cur);
	/* A new cursor reads the new chain. */
	chain_cursor_init(&cur, 1);
	expect_next(&fx, &cur, 10, 1, 10);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

/* A record that ends past the limit waits for it, even when it starts
 * below (the owner's position is always some record's last TXID, but the
 * cursor must not rely on it). */
static void test_cursor_record_ending_past_limit(void **state)
{
	struct fixture fx;
	struct chain_cursor cur;
	fx_open(&fx, "limit_multi");
	append(&fx, 1, 1);
	append(&fx, 2, 4);
	chain_cursor_init(&cur, 1);
	expect_next(&fx, &cur, 2, 1, 1);
	expect_end(&fx, &cur, 2);
	expect_next(&fx, &cur, 4, 2, 4);
	chain_cursor_close(&cur);
	fx_close(&fx);
}

static void test_replace_fails(void **state)
{
	struct fixture fx;
	uint64_t end;
	fx_open(&fx, "replace_fail");
	build_two_segments(&fx);
	int fd = make_snapshot_segment(&fx, 10, &end);
	fail_next(SYS_RENAME, EIO);
	assert_int_equal(chain_replace(&fx.c, TMP_SEGMENT, fd, end), -EIO);
	disarm(SYS_RENAME);
	assert_int_equal(fx.c.log_fd, -1);
	struct stat st;
	assert_int_equal(fstatat(fx.c.dir_fd, TMP_SEGMENT, &st, 0), 0);
	/* The old chain was deleted first ("may be partly gone"). */
	expect_segments(&fx, NULL, 0);
	/* The caller still owns the fd; the retry works. */
	assert_int_equal(chain_replace(&fx.c, TMP_SEGMENT, fd, end), 0);
	expect_segments(&fx, (const uint64_t[]){ 1 }, 1);
	assert_int_equal(chain_replace(&fx.c, ".no-such-file", -1, 0), -ENOENT);
	/* fd was closed by chain_close_segment() inside the failed call. */
	assert_int_equal(fx.c.log_fd, -1);
	expect_segments(&fx, NULL, 0);
	fx_close(&fx);
}

/* ---- Opening segments, syncing, faults ------------------------------------- */

static void test_open_segment_exists(void **state)
{
	struct fixture fx;
	fx_open(&fx, "exists");
	append_range(&fx, 1, 2);
	chain_close_segment(&fx.c);
	uint64_t size = seg_size(&fx, 1);
	struct chain before = fx.c;

	assert_int_equal(chain_open_segment(&fx.c, 1), -EEXIST);
	assert_memory_equal(&before, &fx.c, sizeof(before));
	assert_int_equal(seg_size(&fx, 1), size);
	expect_segments(&fx, (const uint64_t[]){ 1 }, 1);
	/* Its records are intact. */
	fx_reopen(&fx);
	expect_recovered(&fx, 2, 1);
	fx_close(&fx);

	/* No directory. */
	struct chain c;
	chain_init(&c, "nodir");
	assert_int_equal(chain_open_segment(&c, 1), -EBADF);
	assert_int_equal(c.log_fd, -1);
}

static void test_open_segment_dir_fsync_fails(void **state)
{
	struct fixture fx;
	fx_open(&fx, "dir_fsync");
	long before = sys_call_count(SYS_FSYNC);
	fail_next(SYS_FSYNC, EIO);
	assert_int_equal(chain_open_segment(&fx.c, 1), -EIO);
	disarm(SYS_FSYNC);
	assert_int_equal(sys_call_count(SYS_FSYNC), before + 1);
	assert_int_equal(fx.c.log_fd, -1);
	assert_false(seg_exists(&fx, 1));
	expect_segments(&fx, NULL, 0);
	/* The retry works (and O_EXCL does not trip over a leftover). */
	assert_int_equal(chain_open_segment(&fx.c, 1), 0);
	assert_true(fx.c.log_fd >= 0);
	assert_int_equal(fx.c.first_txid, 1);
	assert_int_equal(fx.c.end, 0);
	assert_true(seg_exists(&fx, 1));
	fx_close(&fx);
}

static void test_sync_fsync_fails(void **state)
{
	struct fixture fx;
	fx_open(&fx, "sync_fault");
	/* Nothing to sync: no segment, or nothing new. */
	long n = sys_call_count(SYS_FSYNC);
	assert_int_equal(chain_sync(&fx.c), 0);
	assert_int_equal(sys_call_count(SYS_FSYNC), n);

	append_range(&fx, 1, 2);
	assert_int_equal(chain_sync(&fx.c), 0);
	assert_int_equal(fx.c.synced_end, fx.c.end);
	n = sys_call_count(SYS_FSYNC);
	assert_int_equal(chain_sync(&fx.c), 0);
	assert_int_equal(sys_call_count(SYS_FSYNC), n);

	uint64_t synced = fx.c.synced_end;
	append(&fx, 3, 3);
	fail_next(SYS_FSYNC, EIO);
	assert_int_equal(chain_sync(&fx.c), -EIO);
	assert_int_equal(fx.c.synced_end, synced);
	assert_int_equal(fx.c.end, rec_end(&fx, 3));
	fail_next(SYS_FSYNC, ENOSPC);
	assert_int_equal(chain_sync(&fx.c), -ENOSPC);
	assert_int_equal(fx.c.synced_end, synced);
	disarm(SYS_FSYNC);
	/* The next sync covers it. */
	assert_int_equal(chain_sync(&fx.c), 0);
	assert_int_equal(fx.c.synced_end, fx.c.end);

	/* A failed sync on close is logged; the segment is closed and its
	 * records stay. */
	append(&fx, 4, 4);
	fail_next(SYS_FSYNC, EIO);
	chain_close_segment(&fx.c);
	disarm(SYS_FSYNC);
	assert_int_equal(fx.c.log_fd, -1);
	fx_reopen(&fx);
	expect_recovered(&fx, 4, 1);
	fx_close(&fx);
}

/* SQLite style: fail the 1st, 2nd, ... fsync of "open a segment, append,
 * sync"; whatever fails, a recovery finds the old chain (records 1..2)
 * or the new one (1..3), never anything else. */
static void test_fsync_fault_matrix(void **state)
{
	for (long nth = 1; nth <= 3; nth++) {
		struct fixture fx;
		char name[32];
		snprintf(name, sizeof(name), "matrix%ld", nth);
		fx_open(&fx, name);
		append_range(&fx, 1, 2);
		assert_int_equal(chain_sync(&fx.c), 0);
		chain_close_segment(&fx.c);

		long base = sys_call_count(SYS_FSYNC);
		sys_fault_arm(SYS_FSYNC, base + nth, EIO);
		int rc = chain_open_segment(&fx.c, 3);
		bool appended = false;
		if (rc == 0) {
			append(&fx, 3, 3);
			appended = true;
			rc = chain_sync(&fx.c);
		}
		disarm(SYS_FSYNC);
		long calls = sys_call_count(SYS_FSYNC) - base;
		if (nth <= calls)
			assert_int_equal(rc, -EIO);
		else
			assert_int_equal(rc, 0);
		if (rc == 0)
			assert_int_equal(fx.c.synced_end, fx.c.end);
		else if (appended)
			assert_int_equal(fx.c.synced_end, 0);
		fx_reopen(&fx);
		bool have;
		struct ltx_header h;
		struct ltx_trailer t;
		uint64_t seg_first, rec_off;
		assert_int_equal(chain_recover(&fx.c, &have, &h, &t, &seg_first, &rec_off), 0);
		assert_true(have);
		assert_true(h.max_txid == 2 || h.max_txid == 3);
		assert_int_equal(t.post_apply_checksum, fx.post[h.max_txid]);
		assert_int_equal(h.max_txid == 3, appended);
		fx_close(&fx);
	}
}

/* chain_sync_alongside with one of its two fsyncs failing: the segment's
 * failure keeps synced_end, the client file's does not. */
static void test_sync_alongside_faults(void **state)
{
	struct fixture fx;
	fx_open(&fx, "alongside_fault");
	int client = new_file("alongside-client");
	assert_int_equal(pwrite(client, "x", 1, 0), 1);

	/* Nothing in the segment to sync: the client's file alone. */
	long n = sys_call_count(SYS_FSYNC);
	assert_int_equal(chain_sync_alongside(&fx.c, client), 0);
	assert_int_equal(sys_call_count(SYS_FSYNC), n + 1);

	append(&fx, 1, 1);
	assert_int_equal(chain_sync_alongside(&fx.c, client), 0);
	assert_int_equal(fx.c.synced_end, fx.c.end);

	append(&fx, 2, 2);
	uint64_t synced = fx.c.synced_end;
	sys_fault_arm_ex(SYS_FSYNC, 1, EIO, 0, LTXLOG_SUFFIX);
	assert_int_equal(chain_sync_alongside(&fx.c, client), -EIO);
	disarm(SYS_FSYNC);
	assert_int_equal(fx.c.synced_end, synced);

	sys_fault_arm_ex(SYS_FSYNC, 1, ENOSPC, 0, "alongside-client");
	assert_int_equal(chain_sync_alongside(&fx.c, client), -ENOSPC);
	disarm(SYS_FSYNC);
	assert_int_equal(fx.c.synced_end, fx.c.end);

	/* The client's fsync fails with nothing in the segment to sync. */
	sys_fault_arm_ex(SYS_FSYNC, 1, EIO, 0, "alongside-client");
	assert_int_equal(chain_sync_alongside(&fx.c, client), -EIO);
	disarm(SYS_FSYNC);
	close(client);
	fx_close(&fx);
}

/* ---- Concurrent syncs (the shared syncer) ---------------------------------- */

#define SYNC_THREADS 3
#define SYNC_ITERS 200

struct syncer_arg {
	struct fixture *fx;
	int client;
	int failures;          /* counted here: cmocka asserts only on the main thread */
	int done;              /* set last */
	pthread_mutex_t *mu;
};

static void *sync_thread(void *p)
{
	struct syncer_arg *a = p;
	struct chain *c = &a->fx->c;
	uint8_t buf[64];
	memset(buf, 0xab, sizeof(buf));
	for (int i = 0; i < SYNC_ITERS; i++) {
		/* Most rounds have segment bytes to sync; every fourth has
		 * none, so the two paths of chain_sync_alongside interleave
		 * between the threads. */
		if (i % 4 != 3) {
			if (pwrite(c->log_fd, buf, sizeof(buf), (off_t)c->end) != (ssize_t)sizeof(buf))
				a->failures++;
			c->end += sizeof(buf);
		}
		if (pwrite(a->client, buf, sizeof(buf), (off_t)i * (off_t)sizeof(buf)) != (ssize_t)sizeof(buf))
			a->failures++;
		if (chain_sync_alongside(c, a->client) != 0 || c->synced_end != c->end)
			a->failures++;
	}
	pthread_mutex_lock(a->mu);
	a->done = 1;
	pthread_mutex_unlock(a->mu);
	return NULL;
}

static void test_sync_alongside_concurrent(void **state)
{
	/* Static: if a thread hangs, the test fails while it still points
	 * at these. */
	static struct fixture fx[SYNC_THREADS];
	static struct syncer_arg args[SYNC_THREADS];
	static pthread_t threads[SYNC_THREADS];
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	for (int i = 0; i < SYNC_THREADS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "concurrent%d", i);
		fx_open(&fx[i], name);
		assert_int_equal(chain_open_segment(&fx[i].c, 1), 0);
		snprintf(name, sizeof(name), "concurrent-client%d", i);
		args[i] = (struct syncer_arg){ .fx = &fx[i], .client = new_file(name), .mu = &mu };
	}
	for (int i = 0; i < SYNC_THREADS; i++)
		assert_int_equal(pthread_create(&threads[i], NULL, sync_thread, &args[i]), 0);
	/* A deadlock shows as threads that never finish. The bound is far
	 * above the run time (a fraction of a second); it only keeps a hang
	 * from hanging the suite. */
	struct timespec deadline;
	assert_int_equal(clock_gettime(CLOCK_REALTIME, &deadline), 0);
	deadline.tv_sec += 30;
	for (int i = 0; i < SYNC_THREADS; i++) {
		int rc = pthread_timedjoin_np(threads[i], NULL, &deadline);
		if (rc != 0)
			fail_msg("sync thread %d did not finish (deadlock?): %s", i, strerror(rc));
	}
	for (int i = 0; i < SYNC_THREADS; i++) {
		assert_int_equal(args[i].done, 1);
		assert_int_equal(args[i].failures, 0);
		assert_int_equal(fx[i].c.synced_end, fx[i].c.end);
		assert_int_equal(seg_size(&fx[i], 1), fx[i].c.end);
		close(args[i].client);
		fx_close(&fx[i]);
	}
}

/* ---- Directory listing and disk use ---------------------------------------- */

static void touch(int dir_fd, const char *name, size_t size)
{
	int fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	if (size)
		assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static void test_list_segments(void **state)
{
	struct fixture fx;
	uint64_t *firsts = NULL;
	size_t n = 99;
	fx_open(&fx, "list");
	assert_int_equal(chain_list_segments(fx.c.dir_fd, &firsts, &n), 0);
	assert_int_equal(n, 0);
	free(firsts);

	int d = fx.c.dir_fd;
	touch(d, "000000000000001f.ltxlog", 0);
	touch(d, "0000000000000002.ltxlog", 0);
	touch(d, "000000000000000a.ltxlog", 0);
	touch(d, "ffffffffffffffff.ltxlog", 0);
	/* Not segments. */
	touch(d, "0000000000000003.ltx", 0);
	touch(d, "000000000000001F.ltxlog", 0);
	touch(d, "0000000000000004.ltxlog.tmp", 0);
	touch(d, ".spare-0000000000000001", 0);
	touch(d, "00000000000005.ltxlog", 0);
	expect_segments(&fx, (const uint64_t[]){ 2, 0xa, 0x1f, UINT64_MAX }, 4);
	/* More than the first allocation (16). */
	for (uint64_t i = 0x100; i < 0x100 + 40; i++) {
		char name[LTXLOG_NAME_LEN];
		seg_name(name, i);
		touch(d, name, 0);
	}
	assert_int_equal(chain_list_segments(d, &firsts, &n), 0);
	assert_int_equal(n, 44);
	for (size_t i = 1; i < n; i++)
		assert_true(firsts[i - 1] < firsts[i]);
	free(firsts);
	assert_int_equal(chain_list_segments(-1, &firsts, &n), -EBADF);
	fx_close(&fx);
}

/* A descriptor of its own (not dup(): readdir would share the offset). */
static int reopen_dir(int dir_fd)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void test_dir_bytes(void **state)
{
	struct fixture fx;
	fx_open(&fx, "bytes");
	int d = fx.c.dir_fd;
	assert_int_equal(chain_dir_bytes(reopen_dir(d)), 0);
	touch(d, "0000000000000001-0000000000000002.ltx", 100);
	touch(d, "0000000000000003.ltxlog", 200);
	touch(d, "x.ltx", 7);
	/* Not data. */
	touch(d, ".0000000000000005.ltxlog", 1000);
	touch(d, ".tmp.ltx", 1000);
	touch(d, ".spare-0000000000000001", 1000);
	touch(d, "notes.txt", 1000);
	touch(d, "ltx", 1000);
	touch(d, "0000000000000004.ltxlog.tmp", 1000);
	assert_int_equal(mkdirat(d, "dir.ltx", 0755), 0);
	assert_int_equal(symlinkat("0000000000000003.ltxlog", d, "link.ltxlog"), 0);
	assert_int_equal(chain_dir_bytes(reopen_dir(d)), 307);
	/* Takes ownership even of a bad descriptor. */
	assert_int_equal(chain_dir_bytes(-1), 0);
	int f = new_file("not-a-dir");
	assert_int_equal(chain_dir_bytes(f), 0);
	assert_int_equal(fcntl(f, F_GETFD), -1);
	fx_close(&fx);
}

static void test_open_dir(void **state)
{
	struct fixture fx;
	fx_open(&fx, "open_dir");
	struct stat st;
	assert_int_equal(fstatat(fx.db_dir_fd, "ltx", &st, 0), 0);
	assert_true(S_ISDIR(st.st_mode));
	/* Again: ltx/ exists; the old descriptor is replaced. */
	append(&fx, 1, 1);
	assert_int_equal(chain_open_dir(&fx.c, fx.db_dir_fd), 0);
	assert_true(fx.c.dir_fd >= 0);
	assert_true(seg_exists(&fx, 1));
	fx_close(&fx);

	/* ltx is a file, or there is no database directory. */
	char path[512];
	snprintf(path, sizeof(path), "%s/open_dir_file", tmp_dir);
	assert_int_equal(mkdir(path, 0755), 0);
	int dfd = open(path, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	touch(dfd, "ltx", 0);
	struct chain c;
	chain_init(&c, "bad");
	assert_int_equal(chain_open_dir(&c, dfd), -ENOTDIR);
	assert_int_equal(c.dir_fd, -1);
	assert_int_equal(chain_open_dir(&c, -1), -EBADF);
	chain_close(&c);
	chain_close(&c); /* idempotent */
	close(dfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cursor_reads_all_across_segments),
		cmocka_unit_test(test_cursor_from_the_middle),
		cmocka_unit_test(test_cursor_limit_and_take_back),
		cmocka_unit_test(test_cursor_ignores_bytes_past_end),
		cmocka_unit_test(test_cursor_older_than_oldest_segment),
		cmocka_unit_test(test_cursor_inside_multi_txn_record),
		cmocka_unit_test(test_cursor_not_contiguous),
		cmocka_unit_test(test_rotation_due),
		cmocka_unit_test(test_retention_by_mtime),
		cmocka_unit_test(test_retention_stops_at_backup_hwm),
		cmocka_unit_test(test_retention_empty_and_bad_dir),
		cmocka_unit_test(test_recover_clean),
		cmocka_unit_test(test_recover_nothing),
		cmocka_unit_test(test_recover_header_not_written),
		cmocka_unit_test(test_recover_truncated_record),
		cmocka_unit_test(test_recover_garbage_tail),
		cmocka_unit_test(test_recover_undecodable_last_record),
		cmocka_unit_test(test_recover_empty_segment_removed),
		cmocka_unit_test(test_recover_zero_byte_segment),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_replace),
		cmocka_unit_test(test_replace_under_an_open_cursor),
		cmocka_unit_test(test_cursor_record_ending_past_limit),
		cmocka_unit_test(test_replace_fails),
		cmocka_unit_test(test_open_segment_exists),
		cmocka_unit_test(test_open_segment_dir_fsync_fails),
		cmocka_unit_test(test_sync_fsync_fails),
		cmocka_unit_test(test_fsync_fault_matrix),
		cmocka_unit_test(test_sync_alongside_faults),
		cmocka_unit_test(test_sync_alongside_concurrent),
		cmocka_unit_test(test_list_segments),
		cmocka_unit_test(test_dir_bytes),
		cmocka_unit_test(test_open_dir),
	};

	/* Recovery and the injected faults log warnings and errors by
	 * design; LITEFS_TEST_LOG=1 shows them. */
	if (getenv("LITEFS_TEST_LOG") == NULL)
		log_min_level = LOG_LEVEL_ERROR + 1;
	return RUN_IN_TMP_DIR("test_chain", tests);
}
