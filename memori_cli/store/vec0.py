"""The sqlite-vec index: vec0 tables over the vector BLOBs, where a connection loads sqlite-vec.

The store's vectors are BLOBs in ``message_embeddings.embedding`` and
``memory_embeddings.embedding``: ordinary rows any SQLite connection reads and writes. On a
connection that loads sqlite-vec, vec0 tables (``vec_messages``, ``vec_memories``, partitioned
by entity) index them, written in the same transaction as the BLOBs. A connection without
sqlite-vec cannot touch vec0, so once a vec0 index exists (``settings.vec0_dim``) it notes what
it wrote in ``vector_changes`` (deletes are noted there by trigger); the next write transaction
of a sqlite-vec connection brings the index in step (:func:`sync`). Until then every search
takes the numpy path (:func:`usable` is false), so a hit never depends on which driver wrote.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .connect import has_vec

VEC_TABLE = "vec_messages"
MEMORY_VEC_TABLE = "vec_memories"
#: kind -> (vec0 table, key column, the ordinary table holding the BLOBs)
TABLES = {
    "message": (VEC_TABLE, "message_id", "message_embeddings"),
    "memory": (MEMORY_VEC_TABLE, "memory_id", "memory_embeddings"),
}


def _setting(conn: Any, key: str) -> str | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def indexed_dim(conn: Any) -> int | None:
    """The dimension of the vec0 tables, or None if there are none."""
    value = _setting(conn, "vec0_dim")
    return None if value is None else int(value)


def _vector_dim(conn: Any) -> int | None:
    value = _setting(conn, "vector_dim")
    return None if value is None else int(value)


def pending(conn: Any) -> bool:
    """Whether rows were written or deleted that the vec0 index does not reflect yet."""
    return conn.execute("SELECT 1 FROM vector_changes LIMIT 1").fetchone() is not None


def usable(conn: Any) -> bool:
    """Whether a search on ``conn`` can go through vec0: sqlite-vec is loaded, the index is
    built for the vectors' dimension, and nothing is waiting to be brought into it."""
    if not has_vec(conn):
        return False
    dim = indexed_dim(conn)
    return dim is not None and dim == _vector_dim(conn) and not pending(conn)


def note(conn: Any, kind: str, item_id: int) -> None:
    """Inside a write transaction on a connection without sqlite-vec: record that a vector was
    written, if a vec0 index exists that must catch up with it."""
    if indexed_dim(conn) is not None:
        conn.execute(
            "INSERT INTO vector_changes (kind, item_id) VALUES (?, ?)", (kind, int(item_id))
        )


def ensure(conn: Any, dim: int) -> None:
    """Inside a write transaction on a sqlite-vec connection: vec0 tables for ``dim``-d
    vectors holding every stored vector (built from the BLOBs if missing or stale)."""
    sync(conn)
    if indexed_dim(conn) != dim:
        _rebuild(conn, dim)


def sync(conn: Any) -> None:
    """Inside a write transaction: bring the vec0 index in step with the BLOBs, if ``conn``
    has sqlite-vec and anything is pending. Cheap when nothing is."""
    if not has_vec(conn):
        return
    changes = conn.execute("SELECT id, kind, item_id FROM vector_changes ORDER BY id").fetchall()
    if not changes:
        return
    dim = _vector_dim(conn)
    if dim is None:  # every vector went (reset): so does the index
        drop(conn)
    elif indexed_dim(conn) != dim or any(kind == "all" for _, kind, _ in changes):
        _rebuild(conn, dim)
    else:
        for kind, item_id in dict.fromkeys((kind, item_id) for _, kind, item_id in changes):
            table, key, source = TABLES[kind]
            conn.execute(f"DELETE FROM {table} WHERE {key} = ?", (item_id,))
            row = conn.execute(
                f"SELECT entity_id, embedding FROM {source} WHERE {key} = ?", (item_id,)
            ).fetchone()
            if row is not None and row[1] is not None:
                conn.execute(
                    f"INSERT INTO {table} ({key}, entity_id, embedding) VALUES (?, ?, ?)",
                    (item_id, row[0], row[1]),
                )
    conn.execute("DELETE FROM vector_changes WHERE id <= ?", (changes[-1][0],))


