"""memori's own migrator against sqlite-utils' ``Migrations``, which ran the same migrations
before: each reads and upgrades what the other wrote, and a store made by either is the same
schema with the same record of it."""

from __future__ import annotations

import datetime
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlean
import sqlite_utils
import sqlite_vec
from sqlite_utils.migrations import Migrations as SqliteUtilsMigrations

from memori_cli import Memori
from memori_cli.store import connect
from memori_cli.store.migrations import APPLICATION_ID, migrate, migrations
from memori_cli.store.migrator import Migrations, Script, statements

NAMES = migrations.names


def old_migrator() -> SqliteUtilsMigrations:
    """The migrator memori used until now: sqlite-utils', with memori's migrations."""
    old = SqliteUtilsMigrations("memori")
    for migration in migrations._migrations:
        old(name=migration.name)(migration.fn)
    return old


def sqlean_conn(path: Path) -> Any:
    raw = sqlean.connect(str(path), isolation_level=None)
    raw.enable_load_extension(True)
    sqlite_vec.load(raw)
    return raw


def schema(conn: Any) -> set[tuple[str, str, str, str | None]]:
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {tuple(row) for row in rows}


def record(conn: Any) -> list[tuple[int, str, str]]:
    return conn.execute(
        "SELECT id, migration_set, name FROM _sqlite_migrations ORDER BY rowid"
    ).fetchall()


APPLIED_AT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


def test_a_fresh_store_is_what_sqlite_utils_would_have_made_and_recorded(tmp_path: Path) -> None:
    theirs = sqlean_conn(tmp_path / "theirs.db")
    old_migrator().apply(sqlite_utils.Database(theirs))
    ours = sqlean_conn(tmp_path / "ours.db")
    assert migrations.apply(ours) == NAMES
    assert schema(ours) == schema(theirs)  # the tables, and the record's table and index too
    assert record(ours) == record(theirs) == [(i, "memori", n) for i, n in enumerate(NAMES, 1)]
    for conn in (ours, theirs):
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        stamps = [a for (a,) in conn.execute("SELECT applied_at FROM _sqlite_migrations")]
        assert all(APPLIED_AT.match(a) for a in stamps), stamps
        assert {datetime.datetime.fromisoformat(a).utcoffset() for a in stamps} == {
            datetime.timedelta(0)
        }
    # sqlite-utils reads our record as its own: nothing pending, the same history.
    assert old_migrator().pending(sqlite_utils.Database(ours)) == []
    assert [a.name for a in old_migrator().applied(sqlite_utils.Database(ours))] == NAMES


# Stopped before m001 a file holds only an empty record: not a memori store, and refused.
@pytest.mark.parametrize("stop", [*NAMES[1:], None])
def test_a_store_the_old_migrator_left_at_any_point_opens_and_upgrades(
    tmp_path: Path, stop: str | None
) -> None:
    path = tmp_path / "old.db"
    raw = sqlean_conn(path)
    old_migrator().apply(sqlite_utils.Database(raw), stop_before=stop)
    before = record(raw)
    raw.close()
    path.chmod(0o600)
    mem = Memori(conn=path)
    mem.add_messages([{"role": "user", "content": "upgraded and writable"}])
    conn = mem.store.conn
    assert record(conn)[: len(before)] == before  # the old rows kept as they were
    assert [n for _, _, n in record(conn)] == NAMES
    assert [h.content for h in mem.recall("upgraded")] == ["upgraded and writable"]
    fresh = sqlean_conn(tmp_path / "fresh.db")
    migrations.apply(fresh)
    assert schema(conn) == schema(fresh)
    mem.close()


