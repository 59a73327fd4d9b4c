"""The write lock: `litefs run --with-write-lock DB -- CMD` on a replica
(src/node/writelock.c, docs/write-lock.md).

CMD is a real Python sqlite3 client writing through the replica's mount;
the primary's own application keeps writing meanwhile. Every transaction
CMD saw commit must be on every node exactly once, and the cluster must
take writes again after CMD, its replica or the primary is killed -9.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import LITEFS, check_invariants, wait_until

TTL_S = 5  # WRITELOCK_TTL_MS

# CMD: writes rows ('replica', 0..n-1), one transaction each, printing
# each seq once its commit returned. With a third argument k it stops
# inside transaction k (after its insert) and sleeps: a CMD killed there
# has a half transaction. It exits 3 on the first error, printing it.
WRITER = r"""
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
stall = int(sys.argv[3]) if len(sys.argv) > 3 else -1
con = sqlite3.connect(db, timeout=30, isolation_level=None)
print("pid", __import__("os").getpid(), flush=True)
try:
    for i in range(n):
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t(who, seq, pad) VALUES ('replica', ?, randomblob(300))", (i,))
        if i == stall:
            # Big enough to spill to the database file: a hot journal.
            con.execute("PRAGMA cache_size=5")
            for j in range(200):
                con.execute("INSERT INTO t(who, seq, pad) VALUES ('spill', ?, randomblob(3000))", (j,))
            print("stalled", flush=True)
            time.sleep(600)
        con.execute("COMMIT")
        print("ok", i, flush=True)
except sqlite3.Error as e:
    print("error", e, flush=True)
    sys.exit(3)
print("done", flush=True)
"""

# The primary's application: inserts ('primary', i) until the stop file
# appears, with a busy timeout (it waits while the lock is held).
APP = r"""
import os, sqlite3, sys, time
db, stop = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, timeout=30, isolation_level=None)
i = 0
while not os.path.exists(stop):
    try:
        con.execute("INSERT INTO t(who, seq, pad) VALUES ('primary', ?, randomblob(100))", (i,))
        print("ok", i, time.time(), flush=True)
        i += 1
    except sqlite3.OperationalError as e:
        print("busy", e, flush=True)
    time.sleep(0.005)
"""


def setup_cluster(cluster, tmp_path, n, journal="wal"):
    c = cluster(n)
    con = c.primary.connect(isolation_level=None)
    con.execute(f"PRAGMA journal_mode={journal}")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, seq INT, pad BLOB, UNIQUE(who, seq))")
    con.close()
    c.wait_synced()
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "app.py").write_text(APP)
    return c


def run_locked(tmp_path, replica, *args):
    """Starts `litefs run` on replica with the writer as CMD."""
    argv = [str(LITEFS), "run", "-url", replica.url(), "--with-write-lock", str(replica.db()), "--",
            sys.executable, str(tmp_path / "writer.py"), str(replica.db()), *map(str, args)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc, word, timeout=30):
    """Lines of proc's stdout until one starts with word; returns them."""
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith(word):
            return lines
    raise AssertionError(f"no {word!r} line from CMD: {lines[-5:]}; stderr: {proc.stderr.read()}")


def rows(node, who):
    con = sqlite3.connect(f"file:{node.db()}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT id, seq FROM t WHERE who = ? ORDER BY id", (who,)).fetchall()
    finally:
        con.close()


def assert_same_everywhere(c, nodes=None):
    """Every node at the primary's position, with the same rows, and whole."""
    nodes = nodes or c.nodes
    c.wait_synced(timeout=20, replicas=[n for n in nodes if n is not c.primary])
    want = rows(c.primary, "replica"), rows(c.primary, "primary")
    for n in nodes:
        assert (rows(n, "replica"), rows(n, "primary")) == want, n.name
        con = sqlite3.connect(f"file:{n.db()}?mode=ro", uri=True)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", n.name
        con.close()
    return want


def primary_write_delay(c, seq):
    """Seconds until a write on the primary succeeds (busy handler waits)."""
    t0 = time.time()
    con = c.primary.connect(timeout=30, isolation_level=None)
    con.execute("INSERT INTO t(who, seq) VALUES ('after', ?)", (seq,))
    con.close()
    return time.time() - t0


