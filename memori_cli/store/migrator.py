"""A small migrator: named, append-only migrations, each recorded once it has run.

memori's migrations ran on sqlite-utils' ``Migrations`` until now. This one keeps its record
exactly: the ``_sqlite_migrations`` table with the same columns, unique index and schema text,
one row per migration (``migration_set``, ``name``, ``applied_at`` as
``str(datetime.now(timezone.utc))``) in the order applied, so a store either migrator wrote is
read and upgraded by the other (``tests/test_migrator.py`` holds them to that). What it does
not do is import sqlite-utils: opening a store costs no import of it (about 100 ms of CLI
start-up), and sqlite-utils' module globals and plugin hooks in a host application that uses
it too are never touched.

A migration is a function of a :class:`Script`, which runs statements on the connection inside
the migration's transaction. Each migration and its record are one savepoint: a migration that
raises leaves no trace and stays pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

#: The table sqlite-utils' migrator records applied migrations in (and so does this one).
TABLE = "_sqlite_migrations"
# The schema text sqlite-utils 4 writes for it, so the two stores are alike to the byte.
_CREATE_TABLE = (
    'CREATE TABLE "_sqlite_migrations" (\n'
    '   "id" INTEGER PRIMARY KEY,\n'
    '   "migration_set" TEXT,\n'
    '   "name" TEXT,\n'
    '   "applied_at" TEXT\n'
    ")"
)
_CREATE_INDEX = (
    'CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"\n'
    '    ON "_sqlite_migrations" ("migration_set", "name")'
)
_SEMICOLON = re.compile(";")


def statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, split where SQLite says one is complete (a ``;`` in
    a string, a comment or a trigger's body does not end one)."""
    start = 0
    for semicolon in _SEMICOLON.finditer(script):
        candidate = script[start : semicolon.end()]
        if sqlite3.complete_statement(candidate):
            yield candidate.strip()
            start = semicolon.end()
    rest = script[start:].strip()
    if rest:
        yield rest


class Script:
    """What a migration runs its SQL through: the connection, inside the migration's
    transaction (the names are those of sqlite-utils' ``Database``, which migrations were
    written against)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any):
        #: The driver's connection (for a migration that needs a cursor's rows).
        self.conn = conn

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        """Run one statement; the driver's cursor."""
        return self.conn.execute(sql, parameters)

    def executescript(self, script: str) -> None:
        """Run the statements of ``script`` one by one: the driver's ``executescript`` would
        commit the open transaction first."""
        for statement in statements(script):
            self.conn.execute(statement)


MigrationFunction = Callable[[Script], None]
F = TypeVar("F", bound=MigrationFunction)


@dataclasses.dataclass(frozen=True)
class Migration:
    """One named migration."""

    name: str
    fn: MigrationFunction


class Migrations:
    """A named set of migrations, applied in the order they were registered."""

    def __init__(self, name: str):
        #: The set's name: the ``migration_set`` column of its records.
        self.name = name
        self._migrations: list[Migration] = []

    def __call__(self, *, name: str | None = None) -> Callable[[F], F]:
        """Register the decorated function as the next migration, named ``name`` (or after
        the function)."""

        def register(fn: F) -> F:
            migration_name = name or fn.__name__
            if any(m.name == migration_name for m in self._migrations):
                raise ValueError(f"migration {migration_name!r} is already in set {self.name!r}")
            self._migrations.append(Migration(migration_name, fn))
            return fn

        return register

    @property
    def names(self) -> list[str]:
        """Every migration's name, in order."""
        return [m.name for m in self._migrations]

    def applied(self, conn: Any) -> list[str]:
        """The names of this set's applied migrations, in the order applied (reads only)."""
        if not _has_table(conn):
            return []
        rows = conn.execute(
            f'SELECT name FROM "{TABLE}" WHERE migration_set = ? ORDER BY rowid', (self.name,)
        ).fetchall()
        return [str(name) for (name,) in rows]

    def pending(self, conn: Any) -> list[Migration]:
        """The migrations not applied yet, in order (reads only)."""
        done = set(self.applied(conn))
        return [m for m in self._migrations if m.name not in done]

    def apply(self, conn: Any, *, stop_before: str | Iterable[str] | None = None) -> list[str]:
        """Apply the pending migrations (each with its record, atomically) and return their
        names. With ``stop_before``, stop at the first migration of that name (or those
        names); naming one already applied raises ``ValueError`` and applies nothing.

        Inside the caller's transaction each migration is a savepoint; outside one, each is
        a ``BEGIN IMMEDIATE`` transaction of its own.
        """
        stop = {stop_before} if isinstance(stop_before, str) else set(stop_before or ())
        already = stop.intersection(self.applied(conn))
        if already:
            raise ValueError(
                f"cannot stop before {', '.join(sorted(already))} in set {self.name!r}: "
                "already applied"
            )
        with _atomic(conn):
            if not _has_table(conn):
                conn.execute(_CREATE_TABLE)
                conn.execute(_CREATE_INDEX)
        done: list[str] = []
        for migration in self.pending(conn):
            if migration.name in stop:
                break
            with _atomic(conn):
                migration.fn(Script(conn))
                conn.execute(
                    f'INSERT INTO "{TABLE}" (migration_set, name, applied_at) VALUES (?, ?, ?)',
                    (self.name, migration.name, str(datetime.datetime.now(datetime.timezone.utc))),
                )
            done.append(migration.name)
        return done

    def __repr__(self) -> str:
        return f"<Migrations {self.name!r}: [{', '.join(self.names)}]>"


def _has_table(conn: Any) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
        ).fetchone()
        is not None
    )


@contextlib.contextmanager
def _atomic(conn: Any) -> Iterator[None]:
    """A savepoint inside an open transaction, else a ``BEGIN IMMEDIATE`` transaction."""
    if getattr(conn, "in_transaction", False):
        conn.execute("SAVEPOINT memori_migration")
        try:
            yield
        except BaseException:
            if getattr(conn, "in_transaction", False):  # an error may have ended it
                conn.execute("ROLLBACK TO memori_migration")
                conn.execute("RELEASE memori_migration")
            raise
        conn.execute("RELEASE memori_migration")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if getattr(conn, "in_transaction", False):
            conn.execute("ROLLBACK")
        raise
