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
 * reaches the node. The node validates the whole file (integrity_check)
 * before it becomes one transaction.
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
#include "cmd/cmd.h"

#define DEFAULT_URL "http://127.0.0.1:20202"
#define PROGRESS_MIN_BYTES (64ll << 20)
#define PROGRESS_INTERVAL_MS 250
#define MAX_ERROR_BODY (64 * 1024)

static const char import_usage[] =
	"Usage: litefs import [-url URL] -name NAME FILE\n"
	"\n"
	"Imports the SQLite database FILE into the database NAME of a running node,\n"
	"as one transaction. The node checks the file (SQLite header, PRAGMA\n"
	"integrity_check) before anything changes; an existing database NAME is\n"
	"replaced and keeps its journal mode.\n"
	"\n"
	"Options:\n"
	"  -url URL     the node's HTTP API (default: $LITEFS_URL, else " DEFAULT_URL ")\n"
	"  -name NAME   the database name in the mount\n"
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

/* "<url>/<path>?name=<escaped name>". Caller frees. */
static char *build_url(CURL *c, const char *base, const char *path, const char *name)
{
	char *esc = curl_easy_escape(c, name, 0);
	char *u = NULL;
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	if (esc && asprintf(&u, "%.*s%s?name=%s", (int)n, base, path, esc) < 0)
		u = NULL;
	curl_free(esc);
	return u;
}

/* ---- Response bodies and errors ------------------------------------------ */

struct membuf {
	char *data;
	size_t len;
};

static void membuf_append(struct membuf *b, const char *p, size_t n)
{
	if (b->len >= MAX_ERROR_BODY)
		return;
	if (n > MAX_ERROR_BODY - b->len)
		n = MAX_ERROR_BODY - b->len;
	char *d = realloc(b->data, b->len + n + 1);
	if (!d)
		return;
	memcpy(d + b->len, p, n);
	b->data = d;
	b->len += n;
	b->data[b->len] = '\0';
}

static size_t membuf_write(char *p, size_t size, size_t n, void *ud)
{
	membuf_append(ud, p, size * n);
	return size * n;
}

/* Prints the node's refusal: the JSON "error" text, else the raw body. */
static void print_http_error(const char *cmd, long code, const struct membuf *body)
{
	const char *msg = NULL;
	json_t *j = body->data ? json_loads(body->data, 0, NULL) : NULL;
	if (j && json_is_string(json_object_get(j, "error")))
		msg = json_string_value(json_object_get(j, "error"));
	if (msg)
		fprintf(stderr, "litefs %s: the node refused (HTTP %ld): %s\n", cmd, code, msg);
	else
		fprintf(stderr, "litefs %s: the node replied HTTP %ld%s%.500s\n", cmd, code,
			body->len ? ": " : "", body->data ? body->data : "");
	json_decref(j);
}

/* ---- Progress ------------------------------------------------------------- */

struct progress {
	const char *verb;      /* "uploaded" / "downloaded" */
	bool enabled;          /* stderr is a terminal */
	bool shown;            /* a progress line was printed */
	bool upload_done_said;
	int64_t start_ms, last_ms;
};


static void progress_line(struct progress *p, curl_off_t done, curl_off_t total, int64_t now)
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

static int progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct progress *p = ud;
	bool upload = p->verb[0] == 'u';
	curl_off_t total = upload ? ultotal : dltotal, now_b = upload ? ulnow : dlnow;
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

static void setup_curl(CURL *c, struct progress *p, char *errbuf)
{
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "litefs-cli");
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, p);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	p->enabled = isatty(STDERR_FILENO);
	p->start_ms = p->last_ms = clock_mono_ms();
}

