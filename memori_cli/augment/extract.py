"""What extractors are: turns in, typed memories, triples and a summary out.

The values themselves (:class:`Turn`, the drafts, :class:`Extraction`) live in
:mod:`memori_cli.parts`, shared with the store; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import ExtractionError
from ..parts import (
    KINDS,
    NODE_TYPES,
    Extraction,
    MemoryDraft,
    TripleDraft,
    Turn,
    normalise,
)

__all__ = [
    "KINDS",
    "NODE_TYPES",
    "Extraction",
    "ExtractionError",
    "Extractor",
    "MemoryDraft",
    "TripleDraft",
    "Turn",
    "normalise",
]


class Extractor(Protocol):
    """Turns a batch of a session's turns into memories, triples and a rolling summary.

    ``name`` says which extractor and version made a memory ("rules@2", "llm:model.gguf@...").
    """

    name: str

    def extract(
        self,
        turns: list[Turn],
        *,
        summary: str | None = None,
        between: Callable[[], None] | None = None,
    ) -> Extraction:
        """Extract from ``turns``; ``summary`` is the session's summary so far. A long run
        calls ``between`` now and then (it renews the job's lease, or raises to stop)."""
        ...
