"""Full-text search over messages with FTS5 and bm25.

User text never reaches FTS5's query syntax: it is split into words, each word is quoted as a
literal string, and the words are OR-ed, so ``foo AND``, ``"unclosed``, ``NOT x``,
``text:secret`` or ``*`` are just words, and a question finds messages that share only some of
its words, ranked by bm25.
"""

from __future__ import annotations

import re
from typing import Any

from .core import Store, dict_rows
from .messages import filter_clauses

WORD = re.compile(r"\w+")
# At most this many distinct words go into one query, so 10 KB of pasted text stays fast.
MAX_TERMS = 32
# Function words that carry no topic: dropped from a query unless nothing else is left.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    """.split()
)
# bm25 column weights: content, speaker name, entity id (a filter, never a score).
_WEIGHTS = "1.0, 0.5, 0.0"


def match_expression(
    query: str, *, max_terms: int = MAX_TERMS, drop_words: set[str] | frozenset[str] = frozenset()
) -> str | None:
    """An FTS5 MATCH expression OR-ing the query's words as literals; None if it has none.

    Stopwords and ``drop_words`` are left out unless nothing else would remain.
    """
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(query)))
    content = [w for w in words if w not in STOPWORDS and w not in drop_words] or words
    if not content:
        return None
    return " OR ".join(f'"{w}"' for w in content[:max_terms])


def _several_entities(store: Store) -> bool:
    (count,) = store.conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM entities LIMIT 2)"
    ).fetchone()
    return bool(count > 1)


def search_messages(
    store: Store,
    query: str,
    *,
    entity_id: str,
    process_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 10,
    drop_words: set[str] | frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The entity's messages matching ``query``, best bm25 first, as dicts with ``score``."""
    expression = match_expression(query, drop_words=drop_words)
    if expression is None or limit <= 0:
        return []
    # Words match what was said and who said it, never the indexed entity id.
    expression = f"{{content name}} : ({expression})"
    if WORD.search(entity_id.replace("_", " ")) and _several_entities(store):
        # Narrow to the entity inside FTS5; the join below still decides (ids that tokenize
        # alike, such as "d'or" and "d-or", share these postings). With one entity in the
        # store this would only add work.
        escaped = entity_id.replace('"', '""')
        expression = f'entity_id : "{escaped}" AND {expression}'
    clauses, values = filter_clauses(process_id, since, until)
    where = ["messages_fts MATCH ?", "m.entity_id = ?", *clauses]
    params: list[Any] = [expression, entity_id, *values]
    sql = f"""
        SELECT m.id, m.role, m.content, m.name, m.created_at, m.external_id, m.entity_id,
               m.process_id, s.name AS session, m.trust, m.uses,
               -bm25(messages_fts, {_WEIGHTS}) AS score
        FROM messages_fts
        JOIN messages m ON m.id = messages_fts.rowid
        JOIN sessions s ON s.id = m.session_id
        WHERE {" AND ".join(where)}
        ORDER BY bm25(messages_fts, {_WEIGHTS})
        LIMIT ?
    """
    params.append(limit)
    cursor = store.conn.execute(sql, params)
    return dict_rows(cursor)
