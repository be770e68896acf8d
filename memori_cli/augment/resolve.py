"""Merge, supersede or create: what becomes of each memory and edge a job extracted.

Saving never deletes. A memory whose normalised text (or, with vectors, whose meaning:
cosine at least :data:`MERGE_SIMILARITY`) matches a current memory of the same kind about the
same person merges into it: one more source, a higher count, a later ``last_seen``. A memory
filling a ``slot`` that holds other content ("lives_in") supersedes it: the old row gets
``valid_to`` and ``superseded_by`` and stays in history. Times are the source messages' own
times, so imported history orders correctly even when it arrives out of order. An edge merges
into the identical current edge, or is added, closing the subject's old edge of a functional
predicate.

These decisions run inside the store's write transaction (they receive it) and write through
the store's primitives (:mod:`memori_cli.store.memories`, :mod:`memori_cli.store.graph`);
the SQL is the store's, the rules are here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..graph.resolve import resolve as resolve_node
from ..parts import Extraction, MemoryDraft, TripleDraft, normalise
from ..store import Store, jobs, vectors
from ..store import graph as store_graph
from ..store import memories as store_memories
from ..store.core import is_rowid, now_iso, rowids
from ..store.memories import Source

#: Cosine similarity above which two memories of the same kind and person are one memory.
MERGE_SIMILARITY = 0.92


@dataclasses.dataclass
class SaveResult:
    """What saving one job's results did."""

    created: int = 0
    merged: int = 0
    superseded: int = 0
    triples: int = 0
    embedded: int = 0
    rejected: int = 0


#: An item grounding refused: (item, content, reason).
Rejected = tuple[str, str, str]


@dataclasses.dataclass
class Vectors:
    """Vectors computed before the transaction: for the job's messages and its memories."""

    model: str
    message_ids: list[int]
    messages: np.ndarray
    memories: list[np.ndarray]
    names: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # graph node names


def save(
    store: Store,
    job: jobs.Job,
    extraction: Extraction,
    *,
    extractor: str,
    found: Vectors | None = None,
    rejected: Sequence[Rejected] = (),
) -> SaveResult:
    """Commit a job's results, what grounding rejected, and the job's completion in one
    transaction.

    Raises :class:`jobs.LeaseLost` (and commits nothing) if the job is no longer this
    worker's: reclaimed after its lease expired, or deleted with its entity by ``forget``.
    """
    result = SaveResult()
    fresh: vectors.Added = {}
    # Everything a job writes is its entity's (and its own queue row, which the lease check
    # locks): on PostgreSQL, jobs of other entities save beside it; SQLite has one writer.
    with store.write(entity=job.entity_id) as conn:
        jobs.check_lease(conn, job)
        drafts: list[MemoryDraft | TripleDraft] = [*extraction.memories, *extraction.triples]
        wanted = {i for draft in drafts for i in draft.source_ids}
        known = store_memories.sources(conn, job.entity_id, sorted(wanted))
        if found is not None:
            fresh = vectors.insert(conn, found.model, found.message_ids, found.messages)
            result.embedded = sum(len(ids) for ids, _ in fresh.values())
        for position, draft in enumerate(extraction.memories):
            vector = found.memories[position] if found is not None else None
            model = found.model if found is not None else None
            sources = [known[i] for i in draft.source_ids if i in known]
            outcome = save_memory(
                conn, job.entity_id, job.session_id, draft, sources, extractor, vector, model
            )
            result.created += outcome in ("created", "superseded")
            result.merged += outcome == "merged"
            result.superseded += outcome == "superseded"
        for triple in extraction.triples:
            sources = [known[i] for i in triple.source_ids if i in known]
            names = found.names if found is not None else {}
            result.triples += save_triple(conn, job.entity_id, triple, sources, extractor, names)
        if extraction.summary and job.session_id is not None and job.message_ids:
            store_memories.save_summary(
                conn, job, extraction.summary, extractor, max(job.message_ids)
            )
        store_memories.record_rejections(conn, job, rejected, extractor)
        result.rejected = len(rejected)
        jobs.finish(conn, job)
    if found is not None:
        vectors.after_commit(store, fresh, found.messages)
    return result


def save_memory(
    conn: Any,
    entity_id: str,
    session_id: int | None,
    draft: MemoryDraft,
    sources: list[Source],
    extractor: str,
    vector: np.ndarray | None,
    model: str | None,
) -> str | None:
    """Merge, supersede or create (inside the caller's write transaction); returns which, or
    None if skipped (no source left)."""
    norm = normalise(draft.content)
    if not sources or not norm:
        return None
    when = max(created for _, created, _ in sources)
    first = min(created for _, created, _ in sources)
    trust = max(t for _, _, t in sources)
    same = store_memories.find_same(conn, entity_id, norm, draft.kind, draft.about)
    if same is None and vector is not None and not draft.slot:
        # Only slot-less memories merge by meaning: in a slot, different words are a new
        # value ("lives in Town1" after "lives in Town0" is close in vector space, and
        # "dislikes coffee" after "likes coffee" closer still), which supersedes below.
        same = _similar(conn, entity_id, draft, vector)
    if same is not None:
        store_memories.add_sighting(conn, same, sources, first, when)
        return "merged"
    memory_id = store_memories.insert_memory(
        conn, entity_id, session_id=session_id, kind=draft.kind, content=draft.content,
        norm=norm, about=draft.about, slot=draft.slot, confidence=draft.confidence,
        trust=trust, extractor=extractor, first_seen=first, last_seen=when,
        created_at=now_iso(),
    )  # fmt: skip
    store_memories.add_sources(conn, memory_id, sources)
    if vector is not None and model is not None:
        vectors.insert_memory(conn, model, memory_id, entity_id, vector)
    outcome = "created"
    if draft.slot:
        outcome = _supersede(conn, entity_id, draft.about, draft.slot, memory_id, when) or outcome
    return outcome


