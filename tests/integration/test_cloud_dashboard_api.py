"""The dashboard's data endpoints of litefs-cloud (docs/cloud-api.md
"Dashboard"): GET /dbs, /db/timeline, /db/preview, /db/preview/rows and
/events, against a real `litefs-cloud serve` and a real node pushing a
workload written with Python's sqlite3 through the FUSE mount.

What the test records while it writes (TXID, checksum and row counts after
each commit, each waited for on the service so that it is an upload end)
is what the service's answers are compared with.
"""
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import run, wait_until
from test_backup import backup_config, cloud_pos, hexpos


def get(srv, path, token, method="GET"):
    """(status, JSON body, headers) of a request to the service."""
    req = urllib.request.Request(srv.url + path, method=method, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def ok(srv, path, token, method="GET"):
    status, body, _ = get(srv, path, token, method)
    assert status == 200, (path, status, body)
    return body


class Events(threading.Thread):
    """Reads GET /events (server-sent events) into a list of (event, data)."""

    def __init__(self, srv, token):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        self.conn.request("GET", "/events", headers={"Authorization": token})
        # The reply ends with the connection (Connection: close), so the
        # connection object lets go of its socket: keep it to close it.
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("Content-Type") == "text/event-stream"
        self.events, self.lock = [], threading.Lock()

    def run(self):
        ev, data = None, None
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    ev = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and ev:
                    with self.lock:
                        self.events.append((ev, data))
                    ev, data = None, None
        except Exception:  # the stream was closed under the reader
            pass

    def of(self, kind):
        with self.lock:
            return [d for e, d in self.events if e == kind]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.conn.close()


def commit_and_wait(srv, token, n, con, sql, args=()):
    con.execute(sql, args)
    con.commit()
    want = hexpos(n)
    wait_until(lambda: cloud_pos(srv, token) == want, timeout=5)
    return want


@pytest.fixture
def setup(node, cloud):
    """A service with short levels (compactions and snapshots within
    seconds), two clusters, and a node of `prod` pushing to it."""
    srv = cloud(args=("-levels", "500ms,1s", "-snapshot-interval", "2s"))
    token = srv.create_cluster("prod")
    other = srv.create_cluster("other")
    n = node(extra_config=backup_config(srv.url, token)).start()
    return srv, token, other, n


def test_dashboard_data(setup, tmp_path):
    srv, token, other, n = setup
    events = Events(srv, token)
    events.start()
    other_events = Events(srv, other)
    other_events.start()

    con = n.connect()
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.execute('CREATE TABLE "odd ""name"" ; --"(x)')
    con.execute("CREATE INDEX t_v ON t(v)")
    con.execute("CREATE VIEW tv AS SELECT id FROM t")
    # A view that never yields a row: only the time bound ends a query.
    con.execute("CREATE VIEW slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
                " SELECT x FROM c WHERE x < 0")
    con.commit()
    points = []  # (txid, checksum, rows of t, rows of odd)
    for i in range(40):
        if i % 3 == 0:
            con.execute('INSERT INTO "odd ""name"" ; --"(x) VALUES (?)', (i,))
        txid, chk = commit_and_wait(srv, token, n, con, "INSERT INTO t(v) VALUES (?)", (f"row {i}",))
        t_rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        odd_rows = con.execute('SELECT count(*) FROM "odd ""name"" ; --"').fetchone()[0]
        points.append((txid, chk, t_rows, odd_rows))
    # Values of every kind, and a text longer than the preview shows.
    con.execute("CREATE TABLE kinds(i INTEGER, r REAL, s TEXT, b BLOB, z)")
    con.execute("INSERT INTO kinds VALUES (?, ?, ?, ?, NULL)", (7, 2.5, "é" * 3000, bytes(range(64))))
    con.commit()
    # A burst without waiting: more positions for the timeline.
    for i in range(150):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"burst {i}",))
        con.commit()
    last = hexpos(n)
    wait_until(lambda: cloud_pos(srv, token) == last, timeout=10)
    time.sleep(3)  # a few maintenance passes: compactions and a snapshot

    # A database in WAL mode previews too (its header says WAL).
    wcon = n.connect("walled")
    wcon.execute("PRAGMA journal_mode=wal")
    wcon.execute("CREATE TABLE w(x)")
    wcon.executemany("INSERT INTO w VALUES (?)", [(i,) for i in range(33)])
    wcon.commit()
    wcon.close()
    wpos = hexpos(n, "walled")
    wait_until(lambda: cloud_pos(srv, token, "walled") == wpos, timeout=10)
    wpv = ok(srv, "/db/preview?db=walled", token)
    assert [(t["name"], t["rows"]) for t in wpv["tables"]] == [("w", 33)], wpv
    assert ok(srv, "/db/preview/rows?db=walled&table=w&limit=2", token)["rows"] == [[0], [1]]

    # ---- GET /dbs
    dbs = ok(srv, "/dbs", token)
    assert [d["name"] for d in dbs["databases"]] == ["db", "walled"]
    d = dbs["databases"][0]
    assert (int(d["txid"], 16), int(d["checksum"], 16)) == last
    assert d["hwm"] == d["txid"]
    assert d["size"] == d["page_size"] * d["pages"] == os.path.getsize(n.db())
    assert d["restorable"]["max_txid"] == d["txid"]
    assert int(d["restorable"]["min_txid"], 16) == 1
    assert d["restorable"]["min_ts_ms"] <= d["restorable"]["max_ts_ms"] <= dbs["now_ms"]
    assert d["transactions"] >= 40
    assert d["history_bytes"] > d["size"] // 4
    assert d["pushing"] is True and d["last_push_ms"] <= dbs["now_ms"]
    assert abs(d["ts_ms"] - dbs["now_ms"]) < 60000

    # ---- GET /db/timeline: every recorded point, then buckets
    tl = ok(srv, "/db/timeline?db=db&max=5000", token)
    assert tl["mode"] == "transactions"
    txs = tl["transactions"]
    assert len(txs) == d["transactions"] == tl["count"]
    listed = {int(t["txid"], 16) for t in txs}
    assert {p[0] for p in points} <= listed
    assert all(t["restorable"] for t in txs)
    assert [t["ts_ms"] for t in txs] == sorted(t["ts_ms"] for t in txs)
    assert tl["window"]["max_txid"] == d["txid"] and tl["from_ms"] == tl["window"]["min_ts_ms"]
    assert tl["snapshots"], tl["snapshots"]
    assert tl["compactions"], tl
    assert {c["level"] for c in tl["compactions"]} <= {1, 2}
    for c in tl["compactions"]:
        assert int(c["from_txid"], 16) <= int(c["to_txid"], 16) and c["from_ms"] <= c["to_ms"]
    bk = ok(srv, "/db/timeline?db=db&max=8", token)
    assert bk["mode"] == "buckets"
    assert 1 <= len(bk["buckets"]) <= 9
    assert sum(b["count"] for b in bk["buckets"]) == len(txs)
    assert sum(b["bytes"] for b in bk["buckets"]) == sum(t["size"] for t in txs)
    assert bk["buckets"][0]["first_txid"] == txs[0]["txid"] and bk["buckets"][-1]["last_txid"] == txs[-1]["txid"]
    # A sub-range holds exactly the positions inside it.
    mid = txs[len(txs) // 3]["ts_ms"], txs[2 * len(txs) // 3]["ts_ms"]
    sub = ok(srv, f"/db/timeline?db=db&from_ms={mid[0]}&to_ms={mid[1]}&max=5000", token)
    assert [t["txid"] for t in sub["transactions"]] == [t["txid"] for t in txs if mid[0] <= t["ts_ms"] <= mid[1]]

    # ---- GET /db/preview at several points: the row counts recorded then
    for p in (points[0], points[13], points[27], points[-1]):
        pv = ok(srv, f"/db/preview?db=db&txid={p[0]:016x}", token)
        assert int(pv["txid"], 16) == p[0] and pv["truncated"] is False
        by = {(o["type"], o["name"]): o for o in pv["tables"]}
        assert by[("table", "t")]["rows"] == p[2]
        assert by[("table", 'odd "name" ; --')]["rows"] == p[3]
        assert by[("index", "t_v")]["tbl_name"] == "t" and "rows" not in by[("index", "t_v")]
        assert by[("view", "tv")]["sql"].startswith("CREATE VIEW")
    ts_point = next(t for t in txs if int(t["txid"], 16) == points[20][0])
    pv = ok(srv, f"/db/preview?db=db&timestamp={ts_point['ts_ms']}", token)
    assert int(pv["txid"], 16) >= points[20][0]

    # ---- GET /db/preview/rows
    p = points[13]
    q = urllib.parse.quote
    rows = ok(srv, f"/db/preview/rows?db=db&txid={p[0]}&table=t&limit=5&offset=2", token)
    assert rows["columns"] == ["id", "v"] and rows["total"] == p[2]
    assert rows["rows"] == [[3, "row 2"], [4, "row 3"], [5, "row 4"], [6, "row 5"], [7, "row 6"]]
    assert rows["limit"] == 5 and rows["offset"] == 2
    odd_name = q('odd "name" ; --')
    odd = ok(srv, f"/db/preview/rows?db=db&txid={p[0]}&table={odd_name}", token)
    assert odd["rows"] == [[0], [3], [6], [9], [12]] and odd["total"] == p[3]
    view = ok(srv, "/db/preview/rows?db=db&table=tv&limit=1", token)
    assert view["rows"] == [[1]]
    t0 = time.monotonic()
    slow = ok(srv, "/db/preview/rows?db=db&table=slow", token)
    assert (slow["rows"], slow["truncated"], slow["total"]) == ([], True, None), slow
    assert time.monotonic() - t0 < 30  # two bounds of 2 s, on a loaded machine
    k = ok(srv, "/db/preview/rows?db=db&table=kinds", token)["rows"][0]
    assert k[0] == 7 and k[1] == 2.5 and k[4] is None
    assert k[2]["truncated"] is True and k[2]["size"] == 6000 and len(k[2]["text"].encode()) <= 1024
    assert k[3] == {"blob": True, "size": 64, "hex": bytes(range(32)).hex()}

    # ---- hostile names and parameters: refused cleanly, nothing changed
    quote_dash = q('t" --')
    for path, status, code in [
        (f"/db/preview/rows?db=db&txid={p[0]}&table={q('t; DROP TABLE t')}", 404, "ENOTFOUND"),
        (f"/db/preview/rows?db=db&txid={p[0]}&table={quote_dash}", 404, "ENOTFOUND"),
        (f"/db/preview/rows?db=db&table={q('sqlite_schema')}", 404, "ENOTFOUND"),
        (f"/db/preview/rows?db=db&table=t_v", 404, "ENOTFOUND"),
        ("/db/preview/rows?db=db&table=t%00x", 400, "EINVALID"),
        ("/db/preview/rows?db=db", 400, "EINVALID"),
        ("/db/preview/rows?db=db&table=t&limit=0", 400, "EINVALID"),
        ("/db/preview/rows?db=db&table=t&limit=100000", 400, "EINVALID"),
        ("/db/preview/rows?db=db&table=t&offset=-1", 400, "EINVALID"),
        ("/db/preview/rows?db=db&table=" + "x" * 2000, 400, "EINVALID"),
        ("/db/preview?db=db&txid=zz", 400, "EINVALID"),
        ("/db/preview?db=db&txid=99999999", 404, "EWINDOW"),
        ("/db/preview?db=..%2Fetc", 400, "EINVALID"),
        ("/db/preview?db=nope", 404, "ENOTFOUND"),
        ("/db/timeline?db=db&max=0", 400, "EINVALID"),
        ("/db/timeline?db=db&max=5001", 400, "EINVALID"),
        ("/db/timeline?db=db&from_ms=2000&to_ms=1000", 400, "EINVALID"),
        ("/db/timeline?db=db&from_ms=yesterday", 400, "EINVALID"),
        ("/db/timeline?db=nope", 404, "ENOTFOUND"),
    ]:
        got, body, _ = get(srv, path, token)
        assert (got, body["code"]) == (status, code), (path, got, body)
    assert ok(srv, f"/db/preview?db=db&txid={p[0]}", token)["tables"]

    # ---- restore in place: the new TXID, the undo point, events, the node
    before = cloud_pos(srv, token)
    target = points[13]
    r = ok(srv, f"/db/restore?db=db&txid={target[0]:016x}", token, method="POST")
    assert int(r["txID"], 16) == before[0] + 1 and int(r["undo_txid"], 16) == before[0]
    assert int(r["postApplyChecksum"], 16) == target[1]
    wait_until(lambda: int(n.pos()[1], 16) == target[1], timeout=10)
    # The primary took the restored state from the service: a fetch event.
    wait_until(lambda: any(e["db"] == "db" and e["txid"] == r["txID"] for e in events.of("fetch")), timeout=5)
    undo = ok(srv, f"/db/restore?db=db&txid={r['undo_txid']}", token, method="POST")
    assert int(undo["postApplyChecksum"], 16) == before[1] and int(undo["undo_txid"], 16) == before[0] + 1
    wait_until(lambda: int(n.pos()[1], 16) == before[1], timeout=10)
    wait_until(lambda: len(events.of("restore")) >= 2, timeout=5)
    rs = events.of("restore")
    assert rs[0]["db"] == "db" and rs[0]["txid"] == r["txID"] and rs[0]["undo_txid"] == r["undo_txid"]
    pos_events = events.of("pos")
    assert {(int(e["txid"], 16)) for e in pos_events} >= {p[0] for p in points}
    assert any(e["txid"] == r["txID"] and e["checksum"] == r["postApplyChecksum"] for e in pos_events)
    assert all(set(e) == {"db", "txid", "checksum", "ts_ms", "hwm"} for e in pos_events)

    # ---- a download of a past state carries its size
    req = urllib.request.Request(srv.url + f"/db/snapshot?db=db&format=sqlite&txid={target[0]}",
                                 headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
        assert int(resp.headers["Content-Length"]) == len(body) > 0
    out = tmp_path / "dl.db"
    out.write_bytes(body)
    assert int(run("sqlite3", out, "SELECT count(*) FROM t").stdout) == target[2]

    # ---- a fork appears
    ok(srv, f"/db/restore?db=db&txid={points[5][0]}&as=fork", token, method="POST")
    fork = {d["name"]: d for d in ok(srv, "/dbs", token)["databases"]}["fork"]
    assert int(fork["txid"], 16) == 1 and int(fork["checksum"], 16) == points[5][1] and fork["transactions"] == 1
    fork_tables = {t["name"]: t.get("rows") for t in ok(srv, "/db/preview?db=fork", token)["tables"]}
    assert fork_tables["t"] == points[5][2]
    wait_until(lambda: any(e["db"] == "fork" and int(e["txid"], 16) == 1 for e in events.of("pos")), timeout=5)

    # ---- another cluster's token sees nothing of this one
    assert ok(srv, "/dbs", other)["databases"] == []
    for path in ("/db/timeline?db=db", "/db/preview?db=db", "/db/preview/rows?db=db&table=t"):
        status, body, _ = get(srv, path, other)
        assert (status, body["code"]) == (404, "ENOTFOUND"), (path, body)
    assert get(srv, "/dbs", "lfsc_not_a_token")[0] == 401
    assert get(srv, "/events", "lfsc_not_a_token")[0] == 401
    time.sleep(0.3)
    assert other_events.events == []

    # ---- the other cluster's own database: listed, deleted, its index
    # dropped; its events reach only its own stream
    up = urllib.request.Request(srv.url + "/db/upload?db=db", data=out.read_bytes(), method="POST",
                                headers={"Authorization": other})
    with urllib.request.urlopen(up, timeout=30) as resp:
        assert resp.status == 200
    mine = ok(srv, "/dbs", other)["databases"]
    assert [(x["name"], x["transactions"]) for x in mine] == [("db", 1)]
    other_tables = {t["name"]: t.get("rows") for t in ok(srv, "/db/preview?db=db", other)["tables"]}
    assert other_tables["t"] == target[2]
    ok(srv, "/db?db=db", other, method="DELETE")
    assert ok(srv, "/dbs", other)["databases"] == []
    assert get(srv, "/db/timeline?db=db", other)[0] == 404
    wait_until(lambda: other_events.of("delete") == [{"db": "db"}], timeout=5)
    assert len(other_events.of("pos")) == 1
    assert events.of("delete") == []
    assert ok(srv, "/dbs", token)["databases"][0]["txid"] == f"{cloud_pos(srv, token)[0]:016x}"
    events.close()
    other_events.close()


def test_event_streams_are_bounded(setup):
    srv, token, other, n = setup
    streams = [Events(srv, token) for _ in range(8)]
    status, body, _ = get(srv, "/events", token)
    assert (status, body["code"]) == (429, "EBUSY"), body
    # Another cluster has its own allowance; a closed stream frees its place.
    extra = Events(srv, other)
    streams[0].close()
    wait_until(lambda: get_status_stream(srv, token), timeout=5)
    for s in streams[1:] + [extra]:
        s.close()


def get_status_stream(srv, token):
    """True once a new stream of token's cluster is admitted (then closed)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    c.request("GET", "/events", headers={"Authorization": token})
    sock = c.sock
    r = c.getresponse()
    sock.close()
    c.close()
    return r.status == 200


def test_timeline_follows_retention(node, cloud):
    """With a 3 s retention window, the index drops what retention
    removed: the timeline's window is /db/info's restorable range."""
    srv = cloud(args=("-retention", "3s", "-levels", "500ms,1s", "-snapshot-interval", "2s"))
    token = srv.create_cluster("prod")
    n = node(extra_config=backup_config(srv.url, token)).start()
    con = n.connect()
    con.execute("CREATE TABLE t(x)")
    con.commit()
    first = None
    t_end = time.time() + 6
    while time.time() < t_end:
        con.execute("INSERT INTO t VALUES (1)")
        con.commit()
        if first is None:
            wait_until(lambda: cloud_pos(srv, token) == hexpos(n), timeout=5)
            first = ok(srv, "/db/timeline?db=db&max=5000", token)  # builds the index early
        time.sleep(0.02)
    wait_until(lambda: cloud_pos(srv, token) == hexpos(n), timeout=5)

    def same_window():
        info = ok(srv, "/db/info?db=db", token)
        tl = ok(srv, "/db/timeline?db=db&max=5000", token)
        return (int(info["restorable"]["min_txid"], 16) > 1 and
                tl["window"]["min_txid"] == info["restorable"]["min_txid"] and
                tl["count"] == info["transactions"] == len(tl["transactions"]))
    wait_until(same_window, timeout=10)
    assert first["window"]["min_txid"] == f"{1:016x}"
