#!/usr/bin/python3
"""The mount with and without FUSE passthrough against plain SQLite, in short
interleaved bursts (BENCHMARKS.md, "FUSE passthrough").

On a shared 2-core machine the speed of everything drifts by 2x within
seconds, so one long run per target compares different moments. This starts
two `litefs mount`s side by side (LITEFS_FUSE_PASSTHROUGH=1 and =0), then
runs build/bench/bench_mount for a few hundred inserts on each of the three
targets (plain directory, mount without, mount with passthrough) in a new
random order every round, and reports per case the median over rounds of
the ratio to the plain run of the same round. Never fails on timing.
Usage: bench/mount_ab.py [INSERTS] [ROUNDS]; BENCH_DIR chooses the file
system (default BUILD; /dev/shm shows the FUSE round trips alone);
LITEFS_OFF_BIN runs another litefs binary (an older build) as "off";
AB_OFF_PASSTHROUGH=1 gives "off" passthrough too and LITEFS_ON_BIN names
the "on" binary (comparing two builds). AB_ON_ENV and AB_OFF_ENV add
environment variables to one side ("LITEFS_FUSE_URING=1,X=Y"), and
AB_ON_PASSTHROUGH=0 takes passthrough away from "on": with both, "on" and
"off" differ only in AB_ON_ENV (FUSE over io_uring against /dev/fuse).
"""
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from mount import stop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.path.join(BUILD, "litefs")
BENCH = os.path.join(BUILD, "bench", "bench_mount")


def side_env(var):
    pairs = [kv.split("=", 1) for kv in os.environ.get(var, "").split(",") if "=" in kv]
    return {k: v for k, v in pairs}


def start(base, name, port, passthrough, binary=LITEFS, extra=None):
    mnt, data = os.path.join(base, name, "mnt"), os.path.join(base, name, "data")
    os.makedirs(os.path.join(base, name))
    cfg = os.path.join(base, name, "litefs.yml")
    with open(cfg, "w") as f:
        f.write(f"fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\n  retention: 10s\n  retention-monitor-interval: 5s\n"
                f"http:\n  addr: 127.0.0.1:{port}\nlease:\n  type: static\n")
    env = dict(os.environ, LITEFS_FUSE_PASSTHROUGH="1" if passthrough else "0", **(extra or {}))
    log = open(os.path.join(base, name, "litefs.log"), "w")
    node = subprocess.Popen([binary, "mount", "-config", cfg], stdout=log, stderr=subprocess.STDOUT, env=env)
    for _ in range(200):
        if os.path.ismount(mnt):
            break
        time.sleep(0.05)
    return node, mnt


def writes(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r'litefs_fuse_op_count\{type="write"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def main():
    n_ins = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    base = tempfile.mkdtemp(prefix="bench-ab-", dir=os.environ.get("BENCH_DIR", BUILD))
    plain = os.path.join(base, "plain")
    os.makedirs(plain)
    nodes = []
    try:
        off_pt = os.environ.get("AB_OFF_PASSTHROUGH") == "1"
        on_pt = os.environ.get("AB_ON_PASSTHROUGH", "1") == "1"
        off, mnt_off = start(base, "off", 20293, off_pt, os.environ.get("LITEFS_OFF_BIN", LITEFS),
                             side_env("AB_OFF_ENV"))
        nodes.append(off)
        on, mnt_on = start(base, "on", 20294, on_pt, os.environ.get("LITEFS_ON_BIN", LITEFS),
                           side_env("AB_ON_ENV"))
        nodes.append(on)
        targets = {"plain": plain, "off": mnt_off, "on": mnt_on}
        ratios = {}
        rates = {}
        w0 = {"off": writes(20293), "on": writes(20294)}
        for _ in range(rounds):
            order = list(targets)
            random.shuffle(order)
            got = {}
            for t in order:
                out = subprocess.run([BENCH, targets[t], str(n_ins), "1000"], capture_output=True, text=True,
                                     check=True).stdout
                for m in re.finditer(r"case=(\S+) inserts_per_s=(\d+)", out):
                    got.setdefault(m.group(1), {})[t] = int(m.group(2))
            for case, v in got.items():
                for t in ("off", "on"):
                    ratios.setdefault(case, {}).setdefault(t, []).append(v[t] / v["plain"])
                for t in targets:
                    rates.setdefault(case, {}).setdefault(t, []).append(v[t])
        w1 = {"off": writes(20293), "on": writes(20294)}
        tx = rounds * 4 * n_ins
        print(f"{rounds} rounds of {n_ins} inserts per case; FUSE writes per transaction (all four cases): "
              f"without passthrough {(w1['off'] - w0['off']) / tx:.1f}, with {(w1['on'] - w0['on']) / tx:.1f}")
        print(f"{'case':<14}{'plain ins/s':>12}{'off ins/s':>11}{'on ins/s':>10}{'off/plain':>11}{'on/plain':>10}"
              f"{'on/off':>8}")
        for case in ratios:
            med = {t: statistics.median(rates[case][t]) for t in targets}
            ro = statistics.median(ratios[case]["off"])
            rn = statistics.median(ratios[case]["on"])
            onoff = statistics.median(a / b for a, b in zip(rates[case]["on"], rates[case]["off"]))
            print(f"{case:<14}{med['plain']:>12.0f}{med['off']:>11.0f}{med['on']:>10.0f}{ro:>11.2f}{rn:>10.2f}"
                  f"{onoff:>8.2f}")
    finally:
        stop(nodes, base)


if __name__ == "__main__":
    main()
