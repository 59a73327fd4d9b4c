/*
 * yamltree.c — see yamltree.h.
 *
 * The tree is built from libyaml's events rather than with libyaml's own
 * loader (yaml_parser_load) for three reasons: lines are mapped as nodes
 * are made, nesting is bounded before it costs anything, and anchors are
 * defined when their node ends, which keeps the tree acyclic (libyaml's
 * loader lets `&a [*a]` refer to itself).
 *
 * Nodes live in one array and refer to each other by index, so the array
 * can grow while the tree is built and an alias is just a second index to
 * the same node. An open collection is a frame on a fixed stack of
 * YAMLTREE_MAX_DEPTH; each new node is attached to the frame below it, or
 * becomes the root at depth 0.
 *
 * The resolution rules are yaml.v3's resolve.go: the plain-scalar table
 * (null words, the three spellings of true and false, "<<"), then Go's
 * integer syntax, then yaml.v3's float pattern, else a string.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base/err.h"
#include "base/yamltree.h"

/* ------------------------------------------------------------------ */
/* Building.                                                           */

struct loader {
	struct yamltree *t;
	unsigned flags;
	yamltree_line_fn map_line;
	void *map_ctx;
	struct yamltree_error *err;
};

static int map_line(const struct loader *l, size_t zero_based)
{
	int line = (int)zero_based + 1;
	return l->map_line ? l->map_line(l->map_ctx, line) : line;
}

static void set_error(struct loader *l, int line, const char *problem)
{
	if (!l->err)
		return;
	l->err->line = line;
	snprintf(l->err->problem, sizeof(l->err->problem), "%s", problem);
	snprintf(l->err->msg, sizeof(l->err->msg), "%s", problem);
}

/* Makes room for one more element in array v (n used of *cap, size
 * bytes each), doubling from first. Returns the array, moved or not, or
 * NULL when it cannot grow (v is then unchanged and still owned). */
static void *grow(void *v, size_t n, size_t *cap, size_t size, size_t first)
{
	if (n < *cap)
		return v;
	size_t ncap = *cap ? *cap * 2 : first;
	void *p = realloc(v, ncap * size);
	if (p)
		*cap = ncap;
	return p;
}

void yamltree_free(struct yamltree *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free(t->nodes[i].tag);
		free(t->nodes[i].val);
		free(t->nodes[i].kids);
	}
	free(t->nodes);
	for (size_t i = 0; i < t->n_anchors; i++)
		free(t->anchors[i].name);
	free(t->anchors);
	memset(t, 0, sizeof(*t));
}

static bool new_node(struct loader *l, enum yamltree_kind kind, const yaml_mark_t *mark, const unsigned char *tag,
		     size_t *idx)
{
	struct yamltree *t = l->t;
	struct yamltree_node *nodes = grow(t->nodes, t->n, &t->cap, sizeof(*nodes), 64);
	if (!nodes)
		return false;
	t->nodes = nodes;
	struct yamltree_node *n = &t->nodes[t->n];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->line = map_line(l, mark->line);
	/* Counted before the tag is copied, so that yamltree_free() frees a
	 * node whose tag could not be copied. */
	*idx = t->n++;
	return !tag || (n->tag = strdup((const char *)tag)) != NULL;
}

static bool add_kid(struct yamltree *t, size_t parent, size_t kid)
{
	struct yamltree_node *p = &t->nodes[parent];
	size_t *kids = grow(p->kids, p->n_kids, &p->cap_kids, sizeof(*kids), 8);
	if (!kids)
		return false;
	p->kids = kids;
	p->kids[p->n_kids++] = kid;
	return true;
}

static const struct yamltree_anchor *find_anchor(const struct yamltree *t, const char *name)
{
	/* The latest definition wins. */
	for (size_t k = t->n_anchors; k-- > 0;)
		if (!strcmp(t->anchors[k].name, name))
			return &t->anchors[k];
	return NULL;
}

/* Defines anchor name (may be NULL: none) for node. 0, ERR_INVAL (a
 * duplicate refused by YAMLTREE_UNIQUE_ANCHORS) or ERR_NOMEM. */
static int add_anchor(struct loader *l, const unsigned char *name, size_t node)
{
	struct yamltree *t = l->t;
	if (!name)
		return 0;
	const struct yamltree_anchor *prev = find_anchor(t, (const char *)name);
	if (prev && (l->flags & YAMLTREE_UNIQUE_ANCHORS)) {
		char problem[160];
		snprintf(problem, sizeof(problem), "duplicate anchor \"%.100s\" (first defined at line %d)",
			 (const char *)name, t->nodes[prev->node].line);
		set_error(l, t->nodes[node].line, problem);
		return ERR_INVAL;
	}
	struct yamltree_anchor *anchors = grow(t->anchors, t->n_anchors, &t->cap_anchors, sizeof(*anchors), 8);
	if (!anchors)
		return ERR_NOMEM;
	t->anchors = anchors;
	char *s = strdup((const char *)name);
	if (!s)
		return ERR_NOMEM;
	t->anchors[t->n_anchors++] = (struct yamltree_anchor){ s, node };
	return 0;
}

