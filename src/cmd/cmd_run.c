/*
 * cmd_run.c — `litefs run --with-write-lock DB -- CMD [ARGS]`: runs CMD
 * holding the write lock on DB (node/writelock.h, docs/write-lock.md), so
 * that CMD may write DB on a replica. LiteFS's spelling
 * `-with-halt-lock-on DB` is accepted too. On the primary CMD simply runs.
 *
 * The command talks to the local node's HTTP API (-url, $LITEFS_URL, or
 * the default address): acquire, renew every WRITELOCK_RENEW_MS while CMD
 * runs, release when it exits. SIGINT, SIGTERM and SIGHUP are passed on
 * to CMD. If CMD was killed inside a rollback-journal transaction, the hot
 * journal is rolled back (by opening DB through the mount, as any SQLite
 * client would) while the lock is still held, so no half transaction is
 * left on the replica.
 *
 * Exit status: CMD's (128 + signal when it was killed); 1 when the lock
 * could not be taken or CMD could not start; 2 usage error.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/godur.h"
#include "base/httpc.h"
#include "cmd/cmd.h"
#include "node/supervise.h"
#include "node/writelock.h"

#define DEFAULT_URL "http://127.0.0.1:20202"

static const char run_usage[] =
	"Usage: litefs run [-url URL] [-timeout DUR] --with-write-lock DB -- CMD [ARGS...]\n"
	"\n"
	"Runs CMD holding the write lock on DB, so that CMD may write DB on a\n"
	"replica (a cron job, a one-off migration). While the lock is held the\n"
	"primary's own writers wait (SQLite's busy handler; SQLITE_BUSY once their\n"
	"busy timeout passes). Each transaction CMD commits is stored by the\n"
	"primary before the commit returns, then replicated to every node.\n"
	"On the primary itself CMD simply runs.\n"
	"\n"
	"The lock is renewed every second while CMD runs and released when it\n"
	"exits; if this command, CMD's node or the primary dies, the lock expires\n"
	"5 s after its last renewal and the primary's writers resume.\n"
	"\n"
	"Options:\n"
	"  --with-write-lock DB     the database: a path in the mount (/litefs/app.db)\n"
	"                           or its name (app.db); also -with-halt-lock-on DB\n"
	"  -url URL                 the local node's HTTP API (default: $LITEFS_URL,\n"
	"                           else " DEFAULT_URL ")\n"
	"  -timeout DUR             how long to wait for the lock (default 30s)\n"
	"  -h, --help               show this help\n"
	"\n"
	"Exit status: CMD's (128+N when a signal N ended it), 1 when the lock could\n"
	"not be taken or CMD could not start, 2 usage error.\n";

struct run_opts {
	const char *url;
	const char *db;          /* as given */
	char name[256];          /* its base name */
	int64_t timeout_ms;
	char **cmd;
};

static bool opt_is(const char *a, const char *name)
{
	while (*a == '-')
		a++;
	return !strcmp(a, name);
}

/* Value of option a (argv[*i]): "-k v" or "-k=v". NULL when missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
	const char *a = argv[*i];
	while (*a == '-')
		a++;
	size_t n = strlen(name);
	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0' || *i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

static int parse(int argc, char **argv, struct run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout_ms = 30000;
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (opt_is(a, "h") || opt_is(a, "help")) {
			fputs(run_usage, stdout);
			return 1;
		}
		if (a[0] != '-')
			break;
		const char *stem = a;
		while (*stem == '-')
			stem++;
		if (!strncmp(stem, "with-write-lock", 15) || !strncmp(stem, "with-halt-lock-on", 17)) {
			const char *key = !strncmp(stem, "with-write-lock", 15) ? "with-write-lock" : "with-halt-lock-on";
			if (!(v = opt_value(argc, argv, &i, key)) || !v[0])
				goto bad;
			o->db = v;
		} else if (!strncmp(stem, "url", 3)) {
			if (!(v = opt_value(argc, argv, &i, "url")))
				goto bad;
			o->url = v;
		} else if (!strncmp(stem, "timeout", 7)) {
			if (!(v = opt_value(argc, argv, &i, "timeout")) || godur_parse_ms(v, &o->timeout_ms) != 0 ||
			    o->timeout_ms < 0)
				goto bad;
		} else {
			goto bad;
		}
	}
	if (!o->db || i >= argc) {
		fprintf(stderr, "litefs run: %s\n\n%s", !o->db ? "--with-write-lock DB is required" : "CMD is missing",
			run_usage);
		return 2;
	}
	const char *base = strrchr(o->db, '/');
	snprintf(o->name, sizeof(o->name), "%s", base ? base + 1 : o->db);
	if (!o->name[0]) {
		fprintf(stderr, "litefs run: %s names no database\n", o->db);
		return 2;
	}
	o->cmd = argv + i;
	if (!o->url) {
		const char *env = getenv("LITEFS_URL");
		o->url = env && env[0] ? env : DEFAULT_URL;
	}
	return 0;
bad:
	fprintf(stderr, "litefs run: bad or incomplete option %s\n\n%s", argv[i < argc ? i : argc - 1], run_usage);
	return 2;
}

/* POST <url>/writelock/<op>. Returns the HTTP status (0: no reply) with
 * the JSON body in *out (caller frees) and an error text in err. */
