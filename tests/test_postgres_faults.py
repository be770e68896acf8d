"""A PostgreSQL store through lost connections and a server restart (issue 16).

The connection of a library, an import or a daemon cut by the server (as a restart or a
failover cuts it) is replaced on its next use; what was being written is retried or redone,
never half-kept. The slow test runs real processes through faults: three daemons drain
2,000 jobs over 50 entities while two importers and a capturing process write, one daemon is
killed with -9 in the middle of a job, and the server restarts under all of them. Every job
is done exactly once, nothing is lost or doubled, and the memories are those a SQLite store
makes of the same transcripts.

The server is one of the test's own (``scripts/postgres start``), so restarting it leaves the
shared test server alone. Skipped where scripts/test started no PostgreSQL.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_postgres_library import EXAMPLE

from memori_cli import Memori
from memori_cli.augment.extract import Extraction, Turn
from memori_cli.augment.rules import RuleExtractor
from memori_cli.errors import StoreUnavailable
from memori_cli.store import jobs

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = str(ROOT / "scripts" / "postgres")
CAPTURES = 100

# One process's capture: an OpenAI client (against scripts/llm_server.py) wrapped by memori,
# one call every 50 ms, each exchange stored in the background by the capture writer.
_CAPTURE = f"""
import sys, time
sys.path.insert(0, {str(ROOT / "scripts")!r})
import openai
from llm_server import LLMServer
from memori_cli import Memori
server = LLMServer().start()
mem = Memori(conn=sys.argv[1])
client = openai.OpenAI(base_url=server.url + "/v1", api_key="test")
mem.llm.register(client)
with mem.attribution("capture", "app"):
    for i in range({CAPTURES}):
        client.chat.completions.create(
            model="m", messages=[{{"role": "user", "content": f"I live in Lima, call {{i}}."}}]
        )
        time.sleep(0.05)
mem.close()
server.stop()
"""

_IMPORT = """
import sys
from memori_cli import Memori
mem = Memori(conn=sys.argv[1])
for path in sys.argv[2:]:
    report = mem.import_file(path)
    assert report.rejected_total == 0, report
"""


def transcripts(path: Path, entities: list[str], sessions: int) -> Path:
    """One file of ``sessions`` two-message sessions, a day apart, for each of ``entities``:
    where each lives changes from session to session (later facts supersede earlier ones)."""
    places = ["Oslo", "Lima", "Kyoto", "Quito", "Perth", "Dakar"]
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    with open(path, "w") as out:
        for entity in entities:
            for s in range(sessions):
                day = start + datetime.timedelta(days=s)
                for i, text in enumerate(
                    (f"I live in {places[s % len(places)]}.", f"My sister Ana{s} loves tea.")
                ):
                    record = {
                        "role": "user",
                        "content": text,
                        "session": f"{entity}-{s}",
                        "entity": entity,
                        "name": "Kim",
                        "timestamp": (day + datetime.timedelta(minutes=i)).isoformat(),
                    }
                    out.write(json.dumps(record) + "\n")
    return path


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """``check()``'s first true value, polled every 0.1 s for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


# -- on the shared test server: connections cut with pg_terminate_backend -------------------
def cut_connections(url: str) -> int:
    """Terminate every memori connection to ``url``'s database (as a server restart would);
    how many."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        (count,) = admin.execute(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'memori'
               AND pid != pg_backend_pid()"""
        ).fetchone()
    return int(count)


def say(mem: Memori, entity: str, text: str) -> None:
    with mem.attribution(entity):
        mem.add_messages([{"role": "user", "content": text}])


def test_a_cut_connection_is_replaced_on_its_next_use(postgres_store_url: str) -> None:
    mem = Memori(conn=postgres_store_url)
    say(mem, "kim", "I live in Oslo.")
    assert cut_connections(postgres_store_url) == 1
    with pytest.raises(StoreUnavailable, match="cannot reach the store") as raised:
        say(mem, "kim", "I love tea.")
    assert mem.store.is_lost(raised.value)
    # the next use opens a new connection: nothing needs restarting
    say(mem, "kim", "I love tea.")
    cut_connections(postgres_store_url)
    with pytest.raises(StoreUnavailable, match="cannot reach the store"):  # a read, too
        mem.recall("tea", entity_id="kim")
    assert [h.content for h in mem.recall("tea", entity_id="kim")][:1] == ["I love tea."]
    assert not mem.store.is_lost(KeyError("not a database error"))
    mem.close()


