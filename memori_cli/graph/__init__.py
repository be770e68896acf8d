"""``mem.graph``: the entity's knowledge graph to look at, correct, export and import.

Exports: ``json`` (nodes and edges with provenance), ``dot`` (Graphviz), ``mermaid``,
``graphml``, and ``mcp``: the JSONL of the reference MCP memory server (lines
``{"type": "entity", "name", "entityType", "observations"}`` and
``{"type": "relation", "from", "to", "relationType"}``), which :meth:`Graph.import_mcp` reads.

The package: this facade and the formats; :mod:`.keys` (when two spellings name one node) and
:mod:`.resolve` (which node a name is, made if there is none). The SQL is the store's
(:mod:`memori_cli.store.graph`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape as xml_escape

from .. import dates
from ..attribution import validate_id
from ..errors import GraphError as GraphError  # re-exported: graph.GraphError
from ..importers.reader import loads
from ..parts import Edge, Node, Record
from ..redact import redact, redact_id
from ..store import graph as store_graph
from ..store import memories as store_memories
from .keys import node_key as node_key  # re-exported: graph.node_key
from .resolve import add_edge, add_node, find_node

if TYPE_CHECKING:
    from ..host import Host

FORMATS = ("json", "dot", "mermaid", "graphml", "mcp")
MCP_EXTRACTOR = "import:mcp"


class Graph:
    """The knowledge graph of one store; every method works on one entity (the current
    attribution's unless ``entity_id`` is given)."""

    def __init__(self, mem: Host):
        self._mem = mem

    def _entity(self, entity_id: str | None) -> str:
        if entity_id is None:
            return self._mem.current.entity_id
        return validate_id(entity_id, "entity_id")

    def node(self, name: str, *, entity_id: str | None = None) -> Node:
        """The node called ``name`` (or an alias, or ``#ID``); GraphError if there is none."""
        entity = self._entity(entity_id)
        found = find_node(self._mem.store, entity, name)
        if found is None:
            raise GraphError(f"no node {name!r} in the graph of entity {entity!r}")
        return found

    def nodes(
        self, *, entity_id: str | None = None, as_of: str | None = None, limit: int = 1_000_000
    ) -> list[Node]:
        """Nodes with type, aliases and degree, most connected first (``as_of``: a time as
        :meth:`Memori.recall` takes it, else :class:`InvalidQueryError`)."""
        when = dates.moment(as_of, "as_of")
        return store_graph.nodes(self._mem.store, self._entity(entity_id), as_of=when, limit=limit)

    def edges(
        self,
        *,
        entity_id: str | None = None,
        node_ids: list[int] | None = None,
        as_of: str | None = None,
        history: bool = False,
    ) -> list[Edge]:
        """Edges (current, at ``as_of``, or all with ``history``), with source message ids."""
        return store_graph.edges(
            self._mem.store, self._entity(entity_id), node_ids=node_ids,
            as_of=dates.moment(as_of, "as_of"), history=history,
        )  # fmt: skip

    def neighbourhood(
        self,
        name: str,
        *,
        depth: int = 1,
        entity_id: str | None = None,
        as_of: str | None = None,
        history: bool = False,
    ) -> tuple[Node, list[Edge]]:
        """The node called ``name`` and the edges within ``depth`` hops of it."""
        as_of = dates.moment(as_of, "as_of")
        centre = self.node(name, entity_id=entity_id)
        reached, found = {centre["id"]}, {}
        frontier = {centre["id"]}
        for _ in range(max(1, depth)):
            new = self.edges(
                entity_id=entity_id, node_ids=sorted(frontier), as_of=as_of, history=history
            )
            for edge in new:
                found[edge["id"]] = edge
            frontier = {e[k] for e in new for k in ("subject_id", "object_id")} - reached
            reached |= frontier
            if not frontier:
                break
        return centre, sorted(found.values(), key=lambda e: (e["subject"], e["predicate"], e["id"]))

    def stats(self, *, entity_id: str | None = None) -> dict[str, Any]:
        """Counts of nodes, aliases, edges (current and superseded), types and predicates."""
        return store_graph.stats(self._mem.store, self._entity(entity_id))

    def search(self, text: str, *, entity_id: str | None = None) -> list[Node]:
        """Nodes whose name or an alias contains ``text``."""
        return store_graph.search(self._mem.store, self._entity(entity_id), text)

    def merge(self, keep: str, gone: str, *, entity_id: str | None = None) -> dict[str, Any]:
        """Fold node ``gone`` into ``keep`` (names, aliases or ``#ID``s)."""
        entity = self._entity(entity_id)
        kept, merged = self.node(keep, entity_id=entity), self.node(gone, entity_id=entity)
        if kept["id"] == merged["id"]:
            raise GraphError(f"{keep!r} and {gone!r} are already one node (#{kept['id']})")
        result = store_graph.merge(self._mem.store, entity, kept["id"], merged["id"])
        return {"kept": kept["name"], "merged": merged["name"], **result}

    def forget(self, target: str, *, entity_id: str | None = None) -> dict[str, Any]:
        """Delete a node (name, alias or ``#ID``) with its edges, or an edge (``edge:ID``)."""
        entity = self._entity(entity_id)
        match = re.fullmatch(r"edge:(\d+)", target.strip())
        if match:
            if not store_graph.forget_edge(self._mem.store, entity, int(match.group(1))):
                raise GraphError(f"no edge {match.group(1)} in the graph of entity {entity!r}")
            return {"edges": 1, "nodes": 0}
        node = self.node(target, entity_id=entity)
        edges = store_graph.forget_node(self._mem.store, entity, node["id"])
        return {"edges": edges, "nodes": 1, "name": node["name"]}

    # -- exchange ----------------------------------------------------------------------------
    def export(self, format: str, *, entity_id: str | None = None) -> str:
        """The entity's current graph as text in ``format`` (one of FORMATS)."""
        if format not in FORMATS:
            raise GraphError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        entity = self._entity(entity_id)
        nodes, edges = self.nodes(entity_id=entity), self.edges(entity_id=entity)
        if format == "mcp":
            observations = _observations(self._mem, entity)
            return to_mcp(nodes, edges, observations)
        return {"json": to_json, "dot": to_dot, "mermaid": to_mermaid, "graphml": to_graphml}[
            format
        ](nodes, edges)

    def import_mcp(self, path: str | Path, *, entity_id: str | None = None) -> dict[str, Any]:
        """Read an MCP memory-server JSONL file into the entity's graph: entities become
        nodes (their observations, memories of kind fact), relations become edges. Bad lines
        are reported by number and skipped; the valid ones are imported. Re-importing adds
        nothing."""
        entity = self._entity(entity_id)
        report: dict[str, Any] = {"nodes": 0, "edges": 0, "observations": 0, "errors": []}
        types: dict[str, str] = {}
        relations: list[tuple[int, dict[str, Any]]] = []
        store = self._mem.store
        with open(path, encoding="utf-8", errors="replace") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    # loads: JSON nested past the recursion limit or an over-long integer is
                    # one bad line (a ValueError), never the end of the import.
                    record = loads(line)
                    kind = record.get("type") if isinstance(record, dict) else None
                    if kind == "entity":
                        # Redacted like every import: names keep distinct (see redact_id).
                        name = redact_id(_text(record, "name"))
                        node_type = redact(_text(record, "entityType"))
                        observations = record.get("observations", [])
                        if not isinstance(observations, list) or not all(
                            isinstance(o, str) for o in observations
                        ):
                            raise ValueError("field 'observations': expected a list of text")
                        types[name] = node_type
                        report["nodes"] += add_node(store, entity, name, node_type)
                        report["observations"] += len(
                            self._observe(entity, name, [redact(o) for o in observations])
                        )
                    elif kind == "relation":
                        for field in ("from", "to", "relationType"):
                            _text(record, field)
                        relations.append((number, {
                            "from": redact_id(record["from"]), "to": redact_id(record["to"]),
                            "relationType": redact(record["relationType"]),
                        }))  # fmt: skip
                    else:
                        raise ValueError("field 'type': expected 'entity' or 'relation'")
                except (ValueError, AttributeError) as exc:
                    report["errors"].append(f"{path}:{number}: {exc}")
        for _, record in relations:
            report["edges"] += add_edge(
                store, entity, (record["from"], types.get(record["from"], "thing")),
                record["relationType"], (record["to"], types.get(record["to"], "thing")),
                extractor=MCP_EXTRACTOR,
            )  # fmt: skip
        return report

    # -- the MCP memory server's operations (``memori mcp`` serves them) ---------------------
    def add_entity(
        self, name: str, node_type: str, observations: list[str], *, entity_id: str | None = None
    ) -> dict[str, Any]:
        """Add a node called ``name`` (kept if one answers to it) and its observations, as
        memories of kind fact about it, redacted like an import. Returns the stored name,
        whether the node is new, and the observations that were new."""
        entity = self._entity(entity_id)
        name, node_type = redact_id(name.strip()), redact(node_type.strip()) or "thing"
        if not name:
            raise GraphError("an entity needs a non-empty name")
        made = bool(add_node(self._mem.store, entity, name, node_type))
        added = self._observe(entity, name, [redact(o) for o in observations])
        return {"name": name, "created": made, "observations": added}

    def add_observations(
        self, name: str, observations: list[str], *, entity_id: str | None = None
    ) -> list[str]:
        """Add observations (facts) about the existing node ``name``; the new ones."""
        entity = self._entity(entity_id)
        node = self.node(name, entity_id=entity)
        return self._observe(entity, node["name"], [redact(o) for o in observations])

    def _observe(self, entity: str, about: str, observations: list[str]) -> list[str]:
        """Store each observation unless the entity holds it already; the new ones."""
        return [
            text
            for text in observations
            if store_memories.add_observations(
                self._mem.store, entity, about, [text], extractor=MCP_EXTRACTOR
            )
        ]

    def add_relation(
        self, subject: str, predicate: str, obj: str, *, entity_id: str | None = None
    ) -> bool:
        """Add the current edge ``subject -predicate-> obj`` between two existing nodes
        (GraphError if one is missing); False if that edge holds already."""
        entity = self._entity(entity_id)
        ends = [self.node(n, entity_id=entity) for n in (subject, obj)]
        predicate = redact(predicate.strip())
        if not predicate:
            raise GraphError("a relation needs a non-empty relationType")
        return bool(add_edge(
            self._mem.store, entity, (ends[0]["name"], ends[0]["type"]), predicate,
            (ends[1]["name"], ends[1]["type"]), extractor=MCP_EXTRACTOR,
        ))  # fmt: skip


def _text(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {field!r}: expected non-empty text")
    return value


def _observations(mem: Host, entity: str) -> dict[str, list[str]]:
    """Current memories by who they are about: the observations of an MCP export."""
    out: dict[str, list[str]] = {}
    for memory in mem.memories(entity, limit=100_000):
        out.setdefault(memory["about"] or entity, []).append(memory["content"])
    return {about: sorted(texts) for about, texts in out.items()}


# -- formats ---------------------------------------------------------------------------------
def to_json(nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]) -> str:
    """Nodes and edges as one JSON document (each in its ``--json`` shape)."""
    document = {"nodes": [_plain(n) for n in nodes], "edges": [_plain(e) for e in edges]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return row.to_dict() if isinstance(row, Record) else dict(row)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def to_dot(nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]) -> str:
    """Graphviz DOT."""
    lines = ["digraph memori {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for node in nodes:
        label = f"{node['name']} ({node['type']})"
        lines.append(f"  n{node['id']} [label={_dot_id(label)}];")
    for edge in edges:
        label = edge["predicate"] + (f" (x{edge['count']})" if edge["count"] > 1 else "")
        lines.append(f"  n{edge['subject_id']} -> n{edge['object_id']} [label={_dot_id(label)}];")
    return "\n".join([*lines, "}"]) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid labels in quotes: quotes become #quot; and line breaks go.
    return " ".join(text.replace('"', "#quot;").split())


def to_mermaid(nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]) -> str:
    """A Mermaid flowchart."""
    lines = ["flowchart LR"]
    for node in nodes:
        lines.append(f'  n{node["id"]}["{_mermaid_text(node["name"])}"]')
    for edge in edges:
        label = _mermaid_text(edge["predicate"])
        lines.append(f'  n{edge["subject_id"]} -->|"{label}"| n{edge["object_id"]}')
    return "\n".join(lines) + "\n"


def to_graphml(nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]) -> str:
    """GraphML (XML) with name, type, predicate, count and validity as data keys."""
    keys = [("name", "node"), ("type", "node"), ("predicate", "edge"), ("count", "edge"),
            ("valid_from", "edge"), ("sources", "edge")]  # fmt: skip
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">',
        *(f'  <key id="{k}" for="{f}" attr.name="{k}" attr.type="string"/>' for k, f in keys),
        '  <graph id="memori" edgedefault="directed">',
    ]
    for node in nodes:
        lines.append(
            f'    <node id="n{node["id"]}"><data key="name">{xml_escape(node["name"])}</data>'
            f'<data key="type">{xml_escape(node["type"])}</data></node>'
        )
    for edge in edges:
        data = {
            "predicate": edge["predicate"], "count": str(edge["count"]),
            "valid_from": edge["valid_from"], "sources": " ".join(edge["sources"]),
        }  # fmt: skip
        cells = "".join(f'<data key="{k}">{xml_escape(v)}</data>' for k, v in data.items())
        lines.append(
            f'    <edge id="e{edge["id"]}" source="n{edge["subject_id"]}" '
            f'target="n{edge["object_id"]}">{cells}</edge>'
        )
    return "\n".join([*lines, "  </graph>", "</graphml>"]) + "\n"


def to_mcp(
    nodes: Sequence[Mapping[str, Any]],
    edges: Sequence[Mapping[str, Any]],
    observations: dict[str, list[str]],
) -> str:
    """The MCP memory server's JSONL: one entity line per node, one relation line per edge."""
    lines = [
        json.dumps({"type": "entity", "name": node["name"], "entityType": node["type"],
                    "observations": observations.get(node["name"], [])}, ensure_ascii=False)
        for node in nodes
    ]  # fmt: skip
    lines += [
        json.dumps({"type": "relation", "from": edge["subject"], "to": edge["object"],
                    "relationType": edge["predicate"]}, ensure_ascii=False)
        for edge in edges
    ]  # fmt: skip
    return "".join(line + "\n" for line in lines)
