"""``memori augment``, ``reembed`` and ``model``: the local models and their work."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import MofNCompleteColumn

from .. import config, gguf_file
from ..augment.pipeline import AugmentReport
from ..embed import MINILM, EmbeddingUnavailable, minilm_folder
from ..embed import pull as pull_module
from ..errors import MemoriError
from ..memori import Memori
from ..store import jobs, vectors
from .common import (
    CONTEXT_SETTINGS,
    MARKUP,
    err,
    escape,
    handle_errors,
    out,
    print_json,
    state,
    with_progress,
)

model_app = typer.Typer(
    help="The local models memori uses.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)


class _OneLineHandler(logging.Handler):
    """Shows a library warning or error as one ``level: message`` line on stderr, with the
    exception's type and text in place of its traceback (the traceback is for a log)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                text += f": {type(exc).__name__}: {exc}"
            err.print(f"{record.levelname.lower()}: {escape(text)}", highlight=False)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def clean_log_lines() -> Iterator[None]:
    """While a command runs library work, memori's WARNING+ records print as one line each.

    Without a handler of its own, the logging module's last-resort handler would print the
    pipeline's ``log.exception`` tracebacks to stderr. Records still propagate: a handler
    the program configured (a log file, pytest's capture) gets them whole, traceback and all.
    """
    logger = logging.getLogger("memori")
    handler = _OneLineHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def run_augment(mem: Memori, *, rebuild: bool, json_output: bool) -> AugmentReport:
    """Run pending jobs and embed what has no vector (or everything again, with ``rebuild``),
    with a progress bar for a person; a failed job is one line on stderr, no traceback."""
    with clean_log_lines():
        return _augment(mem, rebuild=rebuild, json_output=json_output)


def _augment(mem: Memori, *, rebuild: bool, json_output: bool) -> AugmentReport:
    work = mem.reembed if rebuild else mem.augment
    return with_progress(work, "Augmenting", MofNCompleteColumn(), json_output=json_output)


def describe(report: AugmentReport) -> str:
    """One line a person reads after augmentation."""
    text = (
        f"Ran {report.jobs_done} jobs: {report.memories_created} new memories, "
        f"{report.memories_merged} merged, {report.memories_superseded} superseded, "
        f"{report.triples} new triples; embedded {report.embedded} messages."
    )
    if report.rejected:
        text += (
            f" {report.rejected} extracted items were not supported by their sources and "
            "were left out (`memori jobs show ID`)."
        )
    if report.jobs_failed or report.jobs_retrying:
        text += (
            f" {report.jobs_failed} jobs failed, {report.jobs_retrying} will retry "
            "(see `memori jobs`)."
        )
    return text


@handle_errors
def augment_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print counts as JSON.")] = False,
) -> None:
    """Run pending augmentation now, in the foreground, and exit: extract typed memories,
    triples and session summaries, and embed every message without a vector.

    Recall works before this (lexically for what is not embedded yet). Safe to interrupt, to
    re-run, and to run while the daemon works on the same store.
    """
    _run(ctx, rebuild=False, json_output=json_output)


@handle_errors
def reembed_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print counts as JSON.")] = False,
) -> None:
    """Rebuild the vector index with the configured embedding model (after changing models)."""
    _run(ctx, rebuild=True, json_output=json_output)


def _run(ctx: typer.Context, *, rebuild: bool, json_output: bool) -> None:
    mem = state(ctx).memori()
    report = run_augment(mem, rebuild=rebuild, json_output=json_output)
    depth = jobs.depth(mem.store)
    if json_output:
        print_json(
            report.to_dict()
            | {"pending": vectors.pending_count(mem.store), "jobs_failed_total": depth["failed"]}
        )
    else:
        err.print(describe(report), highlight=False)
    if report.jobs_failed:
        raise typer.Exit(1)


@model_app.command("pull")
@handle_errors
def pull_command(
    chat: Annotated[
        bool,
        typer.Option(
            "--chat", help="Get the small local chat model SmolLM2-135M-Instruct (98 MB) instead."
        ),
    ] = False,
) -> None:
    """Download the default embedding model (all-MiniLM-L6-v2) into the data folder, or with
    --chat a small local chat model."""
    say = functools.partial(err.print, highlight=False)
    if not chat:
        folder = pull_module.pull(say=say)
        err.print(f"{MINILM} is in {folder}")
        return
    path = pull_module.pull_chat(say=say)
    gguf_file.check(path)
    say(f"{path.name} is in {path.parent}.")
    say(f"Chat with it: memori chat --model {path}")
    say(
        f"To extract memories with it: memori model add {path} (the rules keep running beside "
        "it; on the development data it added nothing the grounding gate let through: see "
        "the README's extraction benchmark)."
    )


