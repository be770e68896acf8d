"""Hybrid recall: fusion, decay, explain, stale-index detection, isolation, reembed."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import HashingEmbedder

from memori_cli import Memori, RecallWarning
from memori_cli.recall.hybrid import RankingConfig, fuse, rank
from memori_cli.store import vectors


@pytest.fixture
def hmem(tmp_path: Path) -> Memori:
    return Memori(conn=tmp_path / "h.db", embedder=HashingEmbedder())


def row(mid: int, days_old: float = 0, trust: float = 1.0, uses: int = 0) -> dict[str, object]:
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(
        days=days_old
    )
    return {"id": mid, "created_at": when.isoformat(), "trust": trust, "uses": uses, "name": None}


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def test_fusion_rewards_agreement_and_respects_weights() -> None:
    config = RankingConfig(rrf_k=10, neighbour_weight=0)
    lexical = [{"id": 1, "score": 9.0}, {"id": 2, "score": 5.0}]
    nearest = [(3, 0.1), (2, 0.2)]
    fused = fuse(lexical, nearest, config)
    assert fused[2]["fused"] == pytest.approx(1 / 12 + 1 / 12)
    assert fused[1]["fused"] == pytest.approx(1 / 11)
    assert fused[2]["fused"] > fused[1]["fused"] == fused[3]["fused"]
    assert fused[2]["lexical_rank"] == 2 and fused[2]["vector_rank"] == 2
    assert fused[3]["cosine"] == pytest.approx(0.9)
    lexical_only = fuse(
        lexical, nearest, RankingConfig(rrf_k=10, vector_weight=0, neighbour_weight=0)
    )
    assert lexical_only[3]["fused"] == 0


def test_neighbours_share_a_lexical_hits_score() -> None:
    config = RankingConfig(rrf_k=10, neighbour_weight=0.5)
    fused = fuse([{"id": 5, "score": 3.0}], [], config, {5: (4, 6)})
    assert fused[4]["fused"] == fused[6]["fused"] == pytest.approx(0.5 / 11)
    assert fused[5]["fused"] == pytest.approx(1 / 11)


def test_recency_decay_and_trust_and_use() -> None:
    fused = {1: {"fused": 1.0}, 2: {"fused": 1.0}}
    rows = {1: row(1, days_old=0), 2: row(2, days_old=30)}
    config = RankingConfig(half_life_days=30, recency_weight=1.0, trust_weight=0, use_weight=0)
    ranked = rank(fused, rows, config, now=NOW)
    assert [r[0] for r in ranked] == [1, 2]
    assert ranked[1][1] == pytest.approx(0.5)  # one half-life old: half the score
    assert ranked[1][2]["recency"] == pytest.approx(0.5)
    # No decay configured: equal scores.
    flat = rank(fused, rows, RankingConfig(recency_weight=0, trust_weight=0), now=NOW)
    assert flat[0][1] == flat[1][1]
    # What the user said outranks what an assistant said.
    trusted = rank(fused, {1: row(1, trust=0.6), 2: row(2, trust=1.0)}, RankingConfig(), now=NOW)
    assert trusted[0][0] == 2
    used = rank(fused, {1: row(1, uses=5), 2: row(2)}, RankingConfig(), now=NOW)
    assert used[0][0] == 1


@pytest.mark.real_model
def test_semantic_recall_finds_what_bm25_cannot(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "s.db")
    mem.attribution(entity_id="maya")
    for text in ("I just moved to Lisbon from Toronto", "My favourite food is ramen"):
        mem.new_session()
        mem.add_messages([{"role": "user", "content": text}])
    assert mem.augment().embedded == 2
    hits = mem.recall("which city is her home now?", limit=1)
    assert hits[0].content == "I just moved to Lisbon from Toronto"


def test_explain_shows_components_and_sources(hmem: Memori) -> None:
    hmem.add_messages([{"role": "user", "content": "I keep bees on my roof", "id": "b1"}])
    hmem.augment()
    (hit,) = hmem.recall("bees roof", explain=True)
    parts = hit.explain or {}
    assert parts["lexical_rank"] == 1 and parts["vector_rank"] == 1
    assert {"bm25", "cosine", "recency", "trust", "uses", "fused", "score"} <= set(parts)
    assert parts["source_messages"] == ["b1"]
    assert parts["score"] == pytest.approx(hit.score)
    assert hmem.recall("bees roof")[0].explain is None


def test_vector_search_is_scoped_to_the_entity(hmem: Memori) -> None:
    for entity, count in (("a", 15), ("b", 30)):
        with hmem.attribution(entity_id=entity):
            hmem.add_messages(
                [{"role": "user", "content": f"{entity} note number {i}"} for i in range(count)]
            )
    hmem.augment()
    query = HashingEmbedder().embed(["b note number 3"])[0]
    nearest = vectors.knn(hmem.store, "a", query, 10)
    ids = [mid for mid, _ in nearest]
    assert len(ids) == 10  # k of the entity's own rows, although b's rows are closer
    owners = {
        e for (e,) in hmem.store.conn.execute(
            f"SELECT DISTINCT entity_id FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids
        )
    }  # fmt: skip
    assert owners == {"a"}
    assert {h.entity for h in hmem.recall("b note number 3", entity_id="a", limit=50)} == {"a"}


def test_recall_is_lexical_until_embedded(hmem: Memori) -> None:
    hmem.add_messages([{"role": "user", "content": "tulips in spring"}])
    (hit,) = hmem.recall("tulips")
    assert hit.content == "tulips in spring"
    assert vectors.pending_count(hmem.store) == 1
    assert hmem.augment().embedded == 1 and hmem.augment().embedded == 0


@pytest.fixture
def target(tmp_path: Path) -> str | Path:
    """Where a test opens its store more than once (tests/test_postgres_shared.py makes it a
    PostgreSQL URL)."""
    return tmp_path / "m.db"


def test_model_change_is_detected_and_reembed_rebuilds(target: str | Path) -> None:
    path = target
    first = Memori(conn=path, embedder=HashingEmbedder("model-a", 32))
    first.add_messages([{"role": "user", "content": f"fact {i} about owls"} for i in range(5)])
    assert first.augment().embedded == 5
    first.close()

    second = Memori(conn=path, embedder=HashingEmbedder("model-b", 48))
    assert second.index_stale()
    with pytest.warns(RecallWarning, match="memori reembed"):
        hits = second.recall("owls")
    assert len(hits) == 5  # still answered, lexically
    with pytest.raises(Exception, match="reembed"):
        second.augment()
    assert second.reembed().embedded == 5
    assert not second.index_stale()
    assert vectors.index_model(second.store) == ("model-b", 48)
    models = second.store.conn.execute(
        "SELECT DISTINCT model, dim FROM message_embeddings"
    ).fetchall()
    assert models == [("model-b", 48)]


@pytest.mark.real_model
def test_a_store_moved_to_minilm_is_reembedded_and_recalled_by_meaning(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = Memori(conn=path, embedder=HashingEmbedder("model-a", 32))
    first.attribution(entity_id="maya")
    for text in ("I just moved to Lisbon from Toronto", "My favourite food is ramen"):
        first.new_session()
        first.add_messages([{"role": "user", "content": text}])
    assert first.augment().embedded == 2
    first.close()

    second = Memori(conn=path)  # the default model: MiniLM
    second.attribution(entity_id="maya")
    assert second.index_stale()
    assert second.reembed().embedded == 2
    assert vectors.index_model(second.store) == ("all-MiniLM-L6-v2", 384)
    hits = second.recall("which city is her home now?", limit=1)
    assert hits[0].content == "I just moved to Lisbon from Toronto"


def test_forgetting_removes_vectors(hmem: Memori) -> None:
    with hmem.attribution(entity_id="gone"):
        hmem.add_messages([{"role": "user", "content": "vanishing words"}])
    hmem.augment()
    hmem.forget("gone")
    conn = hmem.store.conn
    assert conn.execute("SELECT count(*) FROM message_embeddings").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM vec_messages").fetchone()[0] == 0


def test_filters_apply_to_vector_candidates(hmem: Memori) -> None:
    with hmem.attribution(entity_id="e", process_id="p1"):
        hmem.add_messages([{"role": "user", "content": "apples early", "timestamp": "2024-01-01"}])
    with hmem.attribution(entity_id="e", process_id="p2"):
        hmem.new_session()
        hmem.add_messages([{"role": "user", "content": "apples late", "timestamp": "2024-09-01"}])
    hmem.augment()
    assert [h.content for h in hmem.recall("apples", entity_id="e", process_id="p2")] == [
        "apples late"
    ]
    assert [h.content for h in hmem.recall("apples", entity_id="e", until="2024-06-01")] == [
        "apples early"
    ]


async def _arecall(mem: Memori) -> list[str]:
    return [h.content for h in await mem.arecall("lanterns")]


def test_async_recall(hmem: Memori) -> None:
    import asyncio

    hmem.add_messages([{"role": "user", "content": "paper lanterns"}])
    assert asyncio.run(_arecall(hmem)) == ["paper lanterns"]


def test_embedding_text_is_own_words_then_the_previous_turn(hmem: Memori) -> None:
    from memori_cli.augment.embedding import embedding_text

    hmem.add_messages([
        {"role": "user", "content": "Do you have pets?", "name": "Ann"},
        {"role": "assistant", "content": "Yes, two cats."},
    ])  # fmt: skip
    first, second = vectors.pending(hmem.store)
    assert embedding_text(first) == "Ann: Do you have pets?"
    assert embedding_text(second) == "assistant: Yes, two cats.\nAnn: Do you have pets?"
    assert np.asarray(HashingEmbedder().embed([embedding_text(second)])).shape == (1, 64)


def test_a_long_assistant_reply_is_embedded_from_its_opening(hmem: Memori) -> None:
    """Long replies are most of what a chat store embeds: their vector is their first words,
    while bm25 still finds a word from anywhere in them."""
    from memori_cli.augment.embedding import ASSISTANT_WORDS, embedding_text

    reply = (
        "Lisbon has great food. "
        + "Here is more detail. " * 20
        + "Try the pasteis. "
        + ("More detail. " * 20)
    )
    hmem.add_messages([
        {"role": "user", "content": "Where should I eat in Lisbon? " * 30},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Thanks! " + "And what about the museums there? " * 20},
    ])  # fmt: skip
    question, answer, thanks = vectors.pending(hmem.store)
    assert embedding_text(answer) == " ".join(f"assistant: {reply}".split()[:ASSISTANT_WORDS])
    assert embedding_text(answer).startswith("assistant: Lisbon has great food.")
    # A user's turn is not cut (the encoder reads its first 128 word pieces).
    assert len(embedding_text(thanks).split()) > ASSISTANT_WORDS
    assert embedding_text(question) == f"user: {'Where should I eat in Lisbon? ' * 30}"
    hmem.augment()
    assert hmem.recall("pasteis", 1, memories=False)[0].content == reply


def test_a_long_previous_turn_does_not_push_out_a_turns_own_words(hmem: Memori) -> None:
    """The encoder reads a text's first MAX_TOKENS word pieces: a user's line after a long
    assistant reply must still be what its vector holds."""
    from memori_cli.augment.embedding import embedding_text
    from memori_cli.embed import minilm_folder
    from memori_cli.embed.bert import BertEncoder
    from memori_cli.embed.wordpiece import WordPiece

    hmem.add_messages([
        {"role": "assistant", "content": "Here is a long list of ideas. " * 60},
        {"role": "user", "content": "By the way, I adopted a greyhound called Biscuit."},
    ])  # fmt: skip
    _, reply = vectors.pending(hmem.store)
    folder = minilm_folder()
    if folder is None:
        pytest.skip("no MiniLM weights")
    tokenizer = WordPiece(folder / "vocab.txt")
    kept = tokenizer.encode(embedding_text(reply), BertEncoder.MAX_TOKENS)
    own = tokenizer.encode("user: By the way, I adopted a greyhound called Biscuit.", 10_000)
    assert kept[: len(own) - 1] == own[:-1]  # all of the user's words, [SEP] aside


def test_a_question_about_the_assistants_words_finds_the_assistants_turn(hmem: Memori) -> None:
    from memori_cli.recall.hybrid import asks_assistant

    hmem.add_messages([
        {"role": "user", "content": "I use a flashcard app with mnemonics for Spanish words."},
        {"role": "assistant", "content": "Another flashcard app with mnemonics is Memrise."},
    ])  # fmt: skip
    hmem.augment()
    asked = "Which flashcard app with mnemonics did you recommend?"
    assert asks_assistant(asked) and asks_assistant("Can you repeat your recommendation?")
    assert not asks_assistant("Which flashcard app with mnemonics do I use?")
    assert not asks_assistant("Did you know I like mnemonics?")
    # Asking to be reminded is asking what one was told, unless one says one said it.
    assert asks_assistant("I'm going back there: can you remind me of that flashcard app?")
    assert not asks_assistant("Do you remember the flashcard app I mentioned?")
    assert not asks_assistant("Can you remind me where I moved from? You know it.")
    assert not asks_assistant("Do you remember my sister's name?")
    assert hmem.recall(asked, 1, memories=False)[0].role == "assistant"
    remind = "Can you remind me of that flashcard app with mnemonics?"
    assert hmem.recall(remind, 1, memories=False)[0].role == "assistant"
    assert hmem.recall("Which flashcard app with mnemonics do I use?", 1)[0].role == "user"


def test_a_first_person_question_finds_the_users_own_turn_not_the_echo(hmem: Memori) -> None:
    """What the user said of themselves beats the assistant's reply repeating it."""
    from memori_cli.recall.hybrid import asked_roles

    hmem.add_messages([
        {"role": "user", "content": "I finished Celeste on my Switch in 10 hours."},
        {"role": "assistant", "content": "Celeste in 10 hours on the Switch! Celeste hours well "
                                         "spent: Celeste rewards every hour."},
    ])  # fmt: skip
    hmem.augment()
    assert asked_roles("How many hours did I spend on Celeste?") == {"user"}
    assert asked_roles("What did you recommend after Celeste?") == {"assistant"}
    assert asked_roles("How many hours does Celeste take?") == set()
    assert hmem.recall("How many hours did I spend on Celeste?", 1, memories=False)[0].role == (
        "user"
    )
    # Asked in the third person, the reply with more of the words comes first.
    assert hmem.recall("How many hours is Celeste?", 1, memories=False)[0].role == "assistant"


