"""A message is indexed with the end of the turn before it (messages.context), so a reply is
found by the words of what it answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HashingEmbedder, store_before

from memori_cli import Memori
from memori_cli.errors import PermissionsWarning
from memori_cli.store.reply import CONTEXT_CHARS, CONTEXT_WORDS, reply_context

TALK = [
    {"role": "user", "name": "Melanie", "content": "How was the charity race last weekend?"},
    {"role": "user", "name": "Caroline", "content": "Great! We raised a lot for the shelter."},
    {"role": "user", "name": "Melanie", "content": "Amazing. What did the charity race teach you?"},
    {"role": "user", "name": "Caroline", "content": "It taught me self-acceptance."},
    {"role": "user", "name": "Melanie", "content": "I went hiking with the kids instead."},
]


def _contexts(mem: Memori) -> list[tuple[str, str | None]]:
    return list(mem.store.conn.execute("SELECT content, context FROM messages ORDER BY id"))


@pytest.mark.parametrize("embedder", [None, HashingEmbedder()], ids=["lexical", "hybrid"])
def test_a_reply_is_found_by_the_words_of_the_turn_it_answers(
    tmp_path: Path, embedder: HashingEmbedder | None
) -> None:
    mem = Memori(conn=tmp_path / "r.db", embedder=embedder)
    mem.add_messages(TALK)
    mem.augment()
    hits = mem.recall("What did Caroline learn from the charity race?", 3, memories=False,
                      explain=True)  # fmt: skip
    # The answer shares no word with the question ("learn" is not "taught"); the turn it
    # answers does, and the question names Caroline, who gave the answer.
    assert hits[0].content == "It taught me self-acceptance."
    assert hits[0].explain is not None and hits[0].explain["lexical_rank"] is not None
    mem.close()


def test_the_context_is_the_end_of_the_previous_turn_of_the_same_session(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "r.db")
    long_turn = " ".join(f"w{i}" for i in range(100))
    mem.set_session("one")
    mem.add_messages(
        [{"role": "user", "content": long_turn}, {"role": "assistant", "content": "ok"}]
    )
    mem.set_session("two")
    mem.add_messages([{"role": "user", "content": "a new thread"}])
    mem.set_session("one")
    mem.add_messages([{"role": "user", "content": "later, in a second batch"}])
    assert _contexts(mem) == [
        (long_turn, None),  # a session's first turn has none
        ("ok", " ".join(f"w{i}" for i in range(100 - CONTEXT_WORDS, 100))),
        ("a new thread", None),  # never the end of another session
        ("later, in a second batch", "ok"),  # the stored predecessor, across batches
    ]
    assert reply_context("  spaced \n out  ") == "spaced out"
    # A blob with no spaces is not stored twice: at most CONTEXT_CHARS of it, whole words kept.
    assert reply_context("x" * 100_000) == "x" * CONTEXT_CHARS
    assert reply_context("start " + "y" * 500 + " short end") == "short end"
    # The context is searched, below the message's own words; only its last words count.
    assert [h.content for h in mem.recall("w99", 5, memories=False)] == [long_turn, "ok"]
    assert [h.content for h in mem.recall("w0", 5, memories=False)] == [long_turn]
    mem.close()


def test_a_store_from_before_contexts_gets_them_and_a_rebuilt_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = store_before(path, "m009_reply_context")
    # Rows as the release before contexts wrote them (no context column yet).
    now = "2026-01-01T00:00:00+00:00"
    raw.execute("INSERT INTO entities (id, created_at) VALUES ('ana', ?)", (now,))
    for session, name in ((1, "s1"), (2, "s2")):
        raw.execute(
            "INSERT INTO sessions (id, entity_id, name, created_at) VALUES (?, 'ana', ?, ?)",
            (session, name, now),
        )
    for session, content in ((1, "Where did you grow up?"), (2, "Unrelated."), (1, "Porto.")):
        raw.execute(
            """INSERT INTO messages (entity_id, session_id, role, content, created_at,
                   content_hash, trust, source)
               VALUES ('ana', ?, 'user', ?, ?, ?, 1.0, 'import')""",
            (session, content, now, content),
        )
    raw.close()
    mem = Memori(conn=path)
    with pytest.warns(PermissionsWarning, match="tightened"):  # made 0644 by plain sqlean
        assert _contexts(mem) == [  # opening migrates
            ("Where did you grow up?", None),
            ("Unrelated.", None),
            ("Porto.", "Where did you grow up?"),
        ]
    assert [h.content for h in mem.recall("grow", 2, memories=False, entity_id="ana")] == [
        "Where did you grow up?",
        "Porto.",
    ]
    # The rebuilt index agrees with its rows (FTS5 raises if it does not).
    mem.store.conn.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
    )
    mem.close()
