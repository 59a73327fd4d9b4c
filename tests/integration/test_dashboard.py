"""The litefs-cloud dashboard in a real browser (docs/dashboard.md).

A real litefs-cloud and a real LiteFS node pushing to it; the node writes a
workload and the test records (txid, time, checksum, rows) after every
commit. tests/browser/dashboard.mjs then drives Debian's chromium (headless,
playwright-core) through the dashboard: sign-in, the list, the timeline, a
point by click / typed time / TXID, preview row counts, restore in place
(the node's -pos reaches the restored checksum), undo, fork, download,
CSRF, phone width, another cluster, sign-out, session expiry, the sign-in
rate limit, axe-core, and console errors as failures. Screenshots go to
build/dashboard/. This file then checks what the browser left: the
download's checksum and the fork on the node.

Needs `scripts/install-deps` (chromium, tests/browser/node_modules). The
preview row-count step runs only when the service has the dashboard data
endpoints (GET /dbs ...: branch dashapi); the script says which it ran.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import LITEFS_CLOUD, ROOT, TlsFront, db_checksum, free_port, run, wait_until

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = "/usr/bin/chromium"

# Skipped on a developer's machine without the browser; never in CI, where
# `make test` ran scripts/install-deps first (a missing browser fails there).
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and
    not (Path(CHROMIUM).exists() and (BROWSER_DIR / "node_modules" / "playwright-core").exists()
         and shutil.which("node")),
    reason="needs chromium, node and tests/browser/node_modules (scripts/install-deps)")


def has_endpoint(srv, token, path):
    req = urllib.request.Request(srv.url + path, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return True
    except urllib.error.HTTPError as e:
        return e.code != 404


def service_pos(srv, token, name="db"):
    req = urllib.request.Request(srv.url + "/pos", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=5) as r:
        p = json.loads(r.read()).get(name)
    return (p["txid"], p["postApplyChecksum"]) if p else None


class EvilSite:
    """A page on another port of 127.0.0.1 (same site, another origin) that
    posts a restore to the dashboard's service as soon as it loads."""

    def __init__(self, target):
        page = (f'<!doctype html><form id=f method=post action="{target}/db/restore?db=db&txid=1"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self.srv = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()


def self_signed(tmp):
    """A throwaway certificate for 127.0.0.1 and its key, made by openssl."""
    key, crt = tmp / "tls.key", tmp / "tls.crt"
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1")
    return crt, key


def big_database(srv, token, tmp):
    """A 15 MiB database of random blobs (stored near its full size) in two
    uploads: TXID 1, then TXID 2 without its last 20 rows. Building a past
    state reads the whole snapshot: the service reports every 10 % of it."""
    path = tmp / "big.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO b(v) VALUES (?)", ((os.urandom(50000),) for _ in range(320)))
    con.commit()
    pos = []
    for _ in range(2):
        req = urllib.request.Request(srv.url + "/db/upload?db=big.db", data=path.read_bytes(), method="POST",
                                     headers={"Authorization": token})
        with urllib.request.urlopen(req, timeout=30) as r:
            pos.append(json.loads(r.read()))
        con.execute("DELETE FROM b WHERE id > 300")
        con.commit()
    con.close()
    return pos


