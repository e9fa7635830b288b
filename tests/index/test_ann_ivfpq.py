"""IVF-PQ: parameters chosen from the vector count and a memory budget; recall after exact re-ranking."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from hade.errors import InputError
from hade.index.ann import (ann_search, build_ann, choose_ivfpq, ivf_sq8_bytes, load_ann, pq_nlist, read_ann_params,
                            save_ann)

from .test_ann import clustered


def test_choice_follows_count_and_budget():
    assert pq_nlist(1_000_000) == 4096 and pq_nlist(100_000) == 1024 and pq_nlist(1000) == 25  # N/39 caps it
    big = choose_ivfpq(10_000_000, 256, 2**30)  # 1 GiB for 10M x 256: 128-byte codes do not fit, 96 do not divide
    assert (big.nlist, big.m, big.nbits) == (16384, 64, 8) and big.bytes <= 2**30
    small = choose_ivfpq(10_000_000, 256, 300 * 2**20)
    assert small.m == 16 and small.bytes <= 300 * 2**20 < 10_000_000 * (24 + 8)  # the next size up does not fit
    assert small.train == 32 * small.nlist and small.nprobe == 1024  # 16384 lists / 128, x8 at 10M
    # faiss's precomputed table (16384 x 64 x 256 floats = 1 GiB) does not fit beside the codes: not kept
    assert not big.precomputed_table and big.bytes == 10_000_000 * (64 + 8) + 16384 * 256 * 4 + 256 * 256 * 4
    assert not small.precomputed_table
    roomy = choose_ivfpq(20_000, 64, 2**30)
    assert (roomy.nlist, roomy.m, roomy.train) == (512, 64, 16_384)
    assert roomy.precomputed_table and roomy.bytes >= 512 * 64 * 256 * 4  # counted when kept
    assert choose_ivfpq(3_000_000, 256, 2**30).nprobe == 64 * 3 and choose_ivfpq(1_000_000, 256, 2**30).nprobe == 32
    with pytest.raises(InputError, match="memory budget"):
        choose_ivfpq(10_000_000, 256, 64 * 2**20)


def test_auto_switches_to_pq_over_budget_and_recalls_after_rerank(tmp_path):
    x = clustered(20_000)
    ids = np.arange(20_000, dtype=np.int64) + 100
    budget = 700_000  # 8-bit IVF: 1.4 MB; PQ16: 20k x (16 + 8) + centroids = 677 kB fits, PQ24 would not
    assert ivf_sq8_bytes(20_000, 64) > budget
    index, params = build_ann(x, ids, threshold=5000, memory_budget=budget)
    assert params.kind == "ivf" and params.code == "pq16x8" and params.nlist == pq_nlist(20_000)
    rng = np.random.default_rng(1)
    q = x[rng.choice(20_000, 50, replace=False)] + rng.standard_normal((50, 64)).astype(np.float32) * 0.1
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10] + 100
    scores, cand = ann_search(index, params, q, 100)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first, as cosines
    recall = []
    for i in range(50):
        c = cand[i][cand[i] >= 0]
        top = c[np.argsort(-(x[c - 100] @ q[i]))[:10]]  # exact re-rank, as Index.search does
        recall.append(len(set(top) & set(exact[i])) / 10)
    assert np.mean(recall) >= 0.95, np.mean(recall)
    assert not params.precomputed_table and index.use_precomputed_table == -1 and index.precomputed_table.size() == 0
    save_ann(tmp_path, index, params, generation=3)
    again = read_ann_params(tmp_path)
    assert again.code == "pq16x8" and not again.precomputed_table
    loaded = load_ann(tmp_path, again)
    assert loaded.precomputed_table.size() == 0  # not rebuilt on load either
    np.testing.assert_array_equal(ann_search(loaded, again, q, 100)[1], cand)
    with_table = faiss.read_index(str(tmp_path / again.file))  # faiss's own default: the table is built
    with_table.nprobe = again.nprobe
    assert with_table.precomputed_table.size() > 0
    np.testing.assert_array_equal(ann_search(with_table, again, q, 100)[1], cand)  # same answers without it
    assert choose_ivfpq(20_000, 64, 10**8).precomputed_table
    assert build_ann(x[:6000], ids[:6000], kind="ivfpq")[1].precomputed_table  # no budget: faiss's default


def test_old_params_mean_sq8_and_unknown_kind_is_refused(tmp_path):
    (tmp_path / "ann.json").write_text('{"kind": "ivf", "count": 10, "dim": 4, "nlist": 2, "nprobe": 1}')
    assert read_ann_params(tmp_path).code == "sq8"
    with pytest.raises(InputError, match="ivfpq"):
        build_ann(np.zeros((4, 4), np.float32), np.arange(4), kind="hnsw")
