"""The one JSON clean-up: turn results that hold numpy values, paths and dataclasses into what `json.dumps`
writes, with non-finite floats as null (JSON has no NaN) and file names that are not UTF-8 as printable
text (`printable`)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np


def printable(text: str) -> str:
    """`text` as valid Unicode: a file name that is not UTF-8 reaches Python with surrogate escapes (PEP
    383: Latin-1 ``n\\xe4me.wav`` -> 'n\\udce4me.wav'), which UTF-8 output cannot encode; its bytes are
    shown as ``\\xNN`` instead ('n\\\\xe4me.wav'). Valid text is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def jsonable(value: Any) -> Any:
    """numpy arrays -> lists, numpy scalars -> Python numbers, NaN/±inf -> None, Path -> str, dataclass
    instances -> dicts of their fields, dict keys -> str, strings -> `printable`; recursively through
    dicts, lists and tuples."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return printable(str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


__all__ = ["jsonable", "printable"]
