/*
 * config.c — litefs.yml, read the way LiteFS 0.5.14 reads it.
 *
 * Pipeline (config_parse):
 *
 *   raw text --expand_env()--> expanded text + segment list
 *            --ydoc_load()---> a small tree of the first YAML document
 *                              (libyaml events; aliases are shared nodes)
 *            --decode_map()--> struct config, driven by the field tables
 *                              below; every problem is collected, not only
 *                              the first (yaml.v3 does the same)
 *            --finalize()----> LiteFS's "0 means default" rules, warnings
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
 * records a segment per copied run and per substitution, so a line can be
 * mapped back to the line of the original file (struct linemap).
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
#include <yaml.h>

#include "node/config.h"
#include "base/err.h"

/*
 * What this build implements of what the file can ask for. The engineer
 * who lands one of these flips its switch; config_unsupported() then stops
 * reporting it.
 */
static const bool have_lease_consul = false;
static const bool have_lease_etcd = false;
static const bool have_replication = true;
static const bool have_proxy = false;
static const bool have_backup = true; /* litefs-cloud only */
static const bool have_tracing_log = false;
static const bool have_log_json = false;
static const bool have_database_filter = true;

#define MAX_ERRORS 16
#define MAX_DEPTH 64

/* ------------------------------------------------------------------ */
/* Growable string buffer. Sticky out-of-memory flag.                  */

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static bool sbuf_reserve(struct sbuf *b, size_t extra)
{
	if (b->oom)
		return false;
	if (b->len + extra + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

static void sbuf_putn(struct sbuf *b, const char *s, size_t n)
{
	if (!sbuf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0 || !sbuf_reserve(b, (size_t)n))
		return;
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

static void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(b, fmt, ap);
	va_end(ap);
}

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

/* Appends a quoted, escaped, length-limited rendering of s for messages. */
static void sbuf_quote(struct sbuf *b, const char *s, size_t n, size_t limit)
{
	sbuf_putn(b, "\"", 1);
	size_t shown = n > limit ? limit : n;
	for (size_t i = 0; i < shown; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			sbuf_printf(b, "\\%c", c);
		else if (c == '\n')
			sbuf_putn(b, "\\n", 2);
		else if (c == '\t')
			sbuf_putn(b, "\\t", 2);
		else if (c == '\r')
			sbuf_putn(b, "\\r", 2);
		else if (c < 0x20 || c == 0x7f)
			sbuf_printf(b, "\\x%02x", c);
		else
			sbuf_putn(b, (const char *)&s[i], 1);
	}
	if (shown < n)
		sbuf_putn(b, "...", 3);
	sbuf_putn(b, "\"", 1);
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
/* Line breaks, counted the way libyaml counts them: CRLF, CR, LF, NEL  */
/* (U+0085), LS (U+2028) and PS (U+2029) each end a line.              */

static size_t break_len(const char *s, size_t n, size_t i)
{
	unsigned char c = (unsigned char)s[i];
	if (c == '\r')
		return (i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
	if (c == '\n')
		return 1;
	if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] == 0x85)
		return 2;
	if (c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
	    ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9))
		return 3;
	return 0;
}

/* Offsets of the start of every line (line 1 starts at 0). Caller frees. */
static size_t *line_starts(const char *s, size_t n, size_t *count)
{
	size_t cap = 64, k = 0;
	size_t *v = malloc(cap * sizeof(*v));
	if (!v)
		return NULL;
	v[k++] = 0;
	for (size_t i = 0; i < n;) {
		size_t bl = break_len(s, n, i);
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

/* ------------------------------------------------------------------ */
/* Environment expansion (Go os.Expand + LiteFS's expressions).         */

const char *config_getenv_process(const char *name, void *ctx)
{
	return getenv(name);
}

/* A run of output that was copied from the input, or substituted. */
struct seg {
	size_t out_off;
	size_t in_off;
	bool subst;
};

struct segs {
	struct seg *v;
	size_t n, cap;
};

static bool segs_add(struct segs *s, size_t out_off, size_t in_off, bool subst)
{
	if (!s)
		return true;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 32;
		struct seg *v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return false;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = (struct seg){ out_off, in_off, subst };
	return true;
}

static bool is_shell_special(unsigned char c)
{
	return strchr("*#$@!?-0123456789", c) != NULL && c != '\0';
}

static bool is_word(unsigned char c)
{
	return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Go's getShellName: the name after '$' and how many bytes it used. */
static void shell_name(const char *s, size_t n, const char **name, size_t *name_len, size_t *w)
{
	*name = s;
	*name_len = 0;
	if (s[0] == '{') {
		if (n > 2 && is_shell_special((unsigned char)s[1]) && s[2] == '}') {
			*name = s + 1;
			*name_len = 1;
			*w = 3;
			return;
		}
		for (size_t i = 1; i < n; i++) {
			if (s[i] == '}') {
				if (i == 1) {
					*w = 2; /* "${}": bad syntax, eaten */
					return;
				}
				*name = s + 1;
				*name_len = i - 1;
				*w = i + 1;
				return;
			}
		}
		*w = 1; /* "${" without "}": bad syntax, eaten */
		return;
	}
	if (is_shell_special((unsigned char)s[0])) {
		*name_len = 1;
		*w = 1;
		return;
	}
	size_t i = 0;
	while (i < n && is_word((unsigned char)s[i]))
		i++;
	*name_len = i;
	*w = i;
}

static bool is_go_trim_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Go RE2's \s: [\t\n\f\r ]. */
static bool is_re_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

static const char *lookup(config_getenv_fn fn, void *ctx, const char *name, size_t len, bool *oom)
{
	char *key = strndup(name, len);
	if (!key) {
		*oom = true;
		return "";
	}
	const char *v = fn(key, ctx);
	free(key);
	return v ? v : "";
}

/*
 * LiteFS's mapping function: trims the ${...} body, then tries the three
 * expression forms in LiteFS's order (single-quoted literal, double-quoted
 * literal, two variable names), else looks the body up as a name.
 * Appends the result to out.
 */
static void expand_one(const char *v, size_t n, config_getenv_fn fn, void *ctx, struct sbuf *out, bool *oom)
{
	while (n > 0 && is_go_trim_space((unsigned char)v[0])) {
		v++;
		n--;
	}
	while (n > 0 && is_go_trim_space((unsigned char)v[n - 1]))
		n--;

	size_t i = 0;
	while (i < n && is_word((unsigned char)v[i]))
		i++;
	size_t name_len = i;
	while (i < n && is_re_space((unsigned char)v[i]))
		i++;
	if (name_len > 0 && i + 2 <= n && (v[i] == '=' || v[i] == '!') && v[i + 1] == '=') {
		bool eq = v[i] == '=';
		i += 2;
		while (i < n && is_re_space((unsigned char)v[i]))
			i++;
		const char *rhs = v + i;
		size_t rlen = n - i;
		const char *lit = NULL;
		size_t lit_len = 0;
		bool ok = false;
		if (rlen >= 2 && (rhs[0] == '\'' || rhs[0] == '"') && rhs[rlen - 1] == rhs[0] &&
		    !memchr(rhs + 1, '\n', rlen - 2)) {
			lit = rhs + 1;
			lit_len = rlen - 2;
			ok = true;
		} else if (rlen > 0) {
			size_t k = 0;
			while (k < rlen && is_word((unsigned char)rhs[k]))
				k++;
			if (k == rlen) {
				lit = lookup(fn, ctx, rhs, rlen, oom);
				lit_len = strlen(lit);
				ok = true;
			}
		}
		if (ok) {
			const char *lhs = lookup(fn, ctx, v, name_len, oom);
			bool same = strlen(lhs) == lit_len && memcmp(lhs, lit, lit_len) == 0;
			const char *res = (same == eq) ? "true" : "false";
			sbuf_putn(out, res, strlen(res));
			return;
		}
	}
	const char *val = lookup(fn, ctx, v, n, oom);
	sbuf_putn(out, val, strlen(val));
}

static int expand_impl(const char *s, size_t len, config_getenv_fn fn, void *ctx,
		       char **out, size_t *out_len, struct segs *segs)
{
	struct sbuf b = { 0 };
	bool oom = false;
	size_t i = 0;

	if (!fn)
		fn = config_getenv_process;
	sbuf_reserve(&b, len);
	for (size_t j = 0; j < len; j++) {
		if (s[j] != '$' || j + 1 >= len)
			continue;
		if (j > i) {
			oom |= !segs_add(segs, b.len, i, false);
			sbuf_putn(&b, s + i, j - i);
		}
		const char *name;
		size_t name_len, w;
		shell_name(s + j + 1, len - j - 1, &name, &name_len, &w);
		if (name_len == 0 && w > 0) {
			/* Invalid syntax: the characters are eaten. */
		} else if (name_len == 0) {
			oom |= !segs_add(segs, b.len, j, false);
			sbuf_putn(&b, "$", 1);
		} else {
			oom |= !segs_add(segs, b.len, j, true);
			expand_one(name, name_len, fn, ctx, &b, &oom);
		}
		j += w;
		i = j + 1;
		if (b.len > CONFIG_MAX_EXPANDED_SIZE)
			break;
	}
	if (i < len && b.len <= CONFIG_MAX_EXPANDED_SIZE) {
		oom |= !segs_add(segs, b.len, i, false);
		sbuf_putn(&b, s + i, len - i);
	}
	sbuf_putn(&b, "", 0); /* NUL-terminates, also when empty */
	if (oom || b.oom) {
		free(b.p);
		return ERR_NOMEM;
	}
	if (b.len > CONFIG_MAX_EXPANDED_SIZE) {
		free(b.p);
		return ERR_CONFIG;
	}
	*out = b.p;
	*out_len = b.len;
	return 0;
}

int config_expand_env(const char *text, size_t len, config_getenv_fn getenv_fn,
		      void *env_ctx, char **out, size_t *out_len)
{
	return expand_impl(text, len, getenv_fn, env_ctx, out, out_len, NULL);
}

/* Maps lines of the expanded text back to lines of the original text. */
struct linemap {
	bool identity;
	size_t *exp_starts, n_exp;
	size_t *orig_starts, n_orig;
	struct segs segs;
};

static void linemap_free(struct linemap *m)
{
	free(m->exp_starts);
	free(m->orig_starts);
	free(m->segs.v);
	memset(m, 0, sizeof(*m));
}

/* 1-based line in the expanded text -> 1-based line in the original. */
static int linemap_line(const struct linemap *m, int line)
{
	if (m->identity || line <= 0 || !m->exp_starts)
		return line;
	size_t li = (size_t)line - 1;
	if (li >= m->n_exp)
		li = m->n_exp - 1;
	size_t off = m->exp_starts[li];
	/* Last segment with out_off <= off. */
	size_t lo = 0, hi = m->segs.n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (m->segs.v[mid].out_off <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t in_off = 0;
	if (lo > 0) {
		const struct seg *sg = &m->segs.v[lo - 1];
		in_off = sg->subst ? sg->in_off : sg->in_off + (off - sg->out_off);
	}
	/* Number of original line starts <= in_off. */
	lo = 0;
	hi = m->n_orig;
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
/* The first YAML document as a tree, built from libyaml events.       */

enum ykind { Y_SCALAR, Y_SEQ, Y_MAP };

struct ynode {
	enum ykind kind;
	char *tag; /* explicit tag (expanded by libyaml), or NULL */
	char *val; /* scalar bytes, NUL-terminated */
	size_t len;
	bool plain;
	int line; /* 1-based, in the original file */
	size_t *kids; /* node indices; a mapping alternates key, value */
	size_t n_kids, cap_kids;
};

struct anchor {
	char *name;
	size_t node;
};

struct ydoc {
	struct ynode *nodes;
	size_t n, cap;
	struct anchor *anchors;
	size_t n_anchors, cap_anchors;
	bool has_root;
	size_t root;
};

static void ydoc_free(struct ydoc *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->nodes[i].tag);
		free(d->nodes[i].val);
		free(d->nodes[i].kids);
	}
	free(d->nodes);
	for (size_t i = 0; i < d->n_anchors; i++)
		free(d->anchors[i].name);
	free(d->anchors);
	memset(d, 0, sizeof(*d));
}

static bool ydoc_new_node(struct ydoc *d, enum ykind kind, const yaml_mark_t *mark,
			  const struct linemap *lm, const unsigned char *tag, size_t *idx)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct ynode *v = realloc(d->nodes, cap * sizeof(*v));
		if (!v)
			return false;
		d->nodes = v;
		d->cap = cap;
	}
	struct ynode *n = &d->nodes[d->n];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->line = linemap_line(lm, (int)mark->line + 1);
	if (tag && !(n->tag = strdup((const char *)tag)))
		return false;
	*idx = d->n++;
	return true;
}

static bool ydoc_add_kid(struct ydoc *d, size_t parent, size_t kid)
{
	struct ynode *p = &d->nodes[parent];
	if (p->n_kids == p->cap_kids) {
		size_t cap = p->cap_kids ? p->cap_kids * 2 : 8;
		size_t *v = realloc(p->kids, cap * sizeof(*v));
		if (!v)
			return false;
		p->kids = v;
		p->cap_kids = cap;
	}
	p->kids[p->n_kids++] = kid;
	return true;
}

static bool ydoc_add_anchor(struct ydoc *d, const unsigned char *name, size_t node)
{
	if (!name)
		return true;
	if (d->n_anchors == d->cap_anchors) {
		size_t cap = d->cap_anchors ? d->cap_anchors * 2 : 8;
		struct anchor *v = realloc(d->anchors, cap * sizeof(*v));
		if (!v)
			return false;
		d->anchors = v;
		d->cap_anchors = cap;
	}
	char *s = strdup((const char *)name);
	if (!s)
		return false;
	d->anchors[d->n_anchors++] = (struct anchor){ s, node };
	return true;
}

struct frame {
	size_t node;
	unsigned char *anchor; /* owned; registered when the node ends */
};

/*
 * Loads the first document of text into d. Returns 0 (d->has_root false
 * when the stream holds no document), ERR_CONFIG (message added to errs),
 * ERR_NOMEM. Anchors are registered when their node ends, so an alias can
 * never refer to an enclosing node (no cycles).
 */
static int ydoc_load(struct ydoc *d, const char *text, size_t len, const struct linemap *lm, struct errs *errs)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	struct frame stack[MAX_DEPTH];
	size_t depth = 0;
	int rc = 0;
	bool done = false;

	if (!yaml_parser_initialize(&parser))
		return ERR_NOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			if (parser.error == YAML_MEMORY_ERROR) {
				rc = ERR_NOMEM;
			} else {
				/* The line where libyaml gave up, and where the
				 * construct it was reading began. */
				int pline = linemap_line(lm, (int)parser.problem_mark.line + 1);
				const char *problem = parser.problem ? parser.problem : "error";
				if (parser.context)
					errs_add(errs, pline, "YAML syntax error: %s (%s that began at line %d)", problem,
						 parser.context, linemap_line(lm, (int)parser.context_mark.line + 1));
				else
					errs_add(errs, pline, "YAML syntax error: %s", problem);
				rc = ERR_CONFIG;
			}
			break;
		}
		size_t idx = 0;
		bool attach = false;
		switch (ev.type) {
		case YAML_DOCUMENT_END_EVENT:
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_SCALAR_EVENT:
			if (!ydoc_new_node(d, Y_SCALAR, &ev.start_mark, lm, ev.data.scalar.tag, &idx)) {
				rc = ERR_NOMEM;
				break;
			}
			d->nodes[idx].plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
			d->nodes[idx].len = ev.data.scalar.length;
			d->nodes[idx].val = malloc(ev.data.scalar.length + 1);
			if (!d->nodes[idx].val) {
				rc = ERR_NOMEM;
				break;
			}
			memcpy(d->nodes[idx].val, ev.data.scalar.value, ev.data.scalar.length);
			d->nodes[idx].val[ev.data.scalar.length] = '\0';
			if (!ydoc_add_anchor(d, ev.data.scalar.anchor, idx)) {
				rc = ERR_NOMEM;
				break;
			}
			attach = true;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			bool seq = ev.type == YAML_SEQUENCE_START_EVENT;
			if (depth == MAX_DEPTH) {
				errs_add(errs, linemap_line(lm, (int)ev.start_mark.line + 1),
					 "nesting deeper than %d levels", MAX_DEPTH);
				rc = ERR_CONFIG;
				break;
			}
			const unsigned char *tag = seq ? ev.data.sequence_start.tag : ev.data.mapping_start.tag;
			const unsigned char *anchor = seq ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
			if (!ydoc_new_node(d, seq ? Y_SEQ : Y_MAP, &ev.start_mark, lm, tag, &idx)) {
				rc = ERR_NOMEM;
				break;
			}
			attach = true;
			stack[depth].node = idx;
			stack[depth].anchor = NULL;
			if (anchor && !(stack[depth].anchor = (unsigned char *)strdup((const char *)anchor))) {
				rc = ERR_NOMEM;
				break;
			}
			depth++;
			break;
		}
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (depth > 0) {
				depth--;
				bool ok = ydoc_add_anchor(d, stack[depth].anchor, stack[depth].node);
				free(stack[depth].anchor);
				stack[depth].anchor = NULL;
				if (!ok)
					rc = ERR_NOMEM;
			}
			break;
		case YAML_ALIAS_EVENT: {
			const char *name = (const char *)ev.data.alias.anchor;
			bool found = false;
			for (size_t k = d->n_anchors; k-- > 0;) {
				if (!strcmp(d->anchors[k].name, name)) {
					idx = d->anchors[k].node;
					found = true;
					break;
				}
			}
			if (!found) {
				errs_add(errs, linemap_line(lm, (int)ev.start_mark.line + 1),
					 "unknown anchor \"%s\" referenced", name);
				rc = ERR_CONFIG;
				break;
			}
			attach = true;
			break;
		}
		default:
			break;
		}
		if (rc == 0 && attach) {
			/* A node being attached to itself is impossible: its frame is
			 * pushed after this point. */
			size_t parent_depth = depth;
			if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT)
				parent_depth--;
			if (parent_depth == 0) {
				d->has_root = true;
				d->root = idx;
			} else if (!ydoc_add_kid(d, stack[parent_depth - 1].node, idx)) {
				rc = ERR_NOMEM;
			}
		}
		yaml_event_delete(&ev);
		if (rc)
			break;
	}
	while (depth > 0)
		free(stack[--depth].anchor);
	yaml_parser_delete(&parser);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Scalar resolution, as yaml.v3 does it.                              */

