"""Grounding: nothing enters memory that its sources do not support.

Every memory and triple an extractor proposes is checked against the job's own messages
before it is stored. A small local model hallucinates (names it never read, skills in an
invented language, ``silk_and_spun_blessed_blessed_…``); the rule extractor should pass by
construction. An item is rejected, with a reason, when:

- it cites no message of its job;
- it is degenerate: runs of one character or of underscores, one word over and over, or
  more text than its sources hold; or a memory is no statement (one word, a slug);
- a name, number or date in it occurs in none of the cited messages (the speaker's and the
  entity's names, and dates resolved from a message's own date, are allowed);
- most of its words occur in none of the cited messages (text in another language, or
  invented content), beyond a small list of words any paraphrase uses.

Rejected items are kept on the job (``memori jobs show ID``) and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterable

from ..parts import incomplete
from ..recall.query import STOPWORDS
from .extract import Extraction, MemoryDraft, TripleDraft, Turn

#: The least share of a memory's content words that its sources must hold.
MIN_SUPPORT = 0.5
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*", re.UNICODE)
# A character five times over, underscores joining words (snake_case is not speech), or one
# word three times in a row.
_DEGENERATE = re.compile(
    r"(.)\1{4,}|[^\W_]+_+[^\W_]+_|([^\W_]{2,})(?:[\W_]+\2\b){2,}", re.IGNORECASE
)
# Words joined by hyphens or underscores and nothing else ("the-trending-things"): a slug,
# not a statement about anyone.
_SLUG = re.compile(r"[^\W_]+(?:[-_][^\W_]+)+[.!]?")
_NUMBER = re.compile(r"\d+")
_POSSESSIVE = re.compile(r"['\u2019]s$", re.IGNORECASE)
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
# Words a third-person paraphrase of what someone said uses without their having said them:
# the function words recall ignores, and the verbs and nouns of the extractors' templates.
_PARAPHRASE = STOPWORDS | frozenset(
    """user user's assistant assistant's likes like liked dislikes dislike prefers prefer
    favourite favorite lives live lived living works work worked working named name called
    previously moved move moving plans planning planned plan wants want wanted attended attends
    attend visited visits visit went goes go going got get gets enjoys enjoy enjoyed loves love
    loved hates hate learning learns learn learned knows know knew also many one two three first
    last new old said says say told around approximately years year months month weeks week
    days day today yesterday recently currently s re ll ve d t allergic allergy vegetarian vegan
    born birthday partner friend family sister brother mother father mom dad son daughter wife
    husband girlfriend boyfriend child children kids pet pets dog cat job occupation skill skilled
    may might must much since still""".split()
)
_MONTHS = ("january february march april may june july august september october november "
           "december").split()  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An extracted item that did not pass, and why."""

    item: str  # "memory" or "triple"
    content: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """As JSON-ready data."""
        return dataclasses.asdict(self)


def check(
    extraction: Extraction, turns: list[Turn], entity_id: str
) -> tuple[Extraction, list[Rejection]]:
    """The items of ``extraction`` its sources support, and the others with reasons."""
    by_id = {turn.id: turn for turn in turns}
    allowed = {entity_id.casefold(), "user", "assistant"}
    allowed |= {w for t in turns for w in _folded(t.speaker)}
    kept = Extraction(summary=extraction.summary)
    rejected: list[Rejection] = []
    for memory in extraction.memories:
        reason = _memory_reason(memory, by_id, allowed)
        if reason is None:
            kept.memories.append(memory)
        else:
            rejected.append(Rejection("memory", memory.content, reason))
    for triple in extraction.triples:
        reason = _triple_reason(triple, by_id, allowed)
        if reason is None:
            kept.triples.append(triple)
        else:
            text = f"{triple.subject} {triple.predicate} {triple.object}"
            rejected.append(Rejection("triple", text, reason))
    return kept, rejected


def _cited(source_ids: Iterable[int], by_id: dict[int, Turn]) -> list[Turn]:
    return [by_id[i] for i in source_ids if i in by_id]


def _memory_reason(memory: MemoryDraft, by_id: dict[int, Turn], allowed: set[str]) -> str | None:
    cited = _cited(memory.source_ids, by_id)
    if not cited:
        return "cites no message of its job"
    memory.source_ids = [turn.id for turn in cited]  # ids from elsewhere are not evidence
    source = " ".join(turn.content for turn in cited)
    degenerate = _degenerate(memory.content, source)
    if degenerate:
        return degenerate
    if len(_words(memory.content)) < 2 or _SLUG.fullmatch(memory.content.strip()):
        return "not a statement (one word, or words joined into a slug)"
    unfinished = incomplete(memory.content)
    if unfinished:
        return f"an unfinished statement ({unfinished})"
    about = _unsupported(memory.about, source, cited, allowed, min_support=1.0)
    if about:
        return f"about {memory.about!r}: {about}"
    return _unsupported(memory.content, source, cited, allowed | _folded(memory.about))