def drop(conn: Any) -> None:
    """Inside a write transaction on a sqlite-vec connection: drop the vec0 tables."""
    for table, _, _ in TABLES.values():
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("DELETE FROM settings WHERE key = 'vec0_dim'")


def reset(conn: Any) -> None:
    """Inside a write transaction, after every vector was deleted: drop the index (now, or on
    the next sqlite-vec connection's write)."""
    if has_vec(conn):
        drop(conn)
        conn.execute("DELETE FROM vector_changes")
    elif indexed_dim(conn) is not None:
        conn.execute("INSERT INTO vector_changes (kind, item_id) VALUES ('all', 0)")


def _rebuild(conn: Any, dim: int) -> None:
    drop(conn)
    for table, key, source in TABLES.values():
        # chunk_size=64: with a partition key, the default chunk size wastes most of the space.
        conn.execute(
            f"""CREATE VIRTUAL TABLE {table} USING vec0(
                    {key} INTEGER PRIMARY KEY,
                    entity_id TEXT PARTITION KEY,
                    embedding float[{int(dim)}] distance_metric=cosine,
                    chunk_size=64)"""
        )
        conn.execute(
            f"""INSERT INTO {table} ({key}, entity_id, embedding)
                SELECT {key}, entity_id, embedding FROM {source}
                WHERE embedding IS NOT NULL ORDER BY {key}"""
        )
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('vec0_dim', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(int(dim)),),
    )
    conn.execute("DELETE FROM vector_changes")


def read_chunks(
    conn: Any, table: str, dim: int, entity_id: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every (key, vector) of a vec0 table (of one entity's partition, or all), read from its
    chunk tables: ordinary tables, so this works without sqlite-vec. Chunk rows hold a validity
    bitmap and the rowids, vector chunks the float32 rows. That layout is sqlite-vec's, not a
    public interface: the tests check it against the public scan."""
    ids_parts, vec_parts = [], []
    where, args = ("WHERE partition00 = ?", (entity_id,)) if entity_id is not None else ("", ())
    for chunk_id, validity, rowids in conn.execute(
        f"SELECT chunk_id, validity, rowids FROM {table}_chunks {where} ORDER BY chunk_id", args
    ).fetchall():
        (blob,) = conn.execute(
            f"SELECT vectors FROM {table}_vector_chunks00 WHERE rowid = ?", (chunk_id,)
        ).fetchone()
        chunk_ids = np.frombuffer(rowids, dtype=np.int64)
        valid = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
        keep = valid[: len(chunk_ids)].astype(bool)
        ids_parts.append(chunk_ids[keep])
        vec_parts.append(np.frombuffer(blob, dtype=np.float32).reshape(len(chunk_ids), dim)[keep])
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
    matrix = np.vstack(vec_parts) if vec_parts else np.zeros((0, dim), np.float32)
    return ids, np.ascontiguousarray(matrix, dtype=np.float32)


def backfill_blobs(conn: Any) -> None:
    """Migration: copy the vectors of a store made before BLOBs (vec0 only) into the BLOB
    columns, with or without sqlite-vec, and record the vec0 index as built."""
    dim = _vector_dim(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if dim is None or VEC_TABLE not in tables:
        return
    for table, key, source in TABLES.values():
        if table not in tables:
            continue
        if has_vec(conn):
            conn.execute(
                f"""UPDATE {source} SET embedding = (
                        SELECT embedding FROM {table} v WHERE v.{key} = {source}.{key})"""
            )
        else:
            ids, matrix = read_chunks(conn, table, dim)
            conn.executemany(
                f"UPDATE {source} SET embedding = ? WHERE {key} = ?",
                ((row.tobytes(), int(i)) for i, row in zip(ids, matrix, strict=True)),
            )
        # A row without its vector (never expected) is embedded again, not searched empty.
        conn.execute(f"DELETE FROM {source} WHERE embedding IS NULL")
    conn.execute("DELETE FROM vector_changes")
    if all(table in tables for table, _, _ in TABLES.values()):
        conn.execute(
            "INSERT INTO settings (key, value) VALUES ('vec0_dim', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(dim),),
        )
    else:  # half an index: the next sqlite-vec connection's write builds it whole
        conn.execute("INSERT INTO settings (key, value) VALUES ('vec0_dim', '0')")
        conn.execute("INSERT INTO vector_changes (kind, item_id) VALUES ('all', 0)")
