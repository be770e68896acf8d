"""The library end to end on PostgreSQL: ``Memori(conn="postgresql://...")`` imports, recalls
(lexical and hybrid, ``as_of``, explain), augments with the rule extractor (memories, graph
triples, jobs), re-imports without duplicates and forgets every row, with the same results as
SQLite on the same transcript. Skipped without a server (``MEMORI_TEST_POSTGRES``; scripts/test
starts one); the first tests need none."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.errors import StoreError
from memori_cli.store import graph, jobs
from memori_cli.store.backend import backend_for, mask_url

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "maya.jsonl"
QUERIES = ["where does Maya live", "Lisbon", "what is Maya allergic to", "ferry routing software"]


# -- without a server ----------------------------------------------------------------------
def test_qmark_sql_is_translated_for_psycopg() -> None:
    pytest.importorskip("psycopg")
    from memori_cli.store.postgres.qmark import translate

    # In order; a literal % doubled everywhere; a ? in a quoted literal is no placeholder.
    assert translate("SELECT ?, '?%' FROM t WHERE a LIKE 'x%' AND b = ?") == (
        "SELECT %s, '?%%' FROM t WHERE a LIKE 'x%%' AND b = %s",
        None,
    )
    # SQLite's numbered ?NNN: the value repeats; a plain ? follows the largest number so far.
    sql, order = translate("DELETE FROM x WHERE id = ? AND (s = ?1 OR o = ?1) AND k = ?")
    assert sql == "DELETE FROM x WHERE id = %s AND (s = %s OR o = %s) AND k = %s"
    assert order == (0, 0, 0, 1)
    assert translate('SELECT "a?b" FROM t WHERE c = ?2 AND d = ?1')[1] == (1, 0)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:s3cret@db:5432/memori", "postgresql://me:***@db:5432/memori"),
        ("postgres://me@db/memori?sslmode=require", "postgres://me@db/memori?sslmode=require"),
        (
            "postgresql:///memori?host=/run/pg&password=s3cret",
            "postgresql:///memori?host=/run/pg&password=***",
        ),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    pytest.importorskip("psycopg")
    assert mask_url(url) == shown
    mem = Memori(conn=url)
    assert mem.store.describe() == shown
    assert "s3cret" not in repr(mem.store.describe())


def test_without_psycopg_a_postgresql_url_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "psycopg" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(StoreError, match=r"memori-cli\[postgres\]"):
        backend_for("postgresql://db/memori")
    with pytest.raises(StoreError, match=r"memori-cli\[postgres\]"):
        Memori(conn="postgres://db/memori")


def test_the_cli_keeps_a_postgresql_url_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    from memori_cli.cli import app
    from memori_cli.cli.common import State

    seen: list[Any] = []
    monkeypatch.setattr(State, "memori", lambda self, **_: seen.append(self.db) or _stop())
    monkeypatch.chdir(tmp_path)
    CliRunner().invoke(app, ["--db", "postgresql://me@db/memori", "stats"])
    assert seen == ["postgresql://me@db/memori"]
    assert list(tmp_path.iterdir()) == []


def _stop() -> Any:
    raise SystemExit(0)


# -- on the test server --------------------------------------------------------------------
@pytest.fixture
def pg_url(postgres_store_url: str) -> str:
    return postgres_store_url


@pytest.fixture
def pg(pg_url: str) -> Iterator[Memori]:
    memori = Memori(conn=pg_url)
    yield memori
    memori.close()


def _filled(mem: Memori, entities: tuple[str, ...] = ("maya", "other")) -> Memori:
    for entity in entities:
        report = mem.import_file(EXAMPLE, entity_id=entity)
        assert (report.imported, report.duplicates) == (23, 0)
    return mem


def _rows(mem: Memori) -> dict[str, int]:
    """Rows of every table of the store (PostgreSQL's catalog)."""
    tables = [
        name
        for (name,) in mem.store.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        )
    ]
    return {
        t: int(mem.store.conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables
    }


def _hits(mem: Memori, query: str, **options: Any) -> list[tuple[str, str]]:
    return [(h.kind, h.content) for h in mem.recall(query, entity_id="maya", **options)]


def test_the_library_runs_end_to_end_on_postgresql(pg: Memori) -> None:
    assert pg.store.backend.name == "postgres"
    _filled(pg)
    before = _rows(pg)
    assert before["messages"] == 46 and before["jobs"] == 8 and before["sessions"] == 8
    # Its size is memori's tables' (every one of them), not a file's.
    from memori_cli.store.postgres import _MEMORI_TABLES

    assert set(before) == set(_MEMORI_TABLES)
    assert pg.stats()["bytes"] > 100_000

    # Lexical recall before augmentation: messages only, the entity's own.
    lexical = pg.recall("Lisbon", entity_id="maya")
    assert lexical and all(h.kind == "message" and h.entity == "maya" for h in lexical)
    assert any("Lisbon" in h.content for h in lexical)

    report = pg.augment()
    assert report.jobs_done == 8 and report.jobs_failed == 0
    assert report.memories_created > 0 and report.triples > 0 and report.embedded == 46
    assert jobs.depth(pg.store, "maya") == {"pending": 0, "running": 0, "failed": 0, "done": 4}
    listed = jobs.list_jobs(pg.store, status="done")
    assert len(listed) == 8 and sum(j.messages or 0 for j in listed) == 46
    job = jobs.get_job(pg.store, listed[0].id)
    assert job is not None and len(job["message_ids"]) == listed[0].messages

    # Hybrid recall with explain: the memory first, its sources cited, vectors took part.
    hits = pg.recall("where does Maya live", entity_id="maya", explain=True)
    assert hits[0].content == "Maya lives in Lisbon" and hits[0].source_ids
    assert any("vector_rank" in (h.explain or {}) for h in hits)
    # As of the first day: only what was said and held by then.
    early = pg.recall("where does Maya live", entity_id="maya", as_of="2026-03-03")
    assert early and all(h.created_at < "2026-03-03" for h in early)
    assert any(h.created_at >= "2026-03-03" for h in pg.recall("Maya", entity_id="maya"))
    assert pg.recall("where does Maya live", entity_id="maya", as_of="2026-01-01") == []

    # The graph: nodes, edges with their sources, one entity's only.
    stats = graph.stats(pg.store, "maya")
    assert stats["edges"] > 0 and stats["nodes"] > 0
    edges = graph.edges(pg.store, "maya")
    assert all(e.sources for e in edges)
    assert any(e.predicate == "lives_in" and e.object == "Lisbon" for e in edges)
    assert graph.search(pg.store, "maya", "LISB")[0].name == "Lisbon"

    # Re-importing adds nothing (messages, jobs, sessions).
    again = pg.import_file(EXAMPLE, entity_id="maya")
    assert (again.imported, again.duplicates) == (0, 23)
    after = _rows(pg)
    assert {k: after[k] for k in ("messages", "jobs", "sessions")} == {
        "messages": 46,
        "jobs": 8,
        "sessions": 8,
    }

    # Forget: every table that holds the entity's rows loses them; the other entity stays.
    removed = pg.forget("maya")
    assert removed["messages"] == 23 and removed["memories"] > 0
    left = _rows(pg)
    for table, count in left.items():
        columns = {
            c
            for (c,) in pg.store.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                (table,),
            )
        }
        column = "id" if table == "entities" else "entity_id" if "entity_id" in columns else None
        if column is not None:
            (mine,) = pg.store.conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE {column} = ?', ("maya",)
            ).fetchone()
            assert mine == 0, table
        if table not in ("_sqlite_migrations", "settings", "processes", "vector_changes"):
            assert count < after[table] or after[table] == 0, table
    assert left["messages"] == 23 and left["message_embeddings"] == 23
    assert pg.recall("where does Maya live", entity_id="maya") == []
    assert pg.recall("where does Maya live", entity_id="other")[0].content == "Maya lives in Lisbon"