def test_one_hit_does_not_crowd_out_hits_in_other_sessions(hmem: Memori) -> None:
    """Neighbour spreading is off by default: the turns around one strong hit do not take the
    places of matching turns in other sessions (LongMemEval's multi-session questions)."""
    import dataclasses

    weak = "we talked about the weather, the garden, the dog, the kids and my kayak trip"
    for session, fact in (("s1", "I bought a kayak, kayak kayak"), ("s2", weak)):
        hmem.set_session(session)
        hmem.add_messages([
            {"role": "assistant", "content": "Anything new?"},
            {"role": "user", "content": fact},
            {"role": "assistant", "content": "Nice, tell me more."},
        ])  # fmt: skip
    hmem.augment()
    top = hmem.recall("kayak", 6, memories=False, explain=True)
    # Both sessions' mentions lead; the one other turn among them is the reply to the strong
    # hit, found by its own index context (the end of the turn it answers), not lifted by it.
    assert sorted(h.session for h in top[:3] if h.role == "user") == ["s1", "s2"]
    assert [h.content for h in top[:3] if h.role == "assistant"] == ["Nice, tell me more."]
    assert [h.content for h in top[-2:]] == ["Anything new?"] * 2
    assert not any("neighbour" in (h.explain or {}) for h in top)
    # With spreading on, every turn around a hit is lifted by it, matching or not.
    hmem.config.ranking = dataclasses.replace(hmem.config.ranking, neighbour_weight=0.5)
    spread = hmem.recall("kayak", 6, memories=False, explain=True)
    assert all("neighbour" in (h.explain or {}) for h in spread if h.role == "assistant")
    openers = [h.score for h in top if h.content == "Anything new?"]
    assert min(h.score for h in spread if h.content == "Anything new?") > max(openers)


