"""``memori sessions``, ``entities``, ``stats``, ``forget``, ``doctor``: looking after the store."""

from __future__ import annotations

import importlib.util
import os
import platform
import socket
import stat
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import __version__, capture, config, gguf_file, paths
from ..errors import ForgetWarning, MemoriError, NoStoreError
from ..memori import Memori
from ..store import jobs
from .chat_state import forget_history
from .common import err, escape, handle_errors, narrow, out, print_json, side_width, state

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
    # A narrow terminal: the session name keeps the room; entity and process are cut, the
    # first time goes (the last stays), and a process column nobody has is left out.
    compact = narrow()
    processes = any(row["process"] for row in rows)
    table = Table(expand=compact)
    table.add_column("session", overflow="fold", ratio=1 if compact else None, min_width=12)
    table.add_column("entity", no_wrap=True, overflow="ellipsis", max_width=side_width(24))
    if processes:
        table.add_column("process", no_wrap=True, overflow="ellipsis", max_width=side_width(24))
    table.add_column("msgs" if compact else "messages", no_wrap=True, justify="right")
    if not compact:
        table.add_column("first", no_wrap=True)
    table.add_column("last", no_wrap=True)
    for row in rows:
        cells = [escape(_short(row["session"])), escape(_short(row["entity"]))]
        if processes:
            cells.append(escape(_short(row["process"])))
        cells.append(str(row["messages"]))
        if not compact:
            cells.append(_when(row["first"]))
        cells.append((row["last"] or "")[:10] if compact else _when(row["last"]))
        table.add_row(*cells)
    out.print(table)


