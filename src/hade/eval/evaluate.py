"""The evaluation protocol: encode every clip once and every caption once, score all pairs in
blocks, and compute the community metrics (`hade.eval.metrics`).

Deterministic: audio is cropped/padded from the start (never randomly), the model is in eval mode,
and ties in the score matrix are broken by the rule stated in `hade.eval.metrics`.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hade.data.audio import fit_length, load_audio
from hade.data.dataset import captions_with_clip_index
from hade.data.types import Clip, Problem, SplitData
from hade.errors import AudioError, InputError
from hade.eval.metrics import chance_metrics, retrieval_metrics
from hade.eval.parts import PartResult, part_results, part_scores, require_parts
from hade.eval.per_query import PerQuery, attach_relevance, per_query_results
from hade.eval.relevance import Relevance, metrics_from_ranks, relevant_ranks, resolve_relevance
from hade.eval.results import EvalMetrics
from hade.models.heads import score_all
from hade.models.heads.reprs import Reprs, cat_reprs, reprs_to
from hade.models.retrieval import RetrievalModel


@dataclass
class EncodedSplit:
    """Representations of one split: captions [T] and clips [A], `text_clip[t]` = clip index of caption t."""

    text: Reprs
    audio: Reprs
    text_clip: np.ndarray
    clip_ids: list[str]
    captions: list[str]
    problems: list[Problem]
    file_names: list[str] = field(default_factory=list)  # audio file name of each clip (DCASE submissions)


def _decoded_clips(clips: list[Clip], sample_rate: int, samples: int,
                   ahead: int) -> Iterator[tuple[Clip, tuple[np.ndarray, int] | str]]:
    """(clip, (waveform fitted to `samples` from the start, samples of audio in it)) in order, or
    (clip, reason) when it cannot be decoded. One background thread decodes up to `ahead` clips in advance
    (soundfile and soxr release the GIL), so decoding overlaps encoding and only the fitted waveforms of
    that window are held in memory."""
    def decode(clip: Clip) -> tuple[np.ndarray, int] | str:
        try:
            wave = load_audio(clip.audio_path, sample_rate)
        except AudioError as exc:
            return getattr(exc, "reason", str(exc))
        return fit_length(wave, samples, mode="start"), min(int(wave.shape[0]), samples)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque = deque()
        for clip in clips:
            pending.append((clip, pool.submit(decode, clip)))
            if len(pending) > ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


@torch.no_grad()
def encode_split(model: RetrievalModel, split: SplitData, clip_seconds: float, batch_size: int = 64,
                 progress: bool = True, aux_captions: dict[str, str] | None = None) -> EncodedSplit:
    """Encode each clip once and each caption once (representations kept on the CPU).

    Each clip is decoded once, fitted to `clip_seconds` from the start (zero-padded) and encoded; longer
    than the encoder's longest input, it is encoded in segments whose clip vectors are averaged over those
    holding audio (hade.models.segments, the DCASE 2025 baseline's rule). Clips that cannot be decoded are
    dropped (with their captions) and reported in `problems`.
    aux_captions: clip id -> machine-generated caption, for heads that use them (HCI+AC)."""
    was_training = model.training
    model.eval()
    samples = model.clip_input_samples(clip_seconds)
    problems = list(split.problems)
    kept: list[Clip] = []
    audio_parts: list[Reprs] = []
    waves: list[np.ndarray] = []
    lengths: list[int] = []

    def flush() -> None:
        batch_clips = kept[len(kept) - len(waves):]
        aux = [aux_captions.get(c.clip_id) for c in batch_clips] if aux_captions else None
        audio = torch.from_numpy(np.stack(waves)).to(model.device)
        audio_parts.append(reprs_to(model.encode_audio(audio, aux, torch.tensor(lengths)), "cpu"))
        waves.clear()
        lengths.clear()

    decoded = _decoded_clips(split.clips, model.sample_rate, samples, ahead=2 * batch_size)
    for clip, wave in tqdm(decoded, total=len(split.clips), desc=f"encode audio [{split.name}]", unit="clip",
                           disable=not progress, leave=False):
        if isinstance(wave, str):
            problems.append(Problem(source=str(clip.audio_path), reason=f"{wave}; clip {clip.clip_id!r} dropped"))
            continue
        kept.append(clip)
        waves.append(np.asarray(wave[0], dtype=np.float32))
        lengths.append(wave[1])
        if len(waves) == batch_size:
            flush()
    if waves:
        flush()
    if not kept:
        raise InputError(f"split {split.name!r}: no clip could be decoded ({len(split.clips)} listed)")
    split = SplitData(name=split.name, clips=kept, problems=problems)
    captions, text_clip = captions_with_clip_index(split)
    text_parts = []
    for start in tqdm(range(0, len(captions), batch_size), desc=f"encode text [{split.name}]",
                      disable=not progress, leave=False):
        text_parts.append(reprs_to(model.encode_text(captions[start:start + batch_size]), "cpu"))
    model.train(was_training)
    return EncodedSplit(cat_reprs(text_parts), cat_reprs(audio_parts), np.asarray(text_clip),
                        [c.clip_id for c in split.clips], captions, problems,
                        [Path(c.audio_path).name for c in split.clips])


@torch.no_grad()
def score_split(model: RetrievalModel, encoded: EncodedSplit, block: int = 1024) -> torch.Tensor:
    """Scores of every caption with every clip: [T, A], in blocks of `block` × `block` pairs."""
    device = model.device
    text, audio = reprs_to(encoded.text, device), reprs_to(encoded.audio, device)
    return score_all(model.head, text, audio, text_block=block, audio_block=block)


@dataclass
class EvalRun:
    """One evaluation: its `metrics` (an EvalMetrics record), per-query results, the caption texts [T] (clip
    order), and, from `evaluate_run`, the score matrix [T, A] (float32, CPU), what was encoded and the wall
    time of the all-pairs scoring in seconds."""

    metrics: EvalMetrics
    per_query: PerQuery
    captions: list[str]
    scores: torch.Tensor | None = None
    encoded: EncodedSplit | None = None
    score_seconds: float = 0.0
    parts: list[PartResult] | None = None


def _metrics(scores: np.ndarray, encoded: EncodedSplit, split_name: str) -> EvalMetrics:
    m = retrieval_metrics(scores, encoded.text_clip)
    chance = chance_metrics(len(encoded.captions), len(encoded.clip_ids), encoded.text_clip)
    return EvalMetrics(m.t2a, m.a2t, m.num_texts, m.num_audios, m.tie_rule, chance=chance, split=split_name,
                       skipped=tuple(encoded.problems))


def metrics_and_queries(scores: np.ndarray, encoded: EncodedSplit, split_name: str) -> EvalRun:
    """Metrics (with chance level and skipped items) and per-query results of a [T, A] score matrix."""
    metrics = _metrics(scores, encoded, split_name)
    pq = per_query_results(scores, encoded.text_clip, encoded.clip_ids, encoded.file_names or None,
                           encoded.captions, split_name)
    return EvalRun(metrics, pq, list(encoded.captions))


def evaluate_run(model: RetrievalModel, split: SplitData, clip_seconds: float, batch_size: int = 64,
                 progress: bool = True, aux_captions: dict[str, str] | None = None, parts: bool = False) -> EvalRun:
    """The evaluation pipeline of `hade eval`, the demo and the ablations: encode each clip and caption once,
    score all pairs, compute the metrics and per-query results (see :mod:`hade.eval.per_query`).
    parts: a sum head's parts are scored one by one (their sum is the head's score) and `EvalRun.parts`
    says what each contributes (hade.eval.parts); InputError for a head that is not a sum."""
    if parts:
        require_parts(model)
    encoded = encode_split(model, split, clip_seconds, batch_size, progress, aux_captions)
    started = time.perf_counter()
    by_part = part_scores(model, encoded.text, encoded.audio) if parts else None
    scores = sum(by_part.values()) if by_part else score_split(model, encoded)
    seconds = time.perf_counter() - started
    run = metrics_and_queries(scores.numpy(), encoded, split.name)
    run.scores, run.encoded, run.score_seconds = scores, encoded, seconds
    if by_part:
        run.parts = part_results(by_part, encoded.text_clip, scores.numpy(), run.metrics)
    return run


def add_relevance(run: EvalRun, relevance: Relevance) -> EvalRun:
    """Score `run` (from `evaluate_run`: scores and encoded split kept) under several relevant files per query
    (hade.eval.relevance): ``run.metrics.t2a_multi`` gets mAP@16 / mAP@10 and the per-query results the
    relevant ranks. InputError when a query or file is not in the evaluated split (naming dropped clips)."""
    if run.scores is None or run.encoded is None:
        raise ValueError("add_relevance: needs an EvalRun from evaluate_run (scores and encoded split)")
    dropped = [Path(p.source).name for p in run.encoded.problems]
    rmap = resolve_relevance(relevance, run.encoded.captions, run.encoded.file_names, dropped)
    ranks = relevant_ranks(run.scores.numpy(), rmap)
    run.metrics = replace(run.metrics, t2a_multi=metrics_from_ranks(ranks, rmap.offsets, rmap.source))
    attach_relevance(run.per_query, rmap.query_text, rmap.offsets, rmap.clips, ranks)
    return run


def evaluate(model: RetrievalModel, split: SplitData, clip_seconds: float, batch_size: int = 64,
             progress: bool = True, aux_captions: dict[str, str] | None = None) -> EvalMetrics:
    """The metrics of `split` (t2a/a2t R@k, mAP@10, medR, meanR, chance level, skipped items); no per-query
    results: the trainer's validation uses this."""
    encoded = encode_split(model, split, clip_seconds, batch_size, progress, aux_captions)
    return _metrics(score_split(model, encoded).numpy(), encoded, split.name)
