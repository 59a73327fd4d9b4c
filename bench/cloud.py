#!/usr/bin/python3
"""The backup service, litefs-cloud, on loopback (BENCHMARKS.md, "Backup
service"). Everything is measured in one run, on the disk of $BUILD, with
its baseline beside it:

1. ingest: chains of LTX files made by a real `litefs mount` (a SQLite
   workload, then `litefs ltx split`) are POSTed to /db/tx back to back on
   one keep-alive connection (and on 4 connections to 4 databases at
   once): txns/s and MB/s of LTX bytes, against writing the same bytes to
   files with one fsync each (and against the 3 fsyncs + rename the
   service itself needs per upload) on the same disk.
2. RPO: a primary with the backup client commits single-row INSERTs at a
   steady rate; a poller asks the service GET /pos every POLL_MS on one
   keep-alive connection. RPO = the moment /pos first shows the TXID (the
   service answers /pos only from what it acknowledged: the HWM) minus the
   moment the commit returned to the writer. p50/p99/max.
3. restore reach: with nobody writing, `litefs-cloud restore DB --txid N`;
   time from the CLI's return until the primary's and the replica's
   `<mnt>/DB-pos` show the restored position.
4. restore of a 100 MB (and with --big, 1 GB) database to a point deep in
   history: import on a node (pushed to the service), then many update
   transactions, then `export --txid <early>`, `restore --txid <early>` and
   `restore --txid <early> --as NEW` (a fork), beside `cp` of a file of the
   same size (with and without fsync) in the same run; then the restore
   reaching the node (by the service's changes, or its snapshot), each
   round beside one cp + fsync, with the node's and the service's CPU;
   with --base OLD_BUILD, the node of that build (restarted on the same
   data directory) alternates with this build's in every round.
5. storage for a simulated month: a real workload's LTX files re-stamped
   (header timestamp; file checksum recomputed) to spread over 31 days
   ending now, uploaded to a service with the default levels, snapshot
   interval and retention (30 d); once compaction and retention settle,
   stored bytes against the raw LTX bytes.
6. ingest of large transactions on one stream: a chain made by
   bench/ltx_chain (a snapshot, then transactions each rewriting
   --large-pages random 4 KiB pages, LZ4 about 2:1) POSTed back to back;
   MB/s of LTX bytes against writing the same bytes to files with one
   fsync each on the same disk; plus 1-page transactions/s on one stream
   and on --clusters clusters at once.

Prints numbers; never fails on timing (a process that does not start or a
restore that never arrives is an error).
Usage: bench/cloud.py [--rounds N] [--secs S] [--month-txns N] [--big]
                      [--only 1,...,6] [--keep] [--base OLD_BUILD]
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
LITEFS = os.path.join(BUILD, "litefs")
CLOUD = os.path.join(BUILD, "litefs-cloud")
# --base OLD_BUILD: case 4 alternates the node of that build with this one.
BASE_BUILD = None
POLL_MS = 1.0
MB = 1e6


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def wait_until(fn, timeout, what, interval=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise SystemExit(f"timed out ({timeout}s) waiting for {what}")


def dir_bytes(path):
    n = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            try:
                n += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return n


# ---------------------------------------------------------------- processes

class Cloud:
    def __init__(self, base, name, *args):
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.proc = None
        self.token = None

    def start(self):
        self.token = subprocess.run([CLOUD, "cluster", "create", "bench", "-data-dir", self.data],
                                    capture_output=True, text=True, check=True).stdout.strip()
        self.log = open(os.path.join(self.dir, "cloud.log"), "a")
        self.proc = subprocess.Popen([CLOUD, "serve", "-addr", f"127.0.0.1:{self.port}", "-data-dir", self.data,
                                      *self.args], stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                return c.getresponse().status == 200
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"litefs-cloud exited:\n{open(self.log.name).read()[-3000:]}")
                return False
        wait_until(up, 20, "litefs-cloud to listen", 0.02)
        return self

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

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def get(self, path, conn=None):
        c = conn or self.conn()
        c.request("GET", path, headers={"Authorization": self.token})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
        return json.loads(body)

    def restorable(self, db, hist, k):
        """The first of hist[k:] (positions (txid, checksum) of the node)
        that the service can rebuild: LiteFS uploads about a second of
        commits as one file, and only the end of an upload is a position."""
        for tx in hist[k:]:
            c = self.conn()
            c.request("GET", f"/db/restore/check?db={db}&txid={tx[0]:016x}", headers={"Authorization": self.token})
            r = c.getresponse()
            body = r.read()
            if r.status == 200 and int(json.loads(body)["txID"], 16) == tx[0]:
                return tx
        raise SystemExit(f"no restorable position in {hist[k:][:3]}...")

    def pos(self, db, conn=None):
        p = self.get("/pos", conn).get(db)
        return (int(p["txid"], 16), p["postApplyChecksum"]) if p else None

    def cli(self, *args):
        t0 = time.monotonic()
        r = subprocess.run([CLOUD, *args, "-url", self.url, "-token", self.token], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"litefs-cloud {' '.join(args)}: {r.stdout}{r.stderr}")
        return time.monotonic() - t0, r.stdout


class Node:
    def __init__(self, base, name, primary_port=None, cloud=None, retention="1h"):
        self.name = name
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir, exist_ok=True)
        self.mnt = os.path.join(self.dir, "mnt")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg = os.path.join(self.dir, "litefs.yml")
        candidate = primary_port is None
        with open(self.cfg, "w") as f:
            f.write(f"fuse:\n  dir: {self.mnt}\n"
                    f"data:\n  dir: {self.data}\n  retention: {retention}\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n"
                    f"lease:\n  type: static\n  candidate: {'true' if candidate else 'false'}\n"
                    f"  hostname: node1\n  advertise-url: http://127.0.0.1:{primary_port or self.port}\n")
            if cloud is not None:
                f.write(f"backup:\n  type: litefs-cloud\n  url: {cloud.url}\n  auth-token: {cloud.token}\n")
        self.proc = None
        self.bin = LITEFS

    def start(self):
        self.log = open(os.path.join(self.dir, "litefs.log"), "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LITEFS_CLOUD_")}
        self.proc = subprocess.Popen([self.bin, "mount", "-config", self.cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

        def mounted():
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{open(self.log.name).read()[-3000:]}")
            if os.path.ismount(self.mnt):
                try:
                    os.listdir(self.mnt)
                    return True
                except OSError:
                    pass
            return False
        wait_until(mounted, 30, f"{self.name} to mount", 0.02)
        return self

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

    def log_count(self, text):
        with open(os.path.join(self.dir, "litefs.log")) as f:
            return f.read().count(text)

    def restart(self, binary, db):
        """Stops the node and starts binary on the same data directory;
        returns once db was verified (the start's background pass over the
        whole file, which must not overlap a measurement)."""
        if self.bin == binary and self.proc is not None:
            return
        self.stop()
        mark = f'msg="verified" db={db} '
        n = self.log_count(mark)
        self.bin = binary
        self.start()
        wait_until(lambda: self.log_count(mark) > n, 300, f"{db} to be verified", 0.05)

    def pos(self, db):
        try:
            with open(os.path.join(self.mnt, f"{db}-pos")) as f:
                t, c = f.read().strip().split("/")
            return int(t, 16), c
        except (OSError, ValueError):
            return None

    def connect(self, db, mode="wal", sync="normal"):
        con = sqlite3.connect(os.path.join(self.mnt, db), timeout=30, isolation_level=None)
        con.execute(f"PRAGMA journal_mode={mode}")
        con.execute(f"PRAGMA synchronous={sync}")
        return con

    def split(self, db, out):
        os.makedirs(out, exist_ok=True)
        d = os.path.join(self.data, "dbs", db, "ltx")
        segs = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ltxlog"))
        subprocess.run([LITEFS, "ltx", "split", "-o", out, *segs], check=True, capture_output=True)
        files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".ltx"))
        if not files or not os.path.basename(files[0]).startswith("0000000000000001-"):
            raise SystemExit(f"{db}: the split chain does not start at TXID 1 (retention?)")
        return files


# ------------------------------------------------------------------ helpers

def post_tx(conn, token, db, body):
    conn.request("POST", f"/db/tx?db={db}", body=body,
                 headers={"Authorization": token, "Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"POST /db/tx?db={db}: {r.status} {data[:300]!r}")
    return r.getheader("Litefs-Hwm")


def upload_chain(cloud, db, bodies):
    conn = cloud.conn()
    for b in bodies:
        post_tx(conn, cloud.token, db, b)
    conn.close()


def fsync_files(dirpath, bodies, durable_put=False):
    """The baseline: each body written to its own file and fsync'd. With
    durable_put, also what an atomic durable put plus a catalog commit
    costs at the least: temp file + fsync, rename, fsync of the directory,
    and an append + fdatasync to a log (3 syncs, as the service does)."""
    os.makedirs(dirpath, exist_ok=True)
    dfd = os.open(dirpath, os.O_RDONLY)
    logfd = os.open(os.path.join(dirpath, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for i, b in enumerate(bodies):
        name = os.path.join(dirpath, f"{i:08d}.ltx")
        tmp = name + ".tmp" if durable_put else name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b)
        os.fsync(fd)
        os.close(fd)
        if durable_put:
            os.rename(tmp, name)
            os.fsync(dfd)
            os.write(logfd, b"x" * 200)
            os.fdatasync(logfd)
    os.close(dfd)
    os.close(logfd)


def parallel(fns):
    errs = []

    def wrap(f):
        try:
            f()
        except BaseException as e:  # noqa: B902 — report, then fail the run
            errs.append(e)
    ts = [threading.Thread(target=wrap, args=(f,)) for f in fns]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return time.monotonic() - t0


RETIME_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <unistd.h>
#include "ltx/ltx.h"
#include "base/fdio.h"
/* stdin: lines "IN OUT TIMESTAMP_MS"; each LTX file is decoded and encoded
 * again, LZ4-compressed, with the new header timestamp (and so a new file
 * checksum). Everything else (TXIDs, pages, checksums) is unchanged. */
static uint8_t page[65536];
int main(void)
{
	char in[4096], out[4096];
	long long ts;
	while (scanf("%4095s %4095s %lld", in, out, &ts) == 3) {
		int ifd = open(in, O_RDONLY), ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		struct ltx_decoder *d = NULL;
		struct ltx_encoder *e = NULL;
		struct ltx_header h;
		struct ltx_trailer t;
		uint32_t pgno;
		int rc;
		if (ifd < 0 || ofd < 0 || ltx_decoder_new(&d, fdio_read, &ifd) != 0 || ltx_decoder_header(d, &h) != 0)
			goto fail;
		h.timestamp_ms = ts;
		h.flags = LTX_FLAG_COMPRESS;
		if (ltx_encoder_new(&e, &h, fdio_write, &ofd) != 0)
			goto fail;
		while ((rc = ltx_decoder_next_page(d, &pgno, page)) == 1)
			if (ltx_encoder_write_page(e, pgno, page) != 0)
				goto fail;
		if (rc != 0 || ltx_decoder_finish(d, &t) != 0 || ltx_encoder_finish(e, t.post_apply_checksum, NULL) != 0)
			goto fail;
		ltx_decoder_free(d);
		ltx_encoder_free(e);
		close(ifd);
		close(ofd);
		continue;
	fail:
		fprintf(stderr, "retime: %s failed\n", in);
		return 1;
	}
	return 0;
}
"""


