"""Augmentation: rule extraction, dedup and supersession, the leased job queue."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import HashingEmbedder

from memori_cli import Memori
from memori_cli.augment.extract import Extraction, MemoryDraft, Turn
from memori_cli.augment.pipeline import Pipeline
from memori_cli.augment.rules import RuleExtractor
from memori_cli.store import jobs


def turn(content: str, *, at: str = "2024-05-08T10:00:00+00:00", name: str | None = "Ana") -> Turn:
    return Turn(id=1, role="user", content=content, created_at=at, name=name)


def contents(extraction: Extraction) -> set[str]:
    return {m.content for m in extraction.memories}


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("My name is Ana Silva.", "Ana's name is Ana Silva", "attribute"),
        ("I live in New York with two cats.", "Ana lives in New York", "fact"),
        ("I just moved to Berlin from Paris.", "Ana lives in Berlin", "fact"),
        ("I just moved to Berlin from Paris.", "Ana previously lived in Paris", "attribute"),
        ("I work at Acme Corp as a tester.", "Ana works at Acme Corp", "fact"),
        ("I'm a nurse at St Mary Hospital.", "Ana is a nurse", "attribute"),
        ("I really love hiking in the Alps.", "Ana likes hiking in the Alps", "preference"),
        ("I hate cold coffee, honestly.", "Ana dislikes cold coffee", "preference"),
        ("My favourite band is Radiohead.", "Ana's favourite band is Radiohead", "preference"),
        ("I'm learning Japanese.", "Ana is learning Japanese", "skill"),
        ("I can play the guitar and sing.", "Ana can play the guitar", "skill"),
        ("My sister Lena lives far away.", "Ana's sister is Lena", "fact"),
        ("I have a dog named Rex.", "Ana's dog is Rex", "fact"),
        ("I'm 34 years old.", "Ana is 34 years old", "attribute"),
        ("I'm vegetarian.", "Ana is vegetarian", "attribute"),
        ("I'm allergic to peanuts.", "Ana is allergic to peanuts", "attribute"),
        (
            "I went to the support group yesterday.",
            "Ana went to the support group on 2024-05-07",
            "event",
        ),
    ],
)
def test_rule_extractor_finds_first_person_statements(text: str, expected: str, kind: str) -> None:
    found = RuleExtractor().extract([turn(text)])
    assert expected in contents(found)
    assert next(m for m in found.memories if m.content == expected).kind == kind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A dash starts a new clause: the object ends before it.
        ("I took the kids to the museum - it was so cool!", {"Ana took the kids to the museum"}),
        ("I love pottery - the creativity is awesome.", {"Ana likes pottery"}),
        # No object once the time words are out, or one that says nothing by itself, or the
        # listener's: no memory.
        ("It helps with the stuff I'm going through.", set()),
        ("These figurines I bought yesterday remind me of family love.", set()),
        ("I painted it last week.", set()),
        ("I like how you tell your stories.", set()),
        ("This is the parade I went to a few weeks ago.", set()),
        ("The thing I like is awesome.", set()),
        ("I love these ideas!", set()),
        ("I started about a month ago.", set()),
        ("The mug I bought at the museum gift shop broke.", set()),
        # A verb with its preposition keeps what follows it.
        ("I ran into an old friend.", {"Ana ran into an old friend"}),
        # A plan in the speaker's own words.
        ("I'm going to a pride parade next month.", {"Ana is going to a pride parade next month"}),
        ("I'm planning to move to Porto.", {"Ana is planning to move to Porto"}),
        # "that" as a determiner is kept.
        (
            "I painted that lake sunrise last year.",
            {"Ana painted that lake sunrise around 2023-05-09"},
        ),
    ],
)
def test_rule_extractor_keeps_only_objects_that_say_something(
    text: str, expected: set[str]
) -> None:
    assert contents(RuleExtractor().extract([turn(text)])) == expected


def test_rule_extractor_skips_questions_assistants_and_negations() -> None:
    extractor = RuleExtractor()
    assert extractor.extract([turn("Do I live in Paris?")]).memories == []
    assistant = Turn(
        id=2, role="assistant", content="I live in the cloud.", created_at="2024-01-01"
    )
    assert extractor.extract([assistant]).memories == []
    assert extractor.extract([turn("I no longer live in Lisbon.")]).memories == []
    unnamed = extractor.extract([turn("I live in Oslo.", name=None)])
    assert contents(unnamed) == {"User lives in Oslo"}


def test_rule_extractor_makes_typed_triples_and_a_summary() -> None:
    found = RuleExtractor().extract([turn("I live in Oslo. I work at Equinor.")])
    triples = {(t.subject, t.predicate, t.object, t.object_type) for t in found.triples}
    assert ("Ana", "lives_in", "Oslo", "place") in triples
    assert ("Ana", "works_at", "Equinor", "organization") in triples
    assert found.summary is not None and "- Ana lives in Oslo" in found.summary


def say(mem: Memori, text: str, at: str, session: str | None = None) -> None:
    if session:
        mem.set_session(session)
    mem.add_messages([{"role": "user", "content": text, "name": "Ana", "timestamp": at}])


def test_repeated_fact_merges_and_raises_count(mem: Memori) -> None:
    say(mem, "I live in Oslo.", "2024-01-01T00:00:00Z", "a")
    say(mem, "Honestly, I live in Oslo!", "2024-02-01T00:00:00Z", "b")
    report = mem.augment()
    assert (report.memories_created, report.memories_merged) == (1, 1)
    (memory,) = mem.memories(kind="fact")
    assert memory["count"] == 2
    assert memory["first_seen"].startswith("2024-01-01")
    assert memory["last_seen"].startswith("2024-02-01")
    assert len(mem.memory(memory["id"])["sources"]) == 2  # type: ignore[index]


class Echo:
    """Each user turn is one preference memory, word for word."""

    name = "echo@1"

    def extract(self, turns: list[Turn], **options: object) -> Extraction:
        return Extraction(
            memories=[MemoryDraft("preference", t.content, "Ana", [t.id]) for t in turns]
        )


def test_similar_memories_merge_by_embedding(tmp_path: Path) -> None:
    base = "Ana likes long walks on quiet beaches at sunset with a good book and tea"
    mem = Memori(conn=tmp_path / "m.db", embedder=HashingEmbedder(), extractor=Echo())
    say(mem, base, "2024-01-01T00:00:00Z", "a")
    mem.augment()
    say(mem, base + " too", "2024-02-01T00:00:00Z", "b")  # cosine 0.97: the same memory
    say(mem, "Ana likes loud concerts", "2024-03-01T00:00:00Z", "c")  # another one
    report = mem.augment()
    assert (report.memories_merged, report.memories_created) == (1, 1)
    counts = sorted(m["count"] for m in mem.memories(kind="preference"))
    assert counts == [1, 2]
    mem.close()


class DigitBlindEmbedder(HashingEmbedder):
    """Digits ignored: "Town0x" and "Town1x" get the same vector (cosine 1.0)."""

    def embed(self, texts: list[str]) -> Any:
        return super().embed([re.sub(r"\d", "", t) for t in texts])


def test_a_new_value_close_in_meaning_supersedes_instead_of_merging(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "m.db", embedder=DigitBlindEmbedder())
    for n in range(3):
        say(mem, f"I live in Town{n}x now.", f"2024-0{n + 1}-01T00:00:00Z", f"t{n}")
        mem.augment()
    assert [m["content"] for m in mem.memories(kind="fact")] == ["Ana lives in Town2x"]
    assert len(mem.memories(kind="fact", history=True)) == 3
    mem.close()


def test_contradiction_supersedes_and_keeps_history(mem: Memori) -> None:
    say(mem, "I live in Paris.", "2023-01-01T00:00:00Z", "a")
    say(mem, "I moved to Berlin last month.", "2024-06-01T00:00:00Z", "b")
    report = mem.augment()
    assert report.memories_superseded == 1
    current = [m["content"] for m in mem.memories(kind="fact")]
    assert current == ["Ana lives in Berlin"]
    then = [m["content"] for m in mem.memories(kind="fact", as_of="2023-06-01")]
    assert then == ["Ana lives in Paris"]
    paris = mem.memories(kind="fact", history=True)[-1]
    assert paris["content"] == "Ana lives in Paris"
    assert paris["valid_to"].startswith("2024-06-01") and paris["superseded_by"] is not None
    history = [m["content"] for m in mem.memory_history(paris["id"])]
    assert history == ["Ana lives in Paris", "Ana lives in Berlin"]
    # Recall shows the current memory by default, the old one as of then.
    now = [h.content for h in mem.recall("where does Ana live", 10) if h.kind == "fact"]
    assert now == ["Ana lives in Berlin"]
    past = mem.recall("where does Ana live", 10, as_of="2023-06-01")
    assert [h.content for h in past if h.kind == "fact"] == ["Ana lives in Paris"]
    assert all(h.created_at < "2023-06-02" for h in past)


def test_late_arriving_old_statement_goes_into_history(mem: Memori) -> None:
    say(mem, "I live in Berlin.", "2024-06-01T00:00:00Z", "new")
    mem.augment()
    say(mem, "I live in Paris.", "2023-01-01T00:00:00Z", "old")  # imported history, later
    mem.augment()
    assert [m["content"] for m in mem.memories(kind="fact")] == ["Ana lives in Berlin"]
    assert [m["content"] for m in mem.memories(kind="fact", as_of="2023-03-01")] == [
        "Ana lives in Paris"
    ]


def test_forget_memory_removes_it_from_fts_and_vectors(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "m.db", embedder=HashingEmbedder())
    say(mem, "I love Quokkaberry pie.", "2024-01-01T00:00:00Z", "a")
    mem.augment()
    (memory,) = mem.memories()
    conn = mem.store.conn
    assert conn.execute("SELECT count(*) FROM vec_memories").fetchone()[0] == 1
    assert mem.forget_memory(memory["id"]) and not mem.forget_memory(memory["id"])
    assert conn.execute("SELECT count(*) FROM vec_memories").fetchone()[0] == 0
    fts = "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'quokkaberry'"
    assert conn.execute(fts).fetchone()[0] == 0
    assert [h.kind for h in mem.recall("Quokkaberry pie")] == ["message"]
    mem.close()


def test_rerunning_a_job_changes_nothing(mem: Memori) -> None:
    say(mem, "I live in Oslo. I love skiing.", "2024-01-01T00:00:00Z", "a")
    mem.augment()
    before = mem.memories(history=True)
    # Requeue the finished job as if a crash had lost its completion.
    with mem.store.write() as conn:
        conn.execute("UPDATE jobs SET status = 'pending', finished_at = NULL")
    mem.augment()
    after = mem.memories(history=True)
    assert [(m["id"], m["count"]) for m in after] == [(m["id"], m["count"]) for m in before]
    assert mem.store.conn.execute("SELECT count(*) FROM triples").fetchone()[0] == 2


def test_lease_is_exclusive_and_expired_lease_is_reclaimed(mem: Memori) -> None:
    say(mem, "I live in Oslo.", "2024-01-01T00:00:00Z", "a")
    (job,) = jobs.claim(mem.store, "worker-a", lease=0.2)
    assert jobs.claim(mem.store, "worker-b") == []
    time.sleep(0.3)
    (again,) = jobs.claim(mem.store, "worker-b")
    assert again.id == job.id and again.attempts == 2
    # The first worker wakes up and tries to commit: its results are refused, nothing lands.
    pipeline = Pipeline(mem.store, RuleExtractor(), owner="worker-a")
    report = pipeline.drain()
    assert report.jobs_done == 0
    pipeline.run(job, report)
    assert mem.memories() == []
    Pipeline(mem.store, RuleExtractor(), owner="worker-b").run(again, report)
    assert [m["content"] for m in mem.memories()] == ["Ana lives in Oslo"]


def test_forget_while_a_job_is_in_flight_leaves_nothing(mem: Memori) -> None:
    with mem.attribution(entity_id="gone"):
        say(mem, "I live in Tromso.", "2024-01-01T00:00:00Z", "a")
    (job,) = jobs.claim(mem.store, "worker")
    mem.forget("gone")  # between the claim and the commit
    report = Pipeline(mem.store, RuleExtractor(), owner="worker").drain()
    Pipeline(mem.store, RuleExtractor(), owner="worker").run(job, report)
    conn = mem.store.conn
    for table in ("memories", "triples", "messages", "jobs", "session_summaries"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


class Exploding:
    name = "exploding@1"

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, turns: list[Turn], **options: object) -> Extraction:
        self.calls += 1
        raise RuntimeError("disk on fire")


def test_failures_back_off_then_park_and_retry_requeues(mem: Memori) -> None:
    say(mem, "I live in Oslo.", "2024-01-01T00:00:00Z", "a")
    extractor = Exploding()
    pipeline = Pipeline(mem.store, extractor)
    report = pipeline.drain()
    assert (report.jobs_retrying, extractor.calls) == (1, 1)
    (row,) = mem.jobs()
    assert row["status"] == "pending" and "disk on fire" in row["error"]
    assert pipeline.drain().jobs_retrying == 0  # backing off: not due yet
    for _ in range(jobs.MAX_ATTEMPTS):
        with mem.store.write() as conn:
            conn.execute("UPDATE jobs SET run_after = 0")
        pipeline.drain()
    (row,) = mem.jobs()
    assert row["status"] == "failed" and row["attempts"] == jobs.MAX_ATTEMPTS
    assert extractor.calls == jobs.MAX_ATTEMPTS
    assert mem.retry_jobs() == 1
    assert mem.augment().jobs_done == 1
    assert [m["content"] for m in mem.memories()] == ["Ana lives in Oslo"]


def test_a_worker_that_keeps_dying_parks_the_job(mem: Memori) -> None:
    say(mem, "I live in Oslo.", "2024-01-01T00:00:00Z", "a")
    for n in range(jobs.MAX_ATTEMPTS):
        assert len(jobs.claim(mem.store, f"doomed-{n}", lease=0.0)) == 1
        time.sleep(0.01)
    assert jobs.claim(mem.store, "next") == []
    (row,) = mem.jobs(status="failed")
    assert "stopped before finishing" in row["error"]


def test_done_jobs_are_pruned(mem: Memori) -> None:
    say(mem, "I live in Oslo.", "2024-01-01T00:00:00Z", "a")
    mem.augment()
    assert jobs.depth(mem.store)["done"] == 1
    assert jobs.prune(mem.store, older_than=0) == 1
    assert jobs.depth(mem.store)["done"] == 0


def test_memories_stay_inside_their_entity(mem: Memori) -> None:
    with mem.attribution(entity_id="alice"):
        say(mem, "I live in Zurich.", "2024-01-01T00:00:00Z", "a")
    with mem.attribution(entity_id="bob"):
        say(mem, "I live in Zurich too.", "2024-01-01T00:00:00Z", "a")
    mem.augment()
    alice = mem.memories("alice")
    assert [m["entity_id"] for m in alice] == ["alice"]
    hits = mem.recall("Zurich", entity_id="bob")
    assert hits and {h.entity for h in hits} == {"bob"}


def test_memory_drafts_without_surviving_sources_are_skipped(mem: Memori) -> None:
    class Ghostly:
        name = "ghost@1"

        def extract(self, turns: list[Turn], **options: object) -> Extraction:
            return Extraction(memories=[MemoryDraft("fact", "Ana is a ghost", "Ana", [99999])])

    say(mem, "hello", "2024-01-01T00:00:00Z", "a")
    assert Pipeline(mem.store, Ghostly()).drain().jobs_done == 1
    assert mem.memories() == []
