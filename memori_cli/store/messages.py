"""Messages, sessions and entities: writing batches (with their augmentation job) and reading."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..errors import ForgetWarning
from ..parts import EntityInfo, Session
from .core import Store, Tx, dict_rows, now_iso
from .reply import reply_context

ROLES = ("user", "assistant", "system", "tool")
# What the user said outranks what an assistant said about them.
TRUST = {"user": 1.0, "system": 0.9, "assistant": 0.6, "tool": 0.4}


def reply_contexts(tx: Tx, session_ids: Sequence[int], contents: Sequence[str]) -> list[str | None]:
    """The context of each of a batch's messages (in order; ``session_ids[i]`` is message
    ``i``'s session): the previous message of its session in the batch, else the session's
    newest stored message."""
    last: dict[int, str | None] = {}
    out = []
    for session_id, content in zip(session_ids, contents, strict=True):
        if session_id not in last:
            row = tx.execute(
                "SELECT content FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT 1",
                (session_id,),
            ).fetchone()
            last[session_id] = row[0] if row else None
        out.append(reply_context(last[session_id]))
        last[session_id] = content
    return out


@dataclasses.dataclass(slots=True)
class NewMessage:
    """A message ready to store: validated, redacted, hashed."""

    entity_id: str
    session: str
    role: str
    content: str
    content_hash: str
    process_id: str | None = None
    name: str | None = None
    created_at: str | None = None
    external_id: str | None = None
    source: str = "import"


@dataclasses.dataclass
class AddResult:
    """What one batch did: rows inserted, duplicates skipped, (entity, session) pairs touched."""

    inserted: int = 0
    duplicates: int = 0
    sessions: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    #: The augmentation jobs the batch queued (also added to ``Store.queued_jobs``).
    job_ids: list[int] = dataclasses.field(default_factory=list)


def add_messages(store: Store, batch: Sequence[NewMessage]) -> AddResult:
    """Store ``batch`` and enqueue its augmentation jobs, in one write transaction.

    Duplicates (same external id in the entity, else same content hash in the session) are
    skipped, so re-running an import adds nothing.
    """
    result = AddResult()
    if not batch:
        return result
    now = now_iso()
    entities = {m.entity_id for m in batch}
    # One entity's batch (the usual one) locks only that entity on PostgreSQL.
    with store.write(entity=next(iter(entities)) if len(entities) == 1 else None) as conn:
        processes = {m.process_id for m in batch if m.process_id is not None}
        conn.executemany(
            "INSERT INTO entities (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(e, now) for e in entities],
        )
        conn.executemany(
            "INSERT INTO processes (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(p, now) for p in processes],
        )
        session_ids: dict[tuple[str, str], int] = {}
        for m in batch:
            key = (m.entity_id, m.session)
            if key not in session_ids:
                session_ids[key] = _session_id(conn, m.entity_id, m.session, m.process_id, now)
        sessions = [session_ids[(m.entity_id, m.session)] for m in batch]
        contexts = reply_contexts(conn, sessions, [m.content for m in batch])
        rows = [
            (
                m.entity_id,
                m.process_id,
                session,
                m.role,
                m.content,
                m.name,
                m.created_at or now,
                m.external_id,
                m.content_hash,
                TRUST[m.role],
                m.source,
                context,
            )
            for m, session, context in zip(batch, sessions, contexts, strict=True)
        ]
        inserted = store.backend.insert_messages(conn, rows)
        result.inserted = len(inserted)
        result.duplicates = len(batch) - result.inserted
        result.sessions = set(session_ids)
        new_ids: dict[tuple[str, int], list[int]] = defaultdict(list)
        for mid, entity_id, session_id in inserted:
            new_ids[(entity_id, session_id)].append(mid)
        result.job_ids = store.backend.insert_jobs(
            conn,
            [
                ("augment", entity_id, session_id, json.dumps({"message_ids": ids}), now, now)
                for (entity_id, session_id), ids in new_ids.items()
            ],
        )
    store.queued_jobs.update(result.job_ids)
    return result


def _session_id(tx: Tx, entity_id: str, name: str, process_id: str | None, now: str) -> int:
    tx.execute(
        """INSERT INTO sessions (entity_id, name, process_id, created_at) VALUES (?, ?, ?, ?)
           ON CONFLICT DO NOTHING""",
        (entity_id, name, process_id, now),
    )
    (sid,) = tx.execute(
        "SELECT id FROM sessions WHERE entity_id = ? AND name = ?", (entity_id, name)
    ).fetchone()
    return int(sid)


def list_sessions(store: Store, entity_id: str | None = None) -> list[Session]:
    """Sessions (of one entity, or all) with message counts and first/last message times."""
    sql = """
        SELECT s.name AS session, s.entity_id AS entity, s.process_id AS process,
               count(m.id) AS messages, min(m.created_at) AS first, max(m.created_at) AS last
        FROM sessions s LEFT JOIN messages m ON m.session_id = s.id
        {where}
        GROUP BY s.id ORDER BY last DESC, s.id DESC
    """
    if entity_id is None:
        rows = store.conn.execute(sql.format(where=""))
    else:
        rows = store.conn.execute(sql.format(where="WHERE s.entity_id = ?"), (entity_id,))
    return [Session(*row) for row in rows]


def counts(store: Store) -> dict[str, int]:
    """Row counts of the main tables, and pending/failed augmentation jobs."""
    conn = store.conn
    out = {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("entities", "processes", "sessions", "messages")
    }
    out["embedded"] = conn.execute("SELECT count(*) FROM message_embeddings").fetchone()[0]
    for status in ("pending", "running", "failed"):
        out[f"jobs_{status}"] = conn.execute(
            "SELECT count(*) FROM jobs WHERE status = ?", (status,)
        ).fetchone()[0]
    return out


def list_entities(store: Store, entity_id: str | None = None) -> list[EntityInfo]:
    """Every entity (or only ``entity_id``) with its message, current-memory and session
    counts and its last activity (newest message time), most recently active first."""
    where, args = ("WHERE e.id = ?", (entity_id,)) if entity_id is not None else ("", ())
    rows = store.conn.execute(
        """SELECT e.id,
                  (SELECT count(*) FROM messages m WHERE m.entity_id = e.id),
                  (SELECT count(*) FROM memories m WHERE m.entity_id = e.id
                       AND m.valid_to IS NULL),
                  (SELECT count(*) FROM sessions s WHERE s.entity_id = e.id),
                  (SELECT max(m.created_at) FROM messages m WHERE m.entity_id = e.id),
                  e.created_at
           FROM entities e """
        + where,
        args,
    ).fetchall()
    out = sorted((EntityInfo(*row) for row in rows), key=lambda r: r.entity)
    out.sort(key=lambda r: r.last_activity or r.created_at or "", reverse=True)
    return out


def entity_count(store: Store) -> int:
    """How many entities the store holds."""
    return int(store.conn.execute("SELECT count(*) FROM entities").fetchone()[0])


def forget_entity(store: Store, entity_id: str) -> dict[str, int]:
    """Delete every row derived from ``entity_id`` (FTS entries included), then checkpoint.

    Returns how many rows of each kind went. The WAL is checkpointed and truncated afterwards,
    and ``secure_delete`` is on, so the deleted text is gone from the database files. Where
    another connection's read transaction keeps the checkpoint from finishing, a
    :class:`~memori_cli.errors.ForgetWarning` says the text may remain in the WAL.
    """
    removed: dict[str, int] = {}
    with store.write(entity=entity_id) as conn:
        tables = ("triples", "graph_nodes", "memories", "session_summaries", "messages", "jobs",
                  "rejections", "sessions", "entities")  # fmt: skip
        for table in tables:
            column = "id" if table == "entities" else "entity_id"
            cursor = conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (entity_id,))
            removed[table] = cursor.rowcount
        store.backend.after_delete(conn)  # the search indexes let the text go now
    if store.matrices is not None:
        store.matrices.drop(entity_id)
    if not store.checkpoint():
        warnings.warn(
            f"forgot entity {entity_id!r}, but another connection holds a read transaction on "
            f"{store.describe()}, so the deleted text may remain in its write-ahead log "
            "(-wal file) until that connection closes; forget the entity again then",
            ForgetWarning,
            stacklevel=3,
        )
    return removed


def get_messages(
    store: Store,
    ids: Sequence[int],
    *,
    process_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[int, dict[str, Any]]:
    """Messages by id, with their session name, as dicts keyed by id; with a process or time
    filter (see :func:`filter_clauses`), only those that pass it."""
    out: dict[int, dict[str, Any]] = {}
    ids = list(ids)
    clauses, params = filter_clauses(process_id, since, until)
    where = " AND ".join(["", *clauses])
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        cursor = store.conn.execute(
            f"""SELECT m.id, m.role, m.content, m.name, m.created_at, m.external_id, m.entity_id,
                       m.process_id, s.name AS session, m.trust, m.uses
                FROM messages m JOIN sessions s ON s.id = m.session_id
                WHERE m.id IN ({",".join("?" * len(chunk))}){where}""",
            [*chunk, *params],
        )
        for record in dict_rows(cursor):
            out[record["id"]] = record
    return out


def mark_used(store: Store, entity_id: str, ids: Sequence[int]) -> int:
    """Count one more use of each of the entity's messages in ``ids``; returns rows touched."""
    with store.write(entity=entity_id) as conn:
        cursor = conn.executemany(
            "UPDATE messages SET uses = uses + 1 WHERE id = ? AND entity_id = ?",
            [(int(i), entity_id) for i in ids],
        )
        return int(cursor.rowcount)