def test_write_lock_1000_from_replica_while_primary_writes(cluster, tmp_path):
    c = setup_cluster(cluster, tmp_path, 3)
    writer = c.replicas[0]
    stop = tmp_path / "stop"
    app = subprocess.Popen([sys.executable, str(tmp_path / "app.py"), str(c.primary.db()), str(stop)],
                           stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(rows(c.primary, "primary")) >= 5, msg="the primary's app writes")
        t0 = time.time()
        p = run_locked(tmp_path, writer, 1000)
        out, err = p.communicate(timeout=240)
        took = time.time() - t0
        assert p.returncode == 0, f"litefs run exited {p.returncode}: {err}\n{out[-500:]}"
        acked = [int(l.split()[1]) for l in out.splitlines() if l.startswith("ok ")]
        assert acked == list(range(1000))
        # The primary's writers resume after the lock.
        before = len(rows(c.primary, "primary"))
        wait_until(lambda: len(rows(c.primary, "primary")) >= before + 5, timeout=10,
                   msg="the primary's app to write again after the lock")
    finally:
        stop.write_text("")
        app.wait(30)
    print(f"1000 transactions from a replica under the write lock: {took:.1f} s")
    rep, prim = assert_same_everywhere(c)
    assert [s for _, s in rep] == list(range(1000)), "each of CMD's transactions exactly once"
    # The primary's writers were held back while the lock was held: CMD's
    # rows are one run of consecutive row IDs, none of the app's between.
    ids = [i for i, _ in rep]
    assert ids == list(range(ids[0], ids[0] + 1000))
    assert any(i < ids[0] for i, _ in prim) and any(i > ids[-1] for i, _ in prim)
    # The writing replica's chain is the primary's, record for record.
    assert writer.pos() == c.primary.pos()
    check_invariants(c.primary, tmp=tmp_path)


