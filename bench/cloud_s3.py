#!/usr/bin/python3
"""litefs-cloud on S3 against the local backend (BENCHMARKS.md, "Backup
service on S3"). One run, both backends side by side, everything on
loopback; the S3 server is s3rver (installed by scripts/install-deps):

1. ingest: a chain of small LTX files (a SQLite table growing by 3 rows a
   transaction, 4 KiB pages) POSTed to /db/tx back to back on one
   connection: uploads/s and the latency of each acknowledgement
   (Litefs-Hwm: for S3 the object is in the bucket) p50/p99, and the S3
   requests per upload (the service logs its request count at stop).
2. rebuild: D databases with H uploads each on S3; then a service with an
   EMPTY data directory on the same bucket: the time of the catalog
   rebuild (its log line) and until it answers.
3. export from the bucket: one database of --mb MB uploaded as a snapshot;
   a fresh service (empty data dir) exports it: the first export builds
   the state from the bucket; beside a plain `curl` GET of the same object
   from the same server.

Prints numbers; never fails on timing.
Usage: bench/cloud_s3.py [--uploads N] [--dbs D] [--history H] [--mb MB]
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BUILD", ROOT / "build"))
os.environ.setdefault("LITEFS_BIN", str(BUILD / "litefs"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import S3RVER, CloudServer, S3Server  # noqa: E402
from test_cloud_api import Chain, jreq, make_chain  # noqa: E402


def push(srv, tok, db, files):
    lat = []
    for f in files:
        t0 = time.perf_counter()
        st, hdrs, obj = jreq(srv, "POST", "/db/tx", token=tok, body=f, query={"db": db})
        lat.append(time.perf_counter() - t0)
        assert st == 200, obj
    return lat


def requests_logged(srv):
    # serve has two S3 clients (the store's and the token store's copy).
    m = re.findall(r"mod=s3 msg=\"closed\" bucket=\S+ requests=(\d+)", srv.log_text())
    return sum(int(x) for x in m) if m else None


def ingest(tmp, s3, n):
    chain = make_chain(tmp, n + 1, name="ingest")
    files = chain.files
    print(f"\n1. ingest: {n} uploads of one transaction each (after the first snapshot), one connection")
    print(f"{'backend':<8} {'uploads/s':>10} {'ack p50 ms':>11} {'ack p99 ms':>11} {'S3 req/upload':>14}")
    res = {}
    for kind in ("local", "s3"):
        storage = s3.storage(s3.create_bucket()) if kind == "s3" else None
        # Retention of 10 years: the chain's timestamps are in January 2026.
        srv = CloudServer(tmp, f"ingest-{kind}", args=["-retention", "3650d"], storage=storage).start()
        tok = srv.create_cluster("c")
        push(srv, tok, "db", files[:1])
        t0 = time.perf_counter()
        lat = push(srv, tok, "db", files[1:])
        took = time.perf_counter() - t0
        srv.stop()
        req = requests_logged(srv)
        per = f"{req / (n + 1):.2f}" if req else "-"
        lat.sort()
        res[kind] = n / took
        print(f"{kind:<8} {n / took:>10.0f} {statistics.median(lat) * 1e3:>11.2f} "
              f"{lat[int(len(lat) * 0.99) - 1] * 1e3:>11.2f} {per:>14}")
    print(f"S3 / local: {res['s3'] / res['local']:.2f}x the upload rate")


def rebuild(tmp, s3, dbs, history):
    bucket = s3.create_bucket()
    srv = CloudServer(tmp, "rb-a", args=["-retention", "3650d"], storage=s3.storage(bucket)).start()
    tok = srv.create_cluster("c")
    chain = make_chain(tmp, history, name="rb")
    t0 = time.time()
    for i in range(dbs):
        push(srv, tok, f"db{i}", chain.files)
    fill = time.time() - t0
    srv.stop(signal.SIGKILL)
    t0 = time.time()
    new = CloudServer(tmp, "rb-b", args=["-retention", "3650d"], storage=s3.storage(bucket)).start()
    ready = time.time() - t0
    m = re.search(r"catalog rebuilt .* dbs=(\d+) objects=(\d+) ms=(\d+)", new.log_text())
    st, _, obj = jreq(new, "GET", "/pos", token=tok)
    assert st == 200 and len(obj) == dbs, (st, len(obj) if isinstance(obj, dict) else obj)
    new.stop()
    print(f"\n2. rebuild from the bucket: {dbs} databases x {history} uploads "
          f"(filled in {fill:.1f} s)")
    print(f"   catalog rebuilt: {m.group(1)} databases, {m.group(2)} objects in {int(m.group(3)) / 1000:.2f} s; "
          f"service answering {ready:.2f} s after start")


def export_from_bucket(tmp, s3, mb):
    bucket = s3.create_bucket()
    srv = CloudServer(tmp, "ex-a", args=["-retention", "3650d"], storage=s3.storage(bucket)).start()
    tok = srv.create_cluster("c")
    c = Chain(tmp, "big")
    c.step(n_rows=int(mb * 1e6 / 230))
    push(srv, tok, "big", c.files)
    srv.stop(signal.SIGKILL)
    obj = next(p for p in (s3.base / "data" / bucket).rglob("*.ltx._S3rver_object"))
    size = obj.stat().st_size
    key = str(obj.relative_to(s3.base / "data" / bucket))[:-len("._S3rver_object")]
    # The downloads first, then the service's exports: each reads the
    # object server's files with the same (warm) page cache; the first
    # reader of s3rver's files after the upload pays for the disk alone,
    # so one untimed GET comes first.
    subprocess.run(["curl", "-sS", "-o", "/dev/null", f"{s3.endpoint}/{bucket}/{key}"], check=True)
    t0 = time.time()
    subprocess.run(["curl", "-sS", "-o", str(tmp / "raw"), f"{s3.endpoint}/{bucket}/{key}"], check=True)
    t_curl = time.time() - t0
    # The export's file is fsync'd before the CLI returns; the same for
    # the downloaded bytes (a second baseline).
    (tmp / "raw").unlink()
    t0 = time.time()
    subprocess.run(["curl", "-sS", "-o", str(tmp / "raw"), f"{s3.endpoint}/{bucket}/{key}"], check=True)
    fd = os.open(tmp / "raw", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t_curl_sync = time.time() - t0
    new = CloudServer(tmp, "ex-b", args=["-retention", "3650d"], storage=s3.storage(bucket)).start()
    out = tmp / "export.db"
    t0 = time.time()
    new.cli("export", "big", "-o", out, token=tok)
    t_export = time.time() - t0
    assert out.read_bytes() == c.states[-1][4]
    t0 = time.time()
    new.cli("export", "big", "-o", out, token=tok)
    t_warm = time.time() - t0
    new.stop()
    print(f"\n3. export of a {size / 1e6:.0f} MB database from the bucket by a fresh service: "
          f"{t_export:.2f} s; curl GET of the same object: {t_curl:.2f} s ({t_export / t_curl:.1f}x); "
          f"curl GET + fsync: {t_curl_sync:.2f} s ({t_export / t_curl_sync:.1f}x); "
          f"a second export (current copy local): {t_warm:.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=300)
    ap.add_argument("--dbs", type=int, default=100)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--only", default="1,2,3")
    a = ap.parse_args()
    if not S3RVER.exists():
        print("cloud_s3: s3rver is not installed (scripts/install-deps); skipped")
        return 0
    with tempfile.TemporaryDirectory(dir=BUILD) as d:
        tmp = Path(d)
        s3 = S3Server(tmp / "s3rver")
        try:
            only = a.only.split(",")
            if "1" in only:
                ingest(tmp, s3, a.uploads)
            if "2" in only:
                rebuild(tmp, s3, a.dbs, a.history)
            if "3" in only:
                export_from_bucket(tmp, s3, a.mb)
        finally:
            s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
