/*
 * godur.h — Go durations (time.ParseDuration, time.Duration.String) in
 * milliseconds.
 *
 * LiteFS's litefs.yml and litefs-cloud's settings write durations the way
 * Go does ("300ms", "1.5h", "1m30s"), so both read them with Go's rules,
 * to the byte: a sign, then one or more number-unit pairs, units ns, us,
 * µs (U+00B5 or U+03BC), ms, s, m, h; "0" alone needs no unit; nothing
 * else is accepted (no spaces, no exponent, no days). Go computes in int64
 * nanoseconds, so what overflows there (beyond about 2,562,047 hours) is
 * refused here too, then the result is truncated to the millisecond.
 *
 * Pure module: no logging, no I/O, no allocation.
 */
#ifndef LITEFS_GODUR_H
#define LITEFS_GODUR_H

#include <stddef.h>
#include <stdint.h>

/* Bytes godur_format_ms() needs at most, NUL included. */
#define GODUR_BUF_SIZE 32

/*
 * Parses s (NUL-terminated) into milliseconds, truncating toward zero
 * below the millisecond. Returns 0 with *ms_out set, or ERR_INVAL for bad
 * syntax, a missing or unknown unit, overflow, or s NULL (*ms_out is then
 * untouched).
 */
int godur_parse_ms(const char *s, int64_t *ms_out);

/*
 * Formats ms as a duration that godur_parse_ms() (and Go) read back to the
 * same value: "0s", "10m", "1m30s", "1s500ms", "-2s". Unlike Go's String()
 * it never writes fractions, so a value reads back exactly. Writes at most
 * len bytes, NUL included (GODUR_BUF_SIZE is always enough); buf NULL or
 * len 0 writes nothing.
 */
void godur_format_ms(int64_t ms, char *buf, size_t len);

#endif
