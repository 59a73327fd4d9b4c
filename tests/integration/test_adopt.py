"""Moving from LiteFS: a node started on a data directory written by the real
LiteFS 0.5.14 (/work/shared/reference) adopts its databases with their
positions (TXID and checksum), keeps the cluster ID, continues the backups
LiteFS made to litefs-cloud without a new snapshot, and moves LiteFS's files
to litefs-0.5-adopted/ only once the database has loaded (adopt.h)."""
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, check_invariants, is_mounted, run, wait_until

LITEFS_REF = Path(os.environ.get("LITEFS_REF_BIN", ROOT.parent / "shared" / "reference" / "litefs-0.5.14"))
pytestmark = pytest.mark.skipif(not LITEFS_REF.exists(), reason=f"no LiteFS 0.5 binary at {LITEFS_REF}")


class RealLiteFS:
    """The real LiteFS 0.5.14 on a Node's mount, data dir and port (static
    lease, primary), so that our node can be started on what it leaves."""

    def __init__(self, node, env=None):
        self.node = node
        self.config = node.base / "litefs-0.5.yml"
        self.log = node.base / "litefs-0.5.log"
        self.env = dict(os.environ, **(env or {}))
        self.config.write_text(
            f"fuse:\n  dir: {node.mnt}\ndata:\n  dir: {node.data}\n"
            f"http:\n  addr: 127.0.0.1:{node.port}\n"
            f"lease:\n  type: static\n  candidate: true\n  hostname: lfs\n"
            f"  advertise-url: http://127.0.0.1:{node.port}\n")

    def start(self):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([str(LITEFS_REF), "mount", "-config", str(self.config)],
                                     stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        wait_until(lambda: "connected to cluster, ready" in self.log.read_text() and is_mounted(self.node.mnt),
                   timeout=20, msg=lambda: f"LiteFS did not start:\n{self.log.read_text()}")
        return self

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.logf.close()
        if is_mounted(self.node.mnt):
            subprocess.run(["umount", "-l", str(self.node.mnt)], capture_output=True)

    def pos(self, name):
        return (self.node.mnt / f"{name}-pos").read_text().strip()


def rows(path):
    return run("sqlite3", path, "SELECT count(*), sum(x) FROM t").stdout.strip()


def write_both(mnt, n_wal=20):
    """A WAL database written by Python (one commit per row) and a DELETE
    database written by the sqlite3 CLI."""
    con = sqlite3.connect(str(mnt / "w.db"), timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    for i in range(n_wal):
        con.execute("INSERT INTO t VALUES (?)", (i,))
        con.commit()
    con.close()
    run("sqlite3", mnt / "d.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    for i in range(5):
        run("sqlite3", mnt / "d.db", f"INSERT INTO t VALUES ({i})")


def test_adopts_a_litefs_data_directory(node):
    n = node()
    lfs = RealLiteFS(n).start()
    write_both(n.mnt)
    want = {name: (lfs.pos(name), rows(n.mnt / name)) for name in ("w.db", "d.db")}
    cluster_id = (n.data / "clusterid").read_text()
    lfs.stop()
    litefs_db = (n.data / "dbs" / "w.db" / "database").read_bytes()

    n.start()
    for name, (pos, r) in want.items():
        assert (n.mnt / f"{name}-pos").read_text().strip() == pos, name
        assert rows(n.mnt / name) == r, name
        assert f"msg=\"adopted a LiteFS 0.5 database\" db={name}" in n.log_text()
        assert "verified=true" in n.log_text()
        # LiteFS's own files, moved out unchanged.
        kept = n.data / "litefs-0.5-adopted" / name
        assert (kept / "database").exists() and sorted(kept.glob("ltx/*.ltx"))
        assert not (n.data / "dbs" / name / "database").exists()
        check_invariants(n, name)
    assert (n.data / "litefs-0.5-adopted" / "w.db" / "database").read_bytes() == litefs_db
    assert (n.data / "clusterid").read_text() == cluster_id

    # It then works normally: the next transaction follows LiteFS's last.
    txid = int(want["w.db"][0].split("/")[0], 16)
    run("sqlite3", n.mnt / "w.db", "INSERT INTO t VALUES (100)")
    assert n.pos("w.db")[0] == txid + 1
    check_invariants(n, "w.db")
    # A restart is an ordinary start: nothing is adopted twice.
    n.stop()
    n.start()
    assert n.pos("w.db")[0] == txid + 1
    assert n.log_text().count("adopted a LiteFS 0.5 database\" db=w.db") == 1
    count, total = map(int, want["w.db"][1].split("|"))
    assert rows(n.mnt / "w.db") == f"{count + 1}|{total + 100}"


def test_a_damaged_litefs_directory_is_left_alone(node):
    n = node()
    lfs = RealLiteFS(n).start()
    write_both(n.mnt, n_wal=3)
    lfs.stop()
    ltx = sorted((n.data / "dbs" / "w.db" / "ltx").glob("*.ltx"))[-1]
    data = bytearray(ltx.read_bytes())
    # The trailer's post-apply checksum: the file checksum (which covers it,
    # the headers and the uncompressed pages, not LZ4's own XXH32 fields,
    # which are not verified: docs/ltx.md) fails.
    data[-12] ^= 0xFF
    ltx.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in (n.data / "dbs" / "w.db").rglob("*") if p.is_file()}
    n.start(wait=False)
    assert n.proc.wait(20) != 0
    assert "a LiteFS LTX file does not verify" in n.log_text()
    after = {p: p.read_bytes() for p in (n.data / "dbs" / "w.db").rglob("*") if p.is_file()}
    assert after == before, "LiteFS's files must stay as they were"
    n.stop()


def service_pos(srv, token, name):
    req = urllib.request.Request(srv.url + "/pos", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=5) as r:
        p = json.loads(r.read()).get(name)
    return p and f"{p['txid']}/{p['postApplyChecksum']}"


def test_backups_continue_without_a_new_snapshot(node, cloud):
    srv = cloud()
    token = srv.create_cluster("prod")
    env = {"LITEFS_CLOUD_ENDPOINT": srv.url, "LITEFS_CLOUD_TOKEN": token}
    n = node(env=env)
    lfs = RealLiteFS(n, env=env).start()
    write_both(n.mnt, n_wal=5)
    for name in ("w.db", "d.db"):
        want = lfs.pos(name)
        wait_until(lambda: service_pos(srv, token, name) == want, timeout=30,
                   msg=lambda: f"LiteFS did not back {name} up ({service_pos(srv, token, name)} != {want})")
    lfs.stop()

    n.start()
    run("sqlite3", n.mnt / "w.db", "INSERT INTO t VALUES (7)")
    txid, chk = n.pos("w.db")
    wait_until(lambda: service_pos(srv, token, "w.db") == f"{txid:016x}/{chk}", timeout=10,
               msg=lambda: f"our node did not continue the backup:\n{n.log_text()[-3000:]}")
    assert "uploading a snapshot" not in n.log_text()
    # The service restores the state our node wrote on top of LiteFS's.
    out = n.base / "restored.db"
    srv.cli("export", "w.db", "-o", out, token=token)
    assert rows(out) == rows(n.mnt / "w.db")
