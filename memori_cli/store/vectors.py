"""Message vectors in a sqlite-vec ``vec0`` table partitioned by entity.

KNN filters on the partition key during the search, so it always returns k of the entity's
own rows. The table is made for one model's dimension; ``message_embeddings`` records which
model made each vector, and a model change is detected (``stale``), never mixed silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import StoreError
from .core import Store, now_iso
from .matrix import MATRIX_MIN_ROWS

VEC_TABLE = "vec_messages"


def index_model(store: Store) -> tuple[str, int] | None:
    """The (model, dimension) the vector index was built with, or None if there is none."""
    rows = dict(
        store.conn.execute(
            "SELECT key, value FROM settings WHERE key IN ('vector_model', 'vector_dim')"
        ).fetchall()
    )
    if "vector_model" not in rows:
        return None
    return rows["vector_model"], int(rows["vector_dim"])


def _create_index(conn: Any, model: str, dim: int) -> None:
    # chunk_size=64: with a partition key, the default chunk size wastes most of the space.
    conn.execute(
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS {VEC_TABLE} USING vec0(
                message_id INTEGER PRIMARY KEY,
                entity_id TEXT PARTITION KEY,
                embedding float[{int(dim)}] distance_metric=cosine,
                chunk_size=64)"""
    )
    conn.execute(
        f"""CREATE TRIGGER IF NOT EXISTS message_embeddings_delete
            AFTER DELETE ON message_embeddings BEGIN
                DELETE FROM {VEC_TABLE} WHERE message_id = old.message_id;
            END"""
    )
    conn.executemany(
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [("vector_model", model), ("vector_dim", str(dim))],
    )


def pending(store: Store, *, after_id: int = 0, limit: int = 256) -> list[dict[str, Any]]:
    """Messages with no vector yet, oldest first, each with the turn before it in its session
    (``prev_name``, ``prev_role``, ``prev_content``; None for a session's first turn)."""
    cursor = store.conn.execute(
        """SELECT m.id, m.entity_id, m.role, m.name, m.content, m.created_at,
                  p.name AS prev_name, p.role AS prev_role, p.content AS prev_content
           FROM messages m
           LEFT JOIN message_embeddings e ON e.message_id = m.id
           LEFT JOIN messages p ON p.id = (
               SELECT max(id) FROM messages WHERE session_id = m.session_id AND id < m.id)
           WHERE e.message_id IS NULL AND m.id > ? ORDER BY m.id LIMIT ?""",
        (after_id, limit),
    )
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


def pending_count(store: Store) -> int:
    """How many messages have no vector yet."""
    (count,) = store.conn.execute(
        """SELECT count(*) FROM messages m LEFT JOIN message_embeddings e ON e.message_id = m.id
           WHERE e.message_id IS NULL"""
    ).fetchone()
    return int(count)


def add(store: Store, model: str, message_ids: Sequence[int], vectors: np.ndarray) -> int:
    """Store vectors for messages, in one transaction; returns how many were new.

    A message deleted meanwhile (``forget``) is skipped, and a message that already has a
    vector keeps it, so re-running is harmless.
    """
    dim = int(vectors.shape[1])
    added = 0
    now = now_iso()
    fresh: dict[str, tuple[list[int], list[int]]] = {}  # entity -> (ids, row numbers)
    with store.write() as conn:
        current = index_model(store)
        if current is None:
            _create_index(conn, model, dim)
        elif current != (model, dim):
            raise StoreError(
                f"the vector index holds {current[0]} ({current[1]}-d) vectors, not {model}; "
                "run `memori reembed`"
            )
        for position, (message_id, vector) in enumerate(zip(message_ids, vectors, strict=True)):
            cursor = conn.execute(
                """INSERT INTO message_embeddings (message_id, entity_id, model, dim, created_at)
                   SELECT id, entity_id, ?, ?, ? FROM messages WHERE id = ?
                   ON CONFLICT DO NOTHING RETURNING entity_id""",
                (model, dim, now, int(message_id)),
            )
            row = cursor.fetchone()
            if row is None:
                continue
            conn.execute(
                f"INSERT INTO {VEC_TABLE} (message_id, entity_id, embedding) VALUES (?, ?, ?)",
                (int(message_id), row[0], np.ascontiguousarray(vector, dtype=np.float32).tobytes()),
            )
            ids, positions = fresh.setdefault(row[0], ([], []))
            ids.append(int(message_id))
            positions.append(position)
            added += 1
    if store.matrices is not None:  # after the commit: the store is the source of truth
        for entity_id, (ids, positions) in fresh.items():
            if store.matrices.exists(entity_id):
                store.matrices.append(entity_id, ids, vectors[positions])
            elif _count(store, entity_id) >= MATRIX_MIN_ROWS:
                # The entity just grew large: build its copy now, not in someone's recall.
                store.matrices.refresh(store.conn, VEC_TABLE, entity_id, dim)
    return added


def _count(store: Store, entity_id: str) -> int:
    (count,) = store.conn.execute(
        "SELECT count(*) FROM message_embeddings WHERE entity_id = ?", (entity_id,)
    ).fetchone()
    return int(count)


def knn(store: Store, entity_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The entity's ``k`` nearest messages to ``vector``: (message id, cosine distance)."""
    built = index_model(store)
    if k <= 0 or built is None:
        return []
    if store.matrices is not None and store.matrices.exists(entity_id):
        # A large entity (augmentation made its copy when it crossed MATRIX_MIN_ROWS).
        return store.matrices.search(store.conn, VEC_TABLE, entity_id, vector, k, built[1])
    rows = store.conn.execute(
        f"""SELECT message_id, distance FROM {VEC_TABLE}
            WHERE embedding MATCH ? AND k = ? AND entity_id = ?""",
        (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), int(k), entity_id),
    ).fetchall()
    return [(int(mid), float(distance)) for mid, distance in rows]


def reset(store: Store) -> None:
    """Drop every vector and the index itself (before re-embedding with another model)."""
    with store.write() as conn:
        conn.execute("DROP TRIGGER IF EXISTS message_embeddings_delete")
        conn.execute(f"DROP TABLE IF EXISTS {VEC_TABLE}")
        conn.execute("DELETE FROM message_embeddings")
        conn.execute("DELETE FROM settings WHERE key IN ('vector_model', 'vector_dim')")
    if store.matrices is not None:
        store.matrices.drop()
