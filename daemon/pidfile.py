"""The daemon's pidfile: held under an exclusive ``flock`` for as long as the daemon lives.

A lock, unlike a bare pid, cannot go stale: when the process dies, the kernel releases it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
from pathlib import Path

from memori_cli import paths


@dataclasses.dataclass(frozen=True)
class DaemonStatus:
    """Whether a daemon holds the pidfile lock, and its pid if so."""

    running: bool
    pid: int | None
    pidfile: str


def pidfile_path() -> Path:
    """The daemon's pidfile in the state directory."""
    return paths.state_dir() / "daemon.pid"


def status(path: Path | None = None) -> DaemonStatus:
    """Probe the pidfile lock without taking it over."""
    path = path or pidfile_path()
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
            return DaemonStatus(True, int(text) if text.isdigit() else None, str(path))
        fcntl.flock(handle, fcntl.LOCK_UN)
    return DaemonStatus(False, None, str(path))


def acquire(path: Path | None = None) -> int | None:
    """Take the pidfile lock for this process; returns the held fd, or None if taken."""
    path = path or pidfile_path()
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
