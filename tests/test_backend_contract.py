"""The backend contract: what the store asks of a storage engine, run against every
registered backend (SQLite; PostgreSQL where psycopg is installed, against the server
scripts/test starts: ``MEMORI_TEST_POSTGRES``), so every engine passes the same suite.

The SQL the tests write themselves goes through :func:`_sql`, so one text serves both
engines' parameter styles; upserts use ``ON CONFLICT``, which both accept."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memori_cli import Memori
from memori_cli.errors import StoreError
from memori_cli.store.backend import Backend, backend_for, registered


@pytest.fixture(params=registered(), ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
def target(tmp_path: Path, backend: Backend, request: pytest.FixtureRequest) -> str:
    if backend.name == "postgres":
        # A new empty database on the test server (skips, saying why, without one).
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "memori.db")


def _sql(backend: Backend, text: str) -> str:
    """``text``, written with ``?`` placeholders, in ``backend``'s parameter style."""
    if backend.paramstyle == "qmark":
        return text
    assert backend.paramstyle == "format"
    return text.replace("?", "%s")


def _executemany(backend: Backend, conn: Any, text: str, rows: list[tuple[Any, ...]]) -> None:
    """``executemany`` on the connection (sqlite3's) or a cursor of it (DB-API's)."""
    if hasattr(conn, "executemany"):
        conn.executemany(_sql(backend, text), rows)
    else:
        with conn.cursor() as cursor:
            cursor.executemany(_sql(backend, text), rows)


@pytest.fixture
def conn(backend: Backend, target: str) -> Iterator[Any]:
    opened = backend.connect(target)
    backend.configure(opened)
    backend.migrate(opened)
    yield opened
    opened.close()


def _keys(conn: Any) -> set[str]:
    return {key for (key,) in conn.execute("SELECT key FROM settings WHERE key LIKE 'c%'")}


def test_every_backend_meets_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.paramstyle in ("qmark", "format", "pyformat", "named", "numeric")
    assert all(issubclass(error, Exception) for error in backend.errors)


def test_migrating_twice_changes_nothing(backend: Backend, conn: Any) -> None:
    before = conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    backend.migrate(conn)
    assert conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == before > 0


def test_begin_commit_and_rollback(backend: Backend, conn: Any) -> None:
    assert not backend.in_transaction(conn)
    backend.begin(conn, entity="alice")
    assert backend.in_transaction(conn)
    conn.execute("INSERT INTO settings VALUES ('c1', 'kept')")
    backend.commit(conn)
    backend.begin(conn)
    conn.execute("INSERT INTO settings VALUES ('c2', 'undone')")
    backend.rollback(conn)
    assert not backend.in_transaction(conn)
    assert _keys(conn) == {"c1"}


def test_a_write_holds_the_lock_from_its_begin(backend: Backend, conn: Any, target: str) -> None:
    other = backend.connect(target)
    backend.configure(other)
    # Fail fast instead of waiting 30 s.
    if backend.name == "sqlite":
        other.execute("PRAGMA busy_timeout = 50")
    elif backend.name == "postgres":
        other.execute("SET lock_timeout = 50")
    backend.begin(conn)
    try:
        with pytest.raises(backend.errors) as caught:
            backend.begin(other)
        assert backend.is_transient(caught.value)
    finally:
        backend.rollback(conn)
        other.close()


def test_the_change_token_moves_when_another_connection_commits(
    backend: Backend, conn: Any, target: str
) -> None:
    token = backend.change_token(conn)
    other = backend.connect(target)
    backend.configure(other)
    backend.begin(other)
    other.execute("INSERT INTO settings VALUES ('c1', 'x')")
    backend.commit(other)
    other.close()
    assert backend.change_token(conn) != token


