"""build_ann from float16 stores read block by block (no float32 copy): the same index as from float32, and a
progress report of training then blocks added."""
from __future__ import annotations

import numpy as np
import pytest

from hade.index import ann
from hade.index.ann import ann_search, build_ann

from .test_ann import clustered


@pytest.mark.parametrize("kind, budget", [("flat", None), ("ivf", None), ("ivfpq", 700_000)])
def test_float16_store_builds_the_index_its_float32_copy_builds(kind, budget):
    x16 = clustered(20_000).astype(np.float16)
    ids = np.arange(20_000, dtype=np.int64) * 2 + 1
    index16, params16 = build_ann(x16, ids, threshold=5000, kind=kind, memory_budget=budget)
    index32, params32 = build_ann(x16.astype(np.float32), ids, threshold=5000, kind=kind, memory_budget=budget)
    assert params16 == params32
    q = x16[:20].astype(np.float32) + 0.01
    s16, i16 = ann_search(index16, params16, q, 10)
    s32, i32 = ann_search(index32, params32, q, 10)
    np.testing.assert_array_equal(i16, i32)
    np.testing.assert_array_equal(s16, s32)


def test_memmapped_float16_rows_are_added_in_blocks_with_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "ADD_BLOCK", 3000)
    x = clustered(10_000)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    seen = []
    index, params = build_ann(mm, np.arange(10_000), threshold=5000, kind="ivfpq",
                              progress=lambda stage, count: seen.append((stage, count)))
    assert seen == [("train", params.trained_on), ("add", 3000), ("add", 6000), ("add", 9000), ("add", 10_000)]
    assert index.ntotal == 10_000 and params.code.startswith("pq")
    _, got = ann_search(index, params, x[:5], 1, nprobe=params.nlist)  # every list visited: a row finds itself
    assert got[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_float64_and_flat_builds_report_no_progress():
    seen = []
    x = clustered(1000).astype(np.float64)
    index, params = build_ann(x, np.arange(1000), progress=lambda *a: seen.append(a))
    assert params.kind == "flat" and index.ntotal == 1000 and seen == []
    np.testing.assert_array_equal(ann_search(index, params, x[:3], 1)[1][:, 0], [0, 1, 2])


def test_pooled_vectors_spill_to_a_staging_file_that_is_removed(dp_index, tmp_path):
    import shutil

    from hade.index.finalize import POOLED_STAGING, pooled_vectors
    from hade.index.store import Store

    shutil.copytree(dp_index[0], tmp_path / "dp.idx")
    store = Store(tmp_path / "dp.idx")
    try:
        with pooled_vectors(store) as (ids, in_memory):
            assert not isinstance(in_memory, np.memmap) and in_memory.dtype == np.float16  # the store's dtype
            ids, in_memory = ids.copy(), np.array(in_memory)
        staging = store.arrays_dir / POOLED_STAGING
        with pooled_vectors(store, block=7, in_memory_bytes=0) as (ids2, spilled):
            assert isinstance(spilled, np.memmap) and staging.is_file()
            np.testing.assert_array_equal(ids2, ids)
            np.testing.assert_array_equal(np.asarray(spilled), in_memory)
        assert not staging.exists()
        staging.write_bytes(b"left by a killed build")
        store.cleanup()
        assert not staging.exists()
    finally:
        store.close()
