"""Several litefs-cloud instances on one bucket (docs/cloud-s3.md, "Several
instances"): a real etcd for the writer lease, a real s3rver bucket, real
LiteFS nodes pushing, users restoring and tokens made through either
instance, and kill -9 of the writer.
"""
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request

import pytest

from conftest import CloudServer, db_checksum, free_port, run, wait_until
from test_backup import Writer, backup_config, cloud_pos, hexpos
from test_cloud_dashboard_api import Events
from test_failover import Etcd
from test_litefs_real import REAL_LITEFS, RealLiteFS, insert_rows, sql, state, synced

TTL = "2s"


def instance(tmp_path, s3, bucket, etcd, name):
    port = free_port()
    srv = CloudServer(tmp_path, name, storage=s3.storage(bucket))
    srv.port, srv.url = port, f"http://127.0.0.1:{port}"
    srv.multi_args = ["-etcd", ",".join(etcd.endpoints), "-advertise-url", srv.url, "-instance-id", name,
                      "-writer-ttl", TTL, "-standby-refresh", "1s"]
    srv.args = srv.multi_args
    srv.storage_args = srv.storage_args + srv.multi_args  # admin commands take the same settings
    return srv


def health(srv):
    with urllib.request.urlopen(srv.url + "/healthz", timeout=5) as r:
        return json.loads(r.read())


def writer_seen(srv):
    """The writer a standby forwards to (None if srv is down or the writer)."""
    try:
        return health(srv).get("writer")
    except OSError:
        return None


def is_writer(srv):
    try:
        return health(srv).get("role") != "standby"
    except OSError:
        return False


def restore(srv, tok, txid, name="db"):
    """POST /db/restore through srv; the reply's position as ints."""
    req = urllib.request.Request(f"{srv.url}/db/restore?db={name}&txid={txid}", data=b"", method="POST",
                                 headers={"Authorization": tok})
    with urllib.request.urlopen(req, timeout=20) as r:
        o = json.loads(r.read())
    return int(o["txID"], 16), int(o["postApplyChecksum"], 16)


def status_of(srv, tok, path="/pos"):
    req = urllib.request.Request(srv.url + path, headers={"Authorization": tok})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def token_ids(srv):
    """The token IDs `token list` prints on srv's host (first column)."""
    return {line.split()[0] for line in srv.cli("token", "list", "prod").stdout.splitlines()
            if line.split() and line.split()[0] != "ID"}


def l0_ranges(s3, bucket, with_post=False):
    """{db id: [(min, max)] by max} of the L0 objects in an s3rver bucket;
    with_post, (min, max, post-apply checksum from the trailer)."""
    root = s3.base / "data" / bucket
    out = {}
    for p in root.rglob("*._S3rver_object"):
        m = re.match(r"([0-9a-f]{16})/l0/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$",
                     str(p.relative_to(root))[:-len("._S3rver_object")])
        if m:
            r = (int(m.group(2), 16), int(m.group(3), 16))
            if with_post:
                r += (int.from_bytes(p.read_bytes()[-16:-8], "big"),)
            out.setdefault(m.group(1), []).append(r)
    return {k: sorted(v, key=lambda r: (r[1], r[0])) for k, v in out.items()}


def two_instances(tmp_path, s3, etcd):
    """A new bucket; instance a, its writer, then b, a standby forwarding to a."""
    bucket = s3.create_bucket()
    a = instance(tmp_path, s3, bucket, etcd, "a")
    a.start()
    wait_until(lambda: is_writer(a), timeout=10, msg="a never became the writer")
    b = instance(tmp_path, s3, bucket, etcd, "b")
    b.start()
    wait_until(lambda: writer_seen(b) == a.url, timeout=10, msg=lambda: b.log_text()[-2000:])
    return bucket, a, b


@pytest.fixture
def pair(s3server, tmp_path):
    """(bucket, a, b): one etcd member, a new bucket, instance a its writer,
    b a standby; all stopped at the end."""
    etcd = Etcd(tmp_path, n=1)
    etcd.start()
    made = []
    try:
        bucket, a, b = two_instances(tmp_path, s3server, etcd)
        made += [a, b]
        yield bucket, a, b
    finally:
        for srv in made:
            srv.stop()
        etcd.stop()


def assert_tiled(s3, bucket, last_txid):
    """No gap, no duplicate: the one database's uploads (L0 objects) follow
    each other, each starting right after the previous one ends (or a
    snapshot from TXID 1 jumping forward), up to last_txid."""
    ranges = l0_ranges(s3, bucket)
    assert len(ranges) == 1, ranges
    (rs,) = ranges.values()
    for (lo0, hi0), (lo1, hi1) in zip(rs, rs[1:]):
        assert lo1 == hi0 + 1 or (lo1 == 1 and hi1 > hi0), f"{(lo0, hi0)} then {(lo1, hi1)}"
    assert rs[-1][1] == last_txid, (rs[-1], last_txid)


