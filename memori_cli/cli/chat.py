"""``memori chat``: a terminal chat that remembers you."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import memori_daemon
import typer

from .. import chat
from ..memori import Memori
from .chat_screen import View, show
from .chat_state import ChatHistory, Learner, history_path
from .common import escape, handle_errors, state
from .memories import memories_table
from .recalling import hits_table

# Short lines: it reads well in a terminal 60 columns wide.
HELP = """Commands:
  /recall QUERY  what memory holds about QUERY
  /memories      your current memories
  /why           what memory gave the model last turn
  /forget ID     forget one memory
  /session new   a new thread (memory stays)
  /help          this list
  /quit          leave (or Ctrl-D)
Ctrl-C stops a reply. End a line with \\ to write on the
next line; a line of three quotes (\"\"\") starts and ends
a block of several lines."""
USAGE = {
    "/recall": "/recall QUERY shows what memory holds about QUERY, e.g. /recall tea",
    "/forget": "/forget ID forgets one memory; /memories shows their ids",
    "/session": "/session new starts a new thread (memory stays)",
}
#: How long /memories waits for learning in progress, so that it shows what was just said.
LEARN_BEFORE_LOOKING_S = 3.0


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
    (ANTHROPIC_API_KEY). Every exchange is stored; what memory holds about your message goes
    into the system prompt. Memories are learned from the chat by the daemon if it runs for
    this store, else by the chat itself, in the background. Type /help for commands.

    Exits with status 1 when the model failed every turn.
    """
    if backend is not None and backend not in chat.BACKENDS:
        raise typer.BadParameter(
            f"{backend!r}; choose one of {', '.join(chat.BACKENDS)}", param_hint="--backend"
        )
    mem = state(ctx).memori(create=True)
    with mem.attribution(entity, process):
        if session is not None:
            mem.set_session(session)
        chosen = chat.choose(
            mem, backend=backend, model=model, base_url=base_url, max_tokens=max_tokens
        )
        view = View.for_terminal()
        try:
            daemon = memori_daemon.status(mem.store.url or mem.store.path)
        except OSError:  # its pidfile cannot be read: learn here (jobs finish exactly once)
            daemon = memori_daemon.DaemonStatus(False, None, "")
        learner = None if daemon.running else Learner(mem)
        view.talk.print(
            f"memori chat · {chosen.name} {escape(chosen.model)} · entity "
            f"{escape(mem.current.entity_id)}\n"
            + (
                f"The daemon (pid {daemon.pid}) learns from this chat as you talk."
                if learner is None
                else "Learning from this chat as you talk (no daemon runs for this store)."
            )
            + "\n/help lists the commands; /quit or Ctrl-D leaves.",
            highlight=False,
        )
        tally = Tally()
        typed = ChatHistory(history_path(mem.store.path, mem.current.entity_id))
        try:
            _loop(Chat(mem, chosen, view, learner, tally), _inputs(typed))
        finally:
            typed.save()
            # Ctrl-C here only stops the waiting: what is not stored yet is at exit.
            with contextlib.suppress(KeyboardInterrupt):
                mem.llm.flush(10)
            if learner is not None:
                learner.finish(view.talk)
    if tally.failed and not tally.answered:
        raise typer.Exit(1)


@dataclasses.dataclass
class Tally:
    """How the model did: turns it answered (or was stopped answering), turns it failed."""

    answered: int = 0
    failed: int = 0


@dataclasses.dataclass
class Chat:
    """What a chat session holds on to."""

    mem: Memori
    backend: chat.Backend
    view: View
    learner: Learner | None
    tally: Tally
    turns: int = 0


def _loop(session: Chat, inputs: Iterator[str]) -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": chat.SYSTEM_PROMPT}]
    for text in inputs:
        if text.startswith("/"):
            try:
                if _command(session, text, history):
                    return
            except KeyboardInterrupt:  # a slow /recall or /memories: stop it, not the chat
                session.view.talk.print("[dim](stopped)[/]")
            continue
        history.append({"role": "user", "content": text})
        # Reset, so that /why never shows the block of an earlier turn when this one had
        # none (a turn whose injection is skipped does not set it).
        session.mem.llm.last_block = None
        session.turns += 1
        reply = show(session.backend.reply(history), session.view)
        if reply.status == "failed":
            session.tally.failed += 1
        elif reply.text or reply.status == "answered":
            session.tally.answered += 1
        if reply.text:
            history.append({"role": "assistant", "content": reply.text})
        else:
            history.pop()
        if session.learner is not None:
            session.learner.poke()
            session.learner.report(session.view.talk)


def _command(session: Chat, text: str, history: list[dict[str, Any]]) -> bool:
    """Run a slash command; True to quit."""
    mem, screen, talk = session.mem, session.view.screen, session.view.talk
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return True
    if name == "/help":
        talk.print(escape(HELP), highlight=False)
    elif name in USAGE and not arg:
        talk.print(f"Usage: {escape(USAGE[name])}", highlight=False)
    elif name == "/recall":
        hits = mem.recall(arg)
        screen.print(hits_table(hits)) if hits else talk.print("Nothing recalled.")
    elif name == "/memories":
        learner = session.learner
        learning = learner is not None and not learner.wait(LEARN_BEFORE_LOOKING_S)
        rows = mem.memories()
        if rows:
            screen.print(memories_table(rows, history=False))
        elif learner is None:
            talk.print("No memories yet: the daemon extracts them from what you say.")
        else:
            talk.print("No memories yet: they are learned from what you say, as you talk.")
        if learning:
            talk.print("[dim](still learning from the last exchange: look again in a moment)[/]")
    elif name == "/why":
        _why(session)
    elif name == "/forget":
        try:
            memory_id = int(arg.lstrip("#"))
        except ValueError:
            talk.print(f"/forget takes a memory id (see /memories), not {escape(arg)!r}")
            return False
        if mem.forget_memory(memory_id):  # only the current entity's memories
            talk.print(f"Forgot memory {memory_id}.")
        else:
            talk.print(f"No memory {memory_id} of yours.")
    elif name == "/session" and arg == "new":
        new = mem.new_session()
        del history[1:]
        talk.print(f"New session {new}.")
    elif name == "/session":
        talk.print(f"Usage: {escape(USAGE[name])}", highlight=False)
    else:
        talk.print(f"Unknown command {escape(text)!r}; /help lists them.", highlight=False)
    return False


def _why(session: Chat) -> None:
    """Show the memory block the model was given on the last turn, as it was sent."""
    talk = session.view.talk
    block = session.mem.llm.last_block
    if session.turns == 0:
        talk.print("No turn yet: /why shows what memory gave the model on the last turn.")
    elif block is not None:
        talk.print("Given to the model with your last message:")
        session.view.screen.print(block, markup=False, highlight=False)
    elif not session.mem.llm.injection.enabled:
        talk.print("Nothing: memory injection is switched off ([injection] in config.toml).")
    else:
        talk.print(
            "Nothing from memory was given to the model on the last turn: nothing it holds "
            "matched your message closely enough (see /recall)."
        )


# -- input --------------------------------------------------------------------------------
def _inputs(history: ChatHistory) -> Iterator[str]:
    """The user's messages: lines, joined where they end in a backslash or sit between lines
    of three quotes. Readline history at a terminal."""
    interactive = sys.stdin.isatty()
    if interactive:
        history.load()
    lines: list[str] = []
    block = False
    while True:
        try:
            line = input(("you> " if not lines else "...  ") if interactive else "")
        except EOFError:
            if interactive:
                print()  # Ctrl-D: leave the shell's prompt on a line of its own
            if lines:
                history.add("\n".join(lines))
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
            history.add(text)
            yield text
