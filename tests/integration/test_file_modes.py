"""File modes: everything the node and litefs-cloud keep in their data
directories is private to the user running them (files 0600, directories
0700), whatever the parent directory's mode, and a data directory left with
wider modes (an older version, LiteFS) is tightened at start with a log line.
The mount keeps other users out of the mount only (the kernel lets only the
mounting user in without fuse.allow-other); the data directory holds every
database in the clear."""
import json
import os
import stat
import urllib.request

from conftest import run, wait_until


def open_modes(root):
    """Every path under root (root included) with group or other bits."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                bad.append(f"{oct(st.st_mode & 0o7777)} {p}")
    return bad


def backup_hwm(n, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{n.port}/info", timeout=5) as r:
        dbs = {d["name"]: d for d in json.loads(r.read())["databases"]}
    return dbs[name]["backupHWM"]


def test_node_and_service_create_nothing_others_can_read(tmp_path, node, cloud):
    os.umask(0o022)
    # Both data directories' parents are 0755, and the service's data
    # directory exists already (0755) before its first start.
    srv = cloud(start=False)
    srv.data.mkdir(parents=True)
    os.chmod(srv.data, 0o755)
    srv.start()
    token = srv.create_cluster("prod")
    n = node(extra_config=f"backup:\n  type: litefs-cloud\n  url: {srv.url}\n  auth-token: {token}\n").start()
    run("sqlite3", n.db("wal.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    run("sqlite3", n.db("del.db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    for i in range(5):
        run("sqlite3", n.db("wal.db"), f"INSERT INTO t VALUES ({i})")
    for name in ("wal.db", "del.db"):
        txid = int(n.pos(name)[0])
        wait_until(lambda: backup_hwm(n, name) == f"{txid:016x}", timeout=10,
                   msg=lambda: f"{name} not backed up:\n{n.log_text()[-2000:]}")
    # An export through the service writes its materialised copy too.
    srv.cli("export", "wal.db", "-o", tmp_path / "out.db", token=token)
    assert open_modes(n.data) == []
    assert open_modes(srv.data) == []
    n.stop()
    srv.stop()
    assert open_modes(n.data) == []
    assert open_modes(srv.data) == []


def test_wider_modes_are_tightened_at_start(node, cloud):
    os.umask(0o022)
    n = node().start()
    run("sqlite3", n.db("db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    n.stop()
    srv = cloud()
    srv.create_cluster("prod")
    srv.stop()
    # What an older version left: everything readable by everyone.
    for root in (n.data, srv.data):
        for dirpath, dirnames, filenames in os.walk(root):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
    n.start()
    assert open_modes(n.data) == []
    assert "removed group and other permissions" in n.log_text()
    assert run("sqlite3", n.db("db"), "SELECT x FROM t").stdout.strip() == "1"
    srv.start()
    assert not os.stat(srv.data).st_mode & 0o077
    for f in ("auth.db", "catalog.db"):
        assert not os.stat(srv.data / f).st_mode & 0o077, f
    assert "removed group and other permissions" in srv.log_text()
