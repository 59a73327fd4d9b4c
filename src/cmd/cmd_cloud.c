/*
 * cmd_cloud.c — the `litefs-cloud` command line (docs/cloud.md):
 *
 *   serve                         run the service (cloud_store + cloud_http)
 *   cluster create|list|delete|rebind  admin: on the server host, on -data-dir
 *   token create|list|revoke      admin: on the server host, on -data-dir
 *   restore|export|info|list      users: HTTP against -url with -token
 *
 * SETTINGS of serve and the admin commands come from, in order of
 * precedence: flags, LITEFS_CLOUD_* environment variables, the YAML file
 * (-config, or LITEFS_CLOUD_CONFIG), defaults. The YAML file is a flat
 * mapping with a fixed set of keys; an unknown key, a duplicate, or a value
 * of the wrong type is an error that names the key and its line, because a
 * misspelt "retension: 1d" silently ignored would keep 30 days (or fewer)
 * of someone's data without anybody noticing.
 *
 * USER COMMANDS are thin clients of the HTTP API through libcurl. The
 * server's JSON error ({"code","error"}) becomes the message; the exit
 * status is 0 on success, 1 on failure, 2 on a usage error. export writes
 * to a temp file beside the target, fsyncs it and renames it over the
 * target only when the transfer completed.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloud/cloud_admin.h"
#include "cloud/cloud_auth.h"
#include "cloud/cloud_authsync.h"
#include "cloud/cloud_backend_s3.h"
#include "cloud/cloud_forward.h"
#include "cloud/cloud_owner.h"
#include "cloud/cloud_rebuild.h"
#include "cloud/cloud_http.h"
#include "cloud/cloud_store.h"
#include "cloud/cloud_ui.h"
#include "base/clock.h"
#include "base/dlsink.h"
#include "base/err.h"
#include "base/godur.h"
#include "base/fileio.h"
#include "base/httpc.h"
#include "base/log.h"
#include "base/sbuf.h"
#include "base/sys.h"
#include "base/yamltree.h"
#include "cmd/cmd.h"
#include "ltx/ltx.h"

#define CLOUD_VERSION "0.1.0-dev"
#define DEFAULT_ADDR "127.0.0.1:20203"
#define DEFAULT_DATA_DIR "/var/lib/litefs-cloud"
#define DEFAULT_URL "http://127.0.0.1:20203"
#define DEFAULT_RETENTION_MS (30LL * 24 * 3600 * 1000)
#define DEFAULT_MAX_UPLOAD (1ULL << 30)
#define DEFAULT_MAX_DB (64ULL << 30)
#define MAX_LEVELS 8
#define PURGE_INTERVAL_S 5
#define MAX_ERROR_BODY (64 * 1024)
#define SERVE_LOCK "serve.lock"
#define MAX_CONFIG_FILE (1u << 20) /* far above any real settings file */

/* ---- Settings ----------------------------------------------------------- */

struct settings {
	char *config_path;
	char *addr;
	char *data_dir;
	int64_t retention_ms;
	int64_t levels_ms[MAX_LEVELS];
	size_t n_levels;
	int64_t snapshot_interval_ms;
	double snapshot_ratio;
	unsigned min_merge;
	bool store_lz4;
	uint64_t max_upload_bytes;
	uint64_t max_db_bytes;
	char *log_level;
	int64_t ui_session_ms;
	char *admin_addr;
	/* Object storage: the local disk unless s3_bucket is set. */
	char *s3_bucket, *s3_endpoint, *s3_region, *s3_prefix, *s3_key_id, *s3_secret, *s3_token;
	enum cloud_s3_addressing s3_addressing;
	uint64_t s3_part_size;
	/* Several instances on one bucket (docs/cloud-s3.md): the etcd
	 * endpoints (comma-separated) of the writer lease, unset: one instance. */
	char *etcd, *advertise_url, *instance_id;
	int64_t writer_ttl_ms;
	int64_t standby_refresh_ms; /* < 0: off */
	/* While serving as the bucket's writer: its lease (borrowed), which
	 * fences every backend opened (open_backend). */
	struct cloud_owner *owner;
};

static void settings_free(struct settings *s)
{
	free(s->config_path);
	free(s->addr);
	free(s->data_dir);
	free(s->log_level);
	free(s->admin_addr);
	free(s->s3_bucket);
	free(s->s3_endpoint);
	free(s->s3_region);
	free(s->s3_prefix);
	free(s->s3_key_id);
	free(s->s3_secret);
	free(s->s3_token);
	free(s->etcd);
	free(s->advertise_url);
	free(s->instance_id);
	memset(s, 0, sizeof(*s));
}

static int set_str(char **dst, const char *v)
{
	char *c = strdup(v);
	if (!c)
		return ERR_NOMEM;
	free(*dst);
	*dst = c;
	return 0;
}

/* A duration: Go syntax ("90s", "1h30m") or a whole number of days ("30d"). */
static int parse_dur(const char *s, int64_t *ms)
{
	size_t n = strlen(s);
	if (n >= 2 && s[n - 1] == 'd' && strspn(s, "0123456789") == n - 1) {
		long long days = strtoll(s, NULL, 10);
		if (days > 365LL * 1000)
			return ERR_CONFIG;
		*ms = days * 24 * 3600 * 1000;
		return 0;
	}
	return godur_parse_ms(s, ms) == 0 ? 0 : ERR_CONFIG;
}

/* A size: bytes, or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB. */
static int parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {
		{ "", 1 }, { "B", 1 }, { "KB", 1000ULL }, { "MB", 1000000ULL }, { "GB", 1000000000ULL },
		{ "TB", 1000000000000ULL }, { "KiB", 1ULL << 10 }, { "MiB", 1ULL << 20 }, { "GiB", 1ULL << 30 },
		{ "TiB", 1ULL << 40 },
	};
	size_t nd = strspn(s, "0123456789");
	if (nd == 0 || nd > 15)
		return ERR_CONFIG;
	uint64_t v = strtoull(s, NULL, 10);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s + nd, units[i].suffix) != 0)
			continue;
		if (v == 0 || v > UINT64_MAX / units[i].mult)
			return ERR_CONFIG;
		*out = v * units[i].mult;
		return 0;
	}
	return ERR_CONFIG;
}

/* "10s,5m,1h": ascending durations > 0. */
static int parse_levels(const char *s, struct settings *st)
{
	char *copy = strdup(s), *save = NULL;
	if (!copy)
		return ERR_NOMEM;
	size_t n = 0;
	int rc = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
		int64_t ms = 0;
		while (*tok == ' ')
			tok++;
		if (n == MAX_LEVELS || parse_dur(tok, &ms) != 0 || ms <= 0 || (n > 0 && ms <= st->levels_ms[n - 1]))
			rc = ERR_CONFIG;
		else
			st->levels_ms[n++] = ms;
	}
	free(copy);
	if (rc == 0 && n == 0)
		rc = ERR_CONFIG;
	if (rc == 0)
		st->n_levels = n;
	return rc;
}

/* One setting by key (shared by the YAML file, the environment and the
 * flags). 0, ERR_CONFIG (bad value) or -ENOENT (unknown key). */
