"""The node's HTTP API (/info, /metrics, /import, /export) and the
`litefs import` / `litefs export` commands, against a real `litefs mount`,
with the sqlite3 CLI and Python's sqlite3 as clients."""
import json
import os
import random
import re
import socket
import sqlite3
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import LITEFS, check_invariants, run


# ---- helpers ---------------------------------------------------------------

def url(n, path, **query):
    q = urllib.parse.urlencode(query)
    return f"http://127.0.0.1:{n.port}{path}" + (f"?{q}" if q else "")


def http(n, method, path, body=None, raw_query=None, headers=None, **query):
    """Returns (status, headers, body bytes); never raises on HTTP errors."""
    u = url(n, path, **query)
    if raw_query is not None:
        u = f"http://127.0.0.1:{n.port}{path}?{raw_query}"
    req = urllib.request.Request(u, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def json_error(status_body):
    status, headers, body = status_body
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert isinstance(doc["error"], str) and doc["error"]
    return status, doc["error"]


def make_source(path, rows=1500, page_size=4096, wal=False, seed=1):
    """A SQLite file with several tables and indexes, made by Python."""
    if os.path.exists(path):
        os.remove(path)
    rnd = random.Random(seed)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA page_size={page_size}")
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE)")
    con.execute("CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT)")
    con.execute("CREATE TABLE blobs(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    con.execute("CREATE INDEX posts_user ON posts(user_id)")
    con.executemany("INSERT INTO users(name, email) VALUES (?, ?)",
                    [(f"user{i}", f"u{i}@example.com") for i in range(rows)])
    con.executemany("INSERT INTO posts(user_id, body) VALUES (?, ?)",
                    [(rnd.randint(1, rows), "x" * rnd.randint(1, 400)) for _ in range(rows)])
    con.executemany("INSERT INTO blobs VALUES (?, ?)",
                    [(f"k{i}", rnd.randbytes(rnd.randint(0, 2000))) for i in range(200)])
    con.commit()
    if wal:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def dump(path):
    """Every row of every table, in a comparable form."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            out[t] = sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
        return out
    finally:
        con.close()


def cli_import(n, name, path, check=False, **kw):
    return run(LITEFS, "import", "-url", url(n, ""), "-name", name, path, check=check, **kw)


def cli_export(n, name, path, check=False, **kw):
    return run(LITEFS, "export", "-url", url(n, ""), "-name", name, path, check=check, **kw)


def snapshot(n, name):
    """What must not change when a request is refused."""
    db = n.db(name)
    return (db.read_bytes() if db.exists() else None,
            n.pos(name) if db.exists() else None,
            [f.name for f in n.ltx_files(name)])


def tmp_leftovers(n):
    d = n.data / "tmp"
    return sorted(os.listdir(d)) if d.exists() else []


# ---- /info and /metrics ----------------------------------------------------

def test_info(node):
    n = node().start()
    run("sqlite3", n.db("app.db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
    run("sqlite3", n.db("w.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    status, headers, body = http(n, "GET", "/info")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    info = json.loads(body)
    assert re.fullmatch(r"[0-9a-fA-F]{16}", info["nodeID"])
    assert int(info["nodeID"], 16) == int((n.data / "id").read_text().strip(), 16)
    assert info["role"] == "primary" and info["primary"] is True and info["candidate"] is True
    # The first primary creates the cluster ID and keeps it in data.dir.
    assert re.fullmatch(r"LFSC[0-9A-F]{16}", info["clusterID"]), info["clusterID"]
    assert (n.data / "clusterid").read_text().strip() == info["clusterID"]
    assert info["mountDir"] == str(n.mnt)
    assert info["dataDir"] == str(n.data)
    dbs = {d["name"]: d for d in info["databases"]}
    assert set(dbs) == {"app.db", "w.db"}
    for name, wal in (("app.db", False), ("w.db", True)):
        d = dbs[name]
        txid, chk = n.pos(name)
        assert int(d["txid"], 16) == txid and re.fullmatch(r"[0-9a-f]{16}", d["txid"])
        assert d["checksum"] == chk
        assert d["pageSize"] == 4096
        assert d["pages"] >= 2
        if not wal:
            assert d["pages"] == os.path.getsize(n.db(name)) // 4096
        assert d["walMode"] is wal
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["timestamp"])


def test_metrics(node):
    n = node().start()
    run("sqlite3", n.db("app.db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
    status, headers, body = http(n, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    # Every sample belongs to a family announced with HELP and TYPE.
    for key in samples:
        family = key.split("{")[0]
        assert f"# TYPE {family} " in text and f"# HELP {family} " in text
    txid, _ = n.pos("app.db")
    assert samples['litefs_db_txid{db="app.db"}'] == txid == 3
    assert samples['litefs_db_commit_count{db="app.db"}'] == 3
    assert samples['litefs_db_ltx_count{db="app.db"}'] == len(n.ltx_files("app.db"))
    # LTX data is stored as *.ltx files or *.ltxlog segments of LTX records.
    on_disk = [f for f in n.ltx_dir("app.db").iterdir()
               if f.suffix in (".ltx", ".ltxlog") and not f.name.startswith(".")]
    assert on_disk
    assert samples['litefs_db_ltx_bytes{db="app.db"}'] == sum(f.stat().st_size for f in on_disk)
    assert samples['litefs_db_size_bytes{db="app.db"}'] == os.path.getsize(n.db("app.db"))
    assert samples['litefs_db_page_count{db="app.db"}'] == os.path.getsize(n.db("app.db")) // 4096
    assert samples['litefs_db_write_refused{db="app.db"}'] == 0
    assert samples["litefs_db_count"] == 1
    assert samples["litefs_is_primary"] == 1
    assert samples["litefs_lag_seconds"] == 0
    for op in ("lookup", "getattr", "open", "create", "read", "write", "fsync", "unlink", "release"):
        assert f'litefs_fuse_op_count{{type="{op}"}}' in samples
    assert samples['litefs_fuse_op_count{type="write"}'] > 0
    assert samples['litefs_fuse_op_count{type="unlink"}'] >= 3  # one journal per commit
    assert samples['litefs_http_import_count{result="ok"}'] == 0


def test_metrics_label_escaping(node):
    n = node().start()
    name = 'we"ird\\name'
    run("sqlite3", n.db(name), "CREATE TABLE t(x);")
    text = http(n, "GET", "/metrics")[2].decode()
    assert 'litefs_db_txid{db="we\\"ird\\\\name"} 1' in text.splitlines()


def test_unknown_path_and_method(node):
    n = node().start()
    status, err = json_error(http(n, "GET", "/nope"))
    assert status == 404 and "/nope" in err
    status, headers, body = http(n, "POST", "/info", body=b"")
    assert status == 405 and "GET" in headers["Allow"]
    assert "error" in json.loads(body)
    status, headers, _ = http(n, "GET", "/import", name="x")
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, _ = http(n, "DELETE", "/export", name="x")
    assert status == 405 and headers["Allow"] == "GET"
    assert http(n, "HEAD", "/info")[0] == 200


def test_keep_alive(node):
    """Requests without a body are answered without closing the connection
    (Prometheus scrapes reuse it)."""
    import http.client
    n = node().start()
    c = http.client.HTTPConnection("127.0.0.1", n.port, timeout=10)
    c.request("GET", "/info")
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["role"] == "primary"
    sock = c.sock
    for path, status in (("/metrics", 200), ("/missing", 404), ("/export?name=none", 404)):
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.status == status
        assert c.sock is sock, f"connection was closed after {path}"
    c.close()


# ---- import ------------------------------------------------------------------

def test_import_new_database(node, tmp_path):
    n = node().start()
    src = make_source(tmp_path / "src.db")
    res = cli_import(n, "imported.db", src)
    assert res.returncode == 0, res.stderr
    files = n.ltx_files("imported.db")
    assert len(files) == 1, "an import is exactly one transaction"
    assert dump(n.db("imported.db")) == dump(src)
    assert len(dump(src)["users"]) == 1500
    txid, chk = n.pos("imported.db")
    assert txid == 1
    assert f"txid={txid:016x}" in res.stdout and chk in res.stdout
    check_invariants(n, "imported.db", tmp=tmp_path)
    assert tmp_leftovers(n) == []


def test_import_api_reply(node, tmp_path):
    n = node().start()
    src = make_source(tmp_path / "src.db", rows=100)
    status, headers, body = http(n, "POST", "/import", body=src.read_bytes(), name="api.db")
    assert status == 200, body
    doc = json.loads(body)
    txid, chk = n.pos("api.db")
    assert doc == {"name": "api.db", "txid": f"{txid:016x}", "checksum": chk}


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_import_replaces_existing(node, tmp_path, mode):
    n = node().start()
    con = n.connect()
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("CREATE TABLE old(x)")
    con.executemany("INSERT INTO old VALUES (?)", [(i,) for i in range(3000)])
    con.commit()
    con.close()
    before = len(n.ltx_files())
    src = make_source(tmp_path / "src.db", wal=(mode == "delete"))  # the other mode, on purpose
    res = cli_import(n, "db", src)
    assert res.returncode == 0, res.stderr
    assert len(n.ltx_files()) == before + 1
    assert dump(n.db()) == dump(src)
    # The database keeps its journal mode.
    assert run("sqlite3", n.db(), "PRAGMA journal_mode").stdout.strip() == mode
    check_invariants(n, tmp=tmp_path)
    # And it keeps working as a database afterwards.
    run("sqlite3", n.db(), "INSERT INTO users(name, email) VALUES ('after', 'after@x');")
    assert len(n.ltx_files()) == before + 2
    check_invariants(n, tmp=tmp_path)


def test_import_while_a_reader_holds_a_lock(node, tmp_path):
    """The import waits for the reader (busy timeout) instead of failing or
    corrupting it."""
    import threading
    import time
    n = node().start()
    run("sqlite3", n.db(), "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    src = make_source(tmp_path / "src.db", rows=200)
    reader = n.connect()
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()  # SHARED lock held
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", cli_import(n, "db", src)))
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), "the import must wait for the reader"
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
    reader.execute("COMMIT")
    reader.close()
    t.join(60)
    assert result["r"].returncode == 0, result["r"].stderr
    assert dump(n.db()) == dump(src)
    check_invariants(n, tmp=tmp_path)


def test_import_page_size_mismatch(node, tmp_path):
    n = node().start()
    run("sqlite3", n.db(), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    src = make_source(tmp_path / "src.db", rows=50, page_size=1024)
    snap = snapshot(n, "db")
    res = cli_import(n, "db", src)
    assert res.returncode == 1
    assert "page size" in res.stderr and "409" in res.stderr
    assert snapshot(n, "db") == snap
    # The same file is fine as a new database.
    assert cli_import(n, "small-pages.db", src).returncode == 0
    assert dump(n.db("small-pages.db")) == dump(src)
    check_invariants(n, "small-pages.db", tmp=tmp_path)


def corrupt_copy(src, dst):
    data = bytearray(src.read_bytes())
    rnd = random.Random(7)
    for i in range(2 * 4096, len(data)):
        data[i] = rnd.randrange(256)
    dst.write_bytes(bytes(data))
    return dst


def test_import_rejects_bad_files(node, tmp_path):
    n = node().start()
    run("sqlite3", n.db(), "CREATE TABLE t(x); INSERT INTO t VALUES (42);")
    src = make_source(tmp_path / "src.db", rows=1000)
    garbage = corrupt_copy(src, tmp_path / "garbage.db")
    dangling = bytearray(src.read_bytes())
    dangling[3 * 4096 + 100:3 * 4096 + 300] = b"\xff" * 200  # one damaged b-tree page
    (tmp_path / "damaged.db").write_bytes(bytes(dangling))
    truncated = src.read_bytes()[:4096 * 3 + 17]  # not a whole number of pages
    bad_page_size = bytearray(src.read_bytes())
    bad_page_size[16:18] = (3000).to_bytes(2, "big")
    snap = snapshot(n, "db")
    cases = {
        "garbage pages": garbage.read_bytes(),
        "damaged page": bytes(dangling),
        "truncated": truncated,
        "bad page size": bytes(bad_page_size),
        "not sqlite": b"hello, world\n" * 1000,
        "empty": b"",
    }
    for what, body in cases.items():
        status, err = json_error(http(n, "POST", "/import", body=body, name="db"))
        assert status == 400, (what, err)
        assert snapshot(n, "db") == snap, what
        # The same body never creates a new database either.
        status, err = json_error(http(n, "POST", "/import", body=body, name="fresh.db"))
        assert status == 400, (what, err)
        assert not n.db("fresh.db").exists(), what
    assert "integrity check failed (PRAGMA quick_check)" in json_error(http(n, "POST", "/import", body=garbage.read_bytes(), name="db"))[1]
    # Through the CLI: the node's message is shown, exit status 1.
    res = cli_import(n, "db", garbage)
    assert res.returncode == 1 and "integrity check failed" in res.stderr and "400" in res.stderr
    # A file that is not SQLite at all is refused locally, without the node.
    (tmp_path / "notes.txt").write_text("just text\n")
    before = http(n, "GET", "/metrics")[2].decode()
    res = cli_import(n, "db", tmp_path / "notes.txt")
    assert res.returncode == 1 and "not a SQLite database" in res.stderr
    assert _sample(before, 'litefs_http_import_count{result="error"}') == \
        _sample(http(n, "GET", "/metrics")[2].decode(), 'litefs_http_import_count{result="error"}')
    assert snapshot(n, "db") == snap
    assert run("sqlite3", n.db(), "SELECT x FROM t").stdout.strip() == "42"
    assert tmp_leftovers(n) == []
    check_invariants(n, tmp=tmp_path)


def _sample(text, key):
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(key)


HOSTILE = ["../x", "a/b", "/etc/passwd", "", ".hidden", "..", ".", "x\x01y", "x\ny", "x" * 201,
           "db-wal", "db-journal", "db-shm", "db-pos", "db-mj012345678"]


def test_import_hostile_names(node, tmp_path):
    n = node().start()
    src = make_source(tmp_path / "src.db", rows=10).read_bytes()
    for name in HOSTILE:
        status, err = json_error(http(n, "POST", "/import", body=src, name=name))
        assert status == 400, (name, err)
    # A percent-encoded NUL must not truncate the name to a valid one.
    status, _ = json_error(http(n, "POST", "/import", body=src, raw_query="name=ok%00.db"))
    assert status == 400
    status, err = json_error(http(n, "POST", "/import", body=src))
    assert status == 400 and "name" in err
    status, _ = json_error(http(n, "GET", "/export", raw_query="name=..%2Fx"))
    assert status == 400
    assert sorted(os.listdir(n.mnt)) == []
    assert not (n.data / "dbs").exists() or sorted(os.listdir(n.data / "dbs")) == []
    assert not (n.base / "x").exists()
    assert tmp_leftovers(n) == []
    # A 200-byte name is the longest allowed.
    assert http(n, "POST", "/import", body=src, name="y" * 200)[0] == 200


def test_import_too_large(node):
    """A Content-Length above the 64 GiB cap is refused before the body."""
    n = node().start()
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"POST /import?name=big.db HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 68719476737\r\nExpect: 100-continue\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert "limit" in json.loads(body)["error"]
    assert not n.db("big.db").exists()


def test_import_usage(node, tmp_path):
    res = run(LITEFS, "import", "--help")
    assert res.returncode == 0 and "-name NAME" in res.stdout and "-url URL" in res.stdout
    res = run(LITEFS, "export", "-h")
    assert res.returncode == 0 and "-name NAME" in res.stdout
    src = make_source(tmp_path / "src.db", rows=1)
    assert run(LITEFS, "import", src, check=False).returncode == 2  # no -name
    assert run(LITEFS, "import", "-name", "x", check=False).returncode == 2  # no FILE
    assert run(LITEFS, "import", "-name", "x", src, "extra", check=False).returncode == 2
    assert run(LITEFS, "import", "-bogus", "-name", "x", src, check=False).returncode == 2
    assert run(LITEFS, "export", "-name", check=False).returncode == 2
    res = run(LITEFS, "import", "-name", "x", tmp_path / "missing.db", check=False)
    assert res.returncode == 1 and "missing.db" in res.stderr
    # An unreachable node is a failure with a clear message, not a usage error.
    res = run(LITEFS, "import", "-url", "http://127.0.0.1:1", "-name", "x", src, check=False)
    assert res.returncode == 1 and "127.0.0.1:1" in res.stderr


def test_import_url_from_environment_and_double_dash(node, tmp_path):
    n = node().start()
    src = make_source(tmp_path / "src.db", rows=20)
    res = run(LITEFS, "import", "--name=env.db", src, check=False,
              env=dict(os.environ, LITEFS_URL=url(n, "")))
    assert res.returncode == 0, res.stderr
    assert dump(n.db("env.db")) == dump(src)


# ---- export ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_export_round_trip(node, tmp_path, mode):
    n = node().start()
    con = n.connect()
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO t(v) VALUES (?)", [(os.urandom(300),) for _ in range(2000)])
    con.commit()
    con.execute("DELETE FROM t WHERE id % 7 = 0")
    con.commit()
    con.close()
    out = tmp_path / "out.db"
    out.write_text("previous contents")
    res = cli_export(n, "db", out)
    assert res.returncode == 0, res.stderr
    assert run("sqlite3", out, "PRAGMA integrity_check").stdout.strip() == "ok"
    assert dump(out) == dump(n.db())
    txid, chk = n.pos()
    assert f"{txid:016x}/{chk}" in res.stdout
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []
    assert tmp_leftovers(n) == []
    # Exporting adds no transaction.
    assert n.pos() == (txid, chk)
    # The raw API: content type and the position of the exported state.
    status, headers, body = http(n, "GET", "/export", name="db")
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.sqlite3"
    assert headers["Litefs-Pos"] == f"{txid:016x}/{chk}"
    assert body[:16] == b"SQLite format 3\x00"
    # An export imports back as the same contents (the round trip).
    assert cli_import(n, "copy.db", out).returncode == 0
    assert dump(n.db("copy.db")) == dump(n.db())
    check_invariants(n, "copy.db", tmp=tmp_path)


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_export_position_matches_contents_under_writes(node, tmp_path, mode):
    """While a writer commits continuously, each export's Litefs-Pos names
    exactly the state it contains: replaying the LTX chain up to that TXID
    gives the same rows."""
    import threading
    n = node().start()
    con = n.connect()
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    stop = threading.Event()

    def writer():
        w = n.connect()
        i = 0
        while not stop.is_set():
            w.execute("INSERT INTO t(v) VALUES (?)", (f"row{i}",))
            w.commit()
            i += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        exports = []
        for k in range(5):
            status, headers, body = http(n, "GET", "/export", name="db")
            assert status == 200
            exports.append((headers["Litefs-Pos"], body))
    finally:
        stop.set()
        t.join()
    con.close()
    for k, (pos, body) in enumerate(exports):
        txid = int(pos.split("/")[0], 16)
        path = tmp_path / f"exp{k}.db"
        path.write_bytes(body)
        files = [f for f in n.ltx_files() if int(f.stem.split("-")[1], 16) <= txid]
        replay = tmp_path / f"replay{k}.db"
        run(LITEFS, "ltx", "apply", "-db", replay, *files)
        assert dump(path) == dump(replay), f"export {k} at {pos} does not match the chain"


def test_export_unknown_database(node, tmp_path):
    n = node().start()
    target = tmp_path / "keep.db"
    target.write_text("keep me")
    res = cli_export(n, "nope.db", target)
    assert res.returncode == 1
    assert "not found" in res.stderr and "404" in res.stderr
    assert target.read_text() == "keep me"
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []
    status, err = json_error(http(n, "GET", "/export", name="nope.db"))
    assert status == 404 and "nope.db" in err
    # An unreachable node leaves the target untouched too.
    res = run(LITEFS, "export", "-url", "http://127.0.0.1:1", "-name", "db", target, check=False)
    assert res.returncode == 1 and target.read_text() == "keep me"


def test_temp_files_removed_at_start(node):
    n = node()
    (n.data / "tmp").mkdir(parents=True)
    (n.data / "tmp" / "http-import-abc123").write_bytes(b"x" * 100)
    n.start()
    assert tmp_leftovers(n) == []


# ---- shutdown ----------------------------------------------------------------

def _import_waiting_on_reader(n, tmp_path):
    """Starts an import that waits (busy) behind a reader's SHARED lock.
    Returns (reader connection, thread, result dict, source path)."""
    import threading
    import time
    run("sqlite3", n.db(), "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    src = make_source(tmp_path / "src.db", rows=300)
    reader = n.connect()
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", cli_import(n, "db", src)))
    t.start()
    time.sleep(1.0)
    assert t.is_alive()
    return reader, t, result, src


def test_stop_lets_a_running_import_finish(node, tmp_path):
    """SIGTERM while an import waits for a lock: the node stops taking new
    requests but lets the import finish and reply before it exits."""
    import signal
    import time
    n = node().start()
    reader, t, result, src = _import_waiting_on_reader(n, tmp_path)
    n.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert n.proc.poll() is None, "the node must wait for the import"
    # New connections are refused at once (not left hanging).
    t0 = time.time()
    try:
        with urllib.request.urlopen(url(n, "/info"), timeout=5) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, ConnectionError):
        status = None
    assert status in (None, 503) and time.time() - t0 < 2
    reader.execute("COMMIT")
    reader.close()
    t.join(60)
    assert result["r"].returncode == 0, result["r"].stderr
    assert n.stop() == 0
    n.start()
    assert dump(n.db()) == dump(src)
    check_invariants(n, tmp=tmp_path)


def test_stop_ends_an_import_that_does_not_finish(node, tmp_path):
    """An import still blocked after the grace period is ended: the node
    exits, nothing is applied, and the chain is intact after a restart."""
    import time
    n = node().start()
    reader, t, result, _ = _import_waiting_on_reader(n, tmp_path)
    before = n.pos()  # the import is blocked: nothing applied yet
    t0 = time.time()
    code = n.stop()
    elapsed = time.time() - t0
    reader.close()
    t.join(60)
    assert code == 0
    assert elapsed < 25, f"stop took {elapsed:.1f}s"
    assert result["r"].returncode == 1
    n.start()
    assert n.pos() == before
    assert run("sqlite3", n.db(), "SELECT x FROM t").stdout.strip() == "1"
    check_invariants(n, tmp=tmp_path)
