"""SynthCaps sound event types: their captioning vocabulary and their numpy synthesis.

Every type has a distinct spectral *and* temporal signature (tones, sweeps, inharmonic decays, band noises,
impulse trains, formant bursts, modulated textures).  Attributes really change the sound: ``pitch`` scales
every frequency, ``loudness`` is +/-12 dB, ``duration`` scales the length of one occurrence and
``repetition`` scales the internal rate (ticks, beeps, syllables, steps ...).
The signal helpers they are built from (tones, band-passed noise, envelopes) are in hade.data.synthcaps.dsp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .dsp import Ctx, ar, band, decay, formants, harmonic, lfo, lim, noise, periodic, poisson, scatter, tone

ATTRIBUTE_VALUES: dict[str, tuple[str, str]] = {
    "pitch": ("high", "low"),
    "loudness": ("loud", "quiet"),
    "duration": ("short", "long"),
    "repetition": ("fast", "slow"),
}
PITCH_FACTOR = {"high": 1.8, "low": 0.55}
LOUDNESS_DB = {"loud": 12.0, "quiet": -12.0}
DURATION_FACTOR = {"short": 0.5, "long": 1.8}
RATE_FACTOR = {"fast": 1.8, "slow": 0.55}
BASE_PEAK = 0.2  # peak amplitude of one occurrence at normal loudness (-14 dBFS)


@dataclass(frozen=True)
class EventSpec:
    """One sound event type.

    nouns: countable noun phrases without article ("dog bark"); mass_nouns: phrases used without article
    ("barking"); clauses: complete clauses ("a dog barks").  attributes: the attribute names that change
    this sound.  duration: nominal seconds of one occurrence.  countable: may occur 2-3 times in a clip.
    background: suited as a texture under other events.
    """

    name: str
    label: str
    nouns: tuple[str, ...]
    mass_nouns: tuple[str, ...]
    clauses: tuple[str, ...]
    attributes: tuple[str, ...]
    duration: float
    countable: bool
    background: bool
    synth: Callable[[Ctx], np.ndarray] = field(repr=False, compare=False)

    @property
    def synonyms(self) -> tuple[str, ...]:
        """Every phrase that names this event (noun phrases with article, mass nouns, clauses)."""
        return tuple(article(n) for n in self.nouns) + self.mass_nouns + self.clauses


def article(phrase: str) -> str:
    """Prefix 'a' or 'an'."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


# ---------------------------------------------------------------------------------------------- synthesis
def _beep(c: Ctx) -> np.ndarray:
    return tone(1000 * c.pitch, c) * ar(c.n, c.sr, 0.005, 0.01)


def _chirp(up: bool) -> Callable[[Ctx], np.ndarray]:
    def synth(c: Ctx) -> np.ndarray:
        lo, hi = 450 * c.pitch, 1900 * c.pitch
        f = np.geomspace(lo, hi, c.n) if up else np.geomspace(hi, lo, c.n)
        return (tone(f, c) + 0.3 * tone(2 * f, c)) * ar(c.n, c.sr, 0.02, 0.05)
    return synth


def _organ(c: Ctx) -> np.ndarray:
    f0 = 196 * c.pitch * (1 + 0.003 * np.sin(2 * np.pi * 5.5 * c.t))
    return harmonic(f0, [1, 0.8, 0.6, 0.55, 0.4, 0.3, 0.25, 0.2], c) * ar(c.n, c.sr, 0.08, 0.15)


def _flute(c: Ctx) -> np.ndarray:
    f0 = 784 * c.pitch * (1 + 0.012 * np.sin(2 * np.pi * 5 * c.t))
    body = harmonic(f0, [1, 0.15, 0.05], c)
    breath = noise(c, 1200 * c.pitch, 5000 * c.pitch) * lfo(c, 8, 0.5, 1.0)
    x = body + 0.3 * breath / (np.abs(breath).max() + 1e-9)
    return x * ar(c.n, c.sr, 0.12, 0.2)


def _bell(c: Ctx) -> np.ndarray:
    out = np.zeros(c.n)
    partials = zip([0.5, 1, 1.19, 1.5, 2.0, 2.5, 2.67, 3.01, 4.1], [.5, 1, .7, .5, .8, .4, .35, .3, .2])
    for i, (r, a) in enumerate(partials):
        out += a * tone(440 * c.pitch * r, c) * decay(c.n, c.sr, c.n / c.sr * 0.6 / (1 + 0.5 * i))
    return out * ar(c.n, c.sr, 0.002, 0.02)


