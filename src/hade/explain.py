"""Explanations of one audio–text score: THA attention maps, CA weights, factor similarities.

For every THA level (audio encoder level s, e.g. HTSAT stage s or a PaSST block, ↔ BERT block b) the token-level attention of the head
(`THAHead.attention`) is mapped back to seconds:

* α [M, N] (text-enhanced: for each audio token, a softmax over the words) becomes `text_to_audio`
  [N_words, T_bins]: column t is the mean of α's rows over the tokens in time bin t, so every
  column still sums to 1 over the words.
* β [M, N] (audio-enhanced: for each word, a softmax over the audio tokens) becomes `audio_to_text`
  [N_words, T_bins] the same way (mean over the bin's tokens), so Σ_t bin_tokens[t]·audio_to_text[n, t] = 1.

Time bins are the intervals between the distinct token boundaries of `AudioFeatures.token_seconds`; on
HTSAT grids the tokens of one time chunk tile it, so a bin is exactly the span shared by the tokens of
different frequency rows, and those are averaged. For DCR/CA heads the factor similarities cos(e_i^t, e_i^a),
the CA weights g_i and their products (which sum to S_DCR) are reported. Fields a head lacks are None.

Rows are words, not word pieces: the pieces of one word (BERT "##" continuations, RoBERTa's byte-level
tokens) are grouped by the tokenizer's own word segmentation (`word_ids` of a fast tokenizer, else where its
`decode` starts a new word) and spelled by its `decode`; a word's α is the sum of its pieces' (columns still
sum to 1) and its β their mean (rows still sum to 1 over the bins). Levels are labelled with the encoders'
own names (`level_name`: "HTSAT stage 3", "RoBERTa block 6").

The arrays come from the head's explanation hook (`RetrievalHead.explain`, one entry per kind in
`head.capabilities.explanations`; docs/heads.md), so this module knows explanation kinds, not head classes.
The command line (`hade explain`) lives in hade.apps.explain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hade.errors import InputError
from hade.utils.jsonable import jsonable
from hade.models.heads.explanation import FactorExplanation, ThaExplanation
from hade.models.retrieval import RetrievalModel

AudioInput = str | Path | np.ndarray | torch.Tensor


@dataclass
class LevelExplanation:
    """One THA level. N = words shown, M = audio tokens of the stage, T = time bins."""

    level: int  # 1-based level number (file tha_level{level}.png)
    audio_stage: int  # the audio encoder's level (1-based; HTSAT: its stage)
    text_block: int  # text encoder block (1-based)
    text_to_audio: np.ndarray  # [N, T] α binned: each column sums to 1 over words
    audio_to_text: np.ndarray  # [N, T] β binned: Σ_t bin_tokens[t] * row = 1 for each word
    time_edges: np.ndarray  # [T + 1] seconds, from 0 to the clip length
    bin_tokens: np.ndarray  # [T] number of audio tokens averaged in each bin
    text_enhanced: float  # S_te of this level (before the head's scale)
    audio_enhanced: float  # S_ae of this level (before the head's scale)
    alpha: np.ndarray  # [M, N] α per audio token and word (the sum over the word's pieces)
    beta: np.ndarray  # [M, N] β per audio token and word (the mean over the word's pieces)
    token_seconds: np.ndarray  # [M, 2] (start, end) seconds of each audio token
    audio_name: str = ""  # the audio encoder's label of the stage, e.g. "HTSAT stage 3"
    text_name: str = ""  # the text encoder's label of the block, e.g. "RoBERTa block 6"


@dataclass
class Explanation:
    """Everything `hade explain` shows; arrays are numpy, absent parts are None. K = factors."""

    text: str
    score: float  # total model score of the pair (= model.score)
    clip_seconds: float  # length of the waveform that was encoded (after crop/pad)
    audio_seconds: float  # length of the input audio before crop/pad
    words: list[str] | None = None  # words in THA's word mask (rows of the maps), pieces merged
    pieces: list[list[str]] | None = None  # the tokenizer's pieces of each word
    levels: list[LevelExplanation] | None = None
    tha_score: float | None = None  # THA part of the score: scale * Σ_l (S_te + S_ae)
    tha_scale: float | None = None
    factor_similarity: np.ndarray | None = None  # [K] cos(e_i^t, e_i^a)
    confidence: np.ndarray | None = None  # [K] CA weights g_i (after ca_output)
    factor_contribution: np.ndarray | None = None  # [K] g_i * cos_i; sums to dcr_score
    dcr_score: float | None = None  # factor part of the score
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as lists, NaN as None; hade.utils.jsonable)."""
        return jsonable(self)


