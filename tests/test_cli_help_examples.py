"""Every `--set KEY=VALUE` a command's --help shows is run through that command's own config
parsing (issue 14 §4: every command's help showed `--set simulate.snr=0.5`, which
simulate-god, like every other command, rejected)."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

import pytest
import yaml

import mindvis.config
import mindvis.config.loader
from mindvis.cli.main import build_command_parser, main
from mindvis.cli.registry import COMMANDS

SET_IN_HELP = re.compile(r"--set\s+([^\s(),;\[\]]+=[^\s(),;\[\]]+)")


class _Parsed(Exception):
    """Raised by the patched load_section once the command's config is parsed: stops the command there."""

    def __init__(self, cfg):
        super().__init__("parsed")
        self.cfg = cfg


def _help_text(name: str, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _required_arguments(parser: argparse.ArgumentParser, tmp_path) -> list[str]:
    """Placeholder values for the command's required options (never read: parsing stops first)."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.required or not action.option_strings:
            continue
        if action.choices:
            value = str(next(iter(action.choices)))
        elif action.type in (int, float):
            value = "1"
        else:
            value = str(tmp_path / action.dest)
        argv += [action.option_strings[0], value]
    return argv


def _examples(text: str) -> list[str]:
    return [e for e in SET_IN_HELP.findall(text) if e != "KEY=VALUE"]


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "inspect"])
def test_every_help_example_parses_for_its_command(name, capsys, monkeypatch, tmp_path):
    examples = _examples(_help_text(name, capsys))
    assert examples, f"`mindvis {name} --help` shows no --set example"
    real = mindvis.config.loader.load_section

    def parse_then_stop(schema, source=None, overrides=None):
        raise _Parsed(real(schema, source, overrides))

    module, parser = build_command_parser(name)
    # every module that bound the loader by name (the command's own, or the shared job shell it calls)
    for loaded in [m for key, m in sys.modules.items() if key.startswith("mindvis") and m is not None]:
        if getattr(loaded, "load_section", None) is real:
            monkeypatch.setattr(loaded, "load_section", parse_then_stop)
    for example in examples:
        argv = [name, *_required_arguments(parser, tmp_path), "--no-tracking", "--set", example]
        with pytest.raises(_Parsed) as parsed:
            code = main(argv)
            pytest.fail(f"`mindvis {' '.join(argv)}` exited {code} before its config was parsed: "
                        f"{capsys.readouterr().err.strip()}")
        # the example's key now holds the example's value (read back key by key, dotted)
        key, raw = example.split("=", 1)
        value = parsed.value.cfg
        for part in key.split("."):
            value = getattr(value, part) if not isinstance(value, dict) else value[part]
        assert value == yaml.safe_load(raw), f"{name}: --set {example} left {key} = {value!r}"


def test_reference_example_from_the_issue_now_works_on_simulate_god(capsys):
    assert "snr=0.5" in _examples(_help_text("simulate-god", capsys))
    assert not any(e.startswith("simulate.") for e in _examples(_help_text("simulate-god", capsys)))


def test_inspect_shows_no_config_example(capsys):
    text = _help_text("inspect", capsys)
    assert _examples(text) == []
    assert "reads no config" in " ".join(text.split())


def test_module_docstring_examples_are_checked_too(capsys):
    # simulate-hcp's long help (its docstring) has its own `--set n_frames=300`
    importlib.import_module(COMMANDS["simulate-hcp"][0])
    assert "n_frames=300" in _examples(_help_text("simulate-hcp", capsys))
