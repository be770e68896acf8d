"""The daemon's pidfile and heartbeat, one pair per store, in the state directory.

The pidfile is held under an exclusive ``flock`` for as long as the daemon lives. A lock,
unlike a bare pid, cannot go stale: when the process dies, the kernel releases it. The
heartbeat is a small JSON file the daemon rewrites every few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from memori_cli import paths


@dataclasses.dataclass(frozen=True)
class DaemonStatus:
    """Whether a daemon holds the store's pidfile lock, its pid, and its last heartbeat."""

    running: bool
    pid: int | None
    pidfile: str
    heartbeat: dict[str, Any] | None = None


def _key(db_path: Path | str | None) -> str:
    return paths.daemon_pidfile(db_path).stem.removeprefix("daemon-")


def pidfile_path(db_path: Path | str | None = None) -> Path:
    """The pidfile of the daemon serving the store at ``db_path`` (default store if None);
    the library probes it too (:func:`memori_cli.paths.daemon_running`)."""
    return paths.daemon_pidfile(db_path)


def heartbeat_path(db_path: Path | str | None = None) -> Path:
    """The heartbeat file of the daemon serving the store at ``db_path``."""
    return pidfile_path(db_path).with_suffix(".json")


def log_path(db_path: Path | str | None = None) -> Path:
    """The log file of the daemon serving the store at ``db_path``."""
    return paths.state_dir() / "logs" / f"daemon-{_key(db_path)}.log"


def status(db_path: Path | str | None = None) -> DaemonStatus:
    """Probe the pidfile lock without taking it over."""
    path = pidfile_path(db_path)
    if not path.exists():
        return DaemonStatus(False, None, str(path))
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            text = handle.read().strip()
            pid = int(text) if text.isdigit() else None
            return DaemonStatus(True, pid, str(path), read_heartbeat(db_path))
        fcntl.flock(handle, fcntl.LOCK_UN)
    return DaemonStatus(False, None, str(path))


def acquire(db_path: Path | str | None = None) -> int | None:
    """Take the pidfile lock for this process; returns the held fd, or None if taken."""
    path = pidfile_path(db_path)
    paths.ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def write_heartbeat(db_path: Path | str | None, data: dict[str, Any]) -> None:
    """Replace the heartbeat file atomically."""
    path = heartbeat_path(db_path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def read_heartbeat(db_path: Path | str | None = None) -> dict[str, Any] | None:
    """The last heartbeat, or None."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(heartbeat_path(db_path).read_text())
        return data if isinstance(data, dict) else None
    return None
