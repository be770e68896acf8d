"""The ``memori`` command line: one module per command group, the library does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from .. import __version__
from ..errors import StoreError
from ..store.backend import backend_for, is_postgres_url
from .admin import (
    doctor_command,
    entities_command,
    forget_command,
    sessions_command,
    stats_command,
)
from .chat import chat_command
from .common import CONTEXT_SETTINGS, MARKUP, State, out
from .daemon import daemon_app
from .graph import graph_app
from .importing import import_command
from .mcp import mcp_app
from .memories import jobs_app, memories_app
from .models import augment_command, model_app, reembed_command
from .recalling import recall_command
from .rls import rls_app
from .serve import serve_command

_option_type = getattr(typer.core.TyperOption, "display_type_rich", None)


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    # Typer 0.29 labels every flag "<bool>", its own --help too; a flag takes no value.
    if self.is_flag or _option_type is None:
        return None
    result: str | None = _option_type(self, ctx)
    return result


if _option_type is not None:  # a Typer without it shows no types at all
    typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    name="memori",
    help="Long-term memory for LLM applications, entirely on your own machine.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"memori {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="MEMORI_DB",
            help="Store file (default: $MEMORI_HOME/memori.db or the platform's data folder).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Long-term memory for LLM applications, entirely on your own machine."""
    if db is not None:
        try:  # before it becomes a Path: "postgresql://h/db" would be "postgresql:/h/db"
            backend_for(db)
        except StoreError as exc:
            raise typer.BadParameter(str(exc), param_hint="--db / MEMORI_DB") from None
    # A PostgreSQL URL stays a str (a Path would fold its "//").
    ctx.obj = State(db if db is None or is_postgres_url(db) else Path(db))


app.command("chat")(chat_command)
app.command("import")(import_command)
app.command("recall")(recall_command)
app.command("sessions")(sessions_command)
app.command("entities")(entities_command)
app.command("stats")(stats_command)
app.command("forget")(forget_command)
app.command("doctor")(doctor_command)
app.command("augment")(augment_command)
app.command("reembed")(reembed_command)
app.command("serve")(serve_command)
app.add_typer(model_app, name="model")
app.add_typer(memories_app, name="memories")
app.add_typer(jobs_app, name="jobs")
app.add_typer(daemon_app, name="daemon")
app.add_typer(graph_app, name="graph")
app.add_typer(mcp_app, name="mcp")
app.add_typer(rls_app, name="rls")


def main() -> None:
    """Entry point of the ``memori`` console script."""
    app()
