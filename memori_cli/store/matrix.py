"""A float32 copy of an entity's vectors, memory-mapped beside the database: the numpy path.

sqlite-vec's KNN over one partition costs about 8 ms per 10k rows (no SIMD in the PyPI build);
numpy over a memory-mapped matrix costs a tenth of that, so large entities are searched here
on every connection, and every entity is where the connection has no sqlite-vec (the stdlib
``sqlite3`` of most Pythons). The copy is made from the vector BLOBs (``message_embeddings``),
which any connection reads. The store stays the source of truth:
each search checks the copy against ``message_embeddings`` (row count and highest id), catches
up on rows it lacks, and rebuilds it from the store when rows were deleted. Augmentation
appends new vectors as it commits them.

Files, in ``<database>.vectors/``: ``<key>.ids`` (int64 message ids) and ``<key>.f32``
(rows of float32), where key is a hash of the entity id. Vectors are written before ids, so
the ids file always describes a complete prefix of the vectors file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .vec0 import read_chunks

#: Entities with at least this many vectors are searched through the matrix (vec0 takes about
#: 4 ms at this size, the matrix well under 1 ms).
MATRIX_MIN_ROWS = 5_000
#: More missing rows than this and the copy is rebuilt rather than patched row by row.
CATCH_UP_LIMIT = 2_000


class Matrices:
    """The matrix copies of one store's large entities."""

    def __init__(self, db_path: Path):
        self.folder = Path(str(db_path) + ".vectors")
        self._maps: dict[Path, tuple[int, np.ndarray]] = {}
        # entity -> (the connection's state when the copy was last checked, ids, matrix)
        self._checked: dict[str, tuple[tuple[Any, int, int], np.ndarray, np.ndarray]] = {}

    def _files(self, entity_id: str) -> tuple[Path, Path]:
        key = hashlib.sha256(entity_id.encode("utf-8")).hexdigest()[:32]
        return self.folder / f"{key}.ids", self.folder / f"{key}.f32"

    @contextlib.contextmanager
    def _locked(self, entity_id: str) -> Iterator[None]:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        ids_path, _ = self._files(entity_id)
        fd = os.open(ids_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def search(
        self, conn: Any, table: str, entity_id: str, vector: np.ndarray, k: int, dim: int
    ) -> list[tuple[int, float]]:
        """The entity's ``k`` nearest rows: (message id, cosine distance), nearest first."""
        ids, matrix = self._current(conn, table, entity_id, dim)
        return nearest(ids, matrix, vector, k)

    def exists(self, entity_id: str) -> bool:
        """Whether the entity has a copy."""
        return self._files(entity_id)[0].exists()

    def refresh(self, conn: Any, table: str, entity_id: str, dim: int) -> None:
        """Bring the entity's copy up to date with the store, creating it if needed."""
        self._current(conn, table, entity_id, dim)

    def append(self, entity_id: str, ids: list[int], vectors: np.ndarray) -> None:
        """Add freshly committed vectors to the entity's copy, if it has one."""
        self._checked.pop(entity_id, None)
        ids_path, vec_path = self._files(entity_id)
        if not ids_path.exists() or not ids:
            return
        with self._locked(entity_id):
            with open(vec_path, "ab") as handle:
                handle.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            with open(ids_path, "ab") as handle:
                handle.write(np.asarray(ids, dtype=np.int64).tobytes())

    def drop(self, entity_id: str | None = None) -> None:
        """Delete the copy of one entity, or every copy."""
        if entity_id is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._maps.clear()
            self._checked.clear()
            return
        self._checked.pop(entity_id, None)
        for path in (*self._files(entity_id), self._files(entity_id)[0].with_suffix(".lock")):
            # A mapping kept open would keep the unlinked file's blocks (the vectors) alive.
            self._maps.pop(path, None)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _current(
        self, conn: Any, table: str, entity_id: str, dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        # Nothing committed since the last check, by this connection (total_changes) or any
        # other (data_version): the copy checked then is still the store's. Counting 100k
        # rows on every search cost 3 to 10 ms.
        state = _state(conn)
        checked = self._checked.get(entity_id)
        if (
            state is not None
            and checked is not None
            and checked[0][0] is state[0]  # the same connection object, not a reused id
            and checked[0][1:] == state[1:]
        ):
            return checked[1], checked[2]
        ids, matrix = self._checked_copy(conn, table, entity_id, dim)
        if state is not None:
            self._checked[entity_id] = (state, ids, matrix)
        return ids, matrix

    def _checked_copy(
        self, conn: Any, table: str, entity_id: str, dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        count, top = conn.execute(
            "SELECT count(*), coalesce(max(message_id), 0) FROM message_embeddings "
            "WHERE entity_id = ?",
            (entity_id,),
        ).fetchone()
        ids, matrix = self._load(entity_id, dim)
        if len(ids) == count and (count == 0 or int(ids.max()) == top):
            return ids, matrix
        with self._locked(entity_id):
            ids, matrix = self._load(entity_id, dim)
            known = int(ids.max()) if len(ids) else 0
            (below,) = conn.execute(
                "SELECT count(*) FROM message_embeddings WHERE entity_id = ? AND message_id <= ?",
                (entity_id, known),
            ).fetchone()
            if below == len(ids) and count - below <= CATCH_UP_LIMIT:
                self._catch_up(conn, table, entity_id, known)
            else:
                self._rebuild(conn, table, entity_id, dim)
            return self._load(entity_id, dim)

    def _catch_up(self, conn: Any, table: str, entity_id: str, known: int) -> None:
        missing = [
            mid
            for (mid,) in conn.execute(
                "SELECT message_id FROM message_embeddings WHERE entity_id = ? AND message_id > ? "
                "ORDER BY message_id",
                (entity_id, known),
            )
        ]
        rows = [
            conn.execute(f"SELECT embedding FROM {table} WHERE message_id = ?", (mid,)).fetchone()
            for mid in missing
        ]
        kept = [(mid, row[0]) for mid, row in zip(missing, rows, strict=True) if row is not None]
        ids_path, vec_path = self._files(entity_id)
        with open(vec_path, "ab") as handle:
            handle.write(b"".join(blob for _, blob in kept))
        with open(ids_path, "ab") as handle:
            handle.write(np.asarray([mid for mid, _ in kept], dtype=np.int64).tobytes())

    def _rebuild(self, conn: Any, table: str, entity_id: str, dim: int) -> None:
        if table.startswith("vec_"):
            ids, matrix = _read_partition(conn, table, entity_id, dim)
        else:
            ids, matrix = read_blobs(conn, table, entity_id, dim)
        ids_path, vec_path = self._files(entity_id)
        for path, data in ((vec_path, matrix.tobytes()), (ids_path, ids.tobytes())):
            partial = path.with_suffix(path.suffix + ".partial")
            partial.write_bytes(data)
            os.chmod(partial, 0o600)
            os.replace(partial, path)

    def _load(self, entity_id: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        ids_path, vec_path = self._files(entity_id)
        if not ids_path.exists() or not vec_path.exists():
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        ids = np.fromfile(ids_path, dtype=np.int64)
        size = vec_path.stat().st_size
        cached = self._maps.get(vec_path)
        if cached is None or cached[0] != size:
            mapped = (
                np.memmap(vec_path, dtype=np.float32, mode="r") if size else np.zeros(0, np.float32)
            )
            cached = (size, mapped.reshape(-1, dim))
            self._maps[vec_path] = cached
        return ids, cached[1][: len(ids)]


def _state(conn: Any) -> tuple[Any, int, int] | None:
    """What changes whenever anything commits to the database ``conn`` sees: the connection
    itself, ``data_version`` and ``total_changes``; None where the driver does not say."""
    changes = getattr(conn, "total_changes", None)
    if not isinstance(changes, int):
        return None
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return conn, int(version), changes


def nearest(
    ids: np.ndarray, matrix: np.ndarray, vector: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """The ``k`` rows of ``matrix`` (unit vectors, one per id) nearest to ``vector``:
    (id, cosine distance), nearest first, equal distances in id order. The numpy path's one
    search; the sqlite-vec path ranks its candidates with it too, so both agree exactly (ties
    included: the same vector stored twice is common)."""
    if len(ids) == 0 or k <= 0:
        return []
    similarity = matrix @ np.asarray(vector, dtype=np.float32)
    if k < len(ids):
        kth = np.partition(similarity, len(ids) - k)[len(ids) - k]
        candidates = np.nonzero(similarity >= kth)[0]  # every row tied with the k-th too
    else:
        candidates = np.arange(len(ids))
    order = np.lexsort((ids[candidates], -similarity[candidates]))[:k]
    return [(int(ids[i]), float(1.0 - similarity[i])) for i in candidates[order]]


def read_blobs(
    conn: Any, table: str, entity_id: str, dim: int, key: str = "message_id"
) -> tuple[np.ndarray, np.ndarray]:
    """Every (id, vector) of the entity from a BLOB table (``message_embeddings``,
    ``memory_embeddings``), in id order."""
    rows = conn.execute(
        f"SELECT {key}, embedding FROM {table} WHERE entity_id = ? AND embedding IS NOT NULL "
        f"ORDER BY {key}",
        (entity_id,),
    ).fetchall()
    ids = np.asarray([mid for mid, _ in rows], dtype=np.int64)
    matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(-1, dim)
    return ids, np.ascontiguousarray(matrix)


def _read_partition(
    conn: Any, table: str, entity_id: str, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every (id, vector) of the entity's partition.

    vec0 answers ``WHERE entity_id = ?`` outside a KNN with a scan of the whole table (about a
    second per 200k rows), so the partition's chunks are read from vec0's own tables (5 ms per
    10k rows): chunk rows hold a validity bitmap and the rowids, vector chunks the float32 rows.
    That layout is sqlite-vec's, not a public interface: the result is checked against
    ``message_embeddings`` and any surprise falls back to the slow scan.
    """
    try:
        ids, matrix = read_chunks(conn, table, dim, entity_id)
        expected = {
            mid
            for (mid,) in conn.execute(
                "SELECT message_id FROM message_embeddings WHERE entity_id = ?", (entity_id,)
            )
        }
        if len(ids) == len(expected) and set(ids.tolist()) == expected:
            return ids, matrix
    except Exception:  # a layout this code does not know: take the slow, public path
        pass
    rows = conn.execute(
        f"SELECT message_id, embedding FROM {table} WHERE entity_id = ?", (entity_id,)
    ).fetchall()
    ids = np.asarray([mid for mid, _ in rows], dtype=np.int64)
    matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(-1, dim)
    return ids, matrix
