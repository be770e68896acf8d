"""``memori mcp install``: the host config entry that starts ``memori mcp``, and merging it
into the host's config file without touching anything else in it.

The entry names the memori executable by absolute path (hosts start servers with a bare
environment, not the user's shell, so neither PATH nor an activated venv can be relied on),
and carries ``MEMORI_HOME`` and the store and entity the user runs with now.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import MemoriError

CLIENTS = ("claude-desktop", "cursor", "claude-code", "vscode")


class InstallError(MemoriError):
    """The host's config file cannot be merged into (not JSON, not an object)."""


def _app_support(*parts: str) -> Path:
    """A per-user application folder: macOS Application Support, Windows APPDATA, else
    XDG_CONFIG_HOME (~/.config)."""
    home = Path.home()
    if sys.platform == "darwin":
        return home.joinpath("Library", "Application Support", *parts)
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming").joinpath(*parts)
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config").joinpath(*parts)


def config_path(client: str) -> Path:
    """The user-level config file ``client`` reads its MCP servers from."""
    if client == "claude-desktop":
        return _app_support("Claude", "claude_desktop_config.json")
    if client == "cursor":
        return Path.home() / ".cursor" / "mcp.json"
    if client == "claude-code":
        return Path.home() / ".claude.json"  # user scope: every project
    if client == "vscode":
        return _app_support("Code", "User", "mcp.json")
    raise InstallError(f"unknown client {client!r}; choose one of {', '.join(CLIENTS)}")


def servers_key(client: str) -> str:
    """The key of the server table: VS Code's ``servers``, everyone else's ``mcpServers``."""
    return "servers" if client == "vscode" else "mcpServers"


def memori_command() -> list[str]:
    """How to start memori by absolute path: the ``memori`` script beside this Python (a
    venv's bin/), else the one on PATH, else ``python -m memori_cli``."""
    name = "memori.exe" if sys.platform == "win32" else "memori"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside.absolute())]
    found = shutil.which("memori")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "memori_cli"]


def server_entry(
    client: str,
    *,
    db: Path | str | None = None,
    entity: str | None = None,
    process: str | None = None,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """The config entry that starts ``memori mcp`` for ``client`` on stdio."""
    command, *args = memori_command()
    if isinstance(db, str):  # a PostgreSQL URL, as given
        args += ["--db", db]
    elif db is not None:
        args += ["--db", str(db.expanduser().absolute())]
    args.append("mcp")
    entity = entity or os.environ.get("MEMORI_ENTITY")
    if entity:
        args += ["--entity", entity]
    if process:
        args += ["--process", process]
    args += extra or []
    entry: dict[str, Any] = {"command": command, "args": args}
    if client in ("vscode", "claude-code"):
        entry = {"type": "stdio", **entry}
    env = {k: os.environ[k] for k in ("MEMORI_HOME",) if os.environ.get(k)}
    if env:
        entry["env"] = env
    return entry


def claude_code_command(name: str, entry: dict[str, Any]) -> str:
    """The ``claude mcp add`` line that makes the same entry, quoted for a POSIX shell (a
    path with spaces), with its ``env`` too: without ``MEMORI_HOME`` the server would open
    another store than the one the user meant."""
    env = [f"{key}={value}" for key, value in (entry.get("env") or {}).items()]
    words = ["claude", "mcp", "add", "--scope", "user"]
    for pair in env:
        words += ["--env", pair]
    return shlex.join([*words, name, "--", entry["command"], *entry["args"]])


def snippet(client: str, name: str, entry: dict[str, Any]) -> str:
    """The JSON to paste into the host's config file."""
    return json.dumps({servers_key(client): {name: entry}}, indent=2) + "\n"


def read_config(path: Path) -> dict[str, Any]:
    """The host config at ``path`` ({} if there is none); InstallError if it is not a JSON
    object (a file with comments, say): then nothing is written."""
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InstallError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InstallError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "nothing was changed. Fix it, or add the entry by hand (`memori mcp install` "
            "without --write prints it)"
        ) from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} holds JSON but not an object; nothing was changed")
    return data


def merge(config: dict[str, Any], key: str, name: str, entry: dict[str, Any]) -> str:
    """Put ``entry`` under ``config[key][name]``, every other server kept; returns
    ``added``, ``replaced`` or ``unchanged``."""
    servers = config.setdefault(key, {})
    if not isinstance(servers, dict):
        raise InstallError(f"the config's {key!r} is not an object; nothing was changed")
    before = servers.get(name)
    servers[name] = entry
    if before is None:
        return "added"
    return "unchanged" if before == entry else "replaced"


def write_config(path: Path, config: dict[str, Any]) -> Path | None:
    """Write ``config`` to ``path`` atomically (a temporary file beside it, renamed into
    place, the file's permissions kept), backing up the old file first; the backup's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    mode = 0o600
    if path.exists():
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.memori-backup-{stamp}")
        n = 1
        while backup.exists():  # a second change within the second: keep the first backup
            n += 1
            backup = path.with_name(f"{path.name}.memori-backup-{stamp}-{n}")
        shutil.copy2(path, backup)
        mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path.resolve() if path.is_symlink() else path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return backup


def install(
    client: str, name: str, entry: dict[str, Any], *, path: Path | None = None
) -> dict[str, Any]:
    """Merge the entry into ``client``'s config file (or ``path``); what was done."""
    target = path or config_path(client)
    config = read_config(target)
    outcome = merge(config, servers_key(client), name, entry)
    backup = None if outcome == "unchanged" else write_config(target, config)
    return {"path": str(target), "outcome": outcome,
            "backup": None if backup is None else str(backup)}  # fmt: skip
