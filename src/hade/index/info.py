"""What an opened index says about itself (`Index.info()`): a typed record, and its JSON for GET /health."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hade.index.ann import AnnParams
from hade.index.meta import CodecState, shard_to_json


@dataclass(frozen=True)
class IndexInfo:
    """An opened index: its folder `path` and the indexed folder `root`; `files` indexed (and
    `unreadable_files` skipped), `windows`; the model's `fingerprint` (sha256 prefix, None for an index
    written before fingerprints) and `head`, `factorised` (whether the pooled vectors' dot product is the
    head's score); `sample_rate` (Hz), `window` / `hop` (seconds); `storage_dtype` of the stored
    features ('float16' / 'float32'); `pooled_key` (the representation the ANN recalls with, None for a
    head without pooled vectors) and every stored `repr_keys`; `shard` as `IndexMeta.shard`; `ann` (None:
    exhaustive search); `token_codec`; `bytes_per_window` (every stored array of one window)."""

    path: Path
    root: Path
    files: int
    unreadable_files: int
    windows: int
    fingerprint: str | None
    head: str
    factorised: bool
    sample_rate: int
    window: float
    hop: float
    storage_dtype: str
    pooled_key: str | None
    repr_keys: tuple[str, ...]
    shard: tuple[int, int] | tuple[tuple[int, int] | None, ...] | None
    ann: AnnParams | None
    token_codec: CodecState
    bytes_per_window: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready. "precision" repeats storage_dtype: the name HTTP clients of /health read before
        storage_dtype existed (in the Python record the word belongs to the autocast setting only)."""
        return {"path": str(self.path), "root": str(self.root), "files": self.files,
                "unreadable_files": self.unreadable_files, "windows": self.windows,
                "fingerprint": self.fingerprint, "head": self.head, "factorised": self.factorised,
                "sample_rate": self.sample_rate, "window": self.window, "hop": self.hop,
                "precision": self.storage_dtype, "storage_dtype": self.storage_dtype,
                "pooled_key": self.pooled_key, "repr_keys": list(self.repr_keys), "shard": shard_to_json(self.shard),
                "ann": vars(self.ann).copy() if self.ann else None, "token_codec": self.token_codec.to_dict(),
                "bytes_per_window": self.bytes_per_window}
