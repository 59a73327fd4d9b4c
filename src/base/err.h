/*
 * err.h — the project's error codes.
 *
 * Fallible functions return int: 0 on success, a negative errno (-errno,
 * taken right after the failing call), or a project code ERR_* (<= -1000).
 * The two ranges cannot collide because errno values are small positive
 * numbers. err_str() describes both.
 *
 * Codes are declared once, in the X-macro table below, with their message.
 * Every LTX rejection rule has its own code so that tests (and operators)
 * can tell exactly which rule a file broke.
 */
#ifndef LITEFS_ERR_H
#define LITEFS_ERR_H

#define ERR_TABLE(X) \
	X(ERR_INVAL,            -1000, "invalid argument") \
	X(ERR_NOMEM,            -1001, "out of memory") \
	X(ERR_IO_SHORT,         -1002, "unexpected end of input") \
	X(ERR_LTX_MAGIC,        -1010, "ltx: bad magic (not an LTX file)") \
	X(ERR_LTX_FLAGS,        -1011, "ltx: unknown header flags") \
	X(ERR_LTX_PAGE_SIZE,    -1012, "ltx: page size is not a power of two in 512..65536") \
	X(ERR_LTX_MIN_TXID,     -1013, "ltx: min TXID is zero") \
	X(ERR_LTX_TXID_ORDER,   -1014, "ltx: min TXID is greater than max TXID") \
	X(ERR_LTX_PRE_CHECKSUM, -1015, "ltx: pre-apply checksum must be zero exactly for snapshots and have bit 63 set otherwise") \
	X(ERR_LTX_WAL_FIELDS,   -1016, "ltx: invalid WAL fields (negative, or salt/size without offset)") \
	X(ERR_LTX_RESERVED,     -1017, "ltx: reserved header bytes are not zero") \
	X(ERR_LTX_PGNO_ZERO,    -1018, "ltx: page number zero inside the page block") \
	X(ERR_LTX_PAGE_ORDER,   -1019, "ltx: page numbers are not strictly increasing") \
	X(ERR_LTX_PGNO_COMMIT,  -1020, "ltx: page number beyond the commit size") \
	X(ERR_LTX_LOCK_PAGE,    -1021, "ltx: the lock page is stored") \
	X(ERR_LTX_SNAPSHOT_INCOMPLETE, -1022, "ltx: snapshot does not contain every page 1..commit") \
	X(ERR_LTX_LZ4,          -1023, "ltx: corrupt LZ4 frame") \
	X(ERR_LTX_LZ4_SIZE,     -1024, "ltx: LZ4 frame ended inside a page or held bytes after the end marker") \
	X(ERR_LTX_TRUNCATED,    -1025, "ltx: file is truncated") \
	X(ERR_LTX_TRAILING,     -1026, "ltx: bytes after the trailer") \
	X(ERR_LTX_POST_CHECKSUM_FLAG, -1027, "ltx: post-apply checksum lacks bit 63 (or is not exactly the flag for commit 0)") \
	X(ERR_LTX_FILE_CHECKSUM, -1028, "ltx: file checksum mismatch") \
	X(ERR_LTX_POST_CHECKSUM, -1029, "ltx: post-apply checksum mismatch") \
	X(ERR_LTX_PRE_MISMATCH, -1030, "ltx: pre-apply checksum does not match the database") \
	X(ERR_LTX_NOT_CONTIGUOUS, -1031, "ltx: files are not contiguous") \
	X(ERR_LTX_OVERLAP,      -1032, "ltx: files overlap") \
	X(ERR_LTX_PAGE_SIZE_MISMATCH, -1033, "ltx: page size differs between files or from the database") \
	X(ERR_LTX_STATE,        -1034, "ltx: codec call out of order") \
	X(ERR_LTX_COMMIT_ZERO_PAGES, -1035, "ltx: commit is zero but pages are present") \
	X(ERR_DB_HEADER,        -1050, "not a SQLite database (bad header)") \
	X(ERR_DB_SIZE,          -1051, "database file size is not a whole number of pages") \
	X(ERR_LTXLOG_TORN,      -1080, "ltx log: record extends past the end of the segment (torn write)") \
	X(ERR_LTXLOG_MAGIC,     -1081, "ltx log: bad record header") \
	X(ERR_CONFIG,           -1100, "invalid configuration") \
	X(ERR_UNSUPPORTED,      -1101, "not supported yet") \
	X(ERR_DATA_DIR_BUSY,    -1102, "the data directory is in use by another litefs node") \
	X(ERR_FUSE_DIR_BUSY,    -1103, "another file system is already mounted there (another litefs node?)") \
	X(ERR_FUSE_DIR_NOT_DIR, -1104, "not a directory") \
	X(ERR_NEED_SNAPSHOT,    -1200, "replication: position not in the retained history (snapshot needed)") \
	X(ERR_READONLY,         -1201, "replication: this node is a replica (read-only)") \
	X(ERR_REPL_PROTOCOL,    -1202, "replication: malformed stream") \
	X(ERR_REPL_CLUSTER,     -1203, "replication: cluster ID mismatch") \
	X(ERR_REPL_AUTH,        -1204, "replication: authentication failed") \
	X(ERR_REPL_SYNC_TIMEOUT, -1205, "replication: too few replicas acknowledged the commit in time (lease.sync-timeout)") \
	X(ERR_ETCD,             -1250, "etcd: no endpoint answered") \
	X(ERR_ETCD_REPLY,       -1251, "etcd: unexpected reply") \
	X(ERR_ETCD_AUTH,        -1252, "etcd: authentication failed") \
	X(ERR_LEASE_CLUSTER,    -1253, "lease: etcd names another cluster ID") \
	X(ERR_LEASE_HANDOFF,    -1254, "lease: the handoff did not happen") \
	X(ERR_CLOUD_POS_MISMATCH, -1300, "backup: upload does not follow the stored position") \
	X(ERR_CLOUD_NOT_FOUND,  -1301, "backup: no such database") \
	X(ERR_CLOUD_WINDOW,     -1302, "backup: target is outside the restorable window") \
	X(ERR_CLOUD_NAME,       -1303, "backup: invalid database name") \
	X(ERR_CLOUD_TOO_LARGE,  -1304, "backup: upload too large") \
	X(ERR_CLOUD_PAGE_SIZE,  -1305, "backup: page size differs from the stored database") \
	X(ERR_CLOUD_EXISTS,     -1306, "backup: database already exists") \
	X(ERR_CLOUD_NOT_RESTORABLE, -1307, "backup: the TXID is inside an upload of several transactions; only its end is restorable") \
	X(ERR_CLOUD_NOT_WRITER, -1308, "backup: this instance no longer holds the writer lease (another instance took the bucket)") \
	X(ERR_CLOUD_OBJECT_CORRUPT, -1320, "backup: a stored object is corrupt (its zstd frame does not decode)")

enum err_code {
#define ERR_ENUM_(name, value, msg) name = value,
	ERR_TABLE(ERR_ENUM_)
#undef ERR_ENUM_
};

/* Describes rc: a project code, a negative errno, or 0. Never NULL; the
 * string is static (or thread-local for unknown codes). */
const char *err_str(int rc);

/* The symbolic name of a project code ("ERR_LTX_MAGIC"), or "errno" for
 * negative errnos, "OK" for 0. Static string. */
const char *err_name(int rc);

#endif
