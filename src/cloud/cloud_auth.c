/*
 * cloud_auth.c — clusters and tokens of litefs-cloud in <data_dir>/auth.db.
 * The contract is in cloud_auth.h; this comment says why it looks this way.
 *
 * SCHEMA
 *
 *   clusters(name PRIMARY KEY, cluster_id, created_ms)
 *   tokens(id PRIMARY KEY, cluster, hash BLOB, created_ms)
 *   purges(name PRIMARY KEY, requested_ms)
 *   rebinds(name PRIMARY KEY, until_ms, candidate, refused)
 *
 * TOKENS. 32 bytes from getrandom(2) are the secret; the text form is
 * "lfsc_" + 64 lowercase hex digits. The stored hash is SHA-256 of the
 * whole text, and the token's ID is the first 12 hex digits of that hash.
 * A check hashes the presented token, looks the row up by the ID derived
 * from the hash (the ID is public; finding the row reveals nothing about
 * the secret), then compares the full stored hash with CRYPTO_memcmp, so
 * the time taken does not depend on how many bytes matched. A missing
 * row does the same comparison against a dummy hash.
 *
 * REBIND. A cluster's nodes send the cluster ID the service bound on
 * first sight; a LiteFS node whose data directory was lost makes a new ID
 * and cannot take the bound one (our node takes it from the 422 reply).
 * `cluster rebind NAME` opens a window (a rebinds row, until_ms) in which
 * the first request with another ID makes that ID the candidate. The
 * candidate may read (GET /pos, info, restore checks); the rebind
 * completes, and the rebinds row goes, when it takes the service's state
 * (GET /db/snapshot: what a node holding nothing does next) or when the
 * cluster has no database to take. A candidate that tries to store
 * anything first (an upload, a restore, a delete) holds data of its own:
 * it is refused for the rest of the window (refused) and the slot is free
 * for another node. Other IDs are refused while a candidate is pending;
 * the bound ID keeps working until the rebind completes. The window is
 * checked only when an ID differs, so a bound cluster's requests never
 * read this table.
 *
 * CONCURRENCY. One connection and one mutex: every call is a few indexed
 * statements. A request costs two reads (the token, the bound cluster ID);
 * only binding an ID on first sight writes. Nothing is cached, so a token
 * revoked by another process fails on its next request. The admin commands run in other processes against the same
 * file; busy_timeout covers their short write transactions.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "cloud/cloud_auth.h"
#include "proto/cluster.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"

#define AUTH_FILE "auth.db"
#define AUTH_BUSY_MS 10000
#define TOKEN_SECRET_BYTES 32

struct cloud_auth {
	pthread_mutex_t mu; /* guards db, changes_at_begin */
	sqlite3 *db;
	int changes_at_begin;
	/* Set once before the store is shared (cloud_auth_on_change). */
	void (*changed)(void *ctx);
	void *changed_ctx;
};

/* Tells the owner (after the lock is released) that a write committed. */
static void notify(struct cloud_auth *a)
{
	if (a->changed)
		a->changed(a->changed_ctx);
}

static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=FULL;"
	"CREATE TABLE IF NOT EXISTS clusters(name TEXT PRIMARY KEY, cluster_id TEXT NOT NULL DEFAULT '',"
	" created_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS tokens(id TEXT PRIMARY KEY, cluster TEXT NOT NULL, hash BLOB NOT NULL,"
	" created_ms INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS tokens_cluster ON tokens(cluster);"
	"CREATE TABLE IF NOT EXISTS purges(name TEXT PRIMARY KEY, requested_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS rebinds(name TEXT PRIMARY KEY, until_ms INTEGER NOT NULL,"
	" candidate TEXT NOT NULL DEFAULT '', refused TEXT NOT NULL DEFAULT '');";


static int sql_fail(struct cloud_auth *a, const char *what)
{
	LOG_ERROR("auth", "msg=\"auth store: %s failed\" err=\"%s\"", what, sqlite3_errmsg(a->db));
	return -EIO;
}

bool cloud_auth_valid_cluster_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > CLOUD_CLUSTER_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

