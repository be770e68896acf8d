"""``memori sessions``, ``stats``, ``forget`` and ``doctor``: looking after the store."""

from __future__ import annotations

import importlib.util
import platform
import socket
import stat
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import __version__, capture, paths
from ..errors import MemoriError, NoStoreError
from ..memori import Memori
from ..store import connect, jobs
from .chat_state import forget_history
from .common import err, escape, handle_errors, out, print_json, state

JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


@handle_errors
def sessions_command(
    ctx: typer.Context,
    entity: Annotated[str | None, typer.Option(help="Only this entity's sessions.")] = None,
    json_output: JsonOption = False,
) -> None:
    """List sessions with their entity, process, message count and time span."""
    rows = state(ctx).memori().sessions(entity)
    if json_output:
        print_json(rows)
        return
    if not rows:
        err.print("No sessions yet. Import transcripts with `memori import FILE`.")
        return
    table = Table()
    for column in ("session", "entity", "process", "messages", "first", "last"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            *(escape(_short(row[k])) for k in ("session", "entity", "process")),
            str(row["messages"]),
            _when(row["first"]),
            _when(row["last"]),
        )
    out.print(table)


@handle_errors
def stats_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Show counts of entities, sessions, messages and queued jobs, and the store's size."""
    data = state(ctx).memori().stats()
    if json_output:
        print_json(data)
        return
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        shown = f"{value / 1e6:.1f} MB" if key == "bytes" else str(value)
        table.add_row(key.replace("_", " "), escape(shown))
    out.print(table)


