/*
 * apply.c — the replica side of replication: one LTX file received from
 * the primary (or a state restored on the backup service) written into the
 * live database while SQLite clients keep reading it.
 *
 * It is validated in full first (it must follow db->pos, or be a
 * snapshot); the record is staged at the end of this node's chain; readers
 * are excluded with SQLite's own locks (below) while pages are written;
 * the kernel cache is invalidated for the pages that changed; WAL-mode
 * readers see the new state through a rewritten wal-index header; then
 * pos advances. An apply that cannot finish leaves the old state: the
 * staged record is cut back and readers are let go with a sound header.
 * A big snapshot can arrive already staged, and decoded into a new file,
 * by snappipe.c: apply_snapshot_staged() then writes only the record
 * header and renames (the same checks, the same order).
 *
 * Layering: apply.c uses db.c (db.h, db_int.h); db.c never calls here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "node/apply.h"
#include "node/db.h"
#include "node/db_int.h"
#include "ltx/dbfile.h"
#include "ltx/fullrec.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/fdio.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "ltx/ltxmerge.h"
#include "node/node.h"
#include "node/ownmount.h"
#include "base/sys.h"

/*
 * Excluding readers while a replicated transaction is written. The node
 * takes SQLite's own locks (SQLITE-FILES.md) on descriptors of the files
 * *in the mount*, so the kernel arbitrates them against every client; they
 * are open-file-description locks, which conflict with SQLite's POSIX
 * locks and are not dropped when some other descriptor of the file closes.
 *
 *  rollback modes: a write lock on the SHARED range waits for the readers
 *      in a transaction to finish; new readers get SQLITE_BUSY while it is
 *      held (their busy handler retries). If readers keep overlapping for
 *      20 ms, PENDING is taken too so that no new reader starts.
 *  WAL mode: the WAL write and checkpoint locks and the five read marks
 *      (see exclude_wal_readers(): after 2 ms new readers are held back by
 *      an inconsistent wal-index header and retry inside SQLite, no BUSY).
 *      The replica's WAL is always empty: pages go to the db file and the
 *      wal-index header gets a new iChange and page count, which tells
 *      every connection to drop its cache.
 *
 * A reader in a long transaction delays the apply for as long as it holds
 * its lock, never longer.
 */
#define SQLITE_PENDING_BYTE 0x40000000
#define SQLITE_SHARED_FIRST (SQLITE_PENDING_BYTE + 2)
#define SQLITE_SHARED_SIZE 510
#define WAL_LOCK_FIRST 120 /* WRITE, CKPT, RECOVER, READ0..READ4 at 120..127 */
#define WALIDX_HDR_SIZE 48
#define WALIDX_CKPT_OFF 96

static int ofd_wrlock(int fd, off_t start, off_t len)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

static void ofd_unlock(int fd, off_t start, off_t len)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	fcntl(fd, F_OFD_SETLK, &fl);
}

static void ofd_unlock_all(int fd)
{
	ofd_unlock(fd, 0, 0);
}

/* Descriptors of the mounted files, locked so that no reader is inside a
 * transaction. */
struct exclusion {
	int db_fd, shm_fd;
	int held_fd;      /* the write lock's descriptor (writer lock held), or -1 */
	bool held_wal;    /* held_fd is -shm (else the db file) */
	bool poisoned;    /* the wal-index header was made inconsistent */
	uint32_t n_pages; /* the database's size before the apply */
	/* An import's own limits (apply_import); NULL / 0 for replication. */
	const atomic_bool *cancel; /* set: give up (-ECANCELED) */
	int64_t max_wait_us;       /* > 0: give up (-ETIMEDOUT) after waiting this long in all */
	int64_t waited_us;
};

/* Takes a write lock, retrying while others hold it, for at most
 * limit_us (0: until the store stops). Returns 0, -EAGAIN at the limit,
 * -ECANCELED when the store stops (or x->cancel is set), -ETIMEDOUT past
 * x->max_wait_us, or -errno. */
static int lock_retry(struct db *db, struct exclusion *x, int fd, off_t start, off_t len, int64_t limit_us)
{
	int64_t waited = 0;
	bool logged = false;
	for (int pause = 20;;) {
		int rc = ofd_wrlock(fd, start, len);
		if (rc != -EAGAIN && rc != -EACCES)
			return rc;
		if (limit_us > 0 && waited >= limit_us)
			return -EAGAIN;
		if (node_applies_cancelled(db->node) || (x->cancel && atomic_load(x->cancel)))
			return -ECANCELED;
		if (x->max_wait_us > 0 && x->waited_us + waited >= x->max_wait_us)
			return -ETIMEDOUT;
		if (!logged && waited > 5000000) {
			LOG_INFO("db", "msg=\"replication waits for a reader's transaction to end\" db=%s", db->name);
			logged = true;
		}
		usleep((useconds_t)pause);
		waited += pause;
		x->waited_us += pause;
		if (pause < 1000)
			pause *= 2;
	}
}

static int exclude_rollback_readers(struct db *db, struct exclusion *x, int fd)
{
	int rc = lock_retry(db, x, fd, SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE, 20000);
	if (rc != -EAGAIN)
		return rc;
	if ((rc = lock_retry(db, x, fd, SQLITE_PENDING_BYTE, 1, 0)) != 0)
		return rc;
	return lock_retry(db, x, fd, SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE, 0);
}

static uint32_t bswap32(uint32_t x)
{
	return x >> 24 | (x >> 8 & 0xff00) | (x << 8 & 0xff0000) | x << 24;
}

/* The wal-index header's checksum (SQLite's walChecksumBytes over its
 * first 40 bytes, in native order unless bigEndCksum says otherwise). */
static void walidx_checksum(uint8_t *hdr)
{
	bool native = hdr[13] == 0;
	uint32_t s1 = 0, s2 = 0;
	for (int i = 0; i < 40; i += 8) {
		uint32_t a, b;
		memcpy(&a, hdr + i, 4);
		memcpy(&b, hdr + i + 4, 4);
		if (!native) {
			a = bswap32(a);
			b = bswap32(b);
		}
		s1 += a + s2;
		s2 += b + s1;
	}
	memcpy(hdr + 40, &s1, 4);
	memcpy(hdr + 44, &s2, 4);
}

/* Tells WAL-mode connections that the database changed: a new wal-index
 * header (iChange + 1, no frames, the new page count), written through the
 * mount so that every client's mapping of -shm sees it, copy 2 first as
 * SQLite does. A wal-index nobody initialised is left to SQLite's
 * recovery. */
