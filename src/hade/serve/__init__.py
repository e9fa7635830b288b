"""`hade serve`: HTTP search over an index (FastAPI) with a self-contained web page."""
from __future__ import annotations

from typing import Any

__all__ = ["add_serve_parser", "cmd_serve", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: `hade --help` must not import FastAPI/torch.
    if name == "create_app":
        from hade.serve.app import create_app

        return create_app
    if name in ("add_serve_parser", "cmd_serve"):
        from hade.serve import cli

        return getattr(cli, name)
    raise AttributeError(name)
