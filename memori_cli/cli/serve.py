"""``memori serve``: the memory proxy for programs in any language (see :mod:`memori_cli.serve`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import read_file
from ..errors import MemoriError
from .common import err, escape, handle_errors, state

if TYPE_CHECKING:
    from ..serve import ServeOptions

#: What the ``serve`` extra brings.
NEEDS = ("starlette", "uvicorn", "httpx")
#: uvicorn's log levels (another is a KeyError deep in uvicorn).
LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]


@handle_errors
def serve_command(
    ctx: typer.Context,
    upstream: Annotated[
        str | None,
        typer.Option(help="An OpenAI-compatible server's base URL (http://127.0.0.1:8080/v1)."),
    ] = None,
    anthropic_upstream: Annotated[
        str | None,
        typer.Option(help="Where /v1/messages goes (https://api.anthropic.com)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="A GGUF chat model served in this process, instead of --upstream."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8765].")] = None,
    entity: Annotated[
        str | None,
        typer.Option(help="The entity of requests that name none [$MEMORI_ENTITY or default]."),
    ] = None,
    process: Annotated[
        str | None, typer.Option(help="The process of requests that name none [serve].")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MEMORI_SERVE_TOKEN",
            help="Require this token in every request's X-Memori-Token header (needed to "
            "listen beyond loopback).",
            show_default=False,
        ),
    ] = None,
    inject: Annotated[
        bool | None,
        typer.Option(
            "--inject/--no-inject",
            help="Give requests memories unless they send X-Memori-Inject "
            "[config.toml's [injection] enabled].",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds the upstream may take to answer [600].")
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            callback=lambda value: _one_of(value, LOG_LEVELS),
            help=f"uvicorn's log level ({', '.join(LOG_LEVELS)}): warning hides the request lines.",
        ),
    ] = "info",
) -> None:
    """Run a memory proxy that speaks the OpenAI and Anthropic HTTP APIs.

    Point any client's base URL at it (http://127.0.0.1:8765/v1 for OpenAI,
    http://127.0.0.1:8765 for Anthropic): each chat request gets the entity's memories in its
    system prompt, goes on to the upstream, and the exchange is stored, as with
    `mem.llm.register`. The entity comes from the X-Memori-Entity header, else the body's
    `user` (OpenAI) or `metadata.user_id` (Anthropic), else --entity. Options not given come
    from [serve] in config.toml. Runs until Ctrl-C.
    """
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise MemoriError(
            f"memori serve needs {', '.join(missing)}: pip install 'memori-cli[serve]'"
        )
    from ..serve import ServeOptions, run

    options = ServeOptions.from_config(read_file().get("serve", {})).replace(
        upstream=upstream, anthropic_upstream=anthropic_upstream, model=model, host=host,
        port=port, entity=entity, process=process, token=token, inject=inject, timeout=timeout,
    )  # fmt: skip
    try:
        options.check()
    except MemoriError as exc:  # options that cannot work: a usage error
        err.print(f"[red]Error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    mem = state(ctx).memori(create=True)
    try:
        run(mem, options, log_level=log_level, ready=_announce)
    finally:
        mem.close()


def _one_of(value: str, choices: list[str]) -> str:
    if value.lower() not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
    return value.lower()


def _announce(url: str, options: ServeOptions) -> None:
    lines = [f"memori serve on {url}"]
    if options.upstream:
        lines.append(f"  OpenAI clients:    base_url={url}/v1  ->  {options.upstream}")
    if options.anthropic_upstream:
        lines.append(f"  Anthropic clients: base_url={url}  ->  {options.anthropic_upstream}")
    lines.append(f"  entity when a request names none: {options.entity}")
    if options.token:
        lines.append("  every request must carry X-Memori-Token")
    err.print(escape("\n".join(lines)), highlight=False)
