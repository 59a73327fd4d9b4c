#!/usr/bin/python3
"""Moving a running LiteFS 0.5 primary over to our node: the write pause of
the handoff (docs/migrating.md, "The shortest write pause").

A writer commits one row every 5 ms on the real LiteFS 0.5.14's mount
(a new connection per commit, as a short web request would). The primary
is stopped with SIGTERM and `litefs mount` is started at once on the same
data directory, which adopts it (src/node/adopt.h); the writer keeps
retrying until its commits succeed again. Reported: the pause (last
commit on LiteFS to first commit on our node), split into LiteFS's stop,
our start (adoption included) and the first commit, for a small database
and for one of SIZE_MB. Checks that no committed row was lost. Never fails
on timing.

Usage: bench/adopt_handoff.py [SIZE_MB]   (default 64)
"""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.path.join(BUILD, "litefs")
LITEFS_REF = os.environ.get("LITEFS_REF_BIN", os.path.join(ROOT, "..", "shared", "reference", "litefs-0.5.14"))


def mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == os.path.realpath(path) for line in f)


def wait(cond, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.002)


def run_once(base, size_mb):
    mnt, data = os.path.join(base, "mnt"), os.path.join(base, "data")
    os.makedirs(mnt)
    cfg = os.path.join(base, "litefs.yml")
    with open(cfg, "w") as f:
        f.write(f"fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\nhttp:\n  addr: 127.0.0.1:29399\n"
                "lease:\n  type: static\n  candidate: true\n  hostname: n1\n  advertise-url: http://127.0.0.1:29399\n")
    log = open(os.path.join(base, "log"), "w")
    ref = subprocess.Popen([LITEFS_REF, "mount", "-config", cfg], stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: mounted(mnt) and os.path.exists(os.path.join(data, "clusterid")))
    db = os.path.join(mnt, "app.db")
    con = sqlite3.connect(db, isolation_level=None, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, pad BLOB)")
    if size_mb:
        con.execute("CREATE TABLE big(b BLOB)")
        for _ in range(size_mb):
            con.execute("INSERT INTO big VALUES (randomblob(1048576))")
    con.close()

    commits = []   # (time, id) of each commit that succeeded
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            try:
                c = sqlite3.connect(db, isolation_level=None, timeout=0.05)
                c.execute("INSERT INTO t(id) VALUES (?)", (i + 1,))
                c.close()
                i += 1
                commits.append((time.time(), i))
            except (sqlite3.Error, OSError):
                pass
            time.sleep(0.005)
    th = threading.Thread(target=writer)
    th.start()
    time.sleep(1)
    t_stop = time.time()
    ref.send_signal(signal.SIGTERM)
    ref.wait(60)
    t_ref_gone = time.time()
    if mounted(mnt):
        subprocess.run(["umount", "-l", mnt])
    ours = subprocess.Popen([LITEFS, "mount", "-config", cfg], stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: mounted(mnt) and os.path.exists(db + "-pos"))
    t_mounted = time.time()
    n_before = len(commits)
    wait(lambda: len(commits) > n_before + 5)
    stop.set()
    th.join()
    last_old = max(t for t, _ in commits if t < t_stop + 5 and t <= t_ref_gone)
    first_new = min(t for t, _ in commits if t > t_ref_gone)
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone()[0]
    ours.send_signal(signal.SIGTERM)
    ours.wait(60)
    log.close()
    if os.environ.get("VERBOSE"):
        print(open(os.path.join(base, "log")).read()[-3000:])
    return {"pause_ms": (first_new - last_old) * 1000, "litefs_stop_ms": (t_ref_gone - t_stop) * 1000,
            "our_start_ms": (t_mounted - t_ref_gone) * 1000, "first_commit_ms": (first_new - t_mounted) * 1000,
            "lost": commits[-1][1] - rows}


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    for mb in (0, size):
        with tempfile.TemporaryDirectory(prefix="adopt-bench-") as base:
            r = run_once(base, mb)
        print(f"database {mb:4d} MiB: write pause {r['pause_ms']:7.0f} ms  (LiteFS stop {r['litefs_stop_ms']:.0f} ms, "
              f"our start with adoption {r['our_start_ms']:.0f} ms, first commit {r['first_commit_ms']:.0f} ms); "
              f"committed rows lost: {r['lost']}")


if __name__ == "__main__":
    main()
