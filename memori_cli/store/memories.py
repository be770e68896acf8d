"""Typed memories, triples and session summaries: saving a job's results, reading them back.

Saving never deletes. A memory whose normalised text (or, with vectors, whose meaning) matches
a current memory of the same kind about the same person merges into it: one more source, a
higher count, a later ``last_seen``. A memory filling a ``slot`` that holds other content
("lives_in") supersedes it: the old row gets ``valid_to`` and ``superseded_by`` and stays in
history. Times are the source messages' own times, so imported history orders correctly even
when it arrives out of order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..parts import Extraction, MemoryDraft, TripleDraft, normalise
from . import connect, graph, jobs, vectors
from .core import Store, dict_rows, is_rowid, now_iso, rowids, valid_at
from .fts import match_expression

#: Cosine similarity above which two memories of the same kind and person are one memory.
MERGE_SIMILARITY = 0.92

_COLUMNS = """m.id, m.entity_id, m.kind, m.content, m.about, m.slot, m.confidence, m.trust,
    m.extractor, m.count, m.uses, m.first_seen, m.last_seen, m.valid_from, m.valid_to,
    m.superseded_by, m.created_at, s.name AS session"""


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


def job_turns(store: Store, job: jobs.Job) -> list[dict[str, Any]]:
    """The job's messages that still exist, oldest first."""
    ids = [int(i) for i in job.message_ids]
    if not ids:
        return []
    cursor = store.conn.execute(
        f"""SELECT id, role, name, content, created_at, trust FROM messages
            WHERE entity_id = ? AND id IN ({",".join("?" * len(ids))}) ORDER BY id""",
        [job.entity_id, *ids],
    )
    return dict_rows(cursor)


