"""The proxy (docs/proxy.md): a real web app (proxy_app.py) reading and
writing a database on the mount, on a primary and two replicas, each behind
its own `litefs mount` proxy; real HTTP clients (http.client, raw sockets).
"""
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ClusterNode, free_port, wait_until

APP = Path(__file__).resolve().parent / "proxy_app.py"
sys.path.insert(0, str(APP.parent))
from proxy_app import ws_frame, ws_read  # noqa: E402

COOKIE_RE = re.compile(r"^__txid=([0-9a-f]{16}); Path=/; HttpOnly$")


class ProxyNode(ClusterNode):
    """A static-lease node with a proxy in front of its own app."""

    def __init__(self, base, name, primary_port=None, proxy_extra=""):
        self.proxy_port, self.app_port = free_port(), free_port()
        self.app = None
        proxy = (f"proxy:\n  addr: 127.0.0.1:{self.proxy_port}\n  target: 127.0.0.1:{self.app_port}\n"
                 f"  db: db\n  passthrough: [\"/static/*\"]\n  always-forward: [\"/always/*\"]\n"
                 f"  primary-redirect-timeout: 3s\n  txid-timeout: 2s\n  debug: true\n" + proxy_extra)
        super().__init__(base, name, candidate=primary_port is None, primary_port=primary_port,
                         extra_config=proxy)

    def start_app(self):
        self.app = subprocess.Popen([sys.executable, str(APP), str(self.app_port), str(self.mnt / "db"), self.name])
        wait_until(lambda: _connectable(self.app_port), msg=f"{self.name}'s app listening")
        return self

    def stop_app(self):
        if self.app:
            self.app.kill()
            self.app.wait()
            self.app = None

    def conn(self, timeout=20):
        return http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=20):
        c = self.conn(timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data

    def metrics(self):
        with urllib_open(self.url("/metrics")) as r:
            text = r.read().decode()
        return {m.group(1): int(m.group(2)) for m in
                re.finditer(r'^litefs_proxy_requests_total\{outcome="(\w+)"\} (\d+)$', text, re.M)}

    def rss_kb(self, field="VmRSS"):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])


def urllib_open(url):
    import urllib.request
    return urllib.request.urlopen(url, timeout=10)


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def make_cluster(tmp_path, replica_extra="", primary_extra=""):
    p = ProxyNode(tmp_path, "node1", proxy_extra=primary_extra)
    reps = [ProxyNode(tmp_path, f"node{i}", primary_port=p.port, proxy_extra=replica_extra) for i in (2, 3)]
    p.start()
    c = p.connect()
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c.close()
    for r in reps:
        r.start()
    want = p.pos()
    for r in reps:
        wait_until(lambda: r.pos_or_none() == want, msg=f"{r.name} synced")
    for n in (p, *reps):
        n.start_app()
    return p, reps


@pytest.fixture
def proxies(tmp_path):
    made = []

    def make(**kw):
        nodes = make_cluster(tmp_path, **kw)
        made.extend([nodes[0], *nodes[1]])
        return nodes
    yield make
    for n in reversed(made):
        n.stop_app()
        try:
            n.stop()
        except Exception:
            pass


def cookie_of(r):
    v = r.getheader("Set-Cookie")
    assert v and COOKIE_RE.match(v), f"bad __txid cookie {v!r}"
    return v.split(";")[0]


