"""Issue 11: the upstream library's set-up runs unchanged (register chains, `import memori`,
any DB-API connection with a numpy vector path, augmentation.wait, hit aliases, doctor)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import numpy as np
import openai
import pytest
import sqlean
from conftest import HashingEmbedder
from llm_server import LLMServer
from typer.testing import CliRunner

import memori_cli
from memori_cli import Memori, RecallHit, StoreError
from memori_cli.cli import app
from memori_cli.store import connect, jobs, vec0
from memori_cli.store.migrations import migrations

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "maya.jsonl"
STDLIB_LOADS_EXTENSIONS = hasattr(sqlite3.connect(":memory:"), "enable_load_extension")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    srv = LLMServer().start()
    yield srv
    srv.stop()


def stdlib(path: Path) -> Memori:
    return Memori(conn=lambda: sqlite3.connect(str(path)), embedder=HashingEmbedder())


# -- register ------------------------------------------------------------------------------
def test_register_returns_memori_and_wraps_several_clients_in_place(
    tmp_path: Path, server: LLMServer
) -> None:
    gpt = openai.OpenAI(base_url=server.url + "/v1", api_key="test")
    claude = anthropic.Anthropic(base_url=server.url, api_key="test")
    mem = Memori(conn=tmp_path / "m.db").llm.register(gpt, claude)
    assert isinstance(mem, Memori)
    mem.attribution(entity_id="user_123", process_id="my_agent")
    gpt.chat.completions.create(model="m", messages=[{"role": "user", "content": "I drink oolong"}])
    claude.messages.create(
        model="c", max_tokens=50, messages=[{"role": "user", "content": "I drink sencha"}]
    )
    assert mem.llm.flush(10)
    contents = [
        content
        for (content,) in mem.store.conn.execute(
            "SELECT content FROM messages WHERE entity_id = 'user_123' ORDER BY id"
        )
    ]
    assert "I drink oolong" in contents and "I drink sencha" in contents
    mem.close()


def test_register_checks_every_client_before_wrapping_any(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "m.db")
    gpt = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="test")
    before = gpt.chat.completions.create
    with pytest.raises(TypeError, match=r"cannot wrap a builtins\.object"):
        mem.llm.register(gpt, object())
    assert gpt.chat.completions.create == before  # nothing wrapped
    with pytest.raises(TypeError, match="at least one client"):
        mem.llm.register()


# -- import memori -------------------------------------------------------------------------
def test_import_memori_re_exports_the_same_objects() -> None:
    import memori

    assert memori.Memori is memori_cli.Memori
    assert sorted(memori.__all__) == sorted(memori_cli.__all__)
    for name in memori_cli.__all__:
        assert getattr(memori, name) is getattr(memori_cli, name), name


# -- any DB-API connection: the numpy vector path ------------------------------------------
QUERIES = [
    "where does she live", "what is her job", "allergies", "sister birthday", "running",
    "manager", "learning a language", "database migration", "moved from", "favourite food",
    "how far does she run", "slide decks", "joining in June", "on-call rotation", "weekend trip",
    "tea", "coffee", "cat", "dog", "Berlin", "Lisbon", "Spanish", "marathon", "nurse",
    "engineer", "pasta", "peanuts", "birthday party", "holiday", "book", "music", "guitar",
    "train", "bike", "office", "remote work", "deadline", "meeting", "project", "team",
    "family", "mother", "brother", "friend", "apartment", "rent", "garden", "weather",
    "doctor", "sleep",
]  # fmt: skip


def build(mem: Memori) -> None:
    with mem.attribution(entity_id="maya"):
        report = mem.import_file(EXAMPLES, entity_id="maya")
        assert report.imported > 20
        mem.augment()


def hit_ids(mem: Memori, query: str) -> list[tuple[str, int]]:
    return [(h.kind, h.id) for h in mem.recall(query, limit=10, entity_id="maya")]


@pytest.mark.parametrize("first", ["sqlean", "stdlib"])
def test_one_store_opened_with_and_without_sqlite_vec_gives_the_same_hits(
    tmp_path: Path, first: str
) -> None:
    path = tmp_path / "both.db"
    by_path = Memori(conn=path, embedder=HashingEmbedder())
    plain = stdlib(path)
    build(by_path if first == "sqlean" else plain)
    by_path.add_messages([{"role": "user", "content": "one more, so the vec0 index is built"}])
    by_path.augment()
    assert len(QUERIES) == 50
    assert vec0.usable(by_path.store.conn)  # the sqlean store searches through vec0 ...
    if not STDLIB_LOADS_EXTENSIONS:  # ... and the stdlib one with numpy
        assert connect.vector_path(plain.store.conn)[0] == "numpy"
    vector_hits = 0
    for query in QUERIES:
        assert hit_ids(by_path, query) == hit_ids(plain, query), query
        vector_hits += bool(by_path.recall(query, limit=10, entity_id="maya", explain=True))
    assert vector_hits > 40
    by_path.close()
    plain.close()


def test_writes_without_sqlite_vec_reach_the_vec0_index(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    vec = Memori(conn=path, embedder=HashingEmbedder())
    build(vec)
    plain = stdlib(path)
    with plain.attribution(entity_id="maya"):
        plain.add_messages([{"role": "user", "content": "I adopted a hedgehog called Quill"}])
    plain.augment()
    memory = next(m for m in plain.memories("maya") if "Quill" in m["content"])
    conn = vec.store.conn
    if not connect.has_vec(plain.store.conn):
        assert vec0.pending(conn) and not vec0.usable(conn)  # searched with numpy meanwhile
    assert hit_ids(vec, "hedgehog Quill") == hit_ids(plain, "hedgehog Quill")
    vec.add_messages([{"role": "user", "content": "any write brings the index in step"}])
    assert vec0.usable(conn)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM message_embeddings), (SELECT count(*) FROM vec_messages),"
        " (SELECT count(*) FROM memory_embeddings), (SELECT count(*) FROM vec_memories)"
    ).fetchone()
    assert counts[0] == counts[1] and counts[2] == counts[3]
    assert hit_ids(vec, "hedgehog Quill") == hit_ids(plain, "hedgehog Quill")
    # Forgetting through the stdlib connection removes the vectors from vec0 as well.
    assert plain.forget_memory(memory["id"], entity_id="maya")
    plain.forget("maya")
    vec.add_messages([{"role": "user", "content": "x"}])
    vec.augment()
    # only the two "default" messages written through `vec` are left, in both tables
    assert conn.execute("SELECT count(*) FROM vec_messages").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM message_embeddings").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM vec_memories").fetchone()[0] == 0
    assert plain.recall("hedgehog Quill", entity_id="maya") == []
    vec.close()
    plain.close()


def test_a_store_from_before_vector_blobs_opens_without_sqlite_vec(tmp_path: Path) -> None:
    # The schema and vec0 rows as the previous release wrote them, then the stdlib driver.
    path = tmp_path / "old.db"
    raw = connect.connect_path(str(path))
    db = connect.configure(raw)
    migrations.apply(db, stop_before="m008_vector_blobs")
    embedder = HashingEmbedder()
    raw.execute("INSERT INTO entities VALUES ('maya', 'now')")
    raw.execute("INSERT INTO sessions (entity_id, name, created_at) VALUES ('maya', 's', 'now')")
    raw.execute(
        """CREATE VIRTUAL TABLE vec_messages USING vec0(message_id INTEGER PRIMARY KEY,
           entity_id TEXT PARTITION KEY, embedding float[64] distance_metric=cosine,
           chunk_size=64)"""
    )
    texts = [f"note {i} about {'owls' if i % 3 else 'herons'}" for i in range(70)]
    for i, (text, vector) in enumerate(zip(texts, embedder.embed(texts), strict=True), 1):
        raw.execute(
            """INSERT INTO messages (id, entity_id, session_id, role, content, created_at,
               content_hash, trust, source) VALUES (?, 'maya', 1, 'user', ?, '2024-01-01', ?,
               1.0, 'api')""",
            (i, text, f"h{i}"),
        )
        raw.execute(
            "INSERT INTO message_embeddings VALUES (?, 'maya', 'hashing-test', 64, 'now')", (i,)
        )
        raw.execute("INSERT INTO vec_messages VALUES (?, 'maya', ?)", (i, vector.tobytes()))
    raw.executemany(
        "INSERT INTO settings VALUES (?, ?)",
        [("vector_model", "hashing-test"), ("vector_dim", "64")],
    )
    raw.close()
    for suffix in ("", "-wal", "-shm"):  # as memori made it (0600)
        if Path(str(path) + suffix).exists():
            Path(str(path) + suffix).chmod(0o600)
    plain = stdlib(path)
    stored = plain.store.conn.execute(
        "SELECT message_id, embedding FROM message_embeddings ORDER BY message_id"
    ).fetchall()
    assert len(stored) == 70
    for (mid, blob), vector in zip(stored, embedder.embed(texts), strict=True):
        assert np.array_equal(np.frombuffer(blob, dtype=np.float32), vector), mid
    vec = Memori(conn=path, embedder=HashingEmbedder())
    assert hit_ids(plain, "herons") == hit_ids(vec, "herons")
    vec.add_messages([{"role": "user", "content": "a write on the sqlite-vec connection"}])
    assert vec0.usable(vec.store.conn)  # the index is whole again
    assert hit_ids(plain, "herons") == hit_ids(vec, "herons")
    plain.close()
    vec.close()


@pytest.mark.skipif(
    connect.sqlite_version(sqlite3.connect(":memory:")) >= connect.SECURE_DELETE_FTS,
    reason="this Python's SQLite reads FTS5 secure-delete indexes",
)
def test_an_old_sqlite_reads_a_store_whose_index_used_secure_delete(tmp_path: Path) -> None:
    path = tmp_path / "fts.db"
    vec = Memori(conn=path)
    vec.add_messages([{"role": "user", "content": w} for w in ("kestrel notes", "drop me")])
    with vec.store.write() as conn:  # a delete writes the index in format 5
        conn.execute("DELETE FROM messages WHERE content = 'drop me'")
    vec.close()
    plain = Memori(conn=lambda: sqlite3.connect(str(path)))
    assert [h.content for h in plain.recall("kestrel")] == ["kestrel notes"]
    assert not connect.fts_secure_delete(plain.store.conn)
    plain.add_messages([{"role": "user", "content": "my secret is zanzibarite"}])
    plain.forget(plain.current.entity_id)
    plain.close()
    data = b"".join(
        Path(str(path) + s).read_bytes() for s in ("", "-wal") if Path(str(path) + s).exists()
    )
    assert b"zanzibarite" not in data  # forget merged the index: the word left it


# -- the caller's connection ---------------------------------------------------------------
def test_a_handed_over_connection_stays_open_and_other_threads_get_their_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "given.db"
    given = sqlite3.connect(str(path))  # check_same_thread=True, the default
    mem = Memori(conn=given, embedder=HashingEmbedder())
    mem.add_messages([{"role": "user", "content": "I keep bees on the roof"}])
    assert mem.store.conn is given
    # arecall runs in a worker thread: it may not touch `given`, and need not.
    hits = asyncio.run(mem.arecall("bees"))
    assert [h.content for h in hits][:1] == ["I keep bees on the roof"]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            mem.add_messages([{"role": "user", "content": "from another thread"}])
        except BaseException as exc:  # pragma: no cover (the assertion below shows it)
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    assert errors == []
    mem.close()
    # still open, and the caller's: it reads both messages
    assert given.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    pragmas = [given.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "foreign_keys")]
    assert pragmas == ["wal", 1]
    given.close()


def test_an_in_memory_connection_cannot_be_shared_with_another_thread() -> None:
    given = sqlite3.connect(":memory:", check_same_thread=False)
    mem = Memori(conn=given)
    mem.add_messages([{"role": "user", "content": "in memory"}])
    with pytest.raises(StoreError, match="in-memory"):
        asyncio.run(mem.arecall("memory"))
    assert [h.content for h in mem.recall("memory")] == ["in memory"]


def test_a_connection_inside_a_transaction_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    Memori(conn=path).store.build()
    given = sqlite3.connect(str(path))
    given.execute("CREATE TABLE IF NOT EXISTS mine (x)")
    given.execute("INSERT INTO mine VALUES (1)")  # the stdlib opens a transaction here
    assert given.in_transaction
    mem = Memori(conn=given)
    with pytest.raises(StoreError, match="inside a transaction"):
        mem.add_messages([{"role": "user", "content": "x"}])
    assert given.in_transaction  # not committed behind the caller's back
    given.rollback()
    assert given.execute("SELECT count(*) FROM mine").fetchone()[0] == 0
    mem.add_messages([{"role": "user", "content": "now it works"}])
    assert [h.content for h in mem.recall("works")] == ["now it works"]


def test_a_sqlean_connection_factory_keeps_the_sqlite_vec_path(tmp_path: Path) -> None:
    mem = Memori(conn=lambda: sqlean.connect(str(tmp_path / "s.db")), embedder=HashingEmbedder())
    mem.add_messages([{"role": "user", "content": "vectors in vec0"}])
    mem.augment()
    assert connect.vector_path(mem.store.conn)[0] == "sqlite-vec"
    assert vec0.usable(mem.store.conn)


def test_a_pysqlite3_connection_factory_works_and_agrees_with_sqlean(tmp_path: Path) -> None:
    """pysqlite3 (its own SQLite build, a DB-API 2.0 driver like the stdlib's) is handed
    over as a factory: same hits as the sqlean connection on the same file."""
    pysqlite3 = pytest.importorskip("pysqlite3.dbapi2")  # dev extra on Linux
    path = tmp_path / "p.db"
    by_path = Memori(conn=path, embedder=HashingEmbedder())
    build(by_path)
    other = Memori(conn=lambda: pysqlite3.connect(str(path)), embedder=HashingEmbedder())
    assert type(other.store.conn).__module__.startswith("pysqlite3")
    for query in QUERIES[:10]:
        assert hit_ids(other, query) == hit_ids(by_path, query), query
    other.add_messages([{"role": "user", "content": "written through pysqlite3"}])
    other.augment()
    assert by_path.recall("written through pysqlite3", 1)[0].content == "written through pysqlite3"
    other.close()
    by_path.close()


# -- augmentation.wait ---------------------------------------------------------------------
def test_wait_runs_this_process_jobs_in_the_foreground(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "w.db", embedder=HashingEmbedder())
    other = Memori(conn=tmp_path / "w.db")
    other.add_messages([{"role": "user", "content": "I live in Oslo."}])  # not ours to run
    mem.add_messages([{"role": "user", "content": "I live in Porto."}])
    assert mem.augmentation.pending() == 1
    assert mem.augmentation.wait() is True
    assert [m["content"] for m in mem.memories()] == ["User lives in Porto"]
    assert mem.augmentation.pending() == 0
    assert jobs.depth(mem.store)["pending"] == 1  # the other process's job waits
    assert mem.store.conn.execute("SELECT count(*) FROM message_embeddings").fetchone()[0] == 1


def test_wait_flushes_captured_calls_first(tmp_path: Path, server: LLMServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="test")
    mem = Memori(conn=tmp_path / "c.db").llm.register(client)
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "I live in Tromso."}]
    )
    assert mem.augmentation.wait(timeout=30) is True
    assert [m["content"] for m in mem.memories()] == ["User lives in Tromso"]


def test_wait_leaves_the_jobs_to_a_running_daemon_and_times_out(tmp_path: Path) -> None:
    from memori_cli import paths

    db = tmp_path / "d.db"
    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": "I live in Bergen."}])
    pidfile = paths.daemon_pidfile(db)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(pidfile, "w") as handle:  # a daemon holds this lock while it lives
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert paths.daemon_running(db)
        assert mem.augmentation.wait(timeout=0.3) is False
        assert mem.augmentation.pending() == 1 and mem.memories() == []
    assert not paths.daemon_running(db)
    assert mem.augmentation.wait(timeout=30) is True


# -- hits ----------------------------------------------------------------------------------
def test_hits_answer_the_upstream_field_names(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "h.db")
    mem.add_messages([{"role": "user", "content": "I collect fountain pens"}])
    (hit,) = mem.recall("fountain pens", limit=5)
    assert isinstance(hit, RecallHit)
    assert hit.similarity == hit.score == hit["similarity"] == hit["score"]
    assert hit["content"] == hit.content == "I collect fountain pens"
    assert hit.get("created_at") == hit.created_at and "created_at" in hit
    assert hit.get("nope", 7) == 7 and "nope" not in hit
    with pytest.raises(KeyError):
        hit["nope"]
    assert hit.to_dict()["content"] == hit.content  # the current shape is unchanged
    assert "similarity" not in hit.to_dict()


# -- doctor --------------------------------------------------------------------------------
def doctor(db: Path) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(app, ["--db", str(db), "doctor", "--json"])
    return {c["check"]: c for c in json.loads(result.stdout)}


def test_doctor_reports_the_vector_path_and_why(tmp_path: Path) -> None:
    db = tmp_path / "doc.db"
    Memori(conn=db).add_messages([{"role": "user", "content": "x"}])
    check = doctor(db)["vector path"]
    assert check["status"] == "ok"
    assert check["detail"].startswith("sqlite-vec: sqlite-vec v")
    assert f"stdlib sqlite3 connection here: SQLite {sqlite3.sqlite_version}" in check["detail"]
    if not STDLIB_LOADS_EXTENSIONS:
        assert "the numpy path" in check["detail"]
    assert doctor(db)["import memori"]["status"] == "ok"


def test_doctor_detects_the_upstream_memori_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "memori").mkdir(parents=True)
    (site / "memori" / "__init__.py").write_text("class Memori:  # upstream's\n    pass\n")
    info = site / "memori-3.3.6.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: memori\nVersion: 3.3.6\n")
    (info / "RECORD").write_text("memori/__init__.py,,\nmemori-3.3.6.dist-info/METADATA,,\n")
    db = tmp_path / "doc.db"
    Memori(conn=db).store.build()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "memori", raising=False)
    check = doctor(db)["import memori"]
    assert check["status"] == "fail"
    assert "the memori distribution also installs `memori`" in check["detail"]
    assert "pip uninstall memori" in check["detail"]
    assert CliRunner().invoke(app, ["--db", str(db), "doctor"]).exit_code == 1
