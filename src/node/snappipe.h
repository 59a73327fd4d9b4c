/*
 * snappipe.h — a snapshot record received from the primary, staged into
 * the database's chain and decoded into its new db file while it arrives
 * (a replica's catch-up by snapshot). See snappipe.c.
 */
#ifndef LITEFS_SNAPPIPE_H
#define LITEFS_SNAPPIPE_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct snappipe;

/* Starts receiving a snapshot record of len bytes for database name
 * (created in the store if new): every byte goes into a scratch segment of
 * its chain and, when the database has no file and nobody has it open (a
 * catch-up from empty), through a decoder thread into its new db file.
 * 0 with *out (finish with snappipe_finish() or snappipe_abort()), or a
 * negative code: the caller then spools the record as before. */
int snappipe_begin(struct store *st, const char *name, uint32_t len, struct snappipe **out);

/* The next len bytes of the record, in order. 0 or -errno (a write of the
 * scratch segment failed; abort then). */
int snappipe_write(struct snappipe *sp, const void *buf, size_t len);

/* Every byte arrived: waits for the decoder and applies the record
 * (apply_snapshot_staged(): every check of any snapshot apply), or
 * refuses it. Returns what the apply returns; *min_txid / *max_txid are
 * the record's (0 when unreadable), for log lines. Frees sp; what was not
 * used is removed. */
int snappipe_finish(struct snappipe *sp, uint64_t *min_txid, uint64_t *max_txid);

/* The stream broke off: the decoder is stopped, the scratch files are
 * removed, nothing changed. Frees sp; NULL is a no-op. */
void snappipe_abort(struct snappipe *sp);

#endif
