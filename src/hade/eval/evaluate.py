"""The evaluation protocol: encode every clip once and every caption once, score all pairs in
blocks, and compute the community metrics (`hade.eval.metrics`).

Deterministic: audio is cropped/padded from the start (never randomly), the model is in eval mode,
and ties in the score matrix are broken by the rule stated in `hade.eval.metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hade.data.dataset import ClipAudioStore, EvalClips, captions_with_clip_index
from hade.data.types import Problem, SplitData
from hade.eval.metrics import chance_metrics, retrieval_metrics
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


def clip_samples(model: RetrievalModel, clip_seconds: float) -> int:
    return min(model.max_samples, int(round(clip_seconds * model.sample_rate)))


@torch.no_grad()
def encode_split(model: RetrievalModel, split: SplitData, clip_seconds: float, batch_size: int = 64,
                 progress: bool = True, aux_captions: dict[str, str] | None = None) -> EncodedSplit:
    """Encode each clip once and each caption once (representations kept on the CPU).

    aux_captions: clip id -> machine-generated caption, for heads that use them (HCI+AC)."""
    was_training = model.training
    model.eval()
    store = ClipAudioStore(split, model.sample_rate)
    store.validate(progress=progress)  # undecodable clips are dropped and reported
    split = store.split
    problems = list(split.problems)
    clips = EvalClips(store, clip_samples(model, clip_seconds), mode="start")
    loader = DataLoader(clips, batch_size=batch_size, shuffle=False, num_workers=0)
    audio_parts = []
    for batch in tqdm(loader, desc=f"encode audio [{split.name}]", disable=not progress, leave=False):
        aux = [aux_captions.get(c) for c in batch["clip_id"]] if aux_captions else None
        audio_parts.append(reprs_to(model.encode_audio(batch["audio"].to(model.device), aux), "cpu"))
    captions, text_clip = captions_with_clip_index(split)
    text_parts = []
    for start in tqdm(range(0, len(captions), batch_size), desc=f"encode text [{split.name}]",
                      disable=not progress, leave=False):
        text_parts.append(reprs_to(model.encode_text(captions[start:start + batch_size]), "cpu"))
    model.train(was_training)
    return EncodedSplit(cat_reprs(text_parts), cat_reprs(audio_parts), np.asarray(text_clip),
                        [c.clip_id for c in split.clips], captions, problems)


@torch.no_grad()
def score_split(model: RetrievalModel, encoded: EncodedSplit, block: int = 1024) -> torch.Tensor:
    device = model.device
    text, audio = reprs_to(encoded.text, device), reprs_to(encoded.audio, device)
    return score_all(model.head, text, audio, text_block=block, audio_block=block)


def evaluate(model: RetrievalModel, split: SplitData, clip_seconds: float, batch_size: int = 64,
             progress: bool = True, aux_captions: dict[str, str] | None = None) -> dict:
    """Metrics dict: t2a/a2t R@k, mAP@10, medR, meanR, plus chance level and skipped items."""
    encoded = encode_split(model, split, clip_seconds, batch_size, progress, aux_captions)
    scores = score_split(model, encoded)
    metrics = retrieval_metrics(scores.numpy(), encoded.text_clip)
    metrics["chance"] = chance_metrics(len(encoded.captions), len(encoded.clip_ids), encoded.text_clip)
    metrics["split"] = split.name
    metrics["skipped"] = [{"source": p.source, "reason": p.reason} for p in encoded.problems]
    return metrics
