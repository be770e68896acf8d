"""``memori mcp``: the MCP server over the store, driven by the SDK's own clients (in memory,
over a real stdio subprocess, over streamable HTTP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import HashingEmbedder
from typer.testing import CliRunner

pytest.importorskip("mcp")

import httpx2
from mcp import Client, StdioServerParameters

from memori_cli import Memori
from memori_cli.cli import app
from memori_cli.mcp import Scope
from memori_cli.mcp.server import (
    MEMORI_TOOLS,
    REFERENCE_TOOLS,
    build_server,
    http_app,
)

runner = CliRunner()
ALL_TOOLS = {name for name, _, _ in MEMORI_TOOLS + REFERENCE_TOOLS}


@pytest.fixture(autouse=True)
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI (and subprocesses) must not load the default embedding model in these tests.
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "memori.db"


@pytest.fixture
def mem(db: Path) -> Iterator[Memori]:
    memori = Memori(conn=db, embedder=HashingEmbedder())
    yield memori
    memori.close()


def drive(server: Any, body: Callable[[Client], Awaitable[Any]], **options: Any) -> Any:
    """Run ``body`` with an SDK client connected in process to ``server``."""

    async def main() -> Any:
        async with Client(server, **options) as client:
            return await body(client)

    return anyio.run(main)


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """A tool's structured result; the test fails on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    data = result.structured_content
    return data["result"] if set(data or {}) == {"result"} else data


