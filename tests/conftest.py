"""Shared fixtures: every test gets its own MEMORI_HOME, so nothing touches a real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memori_cli import Memori


@pytest.fixture(autouse=True)
def memori_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MEMORI_HOME", str(home))
    monkeypatch.delenv("MEMORI_ENTITY", raising=False)
    monkeypatch.delenv("MEMORI_DB", raising=False)
    return home


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memori]:
    memori = Memori(conn=tmp_path / "memori.db")
    yield memori
    memori.close()


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write ``records`` as JSONL (strings are written as raw lines)."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record if isinstance(record, str) else json.dumps(record))
            handle.write("\n")
    return path


class HashingEmbedder:
    """A small deterministic embedder for tests: words hashed into ``dim`` buckets."""

    def __init__(self, name: str = "hashing-test", dim: int = 64):
        self.name = name
        self.dim = dim

    def embed(self, texts: list[str]) -> Any:
        import hashlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                word = word.strip(".,!?:;'\"")
                bucket = int(hashlib.md5(f"{self.name}{word}".encode()).hexdigest(), 16) % self.dim
                out[row, bucket] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
        return out
