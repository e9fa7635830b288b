"""The interface every retrieval head implements (DP, THA, DCR, co-attention, HCI, DiffATR).

A head turns encoder features into per-item representations, once per item, and scores every text
against every audio. Scoring all pairs is done in blocks (`score_all`) so that heads whose score does
not factorise (cross attention, confidence MLPs) keep memory bounded on large collections.

The contract (docs/heads.md): what a caller may ask of a head is declared once, as the head's
`capabilities` record (defaults here, overridden by each head), and the hooks below — callers read
`head.capabilities` and call the hooks, never `isinstance` or `getattr(head, "needs_x", False)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hade.losses import ClipPairs
from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.explanation import EXPLANATIONS, HeadExplanation
from hade.models.heads.reprs import Reprs, num_items, slice_reprs

__all__ = ["EXPLANATIONS", "HeadCapabilities", "RetrievalHead", "score_all"]


@dataclass(frozen=True)
class HeadCapabilities:
    """What a head offers its callers.

    factorised: score(t, a) = <pooled_text(t), pooled_audio(a)>, so an ANN index ranks exactly.
    has_pooled: `pooled_text`/`pooled_audio` return vectors (exact or approximate) for ANN recall.
    needs_phrases: `text_repr` reads `TextFeatures.phrase_index` (the model runs the chunker for it).
    uses_aux_captions: `audio_repr` reads `AudioFeatures.aux_text` (auxiliary captions of the clips).
    set_scoring: a text's scores depend on the whole candidate set of one `score` call, so all-pairs
        scoring must pass every audio at once.
    explanations: the kinds `explain` fills in (a subset of EXPLANATIONS, the fields of `HeadExplanation`).
    rotation_pairs: (audio key, text key) pairs that `score` uses only through dot products within and
        across the two (cosines, norms, Gram matrices): the same orthogonal rotation of both leaves the
        score unchanged, so an index may keep such audio tokens rotated (OPQ codes) and rotate the
        query's text key once instead of every decoded token.
    score_bound: the largest |score| the head can produce (1.0 for a cosine), or None when it declares no
        bound. A search treats a stored window scoring beyond it (or NaN / inf for any head) as damage.
    pooled_projection: names of the head's own submodules that project the pooled vectors exactly as DP
        does (Linear-ReLU-Linear, DP's names), so that a run starting from a `dp` model (e.g. converted
        CLAP) takes them (hade.train.init); () for other heads, and for a sum (its parts declare theirs).
    """

    factorised: bool = False
    has_pooled: bool = False
    needs_phrases: bool = False
    uses_aux_captions: bool = False
    set_scoring: bool = False
    explanations: frozenset[str] = frozenset()
    rotation_pairs: tuple[tuple[str, str], ...] = ()
    score_bound: float | None = None
    pooled_projection: tuple[str, ...] = ()


class RetrievalHead(nn.Module):
    """Base class of all heads. `capabilities` is the one declaration of what a head offers: a class
    attribute, or set in `__init__` when an option decides (HCI's `use_ac`, DCR's `use_ca`)."""

    capabilities: HeadCapabilities = HeadCapabilities()

    def text_repr(self, features: TextFeatures) -> Reprs:
        """Per-text representation; every tensor is [B_t, ...]."""
        raise NotImplementedError

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        """Per-audio representation; every tensor is [B_a, ...]."""
        raise NotImplementedError

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        """Similarity of every text with every audio: [B_t, B_a] (higher = more similar)."""
        raise NotImplementedError

    def contrastive_scores(self, text: Reprs, audio: Reprs) -> dict[str, tuple[torch.Tensor, float]]:
        """The score matrices that training puts through NT-Xent, with their weights: {suffix: ([B_t, B_a],
        weight)}; the loss of suffix "" is `nt_xent`, others `nt_xent<suffix>`. Default: `score` alone."""
        return {"": (self.score(text, audio), 1.0)}

    def aux_losses(self, text: Reprs, audio: Reprs, pairs: ClipPairs | None = None) -> dict[str, torch.Tensor]:
        """Extra weighted training losses on a batch of matched pairs (row i of text ↔ row i of audio).

        pairs: which rows belong to one clip and whether same-clip pairs are further positives
        (`hade.losses.ClipPairs`; None: all rows distinct clips). A head with an in-batch contrastive or
        distribution-matching term must use it, as the main NT-Xent does."""
        return {}

    def pooled_text(self, text: Reprs) -> torch.Tensor | None:
        """L2-normalised global text vectors [B_t, D] for ANN recall, None unless `has_pooled`.

        Per side, so that an index encodes only the side it holds. Default: `text["embed"]`."""
        return text["embed"] if self.capabilities.has_pooled else None

    def pooled_audio(self, audio: Reprs) -> torch.Tensor | None:
        """L2-normalised global audio vectors [B_a, D] for ANN recall, None unless `has_pooled`."""
        return audio["embed"] if self.capabilities.has_pooled else None

    def text_vector(self, features: TextFeatures) -> torch.Tensor | None:
        """`pooled_text(text_repr(features))` [B_t, D] straight from the encoder's features, for callers
        that need the pooled vector alone (an ONNX text tower). A head whose pooled vector needs less than
        its whole representation overrides it to compute only that (HCI: its sentence vector)."""
        return self.pooled_text(self.text_repr(features))

    def audio_vector(self, features: AudioFeatures) -> torch.Tensor | None:
        """`pooled_audio(audio_repr(features))` [B_a, D] straight from the encoder's features; see
        `text_vector`."""
        return self.pooled_audio(self.audio_repr(features))

    def pooled_embeddings(self, text: Reprs, audio: Reprs) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Both sides at once ([B_t, D], [B_a, D]), or None without `has_pooled`; a thin wrapper."""
        if not self.capabilities.has_pooled:
            return None
        return self.pooled_text(text), self.pooled_audio(audio)  # type: ignore[return-value]

    def summed_parts(self) -> dict[str, "RetrievalHead"]:
        """The heads whose scores this head's score is the sum of, by name ({} for a head that is not a sum).
        Each part scores the same representations (`score(text, audio)`), so a caller can rank by one part
        alone, e.g. to see how much each contributes (`hade eval --parts`)."""
        return {}

    def explain(self, text: Reprs, audio: Reprs) -> HeadExplanation:
        """The tensors behind the score of the pair (text row 0, audio row 0), each kind in `explanations`
        filled in (`hade.models.heads.explanation`); hade.explain turns them into figures."""
        return HeadExplanation()


@torch.no_grad()
def score_all(
    head: RetrievalHead, text: Reprs, audio: Reprs, text_block: int = 1024, audio_block: int = 1024
) -> torch.Tensor:
    """All-pairs scores [T, A] computed block by block (text_block × audio_block at a time)."""
    n_text, n_audio = num_items(text), num_items(audio)
    if head.capabilities.set_scoring:
        audio_block = n_audio
    rows = []
    for t0 in range(0, n_text, text_block):
        t_part = slice_reprs(text, t0, t0 + text_block)
        cols = [
            head.score(t_part, slice_reprs(audio, a0, a0 + audio_block)).float().cpu()
            for a0 in range(0, n_audio, audio_block)
        ]
        rows.append(torch.cat(cols, 1))
    return torch.cat(rows, 0)
