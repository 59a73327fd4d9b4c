/*
 * Unit tests of db.c: commit capture of one database, driven through the
 * FUSE-facing API (db.h) the way fusefs.c forwards a client's file
 * operations, against a bare struct node (node.h) with no store, FUSE
 * mount or HTTP server behind it.
 *
 * The inputs are real SQLite: database images and WAL files are produced
 * by libsqlite3 in scratch files outside the node, then replayed through
 * db_open_file/db_write/db_fsync/db_truncate/db_unlink in the order
 * SQLite 3.40 issues them (../shared/SQLITE-FILES.md §2.2, §4). Every
 * position is checked against the LTX checksum of the expected database
 * (invariant I1 of db.c), and every chain of records read back through a
 * db cursor is applied with dbfile_apply() to an empty file and compared
 * byte for byte with what SQLite wrote (I2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/log.h"
#include "base/sys.h"
#include "ltx/dbfile.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "node/db.h"
#include "node/node.h"
#include "testutil.h"

#define DB_NAME "app.db"
#define NODE_ID 7

/* ---- Byte helpers -------------------------------------------------------- */

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* ---- Database images ---------------------------------------------------- */

/* A database file's bytes as SQLite left them (whole pages). */
struct image {
	uint8_t *data;
	size_t len;
	uint32_t page_size;
};

static uint32_t image_pages(const struct image *im)
{
	return im->page_size ? (uint32_t)(im->len / im->page_size) : 0;
}

static const uint8_t *image_page(const struct image *im, uint32_t pgno)
{
	return im->data + (size_t)(pgno - 1) * im->page_size;
}

static void image_free(struct image *im)
{
	free(im->data);
	memset(im, 0, sizeof(*im));
}

static struct image image_copy(const struct image *im)
{
	struct image c = { .len = im->len, .page_size = im->page_size };
	c.data = malloc(im->len ? im->len : 1);
	assert_non_null(c.data);
	memcpy(c.data, im->data, im->len);
	return c;
}

/* The LTX database checksum (ltx.h): flag | XOR of the page checksums. */
static uint64_t image_checksum(const struct image *im)
{
	uint64_t chk = 0;
	for (uint32_t pgno = 1; pgno <= image_pages(im); pgno++)
		if (pgno != ltx_lock_pgno(im->page_size))
			chk ^= ltx_page_checksum(pgno, image_page(im, pgno), im->page_size);
	return LTX_CHECKSUM_FLAG | chk;
}

static struct image read_image(const char *path)
{
	struct image im = { 0 };
	im.data = read_file(path, &im.len);
	assert_true(im.len >= 100);
	uint32_t ps = (uint32_t)im.data[16] << 8 | im.data[17];
	im.page_size = ps == 1 ? 65536 : ps;
	assert_true(ltx_is_valid_page_size(im.page_size));
	assert_int_equal(im.len % im.page_size, 0);
	return im;
}

/* ---- Scratch SQLite databases (outside the node) --------------------------- */

static int scratch_counter;

static void scratch_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/scratch%d.db", tmp_dir, ++scratch_counter);
}

static sqlite3 *sql_open(const char *path)
{
	sqlite3 *c = NULL;
	assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
	/* The scratch files need no durability, and syncs are what cost. */
	assert_int_equal(sqlite3_exec(c, "PRAGMA synchronous=OFF;", NULL, NULL, NULL), SQLITE_OK);
	return c;
}

