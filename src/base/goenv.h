/*
 * goenv.h — environment expansion as LiteFS does it on litefs.yml
 * (ExpandEnv in cmd/litefs/config.go at v0.5.14): Go's os.Expand with
 * LiteFS's mapping function.
 *
 * os.Expand's syntax, byte for byte:
 *   $NAME      NAME is the longest run of [A-Za-z0-9_]
 *   ${NAME}    anything up to the first '}'
 *   $1, $*, $# ... one of the shell specials *#$@!?-0123456789
 *   ${}        bad syntax: eaten, expands to nothing
 *   ${ ...     without '}': the "${" is eaten, the rest is kept
 *   $ x, end$  a '$' not followed by a name is kept
 * The result is not expanded again ($A whose value is "$B" stays "$B").
 *
 * LiteFS's mapping of the name: it is trimmed of Go white space, then
 *   NAME == 'lit'   NAME != "lit"   NAME == NAME2   NAME != NAME2
 * (with optional blanks around the operator) expand to "true" or "false",
 * comparing the variable's value with the literal or with the other
 * variable's value; anything else is looked up as a variable. An unset
 * variable is "".
 *
 * The expansion can record where each run of its output came from
 * (struct goenv_map), so that a parser reading the output can point at
 * the line of the input as written.
 *
 * Pure module: no logging, no I/O; the environment is read only through
 * the goenv_getenv_fn the caller passes.
 */
#ifndef LITEFS_GOENV_H
#define LITEFS_GOENV_H

#include <stdbool.h>
#include <stddef.h>

/* Returns the value of environment variable `name`, or NULL when unset.
 * Borrowed; valid until the next call. */
typedef const char *(*goenv_getenv_fn)(const char *name, void *ctx);

/* getenv(3) behind the goenv_getenv_fn signature; ctx is ignored. */
const char *goenv_getenv_process(const char *name, void *ctx);

/* A run of output starting at out_off: copied from the input at in_off,
 * or (subst) the value substituted for the reference starting at in_off. */
struct goenv_seg {
	size_t out_off;
	size_t in_off;
	bool subst;
};

/* The runs of one expansion, in output order. Zero it before use; caller
 * frees with goenv_map_free(). */
struct goenv_map {
	struct goenv_seg *segs;
	size_t n, cap;
};

/*
 * Expands text[0..len) (which need not be NUL-terminated) with getenv_fn
 * and ctx (getenv_fn NULL means goenv_getenv_process). When map is not
 * NULL the runs of the output are appended to it.
 * On success *out is NUL-terminated and *out_len excludes the NUL; caller
 * frees *out with free(). Returns 0; -E2BIG when the output would be
 * longer than max_len bytes; ERR_NOMEM. On failure *out is NULL and
 * *out_len 0 (map may hold runs: free it either way).
 */
int goenv_expand(const char *text, size_t len, goenv_getenv_fn getenv_fn, void *ctx, size_t max_len,
		 char **out, size_t *out_len, struct goenv_map *map);

/* The input offset that byte out_off of the output came from: for a
 * substituted value, the offset of its '$'. 0 when the map is empty. */
size_t goenv_map_offset(const struct goenv_map *map, size_t out_off);

/* Frees the runs and zeroes map. NULL is a no-op. */
void goenv_map_free(struct goenv_map *map);

#endif
