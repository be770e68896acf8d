"""Hardening of the store against its surroundings: a read-only store, a full disk, no
embedding model, transcripts on stdin."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.cli import app
from memori_cli.errors import ReadOnlyStoreError
from memori_cli.store import core

runner = CliRunner()


def run(*args: str, input: str | bytes | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def make_store(db: Path) -> None:
    mem = Memori(conn=db)
    mem.add_messages([
        {"role": "user", "content": "I love green tea and hiking in the Alps"},
        {"role": "assistant", "content": "noted"},
    ])  # fmt: skip
    mem.augment()
    mem.close()


READ_COMMANDS = [["stats"], ["recall", "tea"], ["memories", "list"], ["sessions"]]


def check_reads(db: Path) -> None:
    for command in READ_COMMANDS:
        code, out, err = run("--db", str(db), *command)
        assert code == 0, (command, err)
        assert "Error" not in err, (command, err)
    code, out, _ = run("--db", str(db), "recall", "tea", "--json")
    assert code == 0 and "green tea" in out


# -- 1. a read-only store -------------------------------------------------------------------


def lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make memori see every path as not writable, as a non-root user sees a chmod 0400 file
    in a 0500 folder (tests run as root, where chmod stops nothing)."""
    monkeypatch.setattr(core, "writable", lambda path: False)


def test_read_commands_work_on_an_unwritable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "memori.db"
    make_store(db)
    lock(monkeypatch)
    before = db.read_bytes()
    check_reads(db)
    assert db.read_bytes() == before  # nothing written: no migration, no chmod


def test_write_commands_on_an_unwritable_store_say_it_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "memori.db"
    make_store(db)
    lock(monkeypatch)
    (tmp_path / "t.jsonl").write_text('{"role": "user", "content": "more"}\n')
    for command in (
        ["forget", "--entity", "default", "--yes"],
        ["import", str(tmp_path / "t.jsonl")],
    ):
        code, _, err = run("--db", str(db), *command)
        assert code == 1, (command, err)
        assert f"the store at {db} is read-only" in " ".join(err.split()), (command, err)
    with pytest.raises(ReadOnlyStoreError):
        Memori(conn=db).add_messages([{"role": "user", "content": "x"}])


def test_read_only_store_of_an_older_schema_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "memori.db"
    make_store(db)
    lock(monkeypatch)
    import sqlean

    conn = sqlean.connect(str(db))
    (last,) = conn.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'memori' ORDER BY rowid DESC"
    ).fetchone()
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", (last,))
    conn.commit()
    conn.close()
    lock(monkeypatch)
    code, _, err = run("--db", str(db), "stats")
    assert code == 1
    flat = " ".join(err.split())
    assert "read-only" in flat and "older memori" in flat and last in flat


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[None]:
    target.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True,
                       capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs root and mount to make a read-only mount")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True,
                       capture_output=True)  # fmt: skip
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"),
    reason="a read-only bind mount needs Linux and root",
)
def test_read_commands_work_on_a_read_only_mount(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_store(source / "memori.db")
    with read_only_mount(source, tmp_path / "ro"):
        db = tmp_path / "ro" / "memori.db"
        check_reads(db)
        code, _, err = run("--db", str(db), "forget", "--entity", "default", "--yes")
        assert code == 1 and "read-only" in err


# -- 2. forget on a full disk ---------------------------------------------------------------


@contextlib.contextmanager
def small_disk(target: Path, size: str = "3m") -> Iterator[Path]:
    target.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                       check=True, capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs root and mount to make a small disk")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 4096)
    return filler


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"),
    reason="a small tmpfs disk needs Linux and root",
)
@pytest.mark.parametrize("shm_exists", [False, True])
def test_forget_on_a_full_disk_says_what_to_free_and_changes_nothing(
    tmp_path: Path, shm_exists: bool
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "memori.db"
        mem = Memori(conn=db)
        with mem.attribution(entity_id="E"):
            mem.add_messages(
                [{"role": "user", "content": f"note {i} about quux{i} " * 8} for i in range(200)]
            )
        mem.close()
        holder = Memori(conn=db) if shm_exists else None  # keeps -wal and -shm in place
        if holder is not None:
            holder.stats()
        filler = fill(disk)
        code, _, err = run("--db", str(db), "forget", "--entity", "E", "--yes")
        flat = " ".join(err.split())
        assert code == 1, err
        assert "is full" in flat and "Free" in flat and "run the command again" in flat, flat
        assert "not a memori store" not in flat
        if holder is not None:
            holder.close()
        filler.unlink()
        mem = Memori(conn=db)
        assert mem.stats()["messages"] == 200  # nothing half-deleted
        mem.close()
        code, _, err = run("--db", str(db), "forget", "--entity", "E", "--yes")
        assert code == 0, err


# -- 3. no embedding model is no error ------------------------------------------------------


@pytest.mark.parametrize("model", ["missing", "none"])
def test_augment_and_import_wait_exit_0_without_an_embedding_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    spec = str(tmp_path / "no-such-model.gguf") if model == "missing" else "none"
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", spec)
    db = tmp_path / "memori.db"
    transcript = tmp_path / "t.jsonl"
    transcript.write_text('{"role": "user", "content": "I love green tea"}\n')
    code, _, err = run("--db", str(db), "import", str(transcript), "--wait")
    assert code == 0, err
    assert "Error" not in err
    if model == "missing":
        assert err.count("no-such-model.gguf") == 1, err  # said once
    run("--db", str(db), "import", str(transcript), "--session", "second")
    code, _, err = run("--db", str(db), "augment")
    assert code == 0, err
    code, out, _ = run("--db", str(db), "recall", "green tea", "--json")
    assert code == 0 and "green tea" in out  # lexical recall still answers


# -- 4. import from standard input ----------------------------------------------------------


def test_import_dash_reads_standard_input(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    lines = (
        '{"role": "user", "content": "I love rooibos tea", "id": "ext-1"}\n'
        '{"role": "assistant", "content": "noted"}\n'
        "not json\n"
    )
    code, _, err = run("--db", str(db), "import", "-", input=lines.encode())
    assert code == 1, err  # the bad line is reported (exit 1), the good ones land
    assert "-:3" in err and "Imported 2 messages" in err
    code, out, err = run("--db", str(db), "import", "-", "--json", input=lines[:-9].encode())
    assert code == 0, err
    assert '"duplicates": 2' in out and '"path": "-"' in out  # the same input adds nothing
    code, out, _ = run("--db", str(db), "sessions", "--json")
    assert "import:stdin" in out
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("memori-import-*"))


def test_import_file_takes_a_binary_stream(tmp_path: Path) -> None:
    import io

    mem = Memori(conn=tmp_path / "memori.db")
    report = mem.import_file(io.BytesIO(b'{"role": "user", "content": "hello from a stream"}\n'))
    assert report.imported == 1 and report.path == "-"
    assert mem.recall("stream")[0].session == "import:stdin"
    mem.close()
