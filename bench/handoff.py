#!/usr/bin/env python3
"""Write pause of a handoff (litefs promote) under continuous writes.
Three etcd members and three nodes on loopback (TTL 2 s), as in
tests/integration/test_failover.py. Each round promotes another node
while one client thread writes as fast as it can to whichever node
accepts (tf.Writer: autocommit inserts, a fresh connection each, 20 ms
sleep after a round in which no node accepted).

  client pause: end of the last commit on the old primary -> end of the
                first commit on the new one (what an application sees);
  fenced_ms:    the old primary's own count, from fencing itself to
                noticing the new holder (its log line).

Usage: /usr/bin/python3 bench/handoff.py [ROUNDS]   (default 10)
"""
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import test_failover as tf  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    pauses, fenced, lost = [], [], 0
    with tempfile.TemporaryDirectory() as d:
        e = tf.Etcd(d)
        e.start()
        nodes = [tf.EtcdNode(d, n, e).start() for n in ("a", "b", "c")]
        try:
            tf.create_table(tf.primary_of(nodes))
            w = tf.Writer(nodes)
            w.start()
            for i in range(rounds):
                p = tf.primary_of(nodes)
                x = nodes[(nodes.index(p) + 1) % len(nodes)]
                tf.wait_rows(nodes)
                time.sleep(0.5)
                n_before = len(p.log_text().split("handed the lease off")) - 1
                tf.promote(x, p)
                time.sleep(0.3)
                pauses.append(tf.write_pause(list(w.commits), p.name, x.name))
                ms = re.findall(r"handed the lease off.*?fenced_ms=(\d+)", p.log_text())
                if len(ms) > n_before:
                    fenced.append(int(ms[-1]))
            w.stop()
            final = set(tf.assert_identical(nodes))
            lost = sum(1 for _, v, _, _ in w.commits if v not in final)
            print(f"{rounds} handoffs, {len(w.commits)} commits, {lost} acknowledged commits missing")
        finally:
            for n in nodes:
                n.stop()
            e.stop()
    ms = sorted(round(x * 1000, 1) for x in pauses)
    print("| measure | n | min ms | median ms | max ms |")
    print("|---|---|---|---|---|")
    print(f"| client pause | {len(ms)} | {ms[0]} | {statistics.median(ms)} | {ms[-1]} |")
    if fenced:
        print(f"| primary fenced_ms | {len(fenced)} | {min(fenced)} | {statistics.median(fenced)} | {max(fenced)} |")


if __name__ == "__main__":
    main()
