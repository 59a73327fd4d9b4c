"""Import at disk speed (issue 15): the node encodes the import's record
while the file uploads (a spool that becomes a segment of the chain by a
rename; from the uploaded file if the spool fails) and renames the file
into place (nobody has the database open) or copies it into the open file
(someone has), with quick_check run once the body is complete.
Correctness of each path: checksums on a replica and on the backup
service, what a connection that stayed open sees, refusals and cut
uploads that store nothing, progress on a terminal, and kill -9 at the
worst moment of each path (old or new state after the restart). Bench:
bench/bigdb.py, bench/import_ab.py."""
import os
import pty
import re
import signal
import sqlite3
import subprocess
import json
import time
import urllib.request

from conftest import LITEFS, check_invariants, db_checksum, run, wait_until


def make_big(path, rows, seed=1):
    """rows of ~1 KB (half random) in a table with an index."""
    if os.path.exists(path):
        os.remove(path)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
    con.execute(f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) "
                f"INSERT INTO t(k, v) SELECT (i * {seed} * 7919) % 100003, randomblob(500) || zeroblob(500) FROM s")
    con.execute("CREATE INDEX t_k ON t(k)")
    con.commit()
    con.close()
    return path


def cli_import(n, name, path, *extra):
    return subprocess.run([str(LITEFS), "import", "-url", f"http://127.0.0.1:{n.port}", "-name", name, *extra,
                           str(path)], capture_output=True, text=True, timeout=120)


CONTENT = "SELECT count(*), sum(k), sum(length(CAST(v AS BLOB))), sum(instr(hex(v), 'A')) FROM t"


def content(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(CONTENT).fetchone()
    finally:
        con.close()


def last_import_line(n):
    lines = [ln for ln in n.log_text().splitlines() if "msg=imported" in ln]
    assert lines, n.log_text()[-2000:]
    return lines[-1]


def kill9(n):
    """kill -9 of a node stopped inside an import. Its exit closes the
    descriptors it holds on its own mount (the reader exclusion's), and
    the kernel may wait for the dead daemon to answer their FLUSH: abort
    the FUSE connection (fusectl) as an operator would."""
    minor = None
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == str(n.mnt):
            minor = f[2].split(":")[1]
    n.proc.send_signal(signal.SIGKILL)
    try:
        n.proc.wait(3)
    except subprocess.TimeoutExpired:
        ctl = "/sys/fs/fuse/connections"
        if not os.listdir(ctl):
            subprocess.run(["mount", "-t", "fusectl", "none", ctl], capture_output=True)
        with open(f"{ctl}/{minor}/abort", "w") as f:
            f.write("1")
    n.kill9()


def tmp_leftovers(n):
    d = n.data / "tmp"
    return sorted(os.listdir(d)) if d.exists() else []


def test_import_renamed_then_copied_under_an_open_connection(node, tmp_path):
    """Nobody has the database open: the file is renamed into place. A
    connection holds it open (rollback, then WAL mode): the file is copied
    into the open one, and that connection reads the new state at once (the
    change counter and schema cookie moved, as SQLite's backup would)."""
    n = node().start()
    a = make_big(tmp_path / "a.db", 3000, seed=1)
    b = make_big(tmp_path / "b.db", 4000, seed=2)
    res = cli_import(n, "db", a)
    assert res.returncode == 0, res.stderr
    assert "rename_ms=" in last_import_line(n)
    assert "record=spooled" in last_import_line(n), "the record is encoded during the upload"
    assert content(n.db()) == content(a)
    check_invariants(n, tmp=tmp_path)

    for mode in ("delete", "wal"):
        con = n.connect(isolation_level=None)
        con.execute(f"PRAGMA journal_mode={mode}")
        before = con.execute("SELECT count(*) FROM t").fetchone()[0]
        src = b if before == 3000 else a
        res = cli_import(n, "db", src)
        assert res.returncode == 0, res.stderr
        assert "copy_ms=" in last_import_line(n), "an open connection must keep its inode"
        # The connection that stayed open sees the imported rows, not its cache.
        assert con.execute(CONTENT).fetchone() == content(src)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == mode, "the journal mode is kept"
        con.execute("INSERT INTO t(k, v) VALUES (1, x'00')")  # and it writes on top of it
        con.close()
        check_invariants(n, tmp=tmp_path)
    assert tmp_leftovers(n) == []


def service_pos(srv, token):
    req = urllib.request.Request(srv.url + "/pos", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=5) as r:
        p = json.loads(r.read()).get("db")
    return (p["txid"], p["postApplyChecksum"]) if p else None


def test_import_replicates_and_bad_page_in_the_middle_is_refused(cluster, cloud, tmp_path):
    """The import's record (encoded during the upload) reaches a replica
    and the backup service: the same position and checksum everywhere, and
    the service's export is the imported database. A file with one damaged
    b-tree page in its middle is refused by quick_check and by
    integrity_check (-full-check), and stores nothing anywhere."""
    srv = cloud()
    token = srv.create_cluster("prod")
    c = cluster(2, extra_config=f"backup:\n  type: litefs-cloud\n  url: {srv.url}\n  auth-token: {token}\n")
    p, r = c.nodes
    src = make_big(tmp_path / "src.db", 3000)
    res = cli_import(p, "db", src)
    assert res.returncode == 0, res.stderr
    assert "record=spooled" in last_import_line(p)
    c.wait_synced("db", timeout=30)
    assert content(r.db()) == content(src)
    good = p.pos()
    wait_until(lambda: service_pos(srv, token) == (f"{good[0]:016x}", good[1]), timeout=20,
               msg=lambda: f"service at {service_pos(srv, token)}, node at {good}")
    out = tmp_path / "from-service.db"
    srv.cli("export", "db", "-o", out, token=token)
    assert db_checksum(out) == good[1] == db_checksum(r.db())
    assert content(out) == content(src)

    data = bytearray(src.read_bytes())
    n_pages = len(data) // 4096
    # A leaf page of the table in the middle of the file: its cells are overwritten.
    mid = n_pages // 2
    while data[(mid - 1) * 4096] not in (0x0D, 0x0A):
        mid += 1
    off = (mid - 1) * 4096
    data[off + 8:off + 4000] = bytes((i * 37) & 0xFF for i in range(3992))
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    for extra, what in (((), "quick_check"), (("-full-check",), "integrity_check")):
        res = cli_import(p, "db", bad, *extra)
        assert res.returncode == 1 and what in res.stderr and "400" in res.stderr, res.stderr
        res = cli_import(p, "new.db", bad, *extra)
        assert res.returncode == 1, res.stderr
        assert not p.db("new.db").exists()
    assert p.pos() == good
    time.sleep(0.3)
    assert r.pos() == good
    assert tmp_leftovers(p) == []
    # -full-check accepts a sound file.
    res = cli_import(p, "db", src, "-full-check")
    assert res.returncode == 0, res.stderr
    c.wait_synced("db", timeout=30)
    check_invariants(p, tmp=tmp_path)


def test_import_progress_on_a_terminal(node, tmp_path):
    """Progress lines on stderr when it is a terminal (files of 64 MiB and
    more), none otherwise."""
    n = node().start()
    src = make_big(tmp_path / "src.db", 68000)  # ~70 MB
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(LITEFS), "import", "-url", f"http://127.0.0.1:{n.port}", "-name", "db", str(src)],
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(120)
    os.close(master)
    assert proc.returncode == 0, out
    text = out.decode(errors="replace")
    assert re.search(r"uploaded [\d.]+ / [\d.]+ MiB", text), text
    res = cli_import(n, "db", src)
    assert res.returncode == 0 and "uploaded" not in res.stderr, res.stderr


