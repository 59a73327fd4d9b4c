#!/usr/bin/python3
"""How fast a replica applies a backlog of small transactions (BENCHMARKS.md,
"A replica's backlog"), one build against another in the same run.

Per round and build: a primary and a replica (static lease) on loopback; a
table is created and replicated; the replica is stopped; the primary
commits N single-row autocommit INSERTs (Python sqlite3); the replica is
started again with a reader connection open on its copy, and the time from
its mount to its position equalling the primary's is the catch-up. Builds
take turns (ABBA), journal modes DELETE and WAL, medians printed.

Usage: bench/apply_backlog.py OLD_LITEFS NEW_LITEFS [N] [ROUNDS]
Prints numbers; never fails on timing.
"""
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replication as R  # noqa: E402  (its Node and wait_synced)


def catch_up(binary, mode, n, base):
    """Seconds the replica (binary) takes to apply n transactions."""
    R.LITEFS = binary  # read by Node.start()
    p = R.Node(base, "p").start()
    r = R.Node(base, "r", primary_port=p.port).start()
    db = "a.db"
    c = sqlite3.connect(os.path.join(p.mnt, db), isolation_level=None)
    try:
        c.execute(f"PRAGMA journal_mode={mode}")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        R.wait_synced(p, [r], db)
        r.stop()
        for i in range(n):
            c.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}",))
        r.start()
        rd = sqlite3.connect(os.path.join(r.mnt, db))
        rd.execute("SELECT count(*) FROM t").fetchone()
        t0 = time.time()
        R.wait_synced(p, [r], db, timeout=300)
        secs = time.time() - t0
        rd.close()
        return secs
    finally:
        c.close()
        r.stop()
        p.stop()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    builds = {"old": sys.argv[1], "new": sys.argv[2]}
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for mode in ("delete", "wal"):
        secs = {k: [] for k in builds}
        for rnd in range(rounds):
            order = ["old", "new"] if rnd % 2 == 0 else ["new", "old"]
            for name in order:
                base = tempfile.mkdtemp(prefix="bench-backlog-")
                try:
                    secs[name].append(catch_up(builds[name], mode, n, base))
                finally:
                    shutil.rmtree(base, ignore_errors=True)
        for name in builds:
            med = statistics.median(secs[name])
            print(f"mode={mode} build={name} transactions={n} catch_up_s={med:.3f} "
                  f"applied_per_s={n / med:.0f} rounds={' '.join(f'{s:.3f}' for s in secs[name])}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
