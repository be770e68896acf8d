"""PostgreSQL: a process's copies of large entities' vectors (postgres.vectors.VectorCache)
answer exactly what the server's own search answers, and never a stale copy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import HashingEmbedder

from memori_cli import Memori
from memori_cli.errors import ConfigError
from memori_cli.store import vectors
from memori_cli.store.postgres import vectors as pgvector

pytest.importorskip("psycopg")


@pytest.fixture
def small_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entities of 20 vectors or more are copied (2,000 in use), at their first search (the
    second in use) and by that search (in use: in the background), and none get an HNSW
    index."""
    monkeypatch.setattr(pgvector, "CACHE_MIN_ROWS", 20)
    monkeypatch.setattr(pgvector, "CACHE_AFTER_SEARCHES", 1)
    monkeypatch.setattr(pgvector, "CACHE_IN_BACKGROUND", False)
    monkeypatch.setattr(pgvector, "HNSW_MIN_ROWS", 10**9)


@pytest.fixture
def mem(postgres_store_url: str, small_copies: None) -> Iterator[Memori]:
    memori = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    yield memori
    memori.close()


def _add(mem: Memori, entity: str, start: int, count: int) -> None:
    with mem.attribution(entity):
        mem.add_messages(
            [{"role": "user", "content": f"note {i} about owls and tea {i % 7} kind {i % 3}"}
             for i in range(start, start + count)]
        )  # fmt: skip
    mem.augment()


def _query(text: str = "owls and tea 3 kind 1") -> Any:
    return HashingEmbedder().embed([text])[0]


def _server(mem: Memori, entity: str, query: Any, k: int = 5) -> list[tuple[int, float]]:
    """The server's own search (exact: no HNSW index here), past the cache."""
    return pgvector.knn(mem.store.conn, "message", entity, query, k)


def _cached(mem: Memori, entity: str) -> bool:
    cache = mem.store.vector_cache
    return cache is not None and entity in cache._copies


def _counts(mem: Memori) -> dict[str, int]:
    rows = mem.store.conn.execute("SELECT entity_id, rows FROM vector_counts").fetchall()
    return {str(e): int(n) for e, n in rows}


def _stored(mem: Memori) -> dict[str, int]:
    rows = mem.store.conn.execute(
        "SELECT entity_id, count(*) FROM message_embeddings GROUP BY entity_id"
    ).fetchall()
    return {str(e): int(n) for e, n in rows}


def test_the_copy_answers_what_the_server_answers_as_vectors_come_and_go(mem: Memori) -> None:
    _add(mem, "big", 0, 40)
    _add(mem, "small", 0, 5)
    query = _query()
    found = vectors.knn(mem.store, "big", query, 15)
    assert _cached(mem, "big") and found == _server(mem, "big", query, 15) and len(found) == 15
    vectors.knn(mem.store, "small", query, 15)
    assert not _cached(mem, "small")  # below the size: the server searches
    _add(mem, "big", 40, 30)  # new rows: the copy takes them
    found = vectors.knn(mem.store, "big", query, 15)
    assert found == _server(mem, "big", query, 15)
    assert len(mem.store.vector_cache._copies["big"].ids) == 70
    # A message deleted on the server (here by hand, as another host would): copied again.
    gone = found[0][0]
    with mem.store.write() as tx:
        tx.execute("DELETE FROM messages WHERE id = ?", (gone,))
    found = vectors.knn(mem.store, "big", query, 15)
    assert gone not in [mid for mid, _ in found] and found == _server(mem, "big", query, 15)
    assert _counts(mem) == _stored(mem) == {"big": 69, "small": 5}


def test_another_process_s_writes_reach_the_copy(mem: Memori, postgres_store_url: str) -> None:
    _add(mem, "big", 0, 30)
    query = _query("note 55 about owls and tea 6 kind 1")
    first = vectors.knn(mem.store, "big", query, 5)
    other = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    try:
        _add(other, "big", 30, 30)
    finally:
        other.close()
    found = vectors.knn(mem.store, "big", query, 5)
    assert found == _server(mem, "big", query) and found != first
    assert max(mid for mid, _ in found) > max(mid for mid, _ in first)  # one of the new rows


def test_a_forgotten_entity_made_again_is_not_its_old_copy(mem: Memori) -> None:
    _add(mem, "big", 0, 30)
    query = _query()
    before = vectors.knn(mem.store, "big", query, 5)
    mem.forget("big")
    assert _counts(mem) == {} and vectors.knn(mem.store, "big", query, 5) == []
    _add(mem, "big", 0, 30)  # the same count again, under new ids
    after = vectors.knn(mem.store, "big", query, 5)
    assert after == _server(mem, "big", query)
    assert not {mid for mid, _ in before} & {mid for mid, _ in after}


