"""Message and memory vectors on pgvector: the PostgreSQL side of :mod:`memori_cli.store.vectors`.

Vectors live in ``message_embeddings.embedding`` / ``memory_embeddings.embedding``
(``vector`` columns; one model, so one dimension, per store: ``settings``). A search takes the
entity in the statement and ranks as the SQLite paths rank: (distance, id).

- **Exact** (every entity's memories; an entity's messages below :data:`HNSW_MIN_ROWS`): cosine
  distance (``<=>``) over the entity's rows. Measured here (384-d MiniLM vectors of LongMemEval
  turns): 9.9 ms at 10k rows per entity, linear in the rows.
- **HNSW** (an entity's messages from :data:`HNSW_MIN_ROWS` on): a partial HNSW index of that
  entity's rows (``WHERE entity_id = '...'``), built ``CONCURRENTLY`` once the entity crosses
  the size (after the commit that made it cross: writes go on meanwhile) and has no
  augmentation job left (a history being imported is indexed in one pass), searched with
  ``hnsw.ef_search`` :data:`EF_SEARCH`: 3.2 ms at 10k rows, 99.5% of the exact top 50 (the
  same MiniLM measurement). Approximate: above the size, PostgreSQL's neighbours may differ
  from SQLite's exact ones in a few of the last places.
- **The process's copy** (an entity's messages from :data:`CACHE_MIN_ROWS` on, within the
  budget ``config.vector_cache_mb``, from the entity's second search): :class:`VectorCache`,
  checked against the server's counts on every search; first, when it serves, so the two
  paths above are for small entities, entities searched once, copies that do not fit, and
  processes with the copies off.

On the server, pgvector picks the candidates and their vectors are scored with numpy
(:func:`~memori_cli.store.matrix.nearest`, SQLite's own ranking), so equal distances come in id
order. There is no vec0 index and no memory-mapped file: the server holds the stored copy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..matrix import nearest
from .qmark import unwrap as _raw

log = logging.getLogger("memori.store")


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


#: An entity with this many message vectors gets a partial HNSW index of its own.
HNSW_MIN_ROWS = 10_000
#: ``hnsw.ef_search`` of memori's connections (the candidates an HNSW scan keeps: at least the
#: rows a search asks for; 200 held 99.5% of the exact top 50 at 10k MiniLM vectors).
EF_SEARCH = 200
#: Distances this close to the k-th are ties at the cut: the server is asked for more rows.
_TIE = 1e-6
#: What names an entity's HNSW index (its comment holds the entity id).
_HNSW_PREFIX = "message_embeddings_hnsw_"


def hnsw_name(entity_id: str) -> str:
    """The name of the entity's HNSW index (a hash: any entity id makes a valid name)."""
    return _HNSW_PREFIX + hashlib.blake2b(entity_id.encode("utf-8"), digest_size=12).hexdigest()


def _hnsw_valid(raw: Any, entity_id: str) -> bool:
    row = raw.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
        (hnsw_name(entity_id),),
    ).fetchone()
    return bool(row and row[0])


def after_commit(conn: Any, fresh: Mapping[str, Any], dim: int) -> None:
    """After a commit that stored message vectors (outside a transaction): give each of the
    entities in ``fresh`` that has reached :data:`HNSW_MIN_ROWS` its HNSW index, if it has none
    yet and no augmentation job of it is left to run (built ``CONCURRENTLY``: other writes go
    on; a build left invalid by a crash is rebuilt). Until then its search is exact."""
    import psycopg
    from psycopg.pq import TransactionStatus

    raw = _raw(conn)
    if raw.info.transaction_status != TransactionStatus.IDLE:
        return  # inside a caller's transaction: the next commit outside one builds it
    for entity_id in fresh:
        if _hnsw_valid(raw, entity_id):
            continue
        (count,) = raw.execute(
            "SELECT count(*) FROM message_embeddings WHERE entity_id = %s", (entity_id,)
        ).fetchone()
        if int(count) < HNSW_MIN_ROWS or _backlog(raw, entity_id):
            continue
        name = hnsw_name(entity_id)
        entity = raw.execute("SELECT quote_literal(%s::text)", (entity_id,)).fetchone()[0]
        try:
            raw.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')  # an invalid one
            raw.execute(
                f'CREATE INDEX CONCURRENTLY "{name}" ON message_embeddings USING hnsw '
                f"((embedding::vector({int(dim)})) vector_cosine_ops) WHERE entity_id = {entity}"
            )
            raw.execute(f'COMMENT ON INDEX "{name}" IS {entity}')
        except psycopg.errors.InsufficientPrivilege:
            # A role that is not the tables' owner (row-level security's app roles): the
            # search stays exact until the owner's next write of the entity's vectors builds it.
            log.info("no HNSW index for a large entity: this role does not own the tables")
            return


