"""``hade pack``: decode and resample every split of a data set once, and write it as a packed set.

Streaming: clips are decoded one at a time and appended to the open shard, so memory stays at one clip
whatever the data set's size. Resumable: a shard is written to a temporary file and renamed, then its
offsets table, then its ``.meta.json`` (the mark that it is done); an interrupted pack, run again with the
same arguments, keeps the finished shards and redoes the rest. Bad files (unreadable headers, bodies that
fail to decode, NaN samples) are skipped, and listed with why in ``pack-report.json``.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hade.data.packed.shards import (
    DTYPE,
    FORMAT,
    MARKER,
    REPORT,
    VERSION,
    ShardWriter,
    clear_cache,
    index_path,
    shard_damage,
    meta_path,
    shard_name,
)
from hade.data.types import Clip, Problem, SplitData
from hade.errors import AudioError, InputError
from hade.utils.atomic import atomic_path, remove_stale_temps, write_json_atomic, write_text_atomic
from hade.utils.outdir import OutputKind, claim_output_dir, has_any

DEFAULT_SAMPLE_RATE = 32000  # HTSAT-tiny's, the paper's audio encoder: pack at the rate the model reads
DEFAULT_CLIPS_PER_SHARD = 512  # 10 s clips at 32 kHz: about 330 MB per shard
STATE = ".pack-state.json"
# A packed set, finished or being written, for the --out check (hade.utils.outdir).
PACKED_OUTPUT = OutputKind("packed set", has_any(STATE))


@dataclass
class SplitResult:
    """What packing one split produced."""

    name: str
    source_split: str
    clips: int = 0
    shards: int = 0
    problems: list[Problem] = field(default_factory=list)
    repacked: list[str] = field(default_factory=list)  # finished shards found damaged and written again (why)


@dataclass
class PackResult:
    """What ``pack`` produced: the packed set's folder and one :class:`SplitResult` per split."""

    out: Path
    sample_rate: int
    splits: list[SplitResult] = field(default_factory=list)


def _check_args(sample_rate: int, clips_per_shard: int) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(f"--sample-rate must be a positive integer (Hz), got {sample_rate!r}")
    if isinstance(clips_per_shard, bool) or not isinstance(clips_per_shard, int) or clips_per_shard <= 0:
        raise InputError(f"clips_per_shard must be a positive integer, got {clips_per_shard!r}")


def _open_out(out: Path, state: dict, force: bool = False) -> None:
    """Create ``out`` or check that it is an earlier, interrupted or finished, pack with the same arguments."""
    state_file = out / STATE
    if state_file.is_file():
        try:
            before = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{state_file}: unreadable pack state ({exc}); remove {out} and pack again") from None
        if before != state:
            diff = ", ".join(f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in state.items() if before.get(k) != v)
            raise InputError(f"{out} holds a pack made with other arguments ({diff}); choose another --out or remove it")
        return
    claim_output_dir(out, PACKED_OUTPUT, force=force)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_file, state)


def _source_splits(src: Path, layout: str) -> list[str]:
    from hade.data.readers import splits_of

    if src.is_file():
        return [""]
    names = splits_of(src, layout)
    if not names:
        raise InputError(f"{src}: no split found to pack")
    return names


def _target_name(split: str, taken: dict[str, str]) -> str:
    from hade.data.readers import canonical_split

    name = canonical_split(split) or split
    if name in taken:
        raise InputError(f"splits {taken[name]!r} and {split!r} both mean {name!r}; pack them from separate folders")
    taken[name] = split
    return name


def _clip_line(clip: Clip, shard: str, row: int) -> dict:
    return {"id": clip.clip_id, "captions": list(clip.captions), "name": Path(clip.audio_path).name,
            "shard": shard, "row": row}


def _write_shard(shard: Path, clips: Sequence[Clip], sample_rate: int, tick: Callable[[], None]) -> dict:
    """Decode ``clips`` into ``shard`` (temp file + rename), then its offsets table, then its meta (done mark)."""
    from hade.data.audio import load_audio

    remove_stale_temps(shard)
    lines: list[dict] = []
    problems: list[dict] = []
    with atomic_path(shard) as tmp, open(tmp, "wb") as stream:
        writer = ShardWriter(stream)
        for clip in clips:
            try:
                wave = load_audio(clip.audio_path, sample_rate)
            except AudioError as exc:
                reason = getattr(exc, "reason", str(exc))
                problems.append({"source": str(clip.audio_path), "reason": f"{reason}; clip {clip.clip_id!r} skipped"})
            else:
                lines.append(_clip_line(clip, shard.name, writer.add(wave)))
            tick()
    with atomic_path(index_path(shard)) as tmp, open(tmp, "wb") as f:
        np.save(f, writer.table(), allow_pickle=False)
    meta = {"clips": lines, "problems": problems}
    write_json_atomic(meta_path(shard), meta)
    return meta


