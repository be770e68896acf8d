"""RuleExtractor: deterministic extraction with no model, so the default install remembers
something real. It reads first-person statements in user turns: names, where people live and
work, family and other people in their life, likes and dislikes, diets and allergies, skills
being learned or held, ages and birthdays, and dated events.

It is deliberately conservative (questions are skipped, objects are cut at the clause) and
records itself as ``rules@VERSION`` on every memory it makes.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections import Counter
from collections.abc import Callable

from ..parts import DANGLING, incomplete
from .extract import Extraction, MemoryDraft, TripleDraft, Turn

VERSION = 2

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# A capitalised name of a place or organisation: "Lisbon", "Tidepool Labs", "New York".
_PROPER = r"(?P<x>[A-Z][\w'&-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][\w'&-]*){0,3})"
_PERSON = r"(?P<x>[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)"
# An object phrase, cut where the clause ends.
_OBJECT = (
    r"(?P<x>[^.,;:!?()\n]{2,80}?)(?=\s+(?:and|but|because|since|though|although|so|when|"
    r"while|if|once|which|who|as|than)\b|\s*[.,;:!?()\n]|\s+[-\u2013\u2014]+\s|\s*$)"
)
_DATE = _OBJECT.replace("?P<x>", "?P<date>")
_TIME_WORDS = re.compile(
    r"\s*\b(?:yesterday|today|tonight|this morning|last (?:night|week|weekend|month|year))\b",
    re.IGNORECASE,
)
_I = r"(?:^|(?<=[\s,;:]))(?i:i)"
_RELATIONS = (
    "wife|husband|partner|boyfriend|girlfriend|fiancee|fiance|son|daughter|mother|mom|mum|"
    "father|dad|brother|sister|grandmother|grandma|grandfather|grandpa|aunt|uncle|cousin|"
    "best friend|friend|roommate|manager|boss|colleague|coworker|teacher|therapist|doctor|"
    "dog|cat|puppy|kitten"
)
_ONE_AT_A_TIME = {
    "wife",
    "husband",
    "partner",
    "boyfriend",
    "girlfriend",
    "fiancee",
    "fiance",
    "manager",
    "boss",
    "therapist",
}
_ANIMALS = {"dog", "cat", "puppy", "kitten"}
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_NOT_NAMES = {
    "Not",
    "So",
    "Just",
    "Also",
    "Really",
    "Very",
    "Still",
    "Here",
    "Sorry",
    "Sure",
    "Fine",
    "Good",
    "Great",
    "Happy",
    "Glad",
    "Back",
    "Done",
    "Okay",
    "Ok",
    "Going",
    "Trying",
    "Thinking",
    "Planning",
    "Learning",
    "Working",
    "Living",
    "Excited",
    "English",
    "French",
    "German",
    "Spanish",
    "Portuguese",
    "Italian",
    "Vegetarian",
    "Vegan",
    "Tired",
    "Busy",
    "Home",
    "In",
    "At",
    "On",
    "From",
    "With",
    "A",
    "An",
    "The",
    "Allergic",
    "Into",
    "Originally",
    "Now",
    "Currently",
}


@dataclasses.dataclass(frozen=True)
class _Found:
    turn: Turn
    about: str
    match: re.Match[str]


_Rule = tuple[re.Pattern[str], Callable[[_Found], tuple[list[MemoryDraft], list[TripleDraft]]]]


# An object that is only a pronoun for something said before ("I loved that", "I painted it"),
# that belongs to the listener ("I like how you tell your stories"), or that is no object at
# all: a memory about the speaker cannot hold it.
_VAGUE_OBJECT = re.compile(
    r"^(?:it|it's|that|this|these|those|them)$|\b(?:you|your|yours)\b"
    # a verb, "better" or nothing where the object should be ("what I like is awesome",
    # "I like it better", "I like - it's got a great layout")
    r"|^(?:is|was|are|were|better)\b|^[-\u2013\u2014]"
    # only a time ("the parade I went to a few weeks ago")
    r"|^(?:about |around |almost |over |nearly |just |only )?(?:a|an|a few|a couple of|some|"
    r"several|\d+|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(?:minutes?|hours?|days?|weeks?|months?|years?)\s+ago$",
    re.IGNORECASE,
)


# What a user likes in a reply ("I like these ideas", "I love your suggestions"): no lasting
# preference.
_REPLY_OBJECT = re.compile(
    r"^(?:the|these|those|this|that|all the|all these|both)\s+(?:ideas?|suggestions?|tips?|"
    r"recommendations?|options?|advice|points?|examples?|ones?|list|plan)$",
    re.IGNORECASE,
)


def _clean(text: str, about: str) -> str:
    """An object phrase in the third person: "my" becomes the speaker's."""
    text = re.sub(r"\bmy\b", f"{about}'s", text.strip(), flags=re.IGNORECASE)
    text = re.sub(r"\bmyself\b|\bme\b", about, text, flags=re.IGNORECASE)
    words = text.split()[:10]
    while words and words[-1].casefold().strip(",.;:!-") in DANGLING:
        words.pop()  # "... the time of": cut after ten words, not mid-phrase
    return " ".join(words)


