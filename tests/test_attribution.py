"""Attribution: validated ids, and per-thread / per-task values that never cross over."""

from __future__ import annotations

import asyncio
import threading

import pytest

from memori_cli import InvalidIdError, Memori
from memori_cli.attribution import validate_id


@pytest.mark.parametrize(
    "bad, reason",
    [("", "empty"), ("   ", "empty"), ("x" * 201, "200"), ("a\nb", "control"),
     ("a\x00b", "control"), ("\x1b[31m", "control"), (42, "string"), ("\ud800", "surrogate")],
)  # fmt: skip
def test_bad_ids_are_rejected_with_the_reason(bad: object, reason: str) -> None:
    with pytest.raises(InvalidIdError, match=reason):
        validate_id(bad, "entity_id")


@pytest.mark.parametrize("good", ["alice", "x" * 200, "Robert'); DROP TABLE messages;--", "ünï 🙂"])
def test_odd_but_valid_ids_are_plain_data(mem: Memori, good: str) -> None:
    with mem.attribution(entity_id=good):
        mem.add_messages([{"role": "user", "content": "marker text"}])
    assert [h.entity for h in mem.recall("marker", entity_id=good)] == [good]
    assert mem.stats()["messages"] == 1


def test_switching_entities_on_one_memori(mem: Memori) -> None:
    mem.attribution(entity_id="alice")
    mem.add_messages([{"role": "user", "content": "my secret garden is in Kyoto"}])
    mem.attribution(entity_id="bob")
    mem.add_messages([{"role": "user", "content": "my secret garden is in Lima"}])
    assert [h.content for h in mem.recall("secret garden")] == ["my secret garden is in Lima"]
    mem.attribution(entity_id="alice")
    assert [h.content for h in mem.recall("secret garden")] == ["my secret garden is in Kyoto"]


def test_context_manager_restores_the_previous_attribution(mem: Memori) -> None:
    mem.attribution(entity_id="outer", process_id="bot")
    with mem.attribution(entity_id="inner"):
        assert mem.current.entity_id == "inner"
        assert mem.current.process_id == "bot"
    assert mem.current.entity_id == "outer"


def test_sessions_new_and_set(mem: Memori) -> None:
    mem.attribution(entity_id="alice")
    first = mem.new_session()
    mem.add_messages([{"role": "user", "content": "first thread"}])
    second = mem.new_session()
    assert first != second
    mem.add_messages([{"role": "user", "content": "second thread"}])
    mem.set_session(first)
    mem.add_messages([{"role": "user", "content": "back to the first"}])
    counts = {s["session"]: s["messages"] for s in mem.sessions("alice")}
    assert counts == {first: 2, second: 1}


def test_threads_never_see_each_others_attribution(mem: Memori) -> None:
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        entity = f"user-{n}"
        mem.attribution(entity_id=entity)
        barrier.wait()  # every thread has set its attribution before anyone writes
        for i in range(20):
            mem.add_messages([{"role": "user", "content": f"thread note {n} number {i}"}])
            for hit in mem.recall("thread note", limit=50):
                if hit.entity != entity or f"note {n} " not in hit.content:
                    errors.append(f"{entity} saw {hit.entity}: {hit.content}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(8):
        assert len(mem.recall("thread note", limit=100, entity_id=f"user-{n}")) == 20


def test_asyncio_tasks_never_see_each_others_attribution(mem: Memori) -> None:
    async def task(n: int) -> list[str]:
        mem.attribution(entity_id=f"task-{n}")
        await asyncio.sleep(0)  # let the other tasks set theirs
        mem.add_messages([{"role": "user", "content": f"async memo from task {n}"}])
        await asyncio.sleep(0)
        return [h.entity for h in mem.recall("async memo", limit=50)]

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(task(n) for n in range(10)))

    results = asyncio.run(main())
    assert results == [[f"task-{n}"] for n in range(10)]