def sign_in_cookie(srv, token, headers):
    """The Set-Cookie of a sign-in over plain http with extra headers."""
    req = urllib.request.Request(srv.url + "/ui/login", data=f"token={token}".encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.headers["Set-Cookie"]


def test_dashboard_in_chromium(node, cloud, tmp_path):
    t0 = time.time()
    admin_port = free_port()
    srv = cloud(args=("-admin-addr", f"127.0.0.1:{admin_port}"))
    token = srv.create_cluster("prod")
    other_token = srv.create_cluster("other")
    short = cloud(name="short", args=("-ui-session", "2s"))
    short_token = short.create_cluster("prod")

    n = node(extra_config=f"backup:\n  type: litefs-cloud\n  url: {srv.url}\n  auth-token: {token}\n")
    n.start()
    # The workload: one commit every ~30 ms, so that each point is many
    # pixels wide on the timeline; after every commit (txid, ms, checksum, rows).
    points = []
    con = n.connect()
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    for i in range(60):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"row {i} " + "x" * (i * 37 % 900),))
        if i % 9 == 8:
            con.execute("DELETE FROM t WHERE id = (SELECT min(id) FROM t)")
        con.commit()
        txid, chk = n.pos()
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        points.append({"txid": f"{txid:016x}", "ts_ms": int(time.time() * 1000), "chk": chk, "rows": rows})
        time.sleep(0.03)
    con.close()
    last = points[-1]
    wait_until(lambda: service_pos(srv, token) == (last["txid"], last["chk"]), timeout=10,
               msg=lambda: f"service at {service_pos(srv, token)}, node at {last}")

    has_dashapi = has_endpoint(srv, token, "/dbs")
    shots = ROOT / "build" / "dashboard"
    t_big = time.time()
    big = big_database(srv, token, tmp_path)
    tls = TlsFront(srv.port, *self_signed(tmp_path))
    tls.start()
    print(f"big database and TLS front: {time.time() - t_big:.1f} s")
    # Secure comes from the browser's https Origin only: headers a client
    # sends itself over plain http do not make the cookie Secure. (Before
    # the browser run, whose last step uses up the sign-in limit.)
    assert "Secure" not in sign_in_cookie(srv, token, {"X-Forwarded-Proto": "https", "Forwarded": "proto=https"})
    assert "Secure" in sign_in_cookie(srv, token, {"Origin": tls.url, "Host": tls.url[len("https://"):]})
    evil = EvilSite(srv.url)
    cfg = {
        "url": srv.url, "token": token, "other_token": other_token,
        "short_url": short.url, "short_token": short_token,
        "chromium": CHROMIUM, "shots": str(shots), "out": str(tmp_path / "out.json"),
        "has_dashapi": has_dashapi, "evil_url": evil.url,
        "admin_url": f"http://127.0.0.1:{admin_port}", "admin_key": (srv.data / "admin.key").read_text().strip(),
        "node_pos": str(n.mnt / "db-pos"), "node_db": str(n.db()),
        "last": last, "click": points[20], "typed": points[35], "fork": points[45],
        "tls_url": tls.url, "big": big,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    try:
        r = subprocess.run(["node", str(BROWSER_DIR / "dashboard.mjs"), str(tmp_path / "cfg.json")],
                           cwd=BROWSER_DIR, capture_output=True, text=True, timeout=150)
    finally:
        evil.close()
        tls.close()
    print(r.stdout)
    assert r.returncode == 0, f"browser run failed:\n{r.stdout}\n{r.stderr[-4000:]}\n--- service log:\n" \
                              f"{srv.log_text()[-3000:]}"
    assert "dashboard: all steps passed" in r.stdout
    out = json.loads((tmp_path / "out.json").read_text())

    # The download is the chosen point, byte for byte in content.
    fk = cfg["fork"]
    assert int(db_checksum(out["download"]), 16) == int(fk["chk"], 16)
    assert run("sqlite3", out["download"], "SELECT count(*) FROM t").stdout.strip() == str(fk["rows"])
    # The big database's download over the TLS front is its TXID 1.
    assert int(db_checksum(out["big_download"]), 16) == int(big[0]["postApplyChecksum"], 16)
    # The fork reached the node as a new database, and opens with sqlite3.
    wait_until(lambda: (n.mnt / "fork.db-pos").exists() and int(n.pos("fork.db")[1], 16) == int(fk["chk"], 16),
               timeout=10, msg="the fork never reached the node")
    assert run("sqlite3", n.db("fork.db"), "SELECT count(*) FROM t").stdout.strip() == str(fk["rows"])
    # No token in the service's log.
    log = srv.log_text() + short.log_text()
    for t in (token, other_token, short_token):
        assert t not in log
    assert (srv.data / "admin.key").stat().st_mode & 0o777 == 0o600
    # The admin view binds only loopback.
    r = run(LITEFS_CLOUD, "serve", "-addr", f"127.0.0.1:{free_port()}",
            "-data-dir", tmp_path / "refused", "-admin-addr", f"0.0.0.0:{free_port()}", check=False, timeout=20)
    assert r.returncode == 1 and "binds only loopback" in r.stderr
    print(f"dashboard test: {time.time() - t0:.1f} s, dashapi endpoints: {has_dashapi}, screenshots in {shots}")
