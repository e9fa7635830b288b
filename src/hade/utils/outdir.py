"""Output folders that never swallow what a user owns.

Every command that writes an output folder (`hade convert --out`, `train --out`, `index --out`, `pack --out`,
`synth OUT`, `ablate --out`, ...) claims it first with `claim_output_dir`: a new or empty folder is taken; a
folder that already holds the command's own kind of output is taken again (resumed, updated or replaced: the
command says which on the console); anything else is refused in one line unless the user passes --force.
A command that replaces the whole folder (a checkpoint is written as a new folder and swapped in) also
refuses its own kind of output when the folder holds files that kind does not, since those would be lost.
"""
from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hade.errors import InputError


class Claim(enum.Enum):
    """How an output folder was taken."""

    NEW = "new"  # missing or empty (or holding scratch files only)
    OWN = "own"  # it holds this kind of output already: resumed, updated or replaced
    FORCED = "forced"  # something else, taken because of --force


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder.

    name: what messages call it ("hade checkpoint"); recognise(folder): whether `folder` holds one;
    contents: glob patterns of the top-level entries it may hold, for a kind whose writer `replaces` the
    whole folder (entries outside them are the user's and would be deleted); scratch: patterns of entries that
    do not make a folder non-empty (a lock file)."""

    name: str
    recognise: Callable[[Path], bool]
    replaces: bool = False
    contents: tuple[str, ...] = ()
    scratch: tuple[str, ...] = field(default=())


def has_any(*patterns: str) -> Callable[[Path], bool]:
    """A `recognise` function: the folder has an entry matching one of `patterns` (globs relative to it)."""
    def recognise(folder: Path) -> bool:
        return any(next(folder.glob(p), None) is not None for p in patterns)

    return recognise


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def claim_output_dir(path: str | Path, kind: OutputKind, force: bool = False, flag: str = "--out") -> Claim:
    """Check that the command may write its `kind` of output into folder `path` (nothing is created).

    NEW: missing or empty; OWN: a `kind` folder already (for a kind that `replaces` the folder: with nothing
    else in it); FORCED: anything else, with `force`. InputError naming the folder, what is in it and the
    way out otherwise, and always when `path` is a file."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return Claim.NEW
    if not path.is_dir():
        raise InputError(f"{flag} {path}: a file, not a folder; give a new or empty folder for the {kind.name}")
    entries = [p.name for p in path.iterdir() if not _matches(p.name, kind.scratch)]
    if not entries:
        return Claim.NEW
    way_out = "--force to replace its contents" if kind.replaces else "--force to write into it"
    if not kind.recognise(path):
        if force:
            return Claim.FORCED
        raise InputError(f"{flag} {path}: exists and is not a {kind.name} (it holds {_listing(entries)}); give a "
                         f"new or empty folder, or {way_out}")
    foreign = [n for n in entries if kind.replaces and not _matches(n, kind.contents)]
    if foreign and not force:
        raise InputError(f"{flag} {path}: a {kind.name} that also holds {_listing(foreign)}, which writing a new "
                         f"{kind.name} there would delete; move them, give another folder, or {way_out}")
    return Claim.FORCED if foreign else Claim.OWN


__all__ = ["Claim", "OutputKind", "claim_output_dir", "has_any"]
