"""``python -m memori_daemon --db PATH``: what ``memori daemon start`` runs detached."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memori_cli import paths
from memori_cli.errors import MemoriError

from .worker import AlreadyRunning, run


def main() -> int:
    """Serve one store until SIGTERM; exit 3 if another daemon already serves it."""
    parser = argparse.ArgumentParser(prog="memori_daemon")
    parser.add_argument("--db", type=Path, default=None, help="the store file")
    args = parser.parse_args()
    try:
        run(args.db or paths.default_db_path())
    except AlreadyRunning as exc:
        print(f"memori daemon: {exc}", file=sys.stderr)
        return 3
    except MemoriError as exc:  # e.g. a damaged model file: one clear line, no traceback
        print(f"memori daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
