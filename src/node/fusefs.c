/*
 * fusefs.c — the mount: a flat directory of databases over libfuse3's
 * low-level API.
 *
 * DESIGN
 *
 * Names. For each database x: "x", "x-journal", "x-wal", "x-shm" (backed
 * by real files, see store.h) and "x-pos" (generated, read-only). Any other
 * name that dbname_valid() accepts can be created and becomes a
 * database once its first write carries a SQLite header; writes that are
 * not whole pages, or a first page that is not a SQLite header, are refused
 * with EINVAL and a log line (db.c). A database created but never written
 * is forgotten when its last handle is released (db_close_file), so a
 * refused copy leaves nothing behind. docs/mount.md lists every errno.
 *
 * Inodes. Root is 1. The file of kind k of database id is
 * INO_BASE + id * INO_STRIDE + k, so st_ino is stable for the life of the
 * mount, as SQLite's inode-keyed lock sharing requires.
 *
 * What the kernel does for us (the FUSE tax is mostly round trips, see
 * ENVIRONMENT.md):
 *   - Locks: no lock handler is registered, so the kernel arbitrates
 *     SQLite's fcntl locks itself, correctly between all processes on this
 *     host, without a round trip. The node never needs to see a lock: the
 *     commit points are file operations (db.c).
 *   - Page cache: every open keeps the cache (FOPEN_KEEP_CACHE), so reads
 *     of unchanged pages never reach the daemon, and the -shm mapping is
 *     shared through the page cache as on a local disk. All changes on a
 *     single node pass through the kernel, which keeps its cache coherent.
 *   - Attributes and names are cached for attr_timeout seconds for the
 *     same reason; "-pos" alone is uncached (direct I/O, timeout 0).
 *   - FUSE passthrough (Linux 6.9+, fusepass.c): the kernel writes an
 *     empty "-journal" opened by a client itself, without requests (about
 *     half the writes of a DELETE-mode commit). Capture never needed them:
 *     its commit points (unlink, truncate) still come here, and db.c finds
 *     a commit that only zeroes the header (PERSIST, EXCLUSIVE locking) by
 *     reading it. The kernel wants every open of an inode open in
 *     passthrough mode to name the same backing file, and no cached open
 *     beside it, so the mode is chosen at a file's first open and kept
 *     until its last release (struct passref). The database file and the
 *     WAL are never passed through: capture must see their writes
 *     (docs/mount.md "FUSE passthrough of the journal").
 *
 * Threads: the multi-threaded session loop; db.c serialises per database.
 */
#define FUSE_USE_VERSION 35

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/clock.h"
#include "node/db.h"
#include "base/err.h"
#include "proto/dbname.h"
#include "node/fusefs.h"
#include "node/fusepass.h"
#include "base/log.h"
#include "node/store.h"
#include "base/sys.h"

#define INO_BASE 16
#define INO_STRIDE 8
/* Status files in the root (see status_text()). */
#define INO_PRIMARY 2
#define INO_LAG 3
#define LAG_TEXT_LEN 11 /* "%+010d\n" */

struct fusefs {
	struct store *store;
	struct fuse_session *se;
	char *mountpoint;
	double attr_timeout;
	bool debug;
	bool mounted;
	atomic_bool stopping;
	pthread_t workers[8]; /* used only by the thread in fusefs_run */
	int n_workers;
	atomic_ulong stats[14];
	struct fusepass *pass;  /* passthrough hooks (fusepass.c) */
	pthread_mutex_t pass_mu; /* guards passrefs; never held while taking a db.mu */
	struct passref *passrefs;
	size_t n_passrefs;
};

/* The passthrough state of one file (database id, kind) while it has open
 * handles. The kernel requires every open of an inode that is open in
 * passthrough mode to be a passthrough open with the same backing file,
 * and refuses a passthrough open while the inode is open cached: the
 * mode is chosen at the first open and kept until the last release. */
struct passref {
	uint32_t db_id;
	int kind;
	ino_t backing_ino; /* a journal unlinked while open and created again is another file */
	int n;          /* open handles */
	int backing_id; /* > 0: passthrough with this id; 0: cached */
};

enum { REQ_LOOKUP, REQ_GETATTR, REQ_SETATTR, REQ_OPEN, REQ_CREATE, REQ_READ, REQ_WRITE, REQ_FSYNC, REQ_FLUSH,
       REQ_RELEASE, REQ_UNLINK, REQ_READDIR, REQ_STATFS, REQ_OTHER };

/* An open file. */
struct handle {
	struct db *db;
	enum db_kind kind;
	int fd; /* backing file, -1 for -pos */
	bool counted;     /* holds a passref */
	ino_t backing_ino;
	bool passthrough; /* the kernel serves its reads and writes */
};

