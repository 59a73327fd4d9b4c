"""`litefs ltx`: the real binary on real SQLite databases and LiteFS files.

Self-contained (helpers live here, not in conftest.py): the binary is
$LITEFS_BIN or build/litefs at the repository root; golden files are under
$LITEFS_TESTDATA or ../shared/testdata. Databases are created with Python's
sqlite3 module and checked with `PRAGMA integrity_check`.
"""
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LITEFS_BIN", ROOT / "build" / "litefs")).resolve()
TESTDATA = Path(os.environ.get("LITEFS_TESTDATA", ROOT.parent / "shared" / "testdata")).resolve()
GOLDEN = TESTDATA / "litefs-v1"
CHAIN = [GOLDEN / "chain-compressed" / f"{i:016x}-{i:016x}.ltx" for i in range(1, 6)]
CHAIN_CHECKSUM = "e9832b942d1c01ca"

SUBCOMMANDS = ["dump", "list", "verify", "checksum", "apply", "encode-db", "compact"]


def ltx(*args, check=None, env=None):
    """Runs `litefs ltx ARGS`; check=N asserts the exit code; env adds
    environment variables (LITEFS_FAULT)."""
    p = subprocess.run([str(BIN), "ltx", *map(str, args)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **(env or {})))
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def make_db(path, page_size, rows=2000, seed=0):
    """A real SQLite database (rollback journal, so the file is complete)."""
    con = sqlite3.connect(str(path))
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE)")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER, body BLOB)")
    con.execute("CREATE INDEX notes_user ON notes(user_id)")
    with con:
        con.executemany("INSERT INTO users (name, email) VALUES (?, ?)",
                        ((f"user{i}", f"user{i}.{seed}@example.com") for i in range(rows)))
        con.executemany("INSERT INTO notes (user_id, body) VALUES (?, ?)",
                        ((i % rows, os.urandom(50 + i % 300)) for i in range(rows)))
    con.close()
    assert Path(path).stat().st_size % page_size == 0
    return path


def integrity(path):
    con = sqlite3.connect(str(path))
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def rows(path):
    con = sqlite3.connect(str(path))
    try:
        return (con.execute("SELECT * FROM users ORDER BY id").fetchall(),
                con.execute("SELECT * FROM notes ORDER BY id").fetchall())
    finally:
        con.close()


def list_fields(path):
    """The fields of `ltx list` for one file, as a dict."""
    out = ltx("list", path, check=0).stdout.splitlines()
    assert out[0].split()[:2] == ["MIN_TXID", "MAX_TXID"]
    f = out[1].split()
    return {"min": f[0], "max": f[1], "commit": int(f[2]), "page_size": int(f[3]),
            "pre": f[4], "post": f[5], "timestamp": f[6], "size": int(f[7]), "file": f[8]}


# ---- help and usage ---------------------------------------------------------

def test_help():
    for flag in ("--help", "-h", "help"):
        p = ltx(flag, check=0)
        for sub in SUBCOMMANDS:
            assert sub in p.stdout
    for sub in SUBCOMMANDS:
        for flag in ("-h", "--help", "-help"):
            p = ltx(sub, flag, check=0)
            assert p.stdout.startswith(f"Usage: litefs ltx {sub}"), p.stdout


