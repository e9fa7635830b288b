"""SynthCaps output: the Clotho / AudioCaps / WavCaps layouts, atomic writes, resumable generation.

Every clip is derived from (seed, clip index) alone (numpy SeedSequence), so the same options always give
byte-identical files and an interrupted run can be resumed: complete WAV files are kept, missing ones are
rendered, and every file is written to a temporary name in its folder and then moved with os.replace.
"""
from __future__ import annotations

import base64
import copy
import csv
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from hade.errors import InputError

from .captions import scene_captions
from .events import EVENT_TYPES
from .scenes import Scene, layout_scene, make_group, render_scene

VERSION = "1.0"
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "clotho": ("development", "validation", "evaluation"),
    "audiocaps": ("train", "val", "test"),
    "wavcaps": ("train", "val", "test"),
}
NUM_CAPTIONS = 5
GROUP_SIZE = 3
OPTIONS_FILE = "synthcaps.json"
_TMP_PREFIX = ".synthcaps-"


# ---------------------------------------------------------------------------------------------- atomic IO
def _tmp(path: Path) -> Path:
    return path.with_name(f"{_TMP_PREFIX}{path.name}-{os.getpid()}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to a temporary file next to `path`, then move it into place."""
    tmp = _tmp(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Float samples in [-1, 1] -> 16-bit PCM WAV, written atomically."""
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    tmp = _tmp(path)
    try:
        sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def wav_is_complete(path: Path, sample_rate: int, frames: int) -> bool:
    """True if `path` is a readable mono 16-bit WAV with the expected rate and length."""
    try:
        info = sf.info(str(path))
        return (info.samplerate == sample_rate and info.frames == frames and info.channels == 1
                and info.subtype == "PCM_16" and path.stat().st_size >= 2 * frames + 44)
    except Exception:  # unreadable / truncated / missing
        return False


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- planning
def youtube_id(seed: int, index: int) -> str:
    """A deterministic 11-character id of [A-Za-z0-9_-] for clip `index` of a seed."""
    digest = hashlib.blake2b(f"synthcaps:{seed}:{index}".encode(), digest_size=9).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:11]


def clip_key(layout: str, seed: int, index: int) -> str:
    """The clip's id in its layout: Clotho file name, AudioCaps youtube_id, WavCaps id."""
    if layout == "audiocaps":
        return youtube_id(seed, index)
    stem = f"synthcaps_{index:05d}"
    return stem + ".wav" if layout == "clotho" else stem


def split_counts(clips: int, fractions: Sequence[float]) -> list[int]:
    """Clips per split; every split gets at least one clip."""
    val, test = (max(1, int(round(f * clips))) for f in fractions[1:])
    while clips - val - test < 1:
        if val >= test:
            val -= 1
        else:
            test -= 1
    return [clips - val - test, val, test]


def group_sizes(n: int, size: int = GROUP_SIZE) -> list[int]:
    """Split n clips into hard-negative groups of `size`, avoiding a lone clip at the end."""
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) >= 2 and sizes[-1] == 1 and size >= 3:
        sizes[-2:] = [sizes[-2] - 1, 2]
    return sizes


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_numbers(clips: Any, seed: Any, sample_rate: Any, duration: Any) -> None:
    if not _is_int(clips) or clips < 3:
        raise InputError(f"clips must be an integer >= 3 (at least one clip per split), got {clips!r}")
    if not _is_int(seed) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if not _is_int(sample_rate) or not 8000 <= sample_rate <= 192000:
        raise InputError(f"sample_rate must be an integer between 8000 and 192000 Hz, got {sample_rate!r}")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0.5 <= float(duration) <= 60:
        raise InputError(f"duration must be a number of seconds between 0.5 and 60, got {duration!r}")


def _split_fractions(split_fractions: Any) -> tuple[float, float, float]:
    try:
        fr = tuple(float(f) for f in split_fractions)
    except (TypeError, ValueError):
        fr = ()
    if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"split_fractions must be three positive numbers (train, validation, test) summing to 1, "
                         f"got {split_fractions!r}")
    return fr  # type: ignore[return-value]


