"""The daemon's loop: drain the queue, then wait for a hint that there is more.

Hints come from the store's backend: its watch (for SQLite, watchfiles on the store's folder:
a commit touches ``-wal``, never the ``.db`` itself) and its change token (``PRAGMA
data_version``) on the daemon's own connection, polled a few times a second; a slow timer
catches retries whose backoff has passed. A hint only says
"look": work is always found from the queue itself.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from memori_cli import Memori, config, paths
from memori_cli.augment.pipeline import AugmentReport, Pipeline
from memori_cli.errors import AlreadyRunning as AlreadyRunning  # re-exported
from memori_cli.errors import MemoriError
from memori_cli.store import jobs
from memori_cli.store.backend import mask_url

from . import pidfile

if TYPE_CHECKING:
    from memori_cli.serve import Running

log = logging.getLogger("memori.daemon")
T = TypeVar("T")

POLL_SECONDS = 0.1
SWEEP_SECONDS = 30.0
HEARTBEAT_SECONDS = 2.0
PRUNE_SECONDS = 300.0
#: After a lost connection to the store's server: the first wait before reconnecting, and
#: the longest (the wait doubles in between).
RECONNECT_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0


def setup_logging(db_path: Path | str) -> Path:
    """Log to a rotating file in the state directory (ids and counts only, never contents)."""
    # The daemon is a process of its own: everything it creates (logs, rotated logs) is
    # private from the start.
    os.umask(0o077)
    path = pidfile.log_path(db_path)
    paths.ensure_private_dir(path.parent)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("memori")
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    return path


class Daemon:
    """One long-running worker for one store."""

    def __init__(self, db_path: Path | str, *, stop: threading.Event | None = None):
        #: The store: a file, or a PostgreSQL URL (a str: watch needs its "//" whole).
        self.db_path = db_path
        #: How the store is named in logs and the heartbeat (a URL's password masked).
        self.shown = mask_url(db_path) if isinstance(db_path, str) else str(db_path)
        self.stop = stop or threading.Event()
        self.wake = threading.Event()
        self.started = time.time()
        self.report = AugmentReport()
        self.mem: Memori | None = None
        #: The memory proxy's address while the daemon serves one (``[serve]``), for status.
        self.proxy_url: str | None = None
        #: Since when the store's server has been out of reach (None while it answers).
        self.lost_since: float | None = None
        self._last_beat = 0.0

    def serve(self) -> None:
        """Run until stopped (SIGTERM, SIGINT or :attr:`stop`). Raises :class:`AlreadyRunning`
        if another daemon serves this store."""
        fd = pidfile.acquire(self.db_path)
        if fd is None:
            raise AlreadyRunning(f"a daemon already serves {self.shown}")
        proxy = None
        try:
            self._install_signals()
            self.mem = Memori(conn=self.db_path)
            pipeline = self.mem.pipeline(stop=self.stop)
            proxy = start_proxy(self.mem)
            self.proxy_url = proxy.url if proxy is not None else None
            reclaimed: int | None
            try:
                reclaimed = self._reclaim()
            except Exception as exc:  # started while the server is down (or restarting)
                if not self.mem.store.is_lost(exc):
                    raise
                reclaimed = self._await_server(exc, pipeline.extractor.name, self._reclaim)
            if reclaimed is None:
                return  # stopped while waiting
            if reclaimed:
                log.info("took back %s jobs from workers that died mid-job", reclaimed)
            log.info(
                "started: pid %s, store %s, extractor %s, embedder %s",
                os.getpid(),
                self.shown,
                pipeline.extractor.name,
                pipeline.embedder.name if pipeline.embedder else "none",
            )
            watcher = threading.Thread(target=self._watch, name="memori-watch", daemon=True)
            watcher.start()
            last_prune = 0.0
            while not self.stop.is_set():
                try:
                    self.beat(pipeline.extractor.name, force=True)
                    pipeline.drain(report=self.report, prune=False)
                    if time.time() - last_prune > PRUNE_SECONDS:
                        jobs.prune(self.mem.store)
                        last_prune = time.time()
                    self._wait(pipeline.extractor.name)
                except Exception as exc:
                    if not self.mem.store.is_lost(exc):
                        raise
                    self._reconnect(pipeline, exc)
        finally:
            self.stop.set()
            if proxy is not None:
                proxy.stop()
            log.info(
                "stopped: %s jobs done, %s failed", self.report.jobs_done, self.report.jobs_failed
            )
            with contextlib.suppress(OSError):
                pidfile.heartbeat_path(self.db_path).unlink()
            if self.mem is not None:
                self.mem.close()
            os.close(fd)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: Any) -> None:
            log.info("signal %s: finishing the current job, then stopping", signum)
            self.stop.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _reclaim(self) -> int:
        """Take back the jobs of this host's workers that died mid-job."""
        assert self.mem is not None
        return jobs.reclaim_dead(self.mem.store, socket.gethostname(), jobs.pid_alive)

    def _reconnect(self, pipeline: Pipeline, exc: BaseException) -> None:
        """Wait out a lost connection to the store's server (a restart, a network drop),
        then hand back the jobs this worker held, to be redone (their results rolled back
        with the connection, or committed with the job marked done)."""
        assert self.mem is not None
        store = self.mem.store
        released = self._await_server(
            exc, pipeline.extractor.name, lambda: jobs.release_owned(store, pipeline.owner)
        )
        if released is not None:
            log.info("%s job(s) handed back to the queue", released)

    def _await_server(
        self, exc: BaseException, extractor: str, attempt: Callable[[], T]
    ) -> T | None:
        """After ``exc``, a lost connection to the store's server: retry ``attempt`` with a
        growing delay until the server answers (its result) or the daemon is stopped
        (None). The heartbeat says meanwhile since when the store has been unreachable."""
        assert self.mem is not None
        store = self.mem.store
        log.warning("lost the store's server (%s); reconnecting", _first_line(exc))
        lost_at, delay = time.monotonic(), RECONNECT_SECONDS
        self.lost_since = time.time()
        while not self.stop.wait(delay):
            self.beat(extractor, force=True)
            store.close_thread()
            try:
                result = attempt()
            except Exception as again:
                if not store.is_lost(again):
                    raise
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            log.info("the store's server is back after %.1f s", time.monotonic() - lost_at)
            self.lost_since = None
            return result
        return None

    def _wait(self, extractor: str) -> None:
        """Sleep until a hint, a due retry, the sweep timer or a stop."""
        assert self.mem is not None
        store = self.mem.store
        version = store.backend.change_token(store.conn)
        due = jobs.next_due(self.mem.store)
        deadline = time.time() + SWEEP_SECONDS
        if due is not None:
            deadline = min(deadline, max(due, time.time()) + 0.05)
        self.wake.clear()
        while not self.stop.is_set() and time.time() < deadline:
            if self.wake.wait(POLL_SECONDS):
                return
            if store.backend.change_token(store.conn) != version:
                return
            self.beat(extractor)

    def _watch(self) -> None:
        """Turn changes to the store into wake-ups (hints only)."""
        assert self.mem is not None
        try:
            self.mem.store.backend.watch(self.db_path, self.stop, self.wake)
        except Exception as exc:  # polling the change token still finds every commit
            log.warning("file watching is off (%s); polling only", exc)

    def beat(self, extractor: str, *, force: bool = False) -> None:
        """Write the heartbeat (at most every HEARTBEAT_SECONDS unless forced)."""
        now = time.time()
        if not force and now - self._last_beat < HEARTBEAT_SECONDS:
            return
        self._last_beat = now
        pidfile.write_heartbeat(
            self.db_path,
            {
                "pid": os.getpid(),
                "db": self.shown,
                "started": self.started,
                "heartbeat": now,
                "extractor": extractor,
                "jobs_done": self.report.jobs_done,
                "jobs_failed": self.report.jobs_failed,
                "proxy": self.proxy_url,
                "store_lost_since": self.lost_since,
            },
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def start_proxy(mem: Memori) -> Running | None:
    """The memory proxy (``memori serve``) in a thread beside augmentation, over the same
    store, when config.toml has a ``[serve]`` table that does not say ``enabled = false``;
    else None. A proxy that cannot start (a port in use, the extra not installed) stops the
    daemon with the reason, rather than leaving clients without it unnoticed."""
    table = config.read_file().get("serve")
    if not isinstance(table, dict) or table.get("enabled") is False:
        return None
    try:
        from memori_cli.serve import ServeOptions, start
    except ImportError as exc:
        raise MemoriError(
            f"config.toml has [serve], but {exc.name} is not installed: "
            "pip install 'memori-cli[serve]'"
        ) from None
    running = start(mem, ServeOptions.from_config(table))
    log.info("serving the memory proxy on %s", running.url)
    return running


def run(db_path: Path | str) -> None:
    """Serve ``db_path`` (a store file, or a PostgreSQL URL as a str) in this process
    (foreground) until stopped; raises :class:`AlreadyRunning` if another daemon on this host
    serves it."""
    if not isinstance(db_path, str):
        db_path = db_path.expanduser().resolve()
    setup_logging(db_path)
    try:
        Daemon(db_path).serve()
    except AlreadyRunning as exc:
        log.info("not starting: %s", exc)
        raise
    except MemoriError as exc:
        log.error("stopped: %s", exc)
        raise