static void print_curl_error(const char *cmd, const char *url, CURLcode rc, const char *errbuf)
{
	fprintf(stderr, "litefs %s: request to %s failed: %s\n", cmd, url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* ---- litefs import ---------------------------------------------------------- */

struct upload {
	int fd;
	int err; /* errno of a failed read */
};

static size_t upload_read(char *buf, size_t size, size_t n, void *ud)
{
	struct upload *u = ud;
	for (;;) {
		ssize_t r = read(u->fd, buf, size * n);
		if (r >= 0)
			return (size_t)r;
		if (errno != EINTR) {
			u->err = errno;
			return CURL_READFUNC_ABORT;
		}
	}
}

/* libcurl rewinds the body when it must resend it (e.g. after a redirect). */
static int upload_seek(void *ud, curl_off_t off, int origin)
{
	struct upload *u = ud;
	return lseek(u->fd, (off_t)off, origin) < 0 ? CURL_SEEKFUNC_FAIL : CURL_SEEKFUNC_OK;
}

int cmd_import_main(int argc, char **argv)
{
	struct opts o;
	int r = parse_args("import", import_usage, argc, argv, &o);
	if (r >= 0)
		return r;

	struct upload up = { .fd = open(o.file, O_RDONLY | O_CLOEXEC) };
	if (up.fd < 0) {
		fprintf(stderr, "litefs import: cannot open %s: %s\n", o.file, strerror(errno));
		return 1;
	}
	struct stat sb;
	unsigned char hdr[16];
	if (fstat(up.fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		fprintf(stderr, "litefs import: %s is not a regular file\n", o.file);
		close(up.fd);
		return 1;
	}
	if (pread(up.fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || memcmp(hdr, "SQLite format 3", 16) != 0) {
		fprintf(stderr, "litefs import: %s is not a SQLite database (it does not start with "
				"the header \"SQLite format 3\")\n",
			o.file);
		close(up.fd);
		return 1;
	}

	int exit_code = 1;
	char errbuf[CURL_ERROR_SIZE] = "";
	struct membuf body = { 0 };
	struct progress prog = { .verb = "uploaded" };
	struct curl_slist *hdrs = NULL;
	char *url = NULL;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURL *c = curl_easy_init();
	if (!c || !(url = build_url(c, o.url, "/import", o.name))) {
		fprintf(stderr, "litefs import: cannot initialise libcurl\n");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/vnd.sqlite3");
	setup_curl(c, &prog, errbuf);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, upload_read);
	curl_easy_setopt(c, CURLOPT_READDATA, &up);
	curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, upload_seek);
	curl_easy_setopt(c, CURLOPT_SEEKDATA, &up);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)sb.st_size);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, membuf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);

	CURLcode rc = curl_easy_perform(c);
	progress_end(&prog);
	long code = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (rc != CURLE_OK && code < 200) {
		/* No final reply (0, or only "100 Continue"). */
		if (up.err)
			fprintf(stderr, "litefs import: cannot read %s: %s\n", o.file, strerror(up.err));
		else
			print_curl_error("import", url, rc, errbuf);
		goto out;
	}
	if (code != 200) {
		/* A refusal may arrive before the whole body was sent. */
		print_http_error("import", code, &body);
		goto out;
	}
	if (rc != CURLE_OK) {
		print_curl_error("import", url, rc, errbuf);
		goto out;
	}
	json_t *j = body.data ? json_loads(body.data, 0, NULL) : NULL;
	const char *txid = j ? json_string_value(json_object_get(j, "txid")) : NULL;
	const char *chk = j ? json_string_value(json_object_get(j, "checksum")) : NULL;
	printf("Imported %s into database %s (%" PRId64 " bytes): txid=%s checksum=%s\n", o.file, o.name,
	       (int64_t)sb.st_size, txid ? txid : "?", chk ? chk : "?");
	json_decref(j);
	exit_code = 0;
out:
	curl_slist_free_all(hdrs);
	if (c)
		curl_easy_cleanup(c);
	curl_global_cleanup();
	free(url);
	free(body.data);
	close(up.fd);
	return exit_code;
}

/* ---- litefs export ---------------------------------------------------------- */

struct download {
	CURL *curl;
	int fd;
	uint64_t n_bytes;
	int err;              /* errno of a failed write */
	int status_known;     /* 1: 200, writing to fd; 2: error body */
	struct membuf errbody;
};

