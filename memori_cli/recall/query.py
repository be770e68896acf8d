"""The query language: what a question's words mean to the lexical retrievers and the graph.

User text never reaches FTS5's query syntax: it is split into words, each word is quoted as a
literal string, and the words are OR-ed, so ``foo AND``, ``"unclosed``, ``NOT x``,
``text:secret`` or ``*`` are just words, and a question finds messages that share only some of
its words, ranked by bm25. The rules for which words count live here (:func:`terms`); the
store's backend turns the words into its engine's syntax and runs the search
(``store.fts.lexical_messages``, ``store.memories.lexical_memories``), so another engine takes
the same words.

The graph retriever reads the same question for the nodes it names: one to four consecutive
words whose node key (see :mod:`memori_cli.graph.keys`) is an alias of a node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..graph.keys import node_key
from ..store import Store
from ..store import fts as store_fts
from ..store import graph as store_graph
from ..store import memories as store_memories
from ..store.sqlite import fts5_match

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
# A node name in a question: words with the apostrophes and hyphens names hold.
_NAME_WORD = re.compile(r"[\w'\u2019-]+")


def terms(
    query: str, *, max_terms: int = MAX_TERMS, drop_words: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """The query's distinct words, lower-cased, in order, at most ``max_terms``: what the
    lexical retrievers search for (each a literal, OR-ed). Stopwords and ``drop_words`` are
    left out unless nothing else would remain."""
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(query)))
    content = [w for w in words if w not in STOPWORDS and w not in drop_words] or words
    return content[:max_terms]


def match_expression(
    query: str, *, max_terms: int = MAX_TERMS, drop_words: set[str] | frozenset[str] = frozenset()
) -> str | None:
    """The SQLite FTS5 MATCH expression of :func:`terms` (for tools that run FTS5 themselves,
    like the benchmarks' baseline); None if the query has no words."""
    found = terms(query, max_terms=max_terms, drop_words=drop_words)
    return fts5_match(found) if found else None


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
    return store_fts.lexical_messages(
        store, terms(query, drop_words=drop_words), entity_id=entity_id,
        process_id=process_id, since=since, until=until, limit=limit,
    )  # fmt: skip


def search_memories(
    store: Store,
    query: str,
    *,
    entity_id: str,
    as_of: str | None = None,
    limit: int = 50,
    drop_words: set[str] | frozenset[str] = frozenset(),
) -> list[tuple[int, float]]:
    """bm25 over the entity's memories valid now (or at ``as_of``): (id, score) best first."""
    return store_memories.lexical_memories(
        store, terms(query, drop_words=drop_words), entity_id=entity_id, as_of=as_of,
        limit=limit,
    )  # fmt: skip


def node_keys_in(query: str, *, skip: Iterable[str] = ()) -> set[str]:
    """The node keys of every one to four consecutive words of ``query``, stopwords aside
    and without the keys of the names in ``skip`` (or of their first words)."""
    words = _NAME_WORD.findall(query)
    keys = {
        node_key(" ".join(words[i : i + n]))
        for n in range(4, 0, -1)
        for i in range(len(words) - n + 1)
    }
    keys -= STOPWORDS
    keys.discard("")
    skipped = {node_key(name) for name in skip}
    skipped |= {key.split(" ")[0] for key in skipped}
    return keys - skipped


def nodes_in(store: Store, entity_id: str, query: str, *, skip: Iterable[str] = ()) -> list[int]:
    """Nodes whose key is one to four consecutive words of ``query`` (except nodes whose
    name or first name is in ``skip``, folded)."""
    return store_graph.nodes_with_keys(store, entity_id, node_keys_in(query, skip=skip))
