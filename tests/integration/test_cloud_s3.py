"""litefs-cloud on S3-compatible object storage (docs/cloud-s3.md).

Real servers on loopback: s3rver (npm, installed by scripts/install-deps into
.deps/npm; does not check signatures) for function, and moto's server where a
Python with moto exists (it checks SigV4) for signatures; the moto tests skip
cleanly without it. The rest of the cloud suite runs over S3 too with
LITEFS_TEST_CLOUD_STORAGE=s3 (tests/integration/conftest.py).
"""
import json
import random
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import LITEFS, LITEFS_CLOUD, CloudServer, S3Server, db_checksum, moto_python, run, wait_until
from test_backup import Writer, backup_config, cloud_pos, hexpos
from test_cloud_api import jreq, make_chain, pos_map, push_chain, rows_of


def s3cloud(tmp_path, s3, name, bucket, args=(), prefix=None):
    return CloudServer(tmp_path, name, args=args, storage=s3.storage(bucket, prefix))


def bucket_keys(s3, bucket):
    """Every key of an s3rver bucket, read from s3rver's directory."""
    root = s3.base / "data" / bucket
    suffix = "._S3rver_object"
    return sorted(str(p.relative_to(root))[:-len(suffix)] for p in root.rglob("*" + suffix))


def serve_once(s3, tmp_path, *args, env=None):
    """Runs `litefs-cloud serve` expecting it to fail at start; returns
    (exit status, output lines, seconds)."""
    t0 = time.time()
    e = dict(s3.storage("x")[1])
    e.update(env or {})
    r = run(LITEFS_CLOUD, "serve", "-addr", "127.0.0.1:0", "-data-dir", tmp_path / "d", *args, check=False,
            timeout=60, env={**{k: v for k, v in __import__("os").environ.items()
                                if not k.startswith(("AWS_", "LITEFS_CLOUD_"))}, **e})
    return r.returncode, (r.stdout + r.stderr).strip().splitlines(), time.time() - t0


