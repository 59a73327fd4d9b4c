#!/usr/bin/env python3
"""Large-transaction ingest, builds side by side (issue 15, item 3).

The same chain as `bench/cloud.py --only 6` (bench/ltx_chain: a snapshot,
then transactions of PAGES pages of 4 KiB in runs of 1..2*RUN-1), POSTed
back to back on one keep-alive connection to the litefs-cloud of each
build given, and the disk baseline (the same bytes, one file each,
written and fsync'd), taking turns in every round so that the load of a
shared machine hits all of them alike (the builds' order rotates every
round). Per round and build: wall MB/s of LTX, MB of LTX per service
CPU-second (/proc), and 1-page transactions per second on one stream;
over all rounds, the rate of single uploads (median, 90th percentile,
best: the least disturbed uploads). Prints medians and the load average.

Usage: bench/cloud_ingest_ab.py [--rounds N] [--run 16] BUILD_DIR...
(the first build's bench/ltx_chain makes the chain). With PERF_DIR set,
`perf record -g` of each service during its large uploads is written there
(cloud<i>-<round>.data, i: the build's place on the command line).
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud as cb  # noqa: E402


def run_build(cloud, files, small, r):
    conn = cloud.conn()
    db = f"large{r}.db"
    cb.post_file(conn, cloud.token, db, files[0])
    nb = sum(os.path.getsize(f) for f in files[1:])
    bodies = [open(f, "rb").read() for f in files[1:]]
    perf = None
    if os.environ.get("PERF_DIR"):
        # perf record -g of the service during the large uploads only.
        out = os.path.join(os.environ["PERF_DIR"], f"{os.path.basename(cloud.dir)}-{r}.data")
        perf = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(cloud.proc.pid), "-o", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    c0 = cb.proc_cpu(cloud.proc.pid)
    t0 = time.monotonic()
    each = []
    for b in bodies:
        t1 = time.monotonic()
        cb.post_tx(conn, cloud.token, db, b)
        each.append(len(b) / cb.MB / (time.monotonic() - t1))
    wall = time.monotonic() - t0
    cpu = cb.proc_cpu(cloud.proc.pid) - c0
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    conn.close()
    sb = [open(f, "rb").read() for f in small]
    t0 = time.monotonic()
    cb.upload_chain(cloud, f"one{r}.db", sb)
    one = len(sb) / (time.monotonic() - t0)
    return nb / cb.MB / wall, nb / cb.MB / cpu, one, each


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=4096)
    ap.add_argument("--txns", type=int, default=16)
    ap.add_argument("--run", type=int, default=16)
    ap.add_argument("--small", type=int, default=300, help="1-page transactions per round")
    ap.add_argument("builds", nargs="+")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-ingest-ab-", dir="/tmp")
    clouds = []
    try:
        cb.BUILD = a.builds[0]
        files = cb.make_chain(base, "large", a.pages * 4, a.txns, a.pages, run_len=a.run)
        small = cb.make_chain(base, "one", 256, a.small, 1)
        nb = sum(os.path.getsize(f) for f in files[1:])
        for i, b in enumerate(a.builds):
            cb.CLOUD = os.path.join(b, "litefs-cloud")
            clouds.append(cb.Cloud(base, f"cloud{i}").start())
        res = {k: [] for k in ["disk"] + a.builds}
        loads = []
        for r in range(a.rounds):
            bodies = [open(f, "rb").read() for f in files[1:]]
            t0 = time.monotonic()
            cb.fsync_files(os.path.join(base, f"fsync-{r}"), bodies)
            res["disk"].append(nb / cb.MB / (time.monotonic() - t0))
            shutil.rmtree(os.path.join(base, f"fsync-{r}"))
            # The builds take turns in going first: the one after another
            # pays for the other's writeback (measured: up to 6 %).
            turn = list(zip(a.builds, clouds))
            turn = turn[r % len(turn):] + turn[:r % len(turn)]
            for b, c in turn:
                res[b].append(run_build(c, files, small, r))
            loads.append(os.getloadavg()[0])
        med = statistics.median
        print(f"{a.txns} x {a.pages} pages of 4 KiB in runs of 1..{2 * a.run - 1} "
              f"({nb / a.txns / cb.MB:.1f} MB of LTX each), {a.rounds} rounds, "
              f"load average {min(loads):.1f}-{max(loads):.1f}")
        print(f"  disk (write + fsync per file): {med(res['disk']):.0f} MB/s, "
              f"rounds {[round(x) for x in res['disk']]}")
        for b in a.builds:
            w, c, o, e = zip(*res[b])
            e = sorted(x for r in e for x in r)
            print(f"  {b}: wall {med(w):.0f} MB/s ({med(w) / med(res['disk']):.2f} of the disk; rounds "
                  f"{[round(x) for x in w]}), {med(c):.0f} MB per CPU-s (rounds {[round(x) for x in c]}), "
                  f"1-page {med(o):.0f} tx/s (rounds {[round(x) for x in o]})")
            # Single uploads: the least disturbed ones say what the service
            # does when the machine leaves it alone.
            print(f"    single uploads ({len(e)}): median {med(e):.0f} MB/s, 90th percentile "
                  f"{e[int(0.9 * (len(e) - 1))]:.0f}, best {e[-1]:.0f}")
    finally:
        for c in clouds:
            c.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
