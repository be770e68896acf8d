"""memori: long-term memory for LLM applications, entirely on your own machine.

>>> from memori_cli import Memori
>>> mem = Memori(conn="memori.db")              # doctest: +SKIP
>>> mem.attribution(entity_id="alice")          # doctest: +SKIP
>>> mem.recall("where does Alice live?")        # doctest: +SKIP
"""

from ._version import __version__
from .attribution import Attribution
from .errors import (
    EndpointError,
    ExtensionError,
    ForgetWarning,
    ImportFormatError,
    InvalidIdError,
    MemoriError,
    ModelFileError,
    NoStoreError,
    PermissionsWarning,
    RecallWarning,
    StoreError,
)
from .importers import ImportReport
from .memori import Memori
from .recall import RecallHit

__all__ = [
    "Attribution",
    "EndpointError",
    "ExtensionError",
    "ForgetWarning",
    "ImportFormatError",
    "ImportReport",
    "InvalidIdError",
    "Memori",
    "MemoriError",
    "ModelFileError",
    "NoStoreError",
    "PermissionsWarning",
    "RecallHit",
    "RecallWarning",
    "StoreError",
    "__version__",
]
