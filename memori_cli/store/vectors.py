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
from .core import Store, dict_rows, now_iso
from .matrix import MATRIX_MIN_ROWS

VEC_TABLE = "vec_messages"
MEMORY_VEC_TABLE = "vec_memories"


def index_model(store: Store) -> tuple[str, int] | None:
    """The (model, dimension) the vector index was built with, or None if there is none."""
    return _index_model(store.conn)


def stale_index(store: Store, model: str, dim: int) -> tuple[str, int] | None:
    """The (model, dimension) of an index built with another model than this one, or None
    (no index yet, or the same model)."""
    built = index_model(store)
    return built if built is not None and built != (model, dim) else None


def _index_model(conn: Any) -> tuple[str, int] | None:
    rows = dict(
        conn.execute(
            "SELECT key, value FROM settings WHERE key IN ('vector_model', 'vector_dim')"
        ).fetchall()
    )
    if "vector_model" not in rows:
        return None
    return rows["vector_model"], int(rows["vector_dim"])


def ensure_index(conn: Any, model: str, dim: int) -> None:
    """Inside a write transaction: make the vector tables for ``model`` if there are none;
    raise :class:`StoreError` if they hold another model's vectors."""
    current = _index_model(conn)
    if current is not None and current != (model, dim):
        raise StoreError(
            f"the vector index holds {current[0]} ({current[1]}-d) vectors, not {model}; "
            "run `memori reembed`"
        )
    # chunk_size=64: with a partition key, the default chunk size wastes most of the space.
    for table, key, source in ((VEC_TABLE, "message_id", "message_embeddings"),
                               (MEMORY_VEC_TABLE, "memory_id", "memory_embeddings")):  # fmt: skip
        conn.execute(
            f"""CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING vec0(
                    {key} INTEGER PRIMARY KEY,
                    entity_id TEXT PARTITION KEY,
                    embedding float[{int(dim)}] distance_metric=cosine,
                    chunk_size=64)"""
        )
        conn.execute(
            f"""CREATE TRIGGER IF NOT EXISTS {source}_delete AFTER DELETE ON {source} BEGIN
                    DELETE FROM {table} WHERE {key} = old.{key};
                END"""
        )
    if current is not None:
        return
    conn.executemany(
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [("vector_model", model), ("vector_dim", str(dim))],
    )


def pending(
    store: Store, *, after_id: int = 0, limit: int = 256, ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Messages with no vector yet (of ``ids``, or all), oldest first, each with the turn
    before it in its session (``prev_name``, ``prev_role``, ``prev_content``; None for a
    session's first turn)."""
    among = "" if ids is None else f"AND m.id IN ({','.join(str(int(i)) for i in ids) or 'NULL'})"
    cursor = store.conn.execute(
        f"""SELECT m.id, m.entity_id, m.role, m.name, m.content, m.created_at,
                  p.name AS prev_name, p.role AS prev_role, p.content AS prev_content
           FROM messages m
           LEFT JOIN message_embeddings e ON e.message_id = m.id
           LEFT JOIN messages p ON p.id = (
               SELECT max(id) FROM messages WHERE session_id = m.session_id AND id < m.id)
           WHERE e.message_id IS NULL AND m.id > ? {among} ORDER BY m.id LIMIT ?""",
        (after_id, limit),
    )
    return dict_rows(cursor)


def pending_count(store: Store) -> int:
    """How many messages have no vector yet."""
    (count,) = store.conn.execute(
        """SELECT count(*) FROM messages m LEFT JOIN message_embeddings e ON e.message_id = m.id
           WHERE e.message_id IS NULL"""
    ).fetchone()
    return int(count)


#: What :func:`insert` added, per entity: (message ids, their rows in the vectors given).
Added = dict[str, tuple[list[int], list[int]]]


def add(store: Store, model: str, message_ids: Sequence[int], vectors: np.ndarray) -> int:
    """Store vectors for messages, in one transaction; returns how many were new.

    A message deleted meanwhile (``forget``) is skipped, and a message that already has a
    vector keeps it, so re-running is harmless.
    """
    with store.write() as conn:
        fresh = insert(conn, model, message_ids, vectors)
    after_commit(store, fresh, vectors)
    return sum(len(ids) for ids, _ in fresh.values())


def insert(conn: Any, model: str, message_ids: Sequence[int], vectors: np.ndarray) -> Added:
    """Inside a write transaction: :func:`add` without the commit. Call :func:`after_commit`
    once the transaction has committed."""
    dim = int(vectors.shape[1])
    now = now_iso()
    fresh: Added = {}
    if not len(message_ids):
        return fresh
    ensure_index(conn, model, dim)
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
    return fresh


def after_commit(store: Store, fresh: Added, vectors: np.ndarray) -> None:
    """Bring large entities' memory-mapped copies up to date with vectors just committed."""
    if store.matrices is None:  # the store is the source of truth: only after the commit
        return
    for entity_id, (ids, positions) in fresh.items():
        if store.matrices.exists(entity_id):
            store.matrices.append(entity_id, ids, vectors[positions])
        elif _count(store, entity_id) >= MATRIX_MIN_ROWS:
            # The entity just grew large: build its copy now, not in someone's recall.
            store.matrices.refresh(store.conn, VEC_TABLE, entity_id, int(vectors.shape[1]))


def insert_memory(conn: Any, model: str, memory_id: int, entity_id: str, vector: Any) -> None:
    """Inside a write transaction: store a memory's vector."""
    vector = np.ascontiguousarray(vector, dtype=np.float32)
    ensure_index(conn, model, int(vector.shape[0]))
    conn.execute(
        """INSERT INTO memory_embeddings (memory_id, entity_id, model, dim) VALUES (?, ?, ?, ?)
           ON CONFLICT DO NOTHING""",
        (memory_id, entity_id, model, int(vector.shape[0])),
    )
    conn.execute(
        f"INSERT OR REPLACE INTO {MEMORY_VEC_TABLE} (memory_id, entity_id, embedding) "
        "VALUES (?, ?, ?)",
        (memory_id, entity_id, vector.tobytes()),
    )


def knn_memories(conn: Any, entity_id: str, vector: Any, k: int) -> list[tuple[int, float]]:
    """The entity's ``k`` nearest memories to ``vector``: (memory id, cosine distance)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = ?", (MEMORY_VEC_TABLE,)
    ).fetchone()
    if k <= 0 or exists is None:
        return []
    rows = conn.execute(
        f"""SELECT memory_id, distance FROM {MEMORY_VEC_TABLE}
            WHERE embedding MATCH ? AND k = ? AND entity_id = ?""",
        (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), int(k), entity_id),
    ).fetchall()
    return [(int(mid), float(distance)) for mid, distance in rows]


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
        for table, source in ((VEC_TABLE, "message_embeddings"),
                              (MEMORY_VEC_TABLE, "memory_embeddings")):  # fmt: skip
            conn.execute(f"DROP TRIGGER IF EXISTS {source}_delete")
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DELETE FROM {source}")
        conn.execute("DELETE FROM settings WHERE key IN ('vector_model', 'vector_dim')")
    if store.matrices is not None:
        store.matrices.drop()
