"""Approximate nearest neighbours over the pooled (L2-normalised) window embeddings, with faiss.

Two kinds, chosen by size:

* ``flat`` (fewer than ``threshold`` vectors, default 50 000): ``IndexFlatIP`` — exact inner product,
  i.e. the cosine of the stored vectors; recall 1.
* ``ivf`` (``threshold`` or more): ``IndexIVFScalarQuantizer`` (8-bit codes of the residuals to the list
  centroid), Euclidean metric over the re-normalised vectors — for unit vectors ‖q − x‖² = 2 − 2⟨q, x⟩,
  so the order is the cosine order. Euclidean rather than inner-product lists on purpose: k-means lists
  and nearest-centroid probing are then consistent and unchanged by a common offset of the vectors,
  which keeps recall on embeddings crowded in a narrow cone (untrained or weakly trained models).
  ``nlist = 4·sqrt(N)`` lists (4 000 at 1M windows) from 10 k-means iterations on a deterministic
  sample of ``min(N, 20·nlist)`` vectors (seed 0); a query visits ``nprobe = max(16, nlist/128)`` lists
  (31 at 1M, ~0.8 % of the windows; 16 of 1 265 at 100k), at most half of them, and above 1M vectors
  N/1M times as many (at most 8x, `default_nprobe`) — chosen with benchmarks/search.py, where it gives
  recall@10 >= 0.99 after re-ranking at 1M; raise it for harder data.
  The 8-bit codes only choose the candidates:
  `Index.search` re-scores them exactly from the store, so candidates beyond the true top k absorb the
  quantisation error. ``nprobe`` can be raised per query for recall (see benchmarks/search.py).

* ``ivf`` with product-quantised codes (``code="pq<M>x<nbits>"``, `IndexIVFPQ`): for collections whose
  8-bit codes (D + 8 bytes a window with its id) would not fit a memory budget. `choose_ivfpq(N, D,
  budget)` picks the parameters the way autofaiss does (its ``get_optimal_quantization``): nlist a
  power of two near 4·sqrt(N), the *largest* PQ code size M (bytes a vector; M divides D, 8 bits a
  sub-quantiser) whose codes and ids, plus the coarse and PQ centroids, fit the budget, trained on 32
  vectors a list (at least 9 984 for the PQ codebooks). Unlike autofaiss it keeps the 4·sqrt(N) rule
  from 1M to 10M vectors (4 096 lists at 1M where autofaiss takes 16 384): k-means over 16k lists does
  not train in minutes on 2 cores, and Index.search re-ranks its candidates exactly. nprobe follows
  `default_nprobe` (no speed search against the built index, which autofaiss runs). Build with
  ``build_ann(..., memory_budget=bytes)`` (chosen only when the 8-bit codes would not fit) or
  ``kind="ivfpq"``. An IVF-PQ index is an ``ivf`` kind for every caller (same search, same parameters
  file with its ``code``), so `Index` opens it as is. Measured (benchmarks/search.py --sizes 1M --kind
  ivfpq, clustered 1M x 256, 100 noisy queries, 1 thread on 2 shared cores): a 96 MiB budget gives
  pq64x8, 4 096 lists, nprobe 32: build 195 s, 73 MiB, recall@10 0.994 after re-ranking 100
  candidates exactly (0.66 in the ANN's own order), 2.0 ms median a query; 64 MiB gives pq32x8:
  build 243 s, 42 MiB, recall@10 0.87 (100 candidates are then too few; nprobe does not help).
  `build_ann` takes a float16 store (array or memmap) as is and normalises it ADD_BLOCK rows at a time in
  float32, so a 10M x 256 store needs its 5 GB, not 15. At 3M (300 MiB: pq64x8, 8 192 lists, nprobe 64)
  build 470 s, 214 MiB, recall@10 0.955 after re-ranking 100 candidates (0.995 at nprobe 256; 400
  candidates: 0.956 — lists not probed, not the PQ order, miss). At 10M (1 GiB: pq64x8, 16 384
  lists, 2 threads, idle machine) build 716 s (train 226 + add 491), 703 MiB, recall@10 0.879 at
  nprobe 128 (the default before it grew with N), 0.919 at 256, 0.949 at 512 (48 ms a query;
  exhaustive ~470 ms); at today's default 1 024, 0.989 (59 ms a query on 1 thread, exhaustive 786 ms).
  faiss keeps a precomputed table of nlist x M x 2^nbits floats for IVF-PQ (1 GiB there), so
  `choose_ivfpq` counts it against the budget and builds the index without it when it does not fit
  (the same answers, `AnnParams.precomputed_table`); see benchmarks/search.py and docs/search-scale.md.

Both return the window *ids* of the store (``IndexIDMap2`` for flat, the IVF's own ids). The index is
rebuilt from the store at the end of `hade index` whenever the store's generation changed, and saved
under a name carrying that generation (``ann-<gen>.faiss``) with ``ann.json`` pointing to it, so a kill
mid-write never leaves a current-looking but stale ANN.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from hade.errors import InputError
from hade.index.store import ANN_JSON
from hade.utils.atomic import atomic_path, write_json_atomic

DEFAULT_THRESHOLD = 50_000
TRAIN_POINTS_PER_LIST = 20
KMEANS_ITERATIONS = 10
ADD_BLOCK = 262144  # rows normalised (as float32) and added at a time

Progress = Callable[[str, int], None]  # (stage 'train' or 'add', vectors trained on / added so far)


@dataclass
class AnnParams:
    """What an ANN index is: kind 'flat' or 'ivf', vector count and width, IVF lists and probes, and the
    IVF's codes: 'sq8' (8-bit scalar, the default; also what an ann.json without ``code`` means) or
    'pq<M>x<nbits>' (IVF-PQ)."""

    kind: str
    count: int
    dim: int
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0
    generation: int = 0
    file: str = ""
    code: str = "sq8"
    precomputed_table: bool = True  # IVF-PQ: faiss keeps its per-list distance table (built when loaded)


@dataclass(frozen=True)
class IvfPqChoice:
    """IVF-PQ parameters for N vectors of D dims: lists, PQ bytes M, bits per code, probes, training
    vectors, the estimated bytes in memory, and whether faiss's precomputed table is kept (it is
    counted in `bytes` then)."""

    nlist: int
    m: int
    nbits: int
    nprobe: int
    train: int
    bytes: int
    precomputed_table: bool = True


def default_nlist(n: int) -> int:
    """4·sqrt(N), at most N/8 so that tiny (test) collections still train."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 8))


