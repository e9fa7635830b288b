"""Streaming training input: a torch DataLoader whose worker processes decode, resample and crop.

Why: decoding a whole training split before step 1 costs 128 kB per second of audio at 32 kHz (about
60 GiB for AudioCaps). Here each clip is decoded when a batch needs it, in ``num_workers`` processes that
run ahead of the training step by ``prefetch_factor`` batches each, with an optional per-process LRU cache
of decoded audio bounded in bytes (:class:`~hade.data.dataset.ClipAudioStore` ``max_cache_bytes``).
Memory is then bounded by workers x (prefetched batches + cache), not by the data set's size.

Determinism: :class:`StepBatchSampler` yields ``(epoch, pair)`` keys in the order of
:func:`~hade.data.dataset.epoch_batches`, and every item depends only on (seed, epoch, pair), so the
batches are identical, bit for bit, with 0, 1 or N workers, and a resumed run (``start_step``) sees the
same batches as an uninterrupted one. The DataLoader draws its workers' base seed from its own generator,
not from torch's global RNG, which the trainer saves for dropout.

Distribution: under torchrun the sampler yields only this rank's slice of every (micro-)batch, so a rank
never decodes the clips of another.

Packed sets (``hade pack``, :mod:`hade.data.packed`) need nothing here: their clips' virtual audio paths
make :func:`~hade.data.audio.load_audio` read a memory-mapped int16 shard instead of decoding a file, so
the same store, datasets, sampler and loader serve them, with a read cost per clip about 50 times lower
than decoding and resampling a WAV file (benchmarks/data.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hade.data.dataset import _check_seed, collate, epoch_batches
from hade.errors import InputError

DEFAULT_PREFETCH_FACTOR = 2


def default_num_workers(processes_per_node: int = 1) -> int:
    """min(4, CPUs per process - 1): leave one core per training process for the step itself."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus // max(1, processes_per_node) - 1))


class StepBatchSampler(Sampler):
    """``batch_sampler`` yielding, for each global batch of one epoch, its ``accum_steps`` micro-batches
    restricted to this rank: lists of ``(epoch, pair)`` keys of length batch_size / (world_size x accum_steps).

    Micro-batch k of a global batch is its k-th contiguous part, and rank r takes the r-th contiguous part
    of that (the layout the distributed loss assumes when it gathers features in rank order).
    """

    def __init__(self, pair_clip_index: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, accum_steps: int = 1) -> None:
        _check_seed(seed, 0)
        if batch_size <= 0 or batch_size % (world_size * accum_steps):
            raise InputError(f"batch_size {batch_size} must be a positive multiple of processes x grad_accum_steps "
                             f"({world_size} x {accum_steps})")
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is outside 0..{world_size - 1}")
        self.pair_clip_index = np.asarray(pair_clip_index, dtype=np.int64)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rank, self.world_size, self.accum_steps = int(rank), int(world_size), int(accum_steps)
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        _check_seed(self.seed, epoch)
        if start_step < 0:
            raise InputError(f"start_step must be >= 0, got {start_step}")
        self.epoch, self.start_step = int(epoch), int(start_step)

    @property
    def steps(self) -> int:
        """Optimizer steps left in the epoch (global batches after ``start_step``)."""
        return max(0, len(self.pair_clip_index) // self.batch_size - self.start_step)

    def __len__(self) -> int:
        return self.steps * self.accum_steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        micro = self.batch_size // self.accum_steps
        local = micro // self.world_size
        for batch in epoch_batches(len(self.pair_clip_index), self.pair_clip_index, self.batch_size, self.seed,
                                   self.epoch, self.start_step):
            for k in range(self.accum_steps):
                part = batch[k * micro:(k + 1) * micro][self.rank * local:(self.rank + 1) * local]
                yield [(self.epoch, int(i)) for i in part]


def train_loader(dataset: Dataset, sampler: StepBatchSampler, num_workers: int, seed: int,
                 prefetch_factor: int = DEFAULT_PREFETCH_FACTOR, pin_memory: bool = False) -> DataLoader:
    """The training DataLoader: persistent workers (started once per run, not per epoch), prefetch, and
    pinned memory for fast host-to-GPU copies when asked (on CUDA)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if prefetch_factor < 1:
        raise InputError(f"prefetch_factor must be >= 1, got {prefetch_factor!r}")
    workers = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers else {}
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed), **workers)


def step_groups(batches: Iterable[dict], accum_steps: int) -> Iterator[list[dict]]:
    """Group consecutive micro-batches into the ``accum_steps`` micro-batches of each optimizer step."""
    group: list[dict] = []
    for batch in batches:
        group.append(batch)
        if len(group) == accum_steps:
            yield group
            group = []


__all__ = ["DEFAULT_PREFETCH_FACTOR", "StepBatchSampler", "default_num_workers", "step_groups", "train_loader"]
