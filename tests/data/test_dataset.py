from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from hade.data.dataset import (
    ClipAudioStore,
    PairBatchSampler,
    TrainPairs,
    captions_with_clip_index,
    collate,
    epoch_batches,
)
from hade.data.readers import read_split
from hade.data.types import Clip, SplitData
from hade.errors import AudioError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def noise_split(tmp_path: Path, lengths=(4000, 3000, 1000), captions_per_clip=(2, 1, 3), sr=16000) -> SplitData:
    rng = np.random.default_rng(0)
    clips = []
    for i, (n, k) in enumerate(zip(lengths, captions_per_clip)):
        path = tmp_path / f"c{i}.wav"
        sf.write(str(path), (0.1 * rng.standard_normal(n)).astype(np.float32), sr, subtype="FLOAT")
        clips.append(Clip(f"c{i}", path, tuple(f"clip {i} caption {j}" for j in range(k))))
    return SplitData("train", clips)


def test_store_loads_and_caches(tmp_path):
    split = noise_split(tmp_path)
    store = ClipAudioStore(split, sample_rate=8000)
    assert store.cache is True  # tiny set: cached by default
    w = store.get(0)
    assert w.dtype == np.float32 and w.shape == (2000,)  # 16 kHz -> 8 kHz
    assert store.get(0) is w
    nocache = ClipAudioStore(split, 16000, cache=False)
    assert nocache.get(1).shape == (3000,) and nocache.get(1) is not nocache.get(1)
    assert ClipAudioStore(split, 16000, cache=None, cache_limit_bytes=100).cache is False


def test_store_validate_drops_bad_clips(tmp_path):
    split = noise_split(tmp_path, lengths=(4000, 3000, 1000, 500), captions_per_clip=(1, 1, 1, 1))
    nan = np.zeros(500, np.float32)
    nan[3] = np.nan
    sf.write(str(split.clips[1].audio_path), nan, 16000, subtype="FLOAT")
    split.clips[3].audio_path.write_bytes(b"\x00\x01garbage" * 50)
    store = ClipAudioStore(split, 16000, cache=True)
    with pytest.raises(AudioError, match="non-finite"):
        store.get(1)
    problems = store.validate(progress=False)
    assert [p.source for p in problems] == [str(split.clips[1].audio_path), str(split.clips[3].audio_path)]
    assert "non-finite" in problems[0].reason and "corrupt" in problems[1].reason
    assert [c.clip_id for c in store.clips] == ["c0", "c2"]  # nothing else lost
    assert store.split.problems[-2:] == problems
    assert len(split.clips) == 4 and split.problems == []  # caller's split untouched
    assert store.get(1).shape == (1000,)  # cache re-indexed
    assert ClipAudioStore(store.split, 16000, cache=False).validate(progress=False) == []


def test_train_pairs_deterministic_crops(tmp_path):
    store = ClipAudioStore(noise_split(tmp_path), 16000)
    ds = TrainPairs(store, clip_samples=2000, seed=7)
    assert len(ds) == 6
    assert ds.pair_clip_index.tolist() == [0, 0, 1, 2, 2, 2]
    item = ds[0]
    assert item["audio"].dtype == torch.float32 and item["audio"].shape == (2000,)
    assert item["caption"] == "clip 0 caption 0" and item["clip_index"] == 0
    assert ds[5]["caption"] == "clip 2 caption 2"
    # shorter clip: zero-padded on the right
    short = ds[3]["audio"]
    assert torch.equal(short[1000:], torch.zeros(1000)) and short[:1000].abs().sum() > 0

    again = TrainPairs(ClipAudioStore(noise_split(tmp_path), 16000), clip_samples=2000, seed=7)
    for i in range(len(ds)):
        assert torch.equal(ds[i]["audio"], again[i]["audio"])  # same (seed, epoch, i)
    crop_e0 = ds[0]["audio"]
    assert torch.equal(ds[0]["audio"], crop_e0)
    ds.set_epoch(1)
    ds.set_epoch(0)
    assert torch.equal(ds[0]["audio"], crop_e0)  # resumable: epoch 0 again gives the same crop
    other_seed = TrainPairs(store, clip_samples=2000, seed=8)
    full = store.get(0)
    offsets = set()
    for d, e in ((ds, 0), (ds, 1), (ds, 2), (other_seed, 0)):
        d.set_epoch(e)
        a = d[0]["audio"].numpy()
        offsets.add(int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(full, 2000) == a, axis=1))[0]))
    assert len(offsets) >= 3  # different epochs/seeds give different crops


