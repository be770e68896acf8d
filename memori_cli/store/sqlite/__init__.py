"""SQLite, the first :class:`~memori_cli.store.backend.Backend`: one file on one disk.

Stores opened by path use the sqlean.py driver (SQLite 3.50, loads sqlite-vec); a caller's
connection may come from any DB-API SQLite driver (see :mod:`memori_cli.store.connect`).
Writes are ``BEGIN IMMEDIATE`` transactions in WAL mode; other processes' commits are seen
through ``PRAGMA data_version`` and, as hints, file events on the store's folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from .. import connect, migrations, vec0

#: SQLite result codes (the primary code, the low byte of an extended one).
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 11, 13, 26
#: Below this much free space an I/O error opening or writing the store is taken for a full
#: disk (SQLite reports a ``-shm`` file it cannot grow as a plain "disk I/O error").
FULL_BELOW_BYTES = 1 << 20


def free_bytes(path: Path) -> int | None:
    """Free bytes (for this user) on the file system holding ``path``; None if unknown."""
    try:
        return shutil.disk_usage(path.parent if str(path.parent) else Path(".")).free
    except OSError:
        return None


def error_code(exc: BaseException) -> int:
    """The primary SQLite result code of a driver error (0 when the driver gives none)."""
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def disk_full(exc: BaseException, path: Path | None) -> bool:
    """Whether ``exc`` (a driver error) comes from a full disk or quota."""
    text = str(exc)
    if error_code(exc) == SQLITE_FULL or "disk is full" in text:
        return True
    if path is not None and "disk I/O error" in text:
        free = free_bytes(path)
        return free is not None and free < FULL_BELOW_BYTES
    return False


# What FTS5's unicode61 tokenizer indexes: runs of word characters.
_TOKEN = re.compile(r"\w+")
# bm25 column weights: messages' content, speaker name, entity id (a filter, never a score)
# and context (the end of the turn before, below the message's own words: 0.15-0.5 measured
# alike, see store.reply); memories' content, the person they are about, entity id.
_MESSAGE_WEIGHTS = "1.0, 0.5, 0.0, 0.3"
_MEMORY_WEIGHTS = "1.0, 0.3, 0.0"


def fts5_match(terms: list[str]) -> str:
    """An FTS5 MATCH expression OR-ing ``terms`` as quoted literals (a word's own quotes
    doubled), so no word is ever read as query syntax (``AND``, ``NOT``, ``col:``, ``*``)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _several_entities(conn: Any) -> bool:
    (count,) = conn.execute("SELECT count(*) FROM (SELECT 1 FROM entities LIMIT 2)").fetchone()
    return bool(count > 1)