static void walidx_publish_in_mount(struct db *db, int shm_fd, uint32_t n_pages)
{
	uint8_t hdr[WALIDX_HDR_SIZE];
	if (fdio_pread_full(shm_fd, hdr, sizeof(hdr), 0) != (int)sizeof(hdr) || hdr[12] == 0)
		return;
	uint32_t change, zero = 0;
	memcpy(&change, hdr + 8, 4);
	change++;
	memcpy(hdr + 8, &change, 4);
	memcpy(hdr + 16, &zero, 4); /* mxFrame */
	memcpy(hdr + 20, &n_pages, 4);
	walidx_checksum(hdr);
	if (fdio_pwrite_full(shm_fd, hdr, sizeof(hdr), WALIDX_HDR_SIZE) < 0 ||
	    fdio_pwrite_full(shm_fd, &zero, 4, WALIDX_CKPT_OFF) < 0 ||
	    fdio_pwrite_full(shm_fd, hdr, sizeof(hdr), 0) < 0)
		LOG_WARN("db", "msg=\"cannot publish the wal-index header\" db=%s err=\"%s\"", db->name, strerror(errno));
}

/* Makes the two copies of the wal-index header differ, so that a reader
 * starting now takes the header for one being written and, finding the
 * WAL write lock taken, retries inside SQLite (WAL_RETRY, no BUSY). */
static bool walidx_poison(int shm_fd)
{
	uint8_t hdr[WALIDX_HDR_SIZE];
	if (fdio_pread_full(shm_fd, hdr, sizeof(hdr), 0) != (int)sizeof(hdr) || hdr[12] == 0)
		return false;
	uint32_t change;
	memcpy(&change, hdr + 8, 4);
	change++;
	memcpy(hdr + 8, &change, 4);
	return fdio_pwrite_full(shm_fd, hdr, sizeof(hdr), 0) >= 0;
}

/*
 * WAL mode: the write and checkpoint locks, the read marks 1-4 (unused by
 * readers while the replica's WAL is empty), then read mark 0, which every
 * reader of an empty WAL shares. Readers that keep overlapping would hold
 * mark 0 forever, so after 2 ms new readers are held back by poisoning
 * the header (they retry inside SQLite) while the ones inside a
 * transaction finish. SQLite gives up retrying after about 10 s
 * (SQLITE_PROTOCOL), so a reader whose transaction lasts longer than 2 s
 * gets the header back and the apply waits politely, as long as it lasts.
 * The recovery lock is left free: holding it would turn the retries into
 * SQLITE_BUSY_RECOVERY.
 */
static int exclude_wal_readers(struct db *db, struct exclusion *x)
{
	static const int order[] = { 0, 1, 4, 5, 6, 7 }; /* WRITE, CKPT, READ1..4 */
	int rc;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if ((rc = lock_retry(db, x, x->shm_fd, WAL_LOCK_FIRST + order[i], 1, 0)) != 0)
			return rc;
	const off_t read0 = WAL_LOCK_FIRST + 3;
	for (;;) {
		rc = lock_retry(db, x, x->shm_fd, read0, 1, 2000);
		if (rc != -EAGAIN)
			return rc;
		if (!x->poisoned)
			x->poisoned = walidx_poison(x->shm_fd);
		rc = lock_retry(db, x, x->shm_fd, read0, 1, 2000000);
		if (rc != -EAGAIN)
			return rc;
		/* A long transaction: let new readers in again meanwhile. */
		if (x->poisoned) {
			walidx_publish_in_mount(db, x->shm_fd, x->n_pages);
			x->poisoned = false;
		}
		if ((rc = lock_retry(db, x, x->shm_fd, read0, 1, 0)) != 0)
			return rc;
		return 0;
	}
}

static int exclude_readers_in_mount(struct db *db, bool wal_mode, struct exclusion *x)
{
	const char *mnt = db->node->hooks.mountpoint;
	char path[4096];
	x->db_fd = x->shm_fd = -1;
	x->poisoned = false;
	if (mnt == NULL)
		return 0; /* not mounted: no readers (tests of the store alone) */
	/* A descriptor that shares the write lock's open file description
	 * owns its locks: taking the writer's byte again on it succeeds. */
	if (x->held_wal != wal_mode)
		x->held_fd = -1; /* the journal mode changed: lock on a descriptor of our own */
	bool borrow = x->held_fd >= 0;
	if (wal_mode) {
		snprintf(path, sizeof(path), "%s/%s-shm", mnt, db->name);
		if ((x->shm_fd = borrow ? fcntl(x->held_fd, F_DUPFD_CLOEXEC, 0)
					: open(path, O_RDWR | O_CREAT | O_CLOEXEC, FILEIO_FILE_MODE)) < 0)
			return -errno;
		return exclude_wal_readers(db, x);
	}
	snprintf(path, sizeof(path), "%s/%s", mnt, db->name);
	if ((x->db_fd = borrow ? fcntl(x->held_fd, F_DUPFD_CLOEXEC, 0) : open(path, O_RDWR | O_CLOEXEC)) < 0)
		return -errno;
	return exclude_rollback_readers(db, x, x->db_fd);
}

/* Releases the locks the apply took; on the write lock's descriptor
 * the writer's byte stays held (other writers keep waiting). */
static void readmit_readers_in_mount(struct exclusion *x)
{
	bool keep = x->held_fd >= 0;
	if (x->db_fd >= 0) {
		if (keep && !x->held_wal) {
			ofd_unlock(x->db_fd, SQLITE_PENDING_BYTE, 1);
			ofd_unlock(x->db_fd, SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE);
		} else {
			ofd_unlock_all(x->db_fd);
		}
		close(x->db_fd);
	}
	if (x->shm_fd >= 0) {
		if (keep && x->held_wal)
			ofd_unlock(x->shm_fd, WAL_LOCK_FIRST + 1, 7);
		else
			ofd_unlock_all(x->shm_fd);
		close(x->shm_fd);
	}
	x->db_fd = x->shm_fd = -1;
}

/*
 * The functions above make calls into the node's own mount, so they run
 * through ownmount_call(); the descriptors of struct exclusion and of the
 * write lock are numbers in its descriptor table (ownmount.c says why).
 * Without a mount (tests of the store alone) nothing is opened.
 */
struct mount_job {
	struct db *db;
	struct exclusion *x;
	bool wal_mode;
	bool publish; /* readmit: publish a header for n_pages */
	int fd;
	uint32_t n_pages;
	int64_t timeout_ms;
	int *out;
};