def _backlog(raw: Any, entity_id: str) -> bool:
    """Whether the entity still has augmentation jobs to run (a history being imported): its
    index is then built once they are done, in one pass over the loaded rows, rather than
    now and then kept up vector by vector (measured here: inserting 90,000 more vectors into
    an entity's index took 545 s, about 6 ms each)."""
    row = raw.execute(
        """SELECT 1 FROM jobs WHERE entity_id = %s AND status IN ('pending', 'running')
           LIMIT 1""",
        (entity_id,),
    ).fetchone()
    return row is not None


def drop_indexes(conn: Any, *, unused_only: bool = False) -> list[str]:
    """Drop the entities' HNSW indexes (all: inside the write that resets the vectors, as a
    new model's dimension would not fit them; ``unused_only``: outside a transaction, those
    of entities with no message vectors left, after a forget). The names dropped."""
    raw = _raw(conn)
    found = raw.execute(
        """SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'i' AND n.nspname = current_schema() AND c.relname LIKE %s""",
        (_HNSW_PREFIX + "%",),
    ).fetchall()
    dropped = []
    for name, entity_id in found:
        if (
            unused_only
            and entity_id is not None
            and raw.execute(
                "SELECT 1 FROM message_embeddings WHERE entity_id = %s LIMIT 1", (entity_id,)
            ).fetchone()
        ):
            continue
        concurrently = "CONCURRENTLY " if unused_only else ""
        raw.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')
        dropped.append(str(name))
    return dropped


#: An entity with this many message vectors is searched in the process's copy of them.
CACHE_MIN_ROWS = 2_000
#: The default memory budget of those copies, per process (MB; ``config.vector_cache_mb``).
CACHE_MB = 512
#: A copy unused this long may make room for another entity's (seconds). Fresher ones are
#: never evicted: under a budget smaller than the entities searched, copies would be
#: reloaded on every search, which costs more than searching on the server.
CACHE_IDLE_SECONDS = 60.0
#: An entity's vectors are copied at its this-many-th search within
#: :data:`CACHE_IDLE_SECONDS`; until then the server searches. Fetching a copy costs several
#: server searches (10k MiniLM-sized vectors at 1M over 100 entities: a fetch 45-70 ms, a
#: search through the entity's HNSW index 8 ms), so an entity searched once is not copied.
CACHE_AFTER_SEARCHES = 2
#: Whether a new copy is fetched in a thread of its own (on its own connection), the search
#: that asked for it going to the server meanwhile: no search waits for a fetch. Only for a
#: store that opens its own connections (a URL or a factory), never on one handed over.
CACHE_IN_BACKGROUND = True


@dataclasses.dataclass
class _Copy:
    generation: int
    cleared: int
    rows: int  # the rows it has seen, vectorless ones included (as vector_counts counts)
    last: int  # the highest message id among them
    ids: np.ndarray
    matrix: np.ndarray
    used: float

    @property
    def size(self) -> int:
        return int(self.matrix.nbytes + self.ids.nbytes)


