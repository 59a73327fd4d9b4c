/*
 * dbname.c — the database-name rule (see dbname.h).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/dbname.h"

const char *const dbname_reserved_suffixes[] = { "-journal", "-wal", "-shm", "-pos", NULL };

/*
 * Names travel through JSON (/info, the backup service's API), URLs and
 * the replication stream, and must come back byte for byte: a name that
 * is not valid UTF-8 is listed as "?.db" by the service and can never be
 * restored under its own name. So a name must be well-formed UTF-8
 * (shortest form, no surrogates, at most U+10FFFF) without C1 control
 * characters (U+0080..U+009F), which JSON and terminals mangle.
 */
static bool valid_utf8_text(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return false;
		i += len;
	}
	return true;
}

int dbname_check(const char *name)
{
	size_t n = strlen(name);
	if (n > DBNAME_MAX)
		return -ENAMETOOLONG;
	if (n == 0 || name[0] == '.')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '/' || c < 0x20 || c == 0x7f)
			return -EINVAL;
	}
	if (!valid_utf8_text(name, n))
		return -EILSEQ;
	for (const char *const *s = dbname_reserved_suffixes; *s; s++) {
		size_t sl = strlen(*s);
		if (n >= sl && strcmp(name + n - sl, *s) == 0)
			return -EINVAL;
	}
	/* SQLite's super-journal "<db>-mjXXXXXX9XX" (multi-database commits,
	 * SQLITE-FILES.md §2.6) is not a database; refusing it makes such a
	 * commit fail cleanly instead of creating a bogus database. */
	if (n >= 12 && memcmp(name + n - 12, "-mj", 3) == 0)
		return -EINVAL;
	return 0;
}

bool dbname_valid(const char *name)
{
	return name != NULL && dbname_check(name) == 0;
}
