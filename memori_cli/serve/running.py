"""Running the proxy on uvicorn: in the foreground (``memori serve``) or in a thread of this
process (``memori daemon`` beside augmentation, tests), with a GGUF model served beside it
by llama-cpp-python's own server when asked.

memori binds the socket itself, before anything loads: a port in use or a host that is not
this machine's is one clear error, not a log line from a thread.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from .. import gguf_file
from ..errors import MemoriError, ModelFileError
from .app import create_app
from .options import ServeOptions

if TYPE_CHECKING:
    from ..memori import Memori

#: Seconds uvicorn waits for replies still streaming when it stops, before cutting them off
#: (each is then captured as partial).
GRACE_SECONDS = 5
#: uvicorn adds no ``server`` header of its own: a reply carries the upstream's, once (the
#: upstream's ``date`` is dropped for uvicorn's, :func:`.app._reply_headers`).
PASS_HEADERS: dict[str, Any] = {"server_header": False}


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening; uvicorn does that)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise MemoriError(f"cannot listen on {host}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = (
            "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        )
        raise MemoriError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Running:
    """An ASGI app served by uvicorn in a thread of this process until :meth:`stop`."""

    def __init__(
        self, app: Any, sock: socket.socket, *, name: str, log_level: str = "warning",
        after: Callable[[], None] | None = None,
    ):  # fmt: skip
        config = uvicorn.Config(
            app, log_level=log_level, log_config=None, access_log=False, lifespan="on",
            timeout_graceful_shutdown=GRACE_SECONDS, **PASS_HEADERS,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.name = name
        self.url = url_of(sock)
        self._sock = sock
        self._after = after
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name=name, daemon=True
        )

    def start(self, timeout: float = 120.0) -> Running:
        """Start serving; returns once the app is ready (its startup done)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise MemoriError(f"{self.name} did not start (its log says why)")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving (replies still streaming get :data:`GRACE_SECONDS`), then clean up."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self._after is not None:
            after, self._after = self._after, None
            after()


class _Foreground(uvicorn.Server):
    """uvicorn's server for ``memori serve``: SIGINT or SIGTERM stop it cleanly (replies in
    flight get their grace, captures are stored) and the command exits 0; uvicorn's own
    would raise the signal again once stopped, and the process die of it."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for replies
        self.should_exit = True


class _NoQuery(logging.Filter):
    """uvicorn's request lines without query strings: a key passed as ``?key=...`` (some
    hosted APIs take one so) is not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def start_llama(path: Path, *, n_ctx: int = 4096) -> Running:
    """llama-cpp-python's OpenAI-compatible server for the GGUF file at ``path``, in a thread
    of this process on a loopback port of its own (streaming included)."""
    gguf_file.check(path)  # a clear ModelFileError, not llama.cpp's failure
    try:
        from llama_cpp.server.app import create_app as llama_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError:
        raise MemoriError(
            "--model needs llama-cpp-python with its server: "
            "pip install 'memori-cli[local]' 'llama-cpp-python[server]'"
        ) from None
    settings = ModelSettings(model=str(path), model_alias=path.stem, n_ctx=n_ctx, verbose=False)
    try:
        app = llama_app(server_settings=ServerSettings(host="127.0.0.1", port=0),
                        model_settings=[settings])  # fmt: skip
    except (ValueError, OSError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: llama.cpp cannot load the model: {exc}") from exc
    return Running(app, bind("127.0.0.1", 0), name="memori-llama").start()


def _prepared(options: ServeOptions) -> tuple[ServeOptions, Running | None, socket.socket]:
    """Checked options with the port bound and, for ``model``, its server started (the
    options then point at it)."""
    options.check()
    sock = bind(options.host, options.port)
    local = None
    if options.model is not None:
        try:
            local = start_llama(options.model)
        except BaseException:
            sock.close()
            raise
        options = dataclasses.replace(options, upstream=local.url + "/v1", model=None)
    return options, local, sock


def start(mem: Memori, options: ServeOptions, *, close: bool = False) -> Running:
    """Serve the proxy in a thread until ``.stop()``; with ``close``, ``mem`` is closed then."""
    options, local, sock = _prepared(options)

    def after() -> None:
        if local is not None:
            local.stop()
        if close:
            mem.close()

    try:
        return Running(create_app(mem, options), sock, name="memori-serve", after=after).start()
    except BaseException:
        after()
        raise


def run(
    mem: Memori,
    options: ServeOptions,
    *,
    log_level: str = "info",
    ready: Callable[[str, ServeOptions], None] | None = None,
) -> None:
    """Serve the proxy in the foreground until SIGINT or SIGTERM (uvicorn handles them)."""
    options, local, sock = _prepared(options)
    try:
        config = uvicorn.Config(
            create_app(mem, options), log_level=log_level, lifespan="on",
            timeout_graceful_shutdown=GRACE_SECONDS, **PASS_HEADERS,
        )  # fmt: skip
        logging.getLogger("uvicorn.access").addFilter(_NoQuery())
        if ready is not None:
            ready(url_of(sock), options)
        _Foreground(config).run(sockets=[sock])
    finally:
        sock.close()
        if local is not None:
            local.stop()
