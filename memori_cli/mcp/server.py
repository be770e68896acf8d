"""Build the MCP server over one Memori and run it on stdio or streamable HTTP.

stdio carries nothing but protocol on stdout: the SDK points file descriptor 1 at stderr
while it serves, and memori itself only ever talks on stderr. HTTP binds 127.0.0.1; any
other address needs a bearer token, which every request must then carry.
"""

from __future__ import annotations

import functools
import hmac
import inspect
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from .. import __version__
from ..memori import Memori
from ..net import is_loopback
from .reference import ARGUMENT_ALIASES, ReferenceTools
from .scope import Scope, ScopeError
from .tools import MemoryTools

INSTRUCTIONS = """memori is the user's long-term memory, kept on their own machine.
Call `recall` before answering anything that depends on who the user is or what they said
before; call `remember` when they tell you something worth keeping (one statement per call).
Fix a wrong memory with `correct_memory` (it keeps history); `forget_memory` only when asked.
The knowledge-graph tools (create_entities, read_graph, ...) work as the reference MCP
memory server's do."""

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                       open_world_hint=False)  # fmt: skip
ADD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                      open_world_hint=False)  # fmt: skip
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                         open_world_hint=False)  # fmt: skip

#: (tool name, title, annotations), in the order hosts list them.
MEMORI_TOOLS = [
    ("recall", "Recall memories", READ),
    ("remember", "Remember", ADD),
    ("list_memories", "List memories", READ),
    ("get_memory", "Get a memory", READ),
    ("memory_history", "Memory history", READ),
    ("forget_memory", "Forget a memory", DELETE),
    ("correct_memory", "Correct a memory", ADD),
    ("graph_search", "Search the knowledge graph", READ),
    ("graph_neighbourhood", "A node's neighbourhood", READ),
    ("status", "Memory status", READ),
]
REFERENCE_TOOLS = [
    ("create_entities", "Create Entities", ADD),
    ("create_relations", "Create Relations", ADD),
    ("add_observations", "Add Observations", ADD),
    ("delete_entities", "Delete Entities", DELETE),
    ("delete_observations", "Delete Observations", DELETE),
    ("delete_relations", "Delete Relations", DELETE),
    ("read_graph", "Read Graph", READ),
    ("search_nodes", "Search Nodes", READ),
    ("open_nodes", "Open Nodes", READ),
]
MEMORIES_URI = "memori://memories"


class MemoriMCPServer(MCPServer[Any]):
    """An MCPServer that takes the argument spellings models commonly send, and refuses a
    call naming another entity than its scope's."""

    #: Whose memory the tools serve (set by :func:`build_server`).
    scope: Scope | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> Any:
        """Rename known aliases of top-level arguments, then call the tool."""
        if "entity" in arguments and self.scope is not None and not self.scope.allow_entity_arg:
            # The tools offer no `entity` here, so the SDK would drop it and answer for the
            # served entity: a call meant for "ana" would read or write maya's memory as if
            # it were ana's. Naming the served entity itself is harmless.
            arguments = dict(arguments)
            try:
                self.scope.entity_for(arguments.pop("entity"))
            except ScopeError as exc:
                raise ToolError(str(exc)) from None
        aliases = ARGUMENT_ALIASES.get(name, {})
        renamed = {}
        for key, value in arguments.items():
            target = aliases.get(key, key)
            # An alias gives way to the real name if the call sends both.
            renamed[key if target in arguments and target != key else target] = value
        arguments = renamed
        return await super().call_tool(name, arguments, context)


def _without_entity(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` offered without its ``entity`` argument (a server scoped to one entity:
    the model is not shown a choice it cannot make)."""
    signature = inspect.signature(method, eval_str=True)

    @functools.wraps(method)
    def tool(**kwargs: Any) -> Any:
        return method(**kwargs)

    tool.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "entity"]
    )
    return tool


def build_server(mem: Memori, scope: Scope) -> MemoriMCPServer:
    """The MCP server over ``mem`` for ``scope``: memori's tools, the reference memory
    server's nine, and the entity's memories as a text resource."""
    server = MemoriMCPServer(
        "memori",
        title="memori",
        description="Long-term memory on your own machine.",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
    )
    server.scope = scope
    tools, reference = MemoryTools(mem, scope), ReferenceTools(mem, scope)
    for owner, table in ((tools, MEMORI_TOOLS), (reference, REFERENCE_TOOLS)):
        for name, title, hints in table:
            method = getattr(owner, name)
            fn = method if scope.allow_entity_arg else _without_entity(method)
            server.add_tool(fn, name=name, title=title,
                            description=inspect.cleandoc(method.__doc__ or ""),
                            annotations=hints)  # fmt: skip

    @server.resource(
        MEMORIES_URI,
        name="memories",
        title=f"Memories of {scope.entity}",
        description="The user's current memories, newest first, as text.",
        mime_type="text/plain",
    )
    def memories() -> str:
        return tools.memories_text()

    return server


def run_stdio(server: MCPServer[Any]) -> None:
    """Serve on stdin/stdout until the host closes stdin."""
    server.run("stdio")


class BearerToken:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="memori"'),
                ]})  # fmt: skip
                await send({"type": "http.response.body",
                            "body": b'{"error": "missing or wrong bearer token"}'})  # fmt: skip
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer[Any], *, host: str, token: str | None) -> ASGIApp:
    """The streamable-HTTP ASGI app (endpoint ``/mcp``), behind the token if one is set."""
    if token is None and not is_loopback(host):
        raise ValueError(f"refusing to serve on {host} without a token")
    app: ASGIApp = server.streamable_http_app(host=host)
    return BearerToken(app, token) if token else app


def run_http(server: MCPServer[Any], *, host: str, port: int, token: str | None) -> None:
    """Serve streamable HTTP on ``host:port`` until interrupted."""
    import uvicorn

    app = http_app(server, host=host, token=token)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
