/*
 * http.c — the node's HTTP API on http.addr (base/httpd.h):
 *
 *   GET  /info              node and database summary (JSON)
 *   GET  /metrics           Prometheus text format
 *   POST /import?name=NAME  body: a SQLite file; becomes ONE transaction
 *   GET  /export?name=NAME  a consistent copy of the database as a SQLite file
 *   GET  /events            newline-delimited JSON: init, tx, primaryChange
 *   POST /stream            replication to a replica (replserver.c; protocol: stream.c)
 *   POST /stream/ack        a replica's durable positions (synchronous replication)
 *   POST /writelock/...     the write lock (writelock.c, which answers them)
 *
 * The reference for clients is docs/http.md; this comment says why the code
 * is shaped the way it is.
 *
 * THREADING
 *
 * The server is base/httpd.c (docs/http.md "The server"): a request holds
 * a worker thread from its complete head to the end of its reply. Import
 * and export handlers block for a long time by nature: a busy timeout while
 * another client holds a lock (up to HTTP_BUSY_TIMEOUT_MS), PRAGMA
 * integrity_check over a file of gigabytes, a page-by-page backup through
 * the FUSE mount. So handlers may block, and a slow request only ever
 * delays itself; the workers are bounded (HTTP_CONNECTION_LIMIT, of which
 * HTTP_RESERVED_WORKERS only for peers of the cluster: is_trusted()).
 *
 * The handlers never do SQLite I/O on the mount themselves: that runs in a
 * child process (sqlchild.c, `litefs __sqlite`). In WAL mode SQLite maps
 * -shm, and a page fault on that mapping in this process would hold its
 * mmap_lock while waiting for a FUSE read that a worker of this process,
 * blocked in malloc on the same lock, must serve: a deadlock that the first
 * version of export hit under concurrent writes. The handlers only take
 * db.mu (and, through store_*, store.mu) for short copies of a database's
 * fields, in the documented order store.mu before db.mu.
 *
 * IMPORT (POST /import?name=NAME)
 *
 *   1. First call of the access handler (headers only): check the method,
 *      the name (dbname_valid) and Content-Length (<= 64 GiB, else
 *      413), and create a temp file <data.dir>/tmp/http-import-XXXXXX. A
 *      refusal is sent at once when the client waits for "100 Continue"
 *      (it then never sends the body) or the body is large; a small body
 *      is drained first, because replying early makes the server close a socket
 *      with unread bytes, which the kernel turns into a reset that can
 *      reach the client before the reply (import_begin).
 *   2. Body chunks are appended to the temp file as they arrive: the body
 *      is never held in memory. A chunked body that grows past the cap
 *      aborts the connection (there is no way to reply mid-body). A thread
 *      reads the temp file behind the writer and encodes the record
 *      (importrec.c: page checksums, LZ4, the record written into a spool
 *      file). With a Content-Length, a second thread validates the file
 *      as it arrives: PRAGMA quick_check (or integrity_check with
 *      check=full) through libsqlite3 on the temp copy, opened read-only
 *      with immutable=1 so that no journal or WAL next to it is ever
 *      consulted, and read through large windows (chkvfs.c), not mapped,
 *      each read waiting until its bytes are in the file (upfeed.h). A
 *      body that ends short stops both (import_req_free).
 *   3. End of body: check the SQLite header of the copy ("SQLite format
 *      3\0", a valid page size, file format versions 1 or 2, a size that is
 *      a whole number of pages); start the validation now if it could not
 *      start with the body (a chunked body, or both encoders busy).
 *   4. Meanwhile apply_import (apply.c): readers and writers of the live
 *      database are excluded with SQLite's locks, conflicts are checked
 *      (import_conflicts), and the record is completed: its header and page
 *      1 written into the spool (or, if the spool could not be made, the
 *      copy encoded into the chain), spool and copy synced. Then the
 *      validation is waited for (import_validated): a refusal deletes the
 *      spool and nothing changed. Otherwise the spool becomes a segment of
 *      the chain (a rename) and the copy is renamed into place (nobody has
 *      the database open) or copied into the open file. No SQLite
 *      connection on the mount, no page through FUSE.
 *
 *   Journal modes. An existing database keeps its journal mode and a new
 *   one is created in rollback mode: bytes 18/19 of the header are set
 *   (apply.c import_header, as SQLite's backup API would, with the change
 *   counter and schema cookie moved on). The temp copy's bytes 18/19 are
 *   set to 1, and the check reads them so (chkvfs.c) even when it read
 *   page 1 before the rewrite, which lets immutable=1 open WAL-mode files.
 *   Page sizes must match a non-empty destination (an LTX chain has one
 *   page size): 409 before any write.
 *
 *   The reply carries the import's position: writers are excluded while it
 *   is made, so no other commit lands in between.
 *
 * EXPORT (GET /export?name=NAME)
 *
 *   A consistent copy needs a read transaction whose snapshot is known to
 *   match db_pos(). The child (`litefs __sqlite export`) opens two
 *   connections on the mounted path and reports READY; this process reads
 *   db_pos() while the child holds them, then tells it to go on:
 *     A (read-write): BEGIN IMMEDIATE — no other writer can commit now;
 *     B (read-only):  BEGIN; SELECT ... — B's snapshot is the latest commit;
 *     read db_pos()  — that commit's position (the mount advances the
 *                      position before the committing client unlocks);
 *     A: ROLLBACK    — writers may proceed; B keeps its snapshot.
 *   Then the backup API copies B's snapshot into a temp file: backup_step
 *   reuses a read transaction that is already open on the source connection
 *   (it only closes one it opened itself), so the copy is exactly the state
 *   named by Litefs-Pos, however many commits happen meanwhile in WAL mode.
 *   In rollback modes B's SHARED lock holds writers off until the copy is
 *   done, as any SQLite reader does. If A cannot start (neither busy nor
 *   interrupted, e.g. a read-only database), the position is still exact in
 *   rollback modes (B's lock) and is omitted in WAL mode.
 *   The temp file is opened, unlinked, and streamed with
 *   httpd_response_fd (sendfile), so it vanishes with the
 *   response whatever happens to the connection.
 *   In a rollback mode with A held, no copy is made: the db file itself
 *   (no rollback pages in it, db_open_clean_file) is the pinned state, and
 *   it is sent with sendfile while the helper keeps A and B; before the
 *   last byte the helper is told SKIP and must answer OK, which proves it
 *   held its locks throughout (one killed meanwhile cuts the reply, so a
 *   client never gets a whole body that writers may have changed).
 *
 * SHUTDOWN (http_stop). New requests get 503 and new connections are
 * refused; requests in flight get HTTP_STOP_GRACE_MS to finish, so that an
 * import that commits also delivers its reply (closing the connection
 * after the commit would report a failure for an applied import). Then
 * imports still waiting for readers give up (abort_imports: nothing
 * applied), the helper processes still running (exports) are sent SIGTERM,
 * and the server is stopped. Helpers are tracked by
 * pidfd: a PID could be reused by the time the stop signals it, a pidfd
 * cannot.
 *
 * TEMP FILES live in <data.dir>/tmp (same file system as the data, which is
 * where the space is provisioned). Leftovers of a crash carry our prefixes
 * and are removed by http_start().
 *
 * STREAMS (/stream, /events) are callback responses. Their reader callback
 * runs in the connection's own thread, so it may block: it waits on the
 * node's change counter (node_wait_change) at most until the next
 * heartbeat is due, and checks between waits whether the peer hung up
 * (POLLRDHUP on the socket) and whether http_stop() began — which also
 * bumps the counter to wake them — so a stream ends with its end frame
 * within the grace period. A frame is queued whole before the cursor of
 * its database moves on (struct outq): its header in memory, its LTX bytes
 * read from the segment (or the snapshot spool) as the socket takes them.
 * The shared secret guards /stream only; it is compared in constant time.
 *
 * ERRORS are JSON {"error": "..."} with a status: 400 bad input, 404 unknown
 * path or database, 401 wrong secret, 405 wrong method (with Allow), 409
 * conflicts with the live database (or another cluster, or an import on a
 * replica), 413 too large, 503 busy, shutting down or not the primary, 507
 * no space,
 * 500 otherwise. Each decision is logged once (mod=http).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "proto/cluster.h"
#include "node/apply.h"
#include "node/db.h"
#include "base/err.h"
#include "proto/dbname.h"
#include "node/fusefs.h"
#include "node/http.h"
#include "node/importchk.h"
#include "node/importrec.h"
#include "node/upfeed.h"
#include "node/proxystat.h"
#include "node/lease.h"
#include "node/replserver.h"
#include "node/syncrepl.h"
#include "base/log.h"
#include "base/httpd.h"
#include "base/outq.h"
#include "base/sys.h"
#include "ltx/ltx.h"
#include "node/sqlchild.h"
#include "node/store.h"
#include "node/writelock.h"
#include "proto/stream.h"

#define HTTP_MAX_IMPORT_BYTES (64ull << 30)
#define HTTP_DRAIN_MAX (1u << 20)
#define HTTP_IMPORT_KICK (16ull << 20)
/* Bytes moved per splice of an import body (the pipe's size). */
#define HTTP_IMPORT_PIPE (1 << 20)
#define HTTP_BUSY_TIMEOUT_MS 30000
#define HTTP_CONNECTION_LIMIT 64u
/* Of the HTTP_CONNECTION_LIMIT workers, these serve only peers of the
 * cluster (is_trusted) once the others are busy (docs/http.md). */
#define HTTP_RESERVED_WORKERS 16u
#define HTTP_TMP_SUBDIR "tmp"
#define HTTP_TMP_IMPORT_PREFIX "http-import-"
#define HTTP_TMP_EXPORT_PREFIX "http-export-"
#define HTTP_STOP_GRACE_MS 10000
#define HTTP_TMP_SNAPSHOT_PREFIX "http-snapshot-"

