"""Reading server-sent events as they pass, to learn what the reply said: the bytes go on to
the client untouched, this only watches them (the WHATWG event-stream rules: lines end in
CRLF, LF or CR, a blank line ends an event, ``data`` lines join with newlines)."""

from __future__ import annotations

import codecs
import re

_EOL = re.compile(r"\r\n|\n|\r")
#: A line longer than this is no event memori can read (a broken upstream): stop watching.
MAX_LINE = 16 << 20


class EventReader:
    """Incremental: :meth:`feed` takes bytes cut anywhere and returns the events completed."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self.broken = False

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The ``(event name, data)`` of each event that ``chunk`` completes."""
        if self.broken:
            return []
        self._buffer += self._decoder.decode(chunk)
        events: list[tuple[str, str]] = []
        start = 0
        for match in _EOL.finditer(self._buffer):
            if match.group() == "\r" and match.end() == len(self._buffer):
                break  # maybe the first half of a CRLF cut in two
            self._line(self._buffer[start : match.start()], events)
            start = match.end()
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_LINE:
            self.broken, self._buffer = True, ""
        return events

    def _line(self, line: str, events: list[tuple[str, str]]) -> None:
        if not line:
            if self._data:
                events.append((self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return  # a comment (keep-alive pings)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