def test_writes_forwarded_reads_see_own_writes(proxies):
    p, (r1, r2) = proxies(primary_extra="  idle-timeout: 1s\n")
    for i in range(20):
        r, body = r1.request("POST", "/write", body=f"v{i:03d}")
        assert r.status == 200, body
        assert r.getheader("X-Node") == "node1"  # the primary's app wrote it
        ck = cookie_of(r)
        # The other replica, with the cookie: never an older state.
        r, body = r2.request("GET", "/read", headers={"Cookie": "a=b; " + ck})
        assert r.status == 200 and r.getheader("X-Node") == "node3"
        assert json.loads(body)["last"] == f"v{i:03d}"
    # On the primary itself: local, with the cookie.
    r, _ = p.request("POST", "/write", body="direct")
    assert r.status == 200 and r.getheader("X-Node") == "node1"
    cookie_of(r)
    assert r1.info()["primaryProxyURL"] == p.info()["proxyURL"] == f"http://127.0.0.1:{p.proxy_port}"
    # One client connection, idle longer than the primary proxy's
    # idle-timeout in between: the replica's kept-alive connection to it
    # was closed, and a POST (not retried on a dead connection) must not
    # be sent on it.
    c = r1.conn()
    for v in ("k1", "k2"):
        c.request("POST", "/write", body=v)
        r = c.getresponse()
        assert r.status == 200 and r.getheader("X-Node") == "node1", r.read()
        r.read()
        time.sleep(1.5)
    c.close()
    m1, mp = r1.metrics(), p.metrics()
    assert m1["forwarded"] == 22 and mp["local"] >= 23, (m1, mp)
    log = r1.log_text()
    assert "forwarding to the primary" in log  # proxy.debug logs the decision


def test_get_that_writes_is_replayed_on_primary(proxies):
    p, (r1, _) = proxies()
    r, body = r1.request("GET", "/touch")
    assert r.status == 200, body
    assert r.getheader("X-Node") == "node1" and json.loads(body) == {"touched": True}
    # The outcome is counted once the response was relayed whole, just
    # after the client has it.
    wait_until(lambda: r1.metrics().get("replayed") == 1, timeout=5, msg="one replay counted")
    c = p.connect()
    assert c.execute("SELECT count(*) FROM t WHERE v = 'touch'").fetchone()[0] == 1
    c.close()
    # A write served locally (passthrough) that the app cannot make is
    # replayed with its body.
    big = "b" * 100000
    r, body = r1.request("POST", "/static/write", body=big)
    assert r.status == 200 and r.getheader("X-Node") == "node1", body
    wait_until(lambda: r1.metrics().get("replayed") == 2, timeout=5, msg="two replays counted")
    c = p.connect()
    assert c.execute("SELECT count(*) FROM t WHERE v = ?", (big,)).fetchone()[0] == 1
    c.close()


def ws_connect(node, path):
    s = socket.create_connection(("127.0.0.1", node.proxy_port), timeout=10)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    f = s.makefile("rb")
    status = f.readline()
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        k, v = line.split(":", 1)
        headers[k.lower()] = v.strip()
    assert b" 101 " in status, status
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    return s, f, headers


