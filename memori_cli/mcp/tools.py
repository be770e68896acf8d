"""memori's own MCP tools: recall, remember, the memories, the graph, status.

Each tool is one library call returning what the matching ``--json`` command prints
(``memori recall``, ``memori memories list|show|history``, ``memori graph search|show``), so
a script and a model see one shape. Failures the model can act on (an unknown id, a bad
date) are :class:`ToolError` results it reads; nothing here prints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from .. import paths, recall
from ..errors import MemoriError
from ..memori import Memori
from ..parts import KINDS
from ..store import jobs
from ..store import messages as store_messages
from ..store.connect import DatabaseError
from ..store.core import MAX_ROWID
from .scope import Scope, ScopeError

F = TypeVar("F", bound=Callable[..., Any])

#: The most characters ``remember`` stores in one call: a statement to keep, not a file.
MAX_REMEMBER_CHARS = 20_000
#: The most hits or rows one call returns.
MAX_LIMIT = 500

MemoryId = Annotated[
    int,
    Field(ge=1, le=MAX_ROWID, description="A memory's id, as recall and list_memories give it."),
]
Kind = Literal["fact", "preference", "skill", "attribute", "event"]
HitKind = Literal["message", "fact", "preference", "skill", "attribute", "event"]
Entity = Annotated[
    str | None,
    Field(description="Whose memory (default: the server's entity).", max_length=200),
]
AsOf = Annotated[
    str | None,
    Field(description="Recall what was true then: an ISO-8601 date or time.", max_length=64),
]

#: What the library raises on purpose for a bad argument or state: shown to the model.
EXPECTED: tuple[type[Exception], ...] = (
    MemoriError, ScopeError, ValueError, LookupError, *DatabaseError,
)  # fmt: skip

assert set(KINDS) == set(Kind.__args__)  # type: ignore[attr-defined]


def reported(func: F) -> F:
    """Turn the library's expected errors into a tool error the model reads."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ToolError:
            raise
        except EXPECTED as exc:
            raise ToolError(str(exc) or type(exc).__name__) from None

    return wrapper  # type: ignore[return-value]