static void syntax_error(struct loader *l, const yaml_parser_t *parser)
{
	if (!l->err)
		return;
	/* The line where libyaml gave up, and where the construct it was
	 * reading began. */
	const char *problem = parser->problem ? parser->problem : "invalid YAML";
	l->err->line = map_line(l, parser->problem_mark.line);
	snprintf(l->err->problem, sizeof(l->err->problem), "%s", problem);
	if (parser->context)
		snprintf(l->err->msg, sizeof(l->err->msg), "YAML syntax error: %s (%s that began at line %d)", problem,
			 parser->context, map_line(l, parser->context_mark.line));
	else
		snprintf(l->err->msg, sizeof(l->err->msg), "YAML syntax error: %s", problem);
}

struct frame {
	size_t node;
	unsigned char *anchor; /* owned; defined when the node ends */
};

/* Makes the node of one scalar event. */
static int load_scalar(struct loader *l, const yaml_event_t *ev, size_t *idx)
{
	struct yamltree *t = l->t;
	if (!new_node(l, YAMLTREE_SCALAR, &ev->start_mark, ev->data.scalar.tag, idx))
		return ERR_NOMEM;
	struct yamltree_node *n = &t->nodes[*idx];
	n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	n->len = ev->data.scalar.length;
	n->val = malloc(ev->data.scalar.length + 1);
	if (!n->val)
		return ERR_NOMEM;
	memcpy(n->val, ev->data.scalar.value, ev->data.scalar.length);
	n->val[ev->data.scalar.length] = '\0';
	return add_anchor(l, ev->data.scalar.anchor, *idx);
}

int yamltree_load(struct yamltree *t, const char *text, size_t len, unsigned flags, yamltree_line_fn map_line_fn,
		  void *map_ctx, struct yamltree_error *err)
{
	struct loader l = { .t = t, .flags = flags, .map_line = map_line_fn, .map_ctx = map_ctx, .err = err };
	yaml_parser_t parser;
	yaml_event_t ev;
	struct frame stack[YAMLTREE_MAX_DEPTH];
	size_t depth = 0;
	int rc = 0;
	bool done = false;

	memset(t, 0, sizeof(*t));
	if (err)
		memset(err, 0, sizeof(*err));
	if (!yaml_parser_initialize(&parser))
		return ERR_NOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			if (parser.error == YAML_MEMORY_ERROR) {
				rc = ERR_NOMEM;
			} else {
				syntax_error(&l, &parser);
				rc = ERR_INVAL;
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
			rc = load_scalar(&l, &ev, &idx);
			attach = true;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			bool seq = ev.type == YAML_SEQUENCE_START_EVENT;
			if (depth == YAMLTREE_MAX_DEPTH) {
				char problem[64];
				snprintf(problem, sizeof(problem), "nesting deeper than %d levels", YAMLTREE_MAX_DEPTH);
				set_error(&l, map_line(&l, ev.start_mark.line), problem);
				rc = ERR_INVAL;
				break;
			}
			const unsigned char *tag = seq ? ev.data.sequence_start.tag : ev.data.mapping_start.tag;
			const unsigned char *anchor = seq ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
			if (!new_node(&l, seq ? YAMLTREE_SEQ : YAMLTREE_MAP, &ev.start_mark, tag, &idx)) {
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
				rc = add_anchor(&l, stack[depth].anchor, stack[depth].node);
				free(stack[depth].anchor);
				stack[depth].anchor = NULL;
			}
			break;
		case YAML_ALIAS_EVENT: {
			const char *name = (const char *)ev.data.alias.anchor;
			const struct yamltree_anchor *a = find_anchor(t, name);
			if (!a) {
				char problem[160];
				snprintf(problem, sizeof(problem), "unknown anchor \"%.100s\" referenced", name);
				set_error(&l, map_line(&l, ev.start_mark.line), problem);
				rc = ERR_INVAL;
				break;
			}
			idx = a->node;
			attach = true;
			break;
		}
		default:
			break;
		}
		if (rc == 0 && attach) {
			/* A node being attached to itself is impossible: its frame is
			 * pushed before this point, so the parent is one below. */
			size_t parent_depth = depth;
			if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT)
				parent_depth--;
			if (parent_depth == 0) {
				t->has_root = true;
				t->root = idx;
			} else if (!add_kid(t, stack[parent_depth - 1].node, idx)) {
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
	if (rc)
		yamltree_free(t);
	return rc;
}

const struct yamltree_node *yamltree_root(const struct yamltree *t)
{
	return t->has_root ? &t->nodes[t->root] : NULL;
}

const struct yamltree_node *yamltree_kid(const struct yamltree *t, const struct yamltree_node *n, size_t i)
{
	assert(i < n->n_kids);
	return &t->nodes[n->kids[i]];
}

/* ------------------------------------------------------------------ */
/* Scalar resolution, as yaml.v3 does it.                              */

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

bool yamltree_yaml11_bool(const char *s, bool *v)
{
	if (str_in(s, yaml11_true)) {
		*v = true;
		return true;
	}
	if (str_in(s, yaml11_false)) {
		*v = false;
		return true;
	}
	return false;
}

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

int yamltree_parse_int(const char *s, int64_t *v)
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
		return ERR_INVAL;
	uint64_t acc = 0;
	bool overflow = false, prev_us = false, any = false;
	/* With a prefix, "0x_1" is allowed: the prefix counts as a digit. */
	bool prefix_digit = p != s;
	for (; *p; p++) {
		if (*p == '_') {
			if (prev_us || (!any && !prefix_digit))
				return ERR_INVAL;
			prev_us = true;
			continue;
		}
		int dv = digit_value((unsigned char)*p);
		if (dv >= base)
			return ERR_INVAL;
		if (acc > (UINT64_MAX - (uint64_t)dv) / (uint64_t)base)
			overflow = true;
		else
			acc = acc * (uint64_t)base + (uint64_t)dv;
		any = true;
		prev_us = false;
	}
	if (!any || prev_us)
		return ERR_INVAL;
	if (overflow)
		return -ERANGE;
	if (neg) {
		if (acc > (uint64_t)INT64_MAX + 1)
			return -ERANGE;
		*v = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
	} else {
		if (acc > (uint64_t)INT64_MAX)
			return -ERANGE;
		*v = (int64_t)acc;
	}
	return 0;
}