def _dated_object(found: _Found) -> tuple[str, str] | None:
    """An event's object phrase and its date (" on 2024-05-07") from the turn's time words,
    or None when no object is left ("the stuff I'm going through"; "figurines I bought
    yesterday remind me...": only time words) or it says nothing by itself (see
    :data:`_VAGUE_OBJECT`)."""
    thing = _clean(found.match["x"], found.about)
    date = _when(found.turn, found.match.group(0))
    if date:
        if _TIME_WORDS.match(thing):
            return None
        thing = _clean(_TIME_WORDS.sub("", thing), found.about)
    if not thing or _VAGUE_OBJECT.search(thing):
        return None
    return thing, date


def _memory(
    found: _Found, kind: str, content: str, slot: str | None = None, confidence: float = 0.7
) -> MemoryDraft:
    return MemoryDraft(
        kind=kind,
        content=content,
        about=found.about,
        source_ids=[found.turn.id],
        confidence=confidence,
        slot=slot,
    )


def _triple(
    found: _Found,
    predicate: str,
    obj: str,
    object_type: str,
    subject: str | None = None,
    subject_type: str = "person",
    functional: bool = False,
) -> TripleDraft:
    return TripleDraft(
        subject=subject or found.about,
        subject_type=subject_type,
        predicate=predicate,
        object=obj,
        object_type=object_type,
        source_ids=[found.turn.id],
        functional=functional,
    )


