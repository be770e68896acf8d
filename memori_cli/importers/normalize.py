"""Validation shared by every format: one raw message in, a storable NewMessage out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .. import dates
from ..attribution import validate_id
from ..errors import InvalidIdError
from ..redact import redact, redact_id
from ..store import ROLES, NewMessage
from .formats import RawMessage, RecordError

ROLE_ALIASES = {"human": "user", "developer": "system", "function": "tool", "ai": "assistant"}
MAX_CONTENT_CHARS = 10_000_000
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class Defaults:
    """Attribution for records whose file does not set it."""

    entity: str
    session: str
    process: str | None = None


def parse_timestamp(value: Any) -> str | None:
    """ISO-8601 text or epoch seconds as a UTC ISO-8601 string (naive times are taken as UTC;
    see :mod:`memori_cli.dates`)."""
    try:
        return dates.to_iso(value)
    except ValueError:
        raise RecordError(
            f"field 'timestamp': expected ISO-8601 text or epoch seconds, got {value!r:.60}"
        ) from None


def content_text(value: Any) -> str | None:
    """Message content as text: a string, or a list of parts whose text is joined."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    raise RecordError(f"field 'content': expected text, got {type(value).__name__}")


def _clean(text: str) -> str:
    """Drop NUL characters and replace lone surrogates, which SQLite text cannot hold."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _optional_id(raw: RawMessage, key: str, fallback: str | None) -> str | None:
    value = raw.get(key)
    if value is None:
        return fallback
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        return redact_id(validate_id(value, f"field '{key}'"))
    except InvalidIdError as exc:
        raise RecordError(str(exc)) from None


def normalize(raw: RawMessage, defaults: Defaults) -> NewMessage | None:
    """A validated, redacted message, or None for one with no text (e.g. a bare tool call).

    Every text field from the record is redacted: content and name as text; session, entity,
    process and external id with :func:`~memori_cli.redact.redact_id`, which keeps two
    secret-bearing ids apart and gives the same id the same text on every import.

    Raises :class:`RecordError` naming the field at fault. The content hash is filled in by
    the caller, which knows the message's place in its session.
    """
    role = raw.get("role")
    if not isinstance(role, str):
        raise RecordError("field 'role': missing" if role is None else "field 'role': not text")
    role = ROLE_ALIASES.get(role.lower(), role.lower())
    if role not in ROLES:
        raise RecordError(
            f"field 'role': must be one of {', '.join(ROLES)}, got {raw['role']!r:.40}"
        )
    content = content_text(raw.get("content"))
    if content is None or not content.strip():
        return None
    if len(content) > MAX_CONTENT_CHARS:
        raise RecordError(
            f"field 'content': {len(content):,} characters; at most {MAX_CONTENT_CHARS:,} allowed"
        )
    name = raw.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise RecordError(f"field 'name': expected text, got {type(name).__name__}")
        name = redact(_clean(" ".join(name.split())))[:MAX_NAME_CHARS] or None
    external_id = raw.get("id")
    if external_id is not None and not (isinstance(external_id, (str, int)) and str(external_id)):
        raise RecordError(
            f"field 'id': expected text or a number, got {type(external_id).__name__}"
        )
    return NewMessage(
        entity_id=_optional_id(raw, "entity", defaults.entity) or defaults.entity,
        session=_optional_id(raw, "session", defaults.session) or defaults.session,
        process_id=_optional_id(raw, "process", defaults.process),
        role=role,
        content=redact(_clean(content)),
        name=name,
        created_at=parse_timestamp(raw.get("timestamp")),
        external_id=None
        if external_id is None
        else redact_id(_clean(str(external_id)))[:MAX_NAME_CHARS],
        content_hash="",
    )


def content_hash(message: NewMessage, occurrence: int, scope: str = "") -> str:
    """The dedup key of a message without an external id, within its session.

    ``occurrence`` counts identical messages met before in the same session of the same
    source, so a repeated "thanks" is kept while re-importing the same file adds nothing.
    ``scope`` names the source when it is not a file: a fresh one per call of
    ``add_messages`` keeps the same words said in two calls two messages. An empty scope gives
    the key imports have always had, so a file imported before is still recognised.
    """
    parts = (
        message.role,
        message.name or "",
        message.created_at or "",
        str(occurrence),
        message.content,
    )
    key = "\x1f".join((scope, *parts) if scope else parts)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Occurrences:
    """Fills in content hashes, numbering identical messages within each session.

    One instance spans one source: a whole import (its batches and interleaved sessions
    alike), or one ``add_messages`` call with its own ``scope``. The numbering depends on the
    source alone, so the same file always gives the same keys. It keeps a count per distinct
    message of each session, keyed by a 64-bit prefix of its hash to stay small (were two
    messages to share one, the later would be numbered 1: still unique, still repeatable).
    """

    def __init__(self, scope: str = "") -> None:
        self._scope = scope
        self._seen: dict[tuple[str, str], dict[int, int]] = {}

    def stamp(self, message: NewMessage) -> None:
        """Set ``message.content_hash`` (messages must come in their session's order)."""
        base = content_hash(message, 0, self._scope)
        if message.external_id is not None:
            # Its id is what recognises it (the hash index leaves such rows out), so it is not
            # counted: exports whose every message has an id cost no memory here.
            message.content_hash = base
            return
        seen = self._seen.setdefault((message.entity_id, message.session), {})
        prefix = int(base[:16], 16)
        occurrence = seen[prefix] = seen.get(prefix, -1) + 1
        message.content_hash = (
            content_hash(message, occurrence, self._scope) if occurrence else base
        )