static int settings_set(struct settings *st, const char *key, const char *v)
{
	if (!strcmp(key, "addr"))
		return set_str(&st->addr, v);
	if (!strcmp(key, "data-dir"))
		return v[0] ? set_str(&st->data_dir, v) : ERR_CONFIG;
	if (!strcmp(key, "retention")) {
		int64_t ms = 0;
		int rc = parse_dur(v, &ms);
		if (rc == 0 && ms <= 0)
			rc = ERR_CONFIG;
		if (rc == 0)
			st->retention_ms = ms;
		return rc;
	}
	if (!strcmp(key, "levels"))
		return parse_levels(v, st);
	if (!strcmp(key, "snapshot-interval")) {
		int64_t ms = 0;
		int rc = parse_dur(v, &ms);
		if (rc == 0 && ms <= 0)
			rc = ERR_CONFIG;
		if (rc == 0)
			st->snapshot_interval_ms = ms;
		return rc;
	}
	if (!strcmp(key, "snapshot-ratio")) {
		/* A number > 0, or "every" for a snapshot every interval. */
		char *end;
		double r = strcmp(v, "every") == 0 ? -1 : strtod(v, &end);
		if (r == 0 || (r > 0 && (*end != '\0' || r > 1e6)))
			return ERR_CONFIG;
		st->snapshot_ratio = r;
		return 0;
	}
	if (!strcmp(key, "min-merge")) {
		char *end;
		unsigned long n = strtoul(v, &end, 10);
		if (v[0] < '0' || v[0] > '9' || *end != '\0' || n < 2 || n > 1000000)
			return ERR_CONFIG;
		st->min_merge = (unsigned)n;
		return 0;
	}
	if (!strcmp(key, "store-codec")) {
		if (strcmp(v, "zstd") != 0 && strcmp(v, "lz4") != 0)
			return ERR_CONFIG;
		st->store_lz4 = strcmp(v, "lz4") == 0;
		return 0;
	}
	if (!strcmp(key, "max-upload-size"))
		return parse_size(v, &st->max_upload_bytes);
	if (!strcmp(key, "max-db-size"))
		return parse_size(v, &st->max_db_bytes);
	if (!strcmp(key, "admin-addr"))
		return set_str(&st->admin_addr, v);
	if (!strcmp(key, "ui-session")) {
		int64_t ms = 0;
		int rc = parse_dur(v, &ms);
		if (rc == 0 && ms < 1000)
			rc = ERR_CONFIG;
		if (rc == 0)
			st->ui_session_ms = ms;
		return rc;
	}
	if (!strcmp(key, "s3-bucket"))
		return set_str(&st->s3_bucket, v);
	if (!strcmp(key, "s3-endpoint"))
		return set_str(&st->s3_endpoint, v);
	if (!strcmp(key, "s3-region"))
		return set_str(&st->s3_region, v);
	if (!strcmp(key, "s3-prefix"))
		return set_str(&st->s3_prefix, v);
	if (!strcmp(key, "s3-access-key-id"))
		return set_str(&st->s3_key_id, v);
	if (!strcmp(key, "s3-secret-access-key"))
		return set_str(&st->s3_secret, v);
	if (!strcmp(key, "s3-session-token"))
		return set_str(&st->s3_token, v);
	if (!strcmp(key, "s3-addressing")) {
		if (!strcmp(v, "auto"))
			st->s3_addressing = CLOUD_S3_AUTO;
		else if (!strcmp(v, "path"))
			st->s3_addressing = CLOUD_S3_PATH;
		else if (!strcmp(v, "virtual"))
			st->s3_addressing = CLOUD_S3_VIRTUAL;
		else
			return ERR_CONFIG;
		return 0;
	}
	if (!strcmp(key, "s3-part-size")) {
		int rc = parse_size(v, &st->s3_part_size);
		return rc == 0 && st->s3_part_size < (5ULL << 20) ? ERR_CONFIG : rc;
	}
	if (!strcmp(key, "etcd"))
		return set_str(&st->etcd, v);
	if (!strcmp(key, "advertise-url"))
		return strncmp(v, "http://", 7) && strncmp(v, "https://", 8) ? ERR_CONFIG : set_str(&st->advertise_url, v);
	if (!strcmp(key, "instance-id"))
		return set_str(&st->instance_id, v);
	if (!strcmp(key, "standby-refresh")) {
		int64_t ms = 0;
		int rc = !strcmp(v, "0") || !strcmp(v, "off") ? 0 : parse_dur(v, &ms);
		st->standby_refresh_ms = rc == 0 && ms == 0 ? -1 : ms;
		return rc == 0 && ms != 0 && ms < 1000 ? ERR_CONFIG : rc;
	}
	if (!strcmp(key, "writer-ttl")) {
		int rc = parse_dur(v, &st->writer_ttl_ms);
		return rc == 0 && st->writer_ttl_ms < 1000 ? ERR_CONFIG : rc;
	}
	if (!strcmp(key, "log-level")) {
		enum log_level l;
		return log_parse_level(v, &l) == 0 ? set_str(&st->log_level, v) : ERR_CONFIG;
	}
	return -ENOENT;
}

static const char *const setting_keys[] = {
	"addr", "data-dir", "retention", "levels", "snapshot-interval", "snapshot-ratio", "min-merge",
	"store-codec",
	"max-upload-size", "max-db-size", "log-level",
	"ui-session", "admin-addr",
	"s3-bucket", "s3-endpoint", "s3-region", "s3-prefix", "s3-addressing", "s3-access-key-id",
	"s3-secret-access-key", "s3-session-token", "s3-part-size",
	"etcd", "advertise-url", "instance-id", "writer-ttl", "standby-refresh",
};

static const char *const setting_help[] = {
	"listen address host:port, [v6]:port or :port (default " DEFAULT_ADDR ")",
	"data directory (default " DEFAULT_DATA_DIR ")",
	"how long history is kept: Go duration or days, e.g. 30d, 12h (default 30d)",
	"compaction levels above L0, ascending, e.g. 10s,5m,1h (default 10s,5m,1h)",
	"interval of the snapshot level (default 24h)",
	"snapshot at an interval's end only once a restore would read this many times\n"
	"                        the last snapshot's bytes after it; \"every\": always (default 4)",
	"merge a group of a compaction level only from this many files or more (default 8)",
	"how objects are stored: zstd (compacted files, snapshots, uploads up to 1 MiB)\n"
	"                        or lz4 (LTX as sent); either is read (default zstd)",
	"largest accepted LTX upload (default 1GiB)",
	"largest accepted SQLite upload, POST /db/upload (default 64GiB)",
	"debug, info, warn or error (default info)",
	"dashboard (/ui/) sign-in lifetime, e.g. 12h, 30m (default 12h; docs/dashboard.md)",
	"admin view (clusters, tokens) on this loopback address, e.g. 127.0.0.1:20204 (default off)",
	"keep objects in this S3 bucket instead of <data-dir>/objects (docs/cloud-s3.md)",
	"S3 endpoint URL, e.g. http://127.0.0.1:9000 (or $AWS_ENDPOINT_URL_S3; default AWS)",
	"S3 region (or $AWS_REGION; default us-east-1)",
	"key prefix inside the bucket, e.g. litefs-cloud/prod (default: none)",
	"auto, path or virtual (auto: virtual-host on AWS, path style with -s3-endpoint)",
	"S3 access key ID (or $AWS_ACCESS_KEY_ID)",
	"S3 secret access key (or $AWS_SECRET_ACCESS_KEY; prefer the environment)",
	"S3 session token of temporary credentials (or $AWS_SESSION_TOKEN)",
	"objects larger than this are uploaded in parts of this size (default 16MiB, min 5MiB)",
	"several instances on one bucket: etcd endpoints of the writer lease, comma-separated\n"
	"                        (http://127.0.0.1:2379,...; default: none, one instance; docs/cloud-s3.md)",
	"with -etcd: this instance's URL for the others, e.g. http://10.0.0.5:20203 (required)",
	"with -etcd: a name for logs and the lease (default: the advertise URL)",
	"with -etcd: the writer lease's TTL: how soon a standby takes over a dead writer (default 5s)",
	"with -etcd: a standby reads the bucket's new objects this often, so that taking over\n"
	"                        reads only what came since (default 5m; off: 0)",
};

static void settings_defaults(struct settings *st)
{
	st->retention_ms = DEFAULT_RETENTION_MS;
	st->max_upload_bytes = DEFAULT_MAX_UPLOAD;
	st->max_db_bytes = DEFAULT_MAX_DB;
}

/* ---- The YAML file ------------------------------------------------------ */

/* The scalar text of a node, or the comma-joined scalars of a sequence
 * (only for "levels"). Caller frees. NULL with err set on a wrong type or
 * out of memory. Scalars are taken as written, whatever YAML would
 * resolve them to: every setting is parsed from text. */
static char *file_value(const struct yamltree *t, const struct yamltree_node *v, const char *key, char *err,
			size_t errlen)
{
	if (v->kind == YAMLTREE_SCALAR) {
		char *out = strndup(v->val, v->len);
		if (!out)
			snprintf(err, errlen, "out of memory");
		return out;
	}
	if (v->kind != YAMLTREE_SEQ || (strcmp(key, "levels") != 0 && strcmp(key, "etcd") != 0)) {
		snprintf(err, errlen, "line %d: %s: expected a single value", v->line, key);
		return NULL;
	}
	struct sbuf b = { 0 };
	sbuf_putn(&b, "", 0); /* an empty list is "", which parse_levels refuses */
	for (size_t i = 0; i < v->n_kids; i++) {
		const struct yamltree_node *e = yamltree_kid(t, v, i);
		if (e->kind != YAMLTREE_SCALAR) {
			snprintf(err, errlen, "line %d: %s: expected a list of scalars", v->line, key);
			sbuf_free(&b);
			return NULL;
		}
		if (i > 0)
			sbuf_putn(&b, ",", 1);
		sbuf_putn(&b, e->val, e->len);
	}
	if (b.oom) {
		snprintf(err, errlen, "out of memory");
		sbuf_free(&b);
		return NULL;
	}
	return b.p;
}

/* Applies one key/value pair of the file. 0 or ERR_CONFIG (err set). */
static int file_pair(struct settings *st, const struct yamltree *t, const struct yamltree_node *k,
		     const struct yamltree_node *v, unsigned *seen, char *err, size_t errlen)
{
	if (k->kind != YAMLTREE_SCALAR) {
		snprintf(err, errlen, "line %d: expected key: value", k->line);
		return ERR_CONFIG;
	}
	char key[64];
	snprintf(key, sizeof(key), "%.*s", (int)k->len, k->val);
	size_t idx = 0;
	while (idx < sizeof(setting_keys) / sizeof(setting_keys[0]) && strcmp(setting_keys[idx], key) != 0)
		idx++;
	if (idx == sizeof(setting_keys) / sizeof(setting_keys[0])) {
		snprintf(err, errlen, "line %d: unknown key \"%s\"", k->line, key);
		return ERR_CONFIG;
	}
	if (*seen & (1u << idx)) {
		snprintf(err, errlen, "line %d: duplicate key \"%s\"", k->line, key);
		return ERR_CONFIG;
	}
	*seen |= 1u << idx;
	char *val = file_value(t, v, key, err, errlen);
	if (!val)
		return ERR_CONFIG;
	int rc = settings_set(st, key, val);
	if (rc != 0)
		snprintf(err, errlen, "line %d: %s: invalid value \"%.100s\"", k->line, key, val);
	free(val);
	return rc ? ERR_CONFIG : 0;
}

