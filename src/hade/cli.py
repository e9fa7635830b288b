"""`hade`: the one command line. Every command is registered in `COMMANDS` below, in the order `hade --help`
lists them; each is a module with `add_parser(subparsers)` and `run(args) -> exit code` (the two function
names may differ, as for serve's). Adding a command is one line here.

Command modules are imported when the parser is built; each keeps its heavy imports (torch, the model) inside
`run`. A command whose module is not installed (an optional part) is left out rather than breaking the rest.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from hade.errors import HadeError


@dataclass(frozen=True)
class Command:
    """Where a command lives: its module and the names of its parser-adder and run function there."""

    module: str
    add: str = "add_parser"
    run: str = "run"

    def functions(self) -> tuple[Callable, Callable] | None:
        """(add_parser, run), or None when the module is not installed."""
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name == self.module:
                return None
            raise
        return getattr(mod, self.add), getattr(mod, self.run)


COMMANDS: dict[str, Command] = {
    "synth": Command("hade.apps.synth"),
    "pack": Command("hade.apps.pack"),
    "train": Command("hade.apps.train"),
    "eval": Command("hade.apps.eval"),
    "compare": Command("hade.apps.compare"),
    "classify": Command("hade.apps.classify"),
    "demo": Command("hade.apps.demo"),
    "ablate": Command("hade.apps.ablate"),
    "convert": Command("hade.apps.convert", "add_convert_parser", "cmd_convert"),
    "explain": Command("hade.apps.explain"),
    "index": Command("hade.apps.index"),
    "search": Command("hade.apps.search"),
    "embed": Command("hade.apps.embed"),
    "export": Command("hade.apps.export"),
    "serve": Command("hade.serve.cli", "add_serve_parser", "cmd_serve"),
    "models": Command("hade.apps.models"),
}


def build_parser() -> argparse.ArgumentParser:
    """The `hade` parser with every installed command (`args.command` names the one chosen)."""
    parser = argparse.ArgumentParser(prog="hade", description="Audio-text retrieval toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        found = command.functions()
        if found is not None:
            found[0](sub)
    return parser


def train_config_from_args(args: argparse.Namespace):
    """The TrainConfig of `hade train`'s arguments (see hade.apps.train)."""
    from hade.apps.train import train_config_from_args as build

    return build(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the command, and turn a HadeError into one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    _, run = COMMANDS[args.command].functions()
    try:
        return run(args)
    except HadeError as e:
        print(f"hade {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hade {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
