"""Settings: defaults, overridden by environment variables (``MEMORI_*``)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from .attribution import DEFAULT_ENTITY

if TYPE_CHECKING:
    from .store import Store


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
    recall_limit: int = 10
