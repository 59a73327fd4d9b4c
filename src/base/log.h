/*
 * log.h — one logfmt line per event on stderr:
 *   time=2026-11-26T16:09:15.123Z level=warn mod=repl msg="..." db=app.db
 *
 * LOG(level, mod, fmt, ...) checks the level before evaluating arguments.
 * The message part is printf-formatted by the caller, which is expected to
 * write key=value pairs after msg="...", e.g.
 *   LOG_WARN("fusefs", "msg=\"write refused\" db=%s txid=%016" PRIx64, name, txid);
 * Boundary modules log; pure modules never do.
 */
#ifndef LITEFS_LOG_H
#define LITEFS_LOG_H

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

extern enum log_level log_min_level;

/* Parses "debug", "info", "warn", "error"; returns 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);
void log_emit(enum log_level level, const char *mod, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define LOG(level, mod, ...) \
	do { if ((level) >= log_min_level) log_emit((level), (mod), __VA_ARGS__); } while (0)
#define LOG_DEBUG(mod, ...) LOG(LOG_LEVEL_DEBUG, mod, __VA_ARGS__)
#define LOG_INFO(mod, ...) LOG(LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define LOG_WARN(mod, ...) LOG(LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define LOG_ERROR(mod, ...) LOG(LOG_LEVEL_ERROR, mod, __VA_ARGS__)

#endif