static void sql_exec(sqlite3 *c, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(c, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fail_msg("sqlite: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

static void sql_run(const char *path, const char *sql)
{
	sqlite3 *c = sql_open(path);
	sql_exec(c, sql);
	assert_int_equal(sqlite3_close(c), SQLITE_OK);
}

/* Three rollback-mode states of one database: img[0] two tables with a
 * few rows, img[1] more rows in one of them (the file grows) and a
 * changed row, the other table untouched, img[2] most rows deleted and
 * VACUUMed (the file shrinks). */
static void make_rollback_images(struct image img[3])
{
	char path[512];
	scratch_path(path, sizeof(path));
	sql_run(path, "PRAGMA journal_mode=DELETE; CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT);"
		      "INSERT INTO t(b) VALUES (printf('%.900c', 'a')), (printf('%.900c', 'b')), (printf('%.900c', 'c'));"
		      "CREATE TABLE u(b TEXT);"
		      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8) "
		      "INSERT INTO u(b) SELECT printf('%.2000c', 'u') FROM n;");
	img[0] = read_image(path);
	sql_run(path, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12) "
		      "INSERT INTO t(b) SELECT printf('%.1500c', 'd') FROM n; UPDATE t SET b = 'changed' WHERE a = 2;");
	img[1] = read_image(path);
	sql_run(path, "DELETE FROM t WHERE a > 3; VACUUM;");
	img[2] = read_image(path);
	assert_true(image_pages(&img[1]) > image_pages(&img[0]));
	assert_true(image_pages(&img[2]) < image_pages(&img[1]));
}

/* A WAL produced by SQLite: the checkpointed database it starts from
 * (already in WAL mode), the -wal bytes holding two transactions, the
 * last frame of each, and the database once SQLite checkpointed it. */
struct wal_fixture {
	struct image base;
	struct image final;
	uint8_t *wal;
	size_t wal_len;
	uint32_t page_size;
	uint32_t commit_frame[2];
	uint32_t n_frames;
};

static void make_wal_fixture(struct wal_fixture *w)
{
	char path[512], wal_path[600];
	memset(w, 0, sizeof(*w));
	scratch_path(path, sizeof(path));
	snprintf(wal_path, sizeof(wal_path), "%s-wal", path);
	sql_run(path, "PRAGMA journal_mode=WAL; CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT);"
		      "INSERT INTO t(b) VALUES (printf('%.900c', 'a')), (printf('%.900c', 'b'));");
	assert_int_equal(access(wal_path, F_OK), -1); /* checkpointed and removed at close */
	w->base = read_image(path);
	assert_int_equal(w->base.data[18], 2);
	assert_int_equal(w->base.data[19], 2);

	sqlite3 *c = sql_open(path);
	sql_exec(c, "PRAGMA wal_autocheckpoint=0;");
	sql_exec(c, "INSERT INTO t(b) VALUES (printf('%.3000c', 'x'));");
	sql_exec(c, "BEGIN; UPDATE t SET b = 'y' WHERE a = 1; INSERT INTO t(b) VALUES (printf('%.5000c', 'z')); COMMIT;");
	w->wal = read_file(wal_path, &w->wal_len);
	assert_int_equal(sqlite3_close(c), SQLITE_OK);
	w->final = read_image(path);

	assert_true(w->wal_len > 32);
	w->page_size = get_be32(w->wal + 8);
	assert_int_equal(w->page_size, w->base.page_size);
	size_t fsz = 24 + (size_t)w->page_size;
	assert_int_equal((w->wal_len - 32) % fsz, 0);
	w->n_frames = (uint32_t)((w->wal_len - 32) / fsz);
	int n_commits = 0;
	for (uint32_t f = 1; f <= w->n_frames; f++) {
		const uint8_t *fh = w->wal + 32 + (f - 1) * fsz;
		if (get_be32(fh + 4) != 0) {
			assert_true(n_commits < 2);
			w->commit_frame[n_commits++] = f;
		}
	}
	assert_int_equal(n_commits, 2);
	assert_int_equal(w->commit_frame[1], w->n_frames);
}

static void wal_fixture_free(struct wal_fixture *w)
{
	image_free(&w->base);
	image_free(&w->final);
	free(w->wal);
}

static const uint8_t *wal_frame(const struct wal_fixture *w, uint32_t f)
{
	return w->wal + 32 + (size_t)(f - 1) * (24 + w->page_size);
}

/* The logical database after frames 1..upto (upto a commit frame): the
 * base overlaid with the frames, cut to the commit size. Computed by the
 * test from the WAL bytes, independently of db.c. */
static struct image wal_overlay(const struct wal_fixture *w, uint32_t upto)
{
	struct image im = image_copy(&w->base);
	uint32_t ps = w->page_size;
	for (uint32_t f = 1; f <= upto; f++) {
		const uint8_t *fh = wal_frame(w, f);
		uint32_t pgno = get_be32(fh);
		if ((size_t)pgno * ps > im.len) {
			im.data = realloc(im.data, (size_t)pgno * ps);
			assert_non_null(im.data);
			memset(im.data + im.len, 0, (size_t)pgno * ps - im.len);
			im.len = (size_t)pgno * ps;
		}
		memcpy(im.data + (size_t)(pgno - 1) * ps, fh + 24, ps);
	}
	uint32_t commit = get_be32(wal_frame(w, upto) + 4);
	assert_true(commit != 0);
	assert_true((size_t)commit * ps <= im.len);
	im.len = (size_t)commit * ps;
	return im;
}

/* ---- The node and its database ---------------------------------------- */

struct fx {
	char data_dir[400];
	struct node node;
	struct db *db;
};

static int fx_counter;

static void fx_setup(struct fx *f, bool compress)
{
	char path[512];
	memset(f, 0, sizeof(*f));
	snprintf(f->data_dir, sizeof(f->data_dir), "%s/node%d", tmp_dir, ++fx_counter);
	assert_int_equal(mkdir(f->data_dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/dbs", f->data_dir);
	assert_int_equal(mkdir(path, 0755), 0);
	struct node_opts o = { .data_dir = f->data_dir, .compress = compress, .retention_ms = 600000,
			       .node_id = NODE_ID };
	assert_int_equal(node_init(&f->node, &o), 0);
	/* What store.c does: the node's dbs_fd is data_dir/dbs. */
	f->node.dbs_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->node.dbs_fd >= 0);
	assert_int_equal(db_load(&f->node, DB_NAME, 0, true, &f->db), 0);
}

/* Stops and starts the database again: after a clean close (the marker
 * is written), or as after a crash of a process whose writes reached the
 * page cache (no marker: recovery compares the file with the chain). */
static void fx_reload(struct fx *f, bool clean)
{
	if (clean)
		db_close_clean(f->db);
	db_free(f->db);
	f->db = NULL;
	assert_int_equal(db_load(&f->node, DB_NAME, 0, false, &f->db), 0);
}

static void fx_teardown(struct fx *f)
{
	db_free(f->db);
	close(f->node.dbs_fd);
	node_destroy(&f->node);
}

static void fx_backing_path(const struct fx *f, const char *rel, char *buf, size_t size)
{
	snprintf(buf, size, "%s/dbs/%s/%s", f->data_dir, DB_NAME, rel);
}

/* The backing database file's bytes. */
static struct image fx_backing(const struct fx *f)
{
	char path[600];
	fx_backing_path(f, "db", path, sizeof(path));
	struct image im = { 0 };
	im.data = read_file(path, &im.len);
	return im;
}

static void assert_backing_equals(const struct fx *f, const struct image *want)
{
	struct image got = fx_backing(f);
	assert_int_equal(got.len, want->len);
	assert_memory_equal(got.data, want->data, want->len);
	image_free(&got);
}

static int fx_count_segments(const struct fx *f)
{
	char path[600];
	fx_backing_path(f, "ltx", path, sizeof(path));
	DIR *d = opendir(path);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	uint64_t first;
	while ((de = readdir(d)) != NULL)
		n += ltxlog_parse_name(de->d_name, &first) == 0;
	closedir(d);
	return n;
}

static struct db_stats fx_stats(const struct fx *f)
{
	struct db_stats s;
	assert_true(db_stats(f->db, -1, &s));
	return s;
}

static void assert_pos(struct db *db, uint64_t txid, uint64_t checksum)
{
	struct ltx_pos p = db_pos(db);
	assert_int_equal(p.txid, txid);
	assert_int_equal(p.checksum, checksum);
}

/* ---- Replaying SQLite's file operations --------------------------------- */

enum jmode { J_DELETE, J_TRUNCATE, J_PERSIST };

/* An open rollback-journal transaction being replayed. */
struct rb_tx {
	int db_fd, journal_fd;
};

/* SQLite's journal record checksum (pager_cksum). */
static uint32_t journal_cksum(uint32_t nonce, const uint8_t *page, uint32_t ps)
{
	uint32_t ck = nonce;
	for (int i = (int)ps - 200; i > 0; i -= 200)
		ck += page[i];
	return ck;
}

static bool page_differs(const struct image *from, const struct image *to, uint32_t pgno)
{
	if (pgno > image_pages(from) || pgno > image_pages(to))
		return true;
	return memcmp(image_page(from, pgno), image_page(to, pgno), to->page_size) != 0;
}

/*
 * Starts the rollback-journal transaction that turns the database from
 * `from` (its current committed content; len 0 for a new database) into
 * `to`, as SQLite does up to the commit point (SQLITE-FILES.md §2.2):
 * create the journal, write its header with the magic zeroed, one record
 * (pgno, pre-image, checksum) per page that existed and changes, sync,
 * write the magic and nRec, then write the new pages into the database
 * and sync it.
 */
static void rb_begin(struct db *db, const struct image *from, const struct image *to, struct rb_tx *tx)
{
	uint32_t ps = to->page_size;
	const uint32_t nonce = 0x5eed1234;
	uint8_t hdr[512] = { 0 };
	static const uint8_t magic[8] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7 };

	tx->db_fd = db_open_file(db, DB_KIND_DB, true, true);
	assert_true(tx->db_fd >= 0);
	tx->journal_fd = db_open_file(db, DB_KIND_JOURNAL, true, true);
	assert_true(tx->journal_fd >= 0);
	put_be32(hdr + 12, nonce);
	put_be32(hdr + 16, image_pages(from));
	put_be32(hdr + 20, 512);
	put_be32(hdr + 24, ps);
	assert_int_equal(db_write(db, DB_KIND_JOURNAL, tx->journal_fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));

	uint32_t n_rec = 0;
	off_t off = 512;
	uint8_t word[4];
	for (uint32_t pgno = 1; pgno <= image_pages(from); pgno++) {
		if (!page_differs(from, to, pgno))
			continue;
		put_be32(word, pgno);
		assert_int_equal(db_write(db, DB_KIND_JOURNAL, tx->journal_fd, word, 4, off), 4);
		assert_int_equal(db_write(db, DB_KIND_JOURNAL, tx->journal_fd, image_page(from, pgno), ps, off + 4),
				 (ssize_t)ps);
		put_be32(word, journal_cksum(nonce, image_page(from, pgno), ps));
		assert_int_equal(db_write(db, DB_KIND_JOURNAL, tx->journal_fd, word, 4, off + 4 + ps), 4);
		off += 8 + ps;
		n_rec++;
	}
	assert_int_equal(db_fsync(db, DB_KIND_JOURNAL, tx->journal_fd), 0);
	memcpy(hdr, magic, 8);
	put_be32(hdr + 8, n_rec);
	assert_int_equal(db_write(db, DB_KIND_JOURNAL, tx->journal_fd, hdr, 12, 0), 12);
	assert_int_equal(db_fsync(db, DB_KIND_JOURNAL, tx->journal_fd), 0);

	for (uint32_t pgno = 1; pgno <= image_pages(to); pgno++) {
		if (!page_differs(from, to, pgno))
			continue;
		assert_int_equal(db_write(db, DB_KIND_DB, tx->db_fd, image_page(to, pgno), ps,
					  (off_t)(pgno - 1) * ps),
				 (ssize_t)ps);
	}
	assert_int_equal(db_fsync(db, DB_KIND_DB, tx->db_fd), 0);
}

/* The commit point of mode (SQLITE-FILES.md §2.3). Returns its result. */
static int rb_commit_op(struct db *db, struct rb_tx *tx, enum jmode mode)
{
	static const uint8_t zeros[28];
	switch (mode) {
	case J_DELETE:
		return db_unlink(db, DB_KIND_JOURNAL); /* the journal is closed first (below) */
	case J_TRUNCATE:
		return db_truncate(db, DB_KIND_JOURNAL, 0);
	case J_PERSIST: {
		ssize_t n = db_write(db, DB_KIND_JOURNAL, tx->journal_fd, zeros, sizeof(zeros), 0);
		return n == (ssize_t)sizeof(zeros) ? 0 : (int)n;
	}
	}
	return -EINVAL;
}

/* Closes the journal (DELETE mode closes it before the unlink) and
 * performs the commit point. */
static int rb_commit(struct db *db, struct rb_tx *tx, enum jmode mode)
{
	if (mode == J_DELETE && tx->journal_fd >= 0) {
		db_close_file(db, DB_KIND_JOURNAL, tx->journal_fd);
		tx->journal_fd = -1;
	}
	return rb_commit_op(db, tx, mode);
}

/* After the commit point: a shrinking commit truncates the file (§2.2),
 * then SQLite drops its locks and the handles go. */
static void rb_end(struct db *db, struct rb_tx *tx, const struct image *to)
{
	struct stat st;
	assert_int_equal(fstat(tx->db_fd, &st), 0);
	if ((size_t)st.st_size > to->len)
		assert_int_equal(db_truncate(db, DB_KIND_DB, (off_t)to->len), 0);
	if (tx->journal_fd >= 0)
		db_close_file(db, DB_KIND_JOURNAL, tx->journal_fd);
	db_close_file(db, DB_KIND_DB, tx->db_fd);
	tx->journal_fd = tx->db_fd = -1;
}

static void replay_rollback(struct db *db, const struct image *from, const struct image *to, enum jmode mode)
{
	struct rb_tx tx;
	rb_begin(db, from, to, &tx);
	assert_int_equal(rb_commit(db, &tx, mode), 0);
	rb_end(db, &tx, to);
}

/* Writes the WAL header (a new WAL generation), as walFrames does before
 * the first frame. */
static void wal_write_header(struct db *db, int wal_fd, const struct wal_fixture *w)
{
	assert_int_equal(db_write(db, DB_KIND_WAL, wal_fd, w->wal, 32, 0), 32);
}

/* Writes frames first..last as SQLite does: each frame's 24-byte header,
 * then its page, in two writes (walWriteOneFrame). */
static void wal_write_frames(struct db *db, int wal_fd, const struct wal_fixture *w, uint32_t first, uint32_t last)
{
	for (uint32_t f = first; f <= last; f++) {
		const uint8_t *fh = wal_frame(w, f);
		off_t off = 32 + (off_t)(f - 1) * (24 + w->page_size);
		assert_int_equal(db_write(db, DB_KIND_WAL, wal_fd, fh, 24, off), 24);
		assert_int_equal(db_write(db, DB_KIND_WAL, wal_fd, fh + 24, w->page_size, off + 24),
				 (ssize_t)w->page_size);
	}
}

/* ---- Reading the chain back ---------------------------------------------- */

struct records {
	struct ltx_growbuf rec[16];
	int n;
};

static void records_free(struct records *r)
{
	for (int i = 0; i < r->n; i++)
		free(r->rec[i].data);
	r->n = 0;
}

/* Reads one record's LTX bytes from the cursor's segment. Returns
 * db_cursor_next()'s result. */
static int cursor_read(struct db_cursor *c, struct ltx_growbuf *out)
{
	int fd;
	struct ltxlog_rec rec;
	int rc = db_cursor_next(c, &fd, &rec);
	if (rc != 1)
		return rc;
	memset(out, 0, sizeof(*out));
	out->data = malloc(rec.len);
	assert_non_null(out->data);
	assert_int_equal(fdio_pread_full(fd, out->data, rec.len, (off_t)(rec.offset + LTXLOG_HDR_SIZE)), (int)rec.len);
	out->len = out->cap = rec.len;
	return 1;
}

/* Every record after `after` up to the current position. */
static void read_records(struct db *db, struct ltx_pos after, struct records *out)
{
	struct db_cursor c;
	memset(out, 0, sizeof(*out));
	assert_int_equal(db_cursor_open(db, after, &c), 0);
	int rc;
	while ((rc = cursor_read(&c, &out->rec[out->n])) == 1) {
		out->n++;
		assert_true(out->n < 16);
	}
	assert_int_equal(rc, 0);
	db_cursor_close(&c);
}

static int count_page(void *ctx, const struct ltx_header *h, uint32_t pgno, const uint8_t *page)
{
	(*(uint32_t *)ctx)++;
	return 0;
}

/* Decodes a record fully (every checksum) and returns its header and
 * trailer and the number of pages it holds. */
static uint32_t decode_record(const struct ltx_growbuf *rec, struct ltx_header *h, struct ltx_trailer *t)
{
	struct ltx_membuf mb = { .data = rec->data, .len = rec->len };
	uint32_t n = 0;
	assert_int_equal(ltx_decode_all(ltx_membuf_read, &mb, count_page, &n, h, t, NULL), 0);
	return n;
}

/* Applies records to a fresh empty file from position {0,0} and returns
 * the file's bytes; each record must follow the previous one. */
static struct image apply_records(const struct records *r, uint32_t page_size)
{
	int fd = new_file("apply.db");
	struct ltx_pos pos = { 0, 0 };
	for (int i = 0; i < r->n; i++) {
		struct ltx_membuf mb = { .data = r->rec[i].data, .len = r->rec[i].len };
		struct dbfile_apply_result res;
		memset(&res, 0, sizeof(res));
		int rc = dbfile_apply(fd, -1, ltx_membuf_read, &mb, pos, &res);
		if (rc != 0)
			fail_msg("record %d: %s", i + 1, err_str(rc));
		free(res.written);
		pos = res.pos;
	}
	struct image im = { .page_size = page_size };
	im.data = slurp(fd, &im.len);
	close(fd);
	return im;
}

static void assert_image_equal(const struct image *got, const struct image *want)
{
	assert_int_equal(got->len, want->len);
	assert_memory_equal(got->data, want->data, want->len);
}

/* ---- Tests: rollback journal ------------------------------------------- */

/* DELETE mode, TXIDs 1 and 2: the position follows each commit point and
 * its checksum is the LTX checksum of the database SQLite wrote; the
 * records read back through a cursor carry exactly the changed pages and
 * rebuild the database byte for byte. */
static void test_rollback_delete_two_commits(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	struct image empty = { .page_size = img[0].page_size };

	assert_pos(f.db, 0, 0);
	struct rb_tx tx;
	rb_begin(f.db, &empty, &img[0], &tx);
	assert_pos(f.db, 0, 0); /* nothing is committed before the unlink */
	assert_int_equal(rb_commit(f.db, &tx, J_DELETE), 0);
	rb_end(f.db, &tx, &img[0]);
	assert_pos(f.db, 1, image_checksum(&img[0]));

	/* The same checksum from dbfile (a file of the image) and from db.c's
	 * own full recomputation. */
	int fd = new_file("img0.db");
	write_all(fd, img[0].data, img[0].len);
	uint64_t chk;
	uint32_t n;
	assert_int_equal(dbfile_checksum(fd, img[0].page_size, &chk, &n), 0);
	close(fd);
	assert_int_equal(chk, image_checksum(&img[0]));
	assert_int_equal(n, image_pages(&img[0]));
	assert_int_equal(db_compute_checksum(f.db, &chk), 0);
	assert_int_equal(chk, image_checksum(&img[0]));
	assert_backing_equals(&f, &img[0]);

	replay_rollback(f.db, &img[0], &img[1], J_DELETE);
	assert_pos(f.db, 2, image_checksum(&img[1]));
	struct db_stats s = fx_stats(&f);
	assert_true(s.exists);
	assert_false(s.wal_mode);
	assert_int_equal(s.page_size, img[1].page_size);
	assert_int_equal(s.n_pages, image_pages(&img[1]));
	assert_int_equal(s.n_commits, 2);
	assert_int_equal(s.oldest_txid, 1);
	assert_int_equal(s.ltx_count, 2);

	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 2);
	struct ltx_header h;
	struct ltx_trailer t;
	/* TXID 1: a snapshot of every page. */
	assert_int_equal(decode_record(&r.rec[0], &h, &t), image_pages(&img[0]));
	assert_int_equal(h.min_txid, 1);
	assert_int_equal(h.max_txid, 1);
	assert_int_equal(h.pre_apply_checksum, 0);
	assert_int_equal(h.commit, image_pages(&img[0]));
	assert_int_equal(h.page_size, img[0].page_size);
	assert_int_equal(h.node_id, NODE_ID);
	assert_int_equal(h.flags, 0);
	assert_int_equal(t.post_apply_checksum, image_checksum(&img[0]));
	/* TXID 2: only the pages that changed (or are new). */
	uint32_t changed = 0;
	for (uint32_t pgno = 1; pgno <= image_pages(&img[1]); pgno++)
		changed += page_differs(&img[0], &img[1], pgno);
	assert_int_equal(decode_record(&r.rec[1], &h, &t), changed);
	assert_true(changed < image_pages(&img[1]));
	assert_int_equal(h.min_txid, 2);
	assert_int_equal(h.max_txid, 2);
	assert_int_equal(h.pre_apply_checksum, image_checksum(&img[0]));
	assert_int_equal(h.commit, image_pages(&img[1]));
	assert_int_equal(t.post_apply_checksum, image_checksum(&img[1]));

	struct image got = apply_records(&r, img[1].page_size);
	assert_image_equal(&got, &img[1]);
	image_free(&got);

	/* A cursor after TXID 1 returns TXID 2 alone, then waits. */
	records_free(&r);
	read_records(f.db, (struct ltx_pos){ 1, image_checksum(&img[0]) }, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(decode_record(&r.rec[0], &h, &t), changed);
	assert_int_equal(h.min_txid, 2);
	records_free(&r);

	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* TRUNCATE and PERSIST modes commit at their own operation (§2.3), the
 * third transaction shrinks the file after its commit point (VACUUM), and
 * compressed records rebuild the same bytes. */
static void test_rollback_truncate_persist_shrink(void **state)
{
	struct image img[3];
	make_rollback_images(img);
	struct image empty = { .page_size = img[0].page_size };

	for (int mode = J_TRUNCATE; mode <= J_PERSIST; mode++) {
		struct fx f;
		fx_setup(&f, true);
		replay_rollback(f.db, &empty, &img[0], (enum jmode)mode);
		assert_pos(f.db, 1, image_checksum(&img[0]));
		replay_rollback(f.db, &img[0], &img[1], (enum jmode)mode);
		assert_pos(f.db, 2, image_checksum(&img[1]));

		/* The shrink: at the commit point the file is still longer than
		 * the header's size; the position already has the new size. */
		struct rb_tx tx;
		rb_begin(f.db, &img[1], &img[2], &tx);
		assert_int_equal(rb_commit(f.db, &tx, (enum jmode)mode), 0);
		assert_pos(f.db, 3, image_checksum(&img[2]));
		assert_int_equal(fx_stats(&f).n_pages, image_pages(&img[2]));
		rb_end(f.db, &tx, &img[2]);
		assert_pos(f.db, 3, image_checksum(&img[2]));
		assert_backing_equals(&f, &img[2]);

		struct records r;
		read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
		assert_int_equal(r.n, 3);
		struct ltx_header h;
		struct ltx_trailer t;
		decode_record(&r.rec[2], &h, &t);
		assert_int_equal(h.flags, LTX_FLAG_COMPRESS);
		assert_int_equal(h.commit, image_pages(&img[2]));
		struct image got = apply_records(&r, img[2].page_size);
		assert_image_equal(&got, &img[2]);
		image_free(&got);
		records_free(&r);
		fx_teardown(&f);
	}
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* A start unlinks the inert journal that PERSIST and TRUNCATE leave
 * (dbfence.c): a descriptor a client kept open on it (FUSE passthrough
 * writes the backing file directly) then writes into an orphan, and the
 * next journal opened through the node is another inode. Both after a
 * crash and after a clean stop; the position is unchanged. */
static void test_reload_orphans_the_left_journal(void **state)
{
	struct image img[3];
	make_rollback_images(img);
	struct image empty = { .page_size = img[0].page_size };
	static const uint8_t hot[8] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7 };

	for (int run = 0; run < 4; run++) {
		enum jmode mode = run % 2 ? J_PERSIST : J_TRUNCATE;
		struct fx f;
		char path[600];
		struct stat st, st2;
		fx_setup(&f, false);
		replay_rollback(f.db, &empty, &img[0], mode);
		replay_rollback(f.db, &img[0], &img[1], mode);
		struct ltx_pos pos = db_pos(f.db);
		fx_backing_path(&f, "db-journal", path, sizeof(path));
		int old = open(path, O_RDWR | O_CLOEXEC);
		assert_true(old >= 0);
		assert_int_equal(fstat(old, &st), 0);

		fx_reload(&f, run >= 2);
		assert_int_equal(access(path, F_OK), -1);
		assert_int_equal(errno, ENOENT);
		assert_pos(f.db, pos.txid, pos.checksum);
		assert_int_equal(pwrite(old, hot, sizeof(hot), 0), (ssize_t)sizeof(hot));
		assert_int_equal(access(path, F_OK), -1);
		int fd = db_open_file(f.db, DB_KIND_JOURNAL, true, true);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st2), 0);
		assert_true(st2.st_ino != st.st_ino);
		assert_int_equal(st2.st_size, 0);
		db_close_file(f.db, DB_KIND_JOURNAL, fd);
		close(old);
		replay_rollback(f.db, &img[1], &img[0], mode);
		assert_pos(f.db, pos.txid + 1, image_checksum(&img[0]));
		fx_teardown(&f);
	}
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* ROLLBACK writes the pre-images back and finalises the journal like a
 * commit: no net change, so no record and no new position. */
static void test_rollback_statement_no_commit(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	struct image empty = { .page_size = img[0].page_size };
	replay_rollback(f.db, &empty, &img[0], J_DELETE);

	struct rb_tx tx;
	rb_begin(f.db, &img[0], &img[1], &tx);
	/* Playback: the journaled pre-images go back, the file is cut to its
	 * original size, then the journal is deleted. */
	uint32_t ps = img[0].page_size;
	for (uint32_t pgno = 1; pgno <= image_pages(&img[0]); pgno++)
		if (page_differs(&img[0], &img[1], pgno))
			assert_int_equal(db_write(f.db, DB_KIND_DB, tx.db_fd, image_page(&img[0], pgno), ps,
						  (off_t)(pgno - 1) * ps),
					 (ssize_t)ps);
	assert_int_equal(db_truncate(f.db, DB_KIND_DB, (off_t)img[0].len), 0);
	assert_int_equal(rb_commit(f.db, &tx, J_DELETE), 0);
	rb_end(f.db, &tx, &img[0]);

	assert_pos(f.db, 1, image_checksum(&img[0]));
	assert_int_equal(fx_stats(&f).n_commits, 1);
	assert_backing_equals(&f, &img[0]);
	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 1);
	records_free(&r);

	/* The next transaction still follows TXID 1. */
	replay_rollback(f.db, &img[0], &img[1], J_DELETE);
	assert_pos(f.db, 2, image_checksum(&img[1]));
	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* Writes the node refuses, each with its documented errno, and each
 * leaving the backing file and the position as they were. */
static void test_refused_writes(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	uint32_t ps = img[0].page_size;
	uint8_t *page = calloc(1, 2 * (size_t)ps);
	assert_non_null(page);

	/* A brand-new database: the first write must be a SQLite header. */
	int dfd = db_open_file(f.db, DB_KIND_DB, true, true);
	assert_true(dfd >= 0);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, page, ps, 0), -EINVAL);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, image_page(&img[0], 2), ps, ps), -EINVAL);
	assert_int_equal(file_size(dfd), 0);
	/* A truncate to anything but 0 of a database without a page size. */
	assert_int_equal(db_truncate(f.db, DB_KIND_DB, ps), -EINVAL);
	assert_int_equal(file_size(dfd), 0);
	db_close_file(f.db, DB_KIND_DB, dfd);
	assert_pos(f.db, 0, 0);

	struct image empty = { .page_size = ps };
	replay_rollback(f.db, &empty, &img[0], J_DELETE);
	uint64_t chk0 = image_checksum(&img[0]);
	dfd = db_open_file(f.db, DB_KIND_DB, false, true);
	assert_true(dfd >= 0);

	/* Outside a transaction (no journal, rollback mode): journal_mode
	 * MEMORY/OFF or a direct write. */
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, image_page(&img[1], 2), ps, ps), -ENOTSUP);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, image_page(&img[1], 1), ps, 0), -ENOTSUP);
	assert_int_equal(db_truncate(f.db, DB_KIND_DB, ps), -EPERM);
	assert_backing_equals(&f, &img[0]);
	assert_pos(f.db, 1, chk0);

	/* Inside a transaction: not a whole number of pages, or a page 1
	 * that is not a SQLite header of the same page size. */
	int jfd = db_open_file(f.db, DB_KIND_JOURNAL, true, true);
	assert_true(jfd >= 0);
	uint8_t jhdr[512] = { 0 };
	put_be32(jhdr + 24, ps);
	assert_int_equal(db_write(f.db, DB_KIND_JOURNAL, jfd, jhdr, sizeof(jhdr), 0), (ssize_t)sizeof(jhdr));
	memcpy(page, image_page(&img[1], 2), ps);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, page, 100, ps), -EINVAL);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, page, ps, ps + 512), -EINVAL);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, page, ps + 512, ps), -EINVAL);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, page, ps, 0), -EINVAL); /* no header */
	memcpy(page, image_page(&img[1], 1), ps);
	page[16] = (uint8_t)((ps / 2) >> 8); /* another page size */
	page[17] = (uint8_t)(ps / 2);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, page, ps, 0), -EINVAL);
	assert_backing_equals(&f, &img[0]);
	assert_pos(f.db, 1, chk0);
	/* Nothing was tracked: the commit point records nothing. */
	db_close_file(f.db, DB_KIND_JOURNAL, jfd);
	assert_int_equal(db_unlink(f.db, DB_KIND_JOURNAL), 0);
	assert_pos(f.db, 1, chk0);
	assert_int_equal(fx_stats(&f).n_commits, 1);

	/* Names that do not exist, and the generated read-only -pos. */
	assert_int_equal(db_unlink(f.db, DB_KIND_JOURNAL), -ENOENT);
	assert_int_equal(db_open_file(f.db, DB_KIND_JOURNAL, false, true), -ENOENT);
	assert_int_equal(db_open_file(f.db, DB_KIND_POS, false, true), -EACCES);
	assert_int_equal(db_write(f.db, DB_KIND_POS, 0, page, 1, 0), -EACCES);
	assert_int_equal(db_truncate(f.db, DB_KIND_POS, 0), -EACCES);
	assert_int_equal(db_unlink(f.db, DB_KIND_POS), -EACCES);
	char text[LTX_POS_STR_LEN + 2], want[LTX_POS_STR_LEN + 2];
	int pfd = db_open_file(f.db, DB_KIND_POS, false, false);
	assert_int_equal(pfd, 0);
	ssize_t n = db_read(f.db, DB_KIND_POS, pfd, text, sizeof(text) - 1, 0);
	assert_true(n > 0);
	text[n] = '\0';
	ltx_format_pos(want, (struct ltx_pos){ 1, chk0 });
	strcat(want, "\n");
	assert_string_equal(text, want);
	db_close_file(f.db, DB_KIND_POS, pfd);

	db_close_file(f.db, DB_KIND_DB, dfd);
	assert_backing_equals(&f, &img[0]);
	free(page);
	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* The client's operation that commits fails (step 2 of db.c's ordering),
 * or the LTX append before it does (step 1): the client gets the error,
 * the position and the chain stay as they were, and SQLite's retry
 * commits normally. */
