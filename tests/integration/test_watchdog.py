"""The lock watchdog and the forced stop (issue 16; cmd_mount.c, store.h,
lockwatch.h).

One database's writer is made to hang in fsync while its FUSE request holds
the database's mutex (LITEFS_FAULT=fsync:1:stall=...:path=..., sys.h). The
node must say so (a level=error watchdog line naming the database and the
operation, /metrics, /info marking it busy while answering promptly for
every database), keep serving the other databases, and still stop on
SIGTERM: within a bound, with the mount gone and a non-zero exit status
(not a signal). The next start recovers the stuck database (it was never
marked clean) and every acknowledged row of every database is there.
"""
import json
import re
import subprocess
import sys
import time
import urllib.request

from conftest import check_invariants, is_mounted, wait_until

STALL_MS = 60000
STALL_BOUND_MS = 2000
FORCED_EXIT = 70


def get(node, path, timeout=10):
    t0 = time.monotonic()
    body = urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}", timeout=timeout).read().decode()
    return body, time.monotonic() - t0


def rows(node, name):
    c = node.connect(name)
    try:
        return {r[0] for r in c.execute("SELECT id FROM t")}
    finally:
        c.close()


def test_stuck_fsync_is_reported_and_stop_is_forced(node):
    n = node("n1", env={
        "LITEFS_LOCK_STALL_MS": str(STALL_BOUND_MS),
        # The first fsync of stuck.db's database or journal hangs; the
        # setup below writes it with synchronous=OFF, so that fsync is the
        # one of the writer started later.
        "LITEFS_FAULT": f"fsync:1:stall={STALL_MS}:path=dbs/stuck.db/db",
    })
    n.start()

    acked = {"stuck.db": set(), "wal.db": set(), "other.db": set()}
    for name, mode in (("stuck.db", "DELETE"), ("wal.db", "WAL"), ("other.db", "DELETE")):
        c = n.connect(name, isolation_level=None)
        c.execute(f"PRAGMA journal_mode={mode}")
        if name == "stuck.db":
            c.execute("PRAGMA synchronous=OFF")
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        for i in range(1, 11):
            c.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 100))
            acked[name].add(i)
        c.close()

    # The writer that hangs: a process of its own, since it sits in the
    # kernel until the node answers (or its connection ends).
    writer = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3
c = sqlite3.connect({str(n.db("stuck.db"))!r}, isolation_level=None, timeout=60)
c.execute("PRAGMA synchronous=FULL")
c.execute("INSERT INTO t VALUES (11, 'stuck')")
print("committed", flush=True)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The watchdog names the database and the holder's operation.
        wait_until(lambda: re.search(r"level=error mod=watchdog .*db=stuck\.db op=fsync held_ms=\d+ waiters=\d+",
                                     n.log_text()), timeout=STALL_BOUND_MS / 1000 + 5, msg="watchdog error line")
        assert writer.poll() is None, "the writer should still hang"

        # /metrics and /info answer promptly for every database and mark
        # the stuck one.
        metrics, took = get(n, "/metrics")
        assert took < 2, f"/metrics took {took:.1f}s"
        assert 'litefs_db_busy{db="stuck.db"} 1' in metrics
        assert 'litefs_db_busy{db="other.db"} 0' in metrics
        held = float(re.search(r'litefs_db_lock_held_seconds\{db="stuck\.db"\} ([0-9.]+)', metrics).group(1))
        assert held >= STALL_BOUND_MS / 1000
        assert int(re.search(r"litefs_lock_stalls_total (\d+)", metrics).group(1)) >= 1
        assert 'litefs_db_txid{db="other.db"}' in metrics

        body, took = get(n, "/info")
        assert took < 2, f"/info took {took:.1f}s"
        dbs = {d["name"]: d for d in json.loads(body)["databases"]}
        assert set(dbs) == {"stuck.db", "wal.db", "other.db"}
        assert dbs["stuck.db"]["busy"] is True
        assert dbs["stuck.db"]["lockHolder"] == "fsync"
        assert dbs["stuck.db"]["lockHeldMs"] >= STALL_BOUND_MS
        for name in ("wal.db", "other.db"):
            assert dbs[name]["busy"] is False
            assert int(dbs[name]["txid"], 16) >= 11

        # The other databases keep working while one is stuck.
        for name in ("wal.db", "other.db"):
            c = n.connect(name, isolation_level=None)
            for i in range(11, 21):
                c.execute("INSERT INTO t VALUES (?, ?)", (i, "y"))
                acked[name].add(i)
            c.close()

        # A stop always stops: forced after the grace, mount gone, a
        # non-zero exit that is not a signal.
        t0 = time.monotonic()
        n.proc.send_signal(15)
        code = n.proc.wait(timeout=20)
        took = time.monotonic() - t0
        n.proc = None
        n.logf.close()
        log = n.log_text()
        assert took < 15, f"stop took {took:.1f}s"
        assert code == FORCED_EXIT, f"exit {code}:\n{log[-3000:]}"
        assert "stop did not finish in time; forcing it" in log
        assert re.search(r"level=error mod=store .*not marked clean.* db=stuck\.db op=fsync", log), log[-3000:]
        assert not is_mounted(n.mnt)
        # Only the databases whose lock could be taken were marked clean.
        assert not (n.data / "dbs" / "stuck.db" / "clean").exists()
        assert (n.data / "dbs" / "other.db" / "clean").exists()
        assert (n.data / "dbs" / "wal.db" / "clean").exists()

        # The hung writer ends with an error once the connection is gone.
        out, err = writer.communicate(timeout=10)
        assert "committed" not in out
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    # The next start recovers; every acknowledged row is there and the
    # invariants hold for every database.
    n.env.pop("LITEFS_FAULT")
    n.start()
    for name in acked:
        assert acked[name] <= rows(n, name), name
        check_invariants(n, name)
    assert n.stop() == 0


def test_healthy_stop_is_not_forced(node):
    """The guard stays quiet when nothing is stuck: a normal stop exits 0
    and marks every database clean."""
    n = node("n1", env={"LITEFS_LOCK_STALL_MS": "1000"})
    n.start()
    c = n.connect("a.db", isolation_level=None)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    c.execute("INSERT INTO t VALUES (1)")
    c.close()
    metrics, _ = get(n, "/metrics")
    assert 'litefs_db_busy{db="a.db"} 0' in metrics
    assert "litefs_lock_stalls_total 0" in metrics
    assert n.stop() == 0
    log = n.log_text()
    assert "forcing it" not in log and "mod=watchdog" not in log
    assert (n.data / "dbs" / "a.db" / "clean").exists()