def session_summary(store: Store, session_id: int | None) -> str | None:
    """The session's rolling summary so far."""
    if session_id is None:
        return None
    row = store.conn.execute(
        "SELECT content FROM session_summaries WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None else str(row[0])


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
    with store.write() as conn:
        jobs.check_lease(conn, job)
        drafts: list[MemoryDraft | TripleDraft] = [*extraction.memories, *extraction.triples]
        wanted = {i for draft in drafts for i in draft.source_ids}
        known = _sources(conn, job.entity_id, sorted(wanted))
        if found is not None:
            fresh = vectors.insert(conn, found.model, found.message_ids, found.messages)
            result.embedded = sum(len(ids) for ids, _ in fresh.values())
        for position, draft in enumerate(extraction.memories):
            vector = found.memories[position] if found is not None else None
            model = found.model if found is not None else None
            sources = [known[i] for i in draft.source_ids if i in known]
            outcome = _save_memory(
                conn, job.entity_id, job.session_id, draft, sources, extractor, vector, model
            )
            result.created += outcome in ("created", "superseded")
            result.merged += outcome == "merged"
            result.superseded += outcome == "superseded"
        for triple in extraction.triples:
            sources = [known[i] for i in triple.source_ids if i in known]
            names = found.names if found is not None else {}
            result.triples += _save_triple(conn, job.entity_id, triple, sources, extractor, names)
        if extraction.summary and job.session_id is not None and job.message_ids:
            conn.execute(
                """INSERT INTO session_summaries
                       (session_id, entity_id, content, extractor, last_message_id, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (session_id) DO UPDATE SET content = excluded.content,
                       extractor = excluded.extractor, updated_at = excluded.updated_at,
                       last_message_id = excluded.last_message_id
                   WHERE excluded.last_message_id > session_summaries.last_message_id""",
                (
                    job.session_id,
                    job.entity_id,
                    extraction.summary,
                    extractor,
                    max(job.message_ids),
                    now_iso(),
                ),
            )
        now = now_iso()
        conn.execute("DELETE FROM rejections WHERE job_id = ?", (job.id,))  # a re-run
        conn.executemany(
            """INSERT INTO rejections (job_id, entity_id, item, content, reason, extractor,
                   created_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [(job.id, job.entity_id, *r, extractor, now) for r in rejected],
        )
        result.rejected = len(rejected)
        jobs.finish(conn, job)
    if found is not None:
        vectors.after_commit(store, fresh, found.messages)
    return result


#: A source message: (id, created_at, trust).
Source = tuple[int, str, float]


def _sources(conn: Any, entity_id: str, ids: Sequence[int]) -> dict[int, Source]:
    """The source messages among ``ids`` that still exist in the entity, by id."""
    ids = [int(i) for i in ids]
    if not ids:
        return {}
    rows = conn.execute(
        f"""SELECT id, created_at, trust FROM messages
            WHERE entity_id = ? AND id IN ({",".join("?" * len(ids))})""",
        [entity_id, *ids],
    ).fetchall()
    return {int(i): (int(i), str(c), float(t)) for i, c, t in rows}


def _add_sources(conn: Any, table: str, owner: int, sources: list[Source]) -> int:
    """Link ``owner`` (a memory or triple) to its source messages; returns how many links
    are new (a source seen before does not count twice, so re-runs change nothing)."""
    added = 0
    for message_id, _, _ in sources:
        cursor = conn.execute(
            f"INSERT INTO {table} VALUES (?, ?) ON CONFLICT DO NOTHING", (owner, message_id)
        )
        added += max(cursor.rowcount, 0)
    return added


def _save_memory(
    conn: Any,
    entity_id: str,
    session_id: int | None,
    draft: MemoryDraft,
    sources: list[Source],
    extractor: str,
    vector: np.ndarray | None,
    model: str | None,
) -> str | None:
    """Merge, supersede or create; returns which, or None if skipped (no source left)."""
    norm = normalise(draft.content)
    if not sources or not norm:
        return None
    when = max(created for _, created, _ in sources)
    first = min(created for _, created, _ in sources)
    trust = max(t for _, _, t in sources)
    same = conn.execute(
        """SELECT id FROM memories WHERE entity_id = ? AND norm = ? AND kind = ?
               AND about = ? AND valid_to IS NULL""",
        (entity_id, norm, draft.kind, draft.about),
    ).fetchone()
    if same is None and vector is not None and not draft.slot:
        # Only slot-less memories merge by meaning: in a slot, different words are a new
        # value ("lives in Town1" after "lives in Town0" is close in vector space, and
        # "dislikes coffee" after "likes coffee" closer still), which supersedes below.
        same = _similar(conn, entity_id, draft, vector)
    if same is not None:
        _merge(conn, int(same[0]), sources, first, when)
        return "merged"
    now = now_iso()
    (memory_id,) = conn.execute(
        """INSERT INTO memories (entity_id, session_id, kind, content, norm, about, slot,
               confidence, trust, extractor, first_seen, last_seen, valid_from, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        (
            entity_id,
            session_id,
            draft.kind,
            draft.content,
            norm,
            draft.about,
            draft.slot,
            draft.confidence,
            trust,
            extractor,
            first,
            when,
            when,
            now,
        ),
    ).fetchone()
    _add_sources(conn, "memory_sources", memory_id, sources)
    if vector is not None and model is not None:
        vectors.insert_memory(conn, model, memory_id, entity_id, vector)
    outcome = "created"
    if draft.slot:
        outcome = _supersede(conn, entity_id, draft, memory_id, when) or outcome
    return outcome


def _similar(conn: Any, entity_id: str, draft: MemoryDraft, vector: np.ndarray) -> Any:
    for memory_id, distance in vectors.knn_memories(conn, entity_id, vector, 5):
        if 1.0 - distance < MERGE_SIMILARITY:
            break
        row = conn.execute(
            """SELECT id FROM memories WHERE id = ? AND kind = ? AND about = ?
                   AND valid_to IS NULL AND slot IS NULL""",
            (memory_id, draft.kind, draft.about),
        ).fetchone()
        if row is not None:
            return row
    return None


def _merge(conn: Any, memory_id: int, sources: list[Source], first: str, when: str) -> None:
    """One more sighting: count the sources that are new, widen first/last seen."""
    added = _add_sources(conn, "memory_sources", memory_id, sources)
    conn.execute(
        """UPDATE memories SET count = count + ?, first_seen = min(first_seen, ?),
               last_seen = max(last_seen, ?) WHERE id = ?""",
        (added, first, when, memory_id),
    )


def _supersede(
    conn: Any, entity_id: str, draft: MemoryDraft, memory_id: int, when: str
) -> str | None:
    """Settle the slot between the new memory and the current one holding it, by time."""
    other = conn.execute(
        """SELECT id, valid_from FROM memories WHERE entity_id = ? AND about = ? AND slot = ?
               AND valid_to IS NULL AND id != ? ORDER BY valid_from DESC LIMIT 1""",
        (entity_id, draft.about, draft.slot, memory_id),
    ).fetchone()
    if other is None:
        return None
    other_id, other_from = int(other[0]), str(other[1])
    if other_from <= when:  # the usual case: the new statement replaces the old one
        closed, until, successor = other_id, when, memory_id
    else:  # an older statement arriving late (imported history): it goes into history
        closed, until, successor = memory_id, other_from, other_id
    conn.execute(
        "UPDATE memories SET valid_to = ?, superseded_by = ? WHERE id = ?",
        (until, successor, closed),
    )
    return "superseded"


def _save_triple(
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
    subject_id = graph.resolve(
        conn, entity_id, draft.subject, draft.subject_type, names.get(draft.subject)
    )
    object_id = graph.resolve(
        conn, entity_id, draft.object, draft.object_type, names.get(draft.object)
    )
    same = conn.execute(
        """SELECT id FROM triples WHERE entity_id = ? AND subject_id = ? AND predicate = ?
               AND object_id = ? AND valid_to IS NULL""",
        (entity_id, subject_id, draft.predicate, object_id),
    ).fetchone()
    if same is not None:
        added = _add_sources(conn, "triple_sources", same[0], sources)
        conn.execute(
            "UPDATE triples SET count = count + ?, last_seen = max(last_seen, ?) WHERE id = ?",
            (added, when, same[0]),
        )
        return 0
    (triple_id,) = conn.execute(
        """INSERT INTO triples (entity_id, subject, subject_type, predicate, object, object_type,
               confidence, extractor, first_seen, last_seen, valid_from, created_at,
               subject_id, object_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        (
            entity_id,
            draft.subject,
            draft.subject_type,
            draft.predicate,
            draft.object,
            draft.object_type,
            draft.confidence,
            extractor,
            when,
            when,
            when,
            now_iso(),
            subject_id,
            object_id,
        ),
    ).fetchone()
    _add_sources(conn, "triple_sources", triple_id, sources)
    if draft.functional:
        conn.execute(
            """UPDATE triples SET valid_to = ?, superseded_by = ?
               WHERE entity_id = ? AND subject_id = ? AND predicate = ?
                   AND valid_to IS NULL AND id != ? AND valid_from <= ?""",
            (when, triple_id, entity_id, subject_id, draft.predicate, triple_id, when),
        )
    return 1


# -- reading ---------------------------------------------------------------------------------
def list_memories(
    store: Store,
    entity_id: str,
    *,
    kind: str | None = None,
    as_of: str | None = None,
    history: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The entity's memories, newest first: current ones (or those true at ``as_of``), or
    every one ever made with ``history``."""
    clauses, params = ["m.entity_id = ?"], [entity_id]
    if not history:
        clause, extra = valid_at(as_of, "m")
        clauses.append(clause)
        params += extra
    if kind is not None:
        clauses.append("m.kind = ?")
        params.append(kind)
    cursor = store.conn.execute(
        f"""SELECT {_COLUMNS} FROM memories m LEFT JOIN sessions s ON s.id = m.session_id
            WHERE {" AND ".join(clauses)} ORDER BY m.valid_from DESC, m.id DESC LIMIT ?""",
        [*params, int(limit)],
    )
    return dict_rows(cursor)


def get_memories(
    store: Store, ids: Sequence[int], *, entity_id: str | None = None
) -> dict[int, dict[str, Any]]:
    """Memories by id (only the entity's, if ``entity_id`` is given), each with
    ``source_ids`` (external ids where known) and ``sources`` (internal message ids)."""
    ids = rowids(ids)
    if not ids:
        return {}
    scope, params = ("", []) if entity_id is None else (" AND m.entity_id = ?", [entity_id])
    cursor = store.conn.execute(
        f"""SELECT {_COLUMNS} FROM memories m LEFT JOIN sessions s ON s.id = m.session_id
            WHERE m.id IN ({",".join("?" * len(ids))}){scope}""",
        [*ids, *params],
    )
    out = {row["id"]: dict(row, sources=[], source_ids=[]) for row in dict_rows(cursor)}
    if out:
        for memory_id, message_id, external in store.conn.execute(
            f"""SELECT ms.memory_id, ms.message_id, m.external_id FROM memory_sources ms
                JOIN messages m ON m.id = ms.message_id
                WHERE ms.memory_id IN ({",".join("?" * len(out))}) ORDER BY ms.message_id""",
            list(out),
        ):
            out[memory_id]["sources"].append(message_id)
            out[memory_id]["source_ids"].append(external or str(message_id))
    return out


def add_observations(
    store: Store, entity_id: str, about: str, observations: list[str], *, extractor: str
) -> int:
    """Store imported observations about ``about`` as current facts without source messages,
    skipping any the entity already holds (same normalised text); returns how many were new."""
    now = now_iso()
    added = 0
    with store.write() as conn:
        conn.execute(
            "INSERT INTO entities (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (entity_id, now),
        )
        for text in observations:
            norm = normalise(text)
            if (
                not norm
                or conn.execute(
                    "SELECT 1 FROM memories WHERE entity_id = ? AND norm = ? AND valid_to IS NULL",
                    (entity_id, norm),
                ).fetchone()
            ):
                continue
            conn.execute(
                """INSERT INTO memories (entity_id, kind, content, norm, about, confidence,
                       trust, extractor, first_seen, last_seen, valid_from, created_at)
                   VALUES (?, 'fact', ?, ?, ?, 1.0, 1.0, ?, ?, ?, ?, ?)""",
                (entity_id, text.strip(), norm, about, extractor, now, now, now, now),
            )
            added += 1
    return added


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
    with store.write() as conn:
        conn.execute(
            "INSERT INTO entities (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (entity_id, now),
        )
        sources = list(_sources(conn, entity_id, rowids(source_ids)).values())
        slot, session_id = None, None
        if supersedes is not None:
            if not is_rowid(int(supersedes)):
                return None
            old = conn.execute(
                """SELECT kind, about, slot, session_id, norm FROM memories
                   WHERE id = ? AND entity_id = ? AND valid_to IS NULL""",
                (int(supersedes), entity_id),
            ).fetchone()
            if old is None:
                return None
            if old[4] == norm:  # it says that already: nothing to supersede
                return int(supersedes)
            kind, about, slot, session_id = old[:4]
        else:
            same = conn.execute(
                """SELECT id FROM memories WHERE entity_id = ? AND norm = ? AND kind = ?
                       AND about = ? AND valid_to IS NULL""",
                (entity_id, norm, kind, about),
            ).fetchone()
            if same is not None:
                _merge(conn, int(same[0]), sources, now, now)
                return int(same[0])
        (memory_id,) = conn.execute(
            """INSERT INTO memories (entity_id, session_id, kind, content, norm, about, slot,
                   confidence, trust, extractor, first_seen, last_seen, valid_from, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, 1.0, 1.0, ?, ?, ?, ?, ?) RETURNING id""",
            (entity_id, session_id, kind, content.strip(), norm, about, slot, extractor,
             now, now, now, now),
        ).fetchone()  # fmt: skip
        _add_sources(conn, "memory_sources", memory_id, sources)
        if supersedes is not None:
            conn.execute(
                "UPDATE memories SET valid_to = ?, superseded_by = ? WHERE id = ?",
                (now, memory_id, int(supersedes)),
            )
    return int(memory_id)


def _chain(conn: Any, memory_id: int) -> list[int]:
    """The supersession chain through ``memory_id`` (what it replaced, what replaced it)."""
    chain = [memory_id]
    for step in (
        "SELECT id FROM memories WHERE superseded_by = ? ORDER BY id LIMIT 1",
        "SELECT superseded_by FROM memories WHERE id = ?",
    ):
        current = memory_id
        while True:
            row = conn.execute(step, (current,)).fetchone()
            if row is None or row[0] is None or int(row[0]) in chain:
                break
            current = int(row[0])
            chain.append(current)
    return chain


def source_messages(store: Store, ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
    """The (role, content) of each memory's source messages, by memory id."""
    ids = rowids(ids)
    out: dict[int, list[tuple[str, str]]] = {}
    if ids:
        for memory_id, role, content in store.conn.execute(
            f"""SELECT ms.memory_id, m.role, m.content FROM memory_sources ms
                JOIN messages m ON m.id = ms.message_id
                WHERE ms.memory_id IN ({",".join("?" * len(ids))})""",
            ids,
        ):
            out.setdefault(memory_id, []).append((role, content))
    return out


def history(store: Store, memory_id: int, *, entity_id: str | None = None) -> list[dict[str, Any]]:
    """Every memory in the same slot about the same person (or the supersession chain),
    oldest first: what was true, and when. Empty if the memory is not the entity's."""
    if not is_rowid(int(memory_id)):
        return []
    row = store.conn.execute(
        """SELECT entity_id, about, slot FROM memories
           WHERE id = ? AND entity_id = ifnull(?, entity_id)""",
        (int(memory_id), entity_id),
    ).fetchone()
    if row is None:
        return []
    entity_id, about, slot = row
    if slot is None:  # no slot: what it replaced and what replaced it (a correction)
        found = get_memories(store, _chain(store.conn, int(memory_id)))
        return sorted(found.values(), key=lambda m: (m["valid_from"], m["id"]))
    ids = [
        i
        for (i,) in store.conn.execute(
            "SELECT id FROM memories WHERE entity_id = ? AND about = ? AND slot = ?",
            (entity_id, about, slot),
        )
    ]
    found = get_memories(store, ids)
    return sorted(found.values(), key=lambda m: (m["valid_from"], m["id"]))


def forget_memory(store: Store, memory_id: int, *, entity_id: str | None = None) -> bool:
    """Delete one memory (only the entity's, if ``entity_id`` is given) and what was made
    only from it, in one transaction; True if it existed.

    Its FTS entry and vector go by trigger and foreign key. Two derived things would
    otherwise keep stating the forgotten fact:

    - **Edges.** Triples record their source messages, not the memory, so an edge goes when
      it states this memory's fact from nothing else: it was made by the same extractor,
      every one of its source messages is a source of the memory (so it came from the same
      job's messages and no other message supports it), and its object is named in the
      memory's text ("Ana lives in Zorbtown" and ``lives_in Zorbtown``, not ``likes cake``
      from the same message). Object nodes left with no edge go with it.
    - **Session summaries** of the sessions its sources belong to. The rule extractor's
      summary holds one ``- <memory>`` line per memory learned, so that line is cut out. Any
      other summary (a model's prose may paraphrase) that covers a source message, or that
      still holds the text after the cut, is deleted: the session's next job writes a new one.
    """
    if not is_rowid(int(memory_id)):
        return False
    with store.write() as conn:
        row = conn.execute(
            """SELECT entity_id, content, extractor, session_id FROM memories
               WHERE id = ? AND entity_id = ifnull(?, entity_id)""",
            (int(memory_id), entity_id),
        ).fetchone()
        if row is None:
            return False
        owner, content, extractor, session_id = str(row[0]), str(row[1]), str(row[2]), row[3]
        sources = [
            int(i)
            for (i,) in conn.execute(
                "SELECT message_id FROM memory_sources WHERE memory_id = ?", (int(memory_id),)
            )
        ]
        _forget_edges(conn, owner, int(memory_id), content, extractor)
        _cut_from_summaries(conn, owner, session_id, sources, content)
        conn.execute("DELETE FROM memories WHERE id = ?", (int(memory_id),))
        connect.purge_fts(conn)  # where FTS5 secure-delete is off (SQLite before 3.44)
    return True


def _forget_edges(conn: Any, entity_id: str, memory_id: int, content: str, extractor: str) -> None:
    """Delete the edges made only from memory ``memory_id``'s messages that state its fact
    (see :func:`forget_memory`), then the object nodes they leave with no edge."""
    folded = content.casefold()
    rows = conn.execute(
        """SELECT t.id, t.object, t.subject_id, t.object_id FROM triples t
           WHERE t.entity_id = ? AND t.extractor = ?
               AND EXISTS (SELECT 1 FROM triple_sources ts WHERE ts.triple_id = t.id)
               AND NOT EXISTS (
                   SELECT 1 FROM triple_sources ts WHERE ts.triple_id = t.id
                       AND ts.message_id NOT IN
                           (SELECT message_id FROM memory_sources WHERE memory_id = ?))""",
        (entity_id, extractor, memory_id),
    ).fetchall()
    gone = [row for row in rows if str(row[1]).strip().casefold() in folded]
    if not gone:
        return
    conn.executemany("DELETE FROM triples WHERE id = ?", [(int(row[0]),) for row in gone])
    # Only object nodes: the object is the forgotten value ("Zorbtown"), while the subject is
    # the person, whose node may carry aliases merged by hand.
    for node_id in sorted({int(row[3]) for row in gone if row[3] is not None}):
        conn.execute(
            """DELETE FROM graph_nodes WHERE id = ? AND NOT EXISTS
                   (SELECT 1 FROM triples WHERE subject_id = ?1 OR object_id = ?1)""",
            (node_id,),
        )


def _cut_from_summaries(
    conn: Any, entity_id: str, session_id: int | None, sources: list[int], content: str
) -> None:
    """Remove ``content`` from the summaries of the sessions it was learned in (see
    :func:`forget_memory`)."""
    marks = ",".join("?" * len(sources)) or "NULL"
    sessions = {
        int(s)
        for (s,) in conn.execute(
            f"SELECT DISTINCT session_id FROM messages WHERE id IN ({marks})", sources
        )
        if s is not None
    }
    if session_id is not None:
        sessions.add(int(session_id))
    line = f"- {content}"
    for session in sorted(sessions):
        row = conn.execute(
            """SELECT content, extractor, last_message_id FROM session_summaries
               WHERE session_id = ? AND entity_id = ?""",
            (session, entity_id),
        ).fetchone()
        if row is None:
            continue
        summary, made_by, last = str(row[0]), str(row[1]), int(row[2])
        if made_by.startswith("rules@"):
            kept = "\n".join(x for x in summary.splitlines() if x != line)
            if content not in kept:
                if kept != summary:
                    conn.execute(
                        "UPDATE session_summaries SET content = ? WHERE session_id = ?",
                        (kept, session),
                    )
                continue
        elif content not in summary and not any(i <= last for i in sources):
            continue  # the summary was written before any of the memory's messages
        conn.execute("DELETE FROM session_summaries WHERE session_id = ?", (session,))


def search_memories(
    store: Store,
    query: str,
    *,
    entity_id: str,
    as_of: str | None = None,
    limit: int = 50,
    drop_words: set[str] | frozenset[str] = frozenset(),
) -> list[tuple[int, float]]:
    """bm25 over the entity's memories valid now (or at ``as_of``): (id, score) best first."""
    expression = match_expression(query, drop_words=drop_words)
    if expression is None:
        return []
    clause, params = valid_at(as_of, "m")
    rows = store.conn.execute(
        f"""SELECT m.id, -bm25(memories_fts, 1.0, 0.3, 0.0) AS score
            FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid
            WHERE memories_fts MATCH ? AND m.entity_id = ? AND {clause}
            ORDER BY bm25(memories_fts, 1.0, 0.3, 0.0) LIMIT ?""",
        [expression, entity_id, *params, int(limit)],
    ).fetchall()
    return [(int(i), float(s)) for i, s in rows]


def valid_ids(store: Store, ids: Sequence[int], as_of: str | None) -> set[int]:
    """The subset of memory ``ids`` valid now (or at ``as_of``)."""
    ids = [int(i) for i in ids]
    if not ids:
        return set()
    clause, params = valid_at(as_of, "m")
    rows = store.conn.execute(
        f"SELECT m.id FROM memories m WHERE m.id IN ({','.join('?' * len(ids))}) AND {clause}",
        [*ids, *params],
    )
    return {int(i) for (i,) in rows}


def mark_used(store: Store, entity_id: str, ids: Sequence[int]) -> int:
    """Count one more use of each of the entity's memories in ``ids``."""
    with store.write() as conn:
        cursor = conn.executemany(
            "UPDATE memories SET uses = uses + 1 WHERE id = ? AND entity_id = ?",
            [(int(i), entity_id) for i in ids],
        )
        return int(cursor.rowcount)


def pending_memories(store: Store, limit: int = 256) -> list[tuple[int, str, str]]:
    """(id, entity, content) of memories with no vector yet (made while no embedder ran)."""
    rows = store.conn.execute(
        """SELECT m.id, m.entity_id, m.content FROM memories m
           LEFT JOIN memory_embeddings e ON e.memory_id = m.id
           WHERE e.memory_id IS NULL ORDER BY m.id LIMIT ?""",
        (int(limit),),
    ).fetchall()
    return [(int(i), str(e), str(c)) for i, e, c in rows]


def add_memory_vectors(
    store: Store, model: str, rows: list[tuple[int, str, str]], matrix: np.ndarray
) -> int:
    """Store vectors for memories made without one, in one transaction."""
    with store.write() as conn:
        for (memory_id, entity_id, _), vector in zip(rows, matrix, strict=True):
            if conn.execute("SELECT 1 FROM memories WHERE id = ?", (memory_id,)).fetchone():
                vectors.insert_memory(conn, model, memory_id, entity_id, vector)
    return len(rows)


def current_in_slots(
    store: Store, entity_id: str, slots: Sequence[str], *, limit: int = 50
) -> list[int]:
    """Ids of the entity's current memories whose slot is one of ``slots`` (a slot ending in
    ``:`` matches every slot under it: ``relation:`` holds ``relation:sister:lena``), newest
    first."""
    if not slots:
        return []
    clauses, params = [], []
    for slot in slots:
        if slot.endswith(":"):
            clauses.append("substr(m.slot, 1, ?) = ?")
            params += [len(slot), slot]
        else:
            clauses.append("m.slot = ?")
            params.append(slot)
    rows = store.conn.execute(
        f"""SELECT m.id FROM memories m
            WHERE m.entity_id = ? AND m.valid_to IS NULL AND ({" OR ".join(clauses)})
            ORDER BY m.valid_from DESC, m.id DESC LIMIT ?""",
        [entity_id, *params, int(limit)],
    )
    return [int(i) for (i,) in rows]


def memories_from(store: Store, message_ids: Sequence[int]) -> dict[int, tuple[set[int], bool]]:
    """For each message id, the current memories made from it and whether a superseded one
    was: a message whose only memories are superseded states what is no longer true."""
    ids = [int(i) for i in message_ids]
    out: dict[int, tuple[set[int], bool]] = {}
    if ids:
        for message_id, memory_id, current in store.conn.execute(
            f"""SELECT ms.message_id, ms.memory_id, m.valid_to IS NULL FROM memory_sources ms
                JOIN memories m ON m.id = ms.memory_id
                WHERE ms.message_id IN ({",".join("?" * len(ids))})""",
            ids,
        ):
            made, superseded = out.get(message_id, (set(), False))
            if current:
                made.add(int(memory_id))
            out[message_id] = (made, superseded or not current)
    return out
