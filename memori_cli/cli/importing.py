"""``memori import``: bring past transcripts into the store."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import DownloadColumn

from ..importers import FORMATS, MAX_UNZIPPED_MB, partial_report
from .common import REPORTED_OR_OS, err, escape, handle_errors, print_json, state, with_progress

if TYPE_CHECKING:
    from ..importers import ImportReport


@handle_errors
def import_command(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="Transcript file: JSONL, JSON or a ChatGPT export zip.")
    ],
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"Force the format: {', '.join(FORMATS)}."),
    ] = None,
    entity: Annotated[
        str | None, typer.Option(help="Entity (user) for records whose file sets none.")
    ] = None,
    process: Annotated[
        str | None, typer.Option(help="Process (agent) for records whose file sets none.")
    ] = None,
    session: Annotated[
        str | None, typer.Option(help="Session for records whose file sets none.")
    ] = None,
    max_unzipped_mb: Annotated[
        int,
        typer.Option(
            "--max-unzipped-mb",
            min=1,
            help="Most megabytes to inflate from a zip archive (half of it from one member).",
        ),
    ] = MAX_UNZIPPED_MB,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Then augment (extract memories, embed) before returning."),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import transcripts (native JSONL, {"messages": [...]} JSONL, ChatGPT, Claude, ShareGPT).

    The format is detected unless --format is given. Every valid record is imported; each bad
    one is reported with its line number, and the exit status is then 1. Importing the same
    file twice adds nothing. Secrets (API keys, tokens, private keys) are redacted first.
    """
    if format is not None and format not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    mem = state(ctx).memori(create=True)
    run = functools.partial(
        mem.import_file, path, format=format, entity_id=entity, process_id=process,
        session_id=session, max_unzipped_mb=max_unzipped_mb,
    )  # fmt: skip
    try:
        report = _run_import(run, path, json_output=json_output)
    except REPORTED_OR_OS as exc:
        partial = partial_report(exc)
        if partial is None:
            raise  # nothing was stored: the error boundary says what went wrong
        err.print(f"[red]Error:[/] {escape(str(exc))}", highlight=False)
        if json_output:
            print_json(partial.to_dict() | {"error": str(exc)})
        if partial.imported:
            err.print(
                f"Imported {partial.imported} messages before the error; run the same import "
                "again to finish: it skips what is stored.",
                highlight=False,
            )
        else:
            err.print("No new messages were stored before the error.", highlight=False)
        raise typer.Exit(1) from None
    if wait:
        from .models import describe, run_augment

        augmented = run_augment(mem, rebuild=False, json_output=json_output)
    if json_output:
        extra = {"embedded": augmented.embedded, "augment": augmented.to_dict()} if wait else {}
        print_json(report.to_dict() | extra)
    else:
        for rejected in report.rejected:
            err.print(
                f"{escape(str(path))}:{rejected['line']}: {escape(rejected['error'])}",
                highlight=False,
            )
        if report.rejected_total > len(report.rejected):
            err.print(f"... and {report.rejected_total - len(report.rejected)} more rejected")
        err.print(
            f"Imported {report.imported} messages ({report.format}) into {report.sessions} "
            f"session(s); {report.duplicates} already present, {report.skipped} without text "
            f"skipped, {report.rejected_total} rejected.",
            highlight=False,
        )
        if wait:
            err.print(describe(augmented), highlight=False)
    if report.rejected_total:
        raise typer.Exit(1)


def _run_import(run: Callable[..., ImportReport], path: Path, *, json_output: bool) -> ImportReport:
    """Run the import, with a progress bar for a person at a terminal."""
    return with_progress(run, f"Importing {path.name}", DownloadColumn(), json_output=json_output)
