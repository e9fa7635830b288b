"""What one `build_index` run did: the `BuildReport` record (its problems are `hade.data.scan.FileProblem`s).

`hade index --json` prints `BuildReport.to_dict()`; the ranks of a parallel `hade index` hand it to rank 0
in that form, which `BuildReport.from_dict` reads back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hade.data.scan import FileProblem
from hade.index.ann import AnnParams


@dataclass
class BuildReport:
    """The statistics of one `build_index` run; the builder counts into it as it goes.

    files_seen: audio files of the folder (of its shard) this run looked at.
    unchanged_files: files whose size and mtime matched the index (not read).
    hashed_files: files read to compute their sha256 (size or mtime changed, or new).
    touched_files: files with the same bytes as stored but a new mtime (only their record is updated).
    reused_files: files with the same bytes as another indexed file (a copy or a rename: its windows reused).
    encoded_files: files decoded and encoded this run.
    encoded_windows: windows encoded this run.
    encoder_calls: encoder batches run.
    removed_files: indexed files no longer in the folder, removed.
    commits: transactions committed (one after every encoder batch that completed files).
    captioned_files: files encoded with an auxiliary caption.
    recaptioned_files: files re-encoded because their auxiliary caption changed.
    errors: every unreadable file of the folder, this run's and those recorded by earlier runs.
    new_errors: the files found unreadable by this run.
    notes: what the user should know (e.g. an unused model branch, a token codec not fitted yet).
    skipped: external symbolic links not indexed (without `follow_external_links`).
    repaired: what was damaged in the index and how it was repaired.
    ann: the ANN's parameters after the run (None only while the build runs).
    files: readable files in the index after the run.
    windows: windows in the index after the run.
    seconds: wall time of the run.
    """

    files_seen: int = 0
    unchanged_files: int = 0
    hashed_files: int = 0
    touched_files: int = 0
    reused_files: int = 0
    encoded_files: int = 0
    encoded_windows: int = 0
    encoder_calls: int = 0
    removed_files: int = 0
    commits: int = 0
    captioned_files: int = 0
    recaptioned_files: int = 0
    errors: list[FileProblem] = field(default_factory=list)
    new_errors: list[FileProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[FileProblem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    ann: AnnParams | None = None
    files: int = 0
    windows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`hade index --json`): one key per field in field order, problems as
        {path, reason}, ann as the ann.json fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BuildReport":
        """The record of a `to_dict` result."""
        problems = {k: [FileProblem(**p) for p in d[k]] for k in ("errors", "new_errors", "skipped")}
        ann = None if d["ann"] is None else AnnParams(**d["ann"])
        return cls(**{**d, **problems, "ann": ann})
