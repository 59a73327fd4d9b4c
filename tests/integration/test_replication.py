"""Replication with the static lease: real nodes (separate mounts, data
dirs and ports on loopback), real clients (sqlite3 CLI, Python sqlite3).

Every scenario ends by comparing the replicas with the primary exactly:
`-pos` (TXID and checksum), every row of every table, the checksum of the
replica's logical database as read through its mount, its LTX chain.
"""
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import LITEFS, PRIMARY_HOST, db_checksum, run, wait_until

MODES = ["delete", "wal"]


# ---- helpers ---------------------------------------------------------------

def cli(node, sql, name="db", check=True):
    return run("sqlite3", "-bail", "-cmd", ".timeout 30000", node.db(name), sql, check=check)


def dump(node, name="db"):
    """The schema and every row of every table, read through node's mount
    (on a replica SQLite falls back to a read-only connection)."""
    con = sqlite3.connect(str(node.db(name)), timeout=30)
    try:
        out = {"schema": sorted(con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall(),
                                key=repr)}
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"):
            out[t] = con.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall()
        return out
    finally:
        con.close()


def logical_checksum(node, name, tmp):
    """The LTX checksum of the database as a client of node's mount sees it:
    the db file plus its committed WAL frames (a copy of both, checkpointed
    outside the mount). Only call it while nothing is being applied."""
    d = tmp / f"copy-{node.name}-{name}-{time.monotonic_ns()}"
    d.mkdir()
    shutil.copyfile(node.db(name), d / "db")
    wal = node.mnt / f"{name}-wal"
    if wal.exists() and wal.stat().st_size > 0:
        shutil.copyfile(wal, d / "db-wal")
        con = sqlite3.connect(str(d / "db"))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
    return db_checksum(d / "db")


def check_replica(c, replica, tmp, name="db"):
    """A replica that has synced holds exactly the primary's database."""
    ppos = c.primary.pos(name)
    assert replica.pos(name) == ppos
    out = run("sqlite3", "-cmd", ".timeout 10000", replica.db(name), "PRAGMA integrity_check").stdout.strip()
    assert out == "ok", f"{replica.name}: integrity_check: {out}"
    assert dump(replica, name) == dump(c.primary, name), f"{replica.name}: rows differ from the primary's"
    assert logical_checksum(replica, name, tmp) == ppos[1], \
        f"{replica.name}: the database read through the mount does not have the checksum of -pos {ppos}"
    segs = replica.segments(name)
    assert segs, f"{replica.name}: no LTX segment for {name}"
    run(LITEFS, "ltx", "verify", *segs)


def chain_names(node, name="db"):
    """Names of the node's LTX records (MIN-MAX TXID), in order. An empty
    segment file (a replica leaves one while a refused record is cut back)
    holds no record and is skipped."""
    segs = [s for s in node.segments(name) if s.stat().st_size > 0]
    if not segs:
        return []
    out = run(LITEFS, "ltx", "list", *segs).stdout.splitlines()[1:]
    return [f"{l.split()[0]}-{l.split()[1]}.ltx" for l in out if l.strip()]