def test_an_import_retries_a_batch_whose_connection_was_cut(
    postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memori_cli.importers as importers

    real, cuts = importers.add_messages, []

    def cut_first(store: Any, batch: Any) -> Any:
        if not cuts:  # the import's writer has its connection: cut it before this batch
            _ = store.conn
            cuts.append(cut_connections(postgres_store_url))
        return real(store, batch)

    monkeypatch.setattr(importers, "add_messages", cut_first)
    mem = Memori(conn=postgres_store_url)
    report = mem.import_file(EXAMPLE, entity_id="maya")
    assert cuts == [1] and (report.imported, report.duplicates) == (23, 0)
    assert mem.store.conn.execute("SELECT count(*) FROM messages").fetchone() == (23,)
    mem.close()


class CuttingExtractor(RuleExtractor):
    """The rule extractor, whose first run cuts the store's connections mid-job."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.cuts = url, 0

    def extract(self, turns: list[Turn], **options: Any) -> Extraction:
        if not self.cuts:
            self.cuts = cut_connections(self.url)
        return super().extract(turns, **options)


def test_a_job_whose_connection_is_cut_is_handed_back_untouched(postgres_store_url: str) -> None:
    from memori_cli.augment.pipeline import AugmentReport, Pipeline

    mem = Memori(conn=postgres_store_url)
    say(mem, "kim", "I live in Oslo.")
    pipeline = Pipeline(mem.store, CuttingExtractor(postgres_store_url), lease=30)
    (job,) = jobs.claim(mem.store, pipeline.owner, lease=pipeline.lease)
    report = AugmentReport()
    with pytest.raises(StoreUnavailable):  # no fault of the job's: not counted against it
        pipeline.run(job, report)
    assert report.jobs_failed == report.jobs_retrying == report.jobs_done == 0
    assert mem.memories("kim") == []  # its results rolled back with the connection
    assert jobs.depth(mem.store)["running"] == 1
    assert jobs.release_owned(mem.store, pipeline.owner) == 1
    assert jobs.depth(mem.store)["pending"] == 1
    assert jobs.release_owned(mem.store, pipeline.owner) == 0
    assert pipeline.drain().jobs_done == 1  # redone, from its first attempt
    assert [m.content for m in mem.memories("kim")] == ["User lives in Oslo"]
    mem.close()


def test_the_daemon_reconnects_and_goes_on(
    postgres_store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    from memori_daemon.worker import Daemon

    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    mem = Memori(conn=postgres_store_url)
    mem.store.build()
    daemon = Daemon(postgres_store_url)
    caplog.set_level(logging.INFO, logger="memori.daemon")
    thread = threading.Thread(target=daemon.serve, daemon=True)
    thread.start()
    try:
        wait_for(lambda: any(r.startswith("started") for r in caplog.messages), 30, "the daemon")
        assert cut_connections(postgres_store_url) == 3  # the daemon's, its LISTEN, ours
        mem.store.close_thread()  # ours was one of them
        say(mem, "kim", "I live in Oslo.")
        wait_for(lambda: mem.memories("kim"), 30, "the daemon to augment")
        assert thread.is_alive()
        assert any(r.startswith("lost the store's server") for r in caplog.messages)
        assert any("is back after" in r for r in caplog.messages)
    finally:
        daemon.stop.set()
        daemon.wake.set()
        thread.join(30)
    assert not thread.is_alive() and daemon.report.jobs_done == 1
    mem.close()


# -- real processes on a server of the test's own -----------------------------------------
@pytest.fixture
def own_server(postgres_server: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL cluster of this test's own: (its folder, a store URL on it)."""
    folder = tempfile.mkdtemp(prefix="memori-pg-")
    try:
        dsn = subprocess.run(
            [POSTGRES, "start", folder], capture_output=True, text=True, check=True
        ).stdout.strip()
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("CREATE DATABASE memori")
        yield folder, dsn.replace("/postgres?", "/memori?", 1)
    finally:
        subprocess.run([POSTGRES, "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def memories_by_entity(mem: Memori, entities: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Each entity's memories as comparable rows (no ids, no times)."""
    rows = mem.store.conn.execute(
        """SELECT m.entity_id, m.kind, m.content, m.count, m.valid_to IS NULL,
                  (SELECT count(*) FROM memory_sources s WHERE s.memory_id = m.id)
           FROM memories m"""
    ).fetchall()
    found: dict[str, list[tuple[Any, ...]]] = {entity: [] for entity in entities}
    for entity, *rest in rows:
        if entity in found:
            found[entity].append(tuple(int(v) if isinstance(v, bool) else v for v in rest))
    return {entity: sorted(rows) for entity, rows in found.items()}


@pytest.mark.slow
def test_three_daemons_drain_one_queue_through_a_kill_and_a_server_restart(
    own_server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")  # the queue and the faults
    folder, url = own_server
    base = transcripts(tmp_path / "base.jsonl", [f"e{n:02d}" for n in range(50)], 40)
    more = [
        transcripts(tmp_path / f"more{k}.jsonl", [f"m{k}{n}" for n in range(10)], 20)
        for k in range(2)
    ]
    mem = Memori(conn=url)
    assert mem.import_file(base).imported == 50 * 40 * 2
    assert jobs.depth(mem.store)["pending"] == 2000
    env = dict(
        os.environ,
        MEMORI_DB=url,
        MEMORI_LEASE_SECONDS="5",  # how soon the killed daemon's job is taken over
    )
    env.pop("MEMORI_CHAT_MODEL", None)
    homes = [tmp_path / f"host{n}" for n in range(3)]  # a pidfile each: as on three hosts
    daemons = [
        subprocess.Popen(
            [sys.executable, "-m", "memori_daemon"],
            env=dict(env, MEMORI_HOME=str(home)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for home in homes
    ]
    writers: list[subprocess.Popen[str]] = []
    try:
        wait_for(lambda: jobs.depth(mem.store)["done"] >= 400, 120, "400 jobs done")
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", code, url, *files],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for code, files in (
                (_IMPORT, [str(more[0]), str(more[1])]),  # the two importers race on
                (_IMPORT, [str(more[1]), str(more[0])]),  # the same files, crosswise
                (_CAPTURE, []),
            )
        ]
        # kill -9 the first daemon while it holds a job: frozen first, so that what it holds
        # when seen is what it holds when it dies
        owner = f"{socket.gethostname()}:{daemons[0].pid}:%"

        def frozen_holding() -> Any:
            daemons[0].send_signal(signal.SIGSTOP)
            held = mem.store.conn.execute(
                "SELECT id FROM jobs WHERE status = 'running' AND lease_owner LIKE ?", (owner,)
            ).fetchone()
            if held is None:
                daemons[0].send_signal(signal.SIGCONT)
            return held

        (killed_job,) = wait_for(frozen_holding, 60, "a job held by the first daemon")
        daemons[0].send_signal(signal.SIGKILL)
        daemons[0].wait(10)

        # then restart the server under everyone, half-way through the capturing process
        def captured() -> int:
            return int(
                mem.store.conn.execute(
                    "SELECT count(*) FROM messages WHERE entity_id = 'capture'"
                ).fetchone()[0]
            )

        wait_for(lambda: captured() >= CAPTURES, 120, "half of the captures")
        restarted = subprocess.run([POSTGRES, "restart", folder], capture_output=True, text=True)
        assert restarted.returncode == 0, restarted.stderr
        mem.store.close_thread()  # this test's own connection went with the old server
        for writer in writers:
            _, err = writer.communicate(timeout=240)
            assert writer.returncode == 0, err

        def drained() -> bool:
            depth = jobs.depth(mem.store)
            return depth["pending"] == depth["running"] == 0

        wait_for(drained, 300, "the queue to drain")
        assert [d.poll() for d in daemons[1:]] == [None, None], "a daemon died"
    finally:
        for process in [*daemons, *writers]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        stderr = [d.communicate(timeout=60)[1] for d in daemons]
    assert [d.returncode for d in daemons[1:]] == [0, 0], stderr
    text = "\n".join(log.read_text() for home in homes for log in home.rglob("daemon-*.log"))
    assert "lost the store's server" in text and "is back after" in text
    assert captured() == 2 * CAPTURES  # each call's question and reply, none spooled

    conn = mem.store.conn
    assert conn.execute(
        "SELECT count(*) FROM messages WHERE entity_id != 'capture'"
    ).fetchone() == (4000 + 2 * 10 * 20 * 2,)
    (doubled,) = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM messages GROUP BY session_id, content_hash "
        "HAVING count(*) > 1) AS d"
    ).fetchone()
    assert doubled == 0
    # every job done, once; every message in one job
    depth = jobs.depth(mem.store)
    assert depth["failed"] == depth["pending"] == depth["running"] == 0
    (queued,) = conn.execute(
        "SELECT count(*) FROM jobs, json_array_elements(payload::json -> 'message_ids')"
    ).fetchone()
    assert queued == conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert conn.execute("SELECT status FROM jobs WHERE id = ?", (killed_job,)).fetchone() == (
        "done",
    )
    done_lines = Counter(re.findall(r"job (\d+) done:", text))
    assert done_lines and max(done_lines.values()) == 1, "a job was done twice"
    # by another daemon, once the dead one's lease ran out
    assert done_lines[str(killed_job)] == 1
    (dupes,) = conn.execute(
        """SELECT count(*) FROM (SELECT 1 FROM memories WHERE valid_to IS NULL
           GROUP BY entity_id, kind, about, norm HAVING count(*) > 1) AS d"""
    ).fetchone()
    assert dupes == 0
    # the memories are those one SQLite process makes of the same files
    entities = {"e00", "e17", "e49", "m00", "m14"}
    lines = [
        line
        for path in (base, *more)
        for line in path.read_text().splitlines()
        if json.loads(line)["entity"] in entities
    ]
    (tmp_path / "reference.jsonl").write_text("\n".join(lines) + "\n")
    reference = Memori(conn=tmp_path / "reference.db")
    reference.import_file(tmp_path / "reference.jsonl")
    reference.augment()
    expected = memories_by_entity(reference, entities)
    assert all(expected.values())
    assert memories_by_entity(mem, entities) == expected
    reference.close()
    mem.close()


MEMORI = str(Path(sys.executable).parent / "memori")


def _daemon_env(url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ, MEMORI_DB=url, MEMORI_EMBEDDING_MODEL="none", MEMORI_HOME=str(home))
    env.pop("MEMORI_CHAT_MODEL", None)
    return env


def _status(env: dict[str, str]) -> dict[str, Any]:
    """``memori daemon status --json``."""
    shown = subprocess.run(
        [MEMORI, "daemon", "status", "--json"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def _resume_then_augment(folder: str, url: str, env: dict[str, str]) -> None:
    """Bring the paused server back; the daemon connects, and augments what is said then."""
    subprocess.run([POSTGRES, "resume", folder], check=True, capture_output=True)
    wait_for(lambda: "store_unreachable_s" not in _status(env), 60, "the daemon to connect")
    mem = Memori(conn=url)
    say(mem, "kim", "I live in Oslo.")
    wait_for(lambda: mem.memories("kim"), 60, "the daemon to augment")
    mem.close()


@pytest.mark.slow
def test_a_daemon_started_while_the_server_is_down_waits_for_it(
    own_server: tuple[str, str], tmp_path: Path
) -> None:
    folder, url = own_server
    Memori(conn=url).store.build()
    env = _daemon_env(url, tmp_path)
    subprocess.run([POSTGRES, "pause", folder], check=True, capture_output=True)
    started = subprocess.run([MEMORI, "daemon", "start"], env=env, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stderr
        during = _status(env)
        assert during["running"] and during["store_unreachable_s"] is not None
        _resume_then_augment(folder, url, env)
    finally:
        stopped = subprocess.run(
            [MEMORI, "daemon", "stop"], env=env, capture_output=True, text=True
        )
    assert stopped.returncode == 0, stopped.stderr


@pytest.mark.slow
def test_the_daemon_waits_out_an_outage_and_says_so(
    own_server: tuple[str, str], tmp_path: Path
) -> None:
    folder, url = own_server
    Memori(conn=url).store.build()
    env = _daemon_env(url, tmp_path)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "memori_daemon"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: _status(env)["running"], 60, "the daemon")
        subprocess.run([POSTGRES, "pause", folder], check=True, capture_output=True)
        during = wait_for(
            lambda: (shown := _status(env)).get("store_unreachable_s") is not None and shown,
            60,
            "the daemon to say it lost the server",
        )
        assert during["running"] and during["queue"] is None
        assert "cannot open the store" in during["store_error"]
        plain = subprocess.run([MEMORI, "daemon", "status"], env=env, capture_output=True,
                               text=True).stdout  # fmt: skip
        assert "queue: unknown (the store cannot be reached)" in plain
        _resume_then_augment(folder, url, env)
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
