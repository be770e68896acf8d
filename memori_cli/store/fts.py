"""Full-text search over messages, for the words recall chose.

The query language (which words of a question count) is recall's
(:mod:`memori_cli.recall.query`); the engine's side (its syntax, bm25, which columns the words
may match) is the backend's (:meth:`~memori_cli.store.backend.Backend.lexical_messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .core import Store
from .messages import filter_clauses


def lexical_messages(
    store: Store,
    terms: Sequence[str],
    *,
    entity_id: str,
    process_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The entity's messages holding any of ``terms`` (literal words), best bm25 first, as
    dicts with ``score``; only those of ``process_id`` and written in [since, until)."""
    if limit <= 0 or not terms:
        return []
    clauses, values = filter_clauses(process_id, since, until)
    return store.backend.lexical_messages(
        store.conn, list(terms), entity_id=entity_id, where=clauses, params=values, limit=limit
    )
