"""The Store: one SQLite database (or a PostgreSQL one), a connection per thread, migrations
on first use."""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .. import paths
from ..errors import (
    NoStoreError,
    ReadOnlyStoreError,
    StoreError,
    StoreFullError,
    StoreUnavailable,
)
from . import connect
from .backend import (
    Backend,
    backend_for,
    backend_of_connection,
    is_postgres_url,
    mask_url,
)
from .connect import dict_rows as dict_rows  # re-exported: the store's modules use it
from .matrix import Matrices
from .migrations import APPLICATION_ID, migrations
from .sqlite import SQLITE_CORRUPT, SQLITE_NOTADB, error_code, free_bytes

# SQLite integers are signed 64-bit. No row has an id outside that range, and binding a larger
# Python int raises OverflowError, so a lookup by such an id finds nothing instead.
MAX_ROWID = 2**63 - 1


T = TypeVar("T")
#: How long an import waits, by default, for a lost store server to come back (a restart).
RETRY_LOST_SECONDS = 60.0


def is_rowid(value: int) -> bool:
    """Whether ``value`` fits an SQLite integer, so a row could have it as its id."""
    return -MAX_ROWID - 1 <= value <= MAX_ROWID


def rowids(ids: Iterable[Any]) -> list[int]:
    """``ids`` as ints, without those no row can have (see :data:`MAX_ROWID`)."""
    return [i for i in map(int, ids) if is_rowid(i)]


