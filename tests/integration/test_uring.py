"""FUSE over io_uring (src/node/fuseuring.c, docs/mount.md "FUSE over
io_uring"): with `fuse.uring` (here LITEFS_FUSE_URING=1) and a kernel that
offers it, requests reach the node through per-CPU rings instead of read()
and write() of /dev/fuse. The node's behaviour must not change: capture
stays exact, several databases sync at once, replication, kill -9 of the
node (also while one of its own threads waits on its own mount) and clean
stops all work as with /dev/fuse; a kernel that does not offer it leaves
the mount on /dev/fuse.

The kernel offers it only while /sys/module/fuse/parameters/enable_uring is
Y. These tests set it (root); the one that turns it off holds an exclusive
lock that the others share, since tests run in parallel."""
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import Node, check_invariants, wait_until
# The same tests as on /dev/fuse, collected again here with this module's
# node and cluster fixtures (below), which turn the rings on.
from test_mount import test_exec_override_exit_code_and_unmount  # noqa: F401
from test_mount import test_kill9_node_during_writes  # noqa: F401
from test_mount import test_python_scenario  # noqa: F401
from test_multidb import test_several_databases_sync_at_once  # noqa: F401
from test_replication import test_replica_kill9_during_apply_recovers  # noqa: F401
from test_replication import test_replica_killed_while_it_opens_its_own_mount_exits  # noqa: F401
from test_replication import test_three_nodes_writers_replicate_with_primary_checksum  # noqa: F401

PARAM = "/sys/module/fuse/parameters/enable_uring"
LOCK = "/tmp/litefs-test-enable-uring.lock"
USED = "FUSE requests come through io_uring"
NOT_OFFERED = "FUSE over io_uring not offered by the kernel"

pytestmark = pytest.mark.skipif(not os.path.exists(PARAM) or os.geteuid() != 0,
                                reason="needs Linux 6.14+ built with FUSE_IO_URING, and root")


def set_param(value):
    with open(PARAM, "w") as f:
        f.write(value)


