/*
 * yamltree.h — the first document of a YAML text as a tree of nodes with
 * line numbers, read with libyaml, and scalars resolved the way Go's
 * gopkg.in/yaml.v3 resolves them.
 *
 * LiteFS reads litefs.yml with yaml.v3, so a file means here what it
 * means there only if the tree keeps what yaml.v3 looks at:
 *
 *   - every node's line (1-based), for messages that point into the file;
 *   - scalars as written (bytes, length, plain or quoted, explicit tag),
 *     resolved on demand by yamltree_resolve() with yaml.v3's rules (YAML
 *     1.2 core schema: null, bool, int, float, else string; a quoted
 *     scalar is a string; an explicit !!tag wins);
 *   - mappings as their key/value nodes in file order, duplicates
 *     included, so that the caller decides what a duplicate means;
 *   - aliases as the anchored node itself (shared, not copied). An anchor
 *     is defined when its node ends, so an alias can never refer to an
 *     enclosing node and the tree has no cycles; a later anchor of the
 *     same name replaces the earlier one, as in yaml.v3, unless
 *     YAMLTREE_UNIQUE_ANCHORS asks for libyaml's own loader's rule.
 *
 * Only the first document is read; the text after it is not parsed. A
 * text with no document (empty, comments only) loads as a tree without a
 * root. Nesting deeper than YAMLTREE_MAX_DEPTH is refused before it costs
 * anything.
 *
 * Pure module: no logging, no I/O (the caller reads the file).
 */
#ifndef LITEFS_YAMLTREE_H
#define LITEFS_YAMLTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/sbuf.h"

#define YAMLTREE_MAX_DEPTH 64

enum yamltree_kind { YAMLTREE_SCALAR, YAMLTREE_SEQ, YAMLTREE_MAP };

struct yamltree_node {
	enum yamltree_kind kind;
	char *tag;     /* explicit tag as libyaml expands it ("tag:yaml.org,2002:str", "!"), or NULL */
	char *val;     /* scalars: the value, NUL-terminated (len bytes); NULL for collections */
	size_t len;
	bool plain;    /* a plain (unquoted, not block) scalar */
	int line;      /* 1-based, after the caller's line mapping */
	size_t *kids;  /* node indices; a mapping alternates key, value; use yamltree_kid() */
	size_t n_kids; /* a mapping has n_kids / 2 pairs */
	size_t cap_kids;
};

struct yamltree_anchor {
	char *name;
	size_t node;
};

/* A loaded document. Zero it or let yamltree_load() initialize it; caller
 * frees with yamltree_free(). The fields are for this module; read the
 * tree through yamltree_root() and yamltree_kid(). */
struct yamltree {
	struct yamltree_node *nodes;
	size_t n, cap;
	struct yamltree_anchor *anchors;
	size_t n_anchors, cap_anchors;
	bool has_root;
	size_t root;
};

/* Why yamltree_load() refused the text. */
struct yamltree_error {
	int line;          /* 1-based, after the caller's line mapping; 0 if unknown */
	char problem[160]; /* what is wrong: libyaml's words for a syntax error, else ours */
	char msg[320];     /* a sentence for a person: "YAML syntax error: <problem> (<context>
			    * that began at line N)", or the problem itself */
};

/* Maps a line of the text given to yamltree_load() to the line to report
 * (e.g. a line of the file before environment expansion). */
typedef int (*yamltree_line_fn)(void *ctx, int line);

/* yamltree_load() flags. */
#define YAMLTREE_UNIQUE_ANCHORS 1u /* refuse an anchor name defined twice (libyaml's loader does) */

/*
 * Loads the first document of text[0..len) (which need not be
 * NUL-terminated; libyaml detects UTF-8/UTF-16 and skips a BOM) into t,
 * which this function initializes (previous content is NOT freed).
 * map_line (NULL: identity) with map_ctx maps every line stored in the
 * tree and in err.
 * Returns 0 (t->has_root false when there is no document); ERR_INVAL when
 * the text is not YAML, nests too deep, uses an undefined alias (or,
 * with YAMLTREE_UNIQUE_ANCHORS, defines an anchor twice), with err
 * filled; ERR_NOMEM. On failure t is empty; yamltree_free() is safe
 * either way. err may be NULL.
 */
int yamltree_load(struct yamltree *t, const char *text, size_t len, unsigned flags, yamltree_line_fn map_line,
		  void *map_ctx, struct yamltree_error *err);

/* Frees everything t owns and zeroes it. NULL and zeroed trees are no-ops. */
void yamltree_free(struct yamltree *t);

/* The document's root node, or NULL when the text held no document.
 * Borrowed; valid until yamltree_free(t), like every node. */
const struct yamltree_node *yamltree_root(const struct yamltree *t);

/* Child i (< n->n_kids) of a sequence or mapping node of t. */
const struct yamltree_node *yamltree_kid(const struct yamltree *t, const struct yamltree_node *n, size_t i);

/* What a scalar means, as yaml.v3 resolves it. */
enum yamltree_type {
	YAMLTREE_NULL,   /* ~, null, Null, NULL, empty, or !!null */
	YAMLTREE_BOOL,   /* true/True/TRUE/false/False/FALSE, or !!bool with one of those */
	YAMLTREE_INT,    /* what Go's strconv.ParseInt(s, 0, 64) reads (even out of range) */
	YAMLTREE_FLOAT,  /* yaml.v3's float syntax, .inf, .nan; or !!float */
	YAMLTREE_STR,    /* anything else, any quoted scalar, !!str, or the non-specific "!" */
	YAMLTREE_MERGE,  /* the plain merge key "<<" */
	YAMLTREE_BADTAG, /* a tag yaml.v3 would refuse for this value (unknown, or !!int "x") */
};

/* Resolves scalar n (n->kind must be YAMLTREE_SCALAR); for YAMLTREE_BOOL
 * the value is stored in *bval. */
enum yamltree_type yamltree_resolve(const struct yamltree_node *n, bool *bval);

/* True when n is a scalar that resolves to null. */
bool yamltree_is_null(const struct yamltree_node *n);

/* The YAML 1.1 booleans yaml.v3 still accepts when decoding into a Go
 * bool, even quoted: y/yes/on and n/no/off in lower, Title and UPPER
 * case. True with *v set when s is one of them. */
bool yamltree_yaml11_bool(const char *s, bool *v);

/*
 * Go's strconv.ParseInt(s, 0, 64): optional sign, 0x/0o/0b prefixes, a
 * leading 0 for octal, underscores between digits. Returns 0 with *v set;
 * -ERANGE for an integer outside int64; ERR_INVAL for anything else.
 */
int yamltree_parse_int(const char *s, int64_t *v);

/* Appends a description of n for "expected X, got Y" messages: "a
 * mapping", "a list", "null", "the boolean true", "the integer 5", "the
 * number 1.5", or "the string " and the value quoted (64 bytes at most). */
void yamltree_describe(struct sbuf *b, const struct yamltree_node *n);

/* The length of the line break at s[i] (i < n), or 0 when there is none.
 * libyaml ends a line at CRLF, CR, LF, NEL (U+0085), LS (U+2028) and PS
 * (U+2029); line numbers in the tree count those. */
size_t yamltree_break_len(const char *s, size_t n, size_t i);

#endif
