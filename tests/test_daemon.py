"""The daemon as real processes: start/stop, one per store, kill -9, concurrent writers,
forget during a job. No mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import memori_daemon
import pytest

from memori_cli import Memori
from memori_cli.augment.rules import RuleExtractor

pytestmark = pytest.mark.slow  # every test starts a daemon or memori processes

MEMORI = str(Path(sys.executable).parent / "memori")


@pytest.fixture(autouse=True)
def no_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule extractor alone: these tests are about the queue, not the models.
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")


def cli(db: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [MEMORI, "--db", str(db), *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def transcript(path: Path, entity: str, sessions: int, per_session: int) -> Path:
    places = ["Oslo", "Lima", "Kyoto", "Quito", "Perth", "Dakar"]
    with open(path, "w") as handle:
        for s in range(sessions):
            for i in range(per_session):
                text = (
                    f"I live in {places[(s + i) % len(places)]}. I love tea number {i}. "
                    f"My sister Ana{s} is nice."
                )
                record = {
                    "role": "user",
                    "content": text,
                    "session": f"{entity}-{s}",
                    "entity": entity,
                    "name": "Kim",
                    "timestamp": f"2024-01-{1 + s % 28:02d}T00:{i // 60:02d}:{i % 60:02d}Z",
                }
                handle.write(json.dumps(record) + "\n")
    return path


def queue(db: Path) -> dict[str, int]:
    mem = Memori(conn=db)
    try:
        rows = mem.store.conn.execute("SELECT status, count(*) FROM jobs GROUP BY status")
        return {status: count for status, count in rows}
    finally:
        mem.close()


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def drained(db: Path) -> bool:
    depth = queue(db)
    return depth.get("pending", 0) == 0 and depth.get("running", 0) == 0


def snapshot(db: Path) -> list[tuple[Any, ...]]:
    mem = Memori(conn=db)
    try:
        return mem.store.conn.execute(
            """SELECT m.kind, m.content, m.count, m.valid_to IS NULL,
                      (SELECT count(*) FROM memory_sources WHERE memory_id = m.id)
               FROM memories m ORDER BY m.content, m.valid_from"""
        ).fetchall()
    finally:
        mem.close()


def test_start_status_stop(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    cli(db, "import", str(transcript(tmp_path / "t.jsonl", "kim", 2, 3)))
    cli(db, "daemon", "start")
    try:
        wait_for(lambda: drained(db))
        status = json.loads(cli(db, "daemon", "status", "--json").stdout)
        assert status["running"] and status["pid"] > 0 and status["heartbeat_age_s"] < 5
        assert status["extractor"] == RuleExtractor.name and status["queue"]["pending"] == 0
    finally:
        cli(db, "daemon", "stop")
    assert not memori_daemon.status(db.resolve()).running
    assert json.loads(cli(db, "daemon", "status", "--json").stdout)["running"] is False
    log = cli(db, "daemon", "logs", "-n", "100").stdout
    assert "started" in log and "stopped" in log and "Oslo" not in log  # no contents


def test_two_starts_at_once_leave_one_daemon(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    Memori(conn=db).close()
    starts = [
        subprocess.Popen(
            [MEMORI, "--db", str(db), "daemon", "start"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        assert [p.wait(60) for p in starts] == [0, 0]
        pid = memori_daemon.status(db.resolve()).pid
        found = subprocess.run(
            ["pgrep", "-f", f"memori_daemon --db {db.resolve()}"], capture_output=True, text=True
        ).stdout.split()
        assert found == [str(pid)]
    finally:
        cli(db, "daemon", "stop")


def start_daemon(db: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "memori_daemon", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: memori_daemon.status(db.resolve()).running)
    return process


def test_kill_9_mid_job_then_restart_completes_every_job_once(tmp_path: Path) -> None:
    source = transcript(tmp_path / "t.jsonl", "kim", 150, 40)
    reference = tmp_path / "reference.db"
    cli(reference, "import", str(source))
    cli(reference, "augment")
    db = tmp_path / "m.db"
    cli(db, "import", str(source))
    daemon = start_daemon(db)
    wait_for(lambda: queue(db).get("done", 0) >= 5, timeout=60)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    depth = queue(db)
    assert depth.get("pending", 0) + depth.get("running", 0) > 0, "killed too late"
    restarted = start_daemon(db)
    try:
        wait_for(lambda: drained(db), timeout=120)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0
    assert queue(db) == {"done": 150}
    assert snapshot(db) == snapshot(reference)
    mem = Memori(conn=db)
    assert mem.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    mem.close()


def test_four_writers_while_the_daemon_augments(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    Memori(conn=db).close()
    daemon = start_daemon(db)
    try:
        files = [transcript(tmp_path / f"w{n}.jsonl", f"writer{n}", 20, 50) for n in range(3)]
        writers = [
            subprocess.Popen(
                [MEMORI, "--db", str(db), "import", str(f), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for f in files
        ]
        # The fourth writer captures through the library, message by message.
        capture = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from memori_cli import Memori; m = Memori(conn=sys.argv[1])\n"
                "for i in range(300):\n"
                "    m.add_messages([{'role': 'user', 'content': f'I love tea {i}.'}])",
                str(db),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        outputs = [p.communicate(timeout=120) for p in [*writers, capture]]
        for process, (_, stderr) in zip([*writers, capture], outputs, strict=True):
            assert process.returncode == 0, stderr
            assert "locked" not in stderr
        wait_for(lambda: drained(db), timeout=120)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    mem = Memori(conn=db)
    conn = mem.store.conn
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3 * 1000 + 300
    assert queue(db).get("failed", 0) == 0
    dupes = conn.execute(
        """SELECT count(*) FROM (SELECT 1 FROM memories WHERE valid_to IS NULL
           GROUP BY entity_id, kind, about, norm HAVING count(*) > 1)"""
    ).fetchone()[0]
    assert dupes == 0
    mem.close()


def test_forget_while_the_daemon_works_on_the_entity(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    cli(db, "import", str(transcript(tmp_path / "gone.jsonl", "gone", 150, 40)))
    cli(db, "import", str(transcript(tmp_path / "kept.jsonl", "kept", 2, 5)))
    daemon = start_daemon(db)
    try:
        wait_for(lambda: queue(db).get("done", 0) >= 3)
        cli(db, "forget", "--entity", "gone", "--yes")
        wait_for(lambda: drained(db))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    mem = Memori(conn=db)
    conn = mem.store.conn
    for table in ("messages", "memories", "triples", "session_summaries", "jobs", "sessions"):
        left = conn.execute(f"SELECT count(*) FROM {table} WHERE entity_id = 'gone'").fetchone()
        assert left[0] == 0, table
    assert conn.execute("SELECT count(*) FROM memories WHERE entity_id = 'kept'").fetchone()[0]
    mem.close()


def test_daemon_install_writes_a_service_file(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    db = tmp_path / "m.db"
    for system, path in (
        ("systemd", tmp_path / "config/systemd/user/memori.service"),
        ("launchd", tmp_path / "Library/LaunchAgents/dev.memori.daemon.plist"),
    ):
        result = subprocess.run(
            [MEMORI, "--db", str(db), "daemon", "install", "--system", system],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        text = path.read_text()
        assert "memori_daemon" in text and str(db.resolve()) in text
    import plistlib

    plist = plistlib.loads((tmp_path / "Library/LaunchAgents/dev.memori.daemon.plist").read_bytes())
    assert plist["ProgramArguments"][1:3] == ["-m", "memori_daemon"]
