"""Transcript import: formats, bad input, idempotency, redaction, bounded memory."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from memori_cli import ImportFormatError, Memori
from memori_cli.importers import detect_format
from memori_cli.importers.reader import iter_json_array, iter_jsonl


def rows(mem: Memori) -> list[tuple[Any, ...]]:
    return mem.store.conn.execute(
        """SELECT m.role, m.content, m.name, s.name, m.entity_id, m.external_id, m.created_at
           FROM messages m JOIN sessions s ON s.id = m.session_id ORDER BY m.id"""
    ).fetchall()


def chatgpt_conversation() -> dict[str, Any]:
    def node(nid: str, parent: str | None, children: list[str], role: str | None = None,
             text: str = "", hidden: bool = False) -> dict[str, Any]:  # fmt: skip
        message = None
        if role:
            message = {
                "id": nid, "author": {"role": role}, "create_time": 1700000000.5,
                "content": {"content_type": "text", "parts": [text, {"asset": "image"}]},
                "metadata": {"is_visually_hidden_from_conversation": hidden},
            }  # fmt: skip
        return {"id": nid, "message": message, "parent": parent, "children": children}

    mapping = {
        "root": node("root", None, ["sys"]),
        "sys": node("sys", "root", ["u1"], "system", "hidden system prompt", hidden=True),
        "u1": node("u1", "sys", ["a_old", "a1"], "user", "What is a good name for a cat?"),
        "a_old": node("a_old", "u1", [], "assistant", "ABANDONED BRANCH"),
        "a1": node("a1", "u1", ["u2"], "assistant", "How about Miso?"),
        "u2": node("u2", "a1", [], "user", "Miso it is!"),
        "null": {"id": "null", "message": None, "parent": None, "children": []},
    }
    return {"conversation_id": "conv-1", "title": "Cat", "current_node": "u2", "mapping": mapping}


def test_native_jsonl_with_every_field(mem: Memori, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [
        {"role": "user", "content": "hi", "name": "Ann", "session": "s", "id": "x1",
         "timestamp": "2024-05-08T13:56:00+02:00", "entity": "ann", "process": "bot"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}], "session": "s"},
    ])  # fmt: skip
    report = mem.import_file(path)
    assert (report.format, report.imported, report.rejected_total) == ("native", 2, 0)
    first, second = rows(mem)
    assert first == ("user", "hi", "Ann", "s", "ann", "x1", "2024-05-08T11:56:00+00:00")
    assert second[:5] == ("assistant", "hello", None, "s", "default")


def test_messages_jsonl_one_conversation_per_line(mem: Memori, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"},
                      {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
                      {"role": "tool", "content": "42", "name": "calc"}]},
        {"messages": [{"role": "user", "content": "second conversation"}], "id": "c2"},
    ])  # fmt: skip
    report = mem.import_file(path, entity_id="e")
    assert detect_format(path) == "messages"
    assert (report.imported, report.skipped, report.sessions) == (4, 1, 2)
    sessions = {r[3] for r in rows(mem)}
    assert "c2" in sessions and len(sessions) == 2


def test_chatgpt_export_follows_current_node_and_skips_hidden(mem: Memori, tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([chatgpt_conversation()], indent=2))
    report = mem.import_file(path, entity_id="me")
    assert report.format == "chatgpt"
    assert [(r[0], r[1], r[3], r[5]) for r in rows(mem)] == [
        ("user", "What is a good name for a cat?", "conv-1", "u1"),
        ("assistant", "How about Miso?", "conv-1", "a1"),
        ("user", "Miso it is!", "conv-1", "u2"),
    ]
    assert rows(mem)[0][6].startswith("2023-11-14T22:13:20.5")


def test_chatgpt_export_zip(mem: Memori, tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("chat.html", "<html></html>")
        archive.writestr("conversations.json", json.dumps([chatgpt_conversation()]))
    report = mem.import_file(path)
    assert (report.format, report.imported) == ("chatgpt", 3)


def test_claude_export(mem: Memori, tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([{
        "uuid": "c-1", "name": "Trip",
        "chat_messages": [
            {"uuid": "m1", "sender": "human", "text": "Plan a trip to Oslo",
             "created_at": "2024-03-01T10:00:00.000000Z"},
            {"uuid": "m2", "sender": "assistant", "text": "",
             "content": [{"type": "text", "text": "Day one: the fjord."}]},
        ],
    }]))  # fmt: skip
    report = mem.import_file(path)
    assert report.format == "claude"
    assert [(r[0], r[1], r[3], r[5]) for r in rows(mem)] == [
        ("user", "Plan a trip to Oslo", "c-1", "m1"),
        ("assistant", "Day one: the fjord.", "c-1", "m2"),
    ]


@pytest.mark.parametrize("container", ["json", "jsonl"])
def test_sharegpt(mem: Memori, tmp_path: Path, container: str) -> None:
    record = {"id": "sg1", "conversations": [
        {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"},
        {"from": "robot", "value": "?"}]}  # fmt: skip
    path = tmp_path / f"s.{container}"
    if container == "json":
        path.write_text(json.dumps([record]))
    else:
        write_jsonl(path, [record])
    report = mem.import_file(path)
    assert (report.format, report.imported) == ("sharegpt", 2)
    assert report.rejected == [{"line": 1, "error": "conversations[2]: field 'from': unknown "
                                "speaker 'robot'"}]  # fmt: skip


def test_format_can_be_forced_and_unknown_files_are_explained(mem: Memori, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "weird.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(ImportFormatError, match=r"keys bar, foo.*--format"):
        mem.import_file(path)
    forced = mem.import_file(path, format="native")
    assert forced.rejected == [{"line": 1, "error": "field 'role': missing"}]
    with pytest.raises(ImportFormatError, match="unknown format"):
        mem.import_file(path, format="csv")


def test_messy_bytes_are_handled_line_by_line(mem: Memori, tmp_path: Path) -> None:
    good = lambda text: json.dumps({"role": "user", "content": text}).encode()  # noqa: E731
    data = b"".join([
        b"\xef\xbb\xbf" + good("after a BOM") + b"\r\n",
        b"\r\n",
        b"   \n",
        b'{"role": "user", "content": "bad \xff\xfe bytes"}\n',
        good("crlf line") + b"\r\n",
        b'{"role": "user", "content": "raw \x00 nul"}\n',
        good("escaped \u0000 nul") + b"\n",
        b"[1, 2]\n",
        good("before the end") + b"\n",
        b'{"role": "user", "content": "cut off',
    ])  # fmt: skip
    path = tmp_path / "messy.jsonl"
    path.write_bytes(data)
    report = mem.import_file(path)
    assert [r[1] for r in rows(mem)] == [
        "after a BOM",
        "crlf line",
        "escaped  nul",
        "before the end",
    ]
    errors = {r["line"]: r["error"] for r in report.rejected}
    assert set(errors) == {4, 6, 8, 10}
    assert "invalid UTF-8" in errors[4]
    assert "invalid JSON" in errors[6]
    assert "expected a JSON object" in errors[8]
    assert "truncated" in errors[10]


def test_bad_fields_are_named(mem: Memori, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "fields.jsonl", [
        {"role": "robot", "content": "x"},
        {"role": "user", "content": 5},
        {"role": "user", "content": "x", "timestamp": "yesterday"},
        {"role": "user", "content": "x", "entity": ""},
        {"role": "user", "content": "x", "session": "a\nb"},
        {"role": "user", "content": "x", "name": ["n"]},
        {"role": "user", "content": "valid one"},
    ])  # fmt: skip
    report = mem.import_file(path)
    assert report.imported == 1
    fields = [r["error"].split(":")[0] for r in report.rejected]
    assert fields == ["field 'role'", "field 'content'", "field 'timestamp'", "field 'entity'",
                      "field 'session'", "field 'name'"]  # fmt: skip
    assert all(r["line"] == i for i, r in enumerate(report.rejected, start=1))


def test_huge_message_is_stored_and_found(mem: Memori, tmp_path: Path) -> None:
    text = "lorem ipsum " * 200_000 + "needle"
    path = write_jsonl(tmp_path / "huge.jsonl", [{"role": "user", "content": text}])
    assert mem.import_file(path).imported == 1
    assert mem.recall("needle")[0].content == text


def test_importing_twice_adds_nothing_but_repeats_within_a_session_are_kept(
    mem: Memori, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"role": "user", "content": "thanks", "session": "s"},
        {"role": "assistant", "content": "you're welcome", "session": "s"},
        {"role": "user", "content": "thanks", "session": "s"},
        {"role": "user", "content": "with id", "id": "m-1", "session": "s"},
    ])  # fmt: skip
    first = mem.import_file(path)
    assert (first.imported, first.duplicates) == (4, 0)
    second = mem.import_file(path)
    assert (second.imported, second.duplicates) == (0, 4)
    # The same file with a line fixed in the middle: only the new line lands.
    with open(path, "a") as handle:
        handle.write(json.dumps({"role": "user", "content": "a new line", "session": "s"}) + "\n")
    third = mem.import_file(path)
    assert (third.imported, third.duplicates) == (1, 4)
    assert mem.store.conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2


SECRETS = {
    "openai": "sk-proj-" + "Ab3" * 16,
    "anthropic": "sk-ant-api03-" + "Xy9_" * 20,
    "github": "ghp_" + "Q" * 36,
    "aws": "AKIAIOSFODNN7ABCDEFG",
    "aws-secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
    "pem": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
}


def test_secrets_are_redacted_before_anything_is_stored(mem: Memori, tmp_path: Path) -> None:
    content = (
        f"keys: {SECRETS['openai']} {SECRETS['anthropic']} {SECRETS['github']} "
        f"{SECRETS['aws']} aws_secret_access_key={SECRETS['aws-secret']} {SECRETS['jwt']}\n"
        f"-----BEGIN PRIVATE KEY-----\n{SECRETS['pem']}\n-----END PRIVATE KEY-----\nbye"
    )
    path = write_jsonl(tmp_path / "s.jsonl", [{"role": "user", "content": content}])
    mem.import_file(path)
    stored = rows(mem)[0][1]
    assert "[REDACTED:openai-key]" in stored and "[REDACTED:private-key]" in stored
    assert stored.endswith("bye")
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("memori.db"))
    for kind, secret in SECRETS.items():
        assert secret.encode() not in blobs, kind


def test_ordinary_text_is_not_redacted(mem: Memori) -> None:
    text = "I use sk-learn and the task-force; ghp is fine; AKIA is a word; eyJ alone"
    mem.add_messages([{"role": "user", "content": text}])
    assert rows(mem)[0][1] == text


def test_readers_stream_in_bounded_memory() -> None:
    record = {"conversations": [{"from": "human", "value": "x" * 500}]}
    line = json.dumps(record).encode()
    count = 40_000  # about 21 MB
    array = b"[" + b",\n".join([line] * count) + b"]"
    jsonl = b"\n".join([line] * count)
    for reader, data in ((iter_json_array, array), (iter_jsonl, jsonl)):
        stream = io.BytesIO(data)
        tracemalloc.start()
        seen = sum(1 for item in reader(stream) if item.error is None)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seen == count
        assert peak < 8 * 1024 * 1024, f"{reader.__name__} peaked at {peak / 1e6:.1f} MB"


def test_json_array_reader_reports_line_numbers_and_truncation() -> None:
    data = b'[\n {"a": 1},\n {"b":\n  2},\n {"c": 3'
    items = list(iter_json_array(io.BytesIO(data)))
    assert [(i.line, i.value) for i in items[:2]] == [(2, {"a": 1}), (3, {"b": 2})]
    assert items[2].line == 5 and "truncated" in (items[2].error or "")