struct http_server {
	struct store *st;       /* borrowed */
	struct fusefs *fs;      /* borrowed */
	struct cluster *cluster; /* borrowed; NULL: no cluster ID */
	struct lease *lease;     /* borrowed; NULL: static lease */
	struct writelock *writelock; /* borrowed; NULL: none */
	char *secret;           /* owned; NULL: no authentication */
	char *hostname;         /* owned: this node's name for other nodes */
	bool candidate;
	struct httpd *daemon;
	char *tmp_dir;          /* owned: <data.dir>/tmp */
	atomic_bool stopping;   /* set by http_stop(); interrupts SQLite work */
	atomic_int n_active;    /* requests between their first call and completion */
	struct replserver repl; /* POST /stream (replserver.h); points into this struct */

	/* The helper processes (sqlchild.c) of requests in flight, as pidfds,
	 * so that http_stop() can end them without racing with PID reuse.
	 * -1 = free slot. */
	pthread_mutex_t children_mu;
	int child_pidfds[HTTP_CONNECTION_LIMIT];

	/* Counters for /metrics (since start). */
	atomic_ulong n_import_ok, n_import_err, n_export_ok, n_export_err;

	/* Set by http_stop() once the grace period is over: imports still
	 * waiting for readers give up (nothing applied). */
	atomic_bool abort_imports;
};

/* What *con_cls points to between the calls of the access handler: the
 * first member of each per-request struct says which it is. */
enum req_kind { REQ_IMPORT = 1, REQ_STREAM = REPLSERVER_REQ };

/* Per-request state of POST /import, from the first call of the access
 * handler to the completion callback, which frees it. */
struct import_req {
	int kind;               /* REQ_IMPORT */
	char name[256];
	int fd;                 /* temp file, -1 once closed */
	char *tmp_path;         /* owned; unlinked on completion */
	uint64_t n_bytes;       /* body bytes written so far */
	struct sys_wb wb;       /* writeback started as the body arrives */
	int64_t start_ms, body_ms; /* head received; body complete (clock_mono_ms) */
	unsigned fail_status;   /* non-zero: discard the body, reply this */
	bool refused_early;     /* failed before the body: drain at most HTTP_DRAIN_MAX */
	bool full_check;        /* check=full: PRAGMA integrity_check, not quick_check */
	char fail_msg[HTTPD_MSG_LEN];
	/* The record, encoded while the body arrives (importrec.h) into a
	 * spool beside the upload; NULL when it could not start or gave up
	 * (apply_import then encodes from the upload). */
	struct importrec *rec;
	int rec_fd;
	char *rec_path;         /* owned; unlinked unless the chain took it */
	bool rec_taken;
	int64_t rec_lag_ms, rec_cpu_ms; /* the encoder: behind the body's end; its CPU */
	int64_t check_ms;       /* how long quick_check ran */
	/* How far the temp file goes, for the encoder and the check. */
	struct upfeed feed;
	/* The check: started with the body when it can (a known
	 * Content-Length and an encoder running: the encoders' cap bounds
	 * these threads too), so that it follows the upload instead of
	 * starting after it; else at the body's end. */
	struct importchk check;
	bool check_started;     /* joined by import_req_free */
	bool check_followed;    /* it started with the body */
};

/* How long /info and /metrics wait for one database's mutex before they
 * report it busy: a database stuck behind its holder (see lockwatch.h)
 * must not hang the endpoints that an operator uses to find it. */
#define HTTP_DB_LOCK_WAIT_MS 250

/* ---- Responses ---------------------------------------------------------- */

static enum httpd_result respond_method_not_allowed(struct httpd_conn *conn, const char *method,
						   const char *url, const char *allow)
{
	char msg[HTTPD_MSG_LEN];
	snprintf(msg, sizeof(msg), "method %.40s not allowed on %s (allowed: %s)", method, url, allow);
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "error", httpd_json_str(msg));
	return httpd_respond_json(conn, HTTP_METHOD_NOT_ALLOWED, o, HTTP_HEADER_ALLOW, allow);
}

/* ---- Query parameters --------------------------------------------------- */

/* Copies the "name" query parameter into out after validating it. Returns
 * 0, or an HTTP status with msg filled. */
static unsigned get_db_name(struct httpd_conn *conn, char *out, size_t out_len, char *msg, size_t msg_len)
{
	const char *v = NULL;
	size_t n = 0;

	if (httpd_arg(conn, "name", &v, &n) != HTTPD_YES) {
		snprintf(msg, msg_len, "missing query parameter: name");
		return HTTP_BAD_REQUEST;
	}
	if (v == NULL)
		n = 0;
	/* A decoded %00 would silently truncate the name: refuse it. */
	if (n == 0 || memchr(v, '\0', n) != NULL || n >= out_len) {
		snprintf(msg, msg_len, "invalid database name: must be 1 to 200 bytes without NUL");
		return HTTP_BAD_REQUEST;
	}
	memcpy(out, v, n);
	out[n] = '\0';
	if (!dbname_valid(out)) {
		snprintf(msg, msg_len,
			 "invalid database name: 1 to 200 bytes of UTF-8, no '/', no control characters, no leading '.', "
			 "not ending in -journal, -wal, -shm or -pos");
		return HTTP_BAD_REQUEST;
	}
	return 0;
}

/* ---- Paths -------------------------------------------------------------- */

/* <mountpoint>/<name>, never parsed by SQLite as a URI. Caller frees. */
static char *mount_path(struct http_server *srv, const char *name)
{
	const char *mnt = fusefs_mountpoint(srv->fs);
	char *p = NULL;
	if (asprintf(&p, "%s%s/%s", mnt[0] == '/' ? "" : "./", mnt, name) < 0)
		return NULL;
	return p;
}

/* Creates a temp file <tmp_dir>/<prefix>XXXXXX. Returns the fd (caller
 * closes) and *path (caller frees, and unlinks), or -errno. */
static int make_temp(struct http_server *srv, const char *prefix, char **path)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%sXXXXXX", srv->tmp_dir, prefix) < 0)
		return -ENOMEM;
	int fd = mkostemp(p, O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		free(p);
		return rc;
	}
	*path = p;
	return fd;
}

/* Removes leftovers of a previous process (a crash mid-request). */
static void clean_tmp_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, HTTP_TMP_IMPORT_PREFIX, strlen(HTTP_TMP_IMPORT_PREFIX)) != 0 &&
		    strncmp(e->d_name, HTTP_TMP_EXPORT_PREFIX, strlen(HTTP_TMP_EXPORT_PREFIX)) != 0 &&
		    strncmp(e->d_name, HTTP_TMP_SNAPSHOT_PREFIX, strlen(HTTP_TMP_SNAPSHOT_PREFIX)) != 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	if (n > 0)
		LOG_INFO("http", "msg=\"removed leftover temp files\" dir=\"%s\" n=%d", dir, n);
}

/* ---- SQLite helpers ----------------------------------------------------- */

/* The HTTP status for a SQLite failure on the live database. */
static unsigned sqlite_status(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_INTERRUPT:
		return HTTP_SERVICE_UNAVAILABLE;
	case SQLITE_READONLY:
		return HTTP_CONFLICT;
	case SQLITE_FULL:
		return HTTP_INSUFFICIENT_STORAGE;
	case SQLITE_CANTOPEN:
		return HTTP_NOT_FOUND;
	default:
		return HTTP_INTERNAL_SERVER_ERROR;
	}
}

/* ---- Helper processes --------------------------------------------------- */

/* Registers a started helper; returns its slot (for child_untrack) or -1
 * when it cannot be tracked (it then simply runs to its end). A helper
 * started after http_stop() began is ended at once. */
static int child_track(struct http_server *srv, pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -1;
	int slot = -1;
	pthread_mutex_lock(&srv->children_mu);
	for (int i = 0; i < (int)HTTP_CONNECTION_LIMIT; i++) {
		if (srv->child_pidfds[i] < 0) {
			srv->child_pidfds[i] = fd;
			slot = i;
			break;
		}
	}
	if (slot >= 0 && atomic_load(&srv->stopping))
		syscall(SYS_pidfd_send_signal, fd, SIGTERM, NULL, 0);
	pthread_mutex_unlock(&srv->children_mu);
	if (slot < 0)
		close(fd);
	return slot;
}

static void child_untrack(struct http_server *srv, int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&srv->children_mu);
	close(srv->child_pidfds[slot]);
	srv->child_pidfds[slot] = -1;
	pthread_mutex_unlock(&srv->children_mu);
}

/* Ends every helper: a helper killed inside a write transaction is a client
 * killed mid-transaction, which the mount turns into no transaction (a hot
 * journal rolled back, or WAL frames without a commit frame). */
static void children_terminate(struct http_server *srv)
{
	pthread_mutex_lock(&srv->children_mu);
	for (int i = 0; i < (int)HTTP_CONNECTION_LIMIT; i++)
		if (srv->child_pidfds[i] >= 0)
			syscall(SYS_pidfd_send_signal, srv->child_pidfds[i], SIGTERM, NULL, 0);
	pthread_mutex_unlock(&srv->children_mu);
}

/* ---- GET /info ---------------------------------------------------------- */

/* The primary's hostname as this node knows it (its own on the primary). */
static void primary_hostname(struct http_server *srv, bool is_primary, char *buf, size_t len)
{
	if (is_primary)
		snprintf(buf, len, "%s", srv->hostname);
	else
		node_primary_host(&srv->st->node, buf, len);
}

static enum httpd_result handle_info(struct http_server *srv, struct httpd_conn *conn)
{
	char buf[64];
	json_t *o = json_object();
	json_t *arr = json_array();
	if (!o || !arr) {
		json_decref(o);
		json_decref(arr);
		return HTTPD_NO;
	}
	snprintf(buf, sizeof(buf), "%016" PRIx64, srv->st->node.node_id);
	json_object_set_new(o, "nodeID", json_string(buf));
	bool is_primary = node_is_primary(&srv->st->node);
	char host[256], id[CLUSTER_ID_LEN + 1] = "";
	primary_hostname(srv, is_primary, host, sizeof(host));
	if (srv->cluster)
		cluster_get(srv->cluster, id);
	json_object_set_new(o, "role", json_string(is_primary ? "primary" : "replica"));
	json_object_set_new(o, "primary", json_boolean(is_primary));
	json_object_set_new(o, "candidate", json_boolean(srv->candidate));
	json_object_set_new(o, "hostname", httpd_json_str(srv->hostname));
	json_object_set_new(o, "primaryHostname", httpd_json_str(host));
	if (srv->st->node.proxy_url[0]) {
		char purl[256];
		node_primary_proxy(&srv->st->node, purl, sizeof(purl));
		json_object_set_new(o, "proxyURL", httpd_json_str(srv->st->node.proxy_url));
		json_object_set_new(o, "primaryProxyURL", httpd_json_str(purl));
	}
	json_object_set_new(o, "lagMs", json_integer(node_lag_ms(&srv->st->node)));
	json_object_set_new(o, "clusterID", json_string(id));
	json_object_set_new(o, "mountDir", httpd_json_str(fusefs_mountpoint(srv->fs)));
	json_object_set_new(o, "dataDir", httpd_json_str(srv->st->node.data_dir));
	lease_info_json(srv->lease, o);

