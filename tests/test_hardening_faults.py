"""Hardening against faults: forget held up by a reader, corrupt GGUF files, daemon start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memori_cli import ForgetWarning, Memori, capture
from memori_cli.cli import app

runner = CliRunner()
SECRET = "Zanzibarquux"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def file_bytes(db: Path) -> bytes:
    return b"".join(
        Path(str(db) + suffix).read_bytes()
        for suffix in ("", "-wal")
        if Path(str(db) + suffix).exists()
    )


def stored(db: Path) -> Memori:
    mem = Memori(conn=db)
    with mem.attribution(entity_id="victim"):
        mem.add_messages([{"role": "user", "content": f"I live in {SECRET}"}])
    with mem.attribution(entity_id="keeper"):
        mem.add_messages([{"role": "user", "content": "keeper keeps Quagmirefoo"}])
    mem.store.checkpoint()
    return mem


READER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM messages").fetchone()
print("ready", flush=True)
sys.stdin.readline()
conn.rollback()
"""


class Reader:
    """Another process holding a read transaction open (an older snapshot) until closed.

    A process of its own: POSIX locks are per process, so a second SQLite library in this
    process would not be seen by the store's connection."""

    def __init__(self, db: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# -- 1. forget ------------------------------------------------------------------------------
@pytest.mark.slow
def test_forget_with_a_reader_warns_quickly_and_a_later_forget_finishes(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = stored(db)
    held = Reader(db)
    started = time.monotonic()
    with pytest.warns(ForgetWarning, match="write-ahead log"):
        removed = mem.forget("victim")
    assert time.monotonic() - started < 10  # not the 30 s busy timeout
    assert removed["messages"] == 1
    assert SECRET.encode() in file_bytes(db)  # honest: it is still in the WAL
    held.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForgetWarning)
        mem.forget("victim")
    assert SECRET.encode() not in file_bytes(db)
    mem.close()


def test_forget_without_a_reader_does_not_warn(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = stored(db)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForgetWarning)
        mem.forget("victim")
    assert SECRET.encode() not in file_bytes(db)
    mem.close()


@pytest.mark.slow
def test_cli_forget_with_a_reader_says_what_remains_and_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    stored(db).close()
    held = Reader(db)
    try:
        code, stdout, stderr = run("--db", str(db), "forget", "--entity", "victim", "--yes")
        assert code == 1, stderr
        flat = " ".join(stderr.split())
        assert "may remain in" in flat and "memori.db-wal" in flat
        assert f"pid {held.proc.pid})" in flat
        assert "memori forget --entity victim" in flat and "memori doctor" in flat
        code, stdout, _ = run("--db", str(db), "doctor", "--json")
        wal = next(c for c in json.loads(stdout) if c["check"] == "wal")
        assert wal["status"] == "warn"
        code, stdout, _ = run("--db", str(db), "forget", "--entity", "victim", "--yes", "--json")
        assert code == 1 and json.loads(stdout)["wal_checkpointed"] is False
    finally:
        held.close()
    code, stdout, _ = run("--db", str(db), "doctor", "--json")
    wal = next(c for c in json.loads(stdout) if c["check"] == "wal")
    assert wal["status"] == "ok"
    assert SECRET.encode() not in file_bytes(db)
    code, stdout, _ = run("--db", str(db), "forget", "--entity", "victim", "--yes", "--json")
    assert code == 0 and json.loads(stdout)["wal_checkpointed"] is True


def spool_lines(*entities: str) -> str:
    return "".join(
        json.dumps({"role": "user", "content": f"{SECRET} from {e}", "entity": e}) + "\n"
        for e in entities
    )


def test_forget_removes_the_entitys_lines_from_the_capture_spool(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = stored(db)
    spool = capture.spool_path(mem.store)
    spool.write_text(spool_lines("victim", "keeper", "victim"), encoding="utf-8")
    spool.chmod(0o600)
    mem.forget("victim")
    kept = [json.loads(line) for line in spool.read_text(encoding="utf-8").splitlines()]
    assert [r["entity"] for r in kept] == ["keeper"]
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    mem.forget("keeper")
    assert not spool.exists()  # nothing left: the file goes
    mem.close()


def test_cli_forget_covers_the_spool(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = stored(db)
    spool = capture.spool_path(mem.store)
    mem.close()
    spool.write_text(spool_lines("victim"), encoding="utf-8")
    code, _, stderr = run("--db", str(db), "forget", "--entity", "victim", "--yes")
    assert code == 0, stderr
    assert not spool.exists()


# -- 2. corrupt GGUF files ------------------------------------------------------------------
@pytest.fixture
def good_gguf(tmp_path: Path) -> Path:
    from tiny_models import make_bert_gguf

    return make_bert_gguf(tmp_path / "good.gguf")


@pytest.fixture
def bad_gguf(good_gguf: Path, tmp_path: Path) -> Path:
    """A GGUF file cut short, as an interrupted download leaves it: the magic is right."""
    data = good_gguf.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def test_gguf_check_accepts_a_whole_file_and_refuses_damaged_ones(
    good_gguf: Path, tmp_path: Path
) -> None:
    from memori_cli import ModelFileError, gguf_file

    info = gguf_file.check(good_gguf)
    assert info.version == 3 and info.tensors > 0 and info.architecture == "bert"
    data = good_gguf.read_bytes()
    cases = {
        "short": data[:3],
        "magic": b"GUFF" + data[4:],
        "version": data[:4] + (99).to_bytes(4, "little") + data[8:],
        "counts": data[:8] + (2**62).to_bytes(8, "little") + data[16:],
        "header cut": data[:200],
        "data cut": data[:-1],
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match="not a valid GGUF model file"):
            gguf_file.check(path)


def test_model_add_refuses_a_corrupt_file(bad_gguf: Path, memori_home: Path) -> None:
    code, _, stderr = run("model", "add", str(bad_gguf))
    assert code == 1
    assert "not a valid GGUF model file" in " ".join(stderr.split())
    assert "Traceback" not in stderr
    assert not (memori_home / "config.toml").exists()


def test_model_add_accepts_a_whole_file(good_gguf: Path) -> None:
    code, _, stderr = run("model", "add", "--embedding", str(good_gguf))
    assert code == 0, stderr


def test_commands_that_load_a_corrupt_chat_model_say_so(
    bad_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "memori.db"
    stored(db).close()
    monkeypatch.setenv("MEMORI_CHAT_MODEL", str(bad_gguf))
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    code, stdout, stderr = run("--db", str(db), "augment")
    assert code == 1 and "not a valid GGUF model file" in " ".join(stderr.split())
    for args in (("daemon", "status", "--json"), ("model", "list", "--json")):
        result = runner.invoke(app, ["--db", str(db), *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert result.exit_code == 0, (args, result.stderr)
        assert "not a valid GGUF model file" in result.stdout, args
    code, stdout, _ = run("--db", str(db), "doctor", "--json")
    assert code == 1
    chat = next(c for c in json.loads(stdout) if c["check"] == "chat model")
    assert chat["status"] == "fail" and "not a valid GGUF model file" in chat["detail"]


def test_doctor_checks_a_corrupt_embedding_model(
    bad_gguf: Path, good_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "memori.db"
    stored(db).close()
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", str(bad_gguf))
    code, stdout, _ = run("--db", str(db), "doctor", "--json")
    assert code == 1
    check = next(c for c in json.loads(stdout) if c["check"] == "embedding model")
    assert check["status"] == "fail"
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", str(good_gguf))
    code, stdout, _ = run("--db", str(db), "doctor", "--json")
    check = next(c for c in json.loads(stdout) if c["check"] == "embedding model")
    assert check["status"] == "ok"


# -- 3. daemon start ------------------------------------------------------------------------
@pytest.mark.slow
def test_daemon_start_does_not_warn_about_a_running_subprocess(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    stored(db).close()
    env = {**os.environ, "PYTHONWARNINGS": "default", "MEMORI_EMBEDDING_MODEL": "none"}
    memori = str(Path(sys.executable).parent / "memori")
    command = [sys.executable, "-W", "default", memori, "--db", str(db)]
    started = subprocess.run(
        [*command, "daemon", "start"], capture_output=True, text=True, timeout=120, env=env
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "Started the daemon" in started.stderr
        assert "still running" not in started.stderr
        assert "ResourceWarning" not in started.stderr
    finally:
        stopped = subprocess.run(
            [*command, "daemon", "stop"], capture_output=True, text=True, timeout=120, env=env
        )
    assert stopped.returncode == 0, stopped.stderr


def test_chat_with_a_corrupt_local_model_says_so(bad_gguf: Path, tmp_path: Path) -> None:
    from memori_cli import chat

    mem = Memori(conn=tmp_path / "memori.db")
    with pytest.raises(chat.NoBackend, match="not a valid GGUF model file"):
        chat.choose(mem, model=str(bad_gguf))
    mem.close()


@pytest.mark.slow
def test_forget_memory_with_a_reader_warns(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = stored(db)
    mem.augment()
    (memory,) = mem.store.conn.execute(
        "SELECT id FROM memories WHERE entity_id = 'victim'"
    ).fetchone()
    held = Reader(db)
    try:
        with pytest.warns(ForgetWarning):
            assert mem.forget_memory(memory, entity_id="victim")
    finally:
        held.close()
    mem.close()


@pytest.mark.slow
def test_daemon_start_with_a_corrupt_chat_model_says_why(bad_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    stored(db).close()
    env = {**os.environ, "MEMORI_CHAT_MODEL": str(bad_gguf), "MEMORI_EMBEDDING_MODEL": "none"}
    memori = str(Path(sys.executable).parent / "memori")
    started = subprocess.run(
        [memori, "--db", str(db), "daemon", "start"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert started.returncode == 1
    flat = " ".join(started.stderr.split())
    assert "exited at once" in flat and "not a valid GGUF model file" in flat
    assert "Traceback" not in started.stderr
