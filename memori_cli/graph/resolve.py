"""Entity resolution: which node of the entity's graph a name is, made if there is none.

A name whose key (:func:`~memori_cli.graph.keys.node_key`) is an alias of a node is that
node. A name with no key match joins a node of the same type whose name embedding has a
cosine of at least :data:`SIMILAR` (conservative: near-identical spellings only); otherwise
it becomes a new node. Either way the spelling becomes an alias. Nothing is shared across
entities.

:func:`resolve` runs inside the caller's write transaction (augmentation saves a job's edges
in one); the rest open their own. The SQL is the store's (:mod:`memori_cli.store.graph`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..parts import Node
from ..store import Store
from ..store import graph as store_graph
from ..store.core import now_iso
from ..store.memories import ensure_entity
from .keys import alias_key

#: Cosine of two name embeddings of the same type above which the names are one node.
SIMILAR = 0.95
_NODE_ID = re.compile(r"#\d+")


def resolve(
    conn: Any, entity_id: str, name: str, node_type: str, vector: np.ndarray | None = None
) -> int:
    """The node for ``name`` in the entity's graph, made if there is none (inside the
    caller's write transaction)."""
    known = store_graph.node_for_key(conn, entity_id, alias_key(name))
    if known is not None:
        return known
    node_id = _similar(conn, entity_id, node_type, vector) if vector is not None else None
    if node_id is None:
        blob = None if vector is None else np.asarray(vector, np.float32).tobytes()
        node_id = store_graph.insert_node(conn, entity_id, name.strip(), node_type, blob)
    store_graph.add_alias(conn, entity_id, alias_key(name), node_id, name.strip())
    return int(node_id)


def _similar(conn: Any, entity_id: str, node_type: str, vector: np.ndarray) -> int | None:
    """The node of ``node_type`` whose name vector is nearest ``vector``, if it is at least
    :data:`SIMILAR` close."""
    rows = store_graph.node_vectors(conn, entity_id, node_type)
    if not rows:
        return None
    query = np.asarray(vector, np.float32)
    query = query / (np.linalg.norm(query) or 1.0)
    matrix = np.stack([np.frombuffer(blob, np.float32) for _, blob in rows])
    if matrix.shape[1] != query.shape[0]:
        return None  # vectors of another model
    scores = matrix @ query / np.maximum(np.linalg.norm(matrix, axis=1), 1e-9)
    best = int(np.argmax(scores))
    return int(rows[best][0]) if scores[best] >= SIMILAR else None


def unknown_names(store: Store, entity_id: str, names: Iterable[str]) -> list[str]:
    """The names no node answers to by key yet: only they need a vector to resolve."""
    return [
        name
        for name in names
        if store_graph.node_for_key(store.conn, entity_id, alias_key(name)) is None
    ]


def find_node(store: Store, entity_id: str, name: str) -> Node | None:
    """The node called ``name`` (any alias, or ``#ID``) in the entity's graph."""
    if _NODE_ID.fullmatch(name.strip()):
        return store_graph.node_by_id(store, entity_id, int(name.strip()[1:]))
    return store_graph.node_by_key(store, entity_id, alias_key(name))


def add_node(store: Store, entity_id: str, name: str, node_type: str) -> int:
    """Make sure a node called ``name`` exists; 1 if it was made."""
    with store.write(entity=entity_id) as conn:
        ensure_entity(conn, entity_id, now_iso())
        if store_graph.node_for_key(conn, entity_id, alias_key(name)) is not None:
            return 0
        resolve(conn, entity_id, name, node_type)
    return 1


def add_edge(
    store: Store, entity_id: str, subject: tuple[str, str], predicate: str,
    obj: tuple[str, str], *, extractor: str, when: str | None = None,
) -> int:  # fmt: skip
    """Add one current edge between (name, type) nodes unless the same edge holds already;
    1 if added. For imports, with no source message."""
    when = when or now_iso()
    with store.write(entity=entity_id) as conn:
        ensure_entity(conn, entity_id, when)
        s = resolve(conn, entity_id, subject[0], subject[1])
        o = resolve(conn, entity_id, obj[0], obj[1])
        if store_graph.find_edge(conn, entity_id, s, predicate, o) is not None:
            return 0
        store_graph.insert_edge(
            conn, entity_id, subject, predicate, obj, subject_id=s, object_id=o,
            confidence=1.0, extractor=extractor, when=when, created_at=when,
        )  # fmt: skip
        return 1