static struct fusefs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void count(fuse_req_t req, int which, const char *op, fuse_ino_t ino)
{
	struct fusefs *fs = fs_of(req);
	atomic_fetch_add(&fs->stats[which], 1);
	if (fs->debug)
		LOG_INFO("fuse", "op=%s ino=%" PRIu64, op, (uint64_t)ino);
}

static fuse_ino_t ino_of(const struct db *db, enum db_kind kind)
{
	return INO_BASE + (fuse_ino_t)db->id * INO_STRIDE + kind;
}

/* Resolves an inode to its database and kind; NULL if not a db file. */
static struct db *db_of_ino(struct fusefs *fs, fuse_ino_t ino, enum db_kind *kind)
{
	if (ino < INO_BASE)
		return NULL;
	uint64_t rel = ino - INO_BASE;
	if (rel % INO_STRIDE >= DB_KIND_COUNT)
		return NULL;
	*kind = (enum db_kind)(rel % INO_STRIDE);
	return store_by_id(fs->store, (uint32_t)(rel / INO_STRIDE));
}

/*
 * Status files: ".primary" (on a replica that knows its primary: the
 * primary's hostname and a newline; absent otherwise) and ".lag"
 * (milliseconds behind the primary, "%+010d\n"; 0 on the primary).
 * Returns the text length, or -ENOENT when the file does not exist now.
 */
static int status_text(struct fusefs *fs, fuse_ino_t ino, char *buf, size_t len)
{
	if (ino == INO_PRIMARY) {
		char host[256];
		node_primary_host(&fs->store->node, host, sizeof(host));
		if (host[0] == '\0')
			return -ENOENT;
		return snprintf(buf, len, "%s\n", host);
	}
	int64_t lag = node_lag_ms(&fs->store->node);
	if (lag > 999999999)
		lag = 999999999;
	return snprintf(buf, len, "%+010d\n", (int)lag);
}

static fuse_ino_t status_ino(const char *name)
{
	if (strcmp(name, ".primary") == 0)
		return INO_PRIMARY;
	if (strcmp(name, ".lag") == 0)
		return INO_LAG;
	return 0;
}

static int stat_status(struct fusefs *fs, fuse_ino_t ino, struct stat *st)
{
	char text[300];
	int n = status_text(fs, ino, text, sizeof(text));
	if (n < 0)
		return n;
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = n;
	return 0;
}

/* True when the request comes from this process (the node applying a
 * replicated transaction through its own mount). FUSE reports the
 * calling thread's ID. */
static bool from_self(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (ctx->pid == getpid())
		return true;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d", (int)ctx->pid);
	return access(path, F_OK) == 0;
}

/* A replica refuses every change through the mount except to -shm (which
 * readers write) and the creation of -wal/-shm (which WAL readers need):
 * SQLite then opens the database read-only and reports SQLITE_READONLY
 * ("attempt to write a readonly database") in every journal mode. */
static bool read_only_for(fuse_req_t req, struct fusefs *fs, const char *db_name, enum db_kind kind)
{
	if (kind == DB_KIND_SHM || node_may_write_db(&fs->store->node, db_name))
		return false;
	return !from_self(req);
}

static int stat_ino(struct fusefs *fs, fuse_ino_t ino, struct stat *st)
{
	if (ino == INO_PRIMARY || ino == INO_LAG)
		return stat_status(fs, ino, st);
	if (ino == FUSE_ROOT_ID) {
		memset(st, 0, sizeof(*st));
		st->st_ino = ino;
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	}
	enum db_kind kind;
	struct db *db = db_of_ino(fs, ino, &kind);
	if (db == NULL)
		return -ENOENT;
	int rc = db_stat_file(db, kind, st);
	if (rc == 0)
		st->st_ino = ino;
	return rc;
}

static double timeout_for(struct fusefs *fs, enum db_kind kind)
{
	return kind == DB_KIND_POS ? 0.0 : fs->attr_timeout;
}

static void reply_entry(fuse_req_t req, struct fusefs *fs, struct db *db, enum db_kind kind)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	int rc = db_stat_entry(db, kind, &e.attr, &e.generation);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	e.ino = ino_of(db, kind);
	e.attr.st_ino = e.ino;
	e.attr_timeout = timeout_for(fs, kind);
	e.entry_timeout = timeout_for(fs, kind);
	fuse_reply_entry(req, &e);
}