static void test_rollback_commit_faults(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	struct image empty = { .page_size = img[0].page_size };
	replay_rollback(f.db, &empty, &img[0], J_DELETE);
	struct stat st;

	/* Step 2: the unlink of the journal fails. */
	struct rb_tx tx;
	rb_begin(f.db, &img[0], &img[1], &tx);
	sys_fault_arm_ex(SYS_UNLINK, 1, EIO, 0, "db-journal");
	assert_int_equal(rb_commit(f.db, &tx, J_DELETE), -EIO);
	sys_fault_arm(SYS_UNLINK, 0, 0);
	assert_pos(f.db, 1, image_checksum(&img[0]));
	assert_int_equal(db_stat_file(f.db, DB_KIND_JOURNAL, &st), 0);
	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 1);
	records_free(&r);
	assert_int_equal(rb_commit(f.db, &tx, J_DELETE), 0);
	rb_end(f.db, &tx, &img[1]);
	assert_pos(f.db, 2, image_checksum(&img[1]));

	/* Step 1: writing the LTX record fails; the journal stays. */
	rb_begin(f.db, &img[1], &img[2], &tx);
	sys_fault_arm_ex(SYS_PWRITE, 1, ENOSPC, 0, ".ltxlog");
	assert_int_equal(rb_commit(f.db, &tx, J_DELETE), -ENOSPC);
	sys_fault_arm(SYS_PWRITE, 0, 0);
	assert_pos(f.db, 2, image_checksum(&img[1]));
	assert_int_equal(db_stat_file(f.db, DB_KIND_JOURNAL, &st), 0);
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 2);
	records_free(&r);
	assert_int_equal(rb_commit(f.db, &tx, J_DELETE), 0);
	rb_end(f.db, &tx, &img[2]);
	assert_pos(f.db, 3, image_checksum(&img[2]));

	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 3);
	struct image got = apply_records(&r, img[2].page_size);
	assert_image_equal(&got, &img[2]);
	image_free(&got);
	records_free(&r);
	/* The cut-back records left nothing a restart would trip over. */
	fx_reload(&f, false);
	assert_pos(f.db, 3, image_checksum(&img[2]));
	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* Unlinking the database records a commit-0 transaction; re-creating it
 * continues the chain, and the chain still rebuilds the database. */
