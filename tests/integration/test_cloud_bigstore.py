"""litefs-cloud with large transactions and storage spacing (issue 15,
items 3 and 4; docs/cloud-storage.md "Ingest" and "Spacing by size").

Large uploads take the paths small ones never do: a body over 256 KiB
(or chunked) is read by the engine straight from the connection, its
pages decoded into the store's kept staging buffer, and its object's
fsync overlaps the write of the current copy. The engine proves each upload's post-apply
checksum from page checksums it keeps in memory, rebuilt after a restart.
These tests push 16 MB databases through those paths and check every
state byte for byte against the SQLite files it came from, that damaged
or cut large uploads store nothing and leave the next upload working,
and that the spacing flags are applied, refused when wrong, and keep
every transaction restorable with /db/info's ranges truthful.
"""
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import time
import urllib.parse

from conftest import run, LITEFS_CLOUD, local_objects_only

ROWS = 4000  # ~16 MB: 4 KiB of random bytes a row


def req(srv, method, path, token, body=None, query=None):
    if query:
        path += "?" + urllib.parse.urlencode(query)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    try:
        c.request(method, path, body=body, headers={"Authorization": token})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def make_db(path, seed):
    """A ~16 MB SQLite file: ROWS rows of 4 KiB random blobs."""
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.execute("PRAGMA page_size=4096")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO t(v) VALUES (?)", ((rng.randbytes(4000),) for _ in range(ROWS)))
    con.commit()
    con.close()


def change(path, seed, rows):
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.executemany("UPDATE t SET v = ? WHERE id = ?", ((rng.randbytes(4000), i) for i in rows))
    con.commit()
    con.close()


def export(srv, token, db, txid):
    st, body = req(srv, "GET", "/db/snapshot", token, query={"db": db, "format": "sqlite", "txid": f"{txid:016x}"})
    assert st == 200, body[:300]
    return body


def pos(srv, token):
    st, body = req(srv, "GET", "/pos", token)
    assert st == 200
    return {k: (int(v["txid"], 16), v["postApplyChecksum"]) for k, v in json.loads(body).items()}


def l0_object(srv, txid):
    """The stored L0 object of one upload: its LTX bytes as received when
    over 1 MiB, else its zstd stored form (docs/cloud-storage.md)."""
    name = f"{txid:016x}-{txid:016x}.ltx"
    hits = [p for p in (srv.data / "objects").rglob(name) if p.parent.name == "l0"]
    assert len(hits) == 1, hits
    return hits[0].read_bytes()


