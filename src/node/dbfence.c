/*
 * dbfence.c — a journal descriptor that outlives its node writes into no
 * live journal.
 *
 * A client's -journal may be open in FUSE passthrough mode (fusepass.c):
 * the kernel writes it straight into the backing file, without a request.
 * It keeps doing so after the node is killed and the FUSE connection is
 * aborted (measured on 6.18: the write succeeds, while every request —
 * the database's writes, the journal's fsync — fails with ENOTCONN). A
 * connection in locking_mode=EXCLUSIVE with a PERSIST or TRUNCATE journal
 * keeps its journal open between transactions, so its next transaction
 * writes a hot header and before-images into that backing inode. If the
 * restarted node served the same inode at "-journal", a new client would
 * take it for its own hot journal and roll the stale before-images back
 * over newer commits (tests/integration/test_passthrough.py reproduced a
 * malformed database).
 *
 * So every start removes the journal that crash recovery leaves: after
 * libsqlite3 has rolled back a hot journal (which deletes it), what is
 * left at the name is inert (an empty TRUNCATE journal, a PERSIST journal
 * with a zeroed header) and means no more than no journal. Unlinked, the
 * inode lives on only for the descriptors still open on it: the old
 * connection writes into an orphan, and every journal the new mount
 * serves is created after the start. A journal found hot here was written
 * after recovery looked at it, which only such a descriptor can do (or it
 * has no database, which SQLite would delete it for); its transaction
 * never reached the database (the database's writes fail while the node
 * is dead), so dropping it is right too.
 *
 * What the descriptor writes between the kill and the restart is seen by
 * recovery: the connection holds the old mount's exclusive lock, so its
 * before-images are the database as committed, which nobody can change
 * while the node is dead, and rolling them back changes nothing.
 *
 * One-way on db_int.h like dbredo.c: db.c calls here, nothing here calls
 * db.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fdio.h"
#include "base/log.h"
#include "node/db_int.h"

int db_fence_journal(struct db *db, const char *backing)
{
	uint8_t first = 0;
	struct stat st = { 0 };
	int fd = openat(db->dir_fd, backing, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (fstat(fd, &st) != 0 || fdio_pread_full(fd, &first, 1, 0) < 0)
			first = 0;
		close(fd);
	}
	if (unlinkat(db->dir_fd, backing, 0) != 0 && errno != ENOENT) {
		int err = errno;
		LOG_ERROR("db", "msg=\"cannot remove the journal left by the previous run\" db=%s err=\"%s\"", db->name,
			  strerror(err));
		return -err;
	}
	db->exists[DB_KIND_JOURNAL] = false;
	db->dir_dirty = true;
	if (first != 0)
		LOG_WARN("db", "msg=\"removed a hot journal that recovery did not roll back (written since by a "
			       "descriptor left open across the restart, or left without a database); its transaction "
			       "never reached the database\" db=%s size=%lld",
			 db->name, (long long)st.st_size);
	else
		LOG_INFO("db", "msg=\"removed the inert journal left by the previous run, so a descriptor still open "
			       "on it writes into no live journal\" db=%s size=%lld",
			 db->name, (long long)st.st_size);
	return 0;
}
