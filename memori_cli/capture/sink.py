"""Where capture puts what wrapped calls exchanged: the narrow seam between capture and its
owner.

Capture needs three things of the coordinator and nothing else: the caller's attribution when
a call is made (with a session, started if there is none), a way to store one exchange, and
a file to keep exchanges the store refused. :class:`memori_cli.Memori` provides them
(``mem.llm`` is built over ``Memori``'s sink); a test or another host can provide them without
a store at all (``tests/test_capture_sink.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..attribution import Attribution


class CaptureSink(Protocol):
    """What capture writes through."""

    def session(self) -> Attribution:
        """The caller's attribution now, in this thread or task, with its session (one is
        started if it has none): a wrapped call fixes it when it is made."""
        ...

    def add(
        self, messages: Sequence[Mapping[str, Any]], attribution: Attribution, source: str
    ) -> object:
        """Store one exchange's messages (native form: ``role``, ``content``, ``timestamp``,
        ...) under ``attribution``, from ``source`` (``capture:openai.chat``, ...). Runs on the
        capture writer's thread; raising means the exchange was not stored (it is spooled)."""
        ...

    def spool_path(self) -> Path:
        """The JSONL file exchanges :meth:`add` refused are appended to (``memori import``
        brings them back)."""
        ...
