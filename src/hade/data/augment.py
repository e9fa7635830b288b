"""Rule-based caption augmentation (stand-in for the ChatGPT paraphrases of Sun et al., paper 004).

No language-model service is reachable, so captions are rewritten by three meaning-preserving rules,
all driven by the caller's `np.random.Generator` (same seed -> same output):

1. Synonym substitution from a small table of sound-description words (dog/hound, barks/yaps, car/vehicle,
   people/persons, loud/noisy, quietly/softly, ...), each occurrence with probability `synonym_prob`;
   groups never cross attribute values that captions use to tell clips apart (loud vs quiet, high vs
   low, short vs long), and "a"/"an" before a replaced word is fixed.
2. Clause reordering for simultaneity only: "X while Y" / "X as Y" -> "Y while/as X",
   and "X and Y at the same time" / "... simultaneously" -> "Y and X ...", with probability `swap_prob`
   per segment. The caption is first cut at commas, semicolons and order-bearing words ("then", "after",
   "before", "followed by", "afterwards", "finally", "first", "next", "later", "until", "once",
   "as soon as", ...); pieces never move across those cuts, so temporal order is kept. A plain "and" is
   only swapped with `swap_plain_and=True` (in captions it often means "and then"). Guards skip "such as",
   "as if", "as ... as", "while walking" and one-word sides.
3. Removal of filler adverbs ("very", "really", "quite", ...) with probability `filler_prob` each.

A caption no rule applies to is returned unchanged (an empty one included); a non-empty caption never
becomes empty. Leading capital and final punctuation are kept.
"""
from __future__ import annotations

import re

import numpy as np

_GROUPS: tuple[tuple[str, ...], ...] = (
    ("dog", "hound"), ("dogs", "hounds"), ("barks", "yaps", "woofs"), ("barking", "yapping", "woofing"),
    ("bark", "woof"), ("car", "vehicle", "automobile"), ("cars", "vehicles", "automobiles"),
    ("people", "persons", "individuals"), ("person", "individual"), ("man", "guy"), ("men", "guys"),
    ("woman", "lady"), ("women", "ladies"), ("child", "kid"), ("children", "kids"), ("baby", "infant"),
    ("loud", "noisy"), ("loudly", "noisily"), ("quiet", "soft", "faint"), ("quietly", "softly", "faintly"),
    ("talk", "speak"), ("talks", "speaks"), ("talking", "speaking"), ("talked", "spoke"),
    ("rapidly", "quickly"), ("rapid", "quick"), ("brief", "short"), ("briefly", "shortly"),
    ("high-pitched", "shrill"), ("low-pitched", "deep"), ("sound", "noise"), ("sounds", "noises"),
    ("engine", "motor"), ("engines", "motors"), ("large", "big"), ("small", "little"),
    ("several", "multiple"), ("continuously", "constantly"), ("starts", "begins"), ("start", "begin"),
    ("starting", "beginning"), ("knocks", "raps"), ("knocking", "rapping"),
    ("distant", "faraway"), ("chirp", "tweet"), ("chirps", "tweets"), ("chirping", "tweeting"),
)
SYNONYMS: dict[str, tuple[str, ...]] = {w: tuple(x for x in g if x != w) for g in _GROUPS for w in g}
SYNONYMS["briefly"] = ("for a moment",)  # "shortly" means "soon": only one way round
SYNONYMS["shortly"] = ()
SYNONYMS["little"] = ()  # "a little louder": only small -> little
FILLERS = frozenset({"very", "really", "quite", "fairly", "somewhat", "also"})
_NEGATIONS = frozenset({"not", "never", "isn't", "aren't", "wasn't", "don't", "doesn't", "no"})
_ORDER = ("as soon as", "and then", "and afterwards", "and finally", "after which", "followed by", "afterwards",
          "afterward", "then", "after", "before", "finally", "first", "next", "later", "until", "once",
          "subsequently", "eventually", "meanwhile")
