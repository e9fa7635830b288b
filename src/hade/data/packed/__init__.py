"""Packed data sets: every split decoded and resampled once, stored as memory-mapped int16 shards.

Layout of a packed set ``PACKED/`` (written by :func:`hade.data.packed.writer.pack`, ``hade pack``)::

    hade-packed.json                 marker: format, version, sample rate, dtype, splits, source
    pack-report.json                 files skipped while packing, with why (per split)
    <split>/clips.jsonl              one line per clip, in source order: id, captions, name, shard, row
    <split>/shard-00000.pcm16        the clips' samples, mono int16, back to back
    <split>/shard-00000.index.npy    offsets table [clips]: (offset, length, scale) per clip
    <split>/shard-00000.meta.json    the shard's clip lines and skipped files; written last: the shard is done

Splits are stored under their canonical names (train, val, test) when they have one, so every alias
(development, validation, evaluation...) finds them. Clip ``k`` of a shard is read back as
``pcm16[offset:offset + length] * scale / 32768``: ``scale`` is 1 unless the waveform's peak does not fit in
int16 (a float source, or resampling overshoot), then ``peak * 32768 / 32767``, so nothing clips. Error
against the decoded source: at most ``scale / 65536`` (within 1/32768 for every clip with ``scale`` 1); a
16-bit PCM source already at the packed rate comes back bit for bit, and so do its training batches.

Why memory-mapped int16 arrays and not tar shards in the WebDataset layout: measured side by side by
``benchmarks/data.py`` (96 clips of 10 s, WAV at 44.1 kHz read at 32 kHz, one process, a shared 2-core
machine), the median cost of reading one clip: WAV source 16.6 ms (decode 1.1 + resample 11.3), FLAC 33.1,
OGG 24.7; int16 memmap 0.35 ms; tar with FLAC members (LAION-CLAP's way) 12.1 ms, a FLAC decode, the cost
packing exists to remove; tar with raw int16 .npy members 0.36 ms, the same as the memmap. The loader
alone (read, crop, collate; 0 workers): memmap 316 clips/s, tar-npy 445, tar-flac 65, WAV 51. So the choice
is between the memmap and tar-npy, which cost the same to read; the memmap wins on access: hade's
map-style ``(epoch, pair) -> item`` datasets need random access for their exact, worker-independent batches,
which a tar shard only gives through a member table (the offsets table again) and WebDataset's tooling
does not give at all (it streams shards in order); a memory map also shares the page cache between the
DataLoader workers and needs no open file per worker. The price of int16: 64 kB per second of audio at
32 kHz on disk (AudioCaps' training split: about 32 GB), about twice FLAC's.

Every clip of a packed split has a *virtual* audio path ``PACKED/<split>/shard-00000.pcm16/<row>/<name>``
(``name``: the source file's name, so outputs that name files read the same as for the source folder).
:func:`hade.data.audio.load_audio` and :func:`~hade.data.audio.audio_info` recognise it and read the shard,
so the stores, datasets, loaders, trainer and evaluation work on a packed split unchanged.
"""
from __future__ import annotations

from hade.data.packed.shards import (
    DTYPE,
    FORMAT,
    MARKER,
    REPORT,
    SHARD_SUFFIX,
    VERSION,
    PackedRef,
    packed_ref,
    read_packed,
)

__all__ = ["DTYPE", "FORMAT", "MARKER", "REPORT", "SHARD_SUFFIX", "VERSION", "PackedRef", "packed_ref",
           "read_packed"]
