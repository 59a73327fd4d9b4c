"""`exec` items with `if-primary: true` (a worker that runs only on the
primary: the Celery-worker case) on real nodes, and the refusal of shell
operators in `exec` commands by `litefs config check` and `litefs mount`.

The static lease fixes the role at start, so these tests cover a primary
and a replica as they start; the worker following a role that changes at
run time (promotion, demotion) is tested with a fake role source in
tests/unit/test_supervise.c.

Workers are found as children of the node in /proc (`$$` cannot be used
in a command: litefs.yml expands variables).
"""
import os
import signal
import textwrap
import time

from conftest import LITEFS, run, wait_until


def children(pid):
    """{pid: argv} of the live (not zombie) children of pid."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out[int(d)] = argv
    return out


def worker_pid(node, argv):
    """The pid of the node's child running exactly argv, or None."""
    for pid, a in children(node.proc.pid).items():
        if a == argv:
            return pid
    return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def polite_worker(marker):
    """A worker that writes "start" and, on SIGTERM, "term" before exiting."""
    return (f"sh -c 'trap \\\"echo term >> {marker}; exit 0\\\" TERM; echo start >> {marker}; "
            f"while true; do sleep 0.05; done'")


def words(path):
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def test_worker_runs_on_the_primary_only(cluster):
    c = cluster(n=2, start=False)
    for n in c.nodes:
        n.extra_config = textwrap.dedent(f"""
            exec:
              - cmd: "{polite_worker(n.base / 'worker.txt')}"
                if-primary: true
              - cmd: "sh -c 'echo cand >> {n.base / 'cand.txt'}'"
                if-candidate: true
              - cmd: "sleep 600"
        """)
        n.write_config()
    c.start()
    p, r = c.primary, c.replicas[0]
    wait_until(lambda: words(p.base / "worker.txt") == ["start"], msg="the worker on the primary")
    # The replica started its application (after its first sync)...
    wait_until(lambda: worker_pid(r, ["sleep", "600"]), msg="the replica's application")
    time.sleep(1)
    # ...but neither the worker nor the if-candidate item.
    assert words(r.base / "worker.txt") == []
    assert words(r.base / "cand.txt") == []
    assert words(p.base / "cand.txt") == ["cand"]
    assert "if-primary" not in r.log_text()
    # A stop of the primary stops its worker with SIGTERM.
    assert p.stop() == 128 + signal.SIGTERM
    assert words(p.base / "worker.txt") == ["start", "term"]


def test_crashed_worker_is_restarted_with_backoff(node):
    n = node(extra_config=textwrap.dedent("""
        exec:
          - cmd: "sleep 601"
            if-primary: true
          - cmd: "sleep 600"
    """))
    n.start()
    argv = ["sleep", "601"]
    pid = wait_until(lambda: worker_pid(n, argv), msg="the worker")
    gaps = []
    for _ in range(3):
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        new = wait_until(lambda: (lambda q: q if q and q != pid else None)(worker_pid(n, argv)),
                         timeout=15, interval=0.01, msg="the restarted worker")
        gaps.append(time.monotonic() - t0)
        pid = new
    print(f"\nrestart after kill -9: {', '.join(f'{g * 1000:.0f} ms' for g in gaps)}")
    # The backoff doubles from 1 s: 1, 2, 4 s (plus at most a 100 ms poll).
    for got, want in zip(gaps, (1.0, 2.0, 4.0)):
        assert got >= want - 0.05, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    log = n.log_text()
    assert log.count("if-primary worker exited; restarting it") == 3
    assert "code=137" in log and "restart_in_ms=1000" in log and "restart_in_ms=4000" in log
    # Only the application's exit ends the node.
    assert n.proc.poll() is None
    assert n.stop() == 128 + signal.SIGTERM


def test_stubborn_worker_is_killed_after_the_grace(node, tmp_path):
    marker = tmp_path / "worker.txt"
    n = node(extra_config=textwrap.dedent(f"""
        exec:
          - cmd: "sh -c 'trap \\"\\" TERM; echo up >> {marker}; while true; do sleep 0.05; done'"
            if-primary: true
    """))
    n.start()
    wait_until(lambda: words(marker) == ["up"], msg="the worker")
    pid = next(p for p, a in children(n.proc.pid).items() if a[:2] == ["sh", "-c"])
    t0 = time.monotonic()
    assert n.stop(timeout=60) == 0  # no application: the node's own status
    took = time.monotonic() - t0
    print(f"\nstop with a worker that ignores SIGTERM: {took:.1f} s")
    assert took >= 10.0
    assert not alive(pid)
    assert "did not stop within the grace period; killing it" in n.log_text()


