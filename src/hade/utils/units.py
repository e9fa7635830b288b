"""Sizes written by people: '512M', '2G', '1.5GiB', '300000' (bytes, binary units)."""
from __future__ import annotations

import argparse
import re

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'512M' / '2G' / '1.5GiB' / '300000' -> bytes; argparse.ArgumentTypeError (a clear CLI message)
    for anything else."""
    m = _SIZE.match(str(text))
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size in bytes such as 300000, 512M or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
