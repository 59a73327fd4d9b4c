#!/usr/bin/python3
"""The dashboard's data endpoints of litefs-cloud (BENCHMARKS.md,
"Dashboard API"), each beside its plain baseline measured in the same run.

1. GET /dbs and GET /db/timeline with 1,000,000 positions in the window
   (30 days, one every 2.6 s). Pushing a million uploads through the API
   takes 15-25 minutes on this machine (every upload is fsync'd three
   times), so the bench writes the history straight into the catalog with
   the engine's own schema (dbs, txs, and one L0 file row per position,
   compaction marks at the end so maintenance has nothing to do), then
   starts `litefs-cloud serve` on it. These two endpoints read only the
   catalog and the in-memory index, never the objects, so what is measured
   is what a real month costs them; the objects themselves are not written
   (such a database cannot be exported). Baseline: GET /db/info of the same
   database (the catalog read that a dashboard without the index needs).
   Reported: the first request (the index is built from the catalog),
   then medians and maxima of repeated requests at several zooms.
2. GET /db/preview deep in the history of a 100 MB database: a node
   imports it (pushed to the service as a snapshot), then N_UPDATES
   transactions each update 8 random rows; the preview of the state at
   the 10th percentile of those updates, cold (built by the service's
   export) and warm (cached), and a page of rows. Baseline: `litefs-cloud
   export --txid` of the same point (the download of that state) and `cp`
   of a file of the same size.

Prints numbers; never fails on timing.
Usage: bench/dashboard_api.py [--positions N] [--size-mb M] [--updates U] [--only 1,2]
"""
import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud as cb  # noqa: E402  (bench/cloud.py: Cloud, Node, helpers)

DAY_MS = 24 * 3600 * 1000


def timed_get(c, path, token):
    t0 = time.monotonic()
    c.request("GET", path, headers={"Authorization": token})
    r = c.getresponse()
    body = r.read()
    took = time.monotonic() - t0
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
    return took, json.loads(body), len(body)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fill_catalog(path, n, now_ms):
    """n positions of one database `big.db` (catalog id 1) over the 30 days
    before now_ms, written with the engine's schema (u64 stored as the
    same 64 bits in a signed integer)."""
    start = now_ms - 30 * DAY_MS + 3600 * 1000
    step = (now_ms - 60 * 1000 - start) / n

    def s64(v):
        return v - (1 << 64) if v >= 1 << 63 else v

    def chk(i):
        return s64((1 << 63) | ((i * 0x9E3779B97F4A7C15) & ((1 << 62) - 1))) if i else 0

    def ts(i):
        return int(start + i * step)

    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("PRAGMA synchronous=off")
    con.executemany("INSERT INTO txs (db_id, txid, min_txid, checksum, ts_ms, mts_ms, page_size)"
                    " VALUES (1, ?, ?, ?, ?, ?, 4096)", ((i, i, chk(i), ts(i), ts(i)) for i in range(1, n + 1)))
    con.executemany("INSERT INTO files (db_id, level, min_txid, max_txid, pre, post, mts_ms, page_size, size)"
                    " VALUES (1, 0, ?, ?, ?, ?, ?, 4096, ?)",
                    ((i, i, chk(i - 1), chk(i), ts(i), 300 + (i * 7919) % 4700) for i in range(1, n + 1)))
    con.execute("INSERT INTO dbs (id, cluster, name, page_size, n_pages, txid, checksum, ts_ms, mts_ms, created_ms)"
                " VALUES (1, 'bench', 'big.db', 4096, 2500, ?, ?, ?, ?, ?)", (n, chk(n), ts(n), ts(n), start))
    for level in range(1, 5):
        con.execute("INSERT INTO compaction (db_id, level, done_txid) VALUES (1, ?, ?)", (level, n))
    con.commit()
    con.close()


