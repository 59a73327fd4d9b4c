#!/usr/bin/python3
"""The write lock's cost (BENCHMARKS.md): CMD's transactions under
`litefs run --with-write-lock` from a replica against the same CMD run on
the primary (where litefs run just runs it), measured in one run: a
primary and two replicas on loopback, one cluster per journal mode, rounds
interleaved (primary, replica, primary, replica, ...). CMD is a Python
sqlite3 client committing N single-row INSERTs (100-byte blob), one
transaction each, synchronous=FULL; it times each commit itself (the
wall time SQLite's caller waits). Reported: commits/s, p50/p99 per
commit, medians over rounds, and the ratio replica/primary.

Prints numbers; never fails on timing.
Usage: bench/write_lock.py [ROUNDS] [N]
"""
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replication import LITEFS, Node, wait_synced  # noqa: E402

WRITER = r"""
import json, sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("PRAGMA synchronous=FULL")
lat = []
t0 = time.monotonic()
for i in range(int(sys.argv[2])):
    s = time.monotonic_ns()
    con.execute("INSERT INTO t(v) VALUES (randomblob(100))")
    lat.append((time.monotonic_ns() - s) / 1e6)
total = time.monotonic() - t0
lat.sort()
print(json.dumps({"rate": len(lat) / total, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
"""


def run_cmd(node, script, n):
    db = os.path.join(node.mnt, "db")
    out = subprocess.run([LITEFS, "run", "-url", f"http://127.0.0.1:{node.port}", "--with-write-lock", db, "--",
                          sys.executable, script, db, str(n)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"litefs run failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    print(f"{'mode':<7} {'where':<8} {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for mode in ("WAL", "DELETE"):
        base = tempfile.mkdtemp(prefix="litefs-bench-wl-")
        p = Node(base, "node1").start()
        rs = [Node(base, f"node{i}", primary_port=p.port).start() for i in (2, 3)]
        try:
            script = os.path.join(base, "writer.py")
            with open(script, "w") as f:
                f.write(WRITER)
            con = sqlite3.connect(os.path.join(p.mnt, "db"), isolation_level=None)
            con.execute(f"PRAGMA journal_mode={mode}")
            con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            con.close()
            wait_synced(p, rs, "db")
            res = {"primary": [], "replica": []}
            for _ in range(rounds):
                res["primary"].append(run_cmd(p, script, n))
                wait_synced(p, rs, "db")
                res["replica"].append(run_cmd(rs[0], script, n))
                wait_synced(p, rs, "db")
            med = {}
            for where, rs_ in res.items():
                med[where] = {k: statistics.median(r[k] for r in rs_) for k in ("rate", "p50", "p99")}
                m = med[where]
                print(f"{mode:<7} {where:<8} {m['rate']:>10.0f} {m['p50']:>8.2f} {m['p99']:>8.2f}")
            print(f"{mode:<7} ratio replica/primary: {med['replica']['rate'] / med['primary']['rate']:.2f}x, "
                  f"+{med['replica']['p50'] - med['primary']['p50']:.2f} ms p50")
        finally:
            for node in reversed([p, *rs]):
                node.stop()
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
