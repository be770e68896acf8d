"""The nine tools of the reference MCP memory server (``@modelcontextprotocol/server-memory``),
with its argument and result shapes, over memori's knowledge graph.

A host switches from that server by changing one line of its config: entities are graph
nodes, relations are edges, and observations are memories (of kind fact) about the node, as
``memori graph import`` reads that server's JSONL. ``read_graph`` is ``memori graph export
--format mcp`` parsed, so the two never disagree. Names resolve as the graph resolves them
(case, spacing and a plural fold: "Lisbon" is "lisbon"), where the reference compares exactly.
"""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from ..graph import MCP_EXTRACTOR, GraphError
from ..memori import Memori
from ..parts import normalise
from .scope import Scope
from .tools import Entity, reported

#: Bounds that keep one call's work (and a hostile one's) in proportion.
MAX_NAME = 200
MAX_OBSERVATION = 10_000
MAX_ITEMS = 1000

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Observation = Annotated[str, Field(min_length=1, max_length=MAX_OBSERVATION)]


class _Lenient(BaseModel):
    # Models send snake_case or other spellings of the reference's camelCase names; the
    # aliases below take the common ones, and unknown extra keys are ignored, not an error.
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class EntityIn(_Lenient):
    """An entity to create."""

    name: Name = Field(description="The name of the entity")
    entityType: Annotated[str, Field(max_length=MAX_NAME)] = Field(
        "thing",
        description="The type of the entity",
        validation_alias=AliasChoices("entityType", "entity_type", "type"),
    )
    observations: Annotated[list[Observation], Field(max_length=MAX_ITEMS)] = Field(
        default_factory=list,
        description="An array of observation contents associated with the entity",
        validation_alias=AliasChoices("observations", "contents"),
    )


class RelationIn(_Lenient):
    """A relation between two entities."""

    from_: Name = Field(
        description="The name of the entity where the relation starts",
        alias="from",
        validation_alias=AliasChoices("from", "from_", "source", "subject"),
    )
    to: Name = Field(
        description="The name of the entity where the relation ends",
        validation_alias=AliasChoices("to", "target", "object"),
    )
    relationType: Name = Field(
        description="The type of the relation",
        validation_alias=AliasChoices("relationType", "relation_type", "relation", "type"),
    )


class ObservationsIn(_Lenient):
    """Observations to add to one entity."""

    entityName: Name = Field(
        description="The name of the entity to add the observations to",
        validation_alias=AliasChoices("entityName", "entity_name", "name", "entity"),
    )
    contents: Annotated[list[Observation], Field(max_length=MAX_ITEMS)] = Field(
        description="An array of observation contents to add",
        validation_alias=AliasChoices("contents", "observations"),
    )


class DeletionIn(_Lenient):
    """Observations to delete from one entity."""

    entityName: Name = Field(
        description="The name of the entity containing the observations",
        validation_alias=AliasChoices("entityName", "entity_name", "name", "entity"),
    )
    observations: Annotated[list[Observation], Field(max_length=MAX_ITEMS)] = Field(
        description="An array of observations to delete",
        validation_alias=AliasChoices("observations", "contents"),
    )


class EntityOut(TypedDict):
    """An entity as the reference server returns it."""

    name: str
    entityType: str
    observations: list[str]


RelationOut = TypedDict("RelationOut", {"from": str, "to": str, "relationType": str})


class KnowledgeGraph(TypedDict):
    """Entities and the relations among them."""

    entities: list[EntityOut]
    relations: list[RelationOut]


class CreatedEntities(TypedDict):
    """What create_entities made."""

    entities: list[EntityOut]


class CreatedRelations(TypedDict):
    """What create_relations made."""

    relations: list[RelationOut]


class AddedObservations(TypedDict):
    """The observations that were new, per entity."""

    entityName: str
    addedObservations: list[str]


class ObservationResults(TypedDict):
    """What add_observations added."""

    results: list[AddedObservations]


class Outcome(TypedDict):
    """The reference's answer to a deletion."""

    success: bool
    message: str


Items = Field(max_length=MAX_ITEMS)