def bench_timeline(base, n, rounds):
    cloud = cb.Cloud(base, "cloud-timeline")
    # Once to create the data directory and the catalog's schema.
    cloud.start()
    cloud.stop()
    t0 = time.monotonic()
    fill_catalog(os.path.join(cloud.data, "catalog.db"), n, int(time.time() * 1000))
    fill_s = time.monotonic() - t0
    token = cloud.token
    cloud.log = open(os.path.join(cloud.dir, "cloud.log"), "a")
    cloud.proc = subprocess.Popen([cb.CLOUD, "serve", "-addr", f"127.0.0.1:{cloud.port}", "-data-dir", cloud.data],
                                  stdout=cloud.log, stderr=subprocess.STDOUT)
    res = {"fill": fill_s}
    try:
        cb.wait_until(lambda: _up(cloud.port), 20, "litefs-cloud to listen", 0.02)
        rss0 = rss_kib(cloud.proc.pid)
        c = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=600)
        info = []
        for _ in range(3):
            info.append(timed_get(c, "/db/info?db=big.db", token)[0])
        res["info"] = (statistics.median(info), max(info))
        res["first_dbs"], body, _ = timed_get(c, "/dbs", token)
        assert body["databases"][0]["transactions"] == n, body
        res["rss_index_mib"] = (rss_kib(cloud.proc.pid) - rss0) / 1024
        w = body["databases"][0]["restorable"]
        lo, hi = w["min_ts_ms"], w["max_ts_ms"]
        cases = [("/dbs", "/dbs"),
                 ("timeline 30 d (500 buckets)", "/db/timeline?db=big.db"),
                 ("timeline 30 d (5000 buckets)", "/db/timeline?db=big.db&max=5000"),
                 ("timeline 1 d", f"/db/timeline?db=big.db&from_ms={hi - DAY_MS}&to_ms={hi}"),
                 ("timeline 1 h", f"/db/timeline?db=big.db&from_ms={hi - 3600000}&to_ms={hi}"),
                 ("timeline 10 min (transactions)", f"/db/timeline?db=big.db&from_ms={hi - 600000}&to_ms={hi}")]
        res["cases"] = []
        for name, path in cases:
            times, size, mode = [], 0, ""
            for _ in range(rounds):
                took, body, size = timed_get(c, path, token)
                times.append(took)
                mode = body.get("mode", "")
                time.sleep(0.05)
            res["cases"].append((name, statistics.median(times), max(times), size, mode))
        # /dbs while its history bytes are summed again (a walk over every
        # stored file of the database, 32k rows per request, every 10 s).
        time.sleep(10.1)
        walk = [timed_get(c, "/dbs", token)[0] for _ in range(40)]
        res["cases"].append(("/dbs x40 during a bytes walk", statistics.median(walk), max(walk), 0, ""))
        res["span_days"] = (hi - lo) / DAY_MS
        c.close()
    finally:
        cloud.stop()
        shutil.rmtree(cloud.dir, ignore_errors=True)
    return res