# ---- inputs -----------------------------------------------------------------------------------------
def _waveform(model: RetrievalModel, audio: AudioInput, clip_seconds: float | None) -> tuple[np.ndarray, float]:
    """-> (float32 waveform [clip samples] cropped from the start / zero-padded, input duration in s)."""
    from hade.data.audio import fit_length, load_audio

    sr = model.sample_rate
    if isinstance(audio, (str, Path)):
        wave = load_audio(audio, sr)  # AudioError (an InputError) names the file
    elif isinstance(audio, (np.ndarray, torch.Tensor)):
        arr = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise InputError(f"audio waveform must be a non-empty 1-D array [samples] at {sr} Hz, "
                             f"got shape {tuple(arr.shape)}")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InputError(f"audio waveform must hold real numbers, got dtype {arr.dtype}")
        wave = arr.astype(np.float32)
        if not np.isfinite(wave).all():
            raise InputError("audio waveform contains non-finite samples (NaN/Inf)")
    else:
        raise InputError(f"audio must be a file path or a waveform array, got {type(audio).__name__}")
    if clip_seconds is None:
        clip_seconds = model.clip_samples / sr
    if isinstance(clip_seconds, bool) or not isinstance(clip_seconds, (int, float)) \
            or not math.isfinite(clip_seconds) or clip_seconds <= 0:
        raise InputError(f"clip_seconds must be a positive number of seconds, got {clip_seconds!r}")
    n = model.samples_for(float(clip_seconds))  # explanations read one encoder input's tokens
    return fit_length(wave, n, mode="start"), wave.shape[0] / sr


