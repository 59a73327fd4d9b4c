#!/usr/bin/env python3
"""A replica's catch-up by snapshot and `litefs export` of a big database,
two builds side by side in one run, beside cp + fsync of the same file
(BENCHMARKS.md, "Big databases on a node"; issue 15, item 2).

Method: a SQLite file of --mb MB (bigdb.py's) is imported once into a
primary of each build (one record: a full image). Then, --rounds times,
for each build in turn: its primary is started; a replica of the same
build with an empty data directory is started against it and timed until
its position equals the primary's (catch-up), with the replica's CPU
seconds; `litefs export` of the database to a file (fsync'd, renamed) is
timed with the primary's CPU seconds; then cp + fsync of the source. The
single-run numbers of bigdb.py swing 2-7x on this shared machine;
alternating builds and taking medians is what makes them comparable.

Usage: BUILD=new-build bench/bigdb_ab.py --base old-build [--mb 300] [--rounds 3]
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


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--mb", type=float, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bigdb-ab-", dir=os.environ.get("BENCH_DIR", "/tmp"))
    builds = (("base", os.path.abspath(a.base)), ("new", os.path.abspath(cloud.BUILD)))
    res = {}
    try:
        src = os.path.join(base, "src.db")
        bigdb.make_db(src, a.mb)
        primaries = {}
        for name, b in builds:
            cloud.LITEFS = os.path.join(b, "litefs")
            p = cloud.Node(base, f"primary-{name}").start()
            bigdb.timed_run([cloud.LITEFS, "import", "-url", p.url, "-name", "cu.db", src])
            p.stop()
            primaries[name] = p
        for r in range(a.rounds):
            for name, b in builds:
                cloud.LITEFS = os.path.join(b, "litefs")
                p = primaries[name].start()
                want = p.pos("cu.db")
                rep = cloud.Node(base, f"replica-{name}-{r}", primary_port=p.port)
                t0 = time.monotonic()
                rep.start()
                cloud.wait_until(lambda: rep.pos("cu.db") == want, 1800, "the replica to catch up", 0.01)
                res.setdefault(("catch-up", name), []).append((time.monotonic() - t0, proc_cpu(rep.proc.pid), 0))
                rep.stop()
                shutil.rmtree(rep.dir, ignore_errors=True)
                out = os.path.join(base, "out.db")
                c0, k0 = proc_cpu(p.proc.pid), children_cpu()
                s = bigdb.timed_run([cloud.LITEFS, "export", "-url", p.url, "-name", "cu.db", out])
                res.setdefault(("export", name), []).append((s, proc_cpu(p.proc.pid) - c0, children_cpu() - k0))
                os.unlink(out)
                p.stop()
                k0 = children_cpu()
                s = bigdb.cp_sync(src, os.path.join(base, "cp.db"))
                res.setdefault(("cp+fsync", "-"), []).append((s, 0, children_cpu() - k0))
        cp = statistics.median(x[0] for x in res[("cp+fsync", "-")])
        print(f"\n{os.path.getsize(src) / 1e6:.0f} MB; medians of {a.rounds}; ratio = wall / cp+fsync "
              f"({cp:.2f} s, same run)")
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; node cpu: the replica's "
              "(catch-up) or the primary's (export); client cpu: litefs export's, or cp's")
        print(f"{'operation':<10}{'build':<6}{'wall s':>8}{'ratio':>7}{'node cpu s':>12}{'client cpu s':>14}"
              "   all wall s")
        for (key, name), xs in res.items():
            w, c, k = (statistics.median(x[i] for x in xs) for i in range(3))
            print(f"{key:<10}{name:<6}{w:>8.2f}{w / cp:>7.1f}{c:>12.2f}{k:>14.2f}   "
                  + " ".join(f"{x[0]:.2f}" for x in xs))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
