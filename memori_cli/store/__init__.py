"""The store: the only code that speaks SQL. See :class:`Store`."""

from . import connect  # noqa: F401  (`store.connect`: the driver and its errors)
from .core import Store, now_iso
from .messages import ROLES, AddResult, NewMessage

__all__ = ["ROLES", "AddResult", "NewMessage", "Store", "now_iso"]
