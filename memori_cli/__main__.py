"""``python -m memori_cli``: the ``memori`` command, for hosts that start servers by the
Python that has memori installed (``python -m memori_cli mcp``)."""

from .cli import main

main()
