"""Compressed token store: the per-window token features that re-ranking heads score, in a few bytes a token.

Heads that re-rank with stored token features (THA, THA+DCR, THA+DP, HCI, co-attention) store for every
window arrays of shape [M, d] (THA at the CPU model's shapes: 256 + 64 + 16 tokens × 256 dims). As
float16 that is 172 kB a window (690 kB at the paper's 1024 + 256 + 64 tokens), almost all of an
index. `TokenCodec` encodes one such key's tokens into ``code_bytes`` uint8 per token:

* the token's **direction** x/|x| with a faiss standalone codec, by default ``OPQ32,IVF256,PQ32`` — an
  orthogonal rotation fitted to the tokens (OPQ), a coarse k-means centroid (1 byte for 256 lists) and a
  product quantisation of the residual to it (32 sub-vectors of 8 dims, 8 bits each: 32 bytes):
  ColBERTv2's "centroid + compressed residual", with PQ instead of 1-2 bits per dimension because at the
  same bytes it keeps the ranking closer, and OPQ's rotation spreading the variance evenly over the
  sub-vectors (tokens of another width keep 8 dims a sub-quantiser, `_default_for`);
* the token's **norm** |x| as float16 (2 bytes): THA weighs tokens by their norm (the audio-enhanced
  direction attends with |a_m|), so the norm is kept almost exactly rather than left to the quantiser.
At 256 dims that is 1 + 32 + 2 = 35 bytes a token instead of 512 (float16): **14.6x smaller** (11.8 kB
instead of 172 kB a window at the CPU model's shapes, 47 kB instead of 688 kB at the paper's; 13.5x for
a whole THA+DCR window with its pooled vector and factors). Decoding returns |x|·(decoded direction
rescaled to unit length), float32; `decode(rotated=True)` leaves it in the rotated space (x Rᵀ), which is
how a re-rank reads it for heads that declare `rotation_pairs` (THA): the query's words are rotated once
instead of every candidate token, which is most of OPQ's decoding cost (`rotation`). Codes are written
with `save_codes` as plain ``.npy`` [R, M, B] uint8 and opened with `open_codes` memory-mapped: a search
decodes only the rows of its candidates (`decode_rows`), so memory does not grow with the index.

Chosen by measurement, through the index (benchmarks/index_scale.py: each codec fitted on the indexed
folder's first 512 windows, as `hade index` does; trained tha+dcr checkpoint of the Table 1 ablation;
top-10 overlap of the re-ranked windows against float16, and T2A R@1 / R@10 of the captions' files;
decoding 100 candidates' tokens, all three levels, by benchmarks/codec_decode.py):

    codec                      bytes/window  x fp16  top-10 overlap  R@1    R@10 | overlap  R@1    | decode
    IVF256,PQ32 (until s6)         12 784     13.5      0.934           0   -0.3 |  0.996   +0.28  |  7.8 ms
    IVF256,PQ64x7 (s7)             20 848      8.3      0.953        +0.1      0 |  0.996   +0.56  | 11.0 ms
    OPQ32,IVF256,PQ32 (default)    12 784     13.5      0.974        +0.2   -0.1 |  0.998      0   |  7.1 ms
                                                                                                (34.9 unrotated)

(left: 10 800 windows of 20 s SynthCaps clips, 1 000 captions, R@1 2.5 / R@10 17.3 in float16; right: the
72-clip evaluation split, 360 captions, R@10 unchanged for all three). OPQ's rotation is fitted once per
index and costs time: compressing the 20 s set (fitting on its first 512 windows, then encoding all 10 800)
took 150 s against 46 s with IVF256,PQ64x7, on a shared machine. The misses left are overlapping windows
of one file whose near-equal scores the codes reorder.

Earlier, fitted on the development split's tokens and scored directly (benchmarks/index_store.py; the
same checkpoint, SynthCaps evaluation split, 72 clips x 360 captions):

    codec          bytes/token  x fp16  top-10 overlap (full / THA part)  T2A R@1   R@10
    float16            512        1.0        1.000 / 1.000                 15.83   76.94
    colbert 1 bit       36       14.2        0.986 / 0.894                 16.39   78.33
    colbert 2 bit       68        7.5        0.992 / 0.930                 15.83   76.94
    PQ32                34       15.1        0.991 / 0.923                 16.11   78.33
    IVF256,PQ32         35       14.6        0.993 / 0.942                 15.28   76.94
    IVF256,PQ64         67        7.6        0.997 / 0.966                 15.83   76.94

The trained THA-alone checkpoint (same split; float16 R@1 20.00, R@10 86.11): colbert 1 bit 0.924
(R@1 23.06, R@10 85.83), IVF256,PQ32 0.967 (22.50, 85.56), IVF256,PQ64 0.983 (21.67, 85.28).

PQ on the residual to a coarse centroid beats ColBERTv2's per-dimension bits at equal bytes. 32 bytes
meet issue #14's size and overlap targets (>= 8x, top-10 overlap >= 0.95) for both heads. R@1 / R@10
within 0.5 points is met by tha+dcr's R@10 only: its R@1 moved by 2 of 360 queries (-0.55; one query
is 0.28 points) and THA's R@1 by +2.5 (+1.7 with 64 bytes) — on 72 clips R@1 turns on near-ties, and
those moves go either way. Through the index, whose codec is fitted on the indexed folder's own
windows, R@1 moved +0.28 and R@10 0 on this split (docs/search-scale.md, benchmarks/index_scale.py). On the untrained demo copy (runs/demo-idx/model, near-chance scores 0.03
apart) the overlap is 0.89 (IVF256,PQ32) to 0.92 (IVF256,PQ64): no codec keeps an order that
noise-sized score gaps decide. Token pooling
was not tried: THA's per-token softmax over audio tokens changes with the token count, so pooling is
not a storage-only change.

Why not score without decoding (PLAID-style)? THA needs, per text word and audio token, the cosine
s_mn *and* the audio tokens' Gram matrix and norms; decoding 100 candidates (33 600 tokens) takes
~17 ms of one core against ~60 ms for THA's score of one caption on them, so a look-up-table scorer
could save at most a quarter of a re-rank while duplicating THA's arithmetic.

In the index (`hade.index.compression`, `hade.index.store`): an index fits one codec set (a codec a
token key, `token_keys`) on its first 512 encoded windows, or more when they hold fewer tokens than the
codec needs to train well (`tokens_to_fit`; a smaller index keeps float tokens until then), and keeps it
under ``codecs/<id>`` (id: sha256
of its files); every chunk records the set its ``{key}.codes.npy`` arrays were written with, and
`hade.index.reprs.ReprTable` decodes only the rows a search gathers, from memory-mapped codes. Shards of
a parallel build fit their own sets, and a merge or compaction copies codes with their set, never
re-quantising. Indexes written before token codecs (float tokens) open as they are; `hade index FOLDER
--out INDEX --token-codec OPQ32,IVF256,PQ32` compresses them in place. An index keeps the codec it was
built with (IVF256,PQ32 before session 7, IVF256,PQ64x7 in session 7).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping

import faiss
import numpy as np

from tqdm.auto import tqdm

from hade.errors import InputError
from hade.utils.atomic import atomic_path, write_json_atomic

DIMS_PER_SUBQUANTISER = 8
DEFAULT_FACTORY = "OPQ32,IVF256,PQ32"
NORM_BYTES = 2  # float16 norm after the direction's code
FIT_TOKENS = 200_000  # tokens per key the codec is fitted on at most (k-means and PQ training sample)
MIN_POINTS_PER_LIST = 39  # faiss's own lower bound for k-means; fewer lists when the sample is small
TOKEN_KEY_MIN_VALUES = 4096  # a stored key [M, d] with M·d at least this is a token array (not a pooled vector)
CODECS_JSON = "codecs.json"


@dataclass
class CodecInfo:
    """What a fitted codec is: dims, the faiss factory string actually built, code bytes, training size."""

    dim: int
    factory: str
    code_bytes: int
    trained_on: int
    seed: int = 0


def _fit_factory(factory: str, n: int, dim: int | None = None) -> str:
    """Shrink an ``[OPQ<m>,]IVF<k>,...`` factory's k to what `n` training points support (tests, tiny
    folders); the default factory keeps 8 dims a sub-quantiser for tokens of other widths (`_default_for`)."""
    if dim is not None and factory == DEFAULT_FACTORY:
        factory = _default_for(dim)
    rotation = ""
    if factory.startswith("OPQ") and "," in factory:
        rotation, _, factory = factory.partition(",")
        rotation += ","
    head, _, rest = factory.partition(",")
    if not head.startswith("IVF") or not rest:
        return rotation + factory
    lists = min(int(head[3:]), max(1, n // MIN_POINTS_PER_LIST))
    return f"{rotation}IVF{lists},{rest}"


def _default_for(dim: int) -> str:
    """DEFAULT_FACTORY for `dim`-dim tokens: OPQ32,IVF256,PQ32 at 256 dims (8 dims a sub-quantiser); for
    other widths the most sub-quantisers of at least 8 dims each that divide `dim`."""
    m = max([d for d in range(1, max(1, dim // DIMS_PER_SUBQUANTISER) + 1) if dim % d == 0] or [1])
    return f"OPQ{m},IVF256,PQ{m}"


def code_bytes_for(dim: int, factory: str = DEFAULT_FACTORY) -> int:
    """Bytes a `dim`-dim token takes with `factory` (the default: ``OPQ<m>,IVF256,PQ<m>`` with 8 dims a
    sub-quantiser, so 1 + dim/8 + 2 for widths that 8 divides: 35 at 256 dims, 67 at 512, 99 at 768)."""
    return int(faiss.index_factory(dim, _fit_factory(factory, 10**6, dim)).sa_code_size()) + NORM_BYTES


def tokens_to_fit(factory: str, dim: int) -> int:
    """Non-zero tokens a key needs for `factory` to be fitted well on `dim`-dim tokens: faiss's
    MIN_POINTS_PER_LIST (39) points for every centroid of its largest k-means — an 8-bit PQ codebook's 256
    and IVF256's 256 lists give 9 984. Fewer still fit (`_fit_factory` shrinks the lists, PQ needs 256),
    but a codec fitted on a small folder's few tokens is both poor and slow to fit (OPQ's 50 rounds of
    PQ training cost about as much on 1 000 tokens as on 10 000)."""
    try:
        built = faiss.index_factory(dim, _fit_factory(factory, 10**6, dim))  # owns `index`: keep it referenced
    except RuntimeError:
        return 0  # not buildable at this width: fitting is tried, and says why it fails (`TokenCodec.fit`)
    index = faiss.downcast_index(built.index) if isinstance(built, faiss.IndexPreTransform) else built
    ivf = faiss.try_extract_index_ivf(index)
    pq = getattr(ivf if ivf is not None else index, "pq", None)
    centroids = max(ivf.nlist if ivf is not None else 1, int(pq.ksub) if pq is not None else 1)
    return MIN_POINTS_PER_LIST * centroids


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [N, D] -> (x/|x| [N, D] float32 with zero rows kept zero, |x| [N] float32)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1)
    return x / np.maximum(norm, 1e-12)[:, None], norm


class TokenCodec:
    """Codec of one key's token features: direction with a faiss codec, norm as float16.

    `fit` on a sample [N, D]; `encode` tokens [..., D] -> codes [..., code_bytes] uint8; `decode` back to
    float32 [..., D]. `save(folder, name)` / `load(folder, name)` keep it as ``{name}.faiss`` + json."""

    def __init__(self, index: faiss.Index, info: CodecInfo) -> None:
        self.index, self.info = index, info
        self.rotation = _orthogonal_rotation(index, info.dim)
        """[D, D] float32 R when the codec first rotates tokens orthogonally (an OPQ factory: codes hold
        x Rᵀ), else None. `decode(codes, rotated=True)` then skips the inverse rotation, the bulk of OPQ's
        decoding cost; dot products with vectors rotated the same way (t Rᵀ) are unchanged."""

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def code_bytes(self) -> int:
        return self.info.code_bytes

    @classmethod
    def fit(cls, sample: np.ndarray, factory: str = DEFAULT_FACTORY, max_train: int = FIT_TOKENS,
            seed: int = 0) -> "TokenCodec":
        """sample [N, D] (or [R, M, D]; zero rows, e.g. padding, are skipped) -> fitted codec."""
        sample = np.asarray(sample)
        if sample.ndim < 2 or sample.shape[-1] < 1:
            raise InputError(f"token codec: sample must be [N, D] token features, got shape {sample.shape}")
        flat = sample.reshape(-1, sample.shape[-1])
        directions, norm = unit_rows(flat)
        directions = directions[norm > 0]
        if len(directions) > max_train:
            pick = np.sort(np.random.default_rng(seed).choice(len(directions), max_train, replace=False))
            directions = directions[pick]
        dim = flat.shape[1]
        built = _fit_factory(factory, len(directions), flat.shape[1])
        try:
            index = faiss.index_factory(dim, built)
        except RuntimeError as e:
            raise InputError(f"token codec: faiss cannot build {built!r} for {dim} dims "
                             f"({' '.join(str(e).split())[:160]})") from None
        _seed_training(index, seed)
        if len(directions) < _min_train(index):
            raise InputError(f"token codec: {len(directions)} non-zero tokens are too few to fit {built!r} "
                             f"(need at least {_min_train(index)})")
        with _quiet_rotation_training(index):
            index.train(np.ascontiguousarray(directions))
        info = CodecInfo(dim, built, int(index.sa_code_size()) + NORM_BYTES, len(directions), seed)
        return cls(index, info)

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [..., D] float -> codes [..., code_bytes] uint8 (direction code, then float16 norm)."""
        tokens = np.asarray(tokens)
        if tokens.shape[-1:] != (self.dim,):
            raise InputError(f"token codec: tokens must end in {self.dim} dims, got shape {tokens.shape}")
        lead = tokens.shape[:-1]
        directions, norm = unit_rows(tokens.reshape(-1, self.dim))
        if not np.isfinite(norm).all() or (len(norm) and norm.max() > np.finfo(np.float16).max):
            raise InputError("token codec: token norms must be finite and within float16 range "
                             f"(largest {norm.max():.3g})")
        out = np.empty((len(directions), self.code_bytes), dtype=np.uint8)
        if len(directions):
            out[:, :-NORM_BYTES] = self.index.sa_encode(np.ascontiguousarray(directions))
        out[:, -NORM_BYTES:] = norm.astype("<f2").view(np.uint8).reshape(-1, NORM_BYTES)
        return out.reshape(*lead, self.code_bytes)

    def decode(self, codes: np.ndarray, rotated: bool = False) -> np.ndarray:
        """codes [..., code_bytes] uint8 -> tokens [..., D] float32 (|x| · unit decoded direction); with
        `rotated` and a `rotation` R, the tokens rotated: x Rᵀ (the norms are the same)."""
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.shape[-1:] != (self.code_bytes,):
            raise InputError(f"token codec: codes must be uint8 [..., {self.code_bytes}], got {codes.dtype} "
                             f"{codes.shape}")
        lead = codes.shape[:-1]
        flat = np.ascontiguousarray(codes.reshape(-1, self.code_bytes))
        norm = flat[:, -NORM_BYTES:].copy().view("<f2")[:, 0].astype(np.float32)
        if not len(flat):
            return np.zeros((*lead, self.dim), dtype=np.float32)
        decoder = faiss.downcast_index(self.index.index) if rotated and self.rotation is not None else self.index
        tokens = decoder.sa_decode(np.ascontiguousarray(flat[:, :-NORM_BYTES]))
        length = np.sqrt(np.einsum("ij,ij->i", tokens, tokens))  # one pass, no [N, D] temporary
        tokens *= (norm / np.maximum(length, 1e-12))[:, None]  # in place: direction rescaled to the stored norm
        return tokens.reshape(*lead, self.dim)

    def save(self, folder: str | Path, name: str) -> None:
        """Write ``{name}.faiss`` and ``{name}.json`` under `folder` (atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{name}.faiss") as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json_atomic(folder / f"{name}.json", asdict(self.info))

    @classmethod
    def load(cls, folder: str | Path, name: str) -> "TokenCodec":
        folder = Path(folder)
        file = folder / f"{name}.json"
        try:
            info = CodecInfo(**json.loads(file.read_text()))
            file = folder / f"{name}.faiss"
            index = faiss.read_index(str(file))
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise InputError(f"{file}: not a readable token codec ({' '.join(str(e).split())[:160]})") from None
        if index.d != info.dim or int(index.sa_code_size()) + NORM_BYTES != info.code_bytes:
            raise InputError(f"{folder / name}.json: does not match {name}.faiss (dims or code size differ)")
        return cls(index, info)


def _orthogonal_rotation(index: faiss.Index, dim: int) -> np.ndarray | None:
    """The [dim, dim] matrix of an index whose only pre-transform is an orthonormal rotation (OPQ), else None."""
    if not isinstance(index, faiss.IndexPreTransform) or index.chain.size() != 1:
        return None
    vt = faiss.downcast_VectorTransform(index.chain.at(0))
    if not (isinstance(vt, faiss.LinearTransform) and vt.is_orthonormal and not vt.have_bias
            and vt.d_in == vt.d_out == dim):
        return None
    return faiss.vector_to_array(vt.A).reshape(dim, dim).astype(np.float32)


def _seed_training(index: faiss.Index, seed: int) -> None:
    """Deterministic k-means for an IVF codec's coarse lists; no polysemous training (the factory's
    ``PQ<M>`` turns it on: it orders codes for Hamming search, which a codec never does, and takes
    10x the PQ's own training time)."""
    if isinstance(index, faiss.IndexPreTransform):  # OPQ: the codec proper sits behind the rotation
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = 1234 + seed
        ivf.cp.min_points_per_centroid = 1  # _fit_factory already sized the lists to the sample
    for part in (index, ivf):
        if part is not None and hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False
        if part is not None and hasattr(part, "pq"):  # small samples (tiny folders) fit without faiss's warning
            part.pq.cp.min_points_per_centroid = 1


