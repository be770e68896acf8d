"""Open the store: the one module that opens SQLite databases.

memori opens stores by path with the sqlean.py driver (a drop-in ``sqlite3`` with SQLite 3.50
that can load extensions), so sqlite-vec loads on every platform. A connection a caller hands
over may come from any DB-API 2.0 SQLite driver (stdlib ``sqlite3``, ``sqlean``,
``pysqlite3``, an ``apsw`` shim): where it cannot load sqlite-vec, vectors are searched in
process with numpy instead (:func:`vector_path` says which path a connection takes, and why).

memori runs its migrations on a small migrator of its own (:mod:`memori_cli.store.migrator`,
in sqlite-utils' table and format) and imports no sqlite-utils: a host application that uses
sqlite-utils keeps it as it configured it (its driver, its plugins), and opening a store costs
no import of it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlean
import sqlean.dbapi2
import sqlite_vec

from ..errors import ExtensionError

driver = sqlean


def _driver_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [sqlean.dbapi2.Error, sqlite3.Error]
    # pysqlite3, where it is installed (a caller may hand over its connections, imported
    # after memori): a third driver whose errors derive from neither of the others.
    pysqlite3: Any = sys.modules.get("pysqlite3.dbapi2")
    if pysqlite3 is None and importlib.util.find_spec("pysqlite3") is not None:
        with contextlib.suppress(ImportError):
            pysqlite3 = importlib.import_module("pysqlite3.dbapi2")
    if pysqlite3 is not None and isinstance(getattr(pysqlite3, "Error", None), type):
        errors.append(pysqlite3.Error)
    return tuple(dict.fromkeys(errors))


#: The base error of every SQLite driver memori may be handed a connection of (sqlean, the
#: stdlib ``sqlite3``, ``pysqlite3``): catch it as ``except DatabaseError``.
DatabaseError: tuple[type[Exception], ...] = _driver_errors()
BUSY_TIMEOUT_MS = 30_000

ConnectionFactory = Callable[[], Any]

#: FTS5's ``secure-delete`` option (forgotten text leaves the index at once) needs SQLite 3.44.
SECURE_DELETE_FTS = (3, 44, 0)
FTS_TABLES = ("messages_fts", "memories_fts")

_VEC_HELP = (
    "this SQLite connection cannot load extensions, so sqlite-vec is not available to it; "
    "memori searches vectors in process with numpy instead (the same results). To use "
    "sqlite-vec, pass a path (Memori(conn='memori.db')) or a factory returning a sqlean "
    "connection: `import sqlean; Memori(conn=lambda: sqlean.connect('memori.db'))` "
    "(sqlean.py is installed with memori)."
)


def dict_rows(cursor: Any) -> list[dict[str, Any]]:
    """A cursor's rows as dicts keyed by column name."""
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


def connect_path(path: str) -> Any:
    """A new sqlean connection to ``path`` in autocommit mode (memori opens its own txns)."""
    return sqlean.connect(path, isolation_level=None, check_same_thread=False, timeout=30)


def same_driver(conn: Any, path: str) -> Any:
    """A new connection to ``path`` from the driver ``conn`` comes from, in autocommit mode and
    usable from any thread. The same driver, because two copies of the SQLite library in one
    process must not hold the same file (closing one copy's file descriptor drops the other
    copy's POSIX locks: https://www.sqlite.org/howtocorrupt.html, section 2.2)."""
    import importlib

    module_name = type(conn).__module__
    module = importlib.import_module(module_name)
    if not hasattr(module, "connect"):
        module = importlib.import_module(module_name.split(".")[0])
    return module.connect(path, isolation_level=None, check_same_thread=False, timeout=30)


def connect_read_only(path: str) -> Any:
    """A new read-only sqlean connection to ``path`` (``mode=ro``): nothing is written to the
    file, no migration runs, the journal mode is left as it is.

    A WAL store in a folder memori cannot write (a read-only mount, a folder of another user)
    cannot be opened ``mode=ro`` when its ``-shm`` file is missing: SQLite must create it.
    Such a store is opened ``immutable=1`` instead, which reads the database file as it is
    (anything still in a ``-wal`` file nobody can write is not seen).
    """
    uri = Path(path).absolute().as_uri()
    conn = sqlean.connect(
        f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30
    )
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlean.dbapi2.OperationalError as exc:
        if "unable to open" not in str(exc):
            conn.close()
            raise
        conn.close()
    return sqlean.connect(
        f"{uri}?mode=ro&immutable=1",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=30,
    )


