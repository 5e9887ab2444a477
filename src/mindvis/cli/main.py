"""Entry point: `python -m mindvis <command> [options]`."""

from __future__ import annotations

import os

# Before any command imports torch: OpenMP threads that spin while waiting stall
# every other job when Snakemake runs several on shared cores (80x seen on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

from mindvis import __version__  # noqa: E402
from mindvis.cli.registry import COMMANDS, SET_EXAMPLES  # noqa: E402
from mindvis.utils.errors import JobKilled, MindVisError  # noqa: E402

log = logging.getLogger("mindvis")


def add_common_arguments(parser: argparse.ArgumentParser, set_example: str | None = None) -> None:
    """Options every command shares: its config section and its tracking identity.
    `set_example`: one KEY=VALUE valid for this command's config (None: it reads no config)."""
    group = parser.add_argument_group("pipeline options (shared by every command)")
    group.add_argument(
        "--config",
        default=None,
        metavar="YAML|PATH",
        help="this step's config section: a YAML/JSON file or an inline YAML/JSON string "
        "(Snakemake passes exactly the section the rule declares). Keys left out take "
        "their documented defaults.",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(f"override one config key, dotted for nested keys (e.g. --set {set_example}); repeatable"
              if set_example else "override one config key (this command reads no config keys)"),
    )
    group.add_argument("--rule", default=None, help="Snakemake rule name (names the MLflow run)")
    group.add_argument(
        "--wildcard",
        dest="wildcards",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Snakemake wildcard of this job, e.g. subject=1 (tags the MLflow run); repeatable",
    )
    group.add_argument(
        "--no-tracking",
        action="store_true",
        help="do not log to MLflow (the work is done all the same)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    width = max(len(n) for n in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="mindvis",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MinD-Vis as a reproducible pipeline: each command is one step of the "
        "Snakemake DAG and also works on its own.",
        epilog="commands:\n" + listing + "\n\nRun `mindvis <command> --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mindvis {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of the commands below")
    return parser


def build_command_parser(name: str):
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"mindvis {name}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=summary + "\n\n" + textwrap.dedent(module.__doc__ or "").strip(),
    )
    module.add_arguments(parser)
    add_common_arguments(parser, SET_EXAMPLES.get(name))
    return module, parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help", "--version"):
        top.parse_args(argv or ["--help"])
        return 0
    if argv[0] not in COMMANDS:
        top.error(f"unknown command '{argv[0]}' (choose from: {', '.join(COMMANDS)})")
    module, parser = build_command_parser(argv[0])
    args = parser.parse_args(argv[1:])
    args.command = argv[0]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        code = module.run(args)
    except MindVisError as exc:
        print(f"mindvis {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except JobKilled as stop:  # raised only while an MLflow run is open: it ended KILLED
        print(f"mindvis {argv[0]}: {stop}; its MLflow run ended KILLED", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print(f"mindvis {argv[0]}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