def valid_at(as_of: str | None, alias: str) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for rows of ``alias`` with validity columns
    that hold now (``valid_to IS NULL``) or held at ``as_of``."""
    if as_of is None:
        return f"{alias}.valid_to IS NULL", []
    return (
        f"{alias}.valid_from <= ? AND ({alias}.valid_to IS NULL OR {alias}.valid_to > ?)",
        [as_of, as_of],
    )


def now_iso() -> str:
    """The current UTC time as ISO-8601 with microseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def writable(path: Path) -> bool:
    """Whether memori can write the store at ``path``: the file, and the folder that holds
    its ``-wal`` and ``-shm`` files (``os.access`` also says no on a read-only mount, even to
    root). A missing file is writable if it can be created."""
    folder = path.parent if str(path.parent) else Path(".")
    if not os.access(folder, os.W_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def full_message(path: Path | None, where: str, *, opening: bool = False) -> str:
    """The error for a write (or, with ``opening``, an open) that failed on a full disk."""
    free = free_bytes(path) if path is not None else None
    size = 0
    if path is not None:
        with contextlib.suppress(OSError):
            size = path.stat().st_size
    shown_free = f" ({free / 1e6:.1f} MB free)" if free is not None else ""
    need = f"up to {max(size, 1 << 20) / 1e6:.1f} MB (the store's size)" if size else "some"
    if opening:
        return (
            f"the disk holding the store at {where} is full{shown_free}: SQLite cannot even "
            "open the store, as it needs about 32 KB for its index file (-shm) beside it. "
            "Nothing was changed. Free some space on that disk (to forget, up to "
            f"{max(size, 1 << 20) / 1e6:.1f} MB, the store's size) and run the command again"
        )
    return (
        f"the disk holding the store at {where} is full{shown_free}. memori needs free space "
        "to write, even to delete: SQLite writes every changed page to the store's "
        "write-ahead log (-wal file) and its index (-shm) before changing the store, and "
        "forgetting also wipes the deleted rows in place. The change was rolled back: the "
        f"store was not changed, nothing is half-deleted. Free {need} on that disk (other "
        "files, not the store's own -wal/-shm files) and run the command again"
    )


def read_only_message(where: str) -> str:
    """The error for a write to the read-only store at ``where``."""
    return (
        f"the store at {where} is read-only (the file or its folder is not writable, or the "
        "disk is mounted read-only); reading it works, but this command writes. Make the file "
        "and its folder writable, or copy the store somewhere writable (--db)"
    )


def is_connection(value: Any) -> bool:
    """Whether ``value`` looks like a DB-API 2.0 connection (rather than a path or factory)."""
    return all(hasattr(value, name) for name in ("execute", "cursor", "commit", "close"))


def _given_path(conn: Any) -> Path | None:
    """The main database file of a caller's connection, or None (in-memory, or unknown)."""
    try:
        for _, name, file in conn.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                return Path(file)
    except Exception:  # another thread's connection, or a closed one: learnt on first use
        pass
    return None


def _usable_here(conn: Any) -> bool:
    """Whether this thread may use ``conn`` (a stdlib connection made on another thread with
    ``check_same_thread=True`` may not)."""
    try:
        conn.execute("SELECT 1").fetchone()
    except Exception as exc:  # the driver's ProgrammingError
        if "thread" in str(exc):
            return False
        raise
    return True


def _check_idle(conn: Any) -> None:
    """Raise :class:`StoreError` if the caller left ``conn`` inside a transaction: memori
    opens its own (``BEGIN IMMEDIATE``), and committing the caller's would not be ours to do."""
    if getattr(conn, "autocommit", None) is False:
        raise StoreError(
            "the connection was opened with autocommit=False, so it is always inside a "
            "transaction, and memori runs its own transactions; open it with the default "
            "autocommit (sqlite3.connect('memori.db')) or pass a path"
        )
    if getattr(conn, "in_transaction", False):
        raise StoreError(
            "the connection handed to memori is inside a transaction; commit or roll it back "
            "first (memori runs its own transactions, and does not commit yours)"
        )


class Tx:
    """The write transaction of one thread, as :meth:`Store.write` yields it: what a function
    that must run inside a write takes (``tx.execute``, ``tx.executemany``).

    It holds the thread's connection; a nested :meth:`Store.write` yields the same ``Tx``
    inside a savepoint. It is only valid inside its ``with`` block.
    """

    __slots__ = ("backend", "connection", "depth")

    def __init__(self, connection: Any, backend: Backend):
        #: The driver's connection the transaction runs on.
        self.connection = connection
        #: The engine it runs in (for what differs by engine: job claims, lease checks).
        self.backend = backend
        #: How many savepoints deep the current work is (0: the transaction itself).
        self.depth = 0

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        """Run one statement in the transaction; the driver's cursor."""
        return self.connection.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any:
        """Run one statement for each of ``rows`` in the transaction."""
        return self.connection.executemany(sql, rows)


class Store:
    """A memori store.

    ``conn`` is a path, a DB-API 2.0 SQLite connection, a callable returning one (any driver:
    stdlib ``sqlite3``, ``sqlean``, ``pysqlite3``, an ``apsw`` shim), or ``None`` for the
    default store (``$MEMORI_HOME/memori.db`` or the platform's data folder). A
    ``postgresql://`` / ``postgres://`` URL (a str), a psycopg connection or a factory
    returning one is a PostgreSQL store (:mod:`memori_cli.store.postgres`; the ``postgres``
    extra): no file, so no ``path``; ``url`` and :meth:`describe` name it, the password
    masked. Each thread gets
    its own connection; the schema is migrated once, on first use. With ``create=False`` a
    missing store file raises :class:`NoStoreError` instead of being created.

    A connection the caller hands over (itself, or from their factory) stays theirs: memori
    never closes it, and uses it only on the thread that first used it. Another thread that
    gets the same connection object (the capture writer, ``arecall``) gets a connection of
    its own to the same file, from the same driver, which memori closes; a connection that is
    inside a transaction is refused with :class:`StoreError`, as memori runs its own.

    A store file at a path that memori cannot write (the file or its folder is not writable,
    or the file system is mounted read-only) is opened read-only: reading works, nothing is
    migrated or tightened, and a write raises :class:`ReadOnlyStoreError`.
    """

    def __init__(
        self,
        conn: str | os.PathLike[str] | connect.ConnectionFactory | None = None,
        *,
        create: bool = True,
    ):
        self.create = create
        # The storage engine (a factory's is known once it made a connection: see backend).
        self._backend: Backend | None = None if callable(conn) else backend_for(conn)
        self.path: Path | None
        self._factory: connect.ConnectionFactory
        #: The URL of a store on a database server (PostgreSQL), None for a file.
        self.url: str | None = None
        #: Whether every thread uses the one connection the caller handed over.
        self.given_connection = False
        if is_postgres_url(conn):
            url, engine = str(conn), self._backend
            assert engine is not None
            self.path = None

            def by_url() -> Any:
                return engine.connect(url)

            self.url = url
            self._factory = by_url
            self._by_path = False
        elif conn is None or isinstance(conn, (str, os.PathLike)):
            self.path = Path(conn) if conn is not None else paths.default_db_path()
            db_path, backend = self.path, self.backend

            def factory() -> Any:
                return backend.connect(str(db_path))

            self._factory = factory
            self._by_path = True
        elif is_connection(conn):
            given = conn
            # Learnt now, on the thread that hands it over: another thread may not query it.
            sqlite = self._backend is not None and self._backend.name == "sqlite"
            self.path = _given_path(given) if sqlite else None

            def handed() -> Any:
                return given

            self._factory = handed
            self._by_path = False
            self.given_connection = True
        elif callable(conn):
            self.path = None
            self._factory = conn
            self._by_path = False
        else:
            raise TypeError(
                f"conn must be a path, a connection, a callable returning a connection, or "
                f"None; got {type(conn).__name__}"
            )
        #: Connections memori opened itself (closed by :meth:`close`); the caller's are not.
        self._owned: list[Any] = []
        self._local = threading.local()
        self.matrices: Matrices | None = Matrices(self.path) if self.path is not None else None
        #: On PostgreSQL, this process's copies of large entities' vectors
        #: (:class:`~memori_cli.store.postgres.vectors.VectorCache`, made on the first search).
        self.vector_cache: Any = None
        #: Their budget (MB), asked for on the first search (Memori gives the setting,
        #: ``config.vector_cache_mb``); None: the default, ``postgres.vectors.CACHE_MB``.
        self.vector_cache_mb: Callable[[], float] | None = None
        self._migrate_lock = threading.Lock()
        self._migrated = False
        self._connections: list[Any] = []
        #: Whether the store was opened read-only (known once a connection is open).
        self.read_only = False
        #: Augmentation jobs queued through this store object (``mem.augmentation.wait``).
        self.queued_jobs: set[int] = set()

    # -- connections ---------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The storage engine: SQLite, or PostgreSQL for a ``postgresql://`` URL, a psycopg
        connection or a factory returning one (known once it is called: the first use)."""
        if self._backend is None:
            _ = self.conn
            assert self._backend is not None
        return self._backend

    @property
    def conn(self) -> Any:
        """This thread's connection (opened, configured and migrated on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._backend is not None and self._backend.is_broken(conn):
            self._drop(conn)  # the server went away (or restarted): start on a new one
            conn = None
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self) -> Any:
        if self.path is not None and self._by_path:
            self._prepare_file(self.path)
        read_only = self._by_path and self.path is not None and not writable(self.path)
        try:
            raw = (
                self.backend.connect(str(self.path), read_only=True)
                if read_only
                else self._factory()
            )
        except StoreError:
            raise
        except Exception as exc:
            lost = self._backend is not None and self._backend.is_lost(exc)
            kind = StoreUnavailable if lost else StoreError
            raise kind(f"cannot open the store at {self.describe()}: {exc}") from exc
        if self._backend is None:  # a factory's first connection says which engine
            self._backend = backend_of_connection(raw)
        if self._backend.name != "sqlite":
            return self._open_server(raw)
        owned = self._by_path
        if not owned:
            raw, owned = self._for_this_thread(raw)

        def release() -> None:
            if owned:
                raw.close()

        try:
            connect.retry_locked(lambda: self._check_identity(raw))
            if not owned:
                _check_idle(raw)
            self.backend.configure(raw, read_only=read_only)
        except BaseException:
            release()
            raise
        if owned:
            self._owned.append(raw)
        if read_only:
            try:
                self._check_read_only_schema(raw)
            except BaseException:
                release()
                raise
            self.read_only = True
            self.matrices = None  # the matrix copies are files next to the store: not ours
            self._connections.append(raw)
            return raw
        if self.path is None:
            self.path = self._main_file(raw)
            self.matrices = Matrices(self.path) if self.path is not None else None
        if self.path is not None:
            fresh = not raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            paths.tighten_store_files(self.path, fresh=fresh)
        with self._migrate_lock:
            if not self._migrated:
                self._apply_migrations(raw)
                self._migrated = True
        self._connections.append(raw)
        return raw

    def _open_server(self, raw: Any) -> Any:
        """The rest of :meth:`_open` for a database server (PostgreSQL): no file to prepare,
        tighten or identify; a connection memori opened from the URL is memori's to close,
        one from the caller's factory stays theirs."""
        backend = self.backend
        owned = self.url is not None
        if not owned and any(getattr(c, "raw", c) is raw for c in self._connections):
            raise StoreError(
                "the PostgreSQL connection handed to memori is in use by another thread; pass "
                "the URL (Memori(conn='postgresql://...')) or a factory that returns a new "
                "connection on each call (Memori(conn=lambda: psycopg.connect(url)))"
            )
        conn = backend.adapt(raw)
        try:
            if not owned and (
                getattr(raw, "autocommit", True) is False or backend.in_transaction(conn)
            ):
                raise StoreError(
                    "the PostgreSQL connection handed to memori is not in autocommit mode (or is "
                    "inside a transaction); open it with psycopg.connect(url, autocommit=True): "
                    "memori runs its own transactions, and does not commit yours"
                )
            backend.configure(conn)
            with self._migrate_lock:
                if not self._migrated:
                    self._apply_migrations(conn)
                    self._migrated = True
        except BaseException:
            if owned:
                with contextlib.suppress(Exception):
                    raw.close()
            raise
        if owned:
            self._owned.append(conn)
        self._connections.append(conn)
        return conn

    def _for_this_thread(self, raw: Any) -> tuple[Any, bool]:
        """The caller's connection if this thread may use it, else one of memori's own to the
        same file (and whether memori owns the one returned).

        One SQLite connection serves one thread here: memori's transactions on it from two
        threads would interleave, and a stdlib connection made with the default
        ``check_same_thread=True`` refuses other threads outright. Each thread's connection is
        in ``_connections``, so finding ``raw`` there means another thread uses it."""
        if not any(c is raw for c in self._connections) and _usable_here(raw):
            return raw, False
        path = self.path
        if path is None:
            raise StoreError(
                "the connection handed to memori belongs to another thread, and it is not to "
                "a database file another connection could open (an in-memory database?). "
                "Pass a factory that returns a new connection on each call "
                "(Memori(conn=lambda: sqlite3.connect('memori.db'))), or a path"
            )
        try:
            return self.backend.connect_like(raw, str(path)), True
        except Exception as exc:
            raise StoreError(f"cannot open the store at {path} for this thread: {exc}") from exc

    def _prepare_file(self, path: Path) -> None:
        """Refuse a path that is not a regular file; create the store's file if allowed."""
        paths.check_regular_file(path, what="store")
        if path.exists():
            return
        if not self.create:
            raise NoStoreError(
                f"there is no memori store at {path} (check --db / MEMORI_DB / MEMORI_HOME; "
                "`memori import` or a wrapped client creates one)"
            )
        paths.ensure_private_dir(path.parent, tighten=path.parent == paths.data_dir())
        paths.ensure_private_file(path)

    def _check_read_only_schema(self, raw: Any) -> None:
        """Raise :class:`ReadOnlyStoreError` if a read-only store lacks migrations this
        version of memori needs (they cannot be applied without writing)."""
        try:
            pending = [m.name for m in migrations.pending(raw)]
        except connect.DatabaseError as exc:
            raise StoreError(f"cannot read the store at {self.describe()}: {exc}") from exc
        if pending:
            raise ReadOnlyStoreError(
                f"the store at {self.describe()} is read-only and was made by an older memori: "
                f"it lacks {len(pending)} schema migration(s) this version needs "
                f"({', '.join(pending[:3])}{', …' if len(pending) > 3 else ''}). Open it once "
                "with write access (any memori command) to upgrade it, or read it with the "
                "memori version that wrote it"
            )

    def _check_identity(self, raw: Any) -> None:
        """Raise :class:`StoreError` unless ``raw`` is a memori store or an empty database.

        Runs before anything is written (WAL, migrations), so another application's SQLite
        file, or a file that is no database at all, is left exactly as it was.
        """
        try:
            if raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                return
            tables = [
                r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            if not tables:
                return
            if (
                "_sqlite_migrations" in tables
                and raw.execute(
                    "SELECT 1 FROM _sqlite_migrations WHERE migration_set = 'memori' LIMIT 1"
                ).fetchone()
            ):
                return
        except self.backend.errors as exc:
            if self.backend.is_transient(exc):
                raise  # retried by the caller
            if self.backend.is_full(exc, self.path):
                raise StoreFullError(
                    full_message(self.path, self.describe(), opening=True)
                ) from exc
            code = error_code(exc)
            if code not in (0, SQLITE_NOTADB, SQLITE_CORRUPT):
                raise StoreError(f"cannot read the store at {self.describe()}: {exc}") from exc
            raise StoreError(
                f"{self.describe()} is not a memori store ({exc}); memori opens only its own "
                "stores or a new, empty file"
            ) from exc
        shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        raise StoreError(
            f"{self.describe()} is another application's SQLite database (tables: {shown}); "
            "memori opens only its own stores or a new, empty file, and left it unchanged"
        )

    @staticmethod
    def _main_file(raw: Any) -> Path | None:
        for _, name, file in raw.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                return Path(file)
        return None

    def _apply_migrations(self, raw: Any) -> None:
        # All pending migrations under one BEGIN IMMEDIATE; an up-to-date store takes no lock.
        try:
            self.backend.migrate(raw)
        except self.backend.errors as exc:
            raise StoreError(f"cannot migrate the store at {self.describe()}: {exc}") from exc

    def build(self) -> None:
        """Create or migrate the schema now (idempotent; it also happens on first use)."""
        _ = self.conn

    def describe(self) -> str:
        """The store's file path, its URL (the password masked), or a note that it came from
        a connection factory."""
        if self.url is not None:
            return mask_url(self.url)
        return str(self.path) if self.path is not None else "<connection factory>"

    def close_thread(self) -> None:
        """Close this thread's connection, if it has one (for short-lived worker threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)

    def _drop(self, conn: Any) -> None:
        """Forget this thread's connection ``conn`` (the next use opens another), closing it
        if memori opened it."""
        self._local.conn = None
        with contextlib.suppress(ValueError):
            self._connections.remove(conn)
        if any(c is conn for c in self._owned):
            self._owned = [c for c in self._owned if c is not conn]
            with contextlib.suppress(Exception):  # a broken connection may not close cleanly
                conn.close()

    def close(self) -> None:
        """Close every connection this store opened itself; a connection the caller handed
        over (directly or from their factory) is left open, theirs to close."""
        for raw in self._owned:
            with contextlib.suppress(Exception):
                raw.close()
        self._owned.clear()
        self._connections.clear()
        self._local = threading.local()

    # -- transactions --------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self, *, entity: str | None = None, queue: bool = False) -> Iterator[Tx]:
        """A write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error.

        What it may touch says what it locks on an engine that locks finer than the file
        (PostgreSQL): ``entity``: only that entity's rows (writes of other entities run beside
        it); ``queue``: only rows of the job queue, which row locks decide (claims, leases);
        neither: anything (one write at a time, as SQLite always is).

        Inside another write on the same thread it is a ``SAVEPOINT``: its work is undone on
        error while the outer transaction goes on (and commits or rolls back as a whole).
        An error of the database driver leaves as :class:`StoreError` (its cause the driver's
        error; :class:`StoreFullError` for a full disk), so callers never catch driver types.
        When the ``COMMIT`` itself fails (an I/O error, a full disk, a deferred constraint),
        the transaction is rolled back; if even that fails, the thread's connection is
        dropped, so its next write starts on a fresh one instead of failing for ever with
        "cannot start a transaction within a transaction".

        Raises :class:`ReadOnlyStoreError` on a store opened read-only.
        """
        outer: Tx | None = getattr(self._local, "tx", None)
        if outer is not None:
            with self._savepoint(outer):
                yield outer
            return
        conn = self.conn
        if self.read_only:
            raise ReadOnlyStoreError(read_only_message(self.describe()))
        _check_idle(conn)
        tx = Tx(conn, self.backend)
        try:
            if queue:
                self.backend.begin_queue(conn)
            else:
                self.backend.begin(conn, entity=entity)
        except self.backend.errors as exc:
            raise self._write_error(exc) from exc
        self._local.tx = tx
        try:
            yield tx
            self.backend.commit(conn)
        except BaseException as exc:
            self._roll_back(conn)
            if isinstance(exc, self.backend.errors):
                raise self._write_error(exc) from exc
            raise
        finally:
            self._local.tx = None

    @contextlib.contextmanager
    def _savepoint(self, tx: Tx) -> Iterator[None]:
        tx.depth += 1
        name = f"memori_{tx.depth}"
        try:
            tx.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                tx.execute(f"ROLLBACK TO {name}")
                tx.execute(f"RELEASE {name}")
                raise
            tx.execute(f"RELEASE {name}")
        except self.backend.errors as exc:
            raise self._write_error(exc) from exc
        finally:
            tx.depth -= 1

    def _roll_back(self, conn: Any) -> None:
        """Roll back this thread's transaction, if SQLite has not already; a connection that
        cannot leave its transaction is dropped (closed if memori opened it)."""
        if not self.backend.in_transaction(conn):
            return
        try:
            self.backend.rollback(conn)
        except Exception:  # the first error is the one to report
            self._drop(conn)

    def _write_error(self, exc: BaseException) -> StoreError:
        """The StoreError for the driver error ``exc`` of a write."""
        if self.backend.is_full(exc, self.path):
            return StoreFullError(full_message(self.path, self.describe()))
        kind = StoreUnavailable if self.backend.is_lost(exc) else StoreError
        return kind(f"cannot write the store at {self.describe()}: {exc}")

    def retry_lost(self, work: Callable[[], T], *, seconds: float = RETRY_LOST_SECONDS) -> T:
        """``work()``, run again while it fails for a lost connection to the store's server
        (a restart, a network drop) for up to ``seconds``, waiting longer each time; then
        the last error is raised. ``work`` must be idempotent: a commit may have landed
        before the connection went. SQLite: ``work()`` once (a file does not go away)."""
        deadline, delay = time.monotonic() + seconds, 0.25
        while True:
            try:
                return work()
            except Exception as exc:
                if not self.is_lost(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def is_lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` (a :class:`StoreError`, or a driver error raised by a read) comes
        from a lost connection to the store's server: worth retrying once it is back."""
        chain: list[BaseException] = []
        seen: BaseException | None = exc
        while seen is not None and not any(seen is e for e in chain):  # a cycle ends it
            if isinstance(seen, StoreUnavailable):
                return True
            if self._backend is not None and isinstance(seen, self._backend.errors):
                return self._backend.is_lost(seen)
            chain.append(seen)
            seen = seen.__cause__
        return False

    def checkpoint(self, *, attempts: int = 5, wait_ms: int = 200) -> bool:
        """Give back what deleted rows leave outside the store's main file (SQLite: copy the
        write-ahead log into it and truncate the log); True if that finished.

        A reader elsewhere that holds an older snapshot keeps it from completing; each of the
        ``attempts`` waits at most ``wait_ms`` for it, not the usual busy timeout.
        """
        return self.backend.after_forget(self.conn, attempts=attempts, wait_ms=wait_ms)
