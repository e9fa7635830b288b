"""Streaming input: identical batches whatever the workers, rank slices, bounded cache, bad clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hade.data.dataset as dataset_mod
from hade.data.dataset import ClipAudioStore, TrainPairs, epoch_batches
from hade.data.loader import StepBatchSampler, default_num_workers, step_groups, train_loader
from hade.data.types import Clip, SplitData
from hade.errors import AudioError, InputError
from hade.train import distributed as ddp


def make_split(tmp_path: Path, clips: int = 12, sr: int = 8000, nan_clip: int | None = None) -> SplitData:
    """Clips of different lengths (some shorter than the crop: padded), 1-3 captions each."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(clips):
        wave = (0.1 * rng.standard_normal(1500 + 400 * (i % 5))).astype(np.float32)
        if i == nan_clip:
            wave[7] = np.nan  # the header is fine, decoding fails: only a worker finds out
        path = tmp_path / f"c{i}.wav"
        sf.write(str(path), wave, sr, subtype="FLOAT")
        out.append(Clip(f"c{i}", path, tuple(f"clip {i} caption {j}" for j in range(1 + i % 3))))
    return SplitData("train", out)


def run_epochs(pairs: TrainPairs, workers: int, epochs=(0, 1), start_step: int = 0, **sampler_kw) -> list[dict]:
    sampler = StepBatchSampler(pairs.pair_clip_index, batch_size=4, seed=3, **sampler_kw)
    loader = train_loader(pairs, sampler, workers, seed=3, prefetch_factor=2)
    batches = []
    for epoch in epochs:  # persistent workers: the epoch must reach them through the keys
        sampler.set_epoch(epoch, start_step if epoch == epochs[0] else 0)
        batches += list(loader)
    return batches


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["clip_index"], y["clip_index"])
        assert x["caption"] == y["caption"] and x.get("problem") == y.get("problem")
        assert x["audio"].dtype == torch.float32 and torch.equal(x["audio"], y["audio"])  # bit for bit


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_batches_identical_with_any_number_of_workers(tmp_path, workers):
    pairs = TrainPairs(ClipAudioStore(make_split(tmp_path), 8000, cache=False), clip_samples=2000, seed=3)
    reference = run_epochs(pairs, 0)
    assert_same_batches(run_epochs(pairs, workers), reference)
    assert not torch.equal(reference[0]["audio"], run_epochs(pairs, 0, epochs=(1,))[0]["audio"])  # epoch matters
    steps = len(pairs) // 4
    assert_same_batches(run_epochs(pairs, workers, start_step=2), reference[2:steps] + reference[steps:])  # resume
    expected = epoch_batches(len(pairs), pairs.pair_clip_index, 4, seed=3, epoch=0)
    assert [b["index"].tolist() for b in reference[:steps]] == expected


def test_rank_slices_follow_the_distributed_layout(tmp_path):
    """Each rank's loader yields exactly ddp.local_slice of each micro-batch, and decodes only those clips."""
    pairs_index = np.repeat(np.arange(30), 2)
    whole = epoch_batches(len(pairs_index), pairs_index, 8, seed=1, epoch=2)
    for rank in (0, 1):
        ctx = ddp.DistContext(rank=rank, world_size=2)
        sampler = StepBatchSampler(pairs_index, 8, seed=1, rank=rank, world_size=2, accum_steps=2)
        sampler.set_epoch(2, start_step=1)
        got = [[i for _, i in keys] for keys in sampler]
        assert len(got) == len(sampler) == 2 * (len(whole) - 1)
        assert got == [ddp.local_slice(part, ctx) for batch in whole[1:] for part in ddp.micro_batches(batch, 2)]
    store = ClipAudioStore(make_split(tmp_path), 8000, cache=False)
    pairs = TrainPairs(store, clip_samples=2000, seed=3)
    batches = run_epochs(pairs, 0, epochs=(0,), rank=1, world_size=2)
    mine = {int(c) for b in batches for c in b["clip_index"]}
    assert all(b["audio"].shape[0] == 2 for b in batches)
    assert store.decode_count == sum(len(b["index"]) for b in batches) and len(mine) < len(store)