def writes_across_kill(n, tok, victim, heir, restart=False):
    """The node writes while victim, the writer, is killed with -9 and heir
    takes the bucket (victim started again as a standby with restart).
    Returns the position acknowledged before the kill, the node's last
    one (acknowledged by heir), and the seconds from the kill to the
    first upload heir acknowledged."""
    w = Writer(n, pause=0.003)
    w.start()
    time.sleep(0.8)
    before = cloud_pos(victim, tok)
    t_kill = time.time()
    victim.stop(signal.SIGKILL)
    wait_until(lambda: is_writer(heir), timeout=20, msg=lambda: heir.log_text()[-3000:])
    if restart:
        victim.start(wait=False)
        wait_until(lambda: writer_seen(victim) == heir.url, timeout=15, msg=lambda: victim.log_text()[-2000:])
    wait_until(lambda: cloud_pos(heir, tok)[0] > before[0], timeout=20, msg=lambda: n.log_text()[-3000:])
    took = time.time() - t_kill
    time.sleep(0.8)
    w.finish()
    want = hexpos(n)
    wait_until(lambda: cloud_pos(heir, tok) == want, timeout=20, msg=lambda: n.log_text()[-3000:])
    return before, want, took


def assert_genuine(s3, bucket, points, last_txid):
    """No corrupt object, no gap: every upload in the bucket that ends at a
    TXID the node committed holds the node's state there (post-apply
    checksum), and the uploads chain from TXID 1 to last_txid. Two uploads
    may overlap: an old writer's put that completed after its lease (never
    acknowledged) is the node's own history too (docs/cloud-s3.md)."""
    chk = {p[0]: p[2] for p in points}
    (rs,) = l0_ranges(s3, bucket, with_post=True).values()
    reached = {0}
    for lo, hi, post in rs:
        assert hi not in chk or chk[hi] == post, f"upload {lo}-{hi}: {post:016x}, the node had {chk[hi]:016x}"
        if lo == 1 or lo - 1 in reached:
            reached.add(hi)
    assert last_txid in reached, (rs, last_txid)
    return len(rs) - len(set(lo for lo, _, _ in rs))