class SqliteBackend:
    """The SQLite engine (see the module docstring). Stateless: one instance serves all."""

    name = "sqlite"
    paramstyle = "qmark"
    errors = connect.DatabaseError
    #: Scalar smallest / largest of two values: SQLite's two-argument min / max.
    least, greatest = "min", "max"

    # -- connections -----------------------------------------------------------------------
    def connect(self, target: str, *, read_only: bool = False) -> Any:
        return connect.connect_read_only(target) if read_only else connect.connect_path(target)

    def connect_like(self, conn: Any, target: str) -> Any:
        return connect.same_driver(conn, target)

    def adapt(self, conn: Any) -> Any:
        return conn  # the shared modules' SQL is SQLite's own

    def configure(self, conn: Any, *, read_only: bool = False) -> None:
        connect.configure(conn, read_only=read_only)

    # -- what the shared SQL spells differently --------------------------------------------
    def json_array(self, expr: str) -> str:
        return f"json_group_array({expr})"

    def after_delete(self, tx: Any) -> None:
        connect.purge_fts(tx)  # where FTS5 secure-delete is off (SQLite before 3.44)

    def now(self, conn: Any) -> float:
        return time.time()  # one file on one host: the host's clock

    def migrate(self, conn: Any) -> None:
        # One BEGIN IMMEDIATE for all pending migrations; an up-to-date store is only read.
        migrations.migrate(conn)

    # -- transactions ----------------------------------------------------------------------
    def begin(self, conn: Any, *, entity: str | None = None) -> None:
        conn.execute("BEGIN IMMEDIATE")  # one writer per file: no per-entity lock needed

    def begin_queue(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def commit(self, conn: Any) -> None:
        vec0.sync(conn)  # rows a connection without sqlite-vec wrote: into vec0
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        conn.execute("ROLLBACK")

    def in_transaction(self, conn: Any) -> bool:
        return bool(getattr(conn, "in_transaction", False))

    def is_full(self, exc: BaseException, target: Path | None) -> bool:
        return disk_full(exc, target)

    def is_transient(self, exc: BaseException) -> bool:
        return connect.is_transient(exc)

    def is_lost(self, exc: BaseException) -> bool:
        return False

    def is_broken(self, conn: Any) -> bool:
        return False

    # -- search ----------------------------------------------------------------------------
    def lexical_messages(
        self,
        conn: Any,
        terms: list[str],
        *,
        entity_id: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> list[dict[str, Any]]:
        # Words match what was said, who said it and what it replied to, never the entity id.
        expression = f"{{content name context}} : ({fts5_match(terms)})"
        if _TOKEN.search(entity_id.replace("_", " ")) and _several_entities(conn):
            # Narrow to the entity inside FTS5; the join below still decides (ids that
            # tokenize alike, such as "d'or" and "d-or", share these postings). With one
            # entity in the store this would only add work.
            escaped = entity_id.replace('"', '""')
            expression = f'entity_id : "{escaped}" AND {expression}'
        conditions = " AND ".join(["messages_fts MATCH ?", "m.entity_id = ?", *where])
        cursor = conn.execute(
            f"""SELECT m.id, m.role, m.content, m.name, m.created_at, m.external_id,
                       m.entity_id, m.process_id, s.name AS session, m.trust, m.uses,
                       -bm25(messages_fts, {_MESSAGE_WEIGHTS}) AS score
                FROM messages_fts
                JOIN messages m ON m.id = messages_fts.rowid
                JOIN sessions s ON s.id = m.session_id
                WHERE {conditions}
                ORDER BY bm25(messages_fts, {_MESSAGE_WEIGHTS})
                LIMIT ?""",
            [expression, entity_id, *params, limit],
        )
        return connect.dict_rows(cursor)

    def lexical_memories(
        self,
        conn: Any,
        terms: list[str],
        *,
        entity_id: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> list[tuple[int, float]]:
        conditions = " AND ".join(["memories_fts MATCH ?", "m.entity_id = ?", *where])
        rows = conn.execute(
            f"""SELECT m.id, -bm25(memories_fts, {_MEMORY_WEIGHTS}) AS score
                FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid
                WHERE {conditions}
                ORDER BY bm25(memories_fts, {_MEMORY_WEIGHTS}) LIMIT ?""",
            [fts5_match(terms), entity_id, *params, limit],
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    # -- bulk writes -----------------------------------------------------------------------
    def insert_messages(self, tx: Any, rows: list[tuple[Any, ...]]) -> list[tuple[int, str, int]]:
        (before,) = tx.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        # One statement for the whole batch: SQLite then works without the GIL, so an
        # import's parsing thread keeps running meanwhile (executemany rebinds every row).
        columns = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(12))
        tx.execute(
            f"""INSERT INTO messages (entity_id, process_id, session_id, role, content, name,
                   created_at, external_id, content_hash, trust, source, context)
                SELECT {columns} FROM json_each(?) WHERE true ORDER BY key
                ON CONFLICT DO NOTHING""",
            (json.dumps(rows, ensure_ascii=False),),
        )
        # Holding the write lock (BEGIN IMMEDIATE), every id above `before` is ours.
        return [
            (int(mid), str(entity_id), int(session_id))
            for mid, entity_id, session_id in tx.execute(
                "SELECT id, entity_id, session_id FROM messages WHERE id > ? ORDER BY id",
                (before,),
            )
        ]

    def insert_jobs(self, tx: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        (before,) = tx.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()
        tx.executemany(
            """INSERT INTO jobs (kind, entity_id, session_id, payload, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            rows,
        )
        return [int(i) for (i,) in tx.execute("SELECT id FROM jobs WHERE id > ?", (before,))]

    # -- the queue -------------------------------------------------------------------------
    def claim_jobs(
        self,
        tx: Any,
        owner: str,
        *,
        now: float,
        lease: float,
        limit: int,
        ids: list[int] | None,
        max_attempts: int,
        stamp: str,
    ) -> list[tuple[Any, ...]]:
        # One writer at a time (BEGIN IMMEDIATE): the UPDATE ... RETURNING is the claim.
        tx.execute(
            """UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires = NULL,
                   error = 'its worker stopped before finishing it ' || attempts || ' times',
                   updated_at = ?
               WHERE status = 'running' AND lease_expires < ? AND attempts >= ?""",
            (stamp, now, max_attempts),
        )
        among = "" if ids is None else f"AND id IN ({','.join(map(str, ids)) or 'NULL'})"
        return [
            tuple(row)
            for row in tx.execute(
                f"""UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires = ?,
                       attempts = attempts + 1, updated_at = ?
                   WHERE id IN (
                       SELECT id FROM jobs
                       WHERE ((status = 'pending' AND run_after <= ?)
                          OR (status = 'running' AND lease_expires < ?)) {among}
                       ORDER BY id LIMIT ?)
                   RETURNING id, kind, entity_id, session_id, payload, attempts""",
                (owner, now + lease, stamp, now, now, limit),
            ).fetchall()
        ]

    def lease_held(self, tx: Any, job_id: int, owner: str) -> bool:
        row = tx.execute(
            "SELECT 1 FROM jobs WHERE id = ? AND status = 'running' AND lease_owner = ?",
            (job_id, owner),
        ).fetchone()
        return row is not None

    # -- changes and housekeeping ----------------------------------------------------------
    def change_token(self, conn: Any) -> int:
        # Changes when another connection commits to the file (not for this one's commits).
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def watch(self, target: Path | str, stop: threading.Event, wake: threading.Event) -> None:
        # A commit touches the -wal file, never the .db itself: watch the folder for the
        # store's files. Raises ImportError/OSError where file events are not available.
        import watchfiles

        target = Path(target)
        prefix = target.name

        def ours(change: Any, path: str) -> bool:
            return Path(path).name.startswith(prefix)

        for _ in watchfiles.watch(
            target.parent,
            watch_filter=ours,
            stop_event=stop,
            debounce=20,
            step=10,
            recursive=False,
            rust_timeout=1000,
            yield_on_timeout=False,
        ):
            wake.set()

    def after_forget(self, conn: Any, *, attempts: int = 5, wait_ms: int = 200) -> bool:
        # Copy the WAL into the database file and truncate it. A reader elsewhere holding an
        # older snapshot keeps the checkpoint from completing (busy, or fewer frames copied
        # than the log holds); each attempt waits at most wait_ms on the busy handler.
        conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
        try:
            for attempt in range(max(1, attempts)):
                if attempt:
                    time.sleep(wait_ms / 1000 * attempt)
                busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                # (0, -1, -1): not in WAL mode, nothing to copy. (0, n, n): all of it copied.
                if not busy and log == done:
                    return True
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {connect.BUSY_TIMEOUT_MS}")

    def size_bytes(self, conn: Any) -> int | None:
        return None  # the file's, its -wal's and -shm's sizes: Memori.stats adds them up

    def versions(self, conn: Any) -> dict[str, str]:
        return connect.versions(conn)

    def checks(self, conn: Any | None) -> list[dict[str, str]]:
        """``memori doctor``'s lines about the engine: driver and versions, which vector
        search the store takes and why, and its search index (``conn`` None: no store could
        be opened, so a fresh in-memory connection says what this machine's SQLite has)."""
        from ...errors import MemoriError

        opened = conn is not None
        if conn is None:
            conn = connect.connect_path(":memory:")
        checks: list[dict[str, str]] = []
        try:
            if not opened:
                connect.load_vec(conn)
            versions = connect.versions(conn)
            checks.append(
                {
                    "check": "sqlite",
                    "status": "ok",
                    "detail": f"{versions['driver']}, SQLite {versions['sqlite']}, "
                    f"sqlite-vec {versions['sqlite_vec']}",
                }
            )
        except MemoriError as exc:
            checks.append({"check": "sqlite", "status": "fail", "detail": str(exc)})
        checks.append(_vector_path_check(conn, opened))
        if opened:
            checks.append(_fts_check(conn))
        else:
            conn.close()
        return checks


def _vector_path_check(conn: Any, opened: bool) -> dict[str, str]:
    """Which vector search this store's connection takes and why, and what a stdlib
    ``sqlite3`` connection (``Memori(conn=lambda: sqlite3.connect(...))``) would take."""
    import sqlite3

    from ...errors import MemoriError

    name, why = connect.vector_path(conn)
    if opened and name == "sqlite-vec" and not vec0.usable(conn):
        with contextlib.suppress(Exception):  # a store without vectors yet has no index
            if conn.execute("SELECT 1 FROM message_embeddings LIMIT 1").fetchone():
                name, why = (
                    "numpy",
                    (
                        why + ", but its vec0 index lags vectors written without sqlite-vec; "
                        "searches take the numpy path until the next write brings it in step"
                    ),
                )
    probe = sqlite3.connect(":memory:")
    try:
        stdlib_name, _ = connect.vector_path(probe)
        stdlib = f"SQLite {sqlite3.sqlite_version}: the {stdlib_name} path"
        try:
            connect.check_fts5(probe)
        except MemoriError:
            stdlib += ", and no FTS5: memori cannot use it"
    finally:
        probe.close()
    return {
        "check": "vector path",
        "status": "ok",
        "detail": f"{name}: {why} (a stdlib sqlite3 connection here: {stdlib})",
    }


def _fts_check(conn: Any) -> dict[str, str]:
    if connect.fts_secure_delete(conn):
        detail = "FTS5 with secure-delete: forgotten text leaves the search index at once"
    else:
        detail = (
            "FTS5 without secure-delete (the store was made or opened by SQLite before 3.44): "
            "forgetting merges the search index so forgotten text leaves it"
        )
    return {"check": "search index", "status": "ok", "detail": detail}


#: The SQLite backend (stateless, shared).
SQLITE = SqliteBackend()
