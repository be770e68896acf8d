"""The README shows what the commands print now: its console blocks are run and compared."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEMORI = str(Path(sys.executable).parent / "memori")

pytestmark = pytest.mark.slow  # runs the README's commands as processes


def console_blocks() -> list[list[tuple[str, list[str]]]]:
    """Each ```console block of the README as (command, expected output lines) pairs."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for body in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def test_the_readmes_console_blocks_print_what_they_show(tmp_path: Path) -> None:
    env = {**os.environ, "MEMORI_HOME": str(tmp_path / "home"), "COLUMNS": "100"}
    env.pop("MEMORI_DB", None)
    ran = 0
    for block in console_blocks():
        # A chat needs a model server, and its transcript is abridged ("..."): not re-run.
        if any("chat" in command for command, _ in block):
            continue
        for command, expected in block:
            words = shlex.split(command)
            assert words[0] == "memori", command
            done = subprocess.run(
                [MEMORI, *words[1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=300,
            )  # fmt: skip
            printed = [
                re.sub(r"(Created a new memori store at ).*", r"\1PATH", line)
                for line in done.stdout.splitlines()
            ]
            shown = [re.sub(r"(Created a new memori store at ).*", r"\1PATH", line)
                     for line in expected]  # fmt: skip
            assert printed == shown, f"README's `{command}` no longer prints what it shows"
            ran += 1
    assert ran >= 3
