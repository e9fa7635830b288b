"""Reading a JSON file a user or an earlier run wrote: a missing file or bad JSON is an InputError naming
the file (and the line and column), never a traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hade.errors import InputError


def read_json(path: str | Path, what: str = "file") -> Any:
    """The parsed contents of `path`; `what` names the file in the not-found error ("config file", ...)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