static void test_delete_and_recreate(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	struct image empty = { .page_size = img[0].page_size };
	replay_rollback(f.db, &empty, &img[0], J_DELETE);

	assert_int_equal(db_unlink(f.db, DB_KIND_DB), 0);
	assert_pos(f.db, 2, LTX_CHECKSUM_FLAG);
	struct db_stats s = fx_stats(&f);
	assert_false(s.exists);
	assert_int_equal(s.n_pages, 0);
	struct stat st;
	assert_int_equal(db_stat_file(f.db, DB_KIND_DB, &st), -ENOENT);
	/* A deleted database's snapshot has commit 0 (db.h): applied, it
	 * deletes the database, which is what a replica that missed the
	 * deletion needs. */
	struct ltx_growbuf gb = { 0 };
	struct ltx_pos sp;
	assert_int_equal(db_snapshot(f.db, ltx_growbuf_write, &gb, &sp), 0);
	assert_int_equal(sp.txid, 2);
	struct records snap = { .n = 1 };
	snap.rec[0] = gb;
	struct ltx_header sh;
	struct ltx_trailer st_;
	assert_int_equal(decode_record(&snap.rec[0], &sh, &st_), 0);
	assert_int_equal(sh.commit, 0);
	struct image deleted = apply_records(&snap, img[0].page_size);
	assert_int_equal(deleted.len, 0);
	image_free(&deleted);
	records_free(&snap);

	replay_rollback(f.db, &empty, &img[1], J_DELETE);
	assert_pos(f.db, 3, image_checksum(&img[1]));

	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 3);
	struct ltx_header h;
	struct ltx_trailer t;
	assert_int_equal(decode_record(&r.rec[1], &h, &t), 0);
	assert_int_equal(h.commit, 0);
	assert_int_equal(h.pre_apply_checksum, image_checksum(&img[0]));
	assert_int_equal(t.post_apply_checksum, LTX_CHECKSUM_FLAG);
	decode_record(&r.rec[2], &h, &t);
	assert_int_equal(h.pre_apply_checksum, LTX_CHECKSUM_FLAG);
	struct image got = apply_records(&r, img[1].page_size);
	assert_image_equal(&got, &img[1]);
	image_free(&got);
	records_free(&r);

	fx_reload(&f, true);
	assert_pos(f.db, 3, image_checksum(&img[1]));
	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* ---- Tests: reload, retention, snapshot -------------------------------- */

