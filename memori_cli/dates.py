"""Dates and times as the library takes them, in the one form the store writes.

The store writes every time as UTC ISO-8601 text (``2024-05-01T10:30:00+00:00``, what
``datetime.isoformat()`` gives), and its filters compare times as text. So a bound must be in
that form before it reaches SQL: ``"yesterday"`` or ``"May 2024"`` compared as text match
nothing, or the wrong rows, without a word, and ``2024-05-01T12:00:00+02:00`` would be read as
noon UTC. Everything that takes a time (recall's ``since``, ``until`` and ``as_of``, memories'
and the graph's ``as_of``, the importers' timestamps) parses it here.

Accepted: ISO-8601 text (a date, or a date and time; a trailing ``Z`` is UTC, no offset is
taken as UTC), a :class:`datetime.datetime` or :class:`datetime.date` (a date is its
midnight, UTC), and epoch seconds. ``None`` and ``""`` mean "no bound".
"""

from __future__ import annotations

import datetime

from .errors import InvalidQueryError

__all__ = ["Moment", "moment", "to_iso", "window"]

#: What a time argument may be given as (epoch seconds are accepted too).
Moment = str | datetime.date

# Enough of a bad value to recognise it; a hostile megabyte is not echoed back.
_SHOWN = 80


def _parse(value: object) -> datetime.datetime | None:
    """``value`` as an aware UTC datetime; None for None or ""; ValueError if it is no time."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, datetime.datetime):
            moment = value
        elif isinstance(value, datetime.date):
            moment = datetime.datetime(value.year, value.month, value.day)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            moment = datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
        elif isinstance(value, str):
            text = value.strip()
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            moment = datetime.datetime.fromisoformat(text)
        else:
            raise TypeError
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.astimezone(datetime.timezone.utc)
    except (ValueError, TypeError, OverflowError, OSError):
        raise ValueError(f"expected an ISO-8601 date or time, got {value!r:.{_SHOWN}}") from None


def to_iso(value: object) -> str | None:
    """``value`` in the store's form (UTC ISO-8601 text), None for None or "".

    Raises ``ValueError`` when it is not a time (see the module docstring for what is)."""
    moment = _parse(value)
    return None if moment is None else moment.isoformat()


def moment(value: object, argument: str) -> str | None:
    """:func:`to_iso`, or an :class:`InvalidQueryError` naming ``argument`` and the value."""
    parsed = _checked(value, argument)
    return None if parsed is None else parsed.isoformat()


def window(since: object, until: object) -> tuple[str | None, str | None]:
    """``(since, until)`` in the store's form, or an :class:`InvalidQueryError` when either
    is not a time or ``since`` is after ``until`` (only ever a mistake). Equal bounds are
    allowed: ``until`` is exclusive, so they find nothing, as asked."""
    start, end = _checked(since, "since"), _checked(until, "until")
    if start is not None and end is not None and start > end:
        raise InvalidQueryError(
            "since", since, f"{start.isoformat()} is after until ({end.isoformat()})"
        )
    return (
        None if start is None else start.isoformat(),
        None if end is None else end.isoformat(),
    )


def _checked(value: object, argument: str) -> datetime.datetime | None:
    try:
        return _parse(value)
    except ValueError as exc:
        raise InvalidQueryError(argument, value, str(exc)) from None