def test_kill9_mid_import_leaves_old_or_new(node, tmp_path):
    """kill -9 at the worst moment of each path, held there by an injected
    stall: (1) rename path, record durable, rename not done: the old state
    after the restart (the record is dropped); (2) copy path, record
    durable, file copied but its header not yet written: the new state (the
    start writes the record's pages again)."""
    n = node().start()
    old = make_big(tmp_path / "old.db", 2000, seed=1)
    new = make_big(tmp_path / "new.db", 2500, seed=3)
    assert cli_import(n, "db", old).returncode == 0
    pos_old = n.pos()
    n.stop()

    def import_killed_at(call, path, hold=False):
        """Starts an import of new with the first `call` on `path` stalled,
        and kill -9s the node there."""
        n.start(env={"LITEFS_FAULT": f"{call}:1:stall=60000:path={path}"})
        holder = n.connect() if hold else None
        if holder:
            holder.execute("SELECT count(*) FROM t").fetchone()
        proc = subprocess.Popen([str(LITEFS), "import", "-url", f"http://127.0.0.1:{n.port}", "-name", "db",
                                 str(new)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: f"injected stall\" call={call}" in n.log_text(), 30, msg="the stall")
        time.sleep(0.2)
        kill9(n)
        proc.wait(30)
        if holder:
            try:
                holder.close()
            except sqlite3.Error:
                pass
        n.start()

    # 1. Stalled before the rename.
    import_killed_at("rename", "db")
    assert n.pos() == pos_old
    assert content(n.db()) == content(old)
    check_invariants(n, tmp=tmp_path)
    n.stop()

    # 2. Copy path (a connection holds the database open), stalled at the
    # header write after the copy.
    import_killed_at("pwrite", "dbs/db/db", hold=True)
    assert n.pos()[0] == pos_old[0] + 1
    assert "writing its pages again" in n.log_text()
    assert content(n.db()) == content(new)
    check_invariants(n, tmp=tmp_path)
    pos_mid = n.pos()
    n.stop()

    # 3. The record encoded during the upload, stalled at its sync (before
    # it joins the chain): the state of (2) after the restart, no spool left.
    import_killed_at("fsync", "tmp/http-import")
    assert n.pos() == pos_mid
    assert content(n.db()) == content(new)
    assert tmp_leftovers(n) == []
    check_invariants(n, tmp=tmp_path)


def test_upload_cut_mid_body_stores_nothing(node, tmp_path):
    """The record's encoder reads the upload as it arrives (importrec.c); a
    client that goes away half-way through the body must stop it: nothing
    stored, no temp file left, the node still imports."""
    import socket
    n = node().start()
    src = make_big(tmp_path / "src.db", 3000)
    assert cli_import(n, "db", src).returncode == 0
    good = n.pos()
    data = src.read_bytes()
    for name in ("db", "new.db"):
        s = socket.create_connection(("127.0.0.1", n.port))
        s.sendall(f"POST /import?name={name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                  + data[:len(data) // 2])
        time.sleep(0.3)  # the encoder is waiting for the rest
        s.close()
    wait_until(lambda: tmp_leftovers(n) == [], timeout=10, msg=lambda: f"left: {tmp_leftovers(n)}")
    assert n.pos() == good
    assert not n.db("new.db").exists()
    res = cli_import(n, "db", src)
    assert res.returncode == 0, res.stderr
    assert n.pos()[0] == good[0] + 1
    # kill -9 while the body is being spliced into the upload file (half
    # of it sent, the node waiting for the rest): the old state after the
    # restart, and the start removes the temp files.
    good = n.pos()
    s = socket.create_connection(("127.0.0.1", n.port))
    s.sendall(f"POST /import?name=db HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
              + data[:len(data) // 2])
    wait_until(lambda: len(tmp_leftovers(n)) == 2, timeout=10, msg=lambda: f"temp files: {tmp_leftovers(n)}")
    kill9(n)
    s.close()
    n.start()
    assert n.pos() == good
    assert content(n.db()) == content(src)
    assert tmp_leftovers(n) == []
    check_invariants(n, tmp=tmp_path)


def test_record_encoded_from_the_file_when_the_spool_fails(node, tmp_path):
    """A write error in the spool during the upload (an injected EIO)
    leaves the import to the fallback: the record is encoded from the
    uploaded file after the body, with the same result."""
    n = node().start(env={"LITEFS_FAULT": "pwrite:1:5:path=tmp/http-import"})
    src = make_big(tmp_path / "src.db", 3000)
    res = cli_import(n, "db", src)
    assert res.returncode == 0, res.stderr
    assert "record=encoded" in last_import_line(n)
    assert "record encoded during the upload is not usable" in n.log_text()
    assert content(n.db()) == content(src)
    assert tmp_leftovers(n) == []
    check_invariants(n, tmp=tmp_path)


def applied_line(n):
    lines = [ln for ln in n.log_text().splitlines() if 'msg="import applied"' in ln]
    assert lines, n.log_text()[-2000:]
    return lines[-1]


def post_in_two_halves(n, name, data, chunked=False, pause=0.5):
    """POSTs data to /import in two halves with a pause between them (the
    check then has to wait for the second half); returns (status, body)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", n.port, timeout=60)
    c.putrequest("POST", f"/import?name={name}")
    if chunked:
        c.putheader("Transfer-Encoding", "chunked")
    else:
        c.putheader("Content-Length", str(len(data)))
    c.endheaders()
    half = len(data) // 2
    for i, part in enumerate((data[:half], data[half:])):
        if i:
            time.sleep(pause)
        c.send(b"%x\r\n" % len(part) + part + b"\r\n" if chunked else part)
    if chunked:
        c.send(b"0\r\n\r\n")
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def test_check_follows_the_upload(node, tmp_path):
    """With a Content-Length the check reads the upload as it arrives
    (chkvfs_follow): a sound file is imported, a WAL-mode file too (its
    header read as rollback mode even before the rewrite), a damaged page
    in the half that arrives late is refused, and a chunked body is
    checked after it ends, as before."""
    n = node().start()
    src = make_big(tmp_path / "src.db", 6000)
    status, body = post_in_two_halves(n, "db", src.read_bytes())
    assert status == 200, body
    assert "check=with-upload" in applied_line(n)
    assert content(n.db()) == content(src)

    wal = tmp_path / "wal.db"
    make_big(wal, 3000, seed=3)
    con = sqlite3.connect(wal)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.close()
    assert wal.read_bytes()[18:20] == b"\x02\x02"
    status, body = post_in_two_halves(n, "wal.db", wal.read_bytes())
    assert status == 200, body
    assert "check=with-upload" in applied_line(n)
    assert content(n.db("wal.db")) == content(wal)

    good = n.pos()
    data = bytearray(src.read_bytes())
    n_pages = len(data) // 4096
    late = n_pages * 3 // 4  # a table leaf in the second half
    while data[(late - 1) * 4096] != 0x0D:
        late += 1
    off = (late - 1) * 4096
    data[off + 8:off + 4000] = bytes((i * 53) & 0xFF for i in range(3992))
    status, body = post_in_two_halves(n, "db", bytes(data))
    assert status == 400 and "quick_check" in body, (status, body)
    assert n.pos() == good

    status, body = post_in_two_halves(n, "chunked.db", src.read_bytes(), chunked=True)
    assert status == 200, body
    assert "check=after-upload" in applied_line(n)
    assert content(n.db("chunked.db")) == content(src)
    assert tmp_leftovers(n) == []
    check_invariants(n, tmp=tmp_path)