def test_a_new_model_replaces_the_copy(mem: Memori) -> None:
    _add(mem, "big", 0, 30)
    vectors.knn(mem.store, "big", _query(), 5)
    vectors.reset(mem.store)
    assert _counts(mem) == {"big": 0}
    mem._embedder = HashingEmbedder(name="another", dim=32)
    assert mem.reembed().embedded == 30
    query = HashingEmbedder(name="another", dim=32).embed(["owls and tea 3"])[0]
    found = vectors.knn(mem.store, "big", query, 5)
    assert _cached(mem, "big") and found == _server(mem, "big", query)


def test_an_entity_is_copied_at_its_second_search_within_the_idle_time(
    mem: Memori, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgvector, "CACHE_AFTER_SEARCHES", 2)
    _add(mem, "big", 0, 30)
    query = _query()
    first = vectors.knn(mem.store, "big", query, 5)
    assert not _cached(mem, "big") and first == _server(mem, "big", query)
    assert vectors.knn(mem.store, "big", query, 5) == first and _cached(mem, "big")
    _add(mem, "other", 0, 30)
    vectors.knn(mem.store, "other", query, 5)
    monkeypatch.setattr(pgvector, "CACHE_IDLE_SECONDS", 0.5)
    time.sleep(0.6)
    vectors.knn(mem.store, "other", query, 5)  # the first search was too long ago
    assert not _cached(mem, "other")
    vectors.knn(mem.store, "other", query, 5)
    assert _cached(mem, "other")


