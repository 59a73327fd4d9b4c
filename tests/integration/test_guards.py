"""Guards against operator mistakes (issue 16): a second node on a running
node's data or mount directory, a mount directory that is a file, failed
copies that used to leave phantom databases behind, names that cannot
cross the API unchanged, and admin commands pointed at no service."""
import errno
import json
import os
import subprocess
import time
import urllib.request

import pytest

from conftest import LITEFS, LITEFS_CLOUD, run, wait_until


def cli(node, sql, name="db", check=True):
    return run("sqlite3", "-bail", node.db(name), sql, check=check)


def start_refused(n, timeout=20):
    """Starts n expecting it to exit on its own; returns (code, log)."""
    n.start(wait=False)
    try:
        code = n.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        n.stop()
        raise AssertionError(f"second node was not refused:\n{n.log_text()}")
    n.proc = None
    n.logf.close()
    return code, n.log_text()


# ---- 1. one node per data directory -------------------------------------

def test_second_node_on_same_data_dir_is_refused(node):
    first = node("first").start()
    cli(first, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    pos = first.pos()
    second = node("second")
    second.data = first.data
    second.write_config()
    code, log = start_refused(second)
    assert code != 0
    assert f"data.dir {first.data} is in use by another litefs node (pid {first.proc.pid})" in log, log
    assert not (first.data / "dbs" / "db" / "clean").exists(), "the refused node wrote a clean marker"
    assert "database loaded" not in log, "the refused node loaded the first node's databases"
    # The first node is untouched and keeps working.
    cli(first, "INSERT INTO t VALUES (2);")
    assert first.pos()[0] == pos[0] + 1
    assert cli(first, "SELECT count(*) FROM t").stdout.strip() == "2"
    # Once the first node stops, the directory is free again.
    assert first.stop() == 0
    second.start()
    assert cli(second, "SELECT count(*) FROM t").stdout.strip() == "2"


# ---- 2. fuse.dir: a live mount or a file --------------------------------

def test_second_mount_over_live_fuse_dir_is_refused(node):
    first = node("first").start()
    cli(first, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    second = node("second")
    second.mnt = first.mnt
    second.write_config()
    code, log = start_refused(second)
    assert code != 0
    assert "already mounted" in log and str(first.mnt) in log, log
    # The first node's mount is still the one answering.
    assert sorted(os.listdir(first.mnt)) == ["db", "db-pos"]
    cli(first, "INSERT INTO t VALUES (2);")
    assert cli(first, "SELECT count(*) FROM t").stdout.strip() == "2"


def test_fuse_dir_that_is_a_file_is_refused(node):
    n = node()
    n.mnt.write_text("not a directory\n")
    code, log = start_refused(n)
    assert code != 0
    assert "not a directory" in log and str(n.mnt) in log, log
    assert n.mnt.read_text() == "not a directory\n"
    with open("/proc/self/mounts") as f:
        assert not any(line.split()[1] == str(n.mnt) for line in f)


# ---- 4. names that cannot cross the API unchanged -----------------------

BAD_NAMES = [b"\xff.db", b"caf\xe9.db", b"\xc0\xae.db", b"\xed\xa0\x80.db", b"a\xc2\x85b.db"]


def test_non_utf8_names_are_refused_by_the_mount(node):
    n = node().start()
    for bad in BAD_NAMES:
        path = os.fsencode(n.mnt) + b"/" + bad
        with pytest.raises(OSError) as e:
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o644))
        # "Invalid or incomplete multibyte or wide character"
        assert e.value.errno == errno.EILSEQ, (bad, e.value)
        assert not os.path.exists(path)
    assert os.listdir(n.mnt) == []
    assert not any((n.data / "dbs").iterdir())
    # A name in well-formed UTF-8 is an ordinary database.
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", name="café.db")
    assert sorted(os.listdir(n.mnt)) == ["café.db", "café.db-pos"]


