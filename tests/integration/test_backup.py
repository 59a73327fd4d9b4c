"""The node's backup client (src/node/backup.c) against a backup service.

FakeCloud is a small LiteFS Cloud compatible service written here with
http.server, keeping its state with the project's own `litefs ltx` tools:
GET /pos, POST /db/tx (contiguity checked, the file applied to a state
database with `ltx apply`, which verifies every checksum), GET
/db/snapshot (`ltx encode-db`), and a restore that appends a new TXID the
way litefs-cloud does. It lets the client's rules be tested in isolation,
including the failures a real service only shows by accident (5xx, 401,
truncated snapshots). The end-to-end tests against build/litefs-cloud are
in the second half of this file.
"""
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import LITEFS, ClusterNode, Cluster, db_checksum, free_port, run, wait_until, local_objects_only

TOKEN = "tok-secret"


def ltx_header(b):
    magic, flags, page_size, commit, min_txid, max_txid, ts, pre = struct.unpack(">4sIIIQQqQ", b[:48])
    assert magic == b"LTX1"
    return dict(page_size=page_size, commit=commit, min=min_txid, max=max_txid, ts=ts, pre=pre)


def ltx_post(b):
    return struct.unpack(">Q", b[-16:-8])[0]


class FakeCloud:
    """One cluster's databases, in memory plus files under `base`."""

    def __init__(self, base, token=TOKEN):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.lock = threading.Lock()
        self.dbs = {}          # name -> {"pos": (txid, chk), "files": [(path, hdr, post)], "state": Path}
        self.uploads = []      # (time, db, min, max, bytes)
        self.cluster_ids = set()
        self.fail_status = None    # answer every request with this status
        self.truncate_snapshots = False
        self.truncate_changes = False  # GET /db/changes: cut mid-body (else 404, as LiteFS Cloud)
        self.n_changes = 0
        self.n_truncated = 0  # snapshots cut
        self.down = False
        self.n = 0
        self.port = free_port()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body=b"", headers=()):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self, method):
                u = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if fake.down:  # a kept-alive connection outlives shutdown()
                    self.close_connection = True
                    return
                if fake.fail_status:
                    return self.reply(fake.fail_status, {"code": "EINTERNAL", "error": "down for the test"})
                if fake.token and self.headers.get("Authorization") != f"FlyV1 {fake.token}":
                    return self.reply(401, {"code": "EUNAUTHORIZED", "error": "bad token"})
                cid = self.headers.get("Litefs-Cluster-Id")
                if cid:
                    fake.cluster_ids.add(cid)
                if u.path == "/db/changes":
                    fake.n_changes += 1
                    if fake.truncate_changes:
                        self.send_response(200)
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                        self.wfile.write(b"LTX1" + b"\0" * 996)
                        self.wfile.flush()
                        self.close_connection = True
                        return
                status, out, headers = fake.handle(method, u.path, q, body)
                if u.path == "/db/snapshot" and status == 200 and fake.truncate_snapshots:
                    fake.n_truncated += 1
                    # Promise the whole body, send half, and close.
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out[: len(out) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.reply(status, out, headers)

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.down = True
        self.server.shutdown()
        self.server.server_close()

    def _tmp(self, suffix):
        self.n += 1
        return self.base / f"f{self.n:06d}{suffix}"

    # ---- the API ----------------------------------------------------------

    def handle(self, method, path, q, body):
        with self.lock:
            if method == "GET" and path == "/pos":
                return 200, {k: {"txid": f"{v['pos'][0]:016x}", "postApplyChecksum": f"{v['pos'][1]:016x}"}
                             for k, v in self.dbs.items()}, ()
            name = q.get("db", "")
            if method == "POST" and path == "/db/tx":
                return self._write_tx(name, body)
            if method == "GET" and path == "/db/snapshot":
                d = self.dbs.get(name)
                if not d:
                    return 404, {"code": "ENOTFOUND", "error": "no such database"}, ()
                out = self._tmp(".snap")
                run(LITEFS, "ltx", "encode-db", "-txid", str(d["pos"][0]), "-o", out, d["state"])
                return 200, out.read_bytes(), ()
            return 404, {"code": "ENOTFOUND", "error": "no such endpoint"}, ()

    def _write_tx(self, name, body):
        try:
            h = ltx_header(body)
        except Exception:
            return 400, {"code": "EINVALID", "error": "not an LTX file"}, ()
        d = self.dbs.get(name)
        pos = d["pos"] if d else (0, 0)
        if h["min"] != pos[0] + 1 or (h["min"] > 1 and h["pre"] != pos[1]):
            if not (h["min"] == 1 and d is None):
                return 409, {"code": "EPOSMISMATCH", "error": "position mismatch",
                             "pos": {"txid": f"{pos[0]:016x}", "postApplyChecksum": f"{pos[1]:016x}"}}, ()
        f = self._tmp(".ltx")
        f.write_bytes(body)
        state = d["state"] if d else self.base / f"state-{len(self.dbs)}.db"
        r = run(LITEFS, "ltx", "apply", "-db", state, f, check=False)
        if r.returncode != 0:
            return 400, {"code": "EINVALID", "error": r.stderr.strip()[-200:]}, ()
        if d is None:
            d = self.dbs[name] = {"files": [], "state": state}
        d["pos"] = (h["max"], ltx_post(body))
        d["files"].append((f, h, ltx_post(body)))
        self.uploads.append((time.time(), name, h["min"], h["max"], len(body)))
        return 200, b"", [("Litefs-Hwm", f"{h['max']:016x}")]

    # ---- test controls ------------------------------------------------------

    def pos(self, name="db"):
        with self.lock:
            d = self.dbs.get(name)
            return d["pos"] if d else None

    def restore(self, name, txid):
        """Restores `name` to its state at `txid` as a new transaction
        (a snapshot 1..N+1), as litefs-cloud does. Returns the new position."""
        with self.lock:
            d = self.dbs[name]
            files = d["files"]
            end = next(i for i, (_, h, _) in enumerate(files) if h["max"] == txid)
            start = max(i for i, (_, h, _) in enumerate(files[: end + 1]) if h["min"] == 1)
            state = self._tmp(".db")
            run(LITEFS, "ltx", "apply", "-db", state, *[f for f, _, _ in files[start:end + 1]])
            snap = self._tmp(".ltx")
            new_txid = d["pos"][0] + 1
            run(LITEFS, "ltx", "encode-db", "-txid", str(new_txid), "-o", snap, state)
            b = snap.read_bytes()
            d["state"] = state
            d["pos"] = (new_txid, ltx_post(b))
            d["files"].append((snap, ltx_header(b), ltx_post(b)))
            return d["pos"]


@pytest.fixture
def fake_cloud(tmp_path):
    c = FakeCloud(tmp_path / "fake-cloud")
    yield c
    c.close()


def backup_config(url, token=TOKEN, extra=""):
    return f"backup:\n  type: litefs-cloud\n  url: {url}\n  auth-token: {token}\n" + extra


def count_rows(path):
    return int(run("sqlite3", path, "SELECT count(*) FROM t").stdout.strip())


def hexpos(node, name="db"):
    txid, chk = node.pos(name)
    return txid, int(chk, 16)


def write_rows(node, n, start=0, name="db", service=None):
    """n transactions, one row each; returns [(txid, checksum, rows)] after
    each. With service (a FakeCloud), waits for each to be acknowledged, so
    that every TXID is an upload boundary there (the fake restores only to
    those)."""
    con = node.connect(name)
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    out = []
    for i in range(n):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"row {start + i} " + "x" * 200,))
        con.commit()
        txid, chk = hexpos(node, name)
        out.append((txid, chk, con.execute("SELECT count(*) FROM t").fetchone()[0]))
        if service:
            wait_until(lambda: service.pos(name) == (txid, chk), timeout=2)
    con.close()
    return out


