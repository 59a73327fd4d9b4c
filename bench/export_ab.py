#!/usr/bin/env python3
"""Export, restore and fork of a state deep in history on litefs-cloud,
two builds side by side on the same stored data, beside cp + fsync of the
same bytes, all in one run (BENCHMARKS.md, "Restore of 100 MB and 1 GB
databases"; issue 15, item 2).

Method: a SQLite file of --mb MB is imported on a node that pushes it to a
service (levels 1s,10s,1m), then 1000 transactions each update 8 random
rows at 100 tx/s; the target is the first restorable position from the
100th update on. The node is stopped; then, --rounds times, each build's
`litefs-cloud serve` is started on that data directory in turn and times
(wall clock, and CPU seconds of the service and of the client):
  export   `litefs-cloud export DB --txid T -o FILE` (checked against the
           node's checksum at T)
  export-cli the same with the OTHER build's CLI against this build's
           service, right after: "export new" / "export-cli new" compare
           the two CLIs on the new service (new CLI first), "export-cli
           base" / "export base" on the old one (old CLI first)
  curl     GET /db/snapshot?txid=T to /dev/null (the service's part)
  latest   `litefs-cloud export DB -o FILE` (the current state)
  restore  `litefs-cloud restore DB --txid T` (a new transaction)
  fork     `litefs-cloud restore DB --txid T --as NEW`
and cp + fsync of the source file to a new file (source warm). Between
the builds' turns everything dirty is flushed (sync), outside the timings,
so that neither build's operations wait for the other's writeback. Wall
times on a shared machine are noisy: read the CPU columns beside them.

Usage: BUILD=new-build bench/export_ab.py --base old-build [--mb 100] [--rounds 3]
"""
import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("cloudbench", os.path.join(HERE, "cloud.py"))
cb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cb)


def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def restart(cloud):
    """Starts `serve` again on the same data (the cluster exists)."""
    token, real = cloud.token, cb.subprocess.run
    cb.subprocess.run = lambda *a, **k: type("R", (), {"stdout": token})()
    try:
        cloud.start()
    finally:
        cb.subprocess.run = real


def prepare(base, mb):
    cloud = cb.Cloud(base, "cloud", "-levels", "1s,10s,1m", "-snapshot-interval", "10m",
                     "-max-upload-size", "8GiB").start()
    node = cb.Node(base, "node", cloud=cloud).start()
    db, src = "big.db", os.path.join(base, "src.db")
    target, _ = cb.big_history(cloud, node, db, src, mb, 1000, {})
    node.stop()
    cloud.stop()
    return cloud, db, src, target


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the other build directory")
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="export-ab-", dir=os.environ.get("BENCH_DIR", cb.BUILD))
    builds = (("base", os.path.abspath(a.base)), ("new", cb.BUILD))
    res = {}
    try:
        cloud, db, src, target = prepare(base, a.mb)
        out = os.path.join(base, "out.db")
        tx = f"{target[0]:016x}"
        for r in range(a.rounds):
            for name, b in builds:
                cb.CLOUD = os.path.join(b, "litefs-cloud")
                restart(cloud)

                def t(key, fn):
                    # A fresh output file, as cp + fsync gets: the unlink
                    # of the last 1 GB export is not the operation's.
                    if os.path.exists(out):
                        os.unlink(out)
                    c0, r0 = proc_cpu(cloud.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
                    w = cb.timed(fn)
                    c1, r1 = proc_cpu(cloud.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
                    res.setdefault((key, name), []).append(
                        (w, c1 - c0, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime))
                t("export", lambda: cloud.cli("export", db, "--txid", tx, "-o", out))
                if cb.checksum(out) != target[1]:
                    raise SystemExit(f"{name}: export of {tx} has the wrong checksum")
                # The other build's CLI against this build's service, just
                # after: the clients compared on the same service and cache.
                other = builds[0][1] if name == "new" else cb.BUILD
                t("export-cli", lambda: subprocess.run(
                    [os.path.join(other, "litefs-cloud"), "export", db, "--txid", tx, "-o", out,
                     "-url", cloud.url, "-token", cloud.token], check=True, capture_output=True))
                t("curl", lambda: subprocess.run(
                    ["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: {cloud.token}",
                     f"{cloud.url}/db/snapshot?db={db}&format=sqlite&txid={tx}"], check=True))
                t("latest", lambda: cloud.cli("export", db, "-o", out))
                t("restore", lambda: cloud.cli("restore", db, "--txid", tx))
                t("fork", lambda: cloud.cli("restore", db, "--txid", tx, "--as", f"f-{name}-{r}.db"))
                cloud.stop()
                # The fork's gigabytes still being written back would slow
                # whatever comes next (the other build's export): flushed
                # here, outside every timing.
                os.sync()
            res.setdefault(("cp+fsync", "-"), []).append((cb.cp_times(src, os.path.join(base, "cp.db"), 1)[1], 0, 0))
        size = os.path.getsize(src)
        base_cp = statistics.median(x[0] for x in res[("cp+fsync", "-")])
        print(f"\n{size / 1e6:.0f} MB, target TXID {target[0]}; medians of {a.rounds}; ratio = wall / cp+fsync "
              f"({base_cp:.2f} s, same run)")
        print(f"{'operation':<10}{'build':<6}{'wall s':>8}{'ratio':>7}{'service cpu s':>15}{'client cpu s':>14}")
        for (key, name), xs in res.items():
            w, c, k = (statistics.median(x[i] for x in xs) for i in range(3))
            print(f"{key:<10}{name:<6}{w:>8.2f}{w / base_cp:>7.1f}{c:>15.2f}{k:>14.2f}")
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
