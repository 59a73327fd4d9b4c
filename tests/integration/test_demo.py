"""`make demo` is the main job: run scripts/demo as a user would, check what
it claims, and stop it with `scripts/demo stop`."""
import os
import shlex
import subprocess

from conftest import LITEFS, ROOT, free_port, is_mounted


def test_demo_runs_restores_and_stops(tmp_path):
    port = free_port()
    env = dict(os.environ, DEMO_PORT=str(port), LITEFS_BIN=str(LITEFS),
               LITEFS_CLOUD_BIN=str(LITEFS.parent / "litefs-cloud"))
    demo = ROOT / "scripts" / "demo"
    try:
        r = subprocess.run([str(demo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        assert "attempt to write a readonly database" in out
        assert "5 orders on the replica" in out.split("Point-in-time restore")[1], out[-3000:]
        assert "both nodes restored" in out
        assert "Stop it with:  scripts/demo stop" in out
        # Every command it prints can be pasted into a shell: its words
        # (the SQL of sqlite3 is one) come back as they were run.
        shown = [l[2:] for l in r.stdout.splitlines() if l.startswith("$ ")]
        assert any(c.startswith("sqlite3 ") for c in shown), shown
        for cmd in shown:
            words = shlex.split(cmd)
            if words[0] == "sqlite3":
                assert len(words) == 3 and words[1].endswith(".db"), cmd
            if words[0] == "python3":
                assert len(words) == 3 and words[1] == "-c" and "sqlite3.connect(" in words[2], cmd
        mnt = ROOT / "build" / "demo"
        assert is_mounted(mnt / "primary" / "mnt") and is_mounted(mnt / "replica" / "mnt")
    finally:
        s = subprocess.run([str(demo), "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert s.returncode == 0, s.stdout + s.stderr
    assert not is_mounted(ROOT / "build" / "demo" / "primary" / "mnt")
    assert not is_mounted(ROOT / "build" / "demo" / "replica" / "mnt")


def test_demo_failover_runs_and_stops(tmp_path):
    """scripts/demo-failover (make demo-failover): etcd, three nodes, a
    kill -9 of the primary, a takeover, the old primary rejoining; it stops
    everything at the end."""
    port = free_port()
    env = dict(os.environ, DEMO_PORT=str(port), LITEFS_BIN=str(LITEFS),
               LITEFS_CLOUD_BIN=str(LITEFS.parent / "litefs-cloud"))
    demo = ROOT / "scripts" / "demo-failover"
    try:
        r = subprocess.run([str(demo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        assert "took over: the first write after the kill committed there" in out
        assert "orders (20 + 5 after the failover)" in out
        assert "role replica, 25 orders" in out
        assert "Killed" not in out
    finally:
        subprocess.run([str(demo), "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    for n in "abc":
        assert not is_mounted(ROOT / "build" / "demo-failover" / n / "mnt")
