"""``sglang-pr``: the command line. Each subcommand lives in a module listed below."""

from __future__ import annotations

import argparse
import importlib
import sys

from sglang_pr.optional import MissingDependency

# Modules exposing add_parser(subparsers); each sets `func(args) -> int` on its parser.
COMMAND_MODULES: tuple[str, ...] = (
    "sglang_pr.cli.serve",
    "sglang_pr.cli.demo",
    "sglang_pr.cli.medusa",
    "sglang_pr.cli.models",
    "sglang_pr.cli.cluster",
)


class CliError(Exception):
    """A user error: printed as one line naming the bad input, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sglang-pr",
        description="Parallel reasoning for SGLang: serve with the plugin, run the demo, "
        "train Medusa heads, run benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args, extra) or 0)
    except (CliError, MissingDependency) as e:  # bad input or a missing extra: one line
        print(f"sglang-pr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