def build_retime(base):
    src = os.path.join(base, "retime.c")
    exe = os.path.join(base, "retime")
    with open(src, "w") as f:
        f.write(RETIME_C)
    subprocess.run(["cc", "-O2", "-iquote", os.path.join(ROOT, "src"), "-o", exe, src,
                    os.path.join(BUILD, "liblitefs.a"), "-llz4", "-lpthread", "-lm"], check=True)
    return exe


# ----------------------------------------------------------------- workload

def make_workloads(base, month_txns):
    """One node, no backup: real SQLite transactions, split into LTX files
    exactly as the node recorded them (LZ4, as LiteFS sends them)."""
    n = Node(base, "gen").start()
    try:
        con = n.connect("small.db")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for _ in range(3000):
            con.execute("INSERT INTO t(v) VALUES (randomblob(200))")
        con.close()
        con = n.connect("big.db")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for _ in range(300):
            # ~256 KiB per transaction: half random, half compressible text
            con.execute("BEGIN")
            for _ in range(32):
                con.execute("INSERT INTO t(v) VALUES (randomblob(4000))")
                con.execute("INSERT INTO t(v) VALUES (zeroblob(0) || printf('%.4000c', 'x') || hex(randomblob(8)))")
            con.execute("COMMIT")
        con.close()
        # The month: a 5 MB table with an index, then small writes: 80 %
        # single-row INSERTs, 20 % UPDATEs of a random row.
        con = n.connect("month.db")
        con.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, user INTEGER, kind TEXT, body TEXT)")
        con.execute("CREATE INDEX events_user ON events(user)")
        con.execute("WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 20000) "
                    "INSERT INTO events(user, kind, body) SELECT abs(random()) % 1000, 'seed', "
                    "hex(randomblob(100)) FROM k")
        rng = random.Random(5)
        for i in range(month_txns):
            if rng.random() < 0.8:
                con.execute("INSERT INTO events(user, kind, body) VALUES (?, 'click', hex(randomblob(?)))",
                            (rng.randrange(1000), rng.randrange(40, 160)))
            else:
                con.execute("UPDATE events SET body = hex(randomblob(100)), kind = 'edit' WHERE id = ?",
                            (rng.randrange(1, 20000 + i + 1),))
        con.close()
        out = {db: n.split(db, os.path.join(base, "ltx", db)) for db in ("small.db", "big.db", "month.db")}
    finally:
        n.stop()
    shutil.rmtree(n.data, ignore_errors=True)
    return out


