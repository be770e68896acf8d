"""Output hardening: graph export never clobbers or follows links, augment failures are one
clean line each, and a failed import says how much it stored."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.cli import app
from memori_cli.graph import resolve as graph_resolve
from memori_cli.store import jobs


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memori]:
    memori = Memori(tmp_path / "memori.db", embedder=None)
    memori.config.embedding_model = "none"
    yield memori
    memori.close()


# -- 1. graph export -o ---------------------------------------------------------------------
@pytest.fixture
def graph_db(mem: Memori) -> str:
    graph_resolve.add_edge(mem.store, "maya", ("Maya", "person"), "lives_in",
                         ("Lisbon", "place"), extractor="t")  # fmt: skip
    return str(mem.store.path)


def export(db: str, *args: str) -> object:
    return CliRunner().invoke(app, ["--db", db, "graph", "export", "--entity", "maya", *args])


def test_export_refuses_an_existing_file_without_force(graph_db: str, tmp_path: Path) -> None:
    target = tmp_path / "graph.json"
    target.write_text("precious")
    result = export(graph_db, "-o", str(target))
    assert result.exit_code == 1, result.output
    assert "exists" in result.stderr and "--force" in result.stderr
    assert target.read_text() == "precious"


def test_export_never_writes_through_a_symlink(graph_db: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "graph.json"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere" / "x")
    for path in (link, dangling):
        result = export(graph_db, "-o", str(path))
        assert result.exit_code == 1 and "--force" in result.stderr
        assert path.is_symlink()
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()
    # --force replaces the link itself, not the file it points to.
    result = export(graph_db, "-o", str(link), "--force")
    assert result.exit_code == 0, result.output
    assert not link.is_symlink() and json.loads(link.read_text())["edges"]
    assert victim.read_text() == "precious"


def test_export_with_force_replaces_atomically_and_privately(graph_db: str, tmp_path: Path) -> None:
    target = tmp_path / "graph.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    result = export(graph_db, "-o", str(target), "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["edges"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".graph")) == []
    new = tmp_path / "new.json"
    assert export(graph_db, "-o", str(new)).exit_code == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    folder = tmp_path / "folder"
    folder.mkdir()
    result = export(graph_db, "-o", str(folder), "--force")
    assert result.exit_code == 1 and "directory" in result.stderr
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-pipe"
    to_fifo.symlink_to(fifo)
    for special in (fifo, to_fifo):
        result = export(graph_db, "-o", str(special), "--force")
        assert result.exit_code == 1 and "not a regular file" in result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and to_fifo.is_symlink()


def test_picture_export_follows_the_same_rules(
    graph_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"  # a stand-in Graphviz: the picture comes back on stdout
    fake.write_text("#!/bin/sh\ncat >/dev/null\nprintf 'PNGDATA'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    victim = tmp_path / "victim.png"
    victim.write_text("precious")
    link = tmp_path / "graph.png"
    link.symlink_to(victim)
    result = export(graph_db, "-f", "png", "-o", str(link))
    assert result.exit_code == 1 and "--force" in result.stderr
    result = export(graph_db, "-f", "png", "-o", str(link), "--force")
    assert result.exit_code == 0, result.output
    assert not link.is_symlink() and link.read_bytes() == b"PNGDATA"
    assert victim.read_text() == "precious"


# -- 2. augment failures: one clean line, no traceback ----------------------------------------
FAILING_AUGMENT = """
import sys
from memori_cli.augment.rules import RuleExtractor

def extract(self, *args, **kwargs):
    raise RuntimeError("the extractor exploded")

RuleExtractor.extract = extract
from memori_cli.cli import main

sys.argv = ["memori", "--db", sys.argv[1], *sys.argv[2:]]
main()
"""


def failing_job_db(mem: Memori, *, last_attempt: bool) -> str:
    mem.add_messages([{"role": "user", "content": "I live in Lisbon."}])
    if last_attempt:  # the next failure parks it as failed instead of retrying
        with mem.store.write() as conn:
            conn.execute("UPDATE jobs SET attempts = ?", (jobs.MAX_ATTEMPTS - 1,))
    return str(mem.store.path)


def memori_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real console script in a fresh process: no pytest logging handlers, so the
    logging module's last-resort handler would print what nobody configured."""
    home = {"MEMORI_HOME": str(tmp_path / "home"), "MEMORI_EMBEDDING_MODEL": "none"}  # no vectors
    env = os.environ | home | {"COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", FAILING_AUGMENT, *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_a_failed_job_is_one_clean_line_without_a_traceback(mem: Memori, tmp_path: Path) -> None:
    db = failing_job_db(mem, last_attempt=True)
    done = memori_cli(tmp_path, db, "augment")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "exploded" in line]
    assert len(lines) == 1, done.stderr
    assert "RuntimeError: the extractor exploded" in lines[0]
    assert "1 jobs failed" in done.stderr
    (job,) = mem.store.conn.execute("SELECT id, status, error FROM jobs").fetchall()
    assert job[1] == "failed" and "the extractor exploded" in job[2]
    shown = memori_cli(tmp_path, db, "jobs", "show", str(job[0]))
    assert shown.returncode == 0 and "the extractor exploded" in shown.stdout + shown.stderr


