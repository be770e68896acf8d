"""Values that every layer shares: what extractors take (turns) and give (drafts), recall's
ranking settings; pure data.

Identity is the store's business: nothing here knows ids beyond the message ids drafts cite.
The store, augmentation, recall and config import these; this module imports nothing of memori.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")

#: The kinds of memory, as stored.
KINDS = ("fact", "preference", "skill", "attribute", "event")
#: The types a knowledge-graph node can have.
NODE_TYPES = ("person", "place", "organization", "animal", "thing", "activity", "event", "concept")


def role_label(role: str) -> str:
    """What a speaker without a name is called, in memories about them: ``User``,
    ``Assistant``."""
    return role.capitalize()


@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    """One message, as extractors see it."""

    id: int
    role: str
    content: str
    created_at: str
    name: str | None = None

    @property
    def speaker(self) -> str:
        """Who said it: the speaker's name, else ``User`` or ``Assistant``."""
        return self.name or role_label(self.role)


@dataclasses.dataclass(slots=True)
class MemoryDraft:
    """A memory an extractor found. ``slot`` names what it is a value of ("lives_in"): a new
    memory with the same ``about`` and ``slot`` but other content supersedes the old one."""

    kind: str
    content: str
    about: str
    source_ids: list[int]
    confidence: float = 0.7
    slot: str | None = None


@dataclasses.dataclass(slots=True)
class TripleDraft:
    """A knowledge-graph edge. ``functional`` predicates hold one object per subject at a
    time (lives_in), so a new object closes the old edge."""

    subject: str
    subject_type: str
    predicate: str
    object: str
    object_type: str
    source_ids: list[int]
    confidence: float = 0.7
    functional: bool = False


@dataclasses.dataclass(slots=True)
class Extraction:
    """Everything one extractor run found in a batch of turns."""

    memories: list[MemoryDraft] = dataclasses.field(default_factory=list)
    triples: list[TripleDraft] = dataclasses.field(default_factory=list)
    summary: str | None = None


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """Recall's weights. Defaults chosen by measurement on the development data."""

    #: Candidates taken from each retriever before fusion.
    candidates: int = 50
    #: Reciprocal-rank fusion: a hit's fused score is sum(weight / (rrf_k + rank)).
    rrf_k: float = 10.0
    lexical_weight: float = 1.0
    vector_weight: float = 1.0
    #: A turn matching the query words lends this share of its fused score to the turns just
    #: before and after it. Off: it raised LoCoMo R@10 from 0.725 to 0.76 while each vector
    #: held its own words only; now that a vector also holds the turn before (see
    #: augment/embedding.py), 0.5 gives LoCoMo 0.770 against 0.768 off, and costs LongMemEval
    #: 0.811 -> 0.761 (the top ten fill with the turns around one hit: 30 questions).
    neighbour_weight: float = 0.0
    #: Recency: score x (1 - recency_weight + recency_weight * 0.5 ** (age / half_life)).
    half_life_days: float = 180.0
    recency_weight: float = 0.0
    #: Trust: score x (1 - trust_weight + trust_weight * trust); users 1.0, assistants 0.6.
    trust_weight: float = 0.1
    #: Use: score x (1 + use_weight * log1p(times recalled and used)).
    use_weight: float = 0.1
    #: A question naming a speaker is about what they said: their turns get
    #: score x (1 + speaker_weight), and their name leaves the bm25 query (nearly every turn
    #: is by a named speaker, and turns that only address them are noise).
    speaker_weight: float = 0.5
    #: A question about one role's words in a user/assistant chat (the user's for "what did
    #: I...", the assistant's for "what did you recommend", see recall/hybrid.py): that
    #: role's turns get score x (1 + role_weight) and no trust discount; memories about the
    #: role ("User prefers...") count as about the asked speaker (speaker_weight). Stronger
    #: than a named speaker's weight: the other role's turns there mostly echo the asked
    #: one's ("Congrats on finishing Celeste in 10 hours!"). LongMemEval dev R@10 (59
    #: questions; LoCoMo asks in the third person): 0.926 before (the role's turns at
    #: speaker_weight, memories not boosted); 0.901 at 0.5, 0.944 at 1 and 1.5, 0.952 at 2,
    #: 0.935 at 3 and 4.
    role_weight: float = 2.0
    #: Graph: nodes named in the query (other than speakers) bring the source messages and
    #: memories of their current edges in as one more ranked list (see recall/query.py). Off:
    #: on the development data (rule-extracted graph) 1.0 changed nothing but one temporal
    #: question (overall R@5 0.641 -> 0.637); matching any word of a node name cost NDCG@10
    #: 0.522 -> 0.491. Worth trying with a model-extracted graph.
    graph_weight: float = 0.0
    #: Memory hits' scores are multiplied by this before they are ranked with messages. With
    #: rule-extracted memories, 0.3 gives R@10 LoCoMo 0.758 / LongMemEval 0.860 and 0.6 gives
    #: 0.751 / 0.854 (the metric counts source turns, which a memory only repeats), but at 0.3
    #: the memory a question asks for ("Maya lives in Lisbon") falls below the messages it
    #: came from, and it is the memory that should reach the model. Lending a memory's score
    #: to its source turns instead was measured and dropped (0.752 / 0.789, 30 questions).
    memory_weight: float = 0.6