@handle_errors
def forget_command(
    ctx: typer.Context,
    entity: Annotated[str, typer.Option(help="The entity to forget entirely.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Forget an entity: delete every message, session and job derived from it, for good.

    The search index is cleaned too, and the write-ahead log is checkpointed so the deleted
    text is gone from the database files. The entity's `memori chat` input history goes too.
    """
    mem = state(ctx).memori()
    if not yes and not typer.confirm(
        f"Forget everything about entity {entity!r}? This cannot be undone", err=True
    ):
        err.print("Nothing forgotten.")
        raise typer.Exit(1)
    removed = mem.forget(entity)
    # Chat's input history lives outside the store: the library does not know of it.
    history = forget_history(mem.store.path, entity)
    if json_output:
        print_json({"entity": entity, "removed": removed, "chat_history_removed": history})
    else:
        err.print(
            f"Forgot entity {escape(entity)!r}: {removed['messages']} messages, "
            f"{removed['sessions']} sessions, {removed['jobs']} jobs"
            + (", and the chat history." if history else "."),
            highlight=False,
        )


@handle_errors
def doctor_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Check the installation and the store; exit 1 if something is broken.

    Reports the SQLite driver, SQLite and sqlite-vec versions, the data paths and their
    permissions, whether the daemon runs, and optional components.
    """
    checks: list[dict[str, Any]] = [
        {
            "check": "memori",
            "status": "ok",
            "detail": f"{__version__} on Python {platform.python_version()}",
        },
    ]
    mem = state(ctx).memori()
    try:
        conn = mem.store.conn
        opened = True
    except NoStoreError as exc:  # nothing written yet: the first import or capture makes it
        checks.append({"check": "store", "status": "warn", "detail": str(exc)})
        conn = connect.connect_path(":memory:")
        opened = False
    except MemoriError as exc:
        checks.append({"check": "store", "status": "fail", "detail": str(exc)})
        conn = connect.connect_path(":memory:")
        opened = False
    try:
        if not opened:
            connect.load_vec(conn)
        versions = connect.versions(conn)
        checks.append(
            {
                "check": "sqlite",
                "status": "ok",
                "detail": f"{versions['driver']}, SQLite {versions['sqlite']}, "
                f"sqlite-vec {versions['sqlite_vec']}",
            }
        )
    except MemoriError as exc:
        checks.append({"check": "sqlite", "status": "fail", "detail": str(exc)})
    checks.append(_dir_check("data dir", paths.data_dir()))
    if opened:
        if mem.store.path is not None:
            for suffix in ("", "-wal", "-shm"):
                file = Path(str(mem.store.path) + suffix)
                if file.exists():
                    checks.append(_mode_check(f"store{suffix or ''}", file, 0o600))
        checks.append(_embedding_check(mem))
        checks.append(_daemon_check(mem.store.path))
        checks.append(_queue_check(mem))
        checks.append(_stuck_check(mem))
    checks.append(_capture_check(mem))
    llama = importlib.util.find_spec("llama_cpp") is not None
    checks.append(
        {
            "check": "llama-cpp-python",
            "status": "ok" if llama else "warn",
            "detail": "installed"
            if llama
            else "not installed: local GGUF models need it: pip install 'memori-cli[local]' "
            "(compiles from source; needs a C++ compiler and cmake)",
        }
    )
    if json_output:
        print_json(checks)
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        table = Table()
        for column in ("check", "status", "detail"):
            table.add_column(column, overflow="fold")
        for check in checks:
            colour = colours[check["status"]]
            table.add_row(
                check["check"], f"[{colour}]{check['status']}[/]", escape(check["detail"])
            )
        out.print(table)
    if any(c["status"] == "fail" for c in checks):
        raise typer.Exit(1)


def _dir_check(name: str, path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"check": name, "status": "warn", "detail": f"{path} (not created yet)"}
    return _mode_check(name, path, 0o700)


def _mode_check(name: str, path: Path, wanted: int) -> dict[str, Any]:
    mode = stat.S_IMODE(path.stat().st_mode)
    size = f", {path.stat().st_size / 1e6:.1f} MB" if path.is_file() else ""
    if mode & 0o077:
        return {
            "check": name,
            "status": "fail",
            "detail": f"{path} is mode {mode:o}, readable by others; run: chmod {wanted:o} {path}",
        }
    return {"check": name, "status": "ok", "detail": f"{path} (mode {mode:o}{size})"}


def _embedding_check(mem: Any) -> dict[str, Any]:
    from ..embed import EmbeddingUnavailable
    from ..store import vectors

    try:
        embedder = mem.embedder()
    except EmbeddingUnavailable as exc:
        return {"check": "embeddings", "status": "warn", "detail": str(exc)}
    if embedder is None:
        detail = "switched off (MEMORI_EMBEDDING_MODEL=none): recall is lexical only"
        return {"check": "embeddings", "status": "warn", "detail": detail}
    if mem.index_stale():
        return {"check": "embeddings", "status": "warn",
                "detail": f"the vector index was built with another model than {embedder.name}: "
                "run `memori reembed`"}  # fmt: skip
    pending = vectors.pending_count(mem.store)
    hint = f"; {pending} messages wait for `memori augment`" if pending else ""
    return {"check": "embeddings", "status": "ok",
            "detail": f"{embedder.name} ({embedder.dim}-d){hint}"}  # fmt: skip


def _daemon_check(db_path: Path | None) -> dict[str, Any]:
    from memori_daemon import status

    daemon = status(db_path)
    if daemon.running:
        return {"check": "daemon", "status": "ok", "detail": f"running, pid {daemon.pid}"}
    return {
        "check": "daemon",
        "status": "ok",
        "detail": "not running (optional: work waits in the queue for `memori augment` "
        "or `memori daemon start`)",
    }


def _queue_check(mem: Memori) -> dict[str, Any]:
    depth = jobs.depth(mem.store)
    detail = f"{depth['pending']} pending, {depth['running']} running, {depth['failed']} failed"
    if depth["failed"]:
        return {"check": "jobs", "status": "warn",
                "detail": detail + ": see `memori jobs`, then `memori jobs retry`"}  # fmt: skip
    return {"check": "jobs", "status": "ok", "detail": detail}


def _stuck_check(mem: Memori) -> dict[str, Any]:
    """Running jobs whose worker is gone: a killed process leaves its jobs "running" until
    the lease runs out."""
    ids = jobs.stuck(mem.store, socket.gethostname())
    if ids:
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        return {"check": "stuck jobs", "status": "warn",
                "detail": f"{len(ids)} running job(s) with no live worker ({shown}): "
                "`memori augment` or the daemon takes them back"}  # fmt: skip
    return {"check": "stuck jobs", "status": "ok", "detail": "every running job has a live worker"}


def _capture_check(mem: Memori) -> dict[str, Any]:
    count = capture.spooled(mem.store)
    if count:
        spool = capture.spool_path(mem.store)
        return {"check": "capture", "status": "warn",
                "detail": f"{count} captured message(s) could not be stored and wait in {spool}: "
                f"`memori import {spool}`, then delete the file"}  # fmt: skip
    return {"check": "capture", "status": "ok", "detail": "no failed captures"}


def _short(value: Any) -> str:
    return "" if value is None else str(value)


def _when(value: str | None) -> str:
    return "" if not value else value[:16].replace("T", " ")
