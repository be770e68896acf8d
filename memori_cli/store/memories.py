"""Typed memories and session summaries: the tables, and the primitives that write them.

SQL only. Whether an extracted memory merges into one held already, supersedes the one in its
slot or is new is :mod:`memori_cli.augment.resolve`, which runs inside the write transaction
and calls the primitives here with it. Saving never deletes: a superseded memory gets
``valid_to`` and ``superseded_by`` and stays in history. Times are the source messages' own
times, so imported history orders correctly even when it arrives out of order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..parts import Memory, normalise
from . import jobs, vectors
from .core import Store, Tx, dict_rows, is_rowid, now_iso, rowids, valid_at

_COLUMNS = """m.id, m.entity_id, m.kind, m.content, m.about, m.slot, m.confidence, m.trust,
    m.extractor, m.count, m.uses, m.first_seen, m.last_seen, m.valid_from, m.valid_to,
    m.superseded_by, m.created_at, s.name AS session"""


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


#: A source message: (id, created_at, trust).
Source = tuple[int, str, float]


# -- writing primitives (inside the caller's write transaction) ----------------------------
def ensure_entity(tx: Tx, entity_id: str, when: str) -> None:
    """Make sure the entity has its row (inside the caller's write transaction)."""
    tx.execute(
        "INSERT INTO entities (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (entity_id, when),
    )


def sources(conn: Any, entity_id: str, ids: Sequence[int]) -> dict[int, Source]:
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


def link_sources(tx: Tx, table: str, owner: int, sources: Iterable[Source]) -> int:
    """Link ``owner`` (a memory in ``memory_sources``, an edge in ``triple_sources``) to its
    source messages; how many links are new (a source seen before does not count twice, so
    re-runs change nothing)."""
    added = 0
    for message_id, _, _ in sources:
        cursor = tx.execute(
            f"INSERT INTO {table} VALUES (?, ?) ON CONFLICT DO NOTHING", (owner, message_id)
        )
        added += max(cursor.rowcount, 0)
    return added


def add_sources(tx: Tx, memory_id: int, sources: Iterable[Source]) -> int:
    """Link memory ``memory_id`` to its source messages; how many links are new."""
    return link_sources(tx, "memory_sources", memory_id, sources)


def find_same(conn: Any, entity_id: str, norm: str, kind: str, about: str) -> int | None:
    """The entity's current memory of ``kind`` about ``about`` whose normalised text is
    ``norm``, if there is one."""
    row = conn.execute(
        """SELECT id FROM memories WHERE entity_id = ? AND norm = ? AND kind = ?
               AND about = ? AND valid_to IS NULL""",
        (entity_id, norm, kind, about),
    ).fetchone()
    return None if row is None else int(row[0])


def is_current_unslotted(conn: Any, memory_id: int, kind: str, about: str) -> bool:
    """Whether memory ``memory_id`` is current, of ``kind``, about ``about`` and in no slot."""
    row = conn.execute(
        """SELECT id FROM memories WHERE id = ? AND kind = ? AND about = ?
               AND valid_to IS NULL AND slot IS NULL""",
        (memory_id, kind, about),
    ).fetchone()
    return row is not None


def current_memory(conn: Any, entity_id: str, memory_id: int) -> tuple[Any, ...] | None:
    """(kind, about, slot, session_id, norm) of the entity's current memory ``memory_id``."""
    row = conn.execute(
        """SELECT kind, about, slot, session_id, norm FROM memories
           WHERE id = ? AND entity_id = ? AND valid_to IS NULL""",
        (memory_id, entity_id),
    ).fetchone()
    return None if row is None else tuple(row)


def add_sighting(tx: Tx, memory_id: int, sources: Iterable[Source], first: str, when: str) -> None:
    """One more sighting of memory ``memory_id``: its new sources counted, first and last
    seen widened to ``first`` and ``when``."""
    added = add_sources(tx, memory_id, sources)
    tx.execute(
        f"""UPDATE memories SET count = count + ?,
               first_seen = {tx.backend.least}(first_seen, ?),
               last_seen = {tx.backend.greatest}(last_seen, ?) WHERE id = ?""",
        (added, first, when, memory_id),
    )


def insert_memory(
    tx: Tx,
    entity_id: str,
    *,
    session_id: int | None,
    kind: str,
    content: str,
    norm: str,
    about: str,
    slot: str | None,
    confidence: float,
    trust: float,
    extractor: str,
    first_seen: str,
    last_seen: str,
    created_at: str,
) -> int:
    """Add a current memory, valid from ``last_seen``; its id."""
    (memory_id,) = tx.execute(
        """INSERT INTO memories (entity_id, session_id, kind, content, norm, about, slot,
               confidence, trust, extractor, first_seen, last_seen, valid_from, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        (entity_id, session_id, kind, content, norm, about, slot, confidence, trust, extractor,
         first_seen, last_seen, last_seen, created_at),
    ).fetchone()  # fmt: skip
    return int(memory_id)


def slot_holder(
    conn: Any, entity_id: str, about: str, slot: str, *, besides: int
) -> tuple[int, str] | None:
    """(id, valid_from) of the latest current memory about ``about`` in ``slot`` other than
    memory ``besides``."""
    row = conn.execute(
        """SELECT id, valid_from FROM memories WHERE entity_id = ? AND about = ? AND slot = ?
               AND valid_to IS NULL AND id != ? ORDER BY valid_from DESC LIMIT 1""",
        (entity_id, about, slot, besides),
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def close_memory(tx: Tx, memory_id: int, *, valid_to: str, superseded_by: int) -> None:
    """End memory ``memory_id`` at ``valid_to``: ``superseded_by`` holds from then on."""
    tx.execute(
        "UPDATE memories SET valid_to = ?, superseded_by = ? WHERE id = ?",
        (valid_to, superseded_by, memory_id),
    )


def save_summary(tx: Tx, job: jobs.Job, content: str, extractor: str, last_message_id: int) -> None:
    """Store the job's session summary, unless one written from later messages is there."""
    tx.execute(
        """INSERT INTO session_summaries
               (session_id, entity_id, content, extractor, last_message_id, updated_at)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (session_id) DO UPDATE SET content = excluded.content,
               extractor = excluded.extractor, updated_at = excluded.updated_at,
               last_message_id = excluded.last_message_id
           WHERE excluded.last_message_id > session_summaries.last_message_id""",
        (job.session_id, job.entity_id, content, extractor, last_message_id, now_iso()),
    )


def record_rejections(
    tx: Tx, job: jobs.Job, rejected: Sequence[tuple[str, str, str]], extractor: str
) -> None:
    """Replace the job's list of rejected items ((item, content, reason) each)."""
    now = now_iso()
    tx.execute("DELETE FROM rejections WHERE job_id = ?", (job.id,))  # a re-run
    tx.executemany(
        """INSERT INTO rejections (job_id, entity_id, item, content, reason, extractor,
               created_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [(job.id, job.entity_id, *r, extractor, now) for r in rejected],
    )


# -- reading ---------------------------------------------------------------------------------
def list_memories(
    store: Store,
    entity_id: str,
    *,
    kind: str | None = None,
    as_of: str | None = None,
    history: bool = False,
    limit: int = 100,
) -> list[Memory]:
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
    return [Memory.from_row(row) for row in dict_rows(cursor)]


def get_memories(
    store: Store, ids: Sequence[int], *, entity_id: str | None = None
) -> dict[int, Memory]:
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
    rows = {row["id"]: row for row in dict_rows(cursor)}
    sources: dict[int, list[tuple[int, str]]] = {memory_id: [] for memory_id in rows}
    if rows:
        for memory_id, message_id, external in store.conn.execute(
            f"""SELECT ms.memory_id, ms.message_id, m.external_id FROM memory_sources ms
                JOIN messages m ON m.id = ms.message_id
                WHERE ms.memory_id IN ({",".join("?" * len(rows))}) ORDER BY ms.message_id""",
            list(rows),
        ):
            sources[memory_id].append((message_id, external or str(message_id)))
    return {
        memory_id: Memory.from_row(
            dict(
                row,
                sources=[m for m, _ in sources[memory_id]],
                source_ids=[e for _, e in sources[memory_id]],
            )
        )
        for memory_id, row in rows.items()
    }


def add_observations(
    store: Store, entity_id: str, about: str, observations: list[str], *, extractor: str
) -> int:
    """Store imported observations about ``about`` as current facts without source messages,
    skipping any the entity already holds (same normalised text); returns how many were new."""
    now = now_iso()
    added = 0
    with store.write(entity=entity_id) as conn:
        ensure_entity(conn, entity_id, now)
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


def history(store: Store, memory_id: int, *, entity_id: str | None = None) -> list[Memory]:
    """Every memory in the same slot about the same person (or the supersession chain),
    oldest first: what was true, and when. Empty if the memory is not the entity's."""
    if not is_rowid(int(memory_id)):
        return []
    row = store.conn.execute(
        """SELECT entity_id, about, slot FROM memories
           WHERE id = ? AND entity_id = coalesce(?, entity_id)""",
        (int(memory_id), entity_id),
    ).fetchone()
    if row is None:
        return []
    entity_id, about, slot = row
    if slot is None:  # no slot: what it replaced and what replaced it (a correction)
        found = get_memories(store, _chain(store.conn, int(memory_id)))
        return sorted(found.values(), key=lambda m: (m.valid_from, m.id))
    ids = [
        i
        for (i,) in store.conn.execute(
            "SELECT id FROM memories WHERE entity_id = ? AND about = ? AND slot = ?",
            (entity_id, about, slot),
        )
    ]
    found = get_memories(store, ids)
    return sorted(found.values(), key=lambda m: (m.valid_from, m.id))


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
    with store.write(entity=entity_id) as conn:
        row = conn.execute(
            """SELECT entity_id, content, extractor, session_id FROM memories
               WHERE id = ? AND entity_id = coalesce(?, entity_id)""",
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
        store.backend.after_delete(conn)  # the search indexes let the text go now
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


def lexical_memories(
    store: Store,
    terms: Sequence[str],
    *,
    entity_id: str,
    as_of: str | None = None,
    limit: int = 50,
) -> list[tuple[int, float]]:
    """bm25 over the entity's memories valid now (or at ``as_of``) holding any of ``terms``
    (literal words, chosen by :func:`memori_cli.recall.query.terms`): (id, score) best first."""
    if limit <= 0 or not terms:
        return []
    clause, params = valid_at(as_of, "m")
    return store.backend.lexical_memories(
        store.conn, list(terms), entity_id=entity_id, where=[clause], params=params, limit=limit
    )


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
    with store.write(entity=entity_id) as conn:
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