static bool is_int(const char *s)
{
	int64_t x;
	return yamltree_parse_int(s, &x) != ERR_INVAL;
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

static enum yamltree_type resolve_bool_words(const char *v, bool *bval, enum yamltree_type otherwise)
{
	if (str_in(v, true_words)) {
		*bval = true;
		return YAMLTREE_BOOL;
	}
	if (str_in(v, false_words)) {
		*bval = false;
		return YAMLTREE_BOOL;
	}
	return otherwise;
}

enum yamltree_type yamltree_resolve(const struct yamltree_node *n, bool *bval)
{
	assert(n->kind == YAMLTREE_SCALAR);
	const char *v = n->val;
	if (n->tag && strcmp(n->tag, "!") != 0) {
		const char *t = n->tag;
		if (strncmp(t, TAG_PREFIX, strlen(TAG_PREFIX)) != 0)
			return YAMLTREE_BADTAG;
		t += strlen(TAG_PREFIX);
		if (!strcmp(t, "str"))
			return YAMLTREE_STR;
		if (!strcmp(t, "null"))
			return YAMLTREE_NULL;
		if (!strcmp(t, "int"))
			return is_int(v) ? YAMLTREE_INT : YAMLTREE_BADTAG;
		if (!strcmp(t, "float"))
			return YAMLTREE_FLOAT;
		if (!strcmp(t, "bool"))
			return resolve_bool_words(v, bval, YAMLTREE_BADTAG);
		return YAMLTREE_BADTAG;
	}
	if (n->tag || !n->plain)
		return YAMLTREE_STR;
	if (str_in(v, null_words))
		return YAMLTREE_NULL;
	enum yamltree_type r = resolve_bool_words(v, bval, YAMLTREE_STR);
	if (r == YAMLTREE_BOOL)
		return r;
	if (!strcmp(v, "<<"))
		return YAMLTREE_MERGE;
	if (is_int(v))
		return YAMLTREE_INT;
	if (is_yaml_float(v))
		return YAMLTREE_FLOAT;
	return YAMLTREE_STR;
}

bool yamltree_is_null(const struct yamltree_node *n)
{
	bool bv;
	return n->kind == YAMLTREE_SCALAR && yamltree_resolve(n, &bv) == YAMLTREE_NULL;
}

void yamltree_describe(struct sbuf *b, const struct yamltree_node *n)
{
	bool bv;
	if (n->kind == YAMLTREE_MAP) {
		sbuf_puts(b, "a mapping");
		return;
	}
	if (n->kind == YAMLTREE_SEQ) {
		sbuf_puts(b, "a list");
		return;
	}
	switch (yamltree_resolve(n, &bv)) {
	case YAMLTREE_NULL:
		sbuf_puts(b, "null");
		return;
	case YAMLTREE_BOOL:
		sbuf_printf(b, "the boolean %s", n->val);
		return;
	case YAMLTREE_INT:
		sbuf_printf(b, "the integer %s", n->val);
		return;
	case YAMLTREE_FLOAT:
		sbuf_printf(b, "the number %s", n->val);
		return;
	default:
		sbuf_puts(b, "the string ");
		sbuf_quote(b, n->val, n->len, 64);
		return;
	}
}

size_t yamltree_break_len(const char *s, size_t n, size_t i)
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