def _rumble(c: Ctx) -> np.ndarray:
    return noise(c, 25, 140) * lfo(c, 1.2, 0.3, 1.0) * ar(c.n, c.sr, 0.3, 0.3)


def _hiss(c: Ctx) -> np.ndarray:
    return noise(c, 3500, 7500) * ar(c.n, c.sr, 0.15, 0.15)


def _ticking(c: Ctx) -> np.ndarray:
    k = int(0.02 * c.sr)
    u = np.arange(k) / c.sr
    tick, tock = (np.sin(2 * np.pi * float(lim(c.sr, f * c.pitch)) * u) * decay(k, c.sr, 0.003) for f in (1700, 1150))
    return scatter(c.n, periodic(c, 4.0), lambda i: tick if i % 2 == 0 else 0.7 * tock, c.sr)


def _drum(c: Ctx) -> np.ndarray:
    f = 55 * c.pitch + 110 * c.pitch * decay(c.n, c.sr, 0.04)
    body = tone(f, c) * decay(c.n, c.sr, 0.12)
    snap = noise(c, 100 * c.pitch, 2500 * c.pitch) * decay(c.n, c.sr, 0.015)
    return body + 0.6 * snap / (np.abs(snap).max() + 1e-9)


def _bark(c: Ctx) -> np.ndarray:
    u = np.linspace(0, 1, c.n)
    f0 = 420 * c.pitch * (1 + 0.35 * np.sin(np.pi * u) - 0.25 * u)
    src = harmonic(f0, [1 / k for k in range(1, 16)], c) + 0.4 * c.rng.standard_normal(c.n)
    x = formants(src, c.sr, (650 * c.pitch, 1400 * c.pitch, 2600 * c.pitch))
    return x * ar(c.n, c.sr, 0.008, 0.01) * decay(c.n, c.sr, max(c.n / c.sr / 2.5, 0.01))


def _whistle(c: Ctx) -> np.ndarray:
    u = np.linspace(0, 1, c.n)
    f = 1500 * c.pitch * (1 + 0.7 * np.sin(np.pi * u)) * (1 + 0.01 * np.sin(2 * np.pi * 6 * c.t))
    air = noise(c, 1000, 4000)
    return (tone(f, c) + 0.05 * air / (np.abs(air).max() + 1e-9)) * ar(c.n, c.sr, 0.03, 0.06)


def _siren(c: Ctx) -> np.ndarray:
    f = 900 * c.pitch * (1 + 0.35 * np.sin(2 * np.pi * 0.6 * c.rate * c.t - np.pi / 2))
    phase = 2 * np.pi * np.cumsum(lim(c.sr, f)) / c.sr
    return (np.sin(phase) + 0.35 * np.sin(3 * phase) * (3 * f < 0.45 * c.sr)) * ar(c.n, c.sr, 0.2, 0.3)


def _alarm(c: Ctx) -> np.ndarray:
    gate = (np.sin(2 * np.pi * 6 * c.rate * c.t) > 0).astype(float)
    gate = np.convolve(gate, np.ones(int(0.003 * c.sr) + 1) / (int(0.003 * c.sr) + 1), mode="same")
    f = 2200 * c.pitch
    return (tone(f, c) + 0.3 * tone(3 * f, c) * (3 * f < 0.45 * c.sr)) * gate


def _rain(c: Ctx) -> np.ndarray:
    k = int(0.02 * c.sr)
    freqs = np.geomspace(1500, 4500, 6)
    drops = [np.sin(2 * np.pi * float(lim(c.sr, f)) * np.arange(k) / c.sr) * decay(k, c.sr, 0.003) for f in freqs]
    onsets = poisson(c, 180)
    amps = c.rng.uniform(0.2, 1.0, len(onsets))
    which = c.rng.integers(0, len(drops), len(onsets))
    x = scatter(c.n, onsets, lambda i: amps[i] * drops[which[i]], c.sr)
    bed = noise(c, 800, 8000)
    return x + 0.35 * bed / (np.abs(bed).max() + 1e-9) * np.abs(x).max()