class VectorCache:
    """This process's copies of large entities' message vectors (float32, as stored), so a
    search is numpy's over memory rather than a scan or an HNSW walk on the server: the
    role of SQLite's memory-mapped matrix copies. The server stays the source of truth:
    each search reads the entity's row of ``vector_counts`` (kept by triggers on
    ``message_embeddings``, m010) and uses the copy only while it is current, fetching the
    rows added since when nothing was deleted, and the whole entity again otherwise; the
    stamps and the rows come from one statement (one snapshot). Searches rank with
    :func:`~memori_cli.store.matrix.nearest`, as everywhere else, so the hits are the exact
    ones SQLite would give. A new copy is fetched in the background where the store opens
    its own connections (:data:`CACHE_IN_BACKGROUND`)."""

    def __init__(self, budget_mb: float, store: Any = None):
        self.budget = int(budget_mb * 1024 * 1024)
        #: The store, where it opens a connection per thread: new copies are then fetched in
        #: the background (:data:`CACHE_IN_BACKGROUND`).
        self.store = store
        self._lock = threading.Lock()
        self._copies: OrderedDict[str, _Copy] = OrderedDict()  # least recently used first
        self._searched: dict[str, tuple[int, float]] = {}  # not copied: (searches, last)
        self._fetching: dict[str, threading.Thread] = {}

    def clear(self) -> None:
        with self._lock:
            self._copies.clear()
            self._searched.clear()

    def search(
        self, raw: Any, entity_id: str, state: tuple[Any, ...], query: np.ndarray, k: int
    ) -> list[tuple[int, float]] | None:
        """The entity's ``k`` nearest messages from its copy, or None where the server
        should search (a small entity, one searched once, one whose copy does not fit the
        budget or is being fetched, or counts that do not add up). ``state``: the entity's
        (generation, cleared, rows) in ``vector_counts``, or Nones where it has no row. A
        copy that is behind is brought up to date by this search (the rows added since; all
        of them after a delete)."""
        if state[0] is None:
            self._drop(entity_id)
            return None  # no vectors ever stored (or none this role may see)
        generation, cleared, rows = (int(v) for v in state)
        dim = int(query.shape[0])
        size = rows * (dim * 4 + 8)  # float32 vectors and int64 ids
        if rows < CACHE_MIN_ROWS or size > self.budget:
            self._drop(entity_id)
            return None
        with self._lock:
            copy = self._copies.get(entity_id)
            if copy is None and (
                entity_id in self._fetching
                or not (self._searched_enough(entity_id) and self._room(size))
            ):
                return None  # the server searches (a copy fetched now would not pay, or fit)
            if copy is None and self.store is not None and CACHE_IN_BACKGROUND:
                self._fetch_in_background(entity_id, dim)
                return None
        if copy is None or copy.generation != generation:
            copy = self._refreshed(raw, entity_id, copy, cleared, dim)
            if copy is None:
                return None
        copy.used = time.monotonic()
        with self._lock:
            if entity_id in self._copies:
                self._copies.move_to_end(entity_id)
        return nearest(copy.ids, copy.matrix, query, k)

    def _searched_enough(self, entity_id: str) -> bool:
        """Under the lock: count a search of an entity that has no copy; whether it has now
        been searched :data:`CACHE_AFTER_SEARCHES` times, none of them idle for longer than
        :data:`CACHE_IDLE_SECONDS` since the one before."""
        now = time.monotonic()
        idle = now - CACHE_IDLE_SECONDS
        if len(self._searched) > 10_000:  # entities searched once, long ago
            self._searched = {e: seen for e, seen in self._searched.items() if seen[1] >= idle}
        count, last = self._searched.get(entity_id, (0, now))
        count = count + 1 if last >= idle else 1
        if count >= CACHE_AFTER_SEARCHES:
            self._searched.pop(entity_id, None)
            return True
        self._searched[entity_id] = (count, now)
        return False

    def _fetch_in_background(self, entity_id: str, dim: int) -> None:
        """Under the lock: fetch the entity's copy in a thread of its own, on that thread's
        connection (closed after)."""

        def fetch() -> None:
            try:
                self._refreshed(_raw(self.store.conn), entity_id, None, 0, dim)
            except Exception as exc:  # the server searches on; the next search tries again
                log.warning("could not copy an entity's vectors: %s", exc)
            finally:
                with self._lock:
                    self._fetching.pop(entity_id, None)
                self.store.close_thread()

        thread = threading.Thread(target=fetch, name="memori-vector-copy", daemon=True)
        self._fetching[entity_id] = thread
        thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the copies being fetched in the background."""
        with self._lock:
            threads = list(self._fetching.values())
        for thread in threads:
            thread.join(timeout)

    def _drop(self, entity_id: str) -> None:
        with self._lock:
            self._copies.pop(entity_id, None)

    def _refreshed(
        self, raw: Any, entity_id: str, copy: _Copy | None, cleared: int, dim: int
    ) -> _Copy | None:
        """The entity's copy brought up to date: the rows added since, or all of them."""
        if copy is not None and copy.cleared == cleared:
            added = _fetch(raw, entity_id, copy.last, dim)
            if (
                added is not None
                and added.cleared == copy.cleared
                and copy.rows + added.rows == added.generation_rows  # nothing committed late
            ):
                grown = _Copy(
                    added.generation, copy.cleared, added.generation_rows,
                    max(copy.last, added.last), np.concatenate([copy.ids, added.ids]),
                    np.concatenate([copy.matrix, added.matrix]), time.monotonic(),
                )  # fmt: skip
                return self._keep(entity_id, grown)
        whole = _fetch(raw, entity_id, 0, dim)
        if whole is None or whole.rows != whole.generation_rows:
            # The counts disagree with the rows (vectors of another dimension, or counts
            # changed behind the triggers' back): the server searches.
            self._drop(entity_id)
            return None
        fresh = _Copy(whole.generation, whole.cleared, whole.rows, whole.last, whole.ids,
                      whole.matrix, time.monotonic())  # fmt: skip
        return self._keep(entity_id, fresh)

    def _keep(self, entity_id: str, copy: _Copy) -> _Copy | None:
        """Hold ``copy`` if it fits the budget, making room from copies idle long enough."""
        with self._lock:
            self._copies.pop(entity_id, None)
            if not self._room(copy.size):
                return None
            self._copies[entity_id] = copy
            return copy

    def _room(self, size: int) -> bool:
        """Under the lock: whether ``size`` more bytes fit the budget, once copies unused for
        :data:`CACHE_IDLE_SECONDS` are let go (least recently used first) as needed."""
        held = sum(c.size for c in self._copies.values())
        idle = time.monotonic() - CACHE_IDLE_SECONDS
        for other in list(self._copies):
            if held + size <= self.budget:
                break
            if self._copies[other].used < idle:
                held -= self._copies.pop(other).size
        return held + size <= self.budget