def _triple_reason(triple: TripleDraft, by_id: dict[int, Turn], allowed: set[str]) -> str | None:
    cited = _cited(triple.source_ids, by_id)
    if not cited:
        return "cites no message of its job"
    triple.source_ids = [turn.id for turn in cited]
    source = " ".join(turn.content for turn in cited)
    for name in (triple.subject, triple.object):
        degenerate = _degenerate(name, source)
        if degenerate:
            return degenerate
        unsupported = _unsupported(name, source, cited, allowed, min_support=1.0)
        if unsupported:
            return unsupported
    return None


def _degenerate(text: str, source: str) -> str | None:
    match = _DEGENERATE.search(text)
    if match and not _DEGENERATE.search(source):
        return f"degenerate output ({match.group(0)[:30]!r})"
    words = [w.casefold() for w in _words(text)]
    if len(words) >= 6 and len(set(words)) / len(words) < 0.5:
        return "degenerate output (the same words over and over)"
    if len(text) > 2 * len(source) + 40:
        return "longer than the messages it cites"
    return None


def _unsupported(
    text: str,
    source: str,
    cited: list[Turn],
    allowed: set[str],
    min_support: float = MIN_SUPPORT,
) -> str | None:
    """Why ``text`` is not supported by ``source``, or None."""
    said = {w.casefold() for w in _words(source)}
    stems = {_stem(w) for w in said}
    text, bad_date = _resolved_dates(text, cited)
    if bad_date:
        return bad_date
    for number in _NUMBER.findall(text):
        if number not in _NUMBER.findall(source):
            return f"the number {number} is in none of the cited messages"
    words = _words(text)
    for position, word in enumerate(words):
        folded = word.casefold()
        is_name = word[0].isupper() and (position > 0 or folded not in _PARAPHRASE)
        known = folded in said or folded in allowed or folded in _MONTHS
        if is_name and not known and _stem(folded) not in stems:
            return f"the name {word!r} is in none of the cited messages"
    content = [w.casefold() for w in words if not _NUMBER.fullmatch(w)]
    content = [w for w in content if w not in _PARAPHRASE and w not in allowed]
    if not content:
        return None
    supported = sum(1 for w in content if w in said or _stem(w) in stems or w in _MONTHS)
    if supported / len(content) < min_support:
        missing = [w for w in content if w not in said and _stem(w) not in stems][:4]
        return f"most of its words are in none of the cited messages ({', '.join(missing)})"
    return None


def _folded(text: str) -> set[str]:
    return {w.casefold() for w in _words(text)}


def _words(text: str) -> list[str]:
    """The words of ``text``, possessives dropped ("Maya's" is "Maya")."""
    return [_POSSESSIVE.sub("", w) for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    """A crude stem, so "hikes", "hiking" and "hiked" meet "hike"."""
    for suffix in ("'s", "\u2019s", "ing", "ies", "ied", "es", "ed", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _dates(cited: list[Turn]) -> list[datetime.date]:
    out = []
    for turn in cited:
        try:
            out.append(datetime.datetime.fromisoformat(turn.created_at.replace("Z", "+00:00")))
        except ValueError:
            continue
    return [moment.date() for moment in out]


def _resolved_dates(text: str, cited: list[Turn]) -> tuple[str, str | None]:
    """``text`` without the ISO dates and years a message's own date can explain (a date
    within a year of when it was said, as "yesterday" or "last month" resolve to), or the
    reason one cannot be explained."""
    said = _dates(cited)

    def near(day: datetime.date) -> bool:
        return any(abs((day - when).days) <= 400 for when in said)

    for match in _ISO_DATE.finditer(text):
        try:
            day = datetime.date.fromisoformat(match.group(0))
        except ValueError:
            return text, f"the date {match.group(0)} is not a date"
        if not near(day):
            return text, f"the date {match.group(0)} is in none of the cited messages"
    text = _ISO_DATE.sub(" ", text)
    years = {str(y) for when in said for y in (when.year - 1, when.year, when.year + 1)}
    return " ".join(w for w in text.split(" ") if w.strip(".,;:()") not in years), None