def _wind(c: Ctx) -> np.ndarray:
    low, mid = noise(c, 90, 350), noise(c, 350, 1100)
    m = lfo(c, 0.7, 0.0, 1.0)
    return (low * (0.3 + m) + mid * (1.2 - m)) * lfo(c, 0.5, 0.3, 1.0) * ar(c.n, c.sr, 0.4, 0.4)


def _engine(c: Ctx) -> np.ndarray:
    f0 = 42 * c.pitch * (1 + 0.01 * np.sin(2 * np.pi * 0.3 * c.t))
    hum = harmonic(f0, [1 / k ** 0.8 for k in range(1, 25)], c)
    am = 1 + 0.5 * np.sin(2 * np.pi * 10 * c.pitch * c.t)
    rumble = noise(c, 30, 400)
    return (hum * am + 0.2 * rumble / (np.abs(rumble).max() + 1e-9)) * ar(c.n, c.sr, 0.2, 0.2)


_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def _babble(c: Ctx) -> np.ndarray:
    out = np.zeros(c.n)
    pos, syl = 0, max(int(c.sr / (4.0 * c.rate)), 64)
    while pos < c.n - 32:
        n = min(int(syl * c.rng.uniform(0.7, 1.3)), c.n - pos)
        f0 = 130 * c.pitch * c.rng.uniform(0.85, 1.2) * np.linspace(1.05, 0.92, n)
        src = harmonic(f0, [1 / k ** 1.2 for k in range(1, 31)], c, n)
        vowel = _VOWELS[int(c.rng.integers(len(_VOWELS)))]
        seg = formants(src, c.sr, tuple(f * c.pitch ** 0.3 for f in vowel), 90.0)
        seg /= np.abs(seg).max() + 1e-9
        if c.rng.random() < 0.6:  # consonant burst at the onset
            b = min(int(0.025 * c.sr), n)
            seg[:b] += 0.5 * band(c.rng.standard_normal(b), c.sr, 2000, 6000) * np.hanning(b)
        out[pos:pos + n] += seg * np.hanning(n)
        pos += n + int(n * c.rng.uniform(0.05, 0.3))
    return out


def _bird(c: Ctx) -> np.ndarray:
    k = int(0.045 * c.sr)
    u = np.linspace(0, 1, k)

    def chirp(i: int) -> np.ndarray:
        f = lim(c.sr, (2600 + 1100 * u ** 2) * c.pitch * (1 + 0.05 * (i % 3)))
        return np.sin(2 * np.pi * np.cumsum(f) / c.sr) * np.hanning(k)
    return scatter(c.n, periodic(c, 11.0, 0.1), chirp, c.sr)


def _knock(c: Ctx) -> np.ndarray:
    k = int(0.12 * c.sr)
    modes = sum(a * np.sin(2 * np.pi * f * c.pitch * np.arange(k) / c.sr) for f, a in ((180, 1), (410, .6), (730, .4)))
    hit = modes * decay(k, c.sr, 0.025)
    j = int(0.003 * c.sr)
    hit[:j] += 0.5 * band(c.rng.standard_normal(j), c.sr, 300 * c.pitch, 2500 * c.pitch)
    onsets = periodic(c, 5.0)[:3]
    return scatter(c.n, onsets, lambda i: hit * (1.0, 0.85, 0.95)[i % 3], c.sr)


def _buzz(c: Ctx) -> np.ndarray:
    saw = harmonic(150 * c.pitch, [1 / k for k in range(1, 40)], c)
    return saw * (1 + 0.3 * np.sin(2 * np.pi * 30 * c.t)) * ar(c.n, c.sr, 0.01, 0.02)


def _bubbles(c: Ctx) -> np.ndarray:
    k = int(0.04 * c.sr)
    u = np.arange(k) / c.sr
    f0s = c.rng.uniform(300, 900, 4096) * c.pitch

    def bubble(i: int) -> np.ndarray:
        f = lim(c.sr, f0s[i % 4096] * (1 + 12 * u))
        return np.sin(2 * np.pi * np.cumsum(f) / c.sr) * decay(k, c.sr, 0.012)
    return scatter(c.n, poisson(c, 18), bubble, c.sr)