static int exclude_job(void *arg)
{
	struct mount_job *j = arg;
	return exclude_readers_in_mount(j->db, j->wal_mode, j->x);
}

static int exclude_readers(struct db *db, bool wal_mode, struct exclusion *x)
{
	struct mount_job j = { .db = db, .x = x, .wal_mode = wal_mode };
	return db->node->hooks.mountpoint ? ownmount_call(exclude_job, &j) : exclude_job(&j);
}

/* Lets readers in again. In WAL mode it first publishes a wal-index
 * header: for n_pages when publish (the apply changed the database), else
 * the old one if the header was poisoned. One call into the mount. */
static int readmit_job(void *arg)
{
	struct mount_job *j = arg;
	struct exclusion *x = j->x;
	if (x->shm_fd >= 0 && (j->publish || x->poisoned))
		walidx_publish_in_mount(j->db, x->shm_fd, j->publish ? j->n_pages : x->n_pages);
	x->poisoned = false;
	readmit_readers_in_mount(x);
	return 0;
}

static void readmit_readers(struct db *db, struct exclusion *x, bool publish, uint32_t n_pages)
{
	struct mount_job j = { .db = db, .x = x, .publish = publish, .n_pages = n_pages };
	if (x->db_fd >= 0 || x->shm_fd >= 0)
		ownmount_call(readmit_job, &j);
}

/* Records from this size on (a snapshot of a large database) are copied
 * in the kernel: a catch-up by snapshot copied 1.4 GB through a 64 KiB
 * buffer here. Smaller ones go through sys_pwrite_all(), where tests
 * inject faults. */
#define COPY_IN_KERNEL_MIN (16u << 20)

/* Copies len bytes of fd at off into the segment at dst (after its record
 * header, which the caller writes last). */
static int copy_into_segment(int log_fd, uint64_t dst, int fd, off_t off, uint32_t len)
{
	uint8_t buf[65536];
	uint32_t done = 0;
	for (loff_t in = off, out = (loff_t)dst; len >= COPY_IN_KERNEL_MIN && done < len;) {
		ssize_t n = copy_file_range(fd, &in, log_fd, &out, len - done, 0);
		if (n <= 0)
			break; /* whatever the reason, the loop below finishes it */
		done += (uint32_t)n;
	}
	for (; done < len;) {
		size_t k = len - done < sizeof(buf) ? len - done : sizeof(buf);
		int n = fdio_pread_full(fd, buf, k, off + done);
		if (n < 0)
			return n;
		if ((size_t)n != k)
			return ERR_IO_SHORT;
		int rc = sys_pwrite_all(log_fd, buf, k, (off_t)(dst + done));
		if (rc)
			return rc;
		done += (uint32_t)k;
	}
	return 0;
}

/* Drops the kernel's cached pages that the apply rewrote, and attributes. */
static void invalidate_pages(struct db *db, const uint32_t *pg, size_t n, uint32_t ps, bool resized,
			     uint32_t new_n)
{
	const struct node_fuse_hooks *hk = &db->node->hooks;
	if (hk->inval_inode == NULL)
		return;
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && pg[j] == pg[j - 1] + 1)
			j++;
		hk->inval_inode(hk->ctx, db->id, DB_KIND_DB, (off_t)(pg[i] - 1) * ps, (off_t)(j - i) * ps);
		i = j;
	}
	if (resized || n == 0)
		hk->inval_inode(hk->ctx, db->id, DB_KIND_DB, (off_t)new_n * ps, 0);
}

/*
 * Stages the record: a normal one is appended to the open segment (header
 * last); a snapshot goes to a scratch segment that replaces the chain once
 * applied (one staged while it arrived is there already: only its record
 * header is written). *log_fd / *rec_off say where it went.
 */