@handle_errors
def entities_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the store's entities with their messages, current memories, sessions and last
    activity, most recently active first; `default` marks the one used without --entity."""
    mem = state(ctx).memori()
    current = mem.current.entity_id
    rows = [dict(row, default=row["entity"] == current) for row in mem.entities()]
    if json_output:
        print_json(rows)
        return
    if not rows:
        err.print("No entities yet. Import transcripts with `memori import FILE`.")
        return
    table = Table(caption="* used without --entity" if any(r["default"] for r in rows) else None)
    table.add_column("entity", overflow="fold", min_width=10)
    for column in ("messages", "memories", "sessions"):
        table.add_column(column, justify="right")
    table.add_column("last active", no_wrap=True)
    for row in rows:
        name = escape(row["entity"]) + (" *" if row["default"] else "")
        table.add_row(
            name,
            str(row["messages"]),
            str(row["memories"]),
            str(row["sessions"]),
            (row["last_activity"] or "")[:10] if narrow() else _when(row["last_activity"]),
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ForgetWarning)
        removed = mem.forget(entity)
    incomplete = any(issubclass(w.category, ForgetWarning) for w in caught)
    for w in caught:  # anything else is shown as it would have been
        if not issubclass(w.category, ForgetWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    # Chat's input history lives outside the store: the library does not know of it.
    history = forget_history(mem.store.path, entity)
    holders = _holders(mem.store.path) if incomplete else []
    if json_output:
        print_json(
            {
                "entity": entity,
                "removed": removed,
                "chat_history_removed": history,
                "wal_checkpointed": not incomplete,
                **({"held_by_pids": holders} if incomplete else {}),
            }
        )
    else:
        err.print(
            f"Forgot entity {escape(entity)!r}: {removed['messages']} messages, "
            f"{removed['sessions']} sessions, {removed['jobs']} jobs"
            + (", and the chat history." if history else "."),
            highlight=False,
        )
    if incomplete:
        who = (
            "the other process (pid " + ", ".join(map(str, holders)) + ")"
            if holders
            else "the other process that has the store open"
        )
        wal = f"{mem.store.path}-wal" if mem.store.path is not None else "the -wal file"
        err.print(
            f"[red]Not finished:[/red] the rows are deleted, but the deleted text may remain in "
            f"{escape(wal)} until {who} closes; run "
            f"`memori forget --entity {escape(entity)}` again or `memori doctor`.",
            highlight=False,
        )
        raise typer.Exit(1)


def _holders(db_path: Path | None) -> list[int]:
    """The ids of other processes that have the store file open (Linux /proc; best effort)."""
    if db_path is None:
        return []
    targets = {str(db_path.resolve()), f"{db_path.resolve()}-wal"}
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(found)


@handle_errors
def doctor_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Check the installation and the store; exit 1 if something is broken.

    Reports the SQLite driver, SQLite and sqlite-vec versions, which vector search path the
    store takes (sqlite-vec or numpy) and why, whether `import memori` is this package (the
    upstream memori distribution installs the same name), the data paths and their
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
    conn = None
    try:
        conn = mem.store.conn
    except NoStoreError as exc:  # nothing written yet: the first import or capture makes it
        checks.append({"check": "store", "status": "warn", "detail": str(exc)})
    except MemoriError as exc:
        checks.append({"check": "store", "status": "fail", "detail": str(exc)})
    opened = conn is not None
    checks.extend(mem.store.backend.checks(conn))
    checks.append(_import_name_check())
    checks.append(_dir_check("data dir", paths.data_dir()))
    if opened:
        if mem.store.backend.name == "sqlite":  # a server keeps its own log (VACUUM is forget's)
            checks.append(_wal_check(mem))
        if mem.store.path is not None:
            for suffix in ("", "-wal", "-shm"):
                file = Path(str(mem.store.path) + suffix)
                if file.exists():
                    checks.append(_mode_check(f"store{suffix or ''}", file, 0o600))
        checks.append(_embedding_check(mem))
        checks.append(_daemon_check(mem.store.url or mem.store.path))
        checks.append(_queue_check(mem))
        checks.append(_stuck_check(mem))
    checks.append(_capture_check(mem))
    checks.extend(_model_checks(mem))
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


def _import_name_check() -> dict[str, Any]:
    """``import memori`` is memori-cli's re-export, unless the upstream ``memori``
    distribution is installed too (it ships a package of the same name)."""
    import importlib.metadata

    import memori_cli

    owners = importlib.metadata.packages_distributions().get("memori", [])
    others = sorted({d for d in owners if d.lower().replace("_", "-") != "memori-cli"})
    try:
        import memori

        ours = getattr(memori, "Memori", None) is memori_cli.Memori
        where = str(getattr(memori, "__file__", "?"))
    except Exception as exc:  # another package's import failing
        ours, where = False, f"(import failed: {exc})"
    if not others and ours:
        return {"check": "import memori", "status": "ok",
                "detail": "`from memori import Memori` gives memori-cli's Memori"}  # fmt: skip
    clash = f"the {', '.join(others) or 'unknown'} distribution also installs `memori`"
    if ours:
        return {"check": "import memori", "status": "warn",
                "detail": f"{clash}; memori-cli's currently wins, but reinstalling either "
                "flips it. Keep them in separate environments, or import memori_cli"}  # fmt: skip
    return {
        "check": "import memori",
        "status": "fail",
        "detail": f"{clash}, and `import memori` gives that one ({where}), not memori-cli: "
        "`from memori import Memori` is not this Memori. Uninstall it "
        f"(pip uninstall {others[0] if others else 'memori'}), keep them in separate "
        "environments, or import memori_cli",
    }


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
    engine = getattr(embedder, "engine", None)
    if engine == "numpy":
        engine = "numpy; pip install 'memori-cli[fast]' runs it on onnxruntime, 1.7x as fast"
    runs = f", {engine}" if engine else ""
    return {"check": "embeddings", "status": "ok",
            "detail": f"{embedder.name} ({embedder.dim}-d{runs}){hint}"}  # fmt: skip


def _daemon_check(db_path: Path | str | None) -> dict[str, Any]:
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


def _wal_check(mem: Memori) -> dict[str, Any]:
    """Checkpoint the write-ahead log: after a ``forget`` that another reader held up, this
    is what finally wipes the deleted text from ``memori.db-wal``."""
    if mem.store.checkpoint(attempts=2):
        return {"check": "wal", "status": "ok", "detail": "write-ahead log checkpointed"}
    holders = _holders(mem.store.path)
    who = f" (pid {', '.join(map(str, holders))})" if holders else ""
    return {"check": "wal", "status": "warn",
            "detail": f"the write-ahead log cannot be checkpointed while another process{who} "
            "holds a read transaction: text deleted by `memori forget` may remain in the -wal "
            "file until it closes; run `memori doctor` again then"}  # fmt: skip


def _model_checks(mem: Memori) -> list[dict[str, Any]]:
    """Each configured GGUF model file: present, and its header valid and complete."""
    checks: list[dict[str, Any]] = []
    for role, spec in (("chat", mem.config.chat_model), ("embedding", mem.config.embedding_model)):
        if role == "chat" and config.is_endpoint(spec):
            checks.append(_endpoint_check(mem, spec))
            continue
        if spec in ("none", "minilm") or (role == "embedding" and not spec.endswith(".gguf")):
            continue
        name = f"{role} model"
        try:
            info = gguf_file.check(Path(spec).expanduser())
        except MemoriError as exc:
            checks.append({"check": name, "status": "fail",
                           "detail": f"{exc}; fix or replace it, or register another with "
                           f"`memori model add{' --embedding' if role == 'embedding' else ''} "
                           "PATH.gguf`"})  # fmt: skip
            continue
        arch = f", {info.architecture}" if info.architecture else ""
        checks.append({"check": name, "status": "ok",
                       "detail": f"{spec} (GGUF v{info.version}{arch}, {info.tensors} tensors, "
                       f"{info.size / 1e6:.1f} MB)"})  # fmt: skip
    return checks


def _endpoint_check(mem: Memori, url: str) -> dict[str, Any]:
    """The chat endpoint: configured right (URL, model name, API-key variable) and answering
    ``GET /models``; one that is down is a warning (it may be started later)."""
    from ..augment.endpoint import EndpointExtractor, list_models

    name = mem.config.chat_name
    try:
        made = EndpointExtractor(url, name or "?", api_key_env=mem.config.chat_api_key_env or None)
        if not name:
            raise MemoriError("no model name: memori model add --endpoint URL --name MODEL")
    except MemoriError as exc:
        return {"check": "chat endpoint", "status": "fail", "detail": str(exc)}
    try:
        served = list_models(made.url, api_key_env=made.api_key_env, timeout=3)
    except MemoriError as exc:
        return {"check": "chat endpoint", "status": "warn", "detail": str(exc)}
    listed = "" if served is None else f"; it lists {', '.join(served) or 'no models'}"
    return {"check": "chat endpoint", "status": "ok",
            "detail": f"{name} at {url} answers{listed}"}  # fmt: skip


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
