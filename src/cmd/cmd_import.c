/*
 * cmd_import.c — `litefs import` and `litefs export`: clients of a running
 * node's HTTP API (POST /import, GET /export; see docs/http.md), through
 * libcurl.
 *
 *   litefs import [-url URL] -name NAME FILE
 *   litefs export [-url URL] -name NAME FILE
 *
 * Import streams FILE from disk (CURLOPT_READFUNCTION with a known
 * Content-Length, so a file of any size uses a fixed amount of memory) and
 * checks the SQLite header locally first, so an obviously wrong file never
 * reaches the node. The node validates the whole file (quick_check, or
 * integrity_check with -full-check) before it becomes one transaction.
 *
 * Export writes atomically: the body goes to a temp file in the target's
 * directory, which is fsync'd and renamed over FILE only when the transfer
 * is complete and looks like a SQLite file; on any error the temp file is
 * removed and FILE is untouched. The directory is fsync'd after the rename
 * so the new name survives a crash.
 *
 * Exit codes: 0 success, 1 failure (the message includes the node's JSON
 * "error" text when there is one), 2 usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/dlsink.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/httpc.h"
#include "cmd/cmd.h"

#define DEFAULT_URL "http://127.0.0.1:20202"
#define PROGRESS_MIN_BYTES (64ll << 20)
#define PROGRESS_INTERVAL_MS 250

static const char import_usage[] =
	"Usage: litefs import [-url URL] [-full-check] -name NAME FILE\n"
	"\n"
	"Imports the SQLite database FILE into the database NAME of a running node,\n"
	"as one transaction. The node checks the file (SQLite header, PRAGMA\n"
	"quick_check: every b-tree page) before anything changes; an existing\n"
	"database NAME is replaced and keeps its journal mode. On a terminal,\n"
	"progress is shown on stderr.\n"
	"\n"
	"Options:\n"
	"  -url URL     the node's HTTP API (default: $LITEFS_URL, else " DEFAULT_URL ")\n"
	"  -name NAME   the database name in the mount\n"
	"  -full-check  PRAGMA integrity_check instead of quick_check: every index\n"
	"               is also compared with its table (several times slower)\n"
	"  -h, --help   show this help\n"
	"\n"
	"Options take one dash or two, and -opt=value as well as -opt value.\n"
	"Exit status: 0 success, 1 failure, 2 usage error.\n";

static const char export_usage[] =
	"Usage: litefs export [-url URL] -name NAME FILE\n"
	"\n"
	"Writes a consistent copy of the database NAME of a running node to FILE\n"
	"(a SQLite database file). FILE is replaced atomically: on any error it is\n"
	"left untouched.\n"
	"\n"
	"Options:\n"
	"  -url URL     the node's HTTP API (default: $LITEFS_URL, else " DEFAULT_URL ")\n"
	"  -name NAME   the database name in the mount\n"
	"  -h, --help   show this help\n"
	"\n"
	"Options take one dash or two, and -opt=value as well as -opt value.\n"
	"Exit status: 0 success, 1 failure, 2 usage error.\n";

struct opts {
	const char *url;
	const char *name;
	const char *file;
	bool full_check; /* import: -full-check */
};

/* Matches "-key", "--key", "-key=v", "--key=v". Returns 1 and sets *val
 * (consuming the next argument if needed), 0 if a is not this option, or
 * -1 if the value is missing. */
static int match_opt(const char *key, int argc, char **argv, int *i, const char **val)
{
	const char *a = argv[*i];
	if (a[0] != '-')
		return 0;
	a += a[1] == '-' ? 2 : 1;
	size_t n = strlen(key);
	if (strncmp(a, key, n) != 0)
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n] != '\0')
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

/* Parses the common arguments. Returns -1 to continue, or an exit code. */
static int parse_args(const char *cmd, const char *usage, int argc, char **argv, struct opts *o)
{
	const char *v;
	int r;

	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "-help") || !strcmp(a, "--help")) {
			fputs(usage, stdout);
			return 0;
		}
		if (!strcmp(cmd, "import") && (!strcmp(a, "-full-check") || !strcmp(a, "--full-check"))) {
			o->full_check = true;
			continue;
		}
		if (!strcmp(a, "--")) {
			for (i++; i < argc; i++) {
				if (o->file) {
					fprintf(stderr, "litefs %s: unexpected argument %s\n\n%s", cmd, argv[i], usage);
					return 2;
				}
				o->file = argv[i];
			}
			break;
		}
		const char **dst = NULL;
		if ((r = match_opt("url", argc, argv, &i, &v)) != 0)
			dst = &o->url;
		else if ((r = match_opt("name", argc, argv, &i, &v)) != 0)
			dst = &o->name;
		if (r < 0) {
			fprintf(stderr, "litefs %s: %s needs a value\n\n%s", cmd, a, usage);
			return 2;
		}
		if (dst) {
			*dst = v;
			continue;
		}
		if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "litefs %s: unknown option %s\n\n%s", cmd, a, usage);
			return 2;
		}
		if (o->file) {
			fprintf(stderr, "litefs %s: unexpected argument %s\n\n%s", cmd, a, usage);
			return 2;
		}
		o->file = a;
	}
	if (!o->name || !o->name[0]) {
		fprintf(stderr, "litefs %s: -name is required\n\n%s", cmd, usage);
		return 2;
	}
	if (!o->file || !o->file[0]) {
		fprintf(stderr, "litefs %s: FILE is required\n\n%s", cmd, usage);
		return 2;
	}
	if (!o->url) {
		const char *env = getenv("LITEFS_URL");
		o->url = env && env[0] ? env : DEFAULT_URL;
	}
	return -1;
}

