#!/usr/bin/python3
"""Several litefs-cloud instances on one bucket (BENCHMARKS.md, "Several
litefs-cloud instances"). Everything on loopback: s3rver (scripts/install-deps),
one etcd member, two `serve` processes.

1. ingest: the same chain of small LTX files (one transaction each, 4 KiB
   pages) POSTed to /db/tx back to back, in one run, the three paths taking
   turns every 25 uploads: to a single instance
   without -etcd (the baseline), to the writer of two instances (the cost
   of the writer lease and its fence), and through the standby (the cost
   of forwarding). uploads/s and acknowledgement latency p50/p99.
2. failover: R rounds of: uploads going through the standby, kill -9 of
   the writer, time until the next upload is acknowledged (the standby
   has taken the lease, rebuilt its catalog from the bucket and serves);
   the killed one comes back as the standby and the roles swap (from the
   second round on, each takeover has its own older catalog as the
   rebuild's hint, so it reads only the objects made since). Measured
   at the service (a client retrying every 20 ms), so without a node's own
   retry backoff.

Prints numbers; never fails on timing.
Usage: bench/cloud_multi.py [--uploads N] [--rounds R] [--per-round U] [--ttl 2s]
"""
import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BUILD", ROOT / "build"))
os.environ.setdefault("LITEFS_BIN", str(BUILD / "litefs"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import S3RVER, CloudServer, S3Server, wait_until  # noqa: E402
from test_cloud_api import jreq, make_chain  # noqa: E402
from test_cloud_multi import instance, is_writer, writer_seen  # noqa: E402
from test_failover import Etcd  # noqa: E402


def push_one(srv, tok, f, db="db"):
    """One upload; True once acknowledged (or already stored: 409 at its end)."""
    try:
        st, _, obj = jreq(srv, "POST", "/db/tx", token=tok, body=f, query={"db": db})
    except OSError:
        return False
    if st == 409 and isinstance(obj, dict) and "pos" in obj:
        return int(obj["pos"]["txid"], 16) >= int.from_bytes(f[24:32], "big")
    return st == 200


def push(srv, tok, files, db="db"):
    lat = []
    for f in files:
        t0 = time.perf_counter()
        assert push_one(srv, tok, f, db)
        lat.append(time.perf_counter() - t0)
    return lat


def row(label, n, took, lat, base=None):
    lat.sort()
    ratio = f"{(n / took) / base:.2f}x" if base else "1.00x"
    print(f"{label:<34} {n / took:>10.0f} {statistics.median(lat) * 1e3:>11.2f} "
          f"{lat[int(len(lat) * 0.99) - 1] * 1e3:>11.2f} {ratio:>8}")
    return n / took


def pair(tmp, s3, etcd, tag, ttl):
    bucket = s3.create_bucket()
    a = instance(tmp, s3, bucket, etcd, f"{tag}-a")
    b = instance(tmp, s3, bucket, etcd, f"{tag}-b")
    for srv in (a, b):
        srv.args = srv.multi_args = [x if x != "2s" else ttl for x in srv.multi_args] + ["-retention", "3650d"]
    a.start()
    wait_until(lambda: is_writer(a), timeout=15)
    b.start()
    wait_until(lambda: writer_seen(b) == a.url, timeout=15)
    return a, b


def ingest(tmp, s3, etcd, n, ttl, batch=25):
    files = make_chain(tmp, n + 1, name="ingest").files
    print(f"\n1. ingest: {n} uploads of one transaction each per path, one client, back to back; the paths")
    print(f"   take turns every {batch} uploads (the machine is shared: drift hits all three alike)")
    print(f"{'path':<34} {'uploads/s':>10} {'ack p50 ms':>11} {'ack p99 ms':>11} {'vs base':>8}")
    single = CloudServer(tmp, "single", args=["-retention", "3650d"], storage=s3.storage(s3.create_bucket()))
    single.start()
    tok1 = single.create_cluster("c")
    a, b = pair(tmp, s3, etcd, "in", ttl)
    tok2 = a.create_cluster("c")
    paths = [("one instance, no -etcd (baseline)", single, tok1, "db"),
             ("the writer of two (lease + fence)", a, tok2, "w"),
             ("through the standby (forwarded)", b, tok2, "s")]
    lat = {p[0]: [] for p in paths}
    took = {p[0]: 0.0 for p in paths}
    for label, srv, tok, db in paths:
        push(srv, tok, files[:1], db)
    for k in range(1, n + 1, batch):
        for label, srv, tok, db in paths:
            t0 = time.perf_counter()
            lat[label] += push(srv, tok, files[k:k + batch], db)
            took[label] += time.perf_counter() - t0
    base = None
    for label, _, _, _ in paths:
        r = row(label, n, took[label], lat[label], base)
        base = base or r
    for srv in (b, a, single):
        srv.stop()


def failover(tmp, s3, etcd, rounds, ttl, per_round):
    files = make_chain(tmp, (per_round + 20) * rounds + 2, name="fo").files
    a, b = pair(tmp, s3, etcd, "fo", ttl)
    tok = a.create_cluster("c")
    i = 0
    writer, standby = a, b
    took = []
    print(f"\n2. failover (writer-ttl {ttl}): kill -9 of the writer -> next acknowledged upload through the other")
    for r in range(rounds):
        for _ in range(per_round):
            assert push_one(standby, tok, files[i])
            i += 1
        writer.stop(signal.SIGKILL)
        t0 = time.perf_counter()
        while not push_one(standby, tok, files[i]):
            time.sleep(0.02)
        t = time.perf_counter() - t0
        i += 1
        took.append(t)
        m = [line for line in standby.log_text().splitlines() if "catalog rebuilt" in line]
        print(f"   round {r + 1}: {t:.2f} s ({m[-1].split('msg=')[1] if m else 'no rebuild line'})")
        writer.start(wait=False)
        wait_until(lambda: writer_seen(writer) == standby.url, timeout=20)
        writer, standby = standby, writer
    print(f"   median {statistics.median(took):.2f} s, max {max(took):.2f} s over {rounds} rounds")
    a.stop()
    b.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ttl", default="2s")
    ap.add_argument("--per-round", type=int, default=20, help="uploads before each kill")
    ap.add_argument("--only", default="1,2")
    a = ap.parse_args()
    if not S3RVER.exists():
        print("cloud_multi: s3rver is not installed (scripts/install-deps); skipped")
        return 0
    with tempfile.TemporaryDirectory(dir=BUILD) as d:
        tmp = Path(d)
        s3 = S3Server(tmp / "s3rver")
        etcd = Etcd(tmp, n=1)
        etcd.start()
        try:
            only = a.only.split(",")
            if "1" in only:
                ingest(tmp, s3, etcd, a.uploads, a.ttl)
            if "2" in only:
                failover(tmp, s3, etcd, a.rounds, a.ttl, a.per_round)
        finally:
            etcd.stop()
            s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
