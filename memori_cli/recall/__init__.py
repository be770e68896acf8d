"""Recall: answer a query from one entity's memory, every hit with its provenance."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..store import Store, graph, vectors
from ..store import memories as store_memories
from ..store.messages import get_messages, neighbours, speakers
from .hybrid import (
    RankingConfig,
    asked_roles,
    candidates,
    fuse,
    mentioned_speakers,
    rank,
    speaker_words,
)

__all__ = ["MAX_QUERY_CHARS", "RankingConfig", "RecallHit", "clip_query", "recall"]

# The most of a query recall reads. The retrievers use a query's start only (bm25 its first 32
# distinct words, the embedder its first few hundred tokens), yet reading all of it cost linear
# time: a 10 MB query took 7 to 25 s, nearly all in the embedder's tokenizer; now 80 ms.
MAX_QUERY_CHARS = 4_000


@dataclasses.dataclass(frozen=True)
class RecallHit:
    """One recalled item (the hit shape of design.md).

    ``source_ids`` are the external ids of the source messages where known, else internal ids;
    a message hit's source is itself. ``explain`` holds the score's components when asked for.
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

    # The upstream Memori library's names: code written for it reads a recalled item by
    # attribute or as a mapping (``hit["content"]``, ``hit.get("similarity")``).
    @property
    def similarity(self) -> float:
        """The hit's relevance as upstream names it: the same as ``score`` (recall's fused
        ranking score, higher is better; not a raw cosine)."""
        return self.score

    def keys(self) -> list[str]:
        """The field names, with the upstream aliases."""
        return [f.name for f in dataclasses.fields(self)] + list(_ALIASES)

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, _ALIASES.get(key, key))

    def get(self, key: str, default: Any = None) -> Any:
        """``hit[key]``, or ``default`` for a name the hit does not have."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


#: Upstream names -> the field that holds the value.
_ALIASES = {"similarity": "score"}


def clip_query(query: str, limit: int = MAX_QUERY_CHARS) -> str:
    """``query`` cut to at most ``limit`` characters, at a word boundary where one is near."""
    if len(query) <= limit:
        return query
    cut = query[:limit]
    if not query[limit].isspace():  # do not search for half a word
        space = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
        if space > limit - 100:
            cut = cut[:space]
    return cut


def recall(
    store: Store,
    query: str,
    query_vector: np.ndarray | None,
    *,
    entity_id: str,
    process_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 10,
    config: RankingConfig | None = None,
    explain: bool = False,
    as_of: str | None = None,
    memories: bool = True,
) -> list[RecallHit]:
    """The entity's best ``limit`` messages and memories for ``query``: bm25 and, given a
    query vector, nearest neighbours, fused and ranked (see :mod:`.hybrid`).

    Memories are those true now, or at ``as_of`` (then only messages written by that time
    count too). ``memories=False`` searches messages only.
    """
    config = config or RankingConfig()
    if limit <= 0:
        return []
    if as_of is not None and (until is None or as_of < until):
        until = as_of + "\uffff"  # everything written on or before as_of
    about = (
        mentioned_speakers(query, speakers(store, entity_id)) if config.speaker_weight else set()
    )
    lexical, nearest = candidates(
        store, query, query_vector, entity_id=entity_id, process_id=process_id, since=since,
        until=until, config=config, speakers=about,
    )  # fmt: skip
    around = neighbours(store, [row["id"] for row in lexical]) if config.neighbour_weight else {}
    graph_messages, graph_memories = _graph(store, entity_id, query, about, as_of, config)
    fused = fuse(lexical, nearest, config, around, graph_messages)
    rows = {row["id"]: row for row in lexical}
    rows.update(get_messages(store, [mid for mid in fused if mid not in rows]))
    # Neighbours joined after the filtered searches: hold them to the same filters.
    for mid, parts in list(fused.items()):
        searched = "lexical_rank" in parts or "vector_rank" in parts
        if not searched and (mid not in rows or not _passes(rows[mid], process_id, since, until)):
            del fused[mid]
    hits = []
    roles = asked_roles(query)
    for message_id, score, parts in rank(fused, rows, config, speakers=about, roles=roles)[:limit]:
        row = rows[message_id]
        source = row["external_id"] if row["external_id"] is not None else str(row["id"])
        hits.append(
            RecallHit(
                id=row["id"], kind="message", content=row["content"], score=round(score, 6),
                created_at=row["created_at"], session=row["session"], entity=row["entity_id"],
                source_ids=[source], role=row["role"], name=row["name"],
                explain=dict(parts, source_messages=[source]) if explain else None,
            )
        )  # fmt: skip
    if memories and process_id is None:
        hits += _memory_hits(
            store, query, query_vector, entity_id=entity_id, since=since, until=until,
            as_of=as_of, config=config, speakers=about, explain=explain, limit=limit,
            graph=graph_memories,
        )  # fmt: skip
    hits.sort(key=lambda hit: -hit.score)
    return hits[:limit]


def _memory_hits(
    store: Store,
    query: str,
    query_vector: np.ndarray | None,
    *,
    entity_id: str,
    since: str | None,
    until: str | None,
    as_of: str | None,
    config: RankingConfig,
    speakers: set[str],
    explain: bool,
    limit: int,
    graph: list[int],
) -> list[RecallHit]:
    """Memories for the query, fused and ranked like messages (``name`` is who it is about)."""
    lexical = store_memories.search_memories(
        store, query, entity_id=entity_id, as_of=as_of, limit=config.candidates,
        drop_words=speaker_words(speakers),
    )  # fmt: skip
    nearest: list[tuple[int, float]] = []
    if query_vector is not None:
        found = vectors.knn_memories(store.conn, entity_id, query_vector, config.candidates)
        valid = store_memories.valid_ids(store, [mid for mid, _ in found], as_of)
        nearest = [(mid, d) for mid, d in found if mid in valid]
    valid = store_memories.valid_ids(store, graph, as_of) if graph else set()
    fused = fuse(
        [{"id": mid, "score": score} for mid, score in lexical], nearest, config,
        graph=[mid for mid in graph if mid in valid],
    )  # fmt: skip
    rows = store_memories.get_memories(store, list(fused))
    for mid in list(fused):
        row = rows.get(mid)
        if (
            row is None
            or (since is not None and row["last_seen"] < since)
            or (until is not None and row["first_seen"] >= until)
        ):
            fused.pop(mid)
            continue
        row.update(created_at=row["last_seen"], name=row["about"])
    hits = []
    for memory_id, score, parts in rank(fused, rows, config, speakers=speakers)[:limit]:
        row = rows[memory_id]
        hits.append(
            RecallHit(
                id=memory_id, kind=row["kind"], content=row["content"],
                score=round(score * config.memory_weight, 6),
                created_at=row["valid_from"], session=row["session"] or "", entity=entity_id,
                source_ids=row["source_ids"], name=row["about"],
                explain=dict(parts, source_messages=row["source_ids"], count=row["count"],
                             extractor=row["extractor"]) if explain else None,
            )
        )  # fmt: skip
    return hits


def _graph(
    store: Store,
    entity_id: str,
    query: str,
    speakers_named: set[str],
    as_of: str | None,
    config: RankingConfig,
) -> tuple[list[int], list[int]]:
    """(message ids, memory ids) reached from the nodes the query names, speakers aside."""
    if not config.graph_weight:
        return [], []
    nodes = graph.nodes_in(store, entity_id, query, skip={n.casefold() for n in speakers_named})
    return graph.graph_candidates(store, entity_id, nodes, as_of)


def _passes(
    row: dict[str, Any], process_id: str | None, since: str | None, until: str | None
) -> bool:
    """Whether a message row passes the process and time filters (as the SQL ones do)."""
    return (
        (process_id is None or row["process_id"] == process_id)
        and (since is None or row["created_at"] >= since)
        and (until is None or row["created_at"] < until)
    )
