"""Torch datasets over a SplitData: decoded-audio store, training pairs, evaluation clips, batching.

Typical training use (streaming: nothing decoded up front; see hade.data.loader)::

    store = ClipAudioStore(split, sample_rate=32000, max_cache_bytes=256 * 2**20)  # bounded LRU per process
    problems = store.check_headers()       # headers only; drops unreadable files (reported)
    pairs = TrainPairs(store, clip_samples=320000, seed=0, replace_bad=True)
    sampler = StepBatchSampler(pairs.pair_clip_index, batch_size=64, seed=0)
    loader = train_loader(pairs, sampler, num_workers=4, seed=0)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch, start_step=step if epoch == start_epoch else 0)
        for batch in loader: ...

``store.validate()`` (decode every clip once, drop the failures) remains for small sets. Build datasets
*after* ``check_headers``/``validate`` (they may drop clips and so renumber them).
"""
from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from hade.data.audio import AudioInfo, audio_info, audio_problem, fit_length, load_audio
from hade.data.types import Problem, SplitData
from hade.errors import AudioError, InputError

DEFAULT_CACHE_LIMIT_BYTES = 2 * 1024**3
_CROP_TAG = 1
_BATCH_TAG = 2


def _check_seed(seed: int, epoch: int) -> None:
    for name, v in (("seed", seed), ("epoch", epoch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be a non-negative integer, got {v!r}")


class ClipAudioStore:
    """Decoded (mono, resampled float32) waveforms of a split's clips, optionally cached in memory.

    cache: True keeps every decoded waveform; False decodes on each access; None (default) caches
    when the estimated decoded size (from the audio headers) is at most ``cache_limit_bytes``.
    max_cache_bytes: a bounded least-recently-used cache instead (overrides ``cache``): decoded
    waveforms are kept while their total size stays within this many bytes, so memory is bounded
    whatever the split's size. The cache is per process: each DataLoader worker holds its own.
    The store holds its own copy of the split (``store.split``): ``validate`` and ``check_headers``
    remove bad clips from it and append their Problems, leaving the caller's SplitData untouched.
    ``decode_count`` counts decodes in this process (tests and benchmarks read it).
    """

    def __init__(
        self,
        split: SplitData,
        sample_rate: int,
        cache: bool | None = None,
        cache_limit_bytes: int = DEFAULT_CACHE_LIMIT_BYTES,
        max_cache_bytes: int | None = None,
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise InputError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
        if max_cache_bytes is not None and (isinstance(max_cache_bytes, bool) or max_cache_bytes < 0):
            raise InputError(f"max_cache_bytes must be a non-negative integer (bytes), got {max_cache_bytes!r}")
        self.split = SplitData(name=split.name, clips=list(split.clips), problems=list(split.problems))
        self.sample_rate = int(sample_rate)
        if max_cache_bytes is not None:
            self.cache, self.max_cache_bytes = max_cache_bytes > 0, int(max_cache_bytes)
        else:
            self.cache = self._auto_cache(cache_limit_bytes) if cache is None else bool(cache)
            self.max_cache_bytes = None
        self._waves: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cached_bytes = 0
        self.decode_count = 0

    def _auto_cache(self, limit: int) -> bool:
        total = 0
        for clip in self.split.clips:
            try:
                info: AudioInfo = audio_info(clip.audio_path)
            except AudioError:
                continue
            total += info.num_samples_at(self.sample_rate) * 4
            if total > limit:
                return False
        return True

    @property
    def clips(self):
        return self.split.clips

    def __len__(self) -> int:
        return len(self.split.clips)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get(index)

    def get(self, index: int) -> np.ndarray:
        """Waveform [T] of clip ``index`` (AudioError naming the file if it cannot be decoded)."""
        wave = self._waves.get(index)
        if wave is not None:
            self._waves.move_to_end(index)
            return wave
        wave = load_audio(self.split.clips[index].audio_path, self.sample_rate)
        self.decode_count += 1
        if self.cache:
            self._remember(index, wave)
        return wave

    def _remember(self, index: int, wave: np.ndarray) -> None:
        """Cache ``wave``, evicting the least recently used waveforms to stay within ``max_cache_bytes``."""
        limit = self.max_cache_bytes
        if limit is not None and wave.nbytes > limit:
            return
        self._waves[index] = wave
        self.cached_bytes += wave.nbytes
        while limit is not None and self.cached_bytes > limit:
            _, old = self._waves.popitem(last=False)
            self.cached_bytes -= old.nbytes

    def _drop(self, keep: list[int], problems: list[Problem]) -> None:
        if problems:
            self.split.clips = [self.split.clips[i] for i in keep]
            self.split.problems.extend(problems)

    def check_headers(self, progress: bool = True) -> list[Problem]:
        """Read every clip's header only (soundfile info; no samples decoded) and drop the clips whose
        header is unusable: the cheap up-front check of streaming training, which decodes lazily and
        deals with clips that fail later in :class:`TrainPairs`. Empties the cache (indices change).

        Returns the new Problems (also appended to ``self.split.problems``).
        """
        keep: list[int] = []
        problems: list[Problem] = []
        clips = self.split.clips
        bar = tqdm(range(len(clips)), desc=f"checking {self.split.name} audio headers", unit="clip",
                   disable=not progress, leave=False)
        for i in bar:
            reason = audio_problem(clips[i].audio_path)
            if reason is None:
                keep.append(i)
            else:
                problems.append(Problem(source=str(clips[i].audio_path), reason=f"{reason}; clip {clips[i].clip_id!r} dropped"))
        if problems:
            self._waves.clear()
            self.cached_bytes = 0
        self._drop(keep, problems)
        return problems

    def validate(self, progress: bool = True) -> list[Problem]:
        """Decode every clip once (filling the cache when caching); drop the ones that fail.

        Returns the new Problems (also appended to ``self.split.problems``). Training uses the cheaper
        :meth:`check_headers` instead: decoding a large split up front costs its whole size in memory.
        """
        keep: list[int] = []
        problems: list[Problem] = []
        waves: OrderedDict[int, np.ndarray] = OrderedDict()
        clips = self.split.clips
        bar = tqdm(range(len(clips)), desc=f"decoding {self.split.name} audio", unit="clip", disable=not progress, leave=False)
        for i in bar:
            try:
                wave = self.get(i)
            except AudioError as exc:
                reason = getattr(exc, "reason", str(exc))
                problems.append(Problem(source=str(clips[i].audio_path), reason=f"{reason}; clip {clips[i].clip_id!r} dropped"))
                continue
            if self.cache and i in self._waves:
                waves[len(keep)] = wave
            keep.append(i)
        self._drop(keep, problems)
        if self.cache:
            self._waves = waves
            self.cached_bytes = sum(w.nbytes for w in waves.values())
        return problems


class TrainPairs(Dataset):
    """One item per (clip, caption) pair with a reproducible random crop/pad of ``clip_samples``.

    The crop of item ``i`` depends only on (seed, epoch, i), never on which process or worker decodes
    it or in what order: runs are reproducible and resumable, with any number of DataLoader workers.
    An index is a pair number (using ``self.epoch``) or an ``(epoch, pair)`` key, the form
    :class:`hade.data.loader.StepBatchSampler` yields: persistent workers hold copies of this dataset
    made at start-up, so the epoch travels with each key instead of through ``set_epoch``.

    replace_bad: when a clip fails to decode (a corrupt body behind a good header), the item of the next
    pair in pair order (wrapping round) whose clip decodes takes its place, with that pair's own crop,
    and the item's ``problem`` says which file failed and why (None otherwise). The policy depends only
    on the data, so batches stay identical whatever the workers; the batch keeps its size (DDP ranks
    must agree on it). False: the AudioError is raised.
    """

    def __init__(self, store: ClipAudioStore, clip_samples: int, seed: int = 0, epoch: int = 0,
                 replace_bad: bool = False) -> None:
        _check_seed(seed, epoch)
        if isinstance(clip_samples, bool) or not isinstance(clip_samples, (int, np.integer)) or clip_samples <= 0:
            raise InputError(f"clip_samples must be a positive integer, got {clip_samples!r}")
        self.store = store
        self.clip_samples = int(clip_samples)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.replace_bad = bool(replace_bad)
        self.pairs: list[tuple[int, int]] = [
            (ci, k) for ci, clip in enumerate(store.clips) for k in range(len(clip.captions))
        ]
        self.pair_clip_index = np.asarray([ci for ci, _ in self.pairs], dtype=np.int64)
        self._failed: dict[int, str] = {}  # clip index -> why it failed to decode (this process)

    def set_epoch(self, epoch: int) -> None:
        _check_seed(self.seed, epoch)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def rng_for(self, index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index), _CROP_TAG])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        if index < 0:
            index += len(self.pairs)
        if not self.replace_bad:
            return self._item(epoch, index)
        problem = None
        for step in range(len(self.pairs)):
            candidate = (index + step) % len(self.pairs)
            try:
                item = self._item(epoch, candidate)
            except AudioError as exc:
                clip = self.store.clips[self.pairs[candidate][0]]
                problem = problem or f"{clip.audio_path}: {getattr(exc, 'reason', exc)}; clip {clip.clip_id!r} skipped"
                continue
            item["problem"] = problem
            return item
        raise InputError(f"no clip of split {self.store.split.name!r} could be decoded")

    def _item(self, epoch: int, index: int) -> dict:
        ci, k = self.pairs[index]
        reason = self._failed.get(ci)
        if reason is not None:  # known bad in this process: do not decode it again
            err = AudioError(reason)
            err.reason = reason  # type: ignore[attr-defined]
            raise err
        try:
            wave = self.store.get(ci)
        except AudioError as exc:
            self._failed[ci] = getattr(exc, "reason", str(exc))
            raise
        audio_samples = min(int(wave.shape[0]), self.clip_samples)
        wave = fit_length(wave, self.clip_samples, mode="random", rng=self.rng_for(index, epoch))
        return {
            "audio": torch.from_numpy(wave.copy()),
            "audio_samples": audio_samples,  # audio before zero padding (decides a long clip's segments)
            "caption": self.store.clips[ci].captions[k],
            "clip_index": ci,
            "index": int(index),
        }


def captions_with_clip_index(split: SplitData | ClipAudioStore) -> tuple[list[str], np.ndarray]:
    """Flat caption list (clip order, then caption order) and each caption's clip index (int64)."""
    clips = split.clips
    captions = [c for clip in clips for c in clip.captions]
    index = np.fromiter((i for i, clip in enumerate(clips) for _ in clip.captions), dtype=np.int64, count=len(captions))
    return captions, index


def collate(batch: Sequence[dict]) -> dict:
    """Stack a list of items: audio -> [B, T] (right zero-padded if lengths differ, with ``audio_lengths``),
    captions/strings -> lists, integer fields -> LongTensor."""
    if not batch:
        raise InputError("collate got an empty batch")
    out: dict = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key == "audio":
            lengths = [int(v.shape[-1]) for v in values]
            if len(set(lengths)) == 1:
                out["audio"] = torch.stack(values)
            else:
                audio = values[0].new_zeros((len(values), max(lengths)))
                for row, v in enumerate(values):
                    audio[row, : v.shape[-1]] = v
                out["audio"] = audio
                out["audio_lengths"] = torch.tensor(lengths, dtype=torch.long)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
        elif all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = list(values)
    return out


def epoch_batches(
    num_pairs: int,
    pair_clip_index: Sequence[int] | np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    start_step: int = 0,
) -> list[list[int]]:
    """Batches of pair indices for one epoch, deterministic per (seed, epoch); the last incomplete batch is dropped.

    No two pairs of the same clip share a batch whenever enough distinct clips remain (each batch takes
    one pair from each of the ``batch_size`` clips with the most pairs left, ties broken at random),
    so in-batch negatives are true negatives. ``start_step`` skips the first batches (resume).
    """
    _check_seed(seed, epoch)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    clip_of = np.asarray(pair_clip_index, dtype=np.int64).reshape(-1)
    if clip_of.shape[0] != num_pairs:
        raise InputError(f"pair_clip_index has {clip_of.shape[0]} entries, expected num_pairs={num_pairs}")
    if start_step < 0:
        raise InputError(f"start_step must be >= 0, got {start_step}")
    rng = np.random.default_rng([int(seed), int(epoch), _BATCH_TAG])
    groups: dict[int, list[int]] = {}
    for p in rng.permutation(num_pairs).tolist():
        groups.setdefault(int(clip_of[p]), []).append(p)
    ties = iter(rng.random(num_pairs + len(groups) + 1).tolist())
    heap = [(-len(v), next(ties), c) for c, v in groups.items()]
    heapq.heapify(heap)
    batches: list[list[int]] = []
    remaining = num_pairs
    while remaining >= batch_size:
        taken: list[int] = []
        batch: list[int] = []
        while heap and len(batch) < batch_size:
            _, _, c = heapq.heappop(heap)
            batch.append(groups[c].pop())
            taken.append(c)
        while len(batch) < batch_size:  # fewer distinct clips left than batch_size: duplicates unavoidable
            c = max(taken, key=lambda t: len(groups[t]))
            batch.append(groups[c].pop())
        for c in taken:
            if groups[c]:
                heapq.heappush(heap, (-len(groups[c]), next(ties, 0.0), c))
        rng.shuffle(batch)
        batches.append(batch)
        remaining -= batch_size
    order = rng.permutation(len(batches)).tolist()
    batches = [batches[i] for i in order]
    return batches[start_step:]


class PairBatchSampler(Sampler):
    """``batch_sampler`` for a DataLoader over TrainPairs, wrapping :func:`epoch_batches`."""

    def __init__(self, pair_clip_index: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0, epoch: int = 0) -> None:
        _check_seed(seed, epoch)
        self.pair_clip_index = np.asarray(pair_clip_index, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        _check_seed(self.seed, epoch)
        self.epoch = int(epoch)
        self.start_step = int(start_step)

    def __len__(self) -> int:
        return max(0, len(self.pair_clip_index) // self.batch_size - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        yield from epoch_batches(
            len(self.pair_clip_index), self.pair_clip_index, self.batch_size, self.seed, self.epoch, self.start_step
        )


__all__ = [
    "ClipAudioStore",
    "PairBatchSampler",
    "TrainPairs",
    "captions_with_clip_index",
    "collate",
    "epoch_batches",
]
