/*
 * cmd_ltx.c — `litefs ltx`: inspect, verify, apply, snapshot and compact
 * LTX files from the command line, mirroring Go's `ltx` tool.
 *
 * This is a boundary module: it opens files, prints results on stdout and
 * errors on stderr, and maps outcomes to exit codes (0 ok, 1 error,
 * 2 usage). Errors name the file and, for LTX input, the byte offset:
 *   litefs ltx verify: x.ltx: offset 12345: ltx: file checksum mismatch
 *
 * Options are Go-flag style (-o OUT, -o=OUT, -compress); a double dash
 * works too (--o, --compress), options may appear between arguments, and
 * "--" ends them.
 *
 * Outputs (encode-db, compact) are written atomically: a temporary file in
 * the destination's directory, fsync, rename over the destination, fsync
 * of the directory. A failure removes the temporary file and leaves any
 * existing destination untouched. Durable steps (database writes inside
 * dbfile_apply(), fsync, rename) go through sys.h, so LITEFS_FAULT can
 * make the Nth one fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "cmd/cmd.h"
#include "ltx/compact.h"
#include "ltx/dbfile.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "base/sys.h"

#define EXIT_OK 0
#define EXIT_ERR 1
#define EXIT_USAGE 2

static const char ltx_usage[] =
	"Usage: litefs ltx <subcommand> [options] [arguments]\n"
	"\n"
	"Subcommands:\n"
	"  dump FILE                     print the header, every page (pgno, checksum)\n"
	"                                and the trailer of an LTX file\n"
	"  list FILE...                  one line per file: TXID range, commit, page size,\n"
	"                                pre/post-apply checksums, timestamp, size\n"
	"  verify FILE...                decode fully and check every rule and checksum\n"
	"  checksum [-page-size N] DB    print the database checksum of a database file\n"
	"  apply -db DB FILE...          apply LTX files in order to DB (created if absent)\n"
	"                                and print the resulting position TXID/CHECKSUM\n"
	"  encode-db [-compress] [-txid TXID] [-page-size N] -o OUT DB\n"
	"                                write a snapshot LTX file of a database\n"
	"  compact [-compress] -o OUT FILE...\n"
	"                                merge a contiguous run of LTX files into one\n"
	"  split [-o DIR] SEGMENT...      write each record of a node's LTX segment\n"
	"                                (data.dir/dbs/NAME/ltx/*.ltxlog) as an LTX file\n"
	"\n"
	"list and verify also accept segments (one line or check per record).\n"
	"\n"
	"Run 'litefs ltx <subcommand> -h' for details. Exit status: 0 success,\n"
	"1 error, 2 usage error.\n";

/* ---- Option parsing --------------------------------------------------- */

struct opt {
	const char *name;
	enum { OPT_BOOL, OPT_STR } kind;
	void *out; /* bool * or const char ** */
};

/* Parses argv[1..argc) (argv[0] is the subcommand). Options are removed
 * and the remaining arguments are moved, in order, to the front of argv+1:
 * on return they are argv[1..1+*n_args). Returns -1 to go on, or the exit
 * code (0 after help, 2 on a usage error). */
static int parse_opts(int argc, char **argv, const struct opt *opts, const char *usage, int *n_args)
{
	char **args = argv + 1; /* in place: an argument never moves forward */
	bool only_args = false;

	*n_args = 0;
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (only_args || a[0] != '-' || a[1] == '\0') {
			args[(*n_args)++] = a;
			continue;
		}
		if (!strcmp(a, "--")) {
			only_args = true;
			continue;
		}
		const char *name = a + (a[1] == '-' ? 2 : 1);
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		if ((len == 1 && name[0] == 'h') || (len == 4 && !strncmp(name, "help", 4))) {
			fputs(usage, stdout);
			return EXIT_OK;
		}
		const struct opt *o = NULL;
		for (const struct opt *p = opts; p && p->name; p++)
			if (strlen(p->name) == len && !strncmp(p->name, name, len))
				o = p;
		if (!o) {
			fprintf(stderr, "litefs ltx %s: unknown option %s\n\n%s", argv[0], a, usage);
			return EXIT_USAGE;
		}
		if (o->kind == OPT_BOOL) {
			bool v = true;
			if (eq) {
				if (!strcmp(eq + 1, "true") || !strcmp(eq + 1, "1"))
					v = true;
				else if (!strcmp(eq + 1, "false") || !strcmp(eq + 1, "0"))
					v = false;
				else {
					fprintf(stderr, "litefs ltx %s: invalid boolean %s\n", argv[0], a);
					return EXIT_USAGE;
				}
			}
			*(bool *)o->out = v;
		} else if (eq) {
			*(const char **)o->out = eq + 1;
		} else if (i + 1 < argc) {
			*(const char **)o->out = argv[++i];
		} else {
			fprintf(stderr, "litefs ltx %s: option %s needs a value\n\n%s", argv[0], a, usage);
			return EXIT_USAGE;
		}
	}
	return -1;
}

