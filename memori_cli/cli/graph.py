"""``memori graph``: look at, search, correct, export and import the knowledge graph."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from ..graph import FORMATS, Graph, GraphError
from .common import (
    CONTEXT_SETTINGS,
    MARKUP,
    entity_note,
    err,
    escape,
    handle_errors,
    out,
    print_json,
    print_unwrapped,
    state,
    visible,
)
from .recalling import _iso

graph_app = typer.Typer(
    help="The knowledge graph: show, stats, search, merge, forget, export.",
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
)
EntityOption = Annotated[str | None, typer.Option(help="Whose graph (default: current).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]
PICTURES = ("png", "svg")


@graph_app.command("show")
@handle_errors
def show_command(
    ctx: typer.Context,
    entity: EntityOption = None,
    node: Annotated[str | None, typer.Option(help="Only this node's neighbourhood.")] = None,
    depth: Annotated[int, typer.Option(min=1, max=5, help="Hops from --node.")] = 1,
    as_of: Annotated[str | None, typer.Option("--as-of", help="The graph at this date.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Superseded edges too (dimmed).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most nodes shown.")] = 15,
    json_output: JsonOption = False,
) -> None:
    """Show the entity's graph as a tree: the most connected nodes first, their edges grouped
    by predicate with counts and dates (or one node's neighbourhood with --node)."""
    mem = state(ctx).memori()
    graph = mem.graph
    when = _iso(as_of, "--as-of")
    if node is not None:
        centre, edges = graph.neighbourhood(
            node, depth=depth, entity_id=entity, as_of=when, history=history
        )
        roots, more = [centre], 0
    else:
        nodes = graph.nodes(entity_id=entity, as_of=when)
        edges = graph.edges(entity_id=entity, as_of=when, history=history)
        connected = [n for n in nodes if n["degree"] or history]
        roots, more = connected[:limit], max(0, len(connected) - limit)
    entity_note(mem, entity, quiet=json_output)
    if json_output:
        print_json({"nodes": roots, "edges": edges})
        return
    if not roots:
        err.print("The graph is empty (edges come from augmentation or `memori graph import`).")
        return
    print_unwrapped(_tree(roots, edges, depth if node is not None else 1, more))


def _tree(
    roots: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]], depth: int, more: int
) -> Tree:
    by_node: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for edge in edges:
        by_node[edge["subject_id"]].append(edge)
        if edge["object_id"] != edge["subject_id"]:
            by_node[edge["object_id"]].append(edge)
    top = Tree("[bold]knowledge graph[/]", guide_style="dim")
    shown: set[int] = set()  # each edge once: under the first node that reaches it

    def grow(branch: Tree, node_id: int, level: int, seen: set[int]) -> None:
        groups: dict[str, list[tuple[Mapping[str, Any], bool]]] = defaultdict(list)
        for edge in by_node.get(node_id, []):
            if edge["id"] in shown:
                continue
            shown.add(edge["id"])
            outgoing = edge["subject_id"] == node_id
            label = edge["predicate"] if outgoing else f"← {edge['predicate']}"
            groups[label].append((edge, outgoing))
        for label, items in sorted(groups.items()):
            predicate = branch.add(f"[cyan]{escape(label)}[/]")
            for edge, outgoing in items:
                other_id = edge["object_id"] if outgoing else edge["subject_id"]
                other = edge["object"] if outgoing else edge["subject"]
                dates = f"since {edge['valid_from'][:10]}"
                if edge["valid_to"]:
                    dates += f", until {edge['valid_to'][:10]}"
                text = f"{escape(other)} [dim](x{edge['count']}, {dates}, edge {edge['id']})[/]"
                leaf = predicate.add(f"[dim strike]{text}[/]" if edge["valid_to"] else text)
                if level < depth and other_id not in seen:
                    grow(leaf, other_id, level + 1, seen | {other_id})

    for root in roots:
        if by_node.get(root["id"]) and all(e["id"] in shown for e in by_node[root["id"]]):
            continue  # everything about it is shown already
        aliases = f" [dim]aka {escape(', '.join(root['aliases']))}[/]" if root["aliases"] else ""
        branch = top.add(
            f"[bold]{escape(root['name'])}[/] [dim]{escape(root['type'])} #{root['id']}[/]{aliases}"
        )
        grow(branch, root["id"], 1, {root["id"]})
    if more:
        top.add(f"[dim]… {more} more nodes: --limit N, or --node NAME for one of them[/]")
    return top