/* A clean reload trusts the position and verifies in the background; an
 * unclean one recomputes it; either way the next commit continues the
 * chain, in a new segment, and a cursor crosses segments. */
static void test_reload_keeps_position(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	struct image empty = { .page_size = img[0].page_size };
	replay_rollback(f.db, &empty, &img[0], J_DELETE);
	replay_rollback(f.db, &img[0], &img[1], J_DELETE);
	struct ltx_pos p2 = db_pos(f.db);

	fx_reload(&f, true);
	assert_int_equal(db_pos(f.db).txid, p2.txid);
	assert_int_equal(db_pos(f.db).checksum, p2.checksum);
	struct db_stats s = fx_stats(&f);
	assert_int_equal(s.n_pages, image_pages(&img[1]));
	assert_int_equal(s.page_size, img[1].page_size);
	assert_int_equal(s.oldest_txid, 1);
	int rc;
	while ((rc = db_verify_step(f.db, 2)) == 1)
		;
	assert_int_equal(rc, 0);
	assert_false(fx_stats(&f).write_refused);

	fx_reload(&f, false);
	assert_pos(f.db, p2.txid, p2.checksum);
	assert_int_equal(db_verify_step(f.db, 100), 0); /* nothing to verify: recomputed */

	replay_rollback(f.db, &img[1], &img[2], J_DELETE);
	assert_pos(f.db, 3, image_checksum(&img[2]));
	assert_int_equal(fx_count_segments(&f), 2);
	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 3);
	struct image got = apply_records(&r, img[2].page_size);
	assert_image_equal(&got, &img[2]);
	image_free(&got);
	records_free(&r);
	read_records(f.db, p2, &r);
	assert_int_equal(r.n, 1);
	records_free(&r);

	/* A position this chain never had (another checksum at TXID 2, or
	 * ahead of it) needs a snapshot. */
	struct db_cursor c;
	assert_int_equal(db_cursor_open(f.db, (struct ltx_pos){ 2, p2.checksum ^ 1 }, &c), ERR_NEED_SNAPSHOT);
	assert_true(c.diverged);
	assert_int_equal(db_cursor_open(f.db, (struct ltx_pos){ 4, LTX_CHECKSUM_FLAG }, &c), ERR_NEED_SNAPSHOT);
	assert_true(c.diverged);
	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* Retention deletes old segments but always keeps the newest, and never
 * one holding records the backup service has not acknowledged (nor the
 * one at its high-water mark). */