def test_workers_stop_when_the_application_exits(node, tmp_path):
    marker = tmp_path / "worker.txt"
    n = node(extra_config=textwrap.dedent(f"""
        exec:
          - cmd: "{polite_worker(marker)}"
            if-primary: true
          - cmd: "sh -c 'sleep 1; exit 4'"
    """))
    n.start()
    assert n.proc.wait(30) == 4
    assert words(marker) == ["start", "term"]


# ---- shell operators ------------------------------------------------------

NO_SHELL = ("but exec commands run without a shell: each is split into arguments and started directly "
            "(LiteFS 0.5 silently drops everything from the operator on).")
CELERY_MSG = (
    "exec[0].cmd: \"celery -A proj worker &\" holds the shell operator '&', " + NO_SHELL +
    " So '&' cannot put a program in the background, and an item that never exits blocks the items after it. "
    "Give each program its own exec item; one with if-primary: true runs beside the application, only while "
    "this node is primary:\n"
    "    exec:\n"
    "      - cmd: \"celery -A proj worker\"\n"
    "        if-primary: true\n"
    "      - cmd: \"gunicorn app:app\"\n"
    "  or start a shell yourself: cmd: \"sh -c 'celery -A proj worker & exec gunicorn app:app'\"\n"
    "  (To pass '&' to the program as an argument, quote it.)\n")


def operator_config(tmp_path, body):
    cfg = tmp_path / "litefs.yml"
    cfg.write_text(f"fuse:\n  dir: {tmp_path / 'mnt'}\ndata:\n  dir: {tmp_path / 'data'}\n"
                   f"http:\n  addr: 127.0.0.1:1\n" + body)
    return cfg


def test_trailing_ampersand_is_refused_by_check_and_mount(tmp_path):
    cfg = operator_config(tmp_path, 'exec:\n  - cmd: "celery -A proj worker &"\n  - cmd: "gunicorn app:app"\n')
    r = run(LITEFS, "config", "check", "-config", cfg, check=False)
    assert r.returncode == 1
    assert r.stderr == f"{cfg}:8: {CELERY_MSG}litefs: configuration file {cfg} test failed\n"
    r = run(LITEFS, "mount", "-config", cfg, check=False, timeout=20)
    assert r.returncode == 1
    assert r.stderr == f"litefs mount: {cfg}:8: {CELERY_MSG}"
    assert not (tmp_path / "data").exists()  # refused before anything was touched


def test_suggested_config_is_valid(tmp_path):
    # The form the message suggests passes the check, and so does a
    # quoted operator, which is an ordinary byte of an argument.
    cfg = operator_config(tmp_path, textwrap.dedent("""\
        exec:
          - cmd: "celery -A proj worker"
            if-primary: true
          - cmd: "sh -c 'celery -A proj worker & exec gunicorn app:app'"
          - cmd: "echo 'a|b' \\"c && d\\""
          - cmd: "gunicorn app:app"
    """))
    r = run(LITEFS, "config", "check", "-config", cfg, check=False)
    assert r.returncode == 0, r.stderr
    assert '    if-primary: true\n' in r.stdout


def test_pipe_and_sequence_messages(tmp_path):
    cfg = operator_config(tmp_path, 'exec:\n  - cmd: "migrate && serve"\n  - cmd: "app | tee log"\n')
    r = run(LITEFS, "config", "check", "-config", cfg, check=False)
    assert r.returncode == 1
    assert (f"{cfg}:8: exec[0].cmd: \"migrate && serve\" holds the shell operator '&&', {NO_SHELL} "
            "Give each program its own exec item: items run in order, each but the last is waited for and "
            "must succeed:\n    exec:\n      - cmd: \"migrate\"\n      - cmd: \"serve\"\n"
            "  or start a shell yourself: cmd: \"sh -c 'migrate && serve'\"\n") in r.stderr
    assert (f"{cfg}:9: exec[1].cmd: \"app | tee log\" holds the shell operator '|', {NO_SHELL} "
            "Pipes, redirections and conditionals need a shell: cmd: \"sh -c 'app | tee log'\"\n") in r.stderr
