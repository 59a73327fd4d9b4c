/*
 * check.c — the failure path of CHECK()/CHECK_MSG() (check.h): one log
 * line, then abort().
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/check.h"
#include "base/log.h"

/* Copies the stringified condition into buf with '"' turned into '\''
 * and newlines into spaces, so that cond="..." stays one logfmt value. */
static void quote_cond(char *buf, size_t size, const char *cond)
{
	size_t i = 0;

	for (; cond[i] != '\0' && i + 1 < size; i++)
		buf[i] = cond[i] == '"' ? '\'' : (cond[i] == '\n' ? ' ' : cond[i]);
	buf[i] = '\0';
}

static _Noreturn void fail(const char *file, int line, const char *cond, const char *ctx)
{
	char q[512];

	quote_cond(q, sizeof(q), cond);
	/* log_emit, not LOG_ERROR: the line is written whatever the level. */
	log_emit(LOG_LEVEL_ERROR, "check", "msg=\"invariant violated\" at=%s:%d cond=\"%s\"%s%s", file, line, q,
		 ctx[0] ? " " : "", ctx);
	abort();
}

void check_fail(const char *file, int line, const char *cond)
{
	fail(file, line, cond, "");
}

void check_failf(const char *file, int line, const char *cond, const char *fmt, ...)
{
	char ctx[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	fail(file, line, cond, ctx);
}
