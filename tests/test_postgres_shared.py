"""The library's own tests of recall, augmentation, hybrid search, the queue and the MCP tools,
run again on PostgreSQL: the same test functions, their ``mem`` / ``hmem`` a PostgreSQL store.
Skipped without a server (``MEMORI_TEST_POSTGRES``; scripts/test starts one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import HashingEmbedder
from test_augment import (  # noqa: F401  (collected here, on PostgreSQL)
    test_a_worker_that_keeps_dying_parks_the_job,
    test_contradiction_supersedes_and_keeps_history,
    test_done_jobs_are_pruned,
    test_failures_back_off_then_park_and_retry_requeues,
    test_forget_while_a_job_is_in_flight_leaves_nothing,
    test_late_arriving_old_statement_goes_into_history,
    test_lease_is_exclusive_and_expired_lease_is_reclaimed,
    test_memories_stay_inside_their_entity,
    test_memory_drafts_without_surviving_sources_are_skipped,
    test_repeated_fact_merges_and_raises_count,
    test_rerunning_a_job_changes_nothing,
)
from test_hybrid import (  # noqa: F401
    test_embedding_text_is_own_words_then_the_previous_turn,
    test_explain_shows_components_and_sources,
    test_filters_apply_to_vector_candidates,
    test_model_change_is_detected_and_reembed_rebuilds,
    test_neighbours_are_held_to_the_filters,
    test_one_hit_does_not_crowd_out_hits_in_other_sessions,
    test_recall_is_lexical_until_embedded,
    test_vector_search_is_scoped_to_the_entity,
)
from test_mcp import (  # noqa: F401
    test_allow_entity_arg_reaches_the_named_entity,
    test_another_entitys_data_looks_exactly_like_missing,
    test_correct_memory_without_a_slot_keeps_the_chain,
    test_graph_names_are_never_read_as_commands,
    test_reference_tools_round_trip,
    test_remember_returns_at_once_and_augmentation_makes_the_memory,
    test_remember_with_kind_and_about_stores_the_memory_now,
)
from test_recall import (  # noqa: F401
    test_a_question_finds_a_message_sharing_only_some_words,
    test_message_hits_without_external_id_cite_their_internal_id,
    test_more_shared_words_rank_higher_and_limit_applies,
    test_process_and_time_filters,
    test_stopword_only_queries_still_search,
    test_words_are_matched_literally,
)

from memori_cli import Memori


@pytest.fixture
def mem(postgres_store_url: str) -> Iterator[Memori]:
    memori = Memori(conn=postgres_store_url)
    yield memori
    memori.close()


@pytest.fixture
def target(postgres_store_url: str) -> str:
    return postgres_store_url


@pytest.fixture
def hmem(postgres_store_url: str) -> Iterator[Memori]:
    memori = Memori(conn=postgres_store_url, embedder=HashingEmbedder())
    yield memori
    memori.close()
