"""Streaming readers: JSONL lines and top-level JSON arrays, in bounded memory.

Both decode UTF-8 with ``surrogateescape``, so an invalid byte never stops the reader: the line
or array element holding it is reported (with its line number) and the rest is read on. So is
JSON that is well formed but past the parser's limits (nesting deeper than Python's recursion
limit, an integer of more digits than Python converts): see :func:`loads`.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

_BAD_BYTES = re.compile("[\udc80-\udcff]")
_WS = re.compile(r"[ \t\r\n]*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_TAIL = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # after the opening quote
_NUMBER = re.compile(r"-?[0-9][0-9.eE+-]*")
_CHUNK = 1 << 20
# An array element may grow the buffer to this size before we give up on it.
MAX_ELEMENT_CHARS = 512 * 1024 * 1024


@dataclass
class Item:
    """One line of a JSONL file or one element of a JSON array: its value or why not.

    ``limit`` marks a record that is one whole JSON value the parser would not build (see
    :class:`JSONLimitError`), as opposed to broken syntax.
    """

    line: int
    value: Any = None
    error: str | None = None
    limit: bool = False


class JSONLimitError(ValueError):
    """Well-formed JSON that the parser refuses to build: nested too deeply, or holding an
    integer longer than Python converts. The message is the reason, ready for a report."""


def limit_reason(exc: BaseException) -> str | None:
    """Why ``json`` gave up on otherwise valid JSON, or None for any other error.

    The C decoder recurses once per nesting level, so a line of ``[[[[...`` raises
    RecursionError; an integer past ``sys.get_int_max_str_digits()`` raises a plain
    ValueError (not a JSONDecodeError) that says so.
    """
    if isinstance(exc, RecursionError):
        return f"invalid JSON: nested too deeply (more than {sys.getrecursionlimit():,} levels)"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        # Python 3.10.7 added the limit and its getter; typeshed has the getter from 3.11.
        digits = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        return f"invalid JSON: an integer of more than {digits:,} digits"
    return None


def loads(text: str) -> Any:
    """``json.loads``, raising :class:`JSONLimitError` where the parser hits a limit.

    Syntax errors still raise ``json.JSONDecodeError``; both are ValueErrors.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as exc:
        reason = limit_reason(exc)
        if reason is None:
            raise
        raise JSONLimitError(reason) from None


def _value_end(buf: str, pos: int, eof: bool) -> int | None:
    """Where the JSON value starting at ``buf[pos]`` ends, or None if ``buf`` ends first.

    Found by counting brackets outside strings: no recursion and nothing built, so it works on
    the values the parser refused (see :func:`limit_reason`). Only the extent is checked; a
    malformed value shows up in what follows it.
    """
    if buf[pos] not in "[{":  # a scalar: only a too-long integer is refused
        number = _NUMBER.match(buf, pos)
        end = number.end() if number else pos + 1
        return end if end < len(buf) or eof else None
    depth = 0
    i = pos
    while (found := _STRUCTURE.search(buf, i)) is not None:
        i = found.end()
        if found.group() == '"':
            string = _STRING_TAIL.match(buf, i)
            if string is None:
                return None
            i = string.end()
        elif found.group() in "[{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i
    return None


def iter_jsonl(stream: IO[bytes]) -> Iterator[Item]:
    """Each non-blank line of ``stream`` parsed as JSON (BOM, CRLF and bad bytes handled)."""
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        text = raw.decode("utf-8", "surrogateescape").strip()
        if not text:
            continue
        bad = _BAD_BYTES.search(text)
        if bad:
            column = len(text[: bad.start()].encode("utf-8", "surrogateescape")) + 1
            yield Item(
                number,
                error=f"invalid UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at column {column})",
            )
            continue
        try:
            value = loads(text)
        except JSONLimitError as exc:
            yield Item(number, error=str(exc), limit=True)
            continue
        except json.JSONDecodeError as exc:
            truncated = not raw.endswith(b"\n")  # only the last line can lack one
            hint = " (the line looks truncated)" if truncated else ""
            yield Item(number, error=f"invalid JSON: {exc.msg} (column {exc.colno}){hint}")
            continue
        yield Item(number, value=value)


def iter_json_array(stream: IO[bytes]) -> Iterator[Item]:
    """Each element of the top-level JSON array in ``stream``, read incrementally.

    A top-level object is treated as an array of one. A syntax error inside the array stops the
    reader after reporting it: JSON has no line structure to resynchronise on. An element the
    parser refuses (see :func:`limit_reason`) is reported and skipped, and the rest is read on.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    buf = ""
    pos = 0
    line = 1
    eof = False
    chunk = _CHUNK
    first = True

    def fill() -> bool:
        nonlocal buf, pos, eof, first
        if eof:
            return False
        data = stream.read(chunk)
        if not data:
            eof = True
            buf = buf[pos:] + decoder.decode(b"", final=True)
        else:
            text = decoder.decode(data)
            if first:
                text = text.removeprefix("\ufeff")
                first = False
            buf = buf[pos:] + text
        pos = 0
        return True

    def skip_ws() -> None:
        nonlocal pos, line
        while True:
            end = _WS.match(buf, pos).end()  # type: ignore[union-attr]
            line += buf.count("\n", pos, end)
            pos = end
            if pos < len(buf) or not fill():
                return

    skip_ws()
    if pos >= len(buf):
        return
    if buf[pos] == "{":
        single = True
    elif buf[pos] == "[":
        single = False
        pos += 1
    else:
        yield Item(line, error=f"expected a JSON array or object, found {buf[pos]!r}")
        return

    decode = json.JSONDecoder().raw_decode
    while True:
        skip_ws()
        if pos >= len(buf):
            yield Item(line, error="the file ends before the JSON array is closed (truncated?)")
            return
        if not single and buf[pos] == "]":
            return
        limit: str | None = None  # why the parser gave up on this element, if it did
        while True:
            if limit is not None:
                # Skip the element without building it, so the records after it still land.
                skipped = _value_end(buf, pos, eof)
                if skipped is not None:
                    end = skipped
                    chunk = _CHUNK
                    break
                if len(buf) - pos > MAX_ELEMENT_CHARS or not fill():
                    yield Item(line, error=f"{limit}; the rest of the file cannot be read")
                    return
                chunk = min(chunk * 2, 64 * _CHUNK)
                continue
            try:
                value, end = decode(buf, pos)
                if end < len(buf) or eof:  # a value cut at the buffer's end may be longer
                    chunk = _CHUNK
                    break
                fill()
            except json.JSONDecodeError as exc:
                if len(buf) - pos > MAX_ELEMENT_CHARS or not fill():
                    where = line + buf.count("\n", pos, exc.pos)
                    reason = "truncated" if exc.pos >= len(buf) - 1 else f"invalid JSON: {exc.msg}"
                    yield Item(where, error=f"{reason}; the rest of the file cannot be read")
                    return
                chunk = min(chunk * 2, 64 * _CHUNK)
            except (RecursionError, ValueError) as exc:
                limit = limit_reason(exc)
                if limit is None:
                    raise
        start_line = line
        element = buf[pos:end]
        line += element.count("\n")
        pos = end
        if limit is not None:
            yield Item(start_line, error=limit, limit=True)
        elif _BAD_BYTES.search(element):
            yield Item(start_line, error="invalid UTF-8 inside this record")
        else:
            yield Item(start_line, value=value)
        if single:
            return
        skip_ws()
        if pos < len(buf) and buf[pos] == ",":
            pos += 1
        elif pos < len(buf) and buf[pos] == "]":
            return
        else:
            found = repr(buf[pos]) if pos < len(buf) else "the end of the file"
            yield Item(line, error=f"expected ',' or ']' after a record, found {found}")
            return
