#!/usr/bin/python3
"""One FUSE round trip through /dev/fuse and through io_uring, side by side
(BENCHMARKS.md, "FUSE over io_uring"; docs/mount.md).

Starts two `litefs mount`s of the same build, one with LITEFS_FUSE_URING=1,
creates a database on each, and runs build/bench/fuse_rt on both -pos files
(each read is one request the node answers at once) in alternating order
for ROUNDS rounds; prints each round and the medians. Needs the kernel's
offer: as root it sets /sys/module/fuse/parameters/enable_uring to Y.
Usage: bench/fuse_rt.py [ROUNDS]. Never fails on timing.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile

from mount import stop
from mount_ab import BUILD, start

PARAM = "/sys/module/fuse/parameters/enable_uring"


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if not os.path.exists(PARAM):
        sys.exit("this kernel has no FUSE over io_uring (6.14+ with FUSE_IO_URING)")
    with open(PARAM, "w") as f:
        f.write("Y")
    base = tempfile.mkdtemp(prefix="bench-rt-", dir=os.environ.get("BENCH_DIR", BUILD))
    nodes = []
    try:
        dev, mnt_dev = start(base, "dev", 20295, False, extra={"LITEFS_FUSE_URING": "0"})
        nodes.append(dev)
        ring, mnt_ring = start(base, "ring", 20296, False, extra={"LITEFS_FUSE_URING": "1"})
        nodes.append(ring)
        files = {}
        for name, mnt in (("dev", mnt_dev), ("ring", mnt_ring)):
            subprocess.run(["sqlite3", os.path.join(mnt, "db"), "CREATE TABLE t(x)"], check=True)
            files[name] = os.path.join(mnt, "db-pos")
        got = {"dev": [], "ring": [], "same": [], "any": []}
        for r in range(rounds):
            order = ["dev", "ring"] if r % 2 == 0 else ["ring", "dev"]
            out = subprocess.run([os.path.join(BUILD, "bench", "fuse_rt"), *(files[k] for k in order)],
                                 capture_output=True, text=True, check=True).stdout
            reads = [float(x) for x in re.findall(r"us_per_read=([\d.]+)", out)]
            for k, v in zip(order, reads):
                got[k].append(v)
            got["same"].append(float(re.search(r"same_cpu_us=([\d.]+)", out).group(1)))
            got["any"].append(float(re.search(r"any_cpu_us=([\d.]+)", out).group(1)))
            print(f"round {r + 1}: /dev/fuse {got['dev'][-1]:.1f} us, io_uring {got['ring'][-1]:.1f} us, "
                  f"pipe same CPU {got['same'][-1]:.1f} us, any CPU {got['any'][-1]:.1f} us", flush=True)
        med = {k: statistics.median(v) for k, v in got.items()}
        print(f"median: /dev/fuse {med['dev']:.1f} us, io_uring {med['ring']:.1f} us "
              f"({med['ring'] / med['dev']:.2f}x), pipe ping-pong same CPU {med['same']:.1f} us, "
              f"any CPU {med['any']:.1f} us")
    finally:
        stop(nodes, base)


if __name__ == "__main__":
    main()
