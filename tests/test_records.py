"""Records: what the store gives back is typed, and still reads like the dicts of before."""

from __future__ import annotations

import dataclasses
import json

import pytest

from memori_cli import Memori
from memori_cli.parts import Edge, EntityInfo, JobInfo, Memory, Node, Record, Session

MEMORY_KEYS = [
    "id", "entity_id", "kind", "content", "about", "slot", "confidence", "trust",
    "extractor", "count", "uses", "first_seen", "last_seen", "valid_from", "valid_to",
    "superseded_by", "created_at", "session",
]  # fmt: skip


@pytest.fixture
def stocked(mem: Memori) -> Memori:
    mem.attribution(entity_id="maya", process_id="test")
    mem.add_messages([{"role": "user", "content": "I live in Lisbon and I love green tea"}])
    mem.augmentation.wait()
    return mem


def test_the_library_gives_records(stocked: Memori) -> None:
    memories = stocked.memories("maya")
    assert memories and all(isinstance(m, Memory) for m in memories)
    assert all(isinstance(s, Session) for s in stocked.sessions("maya"))
    assert all(isinstance(e, EntityInfo) for e in stocked.entities())
    assert all(isinstance(j, JobInfo) for j in stocked.jobs(status="done"))
    nodes, edges = stocked.graph.nodes(entity_id="maya"), stocked.graph.edges(entity_id="maya")
    assert nodes and all(isinstance(n, Node) for n in nodes)
    assert edges and all(isinstance(e, Edge) for e in edges)
    assert edges[0]["sources"] == edges[0].sources and isinstance(nodes[0].aliases, list)
    first = memories[0]
    assert first.content == first["content"] and first.get("nope", 7) == 7
    with pytest.raises(KeyError):
        first["nope"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.content = "changed"  # type: ignore[misc]


def test_a_listed_memory_has_no_sources_one_read_by_id_has_them(stocked: Memori) -> None:
    listed = stocked.memories("maya")[0]
    assert list(listed.to_dict()) == MEMORY_KEYS
    one = stocked.memory(listed.id, entity_id="maya")
    assert one is not None
    assert list(one.to_dict()) == [*MEMORY_KEYS, "sources", "source_ids"]
    assert one.sources and one.to_dict()["sources"] == one.sources == one["sources"]
    assert json.loads(json.dumps(one.to_dict()))["source_ids"] == list(one.source_ids or ())


def test_a_record_equals_the_dict_of_its_json_shape(stocked: Memori) -> None:
    graph = stocked.graph
    every = [*stocked.memories("maya"), *stocked.sessions(), *stocked.entities()]
    for record in [*every, *graph.nodes(entity_id="maya"), *graph.edges(entity_id="maya")]:
        assert isinstance(record, Record)
        shape = record.to_dict()
        assert record == shape and shape == record and dict(record) == {**record}
        assert record != {**shape, "extra": 1}
        assert {**record, "default": True}["default"] is True  # reads as a mapping