def test_without_an_embedding_model_recall_is_lexical_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    import memori_cli.embed as embed

    monkeypatch.setattr(embed, "minilm_folder", lambda: None)
    embed.load.cache_clear()
    try:
        mem = Memori(conn=tmp_path / "n.db")
        mem.add_messages([{"role": "user", "content": "otters hold hands"}])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert [h.content for h in mem.recall("otters")] == ["otters hold hands"]
            assert [h.content for h in mem.recall("otters hands")] == ["otters hold hands"]
        assert [str(w.message) for w in caught if w.category is RecallWarning] == [
            embed.HOW_TO_GET_MINILM
        ]
        # augment is no error without a model: the jobs run, vectors are left for later
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert mem.augment().embedded == 0
        assert caught == []  # recall already said it (once per Memori)
    finally:
        embed.load.cache_clear()


def test_neighbours_are_held_to_the_filters(hmem: Memori) -> None:
    import dataclasses

    hmem.config.ranking = dataclasses.replace(hmem.config.ranking, neighbour_weight=0.5)
    hmem.add_messages([
        {"role": "user", "content": "what did the vet say?", "timestamp": "2024-01-01T10:00:00"},
        {"role": "assistant", "content": "all healthy", "timestamp": "2024-01-01T10:01:00"},
        {"role": "user", "content": "the vet visit went well", "timestamp": "2024-03-01T10:00:00"},
    ])  # fmt: skip
    everything = [h.content for h in hmem.recall("vet", explain=True)]
    assert "all healthy" in everything  # reached as the question's neighbour
    early = [h.content for h in hmem.recall("vet", until="2024-01-01T10:00:30+00:00")]
    assert early == ["what did the vet say?"]
    late = [h.content for h in hmem.recall("vet", since="2024-02-01T00:00:00+00:00")]
    assert late == ["the vet visit went well"]