bool cloud_auth_exists(const char *data_dir)
{
	char *path = NULL;
	if (asprintf(&path, "%s/%s", data_dir, AUTH_FILE) < 0)
		return false;
	bool ok = access(path, F_OK) == 0;
	free(path);
	return ok;
}

int cloud_auth_open(const char *data_dir, struct cloud_auth **out)
{
	char *path = NULL;
	*out = NULL;
	bool dir_tightened = false, tightened = false;
	int prc = fileio_private_dir(data_dir, &dir_tightened);
	if (prc != 0)
		return prc;
	if (dir_tightened)
		LOG_WARN("auth", "msg=\"the data directory was readable by other users; removed group and other "
				 "permissions\" dir=\"%s\"", data_dir);
	if (asprintf(&path, "%s/%s", data_dir, AUTH_FILE) < 0)
		return ERR_NOMEM;
	/* Pre-created 0600: SQLite gives its -wal and -journal the same mode. */
	if ((prc = fileio_private_sqlite(path, &tightened)) != 0) {
		LOG_ERROR("auth", "msg=\"cannot create the auth store\" path=\"%s\" err=\"%s\"", path, err_str(prc));
		free(path);
		return prc;
	}
	if (tightened)
		LOG_WARN("auth", "msg=\"the token store was readable by other users; removed group and other "
				 "permissions\" path=\"%s\"", path);
	struct cloud_auth *a = calloc(1, sizeof(*a));
	if (!a) {
		free(path);
		return ERR_NOMEM;
	}
	int rc = sqlite3_open_v2(path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	free(path);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(a->db, AUTH_BUSY_MS);
		rc = sqlite3_exec(a->db, schema, NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		LOG_ERROR("auth", "msg=\"cannot open the auth store\" dir=\"%s\" err=\"%s\"", data_dir,
			  a->db ? sqlite3_errmsg(a->db) : sqlite3_errstr(rc));
		sqlite3_close(a->db);
		free(a);
		return -EIO;
	}
	pthread_mutex_init(&a->mu, NULL);
	*out = a;
	return 0;
}

void cloud_auth_close(struct cloud_auth *a)
{
	if (!a)
		return;
	sqlite3_close(a->db);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* ---- Hashing ------------------------------------------------------------ */

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* SHA-256 of text into hash[32] and its ID into id. 0 or ERR_NOMEM. */
static int token_hash(const char *text, size_t len, unsigned char *hash, char *id)
{
	unsigned int n = 0;
	if (!EVP_Digest(text, len, hash, &n, EVP_sha256(), NULL) || n != 32)
		return ERR_NOMEM;
	char hex[65];
	hex_encode(hash, 32, hex);
	memcpy(id, hex, CLOUD_TOKEN_ID_LEN);
	id[CLOUD_TOKEN_ID_LEN] = '\0';
	return 0;
}

static int token_generate(struct cloud_token *tok, unsigned char *hash)
{
	unsigned char secret[TOKEN_SECRET_BYTES];
	size_t got = 0;
	while (got < sizeof(secret)) {
		ssize_t n = getrandom(secret + got, sizeof(secret) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	memcpy(tok->text, CLOUD_TOKEN_PREFIX, strlen(CLOUD_TOKEN_PREFIX));
	hex_encode(secret, sizeof(secret), tok->text + strlen(CLOUD_TOKEN_PREFIX));
	OPENSSL_cleanse(secret, sizeof(secret));
	return token_hash(tok->text, strlen(tok->text), hash, tok->id);
}

/* ---- Statements --------------------------------------------------------- */

/* Prepares sql and binds the text arguments (NULL-terminated list). */
static sqlite3_stmt *prep(struct cloud_auth *a, const char *sql, const char *const *args)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK)
		return NULL;
	for (int i = 0; args && args[i]; i++)
		sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_STATIC);
	return st;
}

/* Runs a statement without rows; returns sqlite3_changes() or -EIO. */
static int exec1(struct cloud_auth *a, const char *sql, const char *const *args)
{
	sqlite3_stmt *st = prep(a, sql, args);
	if (!st)
		return sql_fail(a, "prepare");
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return sql_fail(a, "write");
	return sqlite3_changes(a->db);
}

/* Runs sql (no rows) with name as ?1 and ms as ?2. 0 or -EIO (what names
 * the write in the log). */
static int exec_name_ms(struct cloud_auth *a, const char *sql, const char *name, int64_t ms, const char *what)
{
	sqlite3_stmt *st = prep(a, sql, (const char *const[]){ name, NULL });
	if (!st)
		return sql_fail(a, "prepare");
	sqlite3_bind_int64(st, 2, ms);
	int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : sql_fail(a, what);
	sqlite3_finalize(st);
	return rc;
}

/* 1 if the query returns a row, 0 if not, -EIO on error. */
static int exists1(struct cloud_auth *a, const char *sql, const char *const *args)
{
	sqlite3_stmt *st = prep(a, sql, args);
	if (!st)
		return sql_fail(a, "prepare");
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : sql_fail(a, "read");
}

/* Inserts a new token of cluster (inside the caller's transaction). */
static int token_insert(struct cloud_auth *a, const char *cluster, struct cloud_token *tok)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		unsigned char hash[32];
		int rc = token_generate(tok, hash);
		if (rc != 0)
			return rc;
		sqlite3_stmt *st = prep(a, "INSERT OR IGNORE INTO tokens(id, cluster, hash, created_ms) VALUES(?,?,?,?)",
					(const char *const[]){ tok->id, cluster, NULL });
		if (!st)
			return sql_fail(a, "prepare");
		sqlite3_bind_blob(st, 3, hash, sizeof(hash), SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, clock_wall_ms());
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return sql_fail(a, "insert token");
		if (sqlite3_changes(a->db) == 1)
			return 0;
		/* An ID collision (48 bits): draw again. */
	}
	return -EIO;
}