#: Top-level argument spellings models send for the reference's names, by tool.
ARGUMENT_ALIASES: dict[str, dict[str, str]] = {
    "delete_entities": {"entity_names": "entityNames", "names": "entityNames"},
    "open_nodes": {"entityNames": "names", "entity_names": "names"},
    "search_nodes": {"q": "query", "text": "query"},
}


def _relation(rel: RelationIn) -> RelationOut:
    return {"from": rel.from_, "to": rel.to, "relationType": rel.relationType}


class ReferenceTools:
    """The reference memory server's tools over one Memori's graph, in the scope's entity."""

    def __init__(self, mem: Memori, scope: Scope):
        self.mem = mem
        self.scope = scope

    # -- reading ---------------------------------------------------------------------------
    def _graph(self, entity: str) -> KnowledgeGraph:
        graph: KnowledgeGraph = {"entities": [], "relations": []}
        for line in self.mem.graph.export("mcp", entity_id=entity).splitlines():
            record = json.loads(line)
            kind = record.pop("type")
            if kind == "entity":
                graph["entities"].append(record)
            else:
                graph["relations"].append(record)
        return graph

    def _node_name(self, name: str, entity: str) -> str | None:
        """The stored name of the node ``name`` answers to, or None."""
        try:
            return str(self.mem.graph.node(name, entity_id=entity)["name"])
        except GraphError:
            return None

    @staticmethod
    def _around(graph: KnowledgeGraph, names: set[str]) -> KnowledgeGraph:
        """The entities named and every relation touching one of them (as the reference)."""
        return {
            "entities": [e for e in graph["entities"] if e["name"] in names],
            "relations": [r for r in graph["relations"] if r["from"] in names or r["to"] in names],
        }

    @reported
    def read_graph(self, entity: Entity = None) -> KnowledgeGraph:
        """Read the entire knowledge graph"""
        return self._graph(self.scope.entity_for(entity))

    @reported
    def search_nodes(
        self,
        query: Annotated[
            str,
            Field(
                max_length=2048,
                description="The search query to match against entity names, types, and "
                "observation content",
            ),
        ],
        entity: Entity = None,
    ) -> KnowledgeGraph:
        """Search for nodes in the knowledge graph based on a query"""
        graph = self._graph(self.scope.entity_for(entity))
        needle = query.casefold()
        names = {
            e["name"]
            for e in graph["entities"]
            if needle in e["name"].casefold()
            or needle in e["entityType"].casefold()
            or any(needle in o.casefold() for o in e["observations"])
        }
        return self._around(graph, names)

    @reported
    def open_nodes(
        self,
        names: Annotated[
            list[Name], Items, Field(description="An array of entity names to retrieve")
        ],
        entity: Entity = None,
    ) -> KnowledgeGraph:
        """Open specific nodes in the knowledge graph by their names"""
        who = self.scope.entity_for(entity)
        found = {n for n in (self._node_name(name, who) for name in names) if n is not None}
        return self._around(self._graph(who), found)

    # -- writing ---------------------------------------------------------------------------
    @reported
    def create_entities(
        self, entities: Annotated[list[EntityIn], Items], entity: Entity = None
    ) -> CreatedEntities:
        """Create multiple new entities in the knowledge graph"""
        who = self.scope.entity_for(entity)
        made: list[EntityOut] = []
        for item in entities:
            result = self.mem.graph.add_entity(
                item.name, item.entityType, item.observations, entity_id=who
            )
            if result["created"]:
                made.append({"name": result["name"], "entityType": item.entityType,
                             "observations": result["observations"]})  # fmt: skip
        return {"entities": made}

    @reported
    def create_relations(
        self, relations: Annotated[list[RelationIn], Items], entity: Entity = None
    ) -> CreatedRelations:
        """Create multiple new relations between entities in the knowledge graph. Relations
        should be in active voice"""
        who = self.scope.entity_for(entity)
        for rel in relations:  # all or nothing, as the reference: check every end first
            for end in (rel.from_, rel.to):
                if self._node_name(end, who) is None:
                    raise ToolError(f"Entity with name {end} not found")
        made = [
            _relation(rel)
            for rel in relations
            if self.mem.graph.add_relation(rel.from_, rel.relationType, rel.to, entity_id=who)
        ]
        return {"relations": made}

    @reported
    def add_observations(
        self, observations: Annotated[list[ObservationsIn], Items], entity: Entity = None
    ) -> ObservationResults:
        """Add new observations to existing entities in the knowledge graph"""
        who = self.scope.entity_for(entity)
        for item in observations:
            if self._node_name(item.entityName, who) is None:
                raise ToolError(f"Entity with name {item.entityName} not found")
        return {
            "results": [
                {
                    "entityName": item.entityName,
                    "addedObservations": self.mem.graph.add_observations(
                        item.entityName, item.contents, entity_id=who
                    ),
                }
                for item in observations
            ]
        }

    @reported
    def delete_entities(
        self,
        entityNames: Annotated[
            list[Name], Items, Field(description="An array of entity names to delete")
        ],
        entity: Entity = None,
    ) -> Outcome:
        """Delete multiple entities and their associated relations from the knowledge graph"""
        who = self.scope.entity_for(entity)
        deleted, missing = [], []
        for name in entityNames:
            stored = self._node_name(name, who)
            if stored is None:
                missing.append(name)
                continue
            node = self.mem.graph.node(stored, entity_id=who)
            # By #ID: a name is never read as forget's own syntax ("edge:7").
            self.mem.graph.forget(f"#{node['id']}", entity_id=who)
            self._forget_observations(who, stored, None)
            deleted.append(name)
        message = (
            "Entities deleted successfully"
            if not missing
            else f"Deleted {len(deleted)} of {len(entityNames)} entities. "
            f"Not found: {', '.join(missing)}"
        )
        return {"success": True, "message": message}

    def _forget_observations(self, entity: str, about: str, texts: list[str] | None) -> int:
        """Forget the entity's current memories about ``about`` (those whose text is one of
        ``texts``, or with None those the MCP tools or import made); how many."""
        wanted = None if texts is None else {normalise(t) for t in texts}
        gone = 0
        for memory in self.mem.memories(entity, limit=1_000_000):
            if memory["about"] != about:
                continue
            if wanted is None and memory["extractor"] != MCP_EXTRACTOR:
                continue  # what conversations taught stays; only the node's own notes go
            if wanted is not None and normalise(memory["content"]) not in wanted:
                continue
            gone += self.mem.forget_memory(memory["id"], entity_id=entity)
        return gone

    @reported
    def delete_observations(
        self, deletions: Annotated[list[DeletionIn], Items], entity: Entity = None
    ) -> Outcome:
        """Delete specific observations from entities in the knowledge graph"""
        who = self.scope.entity_for(entity)
        deleted, missing = 0, []
        for item in deletions:
            stored = self._node_name(item.entityName, who)
            if stored is None:
                missing.append(item.entityName)
                continue
            deleted += self._forget_observations(who, stored, item.observations)
        requested = sum(len(d.observations) for d in deletions)
        message = (
            "Observations deleted successfully"
            if deleted == requested
            else f"Deleted {deleted} of {requested} observations."
            + (f" Entities not found: {', '.join(missing)}" if missing else "")
        )
        return {"success": True, "message": message}

    @reported
    def delete_relations(
        self,
        relations: Annotated[
            list[RelationIn], Items, Field(description="An array of relations to delete")
        ],
        entity: Entity = None,
    ) -> Outcome:
        """Delete multiple relations from the knowledge graph"""
        who = self.scope.entity_for(entity)
        graph = self.mem.graph
        deleted = 0
        for rel in relations:
            ends = [self._node_name(n, who) for n in (rel.from_, rel.to)]
            if None in ends:
                continue
            source = graph.node(str(ends[0]), entity_id=who)
            for edge in graph.edges(entity_id=who, node_ids=[source["id"]]):
                if (edge["subject"], edge["object"]) == tuple(ends) and (
                    edge["predicate"] == rel.relationType
                ):
                    graph.forget(f"edge:{edge['id']}", entity_id=who)
                    deleted += 1
        message = (
            "Relations deleted successfully"
            if deleted == len(relations)
            else f"Deleted {deleted} of {len(relations)} relations. The rest matched nothing."
        )
        return {"success": True, "message": message}
