"""What an index is: its meta as a typed record (`IndexMeta`, with the token codec state `CodecState`).

`Store` (hade.index.store) is the only module that reads or writes it: the meta table holds one JSON value a
key, and `IndexMeta.from_dict` turns what is there into the record — the one upgrade of older indexes
(written before token codecs, before links were followed, before the storage dtype had its name) — and
`IndexMeta.to_dict` back. The codec state is interpreted only by `hade.index.compression.TokenCompression`.

Every field has a default so that a partial meta reads too: an index whose first build was interrupted
before anything was stored (`created` False), or what `salvage_meta` recovers from a damaged database.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

SCHEMA_VERSION = 1
# the on-disk meta key of the storage dtype ('float16' / 'float32'): named before "precision" came to mean
# training precision only, and kept so that every index written so far reads as it is
STORAGE_DTYPE_KEY = "precision"
_DISK_KEY = {"storage_dtype": STORAGE_DTYPE_KEY}


@dataclass(frozen=True)
class CodecState:
    """An index's token codec state (see `hade.index.compression` for what each value means).

    factory: the faiss codec factory, or "none" for float tokens; keys: the repr keys it compresses (None:
    not decided yet); current: the codec set new chunks are written with (None: not fitted yet);
    min_tokens: the fewest non-zero tokens a key needs before the codec is fitted (None: the factory's)."""

    factory: str = "none"
    keys: tuple[str, ...] | None = None
    current: str | None = None
    min_tokens: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "CodecState":
        keys = raw.get("keys")
        min_tokens = raw.get("min_tokens")
        return cls(factory=str(raw.get("factory", "none")), keys=None if keys is None else tuple(keys),
                   current=raw.get("current"), min_tokens=None if min_tokens is None else int(min_tokens))

    def to_dict(self) -> dict[str, Any]:
        out = {"factory": self.factory, "keys": None if self.keys is None else list(self.keys),
               "current": self.current}
        return out if self.min_tokens is None else {**out, "min_tokens": self.min_tokens}


@dataclass(frozen=True)
class IndexMeta:
    """What an index is. fingerprint: sha256 of its model (`model_fingerprint`); root: the indexed folder;
    shard: (i, N), None (all files), or for a merge of parts that do not cover one sharding the parts'
    shards ((i, N) or None each); window/hop in samples at `sample_rate`; storage_dtype: float16 or float32;
    repr_spec: {repr key: {"shape": [...], "dtype": str}} of a window's stored arrays (None until the first
    window is encoded); pooled_key: the stored key the ANN indexes (None: the head has no pooled embedding,
    e.g. pure THA, searched exhaustively; meaningful once repr_spec is known); generation: the change
    counter; token_codec: None in indexes written before token codecs (float tokens throughout)."""

    schema: int | None = None
    fingerprint: str | None = None
    head: str | None = None
    root: str | None = None
    shard: tuple[int, int] | tuple[tuple[int, int] | None, ...] | None = None
    sample_rate: int | None = None
    window_samples: int | None = None
    hop_samples: int | None = None
    storage_dtype: str | None = None
    repr_spec: dict[str, dict[str, Any]] | None = None
    pooled_key: str | None = None
    ann_threshold: int | None = None
    ann_memory_budget: int | None = None
    generation: int = 0
    follow_external_links: bool = False
    token_codec: CodecState | None = None

    @property
    def created(self) -> bool:
        """Whether a build stored the index's identity (model, folder, windows); False for an index whose
        first build was interrupted before that."""
        return self.fingerprint is not None

    @property
    def reprs_known(self) -> bool:
        """Whether the representations (repr_spec, pooled_key) are decided: after the first encoded window."""
        return self.repr_spec is not None

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "IndexMeta":
        """The meta of any index from its meta table ({key: JSON value}) — the one upgrade of older indexes:
        the storage dtype under its old key "precision", no token_codec (written before token codecs: None),
        no follow_external_links (False), no ann_memory_budget (None), shard as a JSON list. Keys this hade
        does not know are ignored (and left in the table)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: raw[_DISK_KEY.get(name, name)] for name in names if _DISK_KEY.get(name, name) in raw}
        if values.get("token_codec") is not None:
            values["token_codec"] = CodecState.from_dict(values["token_codec"])
        values["shard"] = _shard(values.get("shard"))
        values["generation"] = int(values.get("generation") or 0)
        values["follow_external_links"] = bool(values.get("follow_external_links", False))
        return cls(**values)

    def to_dict(self, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """{on-disk key: JSON value} of `fields` (default: all), as `Store` writes them."""
        out = {}
        for name in fields or tuple(f.name for f in dataclasses.fields(self)):
            value = getattr(self, name)
            if isinstance(value, CodecState):
                value = value.to_dict()
            elif name == "shard":
                value = shard_to_json(value)
            out[_DISK_KEY.get(name, name)] = value
        return out

    @property
    def one_shard(self) -> tuple[int, int] | None:
        """(i, N) when the index holds one shard (built with --shard i/N), else None."""
        return self.shard if self.shard is not None and isinstance(self.shard[0], int) else None

    def replace(self, **changes: Any) -> "IndexMeta":
        """A copy with `changes` (field names; TypeError naming an unknown one)."""
        return dataclasses.replace(self, **changes)


def shard_to_json(shard: tuple | None) -> list | None:
    """`IndexMeta.shard` as JSON: (i, N) -> [i, N]; a merge's ((i, N) | None, ...) -> [[i, N] | null, ...]."""
    return None if shard is None else [list(s) if isinstance(s, tuple) else s for s in shard]


def _shard(raw: Any) -> tuple | None:
    """The shard of the meta table as a tuple: [i, N] -> (i, N); a merge's [[i, N] | null, ...] -> a tuple
    of those; null or [] -> None."""
    if not raw:
        return None
    if isinstance(raw[0], (list, tuple)) or raw[0] is None:
        return tuple(None if s is None else (int(s[0]), int(s[1])) for s in raw)
    return int(raw[0]), int(raw[1])
