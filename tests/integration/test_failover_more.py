"""The etcd lease with the parts around it: `if-primary` workers that move
with the primary, and synchronous replication across a kill -9 failover
(docs/lease.md, docs/config.md exec, docs/replication.md)."""
import subprocess
import textwrap
import time

from conftest import Node, TlsFront, free_port, wait_until
from test_failover import (TTL, EtcdNode, create_table, etcd, primary_of, promote, stop_nodes,  # noqa: F401
                           try_write)  # (etcd: a fixture)


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
        stop_nodes(nodes)


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
        create_table(p)
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
        stop_nodes(nodes)


def make_tls(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d.mkdir(parents=True, exist_ok=True)

    def sh(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "2", "-subj", "/CN=test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
           "-subj", f"/CN={name}")
        sh("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


def start_tls_etcd(tmp_path, tls, name, client_cert):
    """One etcd member on https; client_cert: it requires a client
    certificate signed by the test CA. Returns (process, url, etcdctl argv)."""
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    argv = ["etcd", "--name", name, "--data-dir", str(tmp_path / name),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}", "--initial-cluster", f"{name}=http://127.0.0.1:{peer}",
            "--cert-file", str(tls / "server.pem"), "--key-file", str(tls / "server.key")]
    if client_cert:
        argv += ["--client-cert-auth", "--trusted-ca-file", str(tls / "ca.pem")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctl = ["etcdctl", "--endpoints", url, "--cacert", str(tls / "ca.pem"), "--cert", str(tls / "client.pem"),
           "--key", str(tls / "client.key")]
    wait_until(lambda: subprocess.run(ctl + ["endpoint", "health"], capture_output=True).returncode == 0,
               timeout=20, interval=0.2)
    return proc, url, ctl


def tls_node(tmp_path, name, url, keys):
    """An EtcdNode for the one endpoint url, with extra lease.etcd keys."""
    e = type("OneEndpoint", (), {"endpoints": [url]})()
    x = EtcdNode(tmp_path, name, e)
    x.config.write_text(x.config.read_text().replace("    ttl:", keys + "    ttl:"))
    return x


def test_etcd_over_tls_with_a_client_certificate(tmp_path, etcd):
    """etcd behind https that requires a client certificate: a node with
    lease.etcd.ca-file, cert-file and key-file becomes primary and takes
    writes. (A node without the certificate retries for 30 s at start, as
    for any unreachable etcd, before it gives up: not waited for here.)"""
    tls = make_tls(tmp_path / "tls")
    # etcd 3.4's own --client-cert-auth breaks its JSON gateway (every
    # request through it answers "connection closed"): a front requires
    # the client certificate instead.
    front = TlsFront(int(etcd.endpoints[0].rsplit(":", 1)[1]), tls / "server.pem", tls / "server.key",
                     ca=tls / "ca.pem")
    front.start()
    url = f"https://127.0.0.1:{front.port}"
    n = None
    try:
        n = tls_node(tmp_path, "a", url, f"    ca-file: {tls / 'ca.pem'}\n    cert-file: {tls / 'client.pem'}\n"
                                          f"    key-file: {tls / 'client.key'}\n").start()
        primary_of([n])
        create_table(n)
        assert try_write(n, 1) == (True, "")
    finally:
        if n is not None:
            n.stop()
        front.close()


def test_etcd_with_a_username_and_password(tmp_path):
    """etcd with authentication on (over https): the node's username and
    password (lease.etcd.username/password) get it a token and the lease; a
    wrong password is refused at start with one clear line. (etcd 3.4's
    JSON gateway refuses requests that carry a client certificate once
    authentication is on, so this member does not ask for one.)"""
    tls = make_tls(tmp_path / "tls")
    proc, url, ctl = start_tls_etcd(tmp_path, tls, "t1", client_cert=False)
    n = None
    try:
        for args in (["user", "add", "root:rootpw"], ["user", "add", "litefs:s3cret"], ["role", "add", "lfs"],
                     ["role", "grant-permission", "lfs", "--prefix=true", "readwrite", "litefs/"],
                     ["user", "grant-role", "litefs", "lfs"], ["auth", "enable"]):
            subprocess.run(ctl + args, check=True, capture_output=True)
        ca = f"    ca-file: {tls / 'ca.pem'}\n"
        bad = tls_node(tmp_path, "bad", url, ca + "    username: litefs\n    password: wrong\n")
        bad.start(wait=False)
        assert bad.proc.wait(timeout=60) != 0
        assert "etcd: authentication failed" in bad.log_text(), bad.log_text()[-2000:]
        n = tls_node(tmp_path, "a", url, ca + "    username: litefs\n    password: s3cret\n").start()
        primary_of([n])
        create_table(n)
        assert try_write(n, 1) == (True, "")
    finally:
        if n is not None:
            n.stop()
        proc.terminate()
        proc.wait(timeout=20)
