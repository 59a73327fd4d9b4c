"""The mount on a single node: commit capture in every journal mode with real
clients, invariants after every scenario, bad input, crashes and faults."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import LITEFS, check_invariants, db_checksum, describe_process, run, wait_until

MODES = ["delete", "truncate", "persist", "wal"]


def cli(node, sql, name="db", check=True):
    return run("sqlite3", "-bail", node.db(name), sql, check=check)


@pytest.mark.parametrize("mode", MODES)
def test_sqlite3_cli_scenario(node, mode):
    n = node().start()
    cli(n, f"PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
    before = len(n.ltx_files())
    cli(n, "INSERT INTO t(v) VALUES ('a'),('b'),('c');")
    assert len(n.ltx_files()) == before + 1, "one LTX per transaction"
    cli(n, "BEGIN; INSERT INTO t(v) SELECT hex(randomblob(500)) FROM generate_series(1, 2000); COMMIT;")
    cli(n, "UPDATE t SET v = upper(v) WHERE id % 3 = 0;")
    cli(n, "DELETE FROM t WHERE id % 2 = 0;")
    cli(n, "VACUUM;")
    assert cli(n, "SELECT count(*) FROM t").stdout.strip() == "1002"
    check_invariants(n)


@pytest.mark.parametrize("mode", MODES)
def test_python_scenario(node, mode):
    n = node().start()
    con = n.connect()
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.commit()
    for i in range(50):
        con.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(random.randint(10, 3000)),))
        con.commit()
    with con:
        con.executemany("INSERT INTO t(v) VALUES (?)", [(os.urandom(1000),) for _ in range(500)])
    con.execute("UPDATE t SET v = zeroblob(10) WHERE id < 100")
    con.commit()
    con.execute("DELETE FROM t WHERE id > 300")
    con.commit()
    con.execute("VACUUM")
    con.close()
    check_invariants(n)


def test_rollback_produces_nothing(node):
    n = node().start()
    for mode in ["delete", "wal"]:
        name = f"rb_{mode}"
        con = n.connect(name)
        con.execute(f"PRAGMA journal_mode={mode}")
        con.execute("CREATE TABLE t(x)")
        con.commit()
        files = [f.name for f in n.ltx_files(name)]
        pos = n.pos(name)
        # A transaction large enough to spill pages into the db file (rollback
        # mode) or the WAL, then rolled back.
        con.execute("PRAGMA cache_size=10")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(2000),) for _ in range(300)])
        con.rollback()
        assert [f.name for f in n.ltx_files(name)] == files
        assert n.pos(name) == pos
        con.execute("INSERT INTO t VALUES (1)")
        con.commit()
        con.close()
        assert len(n.ltx_files(name)) == len(files) + 1
        check_invariants(n, name)


def test_journal_mode_switches_and_size_changes(node):
    n = node().start()
    con = n.connect()
    con.execute("CREATE TABLE t(x)")
    con.commit()
    for mode in ["wal", "delete", "persist", "wal", "truncate", "delete"]:
        assert con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
        with con:
            con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(4000),) for _ in range(200)])
        with con:
            con.execute("DELETE FROM t WHERE rowid % 2 = 0")
        con.execute("VACUUM")
    con.close()
    check_invariants(n)


def test_page_sizes(node):
    n = node().start()
    for ps in [512, 1024, 8192, 65536]:
        name = f"ps{ps}"
        cli(n, f"PRAGMA page_size={ps}; PRAGMA journal_mode=wal; CREATE TABLE t(x); "
               f"INSERT INTO t SELECT randomblob(300) FROM generate_series(1,200);", name)
        cli(n, "DELETE FROM t WHERE rowid > 100; VACUUM;", name)
        check_invariants(n, name)


def test_rm_database_records_deletion_and_name_is_reusable(node):
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    txid, _ = n.pos()
    os.unlink(n.db())
    assert not n.db().exists()
    last = n.ltx_files()[-1]
    dump = run(LITEFS, "ltx", "dump", last).stdout
    assert "commit" in dump.lower()
    info = run(LITEFS, "ltx", "list", last).stdout
    assert f"{txid + 1:016x}" in info
    # Recreate: the TXID sequence continues, and the chain still replays.
    cli(n, "CREATE TABLE u(y); INSERT INTO u VALUES (2);")
    assert n.pos()[0] > txid + 1
    assert cli(n, "SELECT y FROM u").stdout.strip() == "2"
    check_invariants(n)


def test_pos_file_and_listing(node):
    n = node().start()
    cli(n, "CREATE TABLE t(x)")
    text = (n.mnt / "db-pos").read_text()
    assert len(text) == 34 and text[16] == "/" and text.endswith("\n")
    assert int(text[17:33], 16) >> 63 == 1
    names = sorted(os.listdir(n.mnt))
    assert names == ["db", "db-pos"]
    with pytest.raises(OSError):
        with open(n.mnt / "db-pos", "w") as f:
            f.write("x")


def test_bad_input_is_refused(node, tmp_path):
    n = node().start()
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, I am not a database\n" * 100)
    r = run("cp", junk, n.mnt / "notes.txt", check=False)
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert "not a SQLite database" in n.log_text()

    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    pos = n.pos()
    before = n.db().read_bytes()
    # A write that is not a whole page, and a direct write outside any
    # transaction, are refused and change nothing.
    fd = os.open(n.db(), os.O_WRONLY)
    with pytest.raises(OSError):
        os.pwrite(fd, b"x" * 100, 4096)
    with pytest.raises(OSError):
        os.pwrite(fd, b"\0" * 4096, 4096)
    os.close(fd)
    assert n.db().read_bytes() == before
    assert n.pos() == pos
    # Names that cannot be databases.
    for bad in [".hidden", "x-pos", "a\x01b"]:
        with pytest.raises(OSError):
            open(n.mnt / bad, "w").close()
    with pytest.raises(OSError):
        os.mkdir(n.mnt / "dir")
    with pytest.raises(OSError):
        os.rename(n.db(), n.mnt / "other")
    check_invariants(n)


def test_clean_restart_is_o1_and_verifies(node):
    n = node().start()
    cli(n, "PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t SELECT randomblob(100) FROM generate_series(1,1000);")
    pos = n.pos()
    assert n.stop() == 0
    assert (n.data / "dbs" / "db" / "clean").exists()
    n.start()
    assert n.pos() == pos
    deadline = time.time() + 10
    while "msg=\"verified\" db=db" not in n.log_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "msg=\"verified\" db=db" in n.log_text()
    cli(n, "INSERT INTO t VALUES (1)")
    check_invariants(n)


def test_verification_failure_refuses_writes(node):
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    n.stop()
    # Corrupt the backing database behind the node's back (page 2).
    backing = n.data / "dbs" / "db" / "db"
    with open(backing, "r+b") as f:
        f.seek(4096 + 100)
        f.write(b"\xff" * 16)
    n.start()
    deadline = time.time() + 10
    while "verification failed" not in n.log_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "verification failed" in n.log_text()
    r = cli(n, "INSERT INTO t VALUES (2)", check=False)
    assert r.returncode != 0


# The writer of test_kill9_node_during_writes. It opens the database by path,
# so it must have opened it while the node serves the mount: once the node
# is killed and its mount lazily unmounted, the same path names the bare
# directory under the mount point, where SQLite would quietly create a new
# database on the local disk and write to it forever. So after its first
# commit the writer checks that the database is on the mount (argv[4], the
# mount's st_dev) and only then reports READY (argv[5]); the test kills the
# node only once every writer is READY.
WRITER = textwrap.dedent("""
    import os, sqlite3, sys
    path, mode, start, mount_dev, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.execute("PRAGMA journal_mode=" + mode)
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    i = start
    while True:
        try:
            con.execute("INSERT INTO t(id, v) VALUES (?, randomblob(200 + ? % 3000))", (i, i))
        except Exception as e:
            print("ERR", e, flush=True)
            break
        print(i, flush=True)
        if i == start:
            if os.stat(path).st_dev != mount_dev:
                print("ERR the database is not on the mount", flush=True)
                break
            open(ready, "w").close()
        i += 1
