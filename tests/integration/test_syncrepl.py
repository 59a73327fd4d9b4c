"""Synchronous replication (lease.sync-replicas, docs/replication.md
"Synchronous replication"): a commit returns to SQLite only once N replicas
hold it durably; a kill -9 of the primary then loses no acknowledged
transaction; the timeout either degrades to asynchronous replication or
fails the commit, and says so in the log and /metrics."""
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from conftest import wait_until

SYNC1 = {"sync-replicas": 1, "sync-timeout": "5s"}


def metrics(node):
    with urllib.request.urlopen(node.url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(litefs_sync_\w+) (\S+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def replica_max_id(node):
    """Highest id in t on a node, read through its mount (0 when none)."""
    c = sqlite3.connect(f"file:{node.db()}?mode=ro", uri=True, timeout=30)
    try:
        return c.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        c.close()


WRITER = textwrap.dedent("""
    import sqlite3, sys
    c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    c.execute("PRAGMA synchronous=FULL")
    i = int(sys.argv[2])
    while True:
        i += 1
        c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(64))", (i,))
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
""")


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_kill9_primary_loses_no_acknowledged_commit(cluster, mode):
    """N=1, two replicas: kill -9 the primary while a writer commits as
    fast as it can; every commit the writer saw return is on a replica
    (read there after the primary is gone). Many rounds, each restarting
    the primary on its own data."""
    c = cluster(3, lease=SYNC1)
    p = c.primary
    with p.connect() as db:
        db.execute(f"PRAGMA journal_mode={mode}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    c.wait_synced()
    rng = random.Random(11)
    last = 0
    rounds = 20
    for rnd in range(rounds):
        w = subprocess.Popen([sys.executable, "-c", WRITER, str(p.db()), str(last)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        # Let some commits return, then crash the primary at once.
        got = []
        want = rng.randint(3, 40)
        while len(got) < want:
            line = w.stdout.readline()
            if not line:
                break
            got.append(int(line))
        p.kill9()
        w.kill()
        rest, _ = w.communicate()
        acked = [*got, *(int(x) for x in rest.split())]
        assert acked, f"round {rnd}: the writer committed nothing:\n" + c.describe()
        top = acked[-1]
        on_replicas = max(replica_max_id(r) for r in c.replicas)
        assert on_replicas >= top, (
            f"round {rnd} ({mode}): commit {top} returned to SQLite but no replica has it "
            f"(replicas reach {on_replicas}):\n" + c.describe())
        last = top
        p.start()
        # The primary may hold one more (applied, not acknowledged): start
        # the next round's ids after it.
        last = max(last, replica_max_id(p))
        c.wait_synced(timeout=30)
    m = metrics(p)
    assert m["litefs_sync_replicas"] == 1
    assert m["litefs_sync_commit_timeouts_total"] == 0


def test_timeout_degrades_to_async_then_recovers(cluster):
    c = cluster(2, start=False, lease={"sync-replicas": 1, "sync-timeout": "300ms"})
    p, r = c.primary, c.replicas[0]
    p.start()
    with p.connect(isolation_level=None) as db:
        db.execute("PRAGMA journal_mode=wal")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")  # times out (no replica): 300 ms
        t0 = time.monotonic()
        for i in range(20):
            db.execute("INSERT INTO t(v) VALUES (1)")
        fast = time.monotonic() - t0
    m = metrics(p)
    assert m["litefs_sync_degraded"] == 1
    assert m["litefs_sync_commit_timeouts_total"] >= 1
    assert m["litefs_sync_degrade_total"] == 1, m
    assert m["litefs_sync_commit_async_total"] >= 20
    assert fast < 20 * 0.3, "degraded commits still waited for the timeout"
    assert "degrading to asynchronous replication" in p.log_text()
    assert p.log_text().count("degrading to asynchronous replication") == 1
    # A replica catches up: the next commits are synchronous again.
    r.start()
    c.wait_synced()
    with p.connect(isolation_level=None) as db:
        wait_until(lambda: (db.execute("INSERT INTO t(v) VALUES (2)"), metrics(p)["litefs_sync_degraded"] == 0)[1],
                   timeout=10, msg="synchronous replication restored")
        before = metrics(p)["litefs_sync_commit_acked_total"]
        for i in range(5):
            db.execute("INSERT INTO t(v) VALUES (3)")
    m = metrics(p)
    assert m["litefs_sync_commit_acked_total"] >= before + 5, m
    assert m["litefs_sync_acks_total"] > 0
    assert m["litefs_sync_sessions"] == 1
    assert "synchronous replication restored" in p.log_text()


def test_timeout_fails_wal_commit_and_takes_it_back(cluster):
    c = cluster(2, start=False, lease={"sync-replicas": 1, "sync-timeout": "300ms", "sync-on-timeout": "fail"})
    p, r = c.primary, c.replicas[0]
    r.start(wait=False)
    p.start()
    r.wait_mounted()
    with p.connect(isolation_level=None) as db:
        db.execute("PRAGMA journal_mode=wal")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        db.execute("INSERT INTO t(v) VALUES (1)")
    c.wait_synced()
    pos = p.pos()
    r.stop()
    with p.connect(isolation_level=None) as db:
        db.execute("PRAGMA synchronous=FULL")
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            db.execute("INSERT INTO t(v) VALUES (2)")
    with p.connect() as db:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1, "a failed commit was applied"
    assert p.pos() == pos
    m = metrics(p)
    assert m["litefs_sync_commit_failed_total"] == 1
    assert m["litefs_sync_degraded"] == 0
    assert "failing it (lease.sync-on-timeout: fail)" in p.log_text()
    # With the replica back, commits succeed and reach it.
    r.start()
    c.wait_synced()
    with p.connect(isolation_level=None) as db:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("INSERT INTO t(v) VALUES (3)")
    c.wait_synced()
    assert replica_max_id(r) == 2


def test_timeout_fail_in_rollback_mode_reports_error_but_commit_stands(cluster):
    """Documented: a rollback-journal commit cannot be taken back once its
    journal is finalised, so on_timeout=fail reports an I/O error about a
    transaction that is committed (the outcome is unknown to the client)."""
    c = cluster(1, lease={"sync-replicas": 1, "sync-timeout": "200ms", "sync-on-timeout": "fail"})
    p = c.primary
    db = p.connect(isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    db.close()
    with p.connect() as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='t'").fetchone()[0] == 1
    assert metrics(p)["litefs_sync_commit_failed_total"] >= 1


def test_sync_off_by_default(cluster):
    c = cluster(2)
    with c.primary.connect() as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    c.wait_synced()
    m = metrics(c.primary)
    assert m["litefs_sync_replicas"] == 0
    assert m["litefs_sync_commit_waits_total"] == 0
    assert m["litefs_sync_acks_total"] == 0
