"""Settings: defaults, overridden by ``$MEMORI_HOME/config.toml``, overridden by environment
variables (``MEMORI_*``).

``config.toml`` holds what ``memori model add`` registers::

    [models]
    chat = "/home/me/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"   # extraction (and chat)
    embedding = "minilm"                                          # or a .gguf path, or none

or, for a model behind an OpenAI-compatible server (``memori model add --endpoint``)::

    [models]
    chat = "http://127.0.0.1:8080/v1"   # the endpoint
    chat_name = "SmolLM2-135M-Instruct" # the model it serves
    chat_api_key_env = "MY_API_KEY"     # optional: the variable that holds the key (never
                                        # the key itself)
    extractors = "rules+model"          # with a chat model: "model" alone, or rules too
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from . import paths
from .attribution import DEFAULT_ENTITY
from .errors import ConfigError
from .parts import RankingConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]

if TYPE_CHECKING:
    from .store import Store


def config_path() -> Path:
    """The settings file: ``$MEMORI_HOME/config.toml`` or the platform's data folder's."""
    return paths.data_dir() / "config.toml"


def read_file() -> dict[str, Any]:
    """The settings file's contents ({} if there is none); a broken file is an error."""
    path = config_path()
    if not path.exists():
        return {}
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return data


def set_model(role: str, value: str, **extra: str | None) -> Path:
    """Record ``value`` as the ``role`` model (``chat`` or ``embedding``) in the settings file.

    ``extra`` sets ``<role>_<key>`` beside it (``name``, ``api_key_env`` for an endpoint); the
    role's other extras are cleared, so a GGUF path never inherits an endpoint's model name."""
    data = read_file()
    models = dict(data.get("models", {}))
    models[role] = value
    for key in [k for k in models if k.startswith(f"{role}_")]:
        del models[key]
    models.update({f"{role}_{key}": v for key, v in extra.items() if v})
    data["models"] = models
    path = config_path()
    paths.ensure_private_dir(path.parent)
    # Written 0600 from the start, then moved into place (a reader never sees half a file).
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        tomli_w.dump(data, file)
    os.replace(tmp, path)
    return path


