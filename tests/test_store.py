"""The store: driver, pragmas, migrations, permissions, connection factories."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlean
from conftest import store_before

from memori_cli import Memori, PermissionsWarning
from memori_cli.store import Store, connect
from memori_cli.store.migrations import migrations


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_store_lives_under_memori_home_and_is_private(memori_home: Path) -> None:
    mem = Memori()
    mem.add_messages([{"role": "user", "content": "hello"}])
    db = memori_home / "memori.db"
    assert mem.store.path == db
    assert mode(memori_home) == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert mode(Path(str(db) + suffix)) == 0o600, suffix
    mem.close()


def test_loose_permissions_are_tightened_with_a_warning(memori_home: Path) -> None:
    memori_home.mkdir(mode=0o755)
    os.chmod(memori_home, 0o755)
    with pytest.warns(PermissionsWarning, match="readable by others"):
        Store().build()
    assert mode(memori_home) == 0o700
    db = memori_home / "memori.db"
    os.chmod(db, 0o644)
    with pytest.warns(PermissionsWarning, match="mode 644"):
        Store().build()
    assert mode(db) == 0o600


def test_a_users_own_folder_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    os.chmod(folder, 0o755)
    Store(folder / "memori.db").build()
    assert mode(folder) == 0o755
    assert mode(folder / "memori.db") == 0o600


def test_pragmas_wal_busy_timeout_foreign_keys(mem: Memori) -> None:
    conn = mem.store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA recursive_triggers").fetchone()[0] == 1  # as sqlite-utils set it
    assert conn.execute("SELECT vec_version()").fetchone()[0].startswith("v")


def test_schema_is_built_on_first_use_and_build_is_idempotent(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "fresh.db")
    assert mem.recall("anything at all") == []  # never "no such table"
    mem.config.storage.build()
    mem.config.storage.build()
    applied = mem.store.conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert [name for (name,) in applied] == [m.name for m in migrations._migrations]
    mem.close()
    # An existing store takes the same path and applies nothing twice.
    again = Memori(conn=tmp_path / "fresh.db")
    again.config.storage.build()
    assert again.store.conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(
        applied
    )


def test_callable_connection_factory(tmp_path: Path) -> None:
    path = tmp_path / "factory.db"
    mem = Memori(conn=lambda: sqlean.connect(str(path)))
    mem.add_messages([{"role": "user", "content": "factories work"}])
    assert [h.content for h in mem.recall("factories")] == ["factories work"]
    assert mem.store.path == path


def test_connection_without_extension_loading_works_on_the_numpy_path(tmp_path: Path) -> None:
    # Issue 11 reversed the old refusal (ExtensionError): a stdlib connection keeps full
    # function, with vectors searched in process.
    path = tmp_path / "stdlib.db"
    mem = Memori(conn=lambda: sqlite3.connect(str(path)))
    mem.add_messages([{"role": "user", "content": "stdlib connections work"}])
    assert [h.content for h in mem.recall("stdlib")] == ["stdlib connections work"]
    path_name, why = connect.vector_path(mem.store.conn)
    if not connect.has_vec(mem.store.conn):
        assert path_name == "numpy" and "numpy" in why


def test_sqlite_utils_in_the_host_application_is_left_as_it_was(tmp_path: Path) -> None:
    # memori used to point sqlite-utils' module globals at sqlean for the whole process. Now
    # it never imports sqlite-utils, and one the host imported keeps its own driver.
    script = f"""
import sys
from memori_cli import Memori
mem = Memori(conn={str(tmp_path / "fresh.db")!r})
mem.add_messages([{{"role": "user", "content": "hello"}}])
assert mem.stats()["messages"] == 1
assert "sqlite_utils" not in sys.modules, "creating and using a store imported sqlite-utils"
import sqlite_utils.db, sqlite_utils.utils
driver = sqlite_utils.utils.sqlite3
assert Memori(conn={str(tmp_path / "fresh.db")!r}).stats()["messages"] == 1
assert sqlite_utils.utils.sqlite3 is driver and sqlite_utils.db.sqlite3 is driver
assert sqlite_utils.db.OperationalError is driver.OperationalError
assert driver.__name__ != "sqlean", driver
db = sqlite_utils.Database(driver.connect(":memory:"))
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
assert list(db.query("INSERT INTO t (v) VALUES ('x') RETURNING id")) == [{{"id": 1}}]
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_write_transaction_rolls_back_on_error(mem: Memori) -> None:
    mem.add_messages([{"role": "user", "content": "kept"}])
    with pytest.raises(RuntimeError), mem.store.write() as conn:
        conn.execute("DELETE FROM messages")
        raise RuntimeError("boom")
    assert mem.stats()["messages"] == 1


def test_fts_stays_in_sync_with_messages(mem: Memori) -> None:
    mem.add_messages([{"role": "user", "content": "I adore quokkas"}])
    assert len(mem.recall("quokkas")) == 1
    with mem.store.write() as conn:
        conn.execute("UPDATE messages SET content = 'I adore wombats'")
    assert mem.recall("quokkas") == []
    assert len(mem.recall("wombats")) == 1
    with mem.store.write() as conn:
        conn.execute("DELETE FROM messages")
    assert mem.recall("wombats") == []
    integrity = mem.store.conn.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
    )
    assert integrity is not None


def test_messages_enqueue_their_augmentation_job_in_the_same_transaction(mem: Memori) -> None:
    mem.add_messages([{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}])
    jobs = mem.store.conn.execute("SELECT kind, status, payload FROM jobs").fetchall()
    assert len(jobs) == 1
    kind, status, payload = jobs[0]
    assert (kind, status) == ("augment", "pending")
    ids = [r[0] for r in mem.store.conn.execute("SELECT id FROM messages ORDER BY id")]
    assert json.loads(payload) == {"message_ids": ids}


def test_a_store_stopped_before_m004_upgrades_with_its_graph_backfilled(tmp_path: Path) -> None:
    db_path = tmp_path / "old.db"
    raw = store_before(db_path, "m004_graph")
    now = "2026-01-01T00:00:00+00:00"
    raw.execute("INSERT INTO entities (id, created_at) VALUES ('ana', ?)", (now,))
    for subject, obj in (("Ana", "Lisbon"), ("ana", "cats"), ("Ana's", "Cat")):
        raw.execute(
            """INSERT INTO triples (entity_id, subject, subject_type, predicate, object,
                   object_type, confidence, extractor, first_seen, last_seen, valid_from,
                   created_at)
               VALUES ('ana', ?, 'person', 'likes', ?, 'thing', 0.7, 'rules@1', ?, ?, ?, ?)""",
            (subject, obj, now, now, now, now),
        )
    raw.close()
    upgraded = Memori(conn=db_path)
    with pytest.warns(PermissionsWarning, match="tightened"):  # made 0644 by plain sqlean
        conn = upgraded.store.conn  # opens and applies m004 onwards
    assert conn.execute("SELECT count(*) FROM triples WHERE subject_id IS NULL").fetchone() == (0,)
    names = sorted(r[0] for r in conn.execute("SELECT name FROM graph_nodes"))
    assert names == ["Ana", "Lisbon", "cats"]  # "ana", "Ana's" -> Ana; "Cat" -> cats
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x6D6D7269
    upgraded.close()