/* Reads path whole into *buf (caller frees). 0, or ERR_CONFIG / -errno
 * with err set. */
static int file_read(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -ENOENT;
	}
	/* One byte more than allowed, to tell "at the limit" from "over it". */
	char *p = malloc(MAX_CONFIG_FILE + 1);
	size_t n = p ? fread(p, 1, MAX_CONFIG_FILE + 1, f) : 0;
	int rc = 0;
	if (!p)
		rc = ERR_NOMEM;
	else if (ferror(f))
		rc = errno ? -errno : -EIO;
	else if (n > MAX_CONFIG_FILE)
		rc = ERR_CONFIG;
	fclose(f);
	if (rc) {
		if (rc == ERR_CONFIG)
			snprintf(err, errlen, "%s is larger than %u bytes", path, MAX_CONFIG_FILE);
		else
			snprintf(err, errlen, "cannot read %s: %s", path, err_str(rc));
		free(p);
		return rc;
	}
	*buf = p;
	*len = n;
	return 0;
}

/* Reads the settings file: one YAML mapping of setting_keys. The first
 * problem stops it, with "line N: ..." in err. */
static int settings_load_yaml(struct settings *st, const char *path, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc = file_read(path, &text, &len, err, errlen);
	if (rc)
		return rc;
	/* An anchor defined twice is refused, as libyaml's own loader
	 * refuses it: a file means what it meant with that loader. */
	struct yamltree t;
	struct yamltree_error yerr;
	rc = yamltree_load(&t, text, len, YAMLTREE_UNIQUE_ANCHORS, NULL, NULL, &yerr);
	free(text);
	if (rc == ERR_INVAL) {
		snprintf(err, errlen, "line %d: %s", yerr.line, yerr.problem);
		return ERR_CONFIG;
	}
	if (rc)
		return rc;
	const struct yamltree_node *root = yamltree_root(&t);
	unsigned seen = 0;
	if (root && root->kind != YAMLTREE_MAP && !(root->kind == YAMLTREE_SCALAR && root->len == 0)) {
		snprintf(err, errlen, "line %d: expected a mapping of settings", root->line);
		rc = ERR_CONFIG;
	}
	if (root && root->kind == YAMLTREE_MAP)
		for (size_t i = 0; rc == 0 && i + 1 < root->n_kids; i += 2)
			rc = file_pair(st, &t, yamltree_kid(&t, root, i), yamltree_kid(&t, root, i + 1), &seen, err,
				       errlen);
	yamltree_free(&t);
	return rc;
}

/* The environment: LITEFS_CLOUD_<KEY with - as _, upper case>. */
static int settings_from_env(struct settings *st, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(setting_keys) / sizeof(setting_keys[0]); i++) {
		char name[64] = "LITEFS_CLOUD_";
		size_t n = strlen(name);
		for (const char *k = setting_keys[i]; *k && n + 1 < sizeof(name); k++)
			name[n++] = *k == '-' ? '_' : (char)(*k >= 'a' && *k <= 'z' ? *k - 32 : *k);
		name[n] = '\0';
		const char *v = getenv(name);
		if (v && settings_set(st, setting_keys[i], v) != 0) {
			snprintf(err, errlen, "%s: invalid value \"%.100s\"", name, v);
			return ERR_CONFIG;
		}
	}
	return 0;
}

/* ---- Flags -------------------------------------------------------------- */

/* Options take one dash or two, and -opt=value as well as -opt value. */
struct flag {
	const char *name;
	const char **value;  /* for options with a value */
	bool *set;           /* for boolean flags */
};

/* Parses argv[1..] into flags and positional arguments (pos, up to
 * max_pos). Returns 0, 1 for --help, or 2 (usage error, printed). */
static int parse_flags(const char *cmd, int argc, char **argv, const struct flag *flags, const char **pos,
		       int max_pos, int *n_pos)
{
	*n_pos = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || a[1] == '\0') {
			if (*n_pos == max_pos) {
				fprintf(stderr, "litefs-cloud %s: unexpected argument %s\n", cmd, a);
				return 2;
			}
			pos[(*n_pos)++] = a;
			continue;
		}
		const char *name = a + (a[1] == '-' ? 2 : 1);
		if (!strcmp(name, "h") || !strcmp(name, "help"))
			return 1;
		const char *eq = strchr(name, '=');
		size_t nl = eq ? (size_t)(eq - name) : strlen(name);
		const struct flag *f = flags;
		while (f->name && (strlen(f->name) != nl || strncmp(f->name, name, nl) != 0))
			f++;
		if (!f->name) {
			fprintf(stderr, "litefs-cloud %s: unknown option %s (see --help)\n", cmd, a);
			return 2;
		}
		if (f->set) {
			*f->set = true;
			continue;
		}
		if (eq) {
			*f->value = eq + 1;
		} else if (i + 1 < argc) {
			*f->value = argv[++i];
		} else {
			fprintf(stderr, "litefs-cloud %s: option %s needs a value\n", cmd, a);
			return 2;
		}
	}
	return 0;
}

/* Settings for serve and the admin commands: defaults, file, environment,
 * then the flags given in vals (indexed like setting_keys; NULL: unset). */
static int settings_resolve(struct settings *st, const char *config_flag, const char *const *vals)
{
	char err[512] = "";
	settings_defaults(st);
	const char *cfg = config_flag ? config_flag : getenv("LITEFS_CLOUD_CONFIG");
	int rc = 0;
	if (cfg && cfg[0]) {
		rc = set_str(&st->config_path, cfg);
		if (rc == 0)
			rc = settings_load_yaml(st, cfg, err, sizeof(err));
	}
	if (rc == 0)
		rc = settings_from_env(st, err, sizeof(err));
	for (size_t i = 0; rc == 0 && i < sizeof(setting_keys) / sizeof(setting_keys[0]); i++) {
		if (vals[i] && (rc = settings_set(st, setting_keys[i], vals[i])) != 0)
			snprintf(err, sizeof(err), "-%s: invalid value \"%.100s\"", setting_keys[i], vals[i]);
	}
	if (rc == 0 && !st->addr)
		rc = set_str(&st->addr, DEFAULT_ADDR);
	if (rc == 0 && !st->data_dir)
		rc = set_str(&st->data_dir, DEFAULT_DATA_DIR);
	/* The standard AWS variables come last: below the flags, our own
	 * variables and the file. */
	static const struct {
		const char *env;
		size_t off;
	} aws[] = {
		{ "AWS_ACCESS_KEY_ID", offsetof(struct settings, s3_key_id) },
		{ "AWS_SECRET_ACCESS_KEY", offsetof(struct settings, s3_secret) },
		{ "AWS_SESSION_TOKEN", offsetof(struct settings, s3_token) },
		{ "AWS_REGION", offsetof(struct settings, s3_region) },
		{ "AWS_DEFAULT_REGION", offsetof(struct settings, s3_region) },
		{ "AWS_ENDPOINT_URL_S3", offsetof(struct settings, s3_endpoint) },
		{ "AWS_ENDPOINT_URL", offsetof(struct settings, s3_endpoint) },
	};
	for (size_t i = 0; rc == 0 && i < sizeof(aws) / sizeof(aws[0]); i++) {
		char **dst = (char **)((char *)st + aws[i].off);
		const char *v = getenv(aws[i].env);
		if (!*dst && v && v[0])
			rc = set_str(dst, v);
	}
	if (rc != 0) {
		fprintf(stderr, "litefs-cloud: %s%s%s\n", cfg && strncmp(err, "line", 4) == 0 ? cfg : "",
			cfg && strncmp(err, "line", 4) == 0 ? ": " : "", err[0] ? err : err_str(rc));
		return rc;
	}
	enum log_level l;
	if (st->log_level && log_parse_level(st->log_level, &l) == 0)
		log_min_level = l;
	return 0;
}

/* Flags for every setting plus -config, into vals (indexed like
 * setting_keys); extra flags are appended from more. */
static void settings_flags(struct flag *out, const char **vals, const char **config, const struct flag *more)
{
	size_t n = 0;
	out[n++] = (struct flag){ "config", config, NULL };
	for (size_t i = 0; i < sizeof(setting_keys) / sizeof(setting_keys[0]); i++)
		out[n++] = (struct flag){ setting_keys[i], &vals[i], NULL };
	while (more && more->name)
		out[n++] = *more++;
	out[n] = (struct flag){ NULL, NULL, NULL };
}

static void print_settings_help(FILE *f)
{
	fputs("  -config PATH          YAML file with the settings below (or $LITEFS_CLOUD_CONFIG)\n", f);
	for (size_t i = 0; i < sizeof(setting_keys) / sizeof(setting_keys[0]); i++)
		fprintf(f, "  -%-20s %s\n", setting_keys[i], setting_help[i]);
	fputs("\nEvery setting can also come from the environment (LITEFS_CLOUD_DATA_DIR,\n"
	      "LITEFS_CLOUD_RETENTION, LITEFS_CLOUD_S3_BUCKET, ...) or the YAML file (data-dir: ...,\n"
	      "levels: [10s, 5m], s3-bucket: ...). Flags win over the environment, which wins over\n"
	      "the file; the standard AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,\n"
	      "AWS_REGION and AWS_ENDPOINT_URL_S3 fill in S3 settings given nowhere else.\n",
	      f);
}

