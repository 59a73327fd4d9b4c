"""FUSE passthrough of the rollback journal (src/node/fusepass.c, docs/mount.md
"FUSE passthrough"): the kernel writes -journal without a request to the node.
Capture stays exact in every rollback journal mode, including the commits
that only zero the journal header (PERSIST, locking_mode=EXCLUSIVE), which
the node finds by reading the header; with passthrough off (or on a kernel
without it) the mount works as before."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from conftest import check_invariants, run

OFFERED = "FUSE passthrough offered by the kernel and requested"


@pytest.fixture
def node(node):
    """conftest's node with passthrough turned on (it is off by default:
    docs/mount.md, demotion); an env given by the test wins."""
    def make(name="node", env=None, **kw):
        return node(name, env={"LITEFS_FUSE_PASSTHROUGH": "1", **(env or {})}, **kw)

    make.all = node.all
    return make


def fuse_ops(n):
    text = urllib.request.urlopen(f"http://127.0.0.1:{n.port}/metrics", timeout=10).read().decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'litefs_fuse_op_count\{type="(\w+)"\} (\d+)', text)}


def fuse_writes(n):
    return fuse_ops(n)["write"]


def one_row_commits(n, name, count, pragmas=("PRAGMA journal_mode=DELETE",)):
    """A CREATE TABLE and count one-row transactions on a fresh database;
    returns the FUSE write requests of the inserts and the LTX records of
    all (counted after the close: with synchronous=OFF a commit that zeroes
    the journal header is found at the next transaction, or the close)."""
    con = n.connect(name, isolation_level=None)
    for p in pragmas:
        con.execute(p)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    w0 = fuse_writes(n)
    for i in range(count):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}",))
    w1 = fuse_writes(n)
    con.close()
    return w1 - w0, len(n.ltx_files(name))


def test_journal_writes_bypass_the_node_and_capture_stays_exact(node):
    n = node().start()
    assert OFFERED in n.log_text(), "this kernel (6.9+) offers passthrough: it must be used"
    writes, records = one_row_commits(n, "db", 40)
    # Only the database pages (1-2 per transaction) reach the node; the
    # journal's header, records and nRec (about 5 more) do not.
    assert writes <= 3 * 40, f"{writes} FUSE writes for 40 transactions"
    assert records == 41, "one LTX per transaction"
    check_invariants(n)


def test_requests_of_a_delete_mode_commit(node):
    """The request budget of a one-row DELETE/FULL commit: 2 db writes,
    the journal's lookup, create, fchown and unlink, 2 getattrs (the db
    and the new journal: without allow_other there is no
    default_permissions, whose path walks re-read the root's attributes
    after every create and unlink), 4 syncs, opendir and release."""
    n = node().start()
    con = n.connect(isolation_level=None)
    con.execute("CREATE TABLE t(v)")
    before = fuse_ops(n)
    for i in range(40):
        con.execute("INSERT INTO t VALUES (?)", (i,))
    after = fuse_ops(n)
    con.close()
    per_tx = {k: (after[k] - before.get(k, 0)) / 40 for k in after}
    assert per_tx["getattr"] <= 2.2, per_tx
    assert per_tx["write"] <= 2.2, per_tx
    assert sum(per_tx.values()) <= 15, per_tx
    check_invariants(n)


def test_passthrough_off_by_default_is_the_old_path(node):
    """Off unless asked for (an empty override leaves litefs.yml's default):
    docs/mount.md says why (a demotion with a transaction in flight)."""
    n = node(env={"LITEFS_FUSE_PASSTHROUGH": ""}).start()
    assert "FUSE passthrough off" in n.log_text()
    assert OFFERED not in n.log_text()
    writes, records = one_row_commits(n, "db", 40)
    assert writes >= 6 * 40, f"{writes} FUSE writes for 40 transactions: the journal's must be among them"
    assert records == 41
    check_invariants(n)


def test_kernel_refusal_switches_it_off(node, tmp_path):
    """A data directory on overlayfs (a container's root): the kernel
    refuses its files as backing files (ELOOP, max_stack_depth 1), the node
    logs it once and serves every journal write itself."""
    n = node()
    layers = [tmp_path / d for d in ("lower", "upper", "work")]
    for d in layers + [n.data]:
        d.mkdir(parents=True, exist_ok=True)
    r = run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={layers[0]},upperdir={layers[1]},workdir={layers[2]}", n.data, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {r.stderr.strip()}")
    try:
        n.start()
        writes, records = one_row_commits(n, "db", 20)
        assert "FUSE passthrough refused by the kernel; switched off" in n.log_text()
        assert "overlayfs" in n.log_text()
        assert writes >= 6 * 20, f"{writes} FUSE writes for 20 transactions: the journal's must be among them"
        assert records == 21
        check_invariants(n)
        n.stop()
    finally:
        run("umount", "-l", n.data, check=False)


def test_every_rollback_mode_commits_one_record_per_transaction(node):
    """Each journal mode with each locking mode and synchronous FULL and
    OFF, each on its own database of one node: PERSIST and EXCLUSIVE
    finalise the journal by zeroing its header, which passthrough hides
    from the node; found at the journal's fsync (FULL), its release, or
    the next transaction's first database write (OFF)."""
    n = node().start()
    cases = [(m, lk, s) for m in ("delete", "truncate", "persist") for lk in ("normal", "exclusive")
             for s in ("full", "off")]
    for mode, locking, sync in cases:
        name = f"{mode}-{locking}-{sync}"
        writes, records = one_row_commits(
            n, name, 12, (f"PRAGMA locking_mode={locking}", f"PRAGMA journal_mode={mode}",
                          f"PRAGMA synchronous={sync}"))
        assert records == 13, f"{name}: {records} records for 13 transactions"
    for mode, locking, sync in cases:
        check_invariants(n, f"{mode}-{locking}-{sync}")
    assert "finalised by zeroing its header" in n.log_text()


def test_rollback_and_spill_through_a_passthrough_journal(node):
    """A rolled-back transaction adds nothing; a transaction larger than the
    page cache spills pages into the database before its commit (the
    journal gets a second header the node never sees)."""
    n = node().start()
    con = n.connect(isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA cache_size=10")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    before = len(n.ltx_files())
    assert before == 1
    con.execute("BEGIN")
    con.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) "
                "INSERT INTO t(v) SELECT randomblob(3000) FROM s")
    con.execute("ROLLBACK")
    assert len(n.ltx_files()) == before, "a rollback is no transaction"
    con.execute("BEGIN")
    con.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) "
                "INSERT INTO t(v) SELECT randomblob(3000) FROM s")
    con.execute("UPDATE t SET v = randomblob(100) WHERE id % 7 = 0")
    con.execute("COMMIT")
    con.execute("DELETE FROM t WHERE id % 2 = 0")
    con.close()
    assert len(n.ltx_files()) == before + 2
    check_invariants(n)


