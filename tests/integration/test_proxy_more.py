"""The proxy with the etcd lease (docs/proxy.md "A moving primary"): writes
sent to every node's proxy keep succeeding through a `litefs promote`
handoff — held while the old primary is fenced, then forwarded to the new
primary, whose URL the replicas learn from the lease value.
"""
import http.client
import sqlite3
import subprocess
import sys
import threading
import time

from conftest import free_port, wait_until
from test_failover import EtcdNode, etcd, primary_of, promote, stop_nodes, wait_rows  # noqa: F401 (etcd: fixture)
from test_proxy import APP, _connectable


class ProxyEtcdNode(EtcdNode):
    def __init__(self, base, name, etcd):
        self.proxy_port, self.app_port = free_port(), free_port()
        self.app = None
        extra = (f"proxy:\n  addr: 127.0.0.1:{self.proxy_port}\n  target: 127.0.0.1:{self.app_port}\n"
                 f"  db: db\n  primary-redirect-timeout: 10s\n")
        super().__init__(base, name, etcd, extra=extra)

    def start_app(self):
        self.app = subprocess.Popen([sys.executable, str(APP), str(self.app_port), str(self.mnt / "db"), self.name])
        wait_until(lambda: _connectable(self.app_port), msg=f"{self.name}'s app listening")


def test_writes_through_every_proxy_survive_a_handoff(tmp_path, etcd):
    nodes = [ProxyEtcdNode(tmp_path, n, etcd) for n in ("a", "b", "c")]
    try:
        for n in nodes:
            n.start()
        p = primary_of(nodes)
        c = sqlite3.connect(str(p.db()), timeout=5, isolation_level=None)
        c.execute("PRAGMA journal_mode=wal")
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.close()
        wait_rows(nodes)
        for n in nodes:
            n.start_app()
        results, stop = [], threading.Event()

        def writer():
            conns = {}
            i = 0
            while not stop.is_set():
                n = nodes[i % 3]
                try:
                    hc = conns.get(n.name) or http.client.HTTPConnection("127.0.0.1", n.proxy_port, timeout=30)
                    conns[n.name] = hc
                    hc.request("POST", "/write", body=f"w{i:05d}")
                    r = hc.getresponse()
                    r.read()
                    results.append((f"w{i:05d}", r.status, r.getheader("X-Node"), time.time()))
                except (OSError, http.client.HTTPException) as e:
                    conns.pop(n.name, None)
                    results.append((f"w{i:05d}", str(e), None, time.time()))
                i += 1
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(1.0)
        x = [n for n in nodes if n is not p][0]
        r = promote(x, p)
        assert "primary" in r.stdout, r.stdout + r.stderr
        time.sleep(1.5)
        stop.set()
        t.join(30)
        assert primary_of(nodes) is x
        bad = [r for r in results if r[1] != 200]
        assert not bad, f"{len(bad)} of {len(results)} writes failed: {bad[:5]}"
        served = {r[2] for r in results}
        assert served == {p.name, x.name}, served  # the old primary's app, then the new one's
        wait_rows(nodes)
        for n in nodes:
            c = sqlite3.connect(f"file:{n.db()}?mode=ro", uri=True, timeout=10)
            got = [v for (v,) in c.execute("SELECT v FROM t ORDER BY id")]
            c.close()
            assert got == [r[0] for r in results], f"{n.name}: rows differ from the acknowledged writes"
        print(f"{len(results)} writes through a handoff, none failed")
        # kill -9 of the primary: a write sent to a replica's proxy is held
        # until the lease moves (TTL + election), then forwarded.
        x.kill9()
        rest = [n for n in nodes if n is not x]
        t0 = time.time()
        hc = http.client.HTTPConnection("127.0.0.1", rest[0].proxy_port, timeout=30)
        hc.request("POST", "/write", body="after-kill")
        r = hc.getresponse()
        body = r.read()
        held = time.time() - t0
        assert r.status == 200, body
        assert r.getheader("X-Node") in {n.name for n in rest}
        assert primary_of(rest).name == r.getheader("X-Node")
        print(f"write after kill -9 of the primary held {held:.2f} s, then forwarded")
    finally:
        for n in nodes:
            if n.app:
                n.app.kill()
                n.app.wait()
        stop_nodes(nodes)
