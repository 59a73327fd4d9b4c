/*
 * ltxlog.h — segment files of LTX records: how the node stores the LTX file
 * of every transaction.
 *
 * A segment is named "<first TXID %016x>.ltxlog" and is a sequence of
 * records, each one complete LTX file (LTX.md) behind an 8-byte header:
 *
 *   offset  size  field
 *   0       4     magic "LTXR"
 *   4       4     length of the LTX file that follows (big-endian u32)
 *   8       len   the LTX file, byte for byte as it would be stored alone
 *
 * Records are contiguous transactions in TXID order. The node appends the
 * LTX bytes first and the record header last, so a crash leaves either a
 * whole record or zeros where the next header would be (a clean end).
 * `litefs ltx split` writes each record out as "<min>-<max>.ltx".
 *
 * Why not one file per transaction: creating a file costs this machine's
 * ext4 about 250 us (inode allocation), an append about 1 us, and one
 * fdatasync of one file covers any number of records (docs/mount.md).
 *
 * Pure module apart from pread on a caller's descriptor; no logging.
 */
#ifndef LITEFS_LTXLOG_H
#define LITEFS_LTXLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ltx/ltx.h"

#define LTXLOG_MAGIC "LTXR"
#define LTXLOG_HDR_SIZE 8
#define LTXLOG_SUFFIX ".ltxlog"
/* "<16 hex>.ltxlog" plus NUL. */
#define LTXLOG_NAME_LEN 24
/* A record longer than this is corruption (an LTX file of a 4 GiB
 * database at 64 KiB pages is still far below it once compressed). */
#define LTXLOG_MAX_RECORD 0xFFFFFFF0u

struct ltxlog_rec {
	uint64_t offset; /* of the record header in the segment */
	uint32_t len;    /* bytes of the LTX file */
};

/* Encodes a record header for an LTX file of len bytes into out[8]. */
void ltxlog_encode_hdr(uint8_t *out, uint32_t len);

/* Reads the record at offset off of a segment whose size is file_size.
 * Returns 1 with *rec set, 0 at the clean end (off == file_size, or a
 * zeroed header: an append that did not finish), or ERR_LTXLOG_TORN (a
 * record extends past the end) / ERR_LTXLOG_MAGIC (garbage), or -errno. */
int ltxlog_read_rec(int fd, uint64_t off, uint64_t file_size, struct ltxlog_rec *rec);

/* The decoded header and the post-apply checksum of the LTX file at
 * [off, off + len) of fd (a record's body, or a whole file at 0): two
 * small reads, no check of the rest. 0, ERR_LTX_TRUNCATED (too short for
 * a header and a trailer), ERR_IO_SHORT, an ltx header error or -errno. */
int ltxlog_read_ends(int fd, uint64_t off, uint64_t len, struct ltx_header *h, uint64_t *post);

/* A bounded reader (ltx_read_fn) over one record's LTX bytes. */
struct ltxlog_reader {
	int fd;
	uint64_t off, end;
};
void ltxlog_reader_init(struct ltxlog_reader *r, int fd, const struct ltxlog_rec *rec);
ssize_t ltxlog_read(void *ctx, void *buf, size_t len);

/* True if the first bytes of fd are a record header (a segment). */
bool ltxlog_is_segment(int fd);

void ltxlog_format_name(char *buf, uint64_t first_txid);
/* Parses "<16 hex>.ltxlog"; 0 or ERR_INVAL. */
int ltxlog_parse_name(const char *name, uint64_t *first_txid);

#endif
