"""Shared fixtures for the integration tests.

Everything here runs the real binaries: `litefs mount` on a real FUSE mount,
the sqlite3 CLI and Python's sqlite3 module (of /usr/bin/python3) as clients.
Ports are picked free on 127.0.0.1; every test gets its own directories.
"""
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LITEFS = Path(os.environ.get("LITEFS_BIN", ROOT / "build" / "litefs"))
TESTDATA = Path(os.environ.get("LITEFS_TESTDATA", ROOT.parent / "shared" / "testdata"))


_port_next = None


def free_port():
    """A free loopback port for a server a test starts later. Taken below
    the kernel's ephemeral range (32768+), from a range of its own per
    pytest-xdist worker: a port the kernel hands out for bind(0) or as an
    outgoing connection's source can be taken by another worker's process
    between this check and the server's own bind (seen in CI as "Address
    already in use")."""
    global _port_next
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    idx = int(worker[2:]) if worker[2:].isdigit() else 0
    lo = 10000 + (idx % 4) * 5000
    if _port_next is None:
        _port_next = lo + (os.getpid() * 7919) % 5000
    for _ in range(5000):
        port = _port_next
        _port_next = lo + (_port_next - lo + 1) % 5000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d..%d" % (lo, lo + 4999))


def local_objects_only(why):
    """Skips a test that looks into the local backend's objects directory
    when the cloud suite runs against S3 (LITEFS_TEST_CLOUD_STORAGE=s3)."""
    if os.environ.get("LITEFS_TEST_CLOUD_STORAGE") == "s3":
        pytest.skip(f"local backend only: {why}")