@graph_app.command("stats")
@handle_errors
def stats_command(
    ctx: typer.Context, entity: EntityOption = None, json_output: JsonOption = False
) -> None:
    """Counts of nodes, aliases and edges, node types and predicates."""
    stats = state(ctx).memori().graph.stats(entity_id=entity)
    if json_output:
        print_json(stats)
        return
    table = Table(show_header=False)
    for key in ("entity", "nodes", "aliases", "edges", "superseded_edges"):
        table.add_row(key.replace("_", " "), escape(str(stats[key])))
    for key in ("node_types", "predicates"):
        table.add_row(
            key.replace("_", " "), escape(", ".join(f"{k} {v}" for k, v in stats[key].items()))
        )
    out.print(table)


@graph_app.command("search")
@handle_errors
def search_command(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Text a node's name or alias contains.")],
    entity: EntityOption = None,
    json_output: JsonOption = False,
) -> None:
    """Find nodes by name or alias."""
    mem = state(ctx).memori()
    found = mem.graph.search(text, entity_id=entity)
    used = entity_note(mem, entity, quiet=json_output)
    if json_output:
        print_json(found)
    elif not found:
        err.print(f"No node of entity {escape(used)!r} matches {escape(text)!r}.")
    else:
        table = Table()
        for column in ("id", "name", "type", "edges", "aliases"):
            table.add_column(column, overflow="fold")
        for node in found:
            table.add_row(str(node["id"]), escape(node["name"]), escape(node["type"]),
                          str(node["degree"]), escape(", ".join(node["aliases"])))  # fmt: skip
        out.print(table)


@graph_app.command("merge")
@handle_errors
def merge_command(
    ctx: typer.Context,
    keep: Annotated[str, typer.Argument(help="The node to keep (name, alias or #ID).")],
    gone: Annotated[str, typer.Argument(help="The node folded into it.")],
    entity: EntityOption = None,
    json_output: JsonOption = False,
) -> None:
    """Merge node GONE into node KEEP: names become aliases, edges move, duplicates merge."""
    result = state(ctx).memori().graph.merge(keep, gone, entity_id=entity)
    if json_output:
        print_json(result)
    else:
        err.print(f"Merged {escape(result['merged'])!r} into {escape(result['kept'])!r} "
                  f"({result['merged_edges']} duplicate edge(s) combined).")  # fmt: skip


