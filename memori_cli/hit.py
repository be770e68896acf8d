"""The hit :meth:`memori_cli.Memori.recall` returns: a :class:`RecallHit` that also answers the
field names of the upstream Memori library.

Upstream code reads a recalled item as a mapping (``hit["content"]``,
``hit.get("similarity")``) or by attribute; both work, beside every current field.
``similarity`` is the hit's relevance, the same number as ``score`` (recall's fused ranking
score, higher is better; not a raw cosine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from .recall import RecallHit

#: Upstream names -> the field that holds the value.
ALIASES = {"similarity": "score"}


@dataclasses.dataclass(frozen=True)
class Hit(RecallHit):
    """A recall hit: :class:`RecallHit` plus ``similarity`` and read access as a mapping."""

    @property
    def similarity(self) -> float:
        """The hit's relevance, as the upstream library names it: the same as ``score``."""
        return self.score

    @classmethod
    def of(cls, hit: RecallHit) -> Hit:
        """``hit`` as a :class:`Hit` (the same fields)."""
        if isinstance(hit, cls):
            return hit
        return cls(**{f.name: getattr(hit, f.name) for f in dataclasses.fields(hit)})

    def keys(self) -> list[str]:
        """The field names, with the upstream aliases."""
        return [f.name for f in dataclasses.fields(self)] + list(ALIASES)

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, ALIASES.get(key, key))

    def get(self, key: str, default: Any = None) -> Any:
        """``hit[key]``, or ``default`` for a name the hit does not have."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
