"""SynthCaps captions: natural sentences from scenes, with synonyms, varied templates and attributes.

Captions keep the temporal structure: steps in their order ("then", "followed by", "after"), overlapping
events ("while", "as", "at the same time"), backgrounds ("over a background of"), counts ("twice", "three
times").  Attributes are mentioned at random, except the ones marked as focus (those that distinguish the
hard negatives of a group), which every caption mentions.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .events import EVENT_TYPES, article
from .scenes import EventInstance, Scene, scene_from_events

ADJECTIVES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pitch", "high"): ("high-pitched", "high"), ("pitch", "low"): ("low-pitched", "low", "deep"),
    ("loudness", "loud"): ("loud",), ("loudness", "quiet"): ("quiet", "faint", "soft"),
    ("duration", "short"): ("short", "brief"), ("duration", "long"): ("long", "prolonged", "drawn-out"),
    ("repetition", "fast"): ("fast", "rapid"), ("repetition", "slow"): ("slow",),
}
ADVERBS: dict[tuple[str, str], tuple[str, ...]] = {
    ("pitch", "high"): ("at a high pitch", "in a high tone"), ("pitch", "low"): ("at a low pitch", "in a deep tone"),
    ("loudness", "loud"): ("loudly",), ("loudness", "quiet"): ("quietly", "softly", "faintly"),
    ("duration", "short"): ("briefly",), ("duration", "long"): ("for a long time", "at length"),
    ("repetition", "fast"): ("rapidly", "quickly"), ("repetition", "slow"): ("slowly",),
}
ATTRIBUTE_ORDER = ("loudness", "duration", "repetition", "pitch")
NUMBERS = {2: "two", 3: "three"}
TIMES = {1: "once", 2: "twice", 3: "three times"}
MAX_MODIFIERS = 2


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def plural(noun: str) -> str:
    """Plural of a noun phrase: the head noun before ' of ' / ' on ' gets the suffix."""
    for sep in (" of ", " on "):
        if sep in noun:
            head, rest = noun.split(sep, 1)
            return plural(head) + sep + rest
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    return noun + "s"


def _mentions(ev: EventInstance, rng: np.random.Generator) -> list[str]:
    """Attributes to mention: every focus attribute, others with probability 1/2, at most two."""
    present = [a for a in ATTRIBUTE_ORDER if a in ev.attributes]
    chosen = [a for a in present if a in ev.focus] + [a for a in present if a not in ev.focus and rng.random() < 0.5]
    keep = chosen[:MAX_MODIFIERS]
    return [a for a in ATTRIBUTE_ORDER if a in keep]


def _say_count(ev: EventInstance, rng: np.random.Generator) -> bool:
    return ev.count > 1 or ("count" in ev.focus and rng.random() < 0.6)


def noun_phrase(ev: EventInstance, rng: np.random.Generator) -> str:
    """'a loud dog bark', 'two high-pitched beeps', 'rain', 'a bell ring heard three times'."""
    spec = EVENT_TYPES[ev.type]
    adjs = [_pick(rng, ADJECTIVES[(a, ev.attributes[a])]) for a in _mentions(ev, rng)]
    options = [(n, True) for n in spec.nouns] + [(m, False) for m in spec.mass_nouns]
    noun, countable = options[int(rng.integers(len(options)))]
    say_count = _say_count(ev, rng)
    if say_count and ev.count > 1 and countable and rng.random() < 0.5:
        return " ".join([NUMBERS[ev.count]] + adjs + [plural(noun)])
    if say_count and ev.count == 1 and countable:
        return " ".join([_pick(rng, ("a single", "only one", "just one"))] + adjs + [noun])
    body = " ".join(adjs + [noun])
    phrase = article(body) if countable else body
    if say_count:
        phrase += (_pick(rng, (" repeated ", " heard ", " ")) if ev.count > 1 else " just ") + TIMES[ev.count]
    return phrase


def clause(ev: EventInstance, rng: np.random.Generator) -> str:
    """'a dog barks loudly twice at a high pitch', 'rain falls softly'."""
    spec = EVENT_TYPES[ev.type]
    words, tails = [], []
    for a in _mentions(ev, rng):
        adv = _pick(rng, ADVERBS[(a, ev.attributes[a])])
        (tails if " " in adv else words).append(adv)
    words = [" and ".join(words)] if words else []
    if _say_count(ev, rng):
        words.append(TIMES[ev.count])
    return " ".join([_pick(rng, spec.clauses)] + words + tails)


def _phrase(ev: EventInstance, form: str, rng: np.random.Generator) -> str:
    return noun_phrase(ev, rng) if form == "noun" else clause(ev, rng)


def _step(step: list[EventInstance], rng: np.random.Generator) -> tuple[str, str]:
    """Text of one step and its grammatical form ('noun' or 'clause')."""
    form = "noun" if rng.random() < 0.5 else "clause"
    if len(step) == 1:
        return _phrase(step[0], form, rng), form
    a, b = (step[0], step[1]) if rng.random() < 0.7 else (step[1], step[0])
    choice = int(rng.integers(4))
    if choice == 0:
        return f"{_phrase(a, form, rng)} while {clause(b, rng)}", form
    if choice == 1:
        return f"{_phrase(a, form, rng)} as {clause(b, rng)}", form
    if choice == 2:
        return f"{_phrase(a, form, rng)} and {_phrase(b, form, rng)} at the same time", form
    return f"{noun_phrase(a, rng)} together with {noun_phrase(b, rng)}", "noun"


def _sequence(parts: list[tuple[str, str]], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0][0]
    if len(parts) == 2 and rng.random() < 0.25:
        (s1, _), (s2, _) = parts
        return f"{s2} after {s1}" if rng.random() < 0.5 else f"{s1} before {s2}"
    out = ("first " if rng.random() < 0.2 else "") + parts[0][0]
    for i, (text, form) in enumerate(parts[1:], start=1):
        options = [", then ", " and then "]
        options += [", followed by "] if form == "noun" else [", after which ", ", and afterwards "]
        if i == len(parts) - 1 and len(parts) >= 3:
            options.append(", and finally ")
        out += _pick(rng, options) + text
    return out


def _with_background(core: str, first_form: str, bg: EventInstance, rng: np.random.Generator) -> str:
    templates = ["{core} over a background of {bn}", "{core}, with {bn} in the background",
                 "against a background of {bn}, {core}"]
    if " while " not in core:
        templates.append("{core} while {bc} in the background")
    if first_form == "clause" and " as " not in core:
        templates.append("{bc} throughout as {core}")
    t = _pick(rng, templates)
    bn = noun_phrase(bg, rng) if "{bn}" in t else ""
    bc = clause(bg, rng) if "{bc}" in t else ""
    return t.format(core=core, bn=bn, bc=bc)


def _finish(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] + "."


def caption_for_scene(scene: Scene, rng: np.random.Generator) -> str:
    """One caption for a scene."""
    parts = [_step(step, rng) for step in scene.steps]
    core = _sequence(parts, rng) if parts else ""
    single = len(scene.steps) == 1 and len(scene.steps[0]) == 1 and scene.background is None
    if single and parts[0][1] == "noun" and " heard " not in core and rng.random() < 0.4:
        core = _pick(rng, ("the sound of {}", "{} can be heard", "{} is audible")).format(core)
    if scene.background is not None:
        core = _with_background(core, parts[0][1], scene.background, rng) if parts else clause(scene.background, rng)
    return _finish(core)


def scene_captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` different captions for one scene."""
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(60 * n):
        c = caption_for_scene(scene, rng)
        if c.lower() not in seen:
            seen.add(c.lower())
            out.append(c)
            if len(out) == n:
                return out
    frames = ("In this recording, {}", "Here, {}", "In this clip, {}", "Listen: {}")
    for frame in frames:  # only for tiny vocabularies: reframe the captions we have
        for c in list(out):
            framed = frame.format(c[:1].lower() + c[1:])
            if framed.lower() not in seen and len(out) < n:
                seen.add(framed.lower())
                out.append(framed)
    return out


def caption_for_events(events: Sequence[EventInstance | dict[str, Any]], rng: np.random.Generator) -> str:
    """One caption for events given as `EventInstance`s or metadata records (type, start, end,
    attributes, count[, role, step]); without role/step the structure is inferred from the times."""
    return caption_for_scene(scene_from_events(events), rng)