@graph_app.command("forget")
@handle_errors
def forget_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A node (name, alias or #ID) or edge:ID.")],
    entity: EntityOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a node with its edges, or one edge (edge:ID, as `graph show` lists them)."""
    result = state(ctx).memori().graph.forget(target, entity_id=entity)
    if json_output:
        print_json(result)
    else:
        err.print(f"Forgot {result['nodes']} node(s) and {result['edges']} edge(s).")


@graph_app.command("export")
@handle_errors
def export_command(
    ctx: typer.Context,
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS + PICTURES)}.")
    ] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (a new file).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --output (a symlink itself, never the file it points to).",
        ),
    ] = False,
    entity: EntityOption = None,
) -> None:
    """Export the current graph: json, dot, mermaid, graphml, mcp (the MCP memory server's
    JSONL), or with Graphviz installed a png or svg picture.

    With --output the file is written whole or not at all (a temporary file beside it,
    readable by you only, renamed into place). An existing file or symlink is left alone
    unless --force is given; --force replaces a symlink itself, never what it points to."""
    if format not in FORMATS + PICTURES:
        raise typer.BadParameter(
            f"{format!r}; choose one of {', '.join(FORMATS + PICTURES)}", param_hint="--format"
        )
    if output is not None:
        _check_target(output, force=force)  # before any work: fail fast, touch nothing
    graph = state(ctx).memori().graph
    if format in PICTURES:
        dot = shutil.which("dot")
        if dot is None:
            raise GraphError(
                f"--format {format} needs Graphviz's `dot`, which is not on PATH: install "
                "Graphviz (apt install graphviz, brew install graphviz), or export --format dot"
            )
        if output is None and format == "png":
            raise typer.BadParameter("a png needs --output FILE", param_hint="--output")
        drawn = subprocess.run(
            [dot, f"-T{format}"], input=_text_export(graph, "dot", entity).encode(),
            capture_output=True, check=False,
        )  # fmt: skip
        if drawn.returncode != 0:
            raise GraphError(f"dot failed: {drawn.stderr.decode(errors='replace').strip()}")
        data = drawn.stdout
    else:
        data = _text_export(graph, format, entity).encode()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_file(output, data, force=force)
        err.print(f"Wrote {escape(str(output))} ({len(data):,} bytes).")


def _exists_message(path: Path) -> str:
    kind = "a symlink" if path.is_symlink() else "a file"
    return f"{path} exists ({kind}): pass --force to replace it, or choose another --output"


def _check_target(path: Path, *, force: bool) -> None:
    """Refuse an --output that exists (file or symlink, dangling too) unless ``force``, a
    directory always, and with ``force`` anything but a file or a link to one (so
    ``-o /dev/stdout --force`` never replaces the system's link)."""
    if path.is_dir() and not path.is_symlink():
        raise GraphError(f"{path} is a directory: give a file name with --output")
    if not os.path.lexists(path):
        return
    if not force:
        raise GraphError(_exists_message(path))
    if os.path.exists(path) and not os.path.isfile(path):  # what a link leads to, too
        raise GraphError(
            f"{path} is not a regular file (a device, pipe, socket or folder): --force only "
            "replaces files and symlinks to files; leave out --output to write to stdout"
        )


def _write_file(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` atomically, never through a symlink.

    The bytes go to a temporary file in the same folder, created exclusively with mode 0600
    (the graph is the user's personal memory, kept as private as the store), flushed to
    disk, then published: with ``force`` by :func:`os.replace`, which renames over a file or
    a symlink itself (the link's target is never opened); without, by a hard link, which
    fails if anything appeared at ``path`` since the check, so nothing is ever clobbered.
    """
    _check_target(path, force=force)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise GraphError(_exists_message(path)) from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(path):
                raise GraphError(_exists_message(path)) from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _text_export(graph: Graph, format: str, entity: str | None) -> str:
    """The export as text. JSON formats stay exact (JSON escapes controls itself); the text
    formats (dot, mermaid, graphml) show controls in stored names visibly, as everything
    memori prints for people does, so a viewer or a terminal never obeys them."""
    text = graph.export(format, entity_id=entity)
    return text if format in ("json", "mcp") else visible(text)


@graph_app.command("import")
@handle_errors
def import_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="An MCP memory server JSONL file.")],
    entity: EntityOption = None,
    json_output: JsonOption = False,
) -> None:
    """Import the knowledge-graph JSONL of the reference MCP memory server: entities become
    nodes (observations become facts), relations become edges. Exit 1 if a line was bad."""
    if not path.is_file():
        raise GraphError(f"{path}: no such file")
    report = state(ctx).memori(create=True).graph.import_mcp(path, entity_id=entity)
    if json_output:
        print_json(report)
    else:
        err.print(f"Imported {report['nodes']} new node(s), {report['edges']} new edge(s), "
                  f"{report['observations']} new observation(s).")  # fmt: skip
        for line in report["errors"][:20]:
            err.print(f"[red]{escape(line)}[/]")
    if report["errors"]:
        raise typer.Exit(1)
