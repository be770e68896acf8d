"""``memori recall``: ask memory a question."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.table import Table

from .. import dates
from ..errors import InvalidQueryError
from ..recall import RecallHit
from .common import entity_note, err, escape, handle_errors, out, print_json, side_width, state


@handle_errors
def recall_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for; any text is a valid query.")],
    entity: Annotated[str | None, typer.Option(help="Entity whose memory to search.")] = None,
    process: Annotated[str | None, typer.Option(help="Only messages seen by this process.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Most hits.")] = 10,
    since: Annotated[
        str | None, typer.Option(help="Only items created at or after this ISO date/time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only items created before this ISO date/time.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Recall what was true then (ISO date): memories valid "
            "at that time and messages written by it.",
        ),
    ] = None,
    messages_only: Annotated[
        bool, typer.Option("--messages-only", help="Search messages, not extracted memories.")
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show each hit's score components and sources.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Recall what memory holds about QUERY for an entity, best match first, with provenance.

    Hybrid: bm25 over every message and extracted memory, vector search over those embedded
    so far, fused and ranked by recency, trust, use and who the question is about. Memories
    shown are the current ones unless --as-of asks about another time.
    """
    mem = state(ctx).memori()
    with bad_times():
        hits = mem.recall(
            query,
            limit=limit,
            entity_id=entity,
            process_id=process,
            since=since,
            until=until,
            explain=explain,
            as_of=as_of,
            memories=not messages_only,
        )
    used = entity_note(mem, entity, quiet=json_output)
    if json_output:
        print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        err.print(f"Nothing recalled for entity {escape(used)!r}.")
        return
    out.print(hits_table(hits))
    if explain:
        for n, hit in enumerate(hits, start=1):
            parts = ", ".join(f"{k}={v}" for k, v in (hit.explain or {}).items())
            out.print(f"{n}. {escape(parts)}", highlight=False)


def hits_table(hits: list[RecallHit]) -> Table:
    """Recall hits as a table: score, content, who said it when, session and sources."""
    table = Table(show_lines=False, expand=True)
    table.add_column("score", no_wrap=True, justify="right")
    table.add_column("content", ratio=1, min_width=20, overflow="fold")
    # Secondary columns give way to the content on a narrow terminal: cut, not folded.
    table.add_column("said by, on", max_width=side_width(18), overflow="ellipsis")
    table.add_column("session / source", max_width=side_width(20), overflow="ellipsis")
    for hit in hits:
        table.add_row(
            f"{hit.score:.2f}",
            escape(_clip(hit.content)),
            escape(_who(hit.kind, hit.name or hit.role, hit.created_at)),
            escape(f"{hit.session} / {', '.join(hit.source_ids)}"),
        )
    return table


def _who(kind: str, name: str | None, created_at: str) -> str:
    """ "Maya, 2026-03-02" for a message; "fact about Maya, since 2026-03-02" for a memory."""
    if kind == "message":
        return f"{name or '?'}, {created_at[:10]}"
    return f"{kind} about {name}, since {created_at[:10]}"


def _clip(text: str, width: int = 400) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def bad_times() -> Iterator[None]:
    """Turn the library's :class:`InvalidQueryError` (a ``--since``, ``--until`` or
    ``--as-of`` that is no time, or ``--since`` after ``--until``) into the usage error a bad
    option gives: its usual message and exit code 2."""
    try:
        yield
    except InvalidQueryError as exc:
        option = "--" + exc.argument.replace("_", "-")
        raise typer.BadParameter(exc.reason, param_hint=option) from None


def _iso(value: str | None, option: str) -> str | None:
    """``value`` in the store's form, or the usage error naming ``option``."""
    with bad_times():
        return dates.moment(value, option.lstrip("-").replace("-", "_"))
