"""What a build is asked for: `IndexSettings`, the one record of `build_index`'s options (the CLI builds one
from its flags). Checked when made: a bad value fails with one InputError naming the field, as
`hade.config` does for model and training configs; an unknown name (`IndexSettings.of`) likewise.

Fixed at creation (an existing index refuses another value): window, hop, shard, storage_dtype,
token_codec (except that an index storing float tokens may be given one). Kept in the index and used when
not given again: ann_threshold, ann_memory_budget, token_codec_min_tokens. Per run: the rest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hade.config import COMPUTE_DTYPES, Rule, check_fields, check_storage_dtype
from hade.errors import InputError
from hade.index.tokens import check_factory
from hade.index.windows import parse_shard

_RULES = (
    Rule(("window", "hop"), 0.0, low_open=True, optional=True),
    Rule(("batch_size",), 1, integer=True),
    Rule(("ann_threshold",), 1, integer=True, optional=True),
)
_FLAGS = ("rebuild", "force", "follow_external_links", "progress")


@dataclass(frozen=True)
class IndexSettings:
    """Options of one `build_index` run (None: the index's value, or for a new index the default).

    window, hop: seconds (default: the model's clip length capped to 10 s, and half of it); fixed at creation.
    shard: 'i/N' (kept as (i, N)) to index only the files whose relative-path hash falls in slice i of N
    (see `merge_indexes`). rebuild: discard the existing index first (e.g. for a new model).
    force: write the index into `out` even when it is a non-empty folder that is not an index (InputError
    otherwise; its files are left alone).
    storage_dtype: 'float16' (default) or 'float32' storage of the representations; fixed at creation.
    token_codec: how token features (THA's audio tokens) are stored: a faiss codec factory or "none" (float,
    the storage dtype). The default for a new index, "OPQ32,IVF256,PQ32", keeps 8 dims a sub-quantiser at
    every token width (OPQ<d/8>,IVF256,PQ<d/8>): 35 bytes a token at 256 dims instead of 512 in float16,
    67 bytes a token at 512 dims instead of 1024 (`hade.index.tokens.code_bytes_for`). Fixed at creation,
    except that an index storing float tokens (e.g. one written before token codecs) can be given one: its
    stored tokens are then compressed (`hade.index.compression`).
    token_codec_min_tokens: the fewest non-zero tokens of each token key the codec is fitted on; until
    the index has them its tokens are stored as float, and the run that gets there fits the codec and
    compresses them (default: what the factory needs to train well, 9 984 for the default's 256-centroid
    k-means; 0 fits on whatever faiss can train on, as before deferral). Kept in the index; given again,
    it replaces the kept value (it matters only until the codec is fitted).
    ann_threshold: windows from which the ANN is IVF instead of exact (default: the index's, else 50 000).
    ann_memory_budget: bytes the ANN may take (default: the index's, else none): an IVF whose 8-bit codes
    would exceed it is built with product-quantised codes instead (`hade.index.ann.choose_ivfpq`).
    follow_external_links: index files that are (or lie in folders that are) symbolic links resolving
    outside the folder; by default they are skipped and listed in "skipped".
    aux_captions: for heads that use auxiliary captions (HCI+AC), a JSON/CSV file of generated captions
    (`hade.data.captioner.FileCaptioner` formats) or a dict, keyed by path relative to the folder or by
    file name (`hade.index.build`). A head that does not use them raises InputError.
    compute: encoder autocast, "fp32", "bf16" (CPU with AMX/AVX512-BF16, or CUDA) or "fp16" (CUDA); see
    `RetrievalModel.set_compute`. It may differ between runs on the same index.
    device; batch_size: windows per encoder batch (and per commit); progress: show progress bars."""

    window: float | None = None
    hop: float | None = None
    shard: tuple[int, int] | str | None = None
    rebuild: bool = False
    force: bool = False
    storage_dtype: str | None = None
    token_codec: str | None = None
    token_codec_min_tokens: int | None = None
    ann_threshold: int | None = None
    ann_memory_budget: int | None = None
    follow_external_links: bool = False
    aux_captions: str | Path | dict[str, str] | None = None
    compute: str = "fp32"
    device: str = "cpu"
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard", parse_shard(self.shard))
        self._check()

    def _check(self, where: str = "index settings") -> None:
        check_fields(self, where, _RULES)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{where}: {name} must be true or false, got {getattr(self, name)!r}")
        if self.compute not in COMPUTE_DTYPES:  # fp16 on a CPU: refused by the build, which knows the device
            raise InputError(f"compute: expected one of {list(COMPUTE_DTYPES)}, got {self.compute!r}")
        if self.storage_dtype is not None:
            check_storage_dtype(self.storage_dtype, where="storage_dtype")
        if self.token_codec is not None:
            check_factory(self.token_codec, where="token_codec")
        n = self.token_codec_min_tokens
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise InputError(f"token_codec_min_tokens={n!r}: expected a number of tokens >= 0")
        budget = self.ann_memory_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise InputError(f"ann_memory_budget={budget!r}: expected a positive number of bytes")

    @classmethod
    def of(cls, base: "IndexSettings | None" = None, **options: Any) -> "IndexSettings":
        """`base` (default: the defaults) with `options` ({field: value}); one InputError naming the unknown
        ones and listing the valid fields."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise InputError(f"index settings: unknown field(s) {unknown}; valid fields are {sorted(names)}")
        return dataclasses.replace(base or cls(), **options)

    @property
    def parsed_shard(self) -> tuple[int, int] | None:
        """The shard as (i, N) (None: every file)."""
        return self.shard  # type: ignore[return-value]  # parsed in __post_init__
