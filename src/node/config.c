/*
 * config.c — litefs.yml, read the way LiteFS 0.5.14 reads it.
 *
 * Pipeline (config_parse):
 *
 *   raw text --goenv_expand()---> expanded text + the runs it came from
 *            --yamltree_load()--> a tree of the first YAML document
 *                                 (base/yamltree.h: lines, anchors, yaml.v3
 *                                 scalar resolution)
 *            --decode_map()-----> struct config, driven by the field tables
 *                                 below; every problem is collected, not only
 *                                 the first (yaml.v3 does the same)
 *            --finalize()-------> LiteFS's "0 means default" rules, warnings
 *
 * This file is the schema only: what each key is, how its node becomes a
 * field, what is valid, how the result prints. The Go behaviour it leans on
 * lives in base/: goenv (os.ExpandEnv as LiteFS does it), yamltree (yaml.v3's
 * view of a document), godur (time.ParseDuration), shellwords (exec
 * commands as go-shellwords splits them).
 *
 * Decoding mirrors gopkg.in/yaml.v3 decoding into LiteFS's Config struct
 * with KnownFields(true):
 *
 *   - A plain scalar is resolved like yaml.v3 (YAML 1.2 core schema): null
 *     (~, null, empty), bool (true/True/TRUE/false/...), int, float, or
 *     string. Quoted scalars are strings. An explicit !!tag wins.
 *   - null keeps the current (default) value of a scalar field and empties
 *     a list (yaml.v3 sets slices to nil).
 *   - bool fields take a resolved bool, or one of the YAML 1.1 strings
 *     y/yes/on/n/no/off (in their three case forms) even when quoted; a
 *     quoted "true" is refused, as in yaml.v3.
 *   - duration fields take a string for time.ParseDuration; a bare integer
 *     such as `60` is refused.
 *   - int fields take a resolved int; a quoted "64" is refused.
 *   - string fields take any scalar as written.
 *   - exec is a string (one command), a list of mappings, or null. Inside
 *     exec items unknown keys are ignored (yaml.v3's Node.Decode does not
 *     carry KnownFields); everywhere else they are errors.
 *   - duplicate keys are errors everywhere.
 *
 * Line numbers: libyaml reports lines of the expanded text. The expansion
 * records a run per copied stretch and per substitution (struct
 * goenv_map), so a line can be mapped back to the line of the original
 * file (struct linemap, given to yamltree_load as its line mapping).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/goenv.h"
#include "base/godur.h"
#include "base/sbuf.h"
#include "base/shellwords.h"
#include "base/yamltree.h"
#include "node/config.h"

/*
 * What this build implements of what the file can ask for. The engineer
 * who lands one of these flips its switch; config_unsupported() then stops
 * reporting it.
 */
static const bool have_lease_consul = false;
static const bool have_lease_etcd = true;
static const bool have_replication = true;
static const bool have_proxy = true;
static const bool have_backup = true; /* litefs-cloud only */
static const bool have_tracing_log = false;
static const bool have_log_json = false;
static const bool have_database_filter = true;

#define MAX_ERRORS 16

/* ------------------------------------------------------------------ */
/* Messages.                                                           */

/* Copies the buffer into errbuf, without its trailing newline. */
static void sbuf_to_errbuf(const struct sbuf *b, char *errbuf, size_t errlen)
{
	if (!errbuf || errlen == 0)
		return;
	size_t n = b->p ? b->len : 0;
	while (n > 0 && b->p[n - 1] == '\n')
		n--;
	if (n >= errlen)
		n = errlen - 1;
	if (n)
		memcpy(errbuf, b->p, n);
	errbuf[n] = '\0';
}

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
	if (!errbuf || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Error collection: "name:line: message" lines, up to MAX_ERRORS.     */

struct errs {
	struct sbuf buf;
	const char *name;
	int n;
};

static void errs_add(struct errs *e, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errs_add(struct errs *e, int line, const char *fmt, ...)
{
	e->n++;
	if (e->n > MAX_ERRORS) {
		if (e->n == MAX_ERRORS + 1)
			sbuf_printf(&e->buf, "(further errors not shown)\n");
		return;
	}
	if (line > 0)
		sbuf_printf(&e->buf, "%s:%d: ", e->name, line);
	else
		sbuf_printf(&e->buf, "%s: ", e->name);
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&e->buf, fmt, ap);
	va_end(ap);
	sbuf_putn(&e->buf, "\n", 1);
}

/* ------------------------------------------------------------------ */
/* Line numbers of the file as written (see the top of the file).      */

/* Offsets of the start of every line (line 1 starts at 0). Caller frees. */
static size_t *line_starts(const char *s, size_t n, size_t *count)
{
	size_t cap = 64, k = 0;
	size_t *v = malloc(cap * sizeof(*v));
	if (!v)
		return NULL;
	v[k++] = 0;
	for (size_t i = 0; i < n;) {
		size_t bl = yamltree_break_len(s, n, i);
		if (!bl) {
			i++;
			continue;
		}
		i += bl;
		if (k == cap) {
			cap *= 2;
			size_t *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				return NULL;
			}
			v = nv;
		}
		v[k++] = i;
	}
	*count = k;
	return v;
}


/* Maps lines of the expanded text back to lines of the original text. */
struct linemap {
	size_t *exp_starts, n_exp;
	size_t *orig_starts, n_orig;
	struct goenv_map runs;
};

static void linemap_free(struct linemap *m)
{
	free(m->exp_starts);
	free(m->orig_starts);
	goenv_map_free(&m->runs);
	memset(m, 0, sizeof(*m));
}

/* 1-based line in the expanded text -> 1-based line in the original; a
 * yamltree_line_fn. Lines pass through unchanged without an expansion. */
