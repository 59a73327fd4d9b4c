#!/usr/bin/python3
"""Time to first paint of the litefs-cloud dashboard (BENCHMARKS.md,
"Dashboard"), in Debian's chromium driven by playwright-core
(tests/browser/bench_paint.mjs).

Per round, in a fresh browser context: the sign-in page's first contentful
paint (the baseline: the compiled-in HTML, CSS and JS only, no data), then
the database list and a database's timeline, each from navigation start to
the frame after the view was drawn (performance marks set by app.js). Also
the service's share: the API calls those views make, timed alone with a
token (GET /dbs or /pos; GET /db/timeline or /db/info).

History: by default a real `litefs mount` with the backup client commits
--txns small transactions to a fresh litefs-cloud. With --positions N, the
catalog gets N positions over 30 days written directly, by
bench/dashboard_api.py's fill_catalog() (that bench's method: a million
uploads through the API would take 15-25 minutes; the list and the
timeline read only the catalog). With --data-dir, a data directory
prepared elsewhere is served as it is; a token for --cluster is created in
it with the admin CLI.

Usage: bench/dashboard_ui.py [--rounds N] [--txns N | --positions N]
       bench/dashboard_ui.py --data-dir DIR --cluster NAME --db NAME [--rounds N]
Prints numbers; never fails on timing.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BUILD", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
CLOUD = BUILD / "litefs-cloud"
LITEFS = BUILD / "litefs"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if fn():
            return
        time.sleep(0.05)
    raise SystemExit(f"dashboard_ui: timed out: {what}")


def serve(data_dir, log):
    port = free_port()
    proc = subprocess.Popen([str(CLOUD), "serve", "-addr", f"127.0.0.1:{port}", "-data-dir", str(data_dir)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return True
        except OSError:
            return False
    wait_until(up, 60, "litefs-cloud did not start")
    return proc, url


def make_history(base, txns):
    """A node commits txns transactions, pushed to a fresh service."""
    data = base / "cloud"
    token = subprocess.run([str(CLOUD), "cluster", "create", "bench", "-data-dir", str(data)],
                           capture_output=True, text=True, check=True).stdout.strip()
    proc, url = serve(data, open(base / "cloud.log", "a"))
    nb = base / "node"
    (nb / "mnt").mkdir(parents=True)
    cfg = nb / "litefs.yml"
    cfg.write_text(f"fuse:\n  dir: {nb / 'mnt'}\ndata:\n  dir: {nb / 'data'}\nhttp:\n  addr: 127.0.0.1:{free_port()}\n"
                   f"lease:\n  type: static\n  candidate: true\n"
                   f"backup:\n  type: litefs-cloud\n  url: {url}\n  auth-token: {token}\n")
    node = subprocess.Popen([str(LITEFS), "mount", "-config", str(cfg)], stdout=open(nb / "litefs.log", "a"),
                            stderr=subprocess.STDOUT)
    wait_until(lambda: (nb / "mnt").is_mount(), 30, "mount")
    con = sqlite3.connect(str(nb / "mnt" / "db"), timeout=30)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    for i in range(txns):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}",))
        con.commit()
    con.close()
    want = (nb / "mnt" / "db-pos").read_text().split("/")[0]

    def pushed():
        req = urllib.request.Request(url + "/pos", headers={"Authorization": token})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read()).get("db", {}).get("txid") == want
    wait_until(pushed, 60, "the service never caught up")
    node.send_signal(signal.SIGTERM)
    node.wait(30)
    return proc, url, token, "db"


def make_positions(base, n):
    """n positions of big.db in cluster bench, written into the catalog."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from dashboard_api import fill_catalog
    except ImportError:
        raise SystemExit("dashboard_ui: --positions needs bench/dashboard_api.py (the dashboard API's bench)")
    data = base / "cloud"
    token = subprocess.run([str(CLOUD), "cluster", "create", "bench", "-data-dir", str(data)],
                           capture_output=True, text=True, check=True).stdout.strip()
    log = open(base / "cloud.log", "a")
    proc, _ = serve(data, log)  # once, for the catalog's schema
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    fill_catalog(str(data / "catalog.db"), n, int(time.time() * 1000))
    proc, url = serve(data, log)
    return proc, url, token, "big.db"