/* ---- serve -------------------------------------------------------------- */

static const char serve_usage[] =
	"Usage: litefs-cloud serve [options]\n"
	"\n"
	"Runs the backup service: the LiteFS Cloud API (docs/cloud-api.md) on -addr,\n"
	"storing every cluster's databases under -data-dir. Stops gracefully on\n"
	"SIGINT or SIGTERM (requests in flight finish first).\n"
	"\n"
	"The dashboard is on the same address under /ui/ (open http://ADDR/ui/ and\n"
	"sign in with a cluster token; docs/dashboard.md).\n"
	"\n"
	"Several instances may share one bucket (-s3-bucket) with -etcd and\n"
	"-advertise-url: one, the writer, holds an etcd lease and serves everything;\n"
	"the others forward every request to it and take over within -writer-ttl\n"
	"when it dies (docs/cloud-s3.md, \"Several instances\"). A writer that loses\n"
	"its lease exits with status 3: run it under a supervisor that restarts it.\n"
	"\n"
	"Options:\n";

struct purge_ctx {
	struct cloud_store *cs;
	struct cloud_auth *auth;
};

static void purge_one(void *ctx, const char *cluster)
{
	struct purge_ctx *p = ctx;
	int rc = cloud_cluster_purge(p->cs, cluster);
	if (rc == 0)
		rc = cloud_auth_purge_done(p->auth, cluster);
	if (rc == 0)
		LOG_INFO("cloud", "msg=\"deleted cluster purged\" cluster=%s", cluster);
	else
		LOG_WARN("cloud", "msg=\"cannot purge a deleted cluster yet\" cluster=%s err=\"%s\"", cluster, err_str(rc));
}

/* Takes <data_dir>/serve.lock (flock, exclusive, non-blocking): held by
 * the running server for its lifetime, and by an admin command while it
 * opens the engine itself. Opening the engine removes orphan objects and
 * empties its tmp/, which must never happen under a running server. Returns
 * the fd (the lock lives until it is closed), -EWOULDBLOCK when taken, or
 * -errno. */
