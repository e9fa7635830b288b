"""What a search is asked and what it answers: the query records (`Like`, `QueryVector`, the `Query` union,
the `Guard` type), the result records (`Window`, `Hit`) and the helpers every stage ranks with (`rank`,
`token_vector`, `window_position`).

Everything here is plain data or a pure function of arrays: no model, no store. `hade.index.search`
re-exports the public names (`from hade.index.search import Like, Hit, rank, ...` keeps working).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Union

import numpy as np
import torch
import torch.nn.functional as F

from hade.errors import InputError


@dataclass(frozen=True)
class Like:
    """A query by indexed windows: sounds like these (`Index.like` builds one from a file path and time).

    The hits leave out every window of the files these windows belong to, or with `same_file` only the
    windows themselves (other moments of the same recording may then be found)."""

    window_ids: tuple[int, ...]
    same_file: bool = False

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.window_ids)
        if not ids:
            raise InputError("Like(window_ids): give at least one indexed window id")
        object.__setattr__(self, "window_ids", ids)


@dataclass(frozen=True, eq=False)
class QueryVector:
    """An audio or `Like` query already turned into its audio-audio vector (`Index.query_vector`): searching
    with it ranks exactly as the query it came from, without decoding or encoding anything again (a server
    keeps it to explain the results of an upload). vector: [D] float32, L2-normalised."""

    vector: np.ndarray


Query = Union[str, Path, np.ndarray, torch.Tensor, Like, QueryVector]
Guard = Callable[[], ContextManager[Any]]


@dataclass(frozen=True)
class Window:
    """An indexed window: id, file path relative to the indexed folder, start/end seconds in the file."""

    id: int
    path: str
    start: float
    end: float


@dataclass(frozen=True)
class Hit:
    """A search result: a window and its score (higher = better)."""

    id: int
    path: str
    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "start": self.start, "end": self.end, "score": self.score}


def window_position(ids: np.ndarray, window_id: int, where: Path) -> int:
    """Position of `window_id` in the index's sorted window ids [N]; KeyError naming the index `where`."""
    p = int(np.searchsorted(ids, window_id))
    if p >= len(ids) or ids[p] != window_id:
        raise KeyError(f"no window with id {window_id} in {where}")
    return p


def token_vector(reprs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Audio-audio vector of heads without a pooled embedding: per level (keys of rank 3, [A, M, d]) the
    mean token, L2-normalised, concatenated and normalised again -> [A, levels·d]."""
    parts = [F.normalize(v.float().mean(1), dim=-1) for k, v in sorted(reprs.items())
             if v.dim() == 3 and v.is_floating_point()]
    if not parts:
        raise InputError("this head stores no pooled embedding nor token features; audio queries are not supported")
    return F.normalize(torch.cat(parts, -1), dim=-1)


def rank(ids: np.ndarray, scores: np.ndarray, k: int, file_of: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Best `k` (id, score) by score descending, ties by id ascending; with `file_of` ([len(ids)] file
    keys) only the best window of each file."""
    order = np.lexsort((ids, -scores.astype(np.float64)))
    out, seen = [], set()
    for i in order:
        if file_of is not None:
            if file_of[i] in seen:
                continue
            seen.add(file_of[i])
        out.append((int(ids[i]), float(scores[i])))
        if len(out) == k:
            break
    return out
