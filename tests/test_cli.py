"""The console script: --help for every subcommand, --version, and the one-line error contract."""

import subprocess
import sys

import pytest

from halopaint.cli import COMMANDS


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "halopaint.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_top_level_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command):
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: halopaint" in out.stdout


def test_unknown_command_fails():
    out = run_cli("frobnicate")
    assert out.returncode != 0