@contextlib.contextmanager
def _quiet_rotation_training(index: faiss.Index) -> Iterator[None]:
    """Train an OPQ rotation's product quantiser without faiss's clustering warnings.

    `OPQMatrix.train` fits a PQ of its own at every one of its iterations, with faiss's default
    ClusteringParameters: below 39 points a centroid each of its sub-quantisers prints ``WARNING clustering
    N points to 256 centroids`` straight to the C stderr (no verbose flag silences it; 6 400 lines for a
    small folder's OPQ64). Handing it a PQ of the same shape whose only change is
    ``min_points_per_centroid = 1`` trains identically, silently. The PQ is only borrowed while training
    (OPQMatrix keeps a raw pointer to it), so it is detached again afterwards."""
    opq = None
    if isinstance(index, faiss.IndexPreTransform) and index.chain.size() == 1:
        vt = faiss.downcast_VectorTransform(index.chain.at(0))
        opq = vt if isinstance(vt, faiss.OPQMatrix) else None
    if opq is None or opq.is_trained:
        yield
        return
    pq = faiss.ProductQuantizer(opq.d_out, opq.M, 8)
    pq.cp.min_points_per_centroid = 1
    opq.pq = pq
    try:
        yield
    finally:
        opq.pq = None
        del pq


def _min_train(index: faiss.Index) -> int:
    """Fewest training points: 256 for 8-bit PQ codebooks (k-means with 256 centroids), the lists for IVF."""
    ivf = faiss.try_extract_index_ivf(index)
    return max(256, ivf.nlist if ivf is not None else 0)


