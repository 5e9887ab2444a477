"""`python -m mindvis`: every command is listed and explains itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mindvis.cli.main import build_command_parser, main
from mindvis.cli.registry import COMMANDS


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_for_every_option(name):
    _, parser = build_command_parser(name)
    for action in parser._actions:
        if action.dest in ("help",):
            continue
        assert action.help, f"{name}: option {action.option_strings or action.dest} has no help text"
    assert parser.description and len(parser.description) > 40


def test_unknown_command_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "mindvis", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown command 'frobnicate'" in proc.stderr


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "mindvis", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "commands:" in proc.stdout