def configure(conn: Any, *, read_only: bool = False) -> Any:
    """Load sqlite-vec where the connection can and set the pragmas memori relies on; returns
    ``conn``.

    Set on every connection (a caller's too): ``isolation_level = None`` (memori opens its own
    ``BEGIN IMMEDIATE`` transactions), ``busy_timeout = 30000``, ``foreign_keys = ON``,
    ``recursive_triggers = ON``, ``cache_size = -32768``, ``secure_delete = ON``, and on a
    writable store ``journal_mode = WAL`` with ``synchronous = NORMAL``. A connection that
    cannot load sqlite-vec is fine (vectors go the numpy path); one whose SQLite lacks FTS5
    raises :class:`ExtensionError`. ``read_only`` (a connection from :func:`connect_read_only`)
    leaves the journal mode alone: switching to WAL writes the file."""
    with contextlib.suppress(ExtensionError):
        # No sqlite-vec here: vector_path() says so, and vectors.knn searches with numpy.
        load_vec(conn)
    check_fts5(conn)
    conn.isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT, never implicit
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    # As sqlite-utils' Database set it on every connection it wrapped, when migrations ran on
    # it: kept, so triggers behave as before (a REPLACE fires the delete triggers).
    conn.execute("PRAGMA recursive_triggers = ON")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MB: bulk writes spill far less
    # Deleted rows are overwritten with zeros, so forgotten text leaves the file.
    conn.execute("PRAGMA secure_delete = ON")
    if not read_only and _enable_wal(conn) == "wal":
        # WAL + NORMAL survives application crashes; only an OS crash can lose the last commit.
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _enable_wal(conn: Any) -> str:
    """Switch to WAL (persistent) and return the journal mode in force.

    Changing the journal mode takes an exclusive lock without calling the busy handler, so
    connections opening a fresh store at the same moment retry here instead.
    """

    def switch() -> str:
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode in ("wal", "memory"):
            return mode
        return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()

    return retry_locked(switch)


T = TypeVar("T")


def retry_locked(work: Callable[[], T]) -> T:
    """Run ``work``, retrying while SQLite reports a lock the busy handler does not wait on
    (a journal-mode change, or the WAL index being rebuilt by another connection)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return work()
        except Exception as exc:  # the driver's OperationalError, whichever driver it is
            if not is_transient(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a lock that goes away when retried."""
    return "locked" in str(exc) or "locking protocol" in str(exc)


def load_vec(conn: Any) -> None:
    """Load sqlite-vec into ``conn`` or raise :class:`ExtensionError` saying how to fix it."""
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
    except AttributeError as exc:
        raise ExtensionError(_VEC_HELP) from exc
    except Exception as exc:  # the driver's own OperationalError, whichever driver it is
        raise ExtensionError(f"could not load sqlite-vec ({exc}); {_VEC_HELP}") from exc


def has_vec(conn: Any) -> bool:
    """Whether sqlite-vec is loaded into ``conn`` (a probe of a few microseconds)."""
    try:
        conn.execute("SELECT vec_version()").fetchone()
        return True
    except Exception:  # "no such function", whichever driver raises it
        return False


def vector_path(conn: Any) -> tuple[str, str]:
    """Which vector search ``conn`` takes, ``"sqlite-vec"`` or ``"numpy"``, and why."""
    if has_vec(conn):
        (version,) = conn.execute("SELECT vec_version()").fetchone()
        return (
            "sqlite-vec",
            f"sqlite-vec {version} is loaded into the {driver_name(conn)} connection",
        )
    if not hasattr(conn, "enable_load_extension"):
        why = (
            f"the {driver_name(conn)} connection cannot load extensions (no enable_load_extension)"
        )
    else:
        try:
            load_vec(conn)
        except ExtensionError as exc:
            why = (
                f"sqlite-vec did not load into the {driver_name(conn)} connection ({exc.__cause__})"
            )
        else:  # pragma: no cover (configure() would have loaded it)
            return vector_path(conn)
    return "numpy", why + "; vectors are BLOBs searched in process with numpy"