def _read_meta(shard: Path) -> dict | None:
    path = meta_path(shard)
    if not (path.is_file() and shard.is_file() and index_path(shard).is_file()):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a damaged mark: the shard is written again


def pack_split(split: SplitData, split_dir: Path, sample_rate: int, clips_per_shard: int = DEFAULT_CLIPS_PER_SHARD,
               progress: bool = True) -> SplitResult:
    """Pack one split's clips into ``split_dir`` (finished shards are kept) and write its ``clips.jsonl``."""
    split_dir.mkdir(parents=True, exist_ok=True)
    clips = split.clips
    shards = math.ceil(len(clips) / clips_per_shard)
    result = SplitResult(name=split_dir.name, source_split=split.name, shards=shards, problems=list(split.problems))
    bar = tqdm(total=len(clips), desc=f"packing {split.name}", unit="clip", disable=not progress)
    lines: list[dict] = []
    for k in range(shards):
        shard = split_dir / shard_name(k)
        part = clips[k * clips_per_shard:(k + 1) * clips_per_shard]
        meta = _read_meta(shard)
        damage = shard_damage(shard) if meta is not None else None
        if damage is not None:
            tqdm.write(f"{shard}: {damage}; packing it again", file=sys.stderr)
            result.repacked.append(f"{shard}: {damage}")
        if meta is None or damage is not None:
            meta = _write_shard(shard, part, sample_rate, lambda: bar.update(1))
        else:
            bar.update(len(part))
        lines.extend(meta["clips"])
        result.problems.extend(Problem(source=p["source"], reason=p["reason"]) for p in meta["problems"])
    bar.close()
    write_text_atomic(split_dir / "clips.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    result.clips = len(lines)
    return result


def pack(data: str | Path, out: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE, layout: str = "auto",
         clips_per_shard: int = DEFAULT_CLIPS_PER_SHARD, progress: bool = True, force: bool = False) -> PackResult:
    """Pack every split of data set ``data`` (any layout ``read_split`` reads) into ``out``; see the module doc.
    force: pack into ``out`` even when it is a non-empty folder that is not a packed set (InputError otherwise)."""
    from hade.data.readers import read_split

    _check_args(sample_rate, clips_per_shard)
    src, dest = Path(data).expanduser(), Path(out).expanduser()
    if not src.exists():
        raise InputError(f"data path not found: {src}")
    state = {"format": FORMAT, "version": VERSION, "source": str(src.resolve()), "layout": layout,
             "sample_rate": sample_rate, "clips_per_shard": clips_per_shard}
    names = _source_splits(src, layout)
    _open_out(dest, state, force)
    result = PackResult(out=dest, sample_rate=sample_rate)
    taken: dict[str, str] = {}
    for name in names:
        split = read_split(src, name or None, layout=layout)
        result.splits.append(pack_split(split, dest / _target_name(split.name, taken), sample_rate, clips_per_shard,
                                        progress))
    clear_cache()  # shards of this process may have been rewritten
    _write_summary(dest, src, state, result)
    return result


def _write_summary(dest: Path, src: Path, state: dict, result: PackResult) -> None:
    report = {"splits": {s.name: [{"source": p.source, "reason": p.reason} for p in s.problems] for s in result.splits}}
    write_json_atomic(dest / REPORT, report)
    marker = {"format": FORMAT, "version": VERSION, "sample_rate": result.sample_rate, "dtype": DTYPE,
              "clips_per_shard": state["clips_per_shard"], "source": str(src.resolve()),
              "splits": {s.name: {"clips": s.clips, "shards": s.shards, "skipped": len(s.problems),
                                  "source_split": s.source_split} for s in result.splits}}
    write_json_atomic(dest / MARKER, marker)


__all__ = ["DEFAULT_CLIPS_PER_SHARD", "DEFAULT_SAMPLE_RATE", "PackResult", "SplitResult", "pack", "pack_split"]
