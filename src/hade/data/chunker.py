"""A light rule-based phrase chunker for audio captions (no tagger, no model download).

`chunk(caption)` returns the character spans of the caption's noun chunks ("a loud dog", "two high-pitched
beeps", "the background") and verb chunks ("barks twice", "is knocked on slowly", "can be heard"), in
order. HCI's segment–phrase level pools the word pieces inside each span into one phrase vector.

Rules (closed word lists below; everything else is an open-class word):

1. Words are runs of letters/digits with inner hyphens or apostrophes ("high-pitched", "dog's").
2. Separators end the current chunk and belong to no chunk: punctuation, conjunctions (and, or, but),
   temporal connectives (then, while, after, before, as, when, until, followed, finally, first,
   afterwards, together, throughout, which ...) and prepositions (of, on, in, at, with, over, by ...).
   Exception — particles: in a verb chunk, a preposition such as on/by/off that is followed by the end,
   a separator or an adverb stays in the verb chunk ("is knocked on slowly", "a person walks by").
3. Noun chunk = determiners / numbers / adjectives / nouns: a chunk starts at any open-class word,
   determiner, number or pronoun, and goes on until a separator, an adverb, or a verb start.
4. A verb starts inside a noun chunk that already has a noun-like word (not a determiner, number or
   adjective) at: an auxiliary or modal (is, are, can, ...); a known verb form (heard, struck, ...); a
   word ending in -s (not -ss) unless the chunk began with a number > 1 ("a dog barks" vs "two dog
   barks"); a word ending in -ing / -ed ("a bell ring repeated twice"); or any open-class word that
   follows a plural noun ("birds sing", "people clap").
5. Verb chunk = verb + auxiliaries/participles + adverbs (-ly words and a list: twice, once, out,
   upward ...), plus "N times" ("sounds three times"); after an auxiliary any non-determiner continues it
   ("is audible", "can be heard"). A determiner, number or noun after the verb starts a new noun chunk
   ("plays | a note").
6. A stray adverb outside a verb chunk ("Here, ...") starts no chunk.

It is a heuristic: without a lexicon, noun-noun compounds ending in -s after a singular noun ("hand
claps") are read as clauses. The rules are tuned on SynthCaps captions and read well on Clotho-style
sentences; they only decide how HCI groups words, so an error costs a less clean phrase, never a crash.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*|[,;:.!?()\"]")

CONJUNCTIONS = frozenset("and or but nor yet so".split())
CONNECTIVES = frozenset(
    "then while whilst after afterwards before as when whenever until till followed finally first next later "
    "meanwhile together throughout during which whereas although though because since where whose".split())
PREPOSITIONS = frozenset(
    "of on in at over under with without from to into onto by for against through near behind across along "
    "around above below beside besides between inside outside toward towards upon amid among within like "
    "off via beneath underneath".split())
PARTICLES = frozenset("on off by up down over along around in out away back".split())
SEPARATORS = CONJUNCTIONS | CONNECTIVES | PREPOSITIONS
DETERMINERS = frozenset(
    "a an the this that these those some any each every another its their his her our my your no only just "
    "such".split())
PLURAL_NUMBERS = frozenset(
    "two three four five six seven eight nine ten eleven twelve several many multiple numerous few various "
    "countless dozens".split())
NUMBERS = PLURAL_NUMBERS | {"one", "single"}
PRONOUNS = frozenset("someone somebody something it they he she we you people everyone nobody nothing".split())
AUXILIARIES = frozenset(
    "is are was were be been being am can could will would may might must shall should has have had do does "
    "did keeps keep gets get".split())
VERBS = frozenset("heard struck made seen begun run rung sung blown thrown".split())
ADVERBS = frozenset(
    "twice once again repeatedly continuously constantly briefly out off away up down upward upwards downward "
    "downwards nearby far still also too very quite rather slightly loudly quietly softly gently there here "
    "now just only even almost simultaneously intermittently periodically steadily suddenly then".split())
ADJECTIVES = frozenset(
    "loud quiet faint soft short brief long high low deep fast rapid slow prolonged distant small large big "
    "little heavy light sharp steady constant continuous single electronic mechanical metallic pure harmonic "
    "rising falling same other different strong weak gentle noisy muffled distorted clear crisp shrill dull "
    "hard".split())
IRREGULAR_PLURALS = frozenset("people men women children geese mice feet teeth sheep cattle".split())


def _is_adverb(w: str) -> bool:
    return w in ADVERBS or (w.endswith("ly") and len(w) > 4 and w not in ADJECTIVES | {"family", "fly"})


def _is_plural_noun(w: str) -> bool:
    return w in IRREGULAR_PLURALS or (w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3)


def _noun_like(w: str) -> bool:
    """An open-class word that can head a noun chunk (not a determiner, number or adjective)."""
    return not (w in DETERMINERS or w in NUMBERS or w in ADJECTIVES or "-" in w or w.isdigit())


def _verb_start(w: str, prev: str, plural_chunk: bool) -> bool:
    """Rule 4: does open-class word `w` after `prev` (inside a noun chunk with a noun) start a verb?"""
    if w in AUXILIARIES or w in VERBS:
        return True
    if w in DETERMINERS or w in NUMBERS or w in ADJECTIVES or "-" in w or _is_adverb(w) or w.isdigit():
        return False
    if not _noun_like(prev):
        return False
    if w.endswith(("ing", "ed")) and len(w) > 4:
        return True
    if w.endswith("s") and not w.endswith("ss") and len(w) > 2:
        return not plural_chunk
    return _is_plural_noun(prev) and not w.endswith("s")


class _Chunker:
    """The left-to-right state machine of `chunk_labeled`: one method per state ("" outside a chunk, "NP",
    "VP"), each deciding whether word `w` extends the open chunk, opens a new one or closes it."""

    def __init__(self) -> None:
        self.out: list[tuple[int, int, str]] = []
        self.state, self.start, self.end = "", 0, 0
        self.has_noun, self.plural_chunk, self.after_aux = False, False, False

    def close(self) -> None:
        if self.state:
            self.out.append((self.start, self.end, self.state))
        self.state = ""

    def open(self, kind: str, s: int, e: int) -> None:
        self.close()
        self.state, self.start, self.end = kind, s, e
        self.has_noun, self.plural_chunk, self.after_aux = False, False, False

    def open_np(self, w: str, s: int, e: int) -> None:
        self.open("NP", s, e)
        self.plural_chunk = w in PLURAL_NUMBERS
        self.has_noun = _noun_like(w)

    def open_vp(self, w: str, s: int, e: int) -> None:
        self.open("VP", s, e)
        self.after_aux = w in AUXILIARIES

    def in_vp(self, w: str, s: int, e: int) -> None:
        if (_is_adverb(w) or w in AUXILIARIES or w in VERBS or w.endswith(("ing", "ed"))
                or (self.after_aux and w not in DETERMINERS and w not in NUMBERS and w not in PRONOUNS)):
            self.end = e
            self.after_aux = w in AUXILIARIES
        else:
            self.open_np(w, s, e)

    def in_np(self, w: str, s: int, e: int, last_word: str) -> None:
        if w in AUXILIARIES or (self.has_noun and _verb_start(w, last_word, self.plural_chunk)):
            self.open_vp(w, s, e)
        elif _is_adverb(w) and w not in DETERMINERS:
            self.close()
        elif self.has_noun and (w in DETERMINERS or w in PRONOUNS):
            self.open("NP", s, e)
            self.has_noun = w in PRONOUNS
        else:
            self.end = e
            self.has_noun = self.has_noun or _noun_like(w)

    def outside(self, w: str, s: int, e: int) -> None:
        if w in AUXILIARIES or w in VERBS:
            self.open_vp(w, s, e)
        elif not (_is_adverb(w) and w not in DETERMINERS):  # rule 6: an adverb outside a chunk is skipped
            self.open_np(w, s, e)


def _ends_particle(nxt: str) -> bool:
    """Does the word after a particle end the phrasal verb (end of caption, punctuation, separator, adverb)?"""
    return not nxt or not nxt[0].isalnum() or nxt in SEPARATORS or _is_adverb(nxt)


def chunk_labeled(caption: str) -> list[tuple[int, int, str]]:
    """(start, end, "NP" | "VP") character spans of the chunks of `caption`, in order."""
    tokens = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(caption)]
    c = _Chunker()
    last_word, i = "", 0
    while i < len(tokens):
        s, e, w = tokens[i]
        nxt = tokens[i + 1][2] if i + 1 < len(tokens) else ""
        if not w[0].isalnum():  # punctuation
            c.close()
        elif c.state == "VP" and w in PARTICLES and _ends_particle(nxt):
            c.end = e  # particle of a phrasal verb (rule 2 exception)
        elif w in SEPARATORS:
            c.close()
        elif c.state == "VP" and (w in NUMBERS or w.isdigit()) and nxt == "times":
            c.end, i = tokens[i + 1][1], i + 1
        elif c.state == "VP":
            c.in_vp(w, s, e)
        elif c.state == "NP":
            c.in_np(w, s, e, last_word)
        else:
            c.outside(w, s, e)
        last_word = w
        i += 1
    c.close()
    return c.out


def chunk(caption: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the noun and verb chunks of `caption`, in order; `caption[s:e]`
    is the chunk text. A caption made only of separators gives []."""
    return [(s, e) for s, e, _ in chunk_labeled(caption)]


