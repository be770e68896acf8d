"""``mem.augmentation``: wait until what this process stored has been augmented.

Short scripts (the upstream Memori library's set-up among them) store a few exchanges and
exit; the daemon may not run. :meth:`Augmentation.wait` flushes the capture writer and then
has the jobs this process queued done: by the daemon where one runs for the store (it is
waited for), else here, in the foreground, exactly as ``memori augment`` would run them.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from . import paths
from .augment.pipeline import AugmentReport, Pipeline
from .store import Store, jobs


class Owner(Protocol):
    """What a wait needs of :class:`~memori_cli.Memori` (kept narrow: no import cycle)."""

    @property
    def store(self) -> Store:
        """The store the jobs are in."""
        ...

    def pipeline(self, *, stop: Any = None) -> Pipeline:
        """A job pipeline with the configured extractor and embedder."""
        ...


#: How often a wait looks at jobs another worker (the daemon) is running.
POLL_SECONDS = 0.1


class Augmentation:
    """Augmentation of what this :class:`~memori_cli.Memori` stored (``mem.augmentation``)."""

    def __init__(self, mem: Owner):
        self._mem = mem
        #: What the foreground runs of :meth:`wait` did, added up.
        self.report = AugmentReport()

    def pending(self) -> int:
        """How many of the jobs this process queued are not done or failed yet."""
        store = self._mem.store
        return len(jobs.unfinished(store, store.queued_jobs))

    def wait(self, timeout: float | None = None) -> bool:
        """Flush the capture writer, then wait until every augmentation job this process
        queued is finished (done, or failed for good); True if all were within ``timeout``
        seconds (None: no limit).

        Where no daemon runs for the store, the jobs are run here, in the foreground (typed
        memories, graph, vectors); a job still running at the timeout is handed back, to be
        run again later. Jobs other processes queued are left to them.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        mem = self._mem
        llm = vars(mem).get("llm")  # only a Memori that wrapped clients has a writer
        if llm is not None and not llm.flush(remaining()):
            return False
        store = mem.store
        mine = set(store.queued_jobs)
        stop = threading.Event()
        timer = None
        if deadline is not None:
            timer = threading.Timer(remaining() or 0.0, stop.set)
            timer.daemon = True
            timer.start()
        pipeline = None
        try:
            while True:
                left = jobs.unfinished(store, mine)
                store.queued_jobs.difference_update(mine - left.keys())
                if not left:
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                if not paths.daemon_running(store.url or store.path):
                    if pipeline is None:
                        pipeline = mem.pipeline(stop=stop)
                    claimed = jobs.claim(store, pipeline.owner, ids=left.keys())
                    if claimed:
                        pipeline.run(claimed[0], self.report)
                        continue
                # Running elsewhere, or due later (a retry): look again soon.
                due = min(left.values()) - time.time()
                pause = min(max(due, POLL_SECONDS), 1.0)
                left_time = remaining()
                time.sleep(pause if left_time is None else min(pause, left_time))
        finally:
            if timer is not None:
                timer.cancel()
