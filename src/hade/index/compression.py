"""An index's token compression: which codec its new chunks are written with, and fitting it.

The index's codec state (`hade.index.meta.CodecState`, the meta value ``token_codec`` = {factory, keys,
current[, min_tokens]}), of which this module is the only reader and writer: the faiss factory asked for at
creation (``hade index --token-codec``, default ``OPQ32,IVF256,PQ32``, with 8 dims a sub-quantiser at other
token widths: `hade.index.tokens.code_bytes_for`; "none" stores float tokens), the repr keys it compresses
(`hade.index.tokens.token_keys` of the index's repr_spec; [] for heads without stored token arrays, e.g.
DP), the codec set (``codecs/<id>``) that new chunks are encoded with — None until one is fitted — and,
when given at creation (`build_index(token_codec_min_tokens=)`), the fewest non-zero tokens a key must have
before the codec is fitted. Indexes written before token codecs have no ``token_codec`` and read as "none".

A codec is fitted only on enough tokens to train well (`tokens_needed`: by default faiss's 39 points a
k-means centroid, 9 984 tokens a key for the default's 256-centroid codebooks; THA's smallest level has
16 to 64 tokens a window, so 156 to 624 windows). Below that, windows are stored as float tokens (the
storage dtype), which search reads as it reads an index written before token codecs: a small folder
indexes at the speed of its encoder, where fitting OPQ on its few tokens took minutes and gave a poor
codec. The run that brings the index past it fits the codec — the builder holds a new index's first
`fit_windows` windows back for it (at least `FIT_WINDOWS`), and `finalize` fits on the float chunks'
first `fit_windows` windows when the windows of several runs together reach it — and `finalize` then
converts the float chunks. Codecs then stay fixed: re-fitting would re-encode every chunk. (This is also how
an index written before token codecs is upgraded: ``hade index FOLDER --out INDEX --token-codec
OPQ32,IVF256,PQ32``.)
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from hade.index.meta import CodecState, IndexMeta
from hade.index.store import CODES_SUFFIX, Store
from hade.index.reprs import load_codec_set
from hade.index.tokens import (DEFAULT_FACTORY, TokenCodec, encode_arrays, fit_codec_set, save_codecs, token_keys,
                               tokens_to_fit)

FIT_WINDOWS = 512  # windows a new index's codec is fitted on at least (their float tokens are held in memory)
NO_CODEC = "none"


class TokenCompression:
    """The token codec state of one index (from its meta), fitted and applied to chunk arrays. The only
    reader and writer of `CodecState`: other modules ask the static methods below."""

    def __init__(self, store: Store, meta: IndexMeta) -> None:
        tc = meta.token_codec or CodecState()
        self.store = store
        self.factory: str = tc.factory
        self.keys: list[str] | None = None if tc.keys is None else list(tc.keys)
        self.current: str | None = tc.current
        self.min_tokens: int | None = tc.min_tokens
        self.codecs: dict[str, TokenCodec] | None = None
        self.failed: str | None = None  # why fitting failed in this run
        if self.current is not None:
            self.codecs = load_codec_set(store, self.current)

    @staticmethod
    def initial_state(factory: str | None, min_tokens: int | None = None) -> CodecState:
        """The codec state of a new index (`min_tokens`: see `tokens_needed`; None: the default)."""
        return CodecState(factory or DEFAULT_FACTORY, None, None, None if min_tokens is None else int(min_tokens))

    def state(self) -> CodecState:
        """The codec state to store."""
        return CodecState(self.factory, None if self.keys is None else tuple(self.keys), self.current,
                          self.min_tokens)

    # ---- the state, for modules that only ask about it ------------------------------------------
    @staticmethod
    def factory_of(meta: IndexMeta) -> str:
        """The index's codec factory ("none": float tokens, also for an index written before token codecs)."""
        return (meta.token_codec or CodecState()).factory

    @staticmethod
    def current_of(meta: IndexMeta) -> str | None:
        """The codec set new chunks are written with (None: none fitted)."""
        return (meta.token_codec or CodecState()).current

    @staticmethod
    def coded_keys(meta: IndexMeta) -> set[str]:
        """The repr keys a chunk written with a codec set stores as codes."""
        return set((meta.token_codec or CodecState()).keys or ())

    @staticmethod
    def may_compress(meta: IndexMeta) -> bool:
        """Whether the index has a codec factory and token keys to compress (or none decided yet)."""
        tc = meta.token_codec or CodecState()
        return tc.factory != NO_CODEC and tc.keys != ()

    @staticmethod
    def requested(meta: IndexMeta, factory: str | None, min_tokens: int | None) -> CodecState | None:
        """The state after a build asked for `factory` (None: the index's) and `min_tokens` (None: the
        index's): a factory given to an index storing float tokens is set (`finalize` then compresses them),
        a new min_tokens replaces the index's; None when nothing changes. The caller has refused a factory
        that differs from the index's (`hade.index.build`)."""
        tc = meta.token_codec
        min_tokens = min_tokens if min_tokens is not None else (tc.min_tokens if tc else None)
        if factory is not None and factory != TokenCompression.factory_of(meta):
            return TokenCompression.initial_state(factory, min_tokens)
        if tc is not None and min_tokens != tc.min_tokens:
            return CodecState(tc.factory, tc.keys, tc.current, min_tokens)
        return None

    @staticmethod
    def without(meta: IndexMeta, codec_id: str) -> CodecState | None:
        """The state once codec set `codec_id` is dropped (damaged): new chunks fit a new one when they were
        written with it; None when nothing changes."""
        tc = meta.token_codec
        if tc is None or tc.current != codec_id:
            return None
        return CodecState(tc.factory, tc.keys, None, tc.min_tokens)

    @staticmethod
    def merged(meta: IndexMeta, copied: set[str]) -> CodecState | None:
        """A merged index's state (the first part's): new windows get its codec set when it was copied,
        else the first set copied (None: float until one is fitted)."""
        tc = meta.token_codec
        if tc is None or tc.current in copied:
            return tc
        return CodecState(tc.factory, tc.keys, min(copied) if copied else None, tc.min_tokens)

    def tokens_needed(self, dim: int) -> int:
        """Non-zero tokens of each key the codec is fitted on at least: the index's ``min_tokens`` when it
        has one (0 fits on whatever faiss can train on, the behaviour before deferral), else what the
        factory needs to train well (`hade.index.tokens.tokens_to_fit`)."""
        return self.min_tokens if self.min_tokens is not None else tokens_to_fit(self.factory, dim)

    def windows_needed(self, spec: Mapping[str, Mapping]) -> int:
        """Windows whose tokens reach `tokens_needed` for every token key (spec: {key: {shape [M, d]}});
        0 without token keys."""
        shapes = [spec[k]["shape"] for k in self.keys or [] if k in spec]
        return max([-(-self.tokens_needed(d) // max(1, m)) for m, d in shapes] or [0])

    def fit_windows(self, spec: Mapping[str, Mapping]) -> int:
        """Windows the codec is fitted on: FIT_WINDOWS, more when fewer would not reach `tokens_needed`."""
        return max(FIT_WINDOWS, self.windows_needed(spec))

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

    def fit(self, arrays: Mapping[str, np.ndarray], progress: bool = False) -> str | None:
        """Fit the codec set on the token keys of `arrays` ({key: [R, M, d]}) and keep it in the store;
        returns a note when it is not fitted (too few tokens to train well, `tokens_needed`, or too few for
        faiss at all; the windows are then stored as float tokens). `progress`: a bar over the codecs."""
        short = self._short_of_tokens(arrays)
        if short is not None:
            self.failed = short
            return (f"token codec {self.factory!r} not fitted yet ({short}); token features are stored as float "
                    "until then, and the `hade index` run that brings the index there compresses them")
        got = fit_codec_set({k: arrays[k] for k in self.keys or []}, self.factory, progress=progress)
        if isinstance(got, str):
            self.failed = got
            return (f"token codec {self.factory!r} not fitted ({got}); token features are stored as float "
                    "for now, and a later `hade index` run compresses them once there are enough")
        self.codecs = got
        self.current = self.store.write_codec_set(lambda folder: save_codecs(folder, got))
        return None

    def _short_of_tokens(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        """Why `arrays` hold too few non-zero tokens of some key to fit on (`tokens_needed`), else None."""
        for key in self.keys or []:
            x = np.asarray(arrays[key])
            have = int(np.count_nonzero(np.any(x.reshape(-1, x.shape[-1]) != 0, axis=1)))
            need = self.tokens_needed(x.shape[-1])
            if have < need:
                per_window = x.shape[1] if x.ndim == 3 else 1
                return (f"it needs {need} tokens of {key} to train well, about {-(-need // per_window)} windows; "
                        f"the index has fewer")
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
