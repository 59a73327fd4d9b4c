#!/usr/bin/env python3
"""Failover time of the etcd lease: kill -9 of the primary under
continuous writes -> first commit accepted on the new primary, measured by
the writing client (monotonic clock). Three etcd members and three nodes on
loopback, as in tests/integration/test_failover.py.

Usage: /usr/bin/python3 bench/failover.py [ROUNDS] [TTL ...]   (default: 3 2 5 10)
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import test_failover as tf  # noqa: E402


def one_ttl(ttl, rounds):
    tf.TTL = ttl
    out = []
    with tempfile.TemporaryDirectory() as d:
        e = tf.Etcd(d)
        e.start()
        nodes = [tf.EtcdNode(d, n, e).start() for n in ("a", "b", "c")]
        try:
            tf.create_table(tf.primary_of(nodes))
            for _ in range(rounds):
                p = tf.primary_of(nodes)
                tf.wait_rows(nodes)
                w = tf.Writer(nodes)
                w.start()
                time.sleep(0.5)
                t0 = time.monotonic()
                p.kill9()
                while not any(c[0] != p.name and c[2] > t0 for c in w.commits):
                    time.sleep(0.005)
                first = min(c[3] for c in w.commits if c[0] != p.name and c[2] > t0)
                w.stop()
                out.append(first - t0)
                p.start()
        finally:
            for n in nodes:
                n.stop()
            e.stop()
    return out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ttls = [int(x) for x in sys.argv[2:]] or [2, 5, 10]
    print("| TTL | rounds | min s | median s | max s | bound TTL+1 s |")
    print("|---|---|---|---|---|---|")
    for ttl in ttls:
        r = one_ttl(ttl, rounds)
        print(f"| {ttl} s | {len(r)} | {min(r):.2f} | {statistics.median(r):.2f} | {max(r):.2f} | {ttl + 1} |",
              flush=True)


if __name__ == "__main__":
    main()
