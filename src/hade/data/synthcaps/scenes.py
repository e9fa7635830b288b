"""SynthCaps clip composition: scenes of 1-4 events, hard-negative groups, timing and mixing.

A scene is a sequence of *steps* (played one after the other); a step holds one event or two overlapping
events ("A while B"); an optional *background* event spans the whole clip ("over a background of rain").
Clips are made in small groups that share their bag of event types but differ in step order, one
attribute or one count, so that a bag-of-events embedding cannot tell them apart.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .events import ATTRIBUTE_VALUES, EVENT_TYPES, event_length, render_event

MAX_EVENTS = 4
BACKGROUND_GAIN = 0.5  # backgrounds sit 6 dB under the foreground
PEAK_LIMIT = 0.9  # mixes louder than this are scaled down (never up), so nothing clips


@dataclass
class EventInstance:
    """One event of a clip.

    role: "sequence" (the main event of a step), "concurrent" (overlaps the main event of its step) or
    "background" (spans the clip).  focus: attribute names (or "count") every caption must mention, set on
    the attributes that distinguish hard negatives of one group.  start/end/onsets are seconds, filled by
    `layout_scene`; occurrence is the length of one occurrence.
    """

    type: str
    attributes: dict[str, str] = field(default_factory=dict)
    count: int = 1
    role: str = "sequence"
    step: int | None = 0
    focus: tuple[str, ...] = ()
    start: float = 0.0
    end: float = 0.0
    onsets: list[float] = field(default_factory=list)
    occurrence: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Metadata record (the layout of synthcaps_metadata_{split}.json)."""
        return {"type": self.type, "start": round(self.start, 4), "end": round(self.end, 4),
                "attributes": dict(sorted(self.attributes.items())), "count": self.count, "role": self.role,
                "step": self.step, "onsets": [round(t, 4) for t in self.onsets], "focus": list(self.focus)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EventInstance:
        return cls(type=str(d["type"]), attributes=dict(d.get("attributes") or {}), count=int(d.get("count", 1)),
                   role=str(d.get("role", "sequence")), step=d.get("step"), focus=tuple(d.get("focus", ())),
                   start=float(d.get("start", 0.0)), end=float(d.get("end", 0.0)),
                   onsets=[float(t) for t in d.get("onsets", [])])


@dataclass
class Scene:
    """Steps played in order (each one event, or a main event plus one overlapping event) and a background."""

    steps: list[list[EventInstance]]
    background: EventInstance | None = None

    def events(self) -> list[EventInstance]:
        """All events: background first, then steps in order."""
        out = [self.background] if self.background else []
        return out + [e for step in self.steps for e in step]

    def bag(self) -> tuple[str, ...]:
        """The sorted multiset of event types (what a bag-of-events model sees)."""
        return tuple(sorted(e.type for e in self.events()))

    def signature(self) -> tuple:
        """Everything a caption can express; two scenes of one group always differ here."""
        def sig(e: EventInstance) -> tuple:
            return (e.type, tuple(sorted(e.attributes.items())), e.count)
        bg = sig(self.background) if self.background else None
        return (bg, tuple(tuple(sorted(sig(e) for e in step)) for step in self.steps))


def _has_roles(evs: list[EventInstance]) -> bool:
    """Do the records carry their roles and steps (scenes written by this generator)?"""
    return (all(e.role in ("sequence", "concurrent", "background") and (e.step is not None or e.role == "background")
                for e in evs) and any(e.role == "sequence" for e in evs))


def _scene_from_roles(evs: list[EventInstance]) -> Scene:
    bg = next((e for e in evs if e.role == "background"), None)
    n_steps = max(e.step for e in evs if e.role != "background") + 1
    steps: list[list[EventInstance]] = [[] for _ in range(n_steps)]
    for e in evs:
        if e.role != "background":
            steps[e.step].append(e)
    for s in steps:
        s.sort(key=lambda e: e.role != "sequence")
    return Scene([s for s in steps if s], bg)


def _scene_from_times(evs: list[EventInstance]) -> Scene:
    """A long event covering the others is the background; overlapping events share a step."""
    evs = sorted(evs, key=lambda e: (e.start, -e.end))
    bg = None
    if len(evs) >= 2:
        span = max(e.end for e in evs) - min(e.start for e in evs)
        first = evs[0]
        if span > 0 and first.end - first.start >= 0.9 * span:
            bg, evs = first, evs[1:]
    steps: list[list[EventInstance]] = []
    for e in evs:
        if steps and len(steps[-1]) == 1 and e.start < steps[-1][0].end:
            steps[-1].append(e)
        else:
            steps.append([e])
    return Scene(steps, bg)


def scene_from_events(events: Sequence[EventInstance | dict[str, Any]]) -> Scene:
    """Rebuild a scene from event records; roles/steps are used when present, else inferred from times."""
    evs = [e if isinstance(e, EventInstance) else EventInstance.from_dict(e) for e in events]
    if not evs:
        raise ValueError("a scene needs at least one event")
    return _scene_from_roles(evs) if _has_roles(evs) else _scene_from_times(evs)


# ---------------------------------------------------------------------------------------------- sampling
def _sample_attributes(name: str, rng: np.random.Generator) -> dict[str, str]:
    attrs = {}
    for a in EVENT_TYPES[name].attributes:
        if rng.random() < 0.45:
            attrs[a] = str(ATTRIBUTE_VALUES[a][int(rng.integers(2))])
    return attrs


def sample_scene(rng: np.random.Generator, types: Sequence[str]) -> Scene:
    """A random scene of 1-4 distinct event types drawn from `types`."""
    k = int(rng.choice([1, 2, 3, 4], p=[0.12, 0.36, 0.32, 0.2]))
    k = min(k, len(types), MAX_EVENTS)
    chosen = [str(t) for t in rng.choice(np.asarray(sorted(types)), size=k, replace=False)]
    background = None
    if k >= 2 and rng.random() < 0.4:
        textures = [t for t in chosen if EVENT_TYPES[t].background]
        if textures:
            bt = textures[int(rng.integers(len(textures)))]
            chosen.remove(bt)
            background = EventInstance(bt, _sample_attributes(bt, rng), 1, "background", None)
    steps: list[list[EventInstance]] = []
    i = 0
    while i < len(chosen):
        t = chosen[i]
        step = [EventInstance(t, _sample_attributes(t, rng), _sample_count(t, rng), "sequence", len(steps))]
        if i + 1 < len(chosen) and rng.random() < 0.3:
            u = chosen[i + 1]
            step.append(EventInstance(u, _sample_attributes(u, rng), _sample_count(u, rng), "concurrent", len(steps)))
            i += 1
        steps.append(step)
        i += 1
    return Scene(steps, background)


def _sample_count(name: str, rng: np.random.Generator) -> int:
    if not EVENT_TYPES[name].countable:
        return 1
    return int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))


