"""What every command shares: the consoles, opening the store, the error boundary."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TimeRemainingColumn

from ..errors import InvalidIdError, MemoriError
from ..memori import Memori
from ..parts import Record
from ..store.connect import DatabaseError
from ..store.core import MAX_ROWID

#: What a command reports as a clean one-line error: memori's own, and any SQLite driver's.
REPORTED: tuple[type[Exception], ...] = (MemoriError, *DatabaseError)
REPORTED_OR_OS: tuple[type[Exception], ...] = (*REPORTED, OSError)

#: The largest id an argument takes (``typer.Argument(max=MAX_ID)``): ids name SQLite rows,
#: and past 64 bits no row can exist, so a larger one is a usage error that says so.
MAX_ID = MAX_ROWID

# Data goes to stdout, talk (progress, summaries, errors) to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Given to every Typer app: ``-h`` is ``--help`` everywhere, as people expect of a CLI.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
#: Help texts are Markdown: a docstring's hard-wrapped lines flow into paragraphs at any
#: width (in Rich mode Typer keeps every line break, so lines wrap twice).
MARKUP: Literal["markdown"] = "markdown"


class State:
    """Options of the top-level callback, shared with subcommands through ``ctx.obj``."""

    def __init__(self, db: Path | str | None = None):
        self.db = db
        self._memori: Memori | None = None

    def memori(self, *, create: bool = False) -> Memori:
        """The store the command works on (``--db`` or the default).

        Commands that only read pass ``create=False``: a mistyped path then says there is no
        store instead of creating folders and an empty store. Commands that write create it,
        and say so.
        """
        if self._memori is None:
            mem = Memori(conn=self.db, create=create)
            path = mem.store.path
            if create and path is not None and not path.exists():
                mem.store.build()
                err.print(f"Created a new memori store at {path}", highlight=False)
            self._memori = mem
        return self._memori


def state(ctx: typer.Context) -> State:
    """The shared State of this invocation."""
    if not isinstance(ctx.obj, State):
        ctx.obj = State()
    return ctx.obj


def entity_note(mem: Memori, entity: str | None, *, quiet: bool = False) -> str:
    """The entity a command works on; when ``--entity`` was not given and the store holds
    several, say on stderr which one was used (not with ``quiet``, e.g. under ``--json``,
    whose rows name their entity)."""
    used = entity or mem.current.entity_id
    if entity is None and not quiet:
        try:
            count = mem.entity_count()
        except REPORTED:
            count = 0
        if count > 1:
            err.print(
                f"(entity: {escape(used)} — the store holds {count} entities; --entity picks "
                "one, `memori entities` lists them)",
                highlight=False,
            )
    return used


#: Below this many columns tables go compact: secondary columns are cut with an ellipsis
#: (or left out) so the content column keeps room to be read.
NARROW = 80


def narrow() -> bool:
    """Whether stdout is narrower than :data:`NARROW` columns."""
    return out.width < NARROW


def side_width(preferred: int) -> int:
    """The width of a secondary column (who, about, session): ``preferred``, but at most
    about a sixth of a narrow terminal, never under 8."""
    return preferred if not narrow() else max(8, min(preferred, out.width // 6))


def print_unwrapped(renderable: Any) -> None:
    """Print ``renderable`` to stdout; off a terminal (piped, redirected) at no width limit,
    so no line is cropped to a width nobody sees."""
    if out.is_terminal:
        out.print(renderable)
    else:  # Console.print caps a width at the console's own: a console without the cap
        Console(soft_wrap=True, width=1_000_000).print(renderable)


def handle_errors(func: F) -> F:
    """Turn memori's exceptions into one clean line on stderr and the documented exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            try:
                return func(*args, **kwargs)
            except InvalidIdError as exc:
                err.print(f"[red]Error:[/] {escape(str(exc))}", highlight=False)
                raise typer.Exit(2) from None
            except REPORTED_OR_OS as exc:
                err.print(f"[red]Error:[/] {escape(str(exc))}", highlight=False)
                raise typer.Exit(1) from None
            except Exception as exc:
                if not _server_error(exc):
                    raise
                err.print(f"[red]Error:[/] {escape(str(exc))}", highlight=False)
                raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _server_error(exc: Exception) -> bool:
    """Whether ``exc`` is PostgreSQL's driver's (psycopg's) error: reported as memori's own
    are, told by its module so that a SQLite user's command never imports psycopg."""
    return type(exc).__module__.split(".")[0] == "psycopg"


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    err.print(f"[yellow]Warning:[/] {escape(str(message))}", highlight=False)


# Stored text is anyone's words: an escape sequence in a message ("\x1b]0;...\x07" retitles
# the terminal, "\x1b[2J" clears it) must be shown, not obeyed. Every C0 and C1 control but
# newline and tab, DEL, and the Unicode line separators and bidi overrides (which reorder
# what a reader sees) are written out as Python-style escapes.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029,
             *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # fmt: skip
_VISIBLE = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}


def visible(text: str, *, keep: str = "\n\t") -> str:
    """``text`` with control characters shown as ``\\xNN`` (``\\uNNNN``) instead of sent to
    the terminal; the characters in ``keep`` (newline and tab) stay as they are."""
    table = _VISIBLE if not keep else {c: v for c, v in _VISIBLE.items() if chr(c) not in keep}
    return text.translate(table)


def escape(text: str) -> str:
    """Stored text made safe to print through Rich: controls shown (:func:`visible`), Rich
    markup escaped. Every human output of stored text goes through this; ``--json`` does not
    (JSON escapes controls itself and stays exact)."""
    from rich.markup import escape as markup_escape

    return markup_escape(visible(text))


def _jsonable(value: Any) -> Any:
    """A record as its ``--json`` dict; anything else JSON does not know, as text."""
    return value.to_dict() if isinstance(value, Record) else str(value)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (never through Rich, so it stays machine-readable)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")
    sys.stdout.flush()


def with_progress(
    work: Callable[..., T], description: str, counter: ProgressColumn, *, json_output: bool
) -> T:
    """Run ``work``; for a person at a terminal, with ``progress=(done, total)`` drawing a bar
    on stderr (``counter`` shows the count: bytes, or items)."""
    if not show_progress(json_output):
        return work()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        counter,
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)
        return work(progress=lambda done, total: bar.update(task, completed=done, total=total))


def show_progress(json_output: bool) -> bool:
    """Progress bars go to stderr, only for a person at a terminal."""
    return not json_output and err.is_terminal
