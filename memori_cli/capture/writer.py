"""The capture writer: one background thread per Memori that stores captured exchanges.

A wrapped call only puts its exchange on a queue (microseconds), so capture never slows the
caller nor blocks an event loop. An exchange the store refuses (disk full, database locked
past the busy timeout) is logged, counted, and appended to a spool file in the native JSONL
format, which ``memori import`` brings back; ``memori doctor`` reports it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..attribution import Attribution
from ..redact import redact, redact_id

if TYPE_CHECKING:
    from ..store import Store
    from .sink import CaptureSink

log = logging.getLogger("memori.capture")


def spool_path(store: Store) -> Path:
    """Where exchanges the store refused are kept: beside the store file."""
    if store.path is not None:
        return Path(f"{store.path}.capture-failed.jsonl")
    return paths.state_dir() / "capture-failed.jsonl"


def spooled(store: Store) -> int:
    """How many messages wait in the spool file (0 if there is none)."""
    try:
        with spool_path(store).open("rb") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0


def _spool_entity(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("entity") if isinstance(record, dict) else None


def forget_spooled(store: Store, entity_id: str) -> int:
    """Remove ``entity_id``'s lines from the spool file; returns how many went.

    The rest is written to a private (0600) file beside it and moved into place, so a reader
    never sees half a file; the spool file is deleted when nothing is left in it.
    """
    path = spool_path(store)
    try:
        with path.open("rb") as file:
            lines = file.readlines()
    except FileNotFoundError:
        return 0
    kept = [line for line in lines if line.strip() and _spool_entity(line) != entity_id]
    removed = sum(1 for line in lines if line.strip()) - len(kept)
    if not removed:
        return 0
    if not kept:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return removed
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.writelines(line if line.endswith(b"\n") else line + b"\n" for line in kept)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return removed


@dataclasses.dataclass
class Exchange:
    """What one call captured: messages in native form and who they belong to."""

    messages: list[dict[str, Any]]
    attribution: Attribution
    source: str


class Writer:
    """Stores exchanges in the background, in order; :meth:`flush` waits for them."""

    def __init__(self, sink: CaptureSink):
        # The sink of a Memori holds it weakly: this thread never keeps a dropped Memori alive.
        self._sink = sink
        self._queue: queue.Queue[Exchange | Callable[[], Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.failures = 0
        self.written = 0

    def submit(self, exchange: Exchange | Callable[[], Any]) -> None:
        """Queue an exchange for the store (or another small write); returns at once."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="memori-capture", daemon=True
                    )
                    self._thread.start()
                    atexit.register(self.flush, 10.0)
        self._queue.put(exchange)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued exchange is stored (or spooled); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush, then stop the thread."""
        if self._thread is not None:
            self.flush(timeout)
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
            atexit.unregister(self.flush)

    def _run(self) -> None:
        while True:
            exchange = self._queue.get()
            try:
                if exchange is None:
                    return
                if isinstance(exchange, Exchange):
                    self._write(exchange)
                else:
                    exchange()
            except Exception as exc:
                log.warning("capture: a background write failed: %s", exc)
            finally:
                self._queue.task_done()

    def _write(self, exchange: Exchange) -> None:
        try:
            self._sink.add(exchange.messages, exchange.attribution, exchange.source)
            self.written += 1
        except ReferenceError:
            return  # the sink's owner (the Memori) is gone; nothing to write to
        except Exception as exc:
            self.failures += 1
            log.warning(
                "capture: could not store %d message(s) for entity %r: %s",
                len(exchange.messages),
                exchange.attribution.entity_id,
                exc,
            )
            self._spool(exchange, exc)

    def _spool(self, exchange: Exchange, error: Exception) -> None:
        attribution = exchange.attribution
        lines = [
            json.dumps(
                {
                    **message,
                    **_redacted_fields(message),
                    "content": redact(str(message["content"])),
                    "entity": attribution.entity_id,
                    "process": attribution.process_id,
                    "session": attribution.session_id,
                },
                ensure_ascii=False,
            )
            for message in exchange.messages
        ]
        try:
            path = self._sink.spool_path()
            paths.ensure_private_dir(path.parent, tighten=False)
            paths.ensure_private_file(path)
            with path.open("a", encoding="utf-8") as file:
                file.write("".join(line + "\n" for line in lines))
        except Exception as exc:  # disk full: the log line is all that is left
            log.error("capture: could not spool the exchange either (%s): %s", exc, error)


def _redacted_fields(message: dict[str, Any]) -> dict[str, Any]:
    """The name and id of a spooled message, redacted as the store would keep them."""
    out: dict[str, Any] = {}
    if isinstance(message.get("name"), str):
        out["name"] = redact(message["name"])
    if isinstance(message.get("id"), str):
        out["id"] = redact_id(message["id"])
    return out
