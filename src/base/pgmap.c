#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/err.h"
#include "base/pgmap.h"

/* Page number 0 marks an empty slot, so a key of 0 would be lost by put
 * and would find an empty slot in get: every entry point CHECKs it. The
 * callers compute page numbers from offsets (+1) or from LTX files whose
 * decoder rejects 0, so a 0 here is a bug in the caller. */

static size_t slot_of(uint32_t pgno, size_t cap)
{
	/* Fibonacci hashing spreads consecutive page numbers. */
	return (size_t)((pgno * 2654435761u) & (uint32_t)(cap - 1));
}

void pgmap_init(struct pgmap *m)
{
	memset(m, 0, sizeof(*m));
}

void pgmap_free(struct pgmap *m)
{
	free(m->slots);
	pgmap_init(m);
}

void pgmap_clear(struct pgmap *m)
{
	if (m->cap > 4096) {
		pgmap_free(m);
		return;
	}
	if (m->slots)
		memset(m->slots, 0, m->cap * sizeof(*m->slots));
	m->count = 0;
}

struct pgmap_entry *pgmap_get(const struct pgmap *m, uint32_t pgno)
{
	CHECK(pgno != 0);
	if (m->cap == 0)
		return NULL;
	for (size_t i = slot_of(pgno, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].pgno == pgno)
			return &m->slots[i];
		if (m->slots[i].pgno == 0)
			return NULL;
	}
}

static int grow(struct pgmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct pgmap_entry *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].pgno == 0)
			continue;
		size_t j = slot_of(m->slots[i].pgno, cap);
		while (slots[j].pgno != 0)
			j = (j + 1) & (cap - 1);
		slots[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return 0;
}

int pgmap_reserve(struct pgmap *m, size_t n)
{
	while ((m->count + n) * 4 > m->cap * 3) {
		int rc = grow(m);
		if (rc)
			return rc;
	}
	return 0;
}

int pgmap_put(struct pgmap *m, uint32_t pgno, uint32_t frame, uint64_t checksum)
{
	CHECK(pgno != 0);
	struct pgmap_entry *e = pgmap_get(m, pgno);
	if (e) {
		e->frame = frame;
		e->checksum = checksum;
		return 0;
	}
	if ((m->count + 1) * 4 > m->cap * 3) {
		int rc = grow(m);
		if (rc)
			return rc;
	}
	size_t i = slot_of(pgno, m->cap);
	while (m->slots[i].pgno != 0)
		i = (i + 1) & (m->cap - 1);
	m->slots[i] = (struct pgmap_entry){ .pgno = pgno, .frame = frame, .checksum = checksum };
	m->count++;
	return 0;
}

void pgmap_del(struct pgmap *m, uint32_t pgno)
{
	CHECK(pgno != 0);
	if (m->cap == 0)
		return;
	size_t i = slot_of(pgno, m->cap);
	while (m->slots[i].pgno != pgno) {
		if (m->slots[i].pgno == 0)
			return;
		i = (i + 1) & (m->cap - 1);
	}
	/* Backward-shift deletion keeps probe chains intact without tombstones. */
	size_t j = i;
	for (;;) {
		m->slots[i].pgno = 0;
		for (;;) {
			j = (j + 1) & (m->cap - 1);
			if (m->slots[j].pgno == 0) {
				m->count--;
				return;
			}
			size_t k = slot_of(m->slots[j].pgno, m->cap);
			/* Move j back to i unless its home k lies cyclically in (i, j]. */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
				continue;
			break;
		}
		m->slots[i] = m->slots[j];
		i = j;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int pgmap_sorted_keys(const struct pgmap *m, uint32_t **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (m->count == 0)
		return 0;
	uint32_t *keys = malloc(m->count * sizeof(*keys));
	if (keys == NULL)
		return ERR_NOMEM;
	size_t k = 0;
	/* keys is sized by count, which put/del keep equal to the number of
	 * used slots. */
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].pgno) {
			CHECK_MSG(k < m->count, "count=%zu", m->count);
			keys[k++] = m->slots[i].pgno;
		}
	}
	CHECK_MSG(k == m->count, "keys=%zu count=%zu", k, m->count);
	qsort(keys, k, sizeof(*keys), cmp_u32);
	*out = keys;
	*n = k;
	return 0;
}
