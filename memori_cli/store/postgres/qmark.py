"""The store's SQL (SQLite's ``?`` placeholders) on a psycopg connection.

The shared store modules write their statements once, with DB-API ``qmark`` placeholders
(``?``, and SQLite's numbered ``?NNN`` where one value is used twice). psycopg speaks
``format`` (``%s``). :class:`QmarkConnection` wraps a psycopg connection so the same
statement runs on both engines: each ``?`` becomes ``%s`` (a numbered one repeats its value),
a literal ``%`` doubles, and ``?`` inside a quoted literal or identifier stays what it is.
The translation of a statement is cached, so a statement run often is translated once.

The backend's own SQL (:mod:`memori_cli.store.postgres`) is written for psycopg and runs on
the connection underneath (:attr:`QmarkConnection.raw`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """``sql`` in psycopg's style, and the index of the value each ``%s`` takes (None when
    they take the values in order, the common case of plain ``?``).

    As SQLite numbers them: ``?NNN`` is value NNN, a plain ``?`` one more than the largest
    number given so far.
    """
    out: list[str] = []
    order: list[int] = []
    numbered = False
    largest = 0
    i, n = 0, len(sql)
    quote = ""
    while i < n:
        ch = sql[i]
        if quote:
            if ch == "%":
                out.append("%%")
            else:
                out.append(ch)
                if ch == quote:
                    quote = ""
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "?":
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            if j > i + 1:
                index = int(sql[i + 1 : j])
                numbered = True
                i = j - 1
            else:
                index = largest + 1
            largest = max(largest, index)
            order.append(index - 1)
            out.append("%s")
        else:
            out.append(ch)
        i += 1
    return "".join(out), (tuple(order) if numbered else None)


def _values(order: tuple[int, ...] | None, parameters: Any) -> Any:
    if order is None:
        return parameters
    values = list(parameters)
    return [values[k] for k in order]


class QmarkConnection:
    """A psycopg connection that runs the store's ``?`` SQL (see the module docstring).

    Everything else (``info``, ``autocommit``, ``close``, ``cursor``) is the connection's own.
    """

    __slots__ = ("raw",)

    #: The engine (set by :mod:`memori_cli.store.postgres`): shared code that is handed a
    #: connection asks it what differs (``memori_cli.store.backend.backend_of``).
    backend: Any = None

    def __init__(self, raw: Any):
        #: The psycopg connection underneath (the backend's own SQL runs on it).
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        """Run one ``?`` statement; psycopg's cursor."""
        query, order = translate(sql)
        # Always a sequence: with None psycopg would leave a doubled %% as it is.
        return self.raw.execute(query, _values(order, parameters or ()))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one ``?`` statement for each of ``rows``; the cursor (``rowcount``: all rows
        the statements changed)."""
        query, order = translate(sql)
        cursor = self.raw.cursor()
        cursor.executemany(query, [_values(order, row) for row in rows])
        return cursor

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def unwrap(conn: Any) -> Any:
    """The psycopg connection behind what the store hands the backend: a
    :class:`QmarkConnection`, or a store ``Tx`` over one (the backend's SQL is psycopg's)."""
    if isinstance(conn, QmarkConnection):
        return conn.raw
    inner = getattr(conn, "connection", None)  # a store Tx
    if isinstance(inner, QmarkConnection):
        return inner.raw
    return conn
