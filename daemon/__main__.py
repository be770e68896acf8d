"""``python -m memori_daemon --db PATH``: what ``memori daemon start`` runs detached (a
PostgreSQL store's URL comes in ``MEMORI_DB``, not on the command line, where other users
could read its password)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from memori_cli import paths
from memori_cli.errors import MemoriError
from memori_cli.store.backend import is_postgres_url

from .worker import AlreadyRunning, run


def main() -> int:
    """Serve one store until SIGTERM; exit 3 if another daemon already serves it."""
    parser = argparse.ArgumentParser(prog="memori_daemon")
    parser.add_argument(
        "--db", default=os.environ.get("MEMORI_DB"), help="the store file or PostgreSQL URL"
    )
    args = parser.parse_args()
    db: Path | str = paths.default_db_path()
    if args.db:
        db = args.db if is_postgres_url(args.db) else Path(args.db)
    try:
        run(db)
    except AlreadyRunning as exc:
        print(f"memori daemon: {exc}", file=sys.stderr)
        return 3
    except MemoriError as exc:  # e.g. a damaged model file: one clear line, no traceback
        print(f"memori daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