def _model(role: str, env: str, default: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    value = read_file().get("models", {}).get(role)
    return str(value) if value else default


def embedding_model() -> str:
    """The embedding model: ``$MEMORI_EMBEDDING_MODEL``, else config.toml's, else ``minilm``
    (``minilm``, a ``.gguf`` path, or ``none``)."""
    return _model("embedding", "MEMORI_EMBEDDING_MODEL", "minilm")


def chat_model() -> str:
    """The GGUF chat model used for extraction: ``$MEMORI_CHAT_MODEL``, else config.toml's,
    else ``none`` (the rule extractor)."""
    return _model("chat", "MEMORI_CHAT_MODEL", "none")


def is_endpoint(spec: str) -> bool:
    """Whether a chat model setting is an endpoint URL rather than a GGUF path."""
    return spec.startswith(("http://", "https://"))


def chat_name() -> str:
    """The model name sent to a chat endpoint: ``$MEMORI_CHAT_NAME``, else config.toml's
    ``chat_name``, else ``""``."""
    return _model("chat_name", "MEMORI_CHAT_NAME", "")


def chat_api_key_env() -> str:
    """The name of the environment variable that holds the chat endpoint's API key
    (``$MEMORI_CHAT_API_KEY_ENV``, else config.toml's ``chat_api_key_env``), or ``""``."""
    return _model("chat_api_key_env", "MEMORI_CHAT_API_KEY_ENV", "")


#: What runs with a chat model configured: the model alone, or the rules and the model.
EXTRACTOR_CHOICES = ("model", "rules+model")
#: The default, from the extraction benchmark (README, "Extraction benchmark").
DEFAULT_EXTRACTORS = "rules+model"


def extractors() -> str:
    """With a chat model: ``model`` or ``rules+model`` (``$MEMORI_EXTRACTORS``, else
    config.toml's ``extractors``, else :data:`DEFAULT_EXTRACTORS`); not checked here."""
    return _model("extractors", "MEMORI_EXTRACTORS", DEFAULT_EXTRACTORS)


def check_extractors(value: str) -> str:
    """``value`` if it is one of :data:`EXTRACTOR_CHOICES`, else a :class:`ConfigError`."""
    if value not in EXTRACTOR_CHOICES:
        raise ConfigError(
            f"extractors = {value!r} is not one of {', '.join(EXTRACTOR_CHOICES)} "
            "(MEMORI_EXTRACTORS or [models] extractors in config.toml)"
        )
    return value


#: A lease shorter than this would run out between a long model call's renewals.
MIN_LEASE_SECONDS = 5.0


def lease_seconds() -> float:
    """The job lease (seconds): ``$MEMORI_LEASE_SECONDS``, else ``[daemon] lease_seconds``
    in config.toml, else the queue's default (120). Another worker takes over the jobs
    of one that died (on another host, or unseen) once their lease has run out."""
    from .store.jobs import LEASE_SECONDS

    return _number("MEMORI_LEASE_SECONDS", "daemon", "lease_seconds", LEASE_SECONDS,
                   MIN_LEASE_SECONDS, "seconds")  # fmt: skip


def vector_cache_mb() -> float:
    """The memory (MB) a process may give its copies of large entities' vectors on
    PostgreSQL: ``$MEMORI_VECTOR_CACHE_MB``, else ``[postgres] vector_cache_mb`` in
    config.toml, else 512; 0 turns the copies off (every search runs on the server)."""
    from .store.postgres.vectors import CACHE_MB

    return _number("MEMORI_VECTOR_CACHE_MB", "postgres", "vector_cache_mb", CACHE_MB, 0, "MB")


def _number(env: str, section: str, key: str, default: float, minimum: float, unit: str) -> float:
    """A numeric setting: the variable ``env``, else ``[section] key`` in config.toml, else
    ``default``; a value that is not a finite number of at least ``minimum`` is a ConfigError
    naming where it came from."""
    where = env
    value: Any = os.environ.get(env)
    if not value:
        table = read_file().get(section, {})
        value = table.get(key) if isinstance(table, dict) else None
        where = f"[{section}] {key} in config.toml"
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number >= minimum or number == float("inf"):
        raise ConfigError(f"{where} = {value!r} is not a number of {unit} of at least {minimum:g}")
    return number


def default_entity() -> str:
    """The entity used when none is given: ``$MEMORI_ENTITY`` or ``default``."""
    return os.environ.get("MEMORI_ENTITY") or DEFAULT_ENTITY


class StorageConfig:
    """The storage side of the configuration: ``build()`` creates or migrates the schema."""

    def __init__(self, store: Store):
        self._store = store

    def build(self) -> None:
        """Create or migrate the schema now. Idempotent; first use does it too."""
        self._store.build()


@dataclasses.dataclass
class Config:
    """Configuration of one :class:`memori_cli.Memori`."""

    storage: StorageConfig
    #: ``minilm``, a path to a ``.gguf`` embedding model, or ``none``.
    embedding_model: str = dataclasses.field(default_factory=embedding_model)
    #: A path to a ``.gguf`` chat model for extraction, an OpenAI-compatible endpoint URL,
    #: or ``none`` for the rule extractor.
    chat_model: str = dataclasses.field(default_factory=chat_model)
    #: The model an endpoint serves (``chat_model`` is then a URL).
    chat_name: str = dataclasses.field(default_factory=chat_name)
    #: The environment variable holding the endpoint's API key, or ``""``.
    chat_api_key_env: str = dataclasses.field(default_factory=chat_api_key_env)
    #: With a chat model: ``model`` alone or ``rules+model`` (read when the extractor is made).
    extractors: str = dataclasses.field(default_factory=extractors)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
