"""Where memori keeps its files: platformdirs defaults, overridable with ``MEMORI_HOME``."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import platformdirs

from .errors import PermissionsWarning

APP_NAME = "memori"
DB_FILENAME = "memori.db"


def data_dir() -> Path:
    """The folder holding the store: ``$MEMORI_HOME`` if set, else the platform's data dir."""
    home = os.environ.get("MEMORI_HOME")
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def state_dir() -> Path:
    """The folder for logs, the daemon's pidfile and heartbeat."""
    home = os.environ.get("MEMORI_HOME")
    if home:
        return Path(home).expanduser() / "state"
    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))


def default_db_path() -> Path:
    """The default store file."""
    return data_dir() / DB_FILENAME


def ensure_private_dir(path: Path, *, tighten: bool = True) -> None:
    """Create ``path`` (and parents) as 0700; tighten an existing folder others can read.

    ``tighten=False`` leaves an existing folder alone: for a store the user placed in a folder
    of their own, only the store's files are memori's to change.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if tighten:
        _tighten(path, 0o700)


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty as 0600 if missing; tighten it if others can read it."""
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    _tighten(path, 0o600)


def tighten_store_files(db_path: Path, *, fresh: bool = False) -> None:
    """Make the database and its ``-wal`` and ``-shm`` files private (0600).

    ``fresh`` (a store created just now) tightens without a warning.
    """
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(str(db_path) + suffix)
        if candidate.exists():
            _tighten(candidate, 0o600, warn=not fresh)


def _tighten(path: Path, mode: int, *, warn: bool = True) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077 and not warn:
        os.chmod(path, mode)
    elif current & 0o077:
        try:
            os.chmod(path, mode)
        except OSError as exc:  # not ours to change: say so, do not fail
            warnings.warn(
                f"{path} is readable by others (mode {current:o}) and could not be "
                f"tightened: {exc}",
                PermissionsWarning,
                stacklevel=3,
            )
            return
        warnings.warn(
            f"{path} was readable by others (mode {current:o}); tightened to {mode:o}",
            PermissionsWarning,
            stacklevel=3,
        )
