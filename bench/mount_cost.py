#!/usr/bin/python3
"""What one commit costs through the mount, per case (BENCHMARKS.md, "Where a
commit's time goes").

For each of DELETE/WAL x FULL/NORMAL: start one `litefs mount` on BENCH_DIR
(default BUILD), run `bench_mount` for INSERTS inserts of that case only
(BENCH_CASE) on the mount under `strace -f -c -w` (the client's syscalls)
while a second `strace -f -c -w` is attached to the node, then print per
commit: FUSE requests (from /metrics), the client's syncs, the node's
syncs/writes and the wall time the node spent in them. Then the same
workload untraced on the mount and on a plain directory: the rate, and the
CPU time per commit of the client and of the node.
strace slows every traced call, so read the counts as exact and the times
as relative. Usage: bench/mount_cost.py [INSERTS]. Never fails on timing.
"""
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from mount import stop
from mount_ab import BENCH, LITEFS, start

CASES = ("DELETE/FULL", "DELETE/NORMAL", "WAL/FULL", "WAL/NORMAL")
CALLS = "fsync,fdatasync,pwrite64,pwritev,write,writev,read,pread64,ftruncate,unlink,unlinkat,openat,close"


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'litefs_fuse_op_count\{type="(\w+)"\} (\d+)', text)}


def strace_summary(path):
    """{syscall: (calls, seconds)} from a `strace -c -w` summary."""
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] not in ("total",):
            calls = int(f[3]) if f[3].isdigit() else 0
            out[f[-1]] = (calls, float(f[1]))
    return out


def bench(target, case, n, rt=None):
    """Inserts per second of one bench_mount case on target (with rt: one
    extra FUSE round trip per commit, BENCH_RT_FILE)."""
    env = dict(os.environ, BENCH_CASE=case)
    if rt:
        env["BENCH_RT_FILE"] = rt
    out = subprocess.run([BENCH, target, str(n), "10"], capture_output=True, text=True, check=True, env=env).stdout
    return int(re.search(r"inserts_per_s=(\d+)", out).group(1))


def cpu_children():
    """CPU seconds (user + system) of this script's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_of(pid):
    """CPU seconds (user + system) of a running process, all its threads."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def workdir(prefix):
    """A fresh directory on BENCH_DIR (default: beside the binary) and its
    plain/ subdirectory for the plain SQLite runs."""
    base = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_DIR", os.path.dirname(LITEFS)))
    plain = os.path.join(base, "plain")
    os.makedirs(plain)
    return base, plain


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    base, plain = workdir("bench-cost-")
    nodes = []
    try:
        node, mnt = start(base, "n", 20295, True, os.environ.get("LITEFS_BIN", LITEFS))
        nodes.append(node)
        print(f"{n} inserts per case; per commit (strace -f -c -w; times are µs of wall time inside the call)")
        for case in CASES:
            bench(mnt, case, 50)  # warm: the database and its segment exist
            m0 = metrics(20295)
            nfile, cfile = os.path.join(base, "node.strace"), os.path.join(base, "client.strace")
            tr = subprocess.Popen(["strace", "-f", "-c", "-w", "-e", f"trace={CALLS}", "-o", nfile,
                                   "-p", str(node.pid)], stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            subprocess.run(["strace", "-f", "-c", "-w", "-e", "trace=fsync,fdatasync", "-o", cfile, BENCH, mnt,
                            str(n), "10"], env=dict(os.environ, BENCH_CASE=case), capture_output=True, check=True)
            tr.send_signal(signal.SIGINT)
            tr.wait()
            m1 = metrics(20295)
            reqs = {k: (m1.get(k, 0) - m0.get(k, 0)) / n for k in m1}
            # the warm-up run of 50 and the CREATE TABLE/pragma add a little
            node_s, cl = strace_summary(nfile), strace_summary(cfile)
            req_txt = " ".join(f"{k}={v:.1f}" for k, v in sorted(reqs.items()) if v >= 0.05)
            print(f"case={case} requests_per_commit: {req_txt} total={sum(reqs.values()):.1f}")
            for who, s in (("client", cl), ("node", node_s)):
                txt = " ".join(f"{k}={c / n:.2f}x{1e6 * t / max(c, 1):.0f}us" for k, (c, t) in sorted(s.items())
                               if c / n >= 0.05)
                print(f"  {who}: {txt}")
        print("untraced: rate (ins/s) and CPU µs per commit of the client (bench_mount) and of the node")
        for case in CASES:
            c0, n0 = cpu_children(), cpu_of(node.pid)
            a = bench(mnt, case, n)
            c1, n1 = cpu_children(), cpu_of(node.pid)
            b = bench(plain, case, n)
            c2 = cpu_children()
            # bench_mount's CPU includes its open, CREATE TABLE and 10 SELECTs: a few ms
            print(f"case={case} mount={a} plain={b} ratio={a / b:.2f} "
                  f"cpu_us_per_commit: mount_client={1e6 * (c1 - c0) / n:.0f} node={1e6 * (n1 - n0) / n:.0f} "
                  f"plain_client={1e6 * (c2 - c1) / n:.0f}")
    finally:
        stop(nodes, base)


if __name__ == "__main__":
    main()
