"""Several databases on one node at once: the way real applications use the
mount (an app database, a Celery broker, a cache...). Every journal mode,
FULL and NORMAL, writers on every database at the same time. One database
at a time hid a deadlock between databases that fsync concurrently."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import check_invariants, run

WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    path, mode, sync, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute("PRAGMA busy_timeout=60000")
    con.execute(f"PRAGMA journal_mode={mode}")
    con.execute(f"PRAGMA synchronous={sync}")
    con.execute("CREATE TABLE IF NOT EXISTS t(i INTEGER, v BLOB)")
    end = time.time() + secs
    n = 0
    while time.time() < end:
        con.execute("INSERT INTO t VALUES (?, randomblob(200))", (n,))
        n += 1
    print(n, flush=True)
""")


def run_writers(node, tmp_path, specs, secs):
    """Starts one writer process per (name, mode, sync) at once; returns
    {name: rows written}. A writer that does not finish within a generous
    bound fails the test with the node's log (a hang, not slowness)."""
    script = tmp_path / "mwriter.py"
    script.write_text(WRITER)
    procs = {name: subprocess.Popen([sys.executable, str(script), str(node.db(name)), mode, sync, str(secs)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, mode, sync in specs}
    counts, hung = {}, []
    deadline = time.time() + secs + 30
    for name, p in procs.items():
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            hung.append(name)
            continue
        assert p.returncode == 0, f"{name}: {err}"
        counts[name] = int(out.strip())
    if hung:
        # Leave no process in D state behind: kill the node, then the clients.
        node.kill9()
        for p in procs.values():
            p.kill()
        pytest.fail(f"writers hung on {hung} (finished: {counts}):\n{node.log_text()[-3000:]}")
    return counts


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_several_databases_sync_at_once(node, tmp_path, sync):
    """Two databases per journal mode, all written at once with single-row
    autocommit INSERTs: every writer finishes, every acknowledged row is
    there, and every database's chain holds."""
    n = node().start()
    specs = [(f"{mode}{k}.db", mode, sync) for mode in ("delete", "truncate", "persist", "wal") for k in (1, 2)]
    secs = float(os.environ.get("LITEFS_MULTIDB_SECONDS", "6"))
    counts = run_writers(n, tmp_path, specs, secs)
    for name, _, _ in specs:
        got = n.connect(name).execute("SELECT count(*) FROM t").fetchone()[0]
        assert got == counts[name], f"{name}: {got} rows, writer acknowledged {counts[name]}"
        check_invariants(n, name)
