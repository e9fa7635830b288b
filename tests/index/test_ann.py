"""The ANN layer on synthetic clustered embeddings: flat is exact, IVF + exact re-rank recalls the top 10."""
from __future__ import annotations

import numpy as np

from hade.index.ann import ann_search, build_ann, load_ann, read_ann_params, save_ann


def clustered(n: int, dim: int = 64, clusters: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] / np.sqrt(dim) + rng.standard_normal((n, dim)).astype(np.float32) * 0.08
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_is_exact_and_returns_store_ids(tmp_path):
    x = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) * 3 + 7
    index, params = build_ann(x, ids, threshold=5000)
    assert params.kind == "flat" and params.count == 2000
    q = x[:5] + 0.01
    scores, got = ann_search(index, params, q, 10)
    expect = np.argsort(-(q @ x.T), axis=1)[:, :10]
    np.testing.assert_array_equal(got, ids[expect])
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, expect, 1), rtol=1e-5)
    save_ann(tmp_path, index, params, generation=4)
    params2 = read_ann_params(tmp_path)
    assert params2.generation == 4 and params2.file == "ann-4.faiss"
    np.testing.assert_array_equal(ann_search(load_ann(tmp_path, params2), params2, q, 10)[1], got)
    save_ann(tmp_path, index, params, generation=5)
    assert sorted(p.name for p in tmp_path.glob("ann-*")) == ["ann-5.faiss"]


def test_ivf_with_exact_rerank_recalls_the_top_ten():
    x = clustered(20_000)
    index, params = build_ann(x, np.arange(20_000, dtype=np.int64), threshold=5000)
    assert params.kind == "ivf" and params.nlist > 100 and params.nprobe < params.nlist // 4
    rng = np.random.default_rng(1)
    q = x[rng.choice(20_000, 50, replace=False)] + rng.standard_normal((50, 64)).astype(np.float32) * 0.1
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    _, cand = ann_search(index, params, q, 100)
    recall = []
    for i in range(50):
        c = cand[i][cand[i] >= 0]
        top = c[np.argsort(-(x[c] @ q[i]))[:10]]  # exact re-rank of the candidates
        recall.append(len(set(top) & set(exact[i])) / 10)
    assert np.mean(recall) >= 0.95, np.mean(recall)


def test_empty_index_searches_to_nothing():
    index, params = build_ann(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    scores, ids = ann_search(index, params, np.ones((2, 8), np.float32), 10)
    assert ids.shape == (2, 0) and scores.shape == (2, 0)