static int tx_begin(struct cloud_auth *a)
{
	pthread_mutex_lock(&a->mu);
	if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		int rc = sql_fail(a, "begin");
		pthread_mutex_unlock(&a->mu);
		return rc;
	}
	a->changes_at_begin = sqlite3_total_changes(a->db);
	return 0;
}

/* Commits when rc is 0, rolls back otherwise; returns rc (or the commit's
 * failure) and releases the lock. */
static int tx_end(struct cloud_auth *a, int rc)
{
	if (rc == 0 && sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = sql_fail(a, "commit");
	if (rc != 0)
		sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
	bool changed = rc == 0 && sqlite3_total_changes(a->db) != a->changes_at_begin;
	pthread_mutex_unlock(&a->mu);
	if (changed)
		notify(a);
	return rc;
}

/* ---- Clusters ----------------------------------------------------------- */

int cloud_auth_cluster_create(struct cloud_auth *a, const char *name, struct cloud_token *tok)
{
	if (!cloud_auth_valid_cluster_name(name))
		return ERR_INVAL;
	int rc = tx_begin(a);
	if (rc != 0)
		return rc;
	const char *const args[] = { name, NULL };
	rc = exists1(a, "SELECT 1 FROM clusters WHERE name=? UNION ALL SELECT 1 FROM purges WHERE name=?1", args);
	if (rc == 1)
		rc = ERR_CLOUD_EXISTS;
	if (rc == 0)
		rc = exec_name_ms(a, "INSERT INTO clusters(name, created_ms) VALUES(?, ?)", name, clock_wall_ms(),
				  "insert cluster");
	if (rc == 0)
		rc = token_insert(a, name, tok);
	return tx_end(a, rc);
}

int cloud_auth_cluster_delete(struct cloud_auth *a, const char *name)
{
	if (!cloud_auth_valid_cluster_name(name))
		return ERR_CLOUD_NOT_FOUND;
	int rc = tx_begin(a);
	if (rc != 0)
		return rc;
	const char *const args[] = { name, NULL };
	rc = exec1(a, "DELETE FROM clusters WHERE name=?", args);
	if (rc == 0)
		rc = ERR_CLOUD_NOT_FOUND;
	else if (rc > 0)
		rc = exec1(a, "DELETE FROM tokens WHERE cluster=?", args);
	if (rc >= 0)
		rc = exec1(a, "DELETE FROM rebinds WHERE name=?", args);
	if (rc >= 0)
		rc = exec_name_ms(a, "INSERT OR REPLACE INTO purges(name, requested_ms) VALUES(?, ?)", name,
				  clock_wall_ms(), "insert purge");
	return tx_end(a, rc);
}

int cloud_auth_cluster_list(struct cloud_auth *a, void (*fn)(void *ctx, const struct cloud_cluster_info *c),
			    void *ctx)
{
	pthread_mutex_lock(&a->mu);
	sqlite3_stmt *st = prep(a,
				"SELECT c.name, c.cluster_id, c.created_ms, (SELECT count(*) FROM tokens t"
				" WHERE t.cluster=c.name) FROM clusters c ORDER BY c.name",
				NULL);
	int rc = st ? SQLITE_ROW : SQLITE_ERROR;
	while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cloud_cluster_info c = {
			.name = (const char *)sqlite3_column_text(st, 0),
			.cluster_id = (const char *)sqlite3_column_text(st, 1),
			.created_ms = sqlite3_column_int64(st, 2),
			.n_tokens = (unsigned)sqlite3_column_int(st, 3),
		};
		if (!c.cluster_id)
			c.cluster_id = "";
		fn(ctx, &c);
	}
	int ret = rc == SQLITE_DONE ? 0 : sql_fail(a, "list clusters");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	return ret;
}

