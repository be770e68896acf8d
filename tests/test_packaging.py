"""The built wheel installs memori_cli and memori_daemon, never a top-level ``daemon``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("memori_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if "/" in name}
    assert "memori_cli" in top_level
    assert "memori_daemon" in top_level
    assert "daemon" not in top_level
    assert "memori_daemon/__init__.py" in names
    assert "memori_cli/capture/__init__.py" in names
    assert "memori_cli/py.typed" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Name: memori-cli" in text
    assert "Provides-Extra: local" in text
    assert "Requires-Dist: llama-cpp-python" in text and 'extra == "local"' in text
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "memori = memori_cli.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_console_script_runs() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "memori"), "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("memori ")
