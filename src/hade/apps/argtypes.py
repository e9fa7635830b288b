"""argparse `type=` functions for numeric options: a number that is not finite, or not in range, is refused by
the parser in one line ("hade index: error: argument --window: expected a finite number of seconds > 0, got
'nan'") before anything runs. Why here and not in each command: `--window nan` reached the windowing code as
NaN and `--batch-size 0` was accepted silently."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(text: str, kind: type, what: str) -> int | float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _bounded(kind: type, low: float, inclusive: bool, what: str) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = _number(text, kind, what)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the function in some messages
    return parse


positive_int = _bounded(int, 0, False, "a whole number > 0")
nonnegative_int = _bounded(int, 0, True, "a whole number >= 0")
positive_float = _bounded(float, 0.0, False, "a finite number > 0")
nonnegative_float = _bounded(float, 0.0, True, "a finite number >= 0")
seconds = _bounded(float, 0.0, False, "a finite number of seconds > 0")
time_point = _bounded(float, 0.0, True, "a finite time in seconds >= 0")

__all__ = ["nonnegative_float", "nonnegative_int", "positive_float", "positive_int", "seconds", "time_point"]
