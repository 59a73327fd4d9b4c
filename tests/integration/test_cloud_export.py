"""Export, restore and fork on litefs-cloud built from the restore plan's
stored files read side by side (issue 15, item 2; docs/cloud-storage.md
"Building a past state").

A past state is no longer applied file by file to a scratch file: the
plan's files are merged page by page and the state is streamed to the
client, encoded into the restore's transaction, or written once into the
current copy. These tests check what that must keep: every state of a
history that grows, shrinks and grows again, compacted into levels and
snapshots, exports byte for byte (SQLite and LTX) and restores and forks
exactly; a stored file damaged in the middle of its pages cuts the
streamed export before its end, so the CLI fails and leaves its target
untouched; a kill -9 of the service during restores and exports leaves the
database at its old state or its new one, never between. A fork, written
in one pass (src/cloud/cloud_fork.h), is an ordinary database afterwards:
a node follows it and writes on, every position exports byte for byte, a
restore and a catalog rebuilt from the objects see it, and a kill -9 while
it is written leaves no database, one after its commit a complete one.
"""
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
import urllib.parse

import pytest

from conftest import LITEFS_CLOUD, local_objects_only, wait_until
from test_cloud_api import Chain, make_chain, push_chain, pos_map

KEEP = ["-retention", "3650d"]  # the chain's timestamps are from 2026-01-01


class ShrinkingChain(Chain):
    def shrink(self):
        """Deletes most rows and vacuums: the database gets smaller (a
        file with a smaller commit); later steps grow it again."""
        con = sqlite3.connect(self.path)
        con.execute("DELETE FROM t WHERE id % 5 != 0")
        con.commit()
        con.execute("VACUUM")
        con.close()
        self._capture()


def snapshot(srv, token, db, txid=None, fmt="sqlite"):
    """GET /db/snapshot: (status, declared length, body)."""
    q = {"db": db, "format": fmt}
    if txid:
        q["txid"] = f"{txid:016x}"
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        c.request("GET", "/db/snapshot?" + urllib.parse.urlencode(q), headers={"Authorization": token})
        r = c.getresponse()
        length = r.getheader("Content-Length")
        try:
            body = r.read()
        except http.client.IncompleteRead as e:
            body = e.partial
        return r.status, int(length) if length else None, body
    finally:
        c.close()


def history(tmp_path, n_big_rows=3000):
    """A chain of ~40 states: a 1.5 MB start, inserts, a shrink, regrowth."""
    ch = ShrinkingChain(tmp_path)
    ch.step(n_rows=n_big_rows)
    for k in range(36):
        if k == 14:
            ch.shrink()
        else:
            ch.step(n_rows=40 if k > 14 else 5)
    return ch