/* ---- Tokens ------------------------------------------------------------- */

int cloud_auth_token_create(struct cloud_auth *a, const char *cluster, struct cloud_token *tok)
{
	int rc = tx_begin(a);
	if (rc != 0)
		return rc;
	rc = exists1(a, "SELECT 1 FROM clusters WHERE name=?", (const char *const[]){ cluster, NULL });
	if (rc == 0)
		rc = ERR_CLOUD_NOT_FOUND;
	else if (rc == 1)
		rc = token_insert(a, cluster, tok);
	return tx_end(a, rc);
}

int cloud_auth_token_revoke(struct cloud_auth *a, const char *id)
{
	pthread_mutex_lock(&a->mu);
	int rc = exec1(a, "DELETE FROM tokens WHERE id=?", (const char *const[]){ id, NULL });
	pthread_mutex_unlock(&a->mu);
	if (rc > 0)
		notify(a);
	if (rc == 0)
		return ERR_CLOUD_NOT_FOUND;
	return rc < 0 ? rc : 0;
}

int cloud_auth_token_list(struct cloud_auth *a, const char *cluster,
			  void (*fn)(void *ctx, const struct cloud_token_info *t), void *ctx)
{
	pthread_mutex_lock(&a->mu);
	sqlite3_stmt *st = prep(a,
				cluster ? "SELECT id, cluster, created_ms FROM tokens WHERE cluster=? ORDER BY created_ms, id"
					: "SELECT id, cluster, created_ms FROM tokens ORDER BY cluster, created_ms, id",
				(const char *const[]){ cluster, NULL });
	int rc = st ? SQLITE_ROW : SQLITE_ERROR;
	while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cloud_token_info t = {
			.id = (const char *)sqlite3_column_text(st, 0),
			.cluster = (const char *)sqlite3_column_text(st, 1),
			.created_ms = sqlite3_column_int64(st, 2),
		};
		fn(ctx, &t);
	}
	int ret = rc == SQLITE_DONE ? 0 : sql_fail(a, "list tokens");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	return ret;
}

/* The token part of an Authorization value: after an optional "FlyV1 " or
 * "Bearer " scheme (any case), without surrounding spaces. */
static const char *token_of_header(const char *h, size_t *len)
{
	while (*h == ' ' || *h == '\t')
		h++;
	if (!strncasecmp(h, "FlyV1 ", 6))
		h += 6;
	else if (!strncasecmp(h, "Bearer ", 7))
		h += 7;
	while (*h == ' ' || *h == '\t')
		h++;
	size_t n = strlen(h);
	while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	*len = n;
	return h;
}

int cloud_auth_check(struct cloud_auth *a, const char *header, char *cluster)
{
	char id[CLOUD_TOKEN_ID_LEN + 1];
	return cloud_auth_check_id(a, header, cluster, id);
}

