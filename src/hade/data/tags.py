"""Event labels of a split, for audio-tagging pretraining (`hade pretrain`).

HTSAT's weights in the paper start from AudioSet tagging: each clip has the set of sound events it holds,
and the encoder learns to name them. SynthCaps knows the events it rendered into every clip, so a SynthCaps
set gives the same kind of labels for free: ``synthcaps_metadata_{split}.json`` lists each clip's events
(every role, background included, as AudioSet labels whatever is audible), and ``synthcaps.json`` the event
types of the whole set, which fix the label vocabulary and its order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hade.data.readers import SPLIT_ALIASES, canonical_split
from hade.data.types import SplitData
from hade.errors import InputError

OPTIONS_FILE = "synthcaps.json"


@dataclass(frozen=True)
class ClipTags:
    """The label vocabulary and, for each clip of a split (in the split's order), its labels.

    labels: the vocabulary, in a fixed order (the SynthCaps set's event types).
    targets: [num_clips, num_labels] float32 multi-hot rows, row i for ``split.clips[i]``.
    """

    labels: tuple[str, ...]
    targets: np.ndarray


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing; tagging needs a SynthCaps set ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not UTF-8 JSON ({exc}); expected SynthCaps {what}") from None


def synthcaps_labels(root: str | Path) -> tuple[str, ...]:
    """The event types of the SynthCaps set at `root`, in the order its options file lists them."""
    path = Path(root) / OPTIONS_FILE
    options = _read_json(path, "generator options")
    types = options.get("event_types") if isinstance(options, dict) else None
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise InputError(f"{path}: field 'event_types' must be a non-empty list of strings")
    return tuple(types)


def read_clip_tags(root: str | Path, split: SplitData, split_name: str,
                   labels: tuple[str, ...] | None = None) -> ClipTags:
    """The labels of every clip of `split` (read from the SynthCaps set at `root`; `split_name` as given to
    `read_split`). `labels` fixes the vocabulary (e.g. the training split's for the validation split);
    by default it is the set's event types. A clip without metadata, or an event type outside the
    vocabulary, raises InputError naming the file and the clip."""
    root = Path(root)
    labels = labels or synthcaps_labels(root)
    column = {name: i for i, name in enumerate(labels)}
    names = SPLIT_ALIASES.get(canonical_split(split_name) or "", (split_name,))
    path = next((p for p in (root / f"synthcaps_metadata_{n}.json" for n in names) if p.is_file()),
                root / f"synthcaps_metadata_{names[0]}.json")
    metadata = _read_json(path, "event metadata")
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: expected a JSON object of clip -> {{'events': [...]}}")
    targets = np.zeros((len(split.clips), len(labels)), dtype=np.float32)
    for row, clip in enumerate(split.clips):
        entry = metadata.get(clip.clip_id, metadata.get(clip.audio_path.name))
        events = entry.get("events") if isinstance(entry, dict) else None
        if not isinstance(events, list):
            raise InputError(f"{path}: no 'events' list for clip {clip.clip_id!r}")
        for event in events:
            kind = event.get("type") if isinstance(event, dict) else None
            if kind not in column:
                raise InputError(f"{path}: clip {clip.clip_id!r} has event type {kind!r}, not one of {list(labels)}")
            targets[row, column[kind]] = 1.0
    return ClipTags(labels, targets)