def driver_name(conn: Any) -> str:
    """The DB-API module ``conn`` comes from, with its version where it has one."""
    module_name = type(conn).__module__.split(".")[0]
    if module_name == "sqlean":
        return f"sqlean.py {getattr(sqlean, 'version', '?')}"
    if module_name == "sqlite3":
        return "stdlib sqlite3"
    return module_name


def sqlite_version(conn: Any) -> tuple[int, ...]:
    """The SQLite library version behind ``conn``, as a tuple of ints."""
    (text,) = conn.execute("SELECT sqlite_version()").fetchone()
    return tuple(int(part) for part in str(text).split(".")[:3])


def check_fts5(conn: Any) -> None:
    """Raise :class:`ExtensionError` unless ``conn``'s SQLite has FTS5 (lexical recall)."""
    try:
        (used,) = conn.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()
        if used:
            return
        conn.execute("CREATE VIRTUAL TABLE temp.memori_fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp.memori_fts5_probe")
    except Exception as exc:  # the driver's OperationalError: "no such module: fts5"
        raise ExtensionError(
            f"the SQLite library behind this {driver_name(conn)} connection (SQLite "
            f"{'.'.join(map(str, sqlite_version(conn)))}) was built without FTS5, which memori "
            "needs for lexical recall. Pass a path or a sqlean connection instead "
            "(`import sqlean; Memori(conn=lambda: sqlean.connect('memori.db'))`)"
        ) from exc


def fts_secure_delete(conn: Any) -> bool:
    """Whether the FTS5 indexes drop forgotten text at once (``secure-delete``)."""
    try:
        row = conn.execute("SELECT v FROM messages_fts_config WHERE k = 'secure-delete'").fetchone()
    except Exception:  # no index yet
        return False
    return bool(row and int(row[0]))


def enable_fts_secure_delete(conn: Any) -> None:
    """Inside a write transaction: turn on FTS5 ``secure-delete`` where SQLite has it."""
    if sqlite_version(conn) < SECURE_DELETE_FTS:
        return
    for table in FTS_TABLES:
        conn.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('secure-delete', 1)")


def _unreadable_fts(conn: Any) -> list[str]:
    """The FTS5 indexes this SQLite cannot read: written with ``secure-delete`` (format
    version 5) while the library is older than 3.44."""
    if sqlite_version(conn) >= SECURE_DELETE_FTS:
        return []
    unreadable = []
    for table in FTS_TABLES:
        try:
            row = conn.execute(f"SELECT v FROM {table}_config WHERE k = 'version'").fetchone()
        except Exception:  # no such table: the schema is not there yet
            continue
        if row is not None and int(row[0]) > 4:
            unreadable.append(table)
    return unreadable


def fts_needs_downgrade(conn: Any) -> bool:
    """Whether :func:`downgrade_fts` has work to do on ``conn`` (reads only)."""
    return bool(_unreadable_fts(conn))


def downgrade_fts(conn: Any) -> bool:
    """Inside a write transaction: make the FTS5 indexes readable by this SQLite, if it is older
    than 3.44 and they were written with ``secure-delete`` (format version 5, which SQLite
    before 3.44 refuses to read). The option is dropped and each index rebuilt from its table
    (once); forgetting then purges the index by merging it (:func:`purge_fts`). True if it
    rebuilt."""
    rebuilt = False
    for table in _unreadable_fts(conn):
        conn.execute(f"DELETE FROM {table}_config WHERE k = 'secure-delete'")
        conn.execute(f"UPDATE {table}_config SET v = 4 WHERE k = 'version'")
        conn.execute(f"INSERT INTO {table} ({table}) VALUES ('rebuild')")
        rebuilt = True
    return rebuilt


def purge_fts(conn: Any) -> None:
    """Inside a write transaction, after deleting rows: where FTS5 ``secure-delete`` is off
    (SQLite before 3.44), merge the indexes so the deleted rows' words leave them now."""
    if fts_secure_delete(conn):
        return
    for table in FTS_TABLES:
        conn.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")


def versions(conn: Any) -> dict[str, str]:
    """Driver, SQLite and sqlite-vec versions as seen through ``conn`` (sqlite-vec is
    ``"not loaded"`` on a connection that cannot load it)."""
    (sqlite_text,) = conn.execute("SELECT sqlite_version()").fetchone()
    vec = "not loaded"
    if has_vec(conn):
        (vec,) = conn.execute("SELECT vec_version()").fetchone()
    return {"driver": driver_name(conn), "sqlite": sqlite_text, "sqlite_vec": vec}
