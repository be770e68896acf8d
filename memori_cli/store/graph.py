"""The knowledge graph's tables: nodes (one per real thing per entity, with aliases) and edges
(the ``triples`` rows, pointing at nodes, with provenance, counts and validity).

SQL only. Which node a name resolves to (keys, similarity) is :mod:`memori_cli.graph.resolve`;
whether an extracted edge merges into one held already is :mod:`memori_cli.augment.resolve`.
Both run inside a write transaction and call the primitives here with it. Nothing is shared
across entities.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from ..parts import Edge, Node
from .core import Store, Tx, dict_rows, is_rowid, now_iso, valid_at
from .memories import Source, link_sources

_EDGE_COLUMNS = """t.id, t.subject_id, s.name AS subject, t.predicate, t.object_id,
    o.name AS object, t.count, t.first_seen, t.last_seen, t.valid_from, t.valid_to,
    t.superseded_by, t.extractor"""


# -- nodes (inside the caller's write transaction, or on a reading connection) -------------
def node_for_key(conn: Any, entity_id: str, key: str) -> int | None:
    """The node an alias ``key`` belongs to in the entity's graph, if any."""
    row = conn.execute(
        "SELECT node_id FROM graph_aliases WHERE entity_id = ? AND key = ?",
        (entity_id, key),
    ).fetchone()
    return None if row is None else int(row[0])


def node_vectors(conn: Any, entity_id: str, node_type: str) -> list[tuple[int, bytes]]:
    """(id, float32 name-vector bytes) of the entity's nodes of ``node_type`` that have one."""
    rows = conn.execute(
        """SELECT id, vector FROM graph_nodes
           WHERE entity_id = ? AND type = ? AND vector IS NOT NULL""",
        (entity_id, node_type),
    ).fetchall()
    return [(int(i), bytes(blob)) for i, blob in rows]


def insert_node(tx: Tx, entity_id: str, name: str, node_type: str, vector: bytes | None) -> int:
    """Add a node called ``name`` (with its name vector's bytes, if any); its id."""
    (node_id,) = tx.execute(
        """INSERT INTO graph_nodes (entity_id, name, type, vector, created_at)
           VALUES (?, ?, ?, ?, ?) RETURNING id""",
        (entity_id, name, node_type, vector, now_iso()),
    ).fetchone()
    return int(node_id)


def add_alias(tx: Tx, entity_id: str, key: str, node_id: int, alias: str) -> None:
    """Record that ``alias`` (whose resolution key is ``key``) names node ``node_id``."""
    tx.execute(
        "INSERT INTO graph_aliases (entity_id, key, node_id, alias) VALUES (?, ?, ?, ?)",
        (entity_id, key, node_id, alias),
    )


# -- edges (inside the caller's write transaction) -----------------------------------------
def find_edge(
    conn: Any, entity_id: str, subject_id: int, predicate: str, object_id: int
) -> int | None:
    """The current edge ``subject -predicate-> object`` of the entity, if there is one."""
    row = conn.execute(
        """SELECT id FROM triples WHERE entity_id = ? AND subject_id = ? AND predicate = ?
               AND object_id = ? AND valid_to IS NULL""",
        (entity_id, subject_id, predicate, object_id),
    ).fetchone()
    return None if row is None else int(row[0])


