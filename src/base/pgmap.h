/*
 * pgmap.h — an open-addressing hash map from page number (u32, never 0) to
 * a small value (a page checksum and a WAL frame index). Used for the set
 * of pages a rollback-journal transaction has touched and for the index of
 * committed pages in the WAL. Grows by doubling; never shrinks except by
 * pgmap_clear() when it is large. A page number of 0 is a bug in the
 * caller: every function CHECKs it (base/check.h).
 */
#ifndef LITEFS_PGMAP_H
#define LITEFS_PGMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgmap_entry {
	uint32_t pgno;     /* 0 = empty slot */
	uint32_t frame;    /* WAL frame index (1-based) or 0 */
	uint64_t checksum; /* page checksum, 0 = page absent */
};

struct pgmap {
	struct pgmap_entry *slots;
	size_t cap;   /* power of two, or 0 */
	size_t count;
};

void pgmap_init(struct pgmap *m);
void pgmap_free(struct pgmap *m);
void pgmap_clear(struct pgmap *m);
/* Returns the entry for pgno or NULL. Borrowed; valid until the next put. */
struct pgmap_entry *pgmap_get(const struct pgmap *m, uint32_t pgno);
/* Inserts or overwrites. Returns 0 or ERR_NOMEM. */
int pgmap_put(struct pgmap *m, uint32_t pgno, uint32_t frame, uint64_t checksum);
/* Makes room for n more entries, so that the next n pgmap_put() calls of
 * new pages cannot fail. 0 or ERR_NOMEM (nothing changed). */
int pgmap_reserve(struct pgmap *m, size_t n);
/* Removes pgno if present. */
void pgmap_del(struct pgmap *m, uint32_t pgno);
/* Copies the keys into a newly allocated sorted array. Caller frees with
 * free(). Returns 0 or ERR_NOMEM; *out is NULL when the map is empty. */
int pgmap_sorted_keys(const struct pgmap *m, uint32_t **out, size_t *n);

#endif
