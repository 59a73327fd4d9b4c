#!/usr/bin/python3
"""How fast WAL-mode commits through the mount could be with fewer FUSE round
trips per commit (BENCHMARKS.md, "Where a commit's time goes"; docs/mount.md
"Passthrough of the WAL").

Starts two mounts: the build under test ("main": LITEFS_BIN, default BUILD's
litefs) and an experiment build (LITEFS_EXP_BIN: the tree with
bench/exp-wal-passthrough.patch applied by `git apply`, built into another
BUILD directory) that passes the WAL through to the kernel with no capture
at all (never ship it: the node does not see a WAL commit, and a dead node
cannot stop one; docs/mount.md "Passthrough of the WAL"). Then, in a new random order every round, runs
`bench_mount` for INSERTS inserts of WAL/NORMAL and WAL/FULL on: a plain
directory, main, the experiment ("zero": no request per commit but the
fsync FULL makes), and the experiment with one extra FUSE round trip per
commit ("one": BENCH_RT_FILE, an fsync of the database's -pos that the node
answers at once). Prints per case the median over rounds of each round's
ratio to plain. Usage: bench/mount_bound.py [INSERTS] [ROUNDS]; BENCH_DIR
chooses the file system. Never fails on timing.
"""
import os
import random
import statistics
import sys

from mount import stop
from mount_ab import LITEFS, start
from mount_cost import bench, workdir


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    exp = os.environ["LITEFS_EXP_BIN"]
    base, plain = workdir("bench-bound-")
    nodes = []
    try:
        a, mnt_a = start(base, "main", 20296, True, os.environ.get("LITEFS_BIN", LITEFS))
        nodes.append(a)
        b, mnt_b = start(base, "exp", 20297, True, exp)
        nodes.append(b)
        rates = {}
        for _ in range(rounds):
            for case in ("WAL/NORMAL", "WAL/FULL"):
                db = "bench_" + case.replace("/", "_") + ".db"
                rt = os.path.join(mnt_b, db + "-pos")
                jobs = {"plain": (plain, None), "main": (mnt_a, None), "zero": (mnt_b, None), "one": (mnt_b, rt)}
                order = list(jobs)
                random.shuffle(order)
                got = {t: bench(jobs[t][0], case, n, jobs[t][1]) for t in order}
                for t, v in got.items():
                    rates.setdefault(case, {}).setdefault(t, []).append(v)
        print(f"{rounds} rounds of {n} inserts; median ins/s and median same-round ratio to plain")
        for case, r in rates.items():
            cols = []
            for t in ("plain", "main", "zero", "one"):
                ratio = statistics.median(x / p for x, p in zip(r[t], r["plain"]))
                cols.append(f"{t}={statistics.median(r[t]):.0f} ({ratio:.2f}x)")
            print(f"case={case} " + " ".join(cols))
    finally:
        stop(nodes, base)


if __name__ == "__main__":
    main()
