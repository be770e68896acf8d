"""The storage engine behind a :class:`~memori_cli.store.Store`: what differs by engine.

The store's shared modules (messages, memories, graph, jobs) hold the SQL every engine runs
and the rules of the data; what only an engine knows goes through a :class:`Backend`: how to
connect and configure a connection, migrate, begin and end a write, which errors mean a full
disk or a lock to retry, how a process learns that another one committed, how to give back
the space and the log after a forget, and the versions ``memori doctor`` shows. SQLite
(:mod:`memori_cli.store.sqlite`) and PostgreSQL with pgvector (:mod:`memori_cli.store.postgres`)
implement it; :func:`backend_for` picks the one a ``conn`` argument asks for.

A backend imports nothing above the store (it is what the store stands on).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import StoreError
from .sqlite import SQLITE


@runtime_checkable
class Backend(Protocol):
    """One storage engine. Connections are the engine driver's own (DB-API 2.0)."""

    #: The engine's name, as ``memori doctor`` shows it ("sqlite").
    name: str
    #: The DB-API parameter style of the SQL the shared modules write ("qmark": ``?``).
    paramstyle: str
    #: The base classes of the driver's errors (catch them as ``except backend.errors``).
    errors: tuple[type[Exception], ...]
    #: The SQL functions of the smaller / larger of two values (SQLite's scalar ``min`` /
    #: ``max``, PostgreSQL's ``least`` / ``greatest``).
    least: str
    greatest: str

    # -- connections -----------------------------------------------------------------------
    def connect(self, target: str, *, read_only: bool = False) -> Any:
        """A new connection to the store at ``target``, in autocommit mode (memori begins
        its own transactions), usable from any thread; ``read_only`` writes nothing."""
        ...

    def connect_like(self, conn: Any, target: str) -> Any:
        """A new connection to ``target`` from the driver ``conn`` comes from (a caller's
        connection used from another thread gets a sibling, never a second driver)."""
        ...

    def adapt(self, conn: Any) -> Any:
        """``conn`` (the driver's connection) as the store uses it: one that runs the shared
        modules' SQL (``?`` placeholders). SQLite: ``conn`` itself."""
        ...

    def configure(self, conn: Any, *, read_only: bool = False) -> None:
        """Set on a new connection what memori relies on (timeouts, durability, extensions);
        raise :class:`~memori_cli.errors.ExtensionError` if the engine lacks a feature."""
        ...

    def migrate(self, conn: Any) -> None:
        """Bring the schema up to date, once, even with several processes opening at once."""
        ...

    # -- what the shared SQL spells differently --------------------------------------------
    def json_array(self, expr: str) -> str:
        """An aggregate expression: the JSON text of an array of ``expr`` over the group
        (``[]`` for an empty group)."""
        ...

    def after_delete(self, tx: Any) -> None:
        """Inside a write, after deleting rows: the engine's index upkeep, so deleted text
        leaves the search indexes now (SQLite before 3.44: merge the FTS5 indexes)."""
        ...

    def now(self, conn: Any) -> float:
        """The time leases and backoff are counted in (epoch seconds): the clock every
        worker of the store shares (SQLite: this host's; PostgreSQL: the server's)."""
        ...

    # -- transactions ----------------------------------------------------------------------
    def begin(self, conn: Any, *, entity: str | None = None) -> None:
        """Begin a write transaction that holds the write lock from its start (``entity``:
        the entity the work is for, for engines that lock per entity)."""
        ...

    def begin_queue(self, conn: Any) -> None:
        """Begin a write that touches only rows of the job queue (claims, lease checks): row
        locks decide between workers, so it takes no entity's lock (SQLite: as :meth:`begin`)."""
        ...

    def commit(self, conn: Any) -> None:
        """Finish the engine's own work of the transaction (indexes) and commit it."""
        ...

    def rollback(self, conn: Any) -> None:
        """Roll back the open transaction; raises if the engine cannot."""
        ...

    def in_transaction(self, conn: Any) -> bool:
        """Whether ``conn`` is inside a transaction."""
        ...

    def is_full(self, exc: BaseException, target: Path | None) -> bool:
        """Whether the driver error ``exc`` comes from a full disk or quota."""
        ...

    def is_transient(self, exc: BaseException) -> bool:
        """Whether the driver error ``exc`` is a lock that goes away when retried."""
        ...

    def is_lost(self, exc: BaseException) -> bool:
        """Whether the driver error ``exc`` says the connection to the server is gone (it
        dropped, or the server is shutting down): a new connection works once the server is
        back. SQLite: never (a file does not go away between statements)."""
        ...

    def is_broken(self, conn: Any) -> bool:
        """Whether ``conn`` can no longer be used (closed, or its server connection lost),
        so the store opens another in its place."""
        ...

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
        """The entity's messages (alias ``m``; ``where``/``params``: more conditions on it)
        holding any of ``terms`` (literal words, never query syntax) in their content,
        speaker name or context (the end of the turn before), best first by bm25: rows with
        ``id``, ``role``, ``content``, ``name``, ``created_at``, ``external_id``,
        ``entity_id``, ``process_id``, ``session``, ``trust``, ``uses`` and ``score``
        (higher is better)."""
        ...

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
        """The entity's memories (alias ``m``) holding any of ``terms`` in their content
        (weighted) or the person they are about: (id, score) best first by bm25."""
        ...

    # -- bulk writes -----------------------------------------------------------------------
    def insert_messages(self, tx: Any, rows: list[tuple[Any, ...]]) -> list[tuple[int, str, int]]:
        """Inside a write: insert message rows of ``(entity_id, process_id, session_id, role,
        content, name, created_at, external_id, content_hash, trust, source, context)`` in
        order (``context``: what of the previous turn the message is indexed with),
        skipping duplicates (the unique keys); ``(id, entity_id, session_id)`` of each row
        inserted, by id."""
        ...

    def insert_jobs(self, tx: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        """Inside a write: insert job rows of ``(kind, entity_id, session_id, payload,
        created_at, updated_at)``; their ids, in order."""
        ...

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
        """Inside a write: park as failed the running jobs whose lease expired after
        ``max_attempts`` tries, then lease to ``owner`` until ``now + lease`` up to ``limit``
        due jobs (pending with ``run_after <= now``, or running with an expired lease;
        only among ``ids`` if given), oldest first, counting an attempt. Rows of
        ``(id, kind, entity_id, session_id, payload, attempts)``. Two workers never get
        the same job (an engine with row locks skips the rows another claim holds)."""
        ...

    def lease_held(self, tx: Any, job_id: int, owner: str) -> bool:
        """Inside a write: whether ``job_id`` is running and leased to ``owner`` (and stays
        so until the transaction ends: an engine with row locks locks the row)."""
        ...

    # -- changes and housekeeping ----------------------------------------------------------
    def change_token(self, conn: Any) -> int:
        """A number that changes when another connection commits (compare two readings)."""
        ...

    def watch(self, target: Path | str, stop: threading.Event, wake: threading.Event) -> None:
        """Set ``wake`` whenever the store at ``target`` (its file, or a server's URL as a
        str: a ``Path`` folds a URL's ``//``) may have changed, until ``stop``.
        Hints only: :meth:`change_token` polled on a timer still finds every commit."""
        ...

    def after_forget(self, conn: Any, *, attempts: int = 5, wait_ms: int = 200) -> bool:
        """Give back what deleted rows leave behind (the SQLite write-ahead log); True if
        nothing of them is left outside the store's main file."""
        ...

    def versions(self, conn: Any) -> dict[str, str]:
        """The driver's and the engine's versions as seen through ``conn``."""
        ...

    def size_bytes(self, conn: Any) -> int | None:
        """The bytes the store takes, where the engine tells it through ``conn`` (PostgreSQL:
        memori's tables and indexes); None where it is the store's files' size (SQLite)."""
        ...

    def checks(self, conn: Any | None) -> list[dict[str, str]]:
        """``memori doctor``'s lines about the engine (``check``, ``status`` ok/warn/fail,
        ``detail``): versions, search paths, indexes; ``conn`` None when no store opened."""
        ...


def registered() -> list[Backend]:
    """Every backend this version has (the contract suite runs against each): SQLite, and
    PostgreSQL where its driver is installed (the ``postgres`` extra)."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        return [SQLITE]
    from .postgres import POSTGRES

    return [SQLITE, POSTGRES]


#: URL schemes of PostgreSQL (libpq's two spellings).
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(value: Any) -> bool:
    """Whether ``value`` is a ``postgresql://`` / ``postgres://`` URL (a str)."""
    return (
        isinstance(value, str)
        and value.split("://", 1)[0].lower() in POSTGRES_SCHEMES
        and ("://" in value)
    )


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority, or a ``password=`` query parameter)
    replaced by ``***``: what memori prints and logs of a database URL."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        if ":" in credentials:
            credentials = credentials.split(":", 1)[0] + ":***"
        netloc = f"{credentials}@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    # Not urlunsplit: it drops the "//" of an empty authority ("postgresql:///db").
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def _postgres() -> Backend:
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        raise StoreError(
            "a PostgreSQL store needs the psycopg driver, which is not installed: "
            "pip install 'memori-cli[postgres]' (the postgres extra: psycopg and pgvector)"
        )
    from .postgres import POSTGRES

    return POSTGRES


