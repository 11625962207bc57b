"""The installed project: every console command pyproject.toml declares is on PATH beside Python and runs."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_commands_users_are_told_about_are_declared():
    assert {
        "lightweight-seg",
        "lightweight-seg-pacs",
        "lightweight-seg-bench",
        "lightweight-seg-split",
        "lightweight-nets-profile",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_each_console_command_is_installed_and_shows_its_usage(command):
    executable = Path(sys.executable).parent / command
    assert executable.is_file(), f"{command} is not installed: run `make venv`"
    result = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.lower().startswith("usage:"), result.stdout[:200]
