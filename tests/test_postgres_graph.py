"""The knowledge graph's tests (tests/test_graph.py) run again on PostgreSQL: the same test
functions, their ``mem`` a PostgreSQL store without an embedding model, as there. Skipped
without a server (``MEMORI_TEST_POSTGRES``; scripts/test starts one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_graph import (  # noqa: F401  (collected here, on PostgreSQL)
    test_a_contradicting_edge_closes_the_old_one,
    test_embedding_similar_names_merge_only_above_the_threshold,
    test_exact_name_duplicates_are_one_node_and_one_edge,
    test_exports_parse,
    test_graphs_never_cross_entities,
    test_mcp_jsonl_round_trip,
    test_merge_and_forget,
    test_merge_combines_edges_that_become_the_same,
    test_recall_brings_in_what_the_named_node_is_linked_to,
)

from memori_cli import Memori


@pytest.fixture
def mem(postgres_store_url: str) -> Iterator[Memori]:
    memori = Memori(postgres_store_url, embedder=None)
    memori.config.embedding_model = "none"
    yield memori
    memori.close()