def test_watch_wakes_on_another_connections_commit_and_stops(
    backend: Backend, conn: Any, target: str
) -> None:
    stop, wake = threading.Event(), threading.Event()
    # A store's folder for SQLite; a URL stays a string (a Path would fold its "//").
    watched: Any = Path(target) if backend.name == "sqlite" else target
    watcher = threading.Thread(target=backend.watch, args=(watched, stop, wake))
    watcher.start()
    try:
        time.sleep(0.3)  # the watch is set up
        deadline = time.monotonic() + 10
        while not wake.is_set() and time.monotonic() < deadline:
            backend.begin(conn)
            conn.execute(
                _sql(
                    backend,
                    "INSERT INTO settings VALUES ('c1', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ),
                (str(time.time()),),
            )
            backend.commit(conn)
            wake.wait(0.5)
        assert wake.is_set()
    finally:
        stop.set()
        watcher.join(10)
    assert not watcher.is_alive()


def test_after_forget_finishes_when_nobody_reads(backend: Backend, conn: Any) -> None:
    backend.begin(conn)
    conn.execute("INSERT INTO settings VALUES ('c1', 'x')")
    backend.commit(conn)
    assert backend.after_forget(conn, attempts=1, wait_ms=50) is True


def test_versions_and_doctor_checks(backend: Backend, conn: Any) -> None:
    assert backend.versions(conn)
    for opened in (conn, None):
        checks = backend.checks(opened)
        assert checks
        for check in checks:
            assert set(check) == {"check", "status", "detail"}
            assert check["status"] in ("ok", "warn", "fail")


def test_a_driver_error_is_one_of_the_backends_errors(backend: Backend, conn: Any) -> None:
    with pytest.raises(backend.errors) as caught:
        conn.execute("SELECT * FROM no_such_table")
    assert not backend.is_full(caught.value, None)
    assert not backend.is_transient(caught.value)


def test_the_store_runs_its_writes_through_its_backend(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "memori.db")
    try:
        assert mem.store.backend in registered()
        with mem.store.write() as tx:
            tx.execute("INSERT INTO settings VALUES ('c1', 'x')")
        assert _keys(mem.store.conn) == {"c1"}
    finally:
        mem.close()


@pytest.mark.parametrize("url", ["mysql://db/memori", "mariadb://me@db/memori"])
def test_a_database_url_memori_cannot_open_is_refused_not_made_a_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="cannot open m"):
        Memori(conn=url)
    with pytest.raises(StoreError, match="file path"):
        backend_for("sqlite:///memori.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["postgresql://me@db/memori", "postgres://db/memori"])
def test_a_postgresql_url_selects_postgresql_and_is_never_made_a_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    assert backend_for(url).name == "postgres"
    mem = Memori(conn=url)
    assert mem.store.backend.name == "postgres" and mem.store.path is None
    assert mem.store.describe() == url
    assert list(tmp_path.iterdir()) == []  # nothing is opened before the first use
    with pytest.raises(StoreError, match="pass a PostgreSQL URL as a str"):
        backend_for(Path(url))  # Path() folds the "//": never taken for a file


def test_the_cli_refuses_a_database_url_before_it_becomes_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from memori_cli.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    by_option = runner.invoke(app, ["--db", "mysql://me@db/memori", "import", "x.jsonl"])
    monkeypatch.setenv("MEMORI_DB", "mariadb://db/memori")
    by_env = runner.invoke(app, ["stats"])
    for result in (by_option, by_env):
        assert result.exit_code == 2
        assert "cannot open m" in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []  # no "mysql:" folder was made


def _queue(backend: Backend, conn: Any, count: int) -> None:
    backend.begin(conn)
    conn.execute("INSERT INTO entities (id, created_at) VALUES ('alice', '2026-01-01')")
    _executemany(
        backend,
        conn,
        "INSERT INTO jobs (kind, entity_id, payload, created_at, updated_at) "
        "VALUES ('augment', 'alice', '{\"message_ids\": []}', '2026-01-01', '2026-01-01')",
        [()] * count,
    )
    backend.commit(conn)


def _claim(backend: Backend, conn: Any, owner: str, now: float, **given: Any) -> list[int]:
    options: dict[str, Any] = {"lease": 60.0, "limit": 2, "ids": None, "max_attempts": 3}
    options.update(given)
    backend.begin(conn)
    rows = backend.claim_jobs(conn, owner, now=now, stamp="2026-01-01T00:00:00", **options)
    backend.commit(conn)
    return [row[0] for row in rows]


def test_claims_lease_due_jobs_oldest_first_and_never_twice(backend: Backend, conn: Any) -> None:
    _queue(backend, conn, 5)
    first = _claim(backend, conn, "w1", 100.0)
    second = _claim(backend, conn, "w2", 100.0)
    among = _claim(backend, conn, "w3", 100.0, ids=[1, 2, 5])
    assert first == [1, 2] and second == [3, 4] and among == [5]
    assert _claim(backend, conn, "w4", 100.0) == []  # every job is leased
    backend.begin(conn)
    assert backend.lease_held(conn, 1, "w1") and not backend.lease_held(conn, 1, "w2")
    backend.rollback(conn)
    # A lease that ran out goes to the next worker, with the attempt counted.
    assert _claim(backend, conn, "w5", 161.0, limit=1) == [1]
    (attempts,) = conn.execute("SELECT attempts FROM jobs WHERE id = 1").fetchone()
    assert attempts == 2


def test_a_job_whose_workers_keep_dying_is_parked_as_failed(backend: Backend, conn: Any) -> None:
    _queue(backend, conn, 1)
    for attempt in range(3):
        assert _claim(backend, conn, f"w{attempt}", 100.0 + attempt * 100, limit=1) == [1]
    assert _claim(backend, conn, "w9", 1000.0) == []
    status, error = conn.execute("SELECT status, error FROM jobs WHERE id = 1").fetchone()
    assert status == "failed" and "3 times" in error


def _session(backend: Backend, conn: Any) -> int:
    """Alice's entity and one session of hers; the session's id."""
    _queue(backend, conn, 0)
    backend.begin(conn)
    (session,) = conn.execute(
        "INSERT INTO sessions (entity_id, name, created_at) VALUES ('alice', 's', '2026') "
        "RETURNING id"
    ).fetchone()
    backend.commit(conn)
    return int(session)


def _message(text: str, external: str | None, session: int) -> tuple[Any, ...]:
    return (
        "alice", None, session, "user", text, None, "2026-01-01", external, text, 1.0, "t", None
    )  # fmt: skip


def test_bulk_inserts_skip_duplicates_and_return_ids_in_order(backend: Backend, conn: Any) -> None:
    session = _session(backend, conn)
    backend.begin(conn)
    first = backend.insert_messages(
        conn, [_message("one", "e1", session), _message("two", None, session)]
    )
    again = backend.insert_messages(
        conn,
        [_message("one", "e1", session), _message("two", None, session),
         _message("three", "e3", session)],
    )  # fmt: skip
    jobs = backend.insert_jobs(conn, [("augment", "alice", session, "{}", "2026", "2026")] * 2)
    backend.commit(conn)
    assert [(entity, sid) for _, entity, sid in first + again] == [("alice", session)] * 3
    ids = [mid for mid, _, _ in first + again]
    assert ids == sorted(ids) and len(set(ids)) == 3
    texts = [row[0] for row in conn.execute("SELECT content FROM messages ORDER BY id")]
    assert texts == ["one", "two", "three"]
    assert len(jobs) == 2 and jobs == sorted(jobs)


def test_lexical_search_takes_words_never_query_syntax(backend: Backend, conn: Any) -> None:
    session = _session(backend, conn)
    backend.begin(conn)
    backend.insert_messages(
        conn,
        [_message('quokkas "near" Perth', None, session), _message("NOT x", None, session),
         _message("wombats", None, session)],
    )  # fmt: skip
    backend.commit(conn)

    def found(
        *terms: str, where: list[str] | None = None, params: list[Any] | None = None
    ) -> list[str]:
        rows = backend.lexical_messages(
            conn, list(terms), entity_id="alice", where=where or [], params=params or [], limit=5
        )
        assert all(set(row) >= {"id", "content", "session", "score"} for row in rows)
        return [row["content"] for row in rows]

    assert sorted(found("quokkas", "wombats")) == ['quokkas "near" Perth', "wombats"]
    assert found("not") == ["NOT x"]  # a word, not FTS5's NOT
    assert found('"near') == ['quokkas "near" Perth']  # a quote in a word is text
    assert found("*", "content:x", "") == []  # syntax in a word matches nothing, raises nothing
    assert found("wombats", where=["m.role = ?"], params=["assistant"]) == []
    other = backend.lexical_messages(
        conn, ["wombats"], entity_id="bob", where=[], params=[], limit=5
    )
    assert other == []