# ---- against the fake service ---------------------------------------------------


def test_every_commit_is_pushed_within_a_second(node, fake_cloud):
    n = node(extra_config=backup_config(fake_cloud.url)).start()
    con = n.connect()
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    lat = []
    for i in range(20):
        con.execute("INSERT INTO t(v) VALUES (?)", (str(i),))
        con.commit()
        t0 = time.time()
        want = hexpos(n)
        wait_until(lambda: fake_cloud.pos() == want, timeout=1.0,
                   msg=lambda: f"service at {fake_cloud.pos()}, node at {want}\n{n.log_text()[-2000:]}")
        lat.append(time.time() - t0)
    con.close()
    # The service holds exactly the node's database.
    assert db_checksum(fake_cloud.dbs["db"]["state"]) == n.pos()[1]
    assert fake_cloud.cluster_ids == {(n.data / "clusterid").read_text().strip()}
    print(f"commit -> acknowledged: p50 {sorted(lat)[10] * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")


def test_backlog_is_compacted_into_one_upload(node, fake_cloud):
    n = node(extra_config=backup_config(fake_cloud.url)).start()
    write_rows(n, 1)
    wait_until(lambda: fake_cloud.pos() == hexpos(n), timeout=2)
    fake_cloud.fail_status = 503
    before = hexpos(n)
    write_rows(n, 30)
    time.sleep(0.5)
    assert fake_cloud.pos() == before
    fake_cloud.fail_status = None
    wait_until(lambda: fake_cloud.pos() == hexpos(n), timeout=8, msg=lambda: n.log_text()[-2000:])
    ups = [u for u in fake_cloud.uploads if u[2] > before[0]]
    assert ups[0][2] == before[0] + 1 and ups[0][3] - ups[0][2] >= 29, ups
    assert db_checksum(fake_cloud.dbs["db"]["state"]) == n.pos()[1]
    # One clear line for the failure, not one per retry.
    log = n.log_text()
    assert log.count("HTTP 503") == 1, log
    assert "reachable again" in log


