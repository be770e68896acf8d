"""Streaming readers: JSONL lines and top-level JSON arrays, in bounded memory.

Both decode UTF-8 with ``surrogateescape``, so an invalid byte never stops the reader: the line
or array element holding it is reported (with its line number) and the rest is read on.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

_BAD_BYTES = re.compile("[\udc80-\udcff]")
_WS = re.compile(r"[ \t\r\n]*")
_CHUNK = 1 << 20
# An array element may grow the buffer to this size before we give up on it.
MAX_ELEMENT_CHARS = 512 * 1024 * 1024


@dataclass
class Item:
    """One line of a JSONL file or one element of a JSON array: its value or why not."""

    line: int
    value: Any = None
    error: str | None = None


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
            yield Item(number, value=json.loads(text))
        except json.JSONDecodeError as exc:
            truncated = not raw.endswith(b"\n")  # only the last line can lack one
            hint = " (the line looks truncated)" if truncated else ""
            yield Item(number, error=f"invalid JSON: {exc.msg} (column {exc.colno}){hint}")


def iter_json_array(stream: IO[bytes]) -> Iterator[Item]:
    """Each element of the top-level JSON array in ``stream``, read incrementally.

    A top-level object is treated as an array of one. A syntax error inside the array stops the
    reader after reporting it: JSON has no line structure to resynchronise on.
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
        while True:
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
        start_line = line
        element = buf[pos:end]
        line += element.count("\n")
        pos = end
        if _BAD_BYTES.search(element):
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