def test_large_uploads_every_state_exact(cloud, tmp_path):
    """16 MB states uploaded whole (a snapshot, then a diff rewriting 3/4 of
    the pages, then a one-row change): each export is byte for byte the
    file it came from. The stored LTX files posted again through POST
    /db/tx (the streamed path) rebuild the same positions, a flipped or
    cut large upload stores nothing (also a connection cut mid-body and
    the service killed mid-body; then the upload, chunked, works), and
    after a restart (page checksums
    rebuilt from the current copy) the chain goes on."""
    local_objects_only("reads the stored objects from the local directory")
    srv = cloud()
    tok = srv.create_cluster("big")
    files = []
    for k in range(3):
        f = tmp_path / f"s{k}.db"
        if k == 0:
            make_db(f, 1)
        else:
            f.write_bytes(files[-1].read_bytes())
            change(f, 100 + k, range(1, 3 * ROWS // 4) if k == 1 else [7])  # 12 MB of pages, then one
        files.append(f)
        st, body = req(srv, "POST", "/db/upload", tok, body=f.read_bytes(), query={"db": "a.db"})
        assert st == 200, body[:300]
    assert pos(srv, tok)["a.db"][0] == 3
    for k, f in enumerate(files):
        assert export(srv, tok, "a.db", k + 1) == f.read_bytes(), f"state {k + 1} differs"

    ltx = [l0_object(srv, t) for t in (1, 2, 3)]
    assert len(ltx[1]) > (1 << 20)  # the streamed path (over 256 KiB) with > 8 MiB of pages
    # Large uploads are stored as sent; a small one in the zstd stored form,
    # which is no LTX to the outside (flag 0x100) and is refused as one.
    assert ltx[1][4:8] != b"\0\0\x01\0" and ltx[2][4:8] == b"\0\0\x01\0", (ltx[1][:8], ltx[2][:8])
    st, body = req(srv, "POST", "/db/tx", tok, body=ltx[0], query={"db": "copy.db"})
    assert st == 200, body[:300]
    want = pos(srv, tok)["a.db"]
    for bad in (ltx[1][: len(ltx[1]) // 2], ltx[1][:4000] + bytes([ltx[1][4000] ^ 1]) + ltx[1][4001:],
                ltx[1][:-9] + bytes([ltx[1][-9] ^ 0x80]) + ltx[1][-8:]):
        st, body = req(srv, "POST", "/db/tx", tok, body=bad, query={"db": "copy.db"})
        assert 400 <= st < 500, (st, body[:300])
        assert pos(srv, tok)["copy.db"][0] == 1
    # Cut mid-body (the client hangs up), then killed mid-body (-9): the
    # engine reads the body straight from the socket; nothing is stored.
    for kill in (False, True):
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(f"POST /db/tx?db=copy.db HTTP/1.1\r\nHost: x\r\nAuthorization: {tok}\r\n"
                     f"Content-Length: {len(ltx[1])}\r\n\r\n".encode() + ltx[1][: len(ltx[1]) // 2])
        time.sleep(0.3)
        if kill:
            srv.stop(signal.SIGKILL)
            srv.start()
        sock.close()
        assert pos(srv, tok)["copy.db"][0] == 1
    name = f"{2:016x}-{2:016x}.ltx"
    assert len([p for p in (srv.data / "objects").rglob(name) if p.parent.name == "l0"]) == 1  # a.db's
    # The good upload, chunked as LiteFS sends it.
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    c.request("POST", "/db/tx?db=copy.db", body=(ltx[1][i:i + 65536] for i in range(0, len(ltx[1]), 65536)),
              headers={"Authorization": tok, "Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = c.getresponse()
    assert r.status == 200, r.read()[:300]
    c.close()
    assert export(srv, tok, "copy.db", 2) == files[1].read_bytes()

    st, body = req(srv, "POST", "/db/tx", tok, body=ltx[2], query={"db": "copy.db"})
    assert 400 <= st < 500 and b"flags" in body, (st, body[:300])
    assert pos(srv, tok)["copy.db"][0] == 2

    # A restart: the page checksums are rebuilt from the current copy.
    srv.stop()
    srv.start()
    st, body = req(srv, "POST", "/db/upload", tok, body=files[2].read_bytes(), query={"db": "copy.db"})
    assert st == 200, body[:300]
    assert pos(srv, tok)["copy.db"] == want
    assert export(srv, tok, "copy.db", 3) == files[2].read_bytes()
    # A snapshot-sized damaged upload for a new database leaves no database.
    st, _ = req(srv, "POST", "/db/tx", tok, body=ltx[0][:-40] + bytes(24) + ltx[0][-16:], query={"db": "x.db"})
    assert 400 <= st < 500
    assert "x.db" not in pos(srv, tok)


def test_spacing_flags_and_every_transaction_restorable(cloud, tmp_path):
    """-snapshot-ratio and -min-merge are taken (and refused when wrong);
    with scaled intervals and uploads spread over them, every transaction
    stays restorable to its exact state and /db/info's ranges say so."""
    for bad in (["-snapshot-ratio", "0"], ["-snapshot-ratio", "x"], ["-min-merge", "1"], ["-store-codec", "brotli"]):
        r = run(LITEFS_CLOUD, "serve", "-data-dir", str(tmp_path / "never"), "-addr", "127.0.0.1:0", *bad,
                check=False, timeout=15)
        assert r.returncode != 0 and bad[0].lstrip("-") in (r.stdout + r.stderr), r.stdout + r.stderr
    # The YAML keys: "every" is the old rule.
    yml = cloud(name="yml", start=False)
    cfg = tmp_path / "cloud.yml"
    cfg.write_text(f"addr: 127.0.0.1:{yml.port}\ndata-dir: {yml.data}\nsnapshot-ratio: every\nmin-merge: 5\n")
    yml.args = ["-config", str(cfg)]
    yml.start()
    assert yml.healthy() and yml.stop() == 0
    cfg.write_text(f"data-dir: {yml.data}\nmin-merge: many\n")
    r = run(LITEFS_CLOUD, "serve", "-config", cfg, check=False, timeout=15)
    assert r.returncode == 2 and "min-merge" in r.stderr, r.stderr

    srv = cloud(args=["-levels", "200ms,1s", "-snapshot-interval", "2s", "-snapshot-ratio", "3",
                      "-min-merge", "3"])
    tok = srv.create_cluster("sp")
    f = tmp_path / "m.db"
    con = sqlite3.connect(f)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    states = []
    rng = random.Random(3)
    for i in range(40):
        con.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(rng.randrange(50, 3000)).hex(),))
        con.commit()
        st, body = req(srv, "POST", "/db/upload", tok, body=f.read_bytes(), query={"db": "m.db"})
        assert st == 200, body[:300]
        states.append(f.read_bytes())
        time.sleep(rng.uniform(0, 0.15))
    con.close()
    time.sleep(4)  # compaction and snapshots of the closed intervals
    st, body = req(srv, "GET", "/db/info", tok, query={"db": "m.db"})
    info = json.loads(body)
    assert info["ranges"] == [{"from_txid": f"{1:016x}", "to_txid": f"{40:016x}",
                               "restorable": "every transaction", "points": 40}], info["ranges"]
    # Spacing by size: fewer snapshots than the ~3 intervals the uploads spanned.
    made = [s for s in info["snapshots"] if s["level"] != 0]
    assert len(made) <= 2, info["snapshots"]
    for txid in range(1, 41):
        assert export(srv, tok, "m.db", txid) == states[txid - 1], f"txid {txid}"


def flags(ltx):
    """The header flags of a stored object's bytes."""
    return int.from_bytes(ltx[4:8], "big")


def test_store_codec_switch_keeps_both_forms_readable(cloud, tmp_path):
    """Objects written with -store-codec lz4 (LTX as sent) and then, after
    a restart, in the default zstd form (flag 0x100) are read alike:
    every state exports byte for byte, across compaction of both."""
    local_objects_only("reads the stored objects from the local directory")
    srv = cloud(args=["-store-codec", "lz4", "-levels", "200ms,1s", "-snapshot-interval", "2s", "-min-merge", "2"])
    tok = srv.create_cluster("codec")
    f = tmp_path / "c.db"
    con = sqlite3.connect(f)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    states = []

    def step(i):
        con.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(300 + 40 * i).hex(),))
        con.commit()
        st, body = req(srv, "POST", "/db/upload", tok, body=f.read_bytes(), query={"db": "c.db"})
        assert st == 200, body[:300]
        states.append(f.read_bytes())
        time.sleep(0.05)

    for i in range(10):
        step(i)
    assert flags(l0_object(srv, 5)) & 0x100 == 0
    srv.stop()
    srv.args = [a for a in srv.args if a not in ("-store-codec", "lz4")]
    srv.start()
    for i in range(10, 20):
        step(i)
    con.close()
    assert flags(l0_object(srv, 15)) == 0x100
    time.sleep(3)  # compaction of both forms together, snapshots
    # Files ending after TXID 10 were written after the restart: zstd form.
    later = [p for p in (srv.data / "objects").rglob("*.ltx")
             if p.parent.name != "l0" and int(p.stem.split("-")[1], 16) > 10]
    assert later and all(flags(p.read_bytes()) == 0x100 for p in later), later
    for txid in range(1, 21):
        assert export(srv, tok, "c.db", txid) == states[txid - 1], f"txid {txid}"