def test_restore_on_the_service_reaches_primary_and_replica(cluster, fake_cloud):
    c = cluster(n=2, extra_config=backup_config(fake_cloud.url))
    points = write_rows(c.primary, 40, service=fake_cloud)
    c.wait_synced()
    wait_until(lambda: fake_cloud.pos() == hexpos(c.primary), timeout=2)
    for txid, chk, rows in [points[30], points[5], points[-1]]:
        t0 = time.time()
        new_pos = fake_cloud.restore("db", txid)
        # Nobody writes: the nodes must notice by themselves.
        for node in c.nodes:
            wait_until(lambda: hexpos(node) == new_pos, timeout=3,
                       msg=lambda: f"{node.name} at {node.pos_or_none()}, service {new_pos}\n" + c.describe())
        print(f"restore to {txid} reached both nodes in {(time.time() - t0) * 1000:.0f} ms")
        for node in c.nodes:
            assert run("sqlite3", node.db(), "PRAGMA integrity_check").stdout.strip() == "ok"
            assert count_rows(node.db()) == rows
            # The restored state's checksum is the one recorded at txid.
            assert int(run(LITEFS, "ltx", "checksum", node.db()).stdout.strip(), 16) == chk
    # Writes continue on the restored chain and reach the service.
    write_rows(c.primary, 3)
    wait_until(lambda: fake_cloud.pos() == hexpos(c.primary), timeout=2)
    c.wait_synced()
    assert "the service was ahead" in c.primary.log_text()
    assert "backup" not in c.replicas[0].log_text().replace("backup:", "")


def test_fresh_primary_restores_before_the_application_starts(tmp_path, node, fake_cloud):
    a = node("a", extra_config=backup_config(fake_cloud.url)).start()
    points = write_rows(a, 10)
    write_rows(a, 2, name="other")
    wait_until(lambda: fake_cloud.pos() == hexpos(a) and fake_cloud.pos("other") == hexpos(a, "other"), timeout=3)
    a.stop()
    # A new node, empty data dir: its application sees the databases.
    b = node("b", extra_config=backup_config(fake_cloud.url))
    out = tmp_path / "seen.txt"
    b.start(args=["--", "sh", "-c", f"sqlite3 {b.db()} 'SELECT count(*) FROM t' > {out}; sleep 60"])
    wait_until(lambda: out.exists() and out.read_text().strip(), timeout=10, msg=lambda: b.log_text())
    assert int(out.read_text()) == points[-1][2]
    assert hexpos(b) == fake_cloud.pos()
    assert hexpos(b, "other") == fake_cloud.pos("other")
    assert count_rows(b.db("other")) == 2


def test_service_errors_keep_local_data(node, fake_cloud):
    # Wrong token: a clear message, local writes unaffected.
    n = node(extra_config=backup_config(fake_cloud.url, token="wrong")).start()
    write_rows(n, 5)
    wait_until(lambda: "HTTP 401" in n.log_text(), timeout=3)
    assert fake_cloud.pos() is None
    assert count_rows(n.db()) == 5
    n.stop()
    # The right token: everything arrives.
    n.extra_config = backup_config(fake_cloud.url)
    n.write_config()
    n.start()
    wait_until(lambda: fake_cloud.pos() == hexpos(n), timeout=5, msg=lambda: n.log_text()[-2000:])
    points = write_rows(n, 3, start=10, service=fake_cloud)
    # A restore whose changes (GET /db/changes) are cut mid-body: nothing
    # changes, and the node asks again (no fallback to the snapshot: the
    # service itself failed).
    before = hexpos(n)
    fake_cloud.truncate_changes = True
    fake_cloud.restore("db", points[1][0])
    wait_until(lambda: fake_cloud.n_changes >= 3, timeout=8, msg=lambda: n.log_text()[-2000:])
    assert "GET /db/changes: transfer closed" in n.log_text()
    assert hexpos(n) == before
    assert count_rows(n.db()) == 8
    # Then the service answers 404 (no such endpoint, as LiteFS Cloud):
    # the snapshot is taken instead. One arriving truncated is refused;
    # nothing changes.
    fake_cloud.truncate_snapshots = True
    fake_cloud.truncate_changes = False
    # (The same kind of failure as the cut changes: logged at debug level.)
    wait_until(lambda: fake_cloud.n_truncated >= 1, timeout=8, msg=lambda: n.log_text()[-2000:])
    time.sleep(1)
    assert hexpos(n) == before
    assert count_rows(n.db()) == 8
    fake_cloud.truncate_snapshots = False
    wait_until(lambda: hexpos(n) == fake_cloud.pos(), timeout=8, msg=lambda: n.log_text()[-2000:])
    assert count_rows(n.db()) == points[1][2]
    # Service down entirely: the node keeps working and catches up.
    port = fake_cloud.port
    fake_cloud.close()
    write_rows(n, 5, start=100)
    time.sleep(1.5)
    log = n.log_text()
    assert "Empty reply" in log or "Couldn't connect" in log or "Connection refused" in log, log[-2000:]
    assert count_rows(n.db()) == points[1][2] + 5
    # It comes back (same port): the node catches up.
    fake2 = FakeCloud(fake_cloud.base.parent / "fake2")
    assert fake2.port != port  # a new service, empty: the node pushes everything
    n.stop()
    n.extra_config = backup_config(fake2.url)
    n.write_config()
    n.start()
    wait_until(lambda: fake2.pos() == hexpos(n), timeout=5, msg=lambda: n.log_text()[-2000:])
    assert db_checksum(fake2.dbs["db"]["state"]) == n.pos()[1]
    fake2.close()
    n.stop()


