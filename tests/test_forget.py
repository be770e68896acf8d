"""Forgetting an entity removes every derived row and the text from the database files."""

from __future__ import annotations

from pathlib import Path

from conftest import HashingEmbedder

from memori_cli import Memori


def file_bytes(db: Path) -> bytes:
    return b"".join(
        Path(str(db) + suffix).read_bytes()
        for suffix in ("", "-wal")
        if Path(str(db) + suffix).exists()
    )


def test_forget_entity_removes_rows_fts_and_bytes(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = Memori(conn=db, embedder=HashingEmbedder())
    with mem.attribution(entity_id="victim"):
        mem.add_messages([
            {"role": "user", "content": "I live in Zanzibarquux. I love Blorptastic cake.",
             "name": "Vicky"},
            {"role": "assistant", "content": "noted Zanzibarquux"},
        ])  # fmt: skip
    with mem.attribution(entity_id="keeper"):
        mem.add_messages([{"role": "user", "content": "keeper keeps Quagmirefoo"}])
    report = mem.augment()
    assert report.memories_created == 2 and report.triples == 2  # lives in, likes
    assert b"Zanzibarquux" in file_bytes(db)

    removed = mem.forget("victim")
    assert removed == {
        "messages": 2, "jobs": 1, "sessions": 1, "entities": 1, "memories": 2, "triples": 2,
        "session_summaries": 1, "graph_nodes": 3, "rejections": 0,
    }  # fmt: skip
    assert mem.recall("Zanzibarquux", entity_id="victim") == []
    conn = mem.store.conn
    for table in ("messages", "sessions", "jobs", "entities", "memories", "triples",
                  "memory_embeddings", "message_embeddings", "graph_nodes",
                  "graph_aliases"):  # fmt: skip
        column = "id" if table == "entities" else "entity_id"
        assert (
            conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = 'victim'").fetchone()[0]
            == 0
        )
    assert (
        conn.execute(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zanzibarquux'"
        ).fetchone()[0]
        == 0
    )
    # The other entity is untouched.
    assert [h.content for h in mem.recall("Quagmirefoo", entity_id="keeper")] == [
        "keeper keeps Quagmirefoo"
    ]
    mem.close()
    data = file_bytes(db)
    for needle in (b"Zanzibarquux", b"zanzibarquux", b"Blorptastic", b"Vicky", b"victim"):
        assert needle not in data, needle
    assert b"Quagmirefoo" in data
