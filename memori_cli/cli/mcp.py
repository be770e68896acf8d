"""``memori mcp``: serve the store to MCP hosts; ``memori mcp install``: configure one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..config import default_entity
from ..errors import MemoriError
from ..mcp import install as installing
from ..mcp.scope import DEFAULT_PROCESS, Scope
from ..net import is_loopback
from .common import CONTEXT_SETTINGS, MARKUP, err, escape, handle_errors, state

mcp_app = typer.Typer(
    help="Serve memory to MCP hosts (Claude Desktop, Claude Code, Cursor, VS Code); with no "
    "command, run the server on stdio.",
    invoke_without_command=True,
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)

TOKEN_ENV = "MEMORI_MCP_TOKEN"
INSTALL_HINT = (
    "`memori mcp` needs the MCP SDK, which is not installed: pip install 'memori-cli[mcp]'"
)


@mcp_app.callback()
@handle_errors
def mcp_command(
    ctx: typer.Context,
    entity: Annotated[
        str | None,
        typer.Option(help="The entity served (default: $MEMORI_ENTITY or the configured one)."),
    ] = None,
    process: Annotated[
        str, typer.Option(help="The process id what the host stores is attributed to.")
    ] = DEFAULT_PROCESS,
    allow_entity_arg: Annotated[
        bool,
        typer.Option(
            "--allow-entity-arg",
            help="Give every tool an `entity` argument that may name any entity (a trusted "
            "host serving several people); off, tools reach the served entity only.",
        ),
    ] = False,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP (at /mcp) instead of stdio.")
    ] = False,
    host: Annotated[
        str,
        typer.Option(help="Address to bind with --http; anything but loopback needs --token."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port with --http.")] = 8766,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="With --http, a bearer token (16+ characters) every request must carry "
            "(Authorization: Bearer TOKEN).",
        ),
    ] = None,
) -> None:
    """Run the MCP server over the store: stdio by default (what hosts start), or streamable
    HTTP with --http.

    On stdio, stdout carries protocol only; memori's messages go to stderr, which hosts
    keep as the server's log. Tools: recall, remember, list_memories, get_memory,
    memory_history, forget_memory, correct_memory, graph_search, graph_neighbourhood,
    status, and the nine of the reference MCP memory server (create_entities, read_graph,
    ...); the resource memori://memories holds the entity's current memories as text.
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        from ..mcp import server as serving
    except ImportError as exc:
        if getattr(exc, "name", "") and not str(exc.name).startswith("mcp"):
            raise
        raise MemoriError(INSTALL_HINT) from None
    if not http:
        given = [
            f"--{name}"
            for name in ("token", "host", "port")  # typed by hand, not from the environment
            if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
        ]
        if given:
            raise typer.BadParameter(
                f"{' and '.join(given)} only apply with --http; on stdio the host starts the "
                "server and talks to it through pipes, with no address and no token",
                param_hint=given[0],
            )
    if http and token is None and not is_loopback(host):
        raise typer.BadParameter(
            f"{host} is not a loopback address: anyone who can reach it could read and change "
            f"this memory. Set a token (--token or ${TOKEN_ENV}), or bind 127.0.0.1",
            param_hint="--host",
        )
    if http and token is not None and len(token) < 16:
        raise typer.BadParameter("use a token of at least 16 characters", param_hint="--token")
    scope = Scope(
        entity=entity or default_entity(), process=process, allow_entity_arg=allow_entity_arg
    )
    mem = state(ctx).memori(create=True)
    server = serving.build_server(mem, scope)
    where = mem.store.describe()
    try:
        if not http:
            err.print(f"memori mcp: serving entity {escape(scope.entity)!r} of {escape(where)} "
                      "on stdio", highlight=False)  # fmt: skip
            if _at_a_terminal():
                # Someone trying it by hand: the server reads JSON-RPC, and Ctrl-C alone
                # does not stop it (the SDK's reader waits on stdin), Ctrl-D does.
                err.print(
                    "This is what an MCP host starts (see `memori mcp install`); it reads MCP "
                    "messages on stdin. Ctrl-D stops it.",
                    highlight=False,
                )
            serving.run_stdio(server)
            return
        shown = f"[{host}]" if ":" in host else host
        err.print(
            f"memori mcp: serving entity {escape(scope.entity)!r} of {escape(where)} at "
            f"http://{shown}:{port}/mcp" + (" (bearer token required)" if token else ""),
            highlight=False,
        )
        serving.run_http(server, host=host, port=port, token=token)
    finally:
        mem.close()  # what the host stored is checkpointed before the process goes


def _at_a_terminal() -> bool:
    """Whether stdin is a terminal (a person, not a host)."""
    return sys.stdin.isatty()


@mcp_app.command("install")
@handle_errors
def install_command(
    ctx: typer.Context,
    client: Annotated[
        str, typer.Option("--client", "-c", help=f"The host: {', '.join(installing.CLIENTS)}.")
    ],
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Merge the entry into the host's config file (backed up first; other "
            "servers kept) instead of printing it.",
        ),
    ] = False,
    name: Annotated[str, typer.Option(help="The server's name in the host's config.")] = "memori",
    entity: Annotated[str | None, typer.Option(help="The entity the host's server serves.")] = None,
    process: Annotated[
        str | None, typer.Option(help="The process id it writes as (default: mcp).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="The config file to merge into (default: the host's)."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="With --write, print what was done as JSON.")
    ] = False,
) -> None:
    """Print the config entry that makes a host start `memori mcp` (absolute paths, this
    store and entity), or merge it into the host's config file with --write."""
    if client not in installing.CLIENTS:
        raise typer.BadParameter(
            f"{client!r}; choose one of {', '.join(installing.CLIENTS)}", param_hint="--client"
        )
    entry = installing.server_entry(client, db=state(ctx).db, entity=entity, process=process)
    if not write:
        typer.echo(installing.snippet(client, name, entry), nl=False)
        where = config or installing.config_path(client)
        err.print(f"Add this to {escape(str(where))} (or run again with --write), then restart "
                  "the host.", highlight=False)  # fmt: skip
        if client == "claude-code":
            line = installing.claude_code_command(name, entry)
            err.print(f"Or: {escape(line)}", highlight=False, soft_wrap=True)
        return
    path = None if config is None else config.expanduser()
    result = installing.install(client, name, entry, path=path)
    if json_output:
        typer.echo(json.dumps(result, indent=2))
        return
    done = {"added": "Added", "replaced": "Replaced", "unchanged": "Already had"}[result["outcome"]]
    err.print(f"{done} server {escape(name)!r} in {escape(result['path'])}"
              + (f" (backup: {escape(result['backup'])})" if result["backup"] else "")
              + "; restart the host to use it.", highlight=False)  # fmt: skip
