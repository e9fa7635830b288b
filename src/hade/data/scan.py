"""Which audio files a folder holds: a recursive, sorted scan that skips hidden names and, unless asked,
symbolic links that lead outside the folder. Shared by the search index (`hade index`), zero-shot
classification (`hade classify`) and `hade embed`, so that all of them find the same files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hade.data.audio import AUDIO_EXTENSIONS


EXTERNAL_LINK_REASON = ("symbolic link to {what} outside the indexed folder; not indexed (pass "
                        "--follow-external-links to index it)")


@dataclass(frozen=True)
class FileProblem:
    """A file (or a folder, whose path ends in '/') that was found but not taken, and why: a scan's skipped
    link, or a file a build or `hade embed` could not read. `path` is relative to the scanned folder for a
    scan and an index build."""

    path: str
    reason: str


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def scan_audio(folder: Path, exclude: Path | None = None,
               follow_external_links: bool = False) -> tuple[list[tuple[str, Path]], list[FileProblem]]:
    """Audio files under `folder` (recursive, sorted, hidden names skipped) as (relative POSIX path, path),
    and the entries skipped because they are symbolic links resolving outside `folder` (`FileProblem`s).

    A symlinked file or folder resolving inside `folder` is not a risk: such a file is indexed under its
    link's name, such a folder is not descended (its files are indexed under their own path). One resolving
    outside is skipped unless `follow_external_links`; then folders are descended once each (no cycles)."""
    root = os.path.realpath(folder)
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    out: list[tuple[str, Path]] = []
    skipped: list[FileProblem] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=follow_external_links):
        base = Path(dirpath)
        real_dir = os.path.realpath(base)
        if real_dir in visited:  # a link cycle, or a second link to an already walked folder
            dirnames[:] = []
            continue
        visited.add(real_dir)
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(base / d)
            if d.startswith(".") or real == exclude_real:
                continue
            if (base / d).is_symlink():
                if not _inside(root, real) and not follow_external_links:
                    skipped.append(FileProblem((base / d).relative_to(folder).as_posix() + "/",
                                               EXTERNAL_LINK_REASON.format(what="a folder")))
                if _inside(root, real) or not follow_external_links:
                    continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                continue
            rel = (base / name).relative_to(folder).as_posix()
            if not follow_external_links and not _inside(root, os.path.realpath(base / name)):
                skipped.append(FileProblem(rel, EXTERNAL_LINK_REASON.format(what="a file")))
                continue
            out.append((rel, base / name))
    out.sort(key=lambda item: item[0])
    return out, skipped


def scan_folder(folder: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """The files of `scan_audio` (external symlinks skipped)."""
    return scan_audio(folder, exclude)[0]