static long post(CURL *c, const struct run_opts *o, const char *op, const char *token, json_t **out, char *err,
		 size_t err_len)
{
	char path[64], timeout[24];
	snprintf(path, sizeof(path), "/writelock/%s", op);
	snprintf(timeout, sizeof(timeout), "%" PRId64, o->timeout_ms);
	const char *query[] = { "name", o->name, "token", token, "timeout", timeout, NULL };
	char *url = httpc_url(c, o->url, path, query);
	*out = NULL;
	if (!url) {
		snprintf(err, err_len, "out of memory");
		return 0;
	}
	struct httpc_req q;
	httpc_req_init_post(&q, c, url);
	q.timeout_ms = o->timeout_ms + 20000;
	q.mem_max = 1 << 16;
	long status = 0;
	if (httpc_perform(&q) != CURLE_OK) {
		snprintf(err, err_len, "%s: %s", url, httpc_transport_error(&q));
	} else {
		status = q.status;
		if (status == 200) {
			json_error_t jerr;
			*out = q.mem ? json_loads(q.mem, 0, &jerr) : NULL;
		} else {
			struct httpc_error e;
			httpc_error_parse(&q, &e);
			snprintf(err, err_len, "%s (HTTP %ld)", e.text, status);
		}
	}
	httpc_req_free(&q);
	free(url);
	return status;
}

/* A CMD killed inside a rollback-journal transaction leaves a hot journal:
 * the first client to open the database rolls it back. Do it now, while
 * this replica may still write. */
static void roll_back_hot_journal(const struct run_opts *o)
{
	char jpath[4200];
	struct stat st;
	if (!strchr(o->db, '/'))
		return; /* only a name: the mount's path is unknown */
	snprintf(jpath, sizeof(jpath), "%s-journal", o->db);
	if (stat(jpath, &st) != 0 || st.st_size == 0)
		return;
	sqlite3 *conn = NULL;
	int rc = sqlite3_open_v2(o->db, &conn, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(conn, 5000);
		rc = sqlite3_exec(conn, "PRAGMA schema_version", NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK)
		fprintf(stderr, "litefs run: cannot roll back CMD's unfinished transaction on %s: %s\n", o->db,
			conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
	sqlite3_close(conn);
}

int cmd_run_main(int argc, char **argv)
{
	struct run_opts o;
	int rc = parse(argc, argv, &o);
	if (rc)
		return rc == 1 ? 0 : rc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURL *c = curl_easy_init();
	if (!c) {
		fprintf(stderr, "litefs run: cannot initialise libcurl\n");
		return 1;
	}
	char err[700], token[32] = "";
	json_t *reply = NULL;
	bool primary = false;
	int64_t deadline = clock_mono_ms() + o.timeout_ms;
	for (;;) {
		long status = post(c, &o, "acquire", NULL, &reply, err, sizeof(err));
		if (status == 200)
			break;
		/* Held by someone else, or no primary right now: wait. */
		if ((status != 409 && status != 503 && status != 0) || clock_mono_ms() >= deadline) {
			fprintf(stderr, "litefs run: cannot take the write lock on %s: %s\n", o.name, err);
			curl_easy_cleanup(c);
			return 1;
		}
		usleep(200000);
	}
	primary = json_is_true(json_object_get(reply, "primary"));
	const char *t = json_string_value(json_object_get(reply, "token"));
	snprintf(token, sizeof(token), "%s", t ? t : "");
	json_decref(reply);

	sigset_t sigs, old;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, &old);
	pid_t pid = fork();
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		execvp(o.cmd[0], o.cmd);
		fprintf(stderr, "litefs run: cannot run %s: %s\n", o.cmd[0], strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		fprintf(stderr, "litefs run: fork: %s\n", strerror(errno));
		if (!primary)
			post(c, &o, "release", token, &reply, err, sizeof(err));
		json_decref(reply);
		curl_easy_cleanup(c);
		return 1;
	}
	int status = 0;
	bool lost = false;
	int64_t next_renew = clock_mono_ms() + WRITELOCK_RENEW_MS;
	for (;;) {
		int64_t wait = next_renew - clock_mono_ms();
		struct timespec ts = { (time_t)(wait > 0 ? wait / 1000 : 0), (long)(wait > 0 ? wait % 1000 : 0) * 1000000L };
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig == SIGCHLD || sig < 0) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			if (w == pid)
				break;
		} else if (sig > 0) {
			kill(pid, sig);
		}
		if (!primary && !lost && clock_mono_ms() >= next_renew) {
			long s = post(c, &o, "renew", token, &reply, err, sizeof(err));
			json_decref(reply);
			reply = NULL;
			if (s != 200 && s != 0) {
				/* The node or the primary says it is gone: CMD's
				 * writes now fail as on any replica. */
				fprintf(stderr, "litefs run: the write lock on %s was lost: %s\n", o.name, err);
				lost = true;
			} else if (s == 0) {
				fprintf(stderr, "litefs run: cannot renew the write lock on %s: %s\n", o.name, err);
			}
			next_renew = clock_mono_ms() + WRITELOCK_RENEW_MS;
		}
	}
	if (!primary) {
		roll_back_hot_journal(&o);
		if (!lost && post(c, &o, "release", token, &reply, err, sizeof(err)) != 200)
			fprintf(stderr, "litefs run: cannot release the write lock on %s (it expires by itself): %s\n",
				o.name, err);
		json_decref(reply);
	}
	curl_easy_cleanup(c);
	curl_global_cleanup();
	return supervise_exit_code(status);
}
