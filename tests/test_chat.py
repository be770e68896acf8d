"""``memori chat`` end to end: the real command in a subprocess, scripted on stdin or typed at
a pseudo-terminal, talking to the local OpenAI-compatible server (or a tiny GGUF model)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import LONG_REPLY, LLMServer

from memori_cli import Memori
from memori_cli.cli.chat_state import history_path

pytestmark = pytest.mark.slow  # every test runs `memori chat` as a process

MEMORI = str(Path(sys.executable).parent / "memori")
FAKE_KEY = "sk-" + "a1B2c3D4e5" * 4


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


def tea_lover(tmp_path: Path) -> tuple[Path, Memori]:
    """A store where Maya said, in an earlier session, that she loves green tea."""
    db = tmp_path / "memori.db"
    mem = Memori(db)
    with mem.attribution("maya"):
        mem.set_session("earlier")
        mem.add_messages([{"role": "user", "content": "I love green tea."}])
        mem.augment()
    return db, mem


def test_chat_remembers_and_runs_its_commands(tmp_path: Path, server: LLMServer) -> None:
    db, mem = tea_lover(tmp_path)
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
    assert first[0]["role"] == "system" and "green tea" in first[0]["content"]
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
    assert pending == 0  # no daemon runs: chat learned from the exchanges itself


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
    assert done.returncode == 1  # the model failed every turn
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


# -- learning, commands, exit status --------------------------------------------------------
def test_chat_learns_in_the_background_when_no_daemon_runs(
    tmp_path: Path, server: LLMServer
) -> None:
    db = tmp_path / "memori.db"
    done = chat(
        db, "I live in Antwerp.\n/memories\n", "--entity", "maya",
        env={"OPENAI_BASE_URL": server.url + "/v1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Learning from this chat as you talk (no daemon runs" in done.stderr
    assert "lives in Antwerp" in done.stdout  # /memories, right after it was said
    assert "Learned from this chat: 1 new memory." in done.stderr
    mem = Memori(db)
    assert [m["content"] for m in mem.memories("maya")] == ["User lives in Antwerp"]
    assert not mem.jobs(status="pending")


def test_chat_leaves_learning_to_a_running_daemon(tmp_path: Path, server: LLMServer) -> None:
    from memori_daemon.pidfile import acquire

    db = tmp_path / "memori.db"
    Memori(db).store.build()
    held = acquire(db)  # this process holds the daemon's lock: chat sees a daemon running
    assert held is not None
    try:
        done = chat(
            db, "I live in Antwerp.\n", "--entity", "maya",
            env={"OPENAI_BASE_URL": server.url + "/v1"},
        )  # fmt: skip
    finally:
        os.close(held)
    assert done.returncode == 0, done.stderr
    assert f"The daemon (pid {os.getpid()}) learns from this chat" in done.stderr
    assert "Learned" not in done.stderr
    assert Memori(db).jobs(status="pending")  # left for the daemon


def test_chat_recall_usage_and_why(tmp_path: Path, server: LLMServer) -> None:
    db, _ = tea_lover(tmp_path)
    script = "/why\n/recall\nWhich tea should I buy?\n/why\nTell me about rockets\n/why\n"
    done = chat(db, script, "--entity", "maya", env={"OPENAI_BASE_URL": server.url + "/v1"})
    assert done.returncode == 0, done.stderr
    assert "No turn yet" in done.stderr
    assert "Usage: /recall QUERY" in done.stderr
    assert "Given to the model with your last message:" in done.stderr
    # the block exactly as it went into the system prompt
    block = done.stdout[done.stdout.index("<memori-memories>") :]
    block = block[: block.index("</memori-memories>") + len("</memori-memories>")]
    assert "green tea" in block
    assert block in server.requests[-2]["body"]["messages"][0]["content"]
    assert "Nothing from memory was given to the model on the last turn" in done.stderr


def test_chat_exit_status_says_whether_the_model_ever_answered(
    tmp_path: Path, server: LLMServer
) -> None:
    url = {"OPENAI_BASE_URL": server.url + "/v1"}
    server.fail_next = 100  # every request, retries included, answers 500
    try:
        done = chat(tmp_path / "memori.db", "hello\nagain\n", "--entity", "maya", env=url)
    finally:
        server.fail_next = 0
    assert done.returncode == 1
    assert done.stderr.count("Error from the model") == 2
    server.fail_next = 3  # the first turn's request and both of the SDK's retries
    try:
        done = chat(tmp_path / "memori.db", "hello\nagain\n", "--entity", "maya", env=url)
    finally:
        server.fail_next = 0
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Error from the model") == 1 and "Echo: again" in done.stdout


# -- at a terminal ----------------------------------------------------------------------------
_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")
_OTHER_ESCAPE = re.compile(r"\x1b(?:\][^\x07]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|.)", re.S)


def screen_lines(output: str, rows: int, cols: int) -> list[str]:
    """What a terminal of ``rows`` x ``cols`` shows for ``output``, scrollback included: the
    little of VT100 that Rich and readline use (cursor up/down/column, erase in line, line
    wrap at the margin); colours and modes are ignored."""
    lines: list[list[str]] = [[]]
    row = col = 0
    wrap_due = False  # a character in the last column: the next one wraps first
    i = 0
    while i < len(output):
        char = output[i]
        if char == "\x1b":
            csi = _CSI.match(output, i)
            if csi is None:
                other = _OTHER_ESCAPE.match(output, i)
                i = other.end() if other else i + 1
                continue
            i = csi.end()
            params, final = csi.groups()
            if params.startswith("?"):
                continue
            n = int(params.split(";")[0] or 0)
            top = max(0, len(lines) - rows)  # the cursor cannot go above the screen
            if final == "A":
                row = max(top, row - max(n, 1))
            elif final == "B":
                row += max(n, 1)
            elif final == "C":
                col = min(cols - 1, col + max(n, 1))
            elif final == "D":
                col = max(0, col - max(n, 1))
            elif final == "G":
                col = max(n, 1) - 1
            elif final == "K":
                line = lines[row]
                if n == 2:
                    line.clear()
                elif n == 1:
                    line[: col + 1] = [" "] * min(col + 1, len(line))
                else:
                    del line[col:]
            elif final == "J" and n == 0:
                del lines[row][col:]
                del lines[row + 1 :]
            if final in "ABCDG":
                wrap_due = False
            while len(lines) <= row:
                lines.append([])
            continue
        i += 1
        if char == "\r":
            col, wrap_due = 0, False
        elif char == "\n":
            row, wrap_due = row + 1, False
        elif char == "\b":
            col, wrap_due = max(0, col - 1), False
        elif char >= " ":
            if wrap_due:
                row, col, wrap_due = row + 1, 0, False
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = char
            if col == cols - 1:
                wrap_due = True
            else:
                col += 1
        while len(lines) <= row:
            lines.append([])
    return ["".join(line).rstrip() for line in lines]


def _fold(text: str) -> str:
    return " ".join(text.split())


class Terminal:
    """``memori chat`` at a pseudo-terminal of ``rows`` x ``cols``: type into it, wait for
    what it prints, and see its screen."""

    def __init__(self, db: Path, *args: str, env: dict[str, str], rows: int = 24, cols: int = 60):
        self.rows, self.cols = rows, cols
        argv = [MEMORI, "--db", str(db), "chat", *args]
        environ = {**os.environ, **env, "TERM": "xterm", "COLUMNS": str(cols), "LINES": str(rows)}
        pid, fd = pty.fork()
        if pid == 0:  # the child: size its terminal, then become memori chat
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                os.execve(argv[0], argv, environ)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        """Everything printed so far, escapes stripped."""
        return _OTHER_ESCAPE.sub("", _CSI.sub("", self.raw.decode(errors="replace")))

    def screen(self) -> list[str]:
        """The screen and its scrollback, as the user sees them."""
        return screen_lines(self.raw.decode(errors="replace"), self.rows, self.cols)

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout`` seconds; False at the end of the output."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            if not data:
                return False
            self.raw += data
        return True

    def wait_for(self, wanted: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until ``wanted`` has been printed ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.text.count(wanted) < count:
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"no {wanted!r} x{count} in:\n{self.text[-2000:]}")

    def type(self, text: str) -> None:
        """Type ``text`` (a line ends with Enter, ``\\r``)."""
        os.write(self.fd, text.encode())

    def exit_status(self, timeout: float = 20) -> int:
        """Read to the end, then the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(0.1):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"chat did not exit:\n{self.text[-2000:]}")
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


