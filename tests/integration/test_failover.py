"""The etcd lease (docs/lease.md): failover, fencing, candidacy, lost/.

Real etcd (three members on loopback), real `litefs mount` nodes, real
SQLite clients. TTL 2 s throughout, so a failover takes about 2 s.

LITEFS_FAILOVER_ROUNDS (default 50) sets how many failovers the randomised
run makes and LITEFS_FAILOVER_SECONDS (default 150) the most time it may
take; LITEFS_FAILOVER_SEED (default 1) picks them.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import LITEFS, Node, free_port, run

TTL = 2


class Etcd:
    """Three etcd members on loopback; stop(i)/start(i) one member."""

    def __init__(self, base, n=3):
        self.base = Path(base) / "etcd"
        self.n = n
        self.client = [free_port() for _ in range(n)]
        self.peer = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.initial = ",".join(f"e{i}=http://127.0.0.1:{self.peer[i]}" for i in range(n))

    @property
    def endpoints(self):
        return [f"http://127.0.0.1:{p}" for p in self.client]

    def start(self, i=None, wait=True):
        for k in ([i] if i is not None else range(self.n)):
            d = self.base / f"e{k}"
            d.mkdir(parents=True, exist_ok=True)
            log = open(self.base / f"e{k}.log", "a")
            self.procs[k] = subprocess.Popen([
                "etcd", "--name", f"e{k}", "--data-dir", str(d / "data"),
                "--listen-client-urls", self.endpoints[k], "--advertise-client-urls", self.endpoints[k],
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer[k]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[k]}",
                "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for k, e in enumerate(self.endpoints):
                if self.procs[k] is None:
                    continue
                try:
                    with urllib.request.urlopen(e + "/health", timeout=1) as r:
                        if json.load(r).get("health") == "true":
                            return
                except Exception:
                    pass
            time.sleep(0.1)
        raise RuntimeError("etcd not healthy")

    def stop(self, i=None):
        for k in ([i] if i is not None else range(self.n)):
            p = self.procs[k]
            if p is not None:
                p.kill()
                p.wait()
                self.procs[k] = None


class EtcdNode(Node):
    def __init__(self, base, name, etcd, candidate=True, key="litefs/primary", extra=""):
        self.etcd = etcd
        self.candidate = candidate
        self.key = key
        self.extra = extra
        self.hostname = name
        self.name = name
        super().__init__(base, name)

    def write_config(self):
        eps = ", ".join(f'"{e}"' for e in self.etcd.endpoints)
        self.config.write_text(
            f"fuse:\n  dir: {self.mnt}\n"
            f"data:\n  dir: {self.data}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            f"lease:\n  type: etcd\n  hostname: {self.hostname}\n"
            f"  advertise-url: http://127.0.0.1:{self.port}\n"
            f"  candidate: {'true' if self.candidate else 'false'}\n"
            f"  etcd:\n    endpoints: [{eps}]\n    key: {self.key}\n    ttl: {TTL}s\n" + self.extra)

    def start(self, **kw):
        super().start(args=["--", "sleep", "100000"], **kw)
        return self

    def info(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/info", timeout=2) as r:
            return json.load(r)

    def is_primary(self):
        try:
            return self.proc is not None and self.info()["role"] == "primary"
        except Exception:
            return False

    def rows(self):
        c = sqlite3.connect(f"file:{self.db()}?mode=ro", uri=True, timeout=10)
        try:
            return [r[0] for r in c.execute("SELECT v FROM t ORDER BY v")]
        finally:
            c.close()

    def lost_files(self):
        return sorted((self.data / "lost").rglob("*.ltx"))


# The client runs in a child process: a WAL client maps the database's
# -shm through the mount, and a node that stops (or dies) under it turns
# the next access into SIGBUS, which must end the client, not the test.
_CLIENT = r"""
import sqlite3, sys
for line in sys.stdin:
    path, v = line.rsplit(" ", 1)
    try:
        c = sqlite3.connect(path, timeout=2, isolation_level=None)
        try:
            c.execute("INSERT INTO t(v) VALUES (?)", (int(v),))
        finally:
            c.close()
        print("ok", flush=True)
    except sqlite3.Error as e:
        print("err " + str(e).replace("\n", " "), flush=True)