static int lock_data_dir(const char *data_dir)
{
	char *path = NULL;
	if (asprintf(&path, "%s/%s", data_dir, SERVE_LOCK) < 0)
		return -ENOMEM;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	free(path);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int rc = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* The S3 backend when -s3-bucket is set (*be NULL otherwise: the local
 * disk). A wrong credential, a missing bucket, a clock skew: one line on
 * stderr, and an error. */
static int open_backend(const struct settings *st, struct cloud_backend **be)
{
	*be = NULL;
	if (!st->s3_bucket)
		return 0;
	char tmp[4096], why[512];
	bool tightened = false;
	snprintf(tmp, sizeof(tmp), "%s/tmp", st->data_dir);
	int rc = fileio_private_dir(st->data_dir, &tightened);
	if (rc == 0 && mkdir(tmp, 0700) < 0 && errno != EEXIST)
		rc = -errno;
	if (rc != 0) {
		fprintf(stderr, "litefs-cloud: %s: %s\n", tmp, err_str(rc));
		return rc;
	}
	struct cloud_s3_config c = {
		.endpoint = st->s3_endpoint, .region = st->s3_region, .bucket = st->s3_bucket,
		.prefix = st->s3_prefix, .addressing = st->s3_addressing, .access_key_id = st->s3_key_id,
		.secret_access_key = st->s3_secret, .session_token = st->s3_token, .tmp_dir = tmp,
		.part_size = st->s3_part_size,
	};
	rc = cloud_backend_s3_open(&c, be, why, sizeof(why));
	if (rc != 0)
		fprintf(stderr, "litefs-cloud: %s\n", why);
	struct cloud_backend *inner = *be;
	if (rc == 0 && st->owner && (rc = cloud_owner_fence(st->owner, inner, be)) != 0)
		inner->ops->close(inner);
	return rc;
}

static int open_store(const struct settings *st, struct cloud_store **cs)
{
	struct cloud_backend *be = NULL;
	int brc = open_backend(st, &be);
	if (brc != 0)
		return brc;
	struct cloud_store_opts o = {
		.backend = be,
		.data_dir = st->data_dir,
		.retention_ms = st->retention_ms,
		.levels_ms = st->n_levels ? st->levels_ms : NULL,
		.n_levels = st->n_levels,
		.snapshot_interval_ms = st->snapshot_interval_ms,
		.max_upload_bytes = st->max_upload_bytes,
		.snapshot_ratio = st->snapshot_ratio,
		.min_merge = st->min_merge,
		.store_lz4 = st->store_lz4,
	};
	int rc = cloud_store_open(&o, cs);
	if (rc != 0)
		fprintf(stderr, "litefs-cloud: cannot open the store in %s: %s\n", st->data_dir, err_str(rc));
	return rc;
}

/* With S3: the token store comes from the bucket when the data directory
 * has none, and every change goes back to it (cloud_authsync.h). *be and
 * *sync stay NULL with the local disk. Returns 0 or 1 (printed). */
static int auth_bucket_setup(const struct settings *st, struct cloud_backend **be)
{
	*be = NULL;
	if (!st->s3_bucket)
		return 0;
	if (open_backend(st, be) != 0)
		return 1;
	/* Several instances: the bucket's copy is the truth, unless a server
	 * on this data directory keeps the local one current. */
	bool replace = st->owner != NULL;
	if (st->etcd && !st->owner) {
		int lfd = lock_data_dir(st->data_dir);
		replace = lfd >= 0;
		if (lfd >= 0)
			close(lfd);
	}
	int rc = cloud_authsync_pull(*be, st->data_dir, replace);
	if (rc < 0) {
		fprintf(stderr, "litefs-cloud: cannot restore the token store from the bucket: %s\n", err_str(rc));
		(*be)->ops->close(*be);
		*be = NULL;
		return 1;
	}
	return 0;
}

/* Waits for SIGINT/SIGTERM, purging deleted clusters every few seconds;
 * with several instances (sync set), taking in every second the token
 * changes made on other hosts. */
static void serve_wait(struct cloud_store *cs, struct cloud_auth *auth, struct cloud_authsync *sync)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	struct purge_ctx p = { cs, auth };
	for (unsigned tick = 0;; tick++) {
		if (sync)
			cloud_authsync_refresh(sync);
		if (!sync || tick % PURGE_INTERVAL_S == 0)
			cloud_auth_pending_purges(auth, purge_one, &p);
		struct timespec t = { sync ? 1 : PURGE_INTERVAL_S, 0 };
		int sig = sigtimedwait(&set, NULL, &t);
		if (sig == SIGINT || sig == SIGTERM) {
			LOG_INFO("cloud", "msg=\"stopping\" signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
			return;
		}
	}
}

/* ---- Several instances on one bucket (docs/cloud-s3.md) ---------------- */

#define ETCD_ENDPOINTS_MAX 16

struct standby_sig {
	sigset_t set;
	atomic_bool stop;
};

/* Turns SIGINT/SIGTERM into the campaign's stop flag (they are blocked
 * in every thread; this one takes them). */
static void *standby_sig_main(void *arg)
{
	struct standby_sig *w = arg;
	int sig = 0;
	if (sigwait(&w->set, &sig) == 0) {
		LOG_INFO("cloud", "msg=\"stopping\" signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
		atomic_store(&w->stop, true);
	}
	return NULL;
}

struct standby_ctx {
	struct cloud_forward *fwd;
	const char *self; /* this instance's advertise URL */
};

/* A key naming this instance is its own from before a restart (its old
 * lease has not expired yet): nobody to forward to. */
static void standby_writer(void *ctx, const char *url)
{
	struct standby_ctx *c = ctx;
	cloud_forward_set_writer(c->fwd, url && strcmp(url, c->self) != 0 ? url : NULL);
}

/* The writer lease is gone: another instance may be writing already, so
 * this one must not complete one more request. A supervisor starts it
 * again, as a standby. */
static void writer_lost(void *ctx)
{
	LOG_ERROR("cloud", "msg=\"exiting: this instance is no longer the bucket's writer\"");
	_exit(3);
}

#define STANDBY_REFRESH_DEFAULT_MS (5 * 60 * 1000)

/* A standby's thread that keeps its rebuild hint warm (cloud_rebuild.h). */
struct standby_refresh {
	const struct settings *st;
	atomic_bool stop;
	bool warm; /* a refresh succeeded: the hint is newer than catalog.db */
	pthread_t th;
	bool started;
};

static void *standby_refresh_main(void *arg)
{
	struct standby_refresh *r = arg;
	int64_t every = r->st->standby_refresh_ms ? r->st->standby_refresh_ms : STANDBY_REFRESH_DEFAULT_MS;
	struct cloud_backend *be = NULL;
	for (int64_t next = clock_mono_ms() + every; !atomic_load(&r->stop);) {
		struct timespec t = { 0, 100 * 1000000L };
		nanosleep(&t, NULL);
		if (clock_mono_ms() < next)
			continue;
		next = clock_mono_ms() + every;
		if (!be && open_backend(r->st, &be) != 0)
			continue;
		size_t n_files = 0, n_read = 0;
		int64_t t0 = clock_mono_ms();
		int rc = cloud_rebuild_hint_refresh(be, r->st->data_dir, &n_files, &n_read);
		if (rc != 0) {
			LOG_WARN("cloud", "msg=\"standby: cannot refresh the catalog hint\" err=\"%s\"", err_str(rc));
			continue;
		}
		r->warm = true; /* newer than any catalog left from a tenure */
		LOG_INFO("cloud", "msg=\"standby: catalog hint refreshed from the bucket\" objects=%zu read=%zu ms=%" PRId64,
			 n_files, n_read, clock_mono_ms() - t0);
	}
	if (be)
		be->ops->close(be);
	return NULL;
}

/* Serves as a standby (every request forwarded to the writer) until this
 * instance takes the bucket's writer lease, then makes the local catalog
 * a cache to rebuild: the bucket is the truth, and another writer wrote
 * it since. 0 as the writer (st->owner set), 1 on an error (printed), 2
 * when stopped by a signal. */
static int serve_standby(struct settings *st)
{
	if (!st->s3_bucket || !st->advertise_url) {
		fprintf(stderr, "litefs-cloud: -etcd (several instances on one bucket) needs %s\n",
			!st->s3_bucket ? "-s3-bucket" : "-advertise-url (this instance's URL for the others)");
		return 1;
	}
	/* A wrong key, secret or bucket: one line now, not once this
	 * instance has taken the lease (and then again at every restart). */
	struct cloud_backend *probe = NULL;
	if (open_backend(st, &probe) != 0)
		return 1;
	probe->ops->close(probe);
	const char *eps[ETCD_ENDPOINTS_MAX];
	size_t n_eps = 0;
	char *list = strdup(st->etcd), *save = NULL, *key = NULL;
	for (char *e = list ? strtok_r(list, ", ", &save) : NULL; e && n_eps < ETCD_ENDPOINTS_MAX;
	     e = strtok_r(NULL, ", ", &save))
		eps[n_eps++] = e;
	if (asprintf(&key, "litefs-cloud/writer/%s/%s", st->s3_bucket, st->s3_prefix ? st->s3_prefix : "") < 0)
		key = NULL;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s/tmp", st->data_dir);
	bool tightened = false;
	int rc = !list || !key ? ERR_NOMEM : n_eps == 0 ? ERR_INVAL : fileio_private_dir(st->data_dir, &tightened);
	if (rc == 0 && mkdir(tmp, 0700) < 0 && errno != EEXIST)
		rc = -errno;
	struct standby_sig w = { .stop = false };
	sigemptyset(&w.set);
	sigaddset(&w.set, SIGINT);
	sigaddset(&w.set, SIGTERM);
	struct cloud_owner_opts oo = { .endpoints = eps, .n_endpoints = n_eps, .key = key,
				       .advertise_url = st->advertise_url, .instance_id = st->instance_id,
				       .ttl_ms = st->writer_ttl_ms, .stop = &w.stop };
	struct cloud_owner *owner = NULL;
	struct cloud_forward *fwd = NULL;
	if (rc == 0)
		rc = cloud_owner_open(&oo, &owner);
	struct cloud_forward_opts fo = { .addr = st->addr, .tmp_dir = tmp, .max_body_bytes = st->max_db_bytes,
					 .instance_id = st->instance_id ? st->instance_id : st->advertise_url };
	if (rc == 0 && (rc = cloud_forward_start(&fo, &fwd)) != 0)
		fprintf(stderr, "litefs-cloud: cannot listen on %s: %s\n", st->addr, err_str(rc));
	free(list);
	free(key);
	pthread_t th;
	bool th_started = rc == 0 && pthread_create(&th, NULL, standby_sig_main, &w) == 0;
	struct standby_refresh refresh = { .st = st, .stop = false };
	if (rc == 0 && st->standby_refresh_ms >= 0)
		refresh.started = pthread_create(&refresh.th, NULL, standby_refresh_main, &refresh) == 0;
	if (rc == 0) {
		LOG_INFO("cloud", "msg=\"standby: waiting for the bucket's writer lease\" bucket=%s etcd=\"%s\" "
				  "advertise_url=\"%s\"",
			 st->s3_bucket, st->etcd, st->advertise_url);
		struct standby_ctx sc = { fwd, st->advertise_url };
		rc = cloud_owner_campaign(owner, standby_writer, &sc);
	}
	if (th_started) {
		pthread_cancel(th);
		pthread_join(th, NULL);
	}
	if (refresh.started) {
		atomic_store(&refresh.stop, true);
		pthread_join(refresh.th, NULL);
	}
	cloud_forward_stop(fwd);
	if (rc == 0)
		rc = cloud_owner_hold(owner, writer_lost, NULL);
	if (rc != 0) {
		cloud_owner_close(owner);
		if (rc == -EINTR)
			return 2;
		fprintf(stderr, "litefs-cloud: several instances: %s\n", err_str(rc));
		return 1;
	}
	/* The old catalog becomes the rebuild's hint (cloud_rebuild.h), its
	 * rows sparing the reads of the objects it knew; or goes, when the
	 * standby kept a newer hint warm. */
	cloud_rebuild_hint_set_aside(st->data_dir, refresh.warm);
	st->owner = owner;
	return 0;
}

static int serve_run(struct settings *st)
{
	struct cloud_auth *auth = NULL;
	struct cloud_store *cs = NULL;
	struct cloud_http *srv = NULL;
	struct cloud_admin *admin = NULL;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	/* Blocked in every thread (they inherit the mask): sigtimedwait takes them. */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (st->etcd) {
		int src = serve_standby(st);
		if (src != 0)
			return src == 2 ? 0 : 1;
	}

	struct cloud_backend *auth_be = NULL;
	struct cloud_authsync *sync = NULL;
	if (auth_bucket_setup(st, &auth_be) != 0)
		return 1;
	int rc = cloud_auth_open(st->data_dir, &auth);
	if (rc != 0) {
		fprintf(stderr, "litefs-cloud: cannot open the token store in %s: %s\n", st->data_dir, err_str(rc));
		if (auth_be)
			auth_be->ops->close(auth_be);
		return 1;
	}
	/* A change committed just before a crash may not have reached the
	 * bucket: copy the store once at start, then after every change. */
	if (auth_be && (cloud_authsync_push(auth, auth_be, st->data_dir) != 0 ||
			cloud_authsync_attach(auth, auth_be, st->data_dir, &sync) != 0)) {
		fprintf(stderr, "litefs-cloud: cannot copy the token store to the bucket\n");
		goto err_auth;
	}
	int lock_fd = lock_data_dir(st->data_dir);
	/* Several instances: an admin command may hold it for a moment
	 * (auth_bucket_setup); a second serve holds it for good. */
	for (int i = 0; st->owner && lock_fd == -EWOULDBLOCK && i < 20; i++) {
		struct timespec t = { 0, 100 * 1000000L };
		nanosleep(&t, NULL);
		lock_fd = lock_data_dir(st->data_dir);
	}
	if (lock_fd < 0) {
		fprintf(stderr, "litefs-cloud: %s: %s\n", st->data_dir,
			lock_fd == -EWOULDBLOCK ? "another litefs-cloud serve uses this data directory"
						: err_str(lock_fd));
		goto err_auth;
	}
	if ((rc = open_store(st, &cs)) != 0)
		goto err_lock;
	if ((rc = cloud_store_start(cs)) != 0) {
		fprintf(stderr, "litefs-cloud: cannot start the store: %s\n", err_str(rc));
		goto err_store;
	}
	struct cloud_http_opts ho = { .addr = st->addr, .tmp_dir = st->data_dir,
				      .max_upload_bytes = st->max_upload_bytes, .max_db_bytes = st->max_db_bytes,
				      .ui_session_ms = st->ui_session_ms };
	if ((rc = cloud_http_start(cs, auth, &ho, &srv)) != 0) {
		fprintf(stderr, "litefs-cloud: cannot listen on %s: %s\n", st->addr, err_str(rc));
		goto err_store;
	}
	if (st->admin_addr && st->admin_addr[0] &&
	    (rc = cloud_admin_start(auth, st->data_dir, st->admin_addr,
				    st->ui_session_ms > 0 ? st->ui_session_ms : CLOUD_UI_SESSION_DEFAULT_MS, &admin)) != 0) {
		fprintf(stderr, "litefs-cloud: cannot start the admin view on %s: %s%s\n", st->admin_addr, err_str(rc),
			rc == ERR_INVAL ? " (it binds only loopback: 127.0.0.1:PORT or [::1]:PORT)" : "");
		cloud_http_stop(srv);
		goto err_store;
	}
	char ret[GODUR_BUF_SIZE];
	godur_format_ms(st->retention_ms, ret, sizeof(ret));
	LOG_INFO("cloud", "msg=\"litefs-cloud started\" version=%s data_dir=\"%s\" retention=%s port=%u storage=%s%s",
		 CLOUD_VERSION, st->data_dir, ret, cloud_http_port(srv), st->s3_bucket ? "s3://" : "local",
		 st->s3_bucket ? st->s3_bucket : "");
	serve_wait(cs, auth, st->owner ? sync : NULL);
	cloud_admin_stop(admin);
	cloud_http_stop(srv);
	cloud_store_close(cs);
	close(lock_fd);
	cloud_authsync_free(sync);
	cloud_auth_close(auth);
	if (auth_be)
		auth_be->ops->close(auth_be);
	cloud_owner_close(st->owner); /* revoked: a standby takes over at once */
	LOG_INFO("cloud", "msg=\"stopped\"");
	return 0;
err_store:
	cloud_store_close(cs);
err_lock:
	close(lock_fd);
err_auth:
	cloud_authsync_free(sync);
	cloud_auth_close(auth);
	if (auth_be)
		auth_be->ops->close(auth_be);
	cloud_owner_close(st->owner);
	return 1;
}

static int cmd_serve(int argc, char **argv)
{
	const char *vals[sizeof(setting_keys) / sizeof(setting_keys[0])] = { 0 };
	const char *config = NULL, *pos[1];
	struct flag flags[32];
	int n_pos = 0;
	settings_flags(flags, vals, &config, NULL);
	int prc = parse_flags("serve", argc, argv, flags, pos, 0, &n_pos);
	if (prc != 0) {
		fputs(serve_usage, prc == 1 ? stdout : stderr);
		print_settings_help(prc == 1 ? stdout : stderr);
		return prc == 1 ? 0 : 2;
	}
	/* Injected faults for the tests (LITEFS_FAULT, base/sys.h), as in
	 * `litefs mount`: e.g. a write that stalls so that a kill -9 lands
	 * in the middle of a fork. */
	if (sys_fault_init_from_env() != 0)
		return 2;
	struct settings st = { 0 };
	int rc = settings_resolve(&st, config, vals) == 0 ? serve_run(&st) : 2;
	settings_free(&st);
	return rc;
}

/* ---- Admin commands: cluster and token ---------------------------------- */

static const char cluster_usage[] =
	"Usage: litefs-cloud cluster <create NAME | list | delete NAME | rebind NAME> [options]\n"
	"\n"
	"Manages clusters directly in the data directory: run it on the server host\n"
	"(the service may be running). A cluster owns databases; its tokens let\n"
	"LiteFS nodes and the CLI use them.\n"
	"\n"
	"  create NAME   create a cluster and print its first token (shown once)\n"
	"  list          list clusters: name, LiteFS cluster ID, tokens, creation time\n"
	"  delete NAME   delete a cluster, its tokens and all its data\n"
	"  rebind NAME   [-window 15m] let the next LiteFS node that holds no data\n"
	"                for NAME take it under a new cluster ID (disaster recovery)\n"
	"\n"
	"The first cluster ID a cluster's nodes send is remembered, and nodes with\n"
	"another one are refused (422 ECLUSTERID), so that two LiteFS clusters with\n"
	"the same token never mix. A LiteFS node whose data directory was lost makes\n"
	"a new ID: put its old data.dir/clusterid back, or run `cluster rebind NAME`.\n"
	"For -window (default 15m) the first node with another ID may read; it is\n"
	"bound when it takes the service's databases (snapshot downloads), the way a\n"
	"node holding no data starts. A node that uploads first holds data of its\n"
	"own and is never bound. The old ID keeps working until the rebind is done.\n"
	"\n"
	"NAME: 1 to 64 characters of A-Z a-z 0-9 _ . -\n"
	"\n"
	"Only `cluster create` (and `serve`) set a service up in a data directory\n"
	"that holds none; list and delete on such a directory fail and create nothing.\n"
	"\n"
	"Options:\n";

static const char token_usage[] =
	"Usage: litefs-cloud token <create CLUSTER | list [CLUSTER] | revoke TOKEN-ID> [options]\n"
	"\n"
	"Manages tokens directly in the data directory (run it on the server host).\n"
	"Tokens are stored only as SHA-256 hashes: a token is shown once, at creation.\n"
	"\n"
	"  create CLUSTER   create another token for CLUSTER and print it\n"
	"  list [CLUSTER]   list token IDs (never the tokens themselves)\n"
	"  revoke TOKEN-ID  revoke a token; requests using it fail at once\n"
	"\n"
	"The data directory must hold a service (set up by serve or cluster create);\n"
	"otherwise the command fails and creates nothing.\n"
	"\n"
	"Options:\n";

static void fmt_ms(char *buf, size_t len, int64_t ms)
{
	if (ms > 0)
		ltx_format_time(buf, len, ms);
	else
		snprintf(buf, len, "-");
}

static void print_cluster(void *ctx, const struct cloud_cluster_info *c)
{
	char ts[40];
	fmt_ms(ts, sizeof(ts), c->created_ms);
	printf("%-24s %-22s %6u  %s\n", c->name, c->cluster_id[0] ? c->cluster_id : "-", c->n_tokens, ts);
}

static void print_token(void *ctx, const struct cloud_token_info *t)
{
	char ts[40];
	fmt_ms(ts, sizeof(ts), t->created_ms);
	printf("%-14s %-24s %s\n", t->id, t->cluster, ts);
}

static void print_new_token(const char *cluster, const struct cloud_token *tok)
{
	printf("%s\n", tok->text);
	fprintf(stderr,
		"token %s created for cluster %s. It is shown only once: store it now\n"
		"(for a LiteFS node: LITEFS_CLOUD_TOKEN=<token>).\n",
		tok->id, cluster);
}

/* Purges a deleted cluster's data now if the store can be opened here;
 * otherwise the running server does it within seconds. */
static void purge_now(const struct settings *st, struct cloud_auth *auth, bool quiet)
{
	struct cloud_store *cs = NULL;
	int lock_fd = lock_data_dir(st->data_dir);
	if (lock_fd < 0 || open_store(st, &cs) != 0) {
		if (lock_fd >= 0)
			close(lock_fd);
		if (lock_fd == -EWOULDBLOCK && !quiet)
			fprintf(stderr, "litefs-cloud: the running service purges the data within %d s\n",
				PURGE_INTERVAL_S);
		return;
	}
	struct purge_ctx p = { cs, auth };
	cloud_auth_pending_purges(auth, purge_one, &p);
	cloud_store_close(cs);
	close(lock_fd);
}

static int admin_fail(const char *what, const char *name, int rc)
{
	const char *why = rc == ERR_CLOUD_EXISTS ? "already exists (or its deletion is still being purged)"
			  : rc == ERR_CLOUD_NOT_FOUND ? "not found"
			  : rc == ERR_INVAL ? "invalid name: 1 to 64 characters of A-Z a-z 0-9 _ . -"
					    : err_str(rc);
	fprintf(stderr, "litefs-cloud %s %s: %s\n", what, name, why);
	return 1;
}

/* `cluster rebind NAME`: opens the window (cloud_auth_rebind_open()). */
static int cluster_rebind(struct cloud_auth *auth, const char *name, const char *window)
{
	int64_t window_ms = 15 * 60 * 1000, until = 0;
	if (window && (godur_parse_ms(window, &window_ms) != 0 || window_ms <= 0)) {
		fprintf(stderr, "litefs-cloud cluster rebind: invalid -window %s: a duration such as 15m or 1h\n", window);
		return 2;
	}
	int rc = cloud_auth_rebind_open(auth, name, window_ms, &until);
	if (rc != 0)
		return admin_fail("cluster rebind", name, rc);
	char ts[40];
	fmt_ms(ts, sizeof(ts), until);
	fprintf(stderr,
		"cluster %s: rebind open until %s. The next LiteFS node that sends another cluster ID\n"
		"and holds no data takes the cluster under its ID when it downloads the databases;\n"
		"the current ID keeps working until then.\n",
		name, ts);
	return 0;
}

static int cluster_run(const struct settings *st, struct cloud_auth *auth, const char **pos, int n_pos,
		       const char *window)
{
	struct cloud_token tok;
	int rc;
	if (!strcmp(pos[0], "list") && n_pos == 1) {
		printf("%-24s %-22s %6s  %s\n", "NAME", "CLUSTER-ID", "TOKENS", "CREATED");
		rc = cloud_auth_cluster_list(auth, print_cluster, NULL);
		return rc ? admin_fail("cluster", "list", rc) : 0;
	}
	if (!strcmp(pos[0], "create") && n_pos == 2) {
		rc = cloud_auth_cluster_create(auth, pos[1], &tok);
		if (rc == ERR_CLOUD_EXISTS) {
			/* Perhaps only the purge of a deleted one is pending. */
			purge_now(st, auth, true);
			rc = cloud_auth_cluster_create(auth, pos[1], &tok);
		}
		if (rc != 0)
			return admin_fail("cluster create", pos[1], rc);
		print_new_token(pos[1], &tok);
		return 0;
	}
	if (!strcmp(pos[0], "rebind") && n_pos == 2)
		return cluster_rebind(auth, pos[1], window);
	if (!strcmp(pos[0], "delete") && n_pos == 2) {
		if ((rc = cloud_auth_cluster_delete(auth, pos[1])) != 0)
			return admin_fail("cluster delete", pos[1], rc);
		purge_now(st, auth, false);
		fprintf(stderr, "cluster %s deleted\n", pos[1]);
		return 0;
	}
	fputs(cluster_usage, stderr);
	return 2;
}

static int token_run(const struct settings *st, struct cloud_auth *auth, const char **pos, int n_pos)
{
	struct cloud_token tok;
	int rc;
	if (!strcmp(pos[0], "list") && n_pos <= 2) {
		printf("%-14s %-24s %s\n", "ID", "CLUSTER", "CREATED");
		rc = cloud_auth_token_list(auth, n_pos == 2 ? pos[1] : NULL, print_token, NULL);
		return rc ? admin_fail("token", "list", rc) : 0;
	}
	if (!strcmp(pos[0], "create") && n_pos == 2) {
		if ((rc = cloud_auth_token_create(auth, pos[1], &tok)) != 0)
			return admin_fail("token create: cluster", pos[1], rc);
		print_new_token(pos[1], &tok);
		return 0;
	}
	if (!strcmp(pos[0], "revoke") && n_pos == 2) {
		if ((rc = cloud_auth_token_revoke(auth, pos[1])) != 0)
			return admin_fail("token revoke", pos[1], rc);
		fprintf(stderr, "token %s revoked\n", pos[1]);
		return 0;
	}
	fputs(token_usage, stderr);
	return 2;
}

static int cmd_admin(int argc, char **argv, bool is_cluster)
{
	const char *vals[sizeof(setting_keys) / sizeof(setting_keys[0])] = { 0 };
	const char *config = NULL, *pos[3];
	struct flag flags[32];
	int n_pos = 0;
	const char *usage = is_cluster ? cluster_usage : token_usage;
	const char *window = NULL;
	const struct flag more[] = { { "window", &window, NULL }, { NULL, NULL, NULL } };
	settings_flags(flags, vals, &config, is_cluster ? more : NULL);
	int prc = parse_flags(argv[0], argc, argv, flags, pos, 3, &n_pos);
	if (prc != 0 || n_pos == 0) {
		bool help = prc == 1;
		fputs(usage, help ? stdout : stderr);
		print_settings_help(help ? stdout : stderr);
		return help ? 0 : 2;
	}
	struct settings st = { 0 };
	struct cloud_auth *auth = NULL;
	struct cloud_backend *be = NULL;
	struct cloud_authsync *sync = NULL;
	int rc = 2;
	/* Only `serve` and `cluster create` set a service up: any other
	 * admin command on a directory without one would create an empty
	 * service there and report on it as if it were the real one. */
	bool may_create = is_cluster && !strcmp(pos[0], "create");
	if (settings_resolve(&st, config, vals) != 0) {
		rc = 2;
	} else if (auth_bucket_setup(&st, &be) != 0) {
		rc = 1;
	} else if (!may_create && !cloud_auth_exists(st.data_dir)) {
		fprintf(stderr,
			"litefs-cloud %s %s: %s holds no litefs-cloud service (no auth.db); pass the service's "
			"-data-dir (or LITEFS_CLOUD_DATA_DIR). Only serve and cluster create set a service up.\n",
			is_cluster ? "cluster" : "token", pos[0], st.data_dir);
		rc = 1;
	} else {
		int arc = cloud_auth_open(st.data_dir, &auth);
		if (arc == 0 && be)
			arc = cloud_authsync_attach(auth, be, st.data_dir, &sync);
		if (arc != 0)
			rc = admin_fail("open", st.data_dir, arc);
		else
			rc = is_cluster ? cluster_run(&st, auth, pos, n_pos, window) : token_run(&st, auth, pos, n_pos);
		if (sync && cloud_authsync_error(sync) != 0) {
			fprintf(stderr, "litefs-cloud: the change is stored locally but could not be copied to the "
					"bucket: %s (it is copied again at the next change or start)\n",
				err_str(cloud_authsync_error(sync)));
			rc = 1;
		}
	}
	cloud_authsync_free(sync);
	cloud_auth_close(auth);
	if (be)
		be->ops->close(be);
	settings_free(&st);
	return rc;
}

/* ---- User commands: an HTTP client -------------------------------------- */

struct client {
	const char *cmd;
	const char *url;
	const char *token;
};

/* Prints the server's JSON error (or the raw body) for a failed request. */
static void print_http_error(const struct client *cl, const struct httpc_req *q)
{
	struct httpc_error e;
	httpc_error_parse(q, &e);
	if (e.from_json)
		fprintf(stderr, "litefs-cloud %s: %s (%s, HTTP %ld)\n", cl->cmd, e.text, e.code[0] ? e.code : "?",
			q->status);
	else
		fprintf(stderr, "litefs-cloud %s: the server answered HTTP %ld%s%.300s\n", cl->cmd, q->status,
			q->mem_len ? ": " : "", q->mem_len ? e.text : "");
}

/* One request: method, path, query pairs (key, value; NULL values are
 * skipped; list ends with NULL key). A 2xx body goes to out (or memory,
 * returned in *json parsed when json != NULL). Returns 0 or 1 (printed). */
static int client_do(const struct client *cl, const char *method, const char *path, const char *const *query,
		     struct dlsink *out, json_t **json, char *pos_hdr, size_t pos_len)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	struct httpc_req q;
	char *url = NULL;
	int ret = 1;
	httpc_req_init(&q, c);
	if (!c || !(url = httpc_url(c, cl->url, path, query)) ||
	    httpc_add_header(&hdrs, "Authorization: %s", cl->token) != 0)
		goto out;
	q.method = method;
	q.url = url;
	q.headers = hdrs;
	q.user_agent = "litefs-cloud-cli/" CLOUD_VERSION;
	q.mem_max = MAX_ERROR_BODY * 16;
	if (out) {
		q.ok_write = dlsink_write;
		q.ok_ctx = out;
		q.recv_buffer = 1024 * 1024; /* fewer, larger reads for a big body */
	}
	if (httpc_perform(&q) != CURLE_OK) {
		fprintf(stderr, "litefs-cloud %s: request to %s failed: %s\n", cl->cmd, cl->url,
			httpc_transport_error(&q));
		goto out;
	}
	if (q.status < 200 || q.status >= 300) {
		print_http_error(cl, &q);
		goto out;
	}
	if (pos_hdr)
		httpc_header(&q, "Litefs-Pos", pos_hdr, pos_len);
	if (json) {
		json_error_t jerr;
		*json = q.mem ? json_loads(q.mem, 0, &jerr) : NULL;
		if (!*json) {
			fprintf(stderr, "litefs-cloud %s: the server's reply is not JSON\n", cl->cmd);
			goto out;
		}
	}
	ret = 0;
out:
	curl_slist_free_all(hdrs);
	free(url);
	httpc_req_free(&q);
	if (c)
		curl_easy_cleanup(c);
	return ret;
}

static const char client_opts_help[] =
	"  -url URL        the service (default: $LITEFS_CLOUD_ENDPOINT, else " DEFAULT_URL ")\n"
	"  -token TOKEN    a cluster token (default: $LITEFS_CLOUD_TOKEN)\n"
	"  -h, --help      show this help\n"
	"\n"
	"TXIDs: 16 hex digits (as LiteFS prints them), 0x-prefixed hex, or decimal.\n"
	"Timestamps: RFC 3339 (2026-11-26T16:09:15.123Z) or milliseconds since the epoch.\n"
	"Options take one dash or two, and -opt=value as well as -opt value.\n"
	"Exit status: 0 success, 1 failure, 2 usage error.\n";

static const char restore_usage[] =
	"Usage: litefs-cloud restore DB (--txid N | --timestamp T) [--check] [--as NEWNAME] [options]\n"
	"\n"
	"Restores DB on the service to its state after transaction N, or at time T\n"
	"(the last transaction committed at or before T). The restore is appended as\n"
	"a new transaction, so restoring again undoes it; LiteFS nodes follow within\n"
	"seconds. With --as, the state is written to a new database NEWNAME instead\n"
	"(a fork, at TXID 1; it returns once NEWNAME is durable) and DB is untouched.\n"
	"With --check, nothing changes: the exact TXID and timestamp the restore\n"
	"would produce are printed.\n"
	"\n"
	"Only the end of each upload is restorable: a TXID inside an upload that\n"
	"brought several transactions at once (LiteFS batches about a second) fails\n"
	"with ENOTRESTORABLE, naming the upload and the nearest restorable TXIDs.\n"
	"A timestamp always resolves (to the last upload end at or before it).\n"
	"\n"
	"Options:\n";

static const char export_usage[] =
	"Usage: litefs-cloud export DB [--txid N | --timestamp T] [--format sqlite|ltx] -o FILE [options]\n"
	"\n"
	"Writes DB as of transaction N or time T (default: the latest state) to FILE:\n"
	"a SQLite database (default) or a snapshot LTX file. FILE is replaced\n"
	"atomically, only once the whole export arrived.\n"
	"\n"
	"Options:\n";

static const char info_usage[] =
	"Usage: litefs-cloud info DB [options]\n"
	"\n"
	"Prints DB's history on the service as JSON: position, restorable range\n"
	"(TXIDs and timestamps), snapshots and files per level with sizes, and\n"
	"\"ranges\": which runs of TXIDs are restorable at every transaction and\n"
	"which only at batch ends (LiteFS sends about a second of transactions as\n"
	"one upload; a TXID inside one is refused with ENOTRESTORABLE).\n"
	"\n"
	"Options:\n";

static const char list_usage[] =
	"Usage: litefs-cloud list [options]\n"
	"\n"
	"Lists the databases of the token's cluster with their positions.\n"
	"\n"
	"Options:\n";

/* Fills in the URL and token from the environment; 0 or 2 (printed). */
static int client_setup(struct client *cl)
{
	if (!cl->url)
		cl->url = getenv("LITEFS_CLOUD_ENDPOINT");
	if (!cl->url || !cl->url[0])
		cl->url = DEFAULT_URL;
	if (!cl->token)
		cl->token = getenv("LITEFS_CLOUD_TOKEN");
	if (!cl->token || !cl->token[0]) {
		fprintf(stderr, "litefs-cloud %s: no token: pass -token or set LITEFS_CLOUD_TOKEN\n", cl->cmd);
		return 2;
	}
	return 0;
}

/* Parses the flags of a client command; 0 to go on, else the exit code
 * + 1 (1 means exit 0: help was shown). */
static int client_parse(struct client *cl, int argc, char **argv, const struct flag *more, const char *usage,
			const char **pos, int max_pos, int *n_pos)
{
	struct flag flags[32];
	size_t n = 0;
	flags[n++] = (struct flag){ "url", &cl->url, NULL };
	flags[n++] = (struct flag){ "token", &cl->token, NULL };
	while (more && more->name)
		flags[n++] = *more++;
	flags[n] = (struct flag){ NULL, NULL, NULL };
	cl->cmd = argv[0];
	int prc = parse_flags(argv[0], argc, argv, flags, pos, max_pos, n_pos);
	if (prc == 0 && *n_pos != max_pos) {
		fprintf(stderr, "litefs-cloud %s: expected %d argument%s\n", argv[0], max_pos, max_pos == 1 ? "" : "s");
		prc = 2;
	}
	if (prc != 0) {
		fputs(usage, prc == 1 ? stdout : stderr);
		fputs(client_opts_help, prc == 1 ? stdout : stderr);
		return prc == 1 ? 1 : 3;
	}
	return client_setup(cl) == 0 ? 0 : 3;
}

static void print_pos(const char *what, json_t *o)
{
	const char *db = json_string_value(json_object_get(o, "db"));
	const char *txid = json_string_value(json_object_get(o, "txID"));
	const char *chk = json_string_value(json_object_get(o, "postApplyChecksum"));
	const char *ts = json_string_value(json_object_get(o, "timestamp"));
	printf("%s %s: txid=%s checksum=%s timestamp=%s\n", what, db ? db : "?", txid ? txid : "?", chk ? chk : "?",
	       ts ? ts : "-");
}

static int cmd_restore(int argc, char **argv)
{
	struct client cl = { 0 };
	const char *txid = NULL, *ts = NULL, *as = NULL, *pos[1];
	bool check = false;
	int n_pos = 0;
	const struct flag more[] = { { "txid", &txid, NULL }, { "timestamp", &ts, NULL }, { "as", &as, NULL },
				     { "check", NULL, &check }, { NULL, NULL, NULL } };
	int prc = client_parse(&cl, argc, argv, more, restore_usage, pos, 1, &n_pos);
	if (prc != 0)
		return prc - 1;
	if (!txid == !ts) {
		fprintf(stderr, "litefs-cloud restore: give exactly one of --txid and --timestamp\n");
		return 2;
	}
	const char *const q[] = { "db", pos[0], "txid", txid, "timestamp", ts, "as", as, NULL };
	json_t *o = NULL;
	if (client_do(&cl, check ? "GET" : "POST", check ? "/db/restore/check" : "/db/restore", q, NULL, &o, NULL, 0))
		return 1;
	if (!json_object_get(o, "db"))
		json_object_set_new(o, "db", json_string(as ? as : pos[0]));
	print_pos(check ? "a restore would produce the state of" : "restored", o);
	json_decref(o);
	return 0;
}

static int cmd_export(int argc, char **argv)
{
	struct client cl = { 0 };
	const char *txid = NULL, *ts = NULL, *format = "sqlite", *outp = NULL, *pos[1];
	int n_pos = 0;
	const struct flag more[] = { { "txid", &txid, NULL }, { "timestamp", &ts, NULL }, { "format", &format, NULL },
				     { "o", &outp, NULL }, { NULL, NULL, NULL } };
	int prc = client_parse(&cl, argc, argv, more, export_usage, pos, 1, &n_pos);
	if (prc != 0)
		return prc - 1;
	if ((txid && ts) || !outp || (strcmp(format, "sqlite") != 0 && strcmp(format, "ltx") != 0)) {
		fprintf(stderr, "litefs-cloud export: need -o FILE, at most one of --txid and --timestamp, "
				"and --format sqlite or ltx\n");
		return 2;
	}
	char where[80] = "";
	struct fileio_replace out;
	struct dlsink *sink = NULL;
	int orc = fileio_replace_open(&out, outp, 0600);
	if (orc != 0 || (orc = dlsink_start(&sink, &out)) != 0) {
		fprintf(stderr, "litefs-cloud export: cannot create a file beside %s: %s\n", outp, err_str(orc));
		if (out.fd >= 0)
			fileio_replace_abort(&out);
		return 1;
	}
	/* The file is written by the sink's thread as the body arrives
	 * (base/dlsink.h) and replaces outp only once the whole export
	 * arrived. */
	const char *const q[] = { "db", pos[0], "format", format, "txid", txid, "timestamp", ts, NULL };
	int rc = client_do(&cl, "GET", "/db/snapshot", q, sink, NULL, where, sizeof(where));
	int crc = dlsink_finish(sink);
	if (crc == 0 && rc == 0)
		crc = fileio_replace_commit(&out);
	if (crc != 0)
		fprintf(stderr, "litefs-cloud export: cannot write %s: %s\n", outp, strerror(-crc));
	fileio_replace_abort(&out);
	if (rc != 0 || crc != 0)
		return 1;
	fprintf(stderr, "exported %s at %s to %s\n", pos[0], where[0] ? where : "?", outp);
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	struct client cl = { 0 };
	const char *pos[1];
	int n_pos = 0;
	int prc = client_parse(&cl, argc, argv, NULL, info_usage, pos, 1, &n_pos);
	if (prc != 0)
		return prc - 1;
	json_t *o = NULL;
	const char *const q[] = { "db", pos[0], NULL };
	if (client_do(&cl, "GET", "/db/info", q, NULL, &o, NULL, 0))
		return 1;
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(o);
	if (!s)
		return 1;
	printf("%s\n", s);
	free(s);
	return 0;
}

static int cmd_list(int argc, char **argv)
{
	struct client cl = { 0 };
	const char *pos[1];
	int n_pos = 0;
	int prc = client_parse(&cl, argc, argv, NULL, list_usage, pos, 0, &n_pos);
	if (prc != 0)
		return prc - 1;
	json_t *o = NULL;
	if (client_do(&cl, "GET", "/pos", NULL, NULL, &o, NULL, 0))
		return 1;
	const char *name;
	json_t *v;
	printf("%-32s %-16s %s\n", "NAME", "TXID", "CHECKSUM");
	json_object_foreach(o, name, v) {
		const char *txid = json_string_value(json_object_get(v, "txid"));
		const char *chk = json_string_value(json_object_get(v, "postApplyChecksum"));
		printf("%-32s %-16s %s\n", name, txid ? txid : "?", chk ? chk : "?");
	}
	json_decref(o);
	return 0;
}

/* ---- Dispatch ----------------------------------------------------------- */

static const char usage[] =
	"litefs-cloud " CLOUD_VERSION " — the LiteFS Cloud backup service, in C\n"
	"\n"
	"Usage: litefs-cloud <command> [arguments]\n"
	"\n"
	"Service (on the server host):\n"
	"  serve                       run the service (-addr, -data-dir, -retention, ...)\n"
	"  cluster create|list|delete  manage clusters (create prints the first token)\n"
	"  cluster rebind NAME         let a node that lost its data take NAME under a new cluster ID\n"
	"  token create|list|revoke    manage tokens\n"
	"\n"
	"Users (over HTTP: -url or $LITEFS_CLOUD_ENDPOINT, -token or $LITEFS_CLOUD_TOKEN):\n"
	"  restore DB --txid N|--timestamp T [--check] [--as NEW]\n"
	"                              restore to any transaction or moment in the window\n"
	"  export DB [--txid N|--timestamp T] [--format sqlite|ltx] -o FILE\n"
	"                              write a past (or the latest) state to FILE\n"
	"  info DB                     history: restorable ranges, snapshots, sizes\n"
	"  list                        databases and their positions\n"
	"  version                     print the version\n"
	"\n"
	"Run 'litefs-cloud <command> --help' for a command's options.\n";

int cmd_cloud_main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "-help") || !strcmp(cmd, "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version") || !strcmp(cmd, "-version")) {
		printf("litefs-cloud %s\n", CLOUD_VERSION);
		return 0;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "serve", cmd_serve }, { "restore", cmd_restore }, { "export", cmd_export },
		{ "info", cmd_info },   { "list", cmd_list },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	if (!strcmp(cmd, "cluster") || !strcmp(cmd, "token"))
		return cmd_admin(argc - 1, argv + 1, !strcmp(cmd, "cluster"));
	fprintf(stderr, "litefs-cloud: unknown command %s\n\n%s", cmd, usage);
	return 2;
}
