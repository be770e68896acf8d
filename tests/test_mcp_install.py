"""``memori mcp install``: the host config entry, printed or merged into the host's file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memori_cli.cli import app
from memori_cli.mcp import install

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("client", install.CLIENTS)
def test_prints_a_snippet_with_absolute_paths(client: str, tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    code, out, err = run("--db", str(db), "mcp", "install", "--client", client,
                         "--entity", "maya")  # fmt: skip
    assert code == 0, err
    key = "servers" if client == "vscode" else "mcpServers"
    entry = json.loads(out)[key]["memori"]
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
    args = entry["args"]
    assert args[args.index("--db") + 1] == str(db.absolute())
    assert args[args.index("mcp") + 1 :] == ["--entity", "maya"]
    assert entry["env"]["MEMORI_HOME"]  # the conftest's home, carried to the host
    assert ("type" in entry) == (client in ("vscode", "claude-code"))
    assert str(install.config_path(client)) in err


@pytest.mark.slow
def test_the_printed_command_starts_memori(tmp_path: Path) -> None:
    import subprocess

    entry = install.server_entry("cursor", db=tmp_path / "s.db")
    done = subprocess.run([entry["command"], *entry["args"], "--help"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "--allow-entity-arg" in done.stdout


def test_write_merges_backs_up_and_keeps_other_servers(tmp_path: Path) -> None:
    config = tmp_path / "claude_desktop_config.json"
    before = {"mcpServers": {"github": {"command": "npx", "args": ["-y", "gh"]}},
              "globalShortcut": "Ctrl+Space"}  # fmt: skip
    config.write_text(json.dumps(before))
    config.chmod(0o640)
    code, _, err = run("mcp", "install", "--client", "claude-desktop", "--write",
                       "--config", str(config))  # fmt: skip
    assert code == 0, err
    after = json.loads(config.read_text())
    assert after["mcpServers"]["github"] == before["mcpServers"]["github"]
    assert after["globalShortcut"] == "Ctrl+Space"
    assert after["mcpServers"]["memori"]["args"][-1] == "mcp"
    backups = list(tmp_path.glob("claude_desktop_config.json.memori-backup-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == before
    assert config.stat().st_mode & 0o777 == 0o640
    assert "Added server 'memori'" in err

    # Again: nothing to change, no second backup.
    code, out, _ = run("mcp", "install", "--client", "claude-desktop", "--write",
                       "--config", str(config), "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["outcome"] == "unchanged"
    assert len(list(tmp_path.glob("*.memori-backup-*"))) == 1


def test_write_creates_a_missing_config(tmp_path: Path) -> None:
    config = tmp_path / "Code" / "User" / "mcp.json"
    code, out, _ = run("mcp", "install", "--client", "vscode", "--write", "--config",
                       str(config), "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out) == {"path": str(config), "outcome": "added", "backup": None}
    assert json.loads(config.read_text())["servers"]["memori"]["type"] == "stdio"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"mcpServers": {"a": 1},}', "is not valid JSON (line 1"),
        ("// comment\n{}", "is not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"mcpServers": []}', "'mcpServers' is not an object"),
    ],
)
def test_write_refuses_a_config_it_cannot_merge(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(text)
    code, _, err = run("mcp", "install", "--client", "cursor", "--write", "--config",
                       str(config))  # fmt: skip
    assert code == 1
    assert message in " ".join(err.split()) and "nothing was changed" in " ".join(err.split())
    assert config.read_text() == text  # untouched, and no backup made
    assert list(tmp_path.iterdir()) == [config]


def test_unknown_client_is_a_usage_error() -> None:
    code, _, err = run("mcp", "install", "--client", "zed")
    assert code == 2 and "choose one of" in err


def test_default_config_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert install.config_path("cursor") == tmp_path / ".cursor" / "mcp.json"
    assert install.config_path("claude-code") == tmp_path / ".claude.json"
    assert install.config_path("claude-desktop") == (
        tmp_path / "xdg" / "Claude" / "claude_desktop_config.json"
    )
    assert install.config_path("vscode") == tmp_path / "xdg" / "Code" / "User" / "mcp.json"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert install.config_path("claude-desktop") == (
        tmp_path / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    )


def test_the_claude_code_command_carries_the_env_and_quotes_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex

    home = tmp_path / "my memori"
    monkeypatch.setenv("MEMORI_HOME", str(home))
    db = tmp_path / "a store" / "memori.db"
    code, out, err = run("--db", str(db), "mcp", "install", "--client", "claude-code")
    assert code == 0, err
    entry = json.loads(out)["mcpServers"]["memori"]
    line = next(x for x in err.splitlines() if x.startswith("Or: ")).removeprefix("Or: ")
    words = shlex.split(line)
    # Without MEMORI_HOME the server Claude Code starts opens another store.
    assert words[: words.index("memori")] == [
        "claude", "mcp", "add", "--scope", "user", "--env", f"MEMORI_HOME={home}"
    ]  # fmt: skip
    assert words[words.index("--") + 1 :] == [entry["command"], *entry["args"]]


def test_two_writes_within_a_second_keep_the_first_backup(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    original = json.dumps({"mcpServers": {"github": {"command": "gh"}}})
    config.write_text(original)
    for entity in ("maya", "ana"):  # well within one second
        code, _, err = run("mcp", "install", "--client", "cursor", "--write",
                           "--config", str(config), "--entity", entity)  # fmt: skip
        assert code == 0, err
    backups = sorted(tmp_path.glob("mcp.json.memori-backup-*"))
    assert len(backups) == 2
    assert original in [b.read_text() for b in backups]
