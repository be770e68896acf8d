"""Recall: answer a query from one entity's memory, every hit with its provenance."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..store import Store
from ..store.fts import search_messages


@dataclasses.dataclass(frozen=True)
class RecallHit:
    """One recalled item (the hit shape of design.md).

    ``source_ids`` are the external ids of the source messages where known, else internal ids;
    a message hit's source is itself.
    """

    id: int
    kind: str
    content: str
    score: float
    created_at: str
    session: str
    entity: str
    source_ids: list[str]
    role: str | None = None
    name: str | None = None
    explain: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON-ready data (``explain`` only when present)."""
        data = dataclasses.asdict(self)
        if data["explain"] is None:
            del data["explain"]
        return data


def lexical(
    store: Store,
    query: str,
    *,
    entity_id: str,
    process_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 10,
) -> list[RecallHit]:
    """The entity's messages that share words with ``query``, ranked by bm25."""
    rows = search_messages(
        store,
        query,
        entity_id=entity_id,
        process_id=process_id,
        since=since,
        until=until,
        limit=limit,
    )
    return [
        RecallHit(
            id=row["id"],
            kind="message",
            content=row["content"],
            score=round(float(row["score"]), 6),
            created_at=row["created_at"],
            session=row["session"],
            entity=row["entity_id"],
            source_ids=[row["external_id"] if row["external_id"] is not None else str(row["id"])],
            role=row["role"],
            name=row["name"],
        )
        for row in rows
    ]
