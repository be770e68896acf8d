"""Store.write(): the typed transaction, savepoints, driver errors as StoreError, and a
COMMIT that fails (the connection must not stay inside the failed transaction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlean

from memori_cli.errors import StoreError
from memori_cli.store import connect
from memori_cli.store.core import Store, Tx


def _settings(store: Store) -> dict[str, str]:
    return dict(store.conn.execute("SELECT key, value FROM settings WHERE key LIKE 't%'"))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = Store(tmp_path / "memori.db")
    yield opened
    opened.close()


def test_a_write_yields_a_transaction_that_commits_as_one(store: Store) -> None:
    with store.write() as tx:
        assert isinstance(tx, Tx)
        tx.executemany("INSERT INTO settings VALUES (?, ?)", [("t1", "a"), ("t2", "b")])
    assert _settings(store) == {"t1": "a", "t2": "b"}


def test_a_nested_write_is_a_savepoint_undone_alone(store: Store) -> None:
    with store.write() as tx:
        tx.execute("INSERT INTO settings VALUES ('t1', 'outer')")
        with pytest.raises(RuntimeError), store.write() as inner:
            assert inner is tx
            inner.execute("INSERT INTO settings VALUES ('t2', 'inner')")
            raise RuntimeError("the inner unit fails")
        with store.write() as inner:
            inner.execute("INSERT INTO settings VALUES ('t3', 'kept')")
    assert _settings(store) == {"t1": "outer", "t3": "kept"}


def test_a_failing_outer_write_undoes_its_savepoints_too(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as tx:
        with store.write() as inner:
            inner.execute("INSERT INTO settings VALUES ('t1', 'inner')")
        tx.execute("INSERT INTO settings VALUES ('t2', 'outer')")
        raise RuntimeError("boom")
    assert _settings(store) == {}
    with store.write() as tx:  # and the thread writes again
        tx.execute("INSERT INTO settings VALUES ('t3', 'after')")
    assert _settings(store) == {"t3": "after"}


def test_a_driver_error_leaves_as_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="UNIQUE constraint failed") as caught, store.write() as tx:
        tx.execute("INSERT INTO settings VALUES ('t1', 'a')")
        tx.execute("INSERT INTO settings VALUES ('t1', 'b')")
    assert isinstance(caught.value.__cause__, connect.DatabaseError)
    assert str(store.path) in str(caught.value)
    assert _settings(store) == {}


def test_a_commit_that_fails_is_rolled_back_and_the_thread_writes_again(store: Store) -> None:
    # A deferred foreign-key violation fails the COMMIT itself, and SQLite keeps the
    # transaction open: the write must roll it back, not leave the connection inside it.
    with pytest.raises(StoreError, match="FOREIGN KEY") as caught, store.write() as tx:
        tx.execute("PRAGMA defer_foreign_keys = ON")
        tx.execute("INSERT INTO settings VALUES ('t1', 'lost')")
        tx.execute(
            "INSERT INTO sessions (entity_id, process_id, name, created_at) "
            "VALUES ('nobody', 'nothing', 's', '2026-01-01')"
        )
    assert isinstance(caught.value.__cause__, connect.DatabaseError)
    assert not store.conn.in_transaction
    with store.write() as tx:
        tx.execute("INSERT INTO settings VALUES ('t2', 'written')")
    assert _settings(store) == {"t2": "written"}


class _FailingEnd:
    """A sqlean connection whose COMMIT and ROLLBACK fail like a dying disk's would."""

    def __init__(self, raw: Any):
        self._raw = raw

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() in ("COMMIT", "ROLLBACK"):
            raise sqlean.dbapi2.OperationalError("disk I/O error")
        return self._raw.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def test_a_connection_that_cannot_roll_back_is_dropped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.build()
    store.close()  # the next connection is opened through the patched driver
    opened: list[Any] = []
    real = connect.connect_path

    def dying(path: str) -> Any:
        conn = real(path)
        if not opened:
            conn = _FailingEnd(conn)
        opened.append(conn)
        return conn

    monkeypatch.setattr(connect, "connect_path", dying)
    with pytest.raises(StoreError, match="disk I/O error"), store.write() as tx:
        tx.execute("INSERT INTO settings VALUES ('t1', 'lost')")
    # The stuck connection was closed (its transaction, and the write lock, went with it);
    # the next write opens a fresh connection instead of "transaction within a transaction".
    with store.write() as tx:
        tx.execute("INSERT INTO settings VALUES ('t2', 'written')")
    assert len(opened) == 2
    assert _settings(store) == {"t2": "written"}
