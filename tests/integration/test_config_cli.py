"""`litefs config check`: the real binary on real-world configs.

Self-contained (no fixtures from conftest.py): the binary is $LITEFS_BIN or
build/litefs at the repository root, the corpus is
$LITEFS_TESTDATA/real-configs or ../shared/testdata/real-configs. Every run
gets an explicit environment so results do not depend on the caller's.
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LITEFS_BIN", ROOT / "build" / "litefs")).resolve()
CORPUS = Path(os.environ.get("LITEFS_TESTDATA", ROOT.parent / "shared" / "testdata")) / "real-configs"

FLY_ENV = {
    "FLY_REGION": "ord",
    "PRIMARY_REGION": "ord",
    "FLY_APP_NAME": "myapp",
    "FLY_ALLOC_ID": "148e21ea7a5e89",
    "HOSTNAME": "148e21ea7a5e89",
    "FLY_CONSUL_URL": "https://consul.example.net/myapp/",
    "INTERNAL_PORT": "8080",
    "PORT": "8081",
    "LITEFS_DIR": "/litefs",
    "DATABASE_FILENAME": "sqlite.db",
    "DATA_DIR": "/data",
}


def corpus(num):
    found = sorted(CORPUS.glob(f"{num:02d}-*"))
    assert found, f"corpus file {num:02d} not found in {CORPUS} (set LITEFS_TESTDATA)"
    return found[0]


def check(*args, env=None, cwd=None):
    """Runs `litefs config check ARGS` with only PATH (plus env) set."""
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run make first (or set LITEFS_BIN)")
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    e.update(env or {})
    return subprocess.run([str(BIN), "config", "check", *map(str, args)], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=30)


# Valid files; the ones that use consul (1, 13, 19, 21, 28) are refused by
# `litefs mount` of this build, and the check says so (exit 3).
@pytest.mark.parametrize("num", [1, 2, 7, 13, 19, 21, 27, 28])
def test_accepted_real_configs(num):
    path = corpus(num)
    r = check("-config", path, env=FLY_ENV)
    if num in (1, 13, 19, 21, 28):
        assert r.returncode == 3, r.stderr
        assert f"configuration file {path} is valid, but not supported by this build: " in r.stderr
        assert "test is successful" not in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert f"configuration file {path} test is successful" in r.stderr
    assert r.stdout.startswith(f"# effective configuration of {path}")
    assert "\nfuse:\n  dir: " in r.stdout
    assert "\nlease:\n  type: " in r.stdout


def test_effective_values_and_defaults():
    r = check("-config", corpus(2), env={})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # candidate: $IS_PRIMARY with IS_PRIMARY unset keeps the default.
    assert '\n  candidate: true\n' in out
    assert '\n  type: "static"\n' in out
    # Defaults are printed.
    assert '\n  addr: ":20202"\n' in out
    assert '\n  retention: "10m"\n' in out
    r = check("-config", corpus(2), env={"IS_PRIMARY": "false"})
    assert '\n  candidate: false\n' in r.stdout
    # 28: if-primary is parsed.
    r = check("-config", corpus(28), env=FLY_ENV)
    assert '    if-primary: true\n' in r.stdout


def test_printed_config_checks_again(tmp_path):
    # 21 is valid but uses consul (exit 3): it still prints the effective
    # configuration, which reads back the same.
    r = check("-config", corpus(21), env=FLY_ENV)
    assert r.returncode == 3, r.stderr
    printed = tmp_path / "printed.yml"
    printed.write_text(r.stdout)
    r2 = check("-no-expand-env", "-config", printed)
    assert r2.returncode == 3, r2.stderr
    assert r2.stdout.split("\n", 1)[1] == r.stdout.split("\n", 1)[1]


@pytest.mark.parametrize("num,line,text", [
    (29, 4, 'unknown key "mount-dir" (pre-0.4 layout; now spelled fuse.dir)'),
    (29, 44, 'unknown key "consul"'),
    (31, 5, 'unknown key "static"'),
    (35, 16, 'unknown key "consul"'),
    (36, 4, 'unknown key "mount"'),
    (37, 15, 'unknown key "rules"'),
    (38, 24, 'unknown key "lease.timeout"'),
    (39, 21, "exec[1].cmd: expected a string, got a list"),
    (40, 26, "lease.candidate: expected a boolean"),
])
def test_rejected_real_configs(num, line, text):
    path = corpus(num)
    for env in ({}, FLY_ENV):
        r = check("-config", path, env=env)
        assert r.returncode == 1, r.stderr
        assert f"{path}:{line}: {text}" in r.stderr
        assert f"configuration file {path} test failed" in r.stderr
        assert r.stdout == ""


def test_broken_file_names_key_and_line(tmp_path):
    f = tmp_path / "litefs.yml"
    f.write_text("fuse:\n  dir: /litefs\n  dirr: /x\ndata:\n  dir: /var/lib/litefs\n"
                 "lease:\n  type: static\n  type: etcd\n  ttl: 10\n")
    r = check("-config", f)
    assert r.returncode == 1
    assert f'{f}:3: unknown key "fuse.dirr" (did you mean "dir"?)' in r.stderr
    assert f'{f}:8: duplicate key "lease.type" (already defined at line 7)' in r.stderr
    assert f'{f}:9: unknown key "lease.ttl"' in r.stderr

    f.write_text("fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\n  retention: 60\n")
    r = check("-config", f)
    assert r.returncode == 1
    assert f"{f}:5: data.retention: expected a duration string" in r.stderr

    f.write_text("fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\nlease:\n  type: fly\n")
    r = check("-config", f)
    assert r.returncode == 1
    assert f'{f}:6: lease.type: unknown lease type "fly"' in r.stderr


def test_journal_passthrough_only_with_a_static_lease(tmp_path):
    """fuse.passthrough can corrupt a database at a demotion
    (docs/mount.md): refused with a lease that moves, accepted with a
    static one."""
    f = tmp_path / "litefs.yml"
    etcd = ("lease:\n  type: etcd\n  advertise-url: http://127.0.0.1:20202\n"
            "  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n")
    f.write_text("fuse:\n  dir: /litefs\n  passthrough: true\ndata:\n  dir: /var/lib/litefs\n" + etcd)
    r = check("-config", f)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fuse.passthrough: cannot be used with lease.type etcd" in r.stderr, r.stderr
    f.write_text("fuse:\n  dir: /litefs\n  passthrough: false\ndata:\n  dir: /var/lib/litefs\n" + etcd)
    assert check("-config", f).returncode == 0
    f.write_text("fuse:\n  dir: /litefs\n  passthrough: true\ndata:\n  dir: /var/lib/litefs\n"
                 "lease:\n  type: static\n")
    r = check("-config", f)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validation_failure_in_empty_env():
    # 09's data.dir is "${DATA_DIR}/litefs": "/litefs" without DATA_DIR, the
    # same as fuse.dir.
    r = check("-config", corpus(9), env={})
    assert r.returncode == 1
    assert "data.dir: must differ from fuse.dir" in r.stderr
    # With the environment it is valid (it uses consul: exit 3, not 1).
    r = check("-config", corpus(9), env=FLY_ENV)
    assert r.returncode == 3 and "must differ" not in r.stderr, r.stderr


def test_unsupported_features_are_reported_and_fail_the_check(tmp_path):
    # What `litefs mount` refuses fails the check (exit 3), what it ignores
    # is a warning.
    r = check("-config", corpus(1), env=FLY_ENV)
    assert r.returncode == 3, r.stderr
    assert "unsupported: " in r.stderr
    # Consul is refused with the etcd lines that replace the user's block.
    assert "lease.type: consul (line 89) is not supported; this build elects the primary through etcd" in r.stderr
    assert "type: etcd" in r.stderr
    assert "proxy is not supported yet" not in r.stderr  # the proxy landed (docs/proxy.md)
    assert "warning: " in r.stderr and "tracing.path is ignored" in r.stderr
    assert r.stdout.startswith("# effective configuration")
    # etcd is supported: a complete block passes; one without the URL the
    # other nodes replicate from fails, and the mount refuses it the same way.
    f = tmp_path / "etcd.yml"
    f.write_text("fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\nlease:\n  type: etcd\n"
                 "  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n")
    r = check("-config", f)
    assert r.returncode == 1, r.stderr
    assert "lease.advertise-url: required when lease.type is etcd" in r.stderr
    m = subprocess.run([str(BIN), "mount", "-config", str(f)], capture_output=True, text=True, timeout=30)
    assert m.returncode == 1 and "lease.advertise-url: required when lease.type is etcd" in m.stderr, m.stderr
    f.write_text("fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\nlease:\n  type: etcd\n"
                 "  advertise-url: \"http://n1:20202\"\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n")
    r = check("-config", f)
    assert r.returncode == 0, r.stderr
    r = check("-config", corpus(6), env=FLY_ENV)
    assert "backup" not in r.stderr  # litefs-cloud backups are supported
    assert '"{ANDASY_APP}" looks like an environment variable missing its "$"' in r.stderr


def test_flags_and_search(tmp_path):
    f = tmp_path / "litefs.yml"
    f.write_text("fuse:\n  dir: ${MNT}\ndata:\n  dir: /var/lib/litefs\n")
    r = check(f"--config={f}", env={"MNT": "/mnt/x"})
    assert r.returncode == 0, r.stderr
    assert '  dir: "/mnt/x"' in r.stdout
    r = check("-config", f, "-no-expand-env", env={"MNT": "/mnt/x"})
    assert r.returncode == 0, r.stderr
    assert '  dir: "${MNT}"' in r.stdout
    # Without -config, ./litefs.yml is found first (made absolute).
    r = check(cwd=tmp_path, env={"MNT": "/m"})
    assert r.returncode == 0, r.stderr
    assert f"configuration file {f.resolve()} test is successful" in r.stderr

    r = check("-config", tmp_path / "missing.yml")
    assert r.returncode == 1
    assert "missing.yml" in r.stderr and "No such file" in r.stderr
    assert check("-bogus").returncode == 2
    assert check("-config").returncode == 2
    assert check("extra").returncode == 2
    r = check("--help")
    assert r.returncode == 0 and "Usage: litefs config check" in r.stdout
