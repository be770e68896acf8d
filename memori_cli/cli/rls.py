"""``memori rls``: row-level security per entity on a PostgreSQL store (the database itself
keeps each role to the entities granted to it)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..errors import StoreError
from .common import CONTEXT_SETTINGS, MARKUP, escape, handle_errors, out, print_json, state

rls_app = typer.Typer(
    help="Row-level security per entity (PostgreSQL): which database roles see which entities.",
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]
RoleArgument = Annotated[str, typer.Argument(help="A PostgreSQL role (CREATE ROLE … LOGIN).")]


def _connection(ctx: typer.Context) -> Any:
    """The store's connection, refused on SQLite (one file: give each tenant its own)."""
    store = state(ctx).memori().store
    if store.backend.name != "postgres":
        raise StoreError(
            "row-level security is a PostgreSQL feature; a SQLite store is one file, whose "
            "reader reads all of it: give each tenant a store file of its own (--db)"
        )
    return store.conn


@rls_app.command("enable")
@handle_errors
def enable_command(ctx: typer.Context) -> None:
    """Filter every memori table by entity for roles other than the tables' owner (run as
    the owner: the role that created the store, which the daemon should use)."""
    from ..store.postgres import rls

    tables = rls.enable(_connection(ctx))
    out.print(f"row-level security on for {len(tables)} tables; grant roles their entities "
              "with [bold]memori rls grant ROLE PATTERN[/bold]")  # fmt: skip


@rls_app.command("disable")
@handle_errors
def disable_command(ctx: typer.Context) -> None:
    """Stop filtering (the grants are kept for a later enable)."""
    from ..store.postgres import rls

    rls.disable(_connection(ctx))
    out.print("row-level security off: every role with table privileges sees every entity")


@rls_app.command("grant")
@handle_errors
def grant_command(
    ctx: typer.Context,
    role: RoleArgument,
    pattern: Annotated[
        str, typer.Argument(help="Entity ids the role may use: an id, or a LIKE pattern (acme:%).")
    ],
) -> None:
    """Let ROLE read and write the entities matching PATTERN (and give it memori's table
    privileges)."""
    from ..store.postgres import rls

    rls.grant(_connection(ctx), role, pattern)
    out.print(f"{escape(role)} may use entities matching {escape(pattern)!r}")


@rls_app.command("revoke")
@handle_errors
def revoke_command(
    ctx: typer.Context,
    role: RoleArgument,
    pattern: Annotated[
        str | None, typer.Argument(help="One grant (default: all of ROLE's).")
    ] = None,
) -> None:
    """Take back ROLE's grant of PATTERN, or all its grants."""
    from ..store.postgres import rls

    count = rls.revoke(_connection(ctx), role, pattern)
    out.print(f"{count} grant(s) of {escape(role)} taken back")


@rls_app.command("status")
@handle_errors
def status_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Whether row-level security is on, and which roles may use which entities."""
    from ..store.postgres import rls

    data = rls.status(_connection(ctx))
    if json_output:
        print_json(data)
        return
    out.print(f"row-level security: {'on' if data['enabled'] else 'off'}")
    if data["unfiltered"] and data["tables"]:
        out.print(f"[red]not filtered:[/red] {escape(', '.join(data['unfiltered']))}")
    for grant in data["grants"]:
        out.print(f"  {escape(grant['role'])}: {escape(grant['pattern'])}")