@dataclasses.dataclass
class _Fetched:
    generation: int
    cleared: int
    generation_rows: int  # the entity's count at that generation
    rows: int  # the rows fetched, vectorless ones included
    last: int  # the highest message id among them (``after`` if none)
    ids: np.ndarray
    matrix: np.ndarray


def _fetch(raw: Any, entity_id: str, after: int, dim: int) -> _Fetched | None:
    """The entity's stamps and its vectors with ids above ``after``, in one statement (one
    snapshot); None if one has another dimension.

    A binary COPY that numpy parses whole, as every tuple has one layout: the stamps, a
    message id, what its row holds (:data:`_NO_ROW`, :data:`_NO_VECTOR`, :data:`_VECTOR`
    or :data:`_OTHER_DIM`) and a vector (zeros where the row has none of this dimension).
    Rows read one by one through psycopg took 101 ms for an entity of 10k MiniLM vectors
    here; this takes about 35 ms, most of it the server's ``vector_send``."""
    from psycopg import sql

    query = sql.SQL(
        """COPY (
            SELECT c.generation, c.cleared, c.rows, coalesce(e.message_id, 0),
                   CASE WHEN e.message_id IS NULL THEN {no_row}
                        WHEN e.embedding IS NULL THEN {no_vector}
                        WHEN vector_dims(e.embedding) = {dim} THEN {vector}
                        ELSE {other_dim} END,
                   CASE WHEN vector_dims(e.embedding) = {dim} THEN e.embedding
                        ELSE array_fill(0::real, ARRAY[{dim}])::vector END
            FROM vector_counts c
            LEFT JOIN message_embeddings e
                ON e.entity_id = c.entity_id AND e.message_id > {after}
            WHERE c.entity_id = {entity}
        ) TO STDOUT (FORMAT binary)"""
    ).format(
        no_row=_NO_ROW, no_vector=_NO_VECTOR, vector=_VECTOR, other_dim=_OTHER_DIM,
        dim=int(dim), after=int(after), entity=entity_id,
    )  # fmt: skip
    data = bytearray()
    with raw.cursor() as cursor, cursor.copy(query) as copy:
        for chunk in copy:
            data += chunk
    layout = _tuple(dim)
    body = memoryview(data)[_COPY_HEADER : len(data) - 2]  # less the header and the trailer
    if not body:
        return None  # no counts: no vector ever stored (or none this role may see)
    found = np.frombuffer(body, dtype=layout) if len(body) % layout.itemsize == 0 else None
    if found is None or not (
        (found["fields"] == 6).all()
        and all((found[f"l{i}"] == 8).all() for i in range(4))
        and (found["l4"] == 4).all()
        and (found["l5"] == 4 + 4 * dim).all()
        and (found["dim"] == dim).all()
    ):
        log.warning("vectors fetched from PostgreSQL were not in pgvector's binary form")
        return None
    kind = found["kind"]
    if (kind == _OTHER_DIM).any():
        return None
    generation, cleared, count = (int(found[0][f]) for f in ("generation", "cleared", "count"))
    rows = found[kind != _NO_ROW]
    vectors = rows[rows["kind"] == _VECTOR]
    last = int(rows["id"].max()) if len(rows) else after
    ids, matrix = vectors["id"].astype(np.int64), vectors["vector"].astype(np.float32)
    return _Fetched(generation, cleared, count, len(rows), last, ids, matrix)


