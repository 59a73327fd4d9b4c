/*
 * cloud_changes.c — the changes after a position as one LTX file (why and
 * the contract: cloud_changes.h).
 *
 * Under the database's files lock (read, so that maintenance cannot delete
 * an object planned here) and the catalog lock: the caller's position is
 * looked up in the history (txs: that TXID with that checksum, else
 * ERR_CLOUD_POS_MISMATCH), and cloud_plan_cover() lists the files from
 * there to the current position (the coarsest level first, as a restore
 * plan does). The objects are opened while the lock is held; the merge
 * (compact_run(), which checks contiguity by TXID and checksum and every
 * file checksum) runs after it, from the open descriptors. One stored
 * file in plain LTX (the usual case: a primary one restore behind, the
 * restore larger than CLOUD_ZLTX_INGEST_MAX) is sent as it is stored
 * (as_stored()). The answer is checked, by its header and trailer, to
 * start at the caller's position and end at the catalog's.
 *
 * Nothing here is written to the store: a spool file is the only output,
 * so an error, or a client gone mid-answer, changes nothing.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "cloud/cloud_changes.h"
#include "cloud/cloud_object.h"
#include "cloud/cloud_plan.h"
#include "cloud/cloud_store_int.h"
#include "cloud/cloud_zltx.h"
#include "ltx/compact.h"
#include "ltx/ltxlog.h"

/* The open objects of one answer. */
struct changes_in {
	int fds[CLOUD_CHANGES_MAX_FILES];
	struct cloud_zltx_reader zr[CLOUD_CHANGES_MAX_FILES];
	struct compact_input in[CLOUD_CHANGES_MAX_FILES];
	size_t n;
};

static void changes_in_close(struct changes_in *c)
{
	for (size_t i = 0; i < c->n; i++) {
		cloud_zltx_reader_done(&c->zr[i]);
		close(c->fds[i]);
	}
	c->n = 0;
}

/* Plans the files after `from` and opens them (d->files held, read).
 * *to gets the current position. */
static int changes_open(struct cloud_store *cs, struct cdb *d, struct ltx_pos from, struct changes_in *c,
			struct cloud_pos *to)
{
	struct cat_db row;
	struct cat_tx tx;
	struct cloud_plan p = { 0 };
	int rc = store_db_row(cs, d, &row);
	if (rc < 0)
		return rc;
	*to = pos_of(&row);
	if (from.txid == 0 || from.txid >= row.txid)
		return ERR_CLOUD_POS_MISMATCH;
	cloud_catalog_lock(cs->cat);
	rc = cloud_catalog_tx_get(cs->cat, row.id, from.txid, &tx);
	if (rc == ERR_CLOUD_NOT_FOUND || (rc == 0 && tx.checksum != from.checksum))
		rc = ERR_CLOUD_POS_MISMATCH;
	if (rc == 0)
		rc = cloud_plan_cover(cs->cat, row.id, from.txid, row.txid, INT_MAX, &p);
	cloud_catalog_unlock(cs->cat);
	uint64_t bytes = 0;
	for (size_t i = 0; rc == 0 && i < p.n; i++)
		bytes += p.f[i].size;
	/* Half the database: past that a snapshot costs the node less than
	 * applying the changes (each changed page is read and written). */
	uint64_t limit = (uint64_t)row.commit * row.page_size / 2;
	if (rc == 0 && (p.n == 0 || p.n > CLOUD_CHANGES_MAX_FILES || bytes > limit))
		rc = ERR_CLOUD_TOO_LARGE;
	if (rc == 0 && p.f[0].pre != from.checksum)
		rc = ERR_CLOUD_POS_MISMATCH;
	for (size_t i = 0; rc == 0 && i < p.n; i++) {
		rc = cloud_object_open(cs->be, row.id, &p.f[i], &c->fds[c->n]);
		if (rc < 0)
			break;
		cloud_zltx_reader_init(&c->zr[c->n], c->fds[c->n]);
		c->in[c->n] = (struct compact_input){ cloud_zltx_read, &c->zr[c->n] };
		c->n++;
	}
	free(p.f);
	if (rc < 0)
		changes_in_close(c);
	return rc;
}

/* One stored file that is plain LTX (a restore of more than
 * CLOUD_ZLTX_INGEST_MAX bytes is stored as encoded): sent as it is, with
 * no decode and encode on the way. Takes c's descriptor into *out. 0, or
 * non-zero when the file must be merged (several, or the zstd form, whose
 * header a plain LTX decoder refuses). The client verifies every byte
 * (file checksum, and the post-apply checksum on its own pages). */
static int as_stored(struct changes_in *c, int *out, struct ltx_header *h, uint64_t *post)
{
	struct stat st;
	if (c->n != 1 || fstat(c->fds[0], &st) != 0 ||
	    ltxlog_read_ends(c->fds[0], 0, (uint64_t)st.st_size, h, post) != 0)
		return -1;
	*out = c->fds[0];
	cloud_zltx_reader_done(&c->zr[0]);
	c->n = 0;
	return 0;
}

int cloud_changes_fd(struct cloud_store *cs, const char *cluster, const char *db, struct ltx_pos from,
		     int *out_fd, uint64_t *size, struct cloud_pos *to)
{
	struct cdb *d;
	struct changes_in *c = calloc(1, sizeof(*c));
	memset(to, 0, sizeof(*to));
	*out_fd = -1;
	int rc = c ? store_lookup(cs, cluster, db, &d) : ERR_NOMEM;
	if (rc == 0) {
		pthread_rwlock_rdlock(&d->files);
		rc = changes_open(cs, d, from, c, to);
		pthread_rwlock_unlock(&d->files);
	}
	struct ltx_header oh;
	struct ltx_trailer ot;
	int out = -1;
	if (rc == 0 && as_stored(c, &out, &oh, &ot.post_apply_checksum) != 0) {
		out = fileio_spool_open(cs->tmp_dir);
		rc = out < 0 ? out : compact_run(c->in, c->n, true, fdio_write, &out, &oh, &ot, NULL);
	}
	if (rc == 0 && (oh.min_txid != from.txid + 1 || oh.pre_apply_checksum != from.checksum ||
			oh.max_txid != to->txid || ot.post_apply_checksum != to->checksum))
		rc = ERR_LTX_NOT_CONTIGUOUS;
	struct stat st;
	if (rc == 0 && fstat(out, &st) != 0)
		rc = -errno;
	if (rc == 0 && lseek(out, 0, SEEK_SET) < 0)
		rc = -errno;
	if (c)
		changes_in_close(c);
	free(c);
	if (rc < 0) {
		if (out >= 0)
			close(out);
		return rc;
	}
	*out_fd = out;
	*size = (uint64_t)st.st_size;
	return 0;
}