def _event_types(event_types: Any) -> list[str]:
    if event_types is None:
        return sorted(EVENT_TYPES)
    if isinstance(event_types, str) or not all(isinstance(t, str) for t in event_types) or not event_types:
        raise InputError(f"event_types must be a non-empty list of event type names, got {event_types!r}")
    unknown = sorted({t for t in event_types if t not in EVENT_TYPES})
    if unknown:
        raise InputError(f"unknown event type(s) {', '.join(map(repr, unknown))}; "
                         f"valid types: {', '.join(sorted(EVENT_TYPES))}")
    return sorted(set(event_types))


def _validate(out_dir: Any, clips: Any, seed: Any, sample_rate: Any, duration: Any, layout: Any,
              split_fractions: Any, event_types: Any) -> tuple[Path, tuple[float, float, float], list[str]]:
    _check_numbers(clips, seed, sample_rate, duration)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
    fr = _split_fractions(split_fractions)
    types = _event_types(event_types)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    return out, fr, types


# ---------------------------------------------------------------------------------------------- generation
def _index_files(layout: str, split: str, records: list[dict[str, Any]], duration: float) -> dict[str, str]:
    """The layout's caption index text for one split: {file name: text}."""
    if layout == "clotho":
        rows = [[r["key"]] + r["captions"] for r in records]
        header = ["file_name"] + [f"caption_{i}" for i in range(1, NUM_CAPTIONS + 1)]
        return {f"clotho_captions_{split}.csv": _csv_text(header, rows)}
    if layout == "audiocaps":
        rows = []
        for r in records:
            caps = r["captions"][:1] if split == "train" else r["captions"]  # real AudioCaps train: 1 caption
            rows += [[r["index"] * NUM_CAPTIONS + k + 1, r["key"], 0, c] for k, c in enumerate(caps)]
        return {f"{split}.csv": _csv_text(["audiocap_id", "youtube_id", "start_time", "caption"], rows)}
    data = []
    for r in records:
        item: dict[str, Any] = {"id": r["key"], "audio": f"{split}/{r['key']}.wav"}
        item.update({f"caption_{i}": c for i, c in enumerate(r["captions"], start=1)})
        item["duration"] = float(duration)
        data.append(item)
    return {f"{split}.json": _json_text({"num_captions_per_audio": NUM_CAPTIONS, "data": data})}


@dataclass(frozen=True)
class SplitReport:
    """One split of a generated set: its clips, captions, hard-negative groups and audio folder."""

    clips: int
    captions: int
    groups: int
    audio_dir: Path