enum rkind { R_NULL, R_BOOL, R_INT, R_FLOAT, R_STR, R_MERGE, R_BADTAG };

#define TAG_PREFIX "tag:yaml.org,2002:"

static bool str_in(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

static const char *const null_words[] = { "", "~", "null", "Null", "NULL", NULL };
static const char *const true_words[] = { "true", "True", "TRUE", NULL };
static const char *const false_words[] = { "false", "False", "FALSE", NULL };
static const char *const yaml11_true[] = { "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", NULL };
static const char *const yaml11_false[] = { "n", "N", "no", "No", "NO", "off", "Off", "OFF", NULL };

static int digit_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	return 99;
}

/*
 * Go strconv.ParseInt(s, 0, 64): optional sign, 0x/0o/0b prefixes, a
 * leading 0 for octal, underscores between digits. Returns 1 for an
 * integer (in *v), 2 for an integer out of int64 range, 0 otherwise.
 */
static int parse_go_int(const char *s, int64_t *v)
{
	bool neg = false;
	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	int base = 10;
	const char *p = s;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	} else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O')) {
		base = 8;
		p += 2;
	} else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
		base = 2;
		p += 2;
	} else if (p[0] == '0' && p[1] != '\0') {
		base = 8;
		p += 1;
	}
	if (*p == '\0')
		return 0;
	uint64_t acc = 0;
	bool overflow = false, prev_us = false, any = false;
	/* With a prefix, "0x_1" is allowed: the prefix counts as a digit. */
	bool prefix_digit = p != s;
	for (; *p; p++) {
		if (*p == '_') {
			if (prev_us || (!any && !prefix_digit))
				return 0;
			prev_us = true;
			continue;
		}
		int dv = digit_value((unsigned char)*p);
		if (dv >= base)
			return 0;
		if (acc > (UINT64_MAX - (uint64_t)dv) / (uint64_t)base)
			overflow = true;
		else
			acc = acc * (uint64_t)base + (uint64_t)dv;
		any = true;
		prev_us = false;
	}
	if (!any || prev_us)
		return 0;
	if (overflow)
		return 2;
	if (neg) {
		if (acc > (uint64_t)INT64_MAX + 1)
			return 2;
		*v = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
	} else {
		if (acc > (uint64_t)INT64_MAX)
			return 2;
		*v = (int64_t)acc;
	}
	return 1;
}