def token_keys(repr_spec: Mapping[str, Mapping], pooled_key: str | None = None) -> list[str]:
    """The keys of an index's ``repr_spec`` ({key: {shape, dtype}}) that are token arrays to compress:
    floating, per-window shape [M, d] with M·d >= TOKEN_KEY_MIN_VALUES, not the pooled key (e.g. THA's
    ``tha_audio_0..2``; not DCR's ``factors`` [8, 32], which is a pooled vector read as factors)."""
    out = []
    for key, spec in sorted(repr_spec.items()):
        shape, dtype = list(spec.get("shape", [])), str(spec.get("dtype", ""))
        if key != pooled_key and len(shape) == 2 and dtype.startswith("float") \
                and shape[0] * shape[1] >= TOKEN_KEY_MIN_VALUES:
            out.append(key)
    return out


def fit_codecs(samples: Mapping[str, np.ndarray], factory: str = DEFAULT_FACTORY, seed: int = 0,
               progress: bool = False) -> dict[str, TokenCodec]:
    """{key: tokens [R, M, D]} -> {key: fitted codec}, one codec a key (levels differ in statistics); with
    `progress` a bar counts the codecs fitted (an OPQ codec of 512-dim tokens takes minutes)."""
    out = {}
    with tqdm(total=len(samples), desc="fit token codecs", unit="codec", disable=not progress, leave=False) as bar:
        for key, x in samples.items():
            bar.set_postfix_str(f"{key} {np.asarray(x).shape[-1]}d", refresh=True)
            out[key] = TokenCodec.fit(x, factory, seed=seed)
            bar.update()
    return out