"""


class _Client:
    """One child process doing inserts for try_write(); restarted when it
    dies (a SIGBUS from a vanished mount), whose insert then counts as not
    acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc = None
        self.deaths = 0

    def write(self, path, v):
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen([sys.executable, "-c", _CLIENT], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, bufsize=1)
            try:
                self.proc.stdin.write(f"{path} {v}\n")
                self.proc.stdin.flush()
                reply = self.proc.stdout.readline()
            except (BrokenPipeError, OSError):
                reply = ""
            if not reply:
                self.deaths += 1
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                return False, "the client process died (SIGBUS from a vanished mount?)"
            reply = reply.rstrip("\n")
            return (True, "") if reply == "ok" else (False, reply[4:])


_client = _Client()


def try_write(node, v):
    """One autocommit insert on a fresh connection (in the client child
    process); (ok, error text)."""
    return _client.write(str(node.db()), v)


class Writer(threading.Thread):
    """Writes increasing values to whichever node is the primary and
    records (node, value, start, end) for every commit SQLite reported."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.stopped = threading.Event()
        self.commits = []
        self.v = 0
        self.lock = threading.Lock()

    def run(self):
        while not self.stopped.is_set():
            wrote = False
            for n in list(self.nodes):
                if n.proc is None or self.stopped.is_set():
                    continue
                with self.lock:
                    self.v += 1
                    v = self.v
                t0 = time.monotonic()
                ok, _ = try_write(n, v)
                if ok:
                    self.commits.append((n.name, v, t0, time.monotonic()))
                    wrote = True
                    break
            if not wrote:
                time.sleep(0.02)

    def stop(self):
        self.stopped.set()
        self.join(10)


def check_no_overlap(commits, nodes):
    """The writer is one thread trying every node in turn, so its record
    is a sequence of runs of commits on one node. A node that accepted a
    commit while another had become primary would show up as a run that
    its lease does not explain: every run of a node must begin a term in
    which it acquired the lease (counted in its log across restarts)."""
    runs = {}
    last = None
    for name, v, t0, t1 in commits:
        if name != last:
            runs[name] = runs.get(name, 0) + 1
            last = name
    for n in nodes:
        terms = n.log_text().count("acquired the lease")
        assert runs.get(n.name, 0) <= terms, (
            f"{n.name} has {runs[n.name]} runs of commits but held the lease {terms} times")


def primary_of(nodes, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ps = [n for n in nodes if n.is_primary()]
        if len(ps) == 1:
            return ps[0]
        assert len(ps) <= 1, f"two primaries: {[n.name for n in ps]}"
        time.sleep(0.05)
    raise AssertionError("no primary:\n" + "\n".join(n.log_text()[-1500:] for n in nodes))


def wait_rows(nodes, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pos = {n.name: n.pos() for n in nodes}
            if len(set(pos.values())) == 1:
                return pos
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"nodes differ: {pos}")


def assert_identical(nodes):
    wait_rows(nodes)
    rows = [n.rows() for n in nodes]
    assert all(r == rows[0] for r in rows)
    for n in nodes:
        out = run("sqlite3", f"file:{n.db()}?mode=ro", "PRAGMA integrity_check").stdout.strip()
        assert out == "ok", out
    return rows[0]


@pytest.fixture
def etcd(tmp_path):
    e = Etcd(tmp_path)
    e.start()
    yield e
    e.stop()


@pytest.fixture
def cluster(tmp_path, etcd):
    made = []

    def make(names=("a", "b", "c"), candidates=None, **kw):
        nodes = []
        for i, name in enumerate(names):
            cand = True if candidates is None else candidates[i]
            n = EtcdNode(tmp_path, name, etcd, candidate=cand, **kw)
            made.append(n)
            nodes.append(n.start())
        p = primary_of(nodes)
        create_table(p)
        wait_rows(nodes)
        return nodes
    yield make
    stop_nodes(made)


def create_table(primary):
    """The WAL table t(v) the writers insert into, on the primary."""
    c = sqlite3.connect(str(primary.db()), timeout=5, isolation_level=None)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER PRIMARY KEY)")
    c.close()


def stop_nodes(nodes):
    """Stops every node still running (a frozen one is thawed first)."""
    for n in nodes:
        if n.proc is not None:
            try:
                n.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            n.stop()


def test_kill9_failover_keeps_what_survivors_had(cluster):
    nodes = cluster()
    p = primary_of(nodes)
    others = [n for n in nodes if n is not p]
    w = Writer(nodes)
    w.start()
    time.sleep(1.0)
    w.stop()
    had = {n.name: set(n.rows()) for n in others}
    # A kill -9 under writes: a caught-up candidate takes over within
    # TTL + 1 s (plus slack for this shared machine); writes resume there.
    w = Writer(others)
    w.start()
    t_kill = time.monotonic()
    p.kill9()
    while not any(c[0] != p.name for c in w.commits):
        assert time.monotonic() - t_kill < TTL + 4, "no primary took writes"
        time.sleep(0.01)
    elapsed = min(c[3] for c in w.commits if c[0] != p.name) - t_kill
    w.stop()
    np_ = [primary_of(others)]
    newp = np_[0]
    print(f"failover: first commit on {newp.name} {elapsed:.3f} s after kill -9")
    rows = set(newp.rows())
    for name, r in had.items():
        assert r <= rows, f"{name} had rows the new primary lacks: {sorted(r - rows)[:5]}"
    # Now transactions only the primary gets: the replicas are stopped
    # while it commits them, then it dies.
    for n in nodes:
        n.stop()
    newp.start(wait=False)
    newp.wait_mounted()
    primary_of([newp])
    unrepl = []
    for i in range(5):
        ok, err = try_write(newp, 1_000_000 + i)
        assert ok, err
        unrepl.append(1_000_000 + i)
    newp.kill9()
    for n in others:
        if n is not newp:
            n.start()
    p.start()
    survivors = [n for n in nodes if n is not newp]
    primary_of(survivors, timeout=TTL + 8)
    assert not (set(unrepl) & set(survivors[0].rows()))
    p = newp
    # The old primary rejoins, heals, and keeps what only it had.
    p.start()
    final = assert_identical(nodes)
    assert not (set(unrepl) & set(final))
    lost = p.lost_files()
    assert lost, p.log_text()[-3000:]
    assert "kept as LTX files" in p.log_text()
    info = json.loads(next((p.data / "lost").rglob("info.json")).read_text())
    # The unreplicated five, and any of the last writes the stopped replicas
    # had not received yet.
    assert int(info["last_txid"], 16) - int(info["first_txid"], 16) + 1 >= len(unrepl)


def test_frozen_primary_accepts_nothing_after_waking(cluster):
    nodes = cluster()
    p = primary_of(nodes)
    w = Writer(nodes)
    w.start()
    time.sleep(1.0)
    p.proc.send_signal(signal.SIGSTOP)
    time.sleep(TTL * 2)
    newp = primary_of([n for n in nodes if n is not p])
    time.sleep(0.5)
    p.proc.send_signal(signal.SIGCONT)
    # The first write after waking is refused as on any replica.
    ok, err = try_write(p, 3_000_000)
    assert not ok and "readonly" in err, err
    time.sleep(1.0)
    w.stop()
    assert "fenced" in p.log_text()
    assert any(c[0] == newp.name for c in w.commits)
    check_no_overlap(w.commits, nodes)
    old = [c for c in w.commits if c[0] == p.name]
    first_new = min(c[3] for c in w.commits if c[0] == newp.name)
    assert all(c[2] < first_new for c in old), "the old primary committed after the new one"
    assert_identical(nodes)


def test_quorum_loss_fences_then_recovers(cluster, etcd):
    nodes = cluster()
    p = primary_of(nodes)
    assert try_write(p, 1)[0]
    # Stop two members: no quorum, keep-alives fail.
    alive = [i for i in range(3)]
    etcd.stop(alive[0])
    etcd.stop(alive[1])
    t0 = time.monotonic()
    # The last member's leader renews leases on its own until it notices
    # it lost the quorum (one election timeout, 0.5 s here) and a new
    # leader extends every lease by its TTL, so the bound on the last
    # commit is TTL + election timeout after the quorum loss, measured at
    # the start of the write (a write accepted just before the deadline
    # may return late on a loaded machine).
    bound = TTL + 0.5
    while True:
        started = time.monotonic() - t0
        if not try_write(p, 10 + int(started * 1000))[0]:
            break
        assert started < bound, "still accepting commits at TTL + election timeout"
        time.sleep(0.02)
    ok, err = try_write(p, 5)
    assert not ok and "readonly" in err, err
    etcd.start(alive[0], wait=False)
    etcd.start(alive[1], wait=False)
    etcd.wait_healthy()
    deadline = time.monotonic() + 20
    while True:
        ps = [n for n in nodes if n.is_primary()]
        if ps and try_write(ps[0], 7)[0]:
            break
        assert time.monotonic() < deadline, "\n".join(n.log_text()[-1500:] for n in nodes)
        time.sleep(0.1)
    assert_identical(nodes)


def test_who_may_take_over(cluster, tmp_path, etcd):
    # c is no candidate; b falls behind while a writes.
    a, b, c = cluster(candidates=[True, True, False])
    p = primary_of([a, b, c])
    if p is not a:  # make a the primary for a simple story
        p.stop()
        p.start()
        a = primary_of([a, b, c])
    b_, c_ = [n for n in (a, b, c) if n.name == "b"][0], [n for n in (a, b, c) if n.name == "c"][0]
    # (Stopped, not frozen: a frozen node's socket still buffers the
    # stream, and it catches up when it wakes.)
    b_.stop()
    for i in range(10):
        assert try_write(a, 100 + i)[0]
    wait_rows([a, c_])
    a.kill9()
    b_.start()
    # b is behind c, and c may not take the lease: nobody takes over.
    time.sleep(TTL * 2 + 1)
    assert not b_.is_primary() and not c_.is_primary()
    assert "is ahead on db" in b_.log_text()
    # a comes back, is the most advanced candidate, and is elected.
    a.start()
    assert primary_of([a, b_, c_]) is a
    assert_identical([a, b_, c_])
    # A node of another cluster is refused.
    d = EtcdNode(tmp_path, "d", etcd)
    d.data.mkdir(parents=True, exist_ok=True)
    (d.data / "clusterid").write_text("LFSC0123456789ABCDEF\n")
    d.start(wait=False)
    assert d.proc.wait(40) != 0
    d.proc = None
    d.logf.close()
    assert "another cluster" in d.log_text()


def test_behind_candidate_yields_to_caught_up(cluster):
    nodes = cluster()
    p = primary_of(nodes)
    behind, ahead = [n for n in nodes if n is not p]
    behind.stop()
    for i in range(10):
        assert try_write(p, 500 + i)[0]
    wait_rows([p, ahead])
    p.kill9()
    behind.start()
    assert primary_of([behind, ahead], timeout=TTL + 5) is ahead
    assert set(range(500, 510)) <= set(ahead.rows())


def promote(node, old=None, check=True):
    """litefs promote against node's API; the CompletedProcess. With old
    (the primary before): waits until old no longer says it is the primary
    (it notices the handover through its etcd watch, milliseconds later;
    meanwhile it is fenced and refuses every commit)."""
    r = run(LITEFS, "promote", "-url", f"http://127.0.0.1:{node.port}", check=check)
    deadline = time.time() + 3
    while old is not None and r.returncode == 0 and old.is_primary() and time.time() < deadline:
        time.sleep(0.01)
    return r


def write_pause(commits, old, new):
    """The write pause of a handoff as the writing client saw it: from the
    end of the last commit on old to the end of the first on new."""
    last_old = max(c[3] for c in commits if c[0] == old)
    first_new = min(c[3] for c in commits if c[0] == new and c[3] > last_old)
    return first_new - last_old


def test_handoff_under_write_load(cluster):
    nodes = cluster()
    p = primary_of(nodes)
    x = [n for n in nodes if n is not p][0]
    w = Writer(nodes)
    w.start()
    time.sleep(1.0)
    r = promote(x, p)
    assert "primary" in r.stdout, r.stdout + r.stderr
    time.sleep(0.5)
    w.stop()
    assert primary_of(nodes) is x
    assert "handed the lease off" in p.log_text(), p.log_text()[-2000:]
    assert "handoff done" in x.log_text()
    assert any(c[0] == x.name for c in w.commits)
    check_no_overlap(w.commits, nodes)
    # Every commit a client saw is on every node: nothing went to lost/.
    final = set(assert_identical(nodes))
    missing = [v for _, v, _, _ in w.commits if v not in final]
    assert not missing, missing[:10]
    assert not any(n.lost_files() for n in nodes)
    # The old primary refuses writes like any replica.
    ok, err = try_write(p, 9_000_000)
    assert not ok and "readonly" in err, err
    print(f"handoff write pause: {write_pause(w.commits, p.name, x.name) * 1000:.1f} ms")
    # Refusals: the primary itself, and a non-candidate.
    assert promote(x).returncode == 0
    assert "already the primary" in promote(x).stdout
    y = [n for n in nodes if n is not x][0]
    y.stop()
    y.candidate = False
    y.write_config()
    y.start()
    wait_rows(nodes)
    r = promote(y, check=False)
    assert r.returncode == 1 and "not a candidate" in r.stderr, r.stderr
    assert primary_of(nodes) is x


def test_lease_promote_takes_over_once_synced(cluster):
    nodes = cluster()
    p = primary_of(nodes)
    x = [n for n in nodes if n is not p][0]
    x.stop()
    x.extra = "  promote: true\n"
    x.write_config()
    assert try_write(p, 42)[0]
    x.start()
    assert primary_of(nodes, timeout=10) is x or (time.sleep(2) or primary_of(nodes)) is x
    assert 42 in x.rows()
    assert "handoff done" in x.log_text()


def test_randomised_failovers(cluster):
    # 50 failovers of the four kinds (the bar), in at most 150 s.
    seconds = float(os.environ.get("LITEFS_FAILOVER_SECONDS", "150"))
    max_rounds = int(os.environ.get("LITEFS_FAILOVER_ROUNDS", "50"))
    rng = random.Random(int(os.environ.get("LITEFS_FAILOVER_SEED", "1")))
    nodes = cluster()
    w = Writer(nodes)
    w.start()
    kinds = {"kill9": 0, "sigstop": 0, "stop": 0, "handoff": 0}
    pauses = []
    t_end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < t_end and (not max_rounds or rounds < max_rounds):
        p = primary_of(nodes, timeout=TTL + 8)
        kind = rng.choice(sorted(kinds))
        kinds[kind] += 1
        if kind == "handoff":
            x = rng.choice([n for n in nodes if n is not p])
            wait_rows(nodes)
            r = promote(x, p, check=False)
            if r.returncode == 0:
                assert primary_of(nodes) is x
                time.sleep(0.3)
                try:
                    pauses.append(write_pause(list(w.commits), p.name, x.name))
                except ValueError:
                    pass
            else:
                print(f"handoff to {x.name} refused: {r.stderr.strip()}")
            rounds += 1
            time.sleep(0.3)
            continue
        if kind == "kill9":
            p.kill9()
        elif kind == "sigstop":
            p.proc.send_signal(signal.SIGSTOP)
        else:
            p.stop()
        primary_of([n for n in nodes if n is not p], timeout=TTL + 8)
        if kind == "sigstop":
            p.proc.send_signal(signal.SIGCONT)
        else:
            p.start()
        rounds += 1
        time.sleep(0.3)
    w.stop()
    assert rounds >= min(max_rounds or 1, 50) or seconds < 150, f"only {rounds} rounds in {seconds} s"
    print(f"randomised failovers: {rounds} rounds {kinds}, {len(w.commits)} commits, "
          f"handoff pauses ms {sorted(round(x * 1000, 1) for x in pauses)}")
    check_no_overlap(w.commits, nodes)
    final = set(assert_identical(nodes))
    # Every commit a client saw either survived or is under some lost/.
    lost_any = any(n.lost_files() for n in nodes)
    missing = [v for _, v, _, _ in w.commits if v not in final]
    assert not missing or lost_any, missing[:10]
    assert rounds >= 3


def test_config_etcd_keys_checked_with_lines(tmp_path):
    f = tmp_path / "litefs.yml"
    f.write_text(
        "fuse:\n  dir: /tmp/x\n"
        "data:\n  dir: /tmp/y\n"
        "lease:\n  type: etcd\n"
        "  advertise-url: http://127.0.0.1:1\n"
        "  etcd:\n"
        "    endpoints: [\"ftp://x\"]\n"
        "    ttl: 1500ms\n"
        "    ca-file: /nonexistent\n"
        "    password: p\n")
    r = run(LITEFS, "config", "check", "-config", f, check=False)
    assert r.returncode != 0
    assert f'{f}:9: lease.etcd.endpoints: "ftp://x" is not an http:// or https:// URL' in r.stderr, r.stderr
    assert f"{f}:10: lease.etcd.ttl: must be a whole number of seconds" in r.stderr, r.stderr
    assert f"{f}:11: lease.etcd.ca-file: only used with https:// endpoints" in r.stderr, r.stderr
    assert f"{f}:12: lease.etcd.password: set without lease.etcd.username" in r.stderr, r.stderr
    # Consul is refused with the etcd lines that replace it.
    f.write_text("fuse:\n  dir: /tmp/x\ndata:\n  dir: /tmp/y\nlease:\n  type: consul\n"
                 "  advertise-url: http://127.0.0.1:1\n  consul:\n    key: my/key\n    ttl: 15s\n")
    r = run(LITEFS, "config", "check", "-config", f, check=False)
    assert "type: etcd" in r.stderr and 'key: "my/key"' in r.stderr and 'ttl: "15s"' in r.stderr, r.stderr
