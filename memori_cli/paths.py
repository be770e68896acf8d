"""Where memori keeps its files: platformdirs defaults, overridable with ``MEMORI_HOME``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import warnings
from pathlib import Path

import platformdirs

from .errors import PermissionsWarning, StoreError

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


def daemon_pidfile(db_path: Path | str | None = None) -> Path:
    """The pidfile of the daemon serving the store at ``db_path`` (default store if None; a
    str is a database server's URL, taken as it is: one daemon per host and URL).

    The daemon holds it under an exclusive ``flock`` while it lives (``memori_daemon``)."""
    if isinstance(db_path, str):
        key = hashlib.sha256(db_path.encode()).hexdigest()[:12]
        return state_dir() / f"daemon-{key}.pid"
    target = db_path or default_db_path()
    key = hashlib.sha256(str(target.expanduser().resolve()).encode()).hexdigest()[:12]
    return state_dir() / f"daemon-{key}.pid"


def daemon_running(db_path: Path | str | None = None) -> bool:
    """Whether a daemon holds the pidfile lock of the store at ``db_path`` (a probe that never
    takes the lock over). False where the pidfile cannot be read."""
    path = daemon_pidfile(db_path)
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                return exc.errno in (errno.EAGAIN, errno.EACCES)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def ensure_private_dir(path: Path, *, tighten: bool = True) -> None:
    """Create ``path`` (and parents) as 0700; tighten an existing folder others can read.

    ``tighten=False`` leaves an existing folder alone: for a store the user placed in a folder
    of their own, only the store's files are memori's to change.
    """
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} exists and is not a folder; memori needs a folder there")
    # Each missing folder is made 0700 itself (mkdir's parents=True would make the parents
    # with the umask's mode, readable by others until tightened).
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except NotADirectoryError:
            raise StoreError(
                f"{folder.parent} is not a folder; memori needs a folder there"
            ) from None
    if tighten:
        _tighten(path, 0o700)


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty as 0600 if missing; tighten it if others can read it.

    Only a regular file of memori's own is ever changed: a path that is a folder, a device,
    a pipe or a symlink is refused with :class:`StoreError`, so nothing outside memori's
    files is ever chmod'ed.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        check_regular_file(path)
        _tighten(path, 0o600)
    else:
        os.close(fd)


def check_regular_file(path: Path, *, what: str = "file") -> None:
    """Raise :class:`StoreError` unless ``path`` is missing or a regular file, not a symlink."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise StoreError(f"{path.parent} is not a folder; memori needs a folder there") from None
    if stat.S_ISLNK(info.st_mode):
        raise StoreError(
            f"{path} is a symbolic link; memori does not follow links for its {what}s "
            f"(point it at the real file: {path.resolve()})"
        )
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise StoreError(f"{path} is {kind}; memori needs a path to a {what}")


def tighten_store_files(db_path: Path, *, fresh: bool = False) -> None:
    """Make the database and its ``-wal`` and ``-shm`` files private (0600).

    ``fresh`` (a store created just now) tightens without a warning. A symlink or any other
    non-regular file in the way is left alone.
    """
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(str(db_path) + suffix)
        with contextlib.suppress(OSError):
            info = candidate.lstat()
            if stat.S_ISREG(info.st_mode):
                _tighten(candidate, 0o600, warn=not fresh)


def _tighten(path: Path, mode: int, *, warn: bool = True) -> None:
    # By path, after checking it is no link: a descriptor of our own would be simpler, but
    # closing one releases every POSIX lock this process holds on the file, SQLite's too.
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return
    current = stat.S_IMODE(info.st_mode)
    if not current & 0o077:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:  # not ours to change: say so, do not fail
        warnings.warn(
            f"{path} is readable by others (mode {current:o}) and could not be tightened: {exc}",
            PermissionsWarning,
            stacklevel=3,
        )
        return
    if warn:
        warnings.warn(
            f"{path} was readable by others (mode {current:o}); tightened to {mode:o}",
            PermissionsWarning,
            stacklevel=3,
        )
