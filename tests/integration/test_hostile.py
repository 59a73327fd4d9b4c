"""Hostile clients against both HTTP servers (the node's API and
litefs-cloud's): malformed requests get JSON errors, and connections that
trickle, idle or crawl cannot starve the nodes, their peers and the
operators (docs/http.md "The server")."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import Cluster, wait_until
from test_backup import backup_config, cloud_pos, hexpos, write_rows

ATTACK = Path(__file__).with_name("attack.py")


def raw(port, data, timeout=5):
    """Sends data as is; returns (status, parsed JSON body or None, head)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        reply = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    status = int(line.split(" ")[1]) if line.startswith("HTTP/1.1 ") else None
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    return status, obj, head


BAD = [
    ("nul in a header value", b"GET /info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\x00junk\r\n\r\n", 400),
    ("two Authorization headers", b"GET /info HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
     400),
    ("nul in the path", b"GET /pos\x00/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("%00 in the path", b"GET /pos%00/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("header without a colon", b"GET /info HTTP/1.1\r\nHost x\r\n\r\n", 400),
    ("garbage request line", b"\x16\x03\x01 hello\r\n\r\n", 400),
    ("empty request", b"\r\n\r\n", 400),
    ("bad version", b"GET /info HTTP/2.0\r\n\r\n", 505),
    ("long target", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    ("large head", b"GET /info HTTP/1.1\r\n" + b"X-A: " + b"b" * 17000 + b"\r\n\r\n", 431),
    ("folded header", b"GET /info HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("bad Content-Length", b"POST {POST} HTTP/1.1\r\n{AUTH}Content-Length: 1x\r\n\r\n", 400),
    ("both lengths", b"POST {POST} HTTP/1.1\r\n{AUTH}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     400),
    ("bad chunk size", b"POST {POST} HTTP/1.1\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     400),
    ("gzip transfer coding", b"POST {POST} HTTP/1.1\r\n{AUTH}Transfer-Encoding: gzip\r\n\r\n", 501),
]


def check_bad_requests(port, post, auth=b""):
    """post: a path that reads a request body (with auth: its header line)."""
    for what, data, want in BAD:
        data = data.replace(b"{POST}", post).replace(b"{AUTH}", auth)
        status, obj, head = raw(port, data)
        assert status == want, f"{what}: {head!r}"
        assert b"application/json" in head, f"{what}: {head!r}"
        assert obj and obj.get("error"), f"{what}: {obj!r}"


def test_bad_requests_get_json_errors_from_the_node(node):
    n = node().start()
    check_bad_requests(n.port, b"/import?name=a.db")
    # A chunked body that is well-formed still works (the import is refused
    # for its content, by the handler, after the whole body).
    status, obj, _ = raw(n.port, b"POST /import?name=a.db HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\n\r\n")
    assert status == 400 and "SQLite" in obj["error"]
    assert not n.db("a.db").exists()


def test_bad_requests_get_json_errors_from_the_service(cloud):
    srv = cloud()
    token = srv.create_cluster("prod")
    check_bad_requests(srv.port, b"/db/tx?db=a.db", b"Authorization: Bearer " + token.encode() + b"\r\n")
    # The valid token followed by a NUL and junk is not the token.
    status, _, _ = raw(srv.port, b"GET /pos HTTP/1.1\r\nAuthorization: Bearer " + token.encode() +
                       b"\x00junk\r\n\r\n")
    assert status == 400
    status, obj, _ = raw(srv.port, b"GET /pos HTTP/1.1\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n")
    assert status == 200, obj


def proc_status(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return int(out["Threads"]), int(out["VmRSS"].split()[0]) // 1024


def attack(target, mode, conns, first_source, n_sources, seconds, **kw):
    sources = ",".join(f"127.0.{first_source // 256}.{first_source % 256 + i}" for i in range(n_sources))
    args = [sys.executable, str(ATTACK), "--target", target, "--mode", mode, "--conns", str(conns),
            "--sources", sources, "--seconds", str(seconds)]
    for k, v in kw.items():
        if k == "headers":
            for h in v:
                args += ["--header", h]
        else:
            args += [f"--{k}", str(v)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def timed(fn):
    t0 = time.time()
    fn()
    return time.time() - t0


def test_starvation_attack_on_both_servers(tmp_path, cloud):
    """About 2,000 hostile connections from 40 other addresses for 25 s:
    1,100 trickle header lines at the service, 200 idle there; 500 trickle
    and 140 idle at the primary's API, and 60 crawl a body to /import to take
    every worker open to strangers. Meanwhile the primary's pushes, /pos with
    a token, a restore, and a restarted replica's stream are all served, and
    both processes stay within their thread caps."""
    srv = cloud()
    token = srv.create_cluster("prod")
    # Bodies must move 64 KiB per 8 s of waiting here (30 s by default), so
    # that the crawling bodies are cut within the attack.
    c = Cluster(tmp_path, n=2, extra_config=backup_config(srv.url, token),
                env={"LITEFS_HTTP_IO_TIMEOUT_MS": "8000"})
    c.start()
    try:
        primary, replica = c.primary, c.replicas[0]
        write_rows(primary, 20)
        want = hexpos(primary)
        wait_until(lambda: cloud_pos(srv, token) == want, timeout=5)
        c.wait_synced()
        # The replica knows the cluster ID: that is how the primary tells it
        # from a stranger when the workers open to all are taken.
        assert (replica.data / "clusterid").read_text() == (primary.data / "clusterid").read_text()
        base_threads = {"node": proc_status(primary.proc.pid)[0], "cloud": proc_status(srv.proc.pid)[0]}

        seconds = 25
        procs = [
            attack(f"127.0.0.1:{srv.port}", "trickle", 1100, 2, 22, seconds, every=2),
            attack(f"127.0.0.1:{srv.port}", "bare", 200, 30, 4, seconds),
            attack(f"127.0.0.1:{primary.port}", "trickle", 500, 40, 10, seconds, every=2),
            attack(f"127.0.0.1:{primary.port}", "bare", 140, 50, 3, seconds),
            attack(f"127.0.0.1:{primary.port}", "slowbody", 60, 60, 2, seconds, every=1,
                   path="/import?name=slow.db"),
        ]
        time.sleep(3)  # the attack is in place
        lat = {}
        peak = {"node": 0, "cloud": 0}
        rss = {"node": 0, "cloud": 0}

        def sample():
            for k, pid in (("node", primary.proc.pid), ("cloud", srv.proc.pid)):
                t, r = proc_status(pid)
                peak[k] = max(peak[k], t)
                rss[k] = max(rss[k], r)

        sample()
        # A stranger's /info is answered at once: 200, or 503 JSON while the
        # crawling bodies hold the workers open to strangers. Never a reset.
        t0 = time.time()
        status, obj, _ = raw(primary.port, b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        lat["stranger /info"] = time.time() - t0
        assert status in (200, 503) and obj is not None, (status, obj)
        # The primary's pushes reach the service.
        for i in range(3):
            t0 = time.time()
            write_rows(primary, 5, start=100 + 10 * i)
            want = hexpos(primary)
            wait_until(lambda: cloud_pos(srv, token) == want, timeout=10,
                       msg=lambda: f"service at {cloud_pos(srv, token)}, node at {want}")
            lat.setdefault("commit -> service", []).append(time.time() - t0)
            sample()
        # /pos with a token.
        lat["/pos"] = [timed(lambda: cloud_pos(srv, token)) for _ in range(5)]
        # A restore on the service reaches the primary and the replica.
        before = hexpos(primary)
        t0 = time.time()
        srv.cli("restore", "db", "--txid", f"{want[0] - 5:016x}", token=token)
        wait_until(lambda: hexpos(primary)[0] == before[0] + 1 and replica.pos_or_none() == primary.pos(),
                   timeout=15, msg=lambda: c.describe())
        lat["restore -> both nodes"] = time.time() - t0
        sample()
        # A replica that restarts reconnects to the primary (it is trusted:
        # it names the cluster ID) and catches up.
        replica.stop()
        write_rows(primary, 5, start=500)
        t0 = time.time()
        replica.start()
        c.wait_synced(timeout=15)
        lat["replica restart -> caught up"] = time.time() - t0
        sample()
        results = [json.loads(p.communicate(timeout=seconds + 30)[0]) for p in procs]
    finally:
        for p in locals().get("procs", []):
            if p.poll() is None:
                p.kill()
        c.stop()
    total_peak = sum(r["peak_open"] for r in results)
    print("attack:", json.dumps(results))
    print("latency under attack (s):", json.dumps(lat))
    print(f"threads: base {base_threads}, peak {peak}; RSS peak MiB {rss}")
    # The attack was real: about 2,000 connections were open at once, and
    # the servers closed trickling heads (408) and crawling bodies.
    assert total_peak >= 1800, results
    assert results[0]["replies"].get("408", 0) > 0, results[0]
    assert results[4]["closed_by_server"] > 0 or results[4]["replies"], results[4]
    # Threads stay within the worker caps (64 node, 256 service).
    assert peak["node"] - base_threads["node"] <= 64, (peak, base_threads)
    assert peak["cloud"] - base_threads["cloud"] <= 256, (peak, base_threads)
    assert rss["node"] < 512 and rss["cloud"] < 512, rss
