"""``memori chat``: a terminal chat that remembers you."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape

from .. import chat, paths
from ..memori import Memori
from .common import err, handle_errors, out, state
from .memories import memories_table
from .recalling import hits_table

HELP = """Commands:
  /recall QUERY   what memory holds about QUERY
  /memories       your current memories
  /forget ID      forget one memory
  /session new    start a new thread (the model forgets this conversation; memory stays)
  /help           this list
  /quit           leave (or Ctrl-D)
End a line with \\ to go on writing on the next line; a line of three quotes (\"\"\") starts
and ends a block of several lines."""


@handle_errors
def chat_command(
    ctx: typer.Context,
    entity: Annotated[
        str | None, typer.Option(envvar="MEMORI_ENTITY", help="Who you are (the entity).")
    ] = None,
    process: Annotated[str, typer.Option(help="The agent's name (the process).")] = "chat",
    session: Annotated[str | None, typer.Option(help="Continue this session (thread).")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="A GGUF file, or the model name for an OpenAI or Anthropic backend."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", envvar="OPENAI_BASE_URL", help="An OpenAI-compatible endpoint."),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(chat.BACKENDS)} (default: guessed).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest reply, in tokens.")] = 1024,
) -> None:
    """Chat in the terminal with a model that remembers you.

    The backend is a local GGUF model (--model PATH or `memori model add`), any
    OpenAI-compatible server (--base-url or OPENAI_BASE_URL, OPENAI_API_KEY) or Anthropic
    (ANTHROPIC_API_KEY). Every exchange is stored and queued for augmentation; what memory
    holds about your message goes into the system prompt. Type /help for commands.
    """
    mem = state(ctx).memori(create=True)
    with mem.attribution(entity, process):
        if session is not None:
            mem.set_session(session)
        talk = chat.choose(
            mem, backend=backend, model=model, base_url=base_url, max_tokens=max_tokens
        )
        err.print(
            f"memori chat · {talk.name} {escape(talk.model)} · entity "
            f"{escape(mem.current.entity_id)} · /help for commands, /quit to leave",
            highlight=False,
        )
        try:
            _loop(mem, talk)
        finally:
            mem.llm.flush(10)


def _loop(mem: Memori, talk: chat.Backend) -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": chat.SYSTEM_PROMPT}]
    for text in _inputs():
        if text.startswith("/"):
            if _command(mem, text, history):
                return
            continue
        history.append({"role": "user", "content": text})
        reply = _show(talk.reply(history))
        if reply is None:
            history.pop()
        else:
            history.append({"role": "assistant", "content": reply})


def _command(mem: Memori, text: str, history: list[dict[str, Any]]) -> bool:
    """Run a slash command; True to quit."""
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return True
    if name == "/help":
        err.print(escape(HELP), highlight=False)
    elif name == "/recall" and arg:
        hits = mem.recall(arg)
        out.print(hits_table(hits)) if hits else err.print("Nothing recalled.")
    elif name == "/memories":
        rows = mem.memories()
        if rows:
            out.print(memories_table(rows, history=False))
        else:
            err.print("No memories yet: they are extracted by the daemon or `memori augment`.")
    elif name == "/forget" and arg:
        try:
            memory_id = int(arg.lstrip("#"))
        except ValueError:
            err.print(f"/forget takes a memory id (see /memories), not {escape(arg)!r}")
            return False
        found = mem.memory(memory_id)
        if found is None or found["entity_id"] != mem.current.entity_id:
            err.print(f"No memory {memory_id} of yours.")
        else:
            mem.forget_memory(memory_id)
            err.print(f"Forgot memory {memory_id}.")
    elif name == "/session" and arg == "new":
        session = mem.new_session()
        del history[1:]
        err.print(f"New session {session}.")
    else:
        err.print(f"Unknown command {escape(text)!r}; /help lists them.")
    return False


def _show(pieces: Iterator[str]) -> str | None:
    """Stream a reply to the terminal (rendered as Markdown at a TTY); the full text, or None
    if the backend failed (then the message is not kept in the conversation)."""
    text = ""
    try:
        if out.is_terminal:
            with Live(Markdown(""), console=out, refresh_per_second=12) as live:
                for piece in pieces:
                    text += piece
                    live.update(Markdown(text))
        else:
            for piece in pieces:
                text += piece
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
    except KeyboardInterrupt:
        err.print("[dim](interrupted)[/]")
    except Exception as exc:  # the backend's own errors: say so, keep chatting
        if text:
            sys.stdout.write("\n")
        err.print(f"[red]Error from the model:[/] {escape(str(exc))}", highlight=False)
        return text or None
    return text


def _inputs() -> Iterator[str]:
    """The user's messages: lines, joined where they end in a backslash or sit between lines
    of three quotes. Readline history at a terminal."""
    interactive = sys.stdin.isatty()
    if interactive:
        _history()
    lines: list[str] = []
    block = False
    while True:
        try:
            line = input(("you> " if not lines else "...  ") if interactive else "")
        except EOFError:
            if lines:
                yield "\n".join(lines)
            return
        except KeyboardInterrupt:
            lines, block = [], False
            print()
            continue
        if line.strip() == '"""':
            block = not block
            if block or not lines:
                continue
        elif block:
            lines.append(line)
            continue
        elif line.endswith("\\"):
            lines.append(line[:-1])
            continue
        else:
            lines.append(line)
        text = "\n".join(lines).strip()
        lines = []
        if text:
            yield text


def _history() -> None:
    with contextlib.suppress(ImportError, OSError):
        import atexit
        import readline

        path = paths.state_dir() / "chat_history"
        paths.ensure_private_dir(path.parent, tighten=False)
        with contextlib.suppress(FileNotFoundError):
            readline.read_history_file(path)
        readline.set_history_length(1000)
        atexit.register(readline.write_history_file, path)
