"""The knowledge graph: resolution, supersession, correction, exports, MCP JSONL, isolation,
and graph candidates in recall."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydot
import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.cli import app
from memori_cli.graph import GraphError
from memori_cli.graph import resolve as graph_resolve
from memori_cli.graph.keys import node_key


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memori]:
    memori = Memori(tmp_path / "memori.db", embedder=None)
    memori.config.embedding_model = "none"
    yield memori
    memori.close()


def say(mem: Memori, entity: str, session: str, *texts: str, day: str = "2026-03-01") -> None:
    with mem.attribution(entity):
        mem.set_session(session)
        mem.add_messages(
            [{"role": "user", "content": t, "timestamp": f"{day}T10:0{n}:00Z",
              "name": entity.capitalize()} for n, t in enumerate(texts)]
        )  # fmt: skip
    mem.augment()


def names(mem: Memori, entity: str) -> list[str]:
    return sorted(n["name"] for n in mem.graph.nodes(entity_id=entity))


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Lisbon", "  lisbon ", True),
        ("Lisbon", "Lisbon's", True),
        ("Tidepool Labs", "tidepool   labs", True),
        ("cats", "cat", True),
        ("berries", "berry", True),
        ("Paris", "Pari", False),
        ("glass", "glas", False),
        ("Sam", "Samuel", False),
    ],
)
def test_node_keys(a: str, b: str, same: bool) -> None:
    assert (node_key(a) == node_key(b)) is same


def test_exact_name_duplicates_are_one_node_and_one_edge(mem: Memori) -> None:
    say(mem, "maya", "s1", "I live in Lisbon.")
    say(mem, "maya", "s2", "I live in Lisbon.", day="2026-03-02")
    say(mem, "maya", "s3", "I love cats.", "I love Cats!", day="2026-03-03")
    assert names(mem, "maya") == ["Lisbon", "Maya", "cats"]
    edges = {(e["predicate"], e["object"]): e for e in mem.graph.edges(entity_id="maya")}
    assert edges[("lives_in", "Lisbon")]["count"] == 2
    assert len(edges[("lives_in", "Lisbon")]["sources"]) == 2
    assert mem.graph.node("lisbon", entity_id="maya")["aliases"] == []
    assert mem.graph.node("Cats", entity_id="maya")["name"] == "cats"


def test_embedding_similar_names_merge_only_above_the_threshold(mem: Memori) -> None:
    base = np.array([1.0, 0.0, 0.0], np.float32)
    close = np.array([1.0, 0.05, 0.0], np.float32)  # cosine 0.9988
    far = np.array([1.0, 0.6, 0.0], np.float32)  # cosine 0.857
    with mem.store.write() as conn:
        conn.execute("INSERT INTO entities (id, created_at) VALUES ('e', 'now')")
        first = graph_resolve.resolve(conn, "e", "New York City", "place", base)
        assert graph_resolve.resolve(conn, "e", "New York city (NYC)", "place", close) == first
        assert graph_resolve.resolve(conn, "e", "Newark", "place", far) != first
        assert graph_resolve.resolve(conn, "e", "New York Times", "organization", close) != first
    assert mem.graph.node("New York city (NYC)", entity_id="e")["name"] == "New York City"


def test_a_contradicting_edge_closes_the_old_one(mem: Memori) -> None:
    say(mem, "maya", "s1", "I live in Toronto.", day="2026-01-01")
    say(mem, "maya", "s2", "I live in Lisbon.", day="2026-03-01")
    current = [(e["predicate"], e["object"]) for e in mem.graph.edges(entity_id="maya")]
    assert ("lives_in", "Lisbon") in current and ("lives_in", "Toronto") not in current
    then = mem.graph.edges(entity_id="maya", as_of="2026-02-01")
    assert ("lives_in", "Toronto") in [(e["predicate"], e["object"]) for e in then]
    old = [e for e in mem.graph.edges(entity_id="maya", history=True) if e["object"] == "Toronto"]
    assert old[0]["valid_to"].startswith("2026-03-01") and old[0]["superseded_by"] is not None
    shown = CliRunner().invoke(
        app,
        [
            "--db",
            str(mem.store.url or mem.store.path),
            "graph",
            "show",
            "--entity",
            "maya",
            "--history",
        ],
    )
    assert shown.exit_code == 0 and "until 2026-03-01" in shown.stdout


def test_merge_and_forget(mem: Memori) -> None:
    say(mem, "maya", "s1", "I live in NYC.", "My partner is Sam.")
    say(mem, "maya", "s2", "I live in New York.", day="2026-03-02")
    assert {"NYC", "New York"} <= set(names(mem, "maya"))
    result = mem.graph.merge("New York", "nyc", entity_id="maya")
    assert result == {"kept": "New York", "merged": "NYC", "merged_edges": 0}
    node = mem.graph.node("NYC", entity_id="maya")
    assert node["name"] == "New York" and node["aliases"] == ["NYC"]
    with pytest.raises(GraphError, match="already one node"):
        mem.graph.merge("New York", "NYC", entity_id="maya")
    sam = mem.graph.node("Sam", entity_id="maya")
    assert mem.graph.forget(f"#{sam['id']}", entity_id="maya") == {
        "edges": 1, "nodes": 1, "name": "Sam"
    }  # fmt: skip
    edge = mem.graph.edges(entity_id="maya")[0]
    assert mem.graph.forget(f"edge:{edge['id']}", entity_id="maya")["edges"] == 1
    with pytest.raises(GraphError, match="no edge"):
        mem.graph.forget(f"edge:{edge['id']}", entity_id="maya")
    with pytest.raises(GraphError, match="no node 'Atlantis'"):
        mem.graph.forget("Atlantis", entity_id="maya")


def test_merge_combines_edges_that_become_the_same(mem: Memori) -> None:
    graph_resolve.add_edge(mem.store, "e", ("Ana", "person"), "likes", ("NYC", "place"),
                         extractor="t")  # fmt: skip
    graph_resolve.add_edge(mem.store, "e", ("Ana", "person"), "likes", ("New York", "place"),
                         extractor="t")  # fmt: skip
    assert mem.graph.merge("New York", "NYC", entity_id="e")["merged_edges"] == 1
    (edge,) = mem.graph.edges(entity_id="e")
    assert edge["object"] == "New York"


def test_exports_parse(mem: Memori, tmp_path: Path) -> None:
    say(mem, "maya", "s1", "My partner is Sam.", "I live in Lisbon.")
    graph_resolve.add_edge(mem.store, "maya", ("Maya", "person"), "works_at",
                         ('"Quote & <Angle> Labs"\n', "organization"), extractor="t")  # fmt: skip
    nodes, edges = mem.graph.nodes(entity_id="maya"), mem.graph.edges(entity_id="maya")
    assert len(edges) == 3
    data = json.loads(mem.graph.export("json", entity_id="maya"))
    assert len(data["nodes"]) == len(nodes) and len(data["edges"]) == 3
    (dot,) = pydot.graph_from_dot_data(mem.graph.export("dot", entity_id="maya"))
    assert len(dot.get_edges()) == 3
    labels = {n.get_label().strip('"') for n in dot.get_nodes() if n.get_label()}
    assert '\\"Quote & <Angle> Labs\\" (organization)' in labels
    root = ET.fromstring(mem.graph.export("graphml", entity_id="maya"))
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    assert len(root.findall(".//g:edge", ns)) == 3
    assert '"Quote & <Angle> Labs"' in [d.text for d in root.findall(".//g:data[@key='name']", ns)]
    mermaid = mem.graph.export("mermaid", entity_id="maya").splitlines()
    assert mermaid[0] == "flowchart LR"
    node_line = re.compile(r'^  n\d+\["[^"\n]*"\]$')
    edge_line = re.compile(r'^  n\d+ -->\|"[^"\n]*"\| n\d+$')
    assert all(node_line.match(line) or edge_line.match(line) for line in mermaid[1:])
    assert sum(bool(edge_line.match(line)) for line in mermaid) == 3


def test_picture_export_without_graphviz_says_what_to_install(
    mem: Memori, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(
        app,
        [
            "--db",
            str(mem.store.url or mem.store.path),
            "graph",
            "export",
            "-f",
            "svg",
            "--entity",
            "x",
        ],
    )
    assert result.exit_code == 1 and "install Graphviz" in result.stderr


def test_mcp_jsonl_round_trip(mem: Memori, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "memory.json", [
        {"type": "entity", "name": "John_Smith", "entityType": "person",
         "observations": ["Speaks fluent Spanish", "Graduated in 2019"]},
        {"type": "entity", "name": "Anthropic", "entityType": "organization", "observations": []},
        {"type": "relation", "from": "John_Smith", "to": "Anthropic", "relationType": "works_at"},
        "{not json",
        {"type": "entity", "name": "", "entityType": "person", "observations": []},
        {"type": "relation", "from": "John_Smith", "to": "Anthropic"},
    ])  # fmt: skip
    report = mem.graph.import_mcp(source, entity_id="john")
    assert (report["nodes"], report["edges"], report["observations"]) == (2, 1, 2)
    assert [e.split(": ")[0] for e in report["errors"]] == [
        f"{source}:4", f"{source}:5", f"{source}:6"
    ]  # fmt: skip
    assert "relationType" in report["errors"][2]
    assert mem.graph.import_mcp(source, entity_id="john")["edges"] == 0  # idempotent
    assert {m["content"] for m in mem.memories("john")} == {
        "Speaks fluent Spanish", "Graduated in 2019"
    }  # fmt: skip
    exported = tmp_path / "out.jsonl"
    exported.write_text(mem.graph.export("mcp", entity_id="john"))
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert {"type": "relation", "from": "John_Smith", "to": "Anthropic",
            "relationType": "works_at"} in lines  # fmt: skip
    john = next(line for line in lines if line.get("name") == "John_Smith")
    assert sorted(john["observations"]) == ["Graduated in 2019", "Speaks fluent Spanish"]
    again = mem.graph.import_mcp(exported, entity_id="copy")
    assert again["errors"] == [] and (again["nodes"], again["edges"]) == (2, 1)
    assert mem.graph.export("mcp", entity_id="copy") == exported.read_text()


def test_graphs_never_cross_entities(mem: Memori) -> None:
    say(mem, "ana", "s", "I live in Lisbon.")
    say(mem, "ben", "s", "I live in Lisbon.")
    ana, ben = mem.graph.node("Lisbon", entity_id="ana"), mem.graph.node("Lisbon", entity_id="ben")
    assert ana["id"] != ben["id"]
    with pytest.raises(GraphError):
        mem.graph.merge(f"#{ana['id']}", f"#{ben['id']}", entity_id="ana")
    with pytest.raises(GraphError):
        mem.graph.forget(f"#{ben['id']}", entity_id="ana")
    assert all(e["subject"] != "Ben" for e in mem.graph.edges(entity_id="ana"))
    assert mem.graph.search("%", entity_id="ana") == []  # literal, not a wildcard
    assert [n["name"] for n in mem.graph.search("lis", entity_id="ana")] == ["Lisbon"]
    mem.forget("ben")
    assert mem.graph.nodes(entity_id="ben") == []
    assert names(mem, "ana") == ["Ana", "Lisbon"]


def test_recall_brings_in_what_the_named_node_is_linked_to(mem: Memori) -> None:
    say(mem, "maya", "s1", "My partner is Sam.", "The weather was nice today.")
    assert not any(  # off by default: it did not help on the development data
        "graph_rank" in (h.explain or {}) for h in mem.recall("Sam", entity_id="maya", explain=True)
    )
    mem.config.ranking = dataclasses.replace(mem.config.ranking, graph_weight=1.0)
    hits = mem.recall("Tell me about Sam", entity_id="maya", explain=True)
    graph_hits = [h for h in hits if h.explain and "graph_rank" in h.explain]
    assert any(h.content == "My partner is Sam." for h in graph_hits)
    assert all(h.content != "The weather was nice today." for h in graph_hits)