_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """The duplicate key of a memory: case-folded, accents and punctuation gone, spaces single."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.casefold())).strip()


#: Words no statement ends on: a phrase cut off after one of them lost what followed.
DANGLING = frozenset(
    """a an the to for of in on at by with from into through about and or but that which who
    whose than as if because so my your his her their our its this these those some few""".split()
)
_EMPTY_SLOT = re.compile(r"\w\s{2,}\w")
_LAST_WORD = re.compile(r"([\w']+)\W*$")


def incomplete(text: str) -> str | None:
    """Why ``text`` is no complete statement ("User attended  on 2023-05-29": an empty slot;
    "User is planning for": it ends on a function word), or None when it is one."""
    if _EMPTY_SLOT.search(text):
        return "an empty slot"
    last = _LAST_WORD.search(text)
    if last and last.group(1).casefold() in DANGLING:
        return f"it ends on {last.group(1)!r}"
    return None


# -- records: what the store gives back ------------------------------------------------------
class Record(Mapping[str, Any]):
    """A row the store gives back, as a typed value: attributes (``session.messages``),
    :meth:`to_dict` for ``--json`` (the same keys and values as the dicts of before), and
    read access as a mapping (``row["messages"]``, ``row.get("last")``, ``dict(row)``), so
    code written against those dicts keeps reading it, and a record equals a dict of its
    ``--json`` shape. Records are frozen: build a new one (``dataclasses.replace``) or
    ``dict(row, extra=...)`` to add to one."""

    __slots__ = ()

    @classmethod
    @functools.cache
    def keys_of(cls) -> tuple[str, ...]:
        """The record's field names, in order (its ``--json`` keys)."""
        return tuple(field.name for field in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
        """The record of a row read as a dict keyed by column name (a field the row lacks
        takes its default)."""
        return cls(**{key: row[key] for key in cls.keys_of() if key in row})

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: every field, in order."""
        return {key: getattr(self, key) for key in self.keys_of()}

    def __eq__(self, other: object) -> bool:
        # Equal to a record or a mapping of the same --json shape (the dicts of before).
        if isinstance(other, Record):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to dicts, so unhashable like them

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys_of():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_of())

    def __len__(self) -> int:
        return len(self.keys_of())


@dataclasses.dataclass(frozen=True, eq=False)
class Session(Record):
    """A thread of one entity, with its message count and time span."""

    session: str
    entity: str
    process: str | None
    messages: int
    first: str | None
    last: str | None


@dataclasses.dataclass(frozen=True, eq=False)
class EntityInfo(Record):
    """An entity (a user) with what the store holds of it."""

    entity: str
    messages: int
    memories: int
    sessions: int
    last_activity: str | None
    created_at: str


@dataclasses.dataclass(frozen=True, eq=False)
class JobInfo(Record):
    """An augmentation job as ``memori jobs`` lists it (``messages``: how many it covers)."""

    id: int
    kind: str
    entity: str
    status: str
    attempts: int
    error: str | None
    output: str | None
    created_at: str
    updated_at: str
    messages: int | None


@dataclasses.dataclass(frozen=True, eq=False)
class Memory(Record):
    """A typed memory as stored: what it says, about whom, how sure, and when it held.

    ``sources`` (the message ids it came from) and ``source_ids`` (their external ids where
    known) are there when the memory was read by id (``mem.memory``, ``memory_history``);
    a listing leaves them out, of the record's ``--json`` too."""

    id: int
    entity_id: str
    kind: str
    content: str
    about: str
    slot: str | None
    confidence: float
    trust: float
    extractor: str
    count: int
    uses: int
    first_seen: str
    last_seen: str
    valid_from: str
    valid_to: str | None
    superseded_by: int | None
    created_at: str
    session: str | None
    sources: list[int] | None = None
    source_ids: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for detail in ("sources", "source_ids"):
            if out[detail] is None:
                del out[detail]
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class Node(Record):
    """A knowledge-graph node: one real thing in an entity's graph, with the other names it
    goes by and how many edges touch it (valid now, or at the time asked)."""

    id: int
    name: str
    type: str
    created_at: str
    degree: int
    aliases: list[str]


@dataclasses.dataclass(frozen=True, eq=False)
class Edge(Record):
    """A knowledge-graph edge (a triple), its validity, and the messages it was drawn from
    (``sources``: external ids where known, else message ids as text)."""

    id: int
    subject_id: int
    subject: str
    predicate: str
    object_id: int
    object: str
    count: int
    first_seen: str
    last_seen: str
    valid_from: str
    valid_to: str | None
    superseded_by: int | None
    extractor: str
    sources: list[str]
