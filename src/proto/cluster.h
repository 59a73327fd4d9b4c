/*
 * cluster.h — the cluster ID: "LFSC" followed by 16 upper-case hex digits
 * (LiteFS's format), kept in <data.dir>/clusterid. The first primary
 * creates it; a replica adopts its primary's on first contact; afterwards
 * both sides refuse a peer with a different ID, so that nodes of two
 * clusters never exchange data.
 *
 * Thread safety: struct cluster has its own mutex (a leaf lock: no other
 * lock is taken while it is held), because the replication client may adopt an
 * ID while HTTP handlers read it.
 */
#ifndef LITEFS_CLUSTER_H
#define LITEFS_CLUSTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define CLUSTER_ID_LEN 20 /* "LFSC" + 16 hex digits */

struct cluster {
	pthread_mutex_t mu;        /* guards id */
	char id[CLUSTER_ID_LEN + 1]; /* "" while unknown */
	char *path;                /* owned: <data.dir>/clusterid */
};

/* True if s is exactly "LFSC" + 16 upper-case hex digits. */
bool cluster_id_valid(const char *s);
/* A new random ID into out[CLUSTER_ID_LEN + 1]. Returns 0 or -errno. */
int cluster_id_generate(char *out);

/* Reads <data_dir>/clusterid if it exists. When create is true and there
 * is none, generates one and writes it durably. Returns 0 (c->id may be ""
 * when create is false), ERR_CONFIG when the file holds something that is
 * not a cluster ID (it is left alone), ERR_NOMEM or -errno. Caller frees
 * with cluster_close(). */
int cluster_open(struct cluster *c, const char *data_dir, bool create);
void cluster_close(struct cluster *c); /* idempotent */

/* Copies the ID ("" if unknown) into buf[CLUSTER_ID_LEN + 1]. */
void cluster_get(struct cluster *c, char *buf);
/* Adopts id (a valid ID) when none is known and writes it durably.
 * Returns 0 if this node now has id, ERR_REPL_CLUSTER if it already has a
 * different one, ERR_INVAL for an invalid id, or -errno (then nothing is
 * adopted). */
int cluster_adopt(struct cluster *c, const char *id);

#endif
