/*
 * godur.c — see godur.h.
 *
 * godur_parse_ms() follows Go's time.ParseDuration (src/time/format.go)
 * step by step, in uint64 nanoseconds with the same overflow checks, so
 * that the accepted set and the rounding of fractions are Go's: the
 * fraction is scaled as a float64, exactly as Go does, which is why
 * "1.0000000000000000000001s" is 1s and not an error.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/godur.h"

static const struct {
	const char *name;
	uint64_t ns;
} units[] = {
	{ "ns", 1ull },
	{ "us", 1000ull },
	{ "\xc2\xb5s", 1000ull }, /* U+00B5 micro sign */
	{ "\xce\xbcs", 1000ull }, /* U+03BC Greek mu */
	{ "ms", 1000000ull },
	{ "s", 1000000000ull },
	{ "m", 60ull * 1000000000ull },
	{ "h", 3600ull * 1000000000ull },
};

/* The nanoseconds of the unit s[0..n), or 0 when it is not one. */
static uint64_t unit_ns(const char *s, size_t n)
{
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strlen(units[i].name) == n && !memcmp(units[i].name, s, n))
			return units[i].ns;
	return 0;
}

int godur_parse_ms(const char *s, int64_t *ms_out)
{
	const uint64_t limit = 1ull << 63;
	uint64_t d = 0;
	bool neg = false;

	if (!s)
		return ERR_INVAL;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (!strcmp(s, "0")) {
		*ms_out = 0;
		return 0;
	}
	if (!*s)
		return ERR_INVAL;
	while (*s) {
		uint64_t v = 0, f = 0;
		double scale = 1.0;
		if (!(*s == '.' || isdigit((unsigned char)*s)))
			return ERR_INVAL;
		const char *start = s;
		while (isdigit((unsigned char)*s)) {
			if (v > (limit - 1) / 10)
				return ERR_INVAL; /* overflow */
			v = v * 10 + (uint64_t)(*s - '0');
			if (v > limit)
				return ERR_INVAL;
			s++;
		}
		bool pre = s != start, post = false;
		if (*s == '.') {
			s++;
			const char *fs = s;
			bool overflow = false;
			/* Digits past what fits are read but ignored, as in Go. */
			while (isdigit((unsigned char)*s)) {
				if (!overflow) {
					if (f > (limit - 1) / 10) {
						overflow = true;
					} else {
						uint64_t y = f * 10 + (uint64_t)(*s - '0');
						if (y > limit) {
							overflow = true;
						} else {
							f = y;
							scale *= 10;
						}
					}
				}
				s++;
			}
			post = s != fs;
		}
		if (!pre && !post)
			return ERR_INVAL;
		const char *u = s;
		while (*s && *s != '.' && !isdigit((unsigned char)*s))
			s++;
		if (s == u)
			return ERR_INVAL; /* missing unit */
		uint64_t unit = unit_ns(u, (size_t)(s - u));
		if (!unit)
			return ERR_INVAL; /* unknown unit */
		if (v > limit / unit)
			return ERR_INVAL;
		v *= unit;
		if (f > 0) {
			v += (uint64_t)((double)f * ((double)unit / scale));
			if (v > limit)
				return ERR_INVAL;
		}
		d += v;
		if (d > limit)
			return ERR_INVAL;
	}
	if (neg) {
		*ms_out = -(int64_t)(d / 1000000u);
		return 0;
	}
	if (d > limit - 1)
		return ERR_INVAL;
	*ms_out = (int64_t)(d / 1000000u);
	return 0;
}

void godur_format_ms(int64_t ms, char *buf, size_t len)
{
	if (!buf || len == 0)
		return;
	if (ms == 0) {
		snprintf(buf, len, "0s");
		return;
	}
	uint64_t u = ms < 0 ? (uint64_t)0 - (uint64_t)ms : (uint64_t)ms;
	uint64_t h = u / 3600000u, m = (u / 60000u) % 60u, s = (u / 1000u) % 60u, r = u % 1000u;
	char tmp[64];
	size_t n = 0;
	if (ms < 0)
		tmp[n++] = '-';
	if (h)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%lluh", (unsigned long long)h);
	if (m)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llum", (unsigned long long)m);
	if (s)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llus", (unsigned long long)s);
	if (r)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%llums", (unsigned long long)r);
	snprintf(buf, len, "%s", tmp);
}
