"""Hybrid recall: bm25 and vector candidates, fused, then ranked by recency, trust and use."""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..parts import RankingConfig as RankingConfig  # re-exported: hybrid.RankingConfig
from ..store import Store, vectors
from ..store.messages import filter_ids
from .query import WORD as _WORD
from .query import search_messages
from .request import RecallRequest


def fuse(
    lexical: list[dict[str, Any]],
    nearest: list[tuple[int, float]],
    config: RankingConfig,
    neighbours: dict[int, tuple[int | None, int | None]] | None = None,
    graph: Sequence[int] = (),
) -> dict[int, dict[str, Any]]:
    """Reciprocal-rank fusion of bm25 rows, (id, cosine distance) pairs and ids reached
    through the graph, by id.

    ``neighbours`` (id -> ids of the turns before and after) spreads part of each bm25 hit's
    score to its neighbours.
    """
    fused: dict[int, dict[str, Any]] = {}
    for rank, row in enumerate(lexical, start=1):
        entry = fused.setdefault(row["id"], {"fused": 0.0})
        entry.update(lexical_rank=rank, bm25=round(float(row["score"]), 4))
        entry["fused"] += config.lexical_weight / (config.rrf_k + rank)
        for neighbour in (neighbours or {}).get(row["id"], ()):
            if neighbour is not None:
                share = config.neighbour_weight * config.lexical_weight / (config.rrf_k + rank)
                near = fused.setdefault(neighbour, {"fused": 0.0})
                near["neighbour"] = round(near.get("neighbour", 0.0) + share, 6)
                near["fused"] += share
    for rank, (message_id, distance) in enumerate(nearest, start=1):
        entry = fused.setdefault(message_id, {"fused": 0.0})
        entry.update(vector_rank=rank, cosine=round(1.0 - distance, 4))
        entry["fused"] += config.vector_weight / (config.rrf_k + rank)
    for rank, item_id in enumerate(graph[: config.candidates], start=1):
        entry = fused.setdefault(item_id, {"fused": 0.0})
        entry["graph_rank"] = rank
        entry["fused"] += config.graph_weight / (config.rrf_k + rank)
    return fused


def speaker_words(speakers: set[str]) -> set[str]:
    """The words of speakers' names: they leave the bm25 query (see speaker_weight)."""
    return {w for name in speakers for w in _WORD.findall(name.lower())}


def dense_query(query: str, speakers: set[str]) -> str:
    """The query as the embedder reads it in a conversation between named speakers: the
    speakers it names become "they" and "their".

    Every turn's vector holds its speaker's name and the previous speaker's (see
    augment/embedding.py), so between named speakers a name tells no turn apart and only
    pulls the query towards turns that address that person ("Wow, Melanie!"); the speaker
    weight does what the name should. LoCoMo dev R@10 0.793 -> 0.817 (multi-hop
    0.390 -> 0.503, temporal 0.984 -> 0.937); names removed instead: 0.812 against 0.822 on
    one store; turns embedded without names too: no better (0.806-0.817).
    """
    if not speakers:
        return query
    forms = sorted({f for name in speakers for f in (name, name.split()[0])}, key=len, reverse=True)
    names = "|".join(re.escape(form) for form in forms)
    query = re.sub(rf"\b(?:{names})\s+and\s+(?:{names})\b", "they", query, flags=re.I)
    query = re.sub(rf"\b(?:{names})['\u2019]s\b", "their", query, flags=re.I)
    return re.sub(rf"\b(?:{names})\b", "they", query, flags=re.I)


def mentioned_speakers(query: str, names: list[str]) -> set[str]:
    """The speaker names whose first word the query contains (case-insensitively)."""
    words = {w.lower() for w in _WORD.findall(query)}
    return {n for n in names if (first := _WORD.findall(n.lower())) and first[0] in words}


# A question about the assistant's own words ("you mentioned", "your recommendation"): the
# answer is in an assistant turn, so those turns count as the named speaker's.
_ASKS_ASSISTANT = re.compile(
    r"\byou(?:'ve| have| had)? (?:said|mentioned|told|suggested|recommended|gave|provided|"
    r"listed|shared|wrote|explained|described|proposed|came up with)\b"
    r"|\bdid you (?:say|mention|tell|suggest|recommend|give|provide|list|share|write|"
    r"explain|describe|propose|come up with)\b"
    r"|\byour (?:suggestions?|recommendations?|advice|list|answer|response)\b",
    re.IGNORECASE,
)


