"""Any GGUF embedding model through llama-cpp-python (the ``local`` extra)."""

from __future__ import annotations

import atexit
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import gguf_file
from ..errors import EmbeddingUnavailable, ModelFileError

# llama.cpp aborts the whole process (no Python exception) when a batch exceeds the context,
# so n_ctx = n_batch and every text is cut to fit before it reaches the model.
_CONTEXT = 512


class GGUFEmbedder:
    """Embeddings from a GGUF model file; one llama.cpp context, used under a lock."""

    def __init__(self, path: Path):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EmbeddingUnavailable(
                "GGUF embedding models need llama-cpp-python: pip install 'memori-cli[local]' "
                "(it compiles from source and needs a C++ compiler and cmake)"
            ) from exc
        if not path.is_file():
            raise EmbeddingUnavailable(f"embedding model not found: {path}")
        try:
            gguf_file.check(path)  # a clear message, not llama.cpp's failure
        except ModelFileError as exc:
            raise EmbeddingUnavailable(f"embedding model unusable: {exc}") from None
        try:
            self._llama: Any = Llama(
                model_path=str(path), embedding=True, n_ctx=_CONTEXT, n_batch=_CONTEXT,
                n_ubatch=_CONTEXT, pooling_type=1, verbose=False,  # 1 = mean pooling
            )  # fmt: skip
        except (ValueError, OSError, RuntimeError) as exc:
            raise EmbeddingUnavailable(
                f"embedding model unusable: llama.cpp cannot load {path}: {exc}"
            ) from exc
        self.dim = int(self._llama.n_embd())
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read(1 << 20)).hexdigest()[:12]
        self.name = f"gguf:{path.name}:{digest}"
        self._lock = threading.Lock()
        # Free the model before interpreter shutdown tears down what llama-cpp-python's
        # finaliser needs (otherwise a TypeError is printed at exit).
        atexit.register(self.close)

    def close(self) -> None:
        """Free the llama.cpp model now."""
        with self._lock:
            close = getattr(self._llama, "close", None)
            if close is not None:
                close()

    def _fit(self, text: str) -> str:
        tokens = self._llama.tokenize(text.encode("utf-8", "replace"), add_bos=True)
        if len(tokens) <= _CONTEXT - 2:
            return text
        kept = self._llama.detokenize(tokens[1 : _CONTEXT - 2])
        return str(kept.decode("utf-8", "ignore"))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for i, text in enumerate(texts):
                vector = np.asarray(self._llama.embed(self._fit(text) or " "), dtype=np.float32)
                if vector.ndim > 1:  # per-token output: pool it ourselves
                    vector = vector.mean(axis=0)
                norm = float(np.linalg.norm(vector))
                out[i] = vector / norm if norm > 0 else vector
        return out
