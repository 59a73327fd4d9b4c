"""The etcd lease with the parts around it: `if-primary` workers that move
with the primary, and synchronous replication across a kill -9 failover
(docs/lease.md, docs/config.md exec, docs/replication.md)."""
import signal
import sqlite3
import textwrap
import time

from conftest import Node, wait_until
from test_failover import TTL, EtcdNode, etcd, primary_of, promote, try_write  # noqa: F401 (etcd: a fixture)


def words(path):
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def worker(marker):
    """Appends "start" when it starts and "term" on SIGTERM."""
    return (f"sh -c 'trap \\\"echo term >> {marker}; exit 0\\\" TERM; echo start >> {marker}; "
            f"while true; do sleep 0.05; done'")


def marker_of(tmp_path, n):
    return tmp_path / f"{n.name}-worker.txt"


def start_plain(n):
    """Starts a node with its exec section (no `-- cmd` override)."""
    Node.start(n)
    return n


def make_nodes(tmp_path, etcd, extra_of, lease_keys=""):
    """Three candidates a, b, c with extra_of(name) appended to their
    config and lease_keys (indented lines) added to their lease section."""
    nodes = [EtcdNode(tmp_path, name, etcd, extra=extra_of(name)) for name in ("a", "b", "c")]
    for n in nodes:
        if lease_keys:
            text = n.config.read_text().replace("  candidate: true\n", "  candidate: true\n" + lease_keys)
            n.config.write_text(text)
        start_plain(n)
    return nodes


def stop_all(nodes):
    for n in nodes:
        if n.proc is not None:
            try:
                n.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            n.stop()


def running_workers(tmp_path, nodes):
    """Names of the nodes whose worker is running (last word "start")."""
    return sorted(n.name for n in nodes if words(marker_of(tmp_path, n))[-1:] == ["start"])


def test_if_primary_worker_follows_failover(tmp_path, etcd):
    def extra(name):
        return textwrap.dedent(f"""
            exec:
              - cmd: "{worker(tmp_path / (name + '-worker.txt'))}"
                if-primary: true
              - cmd: "sleep 600"
        """)
    nodes = make_nodes(tmp_path, etcd, extra)
    try:
        p = primary_of(nodes)
        wait_until(lambda: running_workers(tmp_path, nodes) == [p.name], timeout=10,
                   msg=lambda: f"workers: {running_workers(tmp_path, nodes)}")
        time.sleep(0.5)
        assert running_workers(tmp_path, nodes) == [p.name]
        # kill -9 of the primary: its orphaned worker gets SIGTERM from the
        # kernel; the new primary starts its own.
        p.kill9()
        others = [n for n in nodes if n is not p]
        q = primary_of(others, timeout=TTL + 8)
        wait_until(lambda: words(marker_of(tmp_path, p)) == ["start", "term"], timeout=5,
                   msg=lambda: f"old worker: {words(marker_of(tmp_path, p))}")
        wait_until(lambda: running_workers(tmp_path, nodes) == [q.name], timeout=10,
                   msg=lambda: f"workers: {running_workers(tmp_path, nodes)}")
        # A clean stop of the new primary: its worker is stopped with
        # SIGTERM, and the worker moves to the next primary.
        q.stop()
        assert words(marker_of(tmp_path, q)) == ["start", "term"]
        rest = [n for n in others if n is not q]
        r = primary_of(rest, timeout=TTL + 8)
        wait_until(lambda: running_workers(tmp_path, nodes) == [r.name], timeout=10,
                   msg=lambda: f"workers: {running_workers(tmp_path, nodes)}")
        # A handoff (litefs promote) moves it too: the old primary's worker
        # gets SIGTERM when it is demoted, the new primary starts one.
        start_plain(q)
        before = len(words(marker_of(tmp_path, r)))
        # (promote is refused until q has finished its first sync.)
        wait_until(lambda: promote(q, r, check=False).returncode == 0, timeout=15, interval=0.2)
        assert primary_of(rest + [q]) is q
        wait_until(lambda: words(marker_of(tmp_path, r))[before:] == ["term"], timeout=15,
                   msg=lambda: f"{r.name}'s worker: {words(marker_of(tmp_path, r))}")
        wait_until(lambda: running_workers(tmp_path, nodes) == [q.name], timeout=10,
                   msg=lambda: f"workers: {running_workers(tmp_path, nodes)}")
    finally:
        stop_all(nodes)


def metric(node, name):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def sync_ready(node):
    """The primary waits for acks (not degraded) and has a replica that acks."""
    try:
        return metric(node, "litefs_sync_degraded") == 0 and (metric(node, "litefs_sync_sessions") or 0) >= 1
    except OSError:
        return False


def test_sync_replication_loses_no_returned_commit_on_failover(tmp_path, etcd):
    """lease.sync-replicas: 1 — kill -9 of the primary right after commits
    return: every commit that returned is on the new primary, round after
    round."""
    nodes = make_nodes(tmp_path, etcd, lambda name: "exec:\n  - cmd: \"sleep 600\"\n",
                       lease_keys="  sync-replicas: 1\n")
    try:
        p = primary_of(nodes)
        wait_until(lambda: (metric(p, "litefs_sync_sessions") or 0) >= 2, timeout=15,
                   msg=lambda: p.log_text()[-2000:])
        c = sqlite3.connect(str(p.db()), timeout=5, isolation_level=None)
        c.execute("PRAGMA journal_mode=wal")
        c.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER PRIMARY KEY)")
        c.close()
        returned = set()
        rounds = 4
        v = 0
        for rnd in range(rounds):
            p = primary_of(nodes, timeout=TTL + 8)
            # A commit returns unacknowledged only once the primary has
            # degraded (no replica in time): wait until it is synchronous.
            wait_until(lambda: sync_ready(p), timeout=15, msg=lambda: p.log_text()[-2000:])
            t_end = time.monotonic() + 0.4
            while time.monotonic() < t_end:
                v += 1
                ok, err = try_write(p, v)
                if ok:
                    returned.add(v)
            p.kill9()
            live = [n for n in nodes if n is not p]
            q = primary_of(live, timeout=TTL + 8)
            have = set(q.rows())
            missing = sorted(returned - have)
            assert not missing, f"round {rnd}: {len(missing)} returned commits missing on {q.name}: {missing[:5]}"
            start_plain(p)
        print(f"sync failover: {rounds} rounds, {len(returned)} returned commits, none lost")
    finally:
        stop_all(nodes)