static int linemap_line(void *ctx, int line)
{
	const struct linemap *m = ctx;
	if (!m || line <= 0 || !m->exp_starts)
		return line;
	size_t li = (size_t)line - 1;
	if (li >= m->n_exp)
		li = m->n_exp - 1;
	size_t in_off = goenv_map_offset(&m->runs, m->exp_starts[li]);
	/* Number of original line starts <= in_off. */
	size_t lo = 0, hi = m->n_orig;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (m->orig_starts[mid] <= in_off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 ? (int)lo : 1;
}

/* ------------------------------------------------------------------ */
/* Field tables.                                                       */

enum ftype { F_STR, F_BOOL, F_DUR, F_INT, F_LIST, F_MAP, F_EXEC };

struct field {
	const char *name;
	enum ftype type;
	size_t off; /* into struct config, or struct config_exec for exec items */
	const struct field *sub; /* F_MAP */
};

#define CF(member) offsetof(struct config, member)
#define EF(member) offsetof(struct config_exec, member)

static const struct field exec_item_fields[] = {
	{ "cmd", F_STR, EF(cmd), NULL },
	{ "if-candidate", F_BOOL, EF(if_candidate), NULL },
	{ "if-primary", F_BOOL, EF(if_primary), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field data_fields[] = {
	{ "dir", F_STR, CF(data.dir), NULL },
	{ "compress", F_BOOL, CF(data.compress), NULL },
	{ "retention", F_DUR, CF(data.retention_ms), NULL },
	{ "retention-monitor-interval", F_DUR, CF(data.retention_monitor_interval_ms), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field fuse_fields[] = {
	{ "dir", F_STR, CF(fuse.dir), NULL },
	{ "allow-other", F_BOOL, CF(fuse.allow_other), NULL },
	{ "debug", F_BOOL, CF(fuse.debug), NULL },
	{ "passthrough", F_BOOL, CF(fuse.passthrough), NULL },
	{ "uring", F_BOOL, CF(fuse.uring), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field http_fields[] = {
	{ "addr", F_STR, CF(http.addr), NULL },
	{ "snapshot-timeout", F_DUR, CF(http.snapshot_timeout_ms), NULL },
	{ "secret", F_STR, CF(http.secret), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field proxy_fields[] = {
	{ "addr", F_STR, CF(proxy.addr), NULL },
	{ "target", F_STR, CF(proxy.target), NULL },
	{ "db", F_STR, CF(proxy.db), NULL },
	{ "max-lag", F_DUR, CF(proxy.max_lag_ms), NULL },
	{ "debug", F_BOOL, CF(proxy.debug), NULL },
	{ "passthrough", F_LIST, CF(proxy.passthrough), NULL },
	{ "always-forward", F_LIST, CF(proxy.always_forward), NULL },
	{ "primary-redirect-timeout", F_DUR, CF(proxy.primary_redirect_timeout_ms), NULL },
	{ "read-timeout", F_DUR, CF(proxy.read_timeout_ms), NULL },
	{ "read-header-timeout", F_DUR, CF(proxy.read_header_timeout_ms), NULL },
	{ "write-timeout", F_DUR, CF(proxy.write_timeout_ms), NULL },
	{ "idle-timeout", F_DUR, CF(proxy.idle_timeout_ms), NULL },
	{ "advertise-url", F_STR, CF(proxy.advertise_url), NULL },
	{ "txid-timeout", F_DUR, CF(proxy.txid_timeout_ms), NULL },
	{ "fly-replay", F_BOOL, CF(proxy.fly_replay), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field consul_fields[] = {
	{ "url", F_STR, CF(lease.consul.url), NULL },
	{ "key", F_STR, CF(lease.consul.key), NULL },
	{ "ttl", F_DUR, CF(lease.consul.ttl_ms), NULL },
	{ "lock-delay", F_DUR, CF(lease.consul.lock_delay_ms), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field etcd_fields[] = {
	{ "endpoints", F_LIST, CF(lease.etcd.endpoints), NULL },
	{ "key", F_STR, CF(lease.etcd.key), NULL },
	{ "ttl", F_DUR, CF(lease.etcd.ttl_ms), NULL },
	{ "username", F_STR, CF(lease.etcd.username), NULL },
	{ "password", F_STR, CF(lease.etcd.password), NULL },
	{ "ca-file", F_STR, CF(lease.etcd.ca_file), NULL },
	{ "cert-file", F_STR, CF(lease.etcd.cert_file), NULL },
	{ "key-file", F_STR, CF(lease.etcd.key_file), NULL },
	{ "catch-up-timeout", F_DUR, CF(lease.etcd.catch_up_timeout_ms), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field lease_fields[] = {
	{ "type", F_STR, CF(lease.type), NULL },
	{ "hostname", F_STR, CF(lease.hostname), NULL },
	{ "advertise-url", F_STR, CF(lease.advertise_url), NULL },
	{ "candidate", F_BOOL, CF(lease.candidate), NULL },
	{ "promote", F_BOOL, CF(lease.promote), NULL },
	{ "reconnect-delay", F_DUR, CF(lease.reconnect_delay_ms), NULL },
	{ "demote-delay", F_DUR, CF(lease.demote_delay_ms), NULL },
	{ "databases", F_LIST, CF(lease.databases), NULL },
	{ "sync-replicas", F_INT, CF(lease.sync_replicas), NULL },
	{ "sync-timeout", F_DUR, CF(lease.sync_timeout_ms), NULL },
	{ "sync-on-timeout", F_STR, CF(lease.sync_on_timeout), NULL },
	{ "consul", F_MAP, 0, consul_fields },
	{ "etcd", F_MAP, 0, etcd_fields },
	{ NULL, 0, 0, NULL },
};

static const struct field backup_fields[] = {
	{ "type", F_STR, CF(backup.type), NULL },
	{ "path", F_STR, CF(backup.path), NULL },
	{ "url", F_STR, CF(backup.url), NULL },
	{ "cluster", F_STR, CF(backup.cluster), NULL },
	{ "auth-token", F_STR, CF(backup.auth_token), NULL },
	{ "delay", F_DUR, CF(backup.delay_ms), NULL },
	{ "full-sync-interval", F_DUR, CF(backup.full_sync_interval_ms), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field log_fields[] = {
	{ "format", F_STR, CF(log.format), NULL },
	{ "timestamp", F_BOOL, CF(log.timestamp), NULL },
	{ "debug", F_BOOL, CF(log.debug), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field tracing_fields[] = {
	{ "enabled", F_BOOL, CF(tracing.enabled), NULL },
	{ "path", F_STR, CF(tracing.path), NULL },
	{ "max-size", F_INT, CF(tracing.max_size), NULL },
	{ "max-count", F_INT, CF(tracing.max_count), NULL },
	{ "compress", F_BOOL, CF(tracing.compress), NULL },
	{ NULL, 0, 0, NULL },
};

static const struct field top_fields[] = {
	{ "exit-on-error", F_BOOL, CF(exit_on_error), NULL },
	{ "skip-sync", F_BOOL, CF(skip_sync), NULL },
	{ "strict-verify", F_BOOL, CF(strict_verify), NULL },
	{ "exec", F_EXEC, 0, NULL },
	{ "data", F_MAP, 0, data_fields },
	{ "fuse", F_MAP, 0, fuse_fields },
	{ "http", F_MAP, 0, http_fields },
	{ "proxy", F_MAP, 0, proxy_fields },
	{ "lease", F_MAP, 0, lease_fields },
	{ "backup", F_MAP, 0, backup_fields },
	{ "log", F_MAP, 0, log_fields },
	{ "tracing", F_MAP, 0, tracing_fields },
	{ NULL, 0, 0, NULL },
};

/* Unknown keys people actually write, with what to write instead. */
static const struct {
	const char *path;
	const char *hint;
} key_hints[] = {
	{ "mount-dir", "pre-0.4 layout; now spelled fuse.dir" },
	{ "data-dir", "pre-0.4 layout; now spelled data.dir" },
	{ "candidate", "pre-0.4 layout; now spelled lease.candidate" },
	{ "debug", "pre-0.4 layout; now spelled fuse.debug, and LiteFS's own debug log is log.debug" },
	{ "retention", "pre-0.4 layout; now data.retention (was retention.duration) and "
		       "data.retention-monitor-interval (was retention.monitor-interval)" },
	{ "consul", "pre-0.4 layout; now lease.consul (url, key, ttl, lock-delay) with lease.type: consul, "
		    "and consul.hostname/consul.advertise-url become lease.hostname/lease.advertise-url" },
	{ "static", "pre-0.4 layout; now lease.type: static with lease.candidate (was static.primary), "
		    "lease.hostname and lease.advertise-url (was static.primary-url)" },
	{ "mount", "the FUSE mount directory is fuse.dir" },
	{ "lease.timeout", "the lease TTL is lease.etcd.ttl or lease.consul.ttl" },
	{ "lease.static", "a static lease is lease.type: static with lease.candidate" },
};

/* ------------------------------------------------------------------ */
/* Config memory helpers.                                              */

static void strlist_free(struct config_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

static void exec_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_exec; i++)
		free(cfg->exec[i].cmd);
	free(cfg->exec);
	cfg->exec = NULL;
	cfg->n_exec = 0;
}

/* Replaces *slot with a copy of s. Returns false on OOM (slot unchanged). */
static bool set_str(char **slot, const char *s)
{
	char *c = strdup(s);
	if (!c)
		return false;
	free(*slot);
	*slot = c;
	return true;
}

/* Every char * field of struct config, for init and free. */
static const size_t string_offsets[] = {
	CF(name), CF(data.dir), CF(fuse.dir), CF(http.addr), CF(http.secret),
	CF(proxy.addr), CF(proxy.target), CF(proxy.db), CF(proxy.advertise_url),
	CF(lease.type), CF(lease.hostname), CF(lease.advertise_url), CF(lease.sync_on_timeout),
	CF(lease.consul.url), CF(lease.consul.key), CF(lease.etcd.key),
	CF(lease.etcd.username), CF(lease.etcd.password), CF(lease.etcd.ca_file), CF(lease.etcd.cert_file),
	CF(lease.etcd.key_file),
	CF(backup.type), CF(backup.path), CF(backup.url), CF(backup.cluster), CF(backup.auth_token),
	CF(log.format), CF(tracing.path),
};
#define N_STRING_OFFSETS (sizeof(string_offsets) / sizeof(string_offsets[0]))

static char **slot_at(struct config *c, size_t off)
{
	return (char **)((char *)c + off);
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_STRING_OFFSETS; i++)
		free(*slot_at(cfg, string_offsets[i]));
	exec_free(cfg);
	strlist_free(&cfg->proxy.passthrough);
	strlist_free(&cfg->proxy.always_forward);
	strlist_free(&cfg->lease.databases);
	strlist_free(&cfg->lease.etcd.endpoints);
	for (size_t i = 0; i < cfg->n_keylines; i++)
		free(cfg->keylines[i].path);
	free(cfg->keylines);
	for (size_t i = 0; i < cfg->n_warnings; i++)
		free(cfg->warnings[i]);
	free(cfg->warnings);
	memset(cfg, 0, sizeof(*cfg));
}

int config_init(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < N_STRING_OFFSETS; i++) {
		if (!(*slot_at(cfg, string_offsets[i]) = strdup(""))) {
			config_free(cfg);
			return ERR_NOMEM;
		}
	}
	cfg->exit_on_error = true;
	cfg->data.compress = true;
	cfg->fuse.passthrough = false; /* opt-in: docs/mount.md, demotion */
	cfg->data.retention_ms = CONFIG_DEFAULT_RETENTION_MS;
	cfg->data.retention_monitor_interval_ms = CONFIG_DEFAULT_RETENTION_MONITOR_INTERVAL_MS;
	cfg->lease.candidate = true;
	cfg->lease.reconnect_delay_ms = CONFIG_DEFAULT_RECONNECT_DELAY_MS;
	cfg->lease.demote_delay_ms = CONFIG_DEFAULT_DEMOTE_DELAY_MS;
	cfg->lease.sync_timeout_ms = CONFIG_DEFAULT_SYNC_TIMEOUT_MS;
	cfg->lease.consul.ttl_ms = CONFIG_DEFAULT_CONSUL_TTL_MS;
	cfg->lease.consul.lock_delay_ms = CONFIG_DEFAULT_CONSUL_LOCK_DELAY_MS;
	cfg->lease.etcd.ttl_ms = CONFIG_DEFAULT_ETCD_TTL_MS;
	cfg->proxy.max_lag_ms = CONFIG_DEFAULT_PROXY_MAX_LAG_MS;
	cfg->proxy.primary_redirect_timeout_ms = CONFIG_DEFAULT_PROXY_PRIMARY_REDIRECT_TIMEOUT_MS;
	cfg->proxy.read_header_timeout_ms = CONFIG_DEFAULT_PROXY_READ_HEADER_TIMEOUT_MS;
	cfg->proxy.idle_timeout_ms = CONFIG_DEFAULT_PROXY_IDLE_TIMEOUT_MS;
	cfg->proxy.txid_timeout_ms = CONFIG_DEFAULT_PROXY_TXID_TIMEOUT_MS;
	cfg->backup.delay_ms = CONFIG_DEFAULT_BACKUP_DELAY_MS;
	cfg->backup.full_sync_interval_ms = CONFIG_DEFAULT_BACKUP_FULL_SYNC_INTERVAL_MS;
	cfg->tracing.enabled = true;
	cfg->tracing.max_size = CONFIG_DEFAULT_TRACING_MAX_SIZE;
	cfg->tracing.max_count = CONFIG_DEFAULT_TRACING_MAX_COUNT;
	cfg->tracing.compress = true;
	if (!set_str(&cfg->http.addr, CONFIG_DEFAULT_HTTP_ADDR) ||
	    !set_str(&cfg->lease.type, "static") ||
	    !set_str(&cfg->lease.sync_on_timeout, "async") ||
	    !set_str(&cfg->lease.etcd.key, CONFIG_DEFAULT_ETCD_KEY) ||
	    !set_str(&cfg->log.format, "text") ||
	    !set_str(&cfg->name, "litefs.yml")) {
		config_free(cfg);
		return ERR_NOMEM;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Decoding.                                                           */

struct dctx {
	struct yamltree *doc;
	struct config *cfg;
	struct errs *errs;
	bool oom;
};

static void add_keyline(struct dctx *d, const char *path, int line)
{
	struct config *c = d->cfg;
	if (c->n_keylines % 32 == 0) {
		struct config_keyline *v = realloc(c->keylines, (c->n_keylines + 32) * sizeof(*v));
		if (!v) {
			d->oom = true;
			return;
		}
		c->keylines = v;
	}
	char *p = strdup(path);
	if (!p) {
		d->oom = true;
		return;
	}
	c->keylines[c->n_keylines++] = (struct config_keyline){ p, line };
}

static void add_warning(struct config *c, bool *oom, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add_warning(struct config *c, bool *oom, int line, const char *fmt, ...)
{
	struct sbuf b = { 0 };
	if (line > 0)
		sbuf_printf(&b, "%s:%d: ", c->name, line);
	else
		sbuf_printf(&b, "%s: ", c->name);
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	char **v = b.oom ? NULL : realloc(c->warnings, (c->n_warnings + 1) * sizeof(*v));
	if (!v) {
		free(b.p);
		*oom = true;
		return;
	}
	c->warnings = v;
	c->warnings[c->n_warnings++] = b.p;
}

/* Warns about "{NAME}" written where "${NAME}" was surely meant. */
static void check_missing_dollar(struct dctx *d, const char *path, const char *s, int line)
{
	for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
		if (p > s && p[-1] == '$')
			continue;
		const char *q = p + 1;
		if (!(*q == '_' || (*q >= 'A' && *q <= 'Z')))
			continue;
		while (*q == '_' || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9'))
			q++;
		if (*q != '}')
			continue;
		add_warning(d->cfg, &d->oom, line,
			    "%s: \"%.*s\" looks like an environment variable missing its \"$\"; it is used as written",
			    path, (int)(q - p + 1), p);
		return;
	}
}

static void type_error(struct dctx *d, const char *path, const struct yamltree_node *v, const char *expected)
{
	struct sbuf b = { 0 };
	yamltree_describe(&b, v);
	errs_add(d->errs, v->line, "%s: expected %s, got %s", path, expected, b.p ? b.p : "?");
	d->oom |= b.oom;
	free(b.p);
}

static bool check_tag(struct dctx *d, const char *path, const struct yamltree_node *v)
{
	bool bv;
	if (v->kind == YAMLTREE_SCALAR && yamltree_resolve(v, &bv) == YAMLTREE_BADTAG) {
		errs_add(d->errs, v->line, "%s: unsupported tag \"%s\" for value \"%s\"", path, v->tag ? v->tag : "",
			 v->val);
		return false;
	}
	if (v->kind != YAMLTREE_SCALAR && v->tag) {
		errs_add(d->errs, v->line, "%s: unsupported tag \"%s\"", path, v->tag);
		return false;
	}
	return true;
}

static void decode_str(struct dctx *d, const char *path, const struct yamltree_node *v, char **slot)
{
	if (yamltree_is_null(v))
		return;
	if (v->kind != YAMLTREE_SCALAR) {
		type_error(d, path, v, "a string");
		return;
	}
	if (!set_str(slot, v->val))
		d->oom = true;
	check_missing_dollar(d, path, v->val, v->line);
}

static void decode_bool(struct dctx *d, const char *path, const struct yamltree_node *v, bool *slot)
{
	bool bv = false;
	if (v->kind == YAMLTREE_SCALAR) {
		enum yamltree_type r = yamltree_resolve(v, &bv);
		if (r == YAMLTREE_NULL)
			return;
		if (r == YAMLTREE_BOOL) {
			*slot = bv;
			return;
		}
		if (r == YAMLTREE_STR && yamltree_yaml11_bool(v->val, slot))
			return;
	}
	type_error(d, path, v, "a boolean (true or false)");
}

static void decode_dur(struct dctx *d, const char *path, const struct yamltree_node *v, int64_t *slot)
{
	bool bv;
	if (v->kind == YAMLTREE_SCALAR) {
		enum yamltree_type r = yamltree_resolve(v, &bv);
		if (r == YAMLTREE_NULL)
			return;
		if (r == YAMLTREE_STR) {
			int64_t ms;
			if (godur_parse_ms(v->val, &ms) == 0) {
				*slot = ms;
				return;
			}
			struct sbuf b = { 0 };
			sbuf_quote(&b, v->val, v->len, 64);
			errs_add(d->errs, v->line,
				 "%s: invalid duration %s (expected a number with a unit: ns, us, ms, s, m or h, "
				 "such as \"10s\" or \"1m30s\")",
				 path, b.p ? b.p : "?");
			d->oom |= b.oom;
			free(b.p);
			return;
		}
	}
	type_error(d, path, v, "a duration string such as \"10s\", \"1m30s\" or \"500ms\"");
}

static void decode_int(struct dctx *d, const char *path, const struct yamltree_node *v, int64_t *slot)
{
	bool bv;
	if (v->kind == YAMLTREE_SCALAR) {
		enum yamltree_type r = yamltree_resolve(v, &bv);
		if (r == YAMLTREE_NULL)
			return;
		if (r == YAMLTREE_INT) {
			int64_t x = 0;
			if (yamltree_parse_int(v->val, &x) == 0) {
				*slot = x;
				return;
			}
			errs_add(d->errs, v->line, "%s: integer %s is out of range", path, v->val);
			return;
		}
	}
	type_error(d, path, v, "an integer");
}

static void decode_list(struct dctx *d, const char *path, const struct yamltree_node *v, struct config_strlist *slot)
{
	if (yamltree_is_null(v)) {
		strlist_free(slot);
		return;
	}
	if (v->kind != YAMLTREE_SEQ) {
		type_error(d, path, v, "a list of strings");
		return;
	}
	char **items = calloc(v->n_kids ? v->n_kids : 1, sizeof(*items));
	if (!items) {
		d->oom = true;
		return;
	}
	bool ok = true;
	for (size_t i = 0; i < v->n_kids; i++) {
		const struct yamltree_node *it = yamltree_kid(d->doc, v, i);
		char ipath[340];
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (!check_tag(d, ipath, it)) {
			ok = false;
			continue;
		}
		if (it->kind != YAMLTREE_SCALAR) {
			type_error(d, ipath, it, "a string");
			ok = false;
			continue;
		}
		items[i] = strdup(yamltree_is_null(it) ? "" : it->val);
		if (!items[i]) {
			d->oom = true;
			ok = false;
			continue;
		}
		check_missing_dollar(d, ipath, items[i], it->line);
	}
	if (!ok) {
		for (size_t i = 0; i < v->n_kids; i++)
			free(items[i]);
		free(items);
		return;
	}
	strlist_free(slot);
	if (v->n_kids == 0) {
		free(items);
		return;
	}
	slot->items = items;
	slot->n = v->n_kids;
}

static void decode_map(struct dctx *d, const char *path, const struct yamltree_node *m, const struct field *fields,
		       void *base, bool is_exec_item);

static void decode_exec(struct dctx *d, const struct yamltree_node *v)
{
	static const char expected[] = "a command string or a list of {cmd: ..., if-candidate: ...} items";
	bool bv;
	struct config *c = d->cfg;

	if (yamltree_is_null(v)) {
		exec_free(c);
		return;
	}
	if (v->kind == YAMLTREE_SCALAR) {
		if (yamltree_resolve(v, &bv) != YAMLTREE_STR) {
			type_error(d, "exec", v, expected);
			return;
		}
		struct config_exec *e = calloc(1, sizeof(*e));
		if (!e || !(e->cmd = strdup(v->val))) {
			free(e);
			d->oom = true;
			return;
		}
		e->line = v->line;
		exec_free(c);
		c->exec = e;
		c->n_exec = 1;
		add_keyline(d, "exec[0].cmd", v->line);
		return;
	}
	if (v->kind != YAMLTREE_SEQ) {
		type_error(d, "exec", v, expected);
		return;
	}
	exec_free(c);
	if (v->n_kids == 0)
		return;
	struct config_exec *items = calloc(v->n_kids, sizeof(*items));
	if (!items) {
		d->oom = true;
		return;
	}
	c->exec = items;
	c->n_exec = v->n_kids;
	for (size_t i = 0; i < v->n_kids; i++) {
		const struct yamltree_node *it = yamltree_kid(d->doc, v, i);
		char ipath[64];
		snprintf(ipath, sizeof(ipath), "exec[%zu]", i);
		items[i].line = it->line;
		if (!(items[i].cmd = strdup(""))) {
			d->oom = true;
			return;
		}
		if (!check_tag(d, ipath, it))
			continue;
		if (yamltree_is_null(it))
			continue; /* validation reports the missing cmd */
		if (it->kind != YAMLTREE_MAP) {
			type_error(d, ipath, it, "a mapping such as {cmd: \"myapp serve\"}");
			continue;
		}
		decode_map(d, ipath, it, exec_item_fields, &items[i], true);
	}
}

static void decode_value(struct dctx *d, const char *path, const struct yamltree_node *v, const struct field *f, void *base)
{
	if (!check_tag(d, path, v))
		return;
	void *slot = (char *)base + f->off;
	switch (f->type) {
	case F_STR:
		decode_str(d, path, v, slot);
		break;
	case F_BOOL:
		decode_bool(d, path, v, slot);
		break;
	case F_DUR:
		decode_dur(d, path, v, slot);
		break;
	case F_INT:
		decode_int(d, path, v, slot);
		break;
	case F_LIST:
		decode_list(d, path, v, slot);
		break;
	case F_EXEC:
		decode_exec(d, v);
		break;
	case F_MAP:
		if (yamltree_is_null(v))
			break;
		if (v->kind != YAMLTREE_MAP) {
			type_error(d, path, v, "a mapping");
			break;
		}
		decode_map(d, path, v, f->sub, base, false);
		break;
	}
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 40 || lb > 40)
		return 99;
	size_t row[41];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cur = row[j];
			size_t sub = prev + (a[i - 1] != b[j - 1]);
			size_t del = row[j] + 1, ins = row[j - 1] + 1;
			row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
			prev = cur;
		}
	}
	return row[lb];
}

static void unknown_key(struct dctx *d, const char *path, const struct yamltree_node *k, const struct field *fields)
{
	const char *hint = NULL;
	for (size_t i = 0; i < sizeof(key_hints) / sizeof(key_hints[0]); i++)
		if (!strcmp(key_hints[i].path, path))
			hint = key_hints[i].hint;
	struct sbuf b = { 0 };
	sbuf_quote(&b, path, strlen(path), 120);
	if (hint) {
		errs_add(d->errs, k->line, "unknown key %s (%s)", b.p ? b.p : "?", hint);
	} else {
		const char *best = NULL;
		size_t kl = strlen(k->val);
		for (const struct field *f = fields; f->name; f++) {
			size_t fl = strlen(f->name);
			bool prefix = fl >= 4 && kl >= 4 && (!strncmp(f->name, k->val, fl < kl ? fl : kl));
			if (prefix || edit_distance(f->name, k->val) <= 2) {
				best = f->name;
				break;
			}
		}
		if (best)
			errs_add(d->errs, k->line, "unknown key %s (did you mean \"%s\"?)", b.p ? b.p : "?", best);
		else
			errs_add(d->errs, k->line, "unknown key %s", b.p ? b.p : "?");
	}
	d->oom |= b.oom;
	free(b.p);
}

struct keyref {
	const struct yamltree_node *key;
	size_t pos;
};

static int keyref_cmp(const void *a, const void *b)
{
	const struct keyref *x = a, *y = b;
	size_t n = x->key->len < y->key->len ? x->key->len : y->key->len;
	int c = memcmp(x->key->val, y->key->val, n);
	if (c)
		return c;
	if (x->key->len != y->key->len)
		return x->key->len < y->key->len ? -1 : 1;
	return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

static void decode_map(struct dctx *d, const char *path, const struct yamltree_node *m, const struct field *fields,
		       void *base, bool is_exec_item)
{
	size_t n_pairs = m->n_kids / 2;
	if (n_pairs == 0)
		return;

	/* Duplicate keys: sort the keys, compare neighbours. */
	bool *skip = calloc(n_pairs, sizeof(*skip));
	struct keyref *refs = calloc(n_pairs, sizeof(*refs));
	if (!skip || !refs) {
		free(skip);
		free(refs);
		d->oom = true;
		return;
	}
	size_t n_refs = 0;
	for (size_t i = 0; i < n_pairs; i++) {
		const struct yamltree_node *k = yamltree_kid(d->doc, m, 2 * i);
		if (k->kind != YAMLTREE_SCALAR) {
			errs_add(d->errs, k->line, "%s%smapping keys must be plain names, not %s", path,
				 *path ? ": " : "", k->kind == YAMLTREE_MAP ? "mappings" : "lists");
			skip[i] = true;
			continue;
		}
		refs[n_refs++] = (struct keyref){ k, i };
	}
	qsort(refs, n_refs, sizeof(*refs), keyref_cmp);
	for (size_t i = 1; i < n_refs; i++) {
		if (refs[i].key->len != refs[i - 1].key->len ||
		    memcmp(refs[i].key->val, refs[i - 1].key->val, refs[i].key->len) != 0)
			continue;
		struct sbuf b = { 0 };
		sbuf_printf(&b, "%s%s", path, *path ? "." : "");
		sbuf_putn(&b, refs[i].key->val, refs[i].key->len);
		struct sbuf q = { 0 };
		sbuf_quote(&q, b.p ? b.p : "", b.len, 120);
		errs_add(d->errs, refs[i].key->line, "duplicate key %s (already defined at line %d)", q.p ? q.p : "?",
			 refs[i - 1].key->line);
		d->oom |= b.oom | q.oom;
		free(b.p);
		free(q.p);
		skip[refs[i].pos] = true;
	}
	free(refs);

	for (size_t i = 0; i < n_pairs; i++) {
		if (skip[i])
			continue;
		const struct yamltree_node *k = yamltree_kid(d->doc, m, 2 * i);
		const struct yamltree_node *v = yamltree_kid(d->doc, m, 2 * i + 1);
		char kpath[300];
		snprintf(kpath, sizeof(kpath), "%s%s%.*s", path, *path ? "." : "", 200, k->val);
		bool bv;
		if (yamltree_resolve(k, &bv) == YAMLTREE_MERGE) {
			errs_add(d->errs, k->line, "%s: YAML merge keys (<<) are not supported; write the keys out",
				 *path ? path : "top level");
			continue;
		}
		const struct field *f = NULL;
		for (const struct field *it = fields; it->name; it++) {
			if (strlen(it->name) == k->len && !memcmp(it->name, k->val, k->len)) {
				f = it;
				break;
			}
		}
		if (!f) {
			if (is_exec_item)
				add_warning(d->cfg, &d->oom, k->line,
					    "%s: unknown key \"%.*s\" ignored (LiteFS ignores unknown keys in exec items)",
					    path, 120, k->val);
			else
				unknown_key(d, kpath, k, fields);
			continue;
		}
		add_keyline(d, kpath, k->line);
		decode_value(d, kpath, v, f, base);
	}
	free(skip);
}

/* ------------------------------------------------------------------ */
/* After decoding.                                                     */

static size_t path_len_no_slash(const char *p)
{
	size_t n = strlen(p);
	while (n > 1 && p[n - 1] == '/')
		n--;
	return n;
}

static void finalize(struct config *c, bool *oom)
{
	/* LiteFS applies its own defaults when these are zero (`v > 0`). */
	if (c->lease.consul.ttl_ms == 0)
		c->lease.consul.ttl_ms = CONFIG_DEFAULT_CONSUL_TTL_MS;
	if (c->lease.consul.lock_delay_ms == 0)
		c->lease.consul.lock_delay_ms = CONFIG_DEFAULT_CONSUL_LOCK_DELAY_MS;

	size_t fl = path_len_no_slash(c->fuse.dir), dl = path_len_no_slash(c->data.dir);
	if (fl > 0 && dl > fl && !strncmp(c->fuse.dir, c->data.dir, fl) && c->data.dir[fl] == '/' &&
	    strcmp(c->fuse.dir, "/") != 0)
		add_warning(c, oom, config_key_line(c, "data.dir"),
			    "data.dir \"%s\" is inside fuse.dir \"%s\"; the mount will hide it from everyone "
			    "but litefs itself",
			    c->data.dir, c->fuse.dir);

	if (!c->proxy.target[0] && (c->proxy.addr[0] || c->proxy.db[0]))
		add_warning(c, oom, config_key_line(c, "proxy"),
			    "proxy: proxy.target is empty, so the proxy is off (as in LiteFS)");
}

int config_parse(const char *text, size_t len, const char *name, bool expand_env,
		 goenv_getenv_fn getenv_fn, void *env_ctx, struct config *cfg,
		 char *errbuf, size_t errlen)
{
	struct errs errs = { .name = name ? name : "litefs.yml" };
	struct linemap lm = { 0 };
	struct yamltree doc = { 0 };
	char *expanded = NULL;
	size_t exp_len = len;
	const char *src = text;
	int rc;

	if (errbuf && errlen)
		errbuf[0] = '\0';
	rc = config_init(cfg);
	if (rc) {
		set_err(errbuf, errlen, "%s", err_str(rc));
		return rc;
	}
	if (!set_str(&cfg->name, errs.name)) {
		rc = ERR_NOMEM;
		goto err_free;
	}
	if (len > CONFIG_MAX_FILE_SIZE) {
		errs_add(&errs, 0, "file is larger than %u bytes", CONFIG_MAX_FILE_SIZE);
		rc = ERR_CONFIG;
		goto err_free;
	}

	if (expand_env) {
		rc = goenv_expand(text, len, getenv_fn, env_ctx, CONFIG_MAX_EXPANDED_SIZE, &expanded, &exp_len,
				  &lm.runs);
		if (rc == -E2BIG) {
			errs_add(&errs, 0, "file is larger than %u bytes after environment expansion",
				 CONFIG_MAX_EXPANDED_SIZE);
			rc = ERR_CONFIG;
		}
		if (rc)
			goto err_free;
		src = expanded;
		lm.exp_starts = line_starts(expanded, exp_len, &lm.n_exp);
		lm.orig_starts = line_starts(text, len, &lm.n_orig);
		if (!lm.exp_starts || !lm.orig_starts) {
			rc = ERR_NOMEM;
			goto err_free;
		}
	}

	struct yamltree_error yerr;
	rc = yamltree_load(&doc, src, exp_len, 0, linemap_line, &lm, &yerr);
	if (rc == ERR_INVAL) {
		errs_add(&errs, yerr.line, "%s", yerr.msg);
		rc = ERR_CONFIG;
	}
	if (rc)
		goto err_free;
	const struct yamltree_node *root = yamltree_root(&doc);
	if (!root) {
		errs_add(&errs, 0, "no YAML document: the file is empty or only has comments");
		rc = ERR_CONFIG;
		goto err_free;
	}

	struct dctx d = { .doc = &doc, .cfg = cfg, .errs = &errs };
	if (check_tag(&d, "top level", root) && !yamltree_is_null(root)) {
		if (root->kind != YAMLTREE_MAP)
			type_error(&d, "top level", root, "a mapping of settings");
		else
			decode_map(&d, "", root, top_fields, cfg, false);
	}
	if (d.oom || errs.buf.oom) {
		rc = ERR_NOMEM;
		goto err_free;
	}
	if (errs.n > 0) {
		rc = ERR_CONFIG;
		goto err_free;
	}
	bool oom = false;
	finalize(cfg, &oom);
	if (oom) {
		rc = ERR_NOMEM;
		goto err_free;
	}
	yamltree_free(&doc);
	linemap_free(&lm);
	free(expanded);
	free(errs.buf.p);
	return 0;

err_free:
	if (rc == ERR_NOMEM)
		set_err(errbuf, errlen, "%s: out of memory", errs.name);
	else
		sbuf_to_errbuf(&errs.buf, errbuf, errlen);
	yamltree_free(&doc);
	linemap_free(&lm);
	free(expanded);
	free(errs.buf.p);
	config_free(cfg);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Files.                                                              */

int config_load_file(const char *path, bool expand_env, struct config *cfg, char *errbuf, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		set_err(errbuf, errlen, "cannot read config file %s: %s", path, strerror(-rc));
		return rc;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int rc = -errno;
		close(fd);
		set_err(errbuf, errlen, "cannot read config file %s: %s", path, strerror(-rc));
		return rc;
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		set_err(errbuf, errlen, "cannot read config file %s: %s", path, strerror(EISDIR));
		return -EISDIR;
	}
	size_t cap = CONFIG_MAX_FILE_SIZE + 1, len = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		set_err(errbuf, errlen, "%s: out of memory", path);
		return ERR_NOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int rc = -errno;
			close(fd);
			free(buf);
			set_err(errbuf, errlen, "cannot read config file %s: %s", path, strerror(-rc));
			return rc;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap)
			break;
	}
	close(fd);
	if (len > CONFIG_MAX_FILE_SIZE) {
		free(buf);
		set_err(errbuf, errlen, "%s: file is larger than %u bytes", path, CONFIG_MAX_FILE_SIZE);
		return ERR_CONFIG;
	}
	int rc = config_parse(buf, len, path, expand_env, NULL, NULL, cfg, errbuf, errlen);
	free(buf);
	return rc;
}

static int copy_out(char *out, size_t outlen, const char *a, const char *b)
{
	int n = snprintf(out, outlen, "%s%s", a, b);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

int config_find(const char *explicit_path, char *out, size_t outlen)
{
	if (explicit_path && explicit_path[0])
		return copy_out(out, outlen, explicit_path, "");

	char cwd[PATH_MAX];
	char home[PATH_MAX] = "";
	struct passwd pw, *res = NULL;
	char pwbuf[4096];
	if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res && res->pw_dir && res->pw_dir[0])
		snprintf(home, sizeof(home), "%s", res->pw_dir);
	else if (getenv("HOME") && getenv("HOME")[0])
		snprintf(home, sizeof(home), "%s", getenv("HOME"));

	char cand[3][PATH_MAX + 16];
	size_t n = 0;
	if (getcwd(cwd, sizeof(cwd)))
		snprintf(cand[n++], sizeof(cand[0]), "%s%slitefs.yml", cwd, strcmp(cwd, "/") ? "/" : "");
	else
		snprintf(cand[n++], sizeof(cand[0]), "litefs.yml");
	if (home[0])
		snprintf(cand[n++], sizeof(cand[0]), "%s%slitefs.yml", home,
			 home[strlen(home) - 1] == '/' ? "" : "/");
	snprintf(cand[n++], sizeof(cand[0]), "/etc/litefs.yml");

	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(cand[i], &st) == 0)
			return copy_out(out, outlen, cand[i], "");
		if (errno == ENOENT || errno == ENOTDIR)
			continue;
		int rc = -errno;
		if (copy_out(out, outlen, cand[i], ""))
			return -ENAMETOOLONG;
		return rc;
	}
	return -ENOENT;
}

/* Go's strings.TrimSpace trims these (and Unicode spaces, which a token
 * cannot hold). */
static bool is_go_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

int config_apply_env(struct config *cfg, goenv_getenv_fn getenv_fn, void *env_ctx)
{
	if (!getenv_fn)
		getenv_fn = goenv_getenv_process;
	const char *tok = getenv_fn("LITEFS_CLOUD_TOKEN", env_ctx);
	if (tok) {
		while (is_go_space((unsigned char)*tok))
			tok++;
		size_t n = strlen(tok);
		while (n > 0 && is_go_space((unsigned char)tok[n - 1]))
			n--;
		if (n > 0 && (!cfg->backup.type[0] || !strcmp(cfg->backup.type, "litefs-cloud"))) {
			if (!set_str(&cfg->backup.type, "litefs-cloud"))
				return ERR_NOMEM;
			if (!cfg->backup.auth_token[0]) {
				char *t = strndup(tok, n);
				if (!t)
					return ERR_NOMEM;
				free(cfg->backup.auth_token);
				cfg->backup.auth_token = t;
			}
		}
	}
	if (!strcmp(cfg->backup.type, "litefs-cloud") && !cfg->backup.url[0]) {
		const char *ep = getenv_fn("LITEFS_CLOUD_ENDPOINT", env_ctx);
		if (!set_str(&cfg->backup.url, ep && ep[0] ? ep : CONFIG_DEFAULT_LITEFS_CLOUD_URL))
			return ERR_NOMEM;
	}
	/* Ours: the node-to-node secret may come from the environment, so that
	 * it need not be written in the file. */
	const char *secret = getenv_fn("LITEFS_SECRET", env_ctx);
	if (!cfg->http.secret[0] && secret && secret[0] && !set_str(&cfg->http.secret, secret))
		return ERR_NOMEM;
	return 0;
}

int config_key_line(const struct config *cfg, const char *path)
{
	for (size_t i = 0; i < cfg->n_keylines; i++)
		if (!strcmp(cfg->keylines[i].path, path))
			return cfg->keylines[i].line;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Validation.                                                         */

/* ---- exec commands with shell operators ------------------------------------ */

/* cmd[from..to) without the whitespace around it. */
static void trim_span(const char *cmd, size_t *from, size_t *to)
{
	while (*from < *to && isspace((unsigned char)cmd[*from]))
		(*from)++;
	while (*to > *from && isspace((unsigned char)cmd[*to - 1]))
		(*to)--;
}

static void put_sh_c(struct sbuf *b, const char *cmd)
{
	if (strchr(cmd, '\'')) {
		sbuf_puts(b, "cmd: \"sh -c '...'\"");
		return;
	}
	sbuf_puts(b, "cmd: ");
	struct sbuf inner = { 0 };
	sbuf_printf(&inner, "sh -c '%s'", cmd);
	sbuf_quote(b, inner.p ? inner.p : "", inner.len, 300);
	sbuf_free(&inner);
}

/*
 * The message for an exec command that holds unquoted shell operators
 * (users lose hours to a trailing '&' that blocks the start): that no
 * shell runs it, and what to write instead, with their own command in
 * it. One '&' becomes an if-primary item beside the application (the
 * part after the '&', else the next exec item, else "your-app"); '&&'
 * and ';' become items in order; anything else (pipes, redirections)
 * needs `sh -c`.
 */
static void exec_operator_msg(struct sbuf *b, const char *cmd, const struct shellwords_op *ops, size_t n_ops,
			      const char *next)
{
	char op[3];
	snprintf(op, sizeof(op), "%.*s", (int)ops[0].len, cmd + ops[0].off);
	sbuf_quote(b, cmd, strlen(cmd), 300);
	sbuf_printf(b,
		    " holds the shell operator '%s', but exec commands run without a shell: each is split into "
		    "arguments and started directly (LiteFS 0.5 silently drops everything from the operator on).",
		    op);

	/* The pieces between the operators, when they are all of one kind
	 * and none is empty. */
	bool background = n_ops == 1 && !strcmp(op, "&");
	bool sequence = true;
	size_t from[9], to[9];
	size_t n_parts = n_ops + 1;
	for (size_t i = 0; i < n_ops && i < 8; i++) {
		char o[3];
		snprintf(o, sizeof(o), "%.*s", (int)ops[i].len, cmd + ops[i].off);
		sequence &= !strcmp(o, "&&") || !strcmp(o, ";");
	}
	if (n_parts > 9)
		background = sequence = false;
	for (size_t i = 0; i < n_parts && (background || sequence); i++) {
		from[i] = i == 0 ? 0 : ops[i - 1].off + ops[i - 1].len;
		to[i] = i == n_ops ? strlen(cmd) : ops[i].off;
		trim_span(cmd, &from[i], &to[i]);
		bool empty = from[i] == to[i];
		if (empty && !(background && i == 1))
			background = sequence = false;
	}

	if (background) {
		const char *app = from[1] < to[1] ? cmd + from[1] : next ? next : "your-app";
		int app_len = from[1] < to[1] ? (int)(to[1] - from[1]) : (int)strlen(app);
		sbuf_puts(b, " So '&' cannot put a program in the background, and an item that never exits "
			     "blocks the items after it. Give each program its own exec item; one with "
			     "if-primary: true runs beside the application, only while this node is primary:\n"
			     "    exec:\n      - cmd: ");
		sbuf_quote(b, cmd + from[0], to[0] - from[0], 300);
		sbuf_puts(b, "\n        if-primary: true\n      - cmd: ");
		sbuf_quote(b, app, (size_t)app_len, 300);
		sbuf_puts(b, "\n  or start a shell yourself: ");
		struct sbuf sh = { 0 };
		sbuf_printf(&sh, "%.*s & exec %.*s", (int)(to[0] - from[0]), cmd + from[0], app_len, app);
		put_sh_c(b, sh.p ? sh.p : "");
		sbuf_free(&sh);
	} else if (sequence) {
		sbuf_puts(b, " Give each program its own exec item: items run in order, each but the last is "
			     "waited for and must succeed:\n    exec:");
		for (size_t i = 0; i < n_parts; i++) {
			sbuf_puts(b, "\n      - cmd: ");
			sbuf_quote(b, cmd + from[i], to[i] - from[i], 300);
		}
		sbuf_puts(b, "\n  or start a shell yourself: ");
		put_sh_c(b, cmd);
	} else {
		sbuf_puts(b, " Pipes, redirections and conditionals need a shell: ");
		put_sh_c(b, cmd);
	}
	sbuf_printf(b, "\n  (To pass '%s' to the program as an argument, quote it.)", op);
}

struct vctx {
	const struct config *cfg;
	struct errs errs;
};

static void verr(struct vctx *v, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void verr(struct vctx *v, const char *path, const char *fmt, ...)
{
	struct sbuf b = { 0 };
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	errs_add(&v->errs, config_key_line(v->cfg, path), "%s: %s", path, b.p ? b.p : "out of memory");
	free(b.p);
}

/* Go net.SplitHostPort plus a numeric port 0..65535. NULL if fine, else why. */
static const char *check_hostport(const char *s)
{
	const char *colon;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end)
			return "missing ']' in address";
		if (end[1] != ':')
			return "missing port in address";
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return "missing port in address";
		if (memchr(s, ':', (size_t)(colon - s)))
			return "too many colons in address (write IPv6 addresses as [addr]:port)";
	}
	const char *port = colon + 1;
	if (!*port)
		return "missing port in address";
	unsigned long v = 0;
	for (const char *p = port; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return "port is not a number";
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 65535)
			return "port is larger than 65535";
	}
	return NULL;
}

static bool is_http_url(const char *s)
{
	const char *rest = NULL;
	if (!strncmp(s, "http://", 7))
		rest = s + 7;
	else if (!strncmp(s, "https://", 8))
		rest = s + 8;
	return rest && *rest && *rest != '/';
}

static void check_nonneg(struct vctx *v, const char *path, int64_t ms)
{
	if (ms < 0)
		verr(v, path, "must not be negative");
}

static void check_addr(struct vctx *v, const char *path, const char *addr)
{
	const char *why = check_hostport(addr);
	if (why)
		verr(v, path, "\"%s\": %s (expected host:port, such as \":20202\" or \"127.0.0.1:20202\")", addr, why);
}

int config_validate(const struct config *c, char *errbuf, size_t errlen)
{
	struct vctx v = { .cfg = c, .errs = { .name = c->name ? c->name : "litefs.yml" } };

	if (errbuf && errlen)
		errbuf[0] = '\0';

	if (!c->fuse.dir[0])
		verr(&v, "fuse.dir", "required: the directory where applications open the databases");
	if (!c->data.dir[0])
		verr(&v, "data.dir", "required: the directory where litefs keeps its own data");
	if (c->fuse.dir[0] && c->data.dir[0]) {
		size_t fl = path_len_no_slash(c->fuse.dir), dl = path_len_no_slash(c->data.dir);
		if (fl == dl && !strncmp(c->fuse.dir, c->data.dir, fl))
			verr(&v, "data.dir", "must differ from fuse.dir (both are \"%s\")", c->data.dir);
	}

	check_nonneg(&v, "data.retention", c->data.retention_ms);
	if (c->data.retention_monitor_interval_ms <= 0)
		verr(&v, "data.retention-monitor-interval", "must be greater than zero");

	if (c->http.addr[0])
		check_addr(&v, "http.addr", c->http.addr);
	else
		verr(&v, "http.addr", "must not be empty");
	check_nonneg(&v, "http.snapshot-timeout", c->http.snapshot_timeout_ms);

	const char *lt = c->lease.type;
	bool is_consul = !strcmp(lt, "consul"), is_etcd = !strcmp(lt, "etcd");
	if (strcmp(lt, "static") && !is_consul && !is_etcd)
		verr(&v, "lease.type", "unknown lease type \"%s\"; use \"static\", \"etcd\" or \"consul\"", lt);
	if (c->lease.advertise_url[0] && !is_http_url(c->lease.advertise_url))
		verr(&v, "lease.advertise-url", "\"%s\" is not an http:// or https:// URL", c->lease.advertise_url);
	for (const char *q = c->http.secret; *q; q++) {
		if ((unsigned char)*q < 0x20 || *q == 0x7f) {
			verr(&v, "http.secret", "must not contain control characters (it is sent in an HTTP header)");
			break;
		}
	}
	check_nonneg(&v, "lease.reconnect-delay", c->lease.reconnect_delay_ms);
	check_nonneg(&v, "lease.demote-delay", c->lease.demote_delay_ms);
	if (c->lease.sync_replicas < 0 || c->lease.sync_replicas > 64)
		verr(&v, "lease.sync-replicas", "must be between 0 (asynchronous) and 64");
	if (c->lease.sync_timeout_ms <= 0)
		verr(&v, "lease.sync-timeout", "must be positive (a commit waits at most this long for its replicas)");
	if (strcmp(c->lease.sync_on_timeout, "async") && strcmp(c->lease.sync_on_timeout, "fail"))
		verr(&v, "lease.sync-on-timeout", "unknown value \"%s\"; use \"async\" or \"fail\"",
		     c->lease.sync_on_timeout);
	/* The one known way to corrupt a database, kept out of reach: a
	 * journal passed through the kernel outlives a demotion
	 * (docs/mount.md, "Not covered: demotion"), and only a static lease
	 * never demotes. */
	if (c->fuse.passthrough && (is_consul || is_etcd))
		verr(&v, "fuse.passthrough",
		     "cannot be used with lease.type %s: a primary demoted while a client has a rollback journal open "
		     "can roll stale pages back over newer commits (docs/mount.md, \"Not covered: demotion\"); "
		     "use it only with lease.type static",
		     lt);
	if (c->lease.candidate && c->lease.databases.n > 0)
		verr(&v, "lease.databases",
		     "a database filter is only allowed on replicas (lease.candidate: false), as in LiteFS");
	if (is_consul) {
		if (!c->lease.consul.key[0])
			verr(&v, "lease.consul.key", "required when lease.type is consul");
		if (c->lease.consul.url[0] && !is_http_url(c->lease.consul.url))
			verr(&v, "lease.consul.url", "\"%s\" is not an http:// or https:// URL", c->lease.consul.url);
	}
	check_nonneg(&v, "lease.consul.ttl", c->lease.consul.ttl_ms);
	check_nonneg(&v, "lease.consul.lock-delay", c->lease.consul.lock_delay_ms);
	if (is_etcd) {
		if (c->lease.etcd.endpoints.n == 0)
			verr(&v, "lease.etcd.endpoints", "required when lease.type is etcd (e.g. [\"http://127.0.0.1:2379\"])");
		for (size_t i = 0; i < c->lease.etcd.endpoints.n; i++) {
			if (!is_http_url(c->lease.etcd.endpoints.items[i]))
				verr(&v, "lease.etcd.endpoints", "\"%s\" is not an http:// or https:// URL",
				     c->lease.etcd.endpoints.items[i]);
		}
		if (!c->lease.etcd.key[0])
			verr(&v, "lease.etcd.key", "must not be empty");
		if (c->lease.etcd.ttl_ms < 1000)
			verr(&v, "lease.etcd.ttl", "must be at least 1s (etcd leases are granted in whole seconds)");
		else if (c->lease.etcd.ttl_ms % 1000 != 0)
			verr(&v, "lease.etcd.ttl", "must be a whole number of seconds (etcd grants leases in seconds)");
		if (c->lease.etcd.ttl_ms > 3600 * 1000)
			verr(&v, "lease.etcd.ttl", "must be at most 1h: a dead primary is replaced only after it");
		bool tls = false;
		for (size_t i = 0; i < c->lease.etcd.endpoints.n; i++)
			tls |= !strncmp(c->lease.etcd.endpoints.items[i], "https://", 8);
		const char *files[] = { c->lease.etcd.ca_file, c->lease.etcd.cert_file, c->lease.etcd.key_file };
		const char *names[] = { "lease.etcd.ca-file", "lease.etcd.cert-file", "lease.etcd.key-file" };
		for (int k = 0; k < 3; k++) {
			if (!files[k][0])
				continue;
			if (!tls)
				verr(&v, names[k], "only used with https:// endpoints, and none is https://");
			else if (access(files[k], R_OK) != 0)
				verr(&v, names[k], "cannot read \"%s\": %s", files[k], strerror(errno));
		}
		if (!c->lease.etcd.cert_file[0] != !c->lease.etcd.key_file[0])
			verr(&v, c->lease.etcd.cert_file[0] ? "lease.etcd.key-file" : "lease.etcd.cert-file",
			     "a client certificate needs both lease.etcd.cert-file and lease.etcd.key-file");
		if (c->lease.etcd.password[0] && !c->lease.etcd.username[0])
			verr(&v, "lease.etcd.password", "set without lease.etcd.username");
		check_nonneg(&v, "lease.etcd.catch-up-timeout", c->lease.etcd.catch_up_timeout_ms);
		if (!c->lease.advertise_url[0])
			verr(&v, "lease.advertise-url", "required when lease.type is etcd: the URL other nodes replicate from");
	}

	if (c->proxy.target[0]) {
		if (!c->proxy.addr[0])
			verr(&v, "proxy.addr", "required when proxy.target is set");
		else
			check_addr(&v, "proxy.addr", c->proxy.addr);
		check_addr(&v, "proxy.target", c->proxy.target);
		if (!c->proxy.db[0])
			verr(&v, "proxy.db", "required when proxy.target is set (the database whose TXID is tracked)");
		if (c->proxy.addr[0] && !strcmp(c->proxy.addr, c->http.addr))
			verr(&v, "proxy.addr", "\"%s\" is also http.addr", c->proxy.addr);
	}
	check_nonneg(&v, "proxy.max-lag", c->proxy.max_lag_ms);
	check_nonneg(&v, "proxy.primary-redirect-timeout", c->proxy.primary_redirect_timeout_ms);
	check_nonneg(&v, "proxy.read-timeout", c->proxy.read_timeout_ms);
	check_nonneg(&v, "proxy.read-header-timeout", c->proxy.read_header_timeout_ms);
	check_nonneg(&v, "proxy.write-timeout", c->proxy.write_timeout_ms);
	check_nonneg(&v, "proxy.idle-timeout", c->proxy.idle_timeout_ms);
	check_nonneg(&v, "proxy.txid-timeout", c->proxy.txid_timeout_ms);
	/* The proxies talk plain HTTP to each other (docs/proxy.md "Limits"). */
	if (c->proxy.advertise_url[0] && strncmp(c->proxy.advertise_url, "http://", 7) != 0)
		verr(&v, "proxy.advertise-url", "\"%s\" is not an http:// URL", c->proxy.advertise_url);

	const char *bt = c->backup.type;
	if (bt[0] && strcmp(bt, "file") && strcmp(bt, "litefs-cloud"))
		verr(&v, "backup.type", "unknown backup type \"%s\"; use \"litefs-cloud\" or \"file\"", bt);
	if (!strcmp(bt, "file") && !c->backup.path[0])
		verr(&v, "backup.path", "required when backup.type is file");
	if (!strcmp(bt, "litefs-cloud") && c->backup.url[0] && !is_http_url(c->backup.url))
		verr(&v, "backup.url", "\"%s\" is not an http:// or https:// URL", c->backup.url);
	check_nonneg(&v, "backup.delay", c->backup.delay_ms);
	if (c->backup.full_sync_interval_ms <= 0)
		verr(&v, "backup.full-sync-interval", "must be greater than zero");

	if (strcmp(c->log.format, "text") && strcmp(c->log.format, "json"))
		verr(&v, "log.format", "unknown log format \"%s\"; use \"text\" or \"json\"", c->log.format);

	if (c->tracing.max_size < 0)
		verr(&v, "tracing.max-size", "must not be negative");
	if (c->tracing.max_count < 0)
		verr(&v, "tracing.max-count", "must not be negative");

	for (size_t i = 0; i < c->n_exec; i++) {
		char path[64];
		snprintf(path, sizeof(path), "exec[%zu].cmd", i);
		int line = config_key_line(c, path);
		if (!line)
			line = c->exec[i].line;
		const char *p = c->exec[i].cmd;
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (!*p) {
			errs_add(&v.errs, line, "%s: the command is empty", path);
			continue;
		}
		char msg[200];
		char **argv = NULL;
		size_t argc = 0;
		struct shellwords_op ops[16];
		size_t n_ops = 0;
		int rc = shellwords_split(c->exec[i].cmd, &argv, &argc, msg, sizeof(msg));
		if (rc == ERR_INVAL && shellwords_operators(c->exec[i].cmd, ops, 16, &n_ops) == 0 && n_ops > 0) {
			struct sbuf b = { 0 };
			/* The application a trailing '&' was meant to run beside. */
			const char *next = NULL;
			if (i + 1 < c->n_exec && !c->exec[i + 1].if_primary &&
			    shellwords_split(c->exec[i + 1].cmd, &argv, &argc, NULL, 0) == 0 && argc > 0)
				next = c->exec[i + 1].cmd;
			shellwords_free(argv);
			argv = NULL;
			exec_operator_msg(&b, c->exec[i].cmd, ops, n_ops < 16 ? n_ops : 16, next);
			errs_add(&v.errs, line, "%s: %s", path, b.oom || !b.p ? "shell operator in the command" : b.p);
			sbuf_free(&b);
		} else if (rc == ERR_INVAL)
			errs_add(&v.errs, line, "%s: %s", path, msg);
		else if (rc == 0 && argc == 0)
			errs_add(&v.errs, line, "%s: the command is empty", path);
		shellwords_free(argv);
	}

	int rc = 0;
	if (v.errs.buf.oom) {
		set_err(errbuf, errlen, "%s: out of memory", v.errs.name);
		rc = ERR_NOMEM;
	} else if (v.errs.n > 0) {
		sbuf_to_errbuf(&v.errs.buf, errbuf, errlen);
		rc = ERR_CONFIG;
	}
	free(v.errs.buf.p);
	return rc;
}

/* The refusal of lease.type: consul, with the etcd lines that replace
 * the user's block (docs/migrating.md). Valid until the next call. */
static const char *consul_message(const struct config *c)
{
	static char msg[1024];
	char ttl[32];
	int64_t t = c->lease.consul.ttl_ms > 0 ? c->lease.consul.ttl_ms : CONFIG_DEFAULT_CONSUL_TTL_MS;
	snprintf(ttl, sizeof(ttl), "%llds", (long long)((t + 999) / 1000));
	int line = config_key_line(c, "lease.type");
	char where[32] = "";
	if (line > 0)
		snprintf(where, sizeof(where), " (line %d)", line);
	snprintf(msg, sizeof(msg),
		 "lease.type: consul%s is not supported; this build elects the primary through etcd. Replace the "
		 "lease.consul block with:\n"
		 "    lease:\n"
		 "      type: etcd\n"
		 "      etcd:\n"
		 "        endpoints: [\"http://127.0.0.1:2379\"]   # your etcd members\n"
		 "        key: \"%s\"\n"
		 "        ttl: \"%s\"\n"
		 "  (keep lease.hostname, lease.advertise-url and lease.candidate as they are; see docs/lease.md)",
		 where, c->lease.consul.key[0] ? c->lease.consul.key : "litefs/primary", ttl);
	return msg;
}

size_t config_unsupported(const struct config *c, struct config_issue *out, size_t max)
{
	size_t n = 0;
#define ISSUE(cond, is_fatal, text) \
	do { \
		if (cond) { \
			if (n < max) \
				out[n] = (struct config_issue){ .msg = (text), .fatal = (is_fatal) }; \
			n++; \
		} \
	} while (0)
	ISSUE(!have_lease_consul && !strcmp(c->lease.type, "consul"), true, consul_message(c));
	ISSUE(!have_lease_etcd && !strcmp(c->lease.type, "etcd"), true,
	      "lease.type: etcd is not supported yet; use static");
	ISSUE(!have_replication && !strcmp(c->lease.type, "static") && !c->lease.candidate, true,
	      "lease.candidate: false makes this node a replica, and replication is not supported yet");
	ISSUE(!have_proxy && c->proxy.target[0], true, "proxy is not supported yet");
	ISSUE(!have_backup && c->backup.type[0], true, "backup is not supported yet");
	ISSUE(have_backup && !strcmp(c->backup.type, "file"), true,
	      "backup.type: file is not supported yet; use litefs-cloud");
	ISSUE(!have_database_filter && c->lease.databases.n > 0, true,
	      "lease.databases is not supported yet; a replica replicates every database");
	ISSUE(!have_tracing_log && c->tracing.enabled && c->tracing.path[0], false,
	      "tracing is not supported yet; tracing.path is ignored");
	ISSUE(!have_log_json && !strcmp(c->log.format, "json"), false,
	      "log.format: json is not supported yet; logs are written as logfmt text");
#undef ISSUE
	return n;
}

/* ------------------------------------------------------------------ */
/* Printing.                                                           */

static void print_str(FILE *out, const char *s)
{
	size_t len = strlen(s);
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		/* YAML reads NEL, LS and PS as line breaks even inside quotes. */
		size_t bl = yamltree_break_len(s, len, (size_t)(p - (const unsigned char *)s));
		if (bl == 2 && *p == 0xC2) {
			fputs("\\N", out);
			p++;
			continue;
		}
		if (bl == 3) {
			fputs(p[2] == 0xA8 ? "\\L" : "\\P", out);
			p += 2;
			continue;
		}
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p == '\r')
			fputs("\\r", out);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void print_kv_str(FILE *out, int indent, const char *key, const char *val)
{
	fprintf(out, "%*s%s: ", indent, "", key);
	print_str(out, val);
	fputc('\n', out);
}

static void print_kv_bool(FILE *out, int indent, const char *key, bool val)
{
	fprintf(out, "%*s%s: %s\n", indent, "", key, val ? "true" : "false");
}

static void print_kv_dur(FILE *out, int indent, const char *key, int64_t ms)
{
	char buf[GODUR_BUF_SIZE];
	godur_format_ms(ms, buf, sizeof(buf));
	fprintf(out, "%*s%s: \"%s\"\n", indent, "", key, buf);
}

static void print_kv_list(FILE *out, int indent, const char *key, const struct config_strlist *l)
{
	if (l->n == 0) {
		fprintf(out, "%*s%s: []\n", indent, "", key);
		return;
	}
	fprintf(out, "%*s%s:\n", indent, "", key);
	for (size_t i = 0; i < l->n; i++) {
		fprintf(out, "%*s  - ", indent, "");
		print_str(out, l->items[i]);
		fputc('\n', out);
	}
}

void config_print(const struct config *c, FILE *out)
{
	print_kv_bool(out, 0, "exit-on-error", c->exit_on_error);
	print_kv_bool(out, 0, "skip-sync", c->skip_sync);
	print_kv_bool(out, 0, "strict-verify", c->strict_verify);
	if (c->n_exec == 0) {
		fputs("exec: []\n", out);
	} else {
		fputs("exec:\n", out);
		for (size_t i = 0; i < c->n_exec; i++) {
			fputs("  - cmd: ", out);
			print_str(out, c->exec[i].cmd);
			fputc('\n', out);
			print_kv_bool(out, 4, "if-candidate", c->exec[i].if_candidate);
			print_kv_bool(out, 4, "if-primary", c->exec[i].if_primary);
		}
	}

	fputs("data:\n", out);
	print_kv_str(out, 2, "dir", c->data.dir);
	print_kv_bool(out, 2, "compress", c->data.compress);
	print_kv_dur(out, 2, "retention", c->data.retention_ms);
	print_kv_dur(out, 2, "retention-monitor-interval", c->data.retention_monitor_interval_ms);

	fputs("fuse:\n", out);
	print_kv_str(out, 2, "dir", c->fuse.dir);
	print_kv_bool(out, 2, "allow-other", c->fuse.allow_other);
	print_kv_bool(out, 2, "debug", c->fuse.debug);
	print_kv_bool(out, 2, "passthrough", c->fuse.passthrough);
	print_kv_bool(out, 2, "uring", c->fuse.uring);

	fputs("http:\n", out);
	print_kv_str(out, 2, "addr", c->http.addr);
	print_kv_dur(out, 2, "snapshot-timeout", c->http.snapshot_timeout_ms);
	/* Only when set: the key is ours, and its value is never printed. */
	if (c->http.secret[0])
		fputs("  secret: \"<redacted>\"\n", out);

	fputs("proxy:\n", out);
	print_kv_str(out, 2, "addr", c->proxy.addr);
	print_kv_str(out, 2, "target", c->proxy.target);
	print_kv_str(out, 2, "db", c->proxy.db);
	print_kv_dur(out, 2, "max-lag", c->proxy.max_lag_ms);
	print_kv_bool(out, 2, "debug", c->proxy.debug);
	print_kv_list(out, 2, "passthrough", &c->proxy.passthrough);
	print_kv_list(out, 2, "always-forward", &c->proxy.always_forward);
	print_kv_dur(out, 2, "primary-redirect-timeout", c->proxy.primary_redirect_timeout_ms);
	print_kv_dur(out, 2, "read-timeout", c->proxy.read_timeout_ms);
	print_kv_dur(out, 2, "read-header-timeout", c->proxy.read_header_timeout_ms);
	print_kv_dur(out, 2, "write-timeout", c->proxy.write_timeout_ms);
	print_kv_dur(out, 2, "idle-timeout", c->proxy.idle_timeout_ms);
	print_kv_str(out, 2, "advertise-url", c->proxy.advertise_url);
	print_kv_dur(out, 2, "txid-timeout", c->proxy.txid_timeout_ms);
	print_kv_bool(out, 2, "fly-replay", c->proxy.fly_replay);

	fputs("lease:\n", out);
	print_kv_str(out, 2, "type", c->lease.type);
	print_kv_str(out, 2, "hostname", c->lease.hostname);
	print_kv_str(out, 2, "advertise-url", c->lease.advertise_url);
	print_kv_bool(out, 2, "candidate", c->lease.candidate);
	print_kv_bool(out, 2, "promote", c->lease.promote);
	print_kv_dur(out, 2, "reconnect-delay", c->lease.reconnect_delay_ms);
	print_kv_dur(out, 2, "demote-delay", c->lease.demote_delay_ms);
	print_kv_list(out, 2, "databases", &c->lease.databases);
	fprintf(out, "  sync-replicas: %lld\n", (long long)c->lease.sync_replicas);
	print_kv_dur(out, 2, "sync-timeout", c->lease.sync_timeout_ms);
	print_kv_str(out, 2, "sync-on-timeout", c->lease.sync_on_timeout);
	fputs("  consul:\n", out);
	print_kv_str(out, 4, "url", c->lease.consul.url);
	print_kv_str(out, 4, "key", c->lease.consul.key);
	print_kv_dur(out, 4, "ttl", c->lease.consul.ttl_ms);
	print_kv_dur(out, 4, "lock-delay", c->lease.consul.lock_delay_ms);
	fputs("  etcd:\n", out);
	print_kv_list(out, 4, "endpoints", &c->lease.etcd.endpoints);
	print_kv_str(out, 4, "key", c->lease.etcd.key);
	print_kv_dur(out, 4, "ttl", c->lease.etcd.ttl_ms);
	print_kv_str(out, 4, "username", c->lease.etcd.username);
	if (c->lease.etcd.password[0])
		fputs("    password: \"<redacted>\"\n", out);
	else
		print_kv_str(out, 4, "password", "");
	print_kv_str(out, 4, "ca-file", c->lease.etcd.ca_file);
	print_kv_str(out, 4, "cert-file", c->lease.etcd.cert_file);
	print_kv_str(out, 4, "key-file", c->lease.etcd.key_file);
	print_kv_dur(out, 4, "catch-up-timeout", c->lease.etcd.catch_up_timeout_ms);

	fputs("backup:\n", out);
	print_kv_str(out, 2, "type", c->backup.type);
	print_kv_str(out, 2, "path", c->backup.path);
	print_kv_str(out, 2, "url", c->backup.url);
	print_kv_str(out, 2, "cluster", c->backup.cluster);
	if (c->backup.auth_token[0])
		fputs("  auth-token: \"<redacted>\"\n", out);
	else
		print_kv_str(out, 2, "auth-token", "");
	print_kv_dur(out, 2, "delay", c->backup.delay_ms);
	print_kv_dur(out, 2, "full-sync-interval", c->backup.full_sync_interval_ms);

	fputs("log:\n", out);
	print_kv_str(out, 2, "format", c->log.format);
	print_kv_bool(out, 2, "timestamp", c->log.timestamp);
	print_kv_bool(out, 2, "debug", c->log.debug);

	fputs("tracing:\n", out);
	print_kv_bool(out, 2, "enabled", c->tracing.enabled);
	print_kv_str(out, 2, "path", c->tracing.path);
	fprintf(out, "  max-size: %lld\n", (long long)c->tracing.max_size);
	fprintf(out, "  max-count: %lld\n", (long long)c->tracing.max_count);
	print_kv_bool(out, 2, "compress", c->tracing.compress);
}
