/*
 * sbuf.h — a growable, always NUL-terminated string buffer for building
 * messages and expanded text.
 *
 * Out of memory is sticky: the first failed allocation sets b->oom, and
 * every later append is a no-op, so a builder appends freely and checks
 * b->oom once at the end instead of after every call. The text built so
 * far stays valid (and NUL-terminated) after an OOM.
 *
 * A zeroed struct sbuf is an empty buffer (b->p is NULL until the first
 * append). The buffer owns b->p; caller frees with sbuf_free(), or takes
 * b->p and frees it with free().
 *
 * Pure module: no logging, no I/O.
 */
#ifndef LITEFS_SBUF_H
#define LITEFS_SBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct sbuf {
	char *p;    /* the text, NUL-terminated; NULL while nothing was appended */
	size_t len; /* bytes of text, without the NUL */
	size_t cap; /* bytes allocated at p */
	bool oom;   /* an allocation failed; the text is incomplete */
};

/* Makes room for extra more bytes plus the NUL. Returns false (and sets
 * b->oom) when that cannot be allocated, or when b->oom was already set. */
bool sbuf_reserve(struct sbuf *b, size_t extra);

/* Appends s[0..n), which need not be NUL-terminated and may hold NULs.
 * sbuf_putn(b, "", 0) allocates, so that b->p is a string even when empty. */
void sbuf_putn(struct sbuf *b, const char *s, size_t n);

/* Appends a NUL-terminated string. */
void sbuf_puts(struct sbuf *b, const char *s);

/* Appends printf-formatted text. */
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/*
 * Appends s[0..n) for a message: in double quotes, with ", \ and control
 * bytes escaped (\n, \t, \r, \xNN), at most limit bytes of s and "..." when
 * it was cut. Messages quote values from files this way so that a stray
 * byte cannot break the line the message is printed on.
 */
void sbuf_quote(struct sbuf *b, const char *s, size_t n, size_t limit);

/* Frees the text and zeroes b. NULL and zeroed buffers are no-ops. */
void sbuf_free(struct sbuf *b);

#endif
