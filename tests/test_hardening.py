"""Failures found by trying to break memori (issue 18), each pinned by a test that failed first."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memori_cli import Memori, NoStoreError, StoreError, config
from memori_cli.cli import app

runner = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text('{"role": "user", "content": "hello"}\n')
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- 1. memori never chmods a path that is not its own store ---------------------------------
def test_a_folder_given_as_the_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o1777)
    code, _, err = run("--db", str(folder), "stats")
    assert code == 1 and "is a folder" in err
    with pytest.raises(StoreError, match="is a folder"):
        Memori(conn=folder).store.build()
    assert mode(folder) == 0o1777


def test_a_device_given_as_the_store_is_refused_and_left_alone(
    tmp_path: Path, transcript: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o666)
    os.chmod(fifo, 0o666)
    with pytest.raises(StoreError, match="not a regular file"):
        Memori(conn=fifo).store.build()
    assert mode(fifo) == 0o666
    devnull = Path("/dev/null")
    before = mode(devnull)
    code, _, err = run("--db", str(devnull), "import", str(transcript))
    assert code == 1 and "not a regular file" in err
    assert mode(devnull) == before


def test_a_symlinked_store_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    os.chmod(target, 0o644)
    link = tmp_path / "memori.db"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        Memori(conn=link).add_messages([{"role": "user", "content": "hi"}])
    assert mode(target) == 0o644 and target.read_text() == "my notes\n"


def test_a_text_file_given_as_the_store_keeps_its_mode_and_content(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    transcript.write_text('{"role": "user", "content": "hello"}\n')
    os.chmod(transcript, 0o644)
    code, _, err = run("--db", str(transcript), "import", str(transcript))
    assert code == 1 and "not a memori store" in err
    assert mode(transcript) == 0o644
    assert transcript.read_text() == '{"role": "user", "content": "hello"}\n'


# -- 2. another application's database is never migrated -------------------------------------
def test_another_applications_database_is_refused_unchanged(
    tmp_path: Path, transcript: Path
) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    os.chmod(other, 0o644)
    before = other.read_bytes()
    for args in (["stats"], ["import", str(transcript)], ["recall", "x"]):
        code, _, err = run("--db", str(other), *args)
        assert code == 1 and "another application's SQLite database" in err, args
        assert "notes" in err
    with pytest.raises(StoreError, match="another application"):
        Memori(conn=lambda: __import__("sqlean").connect(str(other))).store.build()
    assert other.read_bytes() == before and mode(other) == 0o644
    assert not Path(str(other) + "-wal").exists()


def test_a_memori_store_carries_its_application_id_and_reopens(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": "hello"}])
    mem.close()
    assert Memori(conn=db).store.conn.execute("PRAGMA application_id").fetchone()[0] == 0x6D6D7269


def test_read_commands_do_not_create_a_store(
    tmp_path: Path, memori_home: Path, transcript: Path
) -> None:
    typo = tmp_path / "typo" / "memori.db"
    for args in (["--db", str(typo), "stats"], ["--db", str(typo), "recall", "x"], ["stats"]):
        code, _, err = run(*args)
        assert code == 1 and "no memori store" in err, args
    assert not typo.parent.exists() and not memori_home.exists()
    with pytest.raises(NoStoreError):
        Memori(conn=typo, create=False).store.build()
    code, out, _ = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out)}
    assert code == 0 and checks["store"]["status"] == "warn"
    assert "sqlite-vec" in checks["sqlite"]["detail"]
    assert not memori_home.exists()
    code, _, err = run("--db", str(typo), "import", str(transcript))
    assert code == 0 and "Created a new memori store" in err
    assert run("--db", str(typo), "stats")[0] == 0


def test_a_file_where_the_home_folder_should_be_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transcript: Path
) -> None:
    home = tmp_path / "home-file"
    home.write_text("")
    monkeypatch.setenv("MEMORI_HOME", str(home))
    code, _, err = run("import", str(transcript))
    assert code == 1 and "is not a folder" in err


# -- 15 and 23. what memori creates is private from the start; config is real TOML -----------
def test_created_folders_and_config_are_private_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "a" / "b" / "home"
    monkeypatch.setenv("MEMORI_HOME", str(home))
    old = os.umask(0o022)
    try:
        path = config.set_model("chat", 'C:\\models\\"odd"\n.gguf')
    finally:
        os.umask(old)
    assert mode(home) == 0o700 and mode(home.parent) == 0o700 and mode(home.parent.parent) == 0o700
    assert mode(path) == 0o600
    assert config.read_file()["models"]["chat"] == 'C:\\models\\"odd"\n.gguf'
