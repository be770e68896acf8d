"""Values that every layer shares: what extractors take (turns) and give (drafts), pure data.

Identity is the store's business: nothing here knows ids beyond the message ids drafts cite.
The store and augmentation import these; this module imports nothing of memori.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

#: The kinds of memory, as stored.
KINDS = ("fact", "preference", "skill", "attribute", "event")
#: The types a knowledge-graph node can have.
NODE_TYPES = ("person", "place", "organization", "animal", "thing", "activity", "event", "concept")


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
        return self.name or self.role.capitalize()


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
