"""The real LiteFS 0.5.14 (../shared/reference/litefs-0.5.14) against
litefs-cloud: a static-lease primary on a real FUSE mount that backs up
through LITEFS_CLOUD_ENDPOINT / LITEFS_CLOUD_TOKEN, as Fly.io's users ran it.

What LiteFS does differently from our node, and what these tests pin down:
- it sends about a second of transactions as ONE LTX file, so only batch
  ends are restorable; a TXID inside a batch is 422 ENOTRESTORABLE naming
  the upload and the nearest restorable points;
- it notices a restore made on the service only at its own full sync,
  every 10 s when idle (our node: about 1 s), so the restores below are
  made together and waited for once;
- a LiteFS node whose data directory was lost makes a new cluster ID that
  the service refuses (422) until `litefs-cloud cluster rebind`.
"""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, is_mounted, run, wait_until

REAL_LITEFS = Path(os.environ.get("LITEFS_REAL_BIN", ROOT.parent / "shared" / "reference" / "litefs-0.5.14"))

pytestmark = pytest.mark.skipif(not os.access(REAL_LITEFS, os.X_OK),
                                reason=f"the real LiteFS binary is missing: {REAL_LITEFS}")


class RealLiteFS:
    """One `litefs-0.5.14 mount` primary with the static lease and its own
    litefs.yml, mount, data directory and HTTP port."""

    def __init__(self, base, url, token, name="real"):
        self.base = Path(base) / name
        self.base.mkdir(parents=True, exist_ok=True)
        self.mnt, self.data = self.base / "mnt", self.base / "data"
        self.port = free_port()
        self.config = self.base / "litefs.yml"
        self.log = self.base / "litefs.log"
        self.config.write_text(
            f"fuse:\n  dir: {self.mnt}\n"
            f"data:\n  dir: {self.data}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            f"lease:\n  type: static\n  candidate: true\n  advertise-url: http://127.0.0.1:{self.port}\n")
        self.env = dict(os.environ, LITEFS_CLOUD_ENDPOINT=url, LITEFS_CLOUD_TOKEN=token)
        self.proc = None

    def start(self):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([str(REAL_LITEFS), "mount", "-config", str(self.config)],
                                     stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        wait_until(lambda: self.proc.poll() is not None or (is_mounted(self.mnt) and "mounted to" in self.log_text()),
                   timeout=20, msg=lambda: "LiteFS did not mount:\n" + self.log_text()[-3000:])
        assert self.proc.poll() is None, self.log_text()[-3000:]
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.logf.close()
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pos(self, name):
        """(txid, checksum) ints from `<name>-pos`, or None."""
        try:
            txid, chk = (self.mnt / f"{name}-pos").read_text().strip().split("/")
        except (OSError, ValueError):
            return None
        return int(txid, 16), int(chk, 16)


def cloud_get(srv, path, token):
    """(status, JSON) of a GET on the service."""
    req = urllib.request.Request(srv.url + path, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def cloud_pos(srv, token, name):
    p = cloud_get(srv, "/pos", token)[1].get(name)
    return (int(p["txid"], 16), int(p["postApplyChecksum"], 16)) if p else None


def state(db_path):
    """What a database holds: (integrity, rows of t, sum of their lengths)."""
    out = run("sqlite3", db_path, "PRAGMA integrity_check; SELECT count(*), coalesce(sum(length(v)), 0) FROM t")
    integ, rows = out.stdout.strip().split("\n")
    n, total = rows.split("|")
    return integ, int(n), int(total)


def synced(lfs, srv, token, name, timeout=10):
    """Waits until the service's position of name is the node's -pos (a
    batch end: LiteFS's upload of everything so far was acknowledged);
    returns (txid, checksum, ms after it was reached, state)."""
    wait_until(lambda: lfs.pos(name) is not None and cloud_pos(srv, token, name) == lfs.pos(name), timeout=timeout,
               msg=lambda: f"{name}: node {lfs.pos(name)}, service {cloud_pos(srv, token, name)}\n"
                           + lfs.log_text()[-2000:])
    txid, chk = lfs.pos(name)
    at_ms = int(time.time() * 1000)
    time.sleep(0.05)  # the next commit is strictly after at_ms
    return txid, chk, at_ms, state(lfs.mnt / name)


def sql(lfs, name, *stmts):
    run("sqlite3", lfs.mnt / name, ";".join(stmts))


def insert_rows(lfs, name, n, tag, pause=0.0):
    """n single-row transactions, each its own sqlite3 connection."""
    import sqlite3
    con = sqlite3.connect(str(lfs.mnt / name), timeout=30, isolation_level=None)
    for i in range(n):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"{tag}-{i}",))
        if pause:
            time.sleep(pause)
    con.close()


@pytest.fixture
def service(cloud):
    srv = cloud()
    srv.token = srv.create_cluster("prod")
    return srv


@pytest.fixture
def real(tmp_path, service):
    made = []

    def make(name="real"):
        n = RealLiteFS(tmp_path, service.url, service.token, name)
        made.append(n)
        return n.start()

    yield make
    for n in made:
        n.stop()


def test_real_litefs_backup_batches_kill9_and_restore(real, service):
    tok = service.token
    lfs = real()
    # A WAL and a DELETE (rollback journal) database.
    sql(lfs, "w.db", "PRAGMA journal_mode=WAL", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    sql(lfs, "d.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    assert run("sqlite3", lfs.mnt / "w.db", "PRAGMA journal_mode").stdout.strip() == "wal"
    assert run("sqlite3", lfs.mnt / "d.db", "PRAGMA journal_mode").stdout.strip() == "delete"

    # Single-row transactions; the points where the service caught up are
    # batch ends, so restorable.
    insert_rows(lfs, "w.db", 10, "a")
    insert_rows(lfs, "d.db", 10, "a")
    w_a = synced(lfs, service, tok, "w.db")
    d_a = synced(lfs, service, tok, "d.db")
    # Twenty commits within well under a second: LiteFS uploads them in
    # one or two files, and TXIDs inside are not restorable.
    insert_rows(lfs, "w.db", 20, "b")
    w_b = synced(lfs, service, tok, "w.db")
    # One multi-MB transaction in the DELETE database.
    sql(lfs, "d.db", "INSERT INTO t(v) SELECT randomblob(4 * 1024 * 1024)")
    d_b = synced(lfs, service, tok, "d.db")
    assert d_b[3][2] >= 4 * 1024 * 1024 + 30

    # A TXID inside a batch: 422 ENOTRESTORABLE with the covering upload
    # and the nearest restorable points, in the API, --check and restore.
    inside = None
    for x in range(w_a[0] + 1, w_b[0]):
        code, body = cloud_get(service, f"/db/restore/check?db=w.db&txid={x}", tok)
        if code == 422:
            inside = (x, body)
            break
        assert code == 200, body
    assert inside, f"LiteFS uploaded each of TXIDs {w_a[0] + 1}..{w_b[0]} alone; expected a batch"
    x, body = inside
    assert body["code"] == "ENOTRESTORABLE", body
    lo, hi = int(body["upload"]["min_txid"], 16), int(body["upload"]["max_txid"], 16)
    before, after = (int(body["nearest"][k]["txID"], 16) for k in ("before", "after"))
    assert before < lo <= x < hi == after <= w_b[0], body
    for args in (["--check"], []):
        r = service.cli("restore", "w.db", "--txid", f"{x:016x}", *args, token=tok, check=False)
        assert r.returncode == 1, r.stderr
        for want in ("ENOTRESTORABLE", "HTTP 422", f"{lo:016x}-{hi:016x}", f"{before:016x}", f"{after:016x}"):
            assert want in r.stderr, r.stderr
    info = json.loads(service.cli("info", "w.db", token=tok).stdout)
    kinds = {r["restorable"] for r in info["ranges"]}
    assert "batch ends" in kinds, info["ranges"]
    assert any(int(r["from_txid"], 16) <= x <= int(r["to_txid"], 16) and r["restorable"] == "batch ends"
               for r in info["ranges"]), info["ranges"]

    # kill -9 of the service while LiteFS writes; a restart; LiteFS
    # catches up and nothing is lost.
    stop = threading.Event()
    errors = []

    def writer():
        try:
            i = 0
            while not stop.is_set():
                insert_rows(lfs, "w.db", 1, f"k{i}")
                i += 1
                time.sleep(0.005)
        except Exception as e:  # reported below
            errors.append(e)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(0.8)
    service.stop(signal.SIGKILL)
    time.sleep(0.5)
    service.start()
    time.sleep(0.8)
    stop.set()
    t.join(30)
    assert not errors, errors
    w_k = synced(lfs, service, tok, "w.db", timeout=20)
    assert w_k[3][1] > w_b[3][1] + 10
    exported = lfs.base / "w-after-kill.db"
    service.cli("export", "w.db", "-o", exported, token=tok)
    assert state(exported) == w_k[3]

    # Two restores at once (one by TXID, one by timestamp), so LiteFS's
    # 10-second check is waited for once.
    service.cli("restore", "w.db", "--txid", f"{w_a[0]:016x}", token=tok)
    r = service.cli("restore", "d.db", "--timestamp", str(d_a[2]), "--check", token=tok)
    assert f"{d_a[0]:016x}" in r.stdout and f"{d_a[1]:016x}" in r.stdout, r.stdout
    service.cli("restore", "d.db", "--timestamp", str(d_a[2]), token=tok)
    t0 = time.time()
    for name, want in (("w.db", w_a), ("d.db", d_a)):
        wait_until(lambda: lfs.pos(name) == cloud_pos(service, tok, name), timeout=25,
                   msg=lambda: f"{name}: node {lfs.pos(name)}, service {cloud_pos(service, tok, name)}\n"
                               + lfs.log_text()[-2000:])
        assert lfs.pos(name)[1] == want[1]
        assert state(lfs.mnt / name) == want[3]
    print(f"restores reached the LiteFS node in {time.time() - t0:.1f} s")


def test_real_litefs_disaster_recovery_with_rebind(real, service):
    tok = service.token
    lfs = real()
    sql(lfs, "w.db", "PRAGMA journal_mode=WAL", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    sql(lfs, "d.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    insert_rows(lfs, "w.db", 5, "w")
    insert_rows(lfs, "d.db", 7, "d")
    saved = {name: synced(lfs, service, tok, name) for name in ("w.db", "d.db")}
    old_id = (lfs.data / "clusterid").read_text().strip()
    lfs.stop()

    # The data directory is lost: LiteFS starts with a new cluster ID and
    # is refused; the reply names both ways out.
    import shutil
    shutil.rmtree(lfs.data)
    lfs.start()
    wait_until(lambda: "ECLUSTERID" in service.log_text() or "cluster ID mismatch" in lfs.log_text(), timeout=10,
               msg=lambda: lfs.log_text()[-2000:])
    new_id = (lfs.data / "clusterid").read_text().strip()
    assert new_id != old_id
    refusal = wait_until(lambda: [l for l in lfs.log_text().splitlines() if "cluster ID mismatch" in l], timeout=5,
                         msg=lambda: lfs.log_text()[-2000:])[-1]
    for want in (old_id, new_id, "clusterid", "litefs-cloud cluster rebind prod"):
        assert want in refusal, refusal
    assert not (lfs.mnt / "w.db").exists()
    # Rebind: the empty node takes the cluster and its databases back.
    r = service.cli("cluster", "rebind", "prod", "-window", "2m")
    assert "rebind open until" in r.stderr, r.stderr
    for name, w in saved.items():
        wait_until(lambda: lfs.pos(name) == (w[0], w[1]), timeout=10,
                   msg=lambda: f"{name}: {lfs.pos(name)}\n" + lfs.log_text()[-2000:])
        assert state(lfs.mnt / name) == w[3]
    listing = service.cli("cluster", "list").stdout
    assert new_id in listing and old_id not in listing, listing
    # The node goes on under its new ID: writes reach the service.
    insert_rows(lfs, "w.db", 3, "after")
    synced(lfs, service, tok, "w.db")
    # The old ID is now the refused one, and without an open window the
    # reply says how to get out.
    req = urllib.request.Request(service.url + "/pos", headers={"Authorization": tok, "Litefs-Cluster-Id": old_id})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(e.value.read())
    assert e.value.code == 422 and body["code"] == "ECLUSTERID", body
    assert "cluster rebind prod" in body["error"] and "clusterid" in body["error"], body

    # In a new window, a node that uploads before it took anything holds
    # data of its own: refused for the window, and the slot stays free for
    # a node that only reads; the bound ID keeps working meanwhile.
    service.cli("cluster", "rebind", "prod")
    other, empty = "LFSC00000000000000AA", "LFSC00000000000000BB"

    def req(method, path, cid, data=None):
        rq = urllib.request.Request(service.url + path, method=method, data=data,
                                    headers={"Authorization": tok, "Litefs-Cluster-Id": cid})
        try:
            with urllib.request.urlopen(rq, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
    code, body = req("POST", "/db/tx?db=w.db", other, data=b"LTX1" + b"\0" * 96)
    assert code == 422 and "data of its own" in body["error"], body
    code, body = req("GET", "/pos", other)
    assert code == 422 and "data of its own" in body["error"], body
    code, body = req("GET", "/pos", empty)
    assert code == 200 and "w.db" in body, body
    assert new_id in service.cli("cluster", "list").stdout
    insert_rows(lfs, "w.db", 1, "still")
    synced(lfs, service, tok, "w.db")