def raw_request(port, method, target, body=b"", headers=()):
    """An HTTP request whose target is sent byte for byte (urllib would
    quote it); returns (status, body)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, target, skip_accept_encoding=True)
    for k, v in headers:
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    out = r.read()
    conn.close()
    return r.status, out


def test_non_utf8_names_are_refused_by_import(node, tmp_path):
    n = node().start()
    src = tmp_path / "src.db"
    run("sqlite3", src, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    for q in ["%ff.db", "caf%e9.db", "%c0%ae.db", "a%c2%85b.db"]:
        status, body = raw_request(n.port, "POST", f"/import?name={q}", src.read_bytes())
        assert status == 400 and b"UTF-8" in body, (q, status, body)
    assert os.listdir(n.mnt) == []
    info = json.loads(raw_request(n.port, "GET", "/info")[1])
    assert info["databases"] == []
    status, _ = raw_request(n.port, "POST", "/import?name=caf%C3%A9.db", src.read_bytes())
    assert status == 200
    assert [d["name"] for d in json.loads(raw_request(n.port, "GET", "/info")[1])["databases"]] == ["café.db"]


def test_non_utf8_names_are_refused_by_litefs_cloud(node, cloud):
    srv = cloud()
    tok = srv.create_cluster("c")
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    ltx = n.ltx_files()[0].read_bytes()
    auth = [("Authorization", tok), ("Litefs-Cluster-Id", "LFSC0000000000000001")]
    for q in ["%ff.db", "caf%e9.db", "a%c2%85b.db"]:
        status, body = raw_request(srv.port, "POST", f"/db/tx?db={q}", ltx, auth)
        assert status == 400 and json.loads(body)["code"] == "EINVALID", (q, status, body)
    status, body = raw_request(srv.port, "GET", "/pos", headers=auth)
    assert status == 200 and json.loads(body) == {}, body
    status, body = raw_request(srv.port, "POST", "/db/tx?db=caf%C3%A9.db", ltx, auth)
    assert status == 200, body
    assert list(json.loads(raw_request(srv.port, "GET", "/pos", headers=auth)[1])) == ["café.db"]


def test_one_unrestorable_database_does_not_hold_back_disaster_recovery(node, cloud, tmp_path):
    srv = cloud()
    tok = srv.create_cluster("prod")
    backup = f"backup:\n  type: litefs-cloud\n  url: {srv.url}\n  auth-token: \"{tok}\"\n"
    a = node("a", extra_config=backup).start()
    cli(a, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
    cli(a, "CREATE TABLE t(x); INSERT INTO t VALUES (3);", name="bad")
    auth = [("Authorization", tok)]

    def service_pos():
        return json.loads(raw_request(srv.port, "GET", "/pos", headers=auth)[1])
    wait_until(lambda: set(service_pos()) == {"db", "bad"}, timeout=5, msg=lambda: a.log_text()[-2000:])
    a.stop()
    # Plant a database whose name is not UTF-8 in the service's catalog, as
    # a service from before the name rule could hold; it is listed as
    # "?.db" and its snapshot cannot be fetched under that name.
    srv.stop()
    import sqlite3
    con = sqlite3.connect(srv.data / "catalog.db")
    con.execute("UPDATE dbs SET name = CAST(X'ff2e6462' AS TEXT) WHERE name = 'bad'")
    con.commit()
    con.close()
    srv.start()
    listed = service_pos()
    assert "db" in listed and "bad" not in listed, listed
    # Disaster: a fresh node. Its application starts with "db" restored.
    b = node("b", extra_config=backup)
    seen = tmp_path / "seen.txt"
    b.start(args=["--", "sh", "-c", f"sqlite3 {b.db()} 'SELECT count(*) FROM t' > {seen}; sleep 60"])
    wait_until(lambda: seen.exists() and seen.read_text().strip(), timeout=15, msg=lambda: b.log_text()[-3000:])
    assert seen.read_text().strip() == "2"
    log = b.log_text()
    assert "level=error" in log and "cannot restore a database from the backup service" in log, log[-3000:]


# ---- 3. a refused copy leaves nothing behind ----------------------------

def info_names(n):
    with urllib.request.urlopen(n.url("/info") if hasattr(n, "url") else f"http://127.0.0.1:{n.port}/info",
                                timeout=10) as r:
        return sorted(d["name"] for d in json.loads(r.read())["databases"])


def db_count(n):
    with urllib.request.urlopen(f"http://127.0.0.1:{n.port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("litefs_db_count "):
                return int(line.split()[1])


def nothing_left(n, name):
    return (name not in os.listdir(n.mnt) and f"{name}-pos" not in os.listdir(n.mnt)
            and not (n.data / "dbs" / name).exists() and name not in info_names(n))


def test_refused_copies_leave_nothing_behind(node, tmp_path):
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, I am not a database\n" * 100)
    other = tmp_path / "other.db"
    run("sqlite3", other, "CREATE TABLE u(y); INSERT INTO u VALUES (42);")

    r = run("cp", junk, n.mnt, check=False)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r.stderr
    r = run("cp", other, n.mnt / "copied.db", check=False)
    assert r.returncode != 0 and "Operation not supported" in r.stderr, r.stderr
    assert "use litefs import" in n.log_text()
    for name in ("notes.txt", "copied.db"):
        wait_until(lambda: nothing_left(n, name), timeout=5,
                   msg=lambda: f"{name} left behind: {os.listdir(n.mnt)} {info_names(n)}")
    assert info_names(n) == ["db"] and db_count(n) == 1
    # sqlite3 does not find an empty database under the name.
    with pytest.raises(FileNotFoundError):
        os.stat(n.mnt / "copied.db")
    # Nothing comes back at the next start.
    assert n.stop() == 0
    n.start()
    assert sorted(os.listdir(n.mnt)) == ["db", "db-pos"]
    assert sorted(p.name for p in (n.data / "dbs").iterdir()) == ["db"]
    assert info_names(n) == ["db"] and db_count(n) == 1
    # The names stay usable: an import and a new database made by sqlite3.
    status, body = raw_request(n.port, "POST", "/import?name=copied.db", other.read_bytes())
    assert status == 200, body
    assert cli(n, "SELECT y FROM u", name="copied.db").stdout.strip() == "42"
    cli(n, "CREATE TABLE v(z); INSERT INTO v VALUES (7);", name="notes.txt")
    assert cli(n, "SELECT z FROM v", name="notes.txt").stdout.strip() == "7"
    assert info_names(n) == ["copied.db", "db", "notes.txt"] and db_count(n) == 3


def test_new_name_opened_only_to_read_leaves_nothing(node):
    n = node().start()
    # sqlite3 creates the file empty and reads it: an empty database while
    # it is open, nothing once it is closed.
    assert cli(n, "SELECT count(*) FROM sqlite_master", name="empty.db").stdout.strip() == "0"
    wait_until(lambda: nothing_left(n, "empty.db"), timeout=5, msg=lambda: str(os.listdir(n.mnt)))
    # Held open by one connection, the empty database is there for others.
    con = n.connect("held.db")
    con.execute("SELECT count(*) FROM sqlite_master").fetchall()
    assert "held.db" in os.listdir(n.mnt)
    con2 = n.connect("held.db")
    con2.execute("CREATE TABLE t(x)")
    con2.commit()
    con2.close()
    con.close()
    time.sleep(0.5)
    assert "held.db" in os.listdir(n.mnt) and "held.db" in info_names(n)
    # Removed before its first transaction, a name keeps nothing either.
    fd = os.open(n.mnt / "gone.db", os.O_CREAT | os.O_RDWR, 0o644)
    os.remove(n.mnt / "gone.db")
    os.close(fd)
    wait_until(lambda: nothing_left(n, "gone.db"), timeout=5,
               msg=lambda: str(list((n.data / "dbs").iterdir())))


def test_failed_copy_over_a_deleted_name_keeps_its_history(node, tmp_path):
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", name="x.db")
    os.remove(n.mnt / "x.db")  # TXIDs 1, 2 the statements, 3 the deletion
    junk = tmp_path / "junk"
    junk.write_bytes(b"junk" * 2000)
    r = run("cp", junk, n.mnt / "x.db", check=False)
    assert r.returncode != 0
    wait_until(lambda: "x.db" not in os.listdir(n.mnt) and "x.db" not in info_names(n), timeout=5)
    # The history stays, and the next database under the name continues it.
    assert any((n.data / "dbs" / "x.db" / "ltx").iterdir())
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (2);", name="x.db")
    assert n.pos("x.db")[0] == 5


# ---- 5. admin commands on a directory that holds no service -------------

@pytest.mark.parametrize("args", [("cluster", "list"), ("cluster", "delete", "prod"), ("token", "list"),
                                  ("token", "create", "prod"), ("token", "revoke", "abc")])
@pytest.mark.parametrize("where", ["missing", "empty"])
def test_admin_commands_need_an_existing_service(tmp_path, args, where):
    d = tmp_path / "nothing-here"
    if where == "empty":
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITEFS_CLOUD_")}
    r = run(LITEFS_CLOUD, *args, "-data-dir", d, check=False, env=env)
    assert r.returncode == 1, r
    assert "holds no litefs-cloud service" in r.stderr and str(d) in r.stderr, r.stderr
    assert r.stdout == ""
    if where == "missing":
        assert not d.exists()
    else:
        assert list(d.iterdir()) == []


def test_cluster_create_sets_a_service_up_and_admin_commands_then_work(tmp_path):
    d = tmp_path / "svc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITEFS_CLOUD_")}
    tok = run(LITEFS_CLOUD, "cluster", "create", "prod", "-data-dir", d, env=env).stdout.strip()
    assert tok
    assert "prod" in run(LITEFS_CLOUD, "cluster", "list", "-data-dir", d, env=env).stdout
    assert run(LITEFS_CLOUD, "token", "list", "-data-dir", d, env=env).returncode == 0