def test_a_copy_is_fetched_in_the_background_while_the_server_answers(
    mem: Memori, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setattr(pgvector, "CACHE_IN_BACKGROUND", True)
    fetched_on: list[threading.Thread] = []
    fetch = pgvector._fetch

    def recorded(*args: Any) -> Any:
        fetched_on.append(threading.current_thread())
        return fetch(*args)

    monkeypatch.setattr(pgvector, "_fetch", recorded)
    _add(mem, "big", 0, 30)
    query = _query()
    found = vectors.knn(mem.store, "big", query, 5)  # the server's answer, at once
    assert found == _server(mem, "big", query)
    mem.store.vector_cache.wait(30)
    assert [t.name for t in fetched_on] == ["memori-vector-copy"]
    assert _cached(mem, "big") and vectors.knn(mem.store, "big", query, 5) == found
    assert mem.store.vector_cache._fetching == {} and len(fetched_on) == 1


def test_on_a_connection_handed_over_the_copy_is_fetched_by_the_search(
    postgres_store_url: str, small_copies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(pgvector, "CACHE_IN_BACKGROUND", True)
    with psycopg.connect(postgres_store_url, autocommit=True) as given:
        mem = Memori(conn=given, embedder=HashingEmbedder())
        _add(mem, "big", 0, 30)
        vectors.knn(mem.store, "big", _query(), 5)
        assert mem.store.vector_cache.store is None and _cached(mem, "big")
        mem.close()


def test_a_row_without_a_vector_is_counted_not_copied(mem: Memori) -> None:
    _add(mem, "big", 0, 30)
    query = _query()
    with mem.store.write() as tx:
        tx.execute(
            "UPDATE message_embeddings SET embedding = NULL WHERE message_id = "
            "(SELECT min(message_id) FROM message_embeddings WHERE entity_id = 'big')"
        )
    found = vectors.knn(mem.store, "big", query, 5)
    assert found == _server(mem, "big", query)
    assert len(mem.store.vector_cache._copies["big"].ids) == 29
    assert mem.store.vector_cache._copies["big"].rows == 30


def test_the_counts_follow_every_kind_of_write(mem: Memori) -> None:
    _add(mem, "a", 0, 25)
    _add(mem, "b", 0, 3)
    conn = mem.store.conn
    (first,) = conn.execute("SELECT generation FROM vector_counts WHERE entity_id = 'a'").fetchone()
    with mem.store.write() as tx:  # an update keeps the count and changes the stamps
        tx.execute("UPDATE message_embeddings SET model = model WHERE entity_id = 'a'")
    (second, cleared) = conn.execute(
        "SELECT generation, cleared FROM vector_counts WHERE entity_id = 'a'"
    ).fetchone()
    assert second > first and cleared == second and _counts(mem) == _stored(mem)
    with mem.store.write() as tx:
        tx.execute(
            "DELETE FROM message_embeddings WHERE message_id IN "
            "(SELECT message_id FROM message_embeddings WHERE entity_id = 'a' LIMIT 4)"
        )
    assert _counts(mem) == _stored(mem) == {"a": 21, "b": 3}
    with mem.store.write() as tx:
        tx.execute("TRUNCATE message_embeddings")
    assert _counts(mem) == {"a": 0, "b": 0}
    vectors.knn(mem.store, "a", _query(), 5)
    assert not _cached(mem, "a")


def test_a_copy_that_does_not_fit_leaves_the_search_to_the_server(
    postgres_store_url: str, small_copies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 vectors of 64 floats are 8 kB: a budget of 10 kB holds one entity, not two.
    monkeypatch.setenv("MEMORI_VECTOR_CACHE_MB", str(10 / 1024))
    mem = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    try:
        _add(mem, "one", 0, 30)
        _add(mem, "two", 0, 30)
        query = _query()
        assert vectors.knn(mem.store, "one", query, 5) == _server(mem, "one", query)
        assert vectors.knn(mem.store, "two", query, 5) == _server(mem, "two", query)
        # "one" was used a moment ago: it is not evicted for "two" (that would thrash).
        assert _cached(mem, "one") and not _cached(mem, "two")
        monkeypatch.setattr(pgvector, "CACHE_IDLE_SECONDS", 0.0)
        vectors.knn(mem.store, "two", query, 5)
        assert _cached(mem, "two") and not _cached(mem, "one")
    finally:
        mem.close()


@pytest.mark.parametrize("value", ["lots", "-1", "inf"])
def test_a_bad_budget_is_a_config_error_naming_it(
    postgres_store_url: str, small_copies: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MEMORI_VECTOR_CACHE_MB", value)
    mem = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    try:
        _add(mem, "big", 0, 25)
        with pytest.raises(ConfigError, match="MEMORI_VECTOR_CACHE_MB"):
            vectors.knn(mem.store, "big", _query(), 5)
    finally:
        mem.close()


def test_a_budget_of_zero_turns_the_copies_off(
    postgres_store_url: str, small_copies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORI_VECTOR_CACHE_MB", "0")
    mem = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    try:
        _add(mem, "big", 0, 25)
        query = _query()
        assert vectors.knn(mem.store, "big", query, 5) == _server(mem, "big", query)
        assert not _cached(mem, "big")
    finally:
        mem.close()


def test_recall_through_the_copy_is_recall_on_the_server(
    mem: Memori, postgres_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add(mem, "big", 0, 60)
    vectors.knn(mem.store, "big", _query(), 5)  # its budget read: the default
    monkeypatch.setenv("MEMORI_VECTOR_CACHE_MB", "0")
    server = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    try:
        for question in ("owls and tea 3", "kind 2 note 17", "what about tea 5?"):
            mine = [(h.id, h.score) for h in mem.recall(question, 10, entity_id="big")]
            theirs = [(h.id, h.score) for h in server.recall(question, 10, entity_id="big")]
            assert mine == theirs and len(mine) == 10, question
        assert _cached(mem, "big") and not _cached(server, "big")
    finally:
        server.close()


def test_vectors_committed_out_of_id_order_are_found(mem: Memori) -> None:
    """Two daemons embedding one entity's jobs: the older messages' vectors may commit
    after the newer ones' (the copy's catch-up takes only ids above its last)."""
    with mem.attribution("big"):
        mem.add_messages(
            [{"role": "user", "content": f"note {i} about owls and tea {i % 7}"} for i in range(40)]
        )
    rows = mem.store.conn.execute(
        "SELECT id, content FROM messages WHERE entity_id = 'big' ORDER BY id"
    ).fetchall()
    ids = [int(mid) for mid, _ in rows]
    matrix = HashingEmbedder().embed([text for _, text in rows])
    vectors.add(mem.store, "hashing-test", ids[20:], matrix[20:])  # the newer first
    query = _query("note 3 about owls and tea 3")
    first = vectors.knn(mem.store, "big", query, 5)
    assert _cached(mem, "big") and all(mid in ids[20:] for mid, _ in first)
    vectors.add(mem.store, "hashing-test", ids[:20], matrix[:20])
    found = vectors.knn(mem.store, "big", query, 5)
    assert found == _server(mem, "big", query) and found[0][0] == ids[3]
    assert len(mem.store.vector_cache._copies["big"].ids) == 40


def test_an_entity_that_would_not_fit_is_not_fetched(
    postgres_store_url: str, small_copies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the budget full of copies in use, another entity's search goes to the server
    straight away: fetching its vectors only to let them go would cost a full read per search
    (measured at 1M vectors over 100 entities: 173 ms a recall against 47 ms on the server)."""
    monkeypatch.setenv("MEMORI_VECTOR_CACHE_MB", str(10 / 1024))
    mem = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    fetched: list[int] = []
    fetch = pgvector._fetch
    monkeypatch.setattr(
        pgvector,
        "_fetch",
        lambda raw, e, after, dim: fetched.append(after) or fetch(raw, e, after, dim),
    )
    try:
        _add(mem, "one", 0, 30)
        _add(mem, "two", 0, 30)
        query = _query()
        vectors.knn(mem.store, "one", query, 5)
        assert len(fetched) == 1
        for _ in range(3):
            assert vectors.knn(mem.store, "two", query, 5) == _server(mem, "two", query)
        assert len(fetched) == 1 and _cached(mem, "one")
    finally:
        mem.close()
