"""Attribution: who a message is about (entity), which agent saw it (process), which thread.

An :class:`Attribution` is an immutable value. :class:`memori_cli.Memori` keeps the current one
in a :class:`contextvars.ContextVar`, so each thread and each asyncio task sees its own and a
call made for one user can never pick up another user's attribution.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from .errors import InvalidIdError

MAX_ID_LENGTH = 200
DEFAULT_ENTITY = "default"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def validate_id(value: object, field: str) -> str:
    """Return ``value`` if it is a usable id, else raise :class:`InvalidIdError` naming ``field``.

    Ids are non-empty strings of at most 200 characters without control characters. They are
    only ever passed to SQL as parameters, so quotes and SQL keywords are fine.
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"{field}: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidIdError(f"{field}: must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{field}: {len(value)} characters long; at most 200 allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidIdError(f"{field}: not valid Unicode text (lone surrogate)") from None
    match = _CONTROL.search(value)
    if match:
        raise InvalidIdError(
            f"{field}: contains a control character (U+{ord(match.group()):04X}) at "
            f"position {match.start()}"
        )
    return value


def new_session_id() -> str:
    """A fresh, unique session id."""
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class Attribution:
    """Who and where: ``entity_id`` (the user), ``process_id`` (the agent), ``session_id``."""

    entity_id: str = DEFAULT_ENTITY
    process_id: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        validate_id(self.entity_id, "entity_id")
        if self.process_id is not None:
            validate_id(self.process_id, "process_id")
        if self.session_id is not None:
            validate_id(self.session_id, "session_id")

    def replace(self, **changes: str | None) -> Attribution:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
