"""Open the store: the one module that opens SQLite databases.

memori uses the sqlean.py driver (a drop-in ``sqlite3`` with SQLite 3.50 that can load
extensions) so sqlite-vec loads on every platform. sqlite-utils imports ``pysqlite3`` if it can,
else the stdlib ``sqlite3``, and catches that module's exceptions; wrapping a sqlean connection
while sqlite-utils speaks stdlib ``sqlite3`` breaks ``INSERT ... RETURNING`` through ``db.query``
("cannot release savepoint"). So sqlean is registered as ``pysqlite3`` here, before sqlite-utils
is first imported, and one driver serves the whole process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlean
import sqlean.dbapi2

sys.modules.setdefault("pysqlite3", sqlean)
sys.modules.setdefault("pysqlite3.dbapi2", sqlean.dbapi2)

import sqlite_utils  # noqa: E402  (must come after the registration above)
import sqlite_utils.db  # noqa: E402
import sqlite_utils.utils  # noqa: E402
import sqlite_vec  # noqa: E402

from ..errors import ExtensionError  # noqa: E402

if getattr(sqlite_utils.utils, "sqlite3", None) is not sqlean:  # pragma: no cover
    # The caller imported sqlite-utils before memori: point it at the same driver.
    for _module in (sqlite_utils.utils, sqlite_utils.db):
        _module.sqlite3 = sqlean  # type: ignore[attr-defined]
        _module.OperationalError = sqlean.dbapi2.OperationalError  # type: ignore[attr-defined]
    sqlite_utils.utils.dbapi2 = sqlean.dbapi2  # type: ignore[attr-defined]

driver = sqlean
DatabaseError: type[Exception] = sqlean.dbapi2.Error
BUSY_TIMEOUT_MS = 30_000

ConnectionFactory = Callable[[], Any]

_VEC_HELP = (
    "this SQLite connection cannot load extensions, and memori needs the sqlite-vec "
    "extension. Pass a path (Memori(conn='memori.db')) or a factory returning a sqlean "
    "connection: `import sqlean; Memori(conn=lambda: sqlean.connect('memori.db'))` "
    "(sqlean.py is installed with memori). The stdlib sqlite3 module of many Python builds "
    "cannot load extensions."
)


def connect_path(path: str) -> Any:
    """A new sqlean connection to ``path`` in autocommit mode (memori opens its own txns)."""
    return sqlean.connect(path, isolation_level=None, check_same_thread=False, timeout=30)


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


def configure(conn: Any, *, read_only: bool = False) -> sqlite_utils.Database:
    """Load sqlite-vec, set the pragmas memori relies on, and wrap ``conn`` for sqlite-utils.

    ``read_only`` (a connection from :func:`connect_read_only`) leaves the journal mode alone:
    switching to WAL writes the file."""
    load_vec(conn)
    conn.isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT, never implicit
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MB: bulk writes spill far less
    # Deleted rows are overwritten with zeros, so forgotten text leaves the file.
    conn.execute("PRAGMA secure_delete = ON")
    if not read_only and _enable_wal(conn) == "wal":
        # WAL + NORMAL survives application crashes; only an OS crash can lose the last commit.
        conn.execute("PRAGMA synchronous = NORMAL")
    return sqlite_utils.Database(conn)


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


def versions(conn: Any) -> dict[str, str]:
    """Driver, SQLite and sqlite-vec versions as seen through ``conn``."""
    sqlite_version, vec_version = conn.execute("SELECT sqlite_version(), vec_version()").fetchone()
    return {
        "driver": f"sqlean.py {getattr(sqlean, 'version', '?')}",
        "sqlite": sqlite_version,
        "sqlite_vec": vec_version,
    }
