"""Auxiliary captions (AC of HCI+AC): machine-generated captions of clips, from a file or simulated.

A `Captioner` maps clips to one generated caption each. HCI+AC uses them twice: the audio attends to its
clip's auxiliary caption (`RetrievalModel.encode_audio(waveform, aux_captions)`), and `with_aux_pairs` adds
them to the training captions as extra (audio, text) pairs.

- `FileCaptioner(path)`: captions produced offline by any pretrained captioner, from JSON
  (`{"clip_id": "caption", ...}` or `[{"clip_id": ..., "caption": ...}, ...]`) or CSV (header with a
  clip id column — clip_id, file_name, youtube_id or id — and a `caption` column).
- `SynthCapsCaptioner(data_root, split)`: a SIMULATED captioner for SynthCaps data. No pretrained audio
  captioner can be downloaded here, so this stands in for one: it "detects" each clip's events from the
  SynthCaps metadata (`synthcaps_metadata_{split}.json`, the ground truth) with simulated errors and
  writes a caption with SynthCaps' own `caption_for_events`. It has access to the truth, so results with
  it measure what AC gains from a captioner of the simulated error rate, not from a real model.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hade.data.synthcaps import EVENT_TYPES, EventInstance, caption_for_events
from hade.data.types import Clip, SplitData
from hade.errors import InputError

ID_COLUMNS = ("clip_id", "file_name", "youtube_id", "id")
SPLIT_ALIASES = (("development", "train", "dev"), ("validation", "val", "valid"), ("evaluation", "test", "eval"))


@runtime_checkable
class Captioner(Protocol):
    """Anything that captions clips: caption(clips) -> {clip_id: caption} (clips it cannot caption are
    left out)."""

    def caption(self, clips: list[Clip]) -> dict[str, str]:
        ...


class FileCaptioner:
    """Generated captions read from a JSON or CSV file (read and checked once, in the constructor).

    strict: caption() raises InputError when a clip has no caption in the file (else it is left out).
    Raises InputError naming the file (and line / entry) for a missing file, bad JSON or CSV, a missing
    column, an empty caption or a clip id given twice.
    """

    def __init__(self, path: str | Path, strict: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.strict = strict
        if not self.path.is_file():
            raise InputError(f"{self.path}: auxiliary caption file not found")
        suffix = self.path.suffix.lower()
        if suffix == ".json":
            self.captions = self._read_json()
        elif suffix == ".csv":
            self.captions = self._read_csv()
        else:
            raise InputError(f"{self.path}: auxiliary captions must be a .json or .csv file")

    def _add(self, table: dict[str, str], where: dict[str, str], clip_id: Any, caption: Any, at: str) -> None:
        if not isinstance(clip_id, (str, int)) or isinstance(clip_id, bool) or not str(clip_id).strip():
            raise InputError(f"{self.path}: {at}: missing or bad clip id {clip_id!r}")
        if not isinstance(caption, str) or not caption.strip():
            raise InputError(f"{self.path}: {at}: caption of clip {clip_id!r} must be a non-empty string, "
                             f"got {caption!r}")
        key = str(clip_id).strip()
        if key in table:
            raise InputError(f"{self.path}: {at}: clip {key!r} has a second caption (first at {where[key]})")
        table[key], where[key] = caption.strip(), at

    def _read_json(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{self.path}: line {e.lineno}: invalid JSON: {e.msg}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{self.path}: cannot read: {e}") from None
        table: dict[str, str] = {}
        where: dict[str, str] = {}
        if isinstance(data, dict):
            for key, caption in data.items():
                self._add(table, where, key, caption, f"entry {key!r}")
        elif isinstance(data, list):
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "caption" not in item or not any(c in item for c in ID_COLUMNS):
                    raise InputError(f"{self.path}: item {i}: expected an object with a clip id "
                                     f"({'/'.join(ID_COLUMNS)}) and 'caption'")
                key = next(item[c] for c in ID_COLUMNS if c in item)
                self._add(table, where, key, item["caption"], f"item {i}")
        else:
            raise InputError(f"{self.path}: expected a JSON object {{clip_id: caption}} or a list of "
                             f"{{clip_id, caption}} objects, got {type(data).__name__}")
        return table

    def _read_csv(self) -> dict[str, str]:
        table: dict[str, str] = {}
        where: dict[str, str] = {}
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = [h.strip().lower() for h in next(reader, [])]
                id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
                if id_col is None or "caption" not in header:
                    raise InputError(f"{self.path}: line 1: header must name a clip id column "
                                     f"({', '.join(ID_COLUMNS)}) and 'caption', got {header}")
                cap_col = header.index("caption")
                for row in reader:
                    line = reader.line_num
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) != len(header):
                        raise InputError(f"{self.path}: line {line}: {len(row)} fields, the header has {len(header)}")
                    self._add(table, where, row[id_col], row[cap_col], f"line {line}")
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"{self.path}: cannot read as CSV: {e}") from None
        return table

    def caption(self, clips: list[Clip]) -> dict[str, str]:
        missing = [c.clip_id for c in clips if c.clip_id not in self.captions]
        if self.strict and missing:
            raise InputError(f"{self.path}: no auxiliary caption for {len(missing)} clip(s), e.g. {missing[:3]}")
        return {c.clip_id: self.captions[c.clip_id] for c in clips if c.clip_id in self.captions}


class SynthCapsCaptioner:
    """Simulated noisy captioner for SynthCaps (a stand-in for a pretrained captioner; see the module doc).

    For each clip of `split` it reads the true events from `data_root/synthcaps_metadata_{split}.json` (any
    split alias works: development/train, validation/val, evaluation/test) and "detects" them with errors,
    each with probability `error_rate`, independently:
      - per event: missed (dropped; at least one event is always kept) or, half of the time instead,
        confused with another event type (attributes the new type lacks are lost);
      - per attribute (pitch, loudness, ...) and per count > 1: the detail is lost;
      - per clip with several steps: the temporal order of the steps is shuffled.
    Focus marks (attributes every reference caption mentions) are never passed on. The caption is
    `caption_for_events(detected, rng)`. Everything depends only on (seed, clip id): the same clip gets the
    same caption whatever the other clips or their order.
    """

    def __init__(self, data_root: str | Path, split: str, error_rate: float = 0.2, seed: int = 0) -> None:
        if isinstance(error_rate, bool) or not isinstance(error_rate, (int, float)) or not 0 <= error_rate <= 1:
            raise InputError(f"SynthCapsCaptioner: error_rate must be in [0, 1], got {error_rate!r}")
        self.error_rate, self.seed = float(error_rate), int(seed)
        root = Path(data_root).expanduser()
        names = next((a for a in SPLIT_ALIASES if split in a), (split,))
        candidates = [root / f"synthcaps_metadata_{n}.json" for n in (split, *names)]
        self.path = next((p for p in candidates if p.is_file()), candidates[0])
        if not self.path.is_file():
            raise InputError(f"{root}: no SynthCaps metadata for split {split!r} (looked for "
                             f"{', '.join(sorted({p.name for p in candidates}))})")
        try:
            self.metadata: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{self.path}: line {e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(self.metadata, dict):
            raise InputError(f"{self.path}: expected an object {{clip key: {{events, ...}}}}")
        self._types = sorted(EVENT_TYPES)

    def _rng(self, clip_id: str) -> np.random.Generator:
        digest = hashlib.blake2b(f"{self.seed}:{clip_id}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def _events(self, clip_id: str) -> list[EventInstance]:
        entry = self.metadata.get(clip_id, self.metadata.get(Path(clip_id).stem))
        if entry is None:
            entry = self.metadata.get(clip_id + ".wav")
        if not isinstance(entry, dict) or not isinstance(entry.get("events"), list) or not entry["events"]:
            raise InputError(f"{self.path}: no events for clip {clip_id!r}")
        try:
            return [EventInstance.from_dict(e) for e in entry["events"]]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.path}: clip {clip_id!r}: an event record is not {{type, attributes, count, "
                             f"role, step, ...}}: {type(e).__name__}: {e}") from None

    def detect(self, clip_id: str, rng: np.random.Generator | None = None) -> list[EventInstance]:
        """The clip's events as the simulated captioner "hears" them (new records; the metadata is untouched)."""
        rng = self._rng(clip_id) if rng is None else rng
        events = self._events(clip_id)
        heard = [ev for ev in (self._hear(truth, clip_id, rng) for truth in events) if ev is not None]
        if not heard:  # a captioner says something: keep one event (the first, as heard)
            heard = [replace(events[0], attributes={}, focus=())]
        self._shuffle_steps(heard, rng)
        self._fix_steps(heard)
        return heard

    def _hear(self, truth: EventInstance, clip_id: str, rng: np.random.Generator) -> EventInstance | None:
        """One event as heard, or None when missed: missed or confused with another type (probability
        `error_rate`, half each), then each attribute and a count > 1 lost with that probability. Focus
        marks are never heard."""
        p = self.error_rate
        ev = replace(truth, attributes=dict(truth.attributes), focus=())
        if rng.random() < p:
            if rng.random() < 0.5:
                return None
            others = [t for t in self._types if t != ev.type]
            ev.type = others[int(rng.integers(len(others)))]
        spec = EVENT_TYPES.get(ev.type)
        if spec is None:
            raise InputError(f"{self.path}: clip {clip_id!r}: unknown event type {ev.type!r}")
        ev.attributes = {a: v for a, v in ev.attributes.items() if a in spec.attributes and rng.random() >= p}
        if ev.count > 1 and (not spec.countable or rng.random() < p):
            ev.count = 1
        return ev

    def _shuffle_steps(self, events: list[EventInstance], rng: np.random.Generator) -> None:
        """With probability `error_rate`, the temporal order of a clip's steps (two or more) is shuffled."""
        steps = _steps(events)
        if len(steps) > 1 and rng.random() < self.error_rate:
            perm = dict(zip(steps, rng.permutation(steps).tolist()))
            for e in _foreground(events):
                if e.step in perm:
                    e.step = perm[e.step]

    @staticmethod
    def _fix_steps(events: list[EventInstance]) -> None:
        """After drops, renumber steps 0..S-1 and give every step a main ("sequence") event."""
        steps = _steps(events)
        rank = {s: i for i, s in enumerate(steps)}
        for s in steps:
            members = [e for e in _foreground(events) if e.step == s]
            if not any(e.role == "sequence" for e in members):
                members[0].role = "sequence"
        for e in _foreground(events):
            if e.step in rank:
                e.step = rank[e.step]
        if not steps:  # only a background left: describe it as the one event
            for e in events:
                e.role, e.step = "sequence", 0

    def caption(self, clips: list[Clip]) -> dict[str, str]:
        out = {}
        for clip in clips:
            rng = self._rng(clip.clip_id)
            out[clip.clip_id] = caption_for_events(self.detect(clip.clip_id, rng), rng)
        return out