def test_the_asked_roles_turn_outranks_an_echo_twice_as_strong() -> None:
    """In a user/assistant chat the other role's turns mostly echo the asked one's: the
    asked role's weight (role_weight) outweighs an echo that matched twice as well, which a
    named speaker's weight (speaker_weight) does not."""
    fused = {1: {"fused": 0.1}, 2: {"fused": 0.2}}
    rows = {1: dict(row(1), role="user"), 2: dict(row(2, trust=0.6), role="assistant")}
    config = RankingConfig()
    assert config.role_weight > config.speaker_weight
    ranked = rank(fused, rows, config, roles={"user"}, now=NOW)
    assert [r[0] for r in ranked] == [1, 2]
    assert ranked[0][1] == pytest.approx(0.1 * (1 + config.role_weight))
    as_speaker = dataclasses.replace(config, role_weight=config.speaker_weight)
    assert rank(fused, rows, as_speaker, roles={"user"}, now=NOW)[0][0] == 2
    # Not asked about a role: the better match wins.
    assert rank(fused, rows, config, now=NOW)[0][0] == 2


def test_a_memory_about_the_user_counts_as_about_the_asked_speaker(hmem: Memori) -> None:
    hmem.add_messages([{"role": "user", "content": "Planning the week."}])
    mine = hmem.add_memory("User prefers oolong tea in the morning", kind="preference")
    hmem.add_memory("Oolong tea in the morning suits most people", about="Tea")
    hits = {h.id: h for h in hmem.recall("What tea do I like?", 5, explain=True)
            if h.kind != "message"}  # fmt: skip
    assert {hit.explain["speaker_match"] for hit in hits.values() if hit.explain} == {True, False}
    assert hits[mine].explain is not None and hits[mine].explain["speaker_match"] is True
    assert next(iter(hits)) == mine  # equal words otherwise
    # A user with a name: memories about that name are the user's.
    hmem.add_messages([{"role": "user", "name": "Maya", "content": "Hi, I'm Maya."}])
    hers = hmem.add_memory("Maya prefers green tea", kind="preference", about="Maya")
    found = {
        h.id: h for h in hmem.recall("What tea do I like?", 5, explain=True) if h.kind != "message"
    }
    assert found[hers].explain is not None and found[hers].explain["speaker_match"] is True


