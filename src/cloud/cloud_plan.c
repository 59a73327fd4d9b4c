/*
 * cloud_plan.c — restore plans over the catalog (see cloud_plan.h).
 */
#include <limits.h>

#include "base/err.h"
#include "cloud/cloud_plan.h"

int cloud_plan_add(struct cloud_plan *p, const struct cat_file *f)
{
	if (cloud_catalog_grow((void **)&p->f, p->n, &p->cap, sizeof(*p->f)) < 0)
		return ERR_NOMEM;
	p->f[p->n++] = *f;
	return 0;
}

int cloud_plan_cover(struct cloud_catalog *cat, int64_t db_id, uint64_t from, uint64_t to, int max_level,
		     struct cloud_plan *p)
{
	while (from < to) {
		struct cat_file f;
		int rc = cloud_catalog_file_next(cat, db_id, from + 1, to, max_level, &f);
		if (rc == ERR_CLOUD_NOT_FOUND)
			return ERR_CLOUD_WINDOW;
		if (rc == 0)
			rc = cloud_plan_add(p, &f);
		if (rc < 0)
			return rc;
		from = f.max_txid;
	}
	return 0;
}

int cloud_plan_restore(struct cloud_catalog *cat, int64_t db_id, uint64_t txid, struct cloud_plan *p)
{
	struct cat_file base;
	int rc = cloud_catalog_file_base(cat, db_id, txid, &base);
	if (rc == ERR_CLOUD_NOT_FOUND)
		return ERR_CLOUD_WINDOW;
	if (rc == 0)
		rc = cloud_plan_add(p, &base);
	if (rc == 0)
		rc = cloud_plan_cover(cat, db_id, base.max_txid, txid, INT_MAX, p);
	return rc;
}
