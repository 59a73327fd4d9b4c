/*
 * backup.h — the node's backup client: the primary keeps the backup
 * service (litefs-cloud, or any LiteFS Cloud compatible service) in step
 * with its databases, in both directions. See the design comment at the
 * top of backup.c and docs/backup.md.
 *
 * Two threads: the client, and a watcher that keeps a long poll open on
 * the service (GET /pos?wait=) so that a restore is heard of at once. On
 * the primary the client pushes every committed transaction (a
 * backlog is compacted into one upload), records the service's high-water
 * mark with db_set_backup_hwm(), compares positions with the service at
 * least every second, and applies the service's snapshot when the service
 * is ahead or diverged (a restore happened there), keeping first the
 * transactions the restore replaces under data.dir/lost/ (lost.h). On a
 * replica it stays idle: replicas follow their primary.
 */
#ifndef LITEFS_BACKUP_H
#define LITEFS_BACKUP_H

#include <stdbool.h>

struct store;
struct config;
struct cluster;
struct backup;

#define BACKUP_BACKOFF_MIN_MS 200
#define BACKUP_BACKOFF_MAX_MS 5000
/* Positions are compared at least this often (backup.full-sync-interval
 * may make it shorter, never longer). */
#define BACKUP_POLL_MAX_MS 1000

/* True when cfg asks for a backup client (backup.type litefs-cloud). */
bool backup_configured(const struct config *cfg);

/* Starts the client for cfg->backup (type litefs-cloud, url, auth-token,
 * cluster, full-sync-interval). The store and the cluster are borrowed and
 * must outlive the client; what it needs of cfg is copied. Spool files go
 * to <data_dir>/tmp. Returns 0, ERR_CONFIG (no URL), ERR_NOMEM or -errno.
 * Caller stops it with backup_stop(). */
int backup_start(struct store *st, const struct config *cfg, const char *data_dir, struct cluster *cluster,
		 struct backup **out);

/* Waits up to timeout_ms for the first complete sync with the service
 * (positions read, every database pushed or restored as needed). Returns
 * true once it has happened (it stays true). */
bool backup_wait_synced(struct backup *b, int timeout_ms);

/* Ends any transfer, joins the thread and frees. NULL is a no-op. */
void backup_stop(struct backup *b);

#endif