def test_the_embedder_reads_named_speakers_as_pronouns(tmp_path: Path) -> None:
    """Every turn's vector holds the speakers' names, so recall embeds a question with the
    speakers it names as "they"/"their"; bm25 and the speaker weight still see the names."""
    from memori_cli.recall.hybrid import dense_query

    assert dense_query("What did Melanie paint?", {"Melanie"}) == "What did they paint?"
    assert dense_query("Where did Jon and Gina meet?", {"Jon", "Gina"}) == "Where did they meet?"
    assert (
        dense_query("What do Maya Chen's kids like, Maya?", {"Maya Chen"})
        == "What do their kids like, they?"
    )
    assert dense_query("What did Lena say?", {"Melanie"}) == "What did Lena say?"

    seen: list[str] = []

    class Recording(HashingEmbedder):
        def embed(self, texts: Sequence[str]) -> Any:
            seen.extend(texts)
            return super().embed(texts)

    mem = Memori(conn=tmp_path / "r.db", embedder=Recording())
    mem.add_messages([
        {"role": "user", "name": "Melanie", "content": "I went swimming with the kids."},
        {"role": "user", "name": "Caroline", "content": "Wow Melanie, Melanie, lovely!"},
    ])  # fmt: skip
    mem.augment()
    seen.clear()
    hits = mem.recall("What did Melanie do with Melanie's kids?", 1, memories=False)
    assert seen == ["What did they do with their kids?"]
    assert hits[0].name == "Melanie"
    # With one named speaker (a named user, an unnamed assistant) the name is kept.
    alone = Memori(conn=tmp_path / "one.db", embedder=Recording())
    alone.add_messages([
        {"role": "user", "name": "Maya", "content": "Hi! I'm Maya Chen, I just moved to Lisbon."},
        {"role": "assistant", "content": "Welcome to Lisbon!"},
    ])  # fmt: skip
    alone.augment()
    seen.clear()
    alone.recall("Where does Maya live?", 1, memories=False)
    assert seen == ["Where does Maya live?"]
