"""`hade`: the one command line. Every command is registered in `COMMANDS` below, in the order `hade --help`
lists them; each is a module with `add_parser(subparsers)` and `run(args) -> exit code` (the two function
names may differ, as for serve's). Adding a command is one line here.

Command modules are imported when the parser is built; each keeps its heavy imports (torch, the model) inside
`run`. A command whose module is not installed (an optional part) is left out rather than breaking the rest.

What `main` adds to argparse: `hade --version`; a misspelt command or flag gets the command's own usage and a
"did you mean" (HadeArgumentParser); a HadeError is one line with one "hade CMD: error:" prefix; output cut
short by a closed pipe (`hade search ... --json | head`) ends quietly.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, NoReturn, Sequence

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
    "pretrain": Command("hade.apps.pretrain"),
    "train": Command("hade.apps.train"),
    "eval": Command("hade.apps.eval"),
    "compare": Command("hade.apps.compare"),
    "classify": Command("hade.apps.classify"),
    "demo": Command("hade.apps.demo"),
    "ablate": Command("hade.apps.ablate"),
    "payoff": Command("hade.apps.payoff"),
    "convert": Command("hade.apps.convert", "add_convert_parser", "cmd_convert"),
    "explain": Command("hade.apps.explain"),
    "index": Command("hade.apps.index"),
    "search": Command("hade.apps.search"),
    "embed": Command("hade.apps.embed"),
    "export": Command("hade.apps.export"),
    "onnx": Command("hade.apps.onnx"),
    "serve": Command("hade.serve.cli", "add_serve_parser", "cmd_serve"),
    "models": Command("hade.apps.models"),
}


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>.*?)' \(choose from (?P<choices>.*)\)")
_UNRECOGNIZED = "unrecognized arguments: "


def did_you_mean(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to a misspelt `word` (difflib's ratio >= 0.6, leading dashes ignored), or None."""
    names = {c.lstrip("-"): c for c in candidates}
    found = difflib.get_close_matches(word.lstrip("-"), list(names), n=1)
    return names[found[0]] if found else None


class HadeArgumentParser(argparse.ArgumentParser):
    """argparse's parser with a "did you mean" for misspelt flags and choices (Python 3.14's suggest_on_error
    does the choices only, and this project runs on 3.11), and options accepted between the positionals of a
    command whose positionals take a variable number of words: plain argparse refuses
    `hade search IDX -k 2 "query"` because it has already matched the optional query (to nothing) when it
    meets -k (a long-standing argparse limitation); argparse's own intermixed parsing does it right."""

    _intermixing = False

    def error(self, message: str) -> NoReturn:
        hint = self._suggestion(message)
        super().error(f"{message}; did you mean {hint}?" if hint else message)

    def _suggestion(self, message: str) -> str | None:
        choice = _INVALID_CHOICE.search(message)
        if choice is not None:
            return did_you_mean(choice["value"], re.findall(r"'([^']*)'", choice["choices"]))
        if message.startswith(_UNRECOGNIZED):
            flags = [s for s in self._option_string_actions if s.startswith("--")]
            for word in message[len(_UNRECOGNIZED):].split():
                if word.startswith("--") and (hint := did_you_mean(word.split("=", 1)[0], flags)):
                    return hint
        return None

    def _has_variable_positional(self) -> bool:
        return any(a.nargs in ("?", "*", "+") for a in self._get_positional_actions()) and not any(
            isinstance(a, argparse._SubParsersAction) for a in self._actions)

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        if self._intermixing or not self._has_variable_positional():
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls parse_known_args twice
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hade")
    except PackageNotFoundError:
        from hade import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The `hade` parser with every installed command (`args.command` names the one chosen)."""
    parser = HadeArgumentParser(prog="hade", description="Audio-text retrieval toolkit")
    parser.add_argument("--version", action="version", version=f"hade {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        found = command.functions()
        if found is not None:
            found[0](sub)
    return parser


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The sub-parser of command `name` in `hade`'s parser."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`hade`'s arguments; an unknown one is reported with the command's usage, not the top-level one (argparse
    leaves it to the top-level parser)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command_parser(parser, args.command).error(_UNRECOGNIZED + " ".join(extra))
    return args


def error_line(command: str, error: BaseException) -> str:
    """`hade CMD: error: MESSAGE`, with the prefix once when the message already starts with it."""
    message = str(error)
    prefix = f"hade {command}: "
    while message.startswith(prefix):
        message = message[len(prefix):]
    return f"{prefix}error: {message}"


def _run(argv: Sequence[str] | None) -> int:
    args = parse(argv)
    _, run = COMMANDS[args.command].functions()
    try:
        return run(args)
    except HadeError as e:
        print(error_line(args.command, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hade {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


# What a shell reports for a process that SIGPIPE ended: the reader of the pipe (`| head`) has what it wanted.
BROKEN_PIPE_EXIT = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the command, and turn a HadeError into one line on stderr and exit code 2."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # Python ignores SIGPIPE, so a write to a closed pipe raises here; stdout goes to /dev/null so
        # that the interpreter's last flush at exit does not raise (and print) again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (captured)
            pass
        finally:
            os.close(devnull)
        return BROKEN_PIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
