"""Plain records shared by every data reader."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    """One audio clip and its reference captions.

    clip_id: a stable identifier unique within a split (file name for Clotho, audiocap id / youtube id
    for AudioCaps, the "id" field for WavCaps).
    """

    clip_id: str
    audio_path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """An item a reader skipped, with where and why (reported, never silently dropped)."""

    source: str  # file (and line) that holds the bad item
    reason: str


@dataclass
class SplitData:
    """The clips of one split plus the problems met while reading it."""

    name: str
    clips: list[Clip] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def num_captions(self) -> int:
        return sum(len(c.captions) for c in self.clips)
