/*
 * snappipe.c — a replica's catch-up by snapshot as a pipeline (see
 * snappipe.h).
 *
 * Before, the record was received whole into a spool, then copied into a
 * scratch segment of the chain, then decoded into the new db file, then
 * the segment was fsynced: four passes one after the other, 3× cp + fsync
 * of the same bytes for 1 GB (BENCHMARKS.md, "Big databases on a node").
 * Here the receiving thread writes each piece once, into the scratch
 * segment where the record is kept (256 KiB writes, writeback started as
 * it goes), and hands it through a bounded pipe (base/bpipe) to a decoder
 * thread that writes the pages into the new db file meanwhile: receive,
 * decode and write overlap, and the apply at the end only renames.
 *
 * Nothing is visible before the apply: the scratch segment
 * (APPLY_PIPE_SEGMENT) and the decoded file (APPLY_PIPE_DB) are private
 * names, removed at the next start after a crash (db_remove_scratch()).
 * The decoder's checks are those of any snapshot (ltxmerge.h: the file
 * checksum, completeness, the post-apply checksum; the last page is
 * written only once they passed), and the apply checks the header again
 * under the database's lock. A decoder that failed, or a database that
 * got a file or a client meanwhile, leaves the apply its ordinary path:
 * it decodes the staged record itself and refuses a bad one.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/bpipe.h"
#include "base/err.h"
#include "base/fdio.h"
#include "base/fileio.h"
#include "base/lockwatch.h"
#include "base/log.h"
#include "base/sys.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"
#include "ltx/ltxmerge.h"
#include "node/apply.h"
#include "node/db.h"
#include "node/db_int.h"
#include "node/snappipe.h"
#include "node/store.h"

/* The segment's writes: large enough for few syscalls, small enough to
 * stay in the CPU cache between the copy in and the kernel's copy out. */
#define SNAPPIPE_SEG_BUF (256u << 10)
#define SNAPPIPE_KICK (16 << 20)
/* What the receiver may be ahead of the decoder. */
#define SNAPPIPE_PIPE (8u << 20)
/* The decoder's writes into the new db file (apply.c's APPLY_NEW_DB_BUF). */
#define SNAPPIPE_DB_BUF (256u << 10)

struct snappipe {
	struct db *db;             /* borrowed from the store */
	uint32_t len, got;
	int seg_fd, db_fd;         /* APPLY_PIPE_SEGMENT, APPLY_PIPE_DB (-1: not decoding) */
	struct sys_writer seg;
	uint8_t *seg_buf, *db_buf;

	bool decoding;             /* the thread runs */
	bool decoder_gone;         /* it stopped reading (its result says why) */
	pthread_t thread;
	struct bpipe pipe;
	int decode_rc;             /* the thread's, read after the join */
	struct sys_wbfile db_out;  /* the thread's: the new db file (db_fd) */
	struct apply_staged staged;
};

static void *decode_main(void *arg)
{
	struct snappipe *sp = arg;
	struct ltxmerge_input in = { bpipe_read, &sp->pipe };
	struct ltxmerge *m = NULL;
	int rc = ltxmerge_new(&m, &in, 1, NULL);
	if (rc == 0)
		rc = ltxmerge_copy(m, sys_wbfile_write, &sp->db_out, sp->db_buf, SNAPPIPE_DB_BUF);
	if (rc == 0) {
		sp->staged.header = *ltxmerge_header(m);
		sp->staged.pos = ltxmerge_pos(m);
	}
	ltxmerge_free(m);
	bpipe_close_read(&sp->pipe);
	sp->decode_rc = rc;
	return NULL;
}

static void remove_scratch(struct snappipe *sp)
{
	unlinkat(sp->db->chain.dir_fd, APPLY_PIPE_SEGMENT, 0);
	unlinkat(sp->db->dir_fd, APPLY_PIPE_DB, 0);
}

/* Stops the decoder (at the end of its input) and waits for it. */
static void join_decoder(struct snappipe *sp)
{
	if (!sp->decoding)
		return;
	bpipe_close_write(&sp->pipe);
	pthread_join(sp->thread, NULL);
	bpipe_destroy(&sp->pipe);
	sp->decoding = false;
}

static void snappipe_free(struct snappipe *sp)
{
	join_decoder(sp);
	if (sp->seg_fd >= 0)
		close(sp->seg_fd);
	if (sp->db_fd >= 0)
		close(sp->db_fd);
	remove_scratch(sp);
	free(sp->seg_buf);
	free(sp->db_buf);
	free(sp);
}

