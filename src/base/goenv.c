/*
 * goenv.c — see goenv.h.
 *
 * expand() mirrors Go's os.Expand (src/os/env.go): it scans for '$',
 * copies the run before it, asks shell_name() (Go's getShellName) how many
 * bytes the reference uses, then appends the mapping of the name
 * (expand_one(), LiteFS's mapping function). A reference that Go calls
 * bad syntax yields an empty name with a non-zero width and is eaten.
 *
 * LiteFS matches its expressions with Go regular expressions, after a
 * strings.TrimSpace; expand_one() matches the same strings by hand. Two
 * details of RE2 are kept: \s is [\t\n\f\r ], narrower than TrimSpace's
 * set, and `.` does not match a line break, so a quoted literal cannot
 * span lines.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/goenv.h"
#include "base/sbuf.h"

const char *goenv_getenv_process(const char *name, void *ctx)
{
	return getenv(name);
}

static bool map_add(struct goenv_map *m, size_t out_off, size_t in_off, bool subst)
{
	if (!m)
		return true;
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 32;
		struct goenv_seg *v = realloc(m->segs, cap * sizeof(*v));
		if (!v)
			return false;
		m->segs = v;
		m->cap = cap;
	}
	m->segs[m->n++] = (struct goenv_seg){ out_off, in_off, subst };
	return true;
}

void goenv_map_free(struct goenv_map *m)
{
	if (!m)
		return;
	free(m->segs);
	memset(m, 0, sizeof(*m));
}

size_t goenv_map_offset(const struct goenv_map *m, size_t out_off)
{
	/* The last run that starts at or before out_off. */
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (m->segs[mid].out_off <= out_off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return 0;
	const struct goenv_seg *sg = &m->segs[lo - 1];
	return sg->subst ? sg->in_off : sg->in_off + (out_off - sg->out_off);
}

static bool is_shell_special(unsigned char c)
{
	return c != '\0' && strchr("*#$@!?-0123456789", c) != NULL;
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

/* Go's strings.TrimSpace, for the ASCII bytes it trims. */
static bool is_go_trim_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Go RE2's \s: [\t\n\f\r ]. */
static bool is_re_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

static const char *lookup(goenv_getenv_fn fn, void *ctx, const char *name, size_t len, bool *oom)
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
static void expand_one(const char *v, size_t n, goenv_getenv_fn fn, void *ctx, struct sbuf *out, bool *oom)
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
			sbuf_puts(out, same == eq ? "true" : "false");
			return;
		}
	}
	sbuf_puts(out, lookup(fn, ctx, v, n, oom));
}

int goenv_expand(const char *s, size_t len, goenv_getenv_fn fn, void *ctx, size_t max_len, char **out,
		 size_t *out_len, struct goenv_map *map)
{
	struct sbuf b = { 0 };
	bool oom = false;
	size_t i = 0;

	*out = NULL;
	*out_len = 0;
	if (!fn)
		fn = goenv_getenv_process;
	sbuf_reserve(&b, len);
	for (size_t j = 0; j < len; j++) {
		if (s[j] != '$' || j + 1 >= len)
			continue;
		if (j > i) {
			oom |= !map_add(map, b.len, i, false);
			sbuf_putn(&b, s + i, j - i);
		}
		const char *name;
		size_t name_len, w;
		shell_name(s + j + 1, len - j - 1, &name, &name_len, &w);
		if (name_len == 0 && w > 0) {
			/* Invalid syntax: the characters are eaten. */
		} else if (name_len == 0) {
			oom |= !map_add(map, b.len, j, false);
			sbuf_putn(&b, "$", 1);
		} else {
			oom |= !map_add(map, b.len, j, true);
			expand_one(name, name_len, fn, ctx, &b, &oom);
		}
		j += w;
		i = j + 1;
		if (b.len > max_len)
			break;
	}
	if (i < len && b.len <= max_len) {
		oom |= !map_add(map, b.len, i, false);
		sbuf_putn(&b, s + i, len - i);
	}
	sbuf_putn(&b, "", 0); /* NUL-terminates, also when empty */
	if (oom || b.oom) {
		sbuf_free(&b);
		return ERR_NOMEM;
	}
	if (b.len > max_len) {
		sbuf_free(&b);
		return -E2BIG;
	}
	*out = b.p;
	*out_len = b.len;
	return 0;
}