static void test_retention(void **state)
{
	struct image img[3];
	struct fx f;
	make_rollback_images(img);
	fx_setup(&f, false);
	struct image empty = { .page_size = img[0].page_size };
	/* A reload closes the open segment: three commits, three segments. */
	replay_rollback(f.db, &empty, &img[0], J_DELETE);
	fx_reload(&f, true);
	replay_rollback(f.db, &img[0], &img[1], J_DELETE);
	struct ltx_pos p2 = db_pos(f.db);
	fx_reload(&f, true);
	replay_rollback(f.db, &img[1], &img[2], J_DELETE);
	struct ltx_pos p3 = db_pos(f.db);
	assert_int_equal(fx_count_segments(&f), 3);

	int64_t later = clock_wall_ms() + 3600 * 1000;
	/* Not old enough. */
	assert_int_equal(db_enforce_retention(f.db, clock_wall_ms(), 3600 * 1000), 0);
	assert_int_equal(fx_count_segments(&f), 3);
	/* Old enough, but the backup holds only TXID 2. */
	db_set_backup_hwm(f.db, 2);
	assert_int_equal(db_enforce_retention(f.db, later, 1000), 0);
	assert_int_equal(fx_count_segments(&f), 2);
	assert_int_equal(fx_stats(&f).oldest_txid, 2);
	struct db_cursor c;
	assert_int_equal(db_cursor_open(f.db, (struct ltx_pos){ 0, 0 }, &c), ERR_NEED_SNAPSHOT);
	assert_false(c.diverged);
	struct records r;
	read_records(f.db, p2, &r);
	assert_int_equal(r.n, 1);
	records_free(&r);
	/* Everything acknowledged: the newest segment stays anyway. */
	db_set_backup_hwm(f.db, 3);
	assert_int_equal(db_enforce_retention(f.db, later, 1000), 0);
	assert_int_equal(fx_count_segments(&f), 1);
	assert_int_equal(fx_stats(&f).oldest_txid, 3);
	assert_int_equal(fx_stats(&f).ltx_count, 1);
	assert_int_equal(db_cursor_open(f.db, p2, &c), ERR_NEED_SNAPSHOT);
	read_records(f.db, p3, &r);
	assert_int_equal(r.n, 0);
	records_free(&r);
	assert_pos(f.db, p3.txid, p3.checksum);

	/* A replica that fell behind gets a snapshot instead. */
	struct ltx_growbuf gb = { 0 };
	struct ltx_pos sp;
	assert_int_equal(db_snapshot(f.db, ltx_growbuf_write, &gb, &sp), 0);
	assert_int_equal(sp.txid, p3.txid);
	assert_int_equal(sp.checksum, p3.checksum);
	struct records snap = { .n = 1 };
	snap.rec[0] = gb;
	struct ltx_header h;
	struct ltx_trailer t;
	assert_int_equal(decode_record(&snap.rec[0], &h, &t), image_pages(&img[2]));
	assert_int_equal(h.min_txid, 1);
	assert_int_equal(h.max_txid, 3);
	struct image got = apply_records(&snap, img[2].page_size);
	assert_image_equal(&got, &img[2]);
	image_free(&got);
	records_free(&snap);

	/* Still reloadable with only the newest segment. */
	fx_reload(&f, false);
	assert_pos(f.db, p3.txid, p3.checksum);
	assert_int_equal(fx_stats(&f).oldest_txid, 3);
	fx_teardown(&f);
	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* ---- Tests: WAL --------------------------------------------------------- */

/* A real SQLite WAL replayed frame by frame: each commit frame advances
 * the position to the checksum of the logical database (db file overlaid
 * with the committed frames); a snapshot and the chain include the
 * frames; a checkpoint through the mount changes nothing logical; and the
 * position survives a reload that finds the WAL still there. */
static void test_wal_commits(void **state)
{
	struct wal_fixture w;
	struct fx f;
	make_wal_fixture(&w);
	fx_setup(&f, false);
	struct image empty = { .page_size = w.page_size };

	/* The switch to WAL is an ordinary rollback commit of page 1. */
	replay_rollback(f.db, &empty, &w.base, J_DELETE);
	assert_pos(f.db, 1, image_checksum(&w.base));
	assert_true(fx_stats(&f).wal_mode);

	int dfd = db_open_file(f.db, DB_KIND_DB, false, true);
	assert_true(dfd >= 0);
	int wfd = db_open_file(f.db, DB_KIND_WAL, true, true);
	assert_true(wfd >= 0);
	wal_write_header(f.db, wfd, &w);
	uint32_t ka = w.commit_frame[0];
	wal_write_frames(f.db, wfd, &w, 1, ka - 1);
	assert_pos(f.db, 1, image_checksum(&w.base)); /* no commit frame yet */
	wal_write_frames(f.db, wfd, &w, ka, ka);
	struct image after_a = wal_overlay(&w, ka);
	assert_pos(f.db, 2, image_checksum(&after_a));
	assert_int_equal(db_fsync(f.db, DB_KIND_WAL, wfd), 0);

	wal_write_frames(f.db, wfd, &w, ka + 1, w.n_frames);
	struct image after_b = wal_overlay(&w, w.n_frames);
	/* The test's overlay agrees with SQLite's own checkpoint. */
	assert_image_equal(&after_b, &w.final);
	assert_pos(f.db, 3, image_checksum(&w.final));
	assert_int_equal(db_fsync(f.db, DB_KIND_WAL, wfd), 0);
	uint64_t chk;
	assert_int_equal(db_compute_checksum(f.db, &chk), 0);
	assert_int_equal(chk, image_checksum(&w.final));
	struct db_stats s = fx_stats(&f);
	assert_true(s.wal_mode);
	assert_int_equal(s.n_pages, image_pages(&w.final));
	/* The db file itself has not changed: the commits are in the WAL. */
	assert_backing_equals(&f, &w.base);

	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 3);
	struct ltx_header h;
	struct ltx_trailer t;
	decode_record(&r.rec[1], &h, &t);
	assert_int_equal(h.commit, image_pages(&after_a));
	assert_int_equal(h.wal_offset, 32);
	assert_int_equal(h.wal_size, (int64_t)ka * (24 + w.page_size));
	assert_int_equal(h.wal_salt1, get_be32(w.wal + 16));
	assert_int_equal(h.wal_salt2, get_be32(w.wal + 20));
	assert_int_equal(t.post_apply_checksum, image_checksum(&after_a));
	decode_record(&r.rec[2], &h, &t);
	assert_int_equal(h.wal_offset, 32 + (int64_t)ka * (24 + w.page_size));
	struct image got = apply_records(&r, w.page_size);
	assert_image_equal(&got, &w.final);
	image_free(&got);
	records_free(&r);

	/* A snapshot reads the committed frames. */
	struct ltx_growbuf gb = { 0 };
	struct ltx_pos sp;
	assert_int_equal(db_snapshot(f.db, ltx_growbuf_write, &gb, &sp), 0);
	assert_int_equal(sp.txid, 3);
	struct records snap = { .n = 1 };
	snap.rec[0] = gb;
	got = apply_records(&snap, w.page_size);
	assert_image_equal(&got, &w.final);
	image_free(&got);
	records_free(&snap);

	/* A reload finds the WAL (as after a crash): libsqlite3 checkpoints
	 * it on the backing files, and the position stays. */
	db_close_file(f.db, DB_KIND_WAL, wfd);
	db_close_file(f.db, DB_KIND_DB, dfd);
	fx_reload(&f, false);
	assert_pos(f.db, 3, image_checksum(&w.final));
	assert_int_equal(db_compute_checksum(f.db, &chk), 0);
	assert_int_equal(chk, image_checksum(&w.final));
	assert_backing_equals(&f, &w.final);
	fx_reload(&f, true);
	assert_pos(f.db, 3, image_checksum(&w.final));

	image_free(&after_a);
	image_free(&after_b);
	fx_teardown(&f);
	wal_fixture_free(&w);
}

