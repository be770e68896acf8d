"""What one proxy is started with: ``memori serve``'s options, or ``[serve]`` in config.toml
(which ``memori daemon`` reads to run the proxy beside augmentation)::

    [serve]
    upstream = "http://127.0.0.1:8080/v1"       # any OpenAI-compatible server
    anthropic_upstream = "https://api.anthropic.com"
    # model = "/home/me/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"  # or served in process
    host = "127.0.0.1"
    port = 8765
    entity = "me"            # when a request names none
    process = "serve"
    token_env = "MEMORI_SERVE_TOKEN"   # the variable holding the token (never the token)
    # enabled = false        # keep the settings, but the daemon runs no proxy
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..attribution import validate_id
from ..config import default_entity
from ..errors import MemoriError
from ..net import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PROCESS = "serve"
#: Seconds an upstream may take to answer (a local model on a slow machine takes long).
DEFAULT_TIMEOUT = 600.0
TOKEN_ENV = "MEMORI_SERVE_TOKEN"

_KEYS = {
    "enabled": bool,
    "host": str,
    "port": int,
    "upstream": str,
    "anthropic_upstream": str,
    "model": str,
    "entity": str,
    "process": str,
    "token_env": str,
    "timeout": float,
}
_WHAT = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How a proxy listens, where it forwards, and whom a request is for when it says nothing.

    ``upstream`` is an OpenAI base URL as the OpenAI SDK takes it (``http://host:8080/v1``; a
    bare ``http://host:8080`` gets ``/v1``), ``anthropic_upstream`` one as the Anthropic SDK
    takes it (``https://api.anthropic.com``), ``model`` a GGUF file served in this process by
    llama-cpp-python (instead of ``upstream``). With ``token`` set every request must carry it
    in ``X-Memori-Token``; without it the proxy only listens on loopback.
    """

    upstream: str | None = None
    anthropic_upstream: str | None = None
    model: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    entity: str = dataclasses.field(default_factory=default_entity)
    process: str = DEFAULT_PROCESS
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    #: Whether requests get memories unless they say (``X-Memori-Inject``); None: config.toml's
    #: ``[injection] enabled``.
    inject: bool | None = None

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> ServeOptions:
        """Options from the ``[serve]`` table of config.toml, checked key by key; the token
        is read from the variable ``token_env`` names (``MEMORI_SERVE_TOKEN`` by default)."""
        values: dict[str, Any] = {}
        for key, value in table.items():
            kind = _KEYS.get(key)
            if kind is None:
                raise MemoriError(f"config.toml: [serve] has no setting {key!r}")
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise MemoriError(f"config.toml: [serve] {key} = {value!r}: not {_WHAT[kind]}")
            values[key] = value
        values.pop("enabled", None)
        token_env = values.pop("token_env", TOKEN_ENV)
        if "model" in values:
            values["model"] = Path(values["model"]).expanduser()
        return cls(token=os.environ.get(token_env) or None, **values)

    def replace(self, **changes: Any) -> ServeOptions:
        """A copy with the changes that are not None applied (command-line options over
        config.toml's)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> ServeOptions:
        """These options, or a :class:`MemoriError` that says what is wrong with them."""
        if not (self.upstream or self.anthropic_upstream or self.model):
            raise MemoriError(
                "memori serve needs somewhere to send requests: --upstream URL (an "
                "OpenAI-compatible server), --anthropic-upstream URL or --model PATH.gguf "
                "(or the same in [serve] of config.toml)"
            )
        if self.upstream and self.model:
            raise MemoriError("--upstream and --model both answer OpenAI requests: give one")
        for name, url in (("upstream", self.upstream), ("anthropic-upstream",
                                                        self.anthropic_upstream)):  # fmt: skip
            if url is not None:
                parts = urllib.parse.urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise MemoriError(f"--{name} {url!r}: not an http:// or https:// URL")
        if not 0 <= self.port <= 65535:
            raise MemoriError(f"--port {self.port}: not a port (0-65535)")
        if self.timeout <= 0:
            raise MemoriError(f"--timeout {self.timeout:g}: must be more than 0 seconds")
        validate_id(self.entity, "entity")
        validate_id(self.process, "process")
        if self.token is not None and len(self.token) < 16:
            raise MemoriError("the token is too short to guard anything: use 16 characters or more")
        if not self.token and not is_loopback(self.host):
            raise MemoriError(
                f"--host {self.host} is reachable from other machines: memori serve listens "
                f"there only with a token (--token, or ${TOKEN_ENV}), which every client then "
                "sends in X-Memori-Token"
            )
        return self


def openai_base(url: str) -> str:
    """An OpenAI base URL (``.../v1``): a bare host gets ``/v1``."""
    url = url.rstrip("/")
    return url + "/v1" if not urllib.parse.urlsplit(url).path else url


def anthropic_base(url: str) -> str:
    """An Anthropic base URL, to which ``/v1/messages`` is appended (a trailing ``/v1`` is
    taken off: people paste either)."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url
