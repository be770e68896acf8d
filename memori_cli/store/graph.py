"""The knowledge graph: nodes (one per real thing per entity, with aliases) and edges (the
``triples`` rows, pointing at nodes, with provenance, counts and validity).

Resolution: a name's key folds case, whitespace, a possessive and a simple plural of its
last word, so "Lisbon", " lisbon " and "Lisbon's" are one node, and "cats" is "cat" (keys
are internal: the name shown is the first spelling met). A name with no key
match joins a node of the same type whose name embedding has a cosine of at least
``SIMILAR`` (conservative: near-identical spellings only). Nothing is shared across entities.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .core import Store, dict_rows, is_rowid, now_iso, valid_at
from .fts import STOPWORDS

SIMILAR = 0.95
_POSSESSIVE = re.compile(r"['\u2019]s?$")
_EDGE_COLUMNS = """t.id, t.subject_id, s.name AS subject, t.predicate, t.object_id,
    o.name AS object, t.count, t.first_seen, t.last_seen, t.valid_from, t.valid_to,
    t.superseded_by, t.extractor"""


def node_key(name: str) -> str:
    """The resolution key of a node name (see the module docstring)."""
    words = " ".join(name.casefold().split()).strip(' .,;:!?"()[]{}').split(" ")
    last = _POSSESSIVE.sub("", words[-1])
    if len(last) > 3 and last.endswith("ies"):
        last = last[:-3] + "y"
    elif len(last) > 3 and last.endswith("s") and last[-2:] not in ("ss", "us", "is"):
        last = last[:-1]
    words[-1] = last
    return " ".join(words)


def resolve(
    conn: Any, entity_id: str, name: str, node_type: str, vector: np.ndarray | None = None
) -> int:
    """The node for ``name`` in the entity's graph, made if there is none (inside the
    caller's write transaction)."""
    known = _known(conn, entity_id, name)
    if known is not None:
        return known
    node_id = _similar(conn, entity_id, node_type, vector) if vector is not None else None
    if node_id is None:
        (node_id,) = conn.execute(
            """INSERT INTO graph_nodes (entity_id, name, type, vector, created_at)
               VALUES (?, ?, ?, ?, ?) RETURNING id""",
            (entity_id, name.strip(), node_type,
             None if vector is None else np.asarray(vector, np.float32).tobytes(), now_iso()),
        ).fetchone()  # fmt: skip
    conn.execute(
        "INSERT INTO graph_aliases (entity_id, key, node_id, alias) VALUES (?, ?, ?, ?)",
        (entity_id, _key(name), node_id, name.strip()),
    )
    return int(node_id)


def _key(name: str) -> str:
    return node_key(name) or name.casefold()


def _known(conn: Any, entity_id: str, name: str) -> int | None:
    """The node ``name`` resolves to by its key, if any."""
    row = conn.execute(
        "SELECT node_id FROM graph_aliases WHERE entity_id = ? AND key = ?",
        (entity_id, _key(name)),
    ).fetchone()
    return None if row is None else int(row[0])


def unknown_names(store: Store, entity_id: str, names: Iterable[str]) -> list[str]:
    """The names no node answers to by key yet: only they need a vector to resolve."""
    return [name for name in names if _known(store.conn, entity_id, name) is None]


def _similar(conn: Any, entity_id: str, node_type: str, vector: np.ndarray) -> int | None:
    rows = conn.execute(
        """SELECT id, vector FROM graph_nodes
           WHERE entity_id = ? AND type = ? AND vector IS NOT NULL""",
        (entity_id, node_type),
    ).fetchall()
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


# -- reading ---------------------------------------------------------------------------------
def find_node(store: Store, entity_id: str, name: str) -> dict[str, Any] | None:
    """The node called ``name`` (any alias, or ``#ID``) in the entity's graph."""
    args: list[Any]
    if re.fullmatch(r"#\d+", name.strip()):
        node_id = int(name.strip()[1:])
        if not is_rowid(node_id):
            return None
        where, args = "n.id = ?", [node_id]
    else:
        where = "n.id = (SELECT node_id FROM graph_aliases WHERE entity_id = ? AND key = ?)"
        args = [entity_id, _key(name)]
    found = nodes(store, entity_id, where=where, args=args)
    return found[0] if found else None


def nodes(
    store: Store,
    entity_id: str,
    *,
    where: str = "1",
    args: Sequence[Any] = (),
    as_of: str | None = None,
    limit: int = 1_000_000,
) -> list[dict[str, Any]]:
    """The entity's nodes with aliases and degree (edges valid now or at ``as_of``), highest
    degree first."""
    valid, valid_args = valid_at(as_of, "t")
    cursor = store.conn.execute(
        f"""SELECT n.id, n.name, n.type, n.created_at,
                   (SELECT count(*) FROM triples t WHERE (t.subject_id = n.id OR t.object_id = n.id)
                        AND {valid}) AS degree,
                   (SELECT json_group_array(alias) FROM graph_aliases a WHERE a.node_id = n.id
                        AND a.alias != n.name) AS aliases
            FROM graph_nodes n WHERE n.entity_id = ? AND {where}
            ORDER BY degree DESC, n.name LIMIT ?""",
        [*valid_args, entity_id, *args, int(limit)],
    )
    out = dict_rows(cursor)
    for row in out:
        row["aliases"] = sorted(set(json.loads(row["aliases"])))
    return out