def _foreground(events: list[EventInstance]) -> list[EventInstance]:
    """The events of a clip's steps (not its background)."""
    return [e for e in events if e.role != "background"]


def _steps(events: list[EventInstance]) -> list[int]:
    """The sorted step numbers of the foreground events."""
    return sorted({e.step for e in _foreground(events) if e.step is not None})


def with_aux_pairs(split: SplitData, captions: dict[str, str]) -> SplitData:
    """A copy of `split` where each clip with an auxiliary caption has it as one more caption (extra
    training pairs); clips without one, and captions equal to a reference (case-insensitive), are unchanged."""
    clips = []
    for clip in split.clips:
        aux = (captions.get(clip.clip_id) or "").strip()
        if aux and aux.lower() not in {c.lower() for c in clip.captions}:
            clip = replace(clip, captions=clip.captions + (aux,))
        clips.append(clip)
    return SplitData(split.name, clips, list(split.problems))


def build_captioner(spec: str, data_root: str | Path, split: str, error_rate: float = 0.2,
                    seed: int = 0) -> Captioner:
    """`spec` is "synthcaps" (the simulated captioner, for SynthCaps data) or a JSON/CSV file of captions."""
    if spec == "synthcaps":
        return SynthCapsCaptioner(data_root, split, error_rate=error_rate, seed=seed)
    return FileCaptioner(spec)
