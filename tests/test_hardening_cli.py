"""Hardening of the command line: `memori entities`, the entity note, tables at 60 columns,
piped graph output, and the indexes that keep augmentation flat as history grows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.cli import app

runner = CliRunner()
LONG_NAME = "Bartholomewfitzgeraldwinterbottomthethird"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with two entities (default and maya), their memories and graph."""
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    monkeypatch.delenv("MEMORI_CHAT_MODEL", raising=False)
    path = tmp_path / "memori.db"
    mem = Memori(conn=path)
    for entity in ("default", "maya"):
        with mem.attribution(entity_id=entity):
            mem.set_session("a-rather-long-session-name-2024-01-01")
            mem.add_messages(
                [
                    {
                        "role": "user",
                        "content": "I live in Lisbon with a very long named companion "
                        "Bartholomew-Fitzgerald-Winterbottom-the-Third.",
                        "name": "Kimberly-Anne",
                    },
                    {
                        "role": "user",
                        "content": f"My sister {LONG_NAME} is visiting.",
                        "name": "Kimberly-Anne",
                    },
                ]
            )
    with mem.attribution(entity_id="maya"):
        mem.add_messages([{"role": "user", "content": "I like green tea.", "name": "Maya"}])
    mem.augment()
    mem.close()
    return path


def invoke(db: Path, *args: str, columns: int = 100) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", str(db), *args], env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


# -- memori entities -------------------------------------------------------------------------
def test_entities_lists_counts_as_json(db: Path) -> None:
    code, stdout, _ = invoke(db, "entities", "--json")
    assert code == 0
    rows = {row["entity"]: row for row in json.loads(stdout)}
    assert set(rows) == {"default", "maya"}
    assert rows["maya"]["messages"] == 3 and rows["default"]["messages"] == 2
    assert rows["maya"]["memories"] > rows["default"]["memories"] >= 1
    assert rows["maya"]["sessions"] == 2 and rows["default"]["sessions"] == 1
    assert rows["maya"]["last_activity"] >= rows["default"]["last_activity"]
    assert rows["default"]["default"] and not rows["maya"]["default"]


def test_entities_table_and_empty_store(db: Path, tmp_path: Path) -> None:
    code, stdout, _ = invoke(db, "entities")
    assert code == 0
    assert "maya" in stdout and "default *" in stdout and "messages" in stdout
    empty = tmp_path / "empty.db"
    Memori(conn=empty).store.build()
    code, stdout, stderr = invoke(empty, "entities")
    assert code == 0 and stdout == "" and "No entities yet" in stderr


@pytest.mark.parametrize(
    "args",
    [("recall", "Lisbon"), ("memories", "list"), ("graph", "show"), ("graph", "search", "lis")],
)
def test_commands_without_entity_say_which_one_they_used(db: Path, args: tuple[str, ...]) -> None:
    code, _, stderr = invoke(db, *args)
    assert code == 0
    assert "(entity: default" in stderr and "holds 2 entities" in stderr
    assert "memori entities" in stderr
    # Named, or asked for JSON (whose rows name their entity): no note.
    assert "(entity:" not in invoke(db, *args, "--entity", "maya")[2]
    assert "(entity:" not in invoke(db, *args, "--json")[2]


def test_no_entity_note_with_a_single_entity(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    mem = Memori(conn=path)
    mem.add_messages([{"role": "user", "content": "I live in Oslo."}])
    mem.close()
    code, _, stderr = invoke(path, "recall", "Oslo")
    assert code == 0 and "(entity:" not in stderr


# -- tables at 60 columns --------------------------------------------------------------------
def column_widths(table: str) -> list[int]:
    """The inner widths of a Rich table's columns, from its top border."""
    top = next(line for line in table.splitlines() if line.startswith("┏"))
    return [len(cell) for cell in top.strip("┏┓").split("┳")]


def header(table: str) -> str:
    return "\n".join(line for line in table.splitlines() if line.startswith("┃"))


@pytest.mark.parametrize(
    ("args", "content"),
    [
        (("recall", "Lisbon"), 1),
        (("memories", "list"), 2),
        (("sessions",), 0),
        (("jobs", "--status", "done"), -1),
    ],
)
def test_tables_give_content_room_at_60_columns(
    db: Path, args: tuple[str, ...], content: int
) -> None:
    code, stdout, _ = invoke(db, *args, columns=60)
    assert code == 0
    assert max(len(line) for line in stdout.splitlines()) <= 60
    widths = column_widths(stdout)
    assert min(widths) >= 4, widths  # no one-character columns
    assert widths[content] >= 16, widths  # the content keeps room to be read
    # Headers are not folded into one-letter lines.
    assert all(len(line) > 6 for line in header(stdout).splitlines())


def test_secondary_columns_are_cut_not_folded(db: Path) -> None:
    _, stdout, _ = invoke(db, "recall", "Lisbon", columns=60)
    assert "…" in stdout  # the long session name is cut with an ellipsis
    assert "-2024-01-01" not in stdout


def test_wide_tables_keep_every_column(db: Path) -> None:
    _, stdout, _ = invoke(db, "memories", "list", columns=120)
    assert "seen" in header(stdout) and "Kimberly-Anne" in stdout


def test_graph_show_piped_never_crops(db: Path) -> None:
    code, stdout, _ = invoke(db, "graph", "show", columns=40)
    assert code == 0
    assert LONG_NAME in stdout
    line = next(line for line in stdout.splitlines() if LONG_NAME in line)
    assert line.rstrip().endswith(")")  # the edge's (count, dates, id) in full
    assert all(line == line.rstrip() for line in stdout.splitlines())


# -- augmentation stays flat as history grows ------------------------------------------------
def plan(mem: Memori, sql: str, args: tuple[object, ...]) -> str:
    return " ".join(row[3] for row in mem.store.conn.execute("EXPLAIN QUERY PLAN " + sql, args))


def test_current_slot_and_edge_lookups_use_the_current_indexes(mem: Memori) -> None:
    mem.store.build()
    names = {row[0] for row in mem.store.conn.execute("SELECT name FROM sqlite_master")}
    assert {"memories_slot_current", "triples_current"} <= names
    # store/memories.py _supersede: the slot's current row, not its whole history.
    supersede = plan(
        mem,
        """SELECT id, valid_from FROM memories WHERE entity_id = ? AND about = ? AND slot = ?
               AND valid_to IS NULL AND id != ? ORDER BY valid_from DESC LIMIT 1""",
        ("e", "Kim", "lives_in", 1),
    )
    assert "memories_slot_current" in supersede and "TEMP B-TREE" not in supersede
    # store/memories.py _save_triple: the same current edge, and closing a functional one.
    same = plan(
        mem,
        """SELECT id FROM triples WHERE entity_id = ? AND subject_id = ? AND predicate = ?
               AND object_id = ? AND valid_to IS NULL""",
        ("e", 1, "lives_in", 2),
    )
    close = plan(
        mem,
        """UPDATE triples SET valid_to = ?, superseded_by = ?
           WHERE entity_id = ? AND subject_id = ? AND predicate = ?
               AND valid_to IS NULL AND id != ? AND valid_from <= ?""",
        ("t", 3, "e", 1, "lives_in", 3, "t"),
    )
    assert "triples_current" in same and "triples_current" in close
