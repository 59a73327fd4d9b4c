#!/usr/bin/python3
"""The proxy against the application directly (BENCHMARKS.md "Proxy"), all
in the same run: a primary and a replica, each `litefs mount` with a proxy
in front of its own copy of tests/integration/proxy_app.py (Python
ThreadingHTTPServer, HTTP/1.1 keep-alive).

1. wrk (Debian's `wrk`; installed by scripts/install-deps) for SECONDS
   each, CONNS connections, 2 threads, --latency (and the two GET cases
   again with one connection, where queueing does not hide the latency):
   - GET /small on the primary: app direct vs through the proxy;
   - GET /small on the replica: app direct vs through the proxy;
   - POST /bench on the replica's proxy (forwarded to the primary's proxy,
     then its app) vs POST straight to the primary's app.
   Requests/s, their ratio, p50 and p99, and what the proxy adds.
2. Memory: the replica's litefs RSS (VmRSS) before and after 1,000 idle
   keep-alive connections (each made one GET /small through the proxy)
   and then 100 open WebSockets through it (echo checked).

Prints numbers; never fails on timing.
Usage: bench/proxy.py [SECONDS] [CONNS]
"""
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.environ.get("LITEFS_BIN", os.path.join(BUILD, "litefs"))
APP = os.path.join(ROOT, "tests", "integration", "proxy_app.py")
sys.path.insert(0, os.path.dirname(APP))
from proxy_app import ws_frame, ws_read  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


class Node:
    def __init__(self, base, name, primary_port=None):
        self.name = name
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir)
        self.mnt = os.path.join(self.dir, "mnt")
        self.port, self.proxy_port, self.app_port = free_port(), free_port(), free_port()
        with open(os.path.join(self.dir, "litefs.yml"), "w") as f:
            f.write(f"fuse:\n  dir: {self.mnt}\ndata:\n  dir: {self.dir}/data\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n"
                    f"lease:\n  type: static\n  candidate: {'false' if primary_port else 'true'}\n"
                    f"  hostname: primary\n  advertise-url: http://127.0.0.1:{primary_port or self.port}\n"
                    f"proxy:\n  addr: 127.0.0.1:{self.proxy_port}\n  target: 127.0.0.1:{self.app_port}\n"
                    f"  db: db\n")
        self.log = open(os.path.join(self.dir, "litefs.log"), "w")
        self.proc = subprocess.Popen([LITEFS, "mount", "-config", os.path.join(self.dir, "litefs.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.proxy_port)
        self.app = None

    def start_app(self):
        self.app = subprocess.Popen(["/usr/bin/python3", APP, str(self.app_port), os.path.join(self.mnt, "db"),
                                     self.name])
        wait_port(self.app_port)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    def threads(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self):
        if self.app:
            self.app.kill()
            self.app.wait()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)


def to_us(v, unit):
    return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]


def wrk(url, seconds, conns, post=False, base="."):
    args = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if post:
        script = os.path.join(base, "post.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = "hello"\n'
                    'wrk.headers["Content-Type"] = "text/plain"\n')
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: to_us(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat.get("50"), lat.get("99"), int(errs.group(1)) if errs else 0


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    if not shutil.which("wrk"):
        print("wrk is missing: run scripts/install-deps (Debian package wrk)")
        return 1
    base = tempfile.mkdtemp(prefix="bench-proxy-")
    nodes = []
    try:
        p = Node(base, "primary")
        nodes.append(p)
        c = sqlite3.connect(os.path.join(p.mnt, "db"), isolation_level=None)
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.close()
        r = Node(base, "replica", primary_port=p.port)
        nodes.append(r)
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(r.mnt, "db")) and time.time() < deadline:
            time.sleep(0.05)
        p.start_app()
        r.start_app()
        print(f"wrk: {seconds}s per case, {conns} connections, 2 threads; app: Python ThreadingHTTPServer")
        print(f"{'case':<44} {'direct req/s':>12} {'proxy req/s':>12} {'ratio':>6} "
              f"{'p50 d/p (us)':>15} {'p99 d/p (us)':>17} {'+p50':>6} {'+p99':>7}")
        cases = [
            ("GET /small on the primary", f"http://127.0.0.1:{p.app_port}/small",
             f"http://127.0.0.1:{p.proxy_port}/small", False),
            ("GET /small on a replica", f"http://127.0.0.1:{r.app_port}/small",
             f"http://127.0.0.1:{r.proxy_port}/small", False),
            ("POST from a replica (forwarded)", f"http://127.0.0.1:{p.app_port}/bench",
             f"http://127.0.0.1:{r.proxy_port}/bench", True),
        ]
        cases += [(f"{n} (1 connection)", d, x, post) for n, d, x, post in cases[:2]]
        for name, direct, proxied, post in cases:
            nc = 1 if "(1 connection)" in name else conns
            d = wrk(direct, seconds, nc, post, base)
            x = wrk(proxied, seconds, nc, post, base)
            print(f"{name:<44} {d[0]:>12,.0f} {x[0]:>12,.0f} {x[0] / d[0]:>6.2f} "
                  f"{d[1]:>7.0f}/{x[1]:<7.0f} {d[2]:>8.0f}/{x[2]:<8.0f} {x[1] - d[1]:>6.0f} {x[2] - d[2]:>7.0f}"
                  + (f"  (non-2xx: {d[3]}/{x[3]})" if d[3] or x[3] else ""))
        # Memory: idle keep-alive connections, then WebSockets.
        time.sleep(1)
        rss0, th0 = r.rss_kb(), r.threads()
        idle = []
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", r.proxy_port))
            s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.append(s)
        for s in idle:
            got = b""
            while not got.endswith(b"ok"):
                got += s.recv(4096)
        time.sleep(1.5)  # idle connections drop their request state after 1 s
        rss1, th1 = r.rss_kb(), r.threads()
        wss = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", r.proxy_port))
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            f = s.makefile("rb")
            while f.readline() not in (b"\r\n", b""):
                pass
            wss.append((s, f))
        for s, f in wss:
            s.sendall(ws_frame(1, b"ping"))
            assert ws_read(f) == (1, b"ping")
        time.sleep(0.5)
        rss2, th2 = r.rss_kb(), r.threads()
        print(f"replica litefs RSS: {rss0 / 1024:.1f} MiB at rest ({th0} threads); "
              f"+1,000 idle keep-alive connections: {rss1 / 1024:.1f} MiB "
              f"(+{(rss1 - rss0) / 1000:.1f} KiB each, {th1} threads); "
              f"+100 open WebSockets: {rss2 / 1024:.1f} MiB (+{(rss2 - rss1) / 100:.1f} KiB each, {th2} threads)")
        for s in idle:
            s.close()
        for s, f in wss:
            s.close()
    finally:
        for n in reversed(nodes):
            n.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