def save_codecs(folder: str | Path, codecs: Mapping[str, TokenCodec]) -> None:
    """Write every codec (``{key}.faiss`` / ``{key}.json``) and then ``codecs.json`` listing the keys."""
    for key, codec in codecs.items():
        codec.save(folder, key)
    write_json_atomic(Path(folder) / CODECS_JSON, {"keys": sorted(codecs)})


def load_codecs(folder: str | Path) -> dict[str, TokenCodec]:
    """Codecs written by `save_codecs`; InputError naming the folder when it holds none."""
    file = Path(folder) / CODECS_JSON
    try:
        keys = json.loads(file.read_text())["keys"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{file}: missing or unreadable; the token codecs cannot be loaded") from None
    return {key: TokenCodec.load(folder, key) for key in keys}


def save_codes(path: str | Path, codes: np.ndarray) -> None:
    """codes [R, M, B] uint8 -> ``.npy`` at `path` (atomically)."""
    if np.asarray(codes).dtype != np.uint8:
        raise InputError(f"{path}: token codes must be uint8, got {np.asarray(codes).dtype}")
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(codes))


def open_codes(path: str | Path) -> np.ndarray:
    """The codes at `path` memory-mapped read-only ([R, M, B] uint8); nothing is read until used."""
    try:
        codes = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable token code array ({e})") from None
    if codes.dtype != np.uint8 or codes.ndim != 3:
        raise InputError(f"{path}: token codes must be uint8 [R, M, B], got {codes.dtype} {codes.shape}")
    return codes