def test_write_lock_kill9_cmd_inside_a_transaction(cluster, tmp_path):
    """Rollback journal: CMD killed inside its 6th transaction leaves a hot
    journal on the replica; `litefs run` rolls it back under the lock and
    releases it. Five transactions everywhere, the sixth nowhere."""
    c = setup_cluster(cluster, tmp_path, 2, journal="delete")
    r = c.replicas[0]
    p = run_locked(tmp_path, r, 100, 5)
    lines = read_until(p, "stalled")
    # One holder per database: a second litefs run waits, then gives up.
    second = subprocess.run([str(LITEFS), "run", "-url", r.url(), "-timeout", "1s", "--with-write-lock",
                             str(r.db()), "--", "true"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "held" in second.stderr, second.stderr
    pid = int(lines[0].split()[1])
    os.kill(pid, signal.SIGKILL)
    p.wait(30)
    err = p.stderr.read()
    assert p.returncode == 128 + signal.SIGKILL, err
    assert "cannot" not in err, err
    # Released at once: the primary takes writes again well within the TTL.
    assert primary_write_delay(c, 0) < TTL_S
    rep, _ = assert_same_everywhere(c)
    assert [s for _, s in rep] == [0, 1, 2, 3, 4]
    assert rows(r, "spill") == []
    # Rolled back: no journal left that SQLite would take as hot (a
    # journal whose header SQLite never synced has a zero magic).
    j = r.mnt / "db-journal"
    assert not j.exists() or j.read_bytes()[:8] == bytes(8)


def test_write_lock_kill9_run_and_cmd(cluster, tmp_path):
    """`litefs run` and CMD both killed inside a spilled transaction: no
    one releases the lock. It expires within the TTL on the primary (its
    writers resume) and on the replica, which rolls the hot journal back
    itself, so the primary's next transactions apply there."""
    c = setup_cluster(cluster, tmp_path, 2, journal="delete")
    r = c.replicas[0]
    p = run_locked(tmp_path, r, 100, 5)
    lines = read_until(p, "stalled")
    t_kill = time.time()
    p.kill()
    os.kill(int(lines[0].split()[1]), signal.SIGKILL)
    p.wait(30)
    primary_write_delay(c, 0)
    assert time.time() - t_kill < TTL_S + 5, "the lock must expire within its TTL"
    rep, after = assert_same_everywhere(c)
    assert [s for _, s in rep] == [0, 1, 2, 3, 4] and rows(r, "spill") == []
    assert rows(r, "after") == [(rows(c.primary, "after")[0])]
    assert "rolled back what the lock holder left unfinished" in r.log_text()


def test_write_lock_kill9_writing_replica(cluster, tmp_path):
    """The replica dies under CMD: the lock expires, the primary takes
    writes within the TTL, and the restarted replica agrees with it; every
    commit CMD saw is everywhere."""
    c = setup_cluster(cluster, tmp_path, 3)
    r = c.replicas[0]
    p = run_locked(tmp_path, r, 100000)
    first = read_until(p, "ok 50")
    r.kill9()
    t_kill = time.time()
    out, _ = p.communicate(timeout=60)
    out = "\n".join(first) + "\n" + out
    acked = [int(l.split()[1]) for l in out.splitlines() if l.startswith("ok ")]
    delay = primary_write_delay(c, 1)
    assert time.time() - t_kill < TTL_S + 5, "the lock must expire within its TTL"
    print(f"primary writable {delay:.2f} s after asking ({time.time() - t_kill:.2f} s after the kill)")
    r.start()
    rep, _ = assert_same_everywhere(c)
    seqs = [s for _, s in rep]
    assert seqs == list(range(len(seqs))) and set(acked) <= set(seqs)
    # At most the one transaction in flight landed without its ack.
    assert len(seqs) - len(acked) <= 1


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_write_lock_kill9_primary(cluster, tmp_path, journal):
    """The primary dies under CMD: CMD's next commit fails with an error
    (not a silent local commit) and SQLite rolls it back on the replica;
    the restarted primary takes writes and every node agrees; every
    commit CMD saw is everywhere."""
    c = setup_cluster(cluster, tmp_path, 3, journal=journal)
    r = c.replicas[0]
    p = run_locked(tmp_path, r, 100000)
    first = read_until(p, "ok 50")
    c.primary.kill9()
    out, err = p.communicate(timeout=90)
    out = "\n".join(first) + "\n" + out
    assert p.returncode == 3, f"CMD must fail: {p.returncode} {err}"
    assert "error" in out.splitlines()[-1], out.splitlines()[-1]
    print("CMD saw:", out.splitlines()[-1])
    acked = [int(l.split()[1]) for l in out.splitlines() if l.startswith("ok ")]
    c.primary.start()
    delay = primary_write_delay(c, 2)
    assert delay < TTL_S, f"the restarted primary took {delay:.1f} s to take a write"
    rep, _ = assert_same_everywhere(c)
    seqs = [s for _, s in rep]
    assert seqs == list(range(len(seqs))) and set(acked) <= set(seqs), (seqs[-3:], acked[-3:])
    assert len(seqs) - len(acked) <= 1, (len(seqs), len(acked))


def test_write_lock_on_primary_just_runs_and_help(cluster, tmp_path):
    c = setup_cluster(cluster, tmp_path, 2)
    out = subprocess.run([str(LITEFS), "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--with-write-lock" in out.stdout
    # LiteFS's spelling, on the primary: CMD runs as any local client.
    argv = [str(LITEFS), "run", "-url", c.primary.url(), "-with-halt-lock-on", str(c.primary.db()), "--",
            sys.executable, str(tmp_path / "writer.py"), str(c.primary.db()), "3"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # Without the lock a replica stays read-only.
    con = sqlite3.connect(str(c.replicas[0].db()), timeout=1)
    try:
        con.execute("INSERT INTO t(who, seq) VALUES ('x', 1)")
        con.commit()
        raise AssertionError("a replica without the lock accepted a write")
    except sqlite3.OperationalError as e:
        assert "readonly" in str(e)
    finally:
        con.close()
    rep, _ = assert_same_everywhere(c)
    assert [s for _, s in rep] == [0, 1, 2]


def test_write_lock_fenced_on_an_old_primary(tmp_path):
    """etcd lease: the primary that granted the lock is frozen past its
    lease while a commit of the holder is on its way to it; another node
    takes over. Woken, the old primary applies nothing (fenced), CMD's
    commit fails, and every node ends with exactly CMD's acknowledged
    transactions."""
    from test_failover import Etcd, EtcdNode, primary_of, stop_nodes, wait_rows
    etcd = Etcd(tmp_path)
    etcd.start()
    nodes = []
    try:
        for name, cand in (("a", True), ("b", False), ("c", True)):
            nodes.append(EtcdNode(tmp_path, name, etcd, candidate=cand).start())
        p = primary_of(nodes)
        con = sqlite3.connect(str(p.db()), timeout=10, isolation_level=None)
        con.execute("PRAGMA journal_mode=wal")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, seq INT, pad BLOB, UNIQUE(who, seq))")
        con.close()
        wait_rows(nodes)
        (tmp_path / "writer.py").write_text(WRITER)
        holder = nodes[1]
        holder.url = lambda path="": f"http://127.0.0.1:{holder.port}{path}"
        cmd = run_locked(tmp_path, holder, 100000)
        first = read_until(cmd, "ok 20")
        p.proc.send_signal(signal.SIGSTOP)
        try:
            primary_of([n for n in nodes if n is not p and n.candidate], timeout=15)
            time.sleep(0.5)
        finally:
            p.proc.send_signal(signal.SIGCONT)
        out, err = cmd.communicate(timeout=60)
        lines = first + out.splitlines()
        assert cmd.returncode == 3 and lines[-1].startswith("error"), (cmd.returncode, lines[-3:], err)
        assert "may no longer commit" in p.log_text()
        acked = [int(l.split()[1]) for l in lines if l.startswith("ok ")]
        wait_rows(nodes, timeout=30)
        seqs = []
        for n in nodes:
            c = sqlite3.connect(f"file:{n.db()}?mode=ro", uri=True, timeout=10)
            got = [r[0] for r in c.execute("SELECT seq FROM t WHERE who = 'replica' ORDER BY id")]
            c.close()
            assert got == acked, n.name
            seqs = got
        assert seqs == list(range(len(seqs)))
    finally:
        stop_nodes(nodes)
        etcd.stop()
