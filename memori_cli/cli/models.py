"""``memori augment``, ``reembed`` and ``model``: the local models and their work."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from ..embed import MINILM, EmbeddingUnavailable, minilm_folder
from ..embed import pull as pull_module
from ..memori import Memori
from ..store import vectors
from .common import err, handle_errors, print_json, show_progress, state

model_app = typer.Typer(help="The local models memori uses.", no_args_is_help=True)


def run_embedding(mem: Memori, *, rebuild: bool, json_output: bool) -> int:
    """Embed pending messages (or all, with ``rebuild``), with a progress bar for a person."""
    work = mem.reembed if rebuild else mem.augment
    if not show_progress(json_output):
        return work()
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("Embedding messages", total=None)
        return work(progress=lambda done, total: bar.update(task, completed=done, total=total))


@handle_errors
def augment_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print counts as JSON.")] = False,
) -> None:
    """Run pending augmentation now, in the foreground: embed every message without a vector.

    Recall works before this (lexically for what is not embedded yet); this makes it
    semantic too. Safe to interrupt and to re-run.
    """
    _embed(ctx, rebuild=False, json_output=json_output)


@handle_errors
def reembed_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print counts as JSON.")] = False,
) -> None:
    """Rebuild the vector index with the configured embedding model (after changing models)."""
    _embed(ctx, rebuild=True, json_output=json_output)


def _embed(ctx: typer.Context, *, rebuild: bool, json_output: bool) -> None:
    mem = state(ctx).memori()
    embedded = run_embedding(mem, rebuild=rebuild, json_output=json_output)
    if json_output:
        print_json({"embedded": embedded, "pending": vectors.pending_count(mem.store)})
    else:
        err.print(f"Embedded {embedded} messages.")


@model_app.command("pull")
@handle_errors
def pull_command() -> None:
    """Download the default embedding model (all-MiniLM-L6-v2) into the data folder."""
    folder = pull_module.pull(say=lambda text: err.print(text, highlight=False))
    err.print(f"{MINILM} is in {folder}")


@model_app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the configured embedding model, whether it is available, and the index state."""
    mem = state(ctx).memori()
    spec = mem.config.embedding_model
    try:
        embedder = mem.embedder()
        status = f"available ({embedder.name}, {embedder.dim}-d)" if embedder else "switched off"
    except EmbeddingUnavailable as exc:
        status = f"missing: {exc}"
    built = vectors.index_model(mem.store)
    data = {
        "embedding_model": spec,
        "status": status,
        "minilm_files": str(minilm_folder() or ""),
        "index_model": built[0] if built else None,
        "index_stale": mem.index_stale() if not status.startswith("missing") else None,
        "pending": vectors.pending_count(mem.store),
    }
    if json_output:
        print_json(data)
        return
    for key, value in data.items():
        err.print(f"{key.replace('_', ' ')}: {value}", highlight=False)
