/*
 * shellwords.h — split a command line into arguments the way LiteFS does
 * for its `exec` commands (github.com/mattn/go-shellwords with its
 * defaults: no environment expansion, no backtick substitution).
 *
 * Whitespace (space, tab, CR, LF) separates arguments; '...' quotes
 * literally; "..." quotes with backslash escapes; an unquoted backslash
 * escapes the next byte. Nothing else is special: `$B` and backticks are
 * kept as written.
 *
 * One deliberate difference: go-shellwords stops parsing at an unquoted
 * ; & | < >. No shell runs the command, so such an operator could only be
 * a mistake; it is refused with a message that says to quote it or to
 * write `sh -c '...'`. shellwords_operators() lists them for the longer
 * message of config_validate() (node/config.c).
 *
 * Pure module: no logging, no I/O.
 */
#ifndef LITEFS_SHELLWORDS_H
#define LITEFS_SHELLWORDS_H

#include <stddef.h>

/*
 * Splits cmd (NUL-terminated) into arguments. On success *argv_out is a
 * NULL-terminated array of *argc_out strings (an empty array, not NULL,
 * when cmd holds no argument); caller frees with shellwords_free().
 * Returns 0; ERR_INVAL for an unterminated quote, a trailing lone
 * backslash or an unquoted shell operator, with the reason in errbuf;
 * ERR_NOMEM ("out of memory" in errbuf). On failure *argv_out is NULL and
 * *argc_out 0. errbuf may be NULL when errlen is 0.
 */
int shellwords_split(const char *cmd, char ***argv_out, size_t *argc_out, char *errbuf, size_t errlen);

/* An unquoted shell operator: cmd[off..off+len), len 2 for &&, ||, ;;,
 * >>, <<, >&, <&, &>, |&, else 1. */
struct shellwords_op {
	size_t off;
	size_t len;
};

/*
 * Finds every unquoted shell operator in cmd, for a message that explains
 * what to write instead. Fills ops[0..min(*n_ops, max_ops)) in order and
 * sets *n_ops to how many there are. Returns 0; ERR_INVAL for an
 * unterminated quote or a trailing lone backslash (the operators before
 * it are still reported); ERR_NOMEM.
 */
int shellwords_operators(const char *cmd, struct shellwords_op *ops, size_t max_ops, size_t *n_ops);

/* Frees an array from shellwords_split() and its strings. NULL is a no-op. */
void shellwords_free(char **argv);

#endif