static int usage_error(const char *sub, const char *msg, const char *usage)
{
	fprintf(stderr, "litefs ltx %s: %s\n\n%s", sub, msg, usage);
	return EXIT_USAGE;
}

/* TXIDs: decimal, 0x-prefixed hex, or the 16-hex-digit text form. */
static int parse_txid(const char *s, uint64_t *out)
{
	char *end;
	int base = 10;

	if (!strncmp(s, "0x", 2) || !strncmp(s, "0X", 2)) {
		s += 2;
		base = 16;
	} else if (strlen(s) == 16) {
		base = 16;
	}
	if (*s == '\0' || *s == '-' || *s == '+')
		return ERR_INVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end != '\0')
		return ERR_INVAL;
	*out = v;
	return 0;
}

static int parse_page_size(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v > UINT32_MAX || !ltx_is_valid_page_size((uint32_t)v))
		return ERR_LTX_PAGE_SIZE;
	*out = (uint32_t)v;
	return 0;
}

/* ---- fd adapters for the codec callbacks ------------------------------ */

/* The codec buffers its input and output (64 KiB) itself, so the fd
 * adapters of fdio.h are used directly for input. Output files are
 * replaced by rename (fileio.h), whose writer keeps its first error in
 * .err, so a failure of the output file is told apart from one in the
 * data being encoded. */

/* Opens path for reading; the returned int is the ctx of fdio_read().
 * Caller frees with close_reader(). */