def test_captions_with_clip_index(tmp_path):
    split = noise_split(tmp_path)
    store = ClipAudioStore(split, 16000)
    caps, idx = captions_with_clip_index(split)
    assert caps == ["clip 0 caption 0", "clip 0 caption 1", "clip 1 caption 0",
                    "clip 2 caption 0", "clip 2 caption 1", "clip 2 caption 2"]
    assert idx.dtype == np.int64 and idx.tolist() == [0, 0, 1, 2, 2, 2]
    assert captions_with_clip_index(store)[1].tolist() == idx.tolist()


def test_collate(tmp_path):
    store = ClipAudioStore(noise_split(tmp_path), 16000)
    ds = TrainPairs(store, clip_samples=1500)
    batch = collate([ds[i] for i in range(4)])
    assert batch["audio"].shape == (4, 1500) and batch["audio"].dtype == torch.float32
    assert batch["caption"] == [ds[i]["caption"] for i in range(4)]
    assert batch["clip_index"].dtype == torch.long and batch["clip_index"].tolist() == [0, 0, 1, 2]
    assert batch["audio_samples"].tolist() == [1500, 1500, 1500, 1000]  # audio before zero padding (4000/3000/1000)
    items = [{"audio": torch.from_numpy(store.get(i).copy()), "clip_index": i, "clip_id": f"c{i}"} for i in range(3)]
    full = collate(items)  # variable lengths: padded + lengths
    assert full["audio"].shape == (3, 4000) and full["audio_lengths"].tolist() == [4000, 3000, 1000]
    assert torch.equal(full["audio"][2, 1000:], torch.zeros(3000))
    assert full["clip_id"] == ["c0", "c1", "c2"]


def test_dataloader_on_fixture():
    split = read_split(FIXTURES / "clotho", "development")
    store = ClipAudioStore(split, 16000)
    assert store.validate(progress=False) == []
    pairs = TrainPairs(store, clip_samples=4000, seed=1)
    sampler = PairBatchSampler(pairs.pair_clip_index, batch_size=3, seed=1)
    batches = list(DataLoader(pairs, batch_sampler=sampler, collate_fn=collate))
    assert len(batches) == len(sampler) == 5
    for b in batches:
        assert b["audio"].shape == (3, 4000)
        assert len(set(b["clip_index"].tolist())) == 3  # no clip twice in a batch


def _clip_index(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_epoch_batches_distinct_clips_and_deterministic():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 6, size=60)
    clip_of = _clip_index(counts)
    n = len(clip_of)
    batches = epoch_batches(n, clip_of, batch_size=16, seed=3, epoch=0)
    assert len(batches) == n // 16
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) and all(0 <= i < n for i in flat)
    for b in batches:
        assert len(b) == 16
        assert len(set(clip_of[b].tolist())) == 16
    assert epoch_batches(n, clip_of, 16, seed=3, epoch=0) == batches
    assert epoch_batches(n, clip_of, 16, seed=3, epoch=1) != batches
    assert epoch_batches(n, clip_of, 16, seed=4, epoch=0) != batches
    assert epoch_batches(n, clip_of, 16, seed=3, epoch=0, start_step=2) == batches[2:]


def test_epoch_batches_skewed_counts_still_distinct():
    # one clip with many captions: the greedy spreads it over batches instead of leaving it for last
    clip_of = _clip_index([8] + [1] * 24)
    batches = epoch_batches(len(clip_of), clip_of, batch_size=4, seed=0, epoch=0)
    assert len(batches) == 8
    assert all(len(set(clip_of[b].tolist())) == 4 for b in batches)
    assert Counter(int(clip_of[i]) for b in batches for i in b)[0] == 8


def test_epoch_batches_too_few_clips_allows_duplicates():
    clip_of = _clip_index([5, 5])
    batches = epoch_batches(10, clip_of, batch_size=4, seed=0, epoch=0)
    assert len(batches) == 2
    for b in batches:
        assert Counter(clip_of[b].tolist()) == Counter({0: 2, 1: 2})


def test_pair_batch_sampler_resume():
    clip_of = _clip_index([2] * 20)
    sampler = PairBatchSampler(clip_of, batch_size=5, seed=9)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_step=3)
    assert len(sampler) == len(full) - 3 and list(sampler) == full[3:]