def _footsteps(c: Ctx) -> np.ndarray:
    k = int(0.15 * c.sr)
    heel = band(c.rng.standard_normal(k), c.sr, 60, 500) * decay(k, c.sr, 0.03)
    toe = band(c.rng.standard_normal(k), c.sr, 1000, 3000) * decay(k, c.sr, 0.015)
    d = int(0.06 * c.sr)
    step = heel / np.abs(heel).max() + 0.4 * np.concatenate([np.zeros(d), toe[:k - d]]) / np.abs(toe).max()
    return scatter(c.n, periodic(c, 1.8, 0.05), lambda i: step * (1.0 if i % 2 else 0.8), c.sr)


def _clap(c: Ctx) -> np.ndarray:
    k = int(0.06 * c.sr)
    env = sum(decay(k, c.sr, 0.01) * (np.arange(k) >= int(j * 0.004 * c.sr)) for j in range(3))
    claps = [band(c.rng.standard_normal(k), c.sr, 800, 3500) * env for _ in range(4)]
    return scatter(c.n, periodic(c, 3.0, 0.08), lambda i: claps[i % 4], c.sr)


# ---------------------------------------------------------------------------------------------- the table
P, L, D, R = "pitch", "loudness", "duration", "repetition"


def _spec(name: str, label: str, nouns: tuple, mass: tuple, clauses: tuple, attrs: tuple, duration: float,
          synth: Callable[[Ctx], np.ndarray], countable: bool = False, background: bool = False) -> EventSpec:
    return EventSpec(name, label, nouns, mass, clauses, attrs, duration, countable, background, synth)


EVENT_TYPES: dict[str, EventSpec] = {s.name: s for s in [
    _spec("beep", "beep", ("beep", "electronic beep", "pure tone"), (),
          ("a device beeps", "a machine beeps", "a beeper sounds"), (P, L, D), 0.3, _beep, countable=True),
    _spec("rising_chirp", "rising chirp", ("rising chirp", "upward sweep", "rising tone"), (),
          ("a tone sweeps upward", "a chirp rises in pitch"), (P, L, D), 0.6, _chirp(True), countable=True),
    _spec("falling_chirp", "falling chirp", ("falling chirp", "downward sweep", "falling tone"), (),
          ("a tone sweeps downward", "a chirp falls in pitch"), (P, L, D), 0.6, _chirp(False), countable=True),
    _spec("organ", "organ note", ("organ note", "organ tone", "harmonic note"), (),
          ("an organ plays a note", "an organ sounds", "an organ note rings out"), (P, L, D), 1.2, _organ,
          countable=True),
    _spec("flute", "flute note", ("flute note", "flute-like tone", "breathy woodwind note"), (),
          ("a flute plays", "someone plays a flute note"), (P, L, D), 1.0, _flute, countable=True),
    _spec("bell", "bell", ("bell ring", "ringing bell", "bell chime"), (),
          ("a bell rings", "a bell chimes", "a bell tolls"), (P, L, D), 1.6, _bell, countable=True),
    _spec("rumble", "low rumble", ("low rumble", "deep rumbling noise"), ("rumbling", "thunder-like rumbling"),
          ("something rumbles", "thunder rumbles"), (L, D), 2.0, _rumble, background=True),
    _spec("hiss", "hiss", ("hiss", "hissing noise"), ("hissing", "white noise"),
          ("steam hisses", "something hisses"), (L, D), 1.5, _hiss, background=True),
    _spec("ticking", "clock ticking", ("ticking clock",), ("ticking", "clock ticks", "mechanical clicking"),
          ("a clock ticks", "a clock is ticking"), (P, L, R), 2.0, _ticking, background=True),
    _spec("drum", "drum hit", ("drum hit", "drum beat", "thump of a drum"), (),
          ("a drum is struck", "a drum beats", "someone hits a drum"), (P, L), 0.4, _drum, countable=True),
    _spec("dog_bark", "dog bark", ("dog bark", "dog-like bark", "bark"), ("barking",),
          ("a dog barks", "a dog is barking", "a dog lets out a bark"), (P, L), 0.25, _bark, countable=True),
    _spec("whistle", "whistle", ("whistle", "whistling tone", "whistle blow"), ("whistling",),
          ("someone whistles", "a whistle blows", "a person whistles"), (P, L, D), 0.7, _whistle, countable=True),
    _spec("siren", "siren", ("siren", "wailing siren", "emergency siren"), ("wailing",),
          ("a siren wails", "an emergency siren sounds", "a siren goes off"), (P, L, R), 3.0, _siren,
          background=True),
    _spec("alarm", "alarm", ("alarm", "beeping alarm", "alarm signal"), ("alarm beeping",),
          ("an alarm goes off", "an alarm beeps", "an alarm rings"), (P, L, R, D), 1.5, _alarm),
    _spec("rain", "rain", ("rain shower",), ("rain", "rainfall", "pattering rain"),
          ("rain falls", "it is raining", "rain patters down"), (L, D), 3.0, _rain, background=True),
    _spec("wind", "wind", ("gust of wind",), ("wind", "howling wind", "wind noise"),
          ("the wind blows", "wind howls", "wind is blowing"), (L, D), 3.0, _wind, background=True),
    _spec("engine", "engine hum", ("engine hum", "idling engine", "running motor"), ("engine noise",),
          ("an engine hums", "an engine idles", "a motor runs"), (P, L, D), 3.0, _engine, background=True),
    _spec("babble", "speech babble", ("murmur of voices", "conversation"), ("speech babble", "indistinct chatter"),
          ("people talk", "people are chatting", "voices murmur"), (P, L, R), 2.5, _babble, background=True),
    _spec("bird", "bird chirps", ("bird chirp", "bird trill"), ("birdsong", "chirping"),
          ("a bird chirps", "a bird sings", "a bird trills"), (P, L, R), 0.6, _bird, countable=True),
    _spec("knocking", "knocking", ("knock", "knock on a door", "knocking sound"), ("knocking",),
          ("someone knocks", "someone knocks on a door", "a door is knocked on"), (P, L, R), 0.6, _knock,
          countable=True),
    _spec("buzzing", "buzzer", ("buzz", "electric buzz", "buzzer"), ("buzzing",),
          ("a buzzer sounds", "something buzzes", "a buzzer buzzes"), (P, L, D), 1.0, _buzz, countable=True),
    _spec("bubbling", "bubbling water", ("bubbling stream",), ("bubbling water", "bubbling", "gurgling water"),
          ("water bubbles", "water gurgles", "liquid is bubbling"), (P, L, R), 2.0, _bubbles, background=True),
    _spec("footsteps", "footsteps", ("series of footsteps",),
          ("footsteps", "walking footsteps", "steps on a hard floor"),
          ("someone walks", "a person walks by", "footsteps approach"), (L, R), 2.5, _footsteps),
    _spec("clapping", "clapping", ("round of clapping",), ("clapping", "applause", "hand claps"),
          ("people clap", "someone claps", "hands clap"), (L, R), 1.5, _clap),
]}