def test_websocket_sse_and_large_upload(proxies):
    p, (r1, _) = proxies()
    for path, served_by in (("/ws", "node2"), ("/always/ws", "node1")):
        s, f, h = ws_connect(r1, path)
        assert h["x-node"] == served_by
        for msg in (b"hello", b"y" * 70000):
            s.sendall(ws_frame(2, msg))
            op, data = ws_read(f)
            assert op == 2 and data == msg
        s.sendall(ws_frame(8, b""))
        assert ws_read(f)[0] == 8
        s.close()
    # SSE: each event arrives while the app is still producing the next.
    s = socket.create_connection(("127.0.0.1", r1.proxy_port), timeout=10)
    t0 = time.time()
    s.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    got, arrivals = b"", []
    while not got.endswith(b"0\r\n\r\n"):
        b = s.recv(65536)
        assert b, f"stream ended early: {got!r}"
        got += b
        arrivals += [time.time() - t0] * b.count(b"data:")
    s.close()
    assert b"Transfer-Encoding: chunked" in got and len(arrivals) == 3
    assert arrivals[0] < arrivals[2] - 0.4, f"events were buffered: {arrivals}"
    # 100 MB forwarded to the primary, chunked, streamed both hops.
    total, chunk = 100 << 20, b"z" * (1 << 20)
    rss0 = r1.rss_kb()

    def body():
        for _ in range(total // len(chunk)):
            yield chunk
    r, data = r1.request("POST", "/upload", body=body(), timeout=120)  # http.client chunks it
    assert r.status == 200 and json.loads(data)["bytes"] == total
    grew = r1.rss_kb("VmHWM") - rss0
    print(f"replica litefs peak RSS grew by {grew} kB during a 100 MB forwarded upload")
    assert grew < 32 * 1024, f"the proxy buffered the upload: peak RSS +{grew} kB"


def test_passthrough_health_timeouts_no_primary(proxies):
    p, (r1, r2) = proxies(replica_extra="  max-lag: 1s\n")
    r, body = r1.request("POST", "/static/x.png", body=b"abc")
    assert r.status == 200 and r.getheader("X-Node") == "node2"  # passthrough: the local app
    assert r.getheader("Set-Cookie") is None
    r, body = r1.request("GET", "/always/x")
    assert r.status == 200 and r.getheader("X-Node") == "node1"
    r, body = r1.request("GET", "/litefs/health")
    assert r.status == 200 and body == b"OK\n"
    t0 = time.time()
    r, body = r1.request("GET", "/read", headers={"Cookie": "__txid=00000000ffffffff"})
    assert r.status == 504 and b"Proxy timeout" in body and time.time() - t0 >= 1.5
    # Without the primary: writes are held for primary-redirect-timeout, then 503.
    p.stop_app()
    p.stop()
    wait_until(lambda: r1.primary_file() is None, msg="replica lost its primary")
    t0 = time.time()
    r, body = r1.request("POST", "/write", body="lost")
    assert r.status == 503 and b"no primary available" in body
    assert time.time() - t0 >= 2.5
    r, body = r2.request("GET", "/read")  # reads still served locally
    assert r.status == 200 and r.getheader("X-Node") == "node3"
    wait_until(lambda: r1.request("GET", "/litefs/health")[0].status == 503, timeout=10,
               msg="health 503 above max-lag")


def single_node(tmp_path):
    """A primary with a proxy and the table; its app is not started."""
    n = ProxyNode(tmp_path, "node1")
    n.start()
    c = n.connect()
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c.close()
    return n


def test_app_starting_crashing_and_client_leaving(tmp_path):
    n = single_node(tmp_path)
    try:
        out = {}

        def get():
            out["r"] = n.request("GET", "/read")
        t = threading.Thread(target=get)
        t.start()
        time.sleep(1.0)  # the request waits while the app is not listening
        n.start_app()
        t.join(20)
        assert out["r"][0].status == 200 and json.loads(out["r"][1]) == {"n": 0, "last": None}
        # The app drops the request: 502.
        r, body = n.request("GET", "/die")
        assert r.status == 502 and b"upstream failed" in body
        # The app dies mid-response: the client sees a truncated body.
        c = n.conn()
        c.request("GET", "/crash")
        r = c.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            r.read()
        c.close()
        # A client leaving mid-body: the proxy stays up.
        s = socket.create_connection(("127.0.0.1", n.proxy_port))
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000)
        s.close()
        r, body = n.request("POST", "/write", body="after")
        assert r.status == 200
        cookie_of(r)
    finally:
        n.stop_app()
        n.stop()


def raw(port, data, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    s.close()
    return out


def test_hostile_input_gets_clean_4xx(tmp_path):
    n = single_node(tmp_path)
    try:
        n.start_app()
        port = n.proxy_port
        cases = {
            "huge header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n", b" 431 "),
            "many headers": (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n", b" 431 "),
            "bad chunk": (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                          b" 400 "),
            "CL+TE": (b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", b" 400 "),
            "two CL": (b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
                       b" 400 "),
            "bad method": (b"G\x01T / HTTP/1.1\r\n\r\n", b" 400 "),
        }
        for name, (req, want) in cases.items():
            out = raw(port, req)
            assert out.split(b"\r\n")[0].find(want) > 0, f"{name}: {out[:200]!r}"
            assert b"smuggled" not in out
        r, body = n.request("GET", "/read")
        assert r.status == 200 and json.loads(body)["n"] == 0  # nothing was written, still up
        # HEAD has no body: the next request on the connection is intact.
        c = n.conn()
        c.request("HEAD", "/read")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"" and int(r.getheader("Content-Length")) > 0
        c.request("GET", "/read")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["n"] == 0
        c.close()
        # Expect: 100-continue is answered by the proxy, then the body flows.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        assert b'"bytes": 5' in s.recv(4096)
        s.close()
        assert n.proc.poll() is None
    finally:
        n.stop_app()
        n.stop()