@dataclass
class SynthReport:
    """What `generate` made: the set's options, each split, and how many WAV files this call `written`
    and `skipped` (complete on disk already)."""

    path: Path
    layout: str
    seed: int
    clips: int
    sample_rate: int
    duration: float
    event_types: list[str]
    splits: dict[str, SplitReport] = field(default_factory=dict)
    written: int = 0
    skipped: int = 0
    version: str = VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`hade synth` prints it)."""
        out = asdict(self)
        out["path"] = str(self.path)
        for split in out["splits"].values():
            split["audio_dir"] = str(split["audio_dir"])
        return out


def generate(out_dir: str | os.PathLike, clips: int, seed: int = 0, sample_rate: int = 16000,
             duration: float = 4.0, layout: str = "clotho",
             split_fractions: Sequence[float] = (0.7, 0.15, 0.15), event_types: list[str] | None = None,
             progress: bool = True) -> SynthReport:
    """Generate (or resume) a SynthCaps data set in `out_dir` and say what was made.

    Clips are made in hard-negative groups of three (same event types, different order / attribute /
    count) that never straddle splits.  Existing complete WAV files are kept; everything else is
    (re)written atomically.  Raises InputError for bad arguments or a folder made with other options.
    """
    out, fractions, types = _validate(out_dir, clips, seed, sample_rate, duration, layout, split_fractions,
                                      event_types)
    duration = float(duration)
    splits = LAYOUTS[layout]
    counts = split_counts(clips, fractions)
    options = {"generator": "hade.synthcaps", "version": VERSION, "seed": int(seed), "clips": int(clips),
               "sample_rate": int(sample_rate), "duration": duration, "layout": layout,
               "split_fractions": list(fractions), "event_types": types, "num_captions": NUM_CAPTIONS,
               "group_size": GROUP_SIZE, "splits": dict(zip(splits, counts))}
    opt_path = out / OPTIONS_FILE
    if opt_path.exists():
        try:
            previous = json.loads(opt_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != options:
            raise InputError(f"{out} already holds a SynthCaps set made with other options ({opt_path}); "
                             "use a new output folder or the same options to resume")
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (out / split).mkdir(exist_ok=True)
        for stale in list((out / split).glob(f"{_TMP_PREFIX}*.tmp")) + list(out.glob(f"{_TMP_PREFIX}*.tmp")):
            stale.unlink(missing_ok=True)
    atomic_write_text(opt_path, _json_text(options))

    frames = int(round(duration * sample_rate))
    summary = SynthReport(path=out, layout=layout, seed=int(seed), clips=int(clips), sample_rate=int(sample_rate),
                          duration=duration, event_types=types, version=VERSION)
    index, group_id = 0, 0
    bar = tqdm(total=clips, desc="synthcaps", unit="clip", disable=not progress)
    try:
        for split, n_split in zip(splits, counts):
            records: list[dict[str, Any]] = []
            metadata: dict[str, Any] = {}
            sizes = group_sizes(n_split)
            for size in sizes:
                group_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, group_id)))
                scenes = make_group(group_rng, types, size)
                for scene in scenes:
                    rec = _make_clip(out / split, layout, seed, index, group_id, scene, sample_rate, duration, frames)
                    if rec.pop("written"):
                        summary.written += 1
                    else:
                        summary.skipped += 1
                    records.append(rec)
                    metadata[rec["key"]] = {"events": rec["events"], "group": group_id, "captions": rec["captions"]}
                    index += 1
                    bar.update(1)
                group_id += 1
            for name, text in _index_files(layout, split, records, duration).items():
                atomic_write_text(out / name, text)
            atomic_write_text(out / f"synthcaps_metadata_{split}.json", _json_text(metadata))
            n_caps = len(records) * (1 if layout == "audiocaps" and split == "train" else NUM_CAPTIONS)
            summary.splits[split] = SplitReport(len(records), n_caps, len(sizes), out / split)
    finally:
        bar.close()
    return summary


def _make_clip(folder: Path, layout: str, seed: int, index: int, group_id: int, scene: Scene, sample_rate: int,
               duration: float, frames: int) -> dict[str, Any]:
    """Lay out, caption and (unless already complete on disk) render clip `index`."""
    timing_ss, caption_ss, audio_ss = np.random.SeedSequence(seed, spawn_key=(0, index)).spawn(3)
    scene = layout_scene(copy.deepcopy(scene), duration, np.random.default_rng(timing_ss))
    captions = scene_captions(scene, np.random.default_rng(caption_ss), NUM_CAPTIONS)
    key = clip_key(layout, seed, index)
    path = folder / (key if key.endswith(".wav") else key + ".wav")
    written = False
    if not wav_is_complete(path, sample_rate, frames):
        audio = render_scene(scene, sample_rate, duration, np.random.default_rng(audio_ss))
        write_wav_atomic(path, audio, sample_rate)
        written = True
    events = sorted((e.to_dict() for e in scene.events()), key=lambda d: (d["start"], d["role"] != "background"))
    return {"index": index, "key": key, "captions": captions, "events": events, "group": group_id,
            "written": written}
