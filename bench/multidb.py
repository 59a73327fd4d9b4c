#!/usr/bin/python3
"""Several databases written at once: mount vs plain SQLite on the same
disk, in the same run (BENCHMARKS.md, "Several databases at once").

For 1, 2 and 4 databases, one writer process per database commits
single-row autocommit INSERTs for SECONDS, first in a plain directory, then
on a real `litefs mount` beside it; the numbers are the total commits per
second and the ratio mount/plain. Every database of the node shares one
LTX syncer thread (src/node/chain.c), so this is where that sharing would
show. Never fails on timing.

Usage: bench/multidb.py [SECONDS] [MODES] [COUNTS]
       (defaults: 5 "wal/full delete/full wal/normal" "1 2 4")
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.path.join(BUILD, "litefs")

WRITER = r"""
import sqlite3, sys, time
path, mode, sync, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
con = sqlite3.connect(path, isolation_level=None, timeout=60)
con.execute(f"PRAGMA journal_mode={mode}")
con.execute(f"PRAGMA synchronous={sync}")
con.execute("CREATE TABLE IF NOT EXISTS t(i INTEGER, v BLOB)")
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
end = time.time() + secs
n = 0
while time.time() < end:
    con.execute("INSERT INTO t VALUES (?, randomblob(100))", (n,))
    n += 1
print(n, flush=True)
"""


def run_writers(directory, n_dbs, mode, sync, secs, tag):
    """Starts n_dbs writers, lets them all begin at once, returns commits/s."""
    script = os.path.join(directory, "..", "writer.py")
    procs = []
    for k in range(n_dbs):
        path = os.path.join(directory, f"{tag}-{k}.db")
        procs.append(subprocess.Popen(["/usr/bin/python3", script, path, mode, sync, str(secs)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    total = sum(int(p.communicate(timeout=secs + 120)[0].strip()) for p in procs)
    return total / secs


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    modes = (sys.argv[2] if len(sys.argv) > 2 else "wal/full delete/full wal/normal").split()
    counts = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1 2 4").split()]
    base = tempfile.mkdtemp(prefix="bench-multidb-", dir=BUILD)
    mnt, data, plain = (os.path.join(base, d) for d in ("mnt", "data", "plain"))
    os.makedirs(plain)
    with open(os.path.join(base, "writer.py"), "w") as f:
        f.write(WRITER)
    cfg = os.path.join(base, "litefs.yml")
    with open(cfg, "w") as f:
        f.write(f"fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\nhttp:\n  addr: 127.0.0.1:20291\n"
                f"lease:\n  type: static\n")
    log = open(os.path.join(base, "litefs.log"), "w")
    node = subprocess.Popen([LITEFS, "mount", "-config", cfg], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        print(f"{'mode':12} {'dbs':>3} {'plain tx/s':>11} {'mount tx/s':>11} {'mount/plain':>11}")
        for m in modes:
            mode, sync = m.split("/")
            for n_dbs in counts:
                tag = f"{mode}-{sync}-{n_dbs}"
                p = run_writers(plain, n_dbs, mode, sync, secs, tag)
                q = run_writers(mnt, n_dbs, mode, sync, secs, tag)
                print(f"{m:12} {n_dbs:>3} {p:>11.0f} {q:>11.0f} {q / p:>10.2f}x", flush=True)
    finally:
        node.terminate()
        node.wait(30)
        log.close()
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
