"""``memori daemon``: start, stop and inspect the background augmentation process."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import memori_daemon
import typer

from .. import paths
from ..errors import AlreadyRunning, MemoriError, StoreUnavailable
from ..store import jobs
from ..store.backend import mask_url
from .common import (
    CONTEXT_SETTINGS,
    MARKUP,
    MAX_ID,
    err,
    escape,
    handle_errors,
    out,
    print_json,
    state,
)

daemon_app = typer.Typer(
    context_settings=CONTEXT_SETTINGS,
    rich_markup_mode=MARKUP,
    help="The background process that augments new messages as they arrive.",
    no_args_is_help=True,
)


def _db(ctx: typer.Context) -> Path | str:
    """The store the daemon serves: its file, or a PostgreSQL URL (a str, kept whole)."""
    db = state(ctx).db
    if isinstance(db, str):
        return db
    return (db or paths.default_db_path()).expanduser().resolve()


def _shown(db: Path | str) -> str:
    """How ``db`` is printed (a URL's password masked)."""
    return mask_url(db) if isinstance(db, str) else str(db)


@daemon_app.command("run")
@handle_errors
def run_command(ctx: typer.Context) -> None:
    """Run the daemon in the foreground until Ctrl-C or SIGTERM (for service managers)."""
    from memori_daemon.worker import run

    db = _db(ctx)
    err.print(f"memori daemon serving {_shown(db)}; logs in {memori_daemon.log_path(db)}")
    try:
        run(db)
    except AlreadyRunning as exc:
        raise MemoriError(str(exc)) from None


@daemon_app.command("start")
@handle_errors
def start_command(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(help="Seconds to wait for it to come up.")] = 15.0,
) -> None:
    """Start the daemon in the background (nothing happens if one already serves the store)."""
    db = _db(ctx)
    current = memori_daemon.status(db)
    if current.running:
        err.print(f"The daemon is already running (pid {current.pid}).")
        return
    log = memori_daemon.log_path(db)
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if isinstance(db, str):  # the URL in the environment: a command line is public
        pid = _spawn([sys.executable, "-m", "memori_daemon"], log, {"MEMORI_DB": db})
    else:
        pid = _spawn([sys.executable, "-m", "memori_daemon", "--db", str(db)], log)
    _await_start(pid, db, log, wait)


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (a session of its own, stdin from /dev/null, output appended
    to ``log``) and return its pid.

    Not through :class:`subprocess.Popen`: the daemon outlives this command, and a Popen
    object finalised while its child still runs makes Python warn "subprocess N is still
    running" (a ResourceWarning). With a bare pid nothing is left to finalise; a daemon that
    exits while we wait is reaped in :func:`_await_start`, one that runs on is adopted by
    init when this command exits.
    """
    return os.posix_spawn(
        argv[0],
        argv,
        {**os.environ, **(env or {})},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def _exit_status(pid: int, timeout: float = 0.0) -> int | None:
    """The exit status of our child ``pid`` once it has exited (reaping it), else None."""
    deadline = time.time() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped
            return -1
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.time() >= deadline:
            return None
        time.sleep(0.05)


def _last_line(log: Path) -> str:
    """The last line the daemon wrote to its log (what it said as it stopped), or ''."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _await_start(pid: int, db: Path | str, log: Path, wait: float) -> None:
    deadline = time.time() + wait
    while time.time() < deadline:
        current = memori_daemon.status(db)
        if current.running and current.heartbeat is not None:
            if current.pid == pid:
                err.print(f"Started the daemon (pid {pid}); logs in {log}.")
            else:  # another start won the race: ours finds the lock taken and exits
                _exit_status(pid, max(deadline - time.time(), 1.0))
                err.print(f"The daemon is already running (pid {current.pid}).")
            return
        if not current.running:
            code = _exit_status(pid)
            if code is not None:
                said = _last_line(log)
                raise MemoriError(
                    f"the daemon exited at once (status {code}){': ' + said if said else ''}; "
                    f"see {log}"
                )
        time.sleep(0.05)
    raise MemoriError(f"the daemon did not report within {wait:g} s; see {log}")


@daemon_app.command("stop")
@handle_errors
def stop_command(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(help="Seconds to wait for it to finish.")] = 30.0,
) -> None:
    """Stop the daemon: it finishes (or hands back) its current job, then exits."""
    db = _db(ctx)
    current = memori_daemon.status(db)
    if not current.running or current.pid is None:
        err.print("The daemon is not running.")
        return
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline:
        if not memori_daemon.status(db).running:
            err.print(f"Stopped the daemon (pid {current.pid}).")
            return
        time.sleep(0.05)
    raise MemoriError(f"the daemon (pid {current.pid}) is still finishing after {wait:g} s")


