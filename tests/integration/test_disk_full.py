"""A node whose data directory is on a full file system (issue 16).

The data directory lives on a small loop-mounted ext4 (1 KiB blocks, so a
4 KiB page of a file can be partly a hole, as on any file system whose
block is smaller than the page). The sequence that used to kill the node
with SIGBUS on every start: a WAL writer stopped by SQLITE_FULL, the node
killed with kill -9, and a restart while the disk is still full, when
SQLite's WAL recovery writes the rebuilt wal-index into mapped pages of a
sparse backing -shm that the file system cannot allocate.
"""
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import is_mounted, run, wait_until


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB ext4 on a loop device, mounted at tmp_path/fs; no blocks
    reserved for root, since the tests run as root."""
    img, mnt = tmp_path / "fs.img", tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "8M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "1024", str(img)], check=True)
    r = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0 or not is_mounted(mnt):
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path):
    """Writes path until the file system refuses; returns the bytes written."""
    n = 0
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 10, 1):
            try:
                while True:
                    n += f.write(b"\xa5" * size)
                    os.fsync(f.fileno())
            except OSError:
                pass
    return n


def on_data_fs(node, fs):
    node.data = fs / "data"
    node.write_config()
    return node


def write_until_full(node, acked):
    """A WAL writer inserting 2 KiB rows, one transaction each, until SQLite
    reports the disk full; appends every acknowledged row id to acked."""
    conn = sqlite3.connect(str(node.db()), timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the WAL (and -shm) grow until the disk is full
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    err = None
    for i in range(100000):
        try:
            conn.execute("INSERT INTO t (id, v) VALUES (?, randomblob(2048))", (i,))
        except sqlite3.Error as e:
            err = e
            break
        acked.append(i)
    # The connection is left open, as a writer's would be when its node dies.
    return conn, err


# Completely full, and full but for a few blocks (as a writer's failed
# append leaves it): with 4 KiB free, SQLite's truncate-and-extend of the
# -shm succeeds and the first store into a mapped hole was the SIGBUS.
@pytest.mark.parametrize("slack", [0, 4096])
def test_restart_on_full_disk_fails_cleanly_then_recovers(node, small_fs, slack):
    n = on_data_fs(node(), small_fs)
    ballast = small_fs / "ballast"
    # Space that freeing later gives back: enough for the node to recover.
    with open(ballast, "wb") as f:
        f.write(b"\0" * (1536 << 10))
        os.fsync(f.fileno())
    n.start()
    acked = []
    conn, err = write_until_full(n, acked)
    assert err is not None, "the writer never hit a full disk"
    assert acked, "nothing was acknowledged before the disk was full"
    n.kill9()
    try:
        conn.close()
    except sqlite3.Error:
        pass
    filled = fill(small_fs / "ballast2")
    os.truncate(small_fs / "ballast2", max(0, filled - slack))

    # Restarted on the full disk: a clean, named failure, never a signal.
    log_before = len(n.log_text())
    n.start(wait=False)
    try:
        code = n.proc.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    log = n.log_text()[log_before:]
    if code is None:
        # Starting is acceptable only if it really serves; a full disk
        # must not be mistaken for a healthy start, so it should not.
        n.stop()
        pytest.fail(f"node did not exit on a full disk:\n{log}")
    n.stop()
    assert code > 0 and code != 128 + signal.SIGBUS, f"node exited with {code}:\n{log}"
    assert "no space" in log.lower(), log
    assert re.search(rf"level=error .*no space.* fs={re.escape(str(small_fs))} ", log), \
        f"no message naming the full file system:\n{log}"

    # Space freed: it starts, and every acknowledged row is there.
    ballast.unlink()
    (small_fs / "ballast2").unlink()
    n.start()
    c = n.connect()
    rows = {r[0] for r in c.execute("SELECT id FROM t")}
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.close()
    missing = set(acked) - rows
    assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {sorted(missing)[:5]}"


def test_shm_mapped_through_the_mount_has_no_holes(node, small_fs):
    """Clients map -shm through the mount and their stores reach the backing
    file only at writeback, whose failure nobody sees: the node allocates
    the backing file's blocks when SQLite extends it, so a full disk fails
    the extension instead of losing wal-index pages later."""
    n = on_data_fs(node(), small_fs)
    n.start()
    conn = sqlite3.connect(str(n.db()), timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("INSERT INTO t (v) VALUES (randomblob(100))")
    shm = n.data / "dbs" / "db" / "db-shm"
    st = os.stat(shm)
    # 1 KiB blocks: SQLite's one byte per 4 KiB page alone would leave 3 of
    # every 4 blocks unallocated until writeback.
    assert st.st_size >= 32768
    assert st.st_blocks * 512 >= st.st_size, f"backing -shm is sparse: {st.st_blocks * 512} of {st.st_size} bytes"
    conn.close()


def test_import_larger_than_the_free_space_stores_nothing(node, small_fs, tmp_path):
    """An import body with a Content-Length moves from the socket into the
    upload file with splice (http.c import_pull_body); when the file
    system runs out of space there, the reply is 507 and nothing is
    stored: the database keeps its state, no temp file is left, and a
    small import still works."""
    from test_bigio import cli_import, content, make_big, tmp_leftovers
    n = on_data_fs(node(), small_fs).start()
    small = make_big(tmp_path / "small.db", 300)
    big = make_big(tmp_path / "big.db", 9000)  # ~10 MB on an 8 MiB file system
    assert cli_import(n, "db", small).returncode == 0
    good = n.pos()
    for name in ("db", "new.db"):
        res = cli_import(n, name, big)
        assert res.returncode == 1 and "507" in res.stderr and "cannot store the upload" in res.stderr, res.stderr
    assert n.pos() == good
    assert content(n.db()) == content(small)
    assert not n.db("new.db").exists()
    # The temp file goes when the request completes, just after the reply.
    wait_until(lambda: tmp_leftovers(n) == [], timeout=10, msg=lambda: f"left: {tmp_leftovers(n)}")
    assert "cannot store the upload" in n.log_text()
    res = cli_import(n, "db", small)
    assert res.returncode == 0, res.stderr
    assert n.pos()[0] == good[0] + 1
