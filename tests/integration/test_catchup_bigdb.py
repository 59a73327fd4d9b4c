"""A replica's catch-up by snapshot of a big database and `litefs export`
on the node (issue 15, item 2; docs/replication.md step 3, docs/http.md
"GET /export").

A snapshot for a database that has no file on the replica is written once
straight into a new file and renamed into place (no staging spool), and a
record of 16 MiB or more is staged with copy_file_range. These tests check
that a 40 MB database caught up that way is the primary's byte for byte;
that a replica killed (-9) at random moments of that catch-up restarts
with either no database or the whole one, never a part, and then catches
up; and that an export in rollback mode, now a kernel copy of the db file
pinned by SQLite's locks, is the database byte for byte with the position
it names.
"""
import random
import subprocess
import time

from conftest import LITEFS, check_invariants, wait_until
from test_bigio import cli_import, kill9, make_big


def test_catch_up_by_snapshot_exact_and_kill9_leaves_nothing_or_all(cluster, tmp_path):
    c = cluster(1)
    p = c.primary
    src = make_big(tmp_path / "src.db", 40000)  # ~40 MB; its LZ4 record over 16 MiB: staged in the kernel
    res = cli_import(p, "db", src)
    assert res.returncode == 0, res.stderr
    want = p.pos()
    data = src.read_bytes()
    seg = sum(f.stat().st_size for f in p.ltx_dir().iterdir())
    assert seg > 16 << 20, seg  # the record takes copy_file_range on the replica
    rng = random.Random(3)
    r = c.add_replica("node2")
    # First, how long a whole catch-up takes here.
    t0 = time.monotonic()
    r.start()
    wait_until(lambda: r.pos_or_none("db") == want, 120, msg=lambda: c.describe())
    full = time.monotonic() - t0
    assert r.db().read_bytes() == data
    assert "snapshot written as the database's new file" in r.log_text()
    seen = set()
    for k in range(4):
        # A new replica with an empty data directory, killed mid catch-up.
        r = c.add_replica(f"node{k + 3}")
        r.start()
        time.sleep(full * rng.uniform(0.1, 0.9))
        kill9(r)
        db = r.data / "dbs" / "db" / "db"
        present = db.exists() and db.stat().st_size > 0
        seen.add(present)
        # Whatever the moment: no database, or exactly the primary's.
        if present:
            assert db.read_bytes() == data, f"round {k}: a partial database file was left"
        r.start()
        wait_until(lambda: r.pos_or_none("db") == want, 120, msg=lambda: c.describe())
        assert r.db().read_bytes() == data
        assert not (r.data / "dbs" / "db" / "db.snapshot-tmp").exists()
    print("killed with the database file present:", sorted(seen))
    check_invariants(r, tmp=tmp_path)


def test_export_in_rollback_mode_is_the_database(cluster, tmp_path):
    c = cluster(1)
    p = c.primary
    src = make_big(tmp_path / "src.db", 3000)
    assert cli_import(p, "db", src).returncode == 0
    con = p.connect()
    con.execute("UPDATE t SET k = k + 1 WHERE id % 3 = 0")
    con.commit()
    con.close()
    out = tmp_path / "out.db"
    res = subprocess.run([str(LITEFS), "export", "-url", f"http://127.0.0.1:{p.port}", "-name", "db", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    txid, chk = p.pos()
    assert f"{txid:016x}/{chk}" in res.stdout
    assert out.read_bytes() == p.db().read_bytes()