/* A checkpoint through the mount: committed frames copied into the db
 * file pass through untracked, and truncating the WAL resets it; the
 * position and the logical database do not change. */
static void test_wal_checkpoint_passes_through(void **state)
{
	struct wal_fixture w;
	struct fx f;
	make_wal_fixture(&w);
	fx_setup(&f, false);
	struct image empty = { .page_size = w.page_size };
	replay_rollback(f.db, &empty, &w.base, J_DELETE);
	int dfd = db_open_file(f.db, DB_KIND_DB, false, true);
	int wfd = db_open_file(f.db, DB_KIND_WAL, true, true);
	assert_true(dfd >= 0 && wfd >= 0);
	wal_write_header(f.db, wfd, &w);
	wal_write_frames(f.db, wfd, &w, 1, w.n_frames);
	assert_int_equal(db_fsync(f.db, DB_KIND_WAL, wfd), 0);
	struct ltx_pos p = db_pos(f.db);
	assert_int_equal(p.txid, 3);

	uint32_t ps = w.page_size;
	for (uint32_t pgno = 1; pgno <= image_pages(&w.final); pgno++)
		assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, image_page(&w.final, pgno), ps, (off_t)(pgno - 1) * ps),
				 (ssize_t)ps);
	assert_int_equal(db_fsync(f.db, DB_KIND_DB, dfd), 0);
	assert_int_equal(db_truncate(f.db, DB_KIND_WAL, 0), 0);
	assert_pos(f.db, p.txid, p.checksum);
	uint64_t chk;
	assert_int_equal(db_compute_checksum(f.db, &chk), 0);
	assert_int_equal(chk, p.checksum);
	assert_backing_equals(&f, &w.final);
	struct records r;
	read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
	assert_int_equal(r.n, 3);
	records_free(&r);

	db_close_file(f.db, DB_KIND_WAL, wfd);
	db_close_file(f.db, DB_KIND_DB, dfd);
	fx_reload(&f, true);
	assert_pos(f.db, p.txid, p.checksum);
	fx_teardown(&f);
	wal_fixture_free(&w);
}

/* SQLite does not publish a WAL commit whose fsync fails, and its next
 * transaction overwrites those frames: the node takes the capture back
 * (db->undo) whether the client's sync of -wal or the LTX segment's sync
 * failed, a cursor that already read the record is told to start over,
 * and the rewritten frames commit again as the same TXID. */
