/*
 * check.h — invariants that stay checked in production (as redis's
 * serverAssert): CHECK(cond) and CHECK_MSG(cond, fmt, ...).
 *
 * When to use it: for a fact the code itself establishes and later relies
 * on — a page number it produced in order, a count it maintains, a state
 * another module promises in its header — where carrying on after it
 * broke would write wrong data (a corrupt LTX file, a lost page, a TXID
 * that goes backwards). Never for input: bytes from a file or a peer,
 * arguments a caller may legitimately get wrong, a failed syscall; those
 * get an error code (base/err.h) that the caller can act on.
 *
 * On failure it writes one line at level=error, whatever the log level,
 *   level=error mod=check msg="invariant violated" at=src/ltx/compact.c:230 cond="pgno > last" pgno=3 last=5
 * (the CHECK_MSG format adds key=value pairs after cond=, like LOG lines)
 * and calls abort(), so that a core dump holds the state that broke it.
 * That line is the only thing a pure module (ltx/, pgmap) ever logs.
 *
 * Never compiled out: it does not depend on NDEBUG. Keep conditions
 * cheap (a comparison or two); the arguments of CHECK_MSG are evaluated
 * only on failure, the condition exactly once.
 */
#ifndef LITEFS_CHECK_H
#define LITEFS_CHECK_H

_Noreturn void check_fail(const char *file, int line, const char *cond) __attribute__((cold));
_Noreturn void check_failf(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((cold, format(printf, 4, 5)));

#define CHECK(cond) \
	do { \
		if (__builtin_expect(!(cond), 0)) \
			check_fail(__FILE__, __LINE__, #cond); \
	} while (0)

#define CHECK_MSG(cond, ...) \
	do { \
		if (__builtin_expect(!(cond), 0)) \
			check_failf(__FILE__, __LINE__, #cond, __VA_ARGS__); \
	} while (0)

#endif