def test_postgresql_gives_what_sqlite_gives(pg: Memori, tmp_path: Path) -> None:
    lite = Memori(conn=tmp_path / "memori.db")
    try:
        # One entity: FTS5's bm25 statistics are the file's, PostgreSQL's the entity's.
        for mem in (lite, pg):
            _filled(mem, ("maya",)).augment()

        def memories(mem: Memori) -> list[tuple[str, str, str | None]]:
            found = mem.memories(entity_id="maya", limit=1000)
            return sorted((m.kind, m.content, m.slot) for m in found)

        def edges(mem: Memori) -> list[tuple[str, str, str, int]]:
            return sorted(
                (e.subject, e.predicate, e.object, e.count) for e in graph.edges(mem.store, "maya")
            )

        assert memories(pg) == memories(lite) and memories(lite)
        assert edges(pg) == edges(lite) and edges(lite)
        for query in QUERIES:
            assert _hits(pg, query)[:3] == _hits(lite, query)[:3], query
            early = {"as_of": "2026-03-03"}
            assert _hits(pg, query, **early)[:3] == _hits(lite, query, **early)[:3], query
    finally:
        lite.close()


def test_a_psycopg_factory_or_connection_is_postgresql_and_stays_the_callers(pg_url: str) -> None:
    import psycopg

    given = psycopg.connect(pg_url, autocommit=True)
    made: list[Any] = []

    def factory() -> Any:
        made.append(psycopg.connect(pg_url, autocommit=True))
        return made[-1]

    try:
        for conn in (factory, given):
            mem = Memori(conn=conn)
            assert mem.store.backend.name == "postgres"
            mem.add_messages([{"role": "user", "content": "I live in Porto."}])
            assert mem.recall("Porto")
            mem.close()
        assert not given.closed and made and not any(c.closed for c in made)
        for begun in (False, True):  # autocommit off: inside a transaction from the start
            busy = psycopg.connect(pg_url)
            if begun:
                busy.execute("SELECT 1")
            with pytest.raises(StoreError, match="autocommit=True"):
                Memori(conn=busy).recall("Porto")
            busy.close()
    finally:
        given.close()
        for conn in made:
            conn.close()


