"""The PostgreSQL backend's own guarantees, against the server scripts/test starts
(``MEMORI_TEST_POSTGRES``; every test needing it skips, saying why, without one): migrations
once under concurrency, SKIP LOCKED claims, bm25 as SQLite's FTS5 ranks, per-entity locks,
timeouts, credentials never shown, forgotten words gone from the search tables."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from memori_cli.errors import ExtensionError
from memori_cli.store import migrations
from memori_cli.store.postgres import schema

if os.environ.get("MEMORI_TEST_POSTGRES"):
    import psycopg  # scripts/test installs it: without it this file fails, never skips
else:
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")

from memori_cli.store.postgres import POSTGRES, masked_url
from memori_cli.store.sqlite import SQLITE


def _open(url: str) -> Any:
    conn = POSTGRES.connect(url)
    POSTGRES.configure(conn)
    return conn


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Any]:
    conn = _open(postgres_url)
    POSTGRES.migrate(conn)
    yield conn
    conn.close()


def _entity(backend: Any, conn: Any, entity: str = "alice") -> int:
    backend.begin(conn)
    conn.execute(f"INSERT INTO entities (id, created_at) VALUES ('{entity}', '2026')")
    (session,) = conn.execute(
        f"INSERT INTO sessions (entity_id, name, created_at) VALUES ('{entity}', 's', '2026') "
        "RETURNING id"
    ).fetchone()
    backend.commit(conn)
    return int(session)


def _messages(backend: Any, conn: Any, session: int, texts: list[tuple[str, str | None]],
              entity: str = "alice", context: bool = True) -> None:  # fmt: skip
    # Each message's context: the end of the one before (as the shared code gives it).
    rows = [
        (entity, None, session, "user", text, name, "2026", f"x{i}", text, 1.0, "t",
         " ".join(texts[i - 1][0].split()[-3:]) if i and context else None)
        for i, (text, name) in enumerate(texts)
    ]  # fmt: skip
    backend.begin(conn, entity=entity)
    backend.insert_messages(conn, rows)
    backend.commit(conn)


def test_postgres_has_every_sqlite_migration_by_name_in_order() -> None:
    # A new SQLite migration needs its PostgreSQL DDL in memori_cli/store/postgres/schema.py.
    assert list(schema.MIGRATIONS) == migrations.migrations.names


def test_a_server_without_pgvector_is_a_clear_error() -> None:
    class NoVector:
        def execute(self, sql: str, params: Any = None) -> Any:
            class Cursor:
                def fetchone(self) -> tuple[None, None]:
                    return (None, None)

            return Cursor()

    with pytest.raises(ExtensionError, match="pgvector"):
        POSTGRES.configure(NoVector())


def test_full_and_transient_errors_are_told_by_sqlstate() -> None:
    errors = psycopg.errors
    assert POSTGRES.is_full(errors.DiskFull("could not extend file"), None)
    assert POSTGRES.is_full(errors.ConfigurationLimitExceeded("project size limit"), None)
    assert not POSTGRES.is_full(errors.UndefinedTable("no"), None)
    for transient in (errors.SerializationFailure, errors.DeadlockDetected,
                      errors.LockNotAvailable):  # fmt: skip
        assert POSTGRES.is_transient(transient("retry me"))
    assert not POSTGRES.is_transient(
        errors.QueryCanceled("canceling statement due to statement timeout")
    )
    assert not POSTGRES.is_transient(errors.UniqueViolation("duplicate key"))


@pytest.mark.slow
def test_processes_opening_a_new_database_at_once_migrate_it_once(postgres_url: str) -> None:
    script = (
        "import sys, time\n"
        "from memori_cli.store.postgres import POSTGRES as B\n"
        "c = B.connect(sys.argv[1]); B.configure(c)\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "B.migrate(c)\n"
        "print(c.execute('SELECT count(*) FROM _sqlite_migrations').fetchone()[0])\n"
    )
    at = time.time() + 2.0  # every process connected and waiting by then
    procs = [
        subprocess.Popen([sys.executable, "-c", script, postgres_url, str(at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], results
    assert [out.strip() for out, _ in results] == [str(len(schema.MIGRATIONS))] * 3
    conn = _open(postgres_url)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert names == list(schema.MIGRATIONS)
    finally:
        conn.close()


def test_several_workers_claiming_at_once_never_get_one_job_twice(
    pg: Any, postgres_url: str
) -> None:
    session = _entity(POSTGRES, pg)
    POSTGRES.begin(pg, entity="alice")
    POSTGRES.insert_jobs(pg, [("augment", "alice", session, "{}", "2026", "2026")] * 300)
    POSTGRES.commit(pg)
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(8)

    def work(owner: str) -> None:
        conn = _open(postgres_url)
        mine: list[int] = []
        try:
            start.wait()
            while True:
                POSTGRES.begin_queue(conn)
                rows = POSTGRES.claim_jobs(
                    conn, owner, now=100.0, lease=60.0, limit=3, ids=None, max_attempts=3,
                    stamp="2026",
                )  # fmt: skip
                time.sleep(0.002)  # hold the row locks a while: claims overlap
                assert all(POSTGRES.lease_held(conn, row[0], owner) for row in rows)
                POSTGRES.commit(conn)
                if not rows:
                    break
                mine += [int(row[0]) for row in rows]
        finally:
            claimed[owner] = mine
            conn.close()

    workers = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    every = [job for jobs in claimed.values() for job in jobs]
    assert len(every) == len(set(every)) == 300  # 0 double claims, none left behind
    assert sum(bool(jobs) for jobs in claimed.values()) > 1  # the claims did run side by side
    rows = pg.execute("SELECT status, attempts, count(*) FROM jobs GROUP BY 1, 2").fetchall()
    assert rows == [("running", 1, 300)]


_CORPUS = [
    ("The cat sat on the mat", "Ann"),
    ("A dog and a cat played in the garden", None),
    ("Dogs bark at night; the dog next door barks loudest", "Bob"),
    ("Gardening is my hobby: roses, tulips and a small vegetable garden", "Ann"),
    ("We adopted a cat last spring and named her Mochi", None),
    ("The weather was cold, so we stayed in and read books", "Bob"),
    ("Books about gardens and cats are my favourite books", "Cat"),
    ("Night walks with the dog help me sleep", None),
    ("Ann planted tulips by the door", "Bob"),
    ("Nothing about animals here at all", None),
]
_QUERIES = [
    ["cat"],
    ["dog"],
    ["garden"],
    ["cat", "garden"],
    ["books", "night"],
    ["ann"],
    ["tulips", "door", "dog"],
    ["bob"],
    ["mochi", "spring"],
    ["cat", "cat"],
    ["absent"],
]


def test_bm25_ranks_as_sqlite_fts5_does(pg: Any, tmp_path: Path) -> None:
    lite = SQLITE.connect(str(tmp_path / "m.db"))
    SQLITE.configure(lite)
    SQLITE.migrate(lite)
    try:
        for backend, conn in ((SQLITE, lite), (POSTGRES, pg)):
            _messages(backend, conn, _entity(backend, conn), _CORPUS)
        for terms in _QUERIES:
            want = SQLITE.lexical_messages(lite, terms, entity_id="alice", where=[], params=[],
                                           limit=10)  # fmt: skip
            got = POSTGRES.lexical_messages(pg, terms, entity_id="alice", where=[], params=[],
                                            limit=10)  # fmt: skip
            assert [r["content"] for r in got] == [r["content"] for r in want], terms
            assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want],
                                                              rel=1e-6), terms  # fmt: skip
    finally:
        lite.close()


def test_a_search_of_words_searched_before_skips_their_tokenizing(pg: Any) -> None:
    from memori_cli.store.postgres import PostgresBackend

    backend = PostgresBackend()  # a cache of its own
    _messages(backend, pg, _entity(backend, pg), _CORPUS)
    sent: list[str] = []
    conn = SimpleNamespace(execute=lambda sql, *a: sent.append(sql) or pg.execute(sql, *a))
    terms = ["sqlite", "databases", "content:x"]
    first = backend.lexical_messages(conn, terms, entity_id="alice", where=[], params=[],
                                     limit=10)  # fmt: skip
    assert sum("memori_words" in sql for sql in sent) == 1
    again = backend.lexical_messages(conn, terms, entity_id="alice", where=[], params=[],
                                     limit=10)  # fmt: skip
    assert sum("memori_words" in sql for sql in sent) == 1 and again == first
    backend.lexical_memories(conn, terms, entity_id="alice", where=[], params=[], limit=5)
    assert sum("memori_words" in sql for sql in sent) == 1


def test_memories_search_weighs_content_and_about(pg: Any) -> None:
    _entity(POSTGRES, pg)
    POSTGRES.begin(pg, entity="alice")
    for content, about in [("likes green tea", "alice"), ("tea with milk is fine", "bob"),
                           ("climbs on weekends", "tea")]:  # fmt: skip
        pg.execute(
            """INSERT INTO memories (entity_id, kind, content, norm, about, confidence, trust,
                   extractor, first_seen, last_seen, valid_from, created_at)
               VALUES ('alice', 'fact', %s, %s, %s, 1, 1, 't', '2026', '2026', '2026', '2026')""",
            (content, content, about),
        )
    POSTGRES.commit(pg)
    found = POSTGRES.lexical_memories(pg, ["tea"], entity_id="alice",
                                      where=["m.valid_to IS NULL"], params=[], limit=5)  # fmt: skip
    assert [i for i, _ in found] == [1, 2, 3]  # a word in the content outweighs one in `about`
    assert POSTGRES.lexical_memories(pg, ["tea"], entity_id="alice", where=["m.kind = ?"],
                                     params=["event"], limit=5) == []  # fmt: skip


def test_an_edit_reindexes_and_forgetting_leaves_no_words(pg: Any) -> None:
    session = _entity(POSTGRES, pg)
    _messages(POSTGRES, pg, session, [("quokkas near Perth", None), ("wombats", "Mel")],
              context=False)  # fmt: skip

    def found(word: str) -> list[str]:
        rows = POSTGRES.lexical_messages(pg, [word], entity_id="alice", where=[], params=[],
                                         limit=5)  # fmt: skip
        return [row["content"] for row in rows]

    POSTGRES.begin(pg, entity="alice")
    pg.execute("UPDATE messages SET content = 'numbats near Perth' WHERE content LIKE 'quokkas%'")
    pg.execute("UPDATE messages SET uses = uses + 1")  # no text changed: nothing reindexed
    POSTGRES.commit(pg)
    assert found("quokkas") == [] and found("numbats") == ["numbats near Perth"]
    assert found("perth") == ["numbats near Perth"] and found("mel") == ["wombats"]
    (terms,) = pg.execute(
        "SELECT count(*) FROM messages_lex_terms WHERE term = 'quokka'"
    ).fetchone()
    assert terms == 0
    POSTGRES.begin(pg)
    pg.execute("DELETE FROM entities WHERE id = 'alice'")
    POSTGRES.commit(pg)
    for table in ("messages_postings", "messages_lex_terms", "messages_lex_docs"):
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    assert POSTGRES.after_forget(pg) is True


def test_writers_of_different_entities_proceed_and_of_one_take_turns(
    pg: Any, postgres_url: str
) -> None:
    other, third = _open(postgres_url), _open(postgres_url)
    try:
        POSTGRES.begin(pg, entity="alice")
        POSTGRES.begin(other, entity="bob")  # another entity: no wait
        third.execute("SET lock_timeout = 50")
        with pytest.raises(psycopg.Error) as caught:
            POSTGRES.begin(third, entity="alice")
        assert POSTGRES.is_transient(caught.value)
        assert not POSTGRES.in_transaction(third)  # a failed begin leaves no transaction
        with pytest.raises(psycopg.Error):
            POSTGRES.begin(third)  # the whole store: waits for every entity's writer
        POSTGRES.rollback(other)
        POSTGRES.rollback(pg)
        POSTGRES.begin(third, entity="alice")
        POSTGRES.rollback(third)
    finally:
        other.close()
        third.close()


def test_timeouts_and_plan_mode_are_set_so_nothing_hangs(pg: Any) -> None:
    settings = {
        name: pg.execute(f"SHOW {name}").fetchone()[0]
        for name in ("statement_timeout", "lock_timeout", "plan_cache_mode", "application_name")
    }
    assert settings == {
        "statement_timeout": "5min",
        "lock_timeout": "30s",
        "plan_cache_mode": "force_custom_plan",
        "application_name": "memori",
    }
    pg.execute("SET statement_timeout = 100")
    with pytest.raises(psycopg.errors.QueryCanceled) as caught:
        pg.execute("SELECT pg_sleep(5)")
    assert not POSTGRES.is_transient(caught.value)
    # a connect that gets no answer gives up, and a silent peer is found dead
    options = psycopg.conninfo.conninfo_to_dict(pg.info.dsn)
    assert options["connect_timeout"] == "10" and options["keepalives_idle"] == "30"


def test_the_urls_own_connection_settings_win(postgres_url: str) -> None:
    conn = POSTGRES.connect(f"{postgres_url} keepalives_idle=7")
    assert psycopg.conninfo.conninfo_to_dict(conn.info.dsn)["keepalives_idle"] == "7"
    conn.close()


def test_the_password_is_never_shown(postgres_url: str) -> None:
    from psycopg.conninfo import make_conninfo

    secret = "hunter2-Pa55-word"
    conn = _open(make_conninfo(postgres_url, password=secret))
    try:
        POSTGRES.migrate(conn)
        shown = repr(POSTGRES.checks(conn)) + repr(POSTGRES.versions(conn))
        assert secret not in shown
        assert "postgresql://" in shown
    finally:
        conn.close()

    class Info:
        user, host, port, dbname = "me", "db.example.com", 5432, "memori"

    class Used:
        info = Info()

        class pgconn:
            used_password = True

    url = masked_url(Used())
    assert url == "postgresql://me:***@db.example.com:5432/memori"


def test_watch_wakes_and_the_change_token_moves_on_a_commit_elsewhere(
    pg: Any, postgres_url: str
) -> None:
    stop, wake = threading.Event(), threading.Event()
    watcher = threading.Thread(target=POSTGRES.watch, args=(postgres_url, stop, wake))
    watcher.start()
    try:
        assert wake.wait(5)  # set once listening
        wake.clear()
        token = POSTGRES.change_token(pg)
        other = _open(postgres_url)
        POSTGRES.begin(other)
        other.execute("INSERT INTO settings VALUES ('k', 'v')")
        started = time.monotonic()
        POSTGRES.commit(other)
        other.close()
        assert wake.wait(5)
        assert time.monotonic() - started < 1.0
        assert POSTGRES.change_token(pg) != token
    finally:
        stop.set()
        watcher.join(10)
    assert not watcher.is_alive()
