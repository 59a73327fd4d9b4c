#!/usr/bin/python3
"""Synchronous replication's commit-latency cost (BENCHMARKS.md), measured
in one run: a primary and two replicas on loopback, the primary started
with lease.sync-replicas 0 (asynchronous, the default) and 1 in turn
(rounds interleaved, each on a fresh cluster), one Python writer
committing single-row autocommit INSERTs as fast as it can for SECONDS.
Per commit: the wall time of the INSERT (what SQLite's caller waits);
reported p50/p99/max and commits/s, medians over rounds. Journal modes
WAL and DELETE, synchronous=FULL (with NORMAL a WAL commit does not wait:
docs/replication.md). The primary's /metrics give the sync counters, so
each sync-replicas 1 row also says whether every commit was acknowledged
(none timed out).

Prints numbers; never fails on timing.
Usage: bench/syncrepl.py [ROUNDS] [SECONDS]
"""
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replication import Node, wait_synced, pct  # noqa: E402


def start_cluster(base, sync):
    p = Node(base, "node1")
    if sync:
        with open(p.cfg, "a") as f:
            f.write(f"  sync-replicas: {sync}\n  sync-timeout: 5s\n")
    p.start()
    rs = [Node(base, f"node{i}", primary_port=p.port).start() for i in (2, 3)]
    return p, rs


def metrics(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(litefs_sync_\w+) (\S+)$", text, re.M)}


def run_case(mode, sync, seconds):
    base = tempfile.mkdtemp(prefix="litefs-bench-sync-")
    p, rs = start_cluster(base, sync)
    try:
        db = sqlite3.connect(os.path.join(p.mnt, "db"), isolation_level=None, timeout=30)
        db.execute(f"PRAGMA journal_mode={mode}")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        wait_synced(p, rs, "db")
        lat = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic_ns()
            db.execute("INSERT INTO t(v) VALUES (randomblob(100))")
            lat.append((time.monotonic_ns() - t0) / 1e6)
        db.close()
        m = metrics(p)
        wait_synced(p, rs, "db")
        return {"n": len(lat), "tps": len(lat) / seconds, "p50": pct(lat, 50), "p99": pct(lat, 99),
                "max": max(lat), "timeouts": m.get("litefs_sync_commit_timeouts_total", 0),
                "acked": m.get("litefs_sync_commit_acked_total", 0)}
    finally:
        for n in reversed([p, *rs]):
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


def med(rows, k):
    xs = sorted(r[k] for r in rows)
    return xs[len(xs) // 2]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5
    results = {}
    for rnd in range(rounds):
        for mode in ("wal", "delete"):
            for sync in (0, 1):
                r = run_case(mode, sync, seconds)
                results.setdefault((mode, sync), []).append(r)
                print(f"round {rnd} {mode} sync-replicas={sync}: {r['tps']:.0f} tx/s p50 {r['p50']:.2f} ms "
                      f"p99 {r['p99']:.2f} ms max {r['max']:.1f} ms timeouts {r['timeouts']:.0f} "
                      f"acked {r['acked']:.0f}/{r['n']}", flush=True)
    print(f"\nmedians over {rounds} rounds of {seconds:g} s, synchronous=FULL, 2 replicas:")
    print("| mode | sync-replicas | commits/s | p50 | p99 | max | timeouts |")
    print("|---|---|---|---|---|---|---|")
    for (mode, sync), rows in sorted(results.items()):
        print(f"| {mode.upper()} | {sync} | {med(rows, 'tps'):.0f} | {med(rows, 'p50'):.2f} ms | "
              f"{med(rows, 'p99'):.2f} ms | {med(rows, 'max'):.1f} ms | {sum(r['timeouts'] for r in rows):.0f} |")
    for mode in ("wal", "delete"):
        a, s = results[(mode, 0)], results[(mode, 1)]
        print(f"{mode.upper()}: sync-replicas 1 costs {med(s, 'p50') - med(a, 'p50'):+.2f} ms at p50, "
              f"throughput ratio {med(s, 'tps') / med(a, 'tps'):.2f}")


if __name__ == "__main__":
    main()
