"""``import memori``: the import name of the upstream Memori library, for memori-cli.

``from memori import Memori`` is ``from memori_cli import Memori``: this package only
re-exports the public API of :mod:`memori_cli`, the same objects (``memori.Memori is
memori_cli.Memori``), so code written for the upstream library's set-up runs unchanged.

The upstream ``memori`` distribution (PyPI ``memori``) installs a package of this same name;
with both in one environment, whichever was installed last wins. ``memori doctor`` detects
and reports that clash.
"""

import memori_cli
from memori_cli import *  # noqa: F403  (the same objects, not copies)
from memori_cli import __version__ as __version__

__all__ = list(memori_cli.__all__)
