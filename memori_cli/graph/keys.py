"""Node keys: when two spellings name one node.

A name's key folds case, whitespace, a possessive and a simple plural of its last word, so
"Lisbon", " lisbon " and "Lisbon's" are one node, and "cats" is "cat". Keys are internal: the
name shown is the first spelling met. Pure text rules, no store: recall reads a question's
words with the same keys (:func:`memori_cli.recall.query.node_keys_in`).
"""

from __future__ import annotations

import re

_POSSESSIVE = re.compile(r"['\u2019]s?$")


def node_key(name: str) -> str:
    """The resolution key of a node name (see the module docstring)."""
    words = " ".join(name.casefold().split()).strip(' .,;:!?"()[]{}').split(" ")
    last = _POSSESSIVE.sub("", words[-1])
    if len(last) > 3 and last.endswith("ies"):
        last = last[:-3] + "y"
    elif len(last) > 3 and last.endswith("s") and last[-2:] not in ("ss", "us", "is"):
        last = last[:-1]
    words[-1] = last
    return " ".join(words)


def alias_key(name: str) -> str:
    """The key an alias is stored and looked up under: its node key, or for a name that folds
    to nothing (punctuation only), the name case-folded."""
    return node_key(name) or name.casefold()