def test_stop_before_and_an_already_applied_name(tmp_path: Path) -> None:
    conn = sqlean_conn(tmp_path / "s.db")
    assert migrations.apply(conn, stop_before="m003_memories") == NAMES[:2]
    assert [m.name for m in migrations.pending(conn)] == NAMES[2:]
    with pytest.raises(ValueError, match="m001_initial"):
        migrations.apply(conn, stop_before=["m001_initial", "m005_application_id"])
    assert migrations.applied(conn) == NAMES[:2]  # nothing applied by the refused call
    assert (
        migrations.apply(conn, stop_before={"m005_application_id", "m007_current_indexes"})
        == (NAMES[2:4])
    )
    assert migrations.apply(conn) == NAMES[4:]
    assert migrations.apply(conn) == []


def failing_set(conn: Any) -> Migrations:
    steps = Migrations("test")

    @steps(name="first")
    def first(db: Script) -> None:
        db.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")

    @steps(name="second")
    def second(db: Script) -> None:
        db.executescript("CREATE TABLE undone (id INTEGER); INSERT INTO undone VALUES (1);")
        raise RuntimeError("second fails half-way")

    return steps


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_failing_migration_leaves_no_trace_and_stays_pending(
    tmp_path: Path, in_transaction: bool
) -> None:
    conn = sqlean_conn(tmp_path / "f.db")
    steps = failing_set(conn)
    if in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(RuntimeError, match="half-way"):
        steps.apply(conn)
    if in_transaction:
        assert conn.in_transaction  # the caller's transaction is the caller's to end
        conn.execute("COMMIT")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "kept" in tables and "undone" not in tables
    assert steps.applied(conn) == ["first"] and [m.name for m in steps.pending(conn)] == ["second"]
    assert migrations.applied(conn) == []  # another set's record is its own


def test_duplicate_names_are_refused() -> None:
    steps = Migrations("test")
    steps(name="once")(lambda db: None)
    with pytest.raises(ValueError, match="already"):
        steps(name="once")(lambda db: None)


def test_scripts_split_where_sqlite_says_a_statement_ends() -> None:
    script = """
        CREATE TABLE t (v TEXT); -- a comment; with a semicolon
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
            INSERT INTO log VALUES ('a;b');
            INSERT INTO log VALUES ("x");
        END;
        /* ; */ INSERT INTO t VALUES ('1;2')
    """
    parts = list(statements(script))
    assert len(parts) == 3
    assert parts[1].startswith("-- a comment") and parts[1].endswith("END;")
    assert parts[2] == "/* ; */ INSERT INTO t VALUES ('1;2')"
    # Run inside an open transaction, nothing is committed behind the caller's back
    # (the driver's executescript would commit first).
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE log (v TEXT)")
    conn.execute("BEGIN")
    Script(conn).executescript(script)
    assert conn.in_transaction
    assert conn.execute("SELECT v FROM log").fetchall() == [("a;b",), ("x",)]
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone() == (0,)


@pytest.mark.parametrize("driver", [sqlean, sqlite3])
def test_migrate_runs_on_sqlean_and_stdlib_connections(tmp_path: Path, driver: Any) -> None:
    conn = driver.connect(str(tmp_path / "d.db"), isolation_level=None)
    connect.configure(conn)
    assert migrate(conn) == NAMES
    assert not conn.in_transaction
    assert migrate(conn) == []
    assert migrations.pending(conn) == []


def test_an_up_to_date_store_opens_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    Memori(conn=path).add_messages([{"role": "user", "content": "written before"}])
    writer = sqlean.connect(str(path), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a daemon mid-write
    writer.execute("INSERT INTO settings VALUES ('probe', 'x')")
    done = threading.Event()
    hits: list[str] = []

    def read() -> None:
        reader = Memori(conn=path)
        hits.extend(h.content for h in reader.recall("written"))
        reader.close()
        done.set()

    started = time.monotonic()
    threading.Thread(target=read, daemon=True).start()
    opened = done.wait(10)  # an open that takes the write lock waits out the writer
    writer.execute("ROLLBACK")
    writer.close()
    assert opened, "opening an up-to-date store waited for the write lock"
    assert hits == ["written before"] and time.monotonic() - started < 10
