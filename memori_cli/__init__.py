"""memori: long-term memory for LLM applications, entirely on your own machine.

>>> from memori_cli import Memori
>>> mem = Memori(conn="memori.db")              # doctest: +SKIP
>>> mem.attribution(entity_id="alice")          # doctest: +SKIP
>>> mem.recall("where does Alice live?")        # doctest: +SKIP
"""

from ._version import __version__
from .attribution import Attribution
from .errors import (
    AlreadyRunning,
    ConfigError,
    EmbeddingUnavailable,
    EndpointError,
    ExtensionError,
    ExtractionError,
    ForgetWarning,
    GraphError,
    ImportFormatError,
    InvalidIdError,
    InvalidMessageError,
    InvalidQueryError,
    MemoriError,
    ModelFileError,
    NoBackend,
    NoStoreError,
    PermissionsWarning,
    ReadOnlyStoreError,
    RecallWarning,
    StoreError,
    StoreFullError,
    StoreUnavailable,
)
from .importers import ImportReport
from .memori import Memori
from .recall import RecallHit

__all__ = [
    "AlreadyRunning",
    "Attribution",
    "ConfigError",
    "EmbeddingUnavailable",
    "EndpointError",
    "ExtensionError",
    "ExtractionError",
    "ForgetWarning",
    "GraphError",
    "ImportFormatError",
    "ImportReport",
    "InvalidIdError",
    "InvalidMessageError",
    "InvalidQueryError",
    "Memori",
    "MemoriError",
    "ModelFileError",
    "NoBackend",
    "NoStoreError",
    "PermissionsWarning",
    "ReadOnlyStoreError",
    "RecallHit",
    "RecallWarning",
    "StoreError",
    "StoreFullError",
    "StoreUnavailable",
    "__version__",
]
