"""Row-level security per entity on PostgreSQL (``memori rls``): the database keeps a role to
the entities granted to it, whatever SQL runs as that role."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_postgres_library import EXAMPLE
from typer.testing import CliRunner

from memori_cli import Memori, StoreError
from memori_cli.cli import app


def rls(url: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["--db", url, "rls", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def app_role(postgres_store_url: str) -> Iterator[tuple[str, str]]:
    """A login role of the test's own: (its name, the store's URL as that role)."""
    import psycopg

    name = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_store_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN")
    base, _, query = postgres_store_url.partition("?")
    params = dict(urllib.parse.parse_qsl(query), user=name)
    try:
        yield name, f"{base}?{urllib.parse.urlencode(params)}"
    finally:
        with psycopg.connect(postgres_store_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {name}")
            admin.execute(f"DROP ROLE {name}")


def test_a_role_sees_and_writes_only_the_entities_granted_to_it(
    postgres_store_url: str, app_role: tuple[str, str]
) -> None:
    role, as_app = app_role
    owner = Memori(conn=postgres_store_url)
    for entity in ("acme:maya", "globex:maya"):
        owner.import_file(EXAMPLE, entity_id=entity)
    owner.augment()
    assert "row-level security on for" in rls(postgres_store_url, "enable")
    rls(postgres_store_url, "enable")  # idempotent
    rls(postgres_store_url, "grant", role, "acme:%")
    status = json.loads(rls(postgres_store_url, "status", "--json"))
    assert status["enabled"] and status["unfiltered"] == []
    doctor = CliRunner().invoke(app, ["--db", postgres_store_url, "doctor", "--json"])
    (line,) = [c for c in json.loads(doctor.stdout) if c["check"] == "row-level security"]
    assert line["detail"] == "on: 1 grant(s) (memori rls status)"
    assert status["grants"] == [{"role": role, "pattern": "acme:%"}]

    mem = Memori(conn=as_app)
    assert [h.content for h in mem.recall("where does Maya live", entity_id="acme:maya")]
    assert mem.recall("where does Maya live", entity_id="globex:maya") == []
    assert mem.memories("globex:maya") == [] and mem.memories("acme:maya")
    # whatever the SQL: a query with no entity in it sees acme's rows only
    conn = mem.store.conn
    assert conn.execute("SELECT DISTINCT entity_id FROM messages").fetchall() == [("acme:maya",)]
    assert conn.execute("SELECT count(*) FROM memory_sources").fetchone()[0] > 0
    (foreign,) = conn.execute(
        """SELECT count(*) FROM memory_sources s JOIN memories m ON m.id = s.memory_id
           WHERE m.entity_id != 'acme:maya'"""
    ).fetchone()
    assert foreign == 0
    assert mem.stats()["entities"] == 1
    with pytest.raises(StoreError, match="row-level security"):
        mem.import_file(EXAMPLE, entity_id="globex:new")
    assert mem.import_file(EXAMPLE, entity_id="acme:new").imported == 23
    assert mem.augment().jobs_done == 4  # acme's jobs; globex's are not its to see
    # the owner (the daemon's role) sees everything
    assert {e["entity"] for e in owner.entities()} == {"acme:maya", "acme:new", "globex:maya"}

    assert "1 grant(s)" in rls(postgres_store_url, "revoke", role)
    mem.store.close_thread()
    assert mem.recall("where does Maya live", entity_id="acme:maya") == []
    rls(postgres_store_url, "disable")
    assert json.loads(rls(postgres_store_url, "status", "--json"))["enabled"] is False
    assert mem.recall("where does Maya live", entity_id="globex:maya")
    mem.close()
    owner.close()


def test_rls_is_refused_on_sqlite_and_before_enable(
    tmp_path: Path, postgres_store_url: str, app_role: tuple[str, str]
) -> None:
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "m.db"), "rls", "enable"])
    assert result.exit_code == 1 and "PostgreSQL feature" in result.output
    Memori(conn=postgres_store_url).store.build()
    result = CliRunner().invoke(app, ["--db", postgres_store_url, "rls", "grant", "nobody", "x"])
    assert result.exit_code == 1 and "memori rls enable first" in result.output
    rls(postgres_store_url, "enable")
    result = CliRunner().invoke(app, ["--db", postgres_store_url, "rls", "grant", "nobody", "x"])
    assert result.exit_code == 1 and "there is no role 'nobody'" in result.output


def test_a_granted_role_leaves_the_hnsw_index_to_the_owner(
    postgres_store_url: str, app_role: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import HashingEmbedder

    from memori_cli.store.postgres import vectors as pgvector

    monkeypatch.setattr(pgvector, "HNSW_MIN_ROWS", 30)
    role, as_app = app_role
    Memori(conn=postgres_store_url).store.build()
    rls(postgres_store_url, "enable")
    rls(postgres_store_url, "grant", role, "acme:%")
    mem = Memori(conn=as_app, embedder=HashingEmbedder())
    with mem.attribution("acme:big"):
        mem.add_messages([{"role": "user", "content": f"note {i} about tea"} for i in range(40)])
    assert mem.augment().embedded == 40  # no index (not the owner's), and no error
    assert not pgvector._hnsw_valid(mem.store.conn.raw, "acme:big")
    assert len(mem.recall("tea", entity_id="acme:big", limit=5)) == 5
    mem.close()
