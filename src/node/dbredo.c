/*
 * dbredo.c — completing an import that a crash interrupted (apply_import
 * in apply.c makes its record durable, then copies the file into the db
 * file in place). A start that finds the db file matching neither the last
 * record's pre-apply nor its post-apply checksum, and the last record a
 * full image (every page 1..commit but the lock page, as an import writes
 * it), writes the record's pages into the db file again: the result is the
 * import's state, checked against the post-apply checksum.
 *
 * One-way on db_int.h like dbverify.c: db.c calls here, nothing here calls
 * db.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "base/sys.h"
#include "ltx/dbfile.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "node/db_int.h"

struct redo {
	int db_fd;
	uint32_t lock, next; /* the next page number a full image has */
	bool write;
};

static int redo_page(void *ctx, const struct ltx_header *h, uint32_t pgno, const uint8_t *page)
{
	struct redo *r = ctx;
	if (r->next == r->lock)
		r->next++;
	if (pgno != r->next)
		return 1; /* not a full image */
	r->next++;
	if (!r->write)
		return 0;
	return sys_pwrite_all(r->db_fd, page, h->page_size, (off_t)(pgno - 1) * h->page_size);
}

/* Decodes the record once; with write, its pages go to the db file. 0 (a
 * full image), 1 (not one), or an error. */
static int redo_pass(int seg_fd, const struct ltxlog_rec *rec, const struct ltx_header *h, int db_fd, bool write)
{
	struct ltxlog_reader rd;
	struct redo r = { .db_fd = db_fd, .lock = ltx_lock_pgno(h->page_size), .next = 1, .write = write };
	ltxlog_reader_init(&rd, seg_fd, rec);
	int rc = ltx_decode_all(ltxlog_read, &rd, redo_page, &r, NULL, NULL, NULL);
	if (rc)
		return rc;
	if (r.next == r.lock)
		r.next++;
	return r.next == h->commit + 1 ? 0 : 1;
}

int db_redo_full_record(struct db *db, uint64_t seg_first, uint64_t rec_off, const struct ltx_header *h,
			const struct ltx_trailer *t)
{
	if (db->db_fd < 0 || h->commit == 0)
		return 1;
	char name[LTXLOG_NAME_LEN];
	ltxlog_format_name(name, seg_first);
	int fd = openat(db->chain.dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	struct ltxlog_rec rec;
	int rc = fstat(fd, &st) != 0 ? -errno : ltxlog_read_rec(fd, rec_off, (uint64_t)st.st_size, &rec);
	if (rc == 1)
		rc = redo_pass(fd, &rec, h, db->db_fd, false);
	else if (rc == 0)
		rc = 1;
	if (rc != 0) {
		close(fd);
		return rc;
	}
	LOG_WARN("db", "msg=\"an import was interrupted after its record was durable; writing its pages again\" "
		       "db=%s txid=%016" PRIx64, db->name, h->max_txid);
	rc = redo_pass(fd, &rec, h, db->db_fd, true);
	close(fd);
	if (rc == 0 && sys_ftruncate(db->db_fd, (off_t)h->commit * h->page_size) != 0)
		rc = -errno;
	if (rc == 0 && sys_fsync(db->db_fd) != 0)
		rc = -errno;
	uint64_t c = 0;
	if (rc == 0)
		rc = dbfile_checksum(db->db_fd, h->page_size, &c, NULL);
	if (rc == 0 && c != t->post_apply_checksum)
		rc = ERR_LTX_POST_CHECKSUM;
	if (rc)
		LOG_ERROR("db", "msg=\"cannot complete the interrupted import\" db=%s err=\"%s\"", db->name, err_str(rc));
	return rc < 0 ? rc : (rc ? ERR_LTX_POST_CHECKSUM : 0);
}