def test_retention_keeps_what_the_service_has_not_acknowledged(node, fake_cloud):
    n = node(extra_config=backup_config(fake_cloud.url) +
             "data:\n  retention: 1ms\n  retention-monitor-interval: 100ms\n")
    # data: is already in the base config; rebuild it with the keys inside.
    n.config.write_text(
        f"fuse:\n  dir: {n.mnt}\ndata:\n  dir: {n.data}\n  retention: 1ms\n  retention-monitor-interval: 100ms\n"
        f"http:\n  addr: 127.0.0.1:{n.port}\nlease:\n  type: static\n  candidate: true\n"
        + backup_config(fake_cloud.url))
    n.start()
    write_rows(n, 3)
    wait_until(lambda: fake_cloud.pos() == hexpos(n), timeout=3)
    fake_cloud.fail_status = 500
    acked = fake_cloud.pos()[0]
    # Segments rotate when older than retention/4 + 1 s: make several.
    for i in range(3):
        time.sleep(1.2)
        write_rows(n, 5, start=100 * i)
    time.sleep(0.5)  # several retention passes

    def first_txid():
        return int(n.segments()[0].name.split(".")[0], 16)
    assert len(n.segments()) >= 3, n.segments()
    # Kept: every record after the HWM, and the record at it (a push
    # resumes by checking the service's position against it).
    assert first_txid() <= acked, f"records from the HWM {acked} on were deleted (oldest kept {first_txid()})"
    fake_cloud.fail_status = None
    wait_until(lambda: fake_cloud.pos() == hexpos(n), timeout=10, msg=lambda: n.log_text()[-2000:])
    assert db_checksum(fake_cloud.dbs["db"]["state"]) == n.pos()[1]
    # Once acknowledged, the old segments go.
    time.sleep(1.2)
    write_rows(n, 1, start=999)
    wait_until(lambda: first_txid() > acked, timeout=5, msg=lambda: str(n.segments()))


# ---- end to end: two nodes and litefs-cloud -------------------------------------

def cloud_pos(srv, token, name="db"):
    """The service's position of name as (txid, checksum) ints, or None."""
    req = urllib.request.Request(srv.url + "/pos", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=5) as r:
        p = json.loads(r.read()).get(name)
    return (int(p["txid"], 16), int(p["postApplyChecksum"], 16)) if p else None


class Writer(threading.Thread):
    """Writes on the primary continuously, recording after every commit
    (txid, time in ms, checksum, rows). A pause of a few ms between commits
    makes every recorded time fall strictly between two commits."""

    def __init__(self, node, pause=0.004, name="db"):
        super().__init__(daemon=True)
        self.node, self.pause, self.dbname = node, pause, name
        self.points, self.stop_flag, self.error = [], threading.Event(), None

    def run(self):
        try:
            con = self.node.connect(self.dbname)
            con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
            con.commit()
            i = 0
            while not self.stop_flag.is_set():
                con.execute("INSERT INTO t(v) VALUES (?)", (f"w{i} " + "y" * (i % 500),))
                if i % 7 == 0:
                    con.execute("DELETE FROM t WHERE id = (SELECT min(id) FROM t)")
                con.commit()
                txid, chk = hexpos(self.node, self.dbname)
                rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
                self.points.append((txid, int(time.time() * 1000), chk, rows))
                i += 1
                time.sleep(self.pause)
            con.close()
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        assert self.error is None, self.error
        return self.points