/* Prints the node's refusal: the JSON "error" text, else the raw body. */
static void print_http_error(const char *cmd, const struct httpc_req *q)
{
	struct httpc_error e;
	httpc_error_parse(q, &e);
	if (e.from_json)
		fprintf(stderr, "litefs %s: the node refused (HTTP %ld): %s\n", cmd, q->status, e.text);
	else
		fprintf(stderr, "litefs %s: the node replied HTTP %ld%s%.500s\n", cmd, q->status, q->mem_len ? ": " : "",
			q->mem_len ? e.text : "");
}

/* ---- Progress ------------------------------------------------------------- */

struct progress {
	const char *verb;      /* "uploaded" / "downloaded" */
	bool enabled;          /* stderr is a terminal */
	bool shown;            /* a progress line was printed */
	bool upload_done_said;
	int64_t start_ms, last_ms;
};


static void progress_line(struct progress *p, int64_t done, int64_t total, int64_t now)
{
	double secs = (double)(now - p->start_ms) / 1000.0;
	double mb = (double)done / (1024.0 * 1024.0);
	double rate = secs > 0 ? mb / secs : 0;
	if (total > 0)
		fprintf(stderr, "\r%s %.1f / %.1f MiB (%.1f MiB/s)   ", p->verb, mb,
			(double)total / (1024.0 * 1024.0), rate);
	else
		fprintf(stderr, "\r%s %.1f MiB (%.1f MiB/s)   ", p->verb, mb, rate);
	p->shown = true;
}

static int progress_cb(void *ud, int64_t dltotal, int64_t dlnow, int64_t ultotal, int64_t ulnow)
{
	struct progress *p = ud;
	bool upload = p->verb[0] == 'u';
	int64_t total = upload ? ultotal : dltotal, now_b = upload ? ulnow : dlnow;
	int64_t now = clock_mono_ms();

	if (!p->enabled || (total < PROGRESS_MIN_BYTES && now_b < PROGRESS_MIN_BYTES))
		return 0;
	if (upload && total > 0 && now_b >= total) {
		if (!p->upload_done_said) {
			progress_line(p, now_b, total, now);
			fprintf(stderr, "\nwaiting for the node to check and apply the file...");
			p->upload_done_said = true;
		}
		return 0;
	}
	if (now - p->last_ms >= PROGRESS_INTERVAL_MS) {
		p->last_ms = now;
		progress_line(p, now_b, total, now);
	}
	return 0;
}

static void progress_end(struct progress *p)
{
	if (p->shown)
		fputc('\n', stderr);
}

/* A request of the CLI on c (borrowed), with its progress line. */
static void req_init(struct httpc_req *q, CURL *c, const char *url, struct progress *p)
{
	httpc_req_init(q, c);
	q->url = url;
	q->user_agent = "litefs-cli";
	q->progress = progress_cb;
	q->progress_ctx = p;
	p->enabled = isatty(STDERR_FILENO);
	p->start_ms = p->last_ms = clock_mono_ms();
}

static void print_curl_error(const char *cmd, const char *url, const struct httpc_req *q)
{
	fprintf(stderr, "litefs %s: request to %s failed: %s\n", cmd, url, httpc_transport_error(q));
}

/* ---- litefs import ---------------------------------------------------------- */