def edges(
    store: Store,
    entity_id: str,
    *,
    node_ids: Iterable[int] | None = None,
    as_of: str | None = None,
    history: bool = False,
) -> list[dict[str, Any]]:
    """The entity's edges (touching ``node_ids`` if given): valid now, at ``as_of``, or every
    one with ``history``; each with ``sources`` (message ids, external where known)."""
    valid, args = ("1", []) if history else valid_at(as_of, "t")
    where = ""
    if node_ids is not None:
        ids = [int(i) for i in node_ids]
        marks = ",".join("?" * len(ids)) or "NULL"
        where = f"AND (t.subject_id IN ({marks}) OR t.object_id IN ({marks}))"
        args = [*args, *ids, *ids]
    cursor = store.conn.execute(
        f"""SELECT {_EDGE_COLUMNS},
                   (SELECT json_group_array(coalesce(m.external_id, CAST(m.id AS TEXT)))
                    FROM triple_sources ts JOIN messages m ON m.id = ts.message_id
                    WHERE ts.triple_id = t.id) AS sources
            FROM triples t JOIN graph_nodes s ON s.id = t.subject_id
                JOIN graph_nodes o ON o.id = t.object_id
            WHERE t.entity_id = ? AND {valid} {where}
            ORDER BY s.name, t.predicate, t.valid_from, t.id""",
        [entity_id, *args],
    )
    out = dict_rows(cursor)
    for row in out:
        row["sources"] = json.loads(row["sources"])
    return out


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


def search(store: Store, entity_id: str, text: str, limit: int = 50) -> list[dict[str, Any]]:
    """Nodes whose name or an alias contains ``text`` (literally, any case)."""
    pattern = (
        "%" + text.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    )
    return nodes(
        store, entity_id, args=[pattern], limit=limit,
        where="""n.id IN (SELECT node_id FROM graph_aliases WHERE entity_id = n.entity_id
                          AND lower(alias) LIKE ? ESCAPE '\\')""",
    )  # fmt: skip


def nodes_in(store: Store, entity_id: str, query: str, *, skip: Iterable[str] = ()) -> list[int]:
    """Nodes whose key is one to four consecutive words of ``query`` (except nodes whose
    name or first name is in ``skip``, folded)."""
    words = re.findall(r"[\w'\u2019-]+", query)
    keys = {
        node_key(" ".join(words[i : i + n]))
        for n in range(4, 0, -1)
        for i in range(len(words) - n + 1)
    }
    keys -= STOPWORDS
    keys.discard("")
    skipped = {node_key(name) for name in skip}
    skipped |= {key.split(" ")[0] for key in skipped}
    keys -= skipped
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
    with store.write() as conn:
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
                 AND a.valid_to IS b.valid_to AND a.id < b.id
               WHERE a.entity_id = ? AND ? IN (a.subject_id, a.object_id) GROUP BY b.id""",
            (entity_id, keep),
        ).fetchall():
            conn.execute(
                """INSERT OR IGNORE INTO triple_sources (triple_id, message_id)
                   SELECT ?, message_id FROM triple_sources WHERE triple_id = ?""",
                (survivor, duplicate),
            )
            conn.execute(
                """UPDATE triples SET count = (SELECT count(*) FROM triple_sources
                       WHERE triple_id = ?1),
                       first_seen = min(first_seen, (SELECT first_seen FROM triples WHERE id = ?2)),
                       last_seen = max(last_seen, (SELECT last_seen FROM triples WHERE id = ?2))
                   WHERE id = ?1""",
                (survivor, duplicate),
            )
            conn.execute("DELETE FROM triples WHERE id = ?", (duplicate,))
            merged += 1
        conn.execute("DELETE FROM graph_nodes WHERE id = ?", (gone,))
    return {"merged_edges": merged}


def forget_node(store: Store, entity_id: str, node_id: int) -> int:
    """Delete a node, its aliases and every edge touching it; returns edges removed."""
    with store.write() as conn:
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
    with store.write() as conn:
        cursor = conn.execute(
            "DELETE FROM triples WHERE id = ? AND entity_id = ?", (edge_id, entity_id)
        )
        return bool(cursor.rowcount)


def add_node(store: Store, entity_id: str, name: str, node_type: str) -> int:
    """Make sure a node called ``name`` exists; 1 if it was made."""
    with store.write() as conn:
        conn.execute(
            "INSERT INTO entities (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (entity_id, now_iso()),
        )
        if _known(conn, entity_id, name) is not None:
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
    with store.write() as conn:
        conn.execute(
            "INSERT INTO entities (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (entity_id, when),
        )
        s = resolve(conn, entity_id, subject[0], subject[1])
        o = resolve(conn, entity_id, obj[0], obj[1])
        same = conn.execute(
            """SELECT id FROM triples WHERE entity_id = ? AND subject_id = ? AND predicate = ?
                   AND object_id = ? AND valid_to IS NULL""",
            (entity_id, s, predicate, o),
        ).fetchone()
        if same is not None:
            return 0
        conn.execute(
            """INSERT INTO triples (entity_id, subject, subject_type, predicate, object,
                   object_type, confidence, extractor, first_seen, last_seen, valid_from,
                   created_at, subject_id, object_id)
               VALUES (?, ?, ?, ?, ?, ?, 1.0, ?, ?, ?, ?, ?, ?, ?)""",
            (entity_id, subject[0], subject[1], predicate, obj[0], obj[1], extractor,
             when, when, when, when, s, o),
        )  # fmt: skip
        return 1