async def error(client: Client, tool: str, **arguments: Any) -> str:
    """The text of the tool error ``tool`` must give."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, result.structured_content)
    return " ".join(block.text for block in result.content)  # type: ignore[union-attr]


def cli_json(db: Path, *args: str) -> Any:
    result = runner.invoke(app, ["--db", str(db), *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def seeded(mem: Memori, entity: str = "maya") -> None:
    """A user who said where they live and what they like, augmented into memories and
    graph edges by the rule extractor."""
    with mem.attribution(entity, "chat"):
        mem.add_messages([{"role": "user", "content": "I live in Lisbon. I love green tea."}])
    mem.augment()


# -- the catalogue -------------------------------------------------------------------------
def test_every_tool_is_listed_with_description_schemas_and_annotations(mem: Memori) -> None:
    tools = drive(build_server(mem, Scope("maya")), lambda c: c.list_tools()).tools
    assert {t.name for t in tools} == ALL_TOOLS
    hints = {name: h for name, _, h in MEMORI_TOOLS + REFERENCE_TOOLS}
    for tool in tools:
        assert len(tool.description or "") > 20, tool.name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.annotations == hints[tool.name]
        # One entity per server: no tool offers a choice it cannot make.
        assert "entity" not in tool.input_schema.get("properties", {}), tool.name
    by_name = {t.name: t for t in tools}
    assert by_name["recall"].annotations.read_only_hint
    assert by_name["forget_memory"].annotations.destructive_hint
    assert not by_name["remember"].annotations.read_only_hint
    assert by_name["delete_entities"].annotations.destructive_hint
    # The reference server's argument and result names, so a host can switch servers.
    schema = by_name["create_relations"].input_schema
    relation = schema["$defs"]["RelationIn"]["properties"]
    assert set(relation) == {"from", "to", "relationType"}
    assert set(by_name["read_graph"].output_schema["properties"]) == {"entities", "relations"}
    assert set(by_name["add_observations"].output_schema["properties"]) == {"results"}


def test_allow_entity_arg_offers_the_argument(mem: Memori) -> None:
    server = build_server(mem, Scope("maya", allow_entity_arg=True))
    tools = drive(server, lambda c: c.list_tools()).tools
    assert all("entity" in t.input_schema["properties"] for t in tools)


# -- memori's own tools --------------------------------------------------------------------
def test_memori_tools_return_what_the_cli_json_prints(db: Path, tmp_path: Path) -> None:
    # Without vectors, recall is deterministic: the tool and `memori recall --json` agree.
    mem = Memori(conn=db)
    seeded(mem)
    server = build_server(mem, Scope("maya"))

    async def body(c: Client) -> dict[str, Any]:
        lisbon = next(m for m in await call(c, "list_memories") if "Lisbon" in m["content"])
        return {
            "recall": await call(c, "recall", query="where do I live", limit=5),
            "list": await call(c, "list_memories", limit=50),
            "get": await call(c, "get_memory", id=lisbon["id"]),
            "history": await call(c, "memory_history", id=lisbon["id"]),
            "search": await call(c, "graph_search", text="lis"),
            "around": await call(c, "graph_neighbourhood", name="Lisbon", depth=2),
            "id": lisbon["id"],
        }

    got = drive(server, body)
    cli = cli_json(db, "recall", "where do I live", "--entity", "maya", "--limit", "5")
    assert [(h["id"], h["kind"], h["content"]) for h in got["recall"]] == [
        (h["id"], h["kind"], h["content"]) for h in cli
    ]
    assert set(got["recall"][0]) == set(cli[0])
    assert got["list"] == cli_json(db, "memories", "list", "--entity", "maya", "-n", "50")
    assert got["get"] == cli_json(db, "memories", "show", str(got["id"]), "--entity", "maya")
    assert got["history"] == cli_json(db, "memories", "history", str(got["id"]),
                                      "--entity", "maya")  # fmt: skip
    assert got["search"] == cli_json(db, "graph", "search", "lis", "--entity", "maya")
    assert got["around"] == cli_json(db, "graph", "show", "--node", "Lisbon", "--depth", "2",
                                     "--entity", "maya")  # fmt: skip
    assert got["get"]["source_ids"] == ["1"] and got["around"]["edges"]
    mem.close()


def test_remember_returns_at_once_and_augmentation_makes_the_memory(mem: Memori) -> None:
    server = build_server(mem, Scope("maya", process="desktop"))

    async def before(c: Client) -> tuple[Any, Any, Any]:
        stored = await call(c, "remember", text="I live in Porto.")
        return stored, await call(c, "recall", query="Porto"), await call(c, "list_memories")

    stored, hits, memories = drive(server, before)
    assert stored["status"] == "queued" and stored["memory_id"] is None
    assert [h["id"] for h in hits] == [stored["message_id"]] and hits[0]["kind"] == "message"
    assert memories == []  # the memory comes when augmentation runs
    message = mem.store.conn.execute(
        "SELECT source, process_id, entity_id FROM messages WHERE id = ?", (stored["message_id"],)
    ).fetchone()
    assert tuple(message) == ("mcp", "desktop", "maya")
    assert mem.job(stored["job_id"])["message_ids"] == [stored["message_id"]]

    mem.augment()
    memories = drive(server, lambda c: call(c, "list_memories"))
    assert [m["content"] for m in memories] == ["User lives in Porto"]
    got = drive(server, lambda c: call(c, "get_memory", id=memories[0]["id"]))
    assert got["sources"] == [stored["message_id"]]


def test_remember_with_kind_and_about_stores_the_memory_now(mem: Memori) -> None:
    server = build_server(mem, Scope("maya"))
    stored = drive(server, lambda c: call(
        c, "remember", text="Maya prefers dark mode", kind="preference", about="Maya"
    ))  # fmt: skip
    got = drive(server, lambda c: call(c, "get_memory", id=stored["memory_id"]))
    assert (got["kind"], got["about"], got["content"]) == ("preference", "Maya",
                                                           "Maya prefers dark mode")  # fmt: skip
    assert got["sources"] == [stored["message_id"]]
    name = mem.store.conn.execute(
        "SELECT name FROM messages WHERE id = ?", (stored["message_id"],)
    ).fetchone()[0]
    assert name == "Maya"  # who "I" is, for the extractor


def test_correct_forget_status_and_the_resource(mem: Memori) -> None:
    seeded(mem)
    server = build_server(mem, Scope("maya"))

    async def body(c: Client) -> dict[str, Any]:
        rows = await call(c, "list_memories")
        lisbon = next(m for m in rows if "Lisbon" in m["content"])
        tea = next(m for m in rows if "tea" in m["content"])
        fixed = await call(c, "correct_memory", id=lisbon["id"], text="User lives in Porto")
        out = {
            "fixed": fixed,
            "history": await call(c, "memory_history", id=fixed["id"]),
            "old": await call(c, "get_memory", id=lisbon["id"]),
            "again": await error(c, "correct_memory", id=lisbon["id"], text="no"),
            "forgot": await call(c, "forget_memory", id=tea["id"]),
            "gone": await error(c, "get_memory", id=tea["id"]),
            "status": await call(c, "status"),
            "resource": (await c.read_resource("memori://memories")).contents[0].text,
            "resources": (await c.list_resources()).resources,
        }
        return out

    got = drive(server, body)
    fixed, old = got["fixed"], got["old"]
    assert fixed["content"] == "User lives in Porto" and fixed["supersedes"] == old["id"]
    assert (fixed["kind"], fixed["slot"]) == ("fact", "lives_in")
    assert old["superseded_by"] == fixed["id"] and old["valid_to"] is not None
    assert [m["content"] for m in got["history"]] == ["User lives in Lisbon",
                                                      "User lives in Porto"]  # fmt: skip
    assert "no memory" in got["again"]  # only a current memory can be corrected
    assert got["forgot"] == {"forgotten": got["forgot"]["forgotten"], "entity": "maya"}
    assert "no memory" in got["gone"]
    status = got["status"]
    assert (status["entity"], status["messages"], status["memories"]) == ("maya", 1, 1)
    assert status["queue"] == {"pending": 0, "running": 0, "failed": 0}
    assert status["daemon"] == {"running": False} and status["models"]["embedding"] == "none"
    assert "User lives in Porto" in got["resource"] and "Lisbon" not in got["resource"]
    assert [str(r.uri) for r in got["resources"]] == ["memori://memories"]


def test_correct_memory_without_a_slot_keeps_the_chain(mem: Memori) -> None:
    memory_id = mem.add_memory("Maya's bike is red", about="Maya", entity_id="maya")
    server = build_server(mem, Scope("maya"))
    fixed = drive(server, lambda c: call(c, "correct_memory", id=memory_id,
                                         text="Maya's bike is blue"))  # fmt: skip
    again = drive(server, lambda c: call(c, "correct_memory", id=fixed["id"],
                                         text="Maya's bike is green"))  # fmt: skip
    same = drive(server, lambda c: call(c, "correct_memory", id=again["id"],
                                        text="maya's bike is GREEN."))  # fmt: skip
    assert (same["id"], same["supersedes"]) == (again["id"], None)
    history = mem.memory_history(memory_id, entity_id="maya")
    assert [m["content"] for m in history] == [
        "Maya's bike is red", "Maya's bike is blue", "Maya's bike is green"
    ]  # fmt: skip
    assert [m["valid_to"] is None for m in history] == [False, False, True]
    assert mem.memory_history(again["id"], entity_id="maya") == history


# -- the reference memory server's nine tools ----------------------------------------------
def test_reference_tools_round_trip(mem: Memori) -> None:
    server = build_server(mem, Scope("maya"))

    async def body(c: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["created"] = await call(c, "create_entities", entities=[
            {"name": "Maya", "entityType": "person", "observations": ["Speaks Portuguese"]},
            {"name": "Tidepool Labs", "entityType": "organization", "observations": []},
        ])  # fmt: skip
        out["again"] = await call(c, "create_entities", entities=[
            {"name": "maya", "entityType": "person", "observations": []}
        ])  # fmt: skip
        out["relations"] = await call(c, "create_relations", relations=[
            {"from": "Maya", "to": "Tidepool Labs", "relationType": "works_at"},
            {"from": "Maya", "to": "Tidepool Labs", "relationType": "works_at"},
        ])  # fmt: skip
        out["missing_end"] = await error(c, "create_relations", relations=[
            {"from": "Maya", "to": "Nowhere", "relationType": "likes"}
        ])  # fmt: skip
        out["observed"] = await call(c, "add_observations", observations=[
            {"entityName": "Maya", "contents": ["Speaks Portuguese", "Runs marathons"]}
        ])  # fmt: skip
        out["graph"] = await call(c, "read_graph")
        out["search"] = await call(c, "search_nodes", query="marathon")
        out["open"] = await call(c, "open_nodes", names=["Tidepool Labs", "Nobody"])
        out["del_obs"] = await call(c, "delete_observations", deletions=[
            {"entityName": "Maya", "observations": ["Runs marathons"]}
        ])  # fmt: skip
        out["del_rel"] = await call(c, "delete_relations", relations=[
            {"from": "Maya", "to": "Tidepool Labs", "relationType": "works_at"}
        ])  # fmt: skip
        out["del_ent"] = await call(c, "delete_entities", entityNames=["Tidepool Labs", "Nobody"])
        out["after"] = await call(c, "read_graph")
        return out

    got = drive(server, body)
    assert got["created"] == {"entities": [
        {"name": "Maya", "entityType": "person", "observations": ["Speaks Portuguese"]},
        {"name": "Tidepool Labs", "entityType": "organization", "observations": []},
    ]}  # fmt: skip
    assert got["again"] == {"entities": []}  # an existing name is ignored, as the reference
    assert got["relations"] == {"relations": [
        {"from": "Maya", "to": "Tidepool Labs", "relationType": "works_at"}
    ]}  # fmt: skip
    assert "Entity with name Nowhere not found" in got["missing_end"]
    assert got["observed"] == {"results": [
        {"entityName": "Maya", "addedObservations": ["Runs marathons"]}
    ]}  # fmt: skip
    maya = {"name": "Maya", "entityType": "person",
            "observations": ["Runs marathons", "Speaks Portuguese"]}  # fmt: skip
    relation = {"from": "Maya", "to": "Tidepool Labs", "relationType": "works_at"}
    assert got["graph"]["entities"][0] == maya and got["graph"]["relations"] == [relation]
    assert got["search"] == {"entities": [maya], "relations": [relation]}
    assert [e["name"] for e in got["open"]["entities"]] == ["Tidepool Labs"]
    assert got["open"]["relations"] == [relation]
    assert got["del_obs"] == {"success": True, "message": "Observations deleted successfully"}
    assert got["del_rel"] == {"success": True, "message": "Relations deleted successfully"}
    assert got["del_ent"]["message"] == "Deleted 1 of 2 entities. Not found: Nobody"
    assert got["after"] == {"entities": [{"name": "Maya", "entityType": "person",
                                          "observations": ["Speaks Portuguese"]}],
                            "relations": []}  # fmt: skip
    # Observations are memories about the node, as `memori graph import` makes them.
    assert [(m["kind"], m["about"]) for m in mem.memories("maya")] == [("fact", "Maya")]


def test_reference_tools_take_common_argument_spellings(mem: Memori) -> None:
    server = build_server(mem, Scope("maya"))

    async def body(c: Client) -> dict[str, Any]:
        await call(c, "create_entities", entities=[
            {"name": "Ana", "entity_type": "person", "contents": ["Plays cello"]},
            {"name": "Porto", "type": "place"},
        ])  # fmt: skip
        # A host that sends the array as a JSON string (Claude Desktop does) is understood too.
        await call(c, "create_relations", relations=json.dumps(
            [{"source": "Ana", "target": "Porto", "relation_type": "lives_in"}]
        ))  # fmt: skip
        await call(c, "add_observations", observations=[
            {"entity_name": "Ana", "observations": ["Has a cat"]}
        ])  # fmt: skip
        opened = await call(c, "open_nodes", entityNames=["ana"])
        deleted = await call(c, "delete_entities", entity_names=["Porto"])
        return {"opened": opened, "deleted": deleted}

    got = drive(server, body)
    assert got["opened"]["entities"] == [
        {"name": "Ana", "entityType": "person", "observations": ["Has a cat", "Plays cello"]}
    ]
    assert got["opened"]["relations"] == [{"from": "Ana", "to": "Porto",
                                           "relationType": "lives_in"}]  # fmt: skip
    assert got["deleted"]["message"] == "Entities deleted successfully"


# -- isolation and hostile arguments -------------------------------------------------------
def test_another_entitys_data_looks_exactly_like_missing(mem: Memori) -> None:
    seeded(mem, "ana")
    ana = {m["content"]: m["id"] for m in mem.memories("ana")}
    ana_id = ana["User lives in Lisbon"]
    unused = 10**6
    server = build_server(mem, Scope("maya"))

    async def body(c: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tool, extra in (("get_memory", {}), ("memory_history", {}),
                            ("forget_memory", {}), ("correct_memory", {"text": "x"})):  # fmt: skip
            out[tool] = (await error(c, tool, id=ana_id, **extra),
                         await error(c, tool, id=unused, **extra))  # fmt: skip
        out["recall"] = await call(c, "recall", query="Lisbon green tea")
        out["list"] = await call(c, "list_memories")
        out["graph"] = await call(c, "read_graph")
        out["open"] = await call(c, "open_nodes", names=["Lisbon", "User", "#1"])
        out["search"] = await call(c, "graph_search", text="Lisbon")
        out["around"] = await error(c, "graph_neighbourhood", name="Lisbon")
        out["delete"] = await call(c, "delete_entities", entityNames=["Lisbon", "#2"])
        out["obs"] = await error(c, "add_observations", observations=[
            {"entityName": "User", "contents": ["planted"]}
        ])  # fmt: skip
        # A hand-made call naming the other entity is refused or ignored, never served.
        out["named"] = await c.call_tool("list_memories", {"entity": "ana"})
        out["status"] = await call(c, "status")
        return out

    got = drive(server, body)
    for tool in ("get_memory", "memory_history", "forget_memory", "correct_memory"):
        theirs, missing = got[tool]
        assert theirs == missing.replace(str(unused), str(ana_id)), tool
    assert got["recall"] == [] and got["list"] == [] and got["search"] == []
    assert got["graph"] == {"entities": [], "relations": []}
    assert got["open"] == {"entities": [], "relations": []}
    assert "no node 'Lisbon' in the graph of entity 'maya'" in got["around"]
    assert got["delete"]["message"].startswith("Deleted 0 of 2 entities")
    assert "Entity with name User not found" in got["obs"]
    named = got["named"]
    assert named.is_error or named.structured_content == {"result": []}
    assert (got["status"]["messages"], got["status"]["memories"]) == (0, 0)
    # Ana's memory and graph are untouched by all of it.
    assert {m["content"]: m["id"] for m in mem.memories("ana")} == ana
    assert len(mem.graph.nodes(entity_id="ana")) == 3
    assert mem.memories("ana", kind="fact")[0]["content"] == "User lives in Lisbon"


def test_allow_entity_arg_reaches_the_named_entity(mem: Memori) -> None:
    seeded(mem, "ana")
    server = build_server(mem, Scope("maya", allow_entity_arg=True))

    async def body(c: Client) -> tuple[Any, Any, str]:
        return (await call(c, "list_memories", entity="ana"), await call(c, "list_memories"),
                await error(c, "list_memories", entity="bad\x00id"))  # fmt: skip

    theirs, mine, bad = drive(server, body)
    assert len(theirs) == 2 and mine == []
    assert "control characters" in bad or "entity" in bad


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("remember", {"text": "x" * 20_001}),
        ("remember", {"text": "   "}),
        ("remember", {"text": "ok", "kind": "opinion"}),
        ("remember", {}),
        ("recall", {"query": "q" * 4001}),
        ("recall", {"query": "tea", "limit": 0}),
        ("recall", {"query": "tea", "as_of": "last tuesday-ish"}),
        ("recall", {"query": "tea", "kinds": ["gossip"]}),
        ("get_memory", {"id": -1}),
        ("get_memory", {"id": 0}),
        ("get_memory", {"id": 2**70}),
        ("get_memory", {"id": "abc"}),
        ("get_memory", {"id": 1.5}),
        ("memory_history", {"id": None}),
        ("correct_memory", {"id": 1, "text": "y" * 10_001}),
        ("graph_neighbourhood", {"name": "", "depth": 1}),
        ("graph_neighbourhood", {"name": "x", "depth": 99}),
        ("create_entities", {"entities": [{"name": "n" * 201}]}),
        ("create_entities", {"entities": "not json"}),
        ("create_entities", {"entities": [{"name": "A", "observations": ["o" * 10_001]}]}),
        ("open_nodes", {"names": ["x"] * 1001}),
        ("search_nodes", {"query": "s" * 2049}),
        ("no_such_tool", {}),
    ],
)
def test_hostile_arguments_are_tool_errors(
    mem: Memori, tool: str, arguments: dict[str, Any]
) -> None:
    seeded(mem)
    server = build_server(mem, Scope("maya"))
    before = mem.store.conn.execute("SELECT count(*) FROM messages").fetchone()[0]

    async def body(c: Client) -> tuple[Any, Any]:
        result = await c.call_tool(tool, arguments)
        return result, await call(c, "status")  # the server is still fine

    result, status = drive(server, body)
    assert result.is_error
    text = " ".join(block.text for block in result.content)
    assert "Traceback" not in text and len(text) < 5000  # an answer, not an echo or a dump
    assert status["messages"] == before


def test_graph_names_are_never_read_as_commands(mem: Memori) -> None:
    seeded(mem)
    edges = len(mem.graph.edges(entity_id="maya"))
    server = build_server(mem, Scope("maya"))
    result = drive(server, lambda c: call(c, "delete_entities", entityNames=["edge:1", "edge:2"]))
    assert result["message"].startswith("Deleted 0 of 2")
    assert len(mem.graph.edges(entity_id="maya")) == edges


# -- concurrency ---------------------------------------------------------------------------
def test_two_clients_on_one_store_lose_nothing(db: Path) -> None:
    first, second = Memori(conn=db, embedder=HashingEmbedder()), Memori(conn=db)
    servers = [build_server(m, Scope("maya")) for m in (first, second)]
    count = 12

    async def client(server: Any, tag: str, ids: list[int]) -> None:
        async with Client(server) as c, anyio.create_task_group() as group:
            for i in range(count):

                async def one(i: int = i) -> None:
                    stored = await call(c, "remember", text=f"note {tag} {i}")
                    ids.append(stored["message_id"])
                    await call(c, "create_entities", entities=[
                        {"name": f"Thing {tag} {i}", "observations": [f"seen {tag} {i}"]}
                    ])  # fmt: skip

                group.start_soon(one)

    async def main() -> list[list[int]]:
        ids: list[list[int]] = [[], []]
        async with anyio.create_task_group() as group:
            for n, (server, tag) in enumerate(zip(servers, "ab", strict=True)):
                group.start_soon(client, server, tag, ids[n])
        return ids

    ids = anyio.run(main)
    every = ids[0] + ids[1]
    assert len(every) == len(set(every)) == 2 * count
    rows = first.store.conn.execute("SELECT content FROM messages WHERE entity_id = 'maya'")
    assert sorted(r[0] for r in rows) == sorted(
        f"note {t} {i}" for t in "ab" for i in range(count)
    )  # fmt: skip
    assert len(first.graph.nodes(entity_id="maya")) == 2 * count
    assert len(first.memories("maya", limit=1000)) == 2 * count
    for m in (first, second):
        m.close()


# -- real transports -----------------------------------------------------------------------
def _env(tmp_path: Path) -> dict[str, str]:
    return {"MEMORI_HOME": str(tmp_path / "home"), "MEMORI_EMBEDDING_MODEL": "none",
            "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}  # fmt: skip


@pytest.mark.slow
def test_stdio_subprocess_stores_and_recalls(tmp_path: Path, db: Path) -> None:
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memori_cli", "--db", str(db), "mcp", "--entity", "maya"],
        env=_env(tmp_path),
    )

    async def main() -> tuple[Any, Any, Any]:
        async with Client(stdio_client(params, errlog=log)) as c:
            stored = await call(c, "remember", text="I keep bees on the roof.")
            hits = await call(c, "recall", query="bees")
            return stored, hits, await call(c, "status")

    with open(tmp_path / "stderr.txt", "w+") as log:
        stored, hits, status = anyio.run(main)
        log.seek(0)
        talk = log.read()
    assert hits[0]["id"] == stored["message_id"] and "bees" in hits[0]["content"]
    assert status["store"] == str(db) and status["entity"] == "maya"
    assert "serving entity 'maya'" in talk
    check = Memori(conn=db)
    assert [(s["process"], s["messages"]) for s in check.sessions("maya")] == [("mcp", 1)]
    check.close()


@pytest.mark.slow
def test_stdio_stdout_carries_only_protocol(tmp_path: Path) -> None:
    # A fresh store: memori says "Created a new memori store" — on stderr, never stdout.
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "get_memory", "arguments": {"id": 5}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "remember", "arguments": {"text": "I like figs."}}},
    ]  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "memori_cli", "--db", str(tmp_path / "new.db"), "mcp"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **_env(tmp_path)},
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
    server.stdin.flush()
    lines: list[str] = []
    # Four replies (the notification gets none), read as they come, then hang up.
    reader = threading.Thread(target=lambda: lines.extend(
        server.stdout.readline() for _ in range(4)  # type: ignore[union-attr]
    ))  # fmt: skip
    reader.start()
    reader.join(60)
    rest, stderr = server.communicate(timeout=60)  # closes stdin: the host hangs up
    lines += rest.splitlines()
    replies = [json.loads(line) for line in lines]  # every line is JSON-RPC
    assert all(r.get("jsonrpc") == "2.0" for r in replies)
    by_id = {r["id"]: r for r in replies if "id" in r}
    assert set(by_id) == {1, 2, 3, 4}
    assert by_id[3]["result"]["isError"] is True
    assert by_id[4]["result"]["structuredContent"]["status"] == "queued"
    assert "Created a new memori store" in stderr and server.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(mem: Memori) -> Iterator[str]:
    import uvicorn

    token = "a-long-enough-test-token"
    port = _free_port()
    app = http_app(build_server(mem, Scope("maya")), host="127.0.0.1", token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)


def test_http_requires_the_bearer_token(http_server: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                    {"Authorization": "a-long-enough-test-token"}):  # fmt: skip
        answer = httpx2.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                             headers=headers)  # fmt: skip
        assert answer.status_code == 401, headers

    from mcp.client.streamable_http import streamable_http_client

    async def main() -> Any:
        auth = {"Authorization": "Bearer a-long-enough-test-token"}
        async with httpx2.AsyncClient(headers=auth, timeout=30) as http, Client(
            streamable_http_client(http_server, http_client=http)
        ) as c:  # fmt: skip
            stored = await call(c, "remember", text="I collect stamps.")
            return stored, await call(c, "recall", query="stamps")

    stored, hits = anyio.run(main)
    assert hits[0]["id"] == stored["message_id"]


def test_http_refuses_a_public_address_without_a_token(mem: Memori, db: Path) -> None:
    with pytest.raises(ValueError, match="without a token"):
        http_app(build_server(mem, Scope("maya")), host="0.0.0.0", token=None)
    result = runner.invoke(app, ["--db", str(db), "mcp", "--http", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "not a loopback address" in result.stderr


def test_the_token_comes_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    monkeypatch.setenv("MEMORI_MCP_TOKEN", "short")
    result = runner.invoke(app, ["--db", str(db), "mcp", "--http", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "at least 16 characters" in result.stderr
    bad = runner.invoke(app, ["--db", str(db), "mcp", "--entity", "x" * 201])
    assert bad.exit_code == 2 and "at most 200" in bad.stderr


def test_http_options_without_http_are_an_error_not_ignored(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    result = runner.invoke(app, ["--db", str(db), "mcp", "--token", "t" * 20, "--port", "9000"])
    assert result.exit_code == 2
    assert "--token and --port only apply with --http" in " ".join(result.stderr.split())
    # A token in the environment (set for HTTP servers) does not stop a stdio server.
    monkeypatch.setenv("MEMORI_MCP_TOKEN", "t" * 20)
    monkeypatch.setattr("memori_cli.mcp.server.run_stdio", lambda server: None)
    assert runner.invoke(app, ["--db", str(db), "mcp"]).exit_code == 0


def test_without_the_sdk_memori_mcp_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    for name in list(sys.modules):
        sdk_side = ("mcp.", "memori_cli.mcp.server", "memori_cli.mcp.tools", "memori_cli.mcp.ref")
        if name == "mcp" or name.startswith(sdk_side):
            monkeypatch.delitem(sys.modules, name)
    import memori_cli.mcp

    monkeypatch.delattr(memori_cli.mcp, "server", raising=False)
    monkeypatch.setitem(sys.modules, "mcp", None)  # type: ignore[arg-type]
    result = runner.invoke(app, ["--db", str(db), "mcp"])
    assert result.exit_code == 1
    assert "pip install 'memori-cli[mcp]'" in result.stderr


def test_naming_another_entity_without_allow_entity_arg_is_refused_not_served(
    mem: Memori,
) -> None:
    # The tools offer no `entity` argument here; a call that sends one anyway must not be
    # answered (or stored) for the served entity as though it were the one named.
    seeded(mem)
    server = build_server(mem, Scope("maya"))
    before = mem.store.conn.execute("SELECT count(*) FROM messages").fetchone()[0]

    async def body(c: Client) -> tuple[str, str, str, Any]:
        return (
            await error(c, "list_memories", entity="ana"),
            await error(c, "remember", text="I am Ana and I like rooibos", entity="ana"),
            await error(c, "read_graph", entity=5),
            await call(c, "list_memories", entity="maya"),  # its own name: fine
        )

    listed, remembered, graph, own = drive(server, body)
    for text in (listed, remembered, graph):
        assert "serves entity 'maya' only" in text
    assert own == mem.memories("maya", limit=50)
    assert mem.store.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == before


def test_at_a_terminal_memori_mcp_says_what_it_is_and_how_to_stop_it(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    # Ctrl-C alone does not stop the stdio server (the SDK's reader waits on stdin).
    import memori_cli.cli.mcp as cli_mcp
    import memori_cli.mcp.server as serving

    monkeypatch.setattr(serving, "run_stdio", lambda server: None)
    for tty, said in ((True, True), (False, False)):
        monkeypatch.setattr(cli_mcp, "_at_a_terminal", lambda tty=tty: tty)
        result = runner.invoke(app, ["--db", str(db), "mcp"])
        assert result.exit_code == 0, result.stderr
        assert ("Ctrl-D stops it" in result.stderr) == said
        assert result.stdout == ""
