"""``memori memories`` and ``memori jobs``: inspect and correct what augmentation made."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..augment.extract import KINDS
from ..errors import MemoriError
from ..memori import Memori
from ..parts import Memory
from .common import (
    CONTEXT_SETTINGS,
    MARKUP,
    MAX_ID,
    entity_note,
    err,
    escape,
    handle_errors,
    narrow,
    out,
    print_json,
    side_width,
    state,
)
from .recalling import bad_times

memories_app = typer.Typer(
    help="Inspect and correct the typed memories extracted from conversations; with no "
    "command, list the current entity's memories.",
    invoke_without_command=True,
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)
jobs_app = typer.Typer(
    help="The augmentation queue: pending and failed jobs.",
    invoke_without_command=True,
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)


def _kind(value: str | None) -> str | None:
    if value is not None and value not in KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}", param_hint="--kind")
    return value


def memories_table(rows: list[Memory], *, history: bool) -> Table:
    """Memories as a table; superseded ones dimmed."""
    table = Table(expand=True)
    compact = narrow()  # a narrow terminal: the content keeps the room, "seen" goes
    table.add_column("id", overflow="fold")
    table.add_column("kind", no_wrap=True, overflow="ellipsis", max_width=5 if compact else None)
    table.add_column("content", overflow="fold", ratio=1, min_width=16)
    table.add_column("about", no_wrap=True, overflow="ellipsis", max_width=side_width(20))
    if not compact:
        table.add_column("seen", no_wrap=True)
    table.add_column("since", no_wrap=True)
    if history:
        table.add_column("until", no_wrap=True)
    for row in rows:
        style = "dim" if row["valid_to"] else None
        cells = [str(row["id"]), row["kind"], escape(row["content"]), escape(row["about"])]
        if not compact:
            cells.append(f"{row['count']}x")
        cells.append(row["valid_from"][:10])
        if history:
            cells.append((row["valid_to"] or "")[:10])
        table.add_row(*cells, style=style)
    return table


@memories_app.callback()
def memories_command(ctx: typer.Context) -> None:
    """Inspect and correct the typed memories; alone, ``memori memories`` lists them."""
    if ctx.invoked_subcommand is None:
        # `memori memories` means "show me my memories": the list with its defaults.
        list_command(ctx, entity=None, kind=None, as_of=None, history=False, limit=100,
                     json_output=False)  # fmt: skip


@memories_app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    entity: Annotated[str | None, typer.Option(help="Whose memories (default: current).")] = None,
    kind: Annotated[str | None, typer.Option(help=f"Only this kind: {', '.join(KINDS)}.")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="What was true at this ISO date.")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Superseded memories too (dimmed).")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=MAX_ID, help="Most rows.")
    ] = 100,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List an entity's memories, newest first: current ones unless --as-of or --history."""
    mem = state(ctx).memori()
    with bad_times():
        rows = mem.memories(entity, kind=_kind(kind), as_of=as_of, history=history, limit=limit)
    used = entity_note(mem, entity, quiet=json_output)
    if json_output:
        print_json(rows)
    elif not rows:
        err.print(
            f"No memories of entity {escape(used)!r} yet (they are extracted by "
            "`memori augment` or the daemon).",
            highlight=False,
        )
    else:
        out.print(memories_table(rows, history=history))


#: ``--entity`` of the by-id commands: the id must be this entity's memory.
EntityOption = Annotated[
    str | None,
    typer.Option(help="Whose memory it is (default: $MEMORI_ENTITY or the configured one)."),
]


def _get(ctx: typer.Context, memory_id: int, entity: str | None) -> Memory:
    mem = state(ctx).memori()
    found = mem.memory(memory_id, entity_id=entity)
    if found is None:
        raise MemoriError(_missing(mem, memory_id, entity))
    return found


def _missing(mem: Memori, memory_id: int, entity: str | None) -> str:
    """Not found, naming the entity looked in (the id may be another entity's)."""
    return f"no memory {memory_id} of entity {entity or mem.current.entity_id}"