def speakers(store: Store, entity_id: str) -> list[str]:
    """The distinct speaker names in the entity's messages."""
    rows = store.conn.execute(
        "SELECT DISTINCT name FROM messages WHERE entity_id = ? AND name IS NOT NULL",
        (entity_id,),
    )
    return [name for (name,) in rows]


def speaking_in(store: Store, entity_id: str, names: Sequence[str], roles: set[str]) -> set[str]:
    """Those of ``names`` that speak in one of ``roles`` in the entity's messages (the user's
    name, say): one indexed probe per name."""
    if not roles:
        return set()
    marks = ",".join("?" * len(roles))
    return {
        name
        for name in names
        if store.conn.execute(
            f"SELECT 1 FROM messages WHERE entity_id = ? AND name = ? AND role IN ({marks}) "
            "LIMIT 1",
            (entity_id, name, *sorted(roles)),
        ).fetchone()
    }


def neighbours(store: Store, ids: Sequence[int]) -> dict[int, tuple[int | None, int | None]]:
    """For each message id, the ids of the turns just before and after it in its session."""
    ids = list(ids)
    if not ids:
        return {}
    rows = store.conn.execute(
        f"""SELECT m.id,
                   (SELECT max(id) FROM messages WHERE session_id = m.session_id AND id < m.id),
                   (SELECT min(id) FROM messages WHERE session_id = m.session_id AND id > m.id)
            FROM messages m WHERE m.id IN ({",".join("?" * len(ids))})""",
        ids,
    )
    return {int(mid): (before, after) for mid, before, after in rows}


def filter_clauses(
    process_id: str | None, since: str | None, until: str | None, *, alias: str = "m"
) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for recall's process and time filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (("process_id = ?", process_id), ("created_at >= ?", since),
                          ("created_at < ?", until)):  # fmt: skip
        if value is not None:
            clauses.append(f"{alias}.{clause}")
            params.append(value)
    return clauses, params


def filter_ids(
    store: Store, ids: Sequence[int], process_id: str | None, since: str | None, until: str | None
) -> set[int]:
    """The subset of message ``ids`` passing the process and time filters."""
    ids = list(ids)
    clauses, params = filter_clauses(process_id, since, until)
    if not ids or not clauses:
        return set(ids)
    rows = store.conn.execute(
        f"SELECT m.id FROM messages m WHERE m.id IN ({','.join('?' * len(ids))}) AND "
        + " AND ".join(clauses),
        [*ids, *params],
    )
    return {int(mid) for (mid,) in rows}