class MemoryTools:
    """The tools over one Memori, each working on the scope's entity."""

    def __init__(self, mem: Memori, scope: Scope):
        self.mem = mem
        self.scope = scope

    def _missing(self, memory_id: int, entity: str) -> ToolError:
        # The same words whether the id is unused or another entity's: nothing leaks.
        return ToolError(f"no memory {memory_id} of entity {entity}")

    @reported
    def recall(
        self,
        query: Annotated[
            str,
            Field(
                description="What to look for, in plain words (a question or keywords).",
                max_length=recall.MAX_QUERY_CHARS,
            ),
        ],
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Most hits.")] = 10,
        as_of: AsOf = None,
        kinds: Annotated[
            list[HitKind] | None,
            Field(description="Only hits of these kinds ('message' is what was said)."),
        ] = None,
        entity: Entity = None,
    ) -> list[dict[str, Any]]:
        """Search long-term memory about the user: what they said in past conversations and
        the facts, preferences, skills, attributes and events learned from it. Best match
        first; each hit has its text, kind, score, when it was said and its sources (message
        ids). Call this before answering anything that depends on who the user is or what
        they told you before."""
        who = self.scope.entity_for(entity)
        wanted = set(kinds) if kinds else None
        memories = wanted is None or bool(wanted - {"message"})
        # A kind filter keeps fewer hits: ask for more, then keep `limit` of the wanted kinds.
        fetch = limit if wanted is None else min(MAX_LIMIT * 4, limit * 5)
        # The library checks as_of: a bad one is an InvalidQueryError, reported below.
        hits = self.mem.recall(query, fetch, entity_id=who, as_of=as_of, memories=memories)
        rows = [hit.to_dict() for hit in hits if wanted is None or hit.kind in wanted]
        return rows[:limit]

    @reported
    def remember(
        self,
        text: Annotated[
            str,
            Field(
                description="What to remember, as the user would say it ('I moved to Lisbon in "
                "May'), one statement per call.",
                max_length=MAX_REMEMBER_CHARS,
            ),
        ],
        kind: Annotated[
            Kind | None,
            Field(description="Store it at once as a memory of this kind, besides the message."),
        ] = None,
        about: Annotated[
            str | None,
            Field(
                description="Who says it, i.e. who 'I' is in the text (default: the user).",
                max_length=200,
            ),
        ] = None,
        entity: Entity = None,
    ) -> dict[str, Any]:
        """Save something to the user's long-term memory: stored as a message (source
        'mcp') and queued for augmentation, which extracts typed memories and graph edges
        from it in the background (the memori daemon, or `memori augment`). Returns at once
        with the message id; recall finds the message right away and the extracted memories
        once augmentation ran. With `kind`, the text is also stored as a memory of that kind
        now."""
        who = self.scope.entity_for(entity)
        message: dict[str, Any] = {"role": "user", "content": text}
        if about is not None and about.strip():
            message["name"] = about
        with self.mem.attribution(who, self.scope.process):
            self.mem.set_session(self.scope.session)
            added = self.mem.add_messages([message], source="mcp")
        if not added.job_ids:
            raise ToolError("nothing to remember: the text is empty")
        job = self.mem.job(added.job_ids[0]) or {}
        message_id = int(job["message_ids"][0])
        memory_id = None
        if kind is not None:
            memory_id = self.mem.add_memory(
                text, kind=kind, about=message.get("name") or "User", source_ids=[message_id],
                entity_id=who, extractor="mcp",
            )  # fmt: skip
        return {
            "message_id": message_id,
            "job_id": added.job_ids[0],
            "memory_id": memory_id,
            "entity": who,
            "session": self.scope.session,
            "status": "queued",
        }

    @reported
    def list_memories(
        self,
        kind: Annotated[Kind | None, Field(description="Only memories of this kind.")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Most rows.")] = 50,
        entity: Entity = None,
    ) -> list[dict[str, Any]]:
        """List the user's current memories (extracted or stated), newest first, with id,
        kind, content, who it is about and since when it holds."""
        found = self.mem.memories(self.scope.entity_for(entity), kind=kind, limit=limit)
        return [memory.to_dict() for memory in found]

    @reported
    def get_memory(self, id: MemoryId, entity: Entity = None) -> dict[str, Any]:
        """One memory in full: its fields, validity, and the messages it came from."""
        who = self.scope.entity_for(entity)
        found = self.mem.memory(id, entity_id=who)
        if found is None:
            raise self._missing(id, who)
        return found.to_dict()

    @reported
    def memory_history(self, id: MemoryId, entity: Entity = None) -> list[dict[str, Any]]:
        """What a memory's slot held over time, oldest first ('lives in Paris', then 'lives in
        Berlin'), corrections included."""
        who = self.scope.entity_for(entity)
        rows = self.mem.memory_history(id, entity_id=who)
        if not rows:
            raise self._missing(id, who)
        return [memory.to_dict() for memory in rows]

    @reported
    def forget_memory(self, id: MemoryId, entity: Entity = None) -> dict[str, Any]:
        """Delete one memory for good (search index and vectors too, with graph edges made
        only from it). Only when the user asks to forget something; to fix a wrong memory use
        correct_memory, which keeps its history."""
        who = self.scope.entity_for(entity)
        if not self.mem.forget_memory(id, entity_id=who):
            raise self._missing(id, who)
        return {"forgotten": id, "entity": who}

    @reported
    def correct_memory(
        self,
        id: MemoryId,
        text: Annotated[
            str, Field(description="The corrected statement, in full.", max_length=10_000)
        ],
        entity: Entity = None,
    ) -> dict[str, Any]:
        """Correct a current memory: the new text supersedes it (the old one stays in
        memory_history, marked as no longer valid). Returns the new memory."""
        who = self.scope.entity_for(entity)
        corrected = self.mem.correct_memory(id, text, entity_id=who)
        if corrected is None:
            raise self._missing(id, who)
        # The same words again change nothing: the memory supersedes nothing then.
        return {**corrected.to_dict(), "supersedes": None if corrected.id == id else id}

    @reported
    def graph_search(
        self,
        text: Annotated[
            str, Field(description="Text a node's name or alias contains.", max_length=200)
        ],
        entity: Entity = None,
    ) -> list[dict[str, Any]]:
        """Find people, places, organisations and things in the user's knowledge graph by
        name or alias; each node with its type, aliases and number of edges."""
        found = self.mem.graph.search(text, entity_id=self.scope.entity_for(entity))
        return [node.to_dict() for node in found]

    @reported
    def graph_neighbourhood(
        self,
        name: Annotated[
            str, Field(description="A node's name, alias or #ID.", min_length=1, max_length=200)
        ],
        depth: Annotated[int, Field(ge=1, le=5, description="Hops from the node.")] = 1,
        entity: Entity = None,
    ) -> dict[str, Any]:
        """A node of the knowledge graph and the edges within `depth` hops of it ('Maya
        lives_in Lisbon', 'Maya works_at Tidepool'), each edge with its source messages."""
        centre, edges = self.mem.graph.neighbourhood(
            name, depth=depth, entity_id=self.scope.entity_for(entity)
        )
        return {"nodes": [centre.to_dict()], "edges": [edge.to_dict() for edge in edges]}

    @reported
    def status(self, entity: Entity = None) -> dict[str, Any]:
        """Memory's state for this user: counts of messages, memories, sessions and graph
        nodes, augmentation jobs waiting or failed, whether the daemon runs, the models."""
        who = self.scope.entity_for(entity)
        mem = self.mem
        counts: Mapping[str, Any] = next(
            iter(store_messages.list_entities(mem.store, entity_id=who)), {}
        )
        graph = mem.graph.stats(entity_id=who)
        queue = jobs.depth(mem.store, entity_id=who)
        target = mem.store.url or mem.store.path  # its daemon's pidfile is keyed by it
        return {
            "entity": who,
            "process": self.scope.process,
            "session": self.scope.session,
            "store": mem.store.describe(),
            "messages": counts.get("messages", 0),
            "memories": counts.get("memories", 0),
            "sessions": counts.get("sessions", 0),
            "graph": {"nodes": graph["nodes"], "edges": graph["edges"]},
            "queue": {s: queue[s] for s in ("pending", "running", "failed")},
            "daemon": {"running": paths.daemon_running(target) if target is not None else None},
            "models": {
                "embedding": mem.config.embedding_model,
                "chat": mem.config.chat_model,
                "extractors": mem.config.extractors,
            },
        }

    def memories_text(self) -> str:
        """The entity's current memories as plain text (the resource hosts read)."""
        rows = self.mem.memories(self.scope.entity, limit=1000)
        if not rows:
            return f"No memories of {self.scope.entity} yet.\n"
        lines = [f"Memories of {self.scope.entity} (newest first):"]
        lines += [
            f"- [{r['kind']}] {r['content']} (about {r['about']}, since "
            f"{r['valid_from'][:10]}, #{r['id']})"
            for r in rows
        ]
        return "\n".join(lines) + "\n"