@pytest.fixture
def uring_on():
    """Shares the lock with every test that needs the kernel to offer the
    rings, and turns the offer on."""
    with open(LOCK, "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_SH)
        set_param("Y")
        yield


@pytest.fixture
def node(node, uring_on):
    def make(name="node", env=None, **kw):
        return node(name, env={"LITEFS_FUSE_URING": "1", **(env or {})}, **kw)

    make.all = node.all
    return make


@pytest.fixture
def cluster(cluster, uring_on):
    def make(n=3, start=True, **kw):
        kw["env"] = {"LITEFS_FUSE_URING": "1", **(kw.get("env") or {})}
        return cluster(n, start, **kw)

    return make


def metrics(n):
    text = urllib.request.urlopen(f"http://127.0.0.1:{n.port}/metrics", timeout=10).read().decode()
    ops = sum(int(m.group(1)) for m in re.finditer(r'litefs_fuse_op_count\{type="\w+"\} (\d+)', text))
    ring = int(re.search(r"^litefs_fuse_uring_requests_total (\d+)", text, re.M).group(1))
    writes = int(re.search(r'litefs_fuse_op_count\{type="write"\} (\d+)', text).group(1))
    return ops, ring, writes


WRITER = """
import sqlite3, sys
path, mode, sync, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = sqlite3.connect(path, timeout=60, isolation_level=None)
con.execute(f"PRAGMA journal_mode={mode}")
con.execute(f"PRAGMA synchronous={sync}")
con.execute("CREATE TABLE IF NOT EXISTS t(i INTEGER, v BLOB)")
for i in range(n):
    con.execute("INSERT INTO t VALUES (?, randomblob(300))", (i,))
    if i % 50 == 0:
        con.execute("SELECT count(*) FROM t").fetchone()
"""


def write_everywhere(n, tmp_path, count=150):
    """One writer process per database, each in another journal mode, at
    once; returns the database names."""
    script = tmp_path / "uwriter.py"
    script.write_text(WRITER)
    specs = {"a.db": ("wal", "full"), "b.db": ("wal", "normal"), "c.db": ("delete", "full"),
             "d.db": ("truncate", "normal")}
    procs = [subprocess.Popen([sys.executable, str(script), str(n.db(name)), mode, sync, str(count)],
                              stderr=subprocess.PIPE, text=True)
             for name, (mode, sync) in specs.items()]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    return list(specs)


def test_requests_come_through_the_rings_and_capture_stays_exact(node, tmp_path):
    n = node().start()
    # The rings start once the kernel has taken the INIT reply, which may be
    # just after the mount appears.
    wait_until(lambda: USED in n.log_text(), timeout=10, msg=lambda: n.log_text())
    names = write_everywhere(n, tmp_path)
    ops, ring, _ = metrics(n)
    # Every request after the INIT exchange comes through a ring (FORGET and
    # INTERRUPT, which never do, are not counted as operations).
    assert ring >= 0.95 * ops and ops > 4 * 150, (ops, ring)
    for name in names:
        assert n.connect(name).execute("SELECT count(*) FROM t").fetchone()[0] == 150
        check_invariants(n, name, tmp_path)


def test_passthrough_and_rings_together(node, tmp_path):
    """Both features patch the INIT reply and the open replies of the
    journal carry a backing id: through a ring as through /dev/fuse."""
    n = node(env={"LITEFS_FUSE_PASSTHROUGH": "1"}).start()
    wait_until(lambda: USED in n.log_text(), timeout=10, msg=lambda: n.log_text())
    assert "FUSE passthrough offered by the kernel and requested" in n.log_text()
    con = n.connect("p.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE t(v)")
    w0 = metrics(n)[2]
    for i in range(60):
        con.execute("INSERT INTO t VALUES (?)", (i,))
    con.close()
    ops, ring, w1 = metrics(n)
    assert ring >= 0.95 * ops, (ops, ring)
    # The journal's writes bypass the node: only the database pages come.
    assert w1 - w0 <= 3 * 60, f"{w1 - w0} FUSE writes for 60 transactions"
    check_invariants(n, "p.db", tmp_path)


def test_stops_cleanly_again_and_again(node, tmp_path):
    """A clean stop joins the ring threads before the session goes; each
    one ends with exit code 0 and the data intact. (A ring's memory freed
    to malloc while the kernel could still complete into it corrupted the
    heap in about one stop in five.)"""
    n = node()
    for rnd in range(6):
        n.start()
        con = n.connect("s.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE IF NOT EXISTS t(v)")
        con.execute("INSERT INTO t VALUES (?)", (rnd,))
        con.close()
        assert n.stop() == 0, n.log_text()[-2000:]
    n.start()
    assert [r[0] for r in n.connect("s.db").execute("SELECT v FROM t ORDER BY v")] == list(range(6))
    check_invariants(n, "s.db", tmp_path)


def test_a_kernel_that_does_not_offer_it_keeps_dev_fuse(tmp_path):
    # Not this module's node fixture: that one holds the shared lock.
    n = Node(tmp_path, "node", env={"LITEFS_FUSE_URING": "1"})
    try:
        with open(LOCK, "a") as lk:
            # Exclusive: no other test of this module expects the offer now.
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                set_param("N")
                n.start()
            finally:
                set_param("Y")
        wait_until(lambda: NOT_OFFERED in n.log_text(), timeout=10, msg=lambda: n.log_text())
        assert USED not in n.log_text()
        names = write_everywhere(n, tmp_path, count=40)
        ops, ring, _ = metrics(n)
        assert ring == 0 and ops > 0
        for name in names:
            check_invariants(n, name, tmp_path)
    finally:
        n.stop()


def test_sigterm_with_a_client_inside_a_transaction(node, tmp_path):
    """A client holds a write transaction open while the node is told to
    stop: the node ends (the client's next call fails), exit code 0, and
    the half-done transaction leaves nothing behind."""
    n = node().start()
    con = n.connect("h.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(v)")
    con.execute("INSERT INTO t VALUES (1)")
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t VALUES (2)")
    t0 = time.time()
    n.proc.send_signal(signal.SIGTERM)
    code = n.proc.wait(30)
    assert code == 0 and time.time() - t0 < 25, n.log_text()[-2000:]
    n.proc = None
    n.logf.close()
    try:
        con.execute("COMMIT")
    except Exception:
        pass
    subprocess.run(["umount", "-l", str(n.mnt)], capture_output=True)
    n.start()
    assert [r[0] for r in n.connect("h.db").execute("SELECT v FROM t")] == [1]
    check_invariants(n, "h.db", tmp_path)
