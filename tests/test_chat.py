"""``memori chat`` end to end: the real command in a subprocess, scripted on stdin, talking to
the local OpenAI-compatible server (or a tiny GGUF model)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import LLMServer

from memori_cli import Memori

MEMORI = str(Path(sys.executable).parent / "memori")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    srv = LLMServer().start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MEMORI_CHAT_MODEL"):
        monkeypatch.delenv(name, raising=False)


def chat(
    db: Path, script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MEMORI, "--db", str(db), "chat", *args], input=script, capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_chat_remembers_and_runs_its_commands(tmp_path: Path, server: LLMServer) -> None:
    db = tmp_path / "memori.db"
    mem = Memori(db)
    with mem.attribution("maya"):
        mem.set_session("earlier")
        mem.add_messages([{"role": "user", "content": "I love green tea."}])
        mem.augment()
    (memory,) = mem.memories("maya")
    server.requests.clear()
    script = "\n".join([
        "Which tea should I buy?",
        "/memories",
        "/recall green tea",
        "first line \\", "second line",
        '"""', "a block", "of two lines", '"""',
        "/session new",
        "Hello again",
        f"/forget {memory['id']}",
        "/forget abc",
        "/nonsense",
        "/quit",
        "never sent",
    ])  # fmt: skip
    done = chat(db, script, "--entity", "maya", env={"OPENAI_BASE_URL": server.url + "/v1"})
    assert done.returncode == 0, done.stderr
    assert "Echo: Which tea should I buy?" in done.stdout
    assert "Echo: first line \nsecond line" in done.stdout
    assert "Echo: a block\nof two lines" in done.stdout
    assert done.stdout.count("green tea") >= 2  # /memories and /recall tables
    assert f"Forgot memory {memory['id']}." in done.stderr
    assert "takes a memory id" in done.stderr and "Unknown command '/nonsense'" in done.stderr
    first = server.requests[0]["body"]["messages"]
    assert first[0]["role"] == "system" and "I love green tea" in first[0]["content"]
    # the conversation so far is sent each turn, until /session new starts afresh
    assert [m["content"] for m in server.requests[2]["body"]["messages"][1:]][-1] == (
        "a block\nof two lines"
    )
    assert [m["role"] for m in server.requests[3]["body"]["messages"]] == ["system", "user"]
    assert "never sent" not in str(server.requests)
    rows = mem.store.conn.execute(
        """SELECT m.role, s.name, m.source FROM messages m JOIN sessions s
           ON s.id = m.session_id WHERE m.entity_id = 'maya' AND m.source LIKE 'capture:%'
           ORDER BY m.id"""
    ).fetchall()
    assert len(rows) == 8 and {r[2] for r in rows} == {"capture:openai.chat"}
    assert len({r[1] for r in rows[:6]}) == 1 and rows[6][1] != rows[0][1]
    assert mem.memory(memory["id"]) is None
    (pending,) = mem.store.conn.execute(
        "SELECT count(*) FROM jobs WHERE entity_id = 'maya' AND status = 'pending'"
    ).fetchone()
    assert pending >= 1  # captured exchanges wait for augmentation


def test_chat_without_a_backend_says_how_to_configure_one(tmp_path: Path) -> None:
    done = chat(tmp_path / "memori.db", "hello\n")
    assert done.returncode == 1
    for hint in ("--model PATH.gguf", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "memori model add"):
        assert hint in done.stderr


def test_chat_keeps_going_when_the_model_fails(tmp_path: Path) -> None:
    done = chat(
        tmp_path / "memori.db", "hello\nagain\n", "--base-url", "http://127.0.0.1:9/v1",
        "--entity", "maya",
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stderr.count("Error from the model") == 2


def test_chat_with_a_local_gguf_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from make_tiny_model import make_llama_gguf

    model = make_llama_gguf(tmp_path / "tiny.gguf")
    db = tmp_path / "memori.db"
    done = chat(db, "hello there\n", "--model", str(model), "--max-tokens", "8")
    assert done.returncode == 0, done.stderr
    assert "local tiny.gguf" in done.stderr
    rows = Memori(db).store.conn.execute("SELECT role, content, source FROM messages").fetchall()
    assert tuple(rows[0]) == ("user", "hello there", "capture:llama_cpp")