/* yaml.v3's yamlStyleFloat: ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$ */
static bool is_yaml_float(const char *s)
{
	static const char *const special[] = { ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
						"-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN", NULL };
	if (str_in(s, special))
		return true;
	const char *p = s;
	if (*p == '+' || *p == '-')
		p++;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	} else {
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
		if (*p == '.') {
			p++;
			while (isdigit((unsigned char)*p))
				p++;
		}
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	}
	return *p == '\0';
}

static enum rkind resolve(const struct ynode *n, bool *bval)
{
	const char *v = n->val;
	if (n->tag && strcmp(n->tag, "!") != 0) {
		const char *t = n->tag;
		if (!strncmp(t, TAG_PREFIX, strlen(TAG_PREFIX)))
			t += strlen(TAG_PREFIX);
		else
			return R_BADTAG;
		if (!strcmp(t, "str"))
			return R_STR;
		if (!strcmp(t, "null"))
			return R_NULL;
		if (!strcmp(t, "int")) {
			int64_t x;
			return parse_go_int(v, &x) ? R_INT : R_BADTAG;
		}
		if (!strcmp(t, "float"))
			return R_FLOAT;
		if (!strcmp(t, "bool")) {
			if (str_in(v, true_words)) {
				*bval = true;
				return R_BOOL;
			}
			if (str_in(v, false_words)) {
				*bval = false;
				return R_BOOL;
			}
			return R_BADTAG;
		}
		return R_BADTAG;
	}
	if (n->tag || !n->plain)
		return R_STR;
	if (str_in(v, null_words))
		return R_NULL;
	if (str_in(v, true_words)) {
		*bval = true;
		return R_BOOL;
	}
	if (str_in(v, false_words)) {
		*bval = false;
		return R_BOOL;
	}
	if (!strcmp(v, "<<"))
		return R_MERGE;
	int64_t x;
	if (parse_go_int(v, &x))
		return R_INT;
	if (is_yaml_float(v))
		return R_FLOAT;
	return R_STR;
}