def decode_rows(codec: TokenCodec, codes: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Decode windows `rows` ([C] ints; all when None) of codes [R, M, B] -> tokens [C, M, D] float32.
    With a memory-mapped `codes` only those rows are read from disk."""
    picked = codes if rows is None else codes[np.asarray(rows, dtype=np.int64)]
    return codec.decode(np.asarray(picked))


def encode_arrays(codecs: Mapping[str, TokenCodec], arrays: Mapping[str, np.ndarray],
                  suffix: str = ".codes") -> dict[str, np.ndarray]:
    """A chunk's arrays with every key that has a codec replaced by its codes under ``{key}{suffix}``
    ({"embed": [R, D], "tha_audio_0": [R, M, d]} -> {"embed": ..., "tha_audio_0.codes": [R, M, B] uint8})."""
    return {(k + suffix if k in codecs else k): (codecs[k].encode(a) if k in codecs else a) for k, a in arrays.items()}


def fit_codec_set(samples: Mapping[str, np.ndarray], factory: str = DEFAULT_FACTORY, seed: int = 0,
                  progress: bool = False) -> dict[str, TokenCodec] | str:
    """`fit_codecs`, or the reason it cannot (too few tokens for the factory) as a string."""
    try:
        return fit_codecs(samples, factory, seed, progress)
    except InputError as e:
        return str(e)


def check_factory(factory: str, where: str = "--token-codec") -> str:
    """A token codec factory as given ('none' for float tokens); InputError when faiss cannot build it."""
    if factory == "none":
        return factory
    try:
        probe = faiss.index_factory(2**8 * 3 * 5 * 7, _fit_factory(factory, 10**6))
    except RuntimeError as e:
        raise InputError(f"{where} {factory!r}: not a faiss factory string faiss can build "
                         f"({' '.join(str(e).split())[:120]}); e.g. {DEFAULT_FACTORY!r} or 'none'") from None
    if not hasattr(probe, "sa_encode"):
        raise InputError(f"{where} {factory!r}: faiss cannot use it as a codec; e.g. {DEFAULT_FACTORY!r} or 'none'")
    return factory