static int stage_record(struct db *db, const struct ltx_header *h, int fd, off_t off, uint32_t len, int *log_fd,
			uint64_t *rec_off, const struct apply_staged *staged)
{
	if (staged) {
		*rec_off = 0;
		*log_fd = fcntl(staged->seg_fd, F_DUPFD_CLOEXEC, 0);
		if (*log_fd < 0)
			return -errno;
		uint8_t rh[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(rh, len);
		return sys_pwrite_all(*log_fd, rh, sizeof(rh), 0);
	}
	if (ltx_header_is_snapshot(h)) {
		*log_fd = openat(db->chain.dir_fd, APPLY_TMP_SEGMENT, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, FILEIO_FILE_MODE);
		if (*log_fd < 0)
			return -errno;
		*rec_off = 0;
	} else {
		if (db->chain.log_fd < 0) {
			int rc = chain_open_segment(&db->chain, h->min_txid);
			if (rc)
				return rc;
			db->dir_dirty = true;
		}
		*log_fd = db->chain.log_fd;
		*rec_off = db->chain.end;
	}
	int rc = copy_into_segment(*log_fd, *rec_off + LTXLOG_HDR_SIZE, fd, off, len);
	if (rc == 0) {
		uint8_t rh[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(rh, len);
		rc = sys_pwrite_all(*log_fd, rh, sizeof(rh), (off_t)*rec_off);
	}
	return rc;
}

static void unstage_record(struct db *db, const struct ltx_header *h, int log_fd, uint64_t rec_off, bool staged)
{
	if (log_fd < 0)
		return;
	if (ltx_header_is_snapshot(h)) {
		close(log_fd);
		unlinkat(db->chain.dir_fd, staged ? APPLY_PIPE_SEGMENT : APPLY_TMP_SEGMENT, 0);
	} else if (ftruncate(log_fd, (off_t)rec_off) != 0) {
		LOG_ERROR("db", "msg=\"cannot remove refused LTX record\" db=%s err=\"%s\"", db->name, strerror(errno));
	}
}

/*
 * On a node whose WAL holds committed frames (a primary applying a state
 * from the backup service), copies them into the db file first — a
 * checkpoint done by the node while it holds SQLite's WAL write and read
 * locks — so that the db file is the logical database, and empties the WAL
 * (db->mu held). The wal-index header published after the apply says "no
 * frames", and the next writer starts a new WAL at its header.
 */
static int fold_wal(struct db *db)
{
	if (db->wal.pages.count == 0)
		return 0;
	db_flush_unsynced(db); /* committed frames are final now */
	int wal_fd = db_open_backing(db, DB_KIND_WAL, O_RDWR);
	if (wal_fd < 0)
		return wal_fd;
	uint8_t *page = malloc(db->page_size);
	int rc = page ? 0 : ERR_NOMEM;
	for (size_t i = 0; rc == 0 && i < db->wal.pages.cap; i++) {
		const struct pgmap_entry *e = &db->wal.pages.slots[i];
		if (e->pgno == 0 || e->pgno > db->n_pages)
			continue;
		int n = fdio_pread_full(wal_fd, page, db->page_size, db_wal_frame_off(db, e->frame) + WAL_FRAME_HDR_SIZE);
		if (n != (int)db->page_size)
			rc = n < 0 ? n : ERR_IO_SHORT;
		else
			rc = sys_pwrite_all(db->db_fd, page, db->page_size, (off_t)(e->pgno - 1) * db->page_size);
	}
	free(page);
	if (rc == 0 && sys_ftruncate(db->db_fd, (off_t)db->n_pages * db->page_size) != 0)
		rc = -errno;
	if (rc == 0 && sys_fsync(db->db_fd) != 0)
		rc = -errno;
	if (rc == 0 && sys_ftruncate(wal_fd, 0) != 0)
		rc = -errno;
	close(wal_fd);
	if (rc) {
		LOG_ERROR("db", "msg=\"cannot fold the WAL into the database before an apply\" db=%s err=\"%s\"", db->name,
			  err_str(rc));
		return rc;
	}
	db_wal_reset_state(db);
	db->wal_folded = true;
	return 0;
}

/*
 * A snapshot for a database that has no file yet — a replica catching up
 * from nothing — is decoded once straight into a new file beside the
 * database's, in 256 KiB writes (a size that stays in the CPU cache
 * between the decoder's copy and the kernel's: 4 MiB writes took twice
 * the system time), and renamed into place: no staging spool and no
 * second copy (the general
 * path, dbfile_apply(), decodes into a spool and copies it into the live
 * file so that readers keep the old state on a failure; here there is no
 * old state and nobody has the file open). The decoder's checks are
 * those of any snapshot (ltxmerge.h: file checksum, completeness, the
 * post-apply checksum), and the last page is written only once they
 * passed; a failure or a crash leaves no database file (a crash leaves
 * APPLY_NEW_DB_TMP, removed at the next start). Its cache is dropped as
 * it reaches the disk (APPLY_NEW_DB_WB).
 */
#define APPLY_NEW_DB_BUF (256u << 10)

static int apply_new_file(struct db *db, int fd, off_t off, uint32_t len, struct dbfile_apply_result *res)
{
	struct ltxlog_reader r = { .fd = fd, .off = (uint64_t)off, .end = (uint64_t)off + len };
	struct ltxmerge_input in = { ltxlog_read, &r };
	struct ltxmerge *m = NULL;
	uint8_t *buf = malloc(APPLY_NEW_DB_BUF);
	int tfd = openat(db->dir_fd, APPLY_NEW_DB_TMP, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, FILEIO_FILE_MODE);
	struct sys_wbfile out = { .fd = tfd, .wb = APPLY_NEW_DB_WB };
	int rc = tfd < 0 ? -errno : buf ? ltxmerge_new(&m, &in, 1, NULL) : ERR_NOMEM;
	if (rc == 0)
		rc = ltxmerge_copy(m, sys_wbfile_write, &out, buf, APPLY_NEW_DB_BUF);
	/* Not fsync'd, like the pages dbfile_apply() writes: after a crash
	 * the start compares the db file with the chain as after any apply
	 * (docs/replication.md, "Crash in the middle of an apply"). */
	if (rc == 0 && sys_renameat(db->dir_fd, APPLY_NEW_DB_TMP, db->dir_fd, db_kind_backing[DB_KIND_DB]) != 0)
		rc = -errno;
	if (rc == 0) {
		close(db->db_fd);
		db->db_fd = tfd;
		tfd = -1;
		res->header = *ltxmerge_header(m);
		res->pos = ltxmerge_pos(m);
		LOG_INFO("db", "msg=\"snapshot written as the database's new file\" db=%s txid=%016" PRIx64 " pages=%u",
			 db->name, res->pos.txid, res->header.commit);
	} else if (tfd >= 0) {
		unlinkat(db->dir_fd, APPLY_NEW_DB_TMP, 0);
	}
	if (tfd >= 0)
		close(tfd);
	ltxmerge_free(m);
	free(buf);
	return rc;
}

/* A snapshot decoded while it arrived (snappipe.c) becomes the db file:
 * renamed into place, as apply_new_file() does with the file it writes. */
static int adopt_decoded(struct db *db, const struct apply_staged *s, struct dbfile_apply_result *res)
{
	int nfd = fcntl(s->new_db_fd, F_DUPFD_CLOEXEC, 0);
	if (nfd < 0)
		return -errno;
	if (sys_renameat(db->dir_fd, APPLY_PIPE_DB, db->dir_fd, db_kind_backing[DB_KIND_DB]) != 0) {
		int rc = -errno;
		close(nfd);
		return rc;
	}
	close(db->db_fd);
	db->db_fd = nfd;
	res->header = s->header;
	res->pos = s->pos;
	LOG_INFO("db", "msg=\"snapshot written as the database's new file while it arrived\" db=%s txid=%016" PRIx64
		       " pages=%u", db->name, res->pos.txid, res->header.commit);
	return 0;
}

/* Applies the staged record to the backing db file and advances the state
 * (db->mu held). */
static int apply_locked(struct db *db, const struct ltx_header *h, int fd, off_t off, uint32_t len,
			struct dbfile_apply_result *res, bool *new_file, const struct apply_staged *staged)
{
	int log_fd = -1;
	uint64_t rec_off = 0;
	bool snapshot = ltx_header_is_snapshot(h);
	int rc;

	if (db->db_fd < 0) {
		if ((db->db_fd = db_open_backing(db, DB_KIND_DB, O_RDWR | O_CREAT)) < 0) {
			rc = db->db_fd;
			db->db_fd = -1;
			return rc;
		}
	}
	/* Refused before anything changes (the WAL is not folded for an LTX
	 * that does not follow): under the write lock a replica's own WAL
	 * holds frames that a writer of this node is still appending to. */
	if (!snapshot && h->min_txid <= db->pos.txid)
		return ERR_LTX_OVERLAP;
	if (!snapshot && h->min_txid != db->pos.txid + 1)
		return ERR_LTX_NOT_CONTIGUOUS;
	if (!snapshot && db->pos.txid != 0 && h->pre_apply_checksum != db->pos.checksum)
		return ERR_LTX_PRE_MISMATCH;
	if (staged && (!snapshot || len != staged->len))
		return ERR_LTX_NOT_CONTIGUOUS;
	if ((rc = fold_wal(db)) != 0)
		return rc;
	if ((rc = stage_record(db, h, fd, off, len, &log_fd, &rec_off, staged)) != 0) {
		unstage_record(db, h, log_fd, rec_off, staged);
		return rc;
	}
	struct ltxlog_reader r = { .fd = fd, .off = (uint64_t)off, .end = (uint64_t)off + len };
	struct ltx_pos from = db->pos;
	if (from.txid == 0)
		from.checksum = 0;
	if (snapshot && from.txid != 0)
		LOG_INFO("db", "msg=\"replacing the database with a snapshot\" db=%s local_txid=%016" PRIx64
			       " snapshot_txid=%016" PRIx64, db->name, from.txid, h->max_txid);

	*new_file = snapshot && h->commit > 0 && !db->exists[DB_KIND_DB] && db->n_handles == 0;
	/* A decode on the way is of this record: the header it read is the
	 * one checked here (same bytes, same segment). */
	if (*new_file && staged && staged->new_db_fd >= 0 && staged->header.max_txid == h->max_txid &&
	    staged->header.commit == h->commit) {
		rc = adopt_decoded(db, staged, res);
	} else if (*new_file) {
		rc = apply_new_file(db, fd, off, len, res);
	} else {
		int spool = len > (16u << 20) ? fileio_spool_open(db->node->data_dir) : -1;
		rc = dbfile_apply(db->db_fd, spool, ltxlog_read, &r, from, res);
		if (spool >= 0)
			close(spool);
	}
	if (rc) {
		unstage_record(db, h, log_fd, rec_off, staged);
		return rc;
	}
	uint64_t rec_end = rec_off + LTXLOG_HDR_SIZE + len;
	if (snapshot && (rc = chain_replace(&db->chain, staged ? APPLY_PIPE_SEGMENT : APPLY_TMP_SEGMENT, log_fd,
					    rec_end)) != 0) {
		/* The db file is the snapshot now; the chain could not be
		 * replaced: the next start rebuilds it from the file. */
		LOG_ERROR("db", "msg=\"cannot store snapshot record\" db=%s err=\"%s\"", db->name, err_str(rc));
		close(log_fd);
	} else if (!snapshot) {
		db->chain.end = rec_end;
		if (db->chain.oldest_txid == 0)
			db->chain.oldest_txid = h->min_txid;
	}
	db->pos = res->pos;
	db->pos_ts_ms = h->timestamp_ms;
	db->n_commits++;
	db->n_ltx_bytes += len;
	db->dir_dirty = true;
	if (h->commit == 0) {
		if (unlinkat(db->dir_fd, db_kind_backing[DB_KIND_DB], 0) != 0 && errno != ENOENT)
			LOG_WARN("db", "msg=\"cannot remove backing file\" db=%s err=\"%s\"", db->name, strerror(errno));
		db_forget_files(db);
		return 0;
	}
	if (!db->exists[DB_KIND_DB]) {
		db->exists[DB_KIND_DB] = true;
		db->generation[DB_KIND_DB]++;
	}
	uint8_t hdr[20];
	db->page_size = h->page_size;
	db->n_pages = h->commit;
	if (fdio_pread_full(db->db_fd, hdr, sizeof(hdr), 0) == (int)sizeof(hdr))
		db->wal_mode = hdr[18] == 2 && hdr[19] == 2;
	db_wal_reset_state(db);
	/* WAL readers need -wal and -shm; creating them here means that
	 * reading never adds files to a replica's mount. */
	for (int k = DB_KIND_WAL; db->wal_mode && k <= DB_KIND_SHM; k++) {
		if (db->exists[k])
			continue;
		int wfd = db_open_backing(db, (enum db_kind)k, O_RDWR | O_CREAT);
		if (wfd >= 0) {
			close(wfd);
			db->exists[k] = true;
			db->generation[k]++;
		}
	}
	if (db->verify.active) {
		db->verify.cursor = 1; /* pages changed under it: start over */
		db->verify.partial = 0;
	}
	return 0;
}

int apply_ltx(struct db *db, int fd, off_t off, uint32_t len)
{
	return apply_ltx_guarded(db, fd, off, len, NULL, NULL);
}

int apply_ltx_guarded(struct db *db, int fd, off_t off, uint32_t len, apply_guard_fn guard, void *ctx)
{
	return apply_ltx_held(db, fd, off, len, guard, ctx, -1, false);
}

static int apply_writer_lock_in_mount(struct db *db, bool wal_mode, int64_t timeout_ms, int *out)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s%s", db->node->hooks.mountpoint, db->name, wal_mode ? "-shm" : "");
	int fd = wal_mode ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, FILEIO_FILE_MODE) : open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct exclusion none = { .db_fd = -1, .shm_fd = -1, .held_fd = -1 };
	int rc = wal_mode ? lock_retry(db, &none, fd, WAL_LOCK_FIRST, 1, timeout_ms * 1000)
			  : lock_retry(db, &none, fd, SQLITE_PENDING_BYTE + 1, 1, timeout_ms * 1000);
	if (rc) {
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

static void apply_writer_unlock_in_mount(int fd)
{
	ofd_unlock_all(fd);
	close(fd);
}

static int writer_lock_job(void *arg)
{
	struct mount_job *j = arg;
	return apply_writer_lock_in_mount(j->db, j->wal_mode, j->timeout_ms, j->out);
}

int apply_writer_lock(struct db *db, bool wal_mode, int64_t timeout_ms, int *out)
{
	struct mount_job j = { .db = db, .wal_mode = wal_mode, .timeout_ms = timeout_ms, .out = out };
	*out = -1;
	return db->node->hooks.mountpoint ? ownmount_call(writer_lock_job, &j) : -ENOTCONN;
}

static int writer_unlock_job(void *arg)
{
	apply_writer_unlock_in_mount(((struct mount_job *)arg)->fd);
	return 0;
}

void apply_writer_unlock(int fd)
{
	struct mount_job j = { .fd = fd };
	if (fd >= 0)
		ownmount_call(writer_unlock_job, &j);
}

static int apply_common(struct db *db, int fd, off_t off, uint32_t len, apply_guard_fn guard, void *ctx, int held_fd,
			bool held_wal, const struct apply_staged *staged);

int apply_ltx_held(struct db *db, int fd, off_t off, uint32_t len, apply_guard_fn guard, void *ctx, int held_fd,
		   bool held_wal)
{
	return apply_common(db, fd, off, len, guard, ctx, held_fd, held_wal, NULL);
}

int apply_snapshot_staged(struct db *db, const struct apply_staged *s)
{
	return apply_common(db, s->seg_fd, LTXLOG_HDR_SIZE, s->len, NULL, NULL, -1, false, s);
}

static int apply_common(struct db *db, int fd, off_t off, uint32_t len, apply_guard_fn guard, void *ctx, int held_fd,
			bool held_wal, const struct apply_staged *staged)
{
	uint8_t raw[LTX_HEADER_SIZE];
	struct ltx_header h;
	int rc;

	if (len < LTX_HEADER_SIZE + LTX_TRAILER_SIZE)
		return ERR_LTX_TRUNCATED;
	rc = fdio_pread_full(fd, raw, sizeof(raw), off);
	if (rc != (int)sizeof(raw))
		return rc < 0 ? rc : ERR_IO_SHORT;
	if ((rc = ltx_header_decode(raw, &h)) != 0)
		return rc;

	lockwatch_lock(&db->mu, "apply");
	bool existed = db->exists[DB_KIND_DB];
	bool wal_files = db->exists[DB_KIND_WAL];
	bool wal_mode = db->wal_mode;
	uint32_t old_n = db->n_pages;
	lockwatch_unlock(&db->mu);

	/* Readers first (they need db->mu to be served), then the state. */
	struct exclusion x = { .db_fd = -1, .shm_fd = -1, .held_fd = held_fd, .held_wal = held_wal, .n_pages = old_n };
	if (existed && (rc = exclude_readers(db, wal_mode, &x)) != 0) {
		readmit_readers(db, &x, false, 0); /* a poisoned header made sound */
		if (rc != -ECANCELED)
			LOG_WARN("db", "msg=\"cannot exclude readers for an apply\" db=%s err=\"%s\"", db->name,
				 err_str(rc));
		return rc;
	}
	if (guard && (rc = guard(ctx, db)) != 0) {
		readmit_readers(db, &x, false, 0);
		return rc;
	}
	struct dbfile_apply_result res;
	memset(&res, 0, sizeof(res));
	bool new_file = false;
	lockwatch_lock(&db->mu, "apply");
	/* Under db.mu, as db.c checks its fence: a write lock's transaction
	 * lands only while this node may commit (lease.c I1). */
	if (held_fd >= 0 && !node_may_write(db->node))
		rc = -EROFS;
	else
		rc = apply_locked(db, &h, fd, off, len, &res, &new_file, staged);
	bool folded = db->wal_folded;
	db->wal_folded = false;
	bool exists = db->exists[DB_KIND_DB];
	bool names_changed = existed != exists || (exists && !wal_files && db->exists[DB_KIND_WAL]);
	uint32_t new_n = db->n_pages;
	lockwatch_unlock(&db->mu);

	/* Never with db->mu held: dropping a page waits for reads of it in
	 * flight, which the FUSE workers serve. */
	if (rc == 0) {
		invalidate_pages(db, res.written, res.n_written, h.page_size, old_n != new_n, new_n);
		if (new_file && db->node->hooks.inval_inode) /* a new file: nothing cached is of it */
			db->node->hooks.inval_inode(db->node->hooks.ctx, db->id, DB_KIND_DB, 0, 0);
		if (folded && db->node->hooks.inval_inode) /* the WAL was emptied */
			db->node->hooks.inval_inode(db->node->hooks.ctx, db->id, DB_KIND_WAL, 0, 0);
		if (names_changed)
			db_invalidate_names(db);
	}
	/* Refused or failed: the old state, with a sound header. */
	readmit_readers(db, &x, rc == 0 && exists, new_n);
	free(res.written);
	if (rc == 0) {
		LOG_DEBUG("db", "msg=applied db=%s txid=%016" PRIx64 " pages=%zu commit=%u", db->name, h.max_txid,
			  res.n_written, new_n);
		node_notify_change(db->node);
	}
	return rc;
}

/* ---- Import: a whole database file as one transaction ------------------- */

/* The chain writer of an import: 1 MiB writes, writeback started every
 * IMPORT_KICK bytes so that the fsync at the end finds little left, and
 * the record's cache dropped once on disk (sys_writeback, as fullrec.c). */
#define IMPORT_WBUF (1u << 20)
#define IMPORT_KICK (16 << 20)

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

/*
 * What SQLite's backup API does to the header of the database it
 * overwrites, done to the imported file (db->mu held, the db file folded):
 * the file change counter and the schema cookie become the old ones + 1,
 * so every connection drops its cached pages and prepared statements;
 * version-valid-for matches the counter and the in-header size is the
 * page count; bytes 18/19 keep the database's journal mode (a new one is
 * created in rollback mode). The header goes into hdr: the imported file
 * itself is not changed (its check may still be reading it).
 */
static int import_header(struct db *db, int src_fd, uint32_t n_pages, uint8_t hdr[100])
{
	uint8_t old[100];
	bool have_old = db->n_pages > 0 &&
			fdio_pread_full(db->db_fd, old, sizeof(old), 0) == (int)sizeof(old) &&
			memcmp(old, DBFILE_HEADER_MAGIC, 16) == 0;
	if (fdio_pread_full(src_fd, hdr, 100, 0) != 100)
		return ERR_IO_SHORT;
	uint8_t mode = have_old && db->wal_mode ? 2 : 1;
	hdr[18] = hdr[19] = mode;
	uint32_t counter = have_old ? get_be32(old + 24) + 1 : get_be32(hdr + 24);
	put_be32(hdr + 24, counter);
	put_be32(hdr + 92, counter);
	put_be32(hdr + 28, n_pages);
	if (have_old)
		put_be32(hdr + 40, get_be32(old + 40) + 1);
	put_be32(hdr + 96, (uint32_t)sqlite3_libversion_number());
	return 0;
}

/* Copies len bytes of src into dst from offset 0, in the kernel where it
 * can (copy_file_range), else through a buffer. */
static int copy_whole(int dst, int src, off_t len)
{
	loff_t in = 0, out = 0;
	while (in < len) {
		ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(len - in), 0);
		if (n > 0)
			continue;
		if (n == 0)
			return ERR_IO_SHORT;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
			return -errno;
		break;
	}
	uint8_t *buf = in < len ? malloc(IMPORT_WBUF) : NULL;
	if (in < len && !buf)
		return ERR_NOMEM;
	int rc = 0;
	while (rc == 0 && in < len) {
		size_t k = len - in < (off_t)IMPORT_WBUF ? (size_t)(len - in) : IMPORT_WBUF;
		int n = fdio_pread_full(src, buf, k, in);
		if (n != (int)k)
			rc = n < 0 ? n : ERR_IO_SHORT;
		else if ((rc = sys_pwrite_all(dst, buf, k, in)) == 0)
			in += (off_t)k;
	}
	free(buf);
	return rc;
}

/* The record encoded from the file in one pass, appended to the open
 * segment at *rec_off (not yet durable). */
static int import_encode(struct db *db, int src_fd, const struct apply_import_opts *o, const uint8_t hdr[100],
			 struct ltx_header *h, struct ltx_trailer *t, uint64_t *rec_off, uint64_t *len)
{
	int rc;
	if (db->chain.log_fd < 0) {
		if ((rc = chain_open_segment(&db->chain, db->pos.txid + 1)) != 0)
			return rc;
		db->dir_dirty = true;
	}
	*rec_off = db->chain.end;
	struct sys_writer w = { .fd = db->chain.log_fd, .off = (off_t)(*rec_off + LTXLOG_HDR_SIZE),
				.wb = { .kick = IMPORT_KICK, .keep = SYS_WB_KEEP }, .cap = IMPORT_WBUF };
	w.wb.kicked = w.wb.dropped = w.off;
	if (!(w.buf = malloc(IMPORT_WBUF)))
		return ERR_NOMEM;
	struct dbfile_snapshot_opts so = {
		.page_size = o->page_size,
		.timestamp_ms = clock_wall_ms(),
		.compress = db->node->compress, /* data.compress: LZ4 costs CPU, saves bytes (docs/http.md) */
		.follows_txid = db->pos.txid,
		.pre_apply_checksum = db->pos.checksum,
		.node_id = db->node->node_id,
		.sqlite_header = hdr,
	};
	rc = dbfile_encode_snapshot(src_fd, &so, sys_writer_write, &w, h, t);
	if (rc == 0)
		rc = sys_writer_flush(&w);
	free(w.buf);
	*len = (uint64_t)w.off - *rec_off - LTXLOG_HDR_SIZE;
	if (rc == 0 && *len > LTXLOG_MAX_RECORD)
		rc = -EFBIG;
	if (rc == 0 && h->commit != o->n_pages)
		rc = ERR_IO_SHORT; /* the file changed size under us */
	if (rc == 0) {
		uint8_t rh[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(rh, (uint32_t)*len);
		rc = sys_pwrite_all(db->chain.log_fd, rh, sizeof(rh), (off_t)*rec_off);
	}
	return rc;
}

/* The record encoded while the file was uploaded: its header and page 1
 * (now that the position and the old header are known), its ltxlog
 * header, then a sync, which runs while the validation may still be
 * reading the file. The spool is not in the chain yet. */
static int import_finish_spool(struct db *db, const struct apply_import_opts *o, const uint8_t hdr[100],
			       struct ltx_header *h, struct ltx_trailer *t, uint64_t *len)
{
	*h = (struct ltx_header){
		.min_txid = db->pos.txid + 1,
		.max_txid = db->pos.txid + 1,
		.timestamp_ms = clock_wall_ms(),
		.pre_apply_checksum = db->pos.txid ? db->pos.checksum : 0,
		.node_id = db->node->node_id,
	};
	int rc = fullrec_finish(o->rec, h, hdr, t, len);
	if (rc == 0 && *len > LTXLOG_MAX_RECORD)
		rc = -EFBIG;
	if (rc == 0 && h->commit != o->n_pages)
		rc = ERR_IO_SHORT;
	if (rc == 0) {
		uint8_t rh[LTXLOG_HDR_SIZE];
		ltxlog_encode_hdr(rh, (uint32_t)*len);
		rc = sys_pwrite_all(o->rec_fd, rh, sizeof(rh), 0);
	}
	if (rc == 0 && sys_fsync(o->rec_fd) != 0)
		rc = -errno;
	return rc;
}

/* The import proper (db->mu held, readers excluded): the record, then the
 * file. *h / *t get the record's header and trailer. */
/* Where an import's time went (milliseconds), for its log line. */
struct import_spans {
	int64_t encode, check_wait, sync, copy;
	bool renamed; /* the file was renamed into place, not copied */
	bool spooled; /* the record was encoded during the upload */
};

static int import_locked(struct db *db, int src_fd, const struct apply_import_opts *o, int x_db_fd, int x_shm_fd,
			 struct ltx_header *h, struct ltx_trailer *t, struct import_spans *sp)
{
	int64_t t0 = clock_mono_ms();
	const off_t size = (off_t)o->n_pages * o->page_size;
	int rc;

	if (db->dirty.count != 0)
		return -EBUSY; /* a rollback transaction in progress: cannot be, readers are excluded */
	if (db->db_fd < 0 && (db->db_fd = db_open_backing(db, DB_KIND_DB, O_RDWR | O_CREAT)) < 0) {
		rc = db->db_fd;
		db->db_fd = -1;
		return rc;
	}
	if ((rc = fold_wal(db)) != 0)
		return rc;
	uint8_t hdr[100];
	if ((rc = import_header(db, src_fd, o->n_pages, hdr)) != 0)
		return rc;
	/* The space for the new file first: a full disk refuses the import
	 * before the record exists, never half-way through the copy. */
	bool may_copy = !o->src_path || db->n_handles != (x_db_fd >= 0) + (x_shm_fd >= 0);
	if (may_copy && fallocate(db->db_fd, FALLOC_FL_KEEP_SIZE, 0, size) != 0 && errno != EOPNOTSUPP)
		return -errno;
	uint64_t rec_off = 0, len = 0;
	sp->spooled = o->rec != NULL;
	rc = o->rec ? import_finish_spool(db, o, hdr, h, t, &len)
		    : import_encode(db, src_fd, o, hdr, h, t, &rec_off, &len);
	int64_t t1 = clock_mono_ms();
	sp->encode = t1 - t0;
	/* The file's own sync too while the validation may still run (it
	 * becomes the db file: only its header is written after). */
	if (rc == 0 && !may_copy && sys_fsync(src_fd) != 0)
		rc = -errno;
	/* Validation ran beside the encoding; a refusal cuts the record off. */
	if (rc == 0 && o->validated)
		rc = o->validated(o->ctx);
	int64_t t2 = clock_mono_ms();
	sp->check_wait = t2 - t1;
	if (rc == 0 && !o->rec && sys_fsync(db->chain.log_fd) != 0)
		rc = -errno;
	if (rc == 0 && o->rec && (rc = chain_adopt_segment(&db->chain, o->rec_dir_fd, o->rec_path, o->rec_fd,
							     h->min_txid, LTXLOG_HDR_SIZE + len)) == 0)
		*o->rec_taken = true;
	int64_t t3 = clock_mono_ms();
	sp->sync = t3 - t2;
	if (rc) {
		if (!o->rec && db->chain.log_fd >= 0 && sys_ftruncate(db->chain.log_fd, (off_t)rec_off) != 0)
			LOG_ERROR("db", "msg=\"cannot remove refused import record\" db=%s err=\"%s\"", db->name,
				  strerror(errno));
		return rc;
	}
	/* The record is durable. Nobody but this import has a file of the
	 * database open: the imported file becomes the db file (rename, no
	 * copy; a crash before the rename leaves the old file, which the
	 * next start finds at the record's pre-apply checksum: the record is
	 * dropped). Otherwise open handles must keep reading the same inode:
	 * the file is copied into it in place, and a crash half-way is
	 * repaired at the next start by writing the record's pages again
	 * (db_redo_full_record). */
	int own = (x_db_fd >= 0) + (x_shm_fd >= 0);
	if (o->src_path && db->n_handles == own) {
		rc = sys_pwrite_all(src_fd, hdr, sizeof(hdr), 0);
		if (rc == 0 && sys_fsync(src_fd) != 0)
			rc = -errno;
		if (rc == 0 && sys_renameat(o->src_dir_fd, o->src_path, db->dir_fd, db_kind_backing[DB_KIND_DB]) != 0)
			rc = -errno;
		if (rc) {
			if (o->rec)
				chain_drop_segment(&db->chain);
			else
				sys_ftruncate(db->chain.log_fd, (off_t)rec_off);
			return rc;
		}
		sp->renamed = true;
		sys_fsync(db->dir_fd);
		int fd = db_open_backing(db, DB_KIND_DB, O_RDWR);
		if (fd < 0) {
			rc = fd;
		} else {
			close(db->db_fd);
			db->db_fd = fd;
		}
	} else {
		rc = copy_whole(db->db_fd, src_fd, size);
		if (rc == 0)
			rc = sys_pwrite_all(db->db_fd, hdr, sizeof(hdr), 0);
		if (rc == 0 && sys_ftruncate(db->db_fd, size) != 0)
			rc = -errno;
		if (rc == 0 && sys_fsync(db->db_fd) != 0)
			rc = -errno;
	}
	sp->copy = clock_mono_ms() - t3;
	if (rc) {
		LOG_ERROR("db", "msg=\"import: cannot write the database file after its record; writes are refused "
				"until a restart repairs it from the record\" db=%s err=\"%s\"", db->name, err_str(rc));
		db->write_refused = true;
		return rc;
	}
	db->chain.end = rec_off + LTXLOG_HDR_SIZE + len;
	db->chain.synced_end = db->chain.end;
	if (db->chain.oldest_txid == 0)
		db->chain.oldest_txid = h->min_txid;
	db->pos = (struct ltx_pos){ h->max_txid, t->post_apply_checksum };
	db->pos_ts_ms = h->timestamp_ms;
	db->n_commits++;
	db->n_ltx_bytes += len;
	db->dir_dirty = true;
	if (!db->exists[DB_KIND_DB]) {
		db->exists[DB_KIND_DB] = true;
		db->generation[DB_KIND_DB]++;
	}
	db->forgotten = false;
	db->page_size = o->page_size;
	db->n_pages = o->n_pages;
	db_wal_reset_state(db);
	if (db->verify.active) {
		db->verify.cursor = 1;
		db->verify.partial = 0;
	}
	return 0;
}

int apply_import(struct db *db, int src_fd, const struct apply_import_opts *o, struct ltx_pos *pos)
{
	int rc = db_ensure_dir(db);
	if (rc)
		return rc;
	lockwatch_lock(&db->mu, "import");
	bool existed = db->exists[DB_KIND_DB];
	bool wal_mode = db->wal_mode;
	uint32_t old_n = db->n_pages;
	lockwatch_unlock(&db->mu);

	struct exclusion x = { .db_fd = -1, .shm_fd = -1, .held_fd = -1, .n_pages = old_n, .cancel = o->cancel,
			       .max_wait_us = o->max_wait_us };
	rc = existed ? exclude_readers(db, wal_mode, &x) : 0;
	if (rc == 0 && o->check)
		rc = o->check(o->ctx, db);
	if (rc) {
		readmit_readers(db, &x, false, 0);
		return rc;
	}
	struct ltx_header h;
	struct ltx_trailer t;
	lockwatch_lock(&db->mu, "import");
	struct import_spans sp = { 0 };
	int64_t t_locked = clock_mono_ms();
	rc = import_locked(db, src_fd, o, x.db_fd, x.shm_fd, &h, &t, &sp);
	if (rc && !existed && !db->exists[DB_KIND_DB] && !db->write_refused && db->db_fd >= 0) {
		/* A refused import of a new database leaves no file behind. */
		close(db->db_fd);
		db->db_fd = -1;
		unlinkat(db->dir_fd, db_kind_backing[DB_KIND_DB], 0);
	}
	bool folded = db->wal_folded;
	db->wal_folded = false;
	bool exists = db->exists[DB_KIND_DB];
	uint32_t new_n = db->n_pages;
	*pos = db->pos;
	lockwatch_unlock(&db->mu);

	const struct node_fuse_hooks *hk = &db->node->hooks;
	if (rc == 0 && hk->inval_inode) {
		hk->inval_inode(hk->ctx, db->id, DB_KIND_DB, 0, 0); /* every page, and the size */
		if (folded)
			hk->inval_inode(hk->ctx, db->id, DB_KIND_WAL, 0, 0);
	}
	if (rc == 0 && !existed)
		db_invalidate_names(db);
	readmit_readers(db, &x, rc == 0 && exists, new_n);
	if (rc == 0) {
		LOG_INFO("db", "msg=imported db=%s txid=%016" PRIx64 " pages=%u checksum=%016" PRIx64
			       " wait_ms=%" PRId64 " encode_ms=%" PRId64 " check_wait_ms=%" PRId64 " sync_ms=%" PRId64
			       " %s_ms=%" PRId64 " total_ms=%" PRId64 " record=%s",
			 db->name, h.max_txid, new_n, t.post_apply_checksum, x.waited_us / 1000, sp.encode,
			 sp.check_wait, sp.sync, sp.renamed ? "rename" : "copy", sp.copy, clock_mono_ms() - t_locked,
			 sp.spooled ? "spooled" : "encoded");
		node_notify_change(db->node);
	}
	return rc;
}