def node_state(node, name="db"):
    """(checksum of -pos, integrity, rows) of a node's database."""
    chk = int(node.pos(name)[1], 16)
    integ = run("sqlite3", node.db(name), "PRAGMA integrity_check").stdout.strip()
    return chk, integ, count_rows(node.db(name))


def wait_state(c, chk, rows, timeout=5, name="db"):
    """Waits until every node holds the state with checksum chk; checks it."""
    t0 = time.time()
    for node in c.nodes:
        wait_until(lambda: node.pos_or_none(name) and int(node.pos(name)[1], 16) == chk, timeout=timeout,
                   msg=lambda: f"{node.name} never reached checksum {chk:016x}:\n" + c.describe(name))
    took = time.time() - t0
    for node in c.nodes:
        assert node_state(node, name) == (chk, "ok", rows), node.name
    return took


@pytest.fixture
def service(cloud):
    srv = cloud()
    srv.token = srv.create_cluster("prod")
    return srv


def test_e2e_restore_by_txid_and_timestamp_reaches_both_nodes(cluster, service, tmp_path):
    c = cluster(n=2, extra_config=backup_config(service.url, service.token))
    w = Writer(c.primary)
    w.start()
    time.sleep(3)
    points = w.finish()
    last = points[-1]
    assert len(points) > 100
    wait_until(lambda: cloud_pos(service, service.token) == (last[0], last[2]), timeout=3,
               msg=lambda: f"service at {cloud_pos(service, service.token)}, node at {last}")
    c.wait_synced()
    import random
    rnd = random.Random(len(points))
    timings = []
    for i, (kind, p) in enumerate([("txid", rnd.choice(points[:-1])), ("timestamp", rnd.choice(points[:-1])),
                                   ("txid", points[0]), ("timestamp", rnd.choice(points[:-1]))]):
        before = cloud_pos(service, service.token)
        arg = f"{p[0]:016x}" if kind == "txid" else str(p[1])
        service.cli("restore", "db", f"--{kind}", arg, token=service.token)
        timings.append(wait_state(c, p[2], p[3]))
        # The restore is a new transaction on every node.
        assert c.primary.pos()[0] == before[0] + 1
        assert c.replicas[0].pos() == c.primary.pos()
        if i == 0:
            # Undo it: restore to the position before it (the last write).
            service.cli("restore", "db", "--txid", f"{before[0]:016x}", token=service.token)
            timings.append(wait_state(c, last[2], last[3]))
    print("restore -> both nodes (s):", " ".join(f"{t:.2f}" for t in timings))
    # Writes go on from the restored state and reach the service.
    w2 = Writer(c.primary)
    w2.start()
    time.sleep(0.5)
    more = w2.finish()
    wait_until(lambda: cloud_pos(service, service.token) == (more[-1][0], more[-1][2]), timeout=3)
    c.wait_synced()
    # A fork appears on both nodes as a new database; an export opens.
    p = points[len(points) // 2]
    service.cli("restore", "db", "--txid", f"{p[0]:016x}", "--as", "fork", token=service.token)
    wait_state(c, p[2], p[3], name="fork")
    out = tmp_path / "export.db"
    service.cli("export", "db", "--txid", f"{p[0]:016x}", "-o", out, token=service.token)
    assert count_rows(out) == p[3]
    assert int(db_checksum(out), 16) == p[2]


def test_e2e_disaster_recovery_from_the_service(cluster, service):
    c = cluster(n=2, extra_config=backup_config(service.url, service.token))
    points = write_rows(c.primary, 30)
    write_rows(c.primary, 3, name="other")
    want = hexpos(c.primary)
    wait_until(lambda: cloud_pos(service, service.token) == want, timeout=3)
    other = hexpos(c.primary, "other")
    wait_until(lambda: cloud_pos(service, service.token, "other") == other, timeout=3)
    cluster_id = (c.primary.data / "clusterid").read_text().strip()
    c.stop()
    for n in c.nodes:
        shutil.rmtree(n.data)
    t0 = time.time()
    c.start()
    took = wait_state(c, want[1], points[-1][2], timeout=10)
    wait_state(c, other[1], 3, name="other")
    print(f"disaster recovery: both nodes back in {time.time() - t0:.2f} s ({took:.2f} after the mounts)")
    # The cluster took its ID back from the service, and goes on.
    assert (c.primary.data / "clusterid").read_text().strip() == cluster_id
    more = write_rows(c.primary, 5, start=500)
    wait_until(lambda: cloud_pos(service, service.token) == hexpos(c.primary), timeout=3,
               msg=lambda: c.primary.log_text()[-3000:])
    c.wait_synced()
    assert count_rows(c.replicas[0].db()) == more[-1][2]


def test_e2e_kill9_of_the_service_during_ingest(node, service):
    """Three databases (one in WAL mode) pushed at once while the service is
    killed with -9 three times: what /pos reported is never lost, and in
    the end the service holds every database's last state."""
    n = node(extra_config=backup_config(service.url, service.token)).start()
    names = ["db", "other", "walled"]
    con = n.connect("walled")
    con.execute("PRAGMA journal_mode=wal")
    con.close()
    writers = [Writer(n, pause=0, name=name) for name in names]
    for w in writers:
        w.start()
    for round_ in range(3):
        time.sleep(1.0)
        acked = {name: cloud_pos(service, service.token, name) for name in names}
        service.stop(signal.SIGKILL)
        time.sleep(0.3)
        service.start()
        for name in names:
            after = cloud_pos(service, service.token, name)
            assert acked[name] is None or (after is not None and after[0] >= acked[name][0]), \
                f"round {round_} {name}: {acked[name]} -> {after}"
    for name, w in zip(names, writers):
        points = w.finish()
        last = points[-1]
        wait_until(lambda: cloud_pos(service, service.token, name) == (last[0], last[2]), timeout=10,
                   msg=lambda: f"{name}: service {cloud_pos(service, service.token, name)}, node {last}\n"
                               f"{n.log_text()[-3000:]}")
        out = n.base / f"final-{name}.db"
        service.cli("export", name, "-o", out, token=service.token)
        assert int(db_checksum(out), 16) == last[2]
        assert run("sqlite3", out, "PRAGMA integrity_check").stdout.strip() == "ok"
        print(f"ingest of {name} with 3 kills: {len(points)} transactions, all on the service")


def test_e2e_push_latency(node, service):
    n = node(extra_config=backup_config(service.url, service.token)).start()
    con = n.connect()
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    lat = []
    for i in range(30):
        con.execute("INSERT INTO t(v) VALUES (?)", (str(i),))
        con.commit()
        t0 = time.time()
        want = hexpos(n)
        wait_until(lambda: cloud_pos(service, service.token) == want, timeout=1.0, interval=0.002,
                   msg=lambda: n.log_text()[-2000:])
        lat.append(time.time() - t0)
    con.close()
    lat.sort()
    print(f"commit -> on litefs-cloud: p50 {lat[15] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    # The node reports the service's high-water mark: /info and /metrics.
    txid = hexpos(n)[0]

    def hwm():
        with urllib.request.urlopen(f"http://127.0.0.1:{n.port}/info", timeout=5) as r:
            dbs = {d["name"]: d for d in json.loads(r.read())["databases"]}
        return dbs["db"]["backupHWM"]
    wait_until(lambda: hwm() == f"{txid:016x}", timeout=5, msg=lambda: f"backupHWM {hwm()} != {txid:016x}")
    with urllib.request.urlopen(f"http://127.0.0.1:{n.port}/metrics", timeout=5) as r:
        assert f'litefs_db_backup_hwm{{db="db"}} {txid}' in r.read().decode()


def test_e2e_restore_in_wal_mode_while_readers_stay_open(cluster, service):
    c = cluster(n=2, extra_config=backup_config(service.url, service.token))
    con = c.primary.connect()
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.close()
    points = write_rows(c.primary, 20)
    wait_until(lambda: cloud_pos(service, service.token) == hexpos(c.primary), timeout=3)
    c.wait_synced()
    # Long-lived connections on both nodes (idle between reads) see the
    # restored state without reopening.
    readers = [n.connect() for n in c.nodes]
    for r in readers:
        assert r.execute("SELECT count(*) FROM t").fetchone()[0] == points[-1][2]
    p = points[7]
    service.cli("restore", "db", "--txid", f"{p[0]:016x}", token=service.token)
    wait_state(c, p[1], p[2])
    for r in readers:
        assert r.execute("SELECT count(*) FROM t").fetchone()[0] == p[2]
        r.close()
    # The primary's application keeps writing in WAL mode after the restore.
    more = write_rows(c.primary, 3, start=50)
    wait_until(lambda: cloud_pos(service, service.token) == hexpos(c.primary), timeout=3)
    c.wait_synced()
    assert count_rows(c.replicas[0].db()) == more[-1][2] == p[2] + 3


def test_e2e_restore_by_changes_and_the_fallback_to_a_snapshot(cluster, service):
    """A restore on the service reaches the primary as the service's
    changes after its position (GET /db/changes: one transaction of the
    pages the restore changed), not a snapshot: two databases, WAL and
    rollback; the replica follows it as any commit. A node whose pages no
    longer match its position (the computed post-apply checksum is not
    the service's) refuses the changes and takes the snapshot."""
    c = cluster(n=2, extra_config=backup_config(service.url, service.token))
    con = c.primary.connect()
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.close()
    pw = write_rows(c.primary, 12)
    pr = write_rows(c.primary, 12, name="other")
    for name in ("db", "other"):
        wait_until(lambda: cloud_pos(service, service.token, name) == hexpos(c.primary, name), timeout=3)
    c.wait_synced()
    service.cli("restore", "db", "--txid", f"{pw[4][0]:016x}", token=service.token)
    service.cli("restore", "other", "--txid", f"{pr[2][0]:016x}", token=service.token)
    wait_state(c, pw[4][1], pw[4][2])
    wait_state(c, pr[2][1], pr[2][2], name="other")
    for name, last in (("db", pw[-1]), ("other", pr[-1])):
        assert c.primary.pos(name)[0] == last[0] + 1
        assert c.replicas[0].pos(name) == c.primary.pos(name)
    log = c.primary.log_text()
    for name in ("db", "other"):
        assert f"by its changes: the service was ahead\" db={name} " in log, log[-3000:]
    assert "restored from the backup service: the service was ahead" not in log, log[-3000:]
    assert "replacing the database with a snapshot" not in c.replicas[0].log_text()
    # Page 1 of "other" (rollback mode: every restore changes its change
    # counter) damaged in bytes SQLite leaves zero: the undo's changes
    # are refused, the snapshot heals the node, the replica follows.
    backing = c.primary.data / "dbs" / "other" / "db"
    with open(backing, "r+b") as f:
        f.seek(72)
        f.write(b"\xee" * 8)
    service.cli("restore", "other", "--txid", f"{pr[-1][0]:016x}", token=service.token)
    wait_state(c, pr[-1][1], pr[-1][2], name="other")
    log = c.primary.log_text()
    assert "cannot restore by the service's changes: taking its whole snapshot\" db=other" in log, log[-3000:]
    assert "restored from the backup service: the service was ahead\" db=other" in log, log[-3000:]
    with open(backing, "rb") as f:
        f.seek(72)
        assert f.read(8) == b"\0" * 8
    # Writes go on from the restored states and reach the service.
    more = write_rows(c.primary, 2, start=50)
    wait_until(lambda: cloud_pos(service, service.token) == hexpos(c.primary), timeout=3)
    c.wait_synced()
    assert count_rows(c.replicas[0].db()) == more[-1][2] == pw[4][2] + 2


def test_e2e_restore_while_the_primary_keeps_writing(cluster, service):
    """A restore races local commits: the service's new TXID collides with
    ones the primary made meanwhile (diverged), or is ahead of it. Either
    way the restore wins, and the cluster and the service converge."""
    c = cluster(n=2, extra_config=backup_config(service.url, service.token))
    w = Writer(c.primary, pause=0.002)
    w.start()
    wait_until(lambda: len(w.points) >= 90, timeout=20)
    target = w.points[len(w.points) // 3]
    service.cli("restore", "db", "--txid", f"{target[0]:016x}", token=service.token)
    restored_at = cloud_pos(service, service.token)
    time.sleep(2.0)
    points = w.finish()
    last = points[-1]
    wait_until(lambda: cloud_pos(service, service.token) == (last[0], last[2]), timeout=5,
               msg=lambda: f"service {cloud_pos(service, service.token)}, node {last}\n" + c.describe())
    c.wait_synced()
    for n in c.nodes:
        assert node_state(n) == (last[2], "ok", last[3])
    log = c.primary.log_text()
    assert "the service was ahead" in log or "the service had diverged" in log, log[-3000:]
    # The writer saw the restore: its row count fell back to about the
    # target's (it had three times as many rows when the restore was made).
    # (The writer itself never removes more than one row at a time.)
    drops = [(a, b) for a, b in zip(points, points[1:]) if b[3] < a[3] - 10]
    assert len(drops) == 1, drops
    assert drops[0][1][3] <= target[3] + 20, (target, restored_at, drops)


def test_environment_alone_turns_the_client_on(node, fake_cloud):
    n = node(env={"LITEFS_CLOUD_TOKEN": TOKEN, "LITEFS_CLOUD_ENDPOINT": fake_cloud.url}).start()
    write_rows(n, 3)
    wait_until(lambda: fake_cloud.pos() == hexpos(n), timeout=3, msg=lambda: n.log_text()[-2000:])


def test_e2e_retention_short_window(node, cloud):
    """Retention with a short window: every transaction inside it stays
    restorable to its exact checksum, older ones are refused as outside the
    window, and no stored object is wholly older than the window's start."""
    local_objects_only("checks what is left in the local objects directory")
    window_ms = 4000
    srv = cloud(args=("-retention", "4s", "-levels", "500ms,1s", "-snapshot-interval", "2s"))
    token = srv.create_cluster("prod")
    n = node(extra_config=backup_config(srv.url, token)).start()
    w = Writer(n, pause=0.02)
    w.start()
    time.sleep(7)
    points = w.finish()
    wait_until(lambda: cloud_pos(srv, token) == hexpos(n), timeout=5)
    time.sleep(1.5)  # a few maintenance passes after the last upload

    req = urllib.request.Request(srv.url + "/db/info?db=db", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=5) as r:
        info = json.loads(r.read())
    rest = info["restorable"]
    min_txid = int(rest["min_txid"], 16) if isinstance(rest["min_txid"], str) else int(rest["min_txid"])
    now = int(time.time() * 1000)
    assert rest["min_ts_ms"] >= now - window_ms - 3000, rest  # retention ran (slack: maintenance period)

    inside = [p for p in points if p[1] >= now - window_ms + 1500]
    outside = [p for p in points if p[1] < now - window_ms - 3000]
    assert inside and outside, (len(inside), len(outside))
    for txid, _, chk, _ in inside[:: max(1, len(inside) // 15)]:
        out = srv.cli("restore", "db", "--txid", f"{txid:016x}", "--check", token=token).stdout
        assert f"checksum={chk:016x}" in out, out
    for txid, _, _, _ in outside[:: max(1, len(outside) // 5)]:
        r = srv.cli("restore", "db", "--txid", f"{txid:016x}", "--check", token=token, check=False)
        assert r.returncode != 0 and "window" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr

    # On disk: what is older than the window is gone, except what rebuilds
    # its first state — the newest snapshot at or before it and the files
    # after that snapshot.
    def txid_of(v):
        return int(v, 16) if isinstance(v, str) else int(v)
    snaps = [txid_of(s["txid"]) for s in info.get("snapshots", []) if txid_of(s["txid"]) <= min_txid]
    base = max(snaps) if snaps else 1
    objs = list((srv.data / "objects").rglob("*.ltx"))
    assert objs
    for o in objs:
        lo, hi = (int(x, 16) for x in o.stem.split("-"))
        assert hi >= base, (f"{o} is older than the window and not needed to rebuild it "
                            f"(min restorable {min_txid:016x}, base snapshot {base:016x})")
    assert len(objs) < len(points), f"{len(objs)} objects for {len(points)} transactions: nothing was removed?"


def test_e2e_txid_inside_a_merged_backlog_is_not_restorable(node, service):
    """A backlog pushed as one merged upload: its end is restorable, a TXID
    inside it is 422 ENOTRESTORABLE naming the upload and the nearest
    restorable TXIDs (it was a misleading 404 "database not found"), and
    info lists the run as restorable at batch ends only."""
    tok = service.token
    n = node(extra_config=backup_config(service.url, tok)).start()
    write_rows(n, 2)
    wait_until(lambda: cloud_pos(service, tok) == hexpos(n), timeout=3)
    before = hexpos(n)
    service.stop()
    points = write_rows(n, 30, start=100)
    service.start()
    wait_until(lambda: cloud_pos(service, tok) == hexpos(n), timeout=10, msg=lambda: n.log_text()[-2000:])
    end = points[-1][0]
    x = before[0] + 5
    for args in (["--check"], []):
        r = service.cli("restore", "db", "--txid", f"{x:016x}", *args, token=tok, check=False)
        assert r.returncode == 1, r.stdout + r.stderr
        for want in ("ENOTRESTORABLE", "HTTP 422", f"{before[0] + 1:016x}-{end:016x}", f"{before[0]:016x}"):
            assert want in r.stderr, r.stderr
    req = urllib.request.Request(f"{service.url}/db/restore/check?db=db&txid={x}", headers={"Authorization": tok})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    body = json.loads(e.value.read())
    assert e.value.code == 422 and body["code"] == "ENOTRESTORABLE", body
    assert body["upload"] == {"min_txid": f"{before[0] + 1:016x}", "max_txid": f"{end:016x}"}, body
    assert body["nearest"]["before"]["txID"] == f"{before[0]:016x}", body
    assert body["nearest"]["before"]["postApplyChecksum"] == f"{before[1]:016x}", body
    assert body["nearest"]["after"]["txID"] == f"{end:016x}", body
    # Both nearest points restore (checked, not made).
    for p in (before[0], end):
        service.cli("restore", "db", "--txid", f"{p:016x}", "--check", token=tok)
    info = json.loads(service.cli("info", "db", token=tok).stdout)
    assert info["ranges"][-1] == {"from_txid": f"{before[0] + 1:016x}", "to_txid": f"{end:016x}",
                                  "restorable": "batch ends", "points": 1}, info["ranges"]
    assert info["ranges"][0]["restorable"] == "every transaction", info["ranges"]
