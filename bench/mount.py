#!/usr/bin/python3
"""Mount vs plain SQLite on the same disk, in the same run (BENCHMARKS.md).

Starts a real `litefs mount` in a temporary directory under build/, runs
build/bench/bench_mount on the mount and on a plain directory beside it,
and prints the numbers and the ratios mount/plain. Never fails on timing.
Usage: bench/mount.py [INSERTS] [SELECTS] [ROUNDS]
Environment: BENCH_DIR (where the mount and the plain directory go; default
BUILD), LITEFS_FUSE_PASSTHROUGH=1 (the mount with FUSE passthrough of the
journal, off by default).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.path.join(BUILD, "litefs")
BENCH = os.path.join(BUILD, "bench", "bench_mount")


def parse(out):
    res = {}
    for m in re.finditer(r"case=(\S+) inserts_per_s=(\d+) selects_per_s=(\d+)", out):
        res[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return res


def metrics(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r'litefs_fuse_op_count\{type="(\w+)"\} (\d+)', line) or \
            re.match(r'litefs_fuse_requests_total\{op="(\w+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def main():
    n_ins = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    n_sel = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    # BENCH_DIR=/dev/shm measures the FUSE round trips alone (tmpfs: no
    # disk wait, which on a shared machine varies more than the mount's cost).
    base = tempfile.mkdtemp(prefix="bench-mount-", dir=os.environ.get("BENCH_DIR", BUILD))
    mnt, data, plain = (os.path.join(base, d) for d in ("mnt", "data", "plain"))
    os.makedirs(plain)
    port = 20290
    cfg = os.path.join(base, "litefs.yml")
    with open(cfg, "w") as f:
        f.write(f"fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\n  retention: 10s\n  retention-monitor-interval: 5s\n"
                f"http:\n  addr: 127.0.0.1:{port}\nlease:\n  type: static\n")
    log = open(os.path.join(base, "litefs.log"), "w")
    node = subprocess.Popen([LITEFS, "mount", "-config", cfg], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        results = {"mount": {}, "plain": {}}
        for r in range(rounds):
            for name, d in (("plain", plain), ("mount", mnt)):
                before = metrics(port) if name == "mount" else {}
                out = subprocess.run([BENCH, d, str(n_ins), str(n_sel)], capture_output=True, text=True,
                                     check=True).stdout
                after = metrics(port) if name == "mount" else {}
                for k, v in parse(out).items():
                    results[name].setdefault(k, []).append(v)
                if before and after:
                    ops = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
                    print(f"fuse requests during the mount run ({4 * n_ins} inserts, {4 * n_sel} selects): {ops}")
        print(f"{'case':<14}{'plain ins/s':>12}{'mount ins/s':>12}{'ratio':>7}   "
              f"{'plain sel/s':>12}{'mount sel/s':>12}{'ratio':>7}")
        for case in results["plain"]:
            p = results["plain"][case]
            m = results["mount"].get(case)
            if not m:
                continue
            pi = sorted(x[0] for x in p)[len(p) // 2]
            mi = sorted(x[0] for x in m)[len(m) // 2]
            ps = sorted(x[1] for x in p)[len(p) // 2]
            ms = sorted(x[1] for x in m)[len(m) // 2]
            print(f"{case:<14}{pi:>12}{mi:>12}{mi / pi:>7.2f}   {ps:>12}{ms:>12}{ms / ps:>7.2f}")
    finally:
        stop([node], base)


def stop(nodes, base):
    """Stops the nodes (SIGTERM, then SIGKILL after 30 s) and removes base."""
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
