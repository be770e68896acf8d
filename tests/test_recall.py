"""Lexical recall: OR-ed words ranked by bm25, any text a valid query, entities isolated."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memori_cli import Memori
from memori_cli.recall.query import match_expression


def test_a_question_finds_a_message_sharing_only_some_words(mem: Memori) -> None:
    mem.attribution(entity_id="alice")
    for message in (
        {"role": "user", "content": "Alice here, I live in Berlin", "id": "m-7"},
        {"role": "user", "content": "The weather was grey all week"},
        {"role": "assistant", "content": "Berlin has great museums"},
    ):
        mem.new_session()  # separate threads: no neighbouring turns
        mem.add_messages([message])
    hits = mem.recall("where does Alice live these days?")
    assert [h.content for h in hits] == ["Alice here, I live in Berlin"]
    assert hits[0].kind == "message"
    assert hits[0].source_ids == ["m-7"]
    assert hits[0].entity == "alice"
    assert hits[0].score > 0


def test_more_shared_words_rank_higher_and_limit_applies(mem: Memori) -> None:
    mem.add_messages([
        {"role": "user", "content": "I play tennis"},
        {"role": "user", "content": "I play tennis on Sunday mornings at the club"},
        {"role": "user", "content": "tennis club membership renewed on Sunday"},
    ])  # fmt: skip
    hits = mem.recall("tennis club Sunday mornings", limit=2)
    assert [h.content for h in hits] == [
        "I play tennis on Sunday mornings at the club",
        "tennis club membership renewed on Sunday",
    ]
    assert hits[0].score >= hits[1].score


def test_message_hits_without_external_id_cite_their_internal_id(mem: Memori) -> None:
    mem.add_messages([{"role": "user", "content": "penguins are birds"}])
    (hit,) = mem.recall("penguins")
    assert hit.source_ids == [str(hit.id)]
    assert set(hit.to_dict()) >= {"id", "kind", "content", "score", "created_at", "session",
                                  "entity", "source_ids"}  # fmt: skip


HOSTILE = ["foo AND", '"unclosed', "NOT x", "text:secret", "a-b", "*", "", "   ", "AND OR NOT",
           "NEAR(a b)", "^start", "col:val*", "'; DROP TABLE messages; --", "\x00\x01",
           "(((", ")", "{content}: x", "🙂", "a" * 10_000, "word " * 2_000]  # fmt: skip


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_any_text_is_a_valid_query(mem: Memori, query: str) -> None:
    mem.add_messages([
        {"role": "user", "content": "the secret text is foo and a-b and x"},
        {"role": "user", "content": "start col val content word"},
    ])  # fmt: skip
    hits = mem.recall(query)
    assert isinstance(hits, list)
    assert mem.stats()["messages"] == 2


def test_words_are_matched_literally(mem: Memori) -> None:
    for content in ("text secret", "x"):
        mem.new_session()  # separate threads: no neighbouring turns
        mem.add_messages([{"role": "user", "content": content}])
    # "text:secret" would be a column filter in FTS5 syntax; here it is two words.
    assert {h.content for h in mem.recall("text:secret")} == {"text secret"}
    assert {h.content for h in mem.recall("NOT x")} == {"x"}


def test_long_queries_are_capped() -> None:
    expression = match_expression(" ".join(f"w{i}" for i in range(500)))
    assert expression is not None and expression.count(" OR ") == 31


def test_stopword_only_queries_still_search(mem: Memori) -> None:
    mem.add_messages([{"role": "user", "content": "to be or not to be"}])
    assert len(mem.recall("to be")) == 1


def test_process_and_time_filters(mem: Memori) -> None:
    with mem.attribution(entity_id="e", process_id="bot-a"):
        mem.add_messages([{"role": "user", "content": "kiwi early", "timestamp": "2024-01-01"}])
    with mem.attribution(entity_id="e", process_id="bot-b"):
        mem.add_messages([{"role": "user", "content": "kiwi late", "timestamp": "2024-06-01"}])
    assert [h.content for h in mem.recall("kiwi", entity_id="e", process_id="bot-a")] == [
        "kiwi early"
    ]
    since = "2024-03-01T00:00:00+00:00"
    assert [h.content for h in mem.recall("kiwi", entity_id="e", since=since)] == ["kiwi late"]
    assert [h.content for h in mem.recall("kiwi", entity_id="e", until=since)] == ["kiwi early"]


# Consonants only: no stopwords and nothing the stemmer would change, so "shares a word" is exact.
words = st.text(alphabet="bcdfgkqvxz", min_size=1, max_size=6)
# "d'or" and "d-or" tokenize alike in FTS5; "🙂" has no token characters at all.
ENTITIES = ["ann", "bob", "cy", "d'or", "d-or", "é 1", "🙂"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.tuples(st.sampled_from(ENTITIES), st.lists(words, min_size=1, max_size=6)),
        min_size=1,
        max_size=25,
    ),
    query=st.lists(words, min_size=1, max_size=4),
    asker=st.sampled_from([*ENTITIES, "nobody"]),
)
def test_recall_never_returns_another_entitys_data(
    mem: Memori, data: list[tuple[str, list[str]]], query: list[str], asker: str
) -> None:
    with mem.store.write() as conn:
        for table in ("messages", "jobs", "sessions", "entities"):
            conn.execute(f"DELETE FROM {table}")
    owned: dict[str, set[str]] = {}
    for entity, text_words in data:
        text = " ".join(text_words)
        with mem.attribution(entity_id=entity):
            mem.add_messages([{"role": "user", "content": text}])
        owned.setdefault(entity, set()).add(text)
    hits = mem.recall(" ".join(query), entity_id=asker, limit=100)
    for hit in hits:
        assert hit.entity == asker
        assert hit.content in owned.get(asker, set())
    # And everything of the asker's that shares a word is found.
    expected = {t for t in owned.get(asker, set()) if set(t.split()) & set(query)}
    assert {h.content for h in hits} == expected
