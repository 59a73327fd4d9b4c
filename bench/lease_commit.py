#!/usr/bin/env python3
"""What the etcd lease costs a commit: one node with the static lease and
one with the etcd lease (its write deadline checked at every write, its
keep-alives running), same machine, same run; autocommit inserts on one
connection in WAL/FULL and DELETE/FULL, rounds alternating between the two
nodes. Prints commits/s and the etcd/static ratio per mode.

Usage: /usr/bin/python3 bench/lease_commit.py [ROUNDS] [INSERTS]   (default: 3 1000)
"""
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import test_failover as tf  # noqa: E402
from conftest import Node  # noqa: E402


def rate(node, name, mode, n):
    c = sqlite3.connect(str(node.mnt / name), timeout=10, isolation_level=None)
    c.execute(f"PRAGMA journal_mode={mode}")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER PRIMARY KEY, x BLOB)")
    t0 = time.perf_counter()
    for _ in range(n):
        c.execute("INSERT INTO t(x) VALUES (randomblob(100))")
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    with tempfile.TemporaryDirectory() as d:
        e = tf.Etcd(d, n=1)
        e.start()
        static = Node(d, "static").start()
        etcd = tf.EtcdNode(d, "etcd", e).start()
        try:
            tf.primary_of([etcd])
            for mode in ("wal", "delete"):
                got = {"static": [], "etcd": []}
                for r in range(rounds):
                    for name, node in (("static", static), ("etcd", etcd)) if r % 2 == 0 else \
                            (("etcd", etcd), ("static", static)):
                        got[name].append(rate(node, f"{mode}{r}.db", mode, n))
                s, t = statistics.median(got["static"]), statistics.median(got["etcd"])
                print(f"{mode.upper():6} static {s:7.0f} commits/s  etcd {t:7.0f} commits/s  "
                      f"ratio {t / s:.2f}  (rounds: static {[round(x) for x in got['static']]}, "
                      f"etcd {[round(x) for x in got['etcd']]})")
        finally:
            etcd.stop()
            static.stop()
            e.stop()


if __name__ == "__main__":
    main()