def info(srv, token, db):
    """GET /db/info."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    c.request("GET", "/db/info?" + urllib.parse.urlencode({"db": db}), headers={"Authorization": token})
    o = json.loads(c.getresponse().read())
    c.close()
    return o


def levels(srv, token, db):
    """Files per level and the number of snapshots (GET /db/info)."""
    o = info(srv, token, db)
    return {lv["level"]: lv["files"] for lv in o["levels"]}, len(o.get("snapshots", []))


def test_every_state_exact_through_levels_restore_and_fork(cloud, tmp_path):
    # Timestamps are 1 s apart: 2 s and 8 s levels and a 16 s snapshot
    # interval give plans of a snapshot plus files of several levels.
    srv = cloud(args=["-levels", "2s,8s", "-snapshot-interval", "16s", "-snapshot-ratio", "every", "-min-merge", "2",
                      *KEEP])
    tok = srv.create_cluster("c")
    ch = history(tmp_path)
    push_chain(srv, tok, "app.db", ch)
    deadline = time.time() + 20
    while time.time() < deadline:
        lv, snaps = levels(srv, tok, "app.db")
        if lv.get(1) and lv.get(2) and snaps > 1:
            break
        time.sleep(0.2)
    assert lv.get(1) and lv.get(2) and snaps > 1, (lv, snaps)
    lens = [len(s[4]) for s in ch.states]
    assert any(b < a for a, b in zip(lens, lens[1:])) and lens[-1] > min(lens[2:]), lens  # shrank, grew
    for txid, checksum, _, _, data in ch.states:
        st, length, body = snapshot(srv, tok, "app.db", txid)
        assert st == 200 and length == len(data), (txid, st, length, len(data))
        assert body == data, f"export of TXID {txid} differs"
    # LTX of a past state: a snapshot that applies to the same bytes.
    st, _, ltx = snapshot(srv, tok, "app.db", 16, fmt="ltx")
    assert st == 200 and ltx[:4] == b"LTX1"
    # Restore in place to a state before the shrink, then to one after it.
    n = len(ch.states)
    for k, target in enumerate((10, 20)):
        out = srv.cli("restore", "app.db", "--txid", str(target), token=tok).stdout
        assert f"txid={n + 1 + k:016x}" in out, out
        assert snapshot(srv, tok, "app.db")[2] == ch.states[target - 1][4]
        assert snapshot(srv, tok, "app.db", n + 1 + k)[2] == ch.states[target - 1][4]
    # A fork of a past state, and of the latest.
    srv.cli("restore", "app.db", "--txid", "30", "--as", "fork.db", token=tok)
    assert snapshot(srv, tok, "fork.db")[2] == ch.states[29][4]
    srv.cli("restore", "app.db", "--txid", str(n + 2), "--as", "fork2.db", token=tok)
    assert snapshot(srv, tok, "fork2.db")[2] == ch.states[19][4]
    # After a restart the current copy is checked again; a past state still
    # streams exactly.
    srv.stop()
    srv.start()
    assert snapshot(srv, tok, "app.db", 25)[2] == ch.states[24][4]
    assert snapshot(srv, tok, "app.db")[2] == ch.states[19][4]


def test_damaged_stored_file_cuts_the_stream(cloud, tmp_path):
    local_objects_only("damages an object in the local objects directory")
    srv = cloud(args=KEEP)
    tok = srv.create_cluster("c")
    ch = Chain(tmp_path)
    ch.step(n_rows=12000)  # ~3 MB, several 1 MiB pieces of the reply
    for _ in range(4):
        ch.step(n_rows=20)
    push_chain(srv, tok, "app.db", ch)
    good = ch.states[2][4]
    assert snapshot(srv, tok, "app.db", 3)[2] == good
    # The base snapshot's object, damaged in the middle of its pages.
    objs = [p for p in (srv.data / "objects").rglob("*.ltx") if p.name.startswith("0000000000000001-")]
    assert len(objs) == 1, objs
    raw = bytearray(objs[0].read_bytes())
    raw[len(raw) // 2] ^= 0x20
    objs[0].write_bytes(bytes(raw))
    st, length, body = snapshot(srv, tok, "app.db", 3)
    # Refused up front, or cut before the end: never the whole length.
    assert st != 200 or len(body) < length, (st, length, len(body))
    target = tmp_path / "keep.db"
    target.write_bytes(b"precious")
    r = srv.cli("export", "app.db", "--txid", "3", "-o", target, token=tok, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert target.read_bytes() == b"precious"
    assert "stored files do not build the state" in srv.log_text()
    # The latest state (the current copy) is unaffected.
    assert snapshot(srv, tok, "app.db")[2] == ch.states[-1][4]


def test_kill9_mid_restore_and_export_leaves_old_or_new(cloud, tmp_path):
    srv = cloud(args=KEEP)
    tok = srv.create_cluster("c")
    ch = Chain(tmp_path)
    ch.step(n_rows=24000)  # ~6 MB
    for _ in range(6):
        ch.step(n_rows=30)
    push_chain(srv, tok, "app.db", ch)
    states = {s[1]: s[4] for s in ch.states}  # checksum -> bytes
    rng = random.Random(5)
    target = tmp_path / "out.db"
    target.write_bytes(b"precious")

    def start_both(want):
        common = ["-url", srv.url, "-token", tok]
        exp = subprocess.Popen([str(LITEFS_CLOUD), "export", "app.db", "--txid", str(want), "-o", str(target),
                                *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rest = subprocess.Popen([str(LITEFS_CLOUD), "restore", "app.db", "--txid", str(want), *common],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return exp, rest

    # How long both take here, so the kills land before, during and after.
    t0 = time.monotonic()
    for p in start_both(2):
        assert p.wait(60) == 0
    full = time.monotonic() - t0
    assert target.read_bytes() == ch.states[1][4]
    outcomes = set()
    for rnd in range(6):
        before = pos_map(srv, tok)["app.db"]
        want = rng.choice([3, 4, 5, 6])
        exp, rest = start_both(want)
        time.sleep(full * rnd / 3 * rng.uniform(0.7, 1.0))
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.logf.close()
        exp_rc, rest_rc = exp.wait(60), rest.wait(60)
        srv.start()
        after = pos_map(srv, tok)["app.db"]
        old = after == before
        assert old or (int(after["txid"], 16) == int(before["txid"], 16) + 1 and
                       int(after["postApplyChecksum"], 16) == ch.states[want - 1][1]), (before, after, want)
        assert rest_rc != 0 or not old
        outcomes.add(("old" if old else "new", exp_rc == 0))
        # The current state is exactly a state of the chain.
        latest = snapshot(srv, tok, "app.db")[2]
        assert states.get(int(after["postApplyChecksum"], 16)) == latest
        # The export's target is whole (a state of the chain) or as it was.
        data = target.read_bytes()
        assert data == ch.states[want - 1][4] if exp_rc == 0 else data in states.values()
    print("outcomes (restore state, export succeeded):", sorted(outcomes))


def l0_snapshot(srv, db_id):
    """The stored bytes of database db_id's TXID 1 (local backend)."""
    return (srv.data / "objects" / f"{db_id:016x}" / "l0" / f"{1:016x}-{1:016x}.ltx").read_bytes()


