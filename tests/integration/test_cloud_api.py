"""litefs-cloud's HTTP API and CLI, against a real `litefs-cloud serve` on
loopback (conftest.CloudServer): tokens and clusters, the cluster ID, LTX
chains, position mismatches, corrupt and hostile input, size limits,
restore/export/fork through the CLI. After every bad request the service
must still answer /healthz and hold exactly what it held before.

LTX files are written here by a small encoder (plain, uncompressed LTX v1,
see ../shared/LTX.md) from the pages of real SQLite databases, so that the
timestamps, gaps and corruptions are under the test's control and exports
can be opened with sqlite3.
"""
import hashlib
import http.client
import json
import os
import sqlite3
import struct
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import LITEFS, run

FLAG = 1 << 63
BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z


# ---- LTX encoding -----------------------------------------------------------

def _crc_table():
    poly = 0xD800000000000000
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc64(data, crc=0):
    """CRC-64/GO-ISO with Go's crc64.Update semantics."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    t = CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


assert crc64(b"123456789") == 0xB90956C775A41001


def page_checksum(pgno, data):
    return FLAG | crc64(struct.pack(">I", pgno) + data)


def db_checksum(pages):
    """pages: {pgno: bytes}."""
    x = 0
    for pgno, data in pages.items():
        x ^= page_checksum(pgno, data)
    return FLAG | x


def encode_ltx(page_size, commit, min_txid, max_txid, ts, pre, pages, post, node_id=0):
    """pages: sorted [(pgno, bytes)]. Returns the file's bytes."""
    hdr = b"LTX1" + struct.pack(">IIIQQqQqqIIQ", 0, page_size, commit, min_txid, max_txid, ts, pre, 0, 0, 0, 0,
                                node_id) + bytes(20)
    assert len(hdr) == 100
    body = b"".join(struct.pack(">I", p) + d for p, d in pages) + bytes(4)
    post_b = struct.pack(">Q", post)
    file_chk = FLAG | crc64(hdr + body + post_b)
    return hdr + body + post_b + struct.pack(">Q", file_chk)


