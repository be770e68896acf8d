"""What ``memori chat`` keeps besides the conversation: the background :class:`Learner`, and
each entity's input history (:class:`ChatHistory`)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import paths
from ..errors import MemoriError
from ..memori import Memori
from ..redact import redact
from .common import escape

log = logging.getLogger("memori.chat")

#: How long leaving waits for learning from the last exchange to finish.
LEARN_ON_EXIT_S = 5.0
HISTORY_LENGTH = 1000


# -- learning -----------------------------------------------------------------------------
class Learner:
    """Augments in the background while the chat goes on, when no daemon does it, so that
    /memories and the next turns know what was just said.

    One thread, one run at a time: :meth:`poke` asks for a run after each exchange (pokes
    during a run make one more run). A run waits for the capture writer, then drains the job
    queue. Errors are kept for :meth:`report` and logged, never raised.
    """

    def __init__(self, mem: Memori):
        self._mem = mem
        self._lock = threading.Condition()
        self._wanted = False  # a run is asked for
        self._busy = False  # a run is asked for or running
        self._stop = threading.Event()
        self._errors: list[str] = []
        self._said: set[str] = set()
        self.runs = 0
        self.created = 0
        self._thread = threading.Thread(target=self._run, name="memori-chat-learn", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Ask for a run (after an exchange was captured)."""
        with self._lock:
            self._wanted = self._busy = True
            self._lock.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until no run is asked for or running; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy, timeout)

    def report(self, talk: Console) -> None:
        """Say each new learning error once, from the main thread (printed from the learning
        thread, it would land in the middle of the prompt)."""
        with self._lock:
            errors, self._errors = self._errors, []
        for error in errors:
            if error not in self._said:
                self._said.add(error)
                talk.print(f"[yellow]Could not learn from the chat:[/] {escape(error)}")

    def finish(self, talk: Console, timeout: float = LEARN_ON_EXIT_S) -> bool:
        """Let learning finish (up to ``timeout`` seconds), else stop it, leaving the job in
        progress queued; say which on ``talk``. True if learning is done."""
        done = self.wait(0.5)  # a quick run ends unannounced
        if not done:
            talk.print("[dim]Finishing learning… (Ctrl-C leaves it for later)[/]")
            with contextlib.suppress(KeyboardInterrupt):
                done = self.wait(timeout)
        # The pipeline checks this between jobs and between the chunks of a long
        # extraction: a job in progress is released (queued again), not lost.
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(2.0)
        self.report(talk)
        if not done:
            talk.print(
                "Left before learning was done: the rest waits in the queue for "
                "`memori augment` or the daemon."
            )
        elif self.runs and not self.created:
            talk.print("Learning from this chat is done: nothing new to remember.")
        elif self.runs:
            count = f"{self.created} new memor{'y' if self.created == 1 else 'ies'}"
            talk.print(f"Learned from this chat: {count}.", highlight=False)
        return done

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._wanted or self._stop.is_set())
                if self._stop.is_set():
                    return
                self._wanted = False
            try:
                self._mem.llm.flush(30)
                report = self._mem.pipeline(stop=self._stop).drain()
                self.created += report.memories_created
            except Exception as exc:  # a chat never dies of learning: say so, go on
                log.debug("learning from the chat failed", exc_info=True)
                with self._lock:
                    self._errors.append(str(exc) or type(exc).__name__)
            finally:
                with self._lock:
                    self.runs += 1
                    if not self._wanted:
                        self._busy = False
                        self._lock.notify_all()


# -- input history ------------------------------------------------------------------------
def history_path(db_path: Path | None, entity_id: str) -> Path:
    """The readline history of ``entity_id``'s chats with the store at ``db_path`` (the
    default store if None). The name is a hash: it says nothing about whose it is."""
    store = (db_path or paths.default_db_path()).expanduser().resolve()
    key = hashlib.sha256(f"{store}\0{entity_id}".encode()).hexdigest()[:16]
    return paths.state_dir() / f"chat_history-{key}"


def forget_history(db_path: Path | None, entity_id: str) -> bool:
    """Delete ``entity_id``'s chat history with this store, and the history file earlier
    versions shared between everyone (unredacted, it may hold the entity's words); True if a
    file went."""
    removed = False
    for path in (history_path(db_path, entity_id), paths.state_dir() / "chat_history"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed = True
    return removed


class ChatHistory:
    """The readline history at a terminal: per entity and store, redacted like the store
    (every entry is added redacted, and redacted again as it is written), private (0600)."""

    def __init__(self, path: Path):
        self.path = path
        self._readline: Any = None

    def load(self) -> None:
        """Start readline with this history (nothing happens where readline is missing)."""
        with contextlib.suppress(ImportError, OSError, MemoriError):
            import readline

            # Entries are added by add(), redacted, not as typed.
            readline.set_auto_history(False)
            readline.set_history_length(HISTORY_LENGTH)
            with contextlib.suppress(FileNotFoundError):
                paths.check_regular_file(self.path, what="history file")
                readline.read_history_file(self.path)
            self._readline = readline

    def add(self, text: str) -> None:
        """Remember a message, redacted, one entry a line."""
        if self._readline is None:
            return
        for line in redact(text).split("\n"):
            length = self._readline.get_current_history_length()
            if line.strip() and self._readline.get_history_item(length) != line:
                self._readline.add_history(line)

    def save(self) -> None:
        """Write the history, each entry redacted, through a private file of its own that
        then replaces the old one (never through a link, never readable by others)."""
        readline = self._readline
        if readline is None:
            return
        for i in range(readline.get_current_history_length()):
            item = readline.get_history_item(i + 1)  # get is 1-based, replace 0-based
            if item is not None and redact(item) != item:
                readline.replace_history_item(i, redact(item))
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            paths.ensure_private_dir(self.path.parent, tighten=False)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            readline.write_history_file(str(tmp))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("chat history not saved: %s", exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