def start_script(tmp, text, *args):
    path = tmp / f"script-{time.monotonic_ns()}.py"
    path.write_text(textwrap.dedent(text))
    return subprocess.Popen([sys.executable, str(path), *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"script failed ({p.returncode}):\n{err[-3000:]}"
    return out


def log_since(node, offset):
    return node.log_text()[offset:]


# ---- three nodes, writers in both journal modes ----------------------------

WRITER = """
    import os, random, sqlite3, sys, time
    path, secs, who = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    rnd = random.Random(who)
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    end = time.time() + secs
    n = 0
    while time.time() < end:
        k = rnd.random()
        con.execute("BEGIN IMMEDIATE")
        if k < 0.7:
            con.execute("INSERT INTO t(who, v) VALUES (?, ?)", (who, os.urandom(rnd.randint(10, 3000))))
        elif k < 0.85:
            con.execute("UPDATE t SET v = randomblob(?) WHERE id % 11 = ?", (rnd.randint(1, 500), rnd.randint(0, 10)))
        elif k < 0.95:
            con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 3)")
        else:
            con.executemany("INSERT INTO t(who, v) VALUES (?, ?)", [(who, os.urandom(1500)) for _ in range(200)])
        con.execute("COMMIT")
        n += 1
    print(n)
"""


def test_three_nodes_writers_replicate_with_primary_checksum(cluster, tmp_path):
    """A DELETE and a WAL database written at once on the primary (a Python
    writer and sqlite3 CLI writers on each) while readers check both on
    both replicas: no reader ever sees a broken database, and each replica
    ends with the primary's state and chain for every database."""
    c = cluster(3)
    p = c.primary
    names = {f"rep_{m}.db": m for m in MODES}
    for name, mode in names.items():
        cli(p, f"PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB); "
               f"CREATE INDEX t_who ON t(who);", name)
    for name in names:
        c.wait_synced(name)
        for r in c.replicas:
            assert dump(r, name) == dump(p, name)

    secs = 3.0
    stop = threading.Event()
    failures = []
    checks = {r.name: 0 for r in c.replicas}

    def cli_writer(name):
        i = 0
        while not stop.is_set():
            cli(p, f"INSERT INTO t(who, v) VALUES ('cli', randomblob({100 + i % 2000})); "
                   f"UPDATE t SET who = 'cli2' WHERE id = (SELECT max(id) FROM t WHERE who = 'cli');", name)
            i += 1

    def checker(r):
        while not stop.is_set():
            for name in names:
                res = run("sqlite3", "-cmd", ".timeout 10000", r.db(name),
                          "PRAGMA integrity_check; SELECT count(*) FROM t;", check=False)
                lines = res.stdout.split()
                if res.returncode != 0 or not lines or lines[0] != "ok":
                    failures.append((r.name, name, res.returncode, res.stdout[-500:], res.stderr[-500:]))
                # A Python reader too, through a fresh connection.
                try:
                    con = sqlite3.connect(str(r.db(name)), timeout=10)
                    ok = con.execute("PRAGMA quick_check").fetchone()[0]
                    con.execute("SELECT count(*), sum(length(v)) FROM t").fetchone()
                    con.close()
                    if ok != "ok":
                        failures.append((r.name, name, "quick_check", ok))
                except sqlite3.Error as e:
                    failures.append((r.name, name, "python", str(e)))
            checks[r.name] += 1

    pys = {name: start_script(tmp_path, WRITER, p.db(name), secs, "py") for name in names}
    threads = [threading.Thread(target=cli_writer, args=(name,)) for name in names] + \
              [threading.Thread(target=checker, args=(r,)) for r in c.replicas]
    for t in threads:
        t.start()
    try:
        n_py = {name: int(finish(py).strip()) for name, py in pys.items()}
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(v > 10 for v in n_py.values()), f"the Python writers barely ran: {n_py}"
    assert not failures, f"integrity checks on replicas failed while writers ran: {failures[:5]}"
    assert all(v >= 2 for v in checks.values()), f"too few checks ran: {checks}"

    for name in names:
        pos = c.wait_synced(name, timeout=10)
        assert pos[0] > n_py[name]
        for r in c.replicas:
            check_replica(c, r, tmp_path, name)
        # A replica that followed from the start holds the primary's chain,
        # record for record.
        want = chain_names(p, name)
        for r in c.replicas:
            assert chain_names(r, name) == want


def test_replicas_follow_each_commit_promptly(cluster, tmp_path):
    """Live records are streamed as commits land, not on a timer: after each
    commit, time until both replicas' -pos show it. Generous bounds for a
    loaded 2-core machine (the goal in BENCHMARKS.md is p99 < 10 ms)."""
    c = cluster(3)
    p = c.primary
    con = p.connect(isolation_level=None)
    con.execute("CREATE TABLE t(x)")
    c.wait_synced()
    rng = random.Random(5)
    lags = []
    for i in range(20):
        time.sleep(0.05 + rng.random() * 0.1)
        con.execute("INSERT INTO t VALUES (?)", (i,))
        t0 = time.monotonic()
        want = p.pos()
        while any(r.pos_or_none() != want for r in c.replicas):
            if time.monotonic() - t0 > 10:
                raise AssertionError(f"commit {want} not replicated in 10 s\n{c.describe()}")
            time.sleep(0.0005)
        lags.append((time.monotonic() - t0) * 1000)
    con.close()
    lags.sort()
    assert lags[len(lags) // 2] < 200 and lags[int(len(lags) * 0.9)] < 500, \
        f"replication lag per commit (ms, sorted): {[round(x, 1) for x in lags]}"


@pytest.mark.parametrize("mode", MODES)
def test_large_transaction_vacuum_and_deletion_replicate(cluster, tmp_path, mode):
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    name = f"big_{mode}.db"
    # A 1 KiB page size and a ~24 MB transaction: many frames' worth of LTX.
    cli(p, f"PRAGMA page_size=1024; PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); "
           f"INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1, 8000);", name)
    c.wait_synced(name, timeout=20)
    check_replica(c, r, tmp_path, name)
    # Shrink: DELETE then VACUUM truncates the database on the replica too.
    cli(p, "DELETE FROM t WHERE id > 100; VACUUM;", name)
    c.wait_synced(name)
    check_replica(c, r, tmp_path, name)
    size = os.path.getsize(r.db(name))
    assert size == os.path.getsize(p.db(name)) or mode == "wal", (size, os.path.getsize(p.db(name)))
    assert size < 1_000_000, f"the replica's file did not shrink: {size} bytes"
    # rm on the primary deletes it on the replica; the name can be reused.
    os.unlink(p.db(name))
    wait_until(lambda: not r.db(name).exists(), msg=lambda: f"{name} to disappear on the replica\n{c.describe(name)}")
    assert not (r.mnt / f"{name}-pos").exists()
    cli(p, "CREATE TABLE u(y); INSERT INTO u VALUES ('again');", name)
    c.wait_synced(name)
    check_replica(c, r, tmp_path, name)
    assert cli(r, "SELECT y FROM u", name).stdout.strip() == "again"


# ---- readers never see a half-applied transaction --------------------------

TRANSFERS = """
    import random, sqlite3, sys, time
    path, secs, nrows, done = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rnd = random.Random(7)
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    # At least `secs` and at least 30 transactions (a loaded machine can
    # run fewer than that in `secs`), at most 60 s; the readers read until
    # the writer is done.
    start = time.time()
    n = 0
    while (time.time() < start + secs or n < 30) and time.time() < start + 60:
        con.execute("BEGIN IMMEDIATE")
        if n % 10 == 9:
            # Touches every page of the table and of the index: the odd
            # accounts get 1 from the even ones.
            con.execute("UPDATE accounts SET balance = balance + (CASE WHEN id % 2 THEN 1 ELSE -1 END)")
        else:
            for _ in range(rnd.randint(1, 20)):
                a, b, x = rnd.randrange(nrows), rnd.randrange(nrows), rnd.randint(1, 100)
                con.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (x, a))
                con.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (x, b))
        con.execute("COMMIT")
        n += 1
    open(done, "w").close()
    print(n)
"""

READER = """
    import json, os, sqlite3, sys, time
    path, secs, total, nrows, done = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    con = sqlite3.connect(path, timeout=10, isolation_level=None)
    end = time.time() + secs
    reads, bad, errors, states = 0, [], [], set()
    while time.time() < end or (not os.path.exists(done) and time.time() < end + 90):
        try:
            # One statement over the table.
            s, c = con.execute("SELECT sum(balance), count(*) FROM accounts").fetchone()
            if (s, c) != (total, nrows):
                bad.append(["table", s, c])
            # One read transaction over the index and then the table: both
            # must see the same committed state.
            con.execute("BEGIN")
            a = con.execute("SELECT sum(balance) FROM accounts INDEXED BY accounts_balance").fetchone()[0]
            rows = con.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall()
            con.execute("COMMIT")
            states.add(hash(tuple(rows)))
            b = sum(r[1] for r in rows)
            if a != total or b != total or len(rows) != nrows:
                bad.append(["index+rows", a, b, len(rows)])
            reads += 1
        except sqlite3.Error as e:
            errors.append(str(e))
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
    print(json.dumps({"reads": reads, "states": len(states), "n_bad": len(bad), "bad": bad[:10],
                      "n_errors": len(errors), "errors": errors[:10]}))
"""


@pytest.mark.parametrize("mode", MODES)
def test_replica_readers_never_see_half_applied_transaction(cluster, tmp_path, mode):
    c = cluster(3)
    p = c.primary
    nrows, each = 400, 1000
    total = nrows * each
    # 1500-byte padding: about two accounts per page, so a transaction
    # touches many pages of the table and of the index.
    cli(p, f"PRAGMA journal_mode={mode}; "
           f"CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB); "
           f"INSERT INTO accounts SELECT value, {each}, randomblob(1500) FROM generate_series(0, {nrows - 1}); "
           f"CREATE INDEX accounts_balance ON accounts(balance);")
    c.wait_synced()
    secs = 4.0
    done = tmp_path / "writer-done"
    writer = start_script(tmp_path, TRANSFERS, p.db(), secs, nrows, done)
    readers = [start_script(tmp_path, READER, r.db(), secs, total, nrows, done) for r in c.replicas for _ in range(2)]
    n_tx = int(finish(writer).strip())
    results = [json.loads(finish(rd)) for rd in readers]
    c.wait_synced()
    assert n_tx > 20, "the writer barely ran"
    for res in results:
        assert res["n_bad"] == 0, f"a replica reader saw a half-applied transaction: {res}"
        assert res["n_errors"] == 0, f"a replica reader failed: {res}"
        assert res["reads"] >= 10, f"the reader barely ran: {res}"
        # One long-lived connection sees the transactions arrive.
        assert res["states"] >= 3, f"the reader saw almost no new state: {res}"
    for r in c.replicas:
        check_replica(c, r, tmp_path)
        assert cli(r, "SELECT sum(balance) FROM accounts").stdout.strip() == str(total)


@pytest.mark.parametrize("mode", MODES)
def test_long_read_transaction_on_replica_delays_replication_only_while_held(cluster, tmp_path, mode):
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    cli(p, f"PRAGMA journal_mode={mode}; CREATE TABLE t(x); INSERT INTO t VALUES (0);")
    c.wait_synced()
    con = sqlite3.connect(str(r.db()), timeout=10, isolation_level=None)
    con.execute("BEGIN")
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    for i in range(3):
        cli(p, f"INSERT INTO t VALUES ({i + 1});")
    time.sleep(1.5)
    # The reader keeps its consistent snapshot while it holds it.
    assert con.execute("SELECT count(*), sum(x) FROM t").fetchone() == (1, 0)
    con.execute("COMMIT")
    t0 = time.monotonic()
    c.wait_synced(timeout=10)
    waited = time.monotonic() - t0
    assert waited < 1.0, f"replication took {waited:.2f} s after the reader let go"
    assert con.execute("SELECT count(*), sum(x) FROM t").fetchone() == (4, 6)
    con.close()
    check_replica(c, r, tmp_path)


def test_lease_databases_filters_what_a_replica_follows(cluster, tmp_path):
    c = cluster(3, start=False)
    only = c.replicas[0]
    only.lease_keys["databases"] = '["a.db"]'
    only.write_config()
    c.start()
    p = c.primary
    cli(p, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", "a.db")
    cli(p, "CREATE TABLE t(x); INSERT INTO t VALUES (2);", "b.db")
    c.wait_synced("a.db")
    c.wait_synced("b.db", replicas=[c.replicas[1]])
    cli(p, "INSERT INTO t VALUES (3);", "b.db")
    cli(p, "INSERT INTO t VALUES (4);", "a.db")
    c.wait_synced("a.db")
    c.wait_synced("b.db", replicas=[c.replicas[1]])
    time.sleep(1.5)  # a heartbeat or two
    assert sorted(f for f in os.listdir(only.mnt) if not f.startswith(".") and f.startswith("b.db")) == []
    assert "b.db" not in {d["name"] for d in only.info()["databases"]}
    check_replica(c, only, tmp_path, "a.db")


def test_exec_starts_after_first_sync_and_if_candidate_only_on_primary(cluster, tmp_path):
    c = cluster(2, start=False)
    p, r = c.primary, c.replicas[0]
    p.start()
    con = p.connect(isolation_level=None)
    con.execute("CREATE TABLE t(x)")
    for i in range(300):
        con.execute("INSERT INTO t VALUES (randomblob(2000))")
    con.close()
    want = p.pos()
    seen = tmp_path / "seen-pos"
    cand = tmp_path / "candidate-ran"
    r.extra_config = textwrap.dedent(f"""\
        exec:
          - cmd: "touch {cand}"
            if-candidate: true
          - cmd: "sh -c 'cat {r.mnt}/db-pos > {seen}; exec sleep 600'"
    """)
    r.write_config()
    r.start()
    wait_until(lambda: seen.exists() and seen.read_text(), msg=lambda: f"the app to start\n{r.log_text()}")
    assert seen.read_text() == f"{want[0]:016x}/{want[1]}\n", \
        f"the application started before the first sync: it saw {seen.read_text()!r}, primary {want}"
    assert not cand.exists(), "an if-candidate command ran on a replica"


# ---- writes on a replica -----------------------------------------------------

READONLY = "attempt to write a readonly database"


def replica_state(r, name="db"):
    """What must not change when a write on a replica is refused."""
    files = {}
    for f in sorted(os.listdir(r.mnt)):
        if f.startswith(".") or f.endswith("-shm"):
            continue  # status files; -shm holds readers' marks
        data = (r.mnt / f).read_bytes()
        if f.endswith("-wal") and not data:
            continue  # an empty WAL made by a WAL-mode reader (allowed) is no change
        files[f] = data
    return files, r.pos(name), chain_names(r, name)


@pytest.mark.parametrize("mode", MODES)
def test_write_on_replica_is_refused_readonly(cluster, tmp_path, mode):
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    cli(p, f"PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); "
           f"INSERT INTO t(v) VALUES ('a'), ('b'), ('c');")
    c.wait_synced()
    before = replica_state(r)

    # Python: every kind of write raises SQLITE_READONLY.
    for sql in ["INSERT INTO t(v) VALUES ('x')", "UPDATE t SET v = 'y'", "DELETE FROM t",
                "CREATE TABLE u(x)", "DROP TABLE t", "CREATE INDEX t_v ON t(v)", "PRAGMA user_version = 7"]:
        con = sqlite3.connect(str(r.db()), timeout=5)
        with pytest.raises(sqlite3.OperationalError) as e:
            con.execute(sql)
            con.commit()
        assert READONLY in str(e.value), f"{sql}: {e.value}"
        con.close()
    # An explicit write transaction, and an autocommit connection.
    con = sqlite3.connect(str(r.db()), timeout=5, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as e:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t(v) VALUES ('x')")
        con.execute("COMMIT")
    assert READONLY in str(e.value), str(e.value)
    con.close()
    # The sqlite3 CLI says the same.
    res = cli(r, "INSERT INTO t(v) VALUES ('z');", check=False)
    assert res.returncode != 0 and READONLY in res.stderr, res.stderr
    # The connection still reads.
    assert cli(r, "SELECT group_concat(v) FROM t").stdout.strip() == "a,b,c"

    # Creating a database, through SQLite and directly.
    with pytest.raises(sqlite3.OperationalError) as e:
        con = sqlite3.connect(str(r.mnt / "new.db"), timeout=5)
        con.execute("CREATE TABLE x(y)")
    assert "unable to open database file" in str(e.value) or READONLY in str(e.value), e.value
    res = run("sqlite3", r.mnt / "new3.db", "CREATE TABLE x(y);", check=False)
    assert res.returncode != 0, res.stdout
    with pytest.raises(OSError) as e:
        open(r.mnt / "new2.db", "wb").close()
    assert e.value.errno == errno.EROFS, e.value
    # rm, truncate, opening for writing, cp into the mount (a new name and
    # over the existing database).
    with pytest.raises(OSError) as e:
        os.unlink(r.db())
    assert e.value.errno == errno.EROFS, e.value
    with pytest.raises(OSError) as e:
        os.truncate(r.db(), 0)
    assert e.value.errno == errno.EROFS, e.value
    with pytest.raises(OSError) as e:
        os.open(r.db(), os.O_WRONLY)
    assert e.value.errno == errno.EROFS, e.value
    src = tmp_path / "src.db"
    s = sqlite3.connect(str(src))
    s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    s.execute("INSERT INTO t(v) VALUES ('evil')")
    s.commit()
    s.close()
    for target in [r.mnt / "copied.db", r.db()]:
        res = run("cp", src, target, check=False)
        assert res.returncode != 0, f"cp into {target} succeeded"
        assert "Read-only file system" in res.stderr, res.stderr
    # The journal mode cannot be switched either.
    other = "wal" if mode == "delete" else "delete"
    res = cli(r, f"PRAGMA journal_mode={other};", check=False)
    assert res.returncode != 0 or res.stdout.strip() == mode, res.stdout + res.stderr

    after = replica_state(r)
    assert after[1] == before[1], "the replica's position changed"
    assert after[2] == before[2], "the replica's LTX chain changed"
    assert sorted(after[0]) == sorted(before[0]), f"files in the mount changed: {sorted(before[0])} -> {sorted(after[0])}"
    for f in before[0]:
        assert after[0][f] == before[0][f], f"{f} changed on the replica"
    assert not (r.mnt / "new.db").exists() and not (r.mnt / "copied.db").exists()

    # Replication goes on after the refusals.
    cli(p, "INSERT INTO t(v) VALUES ('d');")
    c.wait_synced()
    assert cli(r, "SELECT group_concat(v) FROM t").stdout.strip() == "a,b,c,d"
    check_replica(c, r, tmp_path)


# ---- status: .primary, .lag, /info, /events --------------------------------

class EventStream:
    """GET /events (through curl, so that closing never waits for a blocked
    read) read line by line in a background thread."""

    def __init__(self, node):
        self.proc = subprocess.Popen(["curl", "-sSN", node.url("/events")], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.events = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"type": "__bad_json__", "line": line.decode(errors="replace")}
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"type": "__closed__"})
            self.cond.notify_all()

    def wait_for(self, pred, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; got {self.events[-20:]}")
                self.cond.wait(left)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_status_primary_lag_info_and_events(cluster, tmp_path):
    c = cluster(3)
    p = c.primary
    cli(p, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    c.wait_synced()
    # .primary: the primary's hostname on replicas, absent on the primary.
    assert p.primary_file() is None
    for r in c.replicas:
        wait_until(lambda: r.primary_file() is not None, msg=lambda: f"{r.name}: .primary\n{c.describe()}")
        assert r.primary_file() == f"{PRIMARY_HOST}\n"
    # .lag: 0 on the primary, small on connected replicas.
    assert p.lag_ms() == 0
    for r in c.replicas:
        assert 0 <= r.lag_ms() < 5000, r.lag_ms()
    # /info: role, primary, one cluster ID for all.
    infos = [n.info() for n in c.nodes]
    assert infos[0]["role"] == "primary" and infos[0]["primary"] is True
    for i in infos[1:]:
        assert i["role"] == "replica" and i["primary"] is False, i
    ids = {i["clusterID"] for i in infos}
    assert len(ids) == 1 and ids != {""}, f"cluster IDs: {[i['clusterID'] for i in infos]}"
    txid, chk = p.pos()
    for i in infos:
        dbs = {d["name"]: d for d in i["databases"]}
        assert dbs["db"]["txid"] == f"{txid:016x}" and dbs["db"]["checksum"] == chk, i
    # /metrics: role, lag, TXID.
    for n in c.nodes:
        text = urllib.request.urlopen(n.url("/metrics"), timeout=10).read().decode()
        assert f"litefs_is_primary {1 if n is p else 0}" in text
        assert "litefs_lag_seconds" in text
        assert f'litefs_db_txid{{db="db"}} {txid}' in text
    # /events: init first, then one tx per transaction, on the primary and
    # on a replica.
    streams = [EventStream(p), EventStream(c.replicas[0])]
    try:
        for s in streams:
            first = s.wait_for(lambda ev: True)
            assert first["type"] == "init", first
        cli(p, "INSERT INTO t VALUES (2);")
        txid2, chk2 = p.pos()
        assert txid2 == txid + 1
        for s in streams:
            ev = s.wait_for(lambda ev: ev.get("type") == "tx" and ev.get("data", {}).get("txID") == f"{txid2:016x}")
            assert ev["db"] == "db" and ev["data"]["postApplyChecksum"] == chk2, ev
        assert streams[0].events[0]["data"]["isPrimary"] is True, streams[0].events[0]
        assert streams[1].events[0]["data"] == {"isPrimary": False, "hostname": PRIMARY_HOST}, streams[1].events[0]
        # The primary goes away: the replica's stream says so.
        p.kill9()
        ev = streams[1].wait_for(lambda ev: ev.get("type") == "primaryChange")
        assert ev["data"]["isPrimary"] is False and not ev["data"].get("hostname"), ev
    finally:
        for s in streams:
            s.close()


# ---- catch-up ----------------------------------------------------------------

def test_catch_up_from_ltx_after_missing_1000_transactions(cluster, tmp_path):
    c = cluster(3)
    p, r2, r3 = c.primary, c.replicas[0], c.replicas[1]
    cli(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
    c.wait_synced()
    r3.stop()
    start_txid = p.pos()[0]
    con = p.connect(isolation_level=None)
    for i in range(1000):
        con.execute("INSERT INTO t(v) VALUES (randomblob(?))", (50 + i % 700,))
    con.close()
    assert p.pos()[0] == start_txid + 1000
    c.wait_synced(replicas=[r2])  # the running replica kept up
    assert r3.pos_or_none() is None  # not mounted
    off = len(r3.log_text())
    r3.start()
    c.wait_synced(timeout=10)
    check_replica(c, r3, tmp_path)
    # It caught up from the primary's LTX records: one per missed
    # transaction, byte for byte the primary's.
    pf = p.ltx_files()
    rf = r3.ltx_files()
    assert [f.name for f in rf] == [f.name for f in pf]
    for a, b in zip(pf[-1000:], rf[-1000:]):
        assert a.read_bytes() == b.read_bytes(), f"{b.name} differs from the primary's"
    assert "snapshot" not in log_since(r3, off).lower(), log_since(r3, off)


@pytest.mark.parametrize("mode", MODES)
def test_catch_up_by_snapshot_after_retention_window(cluster, tmp_path, mode):
    c = cluster(2, start=False, data={"retention": "1s", "retention-monitor-interval": "200ms"})
    p, r = c.primary, c.replicas[0]
    r.data_keys = {}  # only the primary forgets quickly
    r.write_config()
    c.start()
    cli(p, f"PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); "
           f"INSERT INTO t(v) SELECT randomblob(800) FROM generate_series(1, 300);")
    c.wait_synced()
    r.stop()
    missed_from = r.pos_or_none()
    behind = c.primary.pos()[0]
    # Write for a while, so that segments rotate and retention removes the
    # records the replica needs.
    con = p.connect(isolation_level=None)
    i = 0
    deadline = time.time() + 3.5
    while time.time() < deadline:
        con.execute("INSERT INTO t(v) VALUES (randomblob(?))", (100 + i % 900,))
        if i % 50 == 0:
            con.execute("DELETE FROM t WHERE id % 7 = ?", (i % 7,))
        i += 1
        time.sleep(0.005)
    con.close()

    def oldest():
        # A segment is named after its first TXID (listing them does not
        # race with retention the way reading them does).
        segs = p.segments()
        return int(segs[0].stem, 16) if segs else 0

    wait_until(lambda: oldest() > behind + 1, timeout=10,
               msg=lambda: f"retention to remove TXID {behind + 1} (oldest kept {oldest()})")
    assert missed_from is None
    off = len(r.log_text())
    poff = len(p.log_text())
    r.start()
    c.wait_synced(timeout=10)
    check_replica(c, r, tmp_path)
    said = (log_since(r, off) + log_since(p, poff)).lower()
    assert "snapshot" in said, f"neither log mentions a snapshot:\n{log_since(r, off)}\n{log_since(p, poff)}"
    # The replica was only behind: it had no transactions of its own, so
    # nothing was discarded and its log must not say so (that line is for
    # split brain, see the divergence test).
    assert "discard" not in log_since(r, off).lower(), log_since(r, off)
    # The stream continues after the snapshot.
    for k in range(20):
        cli(p, f"INSERT INTO t(v) VALUES (randomblob({k + 1}));")
    c.wait_synced()
    check_replica(c, r, tmp_path)


BIG_WRITER = """
    import os, sqlite3, sys, time
    secs = float(sys.argv[1])
    cons = [sqlite3.connect(p, timeout=30, isolation_level=None) for p in sys.argv[2:]]
    end = time.time() + secs
    n = 0
    while time.time() < end:
        for con in cons:
            con.execute("BEGIN IMMEDIATE")
            if n % 3 == 2:
                # Rewrites every page of a ~4 MB table: a long apply.
                con.execute("UPDATE t SET v = randomblob(2000)")
            else:
                con.executemany("INSERT INTO t(v) VALUES (?)", [(os.urandom(2000),) for _ in range(100)])
                con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 100)")
            con.execute("COMMIT")
        n += 1
    print(n)
"""


def test_replica_kill9_during_apply_recovers(cluster, tmp_path):
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    names = [f"k_{m}" for m in MODES]
    for m, name in zip(MODES, names):
        cli(p, f"PRAGMA journal_mode={m}; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); "
               f"INSERT INTO t(v) SELECT randomblob(2000) FROM generate_series(1, 2000);", name)
    for name in names:
        c.wait_synced(name)
    rng = random.Random(99)
    writer = start_script(tmp_path, BIG_WRITER, 8, *[p.db(n) for n in names])
    try:
        for rnd in range(4):
            time.sleep(0.4 + rng.random() * 0.8)
            r.kill9()
            time.sleep(rng.random() * 0.3)
            r.start()
            # It serves consistent reads right after the restart.
            for name in names:
                if r.db(name).exists():
                    out = run("sqlite3", "-cmd", ".timeout 10000", r.db(name), "PRAGMA integrity_check",
                              check=False)
                    assert out.stdout.strip() == "ok", f"round {rnd}, {name}: {out.stdout} {out.stderr}\n" \
                                                       f"{c.describe(name)}"
    finally:
        n = int(finish(writer).strip())
    assert n > 5
    for name in names:
        c.wait_synced(name, timeout=10)
        check_replica(c, r, tmp_path, name)


def test_replica_killed_while_it_opens_its_own_mount_exits(cluster, tmp_path):
    """A replica's apply opens its own mount to take SQLite's locks. Killed
    (kill -9) while one of its own FUSE workers holds that open, the node
    exits at once and restarts: the open runs on a thread whose descriptor
    table holds no /dev/fuse (ownmount.c), so the kernel aborts the
    connection once the rest of the node is gone. Before, the process
    stayed a zombie holding the data directory until someone aborted the
    connection by hand. The stalled open is injected (LITEFS_FAULT
    selfopen); another database must not be disturbed."""
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    for name in ("stalled", "other"):
        cli(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('first');", name)
        c.wait_synced(name)
    r.stop()
    off = len(r.log_text())
    r.start(env={"LITEFS_FAULT": "selfopen:1:stall=60000:path=stalled"})
    cli(p, "INSERT INTO t(v) VALUES ('second');", "stalled")
    wait_until(lambda: "injected stall" in log_since(r, off), timeout=15, msg="the apply's own open to stall")
    r.proc.send_signal(signal.SIGKILL)
    t0 = time.time()
    try:
        r.proc.wait(8)
    except subprocess.TimeoutExpired:
        pytest.fail("the killed replica did not exit: a thread still waits on its own mount")
    finally:
        r.stop(signal.SIGKILL)  # reaps it and clears the mount (or aborts it, warning)
    print(f"exited {time.time() - t0:.2f} s after kill -9")
    r.start()
    cli(p, "INSERT INTO t(v) VALUES ('third');", "other")
    for name in ("stalled", "other"):
        c.wait_synced(name, timeout=15)
        check_replica(c, r, tmp_path, name)


@pytest.mark.parametrize("mode", MODES)
def test_replica_that_fails_verification_heals_from_the_primary(cluster, tmp_path, mode):
    """A replica's database damaged while the node was stopped (a flipped
    byte in a page) is caught by the background verification after a clean
    start, and the replica resynchronises from the primary by itself, even
    while nobody writes."""
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    cli(p, f"PRAGMA journal_mode={mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); "
           f"INSERT INTO t(v) SELECT printf('row %d', value) FROM generate_series(1, 500);")
    c.wait_synced()
    r.stop()
    backing = r.data / "dbs" / "db" / "db"
    data = bytearray(backing.read_bytes())
    data[2 * 4096 + 3000] ^= 0xFF  # inside page 3, a table page
    backing.write_bytes(bytes(data))
    off = len(r.log_text())
    r.start()
    c.wait_synced(timeout=10)
    check_replica(c, r, tmp_path)
    said = log_since(r, off)
    assert "verification failed" in said and "resynchronising" in said, said
    # And it follows from there.
    cli(p, "INSERT INTO t(v) VALUES ('after');")
    c.wait_synced()
    check_replica(c, r, tmp_path)


# ---- divergence ----------------------------------------------------------------

@pytest.mark.parametrize("where", ["ahead", "behind"])
def test_diverged_node_rejoins_with_primary_state(cluster, tmp_path, where):
    c = cluster(2)
    p, r = c.primary, c.replicas[0]
    cli(p, "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB); "
           "INSERT INTO t(who, v) SELECT 'common', randomblob(300) FROM generate_series(1, 100);")
    c.wait_synced()
    # The replica runs on its own as a primary and commits.
    r.stop()
    r.make_primary(hostname="node2")
    r.start()
    local, remote = (5, 2) if where == "ahead" else (1, 6)
    for i in range(local):
        cli(r, f"INSERT INTO t(who, v) VALUES ('local', randomblob({100 + i})); UPDATE t SET v = NULL WHERE id = {i + 1};")
    for i in range(remote):
        cli(p, f"INSERT INTO t(who, v) VALUES ('primary', randomblob({200 + i}));")
    rpos, ppos = r.pos(), p.pos()
    assert rpos[1] != ppos[1]
    assert (rpos[0] > ppos[0]) == (where == "ahead")
    r.stop()
    # It joins the cluster again as a replica.
    r.make_replica(p.port)
    off = len(r.log_text())
    r.start()
    c.wait_synced(timeout=10)
    check_replica(c, r, tmp_path)
    assert cli(r, "SELECT count(*) FROM t WHERE who = 'local'").stdout.strip() == "0"
    assert cli(r, "SELECT count(*) FROM t WHERE who = 'primary'").stdout.strip() == str(remote)
    said = log_since(r, off)
    assert "discard" in said.lower(), f"the log does not say that local transactions were discarded:\n{said}"
    # And it follows from there.
    cli(p, "INSERT INTO t(who) VALUES ('after');")
    c.wait_synced()
    check_replica(c, r, tmp_path)


# ---- the primary dies and comes back -------------------------------------------

def test_primary_kill9_replicas_serve_reads_then_reconnect(cluster, tmp_path):
    c = cluster(3)
    p = c.primary
    cli(p, "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); "
           "INSERT INTO t(v) SELECT 'x' || value FROM generate_series(1, 500);", "w.db")
    cli(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); "
           "INSERT INTO t(v) SELECT 'y' || value FROM generate_series(1, 300);", "d.db")
    for name in ["w.db", "d.db"]:
        c.wait_synced(name)
    for r in c.replicas:
        wait_until(lambda: r.primary_file() == f"{PRIMARY_HOST}\n",
                   msg=lambda: f"{r.name}: .primary is {r.primary_file()!r}")
    # Long-lived reader connections opened before the crash.
    readers = {r.name: sqlite3.connect(str(r.db("w.db")), timeout=10) for r in c.replicas}

    p.kill9()
    for r in c.replicas:
        wait_until(lambda: r.primary_file() is None, timeout=10,
                   msg=lambda: f"{r.name}: .primary to disappear (it is {r.primary_file()!r})\n{c.describe('w.db')}")
    lag1 = {r.name: r.lag_ms() for r in c.replicas}
    t1 = time.time()
    for r in c.replicas:
        # Reads go on, through old and new connections, in both modes.
        assert readers[r.name].execute("SELECT count(*) FROM t").fetchone()[0] == 500
        assert cli(r, "SELECT count(*) FROM t", "w.db").stdout.strip() == "500"
        assert cli(r, "SELECT count(*) FROM t", "d.db").stdout.strip() == "300"
        # Still read-only.
        res = cli(r, "INSERT INTO t(v) VALUES ('no');", "d.db", check=False)
        assert res.returncode != 0 and READONLY in res.stderr, res.stderr
    time.sleep(1.5)
    for r in c.replicas:
        lag2 = r.lag_ms()
        assert lag1[r.name] >= 0
        assert lag2 >= lag1[r.name] + int((time.time() - t1) * 1000) - 300, \
            f"{r.name}: .lag did not grow: {lag1[r.name]} then {lag2}"
        assert readers[r.name].execute("SELECT count(*) FROM t").fetchone()[0] == 500

    # The primary comes back, commits, and the replicas catch up.
    p.start()
    cli(p, "INSERT INTO t(v) VALUES ('after');", "w.db")
    cli(p, "DELETE FROM t WHERE id < 100;", "d.db")
    for name in ["w.db", "d.db"]:
        c.wait_synced(name, timeout=10)
    for r in c.replicas:
        wait_until(lambda: r.primary_file() == f"{PRIMARY_HOST}\n",
                   msg=lambda: f"{r.name}: .primary is {r.primary_file()!r}")
        wait_until(lambda: r.lag_ms() < 2000, msg=lambda: f"{r.name}: .lag is {r.lag_ms()}")
        assert readers[r.name].execute("SELECT count(*) FROM t").fetchone()[0] == 501
        readers[r.name].close()
        for name in ["w.db", "d.db"]:
            check_replica(c, r, tmp_path, name)


# ---- bad input on the stream ---------------------------------------------------
#
# A fake primary (a raw HTTP server in the test) speaks the wire format of
# src/proto/stream.c: POST /stream; the replica sends hello + positions; the
# response is chunked: hello, then L (ltx) / S (snapshot) / R (ready) /
# B (heartbeat) / E (end) frames of [type u8][length u32 BE][payload].


def frame(kind, payload=b""):
    return kind + struct.pack(">I", len(payload)) + payload


HELLO = frame(b"H", b"LFSS" + struct.pack(">I", 1))


def ltx_frame(name, data, kind=b"L"):
    n = name if isinstance(name, bytes) else name.encode()
    return frame(kind, struct.pack(">H", len(n)) + n + data)


def heartbeat(positions):
    """positions: {name: (txid, checksum hex)}."""
    body = struct.pack(">qII", int(time.time() * 1000), 0, len(positions))
    for name, (txid, chk) in positions.items():
        n = name.encode()
        body += struct.pack(">H", len(n)) + n + struct.pack(">QQQ", txid, int(chk, 16), 0)
    return frame(b"B", body)


def parse_frames(data):
    """Splits a request body into (type, payload) frames."""
    out, i = [], 0
    while i + 5 <= len(data):
        kind, n = data[i:i + 1], struct.unpack(">I", data[i + 1:i + 5])[0]
        out.append((kind, data[i + 5:i + 5 + n]))
        i += 5 + n
    return out


def parse_list(payload):
    _, _, n = struct.unpack(">qII", payload[:16])
    i, out = 16, {}
    for _ in range(n):
        ln = struct.unpack(">H", payload[i:i + 2])[0]
        name = payload[i + 2:i + 2 + ln].decode()
        txid, chk, _ = struct.unpack(">QQQ", payload[i + 2 + ln:i + 2 + ln + 24])
        out[name] = (txid, f"{chk:016x}")
        i += 2 + ln + 24
    return out


class FakePrimary:
    """Serves POST /stream. For connection number k (from 1), behave(k,
    conn) is called with conn.positions (what the replica sent), and uses
    conn.send(bytes) (one chunk), conn.end() (the terminating chunk),
    conn.hold(secs, frames_fn) and conn.vanish()."""

    def __init__(self, cluster_id, behave):
        self.cluster_id = cluster_id
        self.behave = behave
        self.conns = []
        self.errors = []
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                fake._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.t = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, sock):
        sock.settimeout(15)
        conn = _FakeConn(self, sock)
        try:
            conn.read_request()
            self.conns.append(conn)
            self.behave(len(self.conns), conn)
        except Exception as e:  # the replica hung up: fine, record it
            self.errors.append(repr(e))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def wait_conns(self, n, timeout=10):
        wait_until(lambda: len(self.conns) >= n, timeout=timeout,
                   msg=lambda: f"connection {n} to the fake primary (had {len(self.conns)})")


class _FakeConn:
    def __init__(self, fake, sock):
        self.fake, self.sock = fake, sock
        self.buf = b""
        self.headers = {}
        self.positions = None
        self.started = False

    def _read_until(self, marker):
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("request ended early")
            self.buf += chunk
        i = self.buf.index(marker)
        head, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return head

    def _read_n(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("request ended early")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_request(self):
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.request_line = head[0]
        for line in head[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            # The request body is hello + positions; read frames until both
            # are complete (the replica may keep the body open).
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                body += self._read_n(size)
                self._read_n(2)
                fr = parse_frames(body)
                if any(k == b"P" for k, p in fr) and sum(5 + len(p) for k, p in fr) == len(body):
                    break
        else:
            body = self._read_n(int(self.headers.get("content-length", "0")))
        frames = parse_frames(body)
        assert frames and frames[0] == (b"H", HELLO[5:]), f"bad request hello: {frames[:1]}"
        lists = [parse_list(p) for k, p in frames if k == b"P"]
        self.positions = lists[0] if lists else None

    def start(self, cluster_id=None, status="200 OK"):
        self.sock.sendall((f"HTTP/1.1 {status}\r\nContent-Type: application/vnd.litefs.stream\r\n"
                           f"Transfer-Encoding: chunked\r\n"
                           f"Litefs-Cluster-Id: {cluster_id or self.fake.cluster_id}\r\n"
                           f"Litefs-Primary-Hostname: {PRIMARY_HOST}\r\n\r\n").encode())
        self.started = True

    def send(self, data):
        if not self.started:
            self.start()
        if data:
            self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end(self):
        self.sock.sendall(b"0\r\n\r\n")

    def vanish(self):
        """Resets the connection, no terminating chunk."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def hold(self, secs, beat=None):
        """Keeps the response open for secs (heartbeats from beat() every
        0.3 s); returns early when the replica hangs up (True)."""
        deadline = time.time() + secs
        while time.time() < deadline:
            try:
                self.send(beat() if beat else heartbeat({}))
            except OSError:
                return True
            time.sleep(0.3)
        return False


def stream_setup(cluster, tmp_path, n_ahead=2):
    """A real primary and one replica synced at TXID k; then the replica is
    stopped and the primary commits n_ahead more transactions. Returns
    (cluster, replica, {txid: LTX bytes} of the primary's records, the
    replica's position when it stopped, its rows then)."""
    c = cluster(2, lease={"reconnect-delay": "200ms"})
    p, r = c.primary, c.replicas[0]
    cli(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); "
           "INSERT INTO t(v) SELECT randomblob(500) FROM generate_series(1, 50);")
    cli(p, "UPDATE t SET v = randomblob(600) WHERE id % 3 = 0;")
    stopped_at = c.wait_synced()
    rows = dump(r)
    r.stop()
    for i in range(n_ahead):
        cli(p, f"INSERT INTO t(v) SELECT randomblob({300 + i}) FROM generate_series(1, 20); "
               f"DELETE FROM t WHERE id % 10 = {i};")
    ltx = {}
    for f in p.ltx_files():  # the primary's chain
        lo, hi = (int(x, 16) for x in f.stem.split("-"))
        if lo == hi:
            ltx[lo] = f.read_bytes()
    assert p.pos()[0] == stopped_at[0] + 2 * n_ahead
    return c, r, ltx, stopped_at, rows


def snapshot_ltx(tmp, ltx):
    """A snapshot LTX (TXID 1..N, every page) of the primary's chain: its
    records compacted."""
    d = tmp / f"snap-{time.monotonic_ns()}"
    d.mkdir()
    files = []
    for txid in sorted(ltx):
        f = d / f"{txid:016x}-{txid:016x}.ltx"
        f.write_bytes(ltx[txid])
        files.append(f)
    run(LITEFS, "ltx", "compact", "-o", d / "snapshot.ltx", *files)
    return (d / "snapshot.ltx").read_bytes()


def replica_files(r, name="db"):
    return r.db(name).read_bytes(), r.pos(name), chain_names(r, name)


def wait_log(node, off, pattern, timeout=10):
    """Waits for a warn/error line after offset off that matches pattern
    (case-insensitive); returns it."""
    rx = re.compile(pattern, re.I)

    def find():
        for line in log_since(node, off).splitlines():
            if re.search(r"level=(warn|error)", line) and rx.search(line):
                return line
        return None

    return wait_until(find, timeout=timeout,
                      msg=lambda: f"a warn/error log line matching {pattern!r}:\n{log_since(node, off)[-3000:]}")


BAD_STREAMS = {
    # name: (what the fake sends on the first connection, log pattern)
    "bad_hello": "magic|hello|version",
    "truncated_header": "truncat",
    "truncated_frame": "truncat",
    "corrupt_ltx": r"checksum|corrupt|lz4|ltx",
    "out_of_sequence": r"contiguous|sequence|pre-apply|does not follow|position",
    "vanish_mid_file": r"truncat|closed|reset|connection|recv|end of|eof|incomplete|partial",
    "other_cluster": r"cluster",
    "corrupt_snapshot": r"checksum|corrupt|lz4|ltx|snapshot",
    "snapshot_not_from_txid_1": r"snapshot|ltx|contiguous|pre-apply|position",
    "hostile_name": r"name|invalid",
    "reserved_name": r"name|invalid",
    "non_utf8_name": r"name|invalid",
}


@pytest.mark.parametrize("bad", sorted(BAD_STREAMS))
def test_bad_stream_is_refused_state_kept_and_retried(cluster, tmp_path, bad):
    c, r, ltx, stopped_at, stopped_rows = stream_setup(cluster, tmp_path)
    p = c.primary
    k = r.pos_or_none()
    assert k is None  # stopped
    cluster_id = p.info()["clusterID"]
    assert cluster_id.startswith("LFSC") and len(cluster_id) == 20, cluster_id
    ppos = p.pos()
    good_txids = sorted(ltx)

    release = threading.Event()

    def serve_good(conn):
        # Held until the test has looked at the replica's state after the
        # bad stream, so the good stream cannot race with that check.
        release.wait(30)
        have = conn.positions.get("db", (0, ""))[0] if conn.positions else 0
        conn.start()
        conn.send(HELLO)
        for txid in good_txids:
            if txid > have:
                conn.send(ltx_frame("db", ltx[txid]))
        conn.send(frame(b"R"))
        conn.hold(60, lambda: heartbeat({"db": ppos}))

    first = {}

    def behave(n, conn):
        if n > 1:
            return serve_good(conn)
        have = conn.positions["db"][0]
        first["pos"] = conn.positions["db"]
        nxt = ltx[have + 1]
        if bad == "other_cluster":
            conn.start(cluster_id="LFSC0123456789ABCDEF" if cluster_id != "LFSC0123456789ABCDEF"
                       else "LFSCFEDCBA9876543210")
            conn.send(HELLO)
            conn.send(ltx_frame("db", nxt))
            conn.send(frame(b"R"))
            conn.hold(8)
        elif bad == "bad_hello":
            conn.send(frame(b"H", b"LFSX" + struct.pack(">I", 1)))
            conn.send(ltx_frame("db", nxt))
            conn.hold(8)
        elif bad == "truncated_header":
            conn.send(HELLO)
            conn.send(b"L\x00\x00")
            conn.end()
        elif bad == "truncated_frame":
            fr = ltx_frame("db", nxt)
            conn.send(HELLO)
            conn.send(fr[:len(fr) // 2])
            conn.end()
        elif bad == "vanish_mid_file":
            fr = ltx_frame("db", nxt)
            conn.send(HELLO)
            conn.send(fr[:len(fr) // 2])
            time.sleep(0.2)
            conn.vanish()
        elif bad == "corrupt_ltx":
            data = bytearray(nxt)
            for off in (len(data) // 2, len(data) // 2 + 1, 200):
                data[off] ^= 0x5A
            conn.send(HELLO)
            conn.send(ltx_frame("db", bytes(data)))
            conn.hold(8)
        elif bad == "out_of_sequence":
            conn.send(HELLO)
            conn.send(ltx_frame("db", ltx[have + 2]))
            conn.hold(8)
        elif bad == "corrupt_snapshot":
            data = bytearray(snapshot_ltx(tmp_path, ltx))
            for off in (len(data) // 2, len(data) // 3, 150):
                data[off] ^= 0xA5
            conn.send(HELLO)
            conn.send(ltx_frame("db", bytes(data), kind=b"S"))
            conn.hold(8)
        elif bad == "snapshot_not_from_txid_1":
            # A partial LTX (TXID k+2, not a snapshot) in a snapshot frame:
            # it neither follows the replica nor replaces its database.
            # (One that does follow, k+1, is applied as an ordinary record.)
            conn.send(HELLO)
            conn.send(ltx_frame("db", ltx[have + 2], kind=b"S"))
            conn.hold(8)
        elif bad in ("hostile_name", "reserved_name", "non_utf8_name"):
            conn.send(HELLO)
            name = {"hostile_name": "../escape.db", "reserved_name": "db-wal", "non_utf8_name": b"\xff.db"}[bad]
            conn.send(ltx_frame(name, ltx[1]))
            conn.hold(8)

    fake = FakePrimary(cluster_id, behave)
    try:
        r.make_replica(fake.port)
        stopped_dump = stopped_rows
        off = len(r.log_text())
        r.start()
        fake.wait_conns(1)
        line = wait_log(r, off, BAD_STREAMS[bad])
        fake.wait_conns(2, timeout=10)
        before = replica_files(r)
        assert first["pos"] == stopped_at, "the replica did not send the position it stopped at"
        assert before[1] == stopped_at, "the replica's -pos changed after the bad stream"
        assert dump(r) == stopped_dump, "the replica's rows changed after the bad stream"
        # Nothing was discarded, and the log must not claim it was.
        assert "discard" not in log_since(r, off).lower(), log_since(r, off)
        release.set()
        # It came back with the same position and the same cluster ID.
        assert fake.conns[1].positions["db"] == first["pos"], \
            f"after refusing the stream, the replica reconnected at {fake.conns[1].positions} " \
            f"instead of {first['pos']}"
        assert fake.conns[1].headers.get("litefs-cluster-id") == cluster_id
        # ...and catches up from the good stream.
        c.wait_synced(timeout=10)
        check_replica(c, r, tmp_path)
        assert line
        assert sorted(f for f in os.listdir(r.mnt) if not f.startswith(".")) == ["db", "db-pos"], \
            os.listdir(r.mnt)
        assert sorted(os.listdir(r.data / "dbs")) == ["db"], os.listdir(r.data / "dbs")
        assert not list(tmp_path.rglob("escape.db*"))
    finally:
        release.set()
        r.stop()
        fake.close()
    # Nothing of the bad stream remained: the database equals the primary's
    # (check_replica) and its state before the good stream was the one it
    # had when it stopped.
    assert [int(n[:16], 16) for n in before[2]] == list(range(1, stopped_at[0] + 1)), before[2]


def test_wrong_secret_is_refused_and_retried(cluster, tmp_path):
    # log.debug: repeated refusals are logged at debug level, which shows the retries.
    c = cluster(2, http={"secret": "right-secret"}, lease={"reconnect-delay": "200ms"},
                extra_config="log:\n  debug: true\n")
    p, r = c.primary, c.replicas[0]
    cli(p, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    c.wait_synced()
    r.stop()
    cli(p, "INSERT INTO t VALUES (2);")
    # Wrong secret, then none at all.
    for secret in ["wrong-secret", None]:
        if secret is None:
            r.http_keys.pop("secret")
        else:
            r.http_keys["secret"] = secret
        r.write_config()
        off = len(r.log_text())
        r.start()
        state = replica_files(r)
        line = wait_log(r, off, r"auth|secret|401|unauthori")
        # It retries: the refusal is seen again.
        wait_until(lambda: sum(1 for l in log_since(r, off).splitlines()
                               if re.search(r"auth|secret|401|unauthori", l, re.I)) >= 3,
                   timeout=10, msg=lambda: f"two retries after {line}\n{log_since(r, off)}")
        assert replica_files(r) == state, "the replica's state changed"
        assert r.pos()[0] == p.pos()[0] - 1
        assert r.primary_file() is None, "a refused replica must not say it is connected"
        r.stop()
    # The primary refuses the stream request itself with 401, and a JSON error.
    req = urllib.request.Request(p.url("/stream"), data=HELLO, method="POST",
                                 headers={"Authorization": "Bearer nope",
                                          "Content-Type": "application/vnd.litefs.stream"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
    assert json.loads(e.value.read())["error"]
    # With the right secret it follows again.
    r.http_keys["secret"] = "right-secret"
    r.write_config()
    r.start()
    c.wait_synced()
    check_replica(c, r, tmp_path)


def test_primary_clean_restart_ends_streams_and_replicas_reconnect(cluster, tmp_path):
    c = cluster(3)
    p = c.primary
    cli(p, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    c.wait_synced()
    offs = [len(r.log_text()) for r in c.replicas]
    assert p.stop() == 0
    for r, off in zip(c.replicas, offs):
        wait_until(lambda: r.primary_file() is None, msg=lambda: f"{r.name}: .primary to disappear")
        assert re.search(r"ended the stream|stream ended|primary.*stop", log_since(r, off)), log_since(r, off)
        assert cli(r, "SELECT count(*) FROM t").stdout.strip() == "1"
    p.start()
    cli(p, "INSERT INTO t VALUES (2);")
    c.wait_synced()
    for r in c.replicas:
        wait_until(lambda: r.primary_file() == f"{PRIMARY_HOST}\n", msg=lambda: f"{r.name}: .primary back")
        check_replica(c, r, tmp_path)


def other_cluster_id(cid):
    return "LFSC0123456789ABCDEF" if cid != "LFSC0123456789ABCDEF" else "LFSCFEDCBA9876543210"


def test_replica_of_another_cluster_is_refused_by_the_primary(cluster, tmp_path):
    c = cluster(2, lease={"reconnect-delay": "200ms"})
    p, r = c.primary, c.replicas[0]
    cli(p, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    c.wait_synced()
    cid = p.info()["clusterID"]
    assert (r.data / "clusterid").read_text().strip() == cid, "the replica did not keep the adopted cluster ID"
    # A (connected) replica asked to stream answers 503 and names the primary.
    body = HELLO + frame(b"P", struct.pack(">qII", 0, 0, 0))
    req = urllib.request.Request(r.url("/stream"), data=body, method="POST",
                                 headers={"Content-Type": "application/vnd.litefs.stream"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 503 and PRIMARY_HOST in json.loads(e.value.read())["error"]
    r.stop()
    cli(p, "INSERT INTO t VALUES (2);")
    other = other_cluster_id(cid)
    (r.data / "clusterid").write_text(other + "\n")
    body = HELLO + frame(b"P", struct.pack(">qII", 0, 0, 0))
    off = len(r.log_text())
    r.start()
    line = wait_log(r, off, r"cluster")
    assert "409" in line or other in line or cid in line, line
    time.sleep(1)
    assert r.pos()[0] == p.pos()[0] - 1, "a replica of another cluster received data"
    assert r.primary_file() is None
    assert (r.data / "clusterid").read_text().strip() == other, "the replica's cluster ID was replaced"
    # The primary's answer, directly: 409 with a JSON error.
    body = HELLO + frame(b"P", struct.pack(">qII", 0, 0, 0))
    req = urllib.request.Request(p.url("/stream"), data=body, method="POST",
                                 headers={"Litefs-Cluster-Id": other,
                                          "Content-Type": "application/vnd.litefs.stream"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 409 and "cluster" in json.loads(e.value.read())["error"].lower()


def test_lag_follows_the_primary_heartbeats(cluster, tmp_path):
    """A replica that is connected but lacks what the primary's heartbeats
    announce is not caught up: .lag grows; once it holds every announced
    position, .lag drops."""
    c, r, ltx, stopped_at, _ = stream_setup(cluster, tmp_path)
    ppos = c.primary.pos()
    cid = c.primary.info()["clusterID"]
    announce = {"pos": ppos}

    def behave(n, conn):
        conn.start()
        conn.send(HELLO)
        conn.send(frame(b"R"))
        conn.hold(60, lambda: heartbeat({"db": announce["pos"]}))

    fake = FakePrimary(cid, behave)
    try:
        r.make_replica(fake.port)
        r.start()
        wait_until(lambda: r.primary_file() == f"{PRIMARY_HOST}\n", msg=lambda: r.log_text())
        lag1 = r.lag_ms()
        time.sleep(1.5)
        lag2 = r.lag_ms()
        assert lag2 >= lag1 + 1000, f".lag did not grow while the primary was ahead: {lag1} then {lag2}"
        assert r.pos() == stopped_at
        announce["pos"] = stopped_at
        wait_until(lambda: r.lag_ms() < 1000, msg=lambda: f".lag to drop (it is {r.lag_ms()})")
    finally:
        r.stop()
        fake.close()


def test_silent_primary_is_dropped_and_retried(cluster, tmp_path):
    """A primary that keeps the connection open but sends nothing (no
    heartbeat) for 30 s is treated as dead: the replica reconnects."""
    c, r, ltx, stopped_at, _ = stream_setup(cluster, tmp_path)
    cid = c.primary.info()["clusterID"]
    ppos = c.primary.pos()

    def behave(n, conn):
        conn.start()
        conn.send(HELLO)
        if n == 1:
            conn.send(frame(b"R"))
            time.sleep(45)  # silence, the socket open
            return
        for txid in sorted(ltx):
            if txid > conn.positions["db"][0]:
                conn.send(ltx_frame("db", ltx[txid]))
        conn.send(frame(b"R"))
        conn.hold(30, lambda: heartbeat({"db": ppos}))

    fake = FakePrimary(cid, behave)
    try:
        r.make_replica(fake.port)
        off = len(r.log_text())
        t0 = time.monotonic()
        r.start()
        fake.wait_conns(2, timeout=40)
        waited = time.monotonic() - t0
        assert 25 <= waited <= 40, f"reconnected after {waited:.1f} s"
        wait_log(r, off, r"timeout|timed out|too slow|silent|nothing|dead|heartbeat|stall")
        c.wait_synced()
        check_replica(c, r, tmp_path)
    finally:
        r.stop()
        fake.close()