/* Describes a node for "expected X, got Y" messages. */
static void describe(struct sbuf *b, const struct ynode *n)
{
	bool bv;
	if (n->kind == Y_MAP) {
		sbuf_printf(b, "a mapping");
		return;
	}
	if (n->kind == Y_SEQ) {
		sbuf_printf(b, "a list");
		return;
	}
	switch (resolve(n, &bv)) {
	case R_NULL:
		sbuf_printf(b, "null");
		return;
	case R_BOOL:
		sbuf_printf(b, "the boolean %s", n->val);
		return;
	case R_INT:
		sbuf_printf(b, "the integer %s", n->val);
		return;
	case R_FLOAT:
		sbuf_printf(b, "the number %s", n->val);
		return;
	default:
		sbuf_printf(b, "the string ");
		sbuf_quote(b, n->val, n->len, 64);
		return;
	}
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
	CF(proxy.addr), CF(proxy.target), CF(proxy.db),
	CF(lease.type), CF(lease.hostname), CF(lease.advertise_url),
	CF(lease.consul.url), CF(lease.consul.key), CF(lease.etcd.key),
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
	cfg->data.retention_ms = CONFIG_DEFAULT_RETENTION_MS;
	cfg->data.retention_monitor_interval_ms = CONFIG_DEFAULT_RETENTION_MONITOR_INTERVAL_MS;
	cfg->lease.candidate = true;
	cfg->lease.reconnect_delay_ms = CONFIG_DEFAULT_RECONNECT_DELAY_MS;
	cfg->lease.demote_delay_ms = CONFIG_DEFAULT_DEMOTE_DELAY_MS;
	cfg->lease.consul.ttl_ms = CONFIG_DEFAULT_CONSUL_TTL_MS;
	cfg->lease.consul.lock_delay_ms = CONFIG_DEFAULT_CONSUL_LOCK_DELAY_MS;
	cfg->lease.etcd.ttl_ms = CONFIG_DEFAULT_ETCD_TTL_MS;
	cfg->proxy.max_lag_ms = CONFIG_DEFAULT_PROXY_MAX_LAG_MS;
	cfg->proxy.primary_redirect_timeout_ms = CONFIG_DEFAULT_PROXY_PRIMARY_REDIRECT_TIMEOUT_MS;
	cfg->proxy.read_header_timeout_ms = CONFIG_DEFAULT_PROXY_READ_HEADER_TIMEOUT_MS;
	cfg->proxy.idle_timeout_ms = CONFIG_DEFAULT_PROXY_IDLE_TIMEOUT_MS;
	cfg->backup.delay_ms = CONFIG_DEFAULT_BACKUP_DELAY_MS;
	cfg->backup.full_sync_interval_ms = CONFIG_DEFAULT_BACKUP_FULL_SYNC_INTERVAL_MS;
	cfg->tracing.enabled = true;
	cfg->tracing.max_size = CONFIG_DEFAULT_TRACING_MAX_SIZE;
	cfg->tracing.max_count = CONFIG_DEFAULT_TRACING_MAX_COUNT;
	cfg->tracing.compress = true;
	if (!set_str(&cfg->http.addr, CONFIG_DEFAULT_HTTP_ADDR) ||
	    !set_str(&cfg->lease.type, "static") ||
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
	struct ydoc *doc;
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

static void type_error(struct dctx *d, const char *path, const struct ynode *v, const char *expected)
{
	struct sbuf b = { 0 };
	describe(&b, v);
	errs_add(d->errs, v->line, "%s: expected %s, got %s", path, expected, b.p ? b.p : "?");
	d->oom |= b.oom;
	free(b.p);
}

static bool check_tag(struct dctx *d, const char *path, const struct ynode *v)
{
	bool bv;
	if (v->kind == Y_SCALAR && resolve(v, &bv) == R_BADTAG) {
		errs_add(d->errs, v->line, "%s: unsupported tag \"%s\" for value \"%s\"", path, v->tag ? v->tag : "",
			 v->val);
		return false;
	}
	if (v->kind != Y_SCALAR && v->tag) {
		errs_add(d->errs, v->line, "%s: unsupported tag \"%s\"", path, v->tag);
		return false;
	}
	return true;
}

static bool is_null(const struct ynode *v)
{
	bool bv;
	return v->kind == Y_SCALAR && resolve(v, &bv) == R_NULL;
}

static void decode_str(struct dctx *d, const char *path, const struct ynode *v, char **slot)
{
	if (is_null(v))
		return;
	if (v->kind != Y_SCALAR) {
		type_error(d, path, v, "a string");
		return;
	}
	if (!set_str(slot, v->val))
		d->oom = true;
	check_missing_dollar(d, path, v->val, v->line);
}

static void decode_bool(struct dctx *d, const char *path, const struct ynode *v, bool *slot)
{
	bool bv = false;
	if (v->kind == Y_SCALAR) {
		enum rkind r = resolve(v, &bv);
		if (r == R_NULL)
			return;
		if (r == R_BOOL) {
			*slot = bv;
			return;
		}
		if (r == R_STR && str_in(v->val, yaml11_true)) {
			*slot = true;
			return;
		}
		if (r == R_STR && str_in(v->val, yaml11_false)) {
			*slot = false;
			return;
		}
	}
	type_error(d, path, v, "a boolean (true or false)");
}

static void decode_dur(struct dctx *d, const char *path, const struct ynode *v, int64_t *slot)
{
	bool bv;
	if (v->kind == Y_SCALAR) {
		enum rkind r = resolve(v, &bv);
		if (r == R_NULL)
			return;
		if (r == R_STR) {
			int64_t ms;
			if (config_parse_duration(v->val, &ms) == 0) {
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

static void decode_int(struct dctx *d, const char *path, const struct ynode *v, int64_t *slot)
{
	bool bv;
	if (v->kind == Y_SCALAR) {
		enum rkind r = resolve(v, &bv);
		if (r == R_NULL)
			return;
		if (r == R_INT) {
			int64_t x = 0;
			if (parse_go_int(v->val, &x) == 1) {
				*slot = x;
				return;
			}
			errs_add(d->errs, v->line, "%s: integer %s is out of range", path, v->val);
			return;
		}
	}
	type_error(d, path, v, "an integer");
}

static void decode_list(struct dctx *d, const char *path, const struct ynode *v, struct config_strlist *slot)
{
	if (is_null(v)) {
		strlist_free(slot);
		return;
	}
	if (v->kind != Y_SEQ) {
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
		const struct ynode *it = &d->doc->nodes[v->kids[i]];
		char ipath[340];
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (!check_tag(d, ipath, it)) {
			ok = false;
			continue;
		}
		if (it->kind != Y_SCALAR) {
			type_error(d, ipath, it, "a string");
			ok = false;
			continue;
		}
		items[i] = strdup(is_null(it) ? "" : it->val);
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

static void decode_map(struct dctx *d, const char *path, const struct ynode *m, const struct field *fields,
		       void *base, bool is_exec_item);

static void decode_exec(struct dctx *d, const struct ynode *v)
{
	static const char expected[] = "a command string or a list of {cmd: ..., if-candidate: ...} items";
	bool bv;
	struct config *c = d->cfg;

	if (is_null(v)) {
		exec_free(c);
		return;
	}
	if (v->kind == Y_SCALAR) {
		if (resolve(v, &bv) != R_STR) {
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
	if (v->kind != Y_SEQ) {
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
		const struct ynode *it = &d->doc->nodes[v->kids[i]];
		char ipath[64];
		snprintf(ipath, sizeof(ipath), "exec[%zu]", i);
		items[i].line = it->line;
		if (!(items[i].cmd = strdup(""))) {
			d->oom = true;
			return;
		}
		if (!check_tag(d, ipath, it))
			continue;
		if (is_null(it))
			continue; /* validation reports the missing cmd */
		if (it->kind != Y_MAP) {
			type_error(d, ipath, it, "a mapping such as {cmd: \"myapp serve\"}");
			continue;
		}
		decode_map(d, ipath, it, exec_item_fields, &items[i], true);
	}
}

static void decode_value(struct dctx *d, const char *path, const struct ynode *v, const struct field *f, void *base)
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
		if (is_null(v))
			break;
		if (v->kind != Y_MAP) {
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

static void unknown_key(struct dctx *d, const char *path, const struct ynode *k, const struct field *fields)
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
	const struct ynode *key;
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

static void decode_map(struct dctx *d, const char *path, const struct ynode *m, const struct field *fields,
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
		const struct ynode *k = &d->doc->nodes[m->kids[2 * i]];
		if (k->kind != Y_SCALAR) {
			errs_add(d->errs, k->line, "%s%smapping keys must be plain names, not %s", path,
				 *path ? ": " : "", k->kind == Y_MAP ? "mappings" : "lists");
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
		const struct ynode *k = &d->doc->nodes[m->kids[2 * i]];
		const struct ynode *v = &d->doc->nodes[m->kids[2 * i + 1]];
		char kpath[300];
		snprintf(kpath, sizeof(kpath), "%s%s%.*s", path, *path ? "." : "", 200, k->val);
		bool bv;
		if (resolve(k, &bv) == R_MERGE) {
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
		 config_getenv_fn getenv_fn, void *env_ctx, struct config *cfg,
		 char *errbuf, size_t errlen)
{
	struct errs errs = { .name = name ? name : "litefs.yml" };
	struct linemap lm = { .identity = true };
	struct ydoc doc = { 0 };
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
		rc = expand_impl(text, len, getenv_fn, env_ctx, &expanded, &exp_len, &lm.segs);
		if (rc == ERR_CONFIG)
			errs_add(&errs, 0, "file is larger than %u bytes after environment expansion",
				 CONFIG_MAX_EXPANDED_SIZE);
		if (rc)
			goto err_free;
		src = expanded;
		lm.identity = false;
		lm.exp_starts = line_starts(expanded, exp_len, &lm.n_exp);
		lm.orig_starts = line_starts(text, len, &lm.n_orig);
		if (!lm.exp_starts || !lm.orig_starts) {
			rc = ERR_NOMEM;
			goto err_free;
		}
	}

	rc = ydoc_load(&doc, src, exp_len, &lm, &errs);
	if (rc)
		goto err_free;
	if (!doc.has_root) {
		errs_add(&errs, 0, "no YAML document: the file is empty or only has comments");
		rc = ERR_CONFIG;
		goto err_free;
	}

	struct dctx d = { .doc = &doc, .cfg = cfg, .errs = &errs };
	const struct ynode *root = &doc.nodes[doc.root];
	if (check_tag(&d, "top level", root) && !is_null(root)) {
		if (root->kind != Y_MAP)
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
	ydoc_free(&doc);
	linemap_free(&lm);
	free(expanded);
	free(errs.buf.p);
	return 0;

err_free:
	if (rc == ERR_NOMEM)
		set_err(errbuf, errlen, "%s: out of memory", errs.name);
	else
		sbuf_to_errbuf(&errs.buf, errbuf, errlen);
	ydoc_free(&doc);
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

int config_apply_env(struct config *cfg, config_getenv_fn getenv_fn, void *env_ctx)
{
	if (!getenv_fn)
		getenv_fn = config_getenv_process;
	const char *tok = getenv_fn("LITEFS_CLOUD_TOKEN", env_ctx);
	if (tok) {
		while (is_go_trim_space((unsigned char)*tok))
			tok++;
		size_t n = strlen(tok);
		while (n > 0 && is_go_trim_space((unsigned char)tok[n - 1]))
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
		int rc = config_exec_argv(c->exec[i].cmd, &argv, &argc, msg, sizeof(msg));
		if (rc == ERR_CONFIG)
			errs_add(&v.errs, line, "%s: %s", path, msg);
		else if (rc == 0 && argc == 0)
			errs_add(&v.errs, line, "%s: the command is empty", path);
		config_argv_free(argv);
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
	ISSUE(!have_lease_consul && !strcmp(c->lease.type, "consul"), true,
	      "lease.type: consul is not supported yet; use static");
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
		size_t bl = break_len(s, len, (size_t)(p - (const unsigned char *)s));
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
	char buf[32];
	config_format_duration(ms, buf, sizeof(buf));
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

	fputs("lease:\n", out);
	print_kv_str(out, 2, "type", c->lease.type);
	print_kv_str(out, 2, "hostname", c->lease.hostname);
	print_kv_str(out, 2, "advertise-url", c->lease.advertise_url);
	print_kv_bool(out, 2, "candidate", c->lease.candidate);
	print_kv_bool(out, 2, "promote", c->lease.promote);
	print_kv_dur(out, 2, "reconnect-delay", c->lease.reconnect_delay_ms);
	print_kv_dur(out, 2, "demote-delay", c->lease.demote_delay_ms);
	print_kv_list(out, 2, "databases", &c->lease.databases);
	fputs("  consul:\n", out);
	print_kv_str(out, 4, "url", c->lease.consul.url);
	print_kv_str(out, 4, "key", c->lease.consul.key);
	print_kv_dur(out, 4, "ttl", c->lease.consul.ttl_ms);
	print_kv_dur(out, 4, "lock-delay", c->lease.consul.lock_delay_ms);
	fputs("  etcd:\n", out);
	print_kv_list(out, 4, "endpoints", &c->lease.etcd.endpoints);
	print_kv_str(out, 4, "key", c->lease.etcd.key);
	print_kv_dur(out, 4, "ttl", c->lease.etcd.ttl_ms);

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

/* ------------------------------------------------------------------ */
/* Durations: Go's time.ParseDuration, in nanoseconds, then ms.         */

static const struct {
	const char *name;
	uint64_t ns;
} duration_units[] = {
	{ "ns", 1ull },
	{ "us", 1000ull },
	{ "\xc2\xb5s", 1000ull }, /* U+00B5 micro sign */
	{ "\xce\xbcs", 1000ull }, /* U+03BC Greek mu */
	{ "ms", 1000000ull },
	{ "s", 1000000000ull },
	{ "m", 60ull * 1000000000ull },
	{ "h", 3600ull * 1000000000ull },
};

int config_parse_duration(const char *s, int64_t *ms_out)
{
	const uint64_t limit = 1ull << 63;
	uint64_t d = 0;
	bool neg = false;

	if (!s)
		return ERR_CONFIG;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (!strcmp(s, "0")) {
		*ms_out = 0;
		return 0;
	}
	if (!*s)
		return ERR_CONFIG;
	while (*s) {
		uint64_t v = 0, f = 0;
		double scale = 1.0;
		if (!(*s == '.' || isdigit((unsigned char)*s)))
			return ERR_CONFIG;
		const char *start = s;
		while (isdigit((unsigned char)*s)) {
			if (v > (limit - 1) / 10)
				return ERR_CONFIG; /* overflow */
			v = v * 10 + (uint64_t)(*s - '0');
			if (v > limit)
				return ERR_CONFIG;
			s++;
		}
		bool pre = s != start, post = false;
		if (*s == '.') {
			s++;
			const char *fs = s;
			bool overflow = false;
			while (isdigit((unsigned char)*s)) {
				if (!overflow) {
					if (f > (limit - 1) / 10) {
						overflow = true;
					} else {
						uint64_t y = f * 10 + (uint64_t)(*s - '0');
						if (y > limit)
							overflow = true;
						else {
							f = y;
							scale *= 10;
						}
					}
				}
				s++;
			}
			post = s != fs;
		}
		if (!pre && !post)
			return ERR_CONFIG;
		const char *u = s;
		while (*s && *s != '.' && !isdigit((unsigned char)*s))
			s++;
		if (s == u)
			return ERR_CONFIG; /* missing unit */
		uint64_t unit = 0;
		for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
			if (strlen(duration_units[i].name) == (size_t)(s - u) &&
			    !memcmp(duration_units[i].name, u, (size_t)(s - u)))
				unit = duration_units[i].ns;
		}
		if (!unit)
			return ERR_CONFIG; /* unknown unit */
		if (v > limit / unit)
			return ERR_CONFIG;
		v *= unit;
		if (f > 0) {
			v += (uint64_t)((double)f * ((double)unit / scale));
			if (v > limit)
				return ERR_CONFIG;
		}
		d += v;
		if (d > limit)
			return ERR_CONFIG;
	}
	if (neg) {
		*ms_out = -(int64_t)(d / 1000000u);
		return 0;
	}
	if (d > limit - 1)
		return ERR_CONFIG;
	*ms_out = (int64_t)(d / 1000000u);
	return 0;
}

void config_format_duration(int64_t ms, char *buf, size_t len)
{
	if (!buf || len == 0)
		return;
	if (ms == 0) {
		snprintf(buf, len, "0s");
		return;
	}
	uint64_t u = ms < 0 ? (uint64_t)0 - (uint64_t)ms : (uint64_t)ms;
	uint64_t h = u / 3600000u, m = (u / 60000u) % 60u, s = (u / 1000u) % 60u, r = u % 1000u;
	char tmp[64];
	size_t n = 0;
	if (ms < 0)
		tmp[n++] = '-';
	if (h)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%lluh", (unsigned long long)h);
	if (m)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llum", (unsigned long long)m);
	if (s)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llus", (unsigned long long)s);
	if (r)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llums", (unsigned long long)r);
	snprintf(buf, len, "%s", tmp);
}

/* ------------------------------------------------------------------ */
/* Exec command splitting (go-shellwords defaults).                    */

void config_argv_free(char **argv)
{
	if (!argv)
		return;
	for (char **p = argv; *p; p++)
		free(*p);
	free(argv);
}

int config_exec_argv(const char *cmd, char ***argv_out, size_t *argc_out, char *errbuf, size_t errlen)
{
	char **argv = NULL;
	size_t argc = 0, cap = 0;
	struct sbuf arg = { 0 };
	bool in_single = false, in_double = false, escaped = false, got = false;
	int rc = 0;

	*argv_out = NULL;
	*argc_out = 0;
	for (const char *p = cmd;; p++) {
		char c = *p;
		bool end = c == '\0';
		if (!end && escaped) {
			sbuf_putn(&arg, p, 1);
			escaped = false;
			got = true;
			continue;
		}
		if (!end && c == '\\') {
			if (in_single)
				sbuf_putn(&arg, p, 1);
			else
				escaped = true;
			got = true;
			continue;
		}
		bool space = c == ' ' || c == '\t' || c == '\r' || c == '\n';
		if (!end && space && (in_single || in_double)) {
			sbuf_putn(&arg, p, 1);
			continue;
		}
		if (end || space) {
			if (end && (in_single || in_double || escaped)) {
				set_err(errbuf, errlen, "%s", escaped ? "the command ends with a lone backslash"
								      : "unterminated quote in the command");
				rc = ERR_CONFIG;
				goto err_free;
			}
			if (got) {
				if (argc + 2 > cap) {
					size_t ncap = cap ? cap * 2 : 8;
					char **v = realloc(argv, ncap * sizeof(*v));
					if (!v) {
						rc = ERR_NOMEM;
						goto err_free;
					}
					argv = v;
					cap = ncap;
				}
				sbuf_putn(&arg, "", 0);
				if (arg.oom) {
					rc = ERR_NOMEM;
					goto err_free;
				}
				argv[argc++] = arg.p ? arg.p : strdup("");
				argv[argc] = NULL;
				if (!argv[argc - 1]) {
					argc--;
					rc = ERR_NOMEM;
					goto err_free;
				}
				memset(&arg, 0, sizeof(arg));
				got = false;
			}
			if (end)
				break;
			continue;
		}
		if (c == '\'' && !in_double) {
			in_single = !in_single;
			got = true;
			continue;
		}
		if (c == '"' && !in_single) {
			in_double = !in_double;
			got = true;
			continue;
		}
		if (!in_single && !in_double && strchr(";&|<>", c)) {
			set_err(errbuf, errlen,
				"shell operator '%c' in the command; no shell runs it, so quote the character or use "
				"sh -c '...'",
				c);
			rc = ERR_CONFIG;
			goto err_free;
		}
		sbuf_putn(&arg, p, 1);
		got = true;
	}
	if (!argv) {
		argv = calloc(1, sizeof(*argv));
		if (!argv)
			return ERR_NOMEM;
	}
	*argv_out = argv;
	*argc_out = argc;
	return 0;

err_free:
	free(arg.p);
	if (argv) {
		argv[argc] = NULL;
		config_argv_free(argv);
	}
	if (rc == ERR_NOMEM)
		set_err(errbuf, errlen, "out of memory");
	return rc;
}