# ------------------------------------------------------------------ 1 ingest

def bench_ingest(base, files, rounds):
    cloud = Cloud(base, "cloud-ingest").start()
    disk = os.path.join(base, "fsync")
    chains = {k: [open(f, "rb").read() for f in files[k]] for k in ("small.db", "big.db")}
    res = {}

    def note(case, secs, n, nbytes):
        res.setdefault(case, []).append((n / secs, nbytes / MB / secs))

    try:
        for r in range(rounds):
            for k, bodies in chains.items():
                nb = sum(map(len, bodies))
                t0 = time.monotonic()
                fsync_files(os.path.join(disk, f"{k}-{r}"), bodies)
                note((k, "1", "fsync"), time.monotonic() - t0, len(bodies), nb)
                t0 = time.monotonic()
                fsync_files(os.path.join(disk, f"{k}-{r}-put"), bodies, durable_put=True)
                note((k, "1", "put"), time.monotonic() - t0, len(bodies), nb)
                t0 = time.monotonic()
                upload_chain(cloud, f"{k}-{r}", bodies)
                note((k, "1", "cloud"), time.monotonic() - t0, len(bodies), nb)
            bodies = chains["small.db"]
            nb = sum(map(len, bodies))
            secs = parallel([lambda i=i: fsync_files(os.path.join(disk, f"par-{r}-{i}"), bodies) for i in range(4)])
            note(("small.db", "4", "fsync"), secs, 4 * len(bodies), 4 * nb)
            secs = parallel([lambda i=i: fsync_files(os.path.join(disk, f"par-{r}-{i}-put"), bodies, True)
                             for i in range(4)])
            note(("small.db", "4", "put"), secs, 4 * len(bodies), 4 * nb)
            secs = parallel([lambda i=i: upload_chain(cloud, f"par{i}-{r}", bodies) for i in range(4)])
            note(("small.db", "4", "cloud"), secs, 4 * len(bodies), 4 * nb)
            shutil.rmtree(disk, ignore_errors=True)
    finally:
        cloud.stop()
        shutil.rmtree(cloud.dir, ignore_errors=True)
    print(f"\n== 1. ingest: POST /db/tx back to back (keep-alive), {rounds} rounds, medians; "
          f"baselines on the same disk")
    for k, bodies in chains.items():
        nb = sum(map(len, bodies))
        print(f"   {k}: {len(bodies)} LTX files from the node, {nb / MB:.1f} MB, "
              f"{nb / len(bodies) / 1000:.1f} kB per transaction")
    print(f"{'chain':<10}{'streams':>8}{'case':>7}{'tx/s':>10}{'MB/s':>9}{'vs fsync':>10}{'vs put':>8}")
    for (k, s, case) in res:
        if case != "fsync":
            continue
        rows = {c: (med([x[0] for x in res[(k, s, c)]]), med([x[1] for x in res[(k, s, c)]]))
                for c in ("fsync", "put", "cloud")}
        for c, (tps, mbs) in rows.items():
            print(f"{k:<10}{s:>8}{c:>7}{tps:>10.0f}{mbs:>9.2f}{tps / rows['fsync'][0]:>10.2f}"
                  f"{tps / rows['put'][0]:>8.2f}")