static void reply_negative(fuse_req_t req, struct fusefs *fs)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.entry_timeout = fs->attr_timeout;
	fuse_reply_entry(req, &e);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusefs *fs = fs_of(req);
	char dbname[256];
	int kind;

	count(req, REQ_LOOKUP, "lookup", parent);
	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_ino_t sino = status_ino(name);
	if (sino != 0) {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		if (stat_status(fs, sino, &e.attr) != 0) {
			fuse_reply_err(req, ENOENT); /* not cached: it may appear any moment */
			return;
		}
		e.ino = sino;
		fuse_reply_entry(req, &e);
		return;
	}
	if (store_parse_name(name, dbname, sizeof(dbname), &kind) != 0) {
		reply_negative(req, fs);
		return;
	}
	struct db *db = store_find(fs->store, dbname, false);
	if (db == NULL) {
		reply_negative(req, fs);
		return;
	}
	struct stat st;
	if (db_stat_file(db, (enum db_kind)kind, &st) != 0) {
		reply_negative(req, fs);
		return;
	}
	reply_entry(req, fs, db, (enum db_kind)kind);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct stat st;
	enum db_kind kind = DB_KIND_DB;

	count(req, REQ_GETATTR, "getattr", ino);
	int rc = stat_ino(fs, ino, &st);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (ino == INO_PRIMARY || ino == INO_LAG) {
		fuse_reply_attr(req, &st, 0);
		return;
	}
	if (ino != FUSE_ROOT_ID)
		db_of_ino(fs, ino, &kind);
	fuse_reply_attr(req, &st, ino == FUSE_ROOT_ID ? fs->attr_timeout : timeout_for(fs, kind));
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	enum db_kind kind;
	struct db *db;
	struct stat st;

	count(req, REQ_SETATTR, "setattr", ino);
	if (ino == FUSE_ROOT_ID) {
		stat_ino(fs, ino, &st);
		fuse_reply_attr(req, &st, fs->attr_timeout);
		return;
	}
	if ((db = db_of_ino(fs, ino, &kind)) == NULL) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && read_only_for(req, fs, db->name, kind)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		int rc = db_truncate(db, kind, attr->st_size);
		if (rc) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	/* Mode, owner and times are accepted and not stored: SQLite fchowns
	 * its journals when it runs as root, and must not fail doing so. */
	int rc = stat_ino(fs, ino, &st);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_attr(req, &st, timeout_for(fs, kind));
}

/* Whether the first open of a file may be served by the kernel without
 * requests (see "FUSE passthrough" in the design comment): only an empty -journal of a
 * database that commits by unlinking or truncating it, opened by a client
 * (the node's own opens always come through). */
static bool pass_wanted(struct fusefs *fs, struct db *db, enum db_kind kind, int fd, bool self)
{
	return kind == DB_KIND_JOURNAL && !self && fusepass_enabled(fs->pass) && db_journal_pass_ok(db, fd);
}

/* Counts a handle of (db, kind) and returns the backing id its open reply
 * must carry (0: an ordinary cached open). */
static int pass_acquire(struct fusefs *fs, struct db *db, enum db_kind kind, int fd, bool self, ino_t *ino)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -errno;
	*ino = st.st_ino;
	/* Asked before pass_mu is taken: it takes db.mu, which may be stuck,
	 * and the opens of every other database's journal need pass_mu. */
	bool want = pass_wanted(fs, db, kind, fd, self);
	pthread_mutex_lock(&fs->pass_mu);
	struct passref *r = NULL;
	for (size_t i = 0; i < fs->n_passrefs && r == NULL; i++)
		if (fs->passrefs[i].db_id == db->id && fs->passrefs[i].kind == (int)kind &&
		    fs->passrefs[i].backing_ino == st.st_ino)
			r = &fs->passrefs[i];
	if (r == NULL) {
		struct passref *np = realloc(fs->passrefs, (fs->n_passrefs + 1) * sizeof(*np));
		if (np == NULL) {
			pthread_mutex_unlock(&fs->pass_mu);
			return -ENOMEM;
		}
		fs->passrefs = np;
		r = &np[fs->n_passrefs++];
		r->db_id = db->id;
		r->kind = (int)kind;
		r->backing_ino = st.st_ino;
		r->n = 0;
		r->backing_id = 0;
		if (want) {
			int id = fusepass_backing_open(fs->pass, fd);
			r->backing_id = id > 0 ? id : 0;
		}
	}
	r->n++;
	int id = r->backing_id;
	pthread_mutex_unlock(&fs->pass_mu);
	return id;
}

static void pass_release(struct fusefs *fs, struct db *db, enum db_kind kind, ino_t backing_ino)
{
	pthread_mutex_lock(&fs->pass_mu);
	for (size_t i = 0; i < fs->n_passrefs; i++) {
		struct passref *r = &fs->passrefs[i];
		if (r->db_id != db->id || r->kind != (int)kind || r->backing_ino != backing_ino)
			continue;
		if (--r->n == 0) {
			fusepass_backing_close(fs->pass, r->backing_id);
			*r = fs->passrefs[--fs->n_passrefs];
		}
		break;
	}
	pthread_mutex_unlock(&fs->pass_mu);
}