def run(*args, check=True, **kw):
    """Runs a command, returning CompletedProcess with text output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    r = subprocess.run([str(a) for a in args], **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(str(a) for a in args)[:300]} exited {r.returncode}:\n"
                             f"{r.stdout[-2000:] if r.stdout else ''}{r.stderr[-2000:] if r.stderr else ''}")
    return r


def is_mounted(path):
    path = os.path.realpath(str(path))
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def describe_process(pid):
    """What a (possibly hung) process is doing, from /proc: state, wchan,
    kernel stack and open files (where each descriptor points tells which
    mount, if any, it is blocked on). For failure messages."""
    out = [f"  pid {pid}:"]

    def read(name):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                return f.read().strip()
        except OSError as e:
            return f"<{e.strerror}>"
    for line in read("status").splitlines():
        if line.startswith(("State:", "Name:")):
            out.append("    " + line)
    out.append("    wchan: " + read("wchan"))
    out.append("    cmdline: " + read("cmdline").replace("\0", " "))
    out.append("    stack:\n" + "\n".join("      " + l for l in read("stack").splitlines()))
    try:
        fds = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)
    except OSError as e:
        fds = []
        out.append(f"    fds: <{e.strerror}>")
    for fd in fds:
        try:
            out.append(f"    fd {fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return "\n".join(out)


def exec_size_report(argv, env):
    """What execve measures against its limits, for a failed launch: E2BIG
    means argv plus environment over the limit (a quarter of RLIMIT_STACK,
    at least 128 KiB) or one string over 128 KiB (MAX_ARG_STRLEN); the
    kernel also reports E2BIG when it cannot get a page for those strings
    in the new image (memory), which sizes alone cannot explain."""
    import resource
    strs = [a.encode() for a in argv] + [f"{k}={v}".encode() for k, v in env.items()]
    total = sum(len(x) + 1 + 8 for x in strs)
    big = sorted(((len(k) + len(v), k) for k, v in env.items()), reverse=True)[:5]
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = " ".join(l.split()[0] + l.split()[1] for l in f if l.startswith(("MemAvailable", "Committed_AS")))
    except OSError:
        pass
    return (f"  argv {sum(len(a) + 1 for a in argv)} bytes, {len(argv)} strings; environment {len(env)} "
            f"variables, argv+env with pointers {total} bytes; largest variables {big}; "
            f"RLIMIT_STACK soft {soft}; this process's os.environ has {len(os.environ)} variables; {mem}")


class Node:
    """One `litefs mount` process with its own config, data and mount dirs."""

    def __init__(self, base, name="node", extra_config="", env=None):
        self.base = Path(base) / name
        self.base.mkdir(parents=True, exist_ok=True)
        self.mnt = self.base / "mnt"
        self.data = self.base / "data"
        self.port = free_port()
        self.config = self.base / "litefs.yml"
        self.log = self.base / "litefs.log"
        self.extra_config = extra_config
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.write_config()

    def write_config(self):
        self.config.write_text(
            f"fuse:\n  dir: {self.mnt}\n"
            f"data:\n  dir: {self.data}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            f"lease:\n  type: static\n  candidate: true\n" + self.extra_config
        )

    def start(self, args=(), wait=True, env=None):
        e = dict(self.env, **(env or {}))
        self.logf = open(self.log, "a")
        argv = [str(LITEFS), "mount", "-config", str(self.config), *args]
        try:
            self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=e)
        except OSError as err:
            self.logf.close()
            raise OSError(err.errno, f"{err.strerror}: launching {argv[0]}\n{exec_size_report(argv, e)}") from err
        if wait:
            self.wait_mounted()
        return self

    def wait_mounted(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if is_mounted(self.mnt):
                try:
                    # A stale mount left by a killed node is listed too but
                    # answers ENOTCONN; wait for a live one.
                    os.listdir(self.mnt)  # stat may be answered from cache
                    return
                except OSError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"litefs exited with {self.proc.returncode}:\n{self.log_text()}")
            time.sleep(0.02)
        raise RuntimeError(f"mount did not appear:\n{self.log_text()}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10 if sig == signal.SIGKILL else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                if not self._abort_stuck_mount():
                    self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self.logf.close()
        if sig == signal.SIGKILL or is_mounted(self.mnt):
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        return code

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def _abort_stuck_mount(self):
        """A killed node that does not exit: one of its threads waits for an
        answer from its own mount (a FUSE request already read by a killed
        worker is waited for uninterruptibly). Fixed by node/ownmount.c
        (docs/mount.md "A node killed while it calls into its own mount
        exits"); should it happen again, abort the connection as an
        operator would (/sys/fs/fuse/connections/N/abort), warn, and go on."""
        try:
            self.proc.wait(5)
            return True
        except subprocess.TimeoutExpired:
            pass
        minor = None
        for line in open("/proc/self/mountinfo"):
            f = line.split()
            if f[4] == str(self.mnt):
                minor = f[2].split(":")[1]
        if minor is None:
            return False
        warnings.warn(f"{self.name}: killed node stuck on its own mount; FUSE connection {minor} aborted")
        with open(f"/sys/fs/fuse/connections/{minor}/abort", "w") as a:
            a.write("1")
        self.proc.wait(30)
        return True

    def log_text(self):
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    # ---- the database and its LTX chain -------------------------------

    def db(self, name="db"):
        return self.mnt / name

    def pos(self, name="db"):
        txid, chk = (self.mnt / f"{name}-pos").read_text().strip().split("/")
        return int(txid, 16), chk

    def ltx_dir(self, name="db"):
        return self.data / "dbs" / name / "ltx"

    def segments(self, name="db"):
        """The node's LTX segments (ltxlog.h), oldest first."""
        return sorted(self.ltx_dir(name).glob("*.ltxlog"))

    def ltx_files(self, name="db"):
        """One LTX file per transaction, in TXID order: the records of the
        node's segments, written out by `litefs ltx split` into a fresh
        directory (so every call sees the current state)."""
        segs = self.segments(name)
        self._splits = getattr(self, "_splits", 0) + 1
        out = self.base / f"split-{self._splits}"
        out.mkdir()
        if segs:
            run(LITEFS, "ltx", "split", "-o", out, *segs)
        return sorted(out.glob("*.ltx"))

    def connect(self, name="db", **kw):
        kw.setdefault("timeout", 30)
        return sqlite3.connect(str(self.db(name)), **kw)


def db_checksum(path):
    return run(LITEFS, "ltx", "checksum", path).stdout.strip()


def run_batched(args, files, batch=2000):
    """Runs args + files in batches: a busy database has more LTX files than
    one command line can hold (exec fails with E2BIG)."""
    files = list(files)
    for i in range(0, len(files), batch):
        run(*args, *files[i:i + batch])


def check_invariants(node, name="db", tmp=None):
    """The invariants of the mount (db.c): integrity, a verifying chain,
    byte-exact replay of the whole chain, and -pos equal to the database's
    checksum. Requires that no file was removed by retention."""
    db = node.db(name)
    out = run("sqlite3", db, "PRAGMA integrity_check").stdout.strip()
    assert out == "ok", out
    run_batched([LITEFS, "ltx", "verify"], node.segments(name))
    files = node.ltx_files(name)
    assert files, "no LTX files"
    run_batched([LITEFS, "ltx", "verify"], files)
    # The chain is contiguous from TXID 1.
    expect = 1
    for f in files:
        lo, hi = (int(x, 16) for x in f.stem.split("-"))
        assert lo == expect, f"gap before {f.name}"
        expect = hi + 1
    txid, chk = node.pos(name)
    assert txid == expect - 1
    replay = Path(tmp or node.base) / f"replay-{name}"
    replay.unlink(missing_ok=True)
    run_batched([LITEFS, "ltx", "apply", "-db", replay], files)
    assert db_checksum(replay) == chk, "replayed chain does not match -pos"
    # The logical database is the file plus its committed WAL frames; a
    # checkpoint (not a transaction: it adds no LTX) makes the file alone
    # hold it, and then it must equal the replay byte for byte.
    run("sqlite3", db, "PRAGMA wal_checkpoint(TRUNCATE)")
    assert node.pos(name) == (txid, chk), "a checkpoint must not add a transaction"
    assert replay.read_bytes() == db.read_bytes(), "replay is not byte-identical to the database"
    return replay


@pytest.fixture
def node(tmp_path):
    nodes = []

    def make(name="node", **kw):
        n = Node(tmp_path, name, **kw)
        nodes.append(n)
        return n

    make.all = nodes
    yield make
    for n in nodes:
        try:
            n.stop()
        except Exception:
            pass


# ---- clusters (replication, static lease) -------------------------------

PRIMARY_HOST = "node1"


class ClusterNode(Node):
    """A node of a static-lease cluster. With the static lease every node's
    `lease.hostname` and `lease.advertise-url` name the primary; only the
    primary is a candidate. `primary_port` is the primary's HTTP port (None:
    this node is the primary and advertises its own port). `data`, `http`
    and `lease` are extra keys for those sections; `extra_config` is
    appended at the top level."""

    def __init__(self, base, name, candidate=True, primary_port=None, hostname=PRIMARY_HOST,
                 data=None, http=None, lease=None, extra_config="", env=None):
        self.name = name
        self.candidate = candidate
        self.primary_port = primary_port
        self.hostname = hostname
        self.data_keys = dict(data or {})
        self.http_keys = dict(http or {})
        self.lease_keys = dict(lease or {})
        super().__init__(base, name, extra_config=extra_config, env=env)

    @staticmethod
    def _keys(d):
        return "".join(f"  {k}: {v}\n" for k, v in d.items())

    def write_config(self):
        port = self.primary_port or self.port
        self.config.write_text(
            f"fuse:\n  dir: {self.mnt}\n"
            f"data:\n  dir: {self.data}\n" + self._keys(self.data_keys) +
            f"http:\n  addr: 127.0.0.1:{self.port}\n" + self._keys(self.http_keys) +
            f"lease:\n  type: static\n  candidate: {'true' if self.candidate else 'false'}\n"
            f"  hostname: {self.hostname}\n  advertise-url: http://127.0.0.1:{port}\n"
            + self._keys(self.lease_keys) + self.extra_config)

    def make_primary(self, hostname=PRIMARY_HOST):
        """Rewrites the config so that the node is the primary (takes effect
        at the next start)."""
        self.candidate, self.primary_port, self.hostname = True, None, hostname
        self.write_config()

    def make_replica(self, primary_port, hostname=PRIMARY_HOST):
        """Rewrites the config so that the node follows the primary on
        primary_port (takes effect at the next start)."""
        self.candidate, self.primary_port, self.hostname = False, primary_port, hostname
        self.write_config()

    # ---- status files ---------------------------------------------------

    def pos_or_none(self, name="db"):
        try:
            return self.pos(name)
        except (OSError, ValueError):
            return None

    def primary_file(self):
        """Contents of `.primary`, or None when it is absent."""
        try:
            return (self.mnt / ".primary").read_text()
        except FileNotFoundError:
            return None

    def lag_ms(self):
        """`.lag` in milliseconds; its format is `%+010d\\n`."""
        text = (self.mnt / ".lag").read_text()
        assert re.fullmatch(r"[+-]\d{9}\n", text), f"{self.name}: bad .lag {text!r}"
        return int(text)

    def log_tail(self, lines=15):
        return "\n".join("    " + l for l in self.log_text().splitlines()[-lines:])

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def info(self):
        with urllib.request.urlopen(self.url("/info"), timeout=10) as r:
            return json.loads(r.read())


class Cluster:
    """One primary (`nodes[0]`, hostname node1) and n-1 replicas following
    it, each with its own mount, data dir and port on loopback. Keyword
    arguments (data=, http=, lease=, extra_config=) apply to every node."""

    def __init__(self, base, n=3, **kw):
        self.base = Path(base)
        self.kw = kw
        self.primary = ClusterNode(base, "node1", candidate=True, **kw)
        self.replicas = [ClusterNode(base, f"node{i + 1}", candidate=False,
                                     primary_port=self.primary.port, **kw) for i in range(1, n)]

    @property
    def nodes(self):
        return [self.primary, *self.replicas]

    def add_replica(self, name, **kw):
        r = ClusterNode(self.base, name, candidate=False, primary_port=self.primary.port,
                        **dict(self.kw, **kw))
        self.replicas.append(r)
        return r

    def start(self):
        self.primary.start()
        for r in self.replicas:
            r.start()
        return self

    def stop(self):
        for n in reversed(self.nodes):
            try:
                n.stop()
            except Exception:
                pass

    def positions(self, name="db", nodes=None):
        return {n.name: n.pos_or_none(name) for n in (nodes or self.nodes)}

    def describe(self, name="db", nodes=None):
        """Every node's position and the end of its log, for failure messages."""
        out = []
        for n in (nodes or self.nodes):
            role = "primary" if n.candidate else "replica"
            alive = "running" if n.proc is not None and n.proc.poll() is None else "not running"
            out.append(f"  {n.name} ({role}, {alive}): {name}-pos={n.pos_or_none(name)}\n{n.log_tail()}")
        return "\n".join(out)

    def wait_synced(self, name="db", timeout=10, replicas=None):
        """Waits until every replica's `-pos` equals the primary's (the
        primary's position is read again on every round, so a writer may
        still be running); returns that position. Fails showing all
        positions and log tails."""
        replicas = self.replicas if replicas is None else replicas
        deadline = time.time() + timeout
        while True:
            want = self.primary.pos_or_none(name)
            got = [r.pos_or_none(name) for r in replicas]
            if want is not None and all(g == want for g in got):
                return want
            if time.time() > deadline:
                raise AssertionError(
                    f"replicas did not reach the primary's position of {name!r} within {timeout}s "
                    f"(primary {want}, replicas {got}):\n" + self.describe(name, [self.primary, *replicas]))
            time.sleep(0.01)


def wait_until(cond, timeout=10, interval=0.02, msg="condition"):
    """Polls cond() until it returns a true value (returned); fails with msg
    (a string or a callable giving one) after timeout seconds."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for " + (msg() if callable(msg) else msg))
        time.sleep(interval)


@pytest.fixture
def cluster(tmp_path):
    """cluster(n=3, start=True, **kw) -> a started Cluster (see Cluster);
    every node is stopped at the end of the test."""
    made = []

    def make(n=3, start=True, **kw):
        c = Cluster(tmp_path, n, **kw)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    for c in made:
        c.stop()


# ---- litefs-cloud (the backup service) ----------------------------------

LITEFS_CLOUD = Path(os.environ.get("LITEFS_CLOUD_BIN", LITEFS.parent / "litefs-cloud"))


class CloudServer:
    """One `litefs-cloud serve` process on a free loopback port with its own
    data directory. Admin commands (cluster/token) run against the same
    data directory; user commands get -url."""

    def __init__(self, base, name="cloud", args=(), env=None, storage=None):
        self.base = Path(base) / name
        self.base.mkdir(parents=True, exist_ok=True)
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.base / "litefs-cloud.log"
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        for k in list(self.env):
            if k.startswith(("LITEFS_CLOUD_", "AWS_")):
                del self.env[k]
        # storage: (args, env) of an object store (S3Server.storage), given
        # to serve and to the admin commands alike.
        self.storage_args = list(storage[0]) if storage else []
        self.env.update(storage[1] if storage else {})
        self.proc = None

    def start(self, wait=True):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [str(LITEFS_CLOUD), "serve", "-addr", f"127.0.0.1:{self.port}", "-data-dir", str(self.data),
             *self.storage_args, *self.args], stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"litefs-cloud exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"litefs-cloud not ready on {self.url}:\n{self.log_text()[-3000:]}")

    def healthy(self):
        with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
            return r.status == 200 and json.loads(r.read()) == {"ok": True}

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args, check=True, token=None, **kw):
        """Runs `litefs-cloud ARGS`; admin commands get -data-dir, user
        commands -url (and -token when given)."""
        extra = []
        if args and args[0] in ("cluster", "token"):
            extra = ["-data-dir", str(self.data), *self.storage_args]
        elif args and args[0] in ("restore", "export", "info", "list"):
            extra = ["-url", self.url] + (["-token", token] if token else [])
        kw.setdefault("env", self.env)
        return run(LITEFS_CLOUD, *args, *extra, check=check, **kw)

    def create_cluster(self, name):
        """Creates a cluster; returns its token."""
        return self.cli("cluster", "create", name).stdout.strip()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        return self.proc.returncode if self.proc else None


@pytest.fixture
def cloud(tmp_path, request):
    """cloud(name="cloud", args=(), start=True) -> a CloudServer on a free
    loopback port with its own data directory; stopped at the end. With
    LITEFS_TEST_CLOUD_STORAGE=s3 every server keeps its objects in a new
    bucket of a shared s3rver instead (the whole cloud suite over S3)."""
    made = []
    s3 = request.getfixturevalue("s3server") if os.environ.get("LITEFS_TEST_CLOUD_STORAGE") == "s3" else None

    def make(name="cloud", args=(), start=True, **kw):
        if s3 is not None and "storage" not in kw:
            kw["storage"] = s3.storage(s3.create_bucket())
        s = CloudServer(tmp_path, name, args=args, **kw)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in made:
        try:
            s.stop()
        except Exception:
            pass


# ---- S3-compatible object servers (docs/cloud-s3.md) -----------

S3RVER = ROOT / ".deps" / "npm" / "node_modules" / ".bin" / "s3rver"


def moto_python():
    """A Python that has moto (the pyenv one here; not /usr/bin/python3),
    or None. LITEFS_TEST_MOTO_PYTHON names one explicitly."""
    cands = [os.environ.get("LITEFS_TEST_MOTO_PYTHON")]
    for d in os.environ.get("PATH", "").split(":"):
        cands.append(os.path.join(d, "python3"))
    cands.append(os.path.expanduser("~/.pyenv/shims/python3"))
    for c in cands:
        if c and os.access(c, os.X_OK) and os.path.realpath(c) != "/usr/bin/python3.11":
            r = subprocess.run([c, "-c", "import moto.server"], capture_output=True)
            if r.returncode == 0:
                return c
    return None


class S3Server:
    """An S3-compatible server on a free loopback port: "s3rver" (npm,
    installed by scripts/install-deps; does not check signatures) or "moto"
    (where a Python with moto exists; checks SigV4 once enforce_auth() ran).
    Buckets are made with curl's own SigV4 signing."""

    def __init__(self, base, kind="s3rver"):
        self.kind = kind
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.key, self.secret = ("S3RVER", "S3RVER") if kind == "s3rver" else ("test", "test")
        self.n_buckets = 0
        self.logf = open(self.base / f"{kind}.log", "a")
        if kind == "s3rver":
            env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
            cmd = [str(S3RVER), "-d", str(self.base / "data"), "-a", "127.0.0.1", "-p", str(self.port), "--silent"]
        else:
            env = dict(os.environ)
            cmd = [moto_python(), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        (self.base / "data").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"{kind} did not start: {(self.base / f'{kind}.log').read_text()[-2000:]}")
                time.sleep(0.1)

    def curl(self, method, path, service="s3", data=None, key=None, secret=None):
        args = ["curl", "-sS", "--aws-sigv4", f"aws:amz:us-east-1:{service}",
                "--user", f"{key or self.key}:{secret or self.secret}", "-X", method,
                "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-w", "\n%{http_code}"]
        if data is not None:
            args += ["-H", "Content-Type: application/x-www-form-urlencoded", "--data", data]
        out = run(*args, self.endpoint + path).stdout
        body, _, code = out.rpartition("\n")
        return int(code), body

    def create_bucket(self, name=None):
        self.n_buckets += 1
        name = name or f"bkt-{os.getpid()}-{self.n_buckets}"
        code, body = self.curl("PUT", "/" + name)
        assert code == 200, (code, body)
        return name

    def enforce_auth(self):
        """moto only: makes an IAM user with an access key allowed s3:*,
        then turns on signature checks (requests before it were free)."""
        assert self.kind == "moto"
        q = "&Version=2010-05-08"
        self.curl("POST", "/", "iam", "Action=CreateUser&UserName=lfsc" + q)
        code, body = self.curl("POST", "/", "iam", "Action=CreateAccessKey&UserName=lfsc" + q)
        assert code == 200, body
        self.key = re.search(r"<AccessKeyId>([^<]+)<", body).group(1)
        self.secret = re.search(r"<SecretAccessKey>([^<]+)<", body).group(1)
        pol = urllib.parse.quote('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}')
        code, body = self.curl("POST", "/", "iam", f"Action=PutUserPolicy&UserName=lfsc&PolicyName=all&PolicyDocument={pol}" + q)
        assert code == 200, body
        with urllib.request.urlopen(urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=b"0",
                                                           headers={"Content-Type": "text/plain"},
                                                           method="POST")) as r:
            assert r.status == 200

    def storage(self, bucket, prefix=None):
        """(args, env) for CloudServer(storage=...)."""
        args = ["-s3-bucket", bucket, "-s3-endpoint", self.endpoint]
        if prefix:
            args += ["-s3-prefix", prefix]
        return args, {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


@pytest.fixture(scope="session")
def s3server(tmp_path_factory):
    """One s3rver for the session (skips when scripts/install-deps has not
    installed it)."""
    if not S3RVER.exists():
        pytest.skip("s3rver is not installed (scripts/install-deps installs it into .deps/npm)")
    srv = S3Server(tmp_path_factory.mktemp("s3rver"))
    yield srv
    srv.stop()


class TlsFront(threading.Thread):
    """A TLS-terminating front on 127.0.0.1 for a plain-TCP service on
    backend_port, as stunnel or nginx's stream module would be: it decrypts
    and passes the bytes both ways unchanged (an HTTP request's Host and
    Origin included). With ca, a client certificate signed by it is
    required; refused handshakes are counted. start() it, close() it."""

    def __init__(self, backend_port, cert, key, ca=None):
        super().__init__(daemon=True)
        self.backend = backend_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if ca:
            self.ctx.load_verify_locations(ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.refused = 0

    @staticmethod
    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self, raw):
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        try:
            back = socket.create_connection(("127.0.0.1", self.backend))
        except OSError:
            tls.close()
            return
        threading.Thread(target=self.pipe, args=(back, tls), daemon=True).start()
        self.pipe(tls, back)

    def run(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def close(self):
        self.sock.close()