def test_two_threads_get_their_own_connections(pg: Memori) -> None:
    import threading

    _filled(pg)
    found: list[int] = []

    def work() -> None:
        found.append(len(pg.recall("Lisbon", entity_id="maya")))
        pg.store.close_thread()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 3 and found[0] > 0 and len(set(found)) == 1


def test_the_cli_runs_on_postgresql(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from memori_cli.cli import app

    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    # A password in the URL (trust auth ignores it) is never printed.
    url = pg_url.replace("postgresql:///", "postgresql://postgres:hunter2@/", 1)
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, ["--db", url, *args])
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output
        return result

    run("import", str(EXAMPLE), "--entity", "maya")
    run("augment")
    hits = json.loads(run("recall", "where does Maya live", "--entity", "maya", "--json").stdout)
    assert hits[0]["content"] == "Maya lives in Lisbon"
    checks = {c["check"]: c for c in json.loads(run("doctor", "--json").stdout)}
    assert checks["postgres"]["status"] == "ok" and checks["pgvector"]["status"] == "ok"
    assert "wal" not in checks  # SQLite's write-ahead log: a server keeps its own
    monkeypatch.setenv("MEMORI_DB", url)  # the variable selects it too
    stats = runner.invoke(app, ["stats", "--json"])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["messages"] == 23
    run("forget", "--entity", "maya", "--yes")
    assert json.loads(runner.invoke(app, ["stats", "--json"]).stdout)["messages"] == 0
    # A service file would hold the URL (and its password) in plain text: not written.
    install = runner.invoke(app, ["daemon", "install"])
    assert install.exit_code == 1 and "plain text" in " ".join(install.output.split())
    assert "hunter2" not in install.output