NPROBE_SCALE_FROM = 1_000_000  # vectors; see default_nprobe
NPROBE_MAX_SCALE = 8


def default_nprobe(nlist: int, n: int = 0) -> int:
    """max(16, nlist/128) lists, times N/1M (at most 8x) above 1M vectors; at most half of the lists.

    The fraction nlist/128 was tuned at 1M (recall@10 0.994 after re-ranking); at a fixed fraction
    recall falls with N (0.955 at 3M, 0.879 at 10M, benchmarks/search.py), so larger collections probe
    a larger fraction: 3x at 3M, 8x from 8M (1 024 of 16 384 lists at 10M: recall@10 0.989)."""
    scale = min(float(NPROBE_MAX_SCALE), max(1.0, n / NPROBE_SCALE_FROM))
    return max(1, min(nlist // 2, int(round(max(16, nlist // 128) * scale))))


PQ_BYTES = (128, 96, 64, 48, 32, 24, 16, 12, 8, 4)  # code sizes tried, largest (most exact) first
ID_BYTES = 8  # an int64 id per vector in the inverted lists
PQ_TRAIN_PER_LIST = 32  # k-means sample: this many vectors a list (autofaiss: 30 to 256)
PQ_MIN_TRAIN = 256 * 39  # 8-bit PQ codebooks: faiss wants 39 points per centroid


def ivf_sq8_bytes(n: int, dim: int) -> int:
    """Estimated bytes of the default IVF (8-bit codes + ids, coarse centroids)."""
    nlist = default_nlist(n)
    return n * (dim + ID_BYTES) + nlist * dim * 4


def pq_nlist(n: int) -> int:
    """A power of two near 4·sqrt(N) (autofaiss's rule below 1M vectors), at most N/39 (training)."""
    lists = 2 ** int(round(math.log2(max(1.0, 4 * math.sqrt(max(n, 1))))))
    return max(1, min(lists, n // 39, 65536))


FAISS_TABLE_MAX_BYTES = 2 << 30  # faiss's precomputed_table_max_bytes: larger tables are never built


def precomputed_table_bytes(nlist: int, m: int, nbits: int) -> int:
    """Bytes of faiss's precomputed IVF-PQ table (L2, residual codes): nlist x M x 2^nbits float32."""
    return nlist * m * (2 ** nbits) * 4


def choose_ivfpq(n: int, dim: int, memory_budget: int, nbits: int = 8, nlist: int | None = None) -> IvfPqChoice:
    """IVF-PQ parameters for n vectors of `dim` dims within `memory_budget` bytes (codes, ids, coarse and
    PQ centroids): the largest PQ code that fits. InputError when even 4-byte codes do not fit.
    nlist: the lists (default `pq_nlist(n)`)."""
    if n <= 0 or dim <= 0:
        raise InputError(f"IVF-PQ: need vectors to index, got {n} x {dim}")
    nlist = int(nlist or pq_nlist(n))
    fixed = nlist * dim * 4
    for m in PQ_BYTES:
        if m > dim or dim % m:
            continue
        size = n * (m * nbits // 8 + ID_BYTES) + fixed + (2 ** nbits) * dim * 4
        if size <= memory_budget:
            train = min(n, max(PQ_MIN_TRAIN, PQ_TRAIN_PER_LIST * nlist))
            # faiss builds a table of nlist x M x 2^nbits floats on load (1 GiB at 10M: 16 384 lists, pq64x8)
            # to speed up probing; kept only when it fits the budget too, and within faiss's own cap
            table = precomputed_table_bytes(nlist, m, nbits)
            keep = size + table <= memory_budget and table <= FAISS_TABLE_MAX_BYTES
            return IvfPqChoice(nlist, m, nbits, default_nprobe(nlist, n), train, size + table * keep, keep)
    least = n * (4 * nbits // 8 + ID_BYTES) + fixed
    raise InputError(f"IVF-PQ: {n} vectors of {dim} dims need at least {least / 2**20:.0f} MiB; the memory budget is "
                     f"{memory_budget / 2**20:.0f} MiB")


def _unit(x: np.ndarray) -> np.ndarray:
    """[B, D] rows (any float dtype) -> [B, D] float32 unit rows; the norm is taken in float32."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def build_ann(vectors: np.ndarray, ids: np.ndarray, threshold: int = DEFAULT_THRESHOLD, nlist: int | None = None,
              nprobe: int | None = None, seed: int = 0, kind: str = "auto", memory_budget: int | None = None,
              progress: Progress | None = None) -> tuple[faiss.Index, AnnParams]:
    """vectors [N, D] float32 or float16 (unit rows; a float16 array or memmap is read ADD_BLOCK rows at a
    time, never converted whole), ids [N] int64 -> (faiss index returning ids, params).

    kind "auto": flat below `threshold`, else IVF with 8-bit codes, or IVF-PQ when those would exceed
    `memory_budget` bytes (None: no budget); "flat", "ivf" or "ivfpq" force one. `progress(stage, count)`
    is called after the IVF's training ('train', vectors trained on) and after each added block ('add',
    vectors added so far)."""
    if kind not in ("auto", "flat", "ivf", "ivfpq"):
        raise InputError(f"ANN kind must be auto, flat, ivf or ivfpq, got {kind!r}")
    vectors = np.asarray(vectors)
    if vectors.dtype not in (np.float16, np.float32):
        vectors = vectors.astype(np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, dim = vectors.shape
    if kind == "flat" or (kind == "auto" and n < max(1, threshold)) or n == 0:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        return index, AnnParams("flat", n, dim)
    if kind == "auto" and memory_budget is not None and ivf_sq8_bytes(n, dim) > memory_budget:
        kind = "ivfpq"
    if kind == "ivfpq":
        choice = choose_ivfpq(n, dim, memory_budget if memory_budget is not None else 1 << 62, nlist=nlist)
        nlist, table = choice.nlist, choice.precomputed_table
        index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, nlist, choice.m, choice.nbits, faiss.METRIC_L2)
        if not table:
            index.use_precomputed_table = -1  # never built (see choose_ivfpq)
        sample, code = choice.train, f"pq{choice.m}x{choice.nbits}"
    else:
        nlist = int(nlist or default_nlist(n))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_L2)
        sample, code, table = min(n, TRAIN_POINTS_PER_LIST * nlist), "sq8", True
    nprobe = int(nprobe or default_nprobe(nlist, n))
    _train_and_add(index, vectors, ids, sample, seed, progress)
    index.nprobe = nprobe
    return index, AnnParams("ivf", n, dim, nlist=nlist, nprobe=nprobe, trained_on=sample, code=code,
                            precomputed_table=table)


def _train_and_add(index: faiss.IndexIVF, vectors: np.ndarray, ids: np.ndarray, sample: int, seed: int,
                   progress: Progress | None = None) -> None:
    """Train the IVF's lists (and codes) on `sample` deterministic rows, then add every row normalised."""
    n = len(vectors)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = 1234 + seed
    index.cp.min_points_per_centroid = 1  # small samples are deliberate (no faiss warning)
    rng = np.random.default_rng(seed)
    train = vectors if sample >= n else vectors[np.sort(rng.choice(n, sample, replace=False))]
    index.train(_unit(train))
    del train
    if progress:
        progress("train", min(sample, n))
    for a in range(0, n, ADD_BLOCK):  # normalise block by block (no second full copy)
        index.add_with_ids(_unit(vectors[a:a + ADD_BLOCK]), ids[a:a + ADD_BLOCK])
        if progress:
            progress("add", min(n, a + ADD_BLOCK))


def ann_search(index: faiss.Index, params: AnnParams, queries: np.ndarray, k: int,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """queries [Q, D] -> (scores [Q, k'], ids [Q, k']) best first; k' = min(k, count); id -1 = none."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), max(params.count, 1)))
    if params.count == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if params.kind == "ivf":
        probe = faiss.SearchParametersIVF(nprobe=int(nprobe or params.nprobe))  # per call: thread-safe
        dist, ids = index.search(_unit(queries), k, params=probe)
        return 1.0 - dist / 2.0, ids  # squared distance of unit vectors -> cosine
    return index.search(queries, k)


def save_ann(index_dir: str | Path, index: faiss.Index, params: AnnParams, generation: int) -> None:
    """Write ``ann-<generation>.faiss`` then ``ann.json`` (both atomically); delete older ANN files."""
    index_dir = Path(index_dir)
    params.generation = int(generation)
    params.file = f"ann-{generation}.faiss"
    with atomic_path(index_dir / params.file) as tmp:
        faiss.write_index(index, str(tmp))
    write_json_atomic(index_dir / ANN_JSON, asdict(params))
    for old in index_dir.glob("ann-*.faiss"):
        if old.name != params.file:
            old.unlink(missing_ok=True)


def read_ann_params(index_dir: str | Path) -> AnnParams | None:
    """The parameters in ``ann.json``, or None when it is missing or unreadable."""
    file = Path(index_dir) / ANN_JSON
    if not file.is_file():
        return None
    try:
        return AnnParams(**json.loads(file.read_text()))
    except (ValueError, TypeError):
        return None


def load_ann(index_dir: str | Path, params: AnnParams) -> faiss.Index:
    """The faiss index ``params.file`` of `index_dir`, with the IVF's default nprobe set (and, for an
    IVF-PQ chosen without it, faiss's precomputed table not built)."""
    without_table = params.code.startswith("pq") and not params.precomputed_table
    index = faiss.read_index(str(Path(index_dir) / params.file),
                             faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE if without_table else 0)
    if without_table:
        index.use_precomputed_table = -1
    if params.kind == "ivf":
        index.nprobe = params.nprobe
    return index