static void test_wal_fsync_fault_takes_back(void **state)
{
	static const char *const fault_paths[] = { "db-wal", ".ltxlog" };
	struct wal_fixture w;
	make_wal_fixture(&w);
	struct image empty = { .page_size = w.page_size };
	uint32_t ka = w.commit_frame[0];
	struct image after_a = wal_overlay(&w, ka);

	for (size_t v = 0; v < sizeof(fault_paths) / sizeof(fault_paths[0]); v++) {
		struct fx f;
		fx_setup(&f, false);
		replay_rollback(f.db, &empty, &w.base, J_DELETE);
		int wfd = db_open_file(f.db, DB_KIND_WAL, true, true);
		assert_true(wfd >= 0);
		wal_write_header(f.db, wfd, &w);
		wal_write_frames(f.db, wfd, &w, 1, ka);
		assert_int_equal(db_fsync(f.db, DB_KIND_WAL, wfd), 0);
		assert_pos(f.db, 2, image_checksum(&after_a));

		struct db_cursor c;
		struct ltx_growbuf rec[3];
		assert_int_equal(db_cursor_open(f.db, (struct ltx_pos){ 0, 0 }, &c), 0);
		assert_int_equal(cursor_read(&c, &rec[0]), 1);
		assert_int_equal(cursor_read(&c, &rec[1]), 1);

		wal_write_frames(f.db, wfd, &w, ka + 1, w.n_frames);
		assert_pos(f.db, 3, image_checksum(&w.final));
		assert_int_equal(cursor_read(&c, &rec[2]), 1);
		free(rec[2].data);

		sys_fault_arm_ex(SYS_FSYNC, 1, EIO, 0, fault_paths[v]);
		assert_int_equal(db_fsync(f.db, DB_KIND_WAL, wfd), -EIO);
		sys_fault_arm(SYS_FSYNC, 0, 0);

		assert_pos(f.db, 2, image_checksum(&after_a));
		uint64_t chk;
		assert_int_equal(db_compute_checksum(f.db, &chk), 0);
		assert_int_equal(chk, image_checksum(&after_a));
		assert_int_equal(fx_stats(&f).n_pages, image_pages(&after_a));
		assert_int_equal(fx_stats(&f).n_commits, 2);
		int fd;
		struct ltxlog_rec lr;
		assert_int_equal(db_cursor_next(&c, &fd, &lr), ERR_NEED_SNAPSHOT);
		db_cursor_close(&c);
		struct records r;
		read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
		assert_int_equal(r.n, 2);
		records_free(&r);

		/* SQLite's next transaction rewrites the same frames. */
		wal_write_frames(f.db, wfd, &w, ka + 1, w.n_frames);
		assert_pos(f.db, 3, image_checksum(&w.final));
		assert_int_equal(db_fsync(f.db, DB_KIND_WAL, wfd), 0);
		read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
		assert_int_equal(r.n, 3);
		struct image got = apply_records(&r, w.page_size);
		assert_image_equal(&got, &w.final);
		image_free(&got);
		records_free(&r);
		/* The records before the failed sync were never in doubt. */
		read_records(f.db, (struct ltx_pos){ 0, 0 }, &r);
		assert_int_equal(r.rec[1].len, rec[1].len);
		assert_memory_equal(r.rec[1].data, rec[1].data, rec[1].len);
		records_free(&r);
		free(rec[0].data);
		free(rec[1].data);

		db_close_file(f.db, DB_KIND_WAL, wfd);
		fx_reload(&f, false);
		assert_pos(f.db, 3, image_checksum(&w.final));
		fx_teardown(&f);
	}
	image_free(&after_a);
	wal_fixture_free(&w);
}

/* ---- Tests: role and verification -------------------------------------- */

/* Reloads a cleanly closed database whose backing file was changed behind
 * the node's back (one byte of page 2), so that the O(1) start trusts the
 * position and background verification finds the mismatch. Returns the
 * checksum of the changed file. */
static uint64_t corrupt_behind_clean_close(struct fx *f, const struct image *img)
{
	char path[600];
	db_close_clean(f->db);
	db_free(f->db);
	f->db = NULL;
	fx_backing_path(f, "db", path, sizeof(path));
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	off_t off = (off_t)img->page_size + img->page_size - 1;
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
	struct image changed = fx_backing(f);
	changed.page_size = img->page_size;
	uint64_t chk = image_checksum(&changed);
	image_free(&changed);
	assert_int_equal(db_load(&f->node, DB_NAME, 0, false, &f->db), 0);
	return chk;
}

/* db.c consults the role in one place: a failed verification. The
 * primary refuses writes until repaired (sticky), a replica instead
 * takes the file's real checksum as its position and asks for a resync,
 * and keeps accepting the applies that will heal it. */
static void test_verify_failure_by_role(void **state)
{
	struct image img[3];
	make_rollback_images(img);
	struct image empty = { .page_size = img[0].page_size };
	uint32_t ps = img[0].page_size;

	/* Primary. */
	struct fx f;
	fx_setup(&f, false);
	replay_rollback(f.db, &empty, &img[0], J_DELETE);
	uint64_t chk0 = image_checksum(&img[0]);
	corrupt_behind_clean_close(&f, &img[0]);
	assert_pos(f.db, 1, chk0); /* trusted until verified */
	int rc;
	while ((rc = db_verify_step(f.db, 1)) == 1)
		;
	assert_int_equal(rc, ERR_LTX_POST_CHECKSUM);
	assert_true(fx_stats(&f).write_refused);
	assert_pos(f.db, 1, chk0);
	assert_false(node_take_resync(&f.node));
	assert_int_equal(db_open_file(f.db, DB_KIND_DB, false, true), -EROFS);
	int dfd = db_open_file(f.db, DB_KIND_DB, false, false);
	assert_true(dfd >= 0); /* readers may still open it */
	int jfd = db_open_file(f.db, DB_KIND_JOURNAL, true, true);
	assert_true(jfd >= 0);
	assert_int_equal(db_write(f.db, DB_KIND_DB, dfd, image_page(&img[1], 2), ps, ps), -EROFS);
	assert_int_equal(db_truncate(f.db, DB_KIND_DB, ps), -EROFS);
	db_close_file(f.db, DB_KIND_JOURNAL, jfd);
	assert_int_equal(db_unlink(f.db, DB_KIND_JOURNAL), 0);
	db_close_file(f.db, DB_KIND_DB, dfd);
	assert_pos(f.db, 1, chk0);
	/* No clean marker is written for a refused database, so a restart
	 * recomputes the checksum instead of trusting it: afterwards the
	 * position matches the file again (I1). */
	fx_reload(&f, true);
	assert_int_equal(db_verify_step(f.db, 100), 0);
	uint64_t chk;
	assert_int_equal(db_compute_checksum(f.db, &chk), 0);
	assert_int_equal(db_pos(f.db).checksum, chk);
	fx_teardown(&f);

	/* Replica. */
	fx_setup(&f, false);
	replay_rollback(f.db, &empty, &img[0], J_DELETE);
	uint64_t real = corrupt_behind_clean_close(&f, &img[0]);
	assert_int_not_equal(real, chk0);
	node_set_role(&f.node, false, "x");
	assert_false(node_is_primary(&f.node));
	while ((rc = db_verify_step(f.db, 1)) == 1)
		;
	assert_int_equal(rc, ERR_LTX_POST_CHECKSUM);
	assert_false(fx_stats(&f).write_refused);
	assert_pos(f.db, 1, real); /* a position no chain has: the primary answers with a snapshot */
	assert_true(node_take_resync(&f.node));
	assert_false(node_take_resync(&f.node));
	struct db_cursor c;
	assert_int_equal(db_cursor_open(f.db, (struct ltx_pos){ 1, chk0 }, &c), ERR_NEED_SNAPSHOT);
	assert_true(c.diverged);
	dfd = db_open_file(f.db, DB_KIND_DB, false, true);
	assert_true(dfd >= 0);
	db_close_file(f.db, DB_KIND_DB, dfd);
	fx_teardown(&f);

	for (int i = 0; i < 3; i++)
		image_free(&img[i]);
}

/* ---- Main ------------------------------------------------------------- */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rollback_delete_two_commits),
		cmocka_unit_test(test_rollback_truncate_persist_shrink),
		cmocka_unit_test(test_rollback_statement_no_commit),
		cmocka_unit_test(test_refused_writes),
		cmocka_unit_test(test_rollback_commit_faults),
		cmocka_unit_test(test_delete_and_recreate),
		cmocka_unit_test(test_reload_keeps_position),
		cmocka_unit_test(test_reload_orphans_the_left_journal),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_wal_commits),
		cmocka_unit_test(test_wal_checkpoint_passes_through),
		cmocka_unit_test(test_wal_fsync_fault_takes_back),
		cmocka_unit_test(test_verify_failure_by_role),
	};

	/* The refusals and injected faults below log warnings and errors by
	 * design; LITEFS_TEST_LOG=1 shows them. */
	if (getenv("LITEFS_TEST_LOG") == NULL)
		log_min_level = LOG_LEVEL_ERROR + 1;
	return RUN_IN_TMP_DIR("test_db", tests);
}