def api_ms(url, token, path, rounds):
    host, port = url.split("//")[1].split(":")
    times = []
    for _ in range(rounds):
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        t = time.perf_counter()
        c.request("GET", path, headers={"Authorization": token})
        r = c.getresponse()
        r.read()
        times.append((time.perf_counter() - t) * 1000)
        c.close()
        if r.status == 404:
            return None
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--txns", type=int, default=1000)
    ap.add_argument("--positions", type=int, default=0)
    ap.add_argument("--data-dir")
    ap.add_argument("--cluster")
    ap.add_argument("--db", default="db")
    a = ap.parse_args()
    node_modules = ROOT / "tests" / "browser" / "node_modules" / "playwright-core"
    if not node_modules.exists() or not Path("/usr/bin/chromium").exists():
        raise SystemExit("dashboard_ui: run scripts/install-deps first (chromium, tests/browser/node_modules)")
    base = Path(tempfile.mkdtemp(prefix="bench-dashui-"))
    proc = None
    try:
        if a.data_dir:
            token = subprocess.run([str(CLOUD), "token", "create", a.cluster, "-data-dir", a.data_dir],
                                   capture_output=True, text=True, check=True).stdout.strip()
            proc, url = serve(a.data_dir, open(base / "cloud.log", "a"))
            db = a.db
            what = f"prepared data dir {a.data_dir}"
        elif a.positions:
            t = time.time()
            proc, url, token, db = make_positions(base, a.positions)
            what = f"{a.positions} positions over 30 days in the catalog ({time.time() - t:.0f} s to make)"
        else:
            t = time.time()
            proc, url, token, db = make_history(base, a.txns)
            what = f"{a.txns} transactions from a real node ({time.time() - t:.0f} s to make)"
        req = urllib.request.Request(url + "/db/info?db=" + db, headers={"Authorization": token})
        with urllib.request.urlopen(req, timeout=60) as r:
            info = json.loads(r.read())
        w = info["restorable"]
        list_api = api_ms(url, token, "/dbs", a.rounds)
        list_path = "/dbs" if list_api is not None else "/pos"
        if list_api is None:
            list_api = api_ms(url, token, "/pos", a.rounds)
        tl_path = f"/db/timeline?db={db}&from_ms={w['min_ts_ms']}&to_ms={w['max_ts_ms']}&max=600"
        tl_api = api_ms(url, token, tl_path, a.rounds)
        r = subprocess.run(["node", str(ROOT / "tests" / "browser" / "bench_paint.mjs"), url, token, db, str(a.rounds)],
                           cwd=ROOT / "tests" / "browser", capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise SystemExit(f"dashboard_ui: browser run failed:\n{r.stdout}\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        med = {k: statistics.median(v) for k, v in res.items() if isinstance(v, list) and k.endswith("_ms")}
        base_ms = med["signin_fcp_ms"]
        print(f"dashboard first paint, {what}; {info['transactions']} transactions in the window; "
              f"median of {a.rounds} rounds, chromium headless 1280x800:")
        print(f"  sign-in page FCP (baseline, assets only)  {base_ms:7.0f} ms")
        print(f"  database list drawn                       {med['list_ms']:7.0f} ms  ({med['list_ms'] / base_ms:.1f}x)"
              f"   API {list_path}: {list_api:.1f} ms")
        tl_note = (f"API /db/timeline: {tl_api:.1f} ms, mode {res['timeline_mode']}, {res['timeline_count']} txns shown"
                   if tl_api is not None else "no /db/timeline on this service: window and snapshots only")
        print(f"  timeline drawn (whole window)             {med['timeline_ms']:7.0f} ms  "
              f"({med['timeline_ms'] / base_ms:.1f}x)   {tl_note}")
        print(f"  of which drawing the timeline (script)    {med['redraw_ms']:7.1f} ms")
        print("  the timeline page's requests (last round; start-end ms from navigation):",
              ", ".join(f"{p} {a}-{b}" for p, a, b in res["timeline_requests"]))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        subprocess.run(["umount", "-l", str(base / "node" / "mnt")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
