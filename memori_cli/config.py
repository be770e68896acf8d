"""Settings: defaults, overridden by environment variables (``MEMORI_*``)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from .attribution import DEFAULT_ENTITY
from .recall.hybrid import RankingConfig

if TYPE_CHECKING:
    from .store import Store


def embedding_model() -> str:
    """The embedding model: ``$MEMORI_EMBEDDING_MODEL`` (``minilm``, a ``.gguf`` path or
    ``none``), else ``minilm``."""
    return os.environ.get("MEMORI_EMBEDDING_MODEL") or "minilm"


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
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
