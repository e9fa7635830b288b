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
  (31 at 1M, ~0.8 % of the windows; 16 of 1 265 at 100k), at most half of them — chosen with
  benchmarks/search.py, where it gives recall@10 >= 0.99 after re-ranking; raise it for harder data.
  The 8-bit codes only choose the candidates:
  `Index.search` re-scores them exactly from the store, so candidates beyond the true top k absorb the
  quantisation error. ``nprobe`` can be raised per query for recall (see benchmarks/search.py).

Both return the window *ids* of the store (``IndexIDMap2`` for flat, the IVF's own ids). The index is
rebuilt from the store at the end of `hade index` whenever the store's generation changed, and saved
under a name carrying that generation (``ann-<gen>.faiss``) with ``ann.json`` pointing to it, so a kill
mid-write never leaves a current-looking but stale ANN.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from hade.index.store import ANN_JSON
from hade.utils.atomic import atomic_path, write_json_atomic

DEFAULT_THRESHOLD = 50_000
TRAIN_POINTS_PER_LIST = 20
KMEANS_ITERATIONS = 10


@dataclass
class AnnParams:
    """What an ANN index is: kind 'flat' or 'ivf', vector count and width, IVF lists and probes."""

    kind: str
    count: int
    dim: int
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0
    generation: int = 0
    file: str = ""


def default_nlist(n: int) -> int:
    """4·sqrt(N), at most N/8 so that tiny (test) collections still train."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 8))


def default_nprobe(nlist: int) -> int:
    """max(16, nlist/128), but at most half of the lists."""
    return max(1, min(nlist // 2, max(16, nlist // 128)))


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def build_ann(vectors: np.ndarray, ids: np.ndarray, threshold: int = DEFAULT_THRESHOLD, nlist: int | None = None,
              nprobe: int | None = None, seed: int = 0) -> tuple[faiss.Index, AnnParams]:
    """vectors [N, D] float32 (unit rows), ids [N] int64 -> (faiss index returning ids, params)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, dim = vectors.shape
    if n < max(1, threshold):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(vectors, ids)
        return index, AnnParams("flat", n, dim)
    nlist = int(nlist or default_nlist(n))
    nprobe = int(nprobe or default_nprobe(nlist))
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = 1234 + seed
    index.cp.min_points_per_centroid = 1  # small samples are deliberate (no faiss warning)
    sample = min(n, TRAIN_POINTS_PER_LIST * nlist)
    rng = np.random.default_rng(seed)
    train = vectors if sample == n else vectors[np.sort(rng.choice(n, sample, replace=False))]
    index.train(_unit(train))
    for a in range(0, n, 262144):  # normalise block by block (no second full copy)
        index.add_with_ids(_unit(vectors[a:a + 262144]), ids[a:a + 262144])
    index.nprobe = nprobe
    return index, AnnParams("ivf", n, dim, nlist=nlist, nprobe=nprobe, trained_on=sample)


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
    file = Path(index_dir) / ANN_JSON
    if not file.is_file():
        return None
    try:
        return AnnParams(**json.loads(file.read_text()))
    except (ValueError, TypeError):
        return None


def load_ann(index_dir: str | Path, params: AnnParams) -> faiss.Index:
    index = faiss.read_index(str(Path(index_dir) / params.file))
    if params.kind == "ivf":
        index.nprobe = params.nprobe
    return index
