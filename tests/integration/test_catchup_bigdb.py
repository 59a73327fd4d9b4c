"""A replica's catch-up by snapshot of a big database and `litefs export`
on the node (issue 15, item 2; docs/replication.md step 3, docs/http.md
"GET /export").

A snapshot for a database that has no file on the replica is written once
straight into a new file and renamed into place (no staging spool), and a
record of 16 MiB or more is staged with copy_file_range. These tests check
that a 40 MB database caught up that way is the primary's byte for byte;
that a replica killed (-9) at random moments of that catch-up restarts
with either no database or the whole one, never a part, and then catches
up; and that an export in rollback mode, now the db file itself sent
while SQLite's locks pin it, is the database byte for byte with the
position it names, holds writers off while it is sent, and is cut (never
delivered whole) when the helper pinning the file dies mid-reply.
"""
import os
import random
import signal
import socket
import sqlite3
import subprocess
import time

from conftest import LITEFS, check_invariants, wait_until
from test_bigio import cli_import, kill9, make_big


def test_catch_up_by_snapshot_exact_and_kill9_leaves_nothing_or_all(cluster, tmp_path):
    c = cluster(1)
    p = c.primary
    src = make_big(tmp_path / "src.db", 40000)  # ~40 MB; its LZ4 record over 16 MiB: staged in the kernel
    res = cli_import(p, "db", src)
    assert res.returncode == 0, res.stderr
    want = p.pos()
    data = src.read_bytes()
    seg = sum(f.stat().st_size for f in p.ltx_dir().iterdir())
    assert seg > 16 << 20, seg  # the record takes copy_file_range on the replica
    rng = random.Random(3)
    r = c.add_replica("node2")
    # First, how long a whole catch-up takes here.
    t0 = time.monotonic()
    r.start()
    wait_until(lambda: r.pos_or_none("db") == want, 120, msg=lambda: c.describe())
    full = time.monotonic() - t0
    assert r.db().read_bytes() == data
    assert "snapshot written as the database's new file while it arrived" in r.log_text()
    seen = set()
    for k in range(4):
        # A new replica with an empty data directory, killed mid catch-up.
        r = c.add_replica(f"node{k + 3}")
        r.start()
        time.sleep(full * rng.uniform(0.1, 0.9))
        kill9(r)
        db = r.data / "dbs" / "db" / "db"
        present = db.exists() and db.stat().st_size > 0
        seen.add(present)
        # Whatever the moment: no database, or exactly the primary's.
        if present:
            assert db.read_bytes() == data, f"round {k}: a partial database file was left"
        r.start()
        wait_until(lambda: r.pos_or_none("db") == want, 120, msg=lambda: c.describe())
        assert r.db().read_bytes() == data
        assert not (r.data / "dbs" / "db" / "db.snapshot-tmp").exists()
    print("killed with the database file present:", sorted(seen))
    check_invariants(r, tmp=tmp_path)

    # The primary killed (-9) while a replica receives the snapshot: the
    # replica keeps what it had (another database, untouched; this one
    # absent, nothing staged left), then catches up once it is back.
    con = p.connect("other")
    con.execute("CREATE TABLE o(x)")
    con.execute("INSERT INTO o VALUES (42)")
    con.commit()
    con.close()
    other = p.pos("other")
    cut = 0
    for k in range(3):
        r = c.add_replica(f"cut{k}")
        r.start()
        wait_until(lambda: r.pos_or_none("other") == other, 30, msg=lambda: c.describe("other"))
        r.stop()
        (r.data / "dbs" / "db").exists() and subprocess.run(["rm", "-rf", str(r.data / "dbs" / "db")], check=True)
        r.start()
        staged = r.data / "dbs" / "db" / "ltx" / "snapshot.ltxlog.pipe"
        wait_until(lambda: staged.exists() and staged.stat().st_size > 0, 20, interval=0.001, msg=lambda: r.log_text()[-4000:] + str(list((r.data / "dbs").rglob("*"))))
        kill9(p)
        time.sleep(0.3)
        assert r.pos_or_none("other") == other
        assert not list((r.data / "dbs").glob("*/db.snapshot-*")), "a staged file was left"
        assert not list((r.data / "dbs").glob("*/ltx/snapshot.ltxlog.*")), "a staged segment was left"
        if "a snapshot cut off as it arrived was discarded" in r.log_text():
            cut += 1
            assert r.pos_or_none("db") is None
            assert not (r.data / "dbs" / "db" / "db").exists() or r.db().stat().st_size == 0
        p.start()
        wait_until(lambda: r.pos_or_none("db") == want, 120, msg=lambda: c.describe())
        assert r.db().read_bytes() == data
        r.stop()
        if cut:
            break
    assert cut, "the primary was never killed while a snapshot was on its way"


def cli_export(n, out):
    res = subprocess.run([str(LITEFS), "export", "-url", f"http://127.0.0.1:{n.port}", "-name", "db", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res


def test_export_in_rollback_mode_is_the_database(cluster, tmp_path):
    c = cluster(1)
    p = c.primary
    src = make_big(tmp_path / "src.db", 3000)
    assert cli_import(p, "db", src).returncode == 0
    con = p.connect()
    con.execute("UPDATE t SET k = k + 1 WHERE id % 3 = 0")
    con.commit()
    con.close()
    out = tmp_path / "out.db"
    res = cli_export(p, out)
    txid, chk = p.pos()
    assert f"{txid:016x}/{chk}" in res.stdout
    assert out.read_bytes() == p.db().read_bytes()


def export_helper_pid(n):
    """The `litefs __sqlite export` child of node n."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat[1]) == n.proc.pid and b"__sqlite\x00export" in cmd:
            return int(d)
    return None


def test_export_cut_when_the_pinning_helper_dies(cluster, tmp_path):
    c = cluster(1)
    p = c.primary
    src = make_big(tmp_path / "src.db", 12000)  # ~12 MB: more than the socket buffers hold
    assert cli_import(p, "db", src).returncode == 0
    want = p.db().read_bytes()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 262144)  # a slow reader: the node's send waits
    s.connect(("127.0.0.1", p.port))
    s.sendall(b"GET /export?name=db HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    clen = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
    assert clen == len(want)
    time.sleep(0.3)
    # While the file is sent, the helper's locks hold writers off.
    w = sqlite3.connect(p.mnt / "db", timeout=0.3)
    try:
        w.execute("UPDATE t SET k = k + 1 WHERE id = 1")
        w.commit()
        assert False, "a writer committed while the export was being sent"
    except sqlite3.OperationalError as e:
        assert "locked" in str(e), e
    w.close()
    pid = export_helper_pid(p)
    assert pid, "no export helper while the reply is sent"
    os.kill(pid, signal.SIGKILL)
    s.settimeout(30)
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        body += b
    s.close()
    assert len(body) < clen, "a reply whose pinning helper died was delivered whole"
    assert "export cut" in p.log_text()
    # Writers go on; the next export is whole and exact.
    w = sqlite3.connect(p.mnt / "db", timeout=10)
    w.execute("UPDATE t SET k = k + 1 WHERE id = 1")
    w.commit()
    w.close()
    out = tmp_path / "out.db"
    res = cli_export(p, out)
    assert out.read_bytes() == p.db().read_bytes()
    assert export_helper_pid(p) is None