def test_start_up_errors_are_one_clear_line(s3server, tmp_path):
    bucket = s3server.create_bucket()
    ep = ["-s3-endpoint", s3server.endpoint]
    rc, lines, took = serve_once(s3server, tmp_path, "-s3-bucket", "no-such-bucket", *ep)
    assert rc == 1 and len(lines) == 1 and 'bucket "no-such-bucket" does not exist' in lines[0], lines
    assert took < 10
    port = socket.socket()
    port.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    rc, lines, _ = serve_once(s3server, tmp_path, "-s3-bucket", bucket, "-s3-endpoint",
                              f"http://127.0.0.1:{port.getsockname()[1]}")
    port.close()
    assert rc == 1 and len(lines) == 1 and "cannot reach the S3 endpoint" in lines[0], lines
    rc, lines, _ = serve_once(s3server, tmp_path, "-s3-bucket", bucket, *ep,
                              env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert rc == 1 and len(lines) == 1 and "credentials missing" in lines[0], lines
    rc, lines, _ = serve_once(s3server, tmp_path, "-s3-bucket", "Bad_Bucket", *ep)
    assert rc == 2 or (rc == 1 and len(lines) == 1 and "not a valid bucket name" in lines[0]), lines


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    if moto_python() is None:
        pytest.skip("no Python with moto on this machine: the signature checks are skipped")
    srv = S3Server(tmp_path_factory.mktemp("moto"), kind="moto")
    srv.bucket = srv.create_bucket("lfsc-moto")
    srv.enforce_auth()
    yield srv
    srv.stop()


def test_moto_checks_signatures_and_stores(moto, tmp_path):
    """Against a server that verifies SigV4: a wrong secret and an unknown key
    are one clear line each; the right ones push (a multipart snapshot
    included), export and rebuild."""
    # No key prefix here: moto (5.x) signs a query value's "/" unencoded
    # where AWS and libcurl use %2F, so listings under "a/b/" would get 403
    # from moto alone (docs/cloud-s3.md).
    good = moto.storage(moto.bucket)
    rc, lines, _ = serve_once(moto, tmp_path, *good[0], env={**good[1], "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert rc == 1 and len(lines) == 1 and "SignatureDoesNotMatch" in lines[0], lines
    rc, lines, _ = serve_once(moto, tmp_path, *good[0], env={**good[1], "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000"})
    assert rc == 1 and len(lines) == 1 and ("InvalidAccessKeyId" in lines[0] or "denied" in lines[0]), lines

    # The chain's timestamps are months old: a 30-day retention would let
    # either service drop the early positions (a snapshot covers them).
    keep = ["-retention", "3650d"]
    srv = CloudServer(tmp_path, "m1", args=["-s3-part-size", "5MiB", *keep], storage=good).start()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 4, name="m")
    chain.step(n_rows=30000)  # > 5 MiB of pages: a multipart upload
    push_chain(srv, tok, "app.db", chain)
    out = tmp_path / "m.db"
    srv.cli("export", "app.db", "--txid", "5", "-o", out, token=tok)
    assert out.read_bytes() == chain.states[4][4]
    srv.stop(signal.SIGKILL)
    fresh = CloudServer(tmp_path, "m2", args=keep, storage=good).start()
    assert pos_map(fresh, tok) == {"app.db": chain.pos(5)}
    fresh.cli("export", "app.db", "--txid", "2", "-o", out, token=tok)
    assert out.read_bytes() == chain.states[1][4]
    fresh.stop()


def test_push_restore_export_info_then_rebuild_from_the_bucket(s3server, tmp_path):
    """The cloud behaviours over S3 (with a key prefix, compaction running,
    a multipart snapshot), then a fresh service with an EMPTY data
    directory on the same bucket serves every cluster, token, database and
    point in time it had."""
    bucket = s3server.create_bucket()
    # The old spacing rules (a snapshot every interval, every group merged)
    # so that this short history has snapshots and compacted files in S3.
    args = ["-levels", "1s,5s", "-s3-part-size", "5MiB", "-retention", "3650d",
            "-snapshot-ratio", "every", "-min-merge", "2"]
    srv = s3cloud(tmp_path, s3server, "a", bucket, args=args, prefix="lfsc/prod").start()
    tok = srv.create_cluster("c")
    tok2 = srv.cli("token", "create", "c").stdout.strip()
    tok_other = srv.create_cluster("other")
    revoked = srv.cli("token", "create", "c").stdout.strip()
    rid = [l.split()[0] for l in srv.cli("token", "list", "c").stdout.splitlines()
           if l.split() and len(l.split()[0]) == 12][-1]
    srv.cli("token", "revoke", rid)

    chain = make_chain(tmp_path, 12)
    push_chain(srv, tok, "app.db", chain)
    big = make_chain(tmp_path, 1, name="big")
    big.step(n_rows=30000)  # > 5 MiB of pages: a multipart upload
    big.step()
    push_chain(srv, tok, "big.db", big)
    other = make_chain(tmp_path, 3, name="o")
    push_chain(srv, tok_other, "o.db", other)
    # Restore in place and as a fork (both are new transactions).
    srv.cli("restore", "app.db", "--txid", "5", token=tok)
    srv.cli("restore", "app.db", "--txid", "8", "--as", "fork.db", token=tok)
    # Compaction runs (the chain's timestamps are long past): wait for L2
    # files and snapshots (L1 groups of one upload are not copied).
    wait_until(lambda: sum("/l3/" in k for k in bucket_keys(s3server, bucket)) >= 3, timeout=20,
               msg=lambda: str(bucket_keys(s3server, bucket)))
    time.sleep(1.5)
    keys = bucket_keys(s3server, bucket)
    assert all(k.startswith("lfsc/prod/") for k in keys), keys
    assert "lfsc/prod/auth/auth.db" in keys
    assert sum(k.endswith("/meta") for k in keys) == 4, keys
    assert not (srv.data / "objects").exists() or not any((srv.data / "objects").rglob("*.ltx"))

    before = {t: pos_map(srv, t) for t in (tok, tok_other)}
    info = {db: json.loads(srv.cli("info", db, token=tok).stdout) for db in ("app.db", "big.db", "fork.db")}
    want = {}
    for txid in (1, 3, 7, 12, 13):
        out = tmp_path / f"a-{txid}.db"
        srv.cli("export", "app.db", "--txid", str(txid), "-o", out, token=tok)
        want[txid] = out.read_bytes()
    assert want[13] == chain.states[4][4] and want[7] == chain.states[6][4]

    # The machine is gone: kill -9, and a new service with an empty data dir.
    srv.stop(signal.SIGKILL)
    t0 = time.time()
    new = s3cloud(tmp_path, s3server, "b", bucket, args=args, prefix="lfsc/prod").start()
    print(f"rebuild + start: {time.time() - t0:.2f} s")
    assert "catalog rebuilt" in new.log_text() and "token store restored" in new.log_text()
    for t in (tok, tok_other):
        assert pos_map(new, t) == before[t]
    assert pos_map(new, tok2) == before[tok]
    st, _, obj = jreq(new, "GET", "/pos", token=revoked)
    assert st == 401, (st, obj)
    for db, inf in info.items():
        got = json.loads(new.cli("info", db, token=tok).stdout)
        assert got == inf, (db, got, inf)
    for txid, data in want.items():
        out = tmp_path / f"b-{txid}.db"
        new.cli("export", "app.db", "--txid", str(txid), "-o", out, token=tok)
        assert out.read_bytes() == data, txid
    out = tmp_path / "big.db"
    new.cli("export", "big.db", "--txid", "2", "-o", out, token=tok)
    assert out.read_bytes() == big.states[1][4]
    out = tmp_path / "fork.db"
    new.cli("export", "fork.db", "-o", out, token=tok)
    assert out.read_bytes() == chain.states[7][4]
    assert new.cli("cluster", "list").stdout.count("\n") == 3  # header + c + other

    # It goes on: a restore is a new transaction; uploads continue the chain.
    new.cli("restore", "app.db", "--txid", "12", token=tok)
    assert pos_map(new, tok)["app.db"] == {"txid": f"{14:016x}", "postApplyChecksum": f"{chain.states[11][1]:016x}"}
    more = make_chain(tmp_path, 2, name="after")
    push_chain(new, tok, "after.db", more)
    # Deleting a database removes its meta object first, then its objects.
    st, _, obj = jreq(new, "DELETE", "/db", token=tok, query={"db": "fork.db"})
    assert st in (200, 204), (st, obj)
    assert sum(k.endswith("/meta") for k in bucket_keys(s3server, bucket)) == 4
    new.stop()


def test_kill9_of_the_service_during_pushes_from_a_real_node(s3server, node, tmp_path):
    """A LiteFS node backs up two databases continuously while the service
    (on S3) is killed with -9 three times: no acknowledged position is
    lost, the node resumes alone, and after the last round a service on
    an empty data directory restores every acknowledged position."""
    bucket = s3server.create_bucket()
    srv = s3cloud(tmp_path, s3server, "svc", bucket).start()
    tok = srv.create_cluster("prod")
    n = node(extra_config=backup_config(srv.url, tok)).start()
    names = ["db", "walled"]
    con = n.connect("walled")
    con.execute("PRAGMA journal_mode=wal")
    con.close()
    writers = [Writer(n, pause=0.002, name=name) for name in names]
    for w in writers:
        w.start()
    acked = {name: [] for name in names}
    rnd = random.Random(7)
    for round_ in range(3):
        time.sleep(0.6 + rnd.random())
        now = {name: cloud_pos(srv, tok, name) for name in names}
        srv.stop(signal.SIGKILL)
        srv.start()
        for name in names:
            after = cloud_pos(srv, tok, name)
            assert now[name] is None or (after is not None and after[0] >= now[name][0]), \
                f"round {round_} {name}: acknowledged {now[name]}, after restart {after}"
            if now[name]:
                acked[name].append(now[name])
    for name, w in zip(names, writers):
        points = w.finish()
        last = points[-1]
        wait_until(lambda: cloud_pos(srv, tok, name) == (last[0], last[2]), timeout=15,
                   msg=lambda: f"{name}: service {cloud_pos(srv, tok, name)}, node {last}\n{n.log_text()[-3000:]}")
        acked[name].append((last[0], last[2]))
        print(f"{name}: {len(points)} transactions with 3 kills -9, all on the service")
    srv.stop(signal.SIGKILL)

    fresh = s3cloud(tmp_path, s3server, "fresh", bucket).start()
    for name in names:
        for txid, chk in acked[name]:
            out = tmp_path / f"{name}-{txid}.db"
            fresh.cli("export", name, "--txid", str(txid), "-o", out, token=tok)
            assert int(db_checksum(out), 16) == chk, (name, txid)
            assert run("sqlite3", out, "PRAGMA integrity_check").stdout.strip() == "ok"
    # The node keeps backing up to the rebuilt service.
    n.stop()
    n.extra_config = backup_config(fresh.url, tok)
    n.write_config()
    n.start()
    c2 = n.connect()
    c2.execute("INSERT INTO t(v) VALUES ('after rebuild')")
    c2.commit()
    c2.close()
    want = hexpos(n)
    wait_until(lambda: cloud_pos(fresh, tok) == want, timeout=10, msg=lambda: n.log_text()[-3000:])
    fresh.stop()


class FaultProxy(threading.Thread):
    """An HTTP proxy in front of the object server that, on demand, answers
    every request with 503 SlowDown (mode "fail"), delays each one (mode
    "slow"), or sends only the first half of any body over 1 MB and drops
    the connection (mode "cut"); "ok" forwards as is. Counts what it
    refused or cut."""

    def __init__(self, upstream_port):
        super().__init__(daemon=True)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import http.client
        proxy = self
        self.mode = "ok"
        self.refused = 0
        self.delayed = 0
        self.cut = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if proxy.mode == "fail":
                    proxy.refused += 1
                    err = b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>test</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(err)))
                    self.end_headers()
                    self.wfile.write(err)
                    return
                if proxy.mode == "slow":
                    proxy.delayed += 1
                    time.sleep(0.3)
                c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if proxy.mode == "cut" and len(data) > 1_000_000:
                    proxy.cut += 1
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(__import__("socket").SHUT_RDWR)
                elif self.command != "HEAD":
                    self.wfile.write(data)
                c.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def run(self):
        self.httpd.serve_forever()

    def stop(self):
        self.httpd.shutdown()