def _name(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    name = f.match["x"]
    if name.split()[0] in _NOT_NAMES:
        return [], []
    return [_memory(f, "attribute", f"{f.about}'s name is {name}", "name", 0.9)], []


def _lives(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    place = f.match["x"]
    memories = [_memory(f, "fact", f"{f.about} lives in {place}", "lives_in", 0.8)]
    triples = [_triple(f, "lives_in", place, "place", functional=True)]
    if "moved" in f.match.group(0).lower():
        date = _when(f.turn, f.match.string)
        memories.append(_memory(f, "event", f"{f.about} moved to {place}{date}"))
    return memories, triples


def _moved_from(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    place = f.match["x"]
    return (
        [_memory(f, "attribute", f"{f.about} previously lived in {place}", f"lived_in:{place}")],
        [_triple(f, "lived_in", place, "place")],
    )


def _from(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    place = f.match["x"]
    return (
        [_memory(f, "attribute", f"{f.about} is from {place}", "from", 0.8)],
        [_triple(f, "from", place, "place", functional=True)],
    )


def _works_at(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    org = f.match["x"]
    memories = [_memory(f, "fact", f"{f.about} works at {org}", "works_at", 0.8)]
    triples = [_triple(f, "works_at", org, "organization", functional=True)]
    role = f.match.groupdict().get("role")
    if role:
        memories.append(_memory(f, "attribute", f"{f.about} is a {role}", "occupation", 0.8))
        triples.append(_triple(f, "occupation", role, "concept", functional=True))
    return memories, triples


def _works_as(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    role = _clean(f.match["x"], f.about)
    return (
        [_memory(f, "attribute", f"{f.about} works as {role}", "occupation", 0.8)],
        [_triple(f, "occupation", role, "concept", functional=True)],
    )


def _relation(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    relation, name = f.match["rel"].lower(), f.match["x"]
    if name.split()[0] in _NOT_NAMES:
        return [], []
    one = relation in _ONE_AT_A_TIME
    slot = f"relation:{relation}" if one else f"relation:{relation}:{name.lower()}"
    kind = "animal" if relation in _ANIMALS else "person"
    return (
        [_memory(f, "fact", f"{f.about}'s {relation} is {name}", slot, 0.8)],
        [_triple(f, relation.replace(" ", "_"), name, kind, functional=one)],
    )


def _birthday(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    who = f.match.groupdict().get("who")
    date = f.match["date"].strip()
    subject = who or f.about
    memories = [_memory(f, "attribute", f"{subject}'s birthday is {date}", f"birthday:{subject}")]
    return memories, [_triple(f, "birthday", date, "event", subject=subject, functional=True)]


def _age(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    return [_memory(f, "attribute", f"{f.about} is {f.match['x']} years old", "age", 0.8)], []


def _preference(positive: bool) -> Callable[[_Found], tuple[list[MemoryDraft], list[TripleDraft]]]:
    def rule(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
        thing = _clean(f.match["x"], f.about)
        if (
            len(thing) < 2
            or thing.lower() == "to"
            or _VAGUE_OBJECT.search(thing)
            or _REPLY_OBJECT.search(thing)
        ):
            return [], []
        verb = f.match.groupdict().get("verb", "")
        if positive and verb and verb.lower() == "prefer":
            text = f"{f.about} prefers {thing}"
        else:
            text = f"{f.about} {'likes' if positive else 'dislikes'} {thing}"
        predicate = "likes" if positive else "dislikes"
        # One slot per thing: "I don't like X any more" supersedes "I like X".
        return (
            [_memory(f, "preference", text, f"pref:{thing.lower()}")],
            [_triple(f, predicate, thing, "thing")],
        )

    return rule


def _favourite(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    category, thing = f.match["cat"].strip().lower(), _clean(f.match["x"], f.about)
    return (
        [
            _memory(
                f,
                "preference",
                f"{f.about}'s favourite {category} is {thing}",
                f"favourite:{category}",
                0.8,
            )
        ],
        [_triple(f, f"favourite_{category.replace(' ', '_')}", thing, "thing", functional=True)],
    )


def _diet(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    diet = f.match["x"].lower()
    return [_memory(f, "attribute", f"{f.about} is {diet}", "diet", 0.8)], []


def _allergy(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    thing = _clean(f.match["x"], f.about)
    return (
        [
            _memory(
                f, "attribute", f"{f.about} is allergic to {thing}", f"allergy:{thing.lower()}", 0.9
            )
        ],
        [_triple(f, "allergic_to", thing, "thing")],
    )


def _skill(template: str) -> Callable[[_Found], tuple[list[MemoryDraft], list[TripleDraft]]]:
    def rule(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
        thing = _clean(f.match["x"], f.about)
        return (
            [
                _memory(
                    f, "skill", template.format(about=f.about, x=thing), f"skill:{thing.lower()}"
                )
            ],
            [_triple(f, "has_skill", thing, "activity")],
        )

    return rule


_EVENT_VERBS = (
    "went to|visited|attended|signed up for|started|finished|graduated from|joined|adopted|"
    "bought|ran|completed|got married|got engaged|got promoted|got a new|travelled to|"
    "traveled to|flew to|won|lost|met|celebrated|painted|took|gave|had"
)


# What follows a verb that takes an object when the object was left out ("the photo I took in
# my backyard", "I attended at the museum").
_NO_OBJECT = re.compile(r"^(?:in|at|on|from|with|for|by|alone|there|here)\b", re.I)


def _event(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    verb, dated = f.match["verb"].lower(), _dated_object(f)
    if dated is None or (verb == "had" and not dated[1]):
        return [], []  # "I had a sandwich" is not an event worth keeping
    thing, date = dated
    if not verb.endswith((" to", " for", " from")) and _NO_OBJECT.search(thing):
        return [], []
    return [_memory(f, "event", f"{f.about} {verb} {thing}{date}", None, 0.6)], []


def _plan(f: _Found) -> tuple[list[MemoryDraft], list[TripleDraft]]:
    dated = _dated_object(f)
    if dated is None:
        return [], []
    thing, date = dated
    # In the speaker's own words: "is going to a conference", "is planning to move".
    said = f"{f.match['verb'].lower()} {(f.match['to'] or '').strip().lower()}".strip()
    return [_memory(f, "event", f"{f.about} is {said} {thing}{date}", None, 0.6)], []


def _when(turn: Turn, text: str) -> str:
    """A date for relative time words in ``text``, from the message's own time."""
    lowered = text.lower()
    try:
        said = datetime.datetime.fromisoformat(turn.created_at.replace("Z", "+00:00")).date()
    except ValueError:
        return ""
    offsets = {"yesterday": 1, "last night": 1, "today": 0, "this morning": 0, "tonight": 0}
    for words, days in offsets.items():
        if words in lowered:
            return f" on {(said - datetime.timedelta(days=days)).isoformat()}"
    for words, days in (
        ("last week", 7),
        ("last weekend", 7),
        ("last month", 30),
        ("last year", 365),
    ):
        if words in lowered:
            return f" around {(said - datetime.timedelta(days=days)).isoformat()}"
    if re.search(rf"\b(?:in|on|by)\s+(?:{_MONTHS}|\d{{4}})", lowered):
        return f" (said on {said.isoformat()})"
    return ""


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _rx_case(pattern: str) -> re.Pattern[str]:
    """Case matters for the capitalised capture; the lead words still match any case."""
    return re.compile(pattern)


_RULES: list[_Rule] = [
    (_rx_case(rf"(?i:\b(?:my name is|call me))\s+{_PERSON}"), _name),
    (
        _rx_case(
            rf"(?:^|(?i:\bhi|hello|hey)[!,.]?\s+)(?i:i'?m|i am)\s+{_PERSON}\b(?!\s+(?i:at|in)\b)"
        ),
        _name,
    ),
    (_rx_case(rf"{_I}(?i:\s+(?:now\s+|currently\s+|still\s+)?live\s+in)\s+{_PROPER}"), _lives),
    (
        _rx_case(
            rf"{_I}(?i:(?:'ve|\s+have)?\s+(?:just\s+|recently\s+|finally\s+)?moved\s+to)\s+"
            rf"{_PROPER}"
        ),
        _lives,
    ),
    (_rx_case(rf"{_I}(?i:'m|\s+am)\s+(?i:now\s+)?(?i:living|based)\s+in\s+{_PROPER}"), _lives),
    (
        _rx_case(rf"(?i:moved\s+to)\s+[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*\s+(?i:from)\s+{_PROPER}"),
        _moved_from,
    ),
    (_rx_case(rf"{_I}(?i:'m|\s+am)\s+(?i:originally\s+)?(?i:from)\s+{_PROPER}"), _from),
    (
        _rx_case(rf"{_I}(?i:\s+(?:work|am\s+working|'m\s+working)\s+(?:at|for))\s+{_PROPER}"),
        _works_at,
    ),
    (
        _rx_case(
            rf"{_I}(?i:'m|\s+am)\s+(?i:an?)\s+(?P<role>[a-z][a-z -]{{2,40}}?)\s+"
            rf"(?i:at|for)\s+{_PROPER}"
        ),
        _works_at,
    ),
    (_rx(rf"{_I}\s+work\s+as\s+(?:an?\s+)?{_OBJECT}"), _works_as),
    (
        _rx_case(
            rf"(?i:\bmy)\s+(?P<rel>(?i:{_RELATIONS}))(?:'s\s+name\s+is|,)?\s+"
            rf"(?:(?i:is)\s+)?(?:(?i:named|called)\s+)?{_PERSON}\b"
        ),
        _relation,
    ),
    (
        _rx_case(
            rf"{_I}(?i:\s+have\s+an?)\s+(?P<rel>(?i:{_RELATIONS}))\s+(?i:named|called)\s+"
            rf"{_PERSON}"
        ),
        _relation,
    ),
    (
        _rx_case(
            r"(?i:\bmy)\s+(?:(?i:[a-z ]+?)\s+)?(?P<who>[A-Z][a-z]+)'s\s+(?i:birthday\s+is)\s+"
            r"(?:(?i:on)\s+)?" + _DATE
        ),
        _birthday,
    ),
    (_rx(r"\bmy\s+birthday\s+is\s+(?:on\s+)?" + _DATE), _birthday),
    (_rx(rf"{_I}(?:'m|\s+am)\s+(?P<x>\d{{1,3}})\s+(?:years\s+old|yo)\b"), _age),
    (
        _rx(
            rf"{_I}\s+(?:really\s+|absolutely\s+|also\s+|just\s+|totally\s+)?"
            rf"(?P<verb>like|love|enjoy|adore|prefer)\s+{_OBJECT}"
        ),
        _preference(True),
    ),
    (
        _rx(
            rf"{_I}'?m\s+(?:really\s+|also\s+)?(?:into|a\s+fan\s+of|a\s+big\s+fan\s+of)\s+{_OBJECT}"
        ),
        _preference(True),
    ),
    (
        _rx(
            rf"{_I}\s+(?:really\s+|absolutely\s+|also\s+)?(?:don'?t\s+like|do\s+not\s+like|dislike|"
            rf"hate|can'?t\s+stand|cannot\s+stand)\s+{_OBJECT}"
        ),
        _preference(False),
    ),
    (_rx(rf"\bmy\s+favou?rite\s+(?P<cat>[a-z ]{{2,30}}?)\s+is\s+{_OBJECT}"), _favourite),
    (
        _rx(
            rf"{_I}(?:'m|\s+am)\s+(?:a\s+)?(?:strict\s+)?(?P<x>vegetarian|vegan|pescatarian|"
            rf"gluten-free|lactose intolerant|teetotal)\b"
        ),
        _diet,
    ),
    (_rx(rf"{_I}(?:'m|\s+am)\s+(?:very\s+|severely\s+)?allergic\s+to\s+{_OBJECT}"), _allergy),
    (
        _rx(
            rf"{_I}(?:'m|\s+am)\s+(?:currently\s+|now\s+|also\s+)?(?:learning|studying|practi[cs]ing)"
            rf"\s+{_OBJECT}"
        ),
        _skill("{about} is learning {x}"),
    ),
    (
        _rx(
            rf"{_I}(?:'m|\s+am)\s+(?:really\s+|pretty\s+|very\s+)?(?:good|great|skilled|fluent)\s+"
            rf"(?:at|in)\s+{_OBJECT}"
        ),
        _skill("{about} is good at {x}"),
    ),
    (
        _rx(
            rf"{_I}\s+(?:can|know\s+how\s+to)\s+(?P<x>(?:speak|play|cook|bake|code|program|draw|"
            rf"paint|swim|ski|surf|drive|sing|dance|knit|sew)\b[^.,;:!?()\n]{{0,60}}?)"
            rf"(?=\s+(?:and|but|so)\b|\s*[.,;:!?()\n]|\s*$)"
        ),
        _skill("{about} can {x}"),
    ),
    (
        _rx(
            rf"{_I}\s+(?:speak|play)\s+(?P<x>(?:the\s+)?(?:[A-Z][a-z]+|piano|guitar|violin|cello|"
            rf"drums|chess|tennis|football|soccer|basketball|volleyball|golf|bass))\b"
        ),
        _skill("{about} plays or speaks {x}"),
    ),
    (
        _rx(rf"{_I}(?:\s+(?:just|recently|finally|also))?\s+(?P<verb>{_EVENT_VERBS})\s+{_OBJECT}"),
        _event,
    ),
    (_rx(rf"{_I}(?:'m|\s+am)\s+(?P<verb>planning|going)\s+(?P<to>to\s+|on\s+)?{_OBJECT}"), _plan),
]


class RuleExtractor:
    """Deterministic first-person rules; no model needed."""

    name = f"rules@{VERSION}"

    def extract(
        self,
        turns: list[Turn],
        *,
        summary: str | None = None,
        between: Callable[[], None] | None = None,
    ) -> Extraction:
        """Memories and triples from the user turns of ``turns``, and an extractive summary."""
        result = Extraction()
        for turn in turns:
            if turn.role != "user":
                continue  # in an assistant turn "I" is the assistant
            for sentence in _SENTENCE.split(turn.content[:20_000]):
                sentence = sentence.strip()
                if not sentence or sentence.endswith("?"):
                    continue
                for pattern, make in _RULES:
                    for match in pattern.finditer(sentence):
                        memories, triples = make(_Found(turn, turn.speaker, match))
                        # A phrase the rules could not complete is no memory (an empty
                        # object, a cut-off clause): the grounding gate would refuse it.
                        result.memories.extend(m for m in memories if not incomplete(m.content))
                        result.triples.extend(t for t in triples if t.subject and t.object)
        result.summary = _summary(turns, result, summary)
        return result


def _summary(turns: list[Turn], result: Extraction, previous: str | None) -> str | None:
    """A rolling extractive summary: what was learned (newest last) and the main topics."""
    learned = [line[2:] for line in (previous or "").splitlines() if line.startswith("- ")]
    for memory in result.memories:
        if memory.content not in learned:
            learned.append(memory.content)
    topics = Counter(
        word
        for turn in turns
        for word in re.findall(r"[a-z][a-z'-]{4,}", turn.content.lower()[:5000])
        if word not in _COMMON
    )
    old_topics = next(
        (line for line in (previous or "").splitlines() if line.startswith("Topics:")), ""
    )
    new = [word for word, _ in topics.most_common(6)]
    merged = list(dict.fromkeys(new + [w.strip() for w in old_topics[7:].split(",") if w.strip()]))
    lines = [f"Topics: {', '.join(merged[:10])}"] if merged else []
    lines += [f"- {line}" for line in learned[-12:]]
    return "\n".join(lines) or previous


_COMMON = set(
    """about after again being could doing going great really right should since sounds still
    thank thanks there these thing things think those though today where which while would
    yeah years maybe something anything everything always never other their there's that's
    what's you're i've i'll don't can't didn't doesn't isn't wasn't won't it's let's""".split()
)