class Chain:
    """A SQLite database changed step by step; each step becomes one LTX
    file (a snapshot first). Records (txid, checksum, ts_ms, rows) per
    step and keeps each state's bytes."""

    def __init__(self, tmp, name="chain", page_size=4096):
        self.path = Path(tmp) / f"{name}.sqlite"
        self.path.unlink(missing_ok=True)
        self.page_size = page_size
        self.files = []    # LTX bytes per txid (index 0 = txid 1)
        self.states = []   # (txid, checksum, ts_ms, rows, db bytes)
        self.pages = {}
        con = sqlite3.connect(self.path)
        con.execute(f"PRAGMA page_size={page_size}")
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        con.commit()
        con.close()
        self._capture()

    def _read_pages(self):
        data = self.path.read_bytes()
        ps = self.page_size
        return {i // ps + 1: data[i:i + ps] for i in range(0, len(data), ps)}

    def _capture(self):
        new = self._read_pages()
        txid = len(self.files) + 1
        ts = BASE_TS + (txid - 1) * 1000
        pre = 0 if txid == 1 else self.states[-1][1]
        changed = sorted((p, d) for p, d in new.items() if txid == 1 or self.pages.get(p) != d)
        post = db_checksum(new)
        self.files.append(encode_ltx(self.page_size, len(new), txid, txid, ts, pre, changed, post))
        rows = sqlite3.connect(self.path).execute("SELECT count(*) FROM t").fetchone()[0]
        self.states.append((txid, post, ts, rows, self.path.read_bytes()))
        self.pages = new

    def step(self, n_rows=3):
        con = sqlite3.connect(self.path)
        con.executemany("INSERT INTO t(v) VALUES (?)", [(f"row-{len(self.files)}-{i}-" + "x" * 200,)
                                                        for i in range(n_rows)])
        con.commit()
        con.close()
        self._capture()
        return self.files[-1]

    def pos(self, txid):
        st = self.states[txid - 1]
        return {"txid": f"{st[0]:016x}", "postApplyChecksum": f"{st[1]:016x}"}


def make_chain(tmp, n=5, name="chain", page_size=4096):
    c = Chain(tmp, name, page_size)
    for _ in range(n - 1):
        c.step()
    return c


# ---- HTTP helpers -------------------------------------------------------------

def request(srv, method, path, token=None, body=None, query=None, headers=None, auth_form="{}"):
    """Returns (status, headers dict (lower-case keys), body bytes)."""
    if query:
        path += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = auth_form.format(token)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        chunked = h.get("Transfer-Encoding") == "chunked"
        conn.request(method, path, body=body, headers=h, encode_chunked=chunked)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def jreq(srv, method, path, **kw):
    status, hdrs, body = request(srv, method, path, **kw)
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        obj = body
    return status, hdrs, obj


def pos_map(srv, token):
    status, _, obj = jreq(srv, "GET", "/pos", token=token)
    assert status == 200, obj
    return obj


def upload(srv, token, db, data, **kw):
    return jreq(srv, "POST", "/db/tx", token=token, body=data, query={"db": db}, **kw)


def assert_error(resp, status, code):
    st, _, obj = resp
    assert st == status, f"expected {status} {code}, got {st}: {obj}"
    assert isinstance(obj, dict) and obj.get("code") == code and obj.get("error"), obj


def push_chain(srv, token, db, chain, upto=None):
    for i, f in enumerate(chain.files[:upto], start=1):
        st, hdrs, obj = upload(srv, token, db, f)
        assert st == 200, obj
        assert hdrs.get("litefs-hwm") == f"{i:016x}", hdrs
    return pos_map(srv, token)


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


# ---- Commands and help -------------------------------------------------------

def test_help_on_every_command(cloud):
    srv = cloud(start=False)
    for args in (["--help"], ["serve", "--help"], ["cluster", "--help"], ["token", "--help"],
                 ["restore", "--help"], ["export", "--help"], ["info", "--help"], ["list", "--help"]):
        r = run(srv_bin(), *args)
        assert "Usage" in r.stdout or "usage" in r.stdout.lower(), args
    r = run(srv_bin(), "nonsense", check=False)
    assert r.returncode == 2


def srv_bin():
    from conftest import LITEFS_CLOUD
    return LITEFS_CLOUD


def test_config_file_is_strict(cloud, tmp_path):
    srv = cloud(start=False)
    cfg = tmp_path / "cloud.yml"
    cfg.write_text(f"data-dir: {srv.data}\nretension: 1d\n")
    r = run(srv_bin(), "serve", "-config", cfg, check=False)
    assert r.returncode == 2
    assert "line 2" in r.stderr and "retension" in r.stderr, r.stderr
    cfg.write_text(f"data-dir: {srv.data}\nretention: soon\n")
    r = run(srv_bin(), "serve", "-config", cfg, check=False)
    assert r.returncode == 2 and "retention" in r.stderr, r.stderr
    # A good file: the listen address and levels come from it.
    cfg.write_text(f"addr: 127.0.0.1:{srv.port}\ndata-dir: {srv.data}\nretention: 30d\n"
                   "levels: [10s, 5m, 1h]\nmax-upload-size: 64MiB\n")
    srv.args = ["-config", str(cfg)]
    srv.start()
    assert srv.healthy()
    assert srv.stop() == 0


def test_graceful_stop_on_sigint(cloud):
    import signal
    srv = cloud()
    t0 = time.time()
    assert srv.stop(sig=signal.SIGINT) == 0
    assert time.time() - t0 < 10


# ---- Authentication ------------------------------------------------------------

def test_auth_forms_wrong_tokens_and_revocation(cloud, tmp_path):
    srv = cloud()
    tok_a = srv.create_cluster("alpha")
    tok_b = srv.create_cluster("beta")
    assert tok_a.startswith("lfsc_") and tok_a != tok_b

    assert_error(jreq(srv, "GET", "/pos"), 401, "EUNAUTHORIZED")
    assert_error(jreq(srv, "GET", "/pos", token="lfsc_" + "0" * 64), 401, "EUNAUTHORIZED")
    assert_error(jreq(srv, "GET", "/pos", token=tok_a[:-1] + ("0" if tok_a[-1] != "0" else "1")), 401,
                 "EUNAUTHORIZED")
    assert_error(jreq(srv, "GET", "/pos", token="garbage"), 401, "EUNAUTHORIZED")
    for form in ("{}", "FlyV1 {}", "Bearer {}"):
        st, _, obj = jreq(srv, "GET", "/pos", token=tok_a, auth_form=form)
        assert st == 200 and obj == {}, (form, st, obj)

    # Scoped: a database of alpha is invisible to beta's token.
    chain = make_chain(tmp_path, 2)
    push_chain(srv, tok_a, "app.db", chain)
    assert set(pos_map(srv, tok_a)) == {"app.db"}
    assert pos_map(srv, tok_b) == {}
    assert_error(jreq(srv, "GET", "/db/info", token=tok_b, query={"db": "app.db"}), 404, "ENOTFOUND")
    # ?cluster= (LiteFS sends it when configured) must name the token's cluster.
    assert_error(jreq(srv, "GET", "/pos", token=tok_b, query={"cluster": "alpha"}), 401, "EUNAUTHORIZED")
    assert jreq(srv, "GET", "/pos", token=tok_b, query={"cluster": "beta"})[0] == 200

    # A second token; revoking the first leaves the second working.
    tok_a2 = srv.cli("token", "create", "alpha").stdout.strip()
    listed = srv.cli("token", "list", "alpha").stdout
    ids = [line.split()[0] for line in listed.splitlines()[1:]]
    assert len(ids) == 2
    # The ID of a token is the first 12 hex digits of its SHA-256.
    id_a = hashlib.sha256(tok_a.encode()).hexdigest()[:12]
    assert id_a in ids
    srv.cli("token", "revoke", id_a)
    assert_error(jreq(srv, "GET", "/pos", token=tok_a), 401, "EUNAUTHORIZED")
    assert set(pos_map(srv, tok_a2)) == {"app.db"}
    r = srv.cli("token", "revoke", id_a, check=False)
    assert r.returncode == 1 and "not found" in r.stderr
    assert srv.healthy()


def test_cluster_id_is_remembered(cloud):
    srv = cloud()
    tok = srv.create_cluster("c1")
    id1, id2 = "LFSC0123456789ABCDEF", "LFSCFEDCBA9876543210"
    assert jreq(srv, "GET", "/pos", token=tok, headers={"Litefs-Cluster-Id": id1})[0] == 200
    assert jreq(srv, "GET", "/pos", token=tok, headers={"Litefs-Cluster-Id": id1})[0] == 200
    assert_error(jreq(srv, "GET", "/pos", token=tok, headers={"Litefs-Cluster-Id": id2}), 422, "ECLUSTERID")
    assert_error(jreq(srv, "GET", "/pos", token=tok, headers={"Litefs-Cluster-Id": "bogus"}), 400, "EINVALID")
    assert jreq(srv, "GET", "/pos", token=tok)[0] == 200  # the CLI sends none
    out = srv.cli("cluster", "list").stdout
    assert id1 in out
    # A body sent with the wrong ID is refused and not stored.
    st = jreq(srv, "POST", "/db/tx", token=tok, query={"db": "x.db"}, body=b"\0" * 200,
              headers={"Litefs-Cluster-Id": id2})
    assert_error(st, 422, "ECLUSTERID")
    assert srv.healthy()


def test_cluster_delete_purges_and_name_can_be_reused(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("gone")
    push_chain(srv, tok, "app.db", make_chain(tmp_path, 2))
    r = srv.cli("cluster", "create", "gone", check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    srv.cli("cluster", "delete", "gone")
    assert_error(jreq(srv, "GET", "/pos", token=tok), 401, "EUNAUTHORIZED")

    # The data is purged (by the command or by the server within seconds);
    # then the name can be created again, with nothing in it.
    deadline = time.time() + 15
    while True:
        r = srv.cli("cluster", "create", "gone", check=False)
        if r.returncode == 0:
            break
        assert time.time() < deadline, r.stderr
        time.sleep(0.5)
    tok2 = r.stdout.strip()
    assert pos_map(srv, tok2) == {}
    assert srv.cli("cluster", "delete", "nope", check=False).returncode == 1
    for bad in ("../x", "a/b", "x" * 65, ""):
        assert srv.cli("cluster", "create", bad, check=False).returncode != 0


# ---- Ingest ------------------------------------------------------------------

def test_chain_upload_positions_and_hwm(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 6)
    assert push_chain(srv, tok, "app.db", chain) == {"app.db": chain.pos(6)}
    st, _, info = jreq(srv, "GET", "/db/info", token=tok, query={"db": "app.db"})
    assert st == 200 and info["name"] == "app.db", info


def test_gaps_and_replays_are_position_mismatches(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 5)
    push_chain(srv, tok, "app.db", chain, upto=3)
    for bad in (chain.files[3 + 1], chain.files[1], chain.files[2]):   # gap, replay, replay of the last
        resp = upload(srv, tok, "app.db", bad)
        assert_error(resp, 409, "EPOSMISMATCH")
        assert resp[2]["pos"] == chain.pos(3), resp
        assert pos_map(srv, tok) == {"app.db": chain.pos(3)}
    # A wrong pre-apply checksum at the right TXID is a mismatch too.
    f = bytearray(chain.files[3])
    f[40:48] = struct.pack(">Q", FLAG | 12345)
    assert_error(upload(srv, tok, "app.db", bytes(f)), 409, "EPOSMISMATCH")
    # An incremental file for a database the service does not have.
    resp = upload(srv, tok, "other.db", chain.files[2])
    assert_error(resp, 409, "EPOSMISMATCH")
    assert resp[2]["pos"] == {"txid": "0" * 16, "postApplyChecksum": "0" * 16}
    # The chain still continues where it was.
    st, hdrs, _ = upload(srv, tok, "app.db", chain.files[3])
    assert st == 200 and hdrs["litefs-hwm"] == f"{4:016x}"
    assert srv.healthy()


def corruptions(good):
    out = {
        "empty": b"",
        "garbage": b"not an ltx file at all" * 10,
        "truncated-header": good[:50],
        "truncated-page": good[:100 + 4 + 100],
        "truncated-trailer": good[:-3],
        "trailing-bytes": good + b"\0\0\0\0",
    }
    flipped = bytearray(good)
    flipped[100 + 4 + 10] ^= 0x40                      # a page byte: file checksum
    out["page-byte"] = bytes(flipped)
    wrong_post = bytearray(good)
    wrong_post[-16:-8] = struct.pack(">Q", FLAG | 999)  # post-apply, file checksum fixed
    wrong_post[-8:] = struct.pack(">Q", FLAG | crc64(bytes(wrong_post[:-8])))
    out["post-apply"] = bytes(wrong_post)
    bad_magic = bytearray(good)
    bad_magic[0:4] = b"LTX9"
    out["magic"] = bytes(bad_magic)
    return out


def test_corrupt_and_truncated_ltx_store_nothing(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 4)
    push_chain(srv, tok, "app.db", chain, upto=2)
    for what, data in corruptions(chain.files[2]).items():
        st, _, obj = upload(srv, tok, "app.db", data)
        assert st == 400 and obj["code"] == "EBADLTX", (what, st, obj)
        assert pos_map(srv, tok) == {"app.db": chain.pos(2)}, what
        assert srv.healthy()
    # Corrupt snapshots for a new database leave no database behind.
    for what, data in corruptions(chain.files[0]).items():
        st, _, obj = upload(srv, tok, "new.db", data)
        assert st in (400, 409) and obj["code"] in ("EBADLTX", "EPOSMISMATCH"), (what, st, obj)
    assert set(pos_map(srv, tok)) == {"app.db"}
    # The good file is still accepted afterwards.
    st, hdrs, _ = upload(srv, tok, "app.db", chain.files[2])
    assert st == 200 and hdrs["litefs-hwm"] == f"{3:016x}"


def test_page_size_change_is_refused(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 2)
    push_chain(srv, tok, "app.db", chain)
    # TXID 3 with the right pre-apply checksum but 1024-byte pages.
    page = bytes(1024)
    f = encode_ltx(1024, 4, 3, 3, BASE_TS + 5000, chain.states[-1][1], [(1, page)],
                   FLAG)  # post-apply never checked: the page size is refused first
    st, _, obj = upload(srv, tok, "app.db", f)
    assert st in (400, 409) and obj["code"] in ("EPAGESIZE", "EBADLTX"), (st, obj)
    assert pos_map(srv, tok) == {"app.db": chain.pos(2)}


HOSTILE = ["../x", "a/b", "x" * 300, "a\x01b", ".hidden", "bad\x7f", "db-wal", "a\x00b"]


def test_hostile_names_are_refused_and_nothing_stored(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 1)
    for name in HOSTILE + [""]:
        for method, path, body in (("POST", "/db/tx", chain.files[0]), ("GET", "/db/info", None),
                                   ("GET", "/db/snapshot", None), ("GET", "/db/changes", None), ("DELETE", "/db", None),
                                   ("POST", "/db/upload", chain.states[0][4])):
            resp = jreq(srv, method, path, token=tok, query={"db": name}, body=body)
            assert_error(resp, 400, "EINVALID")
    # Missing db parameter altogether.
    assert_error(jreq(srv, "POST", "/db/tx", token=tok, body=chain.files[0]), 400, "EINVALID")
    # The fork target is checked too.
    push_chain(srv, tok, "app.db", chain)
    assert_error(jreq(srv, "POST", "/db/restore", token=tok, query={"db": "app.db", "txid": "1", "as": "../evil"}),
                 400, "EINVALID")
    assert set(pos_map(srv, tok)) == {"app.db"}
    names = {p.name for p in srv.data.rglob("*")}
    assert not any(n in names for n in ("x", "b", "evil", ".hidden")), names
    assert srv.healthy()


def test_oversized_bodies_get_413_without_being_read(cloud, tmp_path):
    srv = cloud(args=["-max-upload-size", "64KiB"])
    tok = srv.create_cluster("c")
    # Announced 10 GiB, nothing sent: the reply comes at once.
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.putrequest("POST", "/db/tx?db=big.db")
    conn.putheader("Authorization", tok)
    conn.putheader("Content-Length", str(10 << 30))
    conn.endheaders()
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 413 and body["code"] == "ETOOLARGE", body
    # A real body just over the limit.
    assert_error(upload(srv, tok, "big.db", b"\0" * (65 << 10)), 413, "ETOOLARGE")
    # A chunked body over the limit: refused (or the connection cut), never stored.
    def chunks():
        for _ in range(40):
            yield b"\0" * 4096
    try:
        st, _, obj = jreq(srv, "POST", "/db/tx", token=tok, query={"db": "big.db"}, body=chunks(),
                          headers={"Transfer-Encoding": "chunked"})
        assert st == 413 and obj["code"] == "ETOOLARGE", (st, obj)
    except (ConnectionError, http.client.HTTPException):
        pass
    assert pos_map(srv, tok) == {}
    assert srv.healthy()


def test_unknown_paths_and_methods(cloud):
    srv = cloud()
    tok = srv.create_cluster("c")
    assert_error(jreq(srv, "GET", "/nope", token=tok), 404, "ENOTFOUND")
    assert_error(jreq(srv, "GET", "/db/tx", token=tok, query={"db": "a"}), 405, "EMETHOD")
    assert_error(jreq(srv, "POST", "/pos", token=tok, body=b"x" * 10), 405, "EMETHOD")
    assert_error(jreq(srv, "POST", "/db/restore", token=tok, query={"db": "a"}), 400, "EINVALID")
    assert_error(jreq(srv, "POST", "/db/restore", token=tok, query={"db": "a", "txid": "zz"}), 400, "EINVALID")
    assert_error(jreq(srv, "GET", "/db/restore/check", token=tok,
                      query={"db": "a", "txid": "1", "timestamp": "1"}), 400, "EINVALID")
    assert_error(jreq(srv, "GET", "/db/snapshot", token=tok, query={"db": "a", "format": "zip"}), 400, "EINVALID")
    assert_error(jreq(srv, "GET", "/db/snapshot", token=tok, query={"db": "a", "timestamp": "yesterday"}), 400,
                 "EINVALID")
    assert_error(jreq(srv, "GET", "/db/info", token=tok, query={"db": "missing.db"}), 404, "ENOTFOUND")
    assert_error(jreq(srv, "GET", "/db/changes", token=tok, query={"db": "a"}), 400, "EINVALID")
    assert_error(jreq(srv, "GET", "/db/changes", token=tok, query={"db": "a", "after": "12/zz"}), 400, "EINVALID")
    assert srv.healthy()


# ---- Restore, export, fork, upload, delete -------------------------------------

def rows_of(path):
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return con.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        con.close()


def test_restore_check_export_and_fork_through_the_cli(cloud, tmp_path):
    # The chain's timestamps are months old: with the 30-day retention,
    # the maintenance tick (every 5 s) may drop TXIDs 1-5 mid-test.
    srv = cloud(args=["-retention", "3650d"])
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 6)
    push_chain(srv, tok, "app.db", chain)
    rows = {s[0]: s[3] for s in chain.states}

    # --check by TXID and by timestamp (between two commits: the earlier one wins).
    out = srv.cli("restore", "app.db", "--txid", "3", "--check", token=tok).stdout
    assert f"txid={3:016x}" in out and f"checksum={chain.states[2][1]:016x}" in out, out
    assert rfc3339(chain.states[2][2]) in out, out
    out = srv.cli("restore", "app.db", "--timestamp", rfc3339(chain.states[3][2] + 500), "--check",
                  token=tok).stdout
    assert f"txid={4:016x}" in out, out
    out = srv.cli("restore", "app.db", "--timestamp", str(chain.states[1][2]), "--check", token=tok).stdout
    assert f"txid={2:016x}" in out, out
    assert pos_map(srv, tok) == {"app.db": chain.pos(6)}, "--check must not change anything"

    # Export past states as SQLite and as LTX.
    for txid in (1, 3, 6):
        out = tmp_path / f"export-{txid}.db"
        srv.cli("export", "app.db", "--txid", str(txid), "-o", out, token=tok)
        assert rows_of(out) == rows[txid]
        assert out.read_bytes() == chain.states[txid - 1][4]
    ltx = tmp_path / "export.ltx"
    srv.cli("export", "app.db", "--txid", "4", "--format", "ltx", "-o", ltx, token=tok)
    run(LITEFS, "ltx", "verify", ltx)
    applied = tmp_path / "applied.db"
    run(LITEFS, "ltx", "apply", "-db", applied, ltx)
    assert rows_of(applied) == rows[4]

    # Restore in place: a new transaction whose state is TXID 2's.
    out = srv.cli("restore", "app.db", "--txid", "2", token=tok).stdout
    assert f"txid={7:016x}" in out and f"checksum={chain.states[1][1]:016x}" in out, out
    assert pos_map(srv, tok)["app.db"] == {"txid": f"{7:016x}", "postApplyChecksum": f"{chain.states[1][1]:016x}"}
    latest = tmp_path / "latest.db"
    srv.cli("export", "app.db", "-o", latest, token=tok)
    assert rows_of(latest) == rows[2]
    # Undo: restore to the state before the restore.
    srv.cli("restore", "app.db", "--txid", "6", token=tok)
    srv.cli("export", "app.db", "-o", latest, token=tok)
    assert rows_of(latest) == rows[6]

    # Fork into a new name; the original is untouched.
    srv.cli("restore", "app.db", "--txid", "3", "--as", "fork.db", token=tok)
    fork = tmp_path / "fork.db"
    srv.cli("export", "fork.db", "-o", fork, token=tok)
    assert rows_of(fork) == rows[3]
    assert set(pos_map(srv, tok)) == {"app.db", "fork.db"}
    r = srv.cli("restore", "app.db", "--txid", "3", "--as", "fork.db", token=tok, check=False)
    assert r.returncode == 1 and "EEXISTS" in r.stderr, r.stderr

    # list and info.
    out = srv.cli("list", token=tok).stdout
    assert "app.db" in out and "fork.db" in out
    info = json.loads(srv.cli("info", "app.db", token=tok).stdout)
    assert info["name"] == "app.db"


def test_cli_errors_are_clear(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 3)
    push_chain(srv, tok, "app.db", chain)
    r = srv.cli("restore", "app.db", "--txid", "99", token=tok, check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr
    r = srv.cli("restore", "app.db", "--timestamp", rfc3339(BASE_TS - 3600_000), token=tok, check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr
    r = srv.cli("restore", "missing.db", "--txid", "1", token=tok, check=False)
    assert r.returncode == 1 and "ENOTFOUND" in r.stderr, r.stderr
    r = srv.cli("info", "app.db", token="lfsc_" + "1" * 64, check=False)
    assert r.returncode == 1 and "EUNAUTHORIZED" in r.stderr, r.stderr
    r = srv.cli("restore", "app.db", token=tok, check=False)
    assert r.returncode == 2
    # A failed export leaves the target untouched.
    target = tmp_path / "keep.db"
    target.write_bytes(b"precious")
    r = srv.cli("export", "missing.db", "-o", target, token=tok, check=False)
    assert r.returncode == 1 and target.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".keep.db.tmp")]
    r = run(srv_bin(), "list", "-url", "http://127.0.0.1:1", "-token", tok, check=False)
    assert r.returncode == 1 and "failed" in r.stderr


def test_upload_sqlite_and_delete(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 3)
    st, _, obj = jreq(srv, "POST", "/db/upload", token=tok, query={"db": "up.db"}, body=chain.states[2][4])
    assert st == 200 and obj["txID"] == f"{1:016x}", obj
    out = tmp_path / "up.db"
    srv.cli("export", "up.db", "-o", out, token=tok)
    assert rows_of(out) == chain.states[2][3]
    assert_error(jreq(srv, "POST", "/db/upload", token=tok, query={"db": "bad.db"}, body=b"not sqlite" * 100),
                 400, "EBADDB")
    assert_error(jreq(srv, "POST", "/db/upload", token=tok, query={"db": "bad.db"}, body=b""), 400, "EBADDB")
    assert set(pos_map(srv, tok)) == {"up.db"}

    st, _, obj = jreq(srv, "DELETE", "/db", token=tok, query={"db": "up.db"})
    assert st == 200, obj
    assert pos_map(srv, tok) == {}
    assert_error(jreq(srv, "DELETE", "/db", token=tok, query={"db": "up.db"}), 404, "ENOTFOUND")
    # After a delete, a snapshot starts the database again.
    push_chain(srv, tok, "up.db", chain)
    assert pos_map(srv, tok) == {"up.db": chain.pos(3)}


def test_an_export_the_dashboard_follows_closes_nothing_else(cloud, tmp_path):
    """GET /db/snapshot?op= (the dashboard follows the build) used to close
    the service's descriptor 0: the export's tee descriptor was left 0
    instead of -1. Whatever file held descriptor 0 then was closed under
    its user (a restore reading a stored object failed with EBADF)."""
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 4)
    push_chain(srv, tok, "app.db", chain)
    fd0 = f"/proc/{srv.proc.pid}/fd/0"
    before = os.readlink(fd0)
    for fmt in ("sqlite", "ltx"):
        for at in ({}, {"txid": "2"}):
            st, _, body = request(srv, "GET", "/db/snapshot", token=tok,
                                  query={"db": "app.db", "format": fmt, "op": "t1", **at})
            assert st == 200, body[:200]
    assert os.path.exists(fd0) and os.readlink(fd0) == before


def test_snapshot_endpoint_is_litefs_compatible(cloud, tmp_path):
    """GET /db/snapshot without a format is an LTX snapshot of the latest
    state (what LiteFS fetches when it is behind)."""
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 4)
    push_chain(srv, tok, "app.db", chain)
    st, hdrs, body = request(srv, "GET", "/db/snapshot", token=tok, query={"db": "app.db"})
    assert st == 200 and body[:4] == b"LTX1"
    assert hdrs["litefs-pos"] == f"{4:016x}/{chain.states[3][1]:016x}"
    f = tmp_path / "snap.ltx"
    f.write_bytes(body)
    run(LITEFS, "ltx", "verify", f)
    st, hdrs, body = request(srv, "GET", "/db/snapshot", token=tok, query={"db": "app.db", "format": "sqlite"})
    assert st == 200 and body == chain.states[3][4]
    # GET /db/changes (ours): from a position on the history to the
    # current one, one LTX file that the state at that position takes.
    after = f"{2:016x}/{chain.states[1][1]:016x}"
    st, hdrs, body = request(srv, "GET", "/db/changes", token=tok, query={"db": "app.db", "after": after})
    assert st == 200 and body[:4] == b"LTX1", (st, body[:200])
    assert hdrs["litefs-pos"] == f"{4:016x}/{chain.states[3][1]:016x}"
    f.write_bytes(body)
    state = tmp_path / "state2.db"
    state.write_bytes(chain.states[1][4])
    out = run(LITEFS, "ltx", "apply", "-db", state, f).stdout.strip()
    assert out == hdrs["litefs-pos"], out
    assert state.read_bytes() == chain.states[3][4]
    # Not on the history (another checksum), or the current position: 409
    # with the service's position; no such database: 404.
    for bad in (f"{2:016x}/{chain.states[1][1] ^ 1:016x}", hdrs["litefs-pos"]):
        resp = jreq(srv, "GET", "/db/changes", token=tok, query={"db": "app.db", "after": bad})
        assert_error(resp, 409, "EPOSMISMATCH")
        assert resp[2]["pos"]["txid"] == f"{4:016x}", resp
    assert_error(jreq(srv, "GET", "/db/changes", token=tok, query={"db": "no.db", "after": after}), 404, "ENOTFOUND")