@memories_app.command("show")
@handle_errors
def show_command(
    ctx: typer.Context,
    memory_id: Annotated[int, typer.Argument(help="The memory's id.", max=MAX_ID)],
    entity: EntityOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one memory: its fields, validity, and the messages it came from."""
    found = _get(ctx, memory_id, entity)
    if json_output:
        print_json(found)
        return
    for key in (
        "id",
        "kind",
        "content",
        "about",
        "slot",
        "confidence",
        "trust",
        "count",
        "first_seen",
        "last_seen",
        "valid_from",
        "valid_to",
        "superseded_by",
        "extractor",
        "session",
        "source_ids",
    ):
        out.print(f"{key}: {escape(str(found[key]))}", highlight=False)


@memories_app.command("history")
@handle_errors
def history_command(
    ctx: typer.Context,
    memory_id: Annotated[int, typer.Argument(help="The memory's id.", max=MAX_ID)],
    entity: EntityOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What a memory's slot held over time ("lives in Paris", then "lives in Berlin")."""
    _get(ctx, memory_id, entity)
    rows = state(ctx).memori().memory_history(memory_id, entity_id=entity)
    if json_output:
        print_json(rows)
    else:
        out.print(memories_table(rows, history=True))


@memories_app.command("forget")
@handle_errors
def forget_command(
    ctx: typer.Context,
    memory_id: Annotated[int, typer.Argument(help="The memory's id.", max=MAX_ID)],
    entity: EntityOption = None,
) -> None:
    """Delete one memory for good (from full-text search and vectors too), with the graph
    edges made only from it and its line in the session summary."""
    mem = state(ctx).memori()
    if not mem.forget_memory(memory_id, entity_id=entity):
        raise MemoriError(_missing(mem, memory_id, entity))
    err.print(f"Forgot memory {memory_id}.")


@jobs_app.callback()
@handle_errors
def jobs_command(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="Only pending, running, failed or done jobs.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_ID, help="Most rows.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List augmentation jobs that are not done yet (failed ones with their error)."""
    if ctx.invoked_subcommand is not None:
        return
    if status is not None and status not in ("pending", "running", "failed", "done"):
        raise typer.BadParameter("expected pending, running, failed or done", param_hint="--status")
    rows = state(ctx).memori().jobs(status=status, limit=limit)
    if json_output:
        print_json(rows)
        return
    if not rows:
        err.print("No jobs waiting or failed.")
        return
    table = Table(expand=True)
    compact = narrow()  # a narrow terminal: the error keeps the room, the counts go
    table.add_column("id", overflow="fold")
    table.add_column("entity", no_wrap=True, overflow="ellipsis", max_width=side_width(20))
    table.add_column("status", no_wrap=True)
    if not compact:
        table.add_column("attempts", no_wrap=True)
        table.add_column("messages", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=1, min_width=12)
    for row in rows:
        cells = [str(row["id"]), escape(row["entity"]), row["status"]]
        if not compact:
            cells += [str(row["attempts"]), str(row["messages"])]
        updated = row["updated_at"][:19]
        cells += [updated[5:16] if compact else updated, escape(row["error"] or "")]
        table.add_row(*cells)
    out.print(table)


@jobs_app.command("show")
@handle_errors
def job_show_command(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(max=MAX_ID, help="The job's id (see `memori jobs`).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """One job in full: its status, error and raw model output, and every extracted item
    grounding rejected (not supported by the messages it cites), with the reason."""
    job = state(ctx).memori().job(job_id)
    if job is None:
        raise MemoriError(f"no job with id {job_id}")
    if json_output:
        print_json(job)
        return
    out.print(f"job {job['id']} · {escape(job['entity'])} · {job['status']}", highlight=False)
    for key in ("attempts", "created_at", "updated_at", "message_ids"):
        if job.get(key) is not None:
            out.print(f"  {key}: {job[key]}", highlight=False)
    if job.get("error"):
        out.print(f"  error: {escape(job['error'])}", highlight=False)
    if job.get("output"):
        out.print("  raw model output:", highlight=False)
        out.print(escape(job["output"]), highlight=False, soft_wrap=False)
    if not job["rejected"]:
        out.print("  nothing rejected by grounding", highlight=False)
        return
    out.print(f"  rejected by grounding ({len(job['rejected'])}):", highlight=False)
    for item in job["rejected"]:
        out.print(
            f"  - {item['item']}: {escape(item['content'])}\n      why: {escape(item['reason'])}",
            highlight=False,
        )


@jobs_app.command("retry")
@handle_errors
def retry_command(
    ctx: typer.Context,
    job_ids: Annotated[
        list[int] | None,
        typer.Argument(help="Job ids to requeue (default: every failed job).", max=MAX_ID),
    ] = None,
) -> None:
    """Requeue failed jobs with fresh attempts."""
    count = state(ctx).memori().retry_jobs(job_ids or None)
    err.print(f"Requeued {count} failed job(s).")