def test_two_instances_one_bucket_failover_restores_and_tokens(s3server, pair, node, tmp_path):
    """A writes, B forwards; a node pushes through B while users restore
    through both; kill -9 of A moves the bucket to B, which rebuilds from
    the bucket first; no acknowledged position is lost or duplicated, every
    one exports exactly, restores through either instance reach the node,
    and a token made on either host works on both within seconds."""
    bucket, a, b = pair

    # Tokens: made on the writer's host, then on the standby's host.
    tok = a.create_cluster("prod")
    assert status_of(b, tok) == 200  # forwarded to a
    ids = token_ids(b)
    tok_b = b.cli("token", "create", "prod").stdout.strip()
    (tid_b,) = token_ids(b) - ids
    wait_until(lambda: status_of(a, tok_b) == 200, timeout=10, msg="a token made on b's host never worked on a")

    # A node pushes through the standby b (forwarded to a).
    n = node(extra_config=backup_config(b.url, tok)).start()
    w = Writer(n, pause=0.003)
    w.start()
    acked = []
    deadline = time.time() + 3
    while time.time() < deadline:
        for srv in (a, b):
            p = cloud_pos(srv, tok)
            if p:
                acked.append(p)
        time.sleep(0.2)
    w.finish()
    want = hexpos(n)
    wait_until(lambda: cloud_pos(b, tok) == want, timeout=15, msg=lambda: n.log_text()[-3000:])
    acked.append(want)

    # A restore through the writer a reaches the node, whose long poll is
    # on b, and the dashboard's event stream opened on b (relayed).
    ev = Events(b, tok)
    ev.start()
    target = acked[len(acked) // 2][0]  # an upload's end: restorable
    r_txid, r_chk = restore(a, tok, target)
    wait_until(lambda: any(int(d["txid"], 16) == r_txid for d in ev.of("restore")), timeout=10,
               msg=lambda: f"no restore event through the standby: {ev.events[-5:]}")
    ev.close()
    wait_until(lambda: hexpos(n) == (r_txid, r_chk), timeout=15,
               msg=lambda: f"node {hexpos(n)}, restore {(r_txid, r_chk)}\n{n.log_text()[-3000:]}")
    acked.append((r_txid, r_chk))

    # kill -9 of the writer while the node keeps writing.
    before, want, failover_s = writes_across_kill(n, tok, a, b)
    acked += [before, want]
    # b never wrote, but as a standby it kept a hint of the bucket warm:
    # taking over, it read only what came since.
    m = re.search(r"catalog rebuilt .* objects=(\d+) reused=(\d+)", b.log_text())
    assert m and int(m.group(2)) > 0, b.log_text()[-3000:]
    print(f"b's takeover: {m.group(2)} of {m.group(1)} objects known from its warm hint")
    print(f"failover: kill -9 of the writer -> next acknowledged upload on the new writer: {failover_s:.2f} s")

    # a comes back as a standby; a restore through it reaches the node.
    a.start(wait=False)
    wait_until(lambda: writer_seen(a) == b.url, timeout=15, msg=lambda: a.log_text()[-2000:])
    assert status_of(a, tok_b) == 200
    r_txid, r_chk = restore(a, tok, before[0])
    wait_until(lambda: hexpos(n) == (r_txid, r_chk), timeout=15, msg=lambda: n.log_text()[-3000:])
    acked.append((r_txid, r_chk))
    # kill -9 of b: a takes the bucket back. Its catalog is from before
    # its own kill, so it must rebuild from the bucket before it acks.
    # (b, the node's URL, comes back as a standby forwarding to a.)
    before, want, _ = writes_across_kill(n, tok, b, a, restart=True)
    acked += [before, want]

    # A token revoked on the standby's host stops working on the writer.
    b.cli("token", "revoke", tid_b)
    wait_until(lambda: status_of(a, tok_b) == 401, timeout=10, msg="a revoked token kept working")
    assert status_of(a, tok) == 200

    # Every acknowledged position exports exactly, through either instance.
    for i, (txid, chk) in enumerate(sorted(set(acked))):
        srv = (a, b)[i % 2]
        out = tmp_path / f"x-{txid}.db"
        srv.cli("export", "db", "--txid", str(txid), "-o", out, token=tok)
        assert int(db_checksum(out), 16) == chk, txid
        assert run("sqlite3", out, "PRAGMA integrity_check").stdout.strip() == "ok"
    # No gap, no duplicate: the uploads tile the history.
    assert_tiled(s3server, bucket, cloud_pos(a, tok)[0])
    assert "no longer the bucket's writer" not in b.log_text()

    # A planned switch: SIGTERM of the writer revokes its lease, and the
    # standby takes the bucket at once, with everything.
    t0 = time.time()
    assert a.stop() == 0
    wait_until(lambda: is_writer(b), timeout=20, msg=lambda: b.log_text()[-3000:])
    assert cloud_pos(b, tok) == want
    print(f"SIGTERM of the writer -> the standby serves as the writer: {time.time() - t0:.2f} s")


def test_a_paused_writer_loses_the_bucket_and_stops_without_damage(s3server, pair, node, tmp_path):
    """The writer is paused (SIGSTOP), not dead, for longer than the lease:
    the standby takes the bucket and the node goes on through it; when the
    old writer wakes up its lease is gone, so it exits (status 3) without
    writing anything more, and the history stays exact."""
    bucket, a, b = pair
    tok = a.create_cluster("prod")
    n = node(extra_config=backup_config(b.url, tok)).start()
    w = Writer(n, pause=0.003)
    w.start()
    time.sleep(1.5)
    acked = [cloud_pos(b, tok)]
    a.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: is_writer(b), timeout=20, msg=lambda: b.log_text()[-3000:])
        wait_until(lambda: cloud_pos(b, tok)[0] > acked[0][0], timeout=20, msg=lambda: n.log_text()[-3000:])
        acked.append(cloud_pos(b, tok))
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert a.proc.wait(timeout=15) == 3, a.log_text()[-3000:]
    assert "no longer the bucket's writer" in a.log_text()
    time.sleep(0.5)
    points = w.finish()
    want = hexpos(n)
    wait_until(lambda: cloud_pos(b, tok) == want, timeout=15, msg=lambda: n.log_text()[-3000:])
    acked.append(want)
    for txid, chk in acked:
        out = tmp_path / f"p-{txid}.db"
        b.cli("export", "db", "--txid", str(txid), "-o", out, token=tok)
        assert int(db_checksum(out), 16) == chk, txid
    late = assert_genuine(s3server, bucket, points, want[0])
    print(f"paused writer: {late} upload(s) completed after its lease (refused, never acknowledged)")


@pytest.mark.skipif(not os.access(REAL_LITEFS, os.X_OK), reason=f"the real LiteFS binary is missing: {REAL_LITEFS}")
def test_real_litefs_pushes_through_a_standby_across_a_failover(s3server, pair, tmp_path):
    """LiteFS 0.5.14's own client, unchanged, pointed at the standby: its
    uploads (a multi-MB one too) are forwarded to the writer; kill -9 of
    the writer; the standby takes the bucket and LiteFS catches up on it
    with nothing lost."""
    bucket, a, b = pair
    tok = a.create_cluster("prod")
    lfs = RealLiteFS(tmp_path, b.url, tok)
    lfs.start()
    try:
        sql(lfs, "w.db", "PRAGMA journal_mode=WAL", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        insert_rows(lfs, "w.db", 10, "a")
        sql(lfs, "w.db", "INSERT INTO t(v) SELECT randomblob(3 * 1024 * 1024)")
        first = synced(lfs, b, tok, "w.db")
        assert first[3][2] >= 3 * 1024 * 1024
        a.stop(signal.SIGKILL)
        insert_rows(lfs, "w.db", 10, "b", pause=0.05)
        wait_until(lambda: is_writer(b), timeout=20, msg=lambda: b.log_text()[-3000:])
        last = synced(lfs, b, tok, "w.db", timeout=30)
        assert last[3][1] == first[3][1] + 10
        out = tmp_path / "w-export.db"
        b.cli("export", "w.db", "-o", out, token=tok)
        assert state(out) == last[3]
    finally:
        lfs.stop()