def event_length(name: str, attributes: Mapping[str, str] | None = None) -> float:
    """Nominal seconds of one occurrence of `name` with its duration attribute applied."""
    attrs = attributes or {}
    return EVENT_TYPES[name].duration * DURATION_FACTOR.get(attrs.get("duration", ""), 1.0)


def render_event(name: str, attributes: Mapping[str, str] | None, duration: float, sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
    """One occurrence of event `name`, `duration` seconds long, as float64 samples.

    The peak is BASE_PEAK at normal loudness, +12 dB for "loud", -12 dB for "quiet".
    """
    if name not in EVENT_TYPES:
        raise KeyError(f"unknown event type {name!r}")
    attrs = dict(attributes or {})
    for key, value in attrs.items():
        if key not in ATTRIBUTE_VALUES or value not in ATTRIBUTE_VALUES[key]:
            raise ValueError(f"bad attribute {key}={value!r} for event {name!r}")
    n = max(16, int(round(duration * sample_rate)))
    ctx = Ctx(n, sample_rate, rng, PITCH_FACTOR.get(attrs.get("pitch", ""), 1.0),
               RATE_FACTOR.get(attrs.get("repetition", ""), 1.0))
    x = np.asarray(EVENT_TYPES[name].synth(ctx), dtype=np.float64)[:n]
    x = x * ar(n, sample_rate, 0.002, 0.004)  # no clicks at the occurrence edges
    peak = float(np.abs(x).max())
    if peak <= 0 or not np.isfinite(peak):
        return np.zeros(n)
    gain = BASE_PEAK * 10 ** (LOUDNESS_DB.get(attrs.get("loudness", ""), 0.0) / 20)
    return x * (gain / peak)