def backend_for(conn: Any) -> Backend:
    """The backend a ``Memori(conn=...)`` / ``--db`` / ``MEMORI_DB`` value asks for.

    A ``postgresql://`` or ``postgres://`` URL (a str) and a psycopg connection are
    PostgreSQL; paths, SQLite connections and factories (and ``None``, the default store)
    are SQLite (a factory's connection is looked at again when it is called: see
    :func:`backend_of_connection`). A database URL of an engine memori does not support is
    refused with a clear :class:`~memori_cli.errors.StoreError` instead of being taken for a
    file name.
    """
    if isinstance(conn, (str, os.PathLike)):
        text = os.fspath(conn)
        scheme = text.split(":", 1)[0].lower() if ":" in text else ""
        if scheme in POSTGRES_SCHEMES:
            if not is_postgres_url(conn):
                # Path() folds the URL's "//" ("postgresql:/host/db"): not recoverable.
                raise StoreError(
                    f"pass a PostgreSQL URL as a str, not a path: {text!r} lost its '//' "
                    "(Memori(conn='postgresql://user@host/dbname'))"
                )
            return _postgres()
        if scheme.startswith(("mysql", "mariadb", "cockroach")) and "://" in text:
            raise StoreError(
                f"memori cannot open {scheme}:// databases: it stores memory in SQLite (a "
                "file path: Memori(conn='memori.db'), --db memori.db) or PostgreSQL "
                "(postgresql://user@host/dbname)"
            )
        if scheme == "sqlite" and "://" in text:
            raise StoreError(
                f"pass the SQLite store as a file path, not a URL: {text!r} "
                f"(for example {text.split('://', 1)[1] or 'memori.db'!r})"
            )
        return SQLITE
    if conn is not None and not callable(conn):
        return backend_of_connection(conn)
    return SQLITE


def backend_of_connection(raw: Any) -> Backend:
    """The backend of a driver's connection: PostgreSQL for psycopg's, else SQLite."""
    if type(raw).__module__.split(".")[0] == "psycopg":
        return _postgres()
    return SQLITE


def backend_of(conn: Any) -> Backend:
    """The backend of a connection (or ``Tx``) the store hands its modules: shared code
    given only a connection asks it what differs by engine."""
    found = getattr(conn, "backend", None)
    return SQLITE if found is None else found