int cmd_import_main(int argc, char **argv)
{
	struct opts o;
	int r = parse_args("import", import_usage, argc, argv, &o);
	if (r >= 0)
		return r;

	int fd = open(o.file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "litefs import: cannot open %s: %s\n", o.file, strerror(errno));
		return 1;
	}
	struct stat sb;
	unsigned char hdr[16];
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		fprintf(stderr, "litefs import: %s is not a regular file\n", o.file);
		close(fd);
		return 1;
	}
	if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || memcmp(hdr, "SQLite format 3", 16) != 0) {
		fprintf(stderr, "litefs import: %s is not a SQLite database (it does not start with "
				"the header \"SQLite format 3\")\n",
			o.file);
		close(fd);
		return 1;
	}

	int exit_code = 1;
	struct progress prog = { .verb = "uploaded" };
	struct curl_slist *hdrs = NULL;
	struct httpc_req q;
	char *url = NULL;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURL *c = curl_easy_init();
	const char *const query[] = { "name", o.name, "check", o.full_check ? "full" : NULL, NULL };
	req_init(&q, c, NULL, &prog);
	if (!c || !(url = httpc_url(c, o.url, "/import", query)) ||
	    httpc_add_header(&hdrs, "Content-Type: application/vnd.sqlite3") != 0) {
		fprintf(stderr, "litefs import: cannot initialise libcurl\n");
		goto out;
	}
	q.url = url;
	q.headers = hdrs;
	q.up_fd = fd;
	q.up_len = (uint64_t)sb.st_size;

	CURLcode rc = httpc_perform(&q);
	progress_end(&prog);
	long code = q.status;
	if (rc != CURLE_OK && code < 200) {
		/* No final reply (0, or only "100 Continue"). */
		if (q.up_err)
			fprintf(stderr, "litefs import: cannot read %s: %s\n", o.file, err_str(q.up_err));
		else
			print_curl_error("import", url, &q);
		goto out;
	}
	if (code != 200) {
		/* A refusal may arrive before the whole body was sent. */
		print_http_error("import", &q);
		goto out;
	}
	if (rc != CURLE_OK) {
		print_curl_error("import", url, &q);
		goto out;
	}
	json_t *j = q.mem ? json_loads(q.mem, 0, NULL) : NULL;
	const char *txid = j ? json_string_value(json_object_get(j, "txid")) : NULL;
	const char *chk = j ? json_string_value(json_object_get(j, "checksum")) : NULL;
	printf("Imported %s into database %s (%" PRId64 " bytes): txid=%s checksum=%s\n", o.file, o.name,
	       (int64_t)sb.st_size, txid ? txid : "?", chk ? chk : "?");
	json_decref(j);
	exit_code = 0;
out:
	curl_slist_free_all(hdrs);
	httpc_req_free(&q);
	if (c)
		curl_easy_cleanup(c);
	curl_global_cleanup();
	free(url);
	close(fd);
	return exit_code;
}

/* ---- litefs export ---------------------------------------------------------- */

/* A 200 body goes into the file that will replace the target through a
 * sink whose thread writes it as it arrives (base/dlsink.h). */
#define EXPORT_RECV_BUFFER (1u << 20)

int cmd_export_main(int argc, char **argv)
{
	struct opts o;
	int r = parse_args("export", export_usage, argc, argv, &o);
	if (r >= 0)
		return r;

	int exit_code = 1;
	char *url = NULL, pos[80] = "";
	struct progress prog = { .verb = "downloaded" };
	struct fileio_replace fr;
	struct fileio_replace *out = &fr;
	struct dlsink *sink = NULL;
	struct httpc_req q;
	CURL *c = NULL;
	bool curl_inited = false;

	/* The temp file sits next to the target so that rename() is atomic. */
	int frc = fileio_replace_open(out, o.file, 0666);
	if (frc != 0 || (frc = dlsink_start(&sink, out)) != 0) {
		fprintf(stderr, "litefs export: cannot create a temp file beside %s: %s\n", o.file, err_str(frc));
		if (out->fd >= 0)
			fileio_replace_abort(out);
		return 1;
	}

	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl_inited = true;
	c = curl_easy_init();
	const char *const query[] = { "name", o.name, NULL };
	req_init(&q, c, NULL, &prog);
	if (!c || !(url = httpc_url(c, o.url, "/export", query))) {
		fprintf(stderr, "litefs export: cannot initialise libcurl\n");
		goto out;
	}
	q.url = url;
	q.ok_write = dlsink_write;
	q.ok_ctx = sink;
	q.recv_buffer = EXPORT_RECV_BUFFER; /* fewer, larger reads and writes */

	CURLcode rc = httpc_perform(&q);
	progress_end(&prog);
	dlsink_finish(sink); /* sets out->err */
	sink = NULL;
	long code = q.status;
	if (code >= 200 && code != 200) {
		print_http_error("export", &q);
		goto out;
	}
	if (rc != CURLE_OK) {
		if (out->err)
			fprintf(stderr, "litefs export: cannot write %s: %s\n", out->tmp, strerror(-out->err));
		else
			print_curl_error("export", url, &q);
		goto out;
	}
	/* An empty database exports as an empty file; anything else must
	 * look like SQLite before it replaces the target. */
	unsigned char hdr[16];
	if (out->off != 0 &&
	    (pread(out->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || memcmp(hdr, "SQLite format 3", 16) != 0)) {
		fprintf(stderr, "litefs export: the node sent something that is not a SQLite database\n");
		goto out;
	}
	uint64_t n_bytes = (uint64_t)out->off;
	frc = fileio_replace_commit(out);
	if (frc != 0) {
		fprintf(stderr, "litefs export: cannot write %s: %s\n", o.file, strerror(-frc));
		goto out;
	}
	bool has_pos = httpc_header(&q, "Litefs-Pos", pos, sizeof(pos));
	printf("Exported database %s to %s (%" PRIu64 " bytes)%s%s\n", o.name, o.file, n_bytes,
	       has_pos ? ": position " : "", has_pos ? pos : "");
	exit_code = 0;
out:
	if (sink)
		dlsink_finish(sink);
	fileio_replace_abort(out);
	httpc_req_free(&q);
	if (c)
		curl_easy_cleanup(c);
	if (curl_inited)
		curl_global_cleanup();
	free(url);
	return exit_code;
}