int cloud_auth_check_id(struct cloud_auth *a, const char *header, char *cluster, char *id)
{
	unsigned char hash[32], stored[32];
	size_t len = 0;

	cluster[0] = '\0';
	if (!header)
		return ERR_REPL_AUTH;
	const char *tok = token_of_header(header, &len);
	if (len != CLOUD_TOKEN_LEN || token_hash(tok, len, hash, id) != 0)
		return ERR_REPL_AUTH;
	memset(stored, 0xa5, sizeof(stored));
	bool found = false;
	pthread_mutex_lock(&a->mu);
	sqlite3_stmt *st = prep(a, "SELECT hash, cluster FROM tokens WHERE id=?", (const char *const[]){ id, NULL });
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == (int)sizeof(stored) &&
	    sqlite3_column_bytes(st, 1) <= CLOUD_CLUSTER_NAME_MAX) {
		memcpy(stored, sqlite3_column_blob(st, 0), sizeof(stored));
		snprintf(cluster, CLOUD_CLUSTER_NAME_MAX + 1, "%s", (const char *)sqlite3_column_text(st, 1));
		found = true;
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		sql_fail(a, "read token");
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	bool equal = CRYPTO_memcmp(hash, stored, sizeof(hash)) == 0;
	if (!found || !equal) {
		cluster[0] = '\0';
		return rc == SQLITE_ROW || rc == SQLITE_DONE ? ERR_REPL_AUTH : -EIO;
	}
	return 0;
}

