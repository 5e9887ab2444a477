"""Run a `mindvis` command in-process, as the real entry point does, for CLI tests."""

from __future__ import annotations

import argparse
import importlib
import sys

from mindvis.utils.errors import MindVisError


def run_cli(command: str, module: str, argv: list[str]) -> int:
    """`mindvis <command> argv`: through the real entry point once registered, else the same steps."""
    from mindvis.cli.main import add_common_arguments, main
    from mindvis.cli.registry import COMMANDS

    if command in COMMANDS:
        return main([command, *argv])
    mod = importlib.import_module(module)
    parser = argparse.ArgumentParser(prog=f"mindvis {command}")
    mod.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    args.command = command
    try:
        return int(mod.run(args) or 0)
    except MindVisError as exc:
        print(f"mindvis {command}: error: {exc}", file=sys.stderr)
        return 2
