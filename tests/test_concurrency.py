"""Write paths under real concurrency and crashes: separate processes, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memori_cli import Memori

MEMORI = str(Path(sys.executable).parent / "memori")

pytestmark = pytest.mark.slow  # memori processes side by side


def transcript(path: Path, tag: str, count: int) -> Path:
    with open(path, "w") as handle:
        for i in range(count):
            record = {"role": "user", "content": f"{tag} message {i} about things", "session": tag}
            handle.write(json.dumps(record) + "\n")
    return path


def import_crosswise(store: str, files: list[Path], timeout: float) -> list[tuple[int, str]]:
    """Process n imports file n and then file n + 1, all at once, into ``store``: overlapping
    writes and duplicates racing each other. Each process's (exit code, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _IMPORT_TWO, store, str(path), str(files[(n + 1) % len(files)])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, path in enumerate(files)
    ]
    done = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        done.append((proc.returncode, err))
    return done


def test_four_processes_import_into_one_store_at_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    files = [transcript(tmp_path / f"t{n}.jsonl", f"writer{n}", 3000) for n in range(4)]
    for code, err in import_crosswise(str(db), files, timeout=120):
        assert code == 0, err
        assert "locked" not in err
    mem = Memori(conn=db)
    conn = mem.store.conn
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 4 * 3000
    assert (
        conn.execute(
            "SELECT count(*) FROM (SELECT session_id, content_hash FROM messages "
            "GROUP BY 1, 2 HAVING count(*) > 1)"
        ).fetchone()[0]
        == 0
    )
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(mem.recall("writer2 message 17", limit=5)) == 5


_IMPORT_TWO = """
import sys
from memori_cli import Memori
mem = Memori(conn=sys.argv[1])
for path in sys.argv[2:]:
    report = mem.import_file(path)
    assert report.rejected_total == 0, report
"""


def test_killed_import_loses_nothing_and_reruns_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    source = transcript(tmp_path / "big.jsonl", "crash", 60_000)
    proc = subprocess.Popen(
        [MEMORI, "--db", str(db), "import", str(source)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it once some batches have committed, in the middle of the work.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if db.exists() and _count(db) > 0:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(db)
    assert 0 < partial < 60_000, partial
    result = subprocess.run(
        [MEMORI, "--db", str(db), "import", str(source), "--json"], capture_output=True, text=True
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert report["imported"] + report["duplicates"] == 60_000
    assert report["duplicates"] == partial
    assert _count(db) == 60_000
    mem = Memori(conn=db)
    assert mem.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    fts = mem.store.conn.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
    )
    assert fts is not None
    jobs = mem.store.conn.execute("SELECT payload FROM jobs").fetchall()
    queued = sum(len(json.loads(p)["message_ids"]) for (p,) in jobs)
    assert queued == 60_000  # every stored message has its job, exactly once


def _count(db: Path) -> int:
    import sqlean

    try:
        conn = sqlean.connect(str(db), timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            conn.close()
    except sqlean.OperationalError:
        return 0