int cloud_auth_token_alive(struct cloud_auth *a, const char *id, const char *cluster)
{
	pthread_mutex_lock(&a->mu);
	sqlite3_stmt *st = prep(a, "SELECT 1 FROM tokens WHERE id=? AND cluster=?", (const char *const[]){ id, cluster, NULL });
	int s = st ? sqlite3_step(st) : SQLITE_ERROR;
	int rc = s == SQLITE_ROW ? 0 : s == SQLITE_DONE ? ERR_REPL_AUTH : sql_fail(a, "read token");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

/* The cluster ID bound to cluster (a read, no write lock): 1 and *have
 * ("" if none yet), 0 if there is no such cluster, or -EIO. */
static int cluster_id_get(struct cloud_auth *a, const char *cluster, char *have)
{
	pthread_mutex_lock(&a->mu);
	sqlite3_stmt *st = prep(a, "SELECT cluster_id FROM clusters WHERE name=?", (const char *const[]){ cluster, NULL });
	int s = st ? sqlite3_step(st) : SQLITE_ERROR;
	int rc = s == SQLITE_ROW ? 1 : s == SQLITE_DONE ? 0 : sql_fail(a, "read cluster id");
	if (s == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(st, 0);
		snprintf(have, CLOUD_CLUSTER_ID_MAX + 1, "%s", v ? v : "");
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

int cloud_auth_bind_cluster_id(struct cloud_auth *a, const char *cluster, const char *id, char *known)
{
	if (!cluster_id_valid(id))
		return ERR_INVAL;
	/* Every request of a bound cluster carries its ID: answer those with a
	 * read; only the first sight needs the write transaction below. */
	char bound[CLOUD_CLUSTER_ID_MAX + 1] = "";
	int rc = cluster_id_get(a, cluster, bound);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return ERR_CLOUD_NOT_FOUND;
	if (bound[0]) {
		if (known)
			snprintf(known, CLOUD_CLUSTER_ID_MAX + 1, "%s", bound);
		return strcmp(bound, id) == 0 ? 0 : ERR_REPL_CLUSTER;
	}
	rc = tx_begin(a);
	if (rc != 0)
		return rc;
	rc = exec1(a, "UPDATE clusters SET cluster_id=?2 WHERE name=?1 AND cluster_id=''",
		   (const char *const[]){ cluster, id, NULL });
	if (rc > 0) {
		rc = 0;
	} else if (rc == 0) {
		sqlite3_stmt *st = prep(a, "SELECT cluster_id FROM clusters WHERE name=?", (const char *const[]){ cluster, NULL });
		int s = st ? sqlite3_step(st) : SQLITE_ERROR;
		if (s == SQLITE_ROW) {
			const char *have = (const char *)sqlite3_column_text(st, 0);
			rc = have && !strcmp(have, id) ? 0 : ERR_REPL_CLUSTER;
			if (known)
				snprintf(known, CLOUD_CLUSTER_ID_MAX + 1, "%s", have ? have : "");
		} else {
			rc = s == SQLITE_DONE ? ERR_CLOUD_NOT_FOUND : sql_fail(a, "read cluster id");
		}
		sqlite3_finalize(st);
	}
	/* A refusal changed nothing: end the transaction normally. */
	bool refused = rc == ERR_REPL_CLUSTER || rc == ERR_CLOUD_NOT_FOUND;
	int end = tx_end(a, refused ? 0 : rc);
	return end != 0 ? end : rc;
}

/* ---- Rebind ------------------------------------------------------------- */

int cloud_auth_rebind_open(struct cloud_auth *a, const char *cluster, int64_t window_ms, int64_t *until_ms)
{
	if (window_ms <= 0)
		return ERR_INVAL;
	int rc = tx_begin(a);
	if (rc != 0)
		return rc;
	const char *const args[] = { cluster, NULL };
	rc = exists1(a, "SELECT 1 FROM clusters WHERE name=?", args);
	if (rc == 0)
		rc = ERR_CLOUD_NOT_FOUND;
	int64_t until = clock_wall_ms() + window_ms;
	if (rc == 1)
		rc = exec_name_ms(a, "INSERT OR REPLACE INTO rebinds(name, until_ms) VALUES(?, ?)", cluster, until,
				  "insert rebind");
	if (rc == 0 && until_ms)
		*until_ms = until;
	return tx_end(a, rc);
}

int cloud_auth_rebind_step(struct cloud_auth *a, const char *cluster, const char *id, enum cloud_rebind_step step,
			   char *why, size_t why_len)
{
	char candidate[CLOUD_CLUSTER_ID_MAX + 1] = "", refused[CLOUD_CLUSTER_ID_MAX + 1] = "";
	int64_t until = 0;
	snprintf(why, why_len, "no rebind is open for this cluster");
	if (!cluster_id_valid(id))
		return ERR_INVAL;
	int rc = tx_begin(a);
	if (rc != 0)
		return rc;
	const char *const args[] = { cluster, NULL };
	sqlite3_stmt *st = prep(a, "SELECT until_ms, candidate, refused FROM rebinds WHERE name=?", args);
	int s = st ? sqlite3_step(st) : SQLITE_ERROR;
	if (s == SQLITE_ROW) {
		until = sqlite3_column_int64(st, 0);
		snprintf(candidate, sizeof(candidate), "%s", (const char *)sqlite3_column_text(st, 1));
		snprintf(refused, sizeof(refused), "%s", (const char *)sqlite3_column_text(st, 2));
	}
	sqlite3_finalize(st);
	if (s != SQLITE_ROW && s != SQLITE_DONE) {
		rc = sql_fail(a, "read rebind");
	} else if (s == SQLITE_DONE) {
		rc = ERR_REPL_CLUSTER;
	} else if (until < clock_wall_ms()) {
		snprintf(why, why_len, "the rebind window of this cluster has closed");
		rc = ERR_REPL_CLUSTER;
	} else if (!strcmp(refused, id)) {
		snprintf(why, why_len, "this node sent data of its own during the rebind window, so it cannot rebind");
		rc = ERR_REPL_CLUSTER;
	} else if (candidate[0] && strcmp(candidate, id) != 0) {
		snprintf(why, why_len, "another node (%.20s) is rebinding this cluster", candidate);
		rc = ERR_REPL_CLUSTER;
	} else if (step == CLOUD_REBIND_WRITE) {
		/* A node that stores before it took anything holds data of its
		 * own: never bind it; free the slot for the right node. */
		snprintf(why, why_len, "this node sent data of its own during the rebind window, so it cannot rebind");
		rc = exec1(a, "UPDATE rebinds SET refused=?2, candidate='' WHERE name=?1",
			   (const char *const[]){ cluster, id, NULL });
		rc = rc < 0 ? rc : ERR_REPL_CLUSTER;
	} else if (step == CLOUD_REBIND_LOOK) {
		rc = candidate[0] ? 0
				  : exec1(a, "UPDATE rebinds SET candidate=?2 WHERE name=?1",
					  (const char *const[]){ cluster, id, NULL });
		rc = rc < 0 ? rc : 0;
	} else {
		rc = exec1(a, "UPDATE clusters SET cluster_id=?2 WHERE name=?1", (const char *const[]){ cluster, id, NULL });
		if (rc >= 0)
			rc = exec1(a, "DELETE FROM rebinds WHERE name=?", args);
		rc = rc < 0 ? rc : 1;
	}
	/* A refusal may have recorded the refused ID: commit it. */
	int end = tx_end(a, rc == ERR_REPL_CLUSTER || rc == 1 ? 0 : rc);
	return end != 0 ? end : rc;
}

/* ---- Purges ------------------------------------------------------------- */

int cloud_auth_pending_purges(struct cloud_auth *a, void (*fn)(void *ctx, const char *cluster), void *ctx)
{
	char **names = NULL;
	size_t n = 0;
	int ret = 0;

	/* Collect first: fn purges through the engine, which must not run
	 * under this store's lock. */
	pthread_mutex_lock(&a->mu);
	sqlite3_stmt *st = prep(a, "SELECT name FROM purges ORDER BY requested_ms", NULL);
	int rc = st ? SQLITE_ROW : SQLITE_ERROR;
	while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		char *s = strdup((const char *)sqlite3_column_text(st, 0));
		char **grown = s ? realloc(names, (n + 1) * sizeof(*names)) : NULL;
		if (!grown) {
			free(s);
			ret = ERR_NOMEM;
			break;
		}
		names = grown;
		names[n++] = s;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = sql_fail(a, "list purges");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	for (size_t i = 0; i < n; i++) {
		if (ret == 0)
			fn(ctx, names[i]);
		free(names[i]);
	}
	free(names);
	return ret;
}

int cloud_auth_purge_done(struct cloud_auth *a, const char *cluster)
{
	pthread_mutex_lock(&a->mu);
	int rc = exec1(a, "DELETE FROM purges WHERE name=?", (const char *const[]){ cluster, NULL });
	pthread_mutex_unlock(&a->mu);
	if (rc > 0)
		notify(a);
	return rc < 0 ? rc : 0;
}

void cloud_auth_on_change(struct cloud_auth *a, void (*fn)(void *ctx), void *ctx)
{
	a->changed = fn;
	a->changed_ctx = ctx;
}

int cloud_auth_copy_to(struct cloud_auth *a, const char *path)
{
	sqlite3_stmt *st = NULL;
	pthread_mutex_lock(&a->mu);
	int rc = sqlite3_prepare_v2(a->db, "VACUUM INTO ?", -1, &st, NULL) == SQLITE_OK ? 0 : -EIO;
	if (rc == 0)
		sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
	if (rc == 0 && sqlite3_step(st) != SQLITE_DONE)
		rc = sql_fail(a, "copy");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

int cloud_auth_load(struct cloud_auth *a, const char *path)
{
	static const char *const tables[] = { "clusters", "tokens", "purges", "rebinds" };
	sqlite3_stmt *st = NULL;
	pthread_mutex_lock(&a->mu);
	int rc = sqlite3_prepare_v2(a->db, "ATTACH ? AS src", -1, &st, NULL) == SQLITE_OK ? 0 : -EIO;
	if (rc == 0)
		sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
	if (rc == 0 && sqlite3_step(st) != SQLITE_DONE)
		rc = sql_fail(a, "attach a copy");
	sqlite3_finalize(st);
	if (rc != 0) {
		pthread_mutex_unlock(&a->mu);
		return rc;
	}
	rc = sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : sql_fail(a, "begin");
	for (size_t i = 0; rc == 0 && i < sizeof(tables) / sizeof(tables[0]); i++) {
		char sql[160];
		snprintf(sql, sizeof(sql), "DELETE FROM main.%s; INSERT INTO main.%s SELECT * FROM src.%s;", tables[i],
			 tables[i], tables[i]);
		if (sqlite3_exec(a->db, sql, NULL, NULL, NULL) != SQLITE_OK)
			rc = sql_fail(a, "load a copy");
	}
	if (rc == 0 && sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = sql_fail(a, "commit a copy");
	if (rc != 0)
		sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_exec(a->db, "DETACH src", NULL, NULL, NULL);
	pthread_mutex_unlock(&a->mu);
	return rc;
}
