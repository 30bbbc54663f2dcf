"""One `python -m <package>` entry point per package, with lazily imported subcommands.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``. Importing only the chosen module keeps ``--help`` fast and
keeps light commands (synth, client) from importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Command:
    module: str
    help: str


def dispatch(prog: str, description: str, commands: dict[str, Command], argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog=prog, description=description)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        sub.add_parser(name, help=command.help, add_help=False)
    if not argv or argv[0] not in commands:
        top.parse_args(argv)  # prints usage / the error and exits
        return 2
    name = argv[0]
    return run_module(commands[name].module, argv[1:], prog=f"{prog} {name}", description=commands[name].help)


def run_module(module_name: str, argv: Sequence[str], prog: str | None = None, description: str | None = None) -> int:
    """Parse ``argv`` with a subcommand module's own parser and run it (also how pipelines chain commands)."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=prog or module_name, description=description or module.__doc__)
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(list(argv))) or 0)