#: What a fetched tuple's row holds: no row (the entity has none above the id asked for),
#: a row with no vector, a vector, or a vector of another dimension.
_NO_ROW, _NO_VECTOR, _VECTOR, _OTHER_DIM = range(4)
#: A binary COPY's header: its signature, flags and header extension length.
_COPY_HEADER = 19


@functools.cache
def _tuple(dim: int) -> np.dtype:
    """A tuple of :func:`_fetch`'s binary COPY: its field count, then each field's length
    and value (big-endian; the vector in pgvector's binary form: a 2-byte dimension, 2
    unused bytes, float4s)."""
    return np.dtype(
        [("fields", ">i2"), ("l0", ">i4"), ("generation", ">i8"), ("l1", ">i4"),
         ("cleared", ">i8"), ("l2", ">i4"), ("count", ">i8"), ("l3", ">i4"), ("id", ">i8"),
         ("l4", ">i4"), ("kind", ">i4"), ("l5", ">i4"), ("dim", ">i2"), ("unused", ">i2"),
         ("vector", ">f4", (dim,))]
    )  # fmt: skip


def knn(
    conn: Any,
    kind: str,
    entity_id: str,
    query: np.ndarray,
    k: int,
    cache: VectorCache | None = None,
) -> list[tuple[int, float]]:
    """The entity's ``k`` nearest ``kind`` rows (``message`` or ``memory``) to ``query``:
    (id, cosine distance), nearest first, equal distances in id order (see the module
    docstring: from ``cache``, exact, or through the entity's HNSW index)."""
    table, key = TABLES[kind]
    raw = _raw(conn)
    indexed = False
    if kind == "message":
        # One round trip for both: whether the entity has an HNSW index, and its counts.
        indexed, *state = raw.execute(
            """SELECT coalesce((SELECT indisvalid FROM pg_index
                                WHERE indexrelid = to_regclass(%s)), false),
                      c.generation, c.cleared, c.rows
               FROM (SELECT 1) AS one LEFT JOIN vector_counts c ON c.entity_id = %s""",
            (hnsw_name(entity_id), entity_id),
        ).fetchone()
        if cache is not None and cache.budget > 0:
            cached = cache.search(raw, entity_id, tuple(state), query, k)
            if cached is not None:
                return cached
    text = _text(query)
    distance = "embedding <=> %s::vector"
    order = f"{distance}, {key}"
    if indexed:
        # The index's own expression, so the planner takes it (the entity, bound as a
        # parameter, proves the partial index's predicate in memori's custom plans); the
        # distance alone, as the index orders (ties are put in id order below).
        dim = int(query.shape[0])
        distance = order = f"embedding::vector({dim}) <=> %s::vector({dim})"
    fetch = int(k) + 1
    # The candidates with their vectors, in one round trip. Binary: pgvector's send format,
    # a 2-byte dimension, 2 unused bytes, big-endian float4s.
    with raw.cursor(binary=True) as cursor:
        while True:
            rows = cursor.execute(
                f"""SELECT {key}, ({distance})::float8, embedding FROM {table}
                    WHERE entity_id = %s ORDER BY {order} LIMIT %s""",
                (text, entity_id, text, fetch),
            ).fetchall()
            if len(rows) < fetch or rows[-1][1] > rows[k - 1][1] + _TIE:
                break
            fetch *= 2
    if not rows:
        return []
    ids = np.asarray([int(i) for i, _, _ in rows], dtype=np.int64)
    matrix = np.stack([np.frombuffer(blob, dtype=">f4", offset=4) for _, _, blob in rows])
    return nearest(ids, matrix.astype(np.float32), query, k)