def _find(scene: Scene, name: str) -> EventInstance:
    return next(e for e in scene.events() if e.type == name)


def _add_focus(e: EventInstance, what: str) -> None:
    if what not in e.focus:
        e.focus = tuple(sorted(e.focus + (what,)))


def _plan_variations(rng: np.random.Generator, base: Scene, variants: int) -> list[tuple[str, Any]]:
    """What each of up to `variants` variants changes: ("attribute", (type, attribute)), ("count", type) or
    ("order", None); distinct kinds first.  An attribute to vary is given a value in `base` if it had none."""
    attr_targets = [(e.type, a) for e in base.events() for a in EVENT_TYPES[e.type].attributes]
    count_targets = [e.type for e in base.events() if EVENT_TYPES[e.type].countable and e.role != "background"]
    kinds = ["attribute"] + (["order"] if len(base.steps) >= 2 else []) + (["count"] if count_targets else [])
    first = [str(k) for k in rng.permutation(kinds)]
    plan: list[tuple[str, Any]] = []
    for j in range(variants):
        kind = first[j] if j < len(first) else kinds[int(rng.integers(len(kinds)))]
        if kind == "attribute":
            unused = [t for t in attr_targets if ("attribute", t) not in plan]
            if not unused:
                continue
            target = unused[int(rng.integers(len(unused)))]
            _find(base, target[0]).attributes.setdefault(target[1], ATTRIBUTE_VALUES[target[1]][int(rng.integers(2))])
            plan.append(("attribute", target))
        elif kind == "count":
            plan.append(("count", count_targets[int(rng.integers(len(count_targets)))]))
        else:
            plan.append(("order", None))
    return plan