def insert_edge(
    tx: Tx,
    entity_id: str,
    subject: tuple[str, str],
    predicate: str,
    obj: tuple[str, str],
    *,
    subject_id: int,
    object_id: int,
    confidence: float,
    extractor: str,
    when: str,
    created_at: str,
) -> int:
    """Add a current edge between (name, type) ``subject`` and ``obj`` (nodes ``subject_id``
    and ``object_id``), first and last seen and valid from ``when``; its id."""
    (edge_id,) = tx.execute(
        """INSERT INTO triples (entity_id, subject, subject_type, predicate, object, object_type,
               confidence, extractor, first_seen, last_seen, valid_from, created_at,
               subject_id, object_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        (entity_id, subject[0], subject[1], predicate, obj[0], obj[1], confidence, extractor,
         when, when, when, created_at, subject_id, object_id),
    ).fetchone()  # fmt: skip
    return int(edge_id)


def add_edge_sources(tx: Tx, edge_id: int, sources: Iterable[Source]) -> int:
    """Link edge ``edge_id`` to its source messages; how many links are new."""
    return link_sources(tx, "triple_sources", edge_id, sources)


def add_edge_sighting(tx: Tx, edge_id: int, sources: Iterable[Source], when: str) -> None:
    """One more sighting of edge ``edge_id``: its new sources counted, ``last_seen`` widened."""
    added = add_edge_sources(tx, edge_id, sources)
    tx.execute(
        f"UPDATE triples SET count = count + ?, last_seen = {tx.backend.greatest}(last_seen, ?)"
        " WHERE id = ?",
        (added, when, edge_id),
    )


def close_other_edges(
    tx: Tx, entity_id: str, subject_id: int, predicate: str, edge_id: int, when: str
) -> None:
    """Close the subject's other current edges of ``predicate`` valid from ``when`` or
    before: edge ``edge_id`` supersedes them at ``when``."""
    tx.execute(
        """UPDATE triples SET valid_to = ?, superseded_by = ?
           WHERE entity_id = ? AND subject_id = ? AND predicate = ?
               AND valid_to IS NULL AND id != ? AND valid_from <= ?""",
        (when, edge_id, entity_id, subject_id, predicate, edge_id, when),
    )


# -- reading ---------------------------------------------------------------------------------
def node_by_id(store: Store, entity_id: str, node_id: int) -> Node | None:
    """Node ``node_id`` of the entity's graph (see :func:`nodes`), or None."""
    if not is_rowid(int(node_id)):
        return None
    found = nodes(store, entity_id, where="n.id = ?", args=[int(node_id)])
    return found[0] if found else None


def node_by_key(store: Store, entity_id: str, key: str) -> Node | None:
    """The node an alias ``key`` belongs to in the entity's graph (see :func:`nodes`), or
    None."""
    found = nodes(
        store, entity_id, args=[entity_id, key],
        where="n.id = (SELECT node_id FROM graph_aliases WHERE entity_id = ? AND key = ?)",
    )  # fmt: skip
    return found[0] if found else None


def nodes(
    store: Store,
    entity_id: str,
    *,
    where: str = "1 = 1",
    args: Sequence[Any] = (),
    as_of: str | None = None,
    limit: int = 1_000_000,
) -> list[Node]:
    """The entity's nodes with aliases and degree (edges valid now or at ``as_of``), highest
    degree first."""
    valid, valid_args = valid_at(as_of, "t")
    cursor = store.conn.execute(
        f"""SELECT n.id, n.name, n.type, n.created_at,
                   (SELECT count(*) FROM triples t WHERE (t.subject_id = n.id OR t.object_id = n.id)
                        AND {valid}) AS degree,
                   (SELECT {store.backend.json_array("alias")} FROM graph_aliases a
                        WHERE a.node_id = n.id AND a.alias != n.name) AS aliases
            FROM graph_nodes n WHERE n.entity_id = ? AND {where}
            ORDER BY degree DESC, n.name LIMIT ?""",
        [*valid_args, entity_id, *args, int(limit)],
    )
    return [
        Node.from_row(dict(row, aliases=sorted(set(json.loads(row["aliases"])))))
        for row in dict_rows(cursor)
    ]


def edges(
    store: Store,
    entity_id: str,
    *,
    node_ids: Iterable[int] | None = None,
    as_of: str | None = None,
    history: bool = False,
) -> list[Edge]:
    """The entity's edges (touching ``node_ids`` if given): valid now, at ``as_of``, or every
    one with ``history``; each with ``sources`` (message ids, external where known)."""
    valid, args = ("1 = 1", []) if history else valid_at(as_of, "t")
    where = ""
    if node_ids is not None:
        ids = [int(i) for i in node_ids]
        marks = ",".join("?" * len(ids)) or "NULL"
        where = f"AND (t.subject_id IN ({marks}) OR t.object_id IN ({marks}))"
        args = [*args, *ids, *ids]
    sources = store.backend.json_array("coalesce(m.external_id, CAST(m.id AS TEXT))")
    cursor = store.conn.execute(
        f"""SELECT {_EDGE_COLUMNS},
                   (SELECT {sources}
                    FROM triple_sources ts JOIN messages m ON m.id = ts.message_id
                    WHERE ts.triple_id = t.id) AS sources
            FROM triples t JOIN graph_nodes s ON s.id = t.subject_id
                JOIN graph_nodes o ON o.id = t.object_id
            WHERE t.entity_id = ? AND {valid} {where}
            ORDER BY s.name, t.predicate, t.valid_from, t.id""",
        [entity_id, *args],
    )
    return [
        Edge.from_row(dict(row, sources=json.loads(row["sources"]))) for row in dict_rows(cursor)
    ]


def stats(store: Store, entity_id: str) -> dict[str, Any]:
    """Counts of nodes (by type), aliases, current and superseded edges, predicates."""
    conn = store.conn

    def one(sql: str) -> int:
        return int(conn.execute(sql, (entity_id,)).fetchone()[0])

    return {
        "entity": entity_id,
        "nodes": one("SELECT count(*) FROM graph_nodes WHERE entity_id = ?"),
        "aliases": one("SELECT count(*) FROM graph_aliases WHERE entity_id = ?")
        - one("SELECT count(*) FROM graph_nodes WHERE entity_id = ?"),
        "edges": one("SELECT count(*) FROM triples WHERE entity_id = ? AND valid_to IS NULL"),
        "superseded_edges": one(
            "SELECT count(*) FROM triples WHERE entity_id = ? AND valid_to IS NOT NULL"
        ),
        "node_types": dict(conn.execute(
            "SELECT type, count(*) FROM graph_nodes WHERE entity_id = ? GROUP BY type "
            "ORDER BY count(*) DESC", (entity_id,)).fetchall()),
        "predicates": dict(conn.execute(
            "SELECT predicate, count(*) FROM triples WHERE entity_id = ? AND valid_to IS NULL "
            "GROUP BY predicate ORDER BY count(*) DESC", (entity_id,)).fetchall()),
    }  # fmt: skip


def search(store: Store, entity_id: str, text: str, limit: int = 50) -> list[Node]:
    """Nodes whose name or an alias contains ``text`` (literally, any case)."""
    pattern = (
        "%" + text.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    )
    return nodes(
        store, entity_id, args=[pattern], limit=limit,
        where="""n.id IN (SELECT node_id FROM graph_aliases WHERE entity_id = n.entity_id
                          AND lower(alias) LIKE ? ESCAPE '\\')""",
    )  # fmt: skip


def nodes_with_keys(store: Store, entity_id: str, keys: Collection[str]) -> list[int]:
    """The entity's nodes with an alias whose key is one of ``keys``."""
    if not keys:
        return []
    return [
        int(node_id)
        for (node_id,) in store.conn.execute(
            f"""SELECT DISTINCT node_id FROM graph_aliases
                WHERE entity_id = ? AND key IN ({",".join("?" * len(keys))})""",
            [entity_id, *keys],
        )
    ]


def graph_candidates(
    store: Store, entity_id: str, node_ids: list[int], as_of: str | None = None
) -> tuple[list[int], list[int]]:
    """(message ids, memory ids) behind the current edges of ``node_ids``: the edges' source
    messages, and the memories made from those messages; most-seen edges first."""
    if not node_ids:
        return [], []
    valid, args = valid_at(as_of, "t")
    marks = ",".join("?" * len(node_ids))
    rows = store.conn.execute(
        f"""SELECT ts.message_id, ms.memory_id FROM triples t
            JOIN triple_sources ts ON ts.triple_id = t.id
            LEFT JOIN memory_sources ms ON ms.message_id = ts.message_id
            WHERE t.entity_id = ? AND {valid}
                AND (t.subject_id IN ({marks}) OR t.object_id IN ({marks}))
            ORDER BY t.count DESC, t.last_seen DESC""",
        [entity_id, *args, *node_ids, *node_ids],
    ).fetchall()
    messages = list(dict.fromkeys(int(m) for m, _ in rows))
    memory_ids = list(dict.fromkeys(int(m) for _, m in rows if m is not None))
    return messages, memory_ids


# -- correcting ------------------------------------------------------------------------------
def merge(store: Store, entity_id: str, keep: int, gone: int) -> dict[str, int]:
    """Fold node ``gone`` into ``keep``: its aliases and edges move; edges that become the
    same (subject, predicate, object, validity) merge their counts and sources."""
    with store.write(entity=entity_id) as conn:
        least, greatest = conn.backend.least, conn.backend.greatest
        for node_id in (keep, gone):
            if not conn.execute(
                "SELECT 1 FROM graph_nodes WHERE id = ? AND entity_id = ?", (node_id, entity_id)
            ).fetchone():
                raise LookupError(f"no node #{node_id} for entity {entity_id!r}")
        conn.execute("UPDATE graph_aliases SET node_id = ? WHERE node_id = ?", (keep, gone))
        conn.execute("UPDATE triples SET subject_id = ? WHERE subject_id = ?", (keep, gone))
        conn.execute("UPDATE triples SET object_id = ? WHERE object_id = ?", (keep, gone))
        merged = 0
        for survivor, duplicate in conn.execute(
            """SELECT min(a.id), b.id FROM triples a JOIN triples b
                 ON a.entity_id = b.entity_id AND a.subject_id = b.subject_id
                 AND a.predicate = b.predicate AND a.object_id = b.object_id
                 AND (a.valid_to = b.valid_to OR (a.valid_to IS NULL AND b.valid_to IS NULL))
                 AND a.id < b.id
               WHERE a.entity_id = ? AND ? IN (a.subject_id, a.object_id) GROUP BY b.id""",
            (entity_id, keep),
        ).fetchall():
            conn.execute(
                """INSERT INTO triple_sources (triple_id, message_id)
                   SELECT ?, message_id FROM triple_sources WHERE triple_id = ?
                   ON CONFLICT DO NOTHING""",
                (survivor, duplicate),
            )
            conn.execute(
                f"""UPDATE triples SET count = (SELECT count(*) FROM triple_sources
                       WHERE triple_id = ?1),
                       first_seen = {least}(first_seen,
                                            (SELECT first_seen FROM triples WHERE id = ?2)),
                       last_seen = {greatest}(last_seen,
                                              (SELECT last_seen FROM triples WHERE id = ?2))
                   WHERE id = ?1""",
                (survivor, duplicate),
            )
            conn.execute("DELETE FROM triples WHERE id = ?", (duplicate,))
            merged += 1
        conn.execute("DELETE FROM graph_nodes WHERE id = ?", (gone,))
    return {"merged_edges": merged}


def forget_node(store: Store, entity_id: str, node_id: int) -> int:
    """Delete a node, its aliases and every edge touching it; returns edges removed."""
    with store.write(entity=entity_id) as conn:
        (edges_gone,) = conn.execute(
            """SELECT count(*) FROM triples WHERE entity_id = ?
                   AND (subject_id = ?2 OR object_id = ?2)""",
            (entity_id, node_id),
        ).fetchone()
        conn.execute(
            "DELETE FROM triples WHERE entity_id = ? AND (subject_id = ?2 OR object_id = ?2)",
            (entity_id, node_id),
        )
        cursor = conn.execute(
            "DELETE FROM graph_nodes WHERE id = ? AND entity_id = ?", (node_id, entity_id)
        )
        if cursor.rowcount == 0:
            raise LookupError(f"no node #{node_id} for entity {entity_id!r}")
    return int(edges_gone)


def forget_edge(store: Store, entity_id: str, edge_id: int) -> bool:
    """Delete one edge; True if it existed."""
    if not is_rowid(int(edge_id)):
        return False
    with store.write(entity=entity_id) as conn:
        cursor = conn.execute(
            "DELETE FROM triples WHERE id = ? AND entity_id = ?", (edge_id, entity_id)
        )
        return bool(cursor.rowcount)