def test_fork_in_one_pass_is_an_ordinary_database(cloud, node, tmp_path):
    # Short levels and snapshots, so that the fork's own history is
    # compacted and snapshotted from its plain-LTX base while the node writes.
    srv = cloud(args=["-levels", "1s,2s", "-snapshot-interval", "2s", "-snapshot-ratio", "every", "-min-merge", "2",
                      *KEEP])
    tok = srv.create_cluster("c")
    ch = Chain(tmp_path)
    ch.step(n_rows=8000)  # ~2 MB: its fork is stored as plain LTX
    for _ in range(3):
        ch.step(n_rows=20)
    push_chain(srv, tok, "app.db", ch)
    small = make_chain(tmp_path, 3, name="small")
    push_chain(srv, tok, "small.db", small)
    srv.cli("restore", "app.db", "--txid", "3", "--as", "f.db", token=tok)
    srv.cli("restore", "small.db", "--txid", "2", "--as", "fs.db", token=tok)
    pm = pos_map(srv, tok)
    assert pm["f.db"] == {**pm["f.db"], "txid": f"{1:016x}", "postApplyChecksum": f"{ch.states[2][1]:016x}"}, pm
    assert snapshot(srv, tok, "f.db")[2] == ch.states[2][4]
    assert snapshot(srv, tok, "fs.db")[2] == small.states[1][4]
    if os.environ.get("LITEFS_TEST_CLOUD_STORAGE") != "s3":
        # Ids 1, 2: the sources; 3, 4: the forks. A large state is stored as
        # plain LTX (flags 0), a small one in the zstd stored form (0x100).
        assert l0_snapshot(srv, 3)[4:8] == bytes(4) and l0_snapshot(srv, 4)[4:8] == b"\0\0\x01\0"

    # A node follows the fork and writes on; every position exports exactly.
    n = node(extra_config=f"backup:\n  type: litefs-cloud\n  url: {srv.url}\n  auth-token: {tok}\n").start()
    wait_until(lambda: (n.mnt / "f.db-pos").exists() and int(n.pos("f.db")[1], 16) == ch.states[2][1],
               timeout=15, msg=lambda: "the fork never reached the node\n" + n.log_text()[-2000:])
    states = {1: ch.states[2][4]}
    con = n.connect("f.db")
    for i in range(2):
        con.execute("INSERT INTO t(v) VALUES (?)", (f"node-{i}-" + "y" * 3000,))
        con.commit()
        txid, chk = n.pos("f.db")
        states[txid] = n.db("f.db").read_bytes()
        wait_until(lambda: pos_map(srv, tok)["f.db"]["txid"] == f"{txid:016x}", timeout=10,
                   msg=lambda: f"the service never reached {txid}\n" + n.log_text()[-2000:])
    con.close()
    n.stop()
    assert len(states) == 3, states.keys()
    wait_until(lambda: any(sn["level"] > 0 for sn in info(srv, tok, "f.db").get("snapshots", [])), timeout=15,
               msg=lambda: f"no snapshot of the fork made: {info(srv, tok, 'f.db')}")
    for t, data in states.items():
        assert snapshot(srv, tok, "f.db", t)[2] == data, f"export of the fork at {t} differs"
    # A restore in place on the fork, back to its first state.
    srv.cli("restore", "f.db", "--txid", "1", token=tok)
    assert snapshot(srv, tok, "f.db")[2] == states[1]

    # A catalog rebuilt from the objects knows the fork and every position.
    before = pos_map(srv, tok)
    srv.stop()
    for f in srv.data.glob("catalog.db*"):
        f.unlink()
    srv.start()
    assert "catalog rebuilt" in srv.log_text()
    assert pos_map(srv, tok) == before
    for t, data in states.items():
        assert snapshot(srv, tok, "f.db", t)[2] == data, f"export of the fork at {t} after the rebuild differs"
    assert snapshot(srv, tok, "fs.db")[2] == small.states[1][4]

    def fork_killed(fault, wait):
        """Starts a fork of app.db at TXID 2 as k.db with fault armed, waits
        for wait(), kills the service, restarts it: k.db's position or None."""
        srv.stop()
        srv.env["LITEFS_FAULT"] = fault
        srv.start()
        p = subprocess.Popen([str(LITEFS_CLOUD), "restore", "app.db", "--txid", "2", "--as", "k.db",
                              "-url", srv.url, "-token", tok], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(wait, timeout=10, msg=lambda: f"fork never reached the fault {fault}\n" + srv.log_text()[-2000:])
        assert p.poll() is None, "the fork ended before the kill"
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.logf.close()
        assert p.wait(30) != 0
        del srv.env["LITEFS_FAULT"]
        srv.start()
        return pos_map(srv, tok).get("k.db")

    # Killed while its pages are written (the 3rd write to one of its
    # temporary files stalls): no database, no object left behind.
    tmp = srv.data / "tmp"
    assert fork_killed("pwrite:3:stall=30000:path=data/tmp/fork-",
                       lambda: any(f.stat().st_size > 0 for f in tmp.glob("fork-*"))) is None
    if os.environ.get("LITEFS_TEST_CLOUD_STORAGE") != "s3":
        assert sorted(d.name for d in (srv.data / "objects").iterdir()) == [f"{i:016x}" for i in (1, 2, 3, 4)], \
            sorted(str(p) for p in (srv.data / "objects").rglob("*"))
    # Killed after its commit, before its current copy is renamed into
    # place: a complete database, whose copy is rebuilt from the object.
    got = fork_killed("rename:1:stall=30000:path=current/", lambda: "k.db" in pos_map(srv, tok))
    assert got == {**got, "txid": f"{1:016x}", "postApplyChecksum": f"{ch.states[1][1]:016x}"}, got
    assert snapshot(srv, tok, "k.db")[2] == ch.states[1][4]