static int open_handle(fuse_req_t req, struct db *db, enum db_kind kind, bool create, int flags,
		       struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	bool for_write = (flags & O_ACCMODE) != O_RDONLY;
	if (kind == DB_KIND_POS && for_write)
		return -EACCES;
	int fd = db_open_file(db, kind, create, for_write);
	if (fd < 0)
		return fd;
	struct handle *h = malloc(sizeof(*h));
	if (h == NULL) {
		db_close_file(db, kind, fd);
		return -ENOMEM;
	}
	h->db = db;
	h->kind = kind;
	h->fd = kind == DB_KIND_POS ? -1 : fd;
	h->counted = false;
	h->passthrough = false;
	fi->fh = (uint64_t)(uintptr_t)h;
	if (kind == DB_KIND_POS) {
		fi->direct_io = 1;
		return 0;
	}
	fi->keep_cache = 1;
	if (kind != DB_KIND_JOURNAL)
		return 0; /* the only kind ever served by passthrough */
	int id = pass_acquire(fs, db, kind, fd, from_self(req), &h->backing_ino);
	if (id < 0) {
		db_close_file(db, kind, fd);
		free(h);
		return id;
	}
	h->counted = true;
	if (id > 0) {
		h->passthrough = true;
		db_journal_pass_count(db, 1);
	}
	/* Set for this thread's reply, which the caller sends next. */
	fusepass_reply_next(id);
	return 0;
}

