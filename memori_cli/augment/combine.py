"""CombinedExtractor: several extractors over the same turns, their findings pooled.

With a model configured the rules still run: they are exact on the first-person statements
they know, and the model adds what rules cannot read. Duplicates (the same content about the
same person) merge when the job is saved, as a memory met twice always does; every item still
passes the grounding gate on its own.
"""

from __future__ import annotations

from collections.abc import Callable

from .extract import Extraction, Extractor, Turn


class CombinedExtractor:
    """Runs ``parts`` in order and pools their memories and triples. The summary is the last
    part's that gives one (put the model last: its summary reads better than the rules')."""

    def __init__(self, *parts: Extractor):
        if not parts:
            raise ValueError("CombinedExtractor needs at least one extractor")
        self.parts = parts
        self.name = "+".join(part.name for part in parts)

    def extract(
        self,
        turns: list[Turn],
        *,
        summary: str | None = None,
        between: Callable[[], None] | None = None,
    ) -> Extraction:
        """Every part's memories and triples from ``turns``, in the parts' order."""
        result = Extraction(summary=summary)
        for part in self.parts:
            found = part.extract(turns, summary=summary, between=between)
            result.memories.extend(found.memories)
            result.triples.extend(found.triples)
            if found.summary:
                result.summary = found.summary
        return result