def test_object_server_errors_and_slowness_pause_ingest_and_lose_nothing(s3server, tmp_path):
    """The object server answers 503 SlowDown to everything for 3 s, then
    is slow for 2 s: uploads wait (retries with backoff) or fail with 5xx,
    none is acknowledged without being in the bucket, and the service
    recovers alone."""
    bucket = s3server.create_bucket()
    proxy = FaultProxy(s3server.port)
    proxy.start()
    args, env = s3server.storage(bucket)
    args[args.index("-s3-endpoint") + 1] = f"http://127.0.0.1:{proxy.port}"
    keep = ["-retention", "3650d"]  # the chain's timestamps are in January 2026
    srv = CloudServer(tmp_path, "svc", args=keep, storage=(args, env)).start()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 60)
    acked, failures = [], []

    def pusher():
        i = 0
        while i < len(chain.files):
            st, hdrs, obj = jreq(srv, "POST", "/db/tx", token=tok, body=chain.files[i], query={"db": "app.db"})
            if st == 200:
                assert hdrs.get("litefs-hwm") == f"{i + 1:016x}", hdrs
                acked.append((i + 1, time.time()))
                i += 1
            elif st == 409 and pos_map(srv, tok).get("app.db") == chain.pos(i + 1):
                i += 1  # stored, but the reply was an error: the node would do the same
            else:
                failures.append((st, obj, time.time()))
                time.sleep(0.05)
            time.sleep(0.02)

    t = threading.Thread(target=pusher)
    t.start()
    time.sleep(1.0)
    proxy.mode = "fail"
    t_fail = time.time()
    time.sleep(3.0)
    proxy.mode = "slow"
    t_slow = time.time()
    time.sleep(2.0)
    proxy.mode = "ok"
    t.join(90)
    assert not t.is_alive()
    assert proxy.refused > 0 and proxy.delayed > 0
    assert not [a for a in acked if t_fail + 0.05 < a[1] < t_slow - 0.05], "acknowledged while S3 refused all"
    assert all(st >= 500 for st, _, _ in failures), failures
    assert pos_map(srv, tok) == {"app.db": chain.pos(60)}
    # Everything acknowledged is in the bucket: a fresh service rebuilds it.
    srv.stop(signal.SIGKILL)
    fresh = s3cloud(tmp_path, s3server, "fresh", bucket, args=keep).start()
    for txid in (1, 20, 40, 60):
        out = tmp_path / f"f-{txid}.db"
        fresh.cli("export", "app.db", "--txid", str(txid), "-o", out, token=tok)
        assert out.read_bytes() == chain.states[txid - 1][4], txid
    print(f"503 for 3 s then slow for 2 s: {len(failures)} uploads refused with 5xx, "
          f"{proxy.refused} S3 requests refused, all 60 stored")
    fresh.stop()
    proxy.stop()