def _similar(conn: Any, entity_id: str, draft: MemoryDraft, vector: np.ndarray) -> int | None:
    """The nearest current slot-less memory of the draft's kind and person, if it is at least
    :data:`MERGE_SIMILARITY` close."""
    for memory_id, distance in vectors.knn_memories(conn, entity_id, vector, 5):
        if 1.0 - distance < MERGE_SIMILARITY:
            break
        if store_memories.is_current_unslotted(conn, memory_id, draft.kind, draft.about):
            return int(memory_id)
    return None


def _supersede(
    conn: Any, entity_id: str, about: str, slot: str, memory_id: int, when: str
) -> str | None:
    """Settle the slot between the new memory and the current one holding it, by time."""
    other = store_memories.slot_holder(conn, entity_id, about, slot, besides=memory_id)
    if other is None:
        return None
    other_id, other_from = other
    if other_from <= when:  # the usual case: the new statement replaces the old one
        closed, until, successor = other_id, when, memory_id
    else:  # an older statement arriving late (imported history): it goes into history
        closed, until, successor = memory_id, other_from, other_id
    store_memories.close_memory(conn, closed, valid_to=until, superseded_by=successor)
    return "superseded"


def save_triple(
    conn: Any,
    entity_id: str,
    draft: TripleDraft,
    sources: list[Source],
    extractor: str,
    names: dict[str, np.ndarray],
) -> int:
    """Resolve the edge's nodes, then merge into the current identical edge or add one
    (closing a functional predicate's old edge); returns 1 if a row was added."""
    if not sources:
        return 0
    when = max(created for _, created, _ in sources)
    subject_id = resolve_node(
        conn, entity_id, draft.subject, draft.subject_type, names.get(draft.subject)
    )
    object_id = resolve_node(
        conn, entity_id, draft.object, draft.object_type, names.get(draft.object)
    )
    same = store_graph.find_edge(conn, entity_id, subject_id, draft.predicate, object_id)
    if same is not None:
        store_graph.add_edge_sighting(conn, same, sources, when)
        return 0
    triple_id = store_graph.insert_edge(
        conn, entity_id, (draft.subject, draft.subject_type), draft.predicate,
        (draft.object, draft.object_type), subject_id=subject_id, object_id=object_id,
        confidence=draft.confidence, extractor=extractor, when=when, created_at=now_iso(),
    )  # fmt: skip
    store_graph.add_edge_sources(conn, triple_id, sources)
    if draft.functional:
        store_graph.close_other_edges(conn, entity_id, subject_id, draft.predicate, triple_id, when)
    return 1


def add_memory(
    store: Store,
    entity_id: str,
    *,
    kind: str,
    content: str,
    about: str,
    extractor: str,
    source_ids: Sequence[int] = (),
    supersedes: int | None = None,
) -> int | None:
    """Store a memory someone stated outright (not extracted), in one transaction; its id.

    ``source_ids`` are the entity's messages it comes from (others are ignored). With
    ``supersedes``, the new memory replaces that current memory of the entity (same kind,
    person and slot; the old one keeps its row with ``valid_to`` and ``superseded_by``, so
    history shows both); None if there is no such current memory, and its own id if it
    says the same already. Without it, a current
    memory of the same kind about the same person with the same normalised text takes the
    sources instead, as extraction merges, and its id is returned.
    """
    norm = normalise(content)
    if not norm:
        raise ValueError("the memory's text is empty")
    now = now_iso()
    with store.write(entity=entity_id) as conn:
        store_memories.ensure_entity(conn, entity_id, now)
        sources = list(store_memories.sources(conn, entity_id, rowids(source_ids)).values())
        slot, session_id = None, None
        if supersedes is not None:
            if not is_rowid(int(supersedes)):
                return None
            old = store_memories.current_memory(conn, entity_id, int(supersedes))
            if old is None:
                return None
            if old[4] == norm:  # it says that already: nothing to supersede
                return int(supersedes)
            kind, about, slot, session_id = old[:4]
        else:
            same = store_memories.find_same(conn, entity_id, norm, kind, about)
            if same is not None:
                store_memories.add_sighting(conn, same, sources, now, now)
                return same
        memory_id = store_memories.insert_memory(
            conn, entity_id, session_id=session_id, kind=kind, content=content.strip(),
            norm=norm, about=about, slot=slot, confidence=1.0, trust=1.0, extractor=extractor,
            first_seen=now, last_seen=now, created_at=now,
        )  # fmt: skip
        store_memories.add_sources(conn, memory_id, sources)
        if supersedes is not None:
            store_memories.close_memory(
                conn, int(supersedes), valid_to=now, superseded_by=memory_id
            )
    return memory_id