def test_restart_keeps_tokens_and_data(cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 3)
    push_chain(srv, tok, "app.db", chain)
    assert srv.stop() == 0
    srv.start()
    assert pos_map(srv, tok) == {"app.db": chain.pos(3)}


def test_litefs_style_chunked_uploads_in_parallel(cloud, tmp_path):
    """What LiteFS's client sends: a chunked body (Go's http.Client with an
    io.Reader), the plain token, ?cluster= and Litefs-Cluster-Id; several
    databases at once."""
    import threading
    srv = cloud()
    tok = srv.create_cluster("prod")
    chains = {f"db{i}.db": make_chain(tmp_path, 4, name=f"c{i}") for i in range(4)}
    errors = []

    def push(name, chain):
        try:
            for i, f in enumerate(chain.files, start=1):
                def body(data=f):
                    for k in range(0, len(data), 1000):
                        yield data[k:k + 1000]
                st, hdrs, obj = jreq(srv, "POST", "/db/tx", token=tok, body=body(),
                                     query={"db": name, "cluster": "prod"},
                                     headers={"Transfer-Encoding": "chunked",
                                              "Litefs-Cluster-Id": "LFSC00000000000000AB"})
                assert st == 200 and hdrs["litefs-hwm"] == f"{i:016x}", (name, i, st, obj)
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=push, args=kv) for kv in chains.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert pos_map(srv, tok) == {name: c.pos(4) for name, c in chains.items()}


def test_one_server_per_data_directory(cloud):
    srv = cloud()
    other = cloud(name="other", start=False)
    other.data = srv.data
    other.start(wait=False)
    assert other.proc.wait(timeout=15) == 1
    assert "another litefs-cloud serve" in other.log_text()
    assert srv.healthy()


def test_names_that_are_not_utf8(cloud, tmp_path):
    """A database name must be well-formed UTF-8 (the one rule both
    programs apply, src/proto/dbname.h), because a name that cannot cross
    JSON unchanged could never be restored under its own name: such an
    upload is refused before anything is stored, and /pos stays valid
    JSON."""
    srv = cloud()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 1)
    resp = jreq(srv, "POST", "/db/tx?db=caf%C3%A9%FF.db", token=tok, body=chain.files[0])
    assert_error(resp, 400, "EINVALID")
    st, hdrs, _ = request(srv, "POST", "/db/tx?db=caf%C3%A9.db", token=tok, body=chain.files[0])
    assert st == 200 and hdrs["litefs-hwm"] == f"{1:016x}"
    st, _, body = request(srv, "GET", "/pos", token=tok)
    assert st == 200 and list(json.loads(body)) == ["café.db"], body
    assert srv.healthy()