@pytest.mark.slow
def test_a_retrying_job_says_why_without_a_traceback(mem: Memori, tmp_path: Path) -> None:
    db = failing_job_db(mem, last_attempt=False)
    done = memori_cli(tmp_path, db, "augment")
    assert "Traceback" not in done.stderr
    assert "the extractor exploded" in done.stderr and "1 will retry" in done.stderr
    json_run = memori_cli(tmp_path, db, "augment", "--json")
    assert "Traceback" not in json_run.stderr
    json.loads(json_run.stdout)


def test_a_configured_log_handler_still_gets_the_traceback(
    mem: Memori, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from memori_cli.augment.rules import RuleExtractor

    def extract(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("the extractor exploded")

    monkeypatch.setattr(RuleExtractor, "extract", extract)
    db = failing_job_db(mem, last_attempt=True)
    with caplog.at_level("INFO", logger="memori"):
        result = CliRunner().invoke(app, ["--db", db, "augment"])
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr and "the extractor exploded" in result.stderr
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.name == "memori.augment" and "exploded" in str(record.exc_info[1])


# -- 3. a failed import says what it stored ---------------------------------------------------
MESSAGES = 6000  # more than one batch: the first is stored before the failure


def transcript(count: int = MESSAGES) -> bytes:
    lines = (json.dumps({"role": "user", "content": f"message number {n}"}) for n in range(count))
    return ("\n".join(lines) + "\n").encode()


def stored(db: str) -> int:
    check = Memori(db, create=False, embedder=None)
    try:
        return int(check.store.conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        check.close()


def test_a_zip_that_breaks_part_way_reports_what_was_stored(tmp_path: Path) -> None:
    db = str(tmp_path / "memori.db")
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        zipped.writestr("chat.jsonl", transcript())
    raw = archive.read_bytes()
    last = f"message number {MESSAGES - 1}".encode()
    archive.write_bytes(raw.replace(last, last.replace(b"message", b"massage")))  # bad CRC
    result = CliRunner().invoke(app, ["--db", db, "import", str(archive)])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert "Imported 5000 messages before the error" in result.stderr
    assert "run the same import again to finish" in result.stderr
    assert stored(db) == 5000
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        zipped.writestr("chat.jsonl", transcript())
    again = CliRunner().invoke(app, ["--db", db, "import", str(archive), "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["imported"], report["duplicates"]) == (MESSAGES - 5000, 5000)


def test_a_store_that_refuses_a_write_part_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memori_cli.importers as importers
    from memori_cli.errors import StoreError

    real, calls = importers.add_messages, []

    def add_messages(store: object, batch: list[object]) -> object:
        calls.append(len(batch))
        if len(calls) > 1:
            raise StoreError("the disk is full")
        return real(store, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(importers, "add_messages", add_messages)
    source = tmp_path / "chat.jsonl"
    source.write_bytes(transcript())
    db = str(tmp_path / "memori.db")
    result = CliRunner().invoke(app, ["--db", db, "import", str(source)])
    assert result.exit_code == 1, result.output
    assert "the disk is full" in result.stderr
    assert "Imported 5000 messages before the error" in result.stderr
    calls.clear()
    as_json = CliRunner().invoke(app, ["--db", db, "import", str(source), "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["error"] == "the disk is full" and report["duplicates"] == 5000
    assert "No new messages were stored before the error" in as_json.stderr
    # The library keeps the partial report on the exception.
    calls.clear()
    mem = Memori(db, embedder=None)
    try:
        with pytest.raises(StoreError) as caught:
            mem.import_file(source)
    finally:
        mem.close()
    partial = importers.partial_report(caught.value)
    assert partial is not None and partial.duplicates == 5000 and partial.imported == 0
    assert importers.partial_report(ValueError("unrelated")) is None