	size_t n = store_count(srv->st);
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(srv->st, (uint32_t)i);
		struct db_stats v;
		if (!db)
			continue;
		if (!db_stats(db, HTTP_DB_LOCK_WAIT_MS, &v)) {
			/* Stuck behind its mutex's holder: name it and who holds
			 * it rather than hang (the fields below need the mutex). */
			json_t *d = json_object();
			if (!d)
				continue;
			json_object_set_new(d, "name", httpd_json_str(db->name));
			json_object_set_new(d, "busy", json_true());
			json_object_set_new(d, "lockHolder", json_string(v.lock.op ? v.lock.op : ""));
			json_object_set_new(d, "lockHeldMs", json_integer(v.lock.held_ms));
			json_object_set_new(d, "lockWaiters", json_integer(v.lock.n_waiters));
			json_array_append_new(arr, d);
			continue;
		}
		if (!v.exists)
			continue;
		json_t *d = json_object();
		if (!d)
			continue;
		json_object_set_new(d, "name", httpd_json_str(db->name));
		json_object_set_new(d, "busy", json_false());
		snprintf(buf, sizeof(buf), "%016" PRIx64, v.pos.txid);
		json_object_set_new(d, "txid", json_string(buf));
		snprintf(buf, sizeof(buf), "%016" PRIx64, v.pos.checksum);
		json_object_set_new(d, "checksum", json_string(buf));
		json_object_set_new(d, "pageSize", json_integer(v.page_size));
		json_object_set_new(d, "pages", json_integer(v.n_pages));
		json_object_set_new(d, "walMode", json_boolean(v.wal_mode));
		/* The backup service holds every transaction up to here. */
		if (v.backup_hwm != UINT64_MAX) {
			snprintf(buf, sizeof(buf), "%016" PRIx64, v.backup_hwm);
			json_object_set_new(d, "backupHWM", json_string(buf));
		} else {
			json_object_set_new(d, "backupHWM", json_null());
		}
		if (v.pos.txid != 0) {
			ltx_format_time(buf, sizeof(buf), v.ts_ms);
			json_object_set_new(d, "timestamp", json_string(buf));
		} else {
			json_object_set_new(d, "timestamp", json_null());
		}
		json_array_append_new(arr, d);
	}
	json_object_set_new(o, "databases", arr);
	return httpd_respond_json(conn, HTTP_OK, o, NULL, NULL);
}

/* ---- GET /metrics ------------------------------------------------------- */

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void put_label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void put_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

enum db_metric { M_TXID, M_COMMITS, M_SIZE, M_PAGES, M_LTX_COUNT, M_LTX_BYTES, M_REFUSED, M_BACKUP_HWM, M_COUNT };

static const struct {
	const char *name, *type, *help;
} db_metrics[M_COUNT] = {
	[M_TXID] = { "litefs_db_txid", "gauge", "Current transaction ID." },
	[M_COMMITS] = { "litefs_db_commit_count", "counter", "Number of database commits since the node started." },
	[M_SIZE] = { "litefs_db_size_bytes", "gauge", "Logical size of the database in bytes (page size times pages)." },
	[M_PAGES] = { "litefs_db_page_count", "gauge", "Logical size of the database in pages." },
	[M_LTX_COUNT] = { "litefs_db_ltx_count", "gauge", "Number of LTX files (transactions) kept on disk." },
	[M_LTX_BYTES] = { "litefs_db_ltx_bytes", "gauge", "Number of bytes used by LTX data on disk." },
	[M_REFUSED] = { "litefs_db_write_refused", "gauge",
			"1 if writes are refused because background verification failed." },
	[M_BACKUP_HWM] = { "litefs_db_backup_hwm", "gauge",
			   "Highest TXID the backup service holds durably (0 without a backup service)." },
};

static uint64_t db_metric_value(const struct db_stats *v, enum db_metric m)
{
	switch (m) {
	case M_TXID: return v->pos.txid;
	case M_COMMITS: return v->n_commits;
	case M_SIZE: return (uint64_t)v->page_size * v->n_pages;
	case M_PAGES: return v->n_pages;
	case M_LTX_COUNT: return v->ltx_count;
	case M_LTX_BYTES: return v->ltx_bytes;
	case M_REFUSED: return v->write_refused ? 1 : 0;
	case M_BACKUP_HWM: return v->backup_hwm == UINT64_MAX ? 0 : v->backup_hwm;
	default: return 0;
	}
}

/* Synchronous replication (syncrepl.h); every family is present (zeros
 * when lease.sync-replicas is 0) so dashboards need no special case. */
static void put_sync_metrics(FILE *f, struct syncrepl *sync)
{
	struct syncrepl_stats v;
	syncrepl_stats(sync, &v);
	const struct {
		const char *name, *type, *help;
		double value;
	} m[] = {
		{ "litefs_sync_replicas", "gauge", "Replicas a commit waits for (lease.sync-replicas; 0: asynchronous).",
		  v.replicas },
		{ "litefs_sync_degraded", "gauge",
		  "1 while synchronous replication is degraded to asynchronous after a timeout.", v.degraded },
		{ "litefs_sync_sessions", "gauge", "Replica streams open on this primary.", v.sessions },
		{ "litefs_sync_acks_total", "counter", "Acknowledgements (database positions) received from replicas.",
		  (double)v.acks },
		{ "litefs_sync_commit_waits_total", "counter", "Commits that waited for their replicas.",
		  (double)v.waits },
		{ "litefs_sync_commit_acked_total", "counter", "Commits acknowledged by enough replicas in time.",
		  (double)v.acked },
		{ "litefs_sync_commit_timeouts_total", "counter",
		  "Commits that timed out waiting for their replicas (lease.sync-timeout).", (double)v.timeouts },
		{ "litefs_sync_commit_failed_total", "counter",
		  "Timed-out commits reported failed to SQLite (lease.sync-on-timeout: fail).", (double)v.failed },
		{ "litefs_sync_commit_async_total", "counter",
		  "Commits returned without waiting while degraded (lease.sync-on-timeout: async).",
		  (double)v.async_commits },
		{ "litefs_sync_degrade_total", "counter", "Times synchronous replication degraded to asynchronous.",
		  (double)v.degrade_events },
		{ "litefs_sync_wait_seconds_total", "counter", "Time commits spent waiting for their replicas.",
		  v.wait_seconds },
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		put_family(f, m[i].name, m[i].type, m[i].help);
		fprintf(f, "%s %.17g\n", m[i].name, m[i].value);
	}
}

