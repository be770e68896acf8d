"""Shared fixtures: every test gets its own MEMORI_HOME, so nothing touches a real store, and
the hashing embedder stands in for all-MiniLM-L6-v2 unless the test is marked ``real_model``."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from memori_cli import Memori, embed


@pytest.fixture(autouse=True)
def memori_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MEMORI_HOME", str(home))
    monkeypatch.delenv("MEMORI_ENTITY", raising=False)
    monkeypatch.delenv("MEMORI_DB", raising=False)
    return home


@pytest.fixture(autouse=True)
def default_embedder(
    request: pytest.FixtureRequest, memori_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process, ``minilm`` loads :class:`HashingEmbedder` unless the test is marked
    ``real_model``: most tests need some embedder, not MiniLM's judgement of meaning (measured
    on the in-process tests: 5% less CPU with onnxruntime, 11% on the numpy engine).

    Only the model is swapped: ``embed.load`` still runs (a missing MiniLM is still
    :class:`EmbeddingUnavailable`), with a cache of its own so no real model leaks in from an
    earlier test. ``memori`` subprocesses do not see this; they set
    ``MEMORI_EMBEDDING_MODEL=none`` where vectors do not matter, or load the real model.

    A ``real_model`` test fails if MiniLM is missing under ``MEMORI_REQUIRE_MODELS=1``
    (scripts/test installs it) and is skipped otherwise.
    """
    if request.node.get_closest_marker("real_model") is None:
        monkeypatch.setattr(embed, "MiniLMEmbedder", _HashingMiniLM)
        monkeypatch.setattr(embed, "load", functools.lru_cache(maxsize=8)(embed.load.__wrapped__))
    elif embed.minilm_folder() is None:
        if os.environ.get("MEMORI_REQUIRE_MODELS"):
            pytest.fail("all-MiniLM-L6-v2 is missing although scripts/test installs it")
        pytest.skip("all-MiniLM-L6-v2 not installed (scripts/test installs it)")


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


def store_before(path: Path, migration: str) -> Any:
    """A store at ``path`` migrated up to (not including) ``migration``, as an older release
    left it: an autocommit sqlean connection with sqlite-vec loaded, for the test to fill."""
    import sqlean
    import sqlite_vec

    from memori_cli.store.migrations import migrations

    raw = sqlean.connect(str(path), isolation_level=None)
    raw.enable_load_extension(True)
    sqlite_vec.load(raw)
    migrations.apply(raw, stop_before=migration)
    return raw


class HashingEmbedder:
    """A small deterministic embedder for tests: words hashed into ``dim`` buckets."""

    def __init__(self, name: str = "hashing-test", dim: int = 64):
        self.name = name
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Any:
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


class _HashingMiniLM(HashingEmbedder):
    """Takes :class:`memori_cli.embed.MiniLMEmbedder`'s arguments, embeds by hashing."""

    engine = "hashing"

    def __init__(self, folder: Path, *, max_tokens: int | None = None, engine: str = "auto"):
        super().__init__()


# -- PostgreSQL (scripts/test starts a throwaway server and sets MEMORI_TEST_POSTGRES) ----------
POSTGRES_ENV = "MEMORI_TEST_POSTGRES"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The DSN of the test PostgreSQL server's maintenance database (``MEMORI_TEST_POSTGRES``,
    which scripts/test sets after starting one with scripts/postgres); skips without it."""
    dsn = os.environ.get(POSTGRES_ENV)
    if not dsn:
        pytest.skip(
            f"no PostgreSQL server for the tests: {POSTGRES_ENV} is not set "
            "(scripts/test starts one with scripts/postgres)"
        )
    try:
        import psycopg
    except ImportError:
        pytest.fail(f"{POSTGRES_ENV} is set but psycopg is missing: pip install -e '.[postgres]'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
    return dsn


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database on the test server (its conninfo), dropped afterwards."""
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"memori_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
    try:
        yield make_conninfo(postgres_server, dbname=name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_store_url(postgres_url: str) -> str:
    """The test's new PostgreSQL database as the ``postgresql://`` URL ``Memori(conn=...)``,
    ``--db`` and ``MEMORI_DB`` take (``postgres_url`` is a libpq conninfo string)."""
    import urllib.parse

    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(postgres_url).items()}
    dbname = urllib.parse.quote(params.pop("dbname"), safe="")
    return f"postgresql:///{dbname}?{urllib.parse.urlencode(params)}"
