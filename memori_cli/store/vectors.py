"""Message and memory vectors: stored as BLOBs, searched with sqlite-vec or with numpy.

Each vector is a float32 BLOB in ``message_embeddings`` / ``memory_embeddings``, beside the
model that made it; a model change is detected (``stale``), never mixed silently. A search
takes one of two paths, per connection (:func:`memori_cli.store.connect.vector_path`):

- **sqlite-vec**: where the connection loads it, KNN over the vec0 index (:mod:`.vec0`),
  partitioned by entity, so it always returns k of the entity's own rows;
- **numpy**: elsewhere (the stdlib ``sqlite3`` of most Pythons), or while the vec0 index
  lags rows a connection without sqlite-vec wrote: the entity's vectors as a float32 matrix
  (memory-mapped beside the store, :mod:`.matrix`; read from the BLOBs for a store without a
  file) times the query.

Large entities (``MATRIX_MIN_ROWS``) take the matrix on both paths. Both give the same
neighbours: cosine distance over the same float32 vectors.

On PostgreSQL the vectors are pgvector ``vector`` columns, searched on the server
(:mod:`memori_cli.store.postgres.vectors`); vec0 and the matrix copies are SQLite's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import StoreError
from . import vec0
from .backend import backend_of
from .connect import has_vec
from .core import Store, dict_rows, now_iso
from .matrix import MATRIX_MIN_ROWS, nearest, read_blobs

VEC_TABLE = vec0.VEC_TABLE
MEMORY_VEC_TABLE = vec0.MEMORY_VEC_TABLE
#: The ordinary table holding message vectors (the matrix copies are made from it).
BLOB_TABLE = "message_embeddings"


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


def _pgvector(conn: Any) -> Any:
    """The pgvector side (:mod:`memori_cli.store.postgres.vectors`) if ``conn`` is a
    PostgreSQL store's, else None (the SQLite paths)."""
    if backend_of(conn).name != "postgres":
        return None
    from .postgres import vectors as pgvector

    return pgvector


def ensure_index(conn: Any, model: str, dim: int) -> None:
    """Inside a write transaction: record ``model`` as the index's model if there is none yet
    (and, on a sqlite-vec connection, make the vec0 index); raise :class:`StoreError` if the
    store holds another model's vectors."""
    current = _index_model(conn)
    if current is not None and current != (model, dim):
        raise StoreError(
            f"the vector index holds {current[0]} ({current[1]}-d) vectors, not {model}; "
            "run `memori reembed`"
        )
    if current is None:
        conn.executemany(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [("vector_model", model), ("vector_dim", str(dim))],
        )
    if _pgvector(conn) is None and has_vec(conn):
        vec0.ensure(conn, dim)


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
    pgvector = _pgvector(conn)
    if pgvector is not None:
        added: Added = pgvector.insert_message_vectors(conn, model, dim, now, message_ids, vectors)
        return added
    indexed = has_vec(conn)
    for position, (message_id, vector) in enumerate(zip(message_ids, vectors, strict=True)):
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        cursor = conn.execute(
            """INSERT INTO message_embeddings
                   (message_id, entity_id, model, dim, created_at, embedding)
               SELECT id, entity_id, ?, ?, ?, ? FROM messages WHERE id = ?
               ON CONFLICT DO NOTHING RETURNING entity_id""",
            (model, dim, now, blob, int(message_id)),
        )
        row = cursor.fetchone()
        if row is None:
            continue
        if indexed:
            conn.execute(
                f"INSERT INTO {VEC_TABLE} (message_id, entity_id, embedding) VALUES (?, ?, ?)",
                (int(message_id), row[0], blob),
            )
        else:
            vec0.note(conn, "message", int(message_id))
        ids, positions = fresh.setdefault(row[0], ([], []))
        ids.append(int(message_id))
        positions.append(position)
    return fresh


def after_commit(store: Store, fresh: Added, vectors: np.ndarray) -> None:
    """Bring large entities' memory-mapped copies up to date with vectors just committed (on
    PostgreSQL: give an entity that just grew large its HNSW index)."""
    if store.backend.name == "postgres":
        from .postgres import vectors as pgvector

        pgvector.after_commit(store.conn, fresh, int(vectors.shape[1]))
        return
    if store.matrices is None:  # the store is the source of truth: only after the commit
        return
    for entity_id, (ids, positions) in fresh.items():
        if store.matrices.exists(entity_id):
            store.matrices.append(entity_id, ids, vectors[positions])
        elif _count(store, entity_id) >= MATRIX_MIN_ROWS:
            # The entity just grew large: build its copy now, not in someone's recall.
            store.matrices.refresh(store.conn, BLOB_TABLE, entity_id, int(vectors.shape[1]))