@daemon_app.command("status")
@handle_errors
def status_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Whether the daemon runs: pid, uptime, heartbeat age, queue depth, failures, model, and
    the memory proxy's address when it serves one ([serve] in config.toml)."""
    db = _db(ctx)
    current = memori_daemon.status(db)
    beat = current.heartbeat or {}
    mem = state(ctx).memori()
    now = time.time()
    extractor = beat.get("extractor")
    if not extractor:
        try:
            extractor = mem.extractor().name
        except MemoriError as exc:  # a damaged model file: say so, the rest still shows
            extractor = f"unusable: {exc}"
    data: dict[str, Any] = {
        "running": current.running,
        "pid": current.pid,
        "store": _shown(db),
        "uptime_s": round(now - beat["started"], 1) if "started" in beat else None,
        "heartbeat_age_s": round(now - beat["heartbeat"], 1) if "heartbeat" in beat else None,
        "extractor": extractor,
        "jobs_done_since_start": beat.get("jobs_done"),
        "proxy": beat.get("proxy") if current.running else None,
        "queue": None,
        "log": str(memori_daemon.log_path(db)),
    }
    lost = beat.get("store_lost_since") if current.running else None
    if lost:
        # the daemon is waiting for the store's server (a restart, a dropped connection)
        data["store_unreachable_s"] = round(now - lost, 1)
    try:
        data["queue"] = jobs.depth(mem.store)
    except StoreUnavailable as exc:  # the daemon's own status still shows
        data["store_error"] = str(exc)
    if json_output:
        print_json(data)
        return
    for key, value in data.items():
        if key == "queue" and value is None:
            value = "unknown (the store cannot be reached)"
        elif key == "queue":
            value = ", ".join(f"{n} {status}" for status, n in value.items())
        out.print(f"{key.replace('_', ' ')}: {escape(str(value))}", highlight=False)


@daemon_app.command("logs")
@handle_errors
def logs_command(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("--lines", "-n", max=MAX_ID, help="How many lines to show.")
    ] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """Show the daemon's log (it never holds message contents at info level)."""
    log = memori_daemon.log_path(_db(ctx))
    if not log.exists():
        err.print(f"No log yet at {log}.")
        return
    with open(log, encoding="utf-8", errors="replace") as handle:
        for line in deque(handle, maxlen=max(lines, 0)):
            sys.stdout.write(line)
        sys.stdout.flush()
        while follow:
            line = handle.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


@daemon_app.command("install")
@handle_errors
def install_command(
    ctx: typer.Context,
    system: Annotated[
        str, typer.Option(help="Service manager: systemd (Linux) or launchd (macOS).")
    ] = ("launchd" if sys.platform == "darwin" else "systemd"),
) -> None:
    """Write a service file that starts the daemon at login: a systemd user unit on Linux,
    a launchd agent on macOS. Prints the command that enables it."""
    db = _db(ctx)
    if isinstance(db, str):
        raise MemoriError(
            "a service file for a PostgreSQL store is not written yet: it would hold the URL "
            "(and any password in it) in plain text. Run `memori daemon start` instead, or "
            "write a unit that sets MEMORI_DB from a file only you can read"
        )
    command = [sys.executable, "-m", "memori_daemon", "--db", str(db)]
    env = {k: os.environ[k] for k in ("MEMORI_HOME",) if k in os.environ}
    if system == "systemd":
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        target = base / "systemd" / "user" / "memori.service"
        environment = "".join(f"Environment={k}={shlex.quote(v)}\n" for k, v in env.items())
        text = (
            "[Unit]\nDescription=memori augmentation daemon\n\n"
            f"[Service]\nExecStart={shlex.join(command)}\n{environment}"
            "Restart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=default.target\n"
        )
        enable = "systemctl --user daemon-reload && systemctl --user enable --now memori"
    elif system == "launchd":
        from xml.sax.saxutils import escape

        target = Path.home() / "Library" / "LaunchAgents" / "dev.memori.daemon.plist"
        args = "".join(f"<string>{escape(a)}</string>" for a in command)
        envs = "".join(
            f"<key>{escape(k)}</key><string>{escape(v)}</string>" for k, v in env.items()
        )
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
            '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
            '<plist version="1.0"><dict>'
            "<key>Label</key><string>dev.memori.daemon</string>"
            f"<key>ProgramArguments</key><array>{args}</array>"
            f"<key>EnvironmentVariables</key><dict>{envs}</dict>"
            "<key>RunAtLoad</key><true/><key>KeepAlive</key><true/>"
            "</dict></plist>\n"
        )
        enable = f"launchctl load -w {shlex.quote(str(target))}"
    else:
        raise typer.BadParameter(f"unknown service manager {system!r}: use systemd or launchd")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    err.print(f"Wrote {target}. Enable it with:", highlight=False)
    out.print(enable, highlight=False)
