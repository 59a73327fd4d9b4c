"""Guards against operator mistakes (issue 16): a second node on a running
node's data or mount directory, a mount directory that is a file, failed
copies that used to leave phantom databases behind, names that cannot
cross the API unchanged, and admin commands pointed at no service."""
import os
import subprocess
import time

import pytest

from conftest import LITEFS, Node, run, wait_until


def cli(node, sql, name="db", check=True):
    return run("sqlite3", "-bail", node.db(name), sql, check=check)


def start_refused(n, timeout=20):
    """Starts n expecting it to exit on its own; returns (code, log)."""
    n.start(wait=False)
    try:
        code = n.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        n.stop()
        raise AssertionError(f"second node was not refused:\n{n.log_text()}")
    n.proc = None
    n.logf.close()
    return code, n.log_text()


# ---- 1. one node per data directory -------------------------------------

def test_second_node_on_same_data_dir_is_refused(node):
    first = node("first").start()
    cli(first, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    pos = first.pos()
    second = node("second")
    second.data = first.data
    second.write_config()
    code, log = start_refused(second)
    assert code != 0
    assert f"data.dir {first.data} is in use by another litefs node (pid {first.proc.pid})" in log, log
    assert not (first.data / "dbs" / "db" / "clean").exists(), "the refused node wrote a clean marker"
    assert "database loaded" not in log, "the refused node loaded the first node's databases"
    # The first node is untouched and keeps working.
    cli(first, "INSERT INTO t VALUES (2);")
    assert first.pos()[0] == pos[0] + 1
    assert cli(first, "SELECT count(*) FROM t").stdout.strip() == "2"
    # Once the first node stops, the directory is free again.
    assert first.stop() == 0
    second.start()
    assert cli(second, "SELECT count(*) FROM t").stdout.strip() == "2"


# ---- 2. fuse.dir: a live mount or a file --------------------------------

def test_second_mount_over_live_fuse_dir_is_refused(node):
    first = node("first").start()
    cli(first, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    second = node("second")
    second.mnt = first.mnt
    second.write_config()
    code, log = start_refused(second)
    assert code != 0
    assert "already mounted" in log and str(first.mnt) in log, log
    # The first node's mount is still the one answering.
    assert sorted(os.listdir(first.mnt)) == ["db", "db-pos"]
    cli(first, "INSERT INTO t VALUES (2);")
    assert cli(first, "SELECT count(*) FROM t").stdout.strip() == "2"


def test_fuse_dir_that_is_a_file_is_refused(node):
    n = node()
    n.mnt.write_text("not a directory\n")
    code, log = start_refused(n)
    assert code != 0
    assert "not a directory" in log and str(n.mnt) in log, log
    assert n.mnt.read_text() == "not a directory\n"
    with open("/proc/self/mounts") as f:
        assert not any(line.split()[1] == str(n.mnt) for line in f)