static enum httpd_result handle_metrics(struct http_server *srv, struct httpd_conn *conn)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return HTTPD_NO;

	size_t n = store_count(srv->st), n_live = 0, n_busy = 0;
	struct db_stats *views = calloc(n ? n : 1, sizeof(*views));
	/* Databases whose mutex stayed held: listed with their lock state
	 * only, since the other values need the mutex. */
	struct db_stats *busy = calloc(n ? n : 1, sizeof(*busy));
	if (!views || !busy) {
		free(views);
		free(busy);
		fclose(f);
		free(buf);
		return HTTPD_NO;
	}
	int64_t now_ms = clock_mono_ms();
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(srv->st, (uint32_t)i);
		if (!db)
			continue;
		if (!db_stats(db, HTTP_DB_LOCK_WAIT_MS, &views[n_live])) {
			busy[n_busy++] = views[n_live];
			continue;
		}
		if (!views[n_live].exists)
			continue;
		db_lock_peek(db, now_ms, &views[n_live].lock);
		/* Transactions oldest_txid..txid are kept, one LTX each. */
		struct db_stats *v = &views[n_live];
		v->ltx_bytes = db_ltx_bytes(db, HTTP_DB_LOCK_WAIT_MS);
		n_live++;
	}

	put_family(f, "litefs_is_primary", "gauge", "Primary status of the node.");
	fprintf(f, "litefs_is_primary %d\n", node_is_primary(&srv->st->node) ? 1 : 0);
	put_family(f, "litefs_lag_seconds", "gauge", "Lag behind the primary node, in seconds.");
	fprintf(f, "litefs_lag_seconds %.3f\n", (double)node_lag_ms(&srv->st->node) / 1000.0);
	put_family(f, "litefs_db_count", "gauge", "Number of managed databases.");
	fprintf(f, "litefs_db_count %zu\n", n_live);
	lease_metrics(srv->lease, f);
	writelock_metrics(srv->writelock, f);
	proxystat_metrics(atomic_load(&srv->st->node.proxy_on) ? &srv->st->node.proxy_stats : NULL, f);

	for (int m = 0; m < M_COUNT; m++) {
		put_family(f, db_metrics[m].name, db_metrics[m].type, db_metrics[m].help);
		for (size_t i = 0; i < n_live; i++) {
			fprintf(f, "%s{db=\"", db_metrics[m].name);
			put_label(f, views[i].db->name);
			fprintf(f, "\"} %" PRIu64 "\n", db_metric_value(&views[i], (enum db_metric)m));
		}
	}
	/* The lock watchdog (lockwatch.h, store.c): every database, busy or
	 * not, so that a stuck one shows up next to the healthy ones. */
	put_family(f, "litefs_db_busy", "gauge",
		   "1 if the database's lock stayed held while these metrics were taken (its other values are absent).");
	for (size_t i = 0; i < n_live + n_busy; i++) {
		const struct db_stats *v = i < n_live ? &views[i] : &busy[i - n_live];
		fputs("litefs_db_busy{db=\"", f);
		put_label(f, v->db->name);
		fprintf(f, "\"} %d\n", v->busy ? 1 : 0);
	}
	put_family(f, "litefs_db_lock_held_seconds", "gauge",
		   "How long the database's lock has been held by its current holder (0 when free).");
	for (size_t i = 0; i < n_live + n_busy; i++) {
		const struct db_stats *v = i < n_live ? &views[i] : &busy[i - n_live];
		fputs("litefs_db_lock_held_seconds{db=\"", f);
		put_label(f, v->db->name);
		/* No op label: a label that changes with every holder would make
		 * a new series per scrape; /info and the watchdog's log name it. */
		fprintf(f, "\"} %.3f\n", (double)v->lock.held_ms / 1000.0);
	}
	put_family(f, "litefs_db_lock_waiters", "gauge", "Number of threads waiting for the database's lock.");
	for (size_t i = 0; i < n_live + n_busy; i++) {
		const struct db_stats *v = i < n_live ? &views[i] : &busy[i - n_live];
		fputs("litefs_db_lock_waiters{db=\"", f);
		put_label(f, v->db->name);
		fprintf(f, "\"} %d\n", v->lock.n_waiters);
	}
	put_family(f, "litefs_lock_stalls_total", "counter",
		   "Number of times a database lock was seen held longer than the watchdog's bound.");
	fprintf(f, "litefs_lock_stalls_total %" PRIu64 "\n", store_lock_stalls(srv->st));
	free(views);
	free(busy);
	put_sync_metrics(f, srv->st->node.sync);

	struct fusefs_stats fst;
	fusefs_get_stats(srv->fs, &fst);
	const struct {
		const char *type;
		unsigned long v;
	} ops[] = {
		{ "lookup", fst.lookup }, { "getattr", fst.getattr }, { "setattr", fst.setattr },
		{ "open", fst.open },     { "create", fst.create },   { "read", fst.read },
		{ "write", fst.write },   { "fsync", fst.fsync },     { "flush", fst.flush },
		{ "release", fst.release }, { "unlink", fst.unlink }, { "readdir", fst.readdir },
		{ "statfs", fst.statfs }, { "other", fst.other },
	};
	put_family(f, "litefs_fuse_op_count", "counter", "Number of FUSE requests served, by operation.");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		fprintf(f, "litefs_fuse_op_count{type=\"%s\"} %lu\n", ops[i].type, ops[i].v);
	put_family(f, "litefs_fuse_uring_requests_total", "counter",
		   "FUSE requests that came through io_uring rather than /dev/fuse (fuse.uring).");
	fprintf(f, "litefs_fuse_uring_requests_total %lu\n", fst.uring);

	put_family(f, "litefs_http_import_count", "counter", "Number of POST /import requests, by result.");
	fprintf(f, "litefs_http_import_count{result=\"ok\"} %lu\n", atomic_load(&srv->n_import_ok));
	fprintf(f, "litefs_http_import_count{result=\"error\"} %lu\n", atomic_load(&srv->n_import_err));
	put_family(f, "litefs_http_export_count", "counter", "Number of GET /export requests, by result.");
	fprintf(f, "litefs_http_export_count{result=\"ok\"} %lu\n", atomic_load(&srv->n_export_ok));
	fprintf(f, "litefs_http_export_count{result=\"error\"} %lu\n", atomic_load(&srv->n_export_err));

	if (fclose(f) != 0) {
		free(buf);
		return HTTPD_NO;
	}
	return httpd_respond_buf(conn, HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf, len, NULL, NULL);
}

/* ---- POST /import ------------------------------------------------------- */

static void import_req_free(struct import_req *ir)
{
	if (!ir)
		return;
	/* Readers of the upload first: both stop at the feed's stop. */
	upfeed_end(&ir->feed, true);
	if (ir->check_started)
		importchk_join(&ir->check);
	importrec_free(ir->rec);
	upfeed_destroy(&ir->feed);
	if (ir->fd >= 0)
		close(ir->fd);
	if (ir->tmp_path) {
		unlink(ir->tmp_path);
		free(ir->tmp_path);
	}
	if (!ir->rec_taken && ir->rec_fd >= 0)
		close(ir->rec_fd);
	if (ir->rec_path && !ir->rec_taken)
		unlink(ir->rec_path);
	free(ir->rec_path);
	free(ir);
}

