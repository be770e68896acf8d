"""What injection and the graph need from the coordinator, as one narrow protocol.

:class:`memori_cli.Memori` satisfies it. ``mem.llm`` (injection) and ``mem.graph`` depend on
this instead of on ``Memori``, so the coordinator can own them without an import cycle, and
they could be driven by another host (a test's fake, a server). Capture writes through its own
seam, :class:`memori_cli.capture.CaptureSink`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .parts import Memory

if TYPE_CHECKING:
    from .attribution import Attribution
    from .recall import RecallHit
    from .store import Store


class Host(Protocol):
    """A store with attribution and recall."""

    @property
    def store(self) -> Store:
        """The store everything reads and writes."""
        ...

    @property
    def current(self) -> Attribution:
        """The attribution in force in this thread or task."""
        ...

    def recall(
        self, query: str, limit: int = 10, *, entity_id: str | None = None, explain: bool = False
    ) -> list[RecallHit]:
        """The entity's best hits for ``query``."""
        ...

    def memories(self, entity_id: str | None = None, *, limit: int = 100) -> list[Memory]:
        """The entity's current memories, newest first."""
        ...
