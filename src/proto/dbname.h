/*
 * dbname.h — the one rule for what a database name may be, shared by both
 * programs: the node applies it where a name enters (the mount, /import,
 * the replication stream) and litefs-cloud where its API takes one. A
 * name that one side accepts and the other refuses could be replicated
 * but never backed up or restored, so there is exactly one rule.
 *
 * Pure: no I/O, no logging, no allocation.
 */
#ifndef LITEFS_DBNAME_H
#define LITEFS_DBNAME_H

#include <stdbool.h>

/* The longest name in bytes (without the NUL). */
#define DBNAME_MAX 200

/* The file-name suffixes the node's mount uses for a database's other
 * files ("-journal", "-wal", "-shm", "-pos"), NULL-terminated. A name
 * ending in one of them is refused, so that "x-wal" is always the WAL of
 * "x" and never a database of its own. */
extern const char *const dbname_reserved_suffixes[];

/* 0 if name may be a database name: 1..DBNAME_MAX bytes of well-formed
 * UTF-8, no '/', no NUL or control characters (C0, DEL, C1), not "." or
 * "..", no leading '.', not ending in a reserved suffix, and not shaped
 * like SQLite's super-journal ("<db>-mjXXXXXX9XX"). Otherwise the reason,
 * as the errno the mount returns for it: -ENAMETOOLONG (over DBNAME_MAX
 * bytes), -EILSEQ (not well-formed UTF-8, or a C1 control character) or
 * -EINVAL (anything else). */
int dbname_check(const char *name);

/* dbname_check(name) == 0; false for NULL. */
bool dbname_valid(const char *name);

#endif
