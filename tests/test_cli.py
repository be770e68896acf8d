"""The command line, driven as a user would through Typer's runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from conftest import write_jsonl
from typer.testing import CliRunner

from memori_cli import __version__
from memori_cli.cli import app

runner = CliRunner()


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and subcommand under ``command`` with its path, ``command`` first."""
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))
NAMES = [" ".join(("memori", *path)) for path, _ in COMMANDS]


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "t.jsonl", [
        {"role": "user", "content": "Alice here, I live in Berlin", "name": "Alice",
         "session": "s1", "id": "a1"},
        {"role": "assistant", "content": "Berlin is lovely", "session": "s1", "id": "a2"},
        {"role": "bot", "content": "bad role"},
        '{"role": "user", "content": "trunc',
    ])  # fmt: skip


def test_version() -> None:
    assert run("--version")[:2] == (0, f"memori {__version__}\n")


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=NAMES)
def test_every_command_has_real_help(path: tuple[str, ...], command: Any) -> None:
    assert command.help, "every command says what it does"
    for columns in (60, 200):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
        lines = result.stdout.splitlines()
        assert result.exit_code == 0, result.output
        assert " ".join(("Usage: memori", *path)) in result.stdout
        assert len(lines) > 5 and max(map(len, lines)) <= columns
    # At 200 columns every option is shown whole (at 60 Rich may cut a long one with "…").
    options = [o for p in command.params if not getattr(p, "hidden", False)
               for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]  # fmt: skip
    assert [o for o in options if o not in result.stdout] == []


def test_import_reports_rejects_and_exits_1(transcript: Path) -> None:
    code, out, err = run("import", str(transcript), "--entity", "alice")
    assert code == 1
    assert out == ""  # talk goes to stderr
    assert f"{transcript}:3: field 'role'" in err
    assert f"{transcript}:4: invalid JSON" in err
    assert "Imported 2 messages" in err


def test_import_json_report(transcript: Path) -> None:
    code, out, _ = run("import", str(transcript), "--entity", "alice", "--json")
    report = json.loads(out)
    assert code == 1
    assert (report["imported"], report["duplicates"], report["sessions"]) == (2, 0, 1)
    assert [r["line"] for r in report["rejected"]] == [3, 4]
    code, out, _ = run("import", str(transcript), "--entity", "alice", "--json")
    assert (json.loads(out)["imported"], json.loads(out)["duplicates"]) == (0, 2)


def test_clean_import_exits_0(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ok.jsonl", [{"role": "user", "content": "all good"}])
    code, _, err = run("import", str(path), "--session", "mine", "--process", "cli")
    assert code == 0, err
    sessions = json.loads(run("sessions", "--json")[1])
    assert [(s["session"], s["process"], s["messages"]) for s in sessions] == [("mine", "cli", 1)]


def test_recall_json_and_table(transcript: Path) -> None:
    run("import", str(transcript), "--entity", "alice")
    code, out, _ = run("recall", "where does Alice live these days?", "--entity", "alice", "--json")
    hits = json.loads(out)
    assert code == 0
    assert hits[0]["content"] == "Alice here, I live in Berlin"
    assert hits[0]["source_ids"] == ["a1"]
    assert hits[0]["entity"] == "alice" and hits[0]["session"] == "s1"
    code, out, _ = run("recall", "Alice in Berlin", "--entity", "alice", "--limit", "1")
    assert code == 0 and "Alice here" in out and "s1 / a1" in out
    code, out, err = run("recall", "Berlin", "--entity", "bob")
    assert (code, out) == (0, "") and "Nothing recalled" in err


def test_usage_errors_exit_2(transcript: Path) -> None:
    assert run("recall", "x", "--entity", "")[0] == 2
    assert run("recall", "x", "--since", "someday")[0] == 2
    assert run("import", str(transcript), "--format", "csv")[0] == 2
    assert run("recall")[0] == 2
    assert run("nonsense")[0] == 2


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    code, _, err = run("import", str(tmp_path / "nope.jsonl"))
    assert code == 1 and "no such file" in err and "Traceback" not in err


def test_stats_and_sessions(transcript: Path, memori_home: Path) -> None:
    run("import", str(transcript), "--entity", "alice")
    stats = json.loads(run("stats", "--json")[1])
    assert stats["messages"] == 2 and stats["entities"] == 1 and stats["jobs_pending"] == 1
    assert stats["path"] == str(memori_home / "memori.db") and stats["bytes"] > 0
    assert "messages" in run("stats")[1]
    assert "alice" in run("sessions", "--entity", "alice")[1]


def test_forget_asks_unless_yes(transcript: Path) -> None:
    run("import", str(transcript), "--entity", "alice")
    code, _, err = run("forget", "--entity", "alice", input="n\n")
    assert code == 1 and "Nothing forgotten" in err
    assert json.loads(run("stats", "--json")[1])["messages"] == 2
    code, out, _ = run("forget", "--entity", "alice", "--yes", "--json")
    assert code == 0 and json.loads(out)["removed"]["messages"] == 2
    assert json.loads(run("stats", "--json")[1])["messages"] == 0


@pytest.mark.real_model
def test_doctor(memori_home: Path, transcript: Path) -> None:
    run("import", str(transcript))
    code, out, _ = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out)}
    assert code == 0
    assert checks["embeddings"]["status"] == "ok"
    assert checks["embeddings"]["detail"].startswith("all-MiniLM-L6-v2 (384-d, ")  # and engine
    assert "sqlite-vec" in checks["sqlite"]["detail"]
    assert checks["daemon"]["detail"].startswith("not running")
    assert checks["store"]["status"] == "ok"
    (memori_home / "memori.db").chmod(0o644)
    code, out, err = run("doctor", "--json")
    # Opening the store tightened the file again, with a warning on stderr.
    assert "readable by others" in err
    assert {c["check"]: c for c in json.loads(out)}["store"]["status"] == "ok"


def test_db_option_points_at_another_store(tmp_path: Path, transcript: Path) -> None:
    other = tmp_path / "other.db"
    run("--db", str(other), "import", str(transcript))
    assert json.loads(run("--db", str(other), "stats", "--json")[1])["messages"] == 2
    code, _, err = run("stats", "--json")  # the default store was never created
    assert code == 1 and "no memori store" in err
