"""What every command shares: the consoles, opening the store, the error boundary."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from ..errors import InvalidIdError, MemoriError
from ..memori import Memori
from ..store.connect import DatabaseError
from ..store.core import MAX_ROWID

#: The largest id an argument takes (``typer.Argument(max=MAX_ID)``): ids name SQLite rows,
#: and past 64 bits no row can exist, so a larger one is a usage error that says so.
MAX_ID = MAX_ROWID

# Data goes to stdout, talk (progress, summaries, errors) to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Options of the top-level callback, shared with subcommands through ``ctx.obj``."""

    def __init__(self, db: Path | None = None):
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
                err.print(f"[red]Error:[/] {_escape(str(exc))}", highlight=False)
                raise typer.Exit(2) from None
            except (MemoriError, DatabaseError, OSError) as exc:
                err.print(f"[red]Error:[/] {_escape(str(exc))}", highlight=False)
                raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    err.print(f"[yellow]Warning:[/] {_escape(str(message))}", highlight=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (never through Rich, so it stays machine-readable)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def show_progress(json_output: bool) -> bool:
    """Progress bars go to stderr, only for a person at a terminal."""
    return not json_output and err.is_terminal