# "Can you remind me of that restaurant?" asks for something the user was told, so the answer
# is the assistant's; not when what is to be recalled is the user's ("remind me where I moved
# from", "do you remember my sister's name") or the user says they said it ("I mentioned...").
_REMIND = re.compile(r"\bremind me\b|\b(?:do|did) you remember\b", re.IGNORECASE)
_USER_SAID = re.compile(
    r"\bI (?:said|mentioned|told|shared|wrote|described|listed|gave|asked)\b", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[?.!]")


def asks_assistant(query: str) -> bool:
    """Whether ``query`` asks what the assistant said (see :data:`_ASKS_ASSISTANT` and
    :data:`_REMIND`)."""
    if _ASKS_ASSISTANT.search(query):
        return True
    remind = _REMIND.search(query)
    if remind is None or _USER_SAID.search(query):
        return False
    recalled = _SENTENCE_END.split(query[remind.end() :], maxsplit=1)[0]
    return _FIRST_PERSON.search(recalled) is None


# A question in the first person ("what did I...", "my dog") is about the user: what they said
# of themselves is in their own turns, not in the assistant's replies that echo it.
_FIRST_PERSON = re.compile(r"\b(?:i|me|my|mine|myself|i'm|i've|i'd|i'll)\b", re.IGNORECASE)


def asked_roles(query: str) -> set[str]:
    """The roles whose turns answer ``query``: the assistant's for a question about what it
    said, the user's for one in the first person, else none (see :func:`rank`)."""
    if asks_assistant(query):
        return {"assistant"}
    if _FIRST_PERSON.search(query):
        return {"user"}
    return set()


def rank(
    fused: dict[int, dict[str, Any]],
    rows: dict[int, dict[str, Any]],
    config: RankingConfig,
    *,
    speakers: set[str] = frozenset(),  # type: ignore[assignment]
    roles: set[str] = frozenset(),  # type: ignore[assignment]
    now: datetime.datetime | None = None,
) -> list[tuple[int, float, dict[str, Any]]]:
    """(id, final score, explanation) best first, after recency, trust, use and speaker.

    Rows whose role is in ``roles`` are the asked-about role's: they get ``role_weight`` and
    skip the trust discount (a question about what the assistant said is answered by the
    assistant); other rows by a speaker in ``speakers`` get ``speaker_weight``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ranked = []
    for message_id, parts in fused.items():
        row = rows[message_id]
        age_days = max(0.0, (now - _parse(row["created_at"])).total_seconds() / 86400)
        recency = 0.5 ** (age_days / config.half_life_days) if config.half_life_days > 0 else 1.0
        score = parts["fused"]
        score *= 1 - config.recency_weight + config.recency_weight * recency
        asked = row.get("role") in roles
        if not asked:
            score *= 1 - config.trust_weight + config.trust_weight * float(row["trust"])
        score *= 1 + config.use_weight * math.log1p(int(row.get("uses") or 0))
        about = row.get("name") in speakers or asked
        if asked:
            score *= 1 + config.role_weight
        elif about:
            score *= 1 + config.speaker_weight
        explain = dict(
            parts,
            recency=round(recency, 4),
            trust=row["trust"],
            uses=int(row.get("uses") or 0),
            speaker_match=about,
            fused=round(parts["fused"], 6),
            score=round(score, 6),
        )
        ranked.append((message_id, score, explain))
    ranked.sort(key=lambda item: (-item[1], -item[0]))
    return ranked


def _parse(stamp: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def candidates(
    store: Store,
    request: RecallRequest,
    query_vector: np.ndarray | None,
    *,
    config: RankingConfig,
    speakers: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[dict[str, Any]], list[tuple[int, float]]]:
    """bm25 rows and vector (id, distance) pairs for the query, the request's message
    filters applied to both."""
    filters = request.message_filters()
    lexical = search_messages(
        store, request.query, entity_id=request.entity, limit=config.candidates,
        drop_words=speaker_words(speakers), **filters,
    )  # fmt: skip
    nearest: list[tuple[int, float]] = []
    if query_vector is not None:
        # Filters apply after the KNN, so look further when there are any.
        k = config.candidates * (4 if request.filtered else 1)
        nearest = vectors.knn(store, request.entity, query_vector, k)
        if request.filtered and nearest:
            allowed = filter_ids(store, [mid for mid, _ in nearest], **filters)
            nearest = [(mid, d) for mid, d in nearest if mid in allowed][: config.candidates]
    return lexical, nearest