def time_bins(token_seconds: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """token_seconds [M, 2] -> (edges [T + 1] seconds, bin index of each token [M]).

    Edges are the distinct token boundaries (closer than `tol` merged); a token belongs to the bin
    holding the middle of its span (on HTSAT grids its span is exactly that bin).
    """
    ts = np.asarray(token_seconds, dtype=np.float64)
    bounds = np.unique(ts.reshape(-1))
    edges = bounds[np.concatenate([[True], np.diff(bounds) > tol])]
    if edges.shape[0] < 2:
        edges = np.array([edges[0], edges[0] + tol])
    index = np.searchsorted(edges, ts.mean(1), side="right") - 1
    return edges, np.clip(index, 0, edges.shape[0] - 2)


def bin_tokens(values: np.ndarray, index: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """values [M, N] per token -> (mean over each bin's tokens, transposed [N, T]; counts [T]).

    Bins without tokens are NaN (only possible when a token spans several time chunks).
    """
    counts = np.bincount(index, minlength=num_bins)
    sums = np.zeros((num_bins, values.shape[1]))
    np.add.at(sums, index, values)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return means.T, counts


# ---- the explanation --------------------------------------------------------------------------------
@torch.no_grad()
def explain(model: RetrievalModel, audio: AudioInput, text: str,
            clip_seconds: float | None = None) -> Explanation:
    """Explain model.score(text, audio) for one pair.

    audio: a file path (decoded and resampled to model.sample_rate) or a waveform [samples] already at
        model.sample_rate; it is cropped from the start (or zero-padded) to `clip_seconds` (default: the
        longest clip the audio encoder holds), as in evaluation.
    Raises InputError (AudioError for files) on unusable audio, empty text or a bad clip length.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"text must be a non-empty caption, got {text!r}")
    wave, audio_seconds = _waveform(model, audio, clip_seconds)
    was_training = model.training
    model.eval()
    try:
        waveform = torch.from_numpy(wave)[None].to(model.device)
        features = model.audio_encoder(waveform)
        audio_r = model.head.audio_repr(features)
        ids, mask = model.tokenize([text])
        text_r = model.head.text_repr(model.text_features([text]))  # phrases for HCI, as in evaluation
        score = float(model.score(text_r, audio_r)[0, 0])
        expl = Explanation(text=text, score=score, clip_seconds=wave.shape[0] / model.sample_rate,
                           audio_seconds=audio_seconds)

        parts = model.head.explain(text_r, audio_r)  # each kind the head offers
        if parts.tha is not None:
            _add_tha(expl, parts.tha, _TokenWords(model, text, ids[0].tolist()), features.token_seconds, model)
        if parts.factors is not None:
            _add_factors(expl, parts.factors)
    finally:
        model.train(was_training)
    return expl


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


class _TokenWords:
    """The tokens of one caption and the word each belongs to, by the tokenizer's own segmentation."""

    def __init__(self, model: RetrievalModel, text: str, ids: list[int]) -> None:
        self.tokenizer = model.tokenizer
        self.ids = ids
        self.tokens = self.tokenizer.convert_ids_to_tokens(ids)
        self.word_ids: list[int | None] | None = None
        if getattr(self.tokenizer, "is_fast", False):  # same call as model.tokenize, without padding
            enc = self.tokenizer([text], truncation=True, max_length=model.config.max_text_tokens)
            if list(enc["input_ids"][0]) == list(ids):
                self.word_ids = enc.word_ids(0)

    def _starts_word(self, positions: list[int], i: int) -> bool:
        """Whether token `positions[i]` begins a word: by `word_ids`, else where decoding the pieces so far
        adds text that begins with a space (the tokenizer's own rule, e.g. no space before "##s")."""
        if i == 0:
            return True
        p, q = positions[i - 1], positions[i]
        if self.word_ids is not None:
            return self.word_ids[q] is None or self.word_ids[q] != self.word_ids[p]
        before = self._decode(positions[:i])
        after = self._decode(positions[:i + 1])
        return not after.startswith(before) or after[len(before):][:1].isspace()

    def _decode(self, positions: list[int]) -> str:
        return self.tokenizer.decode([self.ids[p] for p in positions], clean_up_tokenization_spaces=False)

    def words(self, positions: list[int]) -> list[tuple[str, list[int]]]:
        """Group token `positions` (in order) into words -> [(word as decoded, indices into positions)]."""
        groups: list[list[int]] = []
        for i in range(len(positions)):
            if self._starts_word(positions, i):
                groups.append([])
            groups[-1].append(i)
        return [(self._decode([positions[i] for i in g]).strip() or "".join(self.tokens[positions[i]] for i in g), g)
                for g in groups]


def _merge_words(values: np.ndarray, groups: list[list[int]], reduce: str) -> np.ndarray:
    """[M, N_tokens] -> [M, N_words]: the sum (α) or mean (β) of each word's columns."""
    cols = [values[:, g].sum(1) if reduce == "sum" else values[:, g].mean(1) for g in groups]
    return np.stack(cols, axis=1) if cols else values[:, :0]


def _add_tha(expl: Explanation, tha: ThaExplanation, text: _TokenWords, token_seconds: list[torch.Tensor],
             model: RetrievalModel) -> None:
    """THA maps in seconds from the head's THA explanation (RetrievalHead.explain; docs/heads.md), rows
    merged into words, levels named by the encoders (`level_name`)."""
    words_on = tha.word_mask.cpu().numpy().astype(bool)
    positions = [int(p) for p in np.flatnonzero(words_on)]
    words = text.words(positions)
    groups = [g for _, g in words]
    expl.words = [w for w, _ in words]
    expl.pieces = [[text.tokens[positions[i]] for i in g] for g in groups]
    expl.tha_score, expl.tha_scale = float(tha.score), float(tha.scale)
    expl.levels = []
    for i, lv in enumerate(tha.levels):
        seconds = _numpy(token_seconds[lv.audio_stage - 1])
        alpha = _merge_words(_numpy(lv.alpha)[:, words_on], groups, "sum")
        beta = _merge_words(_numpy(lv.beta)[:, words_on], groups, "mean")
        edges, index = time_bins(seconds)
        t2a, counts = bin_tokens(alpha, index, edges.shape[0] - 1)
        a2t, _ = bin_tokens(beta, index, edges.shape[0] - 1)
        expl.levels.append(LevelExplanation(
            level=i + 1, audio_stage=lv.audio_stage, text_block=lv.text_block, text_to_audio=t2a,
            audio_to_text=a2t, time_edges=edges, bin_tokens=counts,
            text_enhanced=float(lv.text_enhanced), audio_enhanced=float(lv.audio_enhanced),
            alpha=alpha, beta=beta, token_seconds=seconds,
            audio_name=model.audio_encoder.level_name(lv.audio_stage),
            text_name=model.text_encoder.level_name(lv.text_block)))


def _add_factors(expl: Explanation, factors: FactorExplanation) -> None:
    """Factor similarities and CA weights from the head's factor explanation."""
    expl.factor_similarity = _numpy(factors.similarity)
    expl.dcr_score = float(factors.score)
    if factors.confidence is not None:
        expl.confidence = _numpy(factors.confidence)
        expl.factor_contribution = expl.confidence * expl.factor_similarity


# ---- figures ----------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> Path:
    from hade.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def save_figures(expl: Explanation, out_dir: str | Path) -> list[Path]:
    """Write `tha_level{i}.png` (both directions as word × seconds heat maps) per THA level and
    `factors.png` (factor similarity, CA weight, contribution); returns the paths written (none for DP)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    written: list[Path] = []
    for lv in expl.levels or []:
        n_words = len(expl.words or [])
        fig, axes = plt.subplots(1, 2, figsize=(13, max(3.2, 0.32 * n_words + 2.0)), constrained_layout=True)
        maps = [(lv.text_to_audio, f"text→audio (α: words per audio token)\nS_te = {lv.text_enhanced:.3f}"),
                (lv.audio_to_text, f"audio→text (β: audio tokens per word)\nS_ae = {lv.audio_enhanced:.3f}")]
        for ax, (values, title) in zip(axes, maps):
            mesh = ax.pcolormesh(lv.time_edges, np.arange(n_words + 1), np.ma.masked_invalid(values),
                                 cmap="viridis", shading="flat")
            ax.set_yticks(np.arange(n_words) + 0.5, labels=expl.words or [], fontsize=9)
            ax.invert_yaxis()
            ax.set_xlabel("time (s)")
            ax.set_xlim(0, lv.time_edges[-1])
            ax.set_title(title, fontsize=10)
            if expl.audio_seconds < expl.clip_seconds:
                ax.axvline(expl.audio_seconds, color="white", ls="--", lw=1)
            fig.colorbar(mesh, ax=ax, label="mean attention per token")
        fig.suptitle(f"THA level {lv.level}: {lv.audio_name} ↔ {lv.text_name}"
                     f" — level score S_te + S_ae = {lv.text_enhanced + lv.audio_enhanced:.3f}\n“{expl.text}”",
                     fontsize=11)
        written.append(_save(fig, out / f"tha_level{lv.level}.png"))
        plt.close(fig)
    if expl.factor_similarity is not None:
        k = expl.factor_similarity.shape[0]
        bars = [(r"$\cos(e_i^t, e_i^a)$", expl.factor_similarity)]
        if expl.confidence is not None:
            bars += [(r"CA weight $g_i$", expl.confidence),
                     (r"contribution $g_i \cdot \cos$", expl.factor_contribution)]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * k + 3), 4), constrained_layout=True)
        width = 0.8 / len(bars)
        x = np.arange(k)
        for j, (label, values) in enumerate(bars):
            ax.bar(x + (j - (len(bars) - 1) / 2) * width, values, width, label=label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, labels=[f"factor {i + 1}" for i in range(k)])
        ax.set_ylabel("value")
        ax.legend(fontsize=9)
        ax.set_title(f"DCR factors — S_DCR = {expl.dcr_score:.3f}, total score = {expl.score:.3f}\n“{expl.text}”",
                     fontsize=10)
        written.append(_save(fig, out / "factors.png"))
        plt.close(fig)
    return written


# ---- text summary ------------------------------------------------------------------------------
def format_summary(expl: Explanation, top: int = 3) -> str:
    """Short text: score, per level the `top` words by α mass and where each attends most (β), factors."""
    lines = [f"score {expl.score:.4f}  text “{expl.text}”  clip {expl.clip_seconds:.2f} s"
             + (f" (audio {expl.audio_seconds:.2f} s, zero-padded)" if expl.audio_seconds < expl.clip_seconds
                else "")]
    if expl.levels is not None and expl.words:
        lines.append(f"THA {expl.tha_score:.4f} = {expl.tha_scale:g} × Σ levels (S_te + S_ae)")
        for lv in expl.levels:
            mass = lv.alpha.sum(0) / max(lv.alpha.shape[0], 1)  # share of the audio tokens' word weight
            parts = []
            for n in np.argsort(-mass, kind="stable")[:top]:
                t = int(np.nanargmax(lv.audio_to_text[n]))
                parts.append(f"{expl.words[n]!r} {100 * mass[n]:.0f}% @ "
                             f"{lv.time_edges[t]:.2f}-{lv.time_edges[t + 1]:.2f} s")
            lines.append(f"  level {lv.level} ({lv.audio_name} ↔ {lv.text_name}): "
                         f"S_te {lv.text_enhanced:.3f}  S_ae {lv.audio_enhanced:.3f}; " + ", ".join(parts))
    if expl.factor_similarity is not None:
        lines.append(f"DCR {expl.dcr_score:.4f}; cos per factor: "
                     + " ".join(f"{v:+.3f}" for v in expl.factor_similarity))
        if expl.confidence is not None:
            lines.append("  CA weights g: " + " ".join(f"{v:.3f}" for v in expl.confidence))
    return "\n".join(lines)


__all__ = ["Explanation", "LevelExplanation", "explain",
           "format_summary", "save_figures", "time_bins", "bin_tokens"]