@pytest.mark.parametrize("args", [
    [],
    ["bogus"],
    ["dump"],
    ["dump", "a.ltx", "b.ltx"],
    ["list"],
    ["verify"],
    ["checksum"],
    ["checksum", "-page-size", "1000", "x.db"],
    ["apply", "x.ltx"],
    ["apply", "-db", "x.db"],
    ["apply", "-db"],
    ["encode-db", "x.db"],
    ["encode-db", "-o", "out.ltx"],
    ["encode-db", "-txid", "zz", "-o", "out.ltx", "x.db"],
    ["compact", "x.ltx"],
    ["compact", "-o", "out.ltx"],
    ["compact", "-nope", "-o", "out.ltx", "x.ltx"],
    ["verify", "--frobnicate", "x.ltx"],
])
def test_usage_errors(args, tmp_path):
    p = subprocess.run([str(BIN), "ltx", *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2, p
    assert p.stderr
    assert not (tmp_path / "out.ltx").exists()


# ---- encode-db, verify, list, dump, apply, checksum -------------------------

@pytest.mark.parametrize("page_size", [512, 1024, 4096, 8192, 65536])
@pytest.mark.parametrize("compress", [False, True])
def test_encode_verify_apply_round_trip(tmp_path, page_size, compress):
    src = make_db(tmp_path / "src.db", page_size, rows=800 if page_size < 65536 else 300)
    snap = tmp_path / "snap.ltx"
    args = ["encode-db", "-o", snap, src]
    if compress:
        args.insert(1, "-compress")
    ltx(*args, check=0)
    assert not list(tmp_path.glob(".snap.ltx.tmp-*")), "temporary file left behind"

    assert ltx("verify", snap, check=0).stdout.strip() == f"{snap}: OK"

    n_pages = src.stat().st_size // page_size
    f = list_fields(snap)
    assert f["min"] == f["max"] == "0000000000000001"
    assert f["commit"] == n_pages
    assert f["page_size"] == page_size
    assert f["pre"] == "0000000000000000"
    assert f["size"] == snap.stat().st_size
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", f["timestamp"])

    # The database checksum of the source is the snapshot's post-apply.
    assert ltx("checksum", src, check=0).stdout.strip() == f["post"]

    dump = ltx("dump", snap, check=0).stdout
    assert f"Page size:  {page_size}\n" in dump
    assert f"Commit:     {n_pages}\n" in dump
    assert ("(lz4)" in dump) == compress
    frames = re.findall(r"^Frame #(\d+): pgno=(\d+) chksum=([0-9a-f]{16})$", dump, re.M)
    assert [int(p) for _, p, _ in frames] == list(range(1, n_pages + 1))
    assert f"Post-apply:    {f['post']}\n" in dump

    # Apply to a database that does not exist yet: byte-identical copy.
    dst = tmp_path / "dst.db"
    out = ltx("apply", "-db", dst, snap, check=0).stdout.strip()
    assert out == f"0000000000000001/{f['post']}"
    assert dst.read_bytes() == src.read_bytes()
    assert integrity(dst) == "ok"
    assert rows(dst) == rows(src)
    assert ltx("checksum", dst, check=0).stdout.strip() == f["post"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".litefs-spool")]


def test_snapshot_replaces_other_version(tmp_path):
    """A snapshot applies over any database: v2's snapshot turns v1 into v2."""
    v1 = make_db(tmp_path / "v1.db", 4096, rows=1500, seed=1)
    v2 = tmp_path / "v2.db"
    v2.write_bytes(v1.read_bytes())
    con = sqlite3.connect(str(v2))
    with con:
        con.execute("UPDATE users SET name = name || '-v2' WHERE id % 3 = 0")
        con.execute("DELETE FROM notes WHERE id > 700")
    con.execute("VACUUM")
    con.close()

    s2 = tmp_path / "v2.ltx"
    ltx("encode-db", "--compress", "--txid", "0x2a", "--o", s2, v2, check=0)
    f = list_fields(s2)
    assert f["max"] == "000000000000002a"

    db = tmp_path / "db"
    db.write_bytes(v1.read_bytes())
    assert ltx("apply", "-db", db, s2, check=0).stdout.strip() == f"000000000000002a/{f['post']}"
    assert db.read_bytes() == v2.read_bytes()
    assert db.stat().st_size < v1.stat().st_size  # truncated by VACUUM's snapshot
    assert integrity(db) == "ok"


def test_option_forms(tmp_path):
    src = make_db(tmp_path / "src.db", 1024, rows=50)
    for i, form in enumerate((["-o", "{}"], ["--o", "{}"], ["-o={}"], ["--o={}"])):
        out = tmp_path / f"o{i}.ltx"
        ltx("encode-db", *[a.format(out) for a in form], "-compress=true", src, check=0)
        ltx("verify", out, check=0)
    # Options after the arguments, and "--" before a file named like an option.
    weird = tmp_path / "-weird.db"
    weird.write_bytes(src.read_bytes())
    p = subprocess.run([str(BIN), "ltx", "checksum", "--", "-weird.db"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ltx("checksum", src, check=0).stdout.strip()


# ---- golden files ------------------------------------------------------------

def test_checksum_golden_database():
    assert ltx("checksum", GOLDEN / "database", check=0).stdout.strip() == "fe3831a381c602b9"


def test_list_and_verify_golden():
    out = ltx("list", *CHAIN, GOLDEN / "000000000000000d-000000000000000d.ltx", check=0).stdout.splitlines()
    assert len(out) == 7
    assert out[5].split()[:6] == ["0000000000000005", "0000000000000005", "2", "4096",
                                  "b9b18c3345e93e56", CHAIN_CHECKSUM]
    assert out[6].split()[:6] == ["000000000000000d", "000000000000000d", "10", "4096",
                                  "9c74a15b4e4f246c", "fe3831a381c602b9"]
    out = ltx("verify", *CHAIN, check=0).stdout.splitlines()
    assert out == [f"{p}: OK" for p in CHAIN]


def test_dump_golden():
    out = ltx("dump", GOLDEN / "000000000000000d-000000000000000d.ltx", check=0).stdout
    assert "Min TXID:   000000000000000d (13)" in out
    assert "Pre-apply:  9c74a15b4e4f246c" in out
    assert [int(p) for p in re.findall(r"pgno=(\d+)", out)] == [1, 7, 8]
    assert "Post-apply:    fe3831a381c602b9" in out
    assert "File checksum: 9496a29358326fb5" in out


def test_apply_golden_chain(tmp_path):
    db = tmp_path / "chain.db"
    assert ltx("apply", "-db", db, *CHAIN, check=0).stdout.strip() == f"0000000000000005/{CHAIN_CHECKSUM}"
    assert ltx("checksum", db, check=0).stdout.strip() == CHAIN_CHECKSUM
    assert integrity(db) == "ok"

    # In two steps: the second run checks contiguity against the database.
    db2 = tmp_path / "two-steps.db"
    ltx("apply", "-db", db2, *CHAIN[:2], check=0)
    ltx("apply", "-db", db2, *CHAIN[2:], check=0)
    assert db2.read_bytes() == db.read_bytes()

    # A file that does not follow the database is refused; nothing changes.
    db3 = tmp_path / "skip.db"
    ltx("apply", "-db", db3, *CHAIN[:2], check=0)
    before = db3.read_bytes()
    p = ltx("apply", "-db", db3, CHAIN[3], check=1)
    assert f"{CHAIN[3]}: offset 40: ltx: pre-apply checksum does not match the database" in p.stderr
    assert db3.read_bytes() == before

    # Files out of order on one command line.
    db4 = tmp_path / "order.db"
    p = ltx("apply", "-db", db4, CHAIN[0], CHAIN[2], check=1)
    assert str(CHAIN[2]) in p.stderr and "not contiguous" in p.stderr
    assert "stopped at position 0000000000000001/" in p.stderr


def test_apply_golden_d_needs_its_predecessor(tmp_path):
    """The golden `database` is the state after file 0xd: applying 0xd to
    it (checksum fe38…, not the pre-apply 9c74…) must be refused."""
    db = tmp_path / "database"
    db.write_bytes((GOLDEN / "database").read_bytes())
    p = ltx("apply", "-db", db, GOLDEN / "000000000000000d-000000000000000d.ltx", check=1)
    assert "offset 40" in p.stderr and "pre-apply" in p.stderr
    assert db.read_bytes() == (GOLDEN / "database").read_bytes()


@pytest.mark.parametrize("compress", [False, True])
def test_compact_golden_chain(tmp_path, compress):
    out = tmp_path / "0000000000000001-0000000000000005.ltx"
    args = ["compact", "-o", out, *CHAIN]
    if compress:
        args.insert(1, "-compress")
    p = ltx(*args, check=0)
    assert CHAIN_CHECKSUM in p.stdout
    ltx("verify", out, check=0)
    f = list_fields(out)
    assert (f["min"], f["max"], f["commit"], f["pre"], f["post"]) == \
        ("0000000000000001", "0000000000000005", 2, "0000000000000000", CHAIN_CHECKSUM)
    assert ("(lz4)" in ltx("dump", out, check=0).stdout) == compress

    db = tmp_path / "compacted.db"
    assert ltx("apply", "-db", db, out, check=0).stdout.strip() == f"0000000000000005/{CHAIN_CHECKSUM}"
    assert ltx("checksum", db, check=0).stdout.strip() == CHAIN_CHECKSUM
    ref = tmp_path / "ref.db"
    ltx("apply", "-db", ref, *CHAIN, check=0)
    assert db.read_bytes() == ref.read_bytes()

    # 2..5 compacted applies on top of 1.
    tail = tmp_path / "0000000000000002-0000000000000005.ltx"
    ltx("compact", "-o", tail, *CHAIN[1:], check=0)
    db2 = tmp_path / "tail.db"
    ltx("apply", "-db", db2, CHAIN[0], tail, check=0)
    assert db2.read_bytes() == ref.read_bytes()


def test_compact_errors_leave_output_alone(tmp_path):
    out = tmp_path / "out.ltx"
    out.write_bytes(b"previous content")

    p = ltx("compact", "-o", out, CHAIN[0], CHAIN[2], check=1)
    assert f"litefs ltx compact: {CHAIN[2]}: offset 16: ltx: files are not contiguous" in p.stderr
    p = ltx("compact", "-o", out, CHAIN[1], CHAIN[1], check=1)
    assert f"{CHAIN[1]}: offset 16: ltx: files overlap" in p.stderr
    p = ltx("compact", "-o", out, CHAIN[0], tmp_path / "missing.ltx", check=1)
    assert "missing.ltx" in p.stderr

    # Contiguous TXIDs, but file 2 of another history: found at the end.
    other = make_db(tmp_path / "other.db", 4096, rows=10)
    snap = tmp_path / "other.ltx"
    ltx("encode-db", "-o", snap, other, check=0)
    p = ltx("compact", "-o", out, snap, *CHAIN[1:3], check=1)
    assert f"{CHAIN[1]}: offset 40: ltx: files are not contiguous" in p.stderr

    assert out.read_bytes() == b"previous content"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["other.db", "other.ltx", "out.ltx"]


# ---- corrupt input ------------------------------------------------------------

def corrupt_copy(src, dst, offset):
    data = bytearray(src.read_bytes())
    data[offset] ^= 0x20
    dst.write_bytes(bytes(data))
    return dst


def test_corrupt_file_is_rejected_with_offset(tmp_path):
    src = make_db(tmp_path / "src.db", 4096, rows=300)
    snap = tmp_path / "snap.ltx"
    ltx("encode-db", "-o", snap, src, check=0)
    size = snap.stat().st_size

    bad = corrupt_copy(snap, tmp_path / "bad.ltx", size // 2)
    p = ltx("verify", bad, check=1)
    m = re.search(rf"^litefs ltx verify: {re.escape(str(bad))}: offset (\d+): ltx: file checksum mismatch$",
                  p.stderr, re.M)
    assert m, p.stderr
    assert int(m.group(1)) <= size

    # verify goes on with the other files and reports each.
    p = ltx("verify", snap, bad, check=1)
    assert p.stdout.strip() == f"{snap}: OK"
    assert str(bad) in p.stderr

    # apply: the existing database is left byte-for-byte unchanged ...
    db = tmp_path / "db"
    db.write_bytes(src.read_bytes())
    p = ltx("apply", "-db", db, bad, check=1)
    assert re.search(rf"{re.escape(str(bad))}: offset \d+: ltx: file checksum mismatch", p.stderr), p.stderr
    assert db.read_bytes() == src.read_bytes()
    # ... and a database that did not exist is not created.
    p = ltx("apply", "-db", tmp_path / "new.db", bad, check=1)
    assert not (tmp_path / "new.db").exists()

    # Header damage and truncation.
    p = ltx("verify", corrupt_copy(snap, tmp_path / "hdr.ltx", 0), check=1)
    assert "offset 0: ltx: bad magic" in p.stderr
    short = tmp_path / "short.ltx"
    short.write_bytes(snap.read_bytes()[:size - 7])
    p = ltx("verify", short, check=1)
    assert re.search(rf"{re.escape(str(short))}: offset \d+: ltx: file is truncated", p.stderr), p.stderr
    p = ltx("dump", short, check=1)
    assert str(short) in p.stderr and "Frame #0:" in p.stdout

    # Missing files are errors (1), not usage errors.
    p = ltx("verify", tmp_path / "nope.ltx", check=1)
    assert "No such file or directory" in p.stderr


def test_checksum_errors(tmp_path):
    notdb = tmp_path / "notdb"
    notdb.write_bytes(b"hello world" * 100)
    p = ltx("checksum", notdb, check=1)
    assert "not a SQLite database" in p.stderr
    p = ltx("checksum", "-page-size", "512", notdb, check=1)
    assert "not a whole number of pages" in p.stderr
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert ltx("checksum", "-page-size", "4096", empty, check=0).stdout.strip() == "8000000000000000"


# ---- injected faults (LITEFS_FAULT, see src/base/sys.h) ---------------------------

def test_faults_in_outputs(tmp_path):
    out = tmp_path / "out.ltx"
    out.write_bytes(b"old")
    for fault in ("fsync:1", "rename:1"):
        p = ltx("compact", "-o", out, *CHAIN, check=1, env={"LITEFS_FAULT": fault})
        assert f"litefs ltx compact: {out}: Input/output error" in p.stderr
        assert out.read_bytes() == b"old"
        assert [x.name for x in tmp_path.iterdir()] == ["out.ltx"], "temporary file left behind"
    ltx("compact", "-o", out, *CHAIN, check=0)
    ltx("verify", out, check=0)


def test_fault_while_writing_database(tmp_path):
    """A write failure after validation is reported as such: the database
    may be half-written (there is no journal here) and the message says so;
    a snapshot then repairs it."""
    src = make_db(tmp_path / "src.db", 1024, rows=400)
    snap = tmp_path / "snap.ltx"
    ltx("encode-db", "-o", snap, src, check=0)
    db = tmp_path / "db"
    db.write_bytes(b"")
    p = ltx("apply", "-db", db, snap, check=1, env={"LITEFS_FAULT": "pwrite:1"})
    assert f"litefs ltx apply: {db}: applying {snap}: Input/output error" in p.stderr
    assert "partially written" in p.stderr
    assert db.stat().st_size == src.stat().st_size and db.read_bytes() != src.read_bytes()
    # A database the failed run created itself is removed.
    p = ltx("apply", "-db", tmp_path / "new.db", snap, check=1, env={"LITEFS_FAULT": "ftruncate:1"})
    assert not (tmp_path / "new.db").exists()
    ltx("apply", "-db", db, snap, check=0)
    assert db.read_bytes() == src.read_bytes()
    assert integrity(db) == "ok"
    p = ltx("verify", snap, check=2, env={"LITEFS_FAULT": "bogus"})