static int open_reader(const char *path, int **out)
{
	int *fd = malloc(sizeof(*fd));

	if (!fd)
		return ERR_NOMEM;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		int rc = -errno;
		free(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

static void close_reader(int *fd)
{
	if (fd) {
		close(*fd);
		free(fd);
	}
}

/* ---- Error printing --------------------------------------------------- */

static void print_err(const char *sub, const char *file, int rc)
{
	fprintf(stderr, "litefs ltx %s: %s: %s\n", sub, file, err_str(rc));
}

static void print_err_at(const char *sub, const char *file, uint64_t offset, int rc)
{
	fprintf(stderr, "litefs ltx %s: %s: offset %" PRIu64 ": %s\n", sub, file, offset, err_str(rc));
}

/* ---- dump ------------------------------------------------------------- */

static const char dump_usage[] =
	"Usage: litefs ltx dump FILE\n"
	"\n"
	"Prints the header fields, the page number and checksum of every page,\n"
	"and the trailer of an LTX file, verifying it on the way.\n";

static void print_header(const struct ltx_header *h)
{
	char ts[40];

	ltx_format_time(ts, sizeof(ts), h->timestamp_ms);
	printf("# HEADER\n");
	printf("Flags:      0x%08" PRIx32 "%s\n", h->flags, (h->flags & LTX_FLAG_COMPRESS) ? " (lz4)" : "");
	printf("Page size:  %" PRIu32 "\n", h->page_size);
	printf("Commit:     %" PRIu32 "\n", h->commit);
	printf("Min TXID:   %016" PRIx64 " (%" PRIu64 ")\n", h->min_txid, h->min_txid);
	printf("Max TXID:   %016" PRIx64 " (%" PRIu64 ")\n", h->max_txid, h->max_txid);
	printf("Timestamp:  %s (%" PRId64 ")\n", ts, h->timestamp_ms);
	printf("Pre-apply:  %016" PRIx64 "\n", h->pre_apply_checksum);
	printf("WAL offset: %" PRId64 "\n", h->wal_offset);
	printf("WAL size:   %" PRId64 "\n", h->wal_size);
	printf("WAL salt:   %08" PRIx32 " %08" PRIx32 "\n", h->wal_salt1, h->wal_salt2);
	printf("Node ID:    %016" PRIx64 "\n", h->node_id);
	printf("\n");
}

static int cmd_dump(int argc, char **argv)
{
	int *r = NULL;
	struct ltx_decoder *d = NULL;
	struct ltx_header h;
	struct ltx_trailer t;
	uint8_t *page = NULL;
	char **args = argv + 1;
	int n_args, rc, code = EXIT_ERR;

	rc = parse_opts(argc, argv, NULL, dump_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (n_args != 1)
		return usage_error("dump", "expected exactly one FILE", dump_usage);
	const char *file = args[0];

	rc = open_reader(file, &r);
	if (rc < 0) {
		print_err("dump", file, rc);
		return EXIT_ERR;
	}
	rc = ltx_decoder_new(&d, fdio_read, r);
	if (rc < 0) {
		print_err("dump", file, rc);
		goto out;
	}
	rc = ltx_decoder_header(d, &h);
	if (rc < 0)
		goto out_decode;
	print_header(&h);
	page = malloc(h.page_size);
	if (!page) {
		rc = ERR_NOMEM;
		print_err("dump", file, rc);
		goto out;
	}
	printf("# PAGE DATA\n");
	for (unsigned long i = 0;; i++) {
		uint32_t pgno;
		rc = ltx_decoder_next_page(d, &pgno, page);
		if (rc < 0)
			goto out_decode;
		if (rc == 0)
			break;
		printf("Frame #%lu: pgno=%" PRIu32 " chksum=%016" PRIx64 "\n", i, pgno,
		       ltx_page_checksum(pgno, page, h.page_size));
	}
	printf("\n");
	rc = ltx_decoder_finish(d, &t);
	if (rc < 0)
		goto out_decode;
	printf("# TRAILER\n");
	printf("Post-apply:    %016" PRIx64 "\n", t.post_apply_checksum);
	printf("File checksum: %016" PRIx64 "\n", t.file_checksum);
	code = EXIT_OK;
	goto out;

out_decode:
	fflush(stdout);
	print_err_at("dump", file, ltx_decoder_offset(d), rc);
out:
	free(page);
	ltx_decoder_free(d);
	close_reader(r);
	return code;
}

/* ---- list ------------------------------------------------------------- */

/* ---- Segments (ltxlog.h) ---------------------------------------------- */

/* Calls fn for each record of the segment at path, in order, stopping at
 * the first error. Returns 0, fn's error, or a segment error with *offset
 * set. *is_segment tells whether path was a segment at all. */
typedef int (*record_fn)(void *ctx, const char *path, int fd, const struct ltxlog_rec *rec);

static int for_each_record(const char *path, record_fn fn, void *ctx, bool *is_segment, uint64_t *offset)
{
	struct stat st;
	struct ltxlog_rec rec;
	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*is_segment = false;
	*offset = 0;
	if (fd < 0)
		return -errno;
	if (!ltxlog_is_segment(fd) || fstat(fd, &st) != 0) {
		close(fd);
		return 0;
	}
	*is_segment = true;
	uint64_t off = 0;
	while ((rc = ltxlog_read_rec(fd, off, (uint64_t)st.st_size, &rec)) == 1) {
		if ((rc = fn(ctx, path, fd, &rec)) != 0)
			break;
		off = rec.offset + LTXLOG_HDR_SIZE + rec.len;
	}
	if (rc < 0)
		*offset = off;
	close(fd);
	return rc < 0 ? rc : 0;
}

/* Decodes a record fully. */
static int decode_record(int fd, const struct ltxlog_rec *rec, struct ltx_header *h, struct ltx_trailer *t,
			 uint64_t *offset)
{
	struct ltxlog_reader r;
	ltxlog_reader_init(&r, fd, rec);
	int rc = ltx_decode_all(ltxlog_read, &r, NULL, NULL, h, t, offset);
	*offset += rec->offset + LTXLOG_HDR_SIZE;
	return rc;
}

static void print_list_line(const struct ltx_header *h, const struct ltx_trailer *t, long long size,
			    const char *file, uint64_t at, bool with_at)
{
	char ts[40];
	ltx_format_time(ts, sizeof(ts), h->timestamp_ms);
	printf("%016" PRIx64 " %016" PRIx64 " %10" PRIu32 " %9" PRIu32 " %016" PRIx64 " %016" PRIx64
	       " %-24s %12lld  %s",
	       h->min_txid, h->max_txid, h->commit, h->page_size, h->pre_apply_checksum, t->post_apply_checksum,
	       ts, size, file);
	if (with_at)
		printf("@%" PRIu64, at);
	printf("\n");
}

static int list_record(void *ctx, const char *path, int fd, const struct ltxlog_rec *rec)
{
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t offset;
	int rc = decode_record(fd, rec, &h, &t, &offset);
	(void)ctx;
	if (rc < 0) {
		fflush(stdout);
		print_err_at("list", path, offset, rc);
		return rc;
	}
	print_list_line(&h, &t, rec->len, path, rec->offset, true);
	return 0;
}

/* Checks each record and that consecutive records are contiguous. */
struct verify_seg {
	struct ltx_pos prev;
	uint64_t first, n;
};

static int verify_record(void *ctx, const char *path, int fd, const struct ltxlog_rec *rec)
{
	struct verify_seg *v = ctx;
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t offset;
	int rc = decode_record(fd, rec, &h, &t, &offset);
	if (rc == 0 && v->n > 0 &&
	    (h.min_txid != v->prev.txid + 1 || (h.min_txid > 1 && h.pre_apply_checksum != v->prev.checksum))) {
		rc = ERR_LTX_NOT_CONTIGUOUS;
		offset = rec->offset + LTXLOG_HDR_SIZE + 16;
	}
	if (rc < 0) {
		fflush(stdout);
		print_err_at("verify", path, offset, rc);
		return rc;
	}
	if (v->n++ == 0)
		v->first = h.min_txid;
	v->prev = (struct ltx_pos){ h.max_txid, t.post_apply_checksum };
	return 0;
}

struct split_ctx {
	const char *dir;
	uint64_t n;
};

static int split_record(void *ctx, const char *path, int fd, const struct ltxlog_rec *rec)
{
	struct split_ctx *sc = ctx;
	struct ltx_header h;
	struct ltx_trailer t;
	uint64_t offset;
	char name[LTX_FILENAME_LEN], out[PATH_MAX];
	struct fileio_replace ao;
	int rc = decode_record(fd, rec, &h, &t, &offset);
	if (rc < 0) {
		print_err_at("split", path, offset, rc);
		return rc;
	}
	ltx_format_filename(name, h.min_txid, h.max_txid);
	snprintf(out, sizeof(out), "%s/%s", sc->dir, name);
	if ((rc = fileio_replace_open(&ao, out, 0644)) < 0) {
		print_err("split", out, rc);
		return rc;
	}
	struct ltxlog_reader r;
	ltxlog_reader_init(&r, fd, rec);
	uint8_t buf[1 << 16];
	ssize_t n;
	while ((n = ltxlog_read(&r, buf, sizeof(buf))) > 0)
		if ((rc = fileio_replace_write(&ao, buf, (size_t)n)) < 0)
			break;
	if (n < 0)
		rc = (int)n;
	if (rc == 0)
		rc = fileio_replace_commit(&ao);
	else
		fileio_replace_abort(&ao);
	if (rc < 0) {
		print_err("split", out, rc);
		return rc;
	}
	sc->n++;
	return 0;
}

static const char split_usage[] =
	"Usage: litefs ltx split [-o DIR] SEGMENT...\n"
	"\n"
	"Writes every record of each segment (a node stores the LTX file of each\n"
	"transaction as a record of data.dir/dbs/NAME/ltx/<TXID>.ltxlog) as an LTX\n"
	"file DIR/<min>-<max>.ltx (default DIR: .), verifying each first. The files\n"
	"are exactly what LiteFS and the Go ltx tool read.\n";

static int cmd_split(int argc, char **argv)
{
	const char *dir = ".";
	const struct opt opts[] = { { "o", OPT_STR, &dir }, { NULL, OPT_BOOL, NULL } };
	char **args = argv + 1;
	int n_args, rc, code = EXIT_OK;

	rc = parse_opts(argc, argv, opts, split_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (n_args < 1)
		return usage_error("split", "expected at least one SEGMENT", split_usage);
	for (int i = 0; i < n_args; i++) {
		struct split_ctx sc = { .dir = dir };
		bool is_seg;
		uint64_t offset;
		rc = for_each_record(args[i], split_record, &sc, &is_seg, &offset);
		if (rc == 0 && !is_seg) {
			fprintf(stderr, "litefs ltx split: %s: not an LTX segment\n", args[i]);
			code = EXIT_ERR;
			continue;
		}
		if (rc < 0) {
			if (rc == ERR_LTXLOG_TORN || rc == ERR_LTXLOG_MAGIC || (rc > -1000 && offset == 0))
				print_err_at("split", args[i], offset, rc);
			code = EXIT_ERR;
			continue;
		}
		printf("%s: %" PRIu64 " LTX files written to %s\n", args[i], sc.n, dir);
	}
	return code;
}

static const char list_usage[] =
	"Usage: litefs ltx list FILE...\n"
	"\n"
	"Prints one line per LTX file: min and max TXID, commit (pages), page\n"
	"size, pre-apply and post-apply checksums, timestamp and file size. Only\n"
	"the header and trailer are read; use verify to check a whole file.\n";

/* Reads the header and trailer of file without decoding the pages. On an
 * error *offset gets the offending byte offset. */
static int read_ends(const char *file, struct ltx_header *h, struct ltx_trailer *t,
		     off_t *size, uint64_t *offset)
{
	struct ltx_decoder *d = NULL;
	uint8_t tr[LTX_TRAILER_SIZE];
	struct stat st;
	int fd, n, rc = 0;

	*offset = 0;
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	*size = st.st_size;
	/* The decoder reads and validates the header and knows the offset of
	 * the field that breaks a rule. */
	rc = ltx_decoder_new(&d, fdio_read, &fd);
	if (rc < 0)
		goto out;
	rc = ltx_decoder_header(d, h);
	if (rc < 0) {
		*offset = ltx_decoder_offset(d);
		goto out;
	}
	if (st.st_size < LTX_HEADER_SIZE + 4 + LTX_TRAILER_SIZE) {
		*offset = (uint64_t)st.st_size;
		rc = ERR_LTX_TRUNCATED;
		goto out;
	}
	n = fdio_pread_full(fd, tr, sizeof(tr), st.st_size - LTX_TRAILER_SIZE);
	if (n < 0) {
		rc = n;
		goto out;
	}
	if ((size_t)n < sizeof(tr)) {
		*offset = (uint64_t)st.st_size;
		rc = ERR_IO_SHORT;
		goto out;
	}
	t->post_apply_checksum = 0;
	t->file_checksum = 0;
	for (int i = 0; i < 8; i++) {
		t->post_apply_checksum = t->post_apply_checksum << 8 | tr[i];
		t->file_checksum = t->file_checksum << 8 | tr[8 + i];
	}
out:
	ltx_decoder_free(d);
	close(fd);
	return rc;
}

static int cmd_list(int argc, char **argv)
{
	char **args = argv + 1;
	int n_args, rc, code = EXIT_OK;

	rc = parse_opts(argc, argv, NULL, list_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (n_args < 1)
		return usage_error("list", "expected at least one FILE", list_usage);

	printf("%-16s %-16s %10s %9s %-16s %-16s %-24s %12s  %s\n", "MIN_TXID", "MAX_TXID", "COMMIT",
	       "PAGE_SIZE", "PRE_APPLY", "POST_APPLY", "TIMESTAMP", "SIZE", "FILE");
	for (int i = 0; i < n_args; i++) {
		struct ltx_header h;
		struct ltx_trailer t;
		uint64_t offset;
		off_t size = 0;

		bool is_seg;
		rc = for_each_record(args[i], list_record, NULL, &is_seg, &offset);
		if (is_seg) {
			if (rc < 0) {
				if (rc == ERR_LTXLOG_TORN || rc == ERR_LTXLOG_MAGIC)
					print_err_at("list", args[i], offset, rc);
				code = EXIT_ERR;
			}
			continue;
		}
		rc = read_ends(args[i], &h, &t, &size, &offset);
		if (rc < 0) {
			fflush(stdout);
			if (rc <= -1000)
				print_err_at("list", args[i], offset, rc);
			else
				print_err("list", args[i], rc);
			code = EXIT_ERR;
			continue;
		}
		print_list_line(&h, &t, (long long)size, args[i], 0, false);
	}
	return code;
}

/* ---- verify ----------------------------------------------------------- */

static const char verify_usage[] =
	"Usage: litefs ltx verify FILE...\n"
	"\n"
	"Decodes each LTX file completely and checks every rule of the format:\n"
	"header fields, page order, LZ4 framing, the file checksum, and for\n"
	"snapshots the post-apply checksum. Prints \"FILE: OK\" per good file;\n"
	"errors name the file and the byte offset.\n";

static int cmd_verify(int argc, char **argv)
{
	char **args = argv + 1;
	int n_args, rc, code = EXIT_OK;

	rc = parse_opts(argc, argv, NULL, verify_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (n_args < 1)
		return usage_error("verify", "expected at least one FILE", verify_usage);

	for (int i = 0; i < n_args; i++) {
		int *r = NULL;
		struct ltx_header h;
		struct ltx_trailer t;
		uint64_t offset = 0;

		struct verify_seg vs = { .n = 0 };
		bool is_seg;
		rc = for_each_record(args[i], verify_record, &vs, &is_seg, &offset);
		if (is_seg) {
			if (rc < 0) {
				if (rc == ERR_LTXLOG_TORN || rc == ERR_LTXLOG_MAGIC)
					print_err_at("verify", args[i], offset, rc);
				code = EXIT_ERR;
			} else {
				printf("%s: OK (%" PRIu64 " records, TXID %016" PRIx64 "-%016" PRIx64 ")\n", args[i], vs.n,
				       vs.first, vs.prev.txid);
			}
			continue;
		}
		rc = open_reader(args[i], &r);
		if (rc < 0) {
			print_err("verify", args[i], rc);
			code = EXIT_ERR;
			continue;
		}
		rc = ltx_decode_all(fdio_read, r, NULL, NULL, &h, &t, &offset);
		close_reader(r);
		if (rc < 0) {
			fflush(stdout);
			print_err_at("verify", args[i], offset, rc);
			code = EXIT_ERR;
			continue;
		}
		printf("%s: OK\n", args[i]);
	}
	return code;
}

/* ---- checksum --------------------------------------------------------- */

static const char checksum_usage[] =
	"Usage: litefs ltx checksum [-page-size N] DB\n"
	"\n"
	"Prints the database checksum of a database file (16 hex digits): the\n"
	"XOR of the page checksums of every page except the lock page, with bit\n"
	"63 set. The page size comes from the SQLite header unless -page-size is\n"
	"given (needed for an empty file).\n";

static int cmd_checksum(int argc, char **argv)
{
	const char *page_size_str = NULL;
	const struct opt opts[] = {
		{ "page-size", OPT_STR, &page_size_str },
		{ NULL, OPT_BOOL, NULL },
	};
	char **args = argv + 1;
	uint32_t page_size = 0, n_pages;
	uint64_t chk;
	int n_args, rc, fd;

	rc = parse_opts(argc, argv, opts, checksum_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (n_args != 1)
		return usage_error("checksum", "expected exactly one DB", checksum_usage);
	if (page_size_str && parse_page_size(page_size_str, &page_size) < 0)
		return usage_error("checksum", "invalid -page-size", checksum_usage);

	fd = open(args[0], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		print_err("checksum", args[0], -errno);
		return EXIT_ERR;
	}
	rc = page_size ? 0 : dbfile_read_page_size(fd, &page_size);
	if (rc == 0)
		rc = dbfile_checksum(fd, page_size, &chk, &n_pages);
	close(fd);
	if (rc < 0) {
		print_err("checksum", args[0], rc);
		return EXIT_ERR;
	}
	printf("%016" PRIx64 "\n", chk);
	return EXIT_OK;
}

/* ---- apply ------------------------------------------------------------ */

static const char apply_usage[] =
	"Usage: litefs ltx apply -db DB FILE...\n"
	"\n"
	"Applies LTX files in order to the database DB, creating it if absent,\n"
	"and prints the resulting position TXID/POST-APPLY-CHECKSUM.\n"
	"\n"
	"Each file must follow the previous one (TXID and checksum). A snapshot\n"
	"follows anything; otherwise the first file's pre-apply checksum must\n"
	"equal DB's current checksum. Each file is decoded and validated\n"
	"completely (staged in a scratch file next to DB) before DB is written,\n"
	"so a bad file leaves DB as it was after the previous file.\n";

/* The position DB is at before applying first_file: (min TXID - 1, DB's
 * checksum) for a non-snapshot, unused for a snapshot. */
static int initial_pos(int db_fd, const char *first_file, struct ltx_pos *pos,
		       const char **err_file, uint64_t *err_offset, bool *offset_valid)
{
	struct ltx_header h;
	struct ltx_trailer t;
	off_t size;
	int rc;

	*offset_valid = true;
	*err_file = first_file;
	rc = read_ends(first_file, &h, &t, &size, err_offset);
	if (rc < 0) {
		*offset_valid = rc <= -1000;
		return rc;
	}
	pos->txid = h.min_txid - 1;
	pos->checksum = 0;
	if (ltx_header_is_snapshot(&h))
		return 0;
	*offset_valid = false;
	rc = dbfile_checksum(db_fd, h.page_size, &pos->checksum, NULL);
	if (rc < 0)
		*err_file = NULL; /* the database */
	return rc;
}

static int cmd_apply(int argc, char **argv)
{
	const char *db = NULL;
	const struct opt opts[] = {
		{ "db", OPT_STR, &db },
		{ NULL, OPT_BOOL, NULL },
	};
	char **args = argv + 1;
	char dir[PATH_MAX];
	struct ltx_pos pos;
	char pos_str[LTX_POS_STR_LEN];
	bool created = false, any_applied = false;
	int n_args, rc, db_fd = -1, spool_fd = -1, code = EXIT_ERR;

	rc = parse_opts(argc, argv, opts, apply_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (!db)
		return usage_error("apply", "-db DB is required", apply_usage);
	if (n_args < 1)
		return usage_error("apply", "expected at least one FILE", apply_usage);

	db_fd = open(db, O_RDWR | O_CLOEXEC);
	if (db_fd < 0 && errno == ENOENT) {
		db_fd = open(db, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		created = db_fd >= 0;
	}
	if (db_fd < 0) {
		print_err("apply", db, -errno);
		return EXIT_ERR;
	}
	snprintf(dir, sizeof(dir), "%s", db);
	spool_fd = fileio_spool_open(dirname(dir));
	if (spool_fd < 0) {
		fprintf(stderr, "litefs ltx apply: %s: cannot create scratch file: %s\n", db, err_str(spool_fd));
		goto out;
	}

	const char *err_file;
	uint64_t err_offset;
	bool offset_valid;
	rc = initial_pos(db_fd, args[0], &pos, &err_file, &err_offset, &offset_valid);
	if (rc < 0) {
		if (!err_file)
			print_err("apply", db, rc);
		else if (offset_valid)
			print_err_at("apply", err_file, err_offset, rc);
		else
			print_err("apply", err_file, rc);
		goto out;
	}

	for (int i = 0; i < n_args; i++) {
		int *r = NULL;
		struct dbfile_apply_result res;

		rc = open_reader(args[i], &r);
		if (rc < 0) {
			print_err("apply", args[i], rc);
			goto out_partial;
		}
		rc = dbfile_apply(db_fd, spool_fd, fdio_read, r, pos, &res);
		free(res.written);
		res.written = NULL;
		close_reader(r);
		if (rc < 0) {
			switch (res.err_source) {
			case DBFILE_ERR_LTX:
				print_err_at("apply", args[i], res.err_offset, rc);
				break;
			case DBFILE_ERR_DB:
				fprintf(stderr, "litefs ltx apply: %s: applying %s: %s\n", db, args[i], err_str(rc));
				break;
			default:
				print_err("apply", args[i], rc);
				break;
			}
			/* A database this run created is removed below instead. */
			if (res.db_changed && (any_applied || !created))
				fprintf(stderr, "litefs ltx apply: %s: partially written; the database is corrupt\n", db);
			goto out_partial;
		}
		pos = res.pos;
		any_applied = true;
	}
	if (sys_fsync(db_fd) < 0) {
		print_err("apply", db, -errno);
		goto out;
	}
	ltx_format_pos(pos_str, pos);
	printf("%s\n", pos_str);
	code = EXIT_OK;
	goto out;

out_partial:
	if (any_applied) {
		ltx_format_pos(pos_str, pos);
		fprintf(stderr, "litefs ltx apply: %s: stopped at position %s\n", db, pos_str);
		(void)sys_fsync(db_fd);
	}
out:
	if (spool_fd >= 0)
		close(spool_fd);
	close(db_fd);
	if (code != EXIT_OK && created && !any_applied)
		unlink(db);
	return code;
}

/* ---- encode-db -------------------------------------------------------- */

static const char encode_usage[] =
	"Usage: litefs ltx encode-db [-compress] [-txid TXID] [-page-size N] -o OUT DB\n"
	"\n"
	"Writes a snapshot LTX file of the database DB to OUT: TXID range\n"
	"1..TXID (default 1), every page except the lock page, post-apply\n"
	"checksum = the database checksum. The output is written atomically.\n"
	"\n"
	"Options:\n"
	"  -o OUT          output file (required)\n"
	"  -compress       LZ4-compress the page block\n"
	"  -txid TXID      max TXID of the snapshot (decimal, 0x.. or 16 hex digits)\n"
	"  -page-size N    page size when DB has no SQLite header (e.g. empty)\n";


static int cmd_encode_db(int argc, char **argv)
{
	const char *out = NULL, *txid_str = NULL, *page_size_str = NULL;
	bool compress = false;
	const struct opt opts[] = {
		{ "o", OPT_STR, &out },
		{ "compress", OPT_BOOL, &compress },
		{ "txid", OPT_STR, &txid_str },
		{ "page-size", OPT_STR, &page_size_str },
		{ NULL, OPT_BOOL, NULL },
	};
	struct dbfile_snapshot_opts so = { .txid = 1 };
	struct fileio_replace ao = { .fd = -1 };
	struct ltx_header h;
	struct ltx_trailer t;
	char **args = argv + 1;
	int n_args, rc, fd;

	rc = parse_opts(argc, argv, opts, encode_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (!out)
		return usage_error("encode-db", "-o OUT is required", encode_usage);
	if (n_args != 1)
		return usage_error("encode-db", "expected exactly one DB", encode_usage);
	if (txid_str && (parse_txid(txid_str, &so.txid) < 0 || so.txid == 0))
		return usage_error("encode-db", "invalid -txid", encode_usage);
	if (page_size_str && parse_page_size(page_size_str, &so.page_size) < 0)
		return usage_error("encode-db", "invalid -page-size", encode_usage);
	so.compress = compress;
	so.timestamp_ms = clock_wall_ms();

	fd = open(args[0], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		print_err("encode-db", args[0], -errno);
		return EXIT_ERR;
	}
	rc = fileio_replace_open(&ao, out, 0644);
	if (rc < 0) {
		print_err("encode-db", out, rc);
		close(fd);
		return EXIT_ERR;
	}
	rc = dbfile_encode_snapshot(fd, &so, fileio_replace_write, &ao, &h, &t);
	close(fd);
	if (rc < 0) {
		/* A sticky writer error means the output failed, not the DB. */
		print_err("encode-db", ao.err ? out : args[0], rc);
		fileio_replace_abort(&ao);
		return EXIT_ERR;
	}
	rc = fileio_replace_commit(&ao);
	if (rc < 0) {
		print_err("encode-db", out, rc);
		return EXIT_ERR;
	}
	printf("%s: snapshot TXID %016" PRIx64 "-%016" PRIx64 ", %" PRIu32 " pages of %" PRIu32
	       ", post-apply %016" PRIx64 "\n",
	       out, h.min_txid, h.max_txid, h.commit, h.page_size, t.post_apply_checksum);
	return EXIT_OK;
}

/* ---- compact ---------------------------------------------------------- */

static const char compact_usage[] =
	"Usage: litefs ltx compact [-compress] -o OUT FILE...\n"
	"\n"
	"Merges a contiguous run of LTX files (given in TXID order) into one:\n"
	"the latest version of every page, the TXID range and pre-apply\n"
	"checksum of the first file, commit, timestamp and post-apply checksum\n"
	"of the last. The output is written atomically.\n"
	"\n"
	"Options:\n"
	"  -o OUT          output file (required)\n"
	"  -compress       LZ4-compress the page block\n";

static int cmd_compact(int argc, char **argv)
{
	const char *out = NULL;
	bool compress = false;
	const struct opt opts[] = {
		{ "o", OPT_STR, &out },
		{ "compress", OPT_BOOL, &compress },
		{ NULL, OPT_BOOL, NULL },
	};
	struct fileio_replace ao = { .fd = -1 };
	struct compact_input *inputs = NULL;
	int **readers = NULL;
	struct compact_error cerr;
	struct ltx_header h;
	struct ltx_trailer t;
	char **args = argv + 1;
	int n_args, rc, code = EXIT_ERR;

	rc = parse_opts(argc, argv, opts, compact_usage, &n_args);
	if (rc >= 0)
		return rc;
	if (!out)
		return usage_error("compact", "-o OUT is required", compact_usage);
	if (n_args < 1)
		return usage_error("compact", "expected at least one FILE", compact_usage);

	inputs = calloc((size_t)n_args, sizeof(*inputs));
	readers = calloc((size_t)n_args, sizeof(*readers));
	if (!inputs || !readers) {
		print_err("compact", out, ERR_NOMEM);
		goto out;
	}
	for (int i = 0; i < n_args; i++) {
		rc = open_reader(args[i], &readers[i]);
		if (rc < 0) {
			print_err("compact", args[i], rc);
			goto out;
		}
		inputs[i] = (struct compact_input){ .read = fdio_read, .ctx = readers[i] };
	}
	rc = fileio_replace_open(&ao, out, 0644);
	if (rc < 0) {
		print_err("compact", out, rc);
		goto out;
	}
	rc = compact_run(inputs, (size_t)n_args, compress, fileio_replace_write, &ao, &h, &t, &cerr);
	if (rc < 0) {
		if (cerr.input == COMPACT_OUTPUT)
			print_err("compact", out, rc);
		else
			print_err_at("compact", args[cerr.input], cerr.offset, rc);
		fileio_replace_abort(&ao);
		goto out;
	}
	rc = fileio_replace_commit(&ao);
	if (rc < 0) {
		print_err("compact", out, rc);
		goto out;
	}
	printf("%s: TXID %016" PRIx64 "-%016" PRIx64 ", commit %" PRIu32 ", post-apply %016" PRIx64 "\n",
	       out, h.min_txid, h.max_txid, h.commit, t.post_apply_checksum);
	code = EXIT_OK;
out:
	if (readers)
		for (int i = 0; i < n_args; i++)
			close_reader(readers[i]);
	free(readers);
	free(inputs);
	return code;
}

/* ---- Dispatch --------------------------------------------------------- */

int cmd_ltx_main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} subs[] = {
		{ "dump", cmd_dump },
		{ "list", cmd_list },
		{ "verify", cmd_verify },
		{ "checksum", cmd_checksum },
		{ "apply", cmd_apply },
		{ "encode-db", cmd_encode_db },
		{ "compact", cmd_compact },
		{ "split", cmd_split },
	};

	if (argc < 2) {
		fputs(ltx_usage, stderr);
		return EXIT_USAGE;
	}
	/* LITEFS_FAULT=call:N makes the Nth write, truncate, fsync or rename
	 * of the database or the output fail (tests of old-or-new). */
	if (sys_fault_init_from_env() != 0)
		return EXIT_USAGE;
	const char *sub = argv[1];
	if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "-help") || !strcmp(sub, "help")) {
		fputs(ltx_usage, stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (!strcmp(sub, subs[i].name))
			return subs[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "litefs ltx: unknown subcommand %s\n\n%s", sub, ltx_usage);
	return EXIT_USAGE;
}
