"""Handing out indexed audio safely (`Index.open_audio`, `audio_path`, `window_audio`).

`open_audio` hands out an indexed file only when it still resolves inside the indexed folder and is the
file that was indexed (size and mtime): a server streams it to whoever asks for a hit, so a path that a
symbolic link now sends elsewhere, a vanished file or one rewritten since indexing is refused with a
`StaleFile` that says which (reason 'outside', 'missing' or 'changed') and names the relative path only.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from hade.data.audio import load_audio
from hade.errors import StaleFile
from hade.index.query import window_position
from hade.index.store import FileRecord


class IndexedAudio:
    """The indexed files of an open index, handed out only while they are the files that were indexed.

    table: the index's window table (`Store.window_table`: id, file_id, start_sample, end_sample, ...);
    files: its readable files (`Store.files("ok")`); root: where they are now; where: the index (for
    messages)."""

    def __init__(self, where: Path, root: Path, table: dict[str, np.ndarray], files: Iterable[FileRecord],
                 sample_rate: int, follow_external_links: bool) -> None:
        self.where, self.root, self.table = where, root, table
        self.sample_rate, self.follow_external_links = sample_rate, follow_external_links
        files = list(files)
        self.paths = {f.id: f.path for f in files}
        self.signature = {f.id: (int(f.size), int(f.mtime_ns)) for f in files}  # what `open` must find

    def resolve(self, window_id: int) -> tuple[str, str, tuple[int, int]]:
        """(relative path, resolved absolute path, stored (size, mtime_ns)) of the window's file; StaleFile
        'outside' when it resolves outside the indexed folder (unless built with follow_external_links)."""
        p = window_position(self.table["id"], window_id, self.where)
        fid = int(self.table["file_id"][p])
        rel = self.paths[fid]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise StaleFile(f"{rel}: refusing a file path outside the indexed folder", reason="outside")
        root = os.path.realpath(self.root)
        target = os.path.realpath(os.path.join(root, rel))
        if not self.follow_external_links and os.path.commonpath([root, target]) != root:
            raise StaleFile(f"{rel} now resolves outside the indexed folder (a symbolic link?); refusing to "
                            "serve it", reason="outside")
        return rel, target, self.signature[fid]

    def open(self, window_id: int) -> tuple[BinaryIO, os.stat_result]:
        """(binary file, its fstat) of the file holding `window_id`, as `Index.open_audio` documents: the
        resolved path opened with O_NOFOLLOW, a regular file of the stored size and mtime, or StaleFile."""
        rel, target, (size, mtime_ns) = self.resolve(window_id)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise StaleFile(f"{rel} is no longer in the indexed folder; re-run `hade index` to update the index",
                            reason="missing") from None
        except OSError as e:
            raise StaleFile(f"{rel} cannot be opened ({e.strerror or e}); it changed after it was indexed, re-run "
                            "`hade index`", reason="changed") from None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
                raise StaleFile(f"{rel} is not the file that was indexed (size or modification time changed); "
                                "re-run `hade index` to update the index", reason="changed")
        except BaseException:
            f.close()
            raise
        return f, st

    def path(self, window_id: int) -> Path:
        """Resolved absolute path of the file holding `window_id`, after the checks of `open`."""
        f, _ = self.open(window_id)
        f.close()
        return Path(self.resolve(window_id)[1])

    def window(self, window_id: int) -> np.ndarray:
        """The window's samples [end_sample - start_sample] float32 at the model's rate (not padded)."""
        p = window_position(self.table["id"], window_id, self.where)
        wave = load_audio(self.path(window_id), self.sample_rate)
        return wave[int(self.table["start_sample"][p]):int(self.table["end_sample"][p])]
