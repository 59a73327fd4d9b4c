#!/usr/bin/env python3
"""`litefs import` of a big database, two builds alternated in one run,
beside cp + fsync of the same file (BENCHMARKS.md, "Big databases on a
node"; issue 15, item 1).

Method: a SQLite file of --mb MB (bigdb.py's) on the disk of the bench
directory. Then, --rounds times, for each build (base, new) and each
configuration (default: the record LZ4-compressed; data.compress: false):
a node with an empty data directory is started, `litefs import` of the
file into a new database is timed from the client, with the node's CPU
seconds and the client's beside it, and the node's own spans (its
msg=imported log line); the node is stopped and removed. After each
build pair, cp + fsync of the source. Medians; the load average is
printed at the start and the end.

Usage: BUILD=new-build bench/import_ab.py [--base old-build] [--mb 300] [--rounds 3]
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bigdb  # noqa: E402
import cloud  # noqa: E402


def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def import_once(base, build, compress, src, tag):
    cloud.LITEFS = os.path.join(build, "litefs")
    n = cloud.Node(base, tag)
    if not compress:
        bigdb.no_compress(n)
    try:
        n.start()
        c0, k0 = proc_cpu(n.proc.pid), child_cpu()
        s = bigdb.timed_run([cloud.LITEFS, "import", "-url", n.url, "-name", "big.db", src])
        cpu = proc_cpu(n.proc.pid) - c0
        client = child_cpu() - k0
        spans = bigdb.last_spans(n)
    finally:
        n.stop()
        shutil.rmtree(n.dir, ignore_errors=True)
    return s, cpu, client, spans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", help="an older build directory, alternated with $BUILD")
    ap.add_argument("--mb", type=float, default=1400 if os.environ.get("BIGDB_BIG") else 300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    builds = [("new", os.path.abspath(cloud.BUILD))]
    if a.base:
        builds.insert(0, ("base", os.path.abspath(a.base)))
    base = tempfile.mkdtemp(prefix="import-ab-", dir=os.environ.get("BENCH_DIR", "/tmp"))
    res = {}
    load0 = os.getloadavg()
    try:
        src = os.path.join(base, "src.db")
        bigdb.make_db(src, a.mb)
        subprocess.run(["cp", src, os.path.join(base, "warm.db")], check=True)  # source in the page cache
        os.unlink(os.path.join(base, "warm.db"))
        for r in range(a.rounds):
            for compress in (True, False):
                for name, b in builds:
                    x = import_once(base, b, compress, src, f"n-{name}-{r}-{int(compress)}")
                    res.setdefault((compress, name), []).append(x)
                cp = bigdb.cp_sync(src, os.path.join(base, "cp.db"))
                res.setdefault((compress, "cp+fsync"), []).append((cp, 0, 0, ""))
        os.unlink(os.path.join(base, "cp.db"))
        size = os.path.getsize(src)
        print(f"\n{size / 1e6:.0f} MB; medians of {a.rounds}; ratio = wall / cp+fsync of the same "
              f"configuration's rounds; load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} "
              "at the end")
        print(f"{'record':<8}{'build':<9}{'wall s':>8}{'ratio':>7}{'node cpu':>9}{'client cpu':>11}"
              "   all wall s   node spans (ms), last round")
        for compress in (True, False):
            cp = statistics.median(x[0] for x in res[(compress, "cp+fsync")])
            for name in [b[0] for b in builds] + ["cp+fsync"]:
                xs = res[(compress, name)]
                w = statistics.median(x[0] for x in xs)
                print(f"{'lz4' if compress else 'raw':<8}{name:<9}{w:>8.2f}{w / cp:>7.2f}"
                      f"{statistics.median(x[1] for x in xs):>9.2f}{statistics.median(x[2] for x in xs):>11.2f}"
                      "   " + " ".join(f"{x[0]:.2f}" for x in xs) + f"   {xs[-1][3]}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
