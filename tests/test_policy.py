"""The policy above the store, through its own seams: the query language, node keys and
resolution, merge and supersede on the store's primitives. (Through ``Memori`` the same rules
are pinned by test_augment, test_graph and test_recall.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memori_cli import Memori, parts, recall
from memori_cli.augment import resolve as augment_resolve
from memori_cli.graph import resolve as graph_resolve
from memori_cli.parts import MemoryDraft
from memori_cli.recall import hybrid
from memori_cli.recall import query as recall_query
from memori_cli.store import fts
from memori_cli.store import graph as store_graph
from memori_cli.store import memories as store_memories


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memori]:
    memori = Memori(tmp_path / "memori.db", embedder=None)
    memori.attribution(entity_id="ana")
    yield memori
    memori.close()


def say(mem: Memori, *texts: str) -> list[int]:
    days = [f"2024-01-0{i + 1}" for i in range(len(texts))]
    mem.add_messages(
        [{"role": "user", "content": t, "timestamp": d} for t, d in zip(texts, days, strict=True)]
    )
    rows = mem.store.conn.execute("SELECT id FROM messages WHERE entity_id = 'ana' ORDER BY id")
    return [int(i) for (i,) in rows][-len(texts) :]


def test_ranking_config_is_one_value_wherever_it_is_imported_from() -> None:
    assert hybrid.RankingConfig is parts.RankingConfig is recall.RankingConfig
    assert parts.RankingConfig().memory_weight == 0.6


def test_the_query_language_quotes_words_and_the_store_runs_the_expression(mem: Memori) -> None:
    say(mem, "Quokkas AND wombats live near Perth")
    hostile = 'quokkas AND "unclosed NOT x text:secret *'
    expression = recall_query.match_expression(hostile)
    assert expression == '"quokkas" OR "unclosed" OR "x" OR "text" OR "secret"'
    found = recall_query.search_messages(mem.store, hostile, entity_id="ana")
    assert [r["content"] for r in found] == ["Quokkas AND wombats live near Perth"]
    # The primitive takes the words as chosen (the backend quotes them for its engine), so
    # the same words find the same rows.
    words = recall_query.terms(hostile)
    assert words == ["quokkas", "unclosed", "x", "text", "secret"]
    direct = fts.lexical_messages(mem.store, words, entity_id="ana")
    assert [r["id"] for r in direct] == [r["id"] for r in found]
    assert fts.lexical_messages(mem.store, words, entity_id="ana", limit=0) == []
    assert fts.lexical_messages(mem.store, [], entity_id="ana") == []
    assert recall_query.search_messages(mem.store, "  ?! ", entity_id="ana") == []
    assert recall_query.search_messages(mem.store, "quokkas", entity_id="bob") == []


def test_node_keys_of_a_question_skip_stopwords_and_speakers() -> None:
    keys = recall_query.node_keys_in("Did Maya visit the cats of New York?", skip={"maya"})
    assert {"cat", "new york", "new", "york"} <= keys
    assert not keys & {"the", "of", "did", "maya", ""}
    # Only the speaker's own name goes: a phrase holding it may still name a node.
    assert "maya visit" in keys and "visit" in keys


def test_resolution_joins_spellings_and_finds_nodes_by_key_or_id(mem: Memori) -> None:
    assert graph_resolve.add_node(mem.store, "ana", "Lisbon", "place") == 1
    assert graph_resolve.add_node(mem.store, "ana", " lisbon's ", "place") == 0
    node = graph_resolve.find_node(mem.store, "ana", "LISBON")
    assert node is not None and node["name"] == "Lisbon"
    assert graph_resolve.find_node(mem.store, "ana", f"#{node['id']}") == node
    assert graph_resolve.find_node(mem.store, "ana", "#99999999999999999999999") is None
    assert graph_resolve.find_node(mem.store, "bob", "Lisbon") is None
    assert graph_resolve.unknown_names(mem.store, "ana", ["Lisbons", "Porto"]) == ["Porto"]


def test_similar_names_join_only_above_the_threshold(mem: Memori) -> None:
    near = np.array([1.0, 0.05], np.float32)  # cosine 0.9988 with [1, 0]
    with mem.store.write() as tx:
        store_memories.ensure_entity(tx, "ana", "2024-01-01")
        first = graph_resolve.resolve(tx, "ana", "Porto", "place", np.array([1.0, 0.0]))
        assert graph_resolve.resolve(tx, "ana", "Oporto", "place", near) == first
        assert graph_resolve.resolve(tx, "ana", "Oporto FC", "organization", near) != first
        assert store_graph.node_for_key(tx, "ana", "oporto") == first


def test_merge_and_supersede_decisions_on_the_store_primitives(mem: Memori) -> None:
    ids = say(mem, "I live in Oslo.", "I live in Oslo!", "I live in Bergen.")
    with mem.store.write() as tx:
        known = store_memories.sources(tx, "ana", ids)

        def save(content: str, at: int) -> str | None:
            draft = MemoryDraft("fact", content, "Ana", [ids[at]], slot="lives_in")
            return augment_resolve.save_memory(
                tx, "ana", None, draft, [known[ids[at]]], "test@1", None, None
            )

        assert [save("Ana lives in Oslo", 0), save("ana lives in oslo.", 1)] == [
            "created",
            "merged",
        ]
        assert save("Ana lives in Bergen", 2) == "superseded"
        assert save("", 2) is None
    current = mem.memories(kind="fact")
    assert [(m["content"], m["count"]) for m in current] == [("Ana lives in Bergen", 1)]
    oslo = mem.memories(kind="fact", history=True)[-1]
    assert (oslo["count"], oslo["superseded_by"]) == (2, current[0]["id"])
    assert oslo["valid_to"] == current[0]["valid_from"]