# --------------------------------------------------------- 2 RPO, 3 restore

POS_POLLER = r"""
import http.client, json, sys, time
port, token, db, last, poll, secs = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]) / 1000, float(sys.argv[6])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
seen, out = -1, []
deadline = time.time() + secs
while time.time() < deadline:
    c.request("GET", "/pos", headers={"Authorization": token})
    r = c.getresponse()
    p = json.loads(r.read()).get(db)
    t = int(p["txid"], 16) if p else -1
    if t > seen:
        seen = t
        out.append(f"{t} {time.monotonic_ns()}")
        if t >= last:
            break
    time.sleep(poll)
print("\n".join(out))
"""


def rpo_run(cloud, primary, db, rate, secs):
    con = primary.connect(db, "wal", "full")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    wait_until(lambda: cloud.pos(db) == primary.pos(db), 10, "the service to catch up")
    start = primary.pos(db)[0]
    n = int(rate * secs)
    poller = subprocess.Popen([sys.executable, "-c", POS_POLLER, str(cloud.port), cloud.token, db,
                               str(start + n), str(POLL_MS), str(secs + 30)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    commits = []
    t0 = time.monotonic()
    for k in range(n):
        d = t0 + k / rate - time.monotonic()
        if d > 0:
            time.sleep(d)
        con.execute("INSERT INTO t(v) VALUES (randomblob(100))")
        commits.append(time.monotonic_ns())
    elapsed = time.monotonic() - t0
    con.close()
    out, _ = poller.communicate(timeout=secs + 60)
    obs = [tuple(int(x) for x in line.split()) for line in out.split("\n") if line.strip()]
    lags, j = [], 0
    for k, tc in enumerate(commits):
        while j < len(obs) and obs[j][0] < start + 1 + k:
            j += 1
        if j < len(obs):
            lags.append((obs[j][1] - tc) / 1e6)
    return n / elapsed, lags, len(obs)


def bench_rpo_and_restore(base, secs, rounds):
    cloud = Cloud(base, "cloud-rpo").start()
    primary = Node(base, "p", cloud=cloud)
    replica = Node(base, "r", primary_port=primary.port, cloud=cloud)
    try:
        primary.start()
        replica.start()
        print(f"\n== 2. RPO: commit on the primary (WAL, synchronous=FULL) -> TXID acknowledged by the "
              f"service (GET /pos every {POLL_MS} ms, keep-alive); a replica attached")
        print(f"{'target tx/s':>12}{'achieved':>10}{'samples':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'/pos changes':>13}")
        for rate in (10, 100, 500):
            achieved, lags, changes = rpo_run(cloud, primary, f"rpo{rate}.db", rate, secs)
            print(f"{rate:>12}{achieved:>10.0f}{len(lags):>9}{pct(lags, 50):>9.2f}{pct(lags, 99):>9.2f}"
                  f"{max(lags) if lags else float('nan'):>9.2f}{changes:>13}")

        db = "restore.db"
        con = primary.connect(db, "wal", "full")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        hist = []
        for _ in range(60):
            con.execute("INSERT INTO t(v) VALUES (randomblob(300))")
            hist.append(primary.pos(db))
            time.sleep(0.01)
        con.close()
        wait_until(lambda: cloud.pos(db) == primary.pos(db) == replica.pos(db), 20, "service and replica")
        rng = random.Random(3)
        rows = []
        for i in range(max(5, 3 * rounds)):
            time.sleep(rng.uniform(0.2, 1.2))  # random phase against the nodes' 1 s comparison
            target = hist[rng.randrange(5, len(hist) - 5)][0]
            cli, _ = cloud.cli("restore", db, "--txid", f"{target:016x}")
            t1 = time.monotonic()
            want = cloud.pos(db)
            got = {}
            while len(got) < 2 and time.monotonic() - t1 < 30:
                for n in (primary, replica):
                    if n.name not in got and n.pos(db) == want:
                        got[n.name] = time.monotonic() - t1
                time.sleep(0.002)
            if len(got) < 2:
                raise SystemExit(f"restore to {target} did not reach both nodes: {got}, want {want}")
            rows.append((cli, got["p"], got["r"]))
        print(f"\n== 3. restore made on the service -> both nodes' -pos (nobody writing), {len(rows)} restores")
        print(f"{'':<30}{'p50 s':>8}{'max s':>8}")
        for label, k in (("CLI restore (request)", 0), ("-> primary, after the CLI", 1),
                         ("-> replica, after the CLI", 2)):
            xs = [r[k] for r in rows]
            print(f"{label:<30}{med(xs):>8.3f}{max(xs):>8.3f}")
        print("   each:", ", ".join(f"{r[1]:.2f}/{r[2]:.2f}" for r in rows), "(primary/replica s)")
    finally:
        replica.stop()
        primary.stop()
        cloud.stop()
        shutil.rmtree(os.path.join(base, "p"), ignore_errors=True)
        shutil.rmtree(os.path.join(base, "r"), ignore_errors=True)
        shutil.rmtree(cloud.dir, ignore_errors=True)


# --------------------------------------------------------- 4 big restores

def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def cp_times(src, dst, rounds):
    plain, synced = [], []
    subprocess.run(["cp", src, dst], check=True)  # warm-up: src in the page cache, as the service's objects are
    for _ in range(max(3, rounds)):
        for lst, sync in ((plain, False), (synced, True)):
            if os.path.exists(dst):
                os.unlink(dst)
            t0 = time.monotonic()
            subprocess.run(["cp", src, dst], check=True)
            if sync:
                fd = os.open(dst, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            lst.append(time.monotonic() - t0)
    os.unlink(dst)
    return med(plain), med(synced)


def checksum(path):
    r = subprocess.run([LITEFS, "ltx", "checksum", path], capture_output=True, text=True, check=True)
    return r.stdout.strip().split()[-1]


def teardown(node, cloud, *files):
    """Stops node and cloud and removes their directories and files."""
    node.stop()
    cloud.stop()
    shutil.rmtree(node.dir, ignore_errors=True)
    shutil.rmtree(cloud.dir, ignore_errors=True)
    for f in files:
        if os.path.exists(f):
            os.unlink(f)


def big_history(cloud, node, db, src, size_mb, n_updates, res):
    """A SQLite file of size_mb MB imported on node (pushed to cloud), then
    n_updates transactions of 8 random rows at 100 tx/s; compaction given
    4 s. Times go into res (make, import, push). Returns the target (the
    first restorable position from the tenth of the updates on) and the
    node's positions after each update."""
    rows = int(size_mb * 1000)
    t0 = time.monotonic()
    s = sqlite3.connect(src)
    s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    s.execute(f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {rows}) "
              "INSERT INTO t(v) SELECT randomblob(500) || zeroblob(500) FROM k")
    s.commit()
    s.close()
    res["make"] = time.monotonic() - t0
    res["import"] = timed(lambda: subprocess.run([LITEFS, "import", "-url", node.url, "-name", db, src],
                                                 check=True, capture_output=True))
    t0 = time.monotonic()
    wait_until(lambda: cloud.pos(db) == node.pos(db), 900, "the import to reach the service", 0.05)
    res["push"] = time.monotonic() - t0
    # Many later transactions: each updates 8 random rows.
    con = node.connect(db, "wal", "normal")
    rng = random.Random(7)
    hist = []
    t0 = time.monotonic()
    for k in range(n_updates):
        d = t0 + k / 100.0 - time.monotonic()
        if d > 0:
            time.sleep(d)
        ids = ",".join(str(rng.randrange(1, rows + 1)) for _ in range(8))
        con.execute(f"UPDATE t SET v = randomblob(500) || zeroblob(500) WHERE id IN ({ids})")
        hist.append(node.pos(db))
    con.close()
    wait_until(lambda: cloud.pos(db) == node.pos(db), 300, "the updates to reach the service", 0.05)
    time.sleep(4)  # compaction (1 s / 10 s levels) catches up
    return cloud.restorable(db, hist, n_updates // 10), hist


def bench_big_restore(base, size_mb, n_updates, rounds):
    cloud = Cloud(base, f"cloud-big{size_mb}", "-levels", "1s,10s,1m", "-snapshot-interval", "10m",
                  "-max-upload-size", "8GiB").start()
    node = Node(base, f"big{size_mb}", cloud=cloud)
    db = f"big{size_mb}.db"
    src = os.path.join(base, f"src{size_mb}.db")
    res = {}
    try:
        node.start()
        target, hist = big_history(cloud, node, db, src, size_mb, n_updates, res)
        size = os.path.getsize(src)
        info = cloud.get(f"/db/info?db={db}")
        res["levels"] = [(lv["level"], lv["files"], lv["bytes"]) for lv in info["levels"]]
        res["snapshots"] = len(info.get("snapshots", []))
        out = os.path.join(base, f"out{size_mb}.db")
        res["cp"], res["cp_sync"] = cp_times(src, os.path.join(base, "cp.db"), rounds)
        exp, exp_latest = [], []
        for _ in range(rounds):
            exp.append(cloud.cli("export", db, "--txid", f"{target[0]:016x}", "-o", out)[0])
            if checksum(out) != target[1]:
                raise SystemExit(f"export of {target[0]}: checksum {checksum(out)} != {target[1]}")
            exp_latest.append(cloud.cli("export", db, "-o", out)[0])
        os.unlink(out)
        res["export"], res["export_latest"] = med(exp), med(exp_latest)
        # restore, then undo it (restore to the position before it): both
        # are full restores of a state deep in history / the latest state.
        # With --base, each round runs the node of the old build, then the
        # new one (restarted on the same data directory; one service, the
        # new build: its snapshot path is the old one), then cp + fsync.
        rest, reach, cps = [], [], []
        builds = [("new", LITEFS)] + ([("old", os.path.join(BASE_BUILD, "litefs"))] if BASE_BUILD else [])
        ab = {label: [] for label, _ in builds}
        for i in range(rounds):
            for label, binary in reversed(builds):
                node.restart(binary, db)
                before = cloud.pos(db)
                for tx in (target[0], before[0]):
                    n0 = proc_cpu(node.proc.pid)
                    secs, _ = cloud.cli("restore", db, "--txid", f"{tx:016x}")
                    t1 = time.monotonic()
                    c0 = proc_cpu(cloud.proc.pid)
                    want = cloud.pos(db)
                    wait_until(lambda: node.pos(db) == want, 300, "the restore to reach the node", 0.01)
                    took = time.monotonic() - t1
                    if tx == target[0]:
                        ab[label].append((took, proc_cpu(node.proc.pid) - n0, proc_cpu(cloud.proc.pid) - c0))
                        if label == "new":
                            rest.append(secs)
                            reach.append(took)
            cps.append(cp_times(src, os.path.join(base, "cp.db"), 1)[1])
        res["restore"], res["reach"] = med(rest), med(reach)
        res["ab"] = {k: tuple(med([r[j] for r in v]) for j in range(3)) for k, v in ab.items()}
        res["ab_cp"] = med(cps)
        res["ab_raw"] = ab
        res["load"] = os.getloadavg()
        node.restart(LITEFS, db)
        # Where "-> node" goes: the node's fetch of the service's snapshot
        # and the whole restore (fetch + apply), from its log.
        with open(os.path.join(node.dir, "litefs.log")) as f:
            spans = [("changes " if "by its changes" in ln else "snapshot ") + ln.split("bytes=")[1].strip()
                     for ln in f if "restored from the backup service" in ln]
        print(f"   {size_mb} MB: node restores (how, bytes, total ms, fetch ms): {spans}")
        # fork: the target state written into a new database (its current
        # copy and its first object, a snapshot, in one pass: cloud_fork.h).
        res["fork"] = med([cloud.cli("restore", db, "--txid", f"{target[0]:016x}", "--as", f"fork{i}.db")[0]
                           for i in range(rounds)])
        res["size"] = size
        res["target"] = (target[0], hist[-1][0] - target[0], hist[-1][0])
    finally:
        teardown(node, cloud, src)
    return res


def print_big(results, n_updates, rounds):
    print(f"\n== 4. restore of a large database to a point deep in history (levels 1s,10s,1m; "
          f"{n_updates} update transactions of 8 random rows after the import; target = after the "
          f"{n_updates // 10}th); medians of {rounds}")
    for mb, r in results.items():
        tx, later, last = r["target"]
        print(f"   {r['size'] / MB:.0f} MB database: make {r['make']:.1f} s, litefs import {r['import']:.1f} s, "
              f"then pushed in {r['push']:.1f} s; target TXID {tx} with {later} later transactions "
              f"(last {last}); stored levels (level, files, bytes): {r['levels']}, snapshots {r['snapshots']}")
    print("   each operation beside cp + fsync of the same bytes, measured in the same run (ratio = x cp+fsync)")
    print(f"{'size':>8}{'cp s':>8}{'cp+fsync':>10}{'export s':>10}{'ratio':>7}{'latest s':>10}{'ratio':>7}"
          f"{'restore s':>10}{'ratio':>7}{'fork s':>8}{'ratio':>7}{'-> node s':>10}")
    for mb, r in results.items():
        cs = r['cp_sync']
        print(f"{r['size'] / MB:>6.0f}MB{r['cp']:>8.2f}{cs:>10.2f}{r['export']:>10.2f}{r['export'] / cs:>7.1f}"
              f"{r['export_latest']:>10.2f}{r['export_latest'] / cs:>7.1f}{r['restore']:>10.2f}"
              f"{r['restore'] / cs:>7.1f}{r['fork']:>8.2f}{r['fork'] / cs:>7.1f}{r['reach']:>10.2f}")
    print("   a restore reaching the node (restore CLI returned -> the node at the restored position), beside "
          "cp + fsync of the database, alternated in the same rounds; node CPU from before the restore, "
          "service CPU from its reply on")
    print(f"{'size':>8}{'build':>7}{'-> node s':>11}{'x cp+fsync':>12}{'cp+fsync s':>12}{'node CPU s':>12}"
          f"{'service CPU s':>15}  load avg (1/5/15 min)")
    for mb, r in results.items():
        for label, (took, ncpu, ccpu) in sorted(r["ab"].items(), reverse=True):
            print(f"{r['size'] / MB:>6.0f}MB{label:>7}{took:>11.2f}{took / r['ab_cp']:>12.1f}{r['ab_cp']:>12.2f}"
                  f"{ncpu:>12.2f}{ccpu:>15.2f}  {' '.join(f'{x:.1f}' for x in r['load'])}")
            print(f"{'':>15}rounds (s): {' '.join(f'{x[0]:.2f}' for x in r['ab_raw'][label])}")


# ------------------------------------------------------------------ 5 month

def bench_month(base, files, serve_args=()):
    retime = build_retime(base)
    now = int(time.time() * 1000)
    day = 86400 * 1000
    t_start = now - 31 * day
    out_dir = os.path.join(base, "month-rt")
    os.makedirs(out_dir)
    # The setup transactions (schema, the 5 MB seed) at the start; the rest
    # at random moments (a Poisson process) over 31 days ending a minute ago.
    setup = 3
    rng = random.Random(11)
    stamps = sorted(rng.uniform(t_start + 1000, now - 60000) for _ in range(len(files) - setup))
    stamps = [t_start] * setup + [int(x) for x in stamps]
    lines = []
    outs = []
    for f, ts in zip(files, stamps):
        o = os.path.join(out_dir, os.path.basename(f))
        outs.append(o)
        lines.append(f"{f} {o} {ts}\n")
    subprocess.run([retime], input="".join(lines), text=True, check=True)
    sizes = [os.path.getsize(o) for o in outs]
    bodies = [open(o, "rb").read() for o in outs]
    cloud = Cloud(base, "cloud-month", *serve_args).start()   # default levels, snapshots, retention
    try:
        db = "month.db"
        t0 = time.monotonic()
        upload_chain(cloud, db, bodies)
        up = time.monotonic() - t0
        # Let compaction, snapshots and retention run until nothing changes
        # for 15 s (maintenance runs every 5 s with the default levels).
        t0 = time.monotonic()
        last, stable = None, 0
        while time.monotonic() - t0 < 600 and stable < 3:
            time.sleep(5)
            info = cloud.get(f"/db/info?db={db}")
            cur = (info["bytes"], tuple((lv["level"], lv["files"], lv["bytes"]) for lv in info["levels"]))
            stable = stable + 1 if cur == last else 0
            last = cur
        settle = time.monotonic() - t0
        info = cloud.get(f"/db/info?db={db}")
        objects = dir_bytes(os.path.join(cloud.data, "objects"))
        catalog = sum(os.path.getsize(os.path.join(cloud.data, f)) for f in os.listdir(cloud.data)
                      if f.startswith("catalog.db"))
        catalog_main = os.path.getsize(os.path.join(cloud.data, "catalog.db"))
        current = dir_bytes(os.path.join(cloud.data, "current"))
        # Check a restore deep in the window still works (a week ago).
        chk = cloud.get(f"/db/restore/check?db={db}&timestamp={now - 7 * day}")
        exp_secs, _ = cloud.cli("export", db, "--timestamp", str(now - 25 * day), "-o", os.path.join(base, "m.db"))
    finally:
        cloud.stop()
    raw_all = sum(sizes)
    window_start = now - 30 * day
    raw_win = sum(s for s, ts in zip(sizes, stamps) if ts >= window_start)
    n_win = sum(1 for ts in stamps if ts >= window_start)
    db_bytes = info["pages"] * info["page_size"]
    print(f"\n== 5. storage for a simulated month: {len(files)} LTX files of a real workload re-stamped over "
          f"31 days ending now (retention 30d; serve flags: {' '.join(serve_args) or 'the defaults'})")
    print(f"   uploaded in {up:.1f} s ({len(files) / up:.0f} tx/s); compaction and retention settled "
          f"{settle:.0f} s later; database now {db_bytes / MB:.1f} MB")
    print(f"   raw LTX uploaded: {raw_all / MB:.1f} MB in {len(files)} transactions; inside the 30-day "
          f"window: {raw_win / MB:.1f} MB in {n_win}")
    print(f"{'level':>6}{'kind':>10}{'interval':>12}{'files':>8}{'MB':>9}")
    for lv in info["levels"]:
        print(f"{lv['level']:>6}{lv['kind']:>10}{lv['interval_ms'] / 1000:>11.0f}s{lv['files']:>8}"
              f"{lv['bytes'] / MB:>9.2f}")
    print(f"   snapshots listed: {len(info.get('snapshots', []))}; restorable {info['restorable']['min_timestamp']}"
          f" .. {info['restorable']['max_timestamp']}; restore/check a week ago -> {chk['txID']}; "
          f"export 25 days ago: {exp_secs:.2f} s")
    total = objects + catalog
    print(f"   stored: objects {objects / MB:.1f} MB (info says {info['bytes'] / MB:.1f} MB) + catalog "
          f"{catalog / MB:.1f} MB (catalog.db {catalog_main / MB:.1f} MB, the rest its WAL) = {total / MB:.1f} MB (+ current copy {current / MB:.1f} MB, a cache)")
    print(f"   stored / raw LTX in the window: {total / raw_win:.2f}; stored / raw LTX uploaded: "
          f"{total / raw_all:.2f}; stored / database size: {total / db_bytes:.1f}")


# ------------------------------------------------------------ 6 large ingest

def make_chain(base, name, pages, txns, per_tx, seed=1, run_len=1):
    out = os.path.join(base, name)
    os.makedirs(out, exist_ok=True)
    r = subprocess.run([os.path.join(BUILD, "bench", "ltx_chain"), out, str(pages), str(txns), str(per_tx),
                        "4096", str(seed), str(run_len)], capture_output=True, text=True, check=True)
    return r.stdout.split()


def post_file(conn, token, db, path):
    with open(path, "rb") as f:
        body = f.read()
    return post_tx(conn, token, db, body), len(body)


def proc_cpu(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_large(base, rounds, per_tx, txns, clusters, run_len=1):
    cloud = Cloud(base, f"cloud-large{run_len}").start()
    res = {}
    try:
        files = make_chain(base, f"large{run_len}", per_tx * 4, txns, per_tx, run_len=run_len)
        small = make_chain(base, f"one-page{run_len}", 256, 2000, 1)
        nb = sum(os.path.getsize(f) for f in files[1:])
        for r in range(rounds):
            # Baseline: the same bytes, one file each, written and fsync'd.
            bodies = [open(f, "rb").read() for f in files[1:]]
            t0 = time.monotonic()
            fsync_files(os.path.join(base, f"large-fsync-{r}"), bodies)
            res.setdefault("fsync", []).append(nb / MB / (time.monotonic() - t0))
            shutil.rmtree(os.path.join(base, f"large-fsync-{r}"))
            del bodies
            conn = cloud.conn()
            db = f"large{r}.db"
            post_file(conn, cloud.token, db, files[0])
            c0 = proc_cpu(cloud.proc.pid)
            t0 = time.monotonic()
            for f in files[1:]:
                post_file(conn, cloud.token, db, f)
            res.setdefault("cloud", []).append(nb / MB / (time.monotonic() - t0))
            # The service's own CPU per MB: steadier than wall time on a
            # shared machine (the client and other work take the cores).
            res.setdefault("cpu", []).append(nb / MB / (proc_cpu(cloud.proc.pid) - c0))
            conn.close()
            sbodies = [open(f, "rb").read() for f in small]
            t0 = time.monotonic()
            upload_chain(cloud, f"one{r}.db", sbodies)
            res.setdefault("one", []).append(len(sbodies) / (time.monotonic() - t0))
            t0 = time.monotonic()
            fsync_files(os.path.join(base, f"one-put-{r}"), sbodies, durable_put=True)
            res.setdefault("one-put", []).append(len(sbodies) / (time.monotonic() - t0))
            shutil.rmtree(os.path.join(base, f"one-put-{r}"))
            # Many clusters at once: each its own token and database.
            toks = []
            for i in range(clusters):
                toks.append(subprocess.run([CLOUD, "cluster", "create", f"c{r}x{i}r{run_len}", "-data-dir", cloud.data],
                                           capture_output=True, text=True, check=True).stdout.strip())

            def run(tok):
                c = cloud.conn()
                for b in sbodies[:500]:
                    post_tx(c, tok, "one.db", b)
                c.close()
            secs = parallel([lambda t=t: run(t) for t in toks])
            res.setdefault("many", []).append(clusters * 500 / secs)
    finally:
        cloud.stop()
    print(f"\n== 6. large transactions on one stream: {txns} x {per_tx} pages of 4 KiB "
          f"({nb / txns / MB:.1f} MB of LTX each), {rounds} rounds, medians")
    print(f"   pages in runs of 1..{2 * run_len - 1}; disk (write + fsync per file): {med(res['fsync']):.0f} MB/s; "
          f"litefs-cloud: {med(res['cloud']):.0f} MB/s ({med(res['cloud']) / med(res['fsync']):.2f} of the disk); "
          f"rounds {[round(x) for x in res['cloud']]}; service CPU: {med(res['cpu']):.0f} MB per CPU-second")
    print(f"   1-page transactions, one stream: {med(res['one']):.0f} tx/s (durable put baseline "
          f"{med(res['one-put']):.0f} tx/s); {clusters} clusters at once: {med(res['many']):.0f} tx/s")


# --------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--secs", type=float, default=5.0, help="seconds per RPO rate")
    ap.add_argument("--month-txns", type=int, default=30000)
    ap.add_argument("--updates", type=int, default=1000, help="update transactions after the big import")
    ap.add_argument("--big", action="store_true", help="also the 1 GB restore (several minutes)")
    ap.add_argument("--only", default="1,2,3,4,5,6")
    ap.add_argument("--large-pages", type=int, default=4096, help="pages per large transaction (case 6)")
    ap.add_argument("--large-txns", type=int, default=24)
    ap.add_argument("--clusters", type=int, default=8, help="clusters at once for 1-page transactions (case 6)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--base", help="case 4: a build directory whose node alternates with this build's")
    ap.add_argument("--cache", help="keep the generated workloads in this directory and reuse them")
    ap.add_argument("--month-args", default="", help="extra `litefs-cloud serve` flags for case 5")
    a = ap.parse_args()
    only = set(a.only.split(","))
    global BASE_BUILD
    BASE_BUILD = a.base
    base = tempfile.mkdtemp(prefix="bench-cloud-", dir=BUILD)
    t_all = time.monotonic()
    try:
        print(f"litefs-cloud benchmarks in {base} ({BUILD})")
        files = None
        if only & {"1", "5"}:
            t0 = time.monotonic()
            cached = a.cache and os.path.exists(os.path.join(a.cache, "ltx", "month.db"))
            if cached:
                files = {db: sorted(os.path.join(a.cache, "ltx", db, f) for f in os.listdir(os.path.join(a.cache, "ltx", db)))
                         for db in ("small.db", "big.db", "month.db")}
            else:
                files = make_workloads(a.cache or base, a.month_txns if "5" in only else 10)
            print(f"workloads {'from ' + a.cache if cached else 'generated on a node'} in {time.monotonic() - t0:.0f} s")
        if "1" in only:
            bench_ingest(base, files, a.rounds)
        if only & {"2", "3"}:
            bench_rpo_and_restore(base, a.secs, a.rounds)
        if "4" in only:
            results = {100: bench_big_restore(base, 100, a.updates, a.rounds)}
            if a.big:
                results[1000] = bench_big_restore(base, 1000, a.updates, max(1, a.rounds - 1))
            print_big(results, a.updates, a.rounds)
        if "5" in only:
            bench_month(base, files["month.db"], a.month_args.split())
        if "6" in only:
            bench_large(base, a.rounds, a.large_pages, a.large_txns, a.clusters)
            bench_large(base, a.rounds, a.large_pages, a.large_txns, a.clusters, run_len=16)
        print(f"\ntotal {time.monotonic() - t_all:.0f} s")
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