def _up(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/healthz")
        return c.getresponse().status == 200
    except OSError:
        return False


def bench_preview(base, size_mb, n_updates, rounds):
    cloud = cb.Cloud(base, "cloud-preview", "-levels", "1s,10s,1m", "-snapshot-interval", "10m",
                     "-max-upload-size", "8GiB").start()
    node = cb.Node(base, "preview-node", cloud=cloud)
    db, src = "big.db", os.path.join(base, "src.db")
    res = {}
    try:
        node.start()
        rows = size_mb * 1000
        s = sqlite3.connect(src)
        s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        s.execute("CREATE TABLE small(id INTEGER PRIMARY KEY, name TEXT)")
        s.execute(f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {rows}) "
                  "INSERT INTO t(v) SELECT randomblob(500) || zeroblob(500) FROM k")
        s.execute("INSERT INTO small(name) VALUES ('a'), ('b')")
        s.commit()
        s.close()
        res["size"] = os.path.getsize(src)
        subprocess.run([cb.LITEFS, "import", "-url", node.url, "-name", db, src], check=True, capture_output=True)
        cb.wait_until(lambda: cloud.pos(db) == node.pos(db), 600, "the import to reach the service", 0.05)
        con = node.connect(db, "wal", "normal")
        rng = random.Random(7)
        hist = []
        for k in range(n_updates):
            ids = ",".join(str(rng.randrange(1, rows + 1)) for _ in range(8))
            con.execute(f"UPDATE t SET v = randomblob(500) || zeroblob(500) WHERE id IN ({ids})")
            if k % 10 == 0:
                con.execute("INSERT INTO small(name) VALUES ('x')")
            hist.append((node.pos(db), con.execute("SELECT count(*) FROM small").fetchone()[0]))
            time.sleep(0.005)
        con.close()
        cb.wait_until(lambda: cloud.pos(db) == node.pos(db), 120, "the updates to reach the service", 0.05)
        time.sleep(4)  # compaction catches up
        # Upload ends only (the node merges a backlog into one upload):
        # the positions the timeline lists that the writer recorded.
        counts = {p[0]: k for p, k in hist}
        tl = cloud.get(f"/db/timeline?db={db}&max=5000")
        ends = [int(t["txid"], 16) for t in tl["transactions"] if int(t["txid"], 16) in counts]
        if len(ends) < len(hist) // 4:
            raise SystemExit(f"only {len(ends)} of {len(hist)} updates are upload ends")
        picks = ends[len(ends) // 10:len(ends) // 10 + rounds]
        c = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=600)
        cold, warm, page = [], [], []
        for tx in picks:
            # A point not previewed yet in each round: cold means built now.
            took, body, _ = timed_get(c, f"/db/preview?db={db}&txid={tx:016x}", cloud.token)
            got = {t["name"]: t.get("rows") for t in body["tables"]}
            if got.get("small") != counts[tx] or got.get("t") != rows:
                raise SystemExit(f"preview of {tx}: {got}, want small={counts[tx]} t={rows}")
            cold.append(took)
            warm.append(timed_get(c, f"/db/preview?db={db}&txid={tx:016x}", cloud.token)[0])
            page.append(timed_get(c, f"/db/preview/rows?db={db}&txid={tx:016x}&table=t&limit=50&offset=1000",
                                  cloud.token)[0])
        c.close()
        out = os.path.join(base, "export.db")
        exp = [cloud.cli("export", db, "--txid", f"{tx:016x}", "-o", out)[0] for tx in picks]
        os.unlink(out)
        cp, _ = cb.cp_times(src, os.path.join(base, "cp.db"), rounds)
        res.update(cold=statistics.median(cold), cold_max=max(cold), warm=statistics.median(warm),
                   page=statistics.median(page), export=statistics.median(exp), cp=cp,
                   depth=(hist[-1][0][0] - picks[0], len(ends)))
    finally:
        cb.teardown(node, cloud, src)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--positions", type=int, default=1000000)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--updates", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="1,2")
    a = ap.parse_args()
    only = a.only.split(",")
    base = tempfile.mkdtemp(prefix="bench-dashapi-", dir=os.environ.get("BENCH_DIR"))
    try:
        if "1" in only:
            r = bench_timeline(base, a.positions, a.rounds)
            print(f"\n== 1. /dbs and /db/timeline, {a.positions:,} positions over {r['span_days']:.1f} days "
                  f"(catalog filled in {r['fill']:.1f} s)")
            print(f"baseline GET /db/info (reads the catalog): median {r['info'][0] * 1000:.0f} ms, "
                  f"max {r['info'][1] * 1000:.0f} ms")
            print(f"first GET /dbs (builds the index): {r['first_dbs'] * 1000:.0f} ms; "
                  f"service RSS grew {r['rss_index_mib']:.0f} MiB")
            print(f"{'request':34} {'median ms':>10} {'max ms':>8} {'bytes':>9}  mode")
            for name, m, mx, size, mode in r["cases"]:
                print(f"{name:34} {m * 1000:10.1f} {mx * 1000:8.1f} {size:9,}  {mode}")
            print(f"(vs /db/info: whole-window timeline {r['info'][0] / r['cases'][1][1]:.0f}x faster)")
        if "2" in only:
            r = bench_preview(base, a.size_mb, a.updates, a.rounds)
            print(f"\n== 2. preview of a {r['size'] / 1e6:.0f} MB database {r['depth'][0]} transactions deep "
                  f"in its history ({r['depth'][1]} uploads after the import)")
            print(f"GET /db/preview cold (built now): median {r['cold'] * 1000:.0f} ms, max "
                  f"{r['cold_max'] * 1000:.0f} ms")
            print(f"GET /db/preview warm (cached):    median {r['warm'] * 1000:.1f} ms")
            print(f"GET /db/preview/rows (50 rows):   median {r['page'] * 1000:.1f} ms")
            print(f"baseline: export --txid of the same points {r['export'] * 1000:.0f} ms, "
                  f"cp of the file {r['cp'] * 1000:.0f} ms; cold preview / export = {r['cold'] / r['export']:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