""")


def mount_id_of(path):
    """The mount ID (mountinfo's first field) of the mount on path."""
    path = os.path.realpath(str(path))
    with open("/proc/self/mountinfo") as f:
        ids = [l.split()[0] for l in f if l.split()[4] == path]
    return ids[-1] if ids else None


def fuse_device_holders():
    """Every process with /dev/fuse open (a connection stays alive, and its
    requests unanswered, while any of them lives)."""
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse" for fd in fds):
                with open(f"/proc/{pid}/cmdline") as f:
                    holders.append(f"{pid}: {f.read().replace(chr(0), ' ')[:200]}")
        except OSError:
            pass
    return holders


def fail_hung_writers(n, rnd, name, ws, mount_id):
    """A writer outlived its killed node by 30 s: fail with what every live
    writer is doing (state, wchan, kernel stack, open files), who holds
    /dev/fuse, the mounts and the node's log, then kill the writers."""
    live = {k: w for k, w in ws.items() if w.poll() is None}
    report = []
    for k, w in live.items():
        report.append(describe_process(w.pid) + f"  ({k})")
        # fdinfo's mnt_id, not stat(): a stat would block on a live but
        # unanswered connection, the very case being diagnosed.
        for fd in ("3", "4", "5"):
            try:
                with open(f"/proc/{w.pid}/fdinfo/{fd}") as f:
                    mnt = next(l.split()[1] for l in f if l.startswith("mnt_id:"))
            except (OSError, StopIteration):
                continue
            where = "the killed node's mount" if mnt == mount_id else "NOT the node's mount"
            report.append(f"    fd {fd}: mnt_id {mnt}, {where} (mnt_id {mount_id})")
    with open("/proc/self/mounts") as f:
        mounts = [l.rstrip() for l in f if "fuse" in l]
    for w in live.values():
        w.kill()
    for w in live.values():
        try:
            w.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(f"round {rnd}: writer of {name} did not exit within 30 s of the node's kill -9;"
                f" live writers: {sorted(live)}\n" + "\n".join(report) +
                "\n  /dev/fuse holders: " + repr(fuse_device_holders()) +
                "\n  fuse mounts: " + repr(mounts) +
                "\n  node log tail:\n" + "\n".join(n.log_text().splitlines()[-30:]))


def test_kill9_node_during_writes(node, tmp_path):
    """kill -9 of the node while writers commit to several databases at once
    (one per journal mode): after each restart every acknowledged row of
    every database is there and every chain holds."""
    n = node().start()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(1234)
    modes = {f"k9_{m}.db": m for m in MODES}
    next_id = dict.fromkeys(modes, 1)
    acked = {name: set() for name in modes}
    for rnd in range(4):
        mount_dev = os.stat(n.mnt).st_dev
        mount_id = mount_id_of(n.mnt)
        ready = {name: tmp_path / f"ready-{rnd}-{name}" for name in modes}
        ws = {name: subprocess.Popen([sys.executable, str(script), str(n.db(name)), mode, str(next_id[name]),
                                      str(mount_dev), str(ready[name])],
                                     stdout=subprocess.PIPE, text=True)
              for name, mode in modes.items()}
        # Every writer has committed on the mount before the kill (see WRITER).
        wait_until(lambda: all(r.exists() or ws[k].poll() is not None for k, r in ready.items()),
                   timeout=60, msg="every writer's first commit")
        for name, w in ws.items():
            if not ready[name].exists():
                out, _ = w.communicate()
                pytest.fail(f"round {rnd}: writer of {name} exited before its first commit on a live mount:\n"
                            f"{out[-2000:]}\n{n.log_text()[-3000:]}")
        time.sleep(0.3 + rng.random() * 0.7)
        n.kill9()
        for name, w in ws.items():
            try:
                out, _ = w.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                fail_hung_writers(n, rnd, name, ws, mount_id)
            ids = [int(x) for x in out.split() if x.isdigit()]
            acked[name].update(ids)
        n.start()
        for name in modes:
            have = {r[0] for r in n.connect(name).execute("SELECT id FROM t")}
            missing = acked[name] - have
            assert not missing, f"round {rnd} {name}: acknowledged rows missing: {sorted(missing)[:10]}"
            next_id[name] = max(have | acked[name] | {0}) + 1
            check_invariants(n, name)


def test_kill9_client_inside_transaction(node, tmp_path):
    n = node().start()
    for mode in ["delete", "wal"]:
        name = f"c_{mode}"
        cli(n, f"PRAGMA journal_mode={mode}; CREATE TABLE t(x); INSERT INTO t VALUES (0);", name)
        pos = n.pos(name)
        script = tmp_path / "hang.py"
        script.write_text(textwrap.dedent(f"""
            import sqlite3, sys, time
            con = sqlite3.connect({str(n.db(name))!r}, isolation_level=None)
            con.execute("PRAGMA cache_size=5")
            con.execute("BEGIN")
            for i in range(400):
                con.execute("INSERT INTO t VALUES (randomblob(3000))")
            print("in-tx", flush=True)
            time.sleep(60)
        """))
        p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "in-tx"
        p.kill()
        p.wait()
        # The next client recovers (hot journal or WAL) and sees no trace.
        assert cli(n, "SELECT count(*) FROM t", name).stdout.strip() == "1"
        assert n.pos(name) == pos
        cli(n, "INSERT INTO t VALUES (1)", name)
        check_invariants(n, name)


@pytest.mark.parametrize("call,nth", [("fsync", 1), ("fsync", 3), ("pwrite", 5), ("pwrite", 12),
                                      ("unlink", 1), ("ftruncate", 1), ("fsync", 7), ("pwrite", 30)])
def test_fault_injection_old_or_new(node, tmp_path, call, nth):
    """The Nth syscall of a kind fails while two databases (DELETE and WAL)
    are written at once: whichever database it hits, each row is either
    acknowledged and present or failed and absent, and both chains hold,
    before and after a restart."""
    n = node()
    n.start()
    names = {"f_delete.db": "delete", "f_wal.db": "wal"}
    for name, mode in names.items():
        cli(n, f"PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v);", name)
    n.stop()
    n.start(env={"LITEFS_FAULT": f"{call}:{nth}"})
    script = tmp_path / "fault_writer.py"
    script.write_text(textwrap.dedent("""
        import sqlite3, sys
        con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
        for i in range(1, 21):
            try:
                con.execute("INSERT INTO t VALUES (?, randomblob(5000))", (i,))
                print(i, "ok", flush=True)
            except sqlite3.Error as e:
                print(i, "failed", flush=True)
    """))
    procs = {name: subprocess.Popen([sys.executable, str(script), str(n.db(name))],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in names}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results = [(int(i), ok == "ok") for i, ok in (l.split() for l in out.splitlines())]
        assert len(results) == 20, out
        have = {r[0] for r in n.connect(name).execute("SELECT id FROM t")}
        for i, ok in results:
            if ok:
                assert i in have, f"{name}: row {i} acknowledged but missing"
            else:
                assert i not in have, f"{name}: row {i} failed but is present"
        check_invariants(n, name)
    # And the chains still hold after a restart.
    n.stop()
    n.start()
    for name in names:
        check_invariants(n, name)


def test_concurrent_writers_and_readers(node, tmp_path):
    """Four writers and four readers on each of a WAL and a DELETE database,
    and two of each on a TRUNCATE and a PERSIST database, all at once on one
    node: every writer's rows are all there and every chain holds."""
    n = node().start()
    duration = float(os.environ.get("LITEFS_CONCURRENCY_SECONDS", "20"))
    workers = {"conc_wal.db": ("wal", 4), "conc_delete.db": ("delete", 4),
               "conc_truncate.db": ("truncate", 2), "conc_persist.db": ("persist", 2)}
    for name, (mode, _) in workers.items():
        cli(n, f"PRAGMA journal_mode={mode}; CREATE TABLE t(w INTEGER, i INTEGER, v BLOB);", name)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sqlite3, sys, time
        path, role, wid, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
        con.execute("PRAGMA busy_timeout=60000")
        end = time.time() + secs
        n = 0
        while time.time() < end:
            if role == "w":
                con.execute("INSERT INTO t VALUES (?, ?, randomblob(100 + ? % 2000))", (wid, n, n))
            else:
                c = con.execute("SELECT count(*), count(DISTINCT w) FROM t").fetchone()
                assert c[0] >= 0
            n += 1
        print(n, flush=True)
    """))
    procs = []
    for name, (mode, k) in workers.items():
        for wid, role in enumerate("w" * k + "r" * k):
            procs.append((name, role, wid, subprocess.Popen(
                [sys.executable, str(script), str(n.db(name)), role, str(wid), str(duration)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    counts = {}
    for name, role, wid, p in procs:
        out, err = p.communicate(timeout=duration + 120)
        assert p.returncode == 0, f"{name} {role}{wid}: {err}"
        if role == "w":
            counts[(name, wid)] = int(out.strip())
    for name in workers:
        con = n.connect(name)
        for (cname, wid), want in counts.items():
            if cname == name:
                got = con.execute("SELECT count(*) FROM t WHERE w = ?", (wid,)).fetchone()[0]
                assert got == want, f"{name} writer {wid}: {got} rows, reported {want}"
        con.close()
        check_invariants(n, name)


def test_exec_override_exit_code_and_unmount(node):
    n = node()
    n.start(args=["--", "sh", "-c", f"sqlite3 {n.db()} 'CREATE TABLE t(x)' && exit 7"], wait=False)
    assert n.proc.wait(30) == 7
    assert not os.path.ismount(n.mnt)
    log = n.log_text()
    assert "application exited" in log


def test_exec_list_runs_in_order(node, tmp_path):
    marker = tmp_path / "order.txt"
    n = node(extra_config=textwrap.dedent(f"""
        exec:
          - cmd: "sh -c 'echo first >> {marker}'"
          - cmd: "sh -c 'echo candidate >> {marker}'"
            if-candidate: true
          - cmd: "sh -c 'echo app >> {marker}; exit 3'"
    """))
    n.start(wait=False)
    assert n.proc.wait(30) == 3
    assert marker.read_text().split() == ["first", "candidate", "app"]


def test_sigterm_is_forwarded_to_the_app(node, tmp_path):
    marker = tmp_path / "got-term"
    n = node()
    n.start(args=["--", "sh", "-c", f"trap 'echo term > {marker}; exit 0' TERM; while true; do sleep 0.1; done"])
    time.sleep(0.5)
    assert n.stop() == 0
    assert marker.read_text().strip() == "term"


def test_bad_config_is_refused_with_line(node, tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("fuse:\n  dir: /tmp/x\ndata:\n  dir: /tmp/y\n  bogus: 1\n")
    r = run(LITEFS, "mount", "-config", cfg, check=False)
    assert r.returncode != 0
    assert "bogus" in r.stderr and ":5" in r.stderr


def test_retention_removes_old_segments_and_keeps_newest(node):
    n = node(extra_config="")
    n.config.write_text(n.config.read_text().replace(
        f"  dir: {n.data}\n", f"  dir: {n.data}\n  retention: 1s\n  retention-monitor-interval: 500ms\n"))
    n.start()
    cli(n, "CREATE TABLE t(x);")
    for i in range(5):
        cli(n, f"INSERT INTO t VALUES ({i});")
    assert len(n.ltx_files()) == 6
    # Segments rotate after a quarter of the window (plus a second), so
    # writing on for a while leaves several, and retention removes all but
    # the ones written within the window.
    deadline = time.time() + 4
    i = 10
    while time.time() < deadline:
        cli(n, f"INSERT INTO t VALUES ({i});")
        i += 1
        time.sleep(0.05)
    assert len(n.segments()) >= 2
    time.sleep(3)
    segs = n.segments()
    assert len(segs) == 1, segs
    files = n.ltx_files()
    last = n.pos()[0]
    assert files[-1].name == f"{last:016x}-{last:016x}.ltx"
    assert int(files[0].name[:16], 16) > 6, "the oldest transactions must be gone"
    # The position survives a restart with only the newest segment left.
    n.stop()
    n.start()
    assert n.pos()[0] == last
    cli(n, "INSERT INTO t VALUES (9);")
    assert n.pos()[0] == last + 1


def test_if_primary_worker_runs_while_primary(node, tmp_path):
    marker = tmp_path / "worker.txt"
    n = node(extra_config=textwrap.dedent(f"""
        exec:
          - cmd: "sh -c 'echo started >> {marker}; trap \\"echo stopped >> {marker}; exit 0\\" TERM; while true; do sleep 0.1; done'"
            if-primary: true
          - cmd: "sleep 600"
    """))
    n.start()
    deadline = time.time() + 10
    while not (marker.exists() and "started" in marker.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    assert marker.read_text().split() == ["started"]
    n.stop()
    assert marker.read_text().split() == ["started", "stopped"]


def test_stale_mount_after_kill9_is_cleared(node):
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    n.proc.kill()
    n.proc.wait()
    n.proc = None
    n.logf.close()
    # The mount is left behind, answering "Transport endpoint is not connected".
    with pytest.raises(OSError):
        os.listdir(n.mnt)
    n.start()
    assert "clearing a stale mount" in n.log_text()
    assert cli(n, "SELECT count(*) FROM t").stdout.strip() == "1"
    check_invariants(n)


def header_fields(path):
    out = run(LITEFS, "ltx", "dump", path).stdout
    fields = {}
    for line in out.splitlines():
        if ":" in line and not line.startswith(" "):
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return fields


@pytest.mark.parametrize("compress", [True, False])
def test_ltx_headers_carry_node_id_wal_fields_and_compression(node, compress):
    n = node()
    n.config.write_text(n.config.read_text().replace(
        f"  dir: {n.data}\n", f"  dir: {n.data}\n  compress: {'true' if compress else 'false'}\n"))
    n.start()
    cli(n, "PRAGMA journal_mode=wal; CREATE TABLE t(x);")
    cli(n, "INSERT INTO t VALUES (1);")
    node_id = (n.data / "id").read_text().strip()
    files = n.ltx_files()
    last = header_fields(files[-1])
    assert ("lz4" in last["flags"]) == compress
    assert node_id in last["node id"].lower()
    assert last["wal offset"] != "0" and last["wal size"] != "0"
    first = header_fields(files[0])
    assert first["wal offset"] == "0"  # the switch to WAL is a rollback-journal commit


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_new_database_whose_first_transaction_spills(node, mode):
    # SQLite keeps page 1 pinned during a write transaction: with a small
    # cache, a large first transaction writes other pages before page 1.
    n = node().start()
    con = n.connect(isolation_level=None)
    con.execute("PRAGMA cache_size=5")
    con.execute("BEGIN")
    con.execute("CREATE TABLE t(x)")
    con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(3000),) for _ in range(500)])
    con.execute("COMMIT")
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("INSERT INTO t VALUES (1)")
    con.close()
    assert cli(n, "SELECT count(*) FROM t").stdout.strip() == "501"
    check_invariants(n)


def test_exclusive_locking_mode_in_wal_is_captured(node):
    # With locking_mode=EXCLUSIVE before the first WAL access SQLite keeps
    # the wal-index in heap memory and takes no shm locks; commits are still
    # frames in -wal, which is what the node follows.
    n = node().start()
    cli(n, "PRAGMA journal_mode=wal; CREATE TABLE t(x);")
    con = n.connect(isolation_level=None)
    con.execute("PRAGMA locking_mode=EXCLUSIVE")
    for i in range(20):
        con.execute("INSERT INTO t VALUES (?)", (i,))
    pos = n.pos()
    con.close()
    assert pos[0] >= 22
    check_invariants(n)


@pytest.mark.parametrize("mode", ["memory", "off"])
def test_journal_modes_without_a_commit_event_are_refused(node, mode):
    n = node().start()
    cli(n, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    pos = n.pos()
    before = n.db().read_bytes()
    r = cli(n, f"PRAGMA journal_mode={mode}; INSERT INTO t VALUES (2);", check=False)
    assert r.returncode != 0
    assert "journal_mode MEMORY/OFF" in n.log_text()
    assert n.pos() == pos
    assert n.db().read_bytes() == before
    assert cli(n, "SELECT count(*) FROM t").stdout.strip() == "1"
    check_invariants(n)
