#!/usr/bin/env python3
"""Big databases at disk speed: `litefs import`, `litefs export` and a
replica's catch-up by snapshot, each beside `cp` + `fsync` of the same
bytes in the same run (the machine is shared and noisy: read the ratios).

A SQLite file is made on the disk of the bench directory (a table of
1000-byte rows, half random, half zeros, with an index on a random
integer column), then, on one node (static lease, no backup service):

  cp + fsync   `cp` of the source to a new file on the same disk, then
               fsync of the copy (the source warm in the page cache)
  import new   `litefs import` into a new database (also on a second node
               with data.compress: false, what LZ4 costs)
  import over  `litefs import` of the same file over that database (the
               usual case: a database replaced by a newer file)
  export       `litefs export` of the database to a file (fsync'd, renamed)
  catch-up     a replica started empty against a primary holding one
               imported database (one record: a full image): from the
               replica's start until its position equals the primary's

The node logs where each import's time went (msg=imported ... encode_ms,
check_wait_ms, sync_ms, copy_ms); they are printed too. With --base DIR
the import is also timed with the litefs binary of DIR (an older build)
in the same run.

Usage: bench/bigdb.py [--mb N] [--rounds N] [--base BUILD_DIR]
  BIGDB_BIG=1 in the environment: --mb 1400 (several minutes).
Generated files are removed at the end; the bench directory is
$BENCH_DIR (default /tmp). Needs about 5x the database size free.
"""
import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud  # noqa: E402  (Node, wait_until, BUILD)

MB = 1e6


def make_db(path, mb):
    rows = int(mb * 1e6 / 1040)
    s = sqlite3.connect(path)
    s.execute("PRAGMA journal_mode=OFF")
    s.execute("PRAGMA synchronous=OFF")
    s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
    s.execute(f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {rows}) "
              "INSERT INTO t(k, v) SELECT abs(random()) % 1000000, randomblob(500) || zeroblob(500) FROM k")
    s.execute("CREATE INDEX t_k ON t(k)")
    s.commit()
    s.close()


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def cp_sync(src, dst):
    if os.path.exists(dst):
        os.unlink(dst)
    t0 = time.monotonic()
    subprocess.run(["cp", src, dst], check=True)
    fsync_path(dst)
    return time.monotonic() - t0


def timed_run(args):
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stdout}{r.stderr}")
    return time.monotonic() - t0


def last_spans(node):
    with open(os.path.join(node.dir, "litefs.log")) as f:
        lines = f.readlines()
    applied = [ln for ln in lines if "msg=\"import applied\"" in ln]
    lines = [ln for ln in lines if "msg=imported" in ln]
    if not lines:
        return ""
    up = re.findall(r"\b(?:upload|encoder_lag|encoder_cpu|check)_ms=\d+", applied[-1]) if applied else []
    return " ".join(up + re.findall(r"\b(?:wait|encode|check_wait|sync|copy|rename|total)_ms=\d+|record=\w+",
                                    lines[-1]))


def no_compress(node):
    """node with data.compress: false (an uncompressed import record)."""
    with open(node.cfg) as f:
        cfg = f.read()
    with open(node.cfg, "w") as f:
        f.write(cfg.replace("data:\n", "data:\n  compress: false\n", 1))
    return node


def med(xs):
    return statistics.median(xs)


def bench(base, mb, rounds, base_build):
    src = os.path.join(base, "src.db")
    t0 = time.monotonic()
    make_db(src, mb)
    size = os.path.getsize(src)
    print(f"source: {size / MB:.0f} MB made in {time.monotonic() - t0:.1f} s")
    subprocess.run(["cp", src, os.path.join(base, "warm.db")], check=True)  # source in the page cache
    os.unlink(os.path.join(base, "warm.db"))
    rows = {}

    def note(case, secs, base_secs, extra=""):
        rows.setdefault(case, []).append((secs, base_secs, extra))

    litefs = cloud.LITEFS
    node = cloud.Node(base, "primary")
    replica = None
    # The import's record follows data.compress (default on: LZ4); a
    # second node has it off, to show what LZ4 costs.
    raw = no_compress(cloud.Node(base, "raw"))
    try:
        raw.start()
        for r in range(rounds):
            s = timed_run([litefs, "import", "-url", raw.url, "-name", f"raw{r}.db", src])
            note("import new, compress: false", s, cp_sync(src, os.path.join(base, "cp.db")), last_spans(raw))
    finally:
        raw.stop()
        shutil.rmtree(raw.dir, ignore_errors=True)
    try:
        node.start()
        # The replica's catch-up first, with one database of one record on
        # the primary: exactly one full image to receive and apply.
        s = timed_run([litefs, "import", "-url", node.url, "-name", "cu.db", src])
        note("import new", s, cp_sync(src, os.path.join(base, "cp.db")), last_spans(node))
        want = node.pos("cu.db")
        replica = cloud.Node(base, "replica", primary_port=node.port)
        t0 = time.monotonic()
        replica.start()
        cloud.wait_until(lambda: replica.pos("cu.db") == want, 1800, "the replica to catch up", 0.02)
        note("replica catch-up", time.monotonic() - t0, cp_sync(src, os.path.join(base, "cp.db")))
        replica.stop()
        replica = None
        for r in range(rounds):
            name = f"big{r}.db"
            if r > 0:
                s = timed_run([litefs, "import", "-url", node.url, "-name", name, src])
                note("import new", s, cp_sync(src, os.path.join(base, "cp.db")), last_spans(node))
            s = timed_run([litefs, "import", "-url", node.url, "-name", "cu.db" if r == 0 else name, src])
            note("import over", s, cp_sync(src, os.path.join(base, "cp.db")), last_spans(node))
            out = os.path.join(base, "out.db")
            s = timed_run([litefs, "export", "-url", node.url, "-name", "cu.db", out])
            note("export (litefs export)", s, cp_sync(src, os.path.join(base, "cp.db")))
            os.unlink(out)
    finally:
        for n in (replica, node):
            if n is not None:
                n.stop()
    if base_build:
        cloud.LITEFS = os.path.join(base_build, "litefs")
        old = cloud.Node(base, "old")
        try:
            old.start()
            s = timed_run([cloud.LITEFS, "import", "-url", old.url, "-name", "big.db", src])
            note("import new, base build", s, cp_sync(src, os.path.join(base, "cp.db")))
        finally:
            old.stop()
            cloud.LITEFS = litefs
    os.unlink(os.path.join(base, "cp.db"))
    print(f"\n{'case':<26}{'secs':>8}{'cp+fsync':>10}{'ratio':>7}  node spans (ms), last round")
    for case, xs in rows.items():
        s, b = med([x[0] for x in xs]), med([x[1] for x in xs])
        print(f"{case:<26}{s:>8.2f}{b:>10.2f}{s / b:>7.2f}  {xs[-1][2]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=1400 if os.environ.get("BIGDB_BIG") else 100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--base", help="an older build directory: its litefs import is timed too")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bigdb-", dir=os.environ.get("BENCH_DIR", "/tmp"))
    try:
        print(f"== big databases: {a.mb:.0f} MB, {a.rounds} rounds, in {base}")
        bench(base, a.mb, a.rounds, a.base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