WRITER = textwrap.dedent("""
    import sqlite3, sys
    con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    con.execute("PRAGMA journal_mode=" + sys.argv[2])
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    i = 0
    while True:
        con.execute("INSERT INTO t(v) VALUES (randomblob(2000))")
        i += 1
        print(i, flush=True)
""")


def test_kill9_mid_commit_keeps_every_acknowledged_row(node, tmp_path):
    """The node is killed while clients commit through passthrough
    journals (DELETE and PERSIST): after the restart every acknowledged
    row is there and the chain replays to the database."""
    n = node().start()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = {mode: subprocess.Popen([sys.executable, str(script), str(n.db(mode)), mode], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True) for mode in ("delete", "persist")}
    acked = {}
    time.sleep(1.5)
    n.kill9()
    for mode, p in procs.items():
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        lines = out.split()
        acked[mode] = int(lines[-1]) if lines else 0
    n.start()
    for mode in procs:
        assert acked[mode] > 0, f"{mode}: the writer committed nothing before the kill"
        got = int(run("sqlite3", n.db(mode), "SELECT count(*) FROM t").stdout)
        # The transaction in flight at the kill may have committed, unseen.
        assert got in (acked[mode], acked[mode] + 1), f"{mode}: {got} rows, {acked[mode]} acknowledged"
        check_invariants(n, mode)


def test_no_commit_is_accepted_while_the_node_is_dead(node):
    """Why the WAL and the database file are never passed through: a file
    open in passthrough mode stays writable after the node dies (measured
    with an experiment build that passed the WAL through: after kill -9,
    WAL/NORMAL commits of open connections still succeeded, into the data
    directory, with nobody capturing them; docs/mount.md "Passthrough of the
    WAL"). Connections left open across a kill -9 must get an error on
    their next commit in every mode, including a DELETE-mode connection
    whose journals were passed through; after the restart the database
    holds exactly the acknowledged rows and the chain replays to it."""
    n = node().start()
    cases = {"wal_normal": ("WAL", "NORMAL"), "wal_full": ("WAL", "FULL"), "delete": ("DELETE", "FULL")}
    cons = {}
    for name, (mode, sync) in cases.items():
        con = n.connect(name, isolation_level=None)
        con.execute(f"PRAGMA journal_mode={mode}")
        con.execute(f"PRAGMA synchronous={sync}")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        for i in range(20):
            con.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}",))
        cons[name] = con
    n.kill9()
    for name, con in cons.items():
        with pytest.raises(sqlite3.Error):
            for i in range(5):
                con.execute("INSERT INTO t(v) VALUES (?)", (f"after {i}",))
        try:
            con.close()
        except sqlite3.Error:
            pass
    n.start()
    for name in cases:
        got = int(run("sqlite3", n.db(name), "SELECT count(*) FROM t").stdout)
        assert got == 20, f"{name}: {got} rows after the restart, 20 acknowledged before the kill"
        check_invariants(n, name)