def chunk_texts(caption: str) -> list[str]:
    """The chunks as strings (for reading and tests)."""
    return [caption[s:e] for s, e in chunk(caption)]


def token_phrase_index(captions: list[str], offsets: "torch.Tensor") -> "torch.Tensor":
    """Phrase id of every token: offsets [B, N, 2] (the tokenizer's character offset mapping, (0, 0) on
    special and padding tokens) -> [B, N] long, p for a token overlapping chunk p of its caption, -1 for
    tokens in no chunk (special tokens, padding, separators, punctuation)."""
    import torch

    spans = [chunk(c) for c in captions]
    most = max((len(s) for s in spans), default=0)
    out = torch.full(offsets.shape[:2], -1, dtype=torch.long)
    if most == 0:
        return out
    table = torch.zeros(len(captions), most, 2, dtype=torch.long)
    valid = torch.zeros(len(captions), most, dtype=torch.bool)
    for b, s in enumerate(spans):
        if s:
            table[b, :len(s)] = torch.tensor(s, dtype=torch.long)
            valid[b, :len(s)] = True
    offsets = offsets.to(torch.long)
    tok_s, tok_e = offsets[..., 0, None], offsets[..., 1, None]  # [B, N, 1]
    hit = (tok_s < table[:, None, :, 1]) & (tok_e > table[:, None, :, 0]) & (tok_e > tok_s) & valid[:, None]
    found = hit.any(-1)
    out[found] = hit.int().argmax(-1)[found]
    return out