static size_t download_write(char *p, size_t size, size_t n, void *ud)
{
	struct download *d = ud;
	size_t len = size * n;
	if (d->status_known == 0) {
		long code = 0;
		curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &code);
		d->status_known = code == 200 ? 1 : 2;
	}
	if (d->status_known == 2) {
		membuf_append(&d->errbody, p, len);
		return len;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(d->fd, p + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			d->err = w < 0 ? errno : EIO;
			return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
		}
		done += (size_t)w;
	}
	d->n_bytes += len;
	return len;
}

int cmd_export_main(int argc, char **argv)
{
	struct opts o;
	int r = parse_args("export", export_usage, argc, argv, &o);
	if (r >= 0)
		return r;

	int exit_code = 1;
	char errbuf[CURL_ERROR_SIZE] = "";
	char *url = NULL, *tmp = NULL, *dir_copy = NULL, *base_copy = NULL;
	struct progress prog = { .verb = "downloaded" };
	struct download d = { .fd = -1 };
	CURL *c = NULL;
	bool curl_inited = false;

	/* The temp file sits next to the target so that rename() is atomic. */
	if (!(dir_copy = strdup(o.file)) || !(base_copy = strdup(o.file)))
		goto oom;
	const char *dir = dirname(dir_copy), *base = basename(base_copy);
	if (asprintf(&tmp, "%s/.%s.tmp-XXXXXX", dir, base) < 0) {
		tmp = NULL;
		goto oom;
	}
	d.fd = mkostemp(tmp, O_CLOEXEC);
	if (d.fd < 0) {
		fprintf(stderr, "litefs export: cannot create a temp file in %s: %s\n", dir, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}

	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl_inited = true;
	c = curl_easy_init();
	if (!c || !(url = build_url(c, o.url, "/export", o.name))) {
		fprintf(stderr, "litefs export: cannot initialise libcurl\n");
		goto out;
	}
	d.curl = c;
	setup_curl(c, &prog, errbuf);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, download_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);

	CURLcode rc = curl_easy_perform(c);
	progress_end(&prog);
	long code = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 200 && code != 200) {
		print_http_error("export", code, &d.errbody);
		goto out;
	}
	if (rc != CURLE_OK) {
		if (d.err)
			fprintf(stderr, "litefs export: cannot write %s: %s\n", tmp, strerror(d.err));
		else
			print_curl_error("export", url, rc, errbuf);
		goto out;
	}
	/* An empty database exports as an empty file; anything else must
	 * look like SQLite before it replaces the target. */
	unsigned char hdr[16];
	if (d.n_bytes != 0 &&
	    (pread(d.fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || memcmp(hdr, "SQLite format 3", 16) != 0)) {
		fprintf(stderr, "litefs export: the node sent something that is not a SQLite database\n");
		goto out;
	}
	mode_t mask = umask(0);
	umask(mask);
	if (fchmod(d.fd, 0666 & ~mask) != 0 || fsync(d.fd) != 0) {
		fprintf(stderr, "litefs export: cannot write %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	if (close(d.fd) != 0) {
		d.fd = -1;
		fprintf(stderr, "litefs export: cannot write %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	d.fd = -1;
	if (rename(tmp, o.file) != 0) {
		fprintf(stderr, "litefs export: cannot rename %s to %s: %s\n", tmp, o.file, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	char *pos = NULL;
	struct curl_header *h = NULL;
	if (curl_easy_header(c, "Litefs-Pos", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h)
		pos = h->value;
	printf("Exported database %s to %s (%" PRIu64 " bytes)%s%s\n", o.name, o.file, d.n_bytes,
	       pos ? ": position " : "", pos ? pos : "");
	exit_code = 0;
	goto out;
oom:
	fprintf(stderr, "litefs export: out of memory\n");
out:
	if (d.fd >= 0)
		close(d.fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	if (c)
		curl_easy_cleanup(c);
	if (curl_inited)
		curl_global_cleanup();
	free(url);
	free(dir_copy);
	free(base_copy);
	free(d.errbody.data);
	return exit_code;
}
