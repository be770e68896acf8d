"""LlamaCppExtractor on a real llama.cpp model: the tiny random-weight GGUF from scripts/."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from make_tiny_model import make_llama_gguf

from memori_cli import Memori
from memori_cli.augment.extract import KINDS, NODE_TYPES, ExtractionError, Turn
from memori_cli.augment.llm import ChatModel, LlamaCppExtractor, load_chat_model, schema

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llama_gguf(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


def turns(n: int = 3) -> list[Turn]:
    return [
        Turn(
            id=i + 1,
            role="user",
            content=f"I live in Lisbon and I like tea, day {i}.",
            created_at="2024-01-01T00:00:00+00:00",
            name="Maya",
        )
        for i in range(n)
    ]


def test_schema_bounds_every_string_and_array() -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string":
                assert "maxLength" in node
            if node.get("type") == "array":
                assert "maxItems" in node
            for value in node.values():
                walk(value)

    walk(schema(5, max_items=8, max_chars=160))


def test_real_llama_cpp_run_gives_schema_valid_memories(tiny_model: Path) -> None:
    extractor = LlamaCppExtractor(tiny_model, n_ctx=2048, max_items=2, max_chars=40, max_tokens=768)
    result = extractor.extract(turns(), summary="earlier: nothing")
    assert extractor.name.startswith("llm:tiny-llama.gguf@") and extractor.name.endswith("/p1")
    assert extractor.generated_tokens > 0
    for memory in result.memories:
        assert memory.kind in KINDS and memory.content
        assert len(memory.content) <= 40 and set(memory.source_ids) <= {1, 2, 3}
    for triple in result.triples:
        assert triple.subject_type in NODE_TYPES and triple.object_type in NODE_TYPES
    assert len(result.memories) <= 2 and len(result.triples) <= 2


def test_long_conversations_are_chunked_to_the_context(tiny_model: Path) -> None:
    model = load_chat_model(str(tiny_model), 2048)
    extractor = LlamaCppExtractor(model, max_items=1, max_chars=20, max_tokens=768)
    long = turns(40)
    chunks = list(extractor._chunks(long))
    assert len(chunks) > 1 and [t.id for c in chunks for t in c] == [t.id for t in long]
    calls = []
    extractor.extract(long, between=lambda: calls.append(1))
    assert len(calls) == len(chunks)


def test_one_model_is_never_used_by_two_threads_at_once(tiny_model: Path) -> None:
    model = load_chat_model(str(tiny_model), 2048)
    active, peak = [0], [0]
    real = model.llama.create_chat_completion

    def guarded(**kwargs: Any) -> Any:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            return real(**kwargs)
        finally:
            active[0] -= 1

    model.llama.create_chat_completion = guarded
    try:
        extractor = LlamaCppExtractor(model, max_items=1, max_chars=20, max_tokens=768)
        threads = [threading.Thread(target=extractor.extract, args=(turns(1),)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        model.llama.create_chat_completion = real
    assert peak[0] == 1


class Garbage:
    """A model that answers with text that is not JSON: the extractor must not crash."""

    def __init__(self) -> None:
        self.calls = 0

    def n_ctx(self) -> int:
        return 4096

    def tokenize(self, data: bytes, add_bos: bool = False) -> list[int]:
        return list(range(len(data) // 4 + 1))

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        return {
            "choices": [{"message": {"content": '{"memories": [ {"kind": "fa'}}],
            "usage": {"completion_tokens": 9},
        }


def test_malformed_output_is_retried_once_then_the_job_fails_with_it(tmp_path: Path) -> None:
    garbage = Garbage()
    extractor = LlamaCppExtractor(ChatModel(garbage, "garbage@0"))
    with pytest.raises(ExtractionError) as caught:
        extractor.extract(turns(1))
    assert garbage.calls == 2 and caught.value.raw.startswith('{"memories"')

    mem = Memori(conn=tmp_path / "m.db", extractor=extractor)
    mem.add_messages([{"role": "user", "content": "I live in Oslo."}])
    report = mem.augment()
    assert report.jobs_failed == 1
    (job,) = mem.jobs(status="failed")
    assert job["output"].startswith('{"memories"') and "not valid" in job["error"]
    mem.close()


def test_configured_model_extracts_through_the_store(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORI_CHAT_MODEL", str(tiny_model))
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    monkeypatch.setenv("MEMORI_EXTRACTORS", "model")
    mem = Memori(conn=tmp_path / "m.db")
    extractor = mem.extractor()
    assert isinstance(extractor, LlamaCppExtractor)
    extractor.max_items, extractor.max_chars, extractor.max_tokens = 2, 40, 768
    mem.add_messages([{"role": "user", "content": "I live in Lisbon.", "name": "Maya"}])
    report = mem.augment()
    assert report.jobs_done == 1 and report.jobs_failed == 0
    for memory in mem.memories(history=True):
        assert memory["extractor"] == extractor.name
    summary = mem.store.conn.execute("SELECT extractor FROM session_summaries").fetchall()
    assert summary in ([], [(extractor.name,)])
    json.dumps(mem.memories())  # JSON-ready rows
    mem.close()