/* Ends a handle made by open_handle() (not those of the status files). */
static void close_handle(struct fusefs *fs, struct handle *h)
{
	if (h->passthrough)
		db_journal_pass_count(h->db, -1);
	if (h->counted)
		pass_release(fs, h->db, h->kind, h->backing_ino);
	db_close_file(h->db, h->kind, h->fd);
	free(h);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	enum db_kind kind;
	struct db *db;

	count(req, REQ_OPEN, "open", ino);
	if (ino == INO_PRIMARY || ino == INO_LAG) {
		struct stat st;
		if (stat_status(fs, ino, &st) != 0) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		if ((fi->flags & O_ACCMODE) != O_RDONLY) {
			fuse_reply_err(req, EACCES);
			return;
		}
		fi->fh = 0;
		fi->direct_io = 1;
		fuse_reply_open(req, fi);
		return;
	}
	if ((db = db_of_ino(fs, ino, &kind)) == NULL) {
		fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
		return;
	}
	/* Tests: stall the node's own open (ownmount.c) to kill it meanwhile. */
	if (sys_fault_armed(SYS_SELFOPEN) && from_self(req) && sys_fault_point(SYS_SELFOPEN, db->name)) {
		fuse_reply_err(req, errno);
		return;
	}
	bool writes = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	/* WAL readers open -wal read-write; only writing to it is refused. */
	if (writes && (kind != DB_KIND_WAL || (fi->flags & O_TRUNC)) && read_only_for(req, fs, db->name, kind)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((fi->flags & O_TRUNC) && kind == DB_KIND_DB) {
		int rc = db_truncate(db, kind, 0);
		if (rc) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	int rc = open_handle(req, db, kind, false, fi->flags, fi);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = fuse_reply_open(req, fi);
	fusepass_reply_next(0);
	if (rc == -ENOENT)
		close_handle(fs, (struct handle *)(uintptr_t)fi->fh);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	char dbname[256];
	int kind, rc;
	struct db *db = NULL;

	count(req, REQ_CREATE, "create", parent);
	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((rc = store_parse_name(name, dbname, sizeof(dbname), &kind)) != 0) {
		/* A name that is not UTF-8 would not be one in the log either. */
		if (rc == -EILSEQ)
			LOG_WARN("fuse", "msg=\"refused to create a file whose name is not valid UTF-8\" name_len=%zu",
				 strlen(name));
		else
			LOG_WARN("fuse", "msg=\"refused to create a file that cannot be a database\" name=\"%s\"",
				 name);
		fuse_reply_err(req, rc == -ENAMETOOLONG || rc == -EILSEQ ? -rc : EINVAL);
		return;
	}
	if (kind == DB_KIND_POS) {
		fuse_reply_err(req, EACCES);
		return;
	}
	if (kind != DB_KIND_WAL && read_only_for(req, fs, dbname, (enum db_kind)kind)) {
		LOG_WARN("fuse", "msg=\"refused to create a file on a read-only replica\" name=\"%s\"", name);
		fuse_reply_err(req, EROFS);
		return;
	}
	if (kind == DB_KIND_DB) {
		if ((rc = store_create(fs->store, dbname, &db)) != 0) {
			fuse_reply_err(req, rc < 0 && rc > -1000 ? -rc : EIO);
			return;
		}
	} else if ((db = store_find(fs->store, dbname, false)) == NULL) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st;
	if ((fi->flags & O_EXCL) && db_stat_file(db, (enum db_kind)kind, &st) == 0) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	if ((rc = open_handle(req, db, (enum db_kind)kind, true, fi->flags, fi)) != 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	db_stat_entry(db, (enum db_kind)kind, &e.attr, &e.generation);
	e.ino = ino_of(db, (enum db_kind)kind);
	e.attr.st_ino = e.ino;
	e.attr_timeout = e.entry_timeout = fs->attr_timeout;
	rc = fuse_reply_create(req, &e, fi);
	fusepass_reply_next(0);
	if (rc == -ENOENT)
		close_handle(fs, (struct handle *)(uintptr_t)fi->fh);
}

static void read_status(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
	char text[300];
	int n = status_text(fs_of(req), ino, text, sizeof(text));
	if (n < 0 || off >= n) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size_t k = (size_t)(n - off) < size ? (size_t)(n - off) : size;
	fuse_reply_buf(req, text + off, k);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	char stackbuf[16384];
	if (ino == INO_PRIMARY || ino == INO_LAG) {
		count(req, REQ_READ, "read", ino);
		read_status(req, ino, size, off);
		return;
	}
	char *buf = size <= sizeof(stackbuf) ? stackbuf : malloc(size);

	count(req, REQ_READ, "read", ino);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = db_read(h->db, h->kind, h->fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	if (buf != stackbuf)
		free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	count(req, REQ_WRITE, "write", ino);
	if (read_only_for(req, fs_of(req), h->db->name, h->kind)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ssize_t n = db_write(h->db, h->kind, h->fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, n <= -1000 ? EIO : (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}


static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct fusefs *fs = fs_of(req); /* req is freed by the reply */
	count(req, REQ_RELEASE, "release", ino);
	/* Reply first: closing the last handle of a never-written database
	 * forgets it, which invalidates names in the kernel's cache. */
	fuse_reply_err(req, 0);
	if (h)
		close_handle(fs, h);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	count(req, REQ_FSYNC, "fsync", ino);
	if (h == NULL) {
		fuse_reply_err(req, 0);
		return;
	}
	int rc = db_fsync(h->db, h->kind, h->fd);
	fuse_reply_err(req, rc < 0 && rc > -1000 ? -rc : rc ? EIO : 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusefs *fs = fs_of(req);
	char dbname[256];
	int kind;

	count(req, REQ_UNLINK, "unlink", parent);
	if (parent != FUSE_ROOT_ID || store_parse_name(name, dbname, sizeof(dbname), &kind) != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct db *db = store_find(fs->store, dbname, false);
	if (db == NULL) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* On a replica even -wal and -shm stay: the last reader's close tries
	 * to remove them (and ignores the error), the next reader needs them.
	 * Its -journal goes when it holds the write lock (a DELETE-mode commit). */
	bool lock_commit = kind == DB_KIND_JOURNAL && node_may_write_db(&fs->store->node, dbname);
	if (!node_is_primary(&fs->store->node) && !from_self(req) && !lock_commit) {
		fuse_reply_err(req, EROFS);
		return;
	}
	int rc = db_unlink(db, (enum db_kind)kind);
	fuse_reply_err(req, rc < 0 && rc > -1000 ? -rc : rc ? EIO : 0);
}

static void op_refuse(fuse_req_t req, const char *what)
{
	count(req, REQ_OTHER, what, 0);
	fuse_reply_err(req, EPERM);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	op_refuse(req, "mkdir");
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_refuse(req, "rmdir");
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	op_refuse(req, "rename");
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	op_refuse(req, "link");
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	op_refuse(req, "symlink");
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	op_refuse(req, "mknod");
}

/* Directory listings are built at opendir and served from memory. */
struct dirbuf {
	char *p;
	size_t size;
};

static int dirbuf_add(fuse_req_t req, struct dirbuf *b, const char *name, fuse_ino_t ino, mode_t mode)
{
	struct stat st;
	memset(&st, 0, sizeof(st));
	st.st_ino = ino;
	st.st_mode = mode;
	size_t old = b->size;
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	char *np = realloc(b->p, old + need);
	if (np == NULL)
		return -ENOMEM;
	b->p = np;
	b->size = old + need;
	fuse_add_direntry(req, b->p + old, need, name, &st, (off_t)b->size);
	return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	struct dirbuf *b = calloc(1, sizeof(*b));

	count(req, REQ_OTHER, "opendir", ino);
	if (ino != FUSE_ROOT_ID) {
		free(b);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (b == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	int rc = dirbuf_add(req, b, ".", FUSE_ROOT_ID, S_IFDIR);
	if (rc == 0)
		rc = dirbuf_add(req, b, "..", FUSE_ROOT_ID, S_IFDIR);
	struct stat sst;
	if (rc == 0 && stat_status(fs, INO_PRIMARY, &sst) == 0)
		rc = dirbuf_add(req, b, ".primary", INO_PRIMARY, S_IFREG);
	/* ".lag" is listed on replicas (it reads 0 on the primary). */
	if (rc == 0 && !node_is_primary(&fs->store->node))
		rc = dirbuf_add(req, b, ".lag", INO_LAG, S_IFREG);
	size_t n = store_count(fs->store);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct db *db = store_by_id(fs->store, (uint32_t)i);
		bool exists[DB_KIND_COUNT];
		db_list_files(db, exists);
		for (int k = 0; rc == 0 && k < DB_KIND_COUNT; k++) {
			if (!exists[k])
				continue;
			char name[300];
			snprintf(name, sizeof(name), "%s%s", db->name, db_kind_suffix[k]);
			rc = dirbuf_add(req, b, name, ino_of(db, (enum db_kind)k), S_IFREG);
		}
	}
	if (rc) {
		free(b->p);
		free(b);
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)b;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
	count(req, REQ_READDIR, "readdir", ino);
	if ((size_t)off >= b->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* Reply from a copy: once the reply is written the kernel may send
	 * RELEASEDIR, and another worker frees b while this one is still
	 * inside fuse_reply_buf (AddressSanitizer checks the buffer after
	 * writev returns). */
	size_t n = b->size - (size_t)off < size ? b->size - (size_t)off : size;
	char *copy = malloc(n);
	if (copy == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, b->p + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
	if (b) {
		free(b->p);
		free(b);
	}
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fusefs *fs = fs_of(req);
	count(req, REQ_FSYNC, "fsyncdir", ino);
	/* SQLite syncs the directory after creating a journal or WAL; make the
	 * entries of every database directory that changed durable. */
	size_t n = store_count(fs->store);
	for (size_t i = 0; i < n; i++) {
		int rc = db_sync_dir(store_by_id(fs->store, (uint32_t)i));
		if (rc) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fusefs *fs = fs_of(req);
	struct statvfs sv;
	count(req, REQ_STATFS, "statfs", ino);
	if (statvfs(fs->store->node.data_dir, &sv) != 0) {
		fuse_reply_err(req, errno);
		return;
	}
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* No lock handler is registered, so the kernel arbitrates locks. Keep
	 * writes synchronous (no writeback cache): each commit is seen when
	 * the client makes it. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* Every change on this node passes through the kernel, which keeps its
	 * page cache coherent; without this, each getattr that shows a new
	 * mtime (after every commit) would drop the cached pages of the file
	 * and the next read of page 1 would be a round trip. */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_POSIX_LOCKS;
	conn->want &= ~(unsigned)FUSE_CAP_FLOCK_LOCKS;
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	/* No .flush: with none, the kernel stops sending FLUSH after the first
	 * ENOSYS (one round trip less per close; nothing to do at close). */
	.release = op_release,
	.fsync = op_fsync,
	.unlink = op_unlink,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.link = op_link,
	.symlink = op_symlink,
	.mknod = op_mknod,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
};

/* ---- Hooks for db.c (replica apply) ------------------------------------- */

static void hook_inval_inode(void *ctx, uint32_t db_id, int kind, off_t off, off_t len)
{
	struct fusefs *fs = ctx;
	fuse_ino_t ino = INO_BASE + (fuse_ino_t)db_id * INO_STRIDE + (fuse_ino_t)kind;
	/* -ENOENT: the kernel holds nothing of that inode; nothing to drop. */
	int rc = fuse_lowlevel_notify_inval_inode(fs->se, ino, off, len);
	if (rc != 0 && rc != -ENOENT)
		LOG_WARN("fuse", "msg=\"cannot invalidate kernel cache\" ino=%" PRIu64 " err=\"%s\"", (uint64_t)ino,
			 strerror(-rc));
}

static void hook_inval_entry(void *ctx, const char *name)
{
	struct fusefs *fs = ctx;
	int rc = fuse_lowlevel_notify_inval_entry(fs->se, FUSE_ROOT_ID, name, strlen(name));
	if (rc != 0 && rc != -ENOENT)
		LOG_WARN("fuse", "msg=\"cannot invalidate kernel name cache\" name=\"%s\" err=\"%s\"", name,
			 strerror(-rc));
}

/* A daemon killed with SIGKILL leaves its mount answering ENOTCONN until
 * it is unmounted; clear that before mounting again. */
static void clear_stale_mount(const char *mountpoint)
{
	/* stat() may be answered from the kernel's attribute cache even on a
	 * dead connection; opening the directory always reaches the daemon. */
	DIR *d = opendir(mountpoint);
	if (d != NULL) {
		closedir(d);
		return;
	}
	if (errno != ENOTCONN)
		return;
	LOG_WARN("fuse", "msg=\"clearing a stale mount left by a crash\" dir=%s", mountpoint);
	if (umount2(mountpoint, MNT_DETACH) != 0)
		LOG_WARN("fuse", "msg=\"cannot unmount stale mount\" dir=%s err=\"%s\"", mountpoint, strerror(errno));
}

/* True if a FUSE file system (type "fuse" or "fuse.*": another litefs
 * node, or any FUSE daemon) is mounted on path (absolute, resolved) in
 * this process's mount namespace. Mount points in /proc/self/mountinfo
 * (field 5) escape space, tab, newline and backslash as \ooo; the type
 * is the first field after the " - " separator. */
static bool fuse_mounted_on(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return false;
	char line[8192];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *field = line;
		for (int i = 0; i < 4 && field != NULL; i++)
			if ((field = strchr(field, ' ')) != NULL)
				field++;
		const char *sep = field ? strstr(field, " - ") : NULL;
		if (sep == NULL)
			continue;
		char mp[4096];
		size_t n = 0;
		for (const char *p = field; *p && *p != ' ' && n + 1 < sizeof(mp); p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
			    p[3] <= '7') {
				mp[n++] = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
				p += 3;
			} else {
				mp[n++] = *p;
			}
		}
		mp[n] = '\0';
		const char *type = sep + 3;
		found = strcmp(mp, path) == 0 && strncmp(type, "fuse", 4) == 0 && (type[4] == ' ' || type[4] == '.');
	}
	fclose(f);
	return found;
}

/* Refuses a fuse.dir that cannot take the mount: a file that is not a
 * directory (the mount would succeed and then answer every request with
 * an I/O error), or a directory where a live FUSE file system is mounted
 * already (mounting over it would hide a running node's databases from
 * its application). A stale mount of a dead node was cleared before.
 * Other file systems are mounted over as before: a container volume
 * declared on fuse.dir is a mount point, and LiteFS covers it. */
static int check_mountpoint(const char *mountpoint)
{
	struct stat st;
	if (stat(mountpoint, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode)) {
		LOG_ERROR("fuse", "msg=\"fuse.dir is not a directory\" dir=%s", mountpoint);
		return ERR_FUSE_DIR_NOT_DIR;
	}
	char real[PATH_MAX];
	if (realpath(mountpoint, real) != NULL && fuse_mounted_on(real)) {
		LOG_ERROR("fuse", "msg=\"a file system is already mounted on fuse.dir (another litefs node?); "
				  "refusing to mount over it\" dir=%s", mountpoint);
		return ERR_FUSE_DIR_BUSY;
	}
	return 0;
}

int fusefs_mount(struct store *st, const struct fusefs_opts *opts, struct fusefs **out)
{
	struct fusefs *fs = calloc(1, sizeof(*fs));
	int rc = 0;

	if (fs == NULL)
		return ERR_NOMEM;
	fs->store = st;
	pthread_mutex_init(&fs->pass_mu, NULL);
	fs->attr_timeout = opts->attr_timeout;
	fs->debug = opts->debug;
	char abs[4096];
	/* Absolute: the replica's apply opens files through the mount. */
	if (opts->mountpoint[0] != '/' && getcwd(abs, sizeof(abs) - 1) != NULL &&
	    strlen(abs) + strlen(opts->mountpoint) + 2 < sizeof(abs)) {
		strcat(abs, "/");
		strcat(abs, opts->mountpoint);
	} else {
		snprintf(abs, sizeof(abs), "%s", opts->mountpoint);
	}
	if ((fs->mountpoint = strdup(abs)) == NULL) {
		free(fs);
		return ERR_NOMEM;
	}
	clear_stale_mount(opts->mountpoint);
	if ((rc = check_mountpoint(opts->mountpoint)) != 0)
		goto err;
	if (mkdir(opts->mountpoint, 0755) != 0 && errno != EEXIST) {
		rc = -errno;
		LOG_ERROR("fuse", "msg=\"cannot create mount directory\" dir=%s err=\"%s\"", opts->mountpoint,
			  strerror(errno));
		goto err;
	}

	char *argv[8];
	int argc = 0;
	argv[argc++] = "litefs";
	argv[argc++] = "-o";
	/* default_permissions only when other users may enter: it makes the
	 * kernel check modes against cached attributes on every path walk,
	 * and a journal's create and unlink drop the root's, so each
	 * DELETE-mode commit cost two GETATTRs of the root. Without
	 * allow_other the kernel lets only the mounting user in at all, and
	 * the node stores no modes (setattr accepts and ignores them). */
	argv[argc++] = opts->allow_other ? "fsname=litefs,subtype=litefs,default_permissions,allow_other"
					 : "fsname=litefs,subtype=litefs";
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	fs->se = fuse_session_new(&args, &ops, sizeof(ops), fs);
	fuse_opt_free_args(&args);
	if (fs->se == NULL) {
		rc = -EIO;
		goto err;
	}
	if (fuse_session_mount(fs->se, opts->mountpoint) != 0) {
		LOG_ERROR("fuse", "msg=\"mount failed\" dir=%s", opts->mountpoint);
		rc = -EIO;
		goto err;
	}
	fs->mounted = true;
	if ((rc = fusepass_install(fs->se, opts->passthrough, opts->uring, SIGUSR2, &fs->pass)) != 0)
		goto err;
	st->node.hooks.ctx = fs;
	st->node.hooks.mountpoint = fs->mountpoint;
	st->node.hooks.inval_inode = hook_inval_inode;
	st->node.hooks.inval_entry = hook_inval_entry;
	LOG_INFO("fuse", "msg=mounted dir=%s", opts->mountpoint);
	*out = fs;
	return 0;
err:
	fusefs_unmount(fs);
	return rc;
}

/*
 * The request loop. Workers block in read() of /dev/fuse, where the kernel
 * wakes exactly one waiter per request (an exclusive wait). libfuse's own
 * loop does the same but can only be stopped by a signal it installs
 * itself or by the end of the connection, which a lazy unmount postpones
 * until the last client closes its files. To stop, we mark the session
 * exited and interrupt each worker with SIGUSR2 (a handler that does
 * nothing, installed without SA_RESTART, so read() returns EINTR). Only
 * once every worker is joined do we unmount: libfuse's unmount closes the
 * device, and closing a descriptor that another thread is reading (or is
 * about to read or write a reply to) lets a file opened meanwhile by
 * another thread take its number, so a late reply would be written into
 * that file (ThreadSanitizer reported the close racing the workers' read).
 * Destroying the session ends the connection for any client still holding
 * a file. The thread in fusefs_run, which joins the workers, is the only
 * one that signals them: a joined thread's ID must not be used again.
 *
 * (An earlier version waited in per-worker epoll sets; a blocking read
 * saves a wake-up and a syscall per request.)
 */
#define FUSE_WORKERS 8
#define WAKE_SIGNAL SIGUSR2 /* also the ring threads' (fusepass_install above) */

static void wake_handler(int sig)
{
	(void)sig;
}

static void *worker_main(void *arg)
{
	struct fusefs *fs = arg;
	struct fuse_buf buf;
	sigset_t wake;

	sigemptyset(&wake);
	sigaddset(&wake, WAKE_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
	memset(&buf, 0, sizeof(buf));
	while (!atomic_load(&fs->stopping) && !fuse_session_exited(fs->se)) {
		int res = fuse_session_receive_buf(fs->se, &buf);
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (res <= 0)
			break; /* 0: the file system was unmounted */
		fuse_session_process_buf(fs->se, &buf);
	}
	free(buf.mem);
	return NULL;
}

int fusefs_run(struct fusefs *fs)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wake_handler; /* no SA_RESTART: read() must return EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(WAKE_SIGNAL, &sa, NULL);

	for (fs->n_workers = 0; fs->n_workers < FUSE_WORKERS && !atomic_load(&fs->stopping); fs->n_workers++)
		if (pthread_create(&fs->workers[fs->n_workers], NULL, worker_main, fs) != 0)
			break;
	int n = fs->n_workers;
	if (n == 0)
		return -EAGAIN;
	for (int i = 0; i < n; i++) {
		/* A worker that was between its check of the flag and read() when
		 * the signal came blocks again: keep interrupting until it ends. */
		for (;;) {
			struct timespec ts = clock_deadline(50);
			if (pthread_timedjoin_np(fs->workers[i], NULL, &ts) == 0)
				break;
			if (atomic_load(&fs->stopping))
				pthread_kill(fs->workers[i], WAKE_SIGNAL);
		}
	}
	/* No worker is left to use the device: it may be closed now, once the
	 * ring threads (if any) are joined too. */
	if (atomic_load(&fs->stopping))
		fusepass_stop_rings(fs->pass);
	if (atomic_load(&fs->stopping) && fs->mounted) {
		fuse_session_unmount(fs->se);
		fs->mounted = false;
		LOG_INFO("fuse", "msg=unmounted dir=%s", fs->mountpoint);
	}
	return 0;
}

void fusefs_stop(struct fusefs *fs)
{
	if (fs == NULL || fs->se == NULL)
		return;
	atomic_store(&fs->stopping, true);
	fuse_session_exit(fs->se);
	/* fusefs_run interrupts the workers, the only thread that may signal
	 * them (a joined thread's ID is gone), and unmounts once they are
	 * joined (see the comment above worker_main). */
}

void fusefs_unmount(struct fusefs *fs)
{
	if (fs == NULL)
		return;
	if (fs->store && fs->store->node.hooks.ctx == fs)
		memset(&fs->store->node.hooks, 0, sizeof(fs->store->node.hooks));
	fusepass_stop_rings(fs->pass);
	if (fs->se) {
		if (fs->mounted)
			fuse_session_unmount(fs->se);
		fuse_session_destroy(fs->se);
	}
	fusepass_free(fs->pass);
	free(fs->passrefs);
	pthread_mutex_destroy(&fs->pass_mu);
	free(fs->mountpoint);
	free(fs);
}

void fusefs_get_stats(struct fusefs *fs, struct fusefs_stats *out)
{
	unsigned long *o = (unsigned long *)out;
	for (int i = 0; i < 14; i++)
		o[i] = atomic_load(&fs->stats[i]);
	out->uring = fusepass_uring_served(fs->pass);
}

const char *fusefs_mountpoint(const struct fusefs *fs)
{
	return fs->mountpoint;
}