static void import_fail(struct import_req *ir, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void import_fail(struct import_req *ir, unsigned status, const char *fmt, ...)
{
	va_list ap;
	ir->fail_status = status;
	va_start(ap, fmt);
	vsnprintf(ir->fail_msg, sizeof(ir->fail_msg), fmt, ap);
	va_end(ap);
}

/* Checks the SQLite header of the uploaded copy; rewrites a WAL-mode
 * header to rollback mode (see DESIGN). Sets *page_size. 0 or -1 (failed,
 * reason in ir). */
static int import_check_header(struct import_req *ir, uint32_t *page_size)
{
	uint8_t hdr[100];

	if (ir->n_bytes == 0) {
		import_fail(ir, HTTP_BAD_REQUEST, "empty body: expected a SQLite database file");
		return -1;
	}
	if (ir->n_bytes < sizeof(hdr) || pread(ir->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
		import_fail(ir, HTTP_BAD_REQUEST, "not a SQLite database: only %" PRIu64 " bytes", ir->n_bytes);
		return -1;
	}
	if (memcmp(hdr, "SQLite format 3", 16) != 0) {
		import_fail(ir, HTTP_BAD_REQUEST, "not a SQLite database (bad header)");
		return -1;
	}
	uint32_t ps = (uint32_t)hdr[16] << 8 | hdr[17];
	if (ps == 1)
		ps = 65536;
	if (!ltx_is_valid_page_size(ps)) {
		import_fail(ir, HTTP_BAD_REQUEST, "not a valid SQLite database: bad page size %u", ps);
		return -1;
	}
	if (ir->n_bytes % ps != 0) {
		import_fail(ir, HTTP_BAD_REQUEST,
			    "not a valid SQLite database: size %" PRIu64 " is not a multiple of the page size %u",
			    ir->n_bytes, ps);
		return -1;
	}
	if (hdr[18] < 1 || hdr[18] > 2 || hdr[19] < 1 || hdr[19] > 2) {
		import_fail(ir, HTTP_BAD_REQUEST, "unsupported SQLite file format version (%u/%u)", hdr[18],
			    hdr[19]);
		return -1;
	}
	if (hdr[18] != 1 || hdr[19] != 1) {
		static const uint8_t rollback[2] = { 1, 1 };
		if (pwrite(ir->fd, rollback, 2, 18) != 2) {
			import_fail(ir, HTTP_INTERNAL_SERVER_ERROR, "cannot rewrite the temp copy: %s",
				    strerror(errno));
			return -1;
		}
	}
	*page_size = ps;
	return 0;
}

struct import_ctx {
	struct http_server *srv;
	struct import_req *ir;
	struct importchk *check;
	uint32_t page_size;
};

/* apply_import's validated(): the copy is refused if the check failed. */
static int import_validated(void *arg)
{
	struct import_ctx *ic = arg;
	int rc = importchk_join(ic->check);
	if (rc && ic->check->interrupted)
		import_fail(ic->ir, HTTP_SERVICE_UNAVAILABLE, "the node is shutting down");
	else if (rc)
		import_fail(ic->ir, HTTP_BAD_REQUEST, "%s", ic->check->msg);
	return rc;
}

/* apply_import's check(): conflicts with the live database, found with
 * writers excluded and before any write. */
static int import_conflicts(void *arg, struct db *db)
{
	struct import_ctx *ic = arg;
	struct db_stats st = { 0 };
	db_stats(db, -1, &st);
	if (st.exists && st.write_refused) {
		import_fail(ic->ir, HTTP_CONFLICT, "database %s failed verification; writes are refused", ic->ir->name);
		return -EPERM;
	}
	uint32_t ps = ic->page_size;
	if (st.exists && st.page_size != 0 && st.n_pages != 0 && st.page_size != ps) {
		import_fail(ic->ir, HTTP_CONFLICT,
			    "page size mismatch: database %s has %u-byte pages, the file has %u-byte pages "
			    "(LiteFS cannot change a database's page size; import under a new name, or "
			    "rebuild the file with PRAGMA page_size=%u; VACUUM)",
			    ic->ir->name, st.page_size, ps, st.page_size);
		return -EPERM;
	}
	return 0;
}

/* Validates the uploaded copy and applies it to the live database as one
 * transaction (apply_import: no SQLite connection on the mount, no pass
 * through FUSE). 0 (with *pos) or -1 (reason in ir). */
static int import_apply(struct http_server *srv, struct import_req *ir, struct ltx_pos *pos)
{
	uint32_t ps = 0;
	int rc;
	struct importchk *check = &ir->check;
	struct import_ctx ic = { .srv = srv, .ir = ir, .check = check };

	upfeed_end(&ir->feed, false); /* every byte is in the file */
	if (ir->check_started && (uint64_t)check->size != ir->n_bytes) {
		/* Cannot happen with a Content-Length the server holds the body
		 * to; were it to, the file is checked as it is. */
		upfeed_end(&ir->feed, true);
		importchk_join(check);
		ir->check_started = ir->check_followed = false;
	}
	if (import_check_header(ir, &ps) != 0)
		return -1;
	ic.page_size = ps;
	/* The check reads the temp file while apply_import completes the
	 * record and syncs (it never writes the file before the check's
	 * end). */
	if (!ir->check_started) {
		*check = (struct importchk){ .path = ir->tmp_path, .full = ir->full_check, .stop = &srv->stopping };
		if ((rc = importchk_start(check)) != 0) {
			import_fail(ir, HTTP_INTERNAL_SERVER_ERROR, "cannot start the check: %s", err_str(rc));
			return -1;
		}
		ir->check_started = true;
	}

	/* A deleted database keeps its registry entry and its position. */
	struct db *db = store_find(srv->st, ir->name, true);
	if (!db && (rc = store_create(srv->st, ir->name, &db)) != 0) {
		importchk_join(check);
		import_fail(ir, HTTP_INTERNAL_SERVER_ERROR, "cannot create database %s: %s", ir->name, err_str(rc));
		return -1;
	}
	struct apply_import_opts o = {
		.page_size = ps,
		.n_pages = (uint32_t)(ir->n_bytes / ps),
		.src_dir_fd = AT_FDCWD,
		.src_path = ir->tmp_path,
		.cancel = &srv->abort_imports,
		.max_wait_us = (int64_t)HTTP_BUSY_TIMEOUT_MS * 1000,
		.check = import_conflicts,
		.validated = import_validated,
		.ctx = &ic,
		.rec_fd = ir->rec_fd,
		.rec_dir_fd = AT_FDCWD,
		.rec_path = ir->rec_path,
		.rec_taken = &ir->rec_taken,
	};
	/* The record encoded during the upload, if its encoder took every
	 * byte; otherwise apply_import encodes it from the upload. */
	int64_t t_end = clock_mono_ms();
	rc = ir->rec ? importrec_end(ir->rec, &o.rec) : 0;
	if (ir->rec) {
		ir->rec_lag_ms = clock_mono_ms() - t_end;
		ir->rec_cpu_ms = importrec_cpu_ms(ir->rec);
	}
	if (rc != 0)
		LOG_WARN("http", "msg=\"import: the record encoded during the upload is not usable; encoding it "
				 "from the file\" db=%s err=\"%s\"", ir->name, err_str(rc));
	rc = apply_import(db, ir->fd, &o, pos);
	importchk_join(check);
	ir->check_ms = check->ms;
	if (rc == 0)
		return 0;
	if (ir->fail_status)
		return -1; /* refused by a check, reason given */
	if (rc == -ECANCELED || atomic_load(&srv->stopping))
		import_fail(ir, HTTP_SERVICE_UNAVAILABLE,
			    "the node is shutting down; the import was interrupted (if the position of "
			    "%s did not advance, nothing was applied)", ir->name);
	else if (rc == -ETIMEDOUT)
		import_fail(ir, HTTP_SERVICE_UNAVAILABLE, "database %s is busy: another connection held a lock for %d ms",
			    ir->name, HTTP_BUSY_TIMEOUT_MS);
	else if (rc == -ENOSPC || rc == -EDQUOT)
		import_fail(ir, HTTP_INSUFFICIENT_STORAGE, "cannot write database %s: %s", ir->name, err_str(rc));
	else
		import_fail(ir, HTTP_INTERNAL_SERVER_ERROR, "cannot write database %s: %s", ir->name, err_str(rc));
	return -1;
}

/* End of the upload: validate, apply, reply. */
static enum httpd_result import_finish(struct http_server *srv, struct httpd_conn *conn, struct import_req *ir)
{
	struct ltx_pos pos = { 0 };
	char buf[64];

	ir->body_ms = clock_mono_ms();
	if (ir->fail_status == 0 && import_apply(srv, ir, &pos) == 0) {
		atomic_fetch_add(&srv->n_import_ok, 1);
		LOG_INFO("http", "msg=\"import applied\" db=%s bytes=%" PRIu64 " txid=%016" PRIx64 " upload_ms=%" PRId64
				 " apply_ms=%" PRId64 " encoder_lag_ms=%" PRId64 " encoder_cpu_ms=%" PRId64 " check_ms=%" PRId64
				 " check=%s",
			 ir->name, ir->n_bytes, pos.txid, ir->body_ms - ir->start_ms, clock_mono_ms() - ir->body_ms,
			 ir->rec_lag_ms, ir->rec_cpu_ms, ir->check_ms, ir->check_followed ? "with-upload" : "after-upload");
		json_t *o = json_object();
		if (!o)
			return HTTPD_NO;
		json_object_set_new(o, "name", httpd_json_str(ir->name));
		snprintf(buf, sizeof(buf), "%016" PRIx64, pos.txid);
		json_object_set_new(o, "txid", json_string(buf));
		snprintf(buf, sizeof(buf), "%016" PRIx64, pos.checksum);
		json_object_set_new(o, "checksum", json_string(buf));
		return httpd_respond_json(conn, HTTP_OK, o, NULL, NULL);
	}
	atomic_fetch_add(&srv->n_import_err, 1);
	char logmsg[HTTPD_MSG_LEN];
	snprintf(logmsg, sizeof(logmsg), "%s", ir->fail_msg);
	httpd_log_clean(logmsg);
	LOG_WARN("http", "msg=\"import rejected\" db=%s bytes=%" PRIu64 " status=%u reason=\"%s\"", ir->name,
		 ir->n_bytes, ir->fail_status, logmsg);
	return httpd_respond_error(conn, ir->fail_status, ir->fail_msg);
}

/* Starts encoding the record as the body arrives, into a spool beside the
 * upload. Without it (no spool, no thread) the import still works: the
 * record is then encoded from the uploaded file. */
static void import_rec_start(struct http_server *srv, struct import_req *ir)
{
	int fd = make_temp(srv, HTTP_TMP_IMPORT_PREFIX, &ir->rec_path);
	int rc = fd < 0 ? fd : importrec_start(&ir->rec, &ir->feed, ir->fd, fd, srv->st->node.compress);
	if (rc == 0) {
		ir->rec_fd = fd;
		return;
	}
	if (rc == -EBUSY)
		LOG_INFO("http", "msg=\"import: other imports are encoding; the record is encoded after the upload\" db=%s",
			 ir->name);
	else
		LOG_WARN("http", "msg=\"import: cannot encode the record during the upload\" db=%s err=\"%s\"",
			 ir->name, err_str(rc));
	if (fd >= 0) {
		close(fd);
		unlink(ir->rec_path);
	}
	free(ir->rec_path);
	ir->rec_path = NULL;
}

/* Starts the check as the body starts (importchk.h, chkvfs_follow).
 * Without it the check starts after the body, as it always can. */
static void import_check_start_early(struct http_server *srv, struct import_req *ir, uint64_t content_length)
{
	ir->check = (struct importchk){ .path = ir->tmp_path, .full = ir->full_check, .stop = &srv->stopping,
					.feed = &ir->feed, .size = (int64_t)content_length };
	int rc = importchk_start(&ir->check);
	if (rc == 0)
		ir->check_started = ir->check_followed = true;
	else
		LOG_WARN("http", "msg=\"import: cannot check the file during the upload; checking it after\" db=%s err=\"%s\"",
			 ir->name, err_str(rc));
}

/* len more bytes of the body are in the temp file. */
static void import_written(struct import_req *ir, size_t len)
{
	ir->n_bytes += len;
	upfeed_set(&ir->feed, ir->n_bytes);
	/* Writeback as the body arrives: the copy may become the database
	 * file (apply_import renames it into place and syncs it), and dirty
	 * pages of a multi-gigabyte upload would otherwise throttle the
	 * writes that follow. */
	(void)sys_writeback(&ir->wb, ir->fd, (off_t)ir->n_bytes);
}

/* A body with a Content-Length, pulled into the temp file from the
 * handler's first call with splice (httpd_body_splice): the bytes go from
 * the socket to the file without a copy through this process. Whatever
 * this leaves of the body (a chunked one, all of it; after a write error,
 * the rest, discarded) comes piece by piece through import_chunk; after a
 * socket error the server ends the request as it would have. */
static void import_pull_body(struct import_req *ir, struct httpd_conn *conn)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return;
	fcntl(p[1], F_SETPIPE_SZ, HTTP_IMPORT_PIPE); /* else 64 KiB per call */
	for (;;) {
		bool file_failed = false;
		ssize_t n = httpd_body_splice(conn, p, ir->fd, (off_t)ir->n_bytes, HTTP_IMPORT_PIPE, &file_failed);
		if (n > 0) {
			import_written(ir, (size_t)n);
			continue;
		}
		if (file_failed)
			import_fail(ir, n == -ENOSPC || n == -EDQUOT ? HTTP_INSUFFICIENT_STORAGE : HTTP_INTERNAL_SERVER_ERROR,
				    "cannot store the upload: %s", strerror((int)-n));
		break;
	}
	close(p[0]);
	close(p[1]);
}

/* First call for POST /import: everything that can be refused before the
 * body is read.
 *
 * A refusal sent before the body was read makes the server close the connection
 * with unread bytes in the socket, and the kernel then resets it: a client
 * still sending may get ECONNRESET instead of the reply. So the reply is
 * sent early only when that cannot happen or cannot be helped — the client
 * waits for "100 Continue", or the body is too large to drain — and
 * otherwise a small body (up to HTTP_DRAIN_MAX) is read and discarded
 * first. */
static enum httpd_result import_begin(struct http_server *srv, struct httpd_conn *conn, void **con_cls)
{
	char name[256], msg[HTTPD_MSG_LEN];
	unsigned long long content_length = 0;
	bool has_length = false;

	const char *cl = httpd_header(conn, HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		errno = 0;
		content_length = strtoull(cl, NULL, 10);
		has_length = true;
		if (errno == ERANGE || content_length > HTTP_MAX_IMPORT_BYTES) {
			atomic_fetch_add(&srv->n_import_err, 1);
			LOG_WARN("http", "msg=\"import refused: body too large\" content_length=\"%.30s\"", cl);
			return httpd_respond_errorf(conn, HTTP_CONTENT_TOO_LARGE,
					      "body too large: the limit is %llu bytes", HTTP_MAX_IMPORT_BYTES);
		}
	}
	bool expects_continue = httpd_header(conn, HTTP_HEADER_EXPECT) != NULL;
	bool reply_early = expects_continue || !has_length || content_length > HTTP_DRAIN_MAX;

	unsigned status = get_db_name(conn, name, sizeof(name), msg, sizeof(msg));
	if (status == 0 && !node_is_primary(&srv->st->node)) {
		status = HTTP_CONFLICT;
		snprintf(msg, sizeof(msg), "this node is a read-only replica: import on the primary");
	}
	if (status != 0 && reply_early) {
		atomic_fetch_add(&srv->n_import_err, 1);
		LOG_WARN("http", "msg=\"import refused\" status=%u reason=\"%s\"", status, msg);
		return httpd_respond_error(conn, status, msg);
	}
	struct import_req *ir = calloc(1, sizeof(*ir));
	if (!ir)
		return HTTPD_NO;
	ir->kind = REQ_IMPORT;
	upfeed_init(&ir->feed);
	ir->fd = -1;
	ir->wb.kick = HTTP_IMPORT_KICK;
	ir->rec_fd = -1;
	ir->start_ms = clock_mono_ms();
	if (status != 0) {
		snprintf(ir->name, sizeof(ir->name), "%s", status == HTTP_CONFLICT ? name : "-");
		ir->fail_status = status;
		ir->refused_early = true;
		snprintf(ir->fail_msg, sizeof(ir->fail_msg), "%s", msg);
		*con_cls = ir;
		return HTTPD_YES;
	}
	snprintf(ir->name, sizeof(ir->name), "%s", name);
	const char *chk = NULL;
	size_t chk_len = 0;
	ir->full_check = httpd_arg(conn, "check", &chk, &chk_len) == HTTPD_YES && chk && chk_len == 4 &&
			 memcmp(chk, "full", 4) == 0;
	int fd = make_temp(srv, HTTP_TMP_IMPORT_PREFIX, &ir->tmp_path);
	if (fd < 0) {
		LOG_ERROR("http", "msg=\"cannot create temp file\" db=%s dir=\"%s\" err=\"%s\"", name, srv->tmp_dir,
			  err_str(fd));
		status = fd == -ENOSPC ? HTTP_INSUFFICIENT_STORAGE : HTTP_INTERNAL_SERVER_ERROR;
		if (reply_early) {
			upfeed_destroy(&ir->feed);
			free(ir);
			atomic_fetch_add(&srv->n_import_err, 1);
			return httpd_respond_errorf(conn, status, "cannot create a temp file: %s", err_str(fd));
		}
		import_fail(ir, status, "cannot create a temp file: %s", err_str(fd));
		ir->refused_early = true;
	}
	ir->fd = fd;
	if (fd >= 0)
		import_rec_start(srv, ir);
	if (ir->rec && has_length && content_length > 0)
		import_check_start_early(srv, ir, content_length);
	*con_cls = ir;
	if (fd >= 0 && has_length)
		import_pull_body(ir, conn);
	return HTTPD_YES;
}

/* A chunk of the body: appended to the temp file. */
static enum httpd_result import_chunk(struct import_req *ir, const char *data, size_t len)
{
	if (ir->fail_status) {
		/* Draining a body we will refuse; a large one is cut short. */
		ir->n_bytes += len;
		return ir->refused_early && ir->n_bytes > HTTP_DRAIN_MAX ? HTTPD_NO : HTTPD_YES;
	}
	if (ir->n_bytes + len > HTTP_MAX_IMPORT_BYTES) {
		/* Only a chunked body gets here (Content-Length was checked).
		 * the server cannot reply mid-body: close the connection. */
		LOG_WARN("http", "msg=\"import aborted: chunked body exceeds the limit\" db=%s limit=%llu", ir->name,
			 HTTP_MAX_IMPORT_BYTES);
		return HTTPD_NO;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(ir->fd, data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			import_fail(ir, err == ENOSPC || err == EDQUOT ? HTTP_INSUFFICIENT_STORAGE
								       : HTTP_INTERNAL_SERVER_ERROR,
				    "cannot store the upload: %s", strerror(err));
			return HTTPD_YES;
		}
		done += (size_t)n;
	}
	import_written(ir, len);
	return HTTPD_YES;
}

/* ---- GET /export -------------------------------------------------------- */

/* A helper kept pinning the state while its db file is sent. */
struct export_pin {
	struct http_server *srv;
	struct sqlchild child;
	int slot;               /* child_track()'s */
	bool released;          /* the helper answered SKIP with OK */
};

struct export_result {
	int fd;                 /* the copy, already unlinked, or the pinned db file; -1 on failure */
	struct export_pin *pin; /* the helper pinning fd's content; NULL: fd is a private copy */
	uint64_t size;
	bool has_pos;
	struct ltx_pos pos;
	unsigned status;        /* on failure */
	char msg[HTTPD_MSG_LEN];
};

static void export_fail(struct export_result *r, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void export_fail(struct export_result *r, unsigned status, const char *fmt, ...)
{
	va_list ap;
	r->status = status;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
}

/* The pinned db file was sent but for its last byte: the helper ends its
 * read transaction, and its OK says it held it all along (a helper killed
 * meanwhile, e.g. by http_stop(), lost its locks: the reply is cut). */
static int export_release(void *cls)
{
	struct export_pin *p = cls;
	char line[HTTPD_MSG_LEN + 32] = "the helper's pipe was closed";
	if (sqlchild_write(&p->child, "SKIP") != 0 || sqlchild_read(&p->child, line, sizeof(line)) != 0 ||
	    strcmp(line, "OK") != 0) {
		LOG_WARN("http", "msg=\"export cut: the helper pinning the database ended before the reply did\" "
				 "reason=\"%s\"", line);
		return -EIO;
	}
	p->released = true;
	return 0;
}

static void export_pin_free(void *cls)
{
	struct export_pin *p = cls;
	sqlchild_finish(&p->child); /* a helper not released gives up its locks at the EOF */
	child_untrack(p->srv, p->slot);
	free(p);
}

/* Copies a consistent snapshot of the database into an unlinked temp
 * file, or (rollback modes, writers held off) opens its db file and keeps
 * the helper pinning it for the reply (see DESIGN). 0 or -1 (reason in
 * r). */
static int export_copy(struct http_server *srv, const char *name, struct export_result *r)
{
	struct sqlchild child;
	bool child_started = false;
	int child_slot = -1;
	char *path = NULL, *tmp = NULL;
	int ret = -1, rc, fd;

	r->fd = -1;
	struct db *db = store_find(srv->st, name, false);
	if (!db) {
		export_fail(r, HTTP_NOT_FOUND, "database not found: %s", name);
		return -1;
	}
	if (!(path = mount_path(srv, name))) {
		export_fail(r, HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		goto out;
	}
	if ((fd = make_temp(srv, HTTP_TMP_EXPORT_PREFIX, &tmp)) < 0) {
		export_fail(r, fd == -ENOSPC ? HTTP_INSUFFICIENT_STORAGE : HTTP_INTERNAL_SERVER_ERROR,
			    "cannot create a temp file: %s", err_str(fd));
		goto out;
	}
	close(fd);

	/* The snapshot is taken by a child process (the node must not map its
	 * own files, sqlchild.c): it holds writers off (A) and opens the read
	 * transaction the copy is taken from (B), then waits while this
	 * process reads the position those locks pin. */
	char line[HTTPD_MSG_LEN + 32];
	const char *msg = "";
	char *argv[] = { "litefs", "__sqlite", "export", path, tmp, NULL };
	rc = sqlchild_start(&child, argv);
	if (rc != 0) {
		export_fail(r, HTTP_INTERNAL_SERVER_ERROR, "cannot start the export helper: %s", err_str(rc));
		goto out;
	}
	child_started = true;
	child_slot = child_track(srv, child.pid);
	sqlchild_read(&child, line, sizeof(line));
	int locked = 0, wal = 0;
	if (sscanf(line, "READY %d %d", &locked, &wal) != 2) {
		if (!sqlchild_parse_err(line, &rc, &msg)) {
			rc = SQLITE_ERROR;
			msg = line;
		}
		if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
			export_fail(r, HTTP_SERVICE_UNAVAILABLE, "database %s is busy: a writer held its lock too long",
				    name);
		else if ((rc & 0xff) == SQLITE_CANTOPEN && store_find(srv->st, name, false) == NULL)
			export_fail(r, HTTP_NOT_FOUND, "database not found: %s", name);
		else
			export_fail(r, sqlite_status(rc), "cannot read database %s: %s", name, msg);
		goto out;
	}
	/* With writers held off, or in a rollback mode where B's SHARED lock
	 * pins the database, the position is exact; in WAL mode without A it
	 * would be a guess. */
	if (locked || !wal) {
		r->pos = db_pos(db);
		r->has_pos = true;
	}
	/* In a rollback mode with writers held off (A) and the snapshot
	 * pinned (B's SHARED lock), the db file is the exported state: sent
	 * as it is (sendfile) while the helper keeps pinning it, instead of
	 * copied page by page through the mount by SQLite's backup API or
	 * into a temp file first (BENCHMARKS.md, "Big databases on a node"). */
	if (locked && !wal && db_open_clean_file(db, &r->fd, &r->size) == 0) {
		if (!(r->pin = calloc(1, sizeof(*r->pin)))) {
			export_fail(r, HTTP_INTERNAL_SERVER_ERROR, "out of memory");
			goto out;
		}
		*r->pin = (struct export_pin){ .srv = srv, .child = child, .slot = child_slot };
		child_started = false; /* the pin owns it now */
		ret = 0;
		goto out;
	}
	sqlchild_write(&child, "GO");
	sqlchild_read(&child, line, sizeof(line));
	if (strcmp(line, "OK") != 0) {
		if (!sqlchild_parse_err(line, &rc, &msg)) {
			rc = SQLITE_ERROR;
			msg = line;
		}
		unsigned status = sqlite_status(rc);
		export_fail(r, status == HTTP_NOT_FOUND ? HTTP_INTERNAL_SERVER_ERROR : status,
			    "cannot copy database %s: %s", name, msg);
		goto out;
	}

	/* Unlinked at once: the response owns the only reference. */
	r->fd = open(tmp, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (r->fd < 0 || fstat(r->fd, &sb) != 0) {
		export_fail(r, HTTP_INTERNAL_SERVER_ERROR, "cannot reopen the copy: %s", strerror(errno));
		goto out;
	}
	r->size = (uint64_t)sb.st_size;
	ret = 0;
out:
	if (child_started) {
		sqlchild_finish(&child);
		child_untrack(srv, child_slot);
	}
	if (ret != 0 && r->status >= 500 && atomic_load(&srv->stopping))
		export_fail(r, HTTP_SERVICE_UNAVAILABLE, "the node is shutting down");
	if (ret != 0 && r->fd >= 0) {
		close(r->fd);
		r->fd = -1;
	}
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(path);
	return ret;
}

static enum httpd_result handle_export(struct http_server *srv, struct httpd_conn *conn)
{
	char name[256], msg[HTTPD_MSG_LEN];
	struct export_result r;

	memset(&r, 0, sizeof(r));
	unsigned status = get_db_name(conn, name, sizeof(name), msg, sizeof(msg));
	if (status) {
		atomic_fetch_add(&srv->n_export_err, 1);
		LOG_WARN("http", "msg=\"export refused: invalid name\" status=%u", status);
		return httpd_respond_error(conn, status, msg);
	}
	if (export_copy(srv, name, &r) != 0) {
		atomic_fetch_add(&srv->n_export_err, 1);
		char logmsg[HTTPD_MSG_LEN];
		snprintf(logmsg, sizeof(logmsg), "%s", r.msg);
		httpd_log_clean(logmsg);
		LOG_WARN("http", "msg=\"export failed\" db=%s status=%u reason=\"%s\"", name, r.status, logmsg);
		return httpd_respond_error(conn, r.status, r.msg);
	}
	/* The server closes the fd when the reply is done, and releases the
	 * helper pinning a db file sent as it is. */
	struct httpd_response *resp = r.pin ? httpd_response_fd_held(r.fd, r.size, export_release, r.pin, export_pin_free)
					    : httpd_response_fd(r.fd, r.size);
	if (!resp) {
		if (r.pin)
			export_pin_free(r.pin);
		close(r.fd);
		atomic_fetch_add(&srv->n_export_err, 1);
		return HTTPD_NO;
	}
	httpd_response_header(resp, HTTP_HEADER_CONTENT_TYPE, "application/vnd.sqlite3");
	httpd_response_header(resp, HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (r.has_pos) {
		char pos[LTX_POS_STR_LEN];
		ltx_format_pos(pos, r.pos);
		httpd_response_header(resp, "Litefs-Pos", pos);
	}
	enum httpd_result ret = httpd_queue(conn, HTTP_OK, resp);
	atomic_fetch_add(&srv->n_export_ok, 1);
	LOG_INFO("http", "msg=\"export served\" db=%s bytes=%" PRIu64 " txid=%016" PRIx64 " pos_known=%s", name,
		 r.size, r.pos.txid, r.has_pos ? "true" : "false");
	return ret;
}

/* ---- GET /events: newline-delimited JSON ---------------------------------- */

/*
 * LiteFS's event stream: an "init" event, then "tx" for every new position
 * of a database and "primaryChange" when the role or the known primary
 * changes. Same callback-response machinery as /stream; the events are
 * found by comparing every database's position with the last one sent
 * each time the store's change counter moves.
 */
#define EVENTS_POLL_MS 250

struct events_sess {
	struct http_server *srv;
	int sock_fd;
	struct outq q;
	uint64_t seq;
	struct ltx_pos *last;    /* per database id */
	size_t n_last;
	bool is_primary;
	char host[256];
	bool finished;
};

static bool events_put(struct events_sess *e, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return false;
	bool ok = outq_put(&e->q, s, strlen(s)) && outq_put(&e->q, "\n", 1);
	free(s);
	return ok;
}

static json_t *events_role(const char *type, bool is_primary, const char *host)
{
	json_t *d = json_object();
	if (d) {
		json_object_set_new(d, "isPrimary", json_boolean(is_primary));
		json_object_set_new(d, "hostname", httpd_json_str(host));
	}
	return json_pack("{s:s, s:o*}", "type", type, "data", d);
}

static json_t *events_tx(const struct db_stats *v)
{
	char txid[17], chk[17], ts[40];
	snprintf(txid, sizeof(txid), "%016" PRIx64, v->pos.txid);
	snprintf(chk, sizeof(chk), "%016" PRIx64, v->pos.checksum);
	ltx_format_time(ts, sizeof(ts), v->ts_ms);
	return json_pack("{s:s, s:o, s:{s:s, s:s, s:i, s:i, s:s}}", "type", "tx", "db", httpd_json_str(v->db->name), "data",
			 "txID", txid, "postApplyChecksum", chk, "pageSize", (json_int_t)v->page_size, "commit",
			 (json_int_t)v->n_pages, "timestamp", ts);
}

/* Queues the events since the last call. 0 or ERR_NOMEM. */
static int events_scan(struct events_sess *e)
{
	bool is_primary = node_is_primary(&e->srv->st->node);
	char host[256];
	primary_hostname(e->srv, is_primary, host, sizeof(host));
	if (is_primary != e->is_primary || strcmp(host, e->host) != 0) {
		e->is_primary = is_primary;
		snprintf(e->host, sizeof(e->host), "%s", host);
		if (!events_put(e, events_role("primaryChange", is_primary, host)))
			return ERR_NOMEM;
	}
	size_t n = store_count(e->srv->st);
	if (n > e->n_last) {
		struct ltx_pos *l = realloc(e->last, n * sizeof(*l));
		if (!l)
			return ERR_NOMEM;
		memset(l + e->n_last, 0, (n - e->n_last) * sizeof(*l));
		e->last = l;
		e->n_last = n;
	}
	for (size_t i = 0; i < n; i++) {
		struct db *db = store_by_id(e->srv->st, (uint32_t)i);
		struct db_stats v;
		if (!db)
			continue;
		db_stats(db, -1, &v);
		if (v.pos.txid == e->last[i].txid && v.pos.checksum == e->last[i].checksum)
			continue;
		e->last[i] = v.pos;
		if (!events_put(e, events_tx(&v)))
			return ERR_NOMEM;
	}
	return 0;
}

static ssize_t events_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct events_sess *e = cls;
	(void)pos;
	for (;;) {
		ssize_t n = outq_take(&e->q, buf, max);
		if (n != 0)
			return n > 0 ? n : HTTPD_END_WITH_ERROR;
		if (e->finished || atomic_load(&e->srv->stopping))
			return HTTPD_END_OF_STREAM;
		if (httpd_peer_gone(e->sock_fd))
			return HTTPD_END_WITH_ERROR;
		/* Scanning is cheap (a copy per database under its lock), so it
		 * also runs on timeouts: a change that did not bump the counter
		 * is seen within EVENTS_POLL_MS. */
		e->seq = node_wait_change(&e->srv->st->node, e->seq, EVENTS_POLL_MS);
		if (events_scan(e) != 0)
			return HTTPD_END_WITH_ERROR;
	}
}

static void events_free(void *cls)
{
	struct events_sess *e = cls;
	if (!e)
		return;
	outq_free(&e->q);
	free(e->last);
	free(e);
}

static enum httpd_result handle_events(struct http_server *srv, struct httpd_conn *conn)
{
	struct events_sess *e = calloc(1, sizeof(*e));
	if (!e)
		return HTTPD_NO;
	e->srv = srv;
	e->sock_fd = httpd_sock_of(conn);
	outq_init(&e->q);
	e->seq = node_change_seq(&srv->st->node);
	e->is_primary = node_is_primary(&srv->st->node);
	primary_hostname(srv, e->is_primary, e->host, sizeof(e->host));
	/* init carries the current role; the current positions are the
	 * baseline, and only later changes become tx events. */
	bool ok = events_put(e, events_role("init", e->is_primary, e->host));
	size_t n = store_count(srv->st);
	e->last = calloc(n ? n : 1, sizeof(*e->last));
	ok = ok && e->last;
	for (size_t i = 0; ok && i < n; i++) {
		struct db *db = store_by_id(srv->st, (uint32_t)i);
		if (db)
			e->last[i] = db_pos(db);
	}
	e->n_last = n;
	struct httpd_response *r = ok ? httpd_response_callback(HTTPD_SIZE_UNKNOWN, 16 << 10, events_read, e,
									 events_free)
				    : NULL;
	if (!r) {
		events_free(e);
		return HTTPD_NO;
	}
	httpd_response_header(r, HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
	httpd_response_header(r, HTTP_HEADER_CACHE_CONTROL, "no-store");
	enum httpd_result ret = httpd_queue(conn, HTTP_OK, r);
	return ret;
}

/* ---- Promote ------------------------------------------------------------ */

/* POST /promote (litefs promote): the handoff to this node (lease.h
 * lease_promote). Holds a worker for at most PROMOTE_WAIT_MS. */
#define PROMOTE_WAIT_MS 10000

static enum httpd_result handle_promote(struct http_server *srv, struct httpd_conn *conn)
{
	if (!srv->lease)
		return httpd_respond_error(conn, HTTP_CONFLICT,
					   "a handoff needs lease.type: etcd (the static lease names its primary in the config)");
	char msg[256];
	int64_t t0 = clock_mono_ms();
	int rc = lease_promote(srv->lease, PROMOTE_WAIT_MS, msg, sizeof(msg));
	if (rc != 0)
		return httpd_respond_errorf(conn, HTTP_CONFLICT, "%s", msg);
	json_t *o = json_pack("{s:b, s:s, s:I}", "primary", 1, "message", msg, "elapsedMs",
			      (json_int_t)(clock_mono_ms() - t0));
	return o ? httpd_respond_json(conn, HTTP_OK, o, NULL, NULL) : HTTPD_NO;
}

/* ---- Dispatch ----------------------------------------------------------- */

/* Routes a request that carries no body (or whose body is ignored). */
static enum httpd_result route(struct http_server *srv, struct httpd_conn *conn, const char *url,
			     const char *method)
{
	bool get = !strcmp(method, HTTP_METHOD_GET);
	bool head = !strcmp(method, HTTP_METHOD_HEAD);
	if (!strcmp(url, "/info")) {
		if (!get && !head)
			return respond_method_not_allowed(conn, method, url, "GET, HEAD");
		return handle_info(srv, conn);
	}
	if (!strcmp(url, "/metrics")) {
		if (!get && !head)
			return respond_method_not_allowed(conn, method, url, "GET, HEAD");
		return handle_metrics(srv, conn);
	}
	if (!strcmp(url, "/import") || !strcmp(url, "/stream") || !strcmp(url, "/stream/ack"))
		return respond_method_not_allowed(conn, method, url, "POST");
	if (!strcmp(url, "/events")) {
		if (!get)
			return respond_method_not_allowed(conn, method, url, "GET");
		return handle_events(srv, conn);
	}
	if (!strcmp(url, "/export")) {
		if (!get)
			return respond_method_not_allowed(conn, method, url, "GET");
		return handle_export(srv, conn);
	}
	if (!strcmp(url, "/promote")) {
		if (strcmp(method, HTTP_METHOD_POST))
			return respond_method_not_allowed(conn, method, url, "POST");
		return handle_promote(srv, conn);
	}
	return httpd_respond_errorf(conn, HTTP_NOT_FOUND, "not found: %.200s", url);
}

/* *con_cls of a request answered on its second call. */
static char deferred_marker;

static bool request_has_body(struct httpd_conn *conn)
{
	const char *cl = httpd_header(conn, HTTP_HEADER_CONTENT_LENGTH);
	const char *te = httpd_header(conn, HTTP_HEADER_TRANSFER_ENCODING);
	return te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
}

/* The access handler. The server calls it once with the headers, then once per
 * body chunk, then once more with *upload_data_size == 0. A reply queued on
 * the first call is an "early" reply after which the server closes the connection,
 * so requests without a body are answered on the second call, which keeps
 * connections alive (Prometheus scrapes reuse them). */
static enum httpd_result on_request(void *cls, struct httpd_conn *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct http_server *srv = cls;

	if (*con_cls == &deferred_marker) {
		*upload_data_size = 0;
		return route(srv, conn, url, method);
	}
	if (writelock_url(url) && (*con_cls == NULL ? !atomic_load(&srv->stopping) : *(int *)*con_cls == WRITELOCK_REQ)) {
		if (*con_cls == NULL)
			atomic_fetch_add(&srv->n_active, 1);
		bool trusted = srv->secret == NULL || replserver_auth_ok(&srv->repl, conn);
		return writelock_http(srv->writelock, conn, url, method, upload_data, upload_data_size, con_cls, trusted);
	}
	if (*con_cls != NULL && *(int *)*con_cls == REQ_STREAM) {
		struct replserver_req *sr = *con_cls;
		if (*upload_data_size != 0) {
			size_t len = *upload_data_size;
			*upload_data_size = 0;
			return replserver_chunk(sr, upload_data, len);
		}
		return replserver_finish(&srv->repl, conn, sr);
	}
	if (*con_cls != NULL) {
		struct import_req *ir = *con_cls;
		if (*upload_data_size != 0) {
			size_t len = *upload_data_size;
			*upload_data_size = 0;
			return import_chunk(ir, upload_data, len);
		}
		return import_finish(srv, conn, ir);
	}
	/* First call: the request counts as in flight until on_completed(). */
	atomic_fetch_add(&srv->n_active, 1);
	if (atomic_load(&srv->stopping))
		return httpd_respond_error(conn, HTTP_SERVICE_UNAVAILABLE, "the node is shutting down");
	if (!strcmp(url, "/import") && !strcmp(method, HTTP_METHOD_POST))
		return import_begin(srv, conn, con_cls);
	if (!strcmp(url, "/stream") && !strcmp(method, HTTP_METHOD_POST))
		return replserver_begin(&srv->repl, conn, con_cls);
	if (!strcmp(url, "/stream/ack") && !strcmp(method, HTTP_METHOD_POST))
		return replserver_begin_ack(&srv->repl, conn, con_cls);
	if (request_has_body(conn))
		return route(srv, conn, url, method); /* early: the body is not read */
	*con_cls = &deferred_marker;
	return HTTPD_YES;
}

static void on_completed(void *cls, struct httpd_conn *conn, void **con_cls, enum httpd_end toe)
{
	struct http_server *srv = cls;
	atomic_fetch_sub(&srv->n_active, 1);
	if (*con_cls != NULL && *con_cls != &deferred_marker && *(int *)*con_cls == WRITELOCK_REQ) {
		writelock_req_free(*con_cls);
	} else if (*con_cls != NULL && *con_cls != &deferred_marker && *(int *)*con_cls == REQ_STREAM) {
		replserver_req_free(*con_cls);
	} else if (*con_cls != &deferred_marker) {
		struct import_req *ir = *con_cls;
		if (ir && toe != HTTPD_END_OK)
			LOG_WARN("http", "msg=\"import connection ended early\" db=%s bytes=%" PRIu64 " code=%d",
				 ir->name, ir->n_bytes, (int)toe);
		import_req_free(ir);
	}
	*con_cls = NULL;
}

/* Under pressure the server keeps HTTP_RESERVED_WORKERS for requests this
 * returns true for: a peer of the cluster, which proves itself with the
 * shared secret when one is configured (http.secret), else by naming this
 * cluster's ID. Without a secret the node API is open to whoever can reach
 * it (as LiteFS's is), and an ID can be read from /info: docs/http.md. */
static bool is_trusted(void *cls, struct httpd_conn *conn)
{
	struct http_server *srv = cls;
	if (srv->secret)
		return replserver_auth_ok(&srv->repl, conn);
	const char *id = httpd_header(conn, "Litefs-Cluster-Id");
	char mine[CLUSTER_ID_LEN + 1] = "";
	if (!id || !srv->cluster)
		return false;
	cluster_get(srv->cluster, mine);
	return mine[0] && !strcmp(id, mine);
}

/* ---- Start and stop ----------------------------------------------------- */

int http_start(struct store *st, struct fusefs *fs, const struct http_opts *opts, struct http_server **out)
{
	const char *addr = opts->addr;
	char host[256], port[8];
	struct http_server *srv = NULL;
	int rc;

	*out = NULL;
	if ((rc = httpd_parse_addr(addr, host, sizeof(host), port, sizeof(port))) != 0) {
		LOG_ERROR("http", "msg=\"invalid http.addr: expected host:port, [ipv6]:port or :port\" addr=\"%s\"",
			  addr ? addr : "");
		return rc;
	}
	if (!(srv = calloc(1, sizeof(*srv))))
		return ERR_NOMEM;
	srv->st = st;
	srv->fs = fs;
	srv->cluster = opts->cluster;
	srv->writelock = opts->writelock;
	srv->lease = opts->lease;
	srv->candidate = opts->candidate;
	srv->hostname = strdup(opts->hostname ? opts->hostname : "");
	srv->secret = opts->secret && opts->secret[0] ? strdup(opts->secret) : NULL;
	if (!srv->hostname || (opts->secret && opts->secret[0] && !srv->secret)) {
		rc = ERR_NOMEM;
		goto err;
	}
	atomic_init(&srv->stopping, false);
	atomic_init(&srv->n_active, 0);
	pthread_mutex_init(&srv->children_mu, NULL);
	for (int i = 0; i < (int)HTTP_CONNECTION_LIMIT; i++)
		srv->child_pidfds[i] = -1;
	if (asprintf(&srv->tmp_dir, "%s/%s", st->node.data_dir, HTTP_TMP_SUBDIR) < 0) {
		srv->tmp_dir = NULL;
		rc = ERR_NOMEM;
		goto err;
	}
	if (mkdir(srv->tmp_dir, 0700) != 0 && errno != EEXIST) {
		rc = -errno;
		LOG_ERROR("http", "msg=\"cannot create temp directory\" dir=\"%s\" err=\"%s\"", srv->tmp_dir,
			  strerror(errno));
		goto err;
	}
	clean_tmp_dir(srv->tmp_dir);
	srv->repl = (struct replserver){ .st = st, .cluster = srv->cluster, .secret = srv->secret,
					 .hostname = srv->hostname, .tmp_dir = srv->tmp_dir, .stopping = &srv->stopping };

	struct httpd_listen l = {
		.addr = addr, .mod = "http", .handler = on_request, .completed = on_completed, .trusted = is_trusted,
		.cls = srv, .workers = HTTP_CONNECTION_LIMIT, .reserved = HTTP_RESERVED_WORKERS,
	};
	uint16_t bound = 0;
	if ((rc = httpd_start(&l, &srv->daemon, &bound)) != 0)
		goto err;
	LOG_INFO("http", "msg=\"serving HTTP API\" addr=\"%s\" port=%u", addr, (unsigned)bound);
	*out = srv;
	return 0;
err:
	pthread_mutex_destroy(&srv->children_mu);
	free(srv->tmp_dir);
	free(srv->hostname);
	free(srv->secret);
	free(srv);
	return rc;
}

void http_stop(struct http_server *srv)
{
	if (!srv)
		return;
	/* 1. Refuse new requests (503) and stop accepting connections.
	 * 2. Let requests in flight finish for up to HTTP_STOP_GRACE_MS, so an
	 *    import that is committing still gets its reply: httpd_stop()
	 *    closes every connection, and a reply lost there would tell the
	 *    client "failed" about an import that was applied.
	 * 3. End the helpers of what is still running (their transactions
	 *    roll back), then stop the server, which joins its threads. */
	atomic_store(&srv->stopping, true);
	/* Streams (/stream, /events) wait for store changes: wake them so
	 * they see the stop, send their end frame and finish. */
	node_notify_change(&srv->st->node);
	if (srv->daemon) {
		/* Closing the listening socket now refuses new connections at
		 * once instead of leaving them in the backlog, unanswered. */
		httpd_quiesce(srv->daemon);
		struct timespec step = { 0, 20 * 1000000L };
		int waited_ms = 0;
		while (atomic_load(&srv->n_active) > 0 && waited_ms < HTTP_STOP_GRACE_MS) {
			nanosleep(&step, NULL);
			waited_ms += 20;
		}
		int left = atomic_load(&srv->n_active);
		if (left > 0)
			LOG_WARN("http", "msg=\"stopping with requests in flight; ending them\" n=%d", left);
		atomic_store(&srv->abort_imports, true);
		children_terminate(srv);
		httpd_stop(srv->daemon);
	}
	for (int i = 0; i < (int)HTTP_CONNECTION_LIMIT; i++)
		if (srv->child_pidfds[i] >= 0)
			close(srv->child_pidfds[i]);
	pthread_mutex_destroy(&srv->children_mu);
	free(srv->tmp_dir);
	free(srv->hostname);
	free(srv->secret);
	free(srv);
}