def test_doctor_warns_of_a_server_left_at_postgresqls_default_memory(
    pg: Memori, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = pg.store.backend
    (buffers,) = pg.store.conn.execute(
        "SELECT pg_size_bytes(current_setting('shared_buffers'))"
    ).fetchone()
    unsized = int(buffers) <= 128 * 1024 * 1024  # the test server's own setting

    def line() -> dict[str, str]:
        (found,) = [c for c in backend.checks(pg.store.conn) if c["check"] == "server memory"]
        return found

    assert line()["status"] == "ok"  # a small store fits any server's buffers
    monkeypatch.setattr(type(backend), "size_bytes", lambda self, conn: 10 * 1024**3)
    big = line()
    assert big["status"] == ("warn" if unsized else "ok") and "10 GB" in big["detail"]
    assert ("a quarter of the server's RAM" in big["detail"]) == unsized


@pytest.mark.slow
def test_the_daemon_serves_a_postgresql_store(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import subprocess
    import sys
    import time

    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")  # the queue, not the models
    url = pg_url.replace("postgresql:///", "postgresql://postgres:hunter2@/", 1)
    memori = str(Path(sys.executable).parent / "memori")

    def cli(*args: str) -> Any:
        result = subprocess.run(
            [memori, "--db", url, *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout + result.stderr
        return result

    files = []
    for n in range(2):
        path = tmp_path / f"w{n}.jsonl"
        lines = [
            json.dumps({"role": "user", "content": f"I live in Oslo. I love tea number {i}.",
                        "session": f"s{i % 3}", "name": "Kim", "id": f"w{n}-{i}"})
            for i in range(40)
        ]  # fmt: skip
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    mem = Memori(conn=url)
    mem.store.build()
    cli("daemon", "start")
    try:
        # Not on any command line: other users could read the password there.
        listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "hunter2" not in listed
        writers = [
            subprocess.Popen(
                [memori, "--db", url, "import", str(f), "--entity", f"writer{n}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n, f in enumerate(files)
        ]
        for process in writers:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
        deadline = time.time() + 60
        while time.time() < deadline:
            depth = jobs.depth(mem.store)
            if depth["pending"] == depth["running"] == 0:
                break
            time.sleep(0.1)
        assert jobs.depth(mem.store) == {"pending": 0, "running": 0, "failed": 0, "done": 6}
        status = json.loads(cli("daemon", "status", "--json").stdout)
        assert status["running"] and status["store"] == mask_url(url)
    finally:
        cli("daemon", "stop")
    assert not json.loads(cli("daemon", "status", "--json").stdout)["running"]
    log = cli("daemon", "logs", "-n", "100").stdout
    assert "started" in log and "stopped" in log and "Oslo" not in log
    for entity in ("writer0", "writer1"):
        assert any(m.content == "Kim lives in Oslo" for m in mem.memories(entity_id=entity))
    (dupes,) = mem.store.conn.execute(
        """SELECT count(*) FROM (SELECT 1 FROM memories WHERE valid_to IS NULL
           GROUP BY entity_id, kind, about, norm HAVING count(*) > 1) AS d"""
    ).fetchone()
    assert dupes == 0
    mem.close()


def test_another_applications_database_is_refused_and_left_unchanged(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY)")
    with pytest.raises(StoreError, match=r"another application's tables \(invoices\)"):
        Memori(conn=pg_url).recall("anything")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        listed = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [name for (name,) in listed]
        assert tables == ["invoices"]
        conn.execute("CREATE SCHEMA memori")
        # The other application uses pgvector too: its type lives in public.
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # A schema of its own, as the error says.
    mem = Memori(conn=f"{pg_url}&options=-csearch_path%3Dmemori%2Cpublic")
    mem.add_messages([{"role": "user", "content": "I live in Porto."}])
    assert mem.recall("Porto")[0].content == "I live in Porto."
    (schema,) = mem.store.conn.execute(
        "SELECT schemaname FROM pg_tables WHERE tablename = 'messages'"
    ).fetchone()
    assert schema == "memori"
    mem.close()


def test_a_schema_of_its_own_is_its_own_store_beside_one_in_public(pg_url: str) -> None:
    """A new schema first on the path, with a memori store in public after it: the schema
    gets tables of its own (before, public's store was taken for its own and written to)."""
    import psycopg

    public = Memori(conn=pg_url)
    public.attribution(entity_id="maya")
    public.add_messages([{"role": "user", "content": "I live in Porto."}])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA team")
    team = Memori(conn=f"{pg_url}&options=-csearch_path%3Dteam%2Cpublic")
    try:
        team.attribution(entity_id="maya")
        team.add_messages([{"role": "user", "content": "I live in Lyon."}])
        assert [h.content for h in team.recall("live", entity_id="maya")] == ["I live in Lyon."]
        assert [h.content for h in public.recall("live", entity_id="maya")] == ["I live in Porto."]
        tables = team.store.conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'team'"
        ).fetchone()[0]
        assert tables > 10
    finally:
        team.close()
        public.close()


def test_writes_lock_only_what_they_touch(pg_url: str) -> None:
    """One entity's import, augmentation, edits and forget run beside another entity's open
    write, and so does a claim; a write of the whole store waits for it (SQLite: one writer
    at a time, always)."""
    import threading
    import time

    holder, other = Memori(conn=pg_url), Memori(conn=pg_url)
    other.attribution(entity_id="b")
    other.add_messages([{"role": "user", "content": "I live in Porto."}])
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.store.write(entity="a") as tx:
            tx.execute("INSERT INTO entities (id, created_at) VALUES ('a', '2026')")
            opened.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert opened.wait(10)
        start = time.monotonic()
        other.new_session()
        other.add_messages([{"role": "user", "content": "I love tea."}])
        claimed = jobs.claim(other.store, "host:1:t", limit=10)
        assert time.monotonic() - start < 5 and len(claimed) == 2
        for job in claimed:
            jobs.release(other.store, job)
        # and so does augmenting entity b: its results are b's alone
        report = other.augment()
        assert time.monotonic() - start < 5 and report.jobs_done == 2
        assert {m.content for m in other.memories()} >= {"User lives in Porto"}
        # and every other write of entity b's own: stated memories, uses, graph edits, forget
        stated = other.add_memory("Kim likes hiking", kind="preference")
        assert other.mark_used(other.recall("hiking")) >= 1
        other.graph.add_entity("Kim", "person", ["Kim climbs"])
        other.graph.add_entity("Alps", "place", [])
        assert other.graph.add_relation("Kim", "visited", "Alps")
        assert other.graph.forget("Alps")["nodes"] == 1
        assert other.forget_memory(stated)
        assert other.forget("b")["messages"] == 2
        assert time.monotonic() - start < 5
        blocked = threading.Event()

        def whole_store() -> None:
            with other.store.write():
                blocked.set()

        waiter = threading.Thread(target=whole_store)
        waiter.start()
        assert not blocked.wait(0.5)  # waits for entity a's writer
        release.set()
        waiter.join(10)
        assert blocked.is_set()
    finally:
        release.set()
        thread.join(10)
        holder.close()
        other.close()


def test_a_server_error_is_one_clean_line_not_a_traceback() -> None:
    psycopg = pytest.importorskip("psycopg")
    import typer

    from memori_cli.cli.common import handle_errors

    @handle_errors
    def command() -> None:
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    with pytest.raises(typer.Exit) as exit_info:
        command()
    assert exit_info.value.exit_code == 1

    @handle_errors
    def bug() -> None:
        raise KeyError("not a database error")

    with pytest.raises(KeyError):
        bug()


@pytest.mark.slow
def test_four_processes_import_into_one_postgresql_store_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    """As tests/test_concurrency.py on SQLite: each process imports its file and the next
    one's, so writes overlap and duplicates race each other; nothing is lost or doubled."""
    from test_concurrency import import_crosswise, transcript

    files = [transcript(tmp_path / f"t{n}.jsonl", f"writer{n}", 500) for n in range(4)]
    Memori(conn=pg_url).close()  # migrated once; the processes then race on the rows only
    for code, err in import_crosswise(pg_url, files, timeout=180):
        assert code == 0, err
    mem = Memori(conn=pg_url)
    conn = mem.store.conn
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 4 * 500
    (doubled,) = conn.execute(
        "SELECT count(*) FROM (SELECT session_id, content_hash FROM messages "
        "GROUP BY 1, 2 HAVING count(*) > 1) AS d"
    ).fetchone()
    assert doubled == 0
    (jobs_messages,) = conn.execute(
        "SELECT count(*) FROM jobs, json_array_elements(payload::json -> 'message_ids')"
    ).fetchone()
    assert jobs_messages == 4 * 500  # every message queued once
    assert len(mem.recall("writer2 message 17", limit=5)) == 5
    mem.close()


def test_a_large_entity_gets_an_hnsw_index_that_finds_what_exact_search_finds(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from conftest import HashingEmbedder

    from memori_cli.store import vectors
    from memori_cli.store.postgres import vectors as pgvector

    monkeypatch.setattr(pgvector, "HNSW_MIN_ROWS", 30)
    mem = Memori(conn=pg_url, embedder=HashingEmbedder())
    for entity, count in (("big", 40), ("small", 5)):
        with mem.attribution(entity):
            mem.add_messages(
                [{"role": "user", "content": f"note {i} about owls and tea {i % 7}"}
                 for i in range(count)]
            )  # fmt: skip
    assert mem.augment().embedded == 45

    def indexes() -> set[str]:
        rows = mem.store.conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'message_embeddings_hnsw_%'"
        )
        return {name for (name,) in rows}

    assert indexes() == {pgvector.hnsw_name("big")}  # only the entity that grew large
    query = HashingEmbedder().embed(["owls and tea 3"])[0]
    conn = mem.store.conn
    # 40 rows: the planner would scan them; at HNSW_MIN_ROWS it takes the index by itself.
    conn.execute("SET enable_seqscan = off")
    plan = " ".join(
        row[0]
        for row in conn.execute(
            "EXPLAIN SELECT message_id FROM message_embeddings WHERE entity_id = ? "
            "ORDER BY embedding::vector(64) <=> ?::vector(64) LIMIT 11",
            ("big", "[" + ",".join(map(str, np.asarray(query).tolist())) + "]"),
        )
    )
    assert pgvector.hnsw_name("big") in plan
    through_index = vectors.knn(mem.store, "big", query, 10)
    conn.execute("SET enable_seqscan = on; SET enable_indexscan = off")  # exact, as it was
    exact = vectors.knn(mem.store, "big", query, 10)
    conn.execute("RESET enable_indexscan")
    assert through_index == exact and len(exact) == 10
    vectors.reset(mem.store)  # a new model's dimension would not fit the index: it goes
    assert indexes() == set()
    assert mem.reembed().embedded == 45 and indexes() == {pgvector.hnsw_name("big")}
    mem.forget("big")
    assert indexes() == set()  # its entity gone, the index went too
    mem.close()


def test_an_entity_with_jobs_left_gets_its_hnsw_index_when_they_are_done(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history being imported is indexed in one pass once its jobs are done, instead of
    every vector after the first HNSW_MIN_ROWS being inserted into the index one by one."""
    from conftest import HashingEmbedder

    from memori_cli.augment.pipeline import AugmentReport
    from memori_cli.store.postgres import vectors as pgvector

    monkeypatch.setattr(pgvector, "HNSW_MIN_ROWS", 30)
    mem = Memori(conn=pg_url, embedder=HashingEmbedder())
    with mem.attribution("big"):
        mem.add_messages([{"role": "user", "content": f"note {i} about owls"} for i in range(40)])
        mem.new_session()
        mem.add_messages([{"role": "user", "content": f"more {i} on tea"} for i in range(5)])
    pipeline = mem.pipeline()
    first, *rest = jobs.claim(mem.store, pipeline.owner, limit=10)
    assert rest  # the second session's job is left
    for job in rest:
        jobs.release(mem.store, job)
    pipeline.run(first, AugmentReport())
    (stored,) = mem.store.conn.execute(
        "SELECT count(*) FROM message_embeddings WHERE entity_id = 'big'"
    ).fetchone()
    assert stored >= 30
    assert not pgvector._hnsw_valid(mem.store.conn.raw, "big")  # jobs left: not yet
    assert pipeline.drain().jobs_done == len(rest)
    assert pgvector._hnsw_valid(mem.store.conn.raw, "big")
    mem.close()


def test_a_hybrid_recall_takes_few_round_trips(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each statement is a round trip to the server: a recall runs what it needs (the
    speakers, the vector model, the words tokenized once, bm25 and nearest vectors, each
    with the candidates' vectors, of messages and of memories, the hits' rows) and nothing
    more: 12 statements (14 before the tokens were remembered and candidates came with their
    vectors)."""
    import psycopg
    from conftest import HashingEmbedder

    mem = _filled(Memori(conn=pg_url, embedder=HashingEmbedder()), ("maya",))
    mem.augment()
    mem.recall("where does Maya live", entity_id="maya")  # the first opens the connection
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    assert mem.recall("which city did Maya move to", entity_id="maya")
    assert len(sent) <= 12, "\n".join(sent)
    assert (
        sum("settings" in sql for sql in sent) <= 1
        and sum("memori_words" in sql for sql in sent) == 1
    )
    mem.close()