@model_app.command("add")
@handle_errors
def add_command(
    path: Annotated[
        Path | None, typer.Argument(help="A .gguf model file (or use --endpoint).")
    ] = None,
    embedding: Annotated[
        bool, typer.Option("--embedding", help="Register it as the embedding model instead.")
    ] = False,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            metavar="URL",
            help="An OpenAI-compatible server to extract with instead of a GGUF file "
            "(http://127.0.0.1:8080/v1: llama-server, Ollama, LM Studio, vLLM).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="MODEL", help="The model the endpoint serves."),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            metavar="VAR",
            help="The environment variable that holds the endpoint's API key (the key "
            "itself is never stored).",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check", help="Ask the endpoint for its models first (default: yes)."
        ),
    ] = True,
) -> None:
    """Register a local GGUF model: a chat model for extraction (default) or, with
    --embedding, the embedding model; or, with --endpoint URL --name MODEL, a model behind an
    OpenAI-compatible server for extraction. Written to config.toml in the data folder."""
    if endpoint is not None:
        if path is not None or embedding:
            raise typer.BadParameter(
                "give a .gguf PATH or --endpoint URL, not both (an endpoint is a chat model)",
                param_hint="--endpoint",
            )
        if not name:
            raise typer.BadParameter("an endpoint needs --name MODEL", param_hint="--name")
        _add_endpoint(endpoint, name, api_key_env, check=check)
        return
    if name is not None or api_key_env is not None:
        raise typer.BadParameter(
            "--name and --api-key-env go with --endpoint URL", param_hint="--endpoint"
        )
    if path is None:
        raise typer.BadParameter("give a .gguf PATH or --endpoint URL", param_hint="PATH")
    path = path.expanduser().resolve()
    if not path.is_file():
        raise MemoriError(f"{path}: no such file")
    gguf_file.check(path)  # magic, version, header and length: refuse a damaged file now
    role = "embedding" if embedding else "chat"
    written = config.set_model(role, str(path))
    err.print(f"Registered {path.name} as the {role} model in {written}.", highlight=False)
    if role == "embedding":
        err.print("Run `memori reembed` to rebuild the vector index with it.")


def _add_endpoint(url: str, name: str, api_key_env: str | None, *, check: bool) -> None:
    from ..augment.endpoint import EndpointExtractor, list_models

    # A bad URL or an unset key variable fails here, before anything is written.
    extractor = EndpointExtractor(url, name, api_key_env=api_key_env)
    if check:
        served = list_models(extractor.url, api_key_env=api_key_env)
        if served is not None and name not in served:
            err.print(
                f"[yellow]Warning:[/] the endpoint lists {escape(', '.join(served) or 'no models')}"
                f", not {escape(name)}; registering it anyway (many servers take any name).",
                highlight=False,
            )
    written = config.set_model("chat", url, name=name, api_key_env=api_key_env)
    err.print(
        f"Registered {name} at {url} as the chat model in {written} (extractor {extractor.name}).",
        highlight=False,
    )


@model_app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the configured models (chat/extraction and embedding), whether they are
    available, and the index state."""
    mem = state(ctx).memori()
    spec = mem.config.embedding_model
    try:
        embedder = mem.embedder()
        status = f"available ({embedder.name}, {embedder.dim}-d)" if embedder else "switched off"
    except EmbeddingUnavailable as exc:
        status = f"missing: {exc}"
    chat = mem.config.chat_model
    extractor: str | None = None
    if chat == "none":
        chat_status = "none: the rule extractor is used (`memori model add PATH.gguf` to set one)"
        extractor = mem.extractor().name
    else:
        try:
            extractor = mem.extractor().name
            chat_status = (
                f"endpoint serving {mem.config.chat_name} (not contacted)"
                if config.is_endpoint(chat)
                else "available"
            )
        except MemoriError as exc:
            if config.is_endpoint(chat):
                chat_status = f"unusable: {exc}"
            else:
                chat_status = f"{'missing' if not Path(chat).exists() else 'unusable'}: {exc}"
    built = vectors.index_model(mem.store)
    data = {
        "chat_model": chat,
        "chat_name": mem.config.chat_name if config.is_endpoint(chat) else None,
        "chat_status": chat_status,
        "extractor": extractor,
        "embedding_model": spec,
        "status": status,
        "minilm_files": str(minilm_folder() or ""),
        "index_model": built[0] if built else None,
        "index_stale": mem.index_stale() if not status.startswith("missing") else None,
        "pending": vectors.pending_count(mem.store),
        "config_file": str(config.config_path()),
    }
    if json_output:
        print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key.replace('_', ' ')}: {escape(str(value))}", highlight=False)
