"""What a message is indexed with of the turn before it (its ``context`` column)."""

from __future__ import annotations

#: How much of the turn before it a message is indexed with (its ``context``): the last words,
#: since a reply answers how the previous turn ended ("What did the race teach you?" -> "It
#: taught me self-acceptance"). The context is an FTS column weighted below the message's own
#: words (see the backend's lexical_messages). Measured on both development sets, R@10 (LoCoMo /
#: LongMemEval): without it 0.751 / 0.901; the last 15 words 0.786 / 0.906, 30 words 0.792 /
#: 0.906, 60 words 0.792 / 0.889, the whole turn 0.792 / 0.869 (a user's line after a long
#: assistant reply then matches everything the reply said).
CONTEXT_WORDS = 30
#: ... and at most this many characters of them: thirty words of chat are about 200, while a
#: pasted blob with no spaces is one "word" of any size, which must not be stored twice.
CONTEXT_CHARS = 400


def reply_context(previous: str | None) -> str | None:
    """What a message is indexed with of the turn before it: that turn's last
    :data:`CONTEXT_WORDS` words, at most :data:`CONTEXT_CHARS` characters of them (None for a
    session's first message)."""
    if previous is None:
        return None
    tail = " ".join(previous.split()[-CONTEXT_WORDS:])
    if len(tail) > CONTEXT_CHARS:
        tail = tail[-CONTEXT_CHARS:]
        # Whole words only, where the cut leaves any.
        tail = tail.split(" ", 1)[1] if " " in tail else tail
    return tail
