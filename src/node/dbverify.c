/*
 * dbverify.c — what runs over a whole database outside the commit path:
 * retention of LTX segments behind the backup service's high-water mark,
 * the background verification that the database matches its LTX position
 * (a replica that fails resyncs, a primary refuses writes), and the full
 * checksum. Split from db.c, which owns the state (db_int.h).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/err.h"
#include "base/lockwatch.h"
#include "base/log.h"
#include "ltx/ltx.h"
#include "node/chain.h"
#include "node/db.h"
#include "node/db_int.h"
#include "node/node.h"

void db_set_backup_hwm(struct db *db, uint64_t hwm)
{
	lockwatch_lock(&db->mu, "backup");
	db->backup_hwm = hwm;
	lockwatch_unlock(&db->mu);
}

int db_enforce_retention(struct db *db, int64_t now, int64_t retention_ms)
{
	lockwatch_lock(&db->mu, "retention");
	int rc = chain_enforce_retention(&db->chain, now, retention_ms, db->backup_hwm);
	if (rc > 0) {
		db->dir_dirty = true;
		LOG_DEBUG("db", "msg=\"retention removed LTX segments\" db=%s count=%d", db->name, rc);
	}
	lockwatch_unlock(&db->mu);
	return rc < 0 ? rc : 0;
}

int db_verify_step(struct db *db, uint32_t max_pages)
{
	int rc = 0;
	bool primary = node_is_primary(db->node);
	lockwatch_lock(&db->mu, "verify");
	if (!db->verify.active) {
		lockwatch_unlock(&db->mu);
		return 0;
	}
	uint8_t *buf = db->page_size ? malloc(db->page_size) : NULL;
	if (db->page_size && buf == NULL) {
		lockwatch_unlock(&db->mu);
		return ERR_NOMEM;
	}
	for (uint32_t i = 0; i < max_pages && db->verify.cursor <= db->n_pages; i++) {
		uint64_t pc;
		if ((rc = db_logical_page_checksum(db, db->verify.cursor, buf, &pc)) != 0)
			break;
		db->verify.partial ^= pc;
		db->verify.cursor++;
	}
	if (rc == 0 && db->verify.cursor > db->n_pages) {
		uint64_t got = LTX_CHECKSUM_FLAG | db->verify.partial;
		uint64_t want = db->pos.txid == 0 ? LTX_CHECKSUM_FLAG : db->pos.checksum;
		db->verify.active = false;
		if (got != want && !primary) {
			/* A replica heals: a checksum no chain has makes the
			 * primary answer its next connection with a snapshot. */
			LOG_ERROR("db", "msg=\"verification failed: database does not match its LTX position; "
					"resynchronising it from the primary\" db=%s txid=%016" PRIx64 " want=%016" PRIx64
					" got=%016" PRIx64, db->name, db->pos.txid, want, got);
			db->pos.checksum = got;
			node_request_resync(db->node);
			rc = ERR_LTX_POST_CHECKSUM;
		} else if (got != want) {
			db->write_refused = true;
			LOG_ERROR("db", "msg=\"verification failed: database does not match its LTX position; writes refused "
					"until it is repaired\" db=%s txid=%016" PRIx64 " want=%016" PRIx64 " got=%016" PRIx64,
				  db->name, db->pos.txid, want, got);
			rc = ERR_LTX_POST_CHECKSUM;
		} else {
			LOG_INFO("db", "msg=\"verified\" db=%s txid=%016" PRIx64 " checksum=%016" PRIx64, db->name,
				 db->pos.txid, got);
		}
	} else if (rc == 0) {
		rc = 1;
	}
	lockwatch_unlock(&db->mu);
	free(buf);
	return rc;
}

int db_compute_checksum(struct db *db, uint64_t *out)
{
	lockwatch_lock(&db->mu, "checksum");
	int rc = db_compute_checksum_locked(db, out);
	lockwatch_unlock(&db->mu);
	return rc;
}
