"""What one recall asks for, checked once and passed down as one value.

:meth:`memori_cli.Memori.recall` builds a :class:`RecallRequest`; :func:`memori_cli.recall.recall`
and the retrievers in :mod:`.hybrid` read their filters from it instead of each taking the
same eight keyword arguments, so a new filter is a field here and a clause in the store.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from .. import dates

__all__ = ["RecallRequest"]


@dataclasses.dataclass(frozen=True)
class RecallRequest:
    """One recall: the query, whose memory, the filters and how many hits.

    The time bounds are normalised on construction to the store's UTC ISO-8601 form (see
    :mod:`memori_cli.dates`), so what is compared in SQL is always a time: a value that is
    not one, or ``since`` after ``until``, is an :class:`~memori_cli.errors.InvalidQueryError`.
    ``entity`` and ``process`` are taken as given (the caller validates ids).
    """

    query: str
    entity: str
    #: Only messages seen by this process (memories have no process: none are searched).
    process: str | None = None
    #: Only items written at or after this time (a memory: last seen at or after it).
    since: str | None = None
    #: Only items written before this time (a memory: first seen before it).
    until: str | None = None
    #: Memories true at this time, and only messages written by then.
    as_of: str | None = None
    limit: int = 10
    #: Search extracted memories too, not messages only.
    memories: bool = True
    #: Give each hit its score components.
    explain: bool = False

    @classmethod
    def of(
        cls,
        query: str,
        entity: str,
        *,
        process: str | None = None,
        since: dates.Moment | None = None,
        until: dates.Moment | None = None,
        as_of: dates.Moment | None = None,
        limit: int = 10,
        memories: bool = True,
        explain: bool = False,
    ) -> RecallRequest:
        """A request from times as the library takes them (ISO-8601 text or ``datetime``
        values, see :mod:`memori_cli.dates`); they are normalised on construction."""
        return cls(
            query, entity, process=process, since=cast(Any, since), until=cast(Any, until),
            as_of=cast(Any, as_of), limit=limit, memories=memories, explain=explain,
        )  # fmt: skip

    def __post_init__(self) -> None:
        since, until = dates.window(self.since, self.until)
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        object.__setattr__(self, "as_of", dates.moment(self.as_of, "as_of"))
        object.__setattr__(self, "limit", max(0, int(self.limit)))

    @property
    def before(self) -> str | None:
        """The exclusive upper bound on when a hit was written: ``until``, or just after
        ``as_of`` when that is earlier (everything written on or before ``as_of`` counts)."""
        if self.as_of is not None and (self.until is None or self.as_of < self.until):
            return self.as_of + "\uffff"
        return self.until

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the messages (the vector search then looks further)."""
        return self.process is not None or self.since is not None or self.before is not None

    @property
    def searches_memories(self) -> bool:
        """Whether memories are searched: asked for, and no process filter (a memory is
        drawn from many turns, not seen by one process)."""
        return self.memories and self.process is None

    def message_filters(self) -> dict[str, Any]:
        """The message filters as the store's functions take them (keyword arguments)."""
        return {"process_id": self.process, "since": self.since, "until": self.before}
