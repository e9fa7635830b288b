"""The one JSON clean-up: turn results that hold numpy values, paths and dataclasses into what `json.dumps`
writes, with non-finite floats as null (JSON has no NaN)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """numpy arrays -> lists, numpy scalars -> Python numbers, NaN/±inf -> None, Path -> str, dataclass
    instances -> dicts of their fields, dict keys -> str; recursively through dicts, lists and tuples."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


__all__ = ["jsonable"]