def _vary(base: Scene, kind: str, target: Any, rng: np.random.Generator) -> tuple[Scene, list[tuple[str, str]]]:
    """A copy of `base` changed as planned, and the (event type, what) focus marks the change asks for."""
    v = copy.deepcopy(base)
    if kind == "attribute":
        name, attr = target
        ev = _find(v, name)
        ev.attributes[attr] = next(x for x in ATTRIBUTE_VALUES[attr] if x != ev.attributes[attr])
        return v, [(name, attr)]
    if kind == "count":
        ev = _find(v, target)
        ev.count = int(rng.choice([c for c in (1, 2, 3) if c != ev.count]))
        return v, [(target, "count")]
    order = list(rng.permutation(len(v.steps)))
    if order == sorted(order):
        order = order[1:] + order[:1]
    v.steps = [v.steps[i] for i in order]
    for i, step in enumerate(v.steps):
        for e in step:
            e.step = i
    return v, []


def make_group(rng: np.random.Generator, types: Sequence[str], size: int) -> list[Scene]:
    """`size` scenes with one bag of event types: a base scene and variants that differ from it in step
    order, one attribute value or one event count.  The varied attribute / count is marked as focus in
    every member, so that all their captions mention it."""
    base = sample_scene(rng, types)
    if size <= 1:
        return [base]
    members, sigs = [base], {base.signature()}
    for kind, target in _plan_variations(rng, base, size - 1):
        for _ in range(8):  # a variant equal to an earlier member is drawn again
            v, marks = _vary(base, kind, target, rng)
            if v.signature() not in sigs:
                members.append(v)
                sigs.add(v.signature())
                for name, what in marks:
                    for m in members:
                        _add_focus(_find(m, name), what)
                break
    while len(members) < size:  # only reached for degenerate subsets: pad with fresh scenes
        members.append(sample_scene(rng, types))
    return members


# ---------------------------------------------------------------------------------------------- timing
def layout_scene(scene: Scene, duration: float, rng: np.random.Generator) -> Scene:
    """Give every event its start/end/onsets inside a clip of `duration` seconds (in place).

    Steps follow one another with short gaps; a concurrent event starts within the first 40% of its step's
    main event; when the nominal lengths do not fit, every length and gap is scaled down together.
    """
    lead = float(rng.uniform(0.05, 0.3))
    gaps = [float(rng.uniform(0.15, 0.45)) for _ in scene.steps[1:]]
    plans = []  # per step: [(event, offset, occurrence, repeat gap)]
    lengths = []
    for step in scene.steps:
        items, step_len = [], 0.0
        for j, e in enumerate(step):
            occ = event_length(e.type, e.attributes) * float(rng.uniform(0.85, 1.15))
            rep_gap = min(max(0.35 * occ, 0.06), 0.4)
            span = e.count * occ + (e.count - 1) * rep_gap
            offset = 0.0 if j == 0 else float(rng.uniform(0.0, 0.4)) * items[0][4]
            items.append((e, offset, occ, rep_gap, span))
            step_len = max(step_len, offset + span)
        plans.append(items)
        lengths.append(step_len)
    tail = 0.05 * duration
    total = lead + sum(lengths) + sum(gaps)
    avail = duration - tail
    scale = min(1.0, avail / total)
    if scale == 1.0:
        lead += float(rng.uniform(0.0, 0.5)) * (avail - total)
    t = lead * scale
    for i, items in enumerate(plans):
        for e, offset, occ, rep_gap, span in items:
            occ_s = max(occ * scale, 0.02)
            e.onsets = [t + (offset + r * (occ + rep_gap)) * scale for r in range(e.count)]
            e.occurrence, e.start = occ_s, e.onsets[0]
            e.end = min(e.onsets[-1] + occ_s, duration)
        t += lengths[i] * scale + (gaps[i] * scale if i < len(gaps) else 0.0)
    if scene.background is not None:
        bg = scene.background
        bg.start = float(rng.uniform(0.0, 0.05)) * duration
        bg.end, bg.onsets, bg.occurrence = duration, [bg.start], duration - bg.start
    return scene


def render_scene(scene: Scene, sample_rate: int, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Mix a laid-out scene to `duration` seconds of float32 mono; scaled down if the peak exceeds 0.9."""
    n = int(round(duration * sample_rate))
    mix = np.zeros(n)
    for e in scene.events():
        gain = BACKGROUND_GAIN if e.role == "background" else 1.0
        for onset in e.onsets:
            s = int(round(onset * sample_rate))
            if s >= n:
                continue
            x = render_event(e.type, e.attributes, e.occurrence, sample_rate, rng)[: n - s]
            mix[s:s + len(x)] += gain * x
    peak = float(np.abs(mix).max()) if n else 0.0
    if peak > PEAK_LIMIT:
        mix *= PEAK_LIMIT / peak
    return mix.astype(np.float32)
