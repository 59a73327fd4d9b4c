#!/usr/bin/python3
"""What the node's own segment sync adds to a FULL commit's sync, outside the
mount (BENCHMARKS.md, "The node's own sync"; docs/mount.md "The FULL cases").

In DIR (default: beside the build) one file stands for a client's WAL (a
4120-byte frame appended per commit) and others for LTX segments (an
800-byte record per commit). Per commit, in a new order every round, it
times: the WAL's fdatasync alone (plain SQLite's FULL commit); with the
segment's fdatasync on a second thread at the same time (what the node does
today, chain_sync_alongside); the two one after the other; and a segment
whose space was written with zeros and synced beforehand, so that a record
overwrites allocated blocks and changes no metadata, pushed to the device
with sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER) before the WAL's
fdatasync, whose cache flush then covers it (an idea, not the node's code).
Prints medians in µs. Usage: bench/sync_pair.py [COMMITS] [RUNS]. Never
fails on timing.
"""
import ctypes
import os
import statistics
import sys
import tempfile
import threading
import time

SFR_WAIT_WRITE_WAIT = 1 | 2 | 4
libc = ctypes.CDLL(None, use_errno=True)


def sync_range(fd, off, n):
    if libc.sync_file_range(fd, ctypes.c_longlong(off), ctypes.c_longlong(n), SFR_WAIT_WRITE_WAIT) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range")


def make(d, name, prealloc_mb=0):
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    zeros = b"\0" * (1 << 20)
    for i in range(prealloc_mb):
        os.pwrite(fd, zeros, i << 20)
    os.fdatasync(fd)
    return fd


def one_run(d, n):
    wal = make(d, "wal")
    segs = {"concurrent": make(d, "seg1"), "sequential": make(d, "seg2"), "prealloc": make(d, "seg3", 8)}
    frame, rec = os.urandom(4120), os.urandom(800)
    times = {k: [] for k in ("alone", *segs)}
    woff = roff = 0
    for i in range(n):
        kinds = list(times)
        for k in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            os.pwrite(wal, frame, woff)
            woff += len(frame)
            t0 = time.perf_counter()
            if k == "alone":
                os.fdatasync(wal)
            elif k == "concurrent":
                os.pwrite(segs[k], rec, roff)
                th = threading.Thread(target=os.fdatasync, args=(segs[k],))
                th.start()
                os.fdatasync(wal)
                th.join()
            elif k == "sequential":
                os.pwrite(segs[k], rec, roff)
                os.fdatasync(wal)
                os.fdatasync(segs[k])
            else:
                os.pwrite(segs[k], rec, roff)
                sync_range(segs[k], roff, len(rec))
                os.fdatasync(wal)
            times[k].append(time.perf_counter() - t0)
        roff += len(rec)
    for fd in (wal, *segs.values()):
        os.close(fd)
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    root = os.environ.get("BENCH_DIR", os.environ.get("BUILD", os.path.join(os.path.dirname(__file__), "..", "build")))
    print(f"{runs} runs of {n} commits; medians in µs (and relative to the WAL's sync alone)")
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-sync-", dir=root) as d:
            r = one_run(d, n)
        print("  " + ", ".join(f"{k} {v:.0f} ({v / r['alone']:.2f}x)" for k, v in r.items()))


if __name__ == "__main__":
    main()
