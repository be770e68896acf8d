"""The built wheel installs memori_cli and memori_daemon, never a top-level ``daemon``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # builds wheels and runs the console script


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


# The issue 11 snippet, verbatim: the set-up people copy from the upstream Memori library.
SNIPPET = """\
import sqlite3
from memori import Memori                     # ModuleNotFoundError: No module named 'memori'
from openai import OpenAI

def get_connection():
    return sqlite3.connect("memori.db")

client = OpenAI()
mem = Memori(conn=get_connection).llm.register(client)   # returns the OpenAI client, not Memori
mem.attribution(entity_id="user_123", process_id="my_agent")  # AttributeError: 'OpenAI' object has no attribute 'attribution'
mem.config.storage.build()
"""  # noqa: E501
USE = """
client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "My favourite tea is Lapsang Souchong."}]
)
assert mem.augmentation.wait(timeout=60)
print(client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "Which tea do I like?"}]
).choices[0].message.content)
import memori, memori_cli
print("same objects:", memori.Memori is memori_cli.Memori, memori_cli.__file__)
"""


def test_the_upstream_snippet_runs_in_a_fresh_venv_from_the_wheel(tmp_path: Path) -> None:
    """Built wheel, new venv (no editable checkout), dependencies from the package index: the
    snippet runs as written; OpenAI() finds the local test server through its environment."""
    from llm_server import LLMServer

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("memori_cli-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{wheel}[openai]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "app"
    work.mkdir()
    (work / "app.py").write_text(SNIPPET + USE)
    server = LLMServer().start()
    try:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "MEMORI_HOME": str(tmp_path / "memori-home"),
            "OPENAI_BASE_URL": server.url + "/v1",
            "OPENAI_API_KEY": "test",
        }
        ran = subprocess.run(
            [str(python), "app.py"], cwd=work, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    finally:
        server.stop()
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "same objects: True" in ran.stdout
    assert str(venv) in ran.stdout  # memori_cli came from the wheel, not the checkout
    assert (work / "memori.db").exists()
    first, second = (r["body"] for r in server.requests)
    assert "Lapsang" not in json.dumps(first["messages"][:-1])
    system = second["messages"][0]
    assert system["role"] == "system" and "Lapsang Souchong" in system["content"]