@pytest.fixture
def terminal(tmp_path: Path, server: LLMServer) -> Iterator[list[Terminal]]:
    """Chats started at a pseudo-terminal (by ``open_chat``); each is killed if left running."""
    started: list[Terminal] = []
    yield started
    for term in started:
        try:
            os.kill(term.pid, signal.SIGKILL)
            os.waitpid(term.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def open_chat(started: list[Terminal], db: Path, server: LLMServer, rows: int = 24) -> Terminal:
    term = Terminal(db, "--entity", "maya", env={"OPENAI_BASE_URL": server.url + "/v1"}, rows=rows)
    started.append(term)
    term.wait_for("you> ")
    return term


def test_chat_at_a_terminal_shows_the_whole_reply_wrapped(
    tmp_path: Path, server: LLMServer, terminal: list[Terminal]
) -> None:
    # 16 rows: the reply is taller than the screen, so part of it scrolls out while it streams
    term = open_chat(terminal, tmp_path / "memori.db", server, rows=16)
    term.type("Write me an essay about tea\r")
    term.wait_for("you> ", count=2)
    term.type("\x04")  # Ctrl-D at the prompt leaves
    assert term.exit_status() == 0
    screen = term.screen()
    assert max(len(line) for line in screen) <= 60
    shown = _fold("\n".join(screen))
    words = _fold(LONG_REPLY.replace("- ", "• ")).split()
    position = 0
    for word in words:  # every word, in order, nothing in between but the reply itself
        found = shown.find(word, position)
        assert found >= 0, f"{word!r} missing after: {shown[position - 200 : position]!r}"
        position = found + len(word)
    assert shown.count("Tea is the second") == 1 and shown.count("Oolong sits") == 1
    # Ctrl-D ended the prompt's line: chat's last words are on a line of their own
    prompts = [i for i, line in enumerate(screen) if line.startswith("you>")]
    assert [screen[i] for i in prompts] == ["you> Write me an essay about tea", "you>"]
    assert screen[prompts[-1] + 1].startswith(("Learning from this chat is done", "Finishing"))


def test_ctrl_c_at_a_terminal_stops_the_reply_and_keeps_it(
    tmp_path: Path, server: LLMServer, terminal: list[Terminal]
) -> None:
    db = tmp_path / "memori.db"
    term = open_chat(terminal, db, server)
    server.chunk_delay = 0.05  # the essay's 130 words take 6 s
    try:
        term.type("Write me an essay about tea\r")
        term.wait_for("kind of it comes")
        term.type("\x03")
        term.wait_for("(stopped)")
        term.wait_for("you> ", count=2)
    finally:
        server.chunk_delay = 0
    term.type("Hello again\r")
    term.wait_for("Echo: Hello again")
    term.type("/quit\r")
    assert term.exit_status() == 0
    screen = term.screen()
    shown = _fold("\n".join(screen))
    assert shown.count("Tea is the second") == 1 and "Oolong" not in shown
    assert "(stopped)" in screen and "you> Hello again" in screen
    stopped = screen.index("(stopped)")
    assert screen[stopped - 1] and not screen[stopped - 1].startswith("you>")  # the reply's end
    before = [line for line in screen[:stopped] if line]
    assert len(set(before)) == len(before)  # no line printed twice
    rows = (
        Memori(db)
        .store.conn.execute(
            "SELECT role, content, source FROM messages WHERE role = 'assistant' ORDER BY id"
        )
        .fetchall()
    )
    assert rows[0][2] == "capture:openai.chat:partial"
    assert rows[0][1].startswith("Tea is the second") and "Oolong" not in rows[0][1]
    assert rows[1][1:] == ("Echo: Hello again", "capture:openai.chat")


def test_chat_history_is_redacted_private_per_entity_and_forgotten(
    tmp_path: Path, server: LLMServer, terminal: list[Terminal]
) -> None:
    db = tmp_path / "memori.db"
    term = open_chat(terminal, db, server)
    term.type(f"my key is {FAKE_KEY}\r")
    term.wait_for("you> ", count=2)
    term.type("/quit\r")
    assert term.exit_status() == 0
    path = history_path(db, "maya")
    saved = path.read_text()
    assert FAKE_KEY not in saved and "my key is [REDACTED:openai-key]" in saved
    assert "/quit" in saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert history_path(db, "someone-else") != path
    # the next chat reads it back: up-arrow brings the redacted line
    term = open_chat(terminal, db, server)
    term.type("\x1b[A\x1b[A\r")
    term.wait_for("Echo: my key is [REDACTED:openai-key]")
    term.type("/quit\r")
    assert term.exit_status() == 0
    forgot = subprocess.run(
        [MEMORI, "--db", str(db), "forget", "--entity", "maya", "--yes"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert "and the chat history" in forgot.stderr
    assert not path.exists()
