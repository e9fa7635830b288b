"""An index's token compression: which codec its new chunks are written with, and fitting it.

The meta value ``token_codec`` = {factory, keys, current}: the faiss factory asked for at creation
(``hade index --token-codec``, default ``OPQ32,IVF256,PQ32``; "none" stores float tokens), the repr keys it
compresses (`hade.index.tokens.token_keys` of the index's repr_spec; [] for heads without stored
token arrays, e.g. DP), and the codec set (``codecs/<id>``) that new chunks are encoded with — None until
one is fitted. Indexes written before token codecs have no ``token_codec`` and read as "none".

A new index fits its codec set on its first `FIT_WINDOWS` encoded windows (the builder holds them back
until then, or until the folder ends), so that a large library never sits on disk as float tokens.
Codecs then stay fixed: re-fitting would re-encode every chunk. When fitting is impossible (a folder
with too few tokens for the factory), the windows are stored as float tokens and the next run tries
again; `finalize` converts float chunks of an index whose factory is set (this is also how an index
written before token codecs is upgraded: ``hade index FOLDER --out INDEX --token-codec OPQ32,IVF256,PQ32``).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from hade.index.store import CODES_SUFFIX, Store
from hade.index.reprs import load_codec_set
from hade.index.tokens import DEFAULT_FACTORY, TokenCodec, encode_arrays, fit_codec_set, save_codecs, token_keys

FIT_WINDOWS = 512  # windows a new index's codec is fitted on (their float tokens are held in memory until then)
NO_CODEC = "none"


class TokenCompression:
    """The token codec state of one index (from its meta), fitted and applied to chunk arrays."""

    def __init__(self, store: Store, meta: Mapping[str, Any]) -> None:
        tc = meta.get("token_codec") or {}
        self.store = store
        self.factory: str = tc.get("factory", NO_CODEC)
        self.keys: list[str] | None = tc.get("keys")
        self.current: str | None = tc.get("current")
        self.codecs: dict[str, TokenCodec] | None = None
        self.failed: str | None = None  # why fitting failed in this run
        if self.current is not None:
            self.codecs = load_codec_set(store, self.current)

    @staticmethod
    def initial_meta(factory: str | None) -> dict[str, Any]:
        """The ``token_codec`` meta of a new index."""
        return {"factory": factory or DEFAULT_FACTORY, "keys": None, "current": None}

    def meta(self) -> dict[str, Any]:
        return {"factory": self.factory, "keys": self.keys, "current": self.current}

    def resolve_keys(self, spec: Mapping[str, Mapping], pooled_key: str | None) -> list[str]:
        """The keys to compress, decided once from the index's repr_spec."""
        if self.keys is None:
            self.keys = token_keys(spec, pooled_key) if self.factory != NO_CODEC else []
        return self.keys

    def waiting(self, spec: Mapping[str, Mapping] | None, pooled_key: str | None) -> bool:
        """Whether new chunks should wait for a codec to be fitted (a factory, token keys, no codec yet,
        no failed fit in this run). False until the representations are known."""
        if self.factory == NO_CODEC or self.current is not None or self.failed is not None or spec is None:
            return False
        return bool(self.resolve_keys(spec, pooled_key))

    def fit(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        """Fit the codec set on the token keys of `arrays` ({key: [R, M, d]}) and keep it in the store;
        returns a note when it cannot be fitted (the windows are then stored as float tokens)."""
        got = fit_codec_set({k: arrays[k] for k in self.keys or []}, self.factory)
        if isinstance(got, str):
            self.failed = got
            return (f"token codec {self.factory!r} not fitted ({got}); token features are stored as float "
                    "for now, and a later `hade index` run compresses them once there are enough")
        self.codecs = got
        self.current = self.store.write_codec_set(lambda folder: save_codecs(folder, got))
        return None

    def encode(self, arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str | None]:
        """(a chunk's arrays with its token keys as codes, the codec set id); unchanged and None without one."""
        if self.codecs is None:
            return dict(arrays), None
        return encode_arrays(self.codecs, arrays, CODES_SUFFIX), self.current

    def stored_bytes_per_window(self, spec: Mapping[str, Mapping]) -> int:
        """Bytes a window's arrays take on disk with this codec (float keys at their stored dtype)."""
        total = 0
        for key, s in spec.items():
            values = int(np.prod(s["shape"])) if s["shape"] else 1
            if self.codecs is not None and key in self.codecs:
                total += values // self.codecs[key].dim * self.codecs[key].code_bytes
            else:
                total += values * np.dtype(s["dtype"]).itemsize
        return total