def insert_memory(conn: Any, model: str, memory_id: int, entity_id: str, vector: Any) -> None:
    """Inside a write transaction: store a memory's vector (replacing one it had)."""
    vector = np.ascontiguousarray(vector, dtype=np.float32)
    ensure_index(conn, model, int(vector.shape[0]))
    pgvector = _pgvector(conn)
    if pgvector is not None:
        pgvector.insert_memory_vector(conn, model, memory_id, entity_id, vector)
        return
    blob = vector.tobytes()
    conn.execute(
        """INSERT INTO memory_embeddings (memory_id, entity_id, model, dim, embedding)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (memory_id) DO UPDATE SET embedding = excluded.embedding""",
        (memory_id, entity_id, model, int(vector.shape[0]), blob),
    )
    if has_vec(conn):
        conn.execute(
            f"INSERT OR REPLACE INTO {MEMORY_VEC_TABLE} (memory_id, entity_id, embedding) "
            "VALUES (?, ?, ?)",
            (memory_id, entity_id, blob),
        )
    else:
        vec0.note(conn, "memory", memory_id)


def knn_memories(conn: Any, entity_id: str, vector: Any, k: int) -> list[tuple[int, float]]:
    """The entity's ``k`` nearest memories to ``vector``: (memory id, cosine distance),
    nearest first."""
    if k <= 0:
        return []
    query = np.ascontiguousarray(vector, dtype=np.float32)
    pgvector = _pgvector(conn)
    if pgvector is not None:
        found: list[tuple[int, float]] = pgvector.knn(conn, "memory", entity_id, query, k)
        return found
    if _index_model(conn) is None:
        return []
    if vec0.usable(conn):
        return _vec0_knn(conn, "memory", entity_id, query, k)
    ids, matrix = read_blobs(conn, "memory_embeddings", entity_id, query.shape[0], "memory_id")
    return nearest(ids, matrix, query, k)


def _count(store: Store, entity_id: str) -> int:
    (count,) = store.conn.execute(
        "SELECT count(*) FROM message_embeddings WHERE entity_id = ?", (entity_id,)
    ).fetchone()
    return int(count)


def knn(store: Store, entity_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The entity's ``k`` nearest messages to ``vector``: (message id, cosine distance),
    nearest first, by the connection's vector path (see the module docstring)."""
    if k <= 0:
        return []
    conn = store.conn
    query = np.ascontiguousarray(vector, dtype=np.float32)
    pgvector = _pgvector(conn)
    if pgvector is not None:  # no vectors stored, none found: no need to ask for the model
        if store.vector_cache is None:
            budget = store.vector_cache_mb() if store.vector_cache_mb else pgvector.CACHE_MB
            # Copies are fetched on a connection of their own, so not on one handed over.
            own = None if store.given_connection else store
            store.vector_cache = pgvector.VectorCache(budget, own)
        found: list[tuple[int, float]] = pgvector.knn(
            conn, "message", entity_id, query, k, store.vector_cache
        )
        return found
    built = index_model(store)
    if built is None:
        return []
    matrices = store.matrices
    if matrices is not None and matrices.exists(entity_id):
        # A large entity (augmentation made its copy when it crossed MATRIX_MIN_ROWS).
        return matrices.search(conn, BLOB_TABLE, entity_id, query, k, built[1])
    if vec0.usable(conn):
        return _vec0_knn(conn, "message", entity_id, query, k)
    if matrices is not None:  # the numpy path: the entity's memory-mapped copy
        return matrices.search(conn, BLOB_TABLE, entity_id, query, k, built[1])
    ids, matrix = read_blobs(conn, BLOB_TABLE, entity_id, built[1])
    return nearest(ids, matrix, query, k)


#: Distances this close to the k-th are ties at the cut: vec0 is asked for more rows.
_TIE = 1e-6


def _vec0_knn(
    conn: Any, kind: str, entity_id: str, query: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """KNN through vec0, ranked exactly as the numpy path ranks: vec0 picks the candidates
    (every row tied with the k-th one included), their BLOBs are scored with numpy and
    ordered by (distance, id). vec0 alone orders equal distances arbitrarily."""
    table, key, source = vec0.TABLES[kind]
    fetch = int(k) + 1
    while True:
        rows = conn.execute(
            f"""SELECT {key}, distance FROM {table}
                WHERE embedding MATCH ? AND k = ? AND entity_id = ?""",
            (query.tobytes(), fetch, entity_id),
        ).fetchall()
        if len(rows) < fetch or rows[-1][1] > rows[k - 1][1] + _TIE:
            break
        fetch *= 2
    wanted = sorted(int(i) for i, _ in rows)
    if not wanted:
        return []
    blobs = conn.execute(
        f"SELECT {key}, embedding FROM {source} WHERE {key} IN ({','.join(map(str, wanted))}) "
        f"ORDER BY {key}"
    ).fetchall()
    ids = np.asarray([i for i, _ in blobs], dtype=np.int64)
    matrix = np.frombuffer(b"".join(b for _, b in blobs), dtype=np.float32)
    return nearest(ids, matrix.reshape(len(ids), -1), query, k)


def reset(store: Store) -> None:
    """Drop every vector and the index itself (before re-embedding with another model)."""
    with store.write() as conn:
        for source in ("message_embeddings", "memory_embeddings"):
            conn.execute(f"DELETE FROM {source}")
        conn.execute("DELETE FROM settings WHERE key IN ('vector_model', 'vector_dim')")
        pgvector = _pgvector(conn)
        if pgvector is None:
            vec0.reset(conn)
        else:
            pgvector.drop_indexes(conn)  # they index the old model's dimension
    if store.matrices is not None:
        store.matrices.drop()
    if store.vector_cache is not None:
        store.vector_cache.clear()