_CUT = re.compile(r"(\s*[,;:]\s*|\s*\b(?:" + "|".join(re.escape(w) for w in _ORDER) + r")\b\s*)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SIMULTANEOUS = (" at the same time", " simultaneously", " together")
_PREPOSITIONS = frozenset({"in", "on", "at", "by", "with", "from", "to", "into", "under", "over", "near", "inside",
                           "outside", "being", "if", "though", "well", "soon", "long", "far", "much", "many",
                           "usual", "expected", "before", "after", "a result"})
_NOT_BEFORE_AS = frozenset({"such", "same", "so", "just", "known", "as", "regarded", "used"})


def _case_like(word: str, model: str) -> str:
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


def _substitute(text: str, rng: np.random.Generator, prob: float) -> str:
    """Replace table words (each occurrence with probability `prob`); fix a/an before replaced words."""
    out, last = [], 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        options = SYNONYMS.get(word.lower(), ())
        if not options or rng.random() >= prob:
            continue
        new = _case_like(str(options[int(rng.integers(len(options)))]), word)
        before = text[last:m.start()]
        art = re.search(r"\b(a|an|A|An)(\s+)$", before)
        if art:
            article = "an" if new[:1].lower() in "aeiou" else "a"
            before = before[:art.start()] + _case_like(article, art.group(1)) + art.group(2)
        out += [before, new]
        last = m.end()
    return "".join(out) + text[last:]


def _sides_ok(left: str, right: str, connector: str) -> bool:
    lw, rw = left.split(), right.split()
    if len(lw) < 2 or len(rw) < 2:
        return False
    first = rw[0].lower()
    if connector != "and" and (first in _PREPOSITIONS or first.endswith(("ing", "ed"))):
        return False  # "while walking", "as if", "as soon as", "while in the car"
    if connector == "as" and lw[-1].lower() in _NOT_BEFORE_AS:
        return False  # "such as", "the same as"
    return True


def _swap(segment: str, rng: np.random.Generator, prob: float, plain_and: bool) -> str:
    """Swap the two sides of the one simultaneity connector of a segment free of order words and commas."""
    lead = segment[:len(segment) - len(segment.lstrip())]
    trail = segment[len(segment.rstrip()):]
    body = segment.strip()
    suffix = next((s for s in _SIMULTANEOUS if body.lower().endswith(s)), "")
    core = body[:len(body) - len(suffix)]
    lower = f" {core.lower()} "
    counts = {c: lower.count(f" {c} ") for c in ("while", "whilst", "as", "and")}
    primary = [c for c in ("while", "whilst", "as") if counts[c]]
    if len(primary) == 1 and counts[primary[0]] == 1:
        connector = primary[0]  # an "and" inside one side ("loudly and rapidly") is fine
    elif not primary and counts["and"] == 1 and (suffix or plain_and):
        connector = "and"
    else:
        return segment  # no connector, or several: ambiguous structure, leave it
    idx = lower.index(f" {connector} ")  # `lower` is `core` with one leading space: core[idx] starts it
    left, word, right = core[:idx - 1], core[idx:idx + len(connector)], core[idx + len(connector) + 1:]
    if not _sides_ok(left, right, connector) or rng.random() >= prob:
        return segment
    head = left.split()[0]
    if head[:1].isupper() and head != "I" and (len(head) == 1 or head[1:].islower()):  # sentence start
        left, right = left[:1].lower() + left[1:], right[:1].upper() + right[1:]
    return f"{lead}{right} {word} {left}{suffix}{trail}"


def _drop_fillers(text: str, rng: np.random.Generator, prob: float) -> str:
    for filler in sorted(FILLERS, key=len, reverse=True):
        pattern = re.compile(rf"\b{re.escape(filler)}\b\s+(?=\S)", re.IGNORECASE)
        for m in reversed(list(pattern.finditer(text))):
            previous = text[:m.start()].split()[-1:]
            if previous and previous[0].lower() in _NEGATIONS:
                continue  # "not very loud" is not "not loud"
            candidate = text[:m.start()] + text[m.end():]
            if candidate.strip(" .!?") and rng.random() < prob:
                if m.start() == 0 or not text[:m.start()].strip():
                    candidate = candidate[:m.start()] + _case_like(candidate[m.start():], m.group(0))
                text = candidate
    return text


def paraphrase(caption: str, rng: np.random.Generator, *, synonym_prob: float = 0.5, swap_prob: float = 0.5,
               filler_prob: float = 0.5, swap_plain_and: bool = False) -> str:
    """A meaning-preserving rewrite of `caption`; deterministic given the state of `rng`."""
    if not caption.strip():
        return caption
    pieces = _CUT.split(caption)  # odd indices: separators (order words / punctuation), kept verbatim
    for i in range(0, len(pieces), 2):
        if pieces[i].strip():
            end = re.search(r"[.!?]+\s*$", pieces[i])
            tail = end.group(0) if end else ""
            pieces[i] = _swap(pieces[i][:len(pieces[i]) - len(tail)], rng, swap_prob, swap_plain_and) + tail
    text = "".join(pieces)
    text = _substitute(text, rng, synonym_prob)
    text = _drop_fillers(text, rng, filler_prob)
    return text if text.strip(" .!?,;:") else caption


class CaptionAugmenter:
    """Training-time augmentation: with probability `prob` a caption is replaced by `paraphrase(caption)`.

    `__call__(caption, rng)` draws from `rng`; without one it uses its own generator seeded by `seed`.
    """

    def __init__(self, prob: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"CaptionAugmenter: prob must be in [0, 1], got {prob!r}")
        self.prob = prob
        self.rng = np.random.default_rng(seed)

    def __call__(self, caption: str, rng: np.random.Generator | None = None) -> str:
        rng = self.rng if rng is None else rng
        if self.prob <= 0.0 or rng.random() >= self.prob:
            return caption
        return paraphrase(caption, rng)
