"""The GGUF embedder runs a real llama.cpp model: a tiny random-weight BERT the test writes."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_bert_gguf

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("gguf") is None:
    if os.environ.get("MEMORI_REQUIRE_MODELS"):
        raise RuntimeError(
            "llama-cpp-python and gguf are missing although scripts/test installs them"
        )
    pytest.skip("needs the local extra (llama-cpp-python) and gguf", allow_module_level=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bert_gguf(tmp_path_factory.mktemp("gguf") / "tiny-bert.gguf")


def test_tiny_model_is_small(model: Path) -> None:
    assert model.stat().st_size < 300_000


def test_gguf_embeddings(model: Path) -> None:
    from memori_cli.embed.gguf import GGUFEmbedder

    embedder = GGUFEmbedder(model)
    assert embedder.dim == 32
    assert embedder.name.startswith("gguf:tiny-bert.gguf:")
    vectors = embedder.embed(["i live in berlin", "my cat likes food", "i live in berlin"])
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])


def test_text_longer_than_the_context_is_cut_not_fatal(model: Path) -> None:
    from memori_cli.embed.gguf import GGUFEmbedder

    embedder = GGUFEmbedder(model)
    (vector,) = embedder.embed(["the cat likes tea " * 400])  # far past 512 tokens
    assert np.isfinite(vector).all()


def test_gguf_model_chosen_in_config(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memori_cli import Memori

    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", str(model))
    mem = Memori(conn=tmp_path / "g.db")
    mem.add_messages([{"role": "user", "content": "my sister lives in paris"}])
    assert mem.augment().embedded == 1
    assert mem.store.conn.execute("SELECT model, dim FROM message_embeddings").fetchone() == (
        mem.embedder().name,  # type: ignore[union-attr]
        32,
    )
    assert mem.recall("sister paris", explain=True)[0].explain["vector_rank"] == 1  # type: ignore[index]


def test_missing_gguf_file_is_explained(tmp_path: Path) -> None:
    from memori_cli.embed import EmbeddingUnavailable
    from memori_cli.embed.gguf import GGUFEmbedder

    with pytest.raises(EmbeddingUnavailable, match="not found"):
        GGUFEmbedder(tmp_path / "absent.gguf")
