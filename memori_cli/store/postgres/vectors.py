"""Message and memory vectors on pgvector: the PostgreSQL side of :mod:`memori_cli.store.vectors`.

Vectors live in ``message_embeddings.embedding`` / ``memory_embeddings.embedding``
(``vector`` columns; one model, so one dimension, per store: ``settings``). A search is exact:
cosine distance (``<=>``) over the entity's rows, the entity in the statement, ordered by
(distance, id) as the SQLite paths order them. There is no vec0 index to keep in step and no
memory-mapped matrix: the server holds the one copy.

Exact search reads every vector of the entity: about 10k rows per entity stay within a few
milliseconds (the issue's measurements); a partial HNSW index per large entity is the later
step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..matrix import nearest
from . import _raw


def _text(vector: Any) -> str:
    """A float32 vector as pgvector's text form (each float32 exactly: the shortest repr of
    its float64 value reads back as the same float32)."""
    values = np.ascontiguousarray(vector, dtype=np.float32).tolist()
    return "[" + ",".join(map(repr, values)) + "]"


def insert_message_vectors(
    conn: Any, model: str, dim: int, now: str, message_ids: Sequence[int], vectors: np.ndarray
) -> dict[str, tuple[list[int], list[int]]]:
    """Inside a write: store the vectors of the messages that still exist and have none yet
    (one statement); per entity, (message ids, their rows in ``vectors``), in order."""
    position: dict[int, int] = {}
    for i, message_id in enumerate(message_ids):
        position.setdefault(int(message_id), i)
    ids = list(position)
    rows = (
        _raw(conn)
        .execute(
            """INSERT INTO message_embeddings
                   (message_id, entity_id, model, dim, created_at, embedding)
               SELECT m.id, m.entity_id, %s, %s, %s, u.e::vector
               FROM unnest(%s::bigint[], %s::text[]) AS u(id, e)
               JOIN messages m ON m.id = u.id
               ON CONFLICT DO NOTHING
               RETURNING message_id, entity_id""",
            [model, dim, now, ids, [_text(vectors[position[i]]) for i in ids]],
        )
        .fetchall()
    )
    fresh: dict[str, tuple[list[int], list[int]]] = {}
    for message_id, entity_id in sorted(rows, key=lambda row: position[int(row[0])]):
        found, positions = fresh.setdefault(str(entity_id), ([], []))
        found.append(int(message_id))
        positions.append(position[int(message_id)])
    return fresh


def insert_memory_vector(
    conn: Any, model: str, memory_id: int, entity_id: str, vector: Any
) -> None:
    """Inside a write: store a memory's vector (replacing one it had)."""
    _raw(conn).execute(
        """INSERT INTO memory_embeddings (memory_id, entity_id, model, dim, embedding)
           VALUES (%s, %s, %s, %s, %s::vector)
           ON CONFLICT (memory_id) DO UPDATE SET embedding = excluded.embedding""",
        (int(memory_id), entity_id, model, int(np.asarray(vector).shape[0]), _text(vector)),
    )


#: kind -> (table, key column)
TABLES = {
    "message": ("message_embeddings", "message_id"),
    "memory": ("memory_embeddings", "memory_id"),
}


#: Distances this close to the k-th are ties at the cut: the server is asked for more rows.
_TIE = 1e-6


def knn(conn: Any, kind: str, entity_id: str, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The entity's ``k`` nearest ``kind`` rows (``message`` or ``memory``) to ``query``:
    (id, cosine distance), nearest first, equal distances in id order.

    Ranked exactly as SQLite's paths rank (:func:`~memori_cli.store.matrix.nearest`):
    pgvector picks the candidates (every row tied with the k-th included), their vectors are
    scored with numpy. pgvector's own float error alone would order equal distances (the same
    vector stored twice is common) arbitrarily.
    """
    table, key = TABLES[kind]
    raw = _raw(conn)
    text = _text(query)
    fetch = int(k) + 1
    while True:
        rows = raw.execute(
            f"""SELECT {key}, (embedding <=> %s::vector)::float8 AS distance FROM {table}
                WHERE entity_id = %s ORDER BY distance, {key} LIMIT %s""",
            (text, entity_id, fetch),
        ).fetchall()
        if len(rows) < fetch or rows[-1][1] > rows[k - 1][1] + _TIE:
            break
        fetch *= 2
    if not rows:
        return []
    # Binary: pgvector's send format, a 2-byte dimension, 2 unused bytes, big-endian float4s.
    with raw.cursor(binary=True) as cursor:
        found = cursor.execute(
            f"""SELECT {key}, embedding FROM {table}
                WHERE entity_id = %s AND {key} = ANY(%s) ORDER BY {key}""",
            (entity_id, [int(i) for i, _ in rows]),
        ).fetchall()
    ids = np.asarray([int(i) for i, _ in found], dtype=np.int64)
    matrix = np.stack([np.frombuffer(blob, dtype=">f4", offset=4) for _, blob in found])
    return nearest(ids, matrix.astype(np.float32), query, k)