def test_export_streams_from_the_bucket_and_a_cut_download_fails_cleanly(s3server, tmp_path):
    """A fresh service exports a large state while its objects download
    (the merge reads behind the download). A download cut mid-body fails
    the export with an error and leaves the target file as it was (no
    retry can take back bytes already merged); once the object server
    behaves, the same export is exact and later exports use the copy."""
    bucket = s3server.create_bucket()
    keep = ["-retention", "3650d"]
    srv = s3cloud(tmp_path, s3server, "w", bucket, args=keep).start()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp_path, 1, name="big")
    chain.step(n_rows=30000)  # a snapshot of > 5 MB: streamed
    chain.step()
    push_chain(srv, tok, "big.db", chain)
    srv.stop(signal.SIGKILL)

    proxy = FaultProxy(s3server.port)
    proxy.start()
    args, env = s3server.storage(bucket)
    args[args.index("-s3-endpoint") + 1] = f"http://127.0.0.1:{proxy.port}"
    fresh = CloudServer(tmp_path, "r", args=keep, storage=(args, env)).start()
    out = tmp_path / "out.db"
    out.write_bytes(b"old contents")
    proxy.mode = "cut"
    r = fresh.cli("export", "big.db", "-o", out, token=tok, check=False)
    assert r.returncode != 0, r.stdout
    assert proxy.cut >= 1
    assert out.read_bytes() == b"old contents"
    assert "download of a stored object failed" in fresh.log_text()
    proxy.mode = "ok"
    for txid in (None, 2):
        args_ = ["--txid", str(txid)] if txid else []
        fresh.cli("export", "big.db", *args_, "-o", out, token=tok)
        assert out.read_bytes() == chain.states[-1 if txid is None else txid - 1][4], txid
    n_cut = proxy.cut
    proxy.mode = "cut"  # the latest state now comes from the service's own copy
    fresh.cli("export", "big.db", "-o", out, token=tok)
    assert out.read_bytes() == chain.states[-1][4] and proxy.cut == n_cut
    fresh.stop()
    proxy.stop()
