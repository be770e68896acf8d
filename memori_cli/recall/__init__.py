"""Recall: answer a query from one entity's memory, every hit with its provenance."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..parts import role_label
from ..store import Store, graph, vectors
from ..store import memories as store_memories
from ..store.messages import get_messages, neighbours, speakers, speaking_in
from .hybrid import (
    RankingConfig,
    asked_roles,
    candidates,
    dense_query,
    fuse,
    mentioned_speakers,
    rank,
    speaker_words,
)
from .query import nodes_in, search_memories
from .request import RecallRequest

__all__ = [
    "MAX_QUERY_CHARS",
    "RankingConfig",
    "RecallHit",
    "RecallRequest",
    "clip_query",
    "recall",
]

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
    request: RecallRequest,
    embed: Callable[[str], np.ndarray | None] | None,
    *,
    config: RankingConfig | None = None,
) -> list[RecallHit]:
    """The entity's best ``request.limit`` messages and memories for ``request.query``: bm25
    and, given ``embed`` (text -> vector, or None where vectors cannot serve), nearest
    neighbours, fused and ranked (see :mod:`.hybrid`).

    Memories are those true now, or at ``request.as_of`` (then only messages written by that
    time count too). ``request.memories=False`` searches messages only.
    """
    config = config or RankingConfig()
    if request.limit <= 0:
        return []
    entity, query = request.entity, request.query
    names = speakers(store, entity)
    about = mentioned_speakers(query, names) if config.speaker_weight else set()
    # Among several named speakers their names tell no turn apart (see dense_query); with one
    # (a named user and an unnamed assistant) the name is kept: "I'm Maya Chen, I just moved
    # to Lisbon" answers "where does Maya live?" partly by it.
    dense = dense_query(query, about) if len(names) > 1 else query
    query_vector = embed(dense) if embed is not None else None
    lexical, nearest = candidates(store, request, query_vector, config=config, speakers=about)
    around = neighbours(store, [row["id"] for row in lexical]) if config.neighbour_weight else {}
    graph_messages, graph_memories = _graph(store, entity, query, about, request.as_of, config)
    fused = fuse(lexical, nearest, config, around, graph_messages)
    rows = {row["id"]: row for row in lexical}
    # Neighbours and graph messages join after the filtered searches: fetching them with the
    # same filters holds them to those (a vector hit passed them already).
    missing = [mid for mid in fused if mid not in rows]
    rows.update(get_messages(store, missing, **request.message_filters()))
    for mid in missing:
        if mid not in rows:
            del fused[mid]
    hits = []
    roles = asked_roles(query)
    ranked = rank(fused, rows, config, speakers=about, roles=roles)
    for message_id, score, parts in ranked[: request.limit]:
        row = rows[message_id]
        source = row["external_id"] if row["external_id"] is not None else str(row["id"])
        hits.append(
            RecallHit(
                id=row["id"], kind="message", content=row["content"], score=round(score, 6),
                created_at=row["created_at"], session=row["session"], entity=row["entity_id"],
                source_ids=[source], role=row["role"], name=row["name"],
                explain=dict(parts, source_messages=[source]) if request.explain else None,
            )
        )  # fmt: skip
    if request.searches_memories:
        # A memory about the asked role ("User", or the user's name) is about the asked
        # speaker (speaker_weight); the role's own words rank above it (role_weight).
        asked = {role_label(role) for role in roles}
        asked |= speaking_in(store, entity, names, roles)
        hits += _memory_hits(
            store, request, query_vector, config=config, speakers=about | asked,
            graph=graph_memories,
        )  # fmt: skip
    hits.sort(key=lambda hit: -hit.score)
    return hits[: request.limit]


def _memory_hits(
    store: Store,
    request: RecallRequest,
    query_vector: np.ndarray | None,
    *,
    config: RankingConfig,
    speakers: set[str],
    graph: list[int],
) -> list[RecallHit]:
    """Memories for the query, fused and ranked like messages (``name`` is who it is about)."""
    entity_id, as_of = request.entity, request.as_of
    lexical = search_memories(
        store, request.query, entity_id=entity_id, as_of=as_of, limit=config.candidates,
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
    # A memory spans the turns it was drawn from: it is in the window if it was last seen
    # at or after ``since`` and first seen before the upper bound.
    since, before = request.since, request.before
    ranked: dict[int, dict[str, Any]] = {}  # what ranking reads of a memory, as of a turn's
    for mid in list(fused):
        row = rows.get(mid)
        if (
            row is None
            or (since is not None and row.last_seen < since)
            or (before is not None and row.first_seen >= before)
        ):
            fused.pop(mid)
            continue
        ranked[mid] = dict(row, created_at=row.last_seen, name=row.about)
    hits = []
    for memory_id, score, parts in rank(fused, ranked, config, speakers=speakers)[: request.limit]:
        row = rows[memory_id]
        hits.append(
            RecallHit(
                id=memory_id, kind=row["kind"], content=row["content"],
                score=round(score * config.memory_weight, 6),
                created_at=row["valid_from"], session=row["session"] or "", entity=entity_id,
                source_ids=row["source_ids"], name=row["about"],
                explain=dict(parts, source_messages=row["source_ids"], count=row["count"],
                             extractor=row["extractor"]) if request.explain else None,
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
    nodes = nodes_in(store, entity_id, query, skip={n.casefold() for n in speakers_named})
    return graph.graph_candidates(store, entity_id, nodes, as_of)