CRASHER = textwrap.dedent("""
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    con.execute("PRAGMA journal_mode=" + sys.argv[2])
    con.execute("PRAGMA cache_size=5")
    con.execute("BEGIN")
    con.execute("UPDATE t SET v = 'crash' || id")
    con.execute("INSERT INTO t(v) SELECT v FROM t")
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_journal_fd_open_across_a_restart_never_writes_a_live_journal(node, tmp_path):
    """locking_mode=EXCLUSIVE with a PERSIST or TRUNCATE journal keeps the
    journal open between transactions: passed through, its descriptor
    writes straight into the backing file, and keeps doing so after the
    node is killed (the kernel's passthrough write never asks the node).
    After the restart the old connection fails to commit, and what its
    descriptor writes must reach no journal of the new mount: not the
    journal of the new clients' commits (a hot journal with the old
    connection's before-images would be rolled back over them), nor the hot
    journal of a writer killed mid-transaction (docs/mount.md "A journal
    descriptor that outlives its node")."""
    n = node().start()
    modes = {"persist": "NORMAL", "truncate": "OFF"}  # both write a hot header before their first sync
    old, new, inode, want = {}, {}, {}, {}
    for mode, sync in modes.items():
        con = n.connect(mode, isolation_level=None)
        for p in ("locking_mode=EXCLUSIVE", f"journal_mode={mode}", f"synchronous={sync}"):
            con.execute(f"PRAGMA {p}")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        want[mode] = [(i + 1, f"old {i}" * 40) for i in range(20)]
        con.execute("BEGIN")
        con.executemany("INSERT INTO t VALUES (?, ?)", want[mode])
        con.execute("COMMIT")
        old[mode], inode[mode] = con, os.stat(n.data / "dbs" / mode / "db-journal").st_ino
    n.kill9()
    n.start()

    def commit(mode, tag, count):
        rows = [(len(want[mode]) + i + 1, f"{tag} {i}" * 40) for i in range(count)]
        new[mode].executemany("INSERT INTO t VALUES (?, ?)", rows)
        want[mode] += rows

    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    for mode in modes:
        new[mode] = n.connect(mode, isolation_level=None)
        new[mode].execute(f"PRAGMA journal_mode={mode}")
        commit(mode, "new a", 60)  # grows the database past the old connection's view
        new[mode].close()
        # A writer killed mid-transaction leaves a hot journal of the new
        # mount; then the old connection's descriptor writes its journal.
        p = subprocess.Popen([sys.executable, str(script), str(n.db(mode)), mode], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert (n.data / "dbs" / mode / "db-journal").read_bytes()[:8].hex() == "d9d505f920a163d7", "not hot"
        with pytest.raises(sqlite3.Error):
            old[mode].execute("UPDATE t SET v = 'scribble' || id")
    # What the new mount caches of a journal (its pages, and its size for
    # attr_timeout, 1 s) would hide a change made behind its back for a
    # while; a later client reads the backing file.
    time.sleep(1.2)
    for mode in modes:
        fd = os.open(n.mnt / f"{mode}-journal", os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    for mode in modes:
        # This client rolls the hot journal back, then commits.
        new[mode] = n.connect(mode, isolation_level=None)
        new[mode].execute(f"PRAGMA journal_mode={mode}")
        commit(mode, "new b", 10)
        new[mode].close()
        with pytest.raises(sqlite3.Error):
            old[mode].execute("INSERT INTO t(v) VALUES ('scribble')")
    for mode in modes:
        got = n.connect(mode).execute("SELECT id, v FROM t ORDER BY id").fetchall()
        assert got == want[mode], f"{mode}: {len(got)} rows, {len(want[mode])} committed"
        check_invariants(n, mode)
        journal = n.data / "dbs" / mode / "db-journal"
        assert not journal.exists() or journal.stat().st_ino != inode[mode], \
            f"{mode}: the journal inode the old connection holds is live again"
    assert "removed the inert journal left by the previous run" in n.log_text()
    for con in old.values():
        try:
            con.close()
        except sqlite3.Error:
            pass