def test_sampler_and_loader_reject_bad_settings(tmp_path):
    with pytest.raises(InputError, match="multiple of processes x grad_accum_steps"):
        StepBatchSampler(np.arange(10), 6, world_size=4)
    pairs = TrainPairs(ClipAudioStore(make_split(tmp_path, clips=3), 8000), clip_samples=100)
    with pytest.raises(InputError, match="num_workers"):
        train_loader(pairs, StepBatchSampler(pairs.pair_clip_index, 2), -1, seed=0)
    assert 0 <= default_num_workers() <= 4 and default_num_workers(10_000) == 0
    assert list(step_groups(range(5), 2)) == [[0, 1], [2, 3]]


def test_store_cache_never_exceeds_its_byte_limit(tmp_path):
    split = make_split(tmp_path, clips=10)
    limit = 3 * 2000 * 4  # room for about three decoded clips
    store = ClipAudioStore(split, 8000, max_cache_bytes=limit)
    for i in [0, 1, 2, 3, 4, 0, 9, 8, 7, 6, 5, 5, 5, 1]:
        store.get(i)
        assert store.cached_bytes == sum(w.nbytes for w in store._waves.values()) <= limit
    assert 0 < len(store._waves) < len(split.clips)
    decodes = store.decode_count
    assert store.get(5) is store.get(5) and store.decode_count == decodes  # recently used: a hit
    off = ClipAudioStore(split, 8000, max_cache_bytes=0)
    off.get(0), off.get(0)
    assert off.cache is False and off.cached_bytes == 0 and off.decode_count == 2
    with pytest.raises(InputError, match="max_cache_bytes"):
        ClipAudioStore(split, 8000, max_cache_bytes=-1)


def test_check_headers_is_cheap_and_drops_only_unreadable_headers(tmp_path, monkeypatch):
    split = make_split(tmp_path, clips=5, nan_clip=1)
    split.clips[3].audio_path.write_bytes(b"\x00\x01garbage" * 50)
    decoded = []
    monkeypatch.setattr(dataset_mod, "load_audio", lambda *a: decoded.append(a) or np.zeros(10, np.float32))
    store = ClipAudioStore(split, 8000, max_cache_bytes=1 << 20)
    problems = store.check_headers(progress=False)
    assert decoded == []  # headers only: nothing decoded up front
    assert [p.source for p in problems] == [str(split.clips[3].audio_path)] and "corrupt" in problems[0].reason
    assert [c.clip_id for c in store.clips] == ["c0", "c1", "c2", "c4"] and store.split.problems == problems


@pytest.mark.parametrize("workers", [0, 2])
def test_clip_failing_in_a_worker_is_replaced_by_the_next_pair_and_reported(tmp_path, workers):
    split = make_split(tmp_path, clips=8, nan_clip=2)
    store = ClipAudioStore(split, 8000, cache=False)
    assert store.check_headers(progress=False) == []  # the NaN clip's header is fine
    pairs = TrainPairs(store, clip_samples=2000, seed=3, replace_bad=True)
    bad_pairs = np.flatnonzero(pairs.pair_clip_index == 2).tolist()
    after = max(bad_pairs) + 1  # the next pair in pair order whose clip decodes
    item = pairs[(0, bad_pairs[0])]
    assert item["index"] == after and item["clip_index"] == 3
    assert "c2.wav" in item["problem"] and "non-finite" in item["problem"]
    assert torch.equal(item["audio"], pairs[(0, after)]["audio"])  # the replacement's own crop
    assert pairs[(0, after)]["problem"] is None
    batches = run_epochs(pairs, workers, epochs=(0,))
    reported = {p for b in batches for p in b["problem"] if p}
    assert len(reported) == 1 and "c2.wav" in reported.pop()
    assert all(2 not in b["clip_index"].tolist() and len(b["index"]) == 4 for b in batches)  # sizes kept
    assert_same_batches(batches, run_epochs(TrainPairs(store, 2000, seed=3, replace_bad=True), 0, epochs=(0,)))
    with pytest.raises(AudioError, match="non-finite"):
        TrainPairs(store, clip_samples=2000, seed=3)[bad_pairs[0]]  # without replace_bad: raised as before
