#!/usr/bin/python3
"""Replication on loopback (BENCHMARKS.md), all measured in the same run:

1. lag: a paced writer commits single-row INSERTs on the primary at 100 and
   1000 tx/s; a poller per replica reads the replica's `<db>-pos` every
   POLL_MS and notes when each TXID first shows. Lag = that moment minus
   the moment the primary's commit returned to the writer (both
   CLOCK_MONOTONIC). p50/p99/max per rate and journal mode. A value
   below 0 means the replica showed the TXID before the writer's call
   returned: the lag is below what this method resolves (~POLL_MS).
2. the primary's insert throughput (build/bench/bench_mount, single-row
   autocommit INSERTs, every journal mode/sync case) with 0, 1 and 2
   replicas attached, interleaved over rounds, medians and ratios to 0.
3. SQLITE_BUSY seen by replica readers that have no busy timeout, while
   the primary commits at a steady rate (DELETE and WAL).

Prints numbers; never fails on timing (a node that does not start or a
replica that never catches up is an error).
Usage: bench/replication.py [ROUNDS] [SECONDS_PER_LAG_RUN]
"""
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.environ.get("LITEFS_BIN", os.path.join(BUILD, "litefs"))
BENCH = os.path.join(BUILD, "bench", "bench_mount")
POLL_MS = 0.25


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, base, name, primary_port=None):
        self.name = name
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir, exist_ok=True)
        self.mnt = os.path.join(self.dir, "mnt")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.cfg = os.path.join(self.dir, "litefs.yml")
        candidate = primary_port is None
        with open(self.cfg, "w") as f:
            f.write(f"fuse:\n  dir: {self.mnt}\n"
                    f"data:\n  dir: {self.data}\n  retention: 1m\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n"
                    f"lease:\n  type: static\n  candidate: {'true' if candidate else 'false'}\n"
                    f"  hostname: node1\n  advertise-url: http://127.0.0.1:{primary_port or self.port}\n")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "litefs.log"), "a")
        self.proc = subprocess.Popen([LITEFS, "mount", "-config", self.cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.ismount(self.mnt):
                try:
                    os.listdir(self.mnt)
                    return self
                except OSError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise SystemExit(f"{self.name} did not mount:\n{open(self.log.name).read()[-3000:]}")

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.log.close()
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)

    def pos(self, db):
        try:
            with open(os.path.join(self.mnt, f"{db}-pos")) as f:
                t, c = f.read().strip().split("/")
            return int(t, 16), c
        except (OSError, ValueError):
            return None


def wait_synced(primary, replicas, db, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        want = primary.pos(db)
        if want and all(r.pos(db) == want for r in replicas):
            return want
        time.sleep(0.005)
    raise SystemExit(f"replicas did not catch up on {db}: primary {primary.pos(db)}, "
                     f"replicas {[r.pos(db) for r in replicas]}")


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


POLLER = r"""
import sys, time
path, last, poll = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000
seen = -1
deadline = time.time() + float(sys.argv[4])
out = []
while time.time() < deadline:
    try:
        with open(path) as f:
            t = int(f.read().split("/")[0], 16)
    except (OSError, ValueError):
        t = -1
    if t > seen:
        seen = t
        out.append(f"{t} {time.monotonic_ns()}")
        if t >= last:
            break
    time.sleep(poll)
print("\n".join(out))
"""


def lag_run(primary, replicas, db, mode, rate, secs):
    """Returns (achieved tx/s, {replica: [lag ms per TXID]})."""
    con = sqlite3.connect(os.path.join(primary.mnt, db), timeout=30, isolation_level=None)
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    wait_synced(primary, replicas, db)
    start = primary.pos(db)[0]
    n = int(rate * secs)
    pollers = [subprocess.Popen([sys.executable, "-c", POLLER, os.path.join(r.mnt, f"{db}-pos"),
                                 str(start + n), str(POLL_MS), str(secs + 30)],
                                stdout=subprocess.PIPE, text=True) for r in replicas]
    time.sleep(0.2)
    commits = []
    t0 = time.monotonic()
    for k in range(n):
        target = t0 + k / rate
        d = target - time.monotonic()
        if d > 0:
            time.sleep(d)
        con.execute("INSERT INTO t(v) VALUES (randomblob(100))")
        commits.append(time.monotonic_ns())
    elapsed = time.monotonic() - t0
    con.close()
    assert primary.pos(db)[0] == start + n, "the writer's transactions are not one TXID each"
    lags = {}
    for r, p in zip(replicas, pollers):
        out, _ = p.communicate(timeout=secs + 60)
        obs = [tuple(int(x) for x in line.split()) for line in out.split("\n") if line.strip()]
        ls = []
        j = 0
        for k, tc in enumerate(commits):
            txid = start + 1 + k
            while j < len(obs) and obs[j][0] < txid:
                j += 1
            if j < len(obs):
                ls.append((obs[j][1] - tc) / 1e6)
        lags[r.name] = ls
    return n / elapsed, lags


def throughput(primary, replicas, rounds, n_ins):
    """bench_mount on the primary with 0, 1 and 2 replicas running."""
    results = {}
    for rnd in range(rounds):
        for k in range(len(replicas) + 1):
            for i, r in enumerate(replicas):
                if i < k and r.proc is None:
                    r.start()
                if i >= k and r.proc is not None:
                    r.stop()
            out = subprocess.run([BENCH, primary.mnt, str(n_ins), "1"], capture_output=True, text=True,
                                 check=True).stdout
            running = [r for r in replicas if r.proc is not None]
            for m in re.finditer(r"case=(\S+) inserts_per_s=(\d+)", out):
                results.setdefault(m.group(1), {}).setdefault(k, []).append(int(m.group(2)))
            # Replication keeps up with the burst (not timed).
            for m in re.finditer(r"case=(\S+)/(\S+) ", out):
                wait_synced(primary, running, f"bench_{m.group(1)}_{m.group(2)}.db", timeout=60)
    for r in replicas:
        if r.proc is None:
            r.start()
    return results


BUSY_READER = r"""
import json, sqlite3, sys, time
path, secs = sys.argv[1], float(sys.argv[2])
con = sqlite3.connect(path, timeout=0, isolation_level=None)
reads = busy = other = 0
msgs = {}
end = time.time() + secs
while time.time() < end:
    try:
        con.execute("SELECT count(*), max(id) FROM t").fetchone()
        reads += 1
    except sqlite3.OperationalError as e:
        msgs[str(e)] = msgs.get(str(e), 0) + 1
        if "locked" in str(e) or "busy" in str(e):
            busy += 1
        else:
            other += 1
print(json.dumps({"reads": reads, "busy": busy, "other": other, "msgs": msgs}))
"""


def busy_run(primary, replicas, mode, rate, secs):
    db = f"busy_{mode}.db"
    con = sqlite3.connect(os.path.join(primary.mnt, db), timeout=30, isolation_level=None)
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
                "INSERT INTO t(v) SELECT randomblob(200) FROM n")
    wait_synced(primary, replicas, db)
    start = primary.pos(db)[0]
    readers = [subprocess.Popen([sys.executable, "-c", BUSY_READER, os.path.join(r.mnt, db), str(secs)],
                                stdout=subprocess.PIPE, text=True) for r in replicas]
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < secs:
        d = t0 + k / rate - time.monotonic()
        if d > 0:
            time.sleep(d)
        con.execute("INSERT INTO t(v) VALUES (randomblob(200))")
        k += 1
    con.close()
    res = [json.loads(p.communicate(timeout=secs + 60)[0]) for p in readers]
    wait_synced(primary, replicas, db)
    applied = primary.pos(db)[0] - start
    return applied, res


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    base = tempfile.mkdtemp(prefix="bench-repl-", dir=BUILD)
    primary = Node(base, "node1")
    replicas = [Node(base, f"node{i}", primary.port) for i in (2, 3)]
    try:
        primary.start()
        for r in replicas:
            r.start()
        print(f"replication lag on loopback: commit on the primary -> TXID in the replica's -pos "
              f"(polled every {POLL_MS} ms; 2 replicas attached)")
        print(f"{'mode':<8}{'target tx/s':>12}{'achieved':>10}{'samples':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for mode, rate in (("wal", 100), ("wal", 1000), ("delete", 100), ("delete", 1000)):
            achieved, lags = lag_run(primary, replicas, f"lag_{mode}.db", mode, rate, secs)
            ls = [x for v in lags.values() for x in v]
            print(f"{mode:<8}{rate:>12}{achieved:>10.0f}{len(ls):>9}{pct(ls, 50):>9.2f}{pct(ls, 99):>9.2f}"
                  f"{max(ls) if ls else float('nan'):>9.2f}")

        print(f"\nprimary insert throughput (bench_mount, 2000 single-row INSERTs), replicas attached; "
              f"{rounds} rounds interleaved, medians")
        res = throughput(primary, replicas, rounds, 2000)
        print(f"{'case':<14}{'0 repl':>9}{'1 repl':>9}{'ratio':>7}{'2 repl':>9}{'ratio':>7}")
        for case, by_k in res.items():
            med = {k: sorted(v)[len(v) // 2] for k, v in by_k.items()}
            print(f"{case:<14}{med[0]:>9}{med[1]:>9}{med[1] / med[0]:>7.2f}{med[2]:>9}{med[2] / med[0]:>7.2f}")

        print("\nSQLITE_BUSY seen by replica readers without a busy timeout (2 readers, one per replica), "
              "primary committing at 200 tx/s")
        print(f"{'mode':<8}{'applied tx':>11}{'reads':>9}{'busy':>7}{'busy/read':>11}{'busy/apply':>11}{'other err':>10}")
        for mode in ("delete", "wal"):
            applied, res = busy_run(primary, replicas, mode, 200, secs)
            reads = sum(r["reads"] for r in res)
            busy = sum(r["busy"] for r in res)
            other = sum(r["other"] for r in res)
            msgs = {}
            for r in res:
                for m, k in r["msgs"].items():
                    msgs[m] = msgs.get(m, 0) + k
            print(f"{mode:<8}{applied:>11}{reads:>9}{busy:>7}{busy / max(reads, 1):>11.4f}"
                  f"{busy / max(applied * len(replicas), 1):>11.4f}{other:>10}  {msgs}")
    finally:
        for n in [*replicas, primary]:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