int snappipe_begin(struct store *st, const char *name, uint32_t len, struct snappipe **out)
{
	struct db *db;
	*out = NULL;
	int rc = store_create(st, name, &db);
	if (rc != 0)
		return rc;
	struct snappipe *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return ERR_NOMEM;
	sp->db = db;
	sp->len = len;
	sp->db_fd = -1;
	sp->seg_buf = malloc(SNAPPIPE_SEG_BUF);
	sp->seg_fd = openat(db->chain.dir_fd, APPLY_PIPE_SEGMENT, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			    FILEIO_FILE_MODE);
	rc = sp->seg_fd < 0 ? -errno : sp->seg_buf ? 0 : ERR_NOMEM;
	if (rc != 0) {
		snappipe_free(sp);
		return rc;
	}
	/* The record's cache is dropped as it reaches the disk: nobody reads
	 * it soon, and new cache is slow on a VM (sys_writeback). */
	sp->seg = (struct sys_writer){ .fd = sp->seg_fd, .off = LTXLOG_HDR_SIZE, .cap = SNAPPIPE_SEG_BUF,
				       .buf = sp->seg_buf };
	sp->seg.wb = (struct sys_wb){ .kick = SNAPPIPE_KICK, .keep = SYS_WB_KEEP, .kicked = LTXLOG_HDR_SIZE,
				      .dropped = LTXLOG_HDR_SIZE };

	/* Decoded on the way only into a database that has no file and no
	 * client (the apply checks again under its lock). */
	lockwatch_lock(&db->mu, "snappipe");
	bool fresh = !db->exists[DB_KIND_DB] && db->n_handles == 0;
	lockwatch_unlock(&db->mu);
	if (fresh && (sp->db_buf = malloc(SNAPPIPE_DB_BUF)) != NULL &&
	    (sp->db_fd = openat(db->dir_fd, APPLY_PIPE_DB, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
				FILEIO_FILE_MODE)) >= 0 &&
	    bpipe_init(&sp->pipe, SNAPPIPE_PIPE) == 0) {
		/* Written as apply_new_file() writes (APPLY_NEW_DB_WB: the
		 * cache of what is on disk dropped). A failed writeback fails
		 * the decoder, and the apply decodes the record itself. */
		sp->db_out = (struct sys_wbfile){ .fd = sp->db_fd, .wb = APPLY_NEW_DB_WB };
		if (pthread_create(&sp->thread, NULL, decode_main, sp) == 0)
			sp->decoding = true;
		else
			bpipe_destroy(&sp->pipe);
	}
	*out = sp;
	return 0;
}

int snappipe_write(struct snappipe *sp, const void *buf, size_t len)
{
	int rc = sys_writer_write(&sp->seg, buf, len);
	if (rc != 0)
		return rc;
	sp->got += (uint32_t)len;
	/* A decoder that stopped early failed: the apply finds out why. */
	if (sp->decoding && !sp->decoder_gone && bpipe_write(&sp->pipe, buf, len) != 0)
		sp->decoder_gone = true;
	return 0;
}

int snappipe_finish(struct snappipe *sp, uint64_t *min_txid, uint64_t *max_txid)
{
	*min_txid = *max_txid = 0;
	int rc = sys_writer_flush(&sp->seg);
	bool decoded = sp->decoding;
	join_decoder(sp);
	if (rc == 0 && sp->got != sp->len)
		rc = ERR_LTX_TRUNCATED;
	uint8_t hdr[LTX_HEADER_SIZE];
	struct ltx_header h;
	if (fdio_pread_full(sp->seg_fd, hdr, sizeof(hdr), LTXLOG_HDR_SIZE) == (int)sizeof(hdr) &&
	    ltx_header_decode(hdr, &h) == 0) {
		*min_txid = h.min_txid;
		*max_txid = h.max_txid;
	}
	if (decoded && sp->decode_rc != 0)
		LOG_DEBUG("db", "msg=\"a snapshot's decode on the way failed; the apply decodes it again\" db=%s "
				"err=\"%s\"", sp->db->name, err_str(sp->decode_rc));
	if (rc == 0) {
		sp->staged.seg_fd = sp->seg_fd;
		sp->staged.len = sp->len;
		sp->staged.new_db_fd = decoded && sp->decode_rc == 0 ? sp->db_fd : -1;
		rc = apply_snapshot_staged(sp->db, &sp->staged);
	}
	snappipe_free(sp);
	return rc;
}

void snappipe_abort(struct snappipe *sp)
{
	if (!sp)
		return;
	LOG_INFO("db", "msg=\"a snapshot cut off as it arrived was discarded\" db=%s received=%u bytes=%u", sp->db->name,
		 sp->got, sp->len);
	snappipe_free(sp);
}
