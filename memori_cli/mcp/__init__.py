"""``memori mcp``: the store as an MCP server, for Claude Desktop, Claude Code, Cursor, VS Code.

A thin layer over the library, as the CLI is: every tool calls one :class:`~memori_cli.Memori`
method (recall, memories, the graph) and returns what the CLI's ``--json`` prints. One
server serves one entity (:class:`Scope`); its tools never reach another entity's data,
whatever their arguments say, unless it was started with ``allow_entity_arg``.

:mod:`.server` (``build_server``, ``run_stdio``, ``run_http``) needs the ``mcp`` extra
(``pip install 'memori-cli[mcp]'``); :mod:`.scope` and :mod:`.install` do not.
"""

from __future__ import annotations

from .scope import Scope

__all__ = ["Scope"]
