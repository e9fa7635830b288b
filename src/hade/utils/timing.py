"""Wall-clock time per named phase of one operation (a search's encode / ANN / gather / score ...)."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Phases:
    """``with phases("ann"): ...`` adds the block's wall milliseconds to ``out["ann"]``; a phase entered
    several times (a gather per block) accumulates. With ``out=None`` it records nothing."""

    def __init__(self, out: dict[str, float] | None) -> None:
        self.out = out

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.out is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.out[name] = self.out.get(name, 0.0) + 1000 * (time.perf_counter() - start)
