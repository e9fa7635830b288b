"""HCI: hierarchical cross-modal interaction, with auxiliary captions (AC) (Xin & Zou, 2023).

The paper (abstract only here) scores an audio–text pair at three levels and enhances the audio with
machine-generated captions. Where it is silent, this module takes the standard constructions it builds on:

Units (d = embed_dim, every unit L2-normalised so that each similarity is a cosine in [-1, 1]):
  frames    f_1..f_F  [B, F, d]  tokens of HTSAT stage `audio_stage` averaged over frequency (tokens with the
                                 same time span, from `token_seconds`, are one time step) → LayerNorm+Linear
  segments  g_1..g_S  [B, S, d]  frames average-pooled in windows of `segment_window` frames, stride
                                 `segment_stride` (a last window is aligned to the end so every frame counts)
  clip      c         [B, d]     DP's MLP on HTSAT's pooled vector
  words     w_1..w_N  [B, N, d]  BERT block `text_block` word pieces ([CLS]/[SEP]/padding masked)
  phrases   p_1..p_P  [B, P, d]  mean of the block's states over each noun/verb chunk of hade.data.chunker
                                 (without chunker output: windows of `phrase_window` words)
  sentence  s         [B, d]     DP's MLP on the pooled text vector

Levels — fine levels use token-wise max-mean aggregation (FILIP / TERAN style), the standard
fine-grained contrastive similarity, chosen because it needs no pair-specific parameters (all pairs are
batched matmuls) and keeps every level a cosine-range score; `aggregation="softmax"` replaces max by a
softmax(s/`agg_temperature`)-weighted mean (attention-style interaction):
  S_fw = ½ [ mean_n max_f cos(w_n, f_f) + mean_f max_n cos(w_n, f_f) ]          frame–word
  S_sp = ½ [ mean_p max_g cos(p_p, g_g) + mean_g max_p cos(p_p, g_g) ]          segment–phrase
  S_cs = cos(s, c)                                                              clip–sentence
  S_HCI = λ_fw S_fw + λ_sp S_sp + λ_cs S_cs        (`level_weights`, default ⅓ each: S_HCI in [-1, 1])
Training: the trainer's NT-Xent on S_HCI, plus `aux_losses` = Σ_l β_l NT-Xent(S_l, `temperature`)
(`aux_weights`, default ⅓ each) — each level is a contrastive term of its own.

AC (`use_ac`): the auxiliary caption of clip b (same text encoder, block `text_block`) enhances its frames by
one residual cross-attention layer (multi-head, `ac_heads`): Δ = MHA(LN(f), LN(W u), LN(W u)),
f̂ = f + Δ; segments are pooled from f̂ and ĉ = c + mean_f Δ. Δ = 0 for clips without an auxiliary caption
(none given, or one with no word), so their representation is unchanged. The enhanced branch is matched
beside the original one (the paper's dual-branch matching): S_l = (1 - γ) S_l(f) + γ S_l(f̂), γ = `ac_weight`.

All pairs are scored in blocks of texts × audios whose [Tc, N, Ac, F] similarity tensors stay within
`memory_budget_mb`; the loops run over blocks, never over pairs.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hade.losses import ClipPairs, nt_xent
from hade.models.encoders.types import AudioFeatures, AudioLevels, TextFeatures
from hade.models.heads.base import HeadCapabilities, RetrievalHead
from hade.models.heads.dp import projection
from hade.models.heads.reprs import Reprs
from hade.models.heads.tha import word_mask

LEVELS = ("frame_word", "segment_phrase", "clip_sentence")
AGGREGATIONS = ("max", "softmax")
BYTES_PER_ELEM = 16  # ~4 live float32 tensors of the block's [Tc, N, Ac, F] shape


def time_pooling(n_tokens: int, token_seconds: torch.Tensor | None, grid: tuple[int, int]) -> torch.Tensor:
    """[F, M] averaging matrix from a stage's M tokens to its F time steps.

    Tokens that cover the same input time (equal start in `token_seconds` [M, 2]) are frequency bins of one
    step; steps are ordered by time. Without usable `token_seconds` the grid's columns are the steps.
    """
    if token_seconds is not None and token_seconds.shape[0] == n_tokens:
        _, step = torch.unique(token_seconds[:, 0], sorted=True, return_inverse=True)
    else:
        step = torch.arange(n_tokens) % grid[1]
    onehot = F.one_hot(step).T.float()  # [F, M]
    return onehot / onehot.sum(1, keepdim=True)


def segment_pooling(n_frames: int, window: int, stride: int) -> torch.Tensor:
    """[S, F] averaging matrix: windows of `window` frames (at most F) every `stride` frames, plus a last
    window ending at the last frame when the strided ones stop short of it."""
    w = min(window, n_frames)
    starts = list(range(0, n_frames - w + 1, stride))
    if starts[-1] + w < n_frames:
        starts.append(n_frames - w)
    pool = torch.zeros(len(starts), n_frames)
    for i, s in enumerate(starts):
        pool[i, s:s + w] = 1.0 / w
    return pool


def phrase_pooling(states: torch.Tensor, words: torch.Tensor, phrase_index: torch.Tensor | None,
                   window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean states of each phrase: states [B, N, H], words [B, N] bool, phrase_index [B, N] (-1 = none)
    -> phrases [B, P, H], mask [B, P]. Without `phrase_index` phrases are windows of `window` words; a
    caption with no phrase gets one phrase made of all its words."""
    if phrase_index is None:
        phrase_index = torch.where(words, (words.long().cumsum(1) - 1) // window, -1)
    n_phr = max(int(phrase_index.max()) + 1, 1) if phrase_index.numel() else 1
    ids = torch.arange(n_phr, device=states.device)
    assign = (phrase_index[:, None, :] == ids[None, :, None]) & words[:, None, :]  # [B, P, N]
    empty = ~assign.any(-1).any(-1)
    assign[:, 0] |= empty[:, None] & words
    weights = assign.to(states.dtype)
    pooled = weights @ states / weights.sum(-1, keepdim=True).clamp_min(1.0)
    return pooled, assign.any(-1)


def fine_similarity(query: torch.Tensor, query_mask: torch.Tensor, keys: torch.Tensor,
                    aggregation: str = "max", tau: float = 0.1) -> torch.Tensor:
    """Token-level similarity of every query set with every key set (one block).

    query [T, N, d] unit vectors, query_mask [T, N] bool (at least one True per row), keys [A, M, d] unit
    vectors (no padding) -> [T, A] = ½ (mean over valid queries of the best key + mean over keys of the best
    valid query), "best" being max or a softmax(s/tau)-weighted mean.
    """
    n_text, n_q, width = query.shape
    n_audio, n_k, _ = keys.shape
    s = (query.reshape(-1, width) @ keys.reshape(-1, width).T).view(n_text, n_q, n_audio, n_k)
    qm = query_mask[:, :, None, None]
    count = query_mask.sum(1).clamp_min(1).to(s.dtype)[:, None]
    if aggregation == "max":
        best_key = s.amax(-1)  # [T, N, A]
        best_query = s.masked_fill(~qm, -math.inf).amax(1)  # [T, A, M]
    else:
        best_key = (torch.softmax(s / tau, -1) * s).sum(-1)
        best_query = (torch.softmax((s / tau).masked_fill(~qm, -math.inf), 1) * s.masked_fill(~qm, 0)).sum(1)
    t2a = (best_key * query_mask[:, :, None]).sum(1) / count
    return 0.5 * (t2a + best_query.mean(-1))


def _weights(name: str, value: Any, need_positive_sum: bool) -> tuple[float, float, float]:
    try:
        w = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"HCI: {name} must be three numbers (frame-word, segment-phrase, clip-sentence), "
                         f"got {value!r}") from None
    if len(w) != 3 or not all(math.isfinite(x) and x >= 0 for x in w):
        raise ValueError(f"HCI: {name} must be three finite numbers >= 0, got {value!r}")
    if need_positive_sum and sum(w) <= 0:
        raise ValueError(f"HCI: {name} must not all be zero")
    return w  # type: ignore[return-value]


class HCIHead(RetrievalHead):
    """Three-level HCI head, optionally with the AC branch; not factorised (a re-ranker for the index)."""

    def __init__(self, audio_dims: list[int], text_dim: int, text_layers: int, embed_dim: int = 256,
                 audio_stage: int = 3, text_block: int | None = None,
                 level_weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
                 aux_weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3), temperature: float = 0.07,
                 segment_window: int = 4, segment_stride: int = 2, aggregation: str = "max",
                 agg_temperature: float = 0.1, phrase_window: int = 3, use_ac: bool = False, ac_heads: int = 4,
                 ac_weight: float = 0.5, memory_budget_mb: float = 256.0) -> None:
        super().__init__()
        text_block = text_layers if text_block is None else text_block

        def integer(name: str, value: Any, low: int, high: float = math.inf) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"HCI: {name} must be an integer in [{low}, {high}], got {value!r}")
            return value

        def positive(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"HCI: {name} must be a positive number, got {value!r}")
            return float(value)

        self.audio_stage = integer("audio_stage", audio_stage, 1, len(audio_dims))
        self.text_block = integer("text_block", text_block, 1, text_layers)
        self.segment_window = integer("segment_window", segment_window, 1)
        self.segment_stride = integer("segment_stride", segment_stride, 1)
        self.phrase_window = integer("phrase_window", phrase_window, 1)
        self.level_weights = _weights("level_weights", level_weights, True)
        self.aux_weights = _weights("aux_weights", aux_weights, False)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"HCI: aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.aggregation = aggregation
        self.agg_temperature = positive("agg_temperature", agg_temperature)
        self.temperature = positive("temperature", temperature)
        self.memory_budget = positive("memory_budget_mb", memory_budget_mb) * 2**20
        if not isinstance(use_ac, bool):
            raise ValueError(f"HCI: use_ac must be true or false, got {use_ac!r}")
        if isinstance(ac_weight, bool) or not isinstance(ac_weight, (int, float)) or not 0 <= ac_weight <= 1:
            raise ValueError(f"HCI: ac_weight must be in [0, 1], got {ac_weight!r}")
        self.use_ac, self.ac_weight = use_ac, float(ac_weight)
        # pooled: clip–sentence vectors (approximate: the score is not a dot product)
        self.capabilities = HeadCapabilities(has_pooled=True, needs_phrases=True, uses_aux_captions=use_ac)
        stage_dim = audio_dims[self.audio_stage - 1]
        self.audio_in = nn.Sequential(nn.LayerNorm(stage_dim), nn.Linear(stage_dim, embed_dim))
        self.frame_proj = nn.Linear(embed_dim, embed_dim)
        self.segment_proj = nn.Linear(embed_dim, embed_dim)
        self.clip_proj = projection(audio_dims[-1], embed_dim)
        self.word_proj = nn.Linear(text_dim, embed_dim)
        self.phrase_proj = nn.Linear(text_dim, embed_dim)
        self.sentence_proj = projection(text_dim, embed_dim)
        if use_ac:
            heads = integer("ac_heads", ac_heads, 1)
            if embed_dim % heads:
                raise ValueError(f"HCI: embed_dim {embed_dim} is not divisible by ac_heads {heads}")
            self.ac_text = nn.Linear(text_dim, embed_dim)
            self.ac_q_norm, self.ac_kv_norm = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
            self.ac_attn = nn.MultiheadAttention(embed_dim, heads, batch_first=True)

    # ---- representations ----------------------------------------------------------------------------
    def text_repr(self, features: TextFeatures) -> Reprs:
        states = features.layers[self.text_block - 1]  # [B, N, H]
        words = word_mask(features)  # [B, N]; special tokens only for an empty caption
        index = features.phrase_index
        if index is not None:
            index = index.masked_fill(~features.mask, -1)
        phrases, phrase_mask = phrase_pooling(states, words, index, self.phrase_window)
        return {"hci_words": F.normalize(self.word_proj(states), dim=-1), "hci_word_mask": words,
                "hci_phrases": F.normalize(self.phrase_proj(phrases), dim=-1), "hci_phrase_mask": phrase_mask,
                "hci_sentence": F.normalize(self.sentence_proj(features.pooled), dim=-1)}

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        tokens = features.stages[self.audio_stage - 1]  # [B, M, C]
        seconds = features.token_seconds[self.audio_stage - 1] if features.token_seconds else None
        pool_t = time_pooling(tokens.shape[1], seconds, features.grids[self.audio_stage - 1]).to(tokens)
        frames = self.audio_in(pool_t @ tokens)  # [B, F, d]
        pool_s = segment_pooling(frames.shape[1], self.segment_window, self.segment_stride).to(frames)
        clip = self.clip_proj(features.pooled)  # [B, d]
        out = self._audio_units(frames, pool_s, clip, "hci_")
        if self.use_ac:
            delta, on = self._ac_delta(frames, features.aux_text)
            out.update(self._audio_units(frames + delta, pool_s, clip + delta.mean(1), "hci_ac_"))
            out["hci_ac_on"] = on
        return out

    def _audio_units(self, frames: torch.Tensor, pool_s: torch.Tensor, clip: torch.Tensor, prefix: str) -> Reprs:
        return {f"{prefix}frames": F.normalize(self.frame_proj(frames), dim=-1),  # [B, F, d]
                f"{prefix}segments": F.normalize(self.segment_proj(pool_s @ frames), dim=-1),  # [B, S, d]
                f"{prefix}clip": F.normalize(clip, dim=-1)}  # [B, d]

    def _ac_delta(self, frames: torch.Tensor, aux: TextFeatures | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention residual Δ [B, F, d] of frames over the auxiliary caption's tokens, zero where a
        clip has no auxiliary caption (on [B] bool: has one with at least one word)."""
        on = torch.zeros(frames.shape[0], dtype=torch.bool, device=frames.device)
        if aux is None:
            return torch.zeros_like(frames), on
        if aux.mask.shape[0] != frames.shape[0]:
            raise ValueError(f"HCI: {aux.mask.shape[0]} auxiliary captions for {frames.shape[0]} clips")
        on = aux.mask.sum(1) > 2  # more than [CLS] and [SEP]
        kv = self.ac_kv_norm(self.ac_text(aux.layers[self.text_block - 1]))  # [B, N_aux, d]
        delta, _ = self.ac_attn(self.ac_q_norm(frames), kv, kv, key_padding_mask=~aux.mask, need_weights=False)
        return delta * on[:, None, None].to(delta.dtype), on

    # ---- scores -------------------------------------------------------------------------------------
    def _blocks(self, n_text: int, n_audio: int, per_pair: int) -> tuple[int, int]:
        """(texts, audios) per block so that a block's tensors stay within the memory budget."""
        pairs = max(1, int(self.memory_budget // (BYTES_PER_ELEM * max(per_pair, 1))))
        audios = min(max(n_audio, 1), max(1, pairs // max(n_text, 1)))
        return min(max(n_text, 1), max(1, pairs // audios)), audios

    def _branch(self, text: Reprs, audio: Reprs, prefix: str) -> dict[str, torch.Tensor]:
        """Level similarities {level: [T, A]} of one audio branch ("hci_" or "hci_ac_")."""
        words, wmask, phrases, pmask = (text[k] for k in ("hci_words", "hci_word_mask", "hci_phrases",
                                                           "hci_phrase_mask"))
        frames, segments = audio[f"{prefix}frames"], audio[f"{prefix}segments"]
        n_text, n_audio = words.shape[0], frames.shape[0]
        per_pair = max(words.shape[1] * frames.shape[1], phrases.shape[1] * segments.shape[1])
        tc, ac = self._blocks(n_text, n_audio, per_pair)
        fw, sp = (words.new_zeros(n_text, n_audio) for _ in range(2))
        if n_text and n_audio:
            rows_fw, rows_sp = [], []
            for t0 in range(0, n_text, tc):
                t = slice(t0, t0 + tc)
                cols_fw, cols_sp = [], []
                for a0 in range(0, n_audio, ac):
                    a = slice(a0, a0 + ac)
                    cols_fw.append(fine_similarity(words[t], wmask[t], frames[a], self.aggregation,
                                                   self.agg_temperature))
                    cols_sp.append(fine_similarity(phrases[t], pmask[t], segments[a], self.aggregation,
                                                   self.agg_temperature))
                rows_fw.append(torch.cat(cols_fw, 1))
                rows_sp.append(torch.cat(cols_sp, 1))
            fw, sp = torch.cat(rows_fw, 0), torch.cat(rows_sp, 0)
        cs = text["hci_sentence"] @ audio[f"{prefix}clip"].T
        return {"frame_word": fw, "segment_phrase": sp, "clip_sentence": cs}

    def level_scores(self, text: Reprs, audio: Reprs) -> dict[str, torch.Tensor]:
        """{level: [T, A]} for every text × audio pair; with AC, the mix of the original and enhanced branch."""
        levels = self._branch(text, audio, "hci_")
        if self.use_ac and self.ac_weight > 0 and bool(audio["hci_ac_on"].any()):
            enhanced = self._branch(text, audio, "hci_ac_")
            g = self.ac_weight
            levels = {k: (1 - g) * v + g * enhanced[k] for k, v in levels.items()}
        return levels

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        levels = self.level_scores(text, audio)
        return sum(w * levels[k] for w, k in zip(self.level_weights, LEVELS))  # type: ignore[return-value]

    def aux_losses(self, text: Reprs, audio: Reprs, pairs: ClipPairs | None = None) -> dict[str, torch.Tensor]:
        """Σ_l β_l NT-Xent(S_l); same-clip pairs are treated as the main loss treats them (`pairs`)."""
        if not any(self.aux_weights):
            return {}
        pairs = pairs or ClipPairs()
        levels = self.level_scores(text, audio)
        return {f"hci_{k}": w * nt_xent(levels[k], self.temperature, pairs.clip_ids, pairs.mode)
                for w, k in zip(self.aux_weights, LEVELS) if w > 0}

    def text_vector(self, features: TextFeatures) -> torch.Tensor:
        """The sentence vectors alone: no word or phrase units (whose pooling has data-dependent shapes)."""
        return F.normalize(self.sentence_proj(features.pooled), dim=-1)

    def audio_vector(self, features: AudioFeatures) -> torch.Tensor:
        """The clip vectors of the original branch alone: no frames, segments or auxiliary captions."""
        return F.normalize(self.clip_proj(features.pooled), dim=-1)

    def pooled_text(self, text: Reprs) -> torch.Tensor:
        """Sentence vectors [B_t, D] of the original branch, for ANN recall."""
        return text["hci_sentence"]

    def pooled_audio(self, audio: Reprs) -> torch.Tensor:
        """Clip vectors [B_a, D] of the original branch, for ANN recall."""
        return audio["hci_clip"]


HCI_OPTIONS = ("audio_stage", "text_block", "level_weights", "aux_weights", "temperature", "segment_window",
               "segment_stride", "aggregation", "agg_temperature", "phrase_window", "use_ac", "ac_heads",
               "ac_weight", "memory_budget_mb")


def build_hci(audio_dims: list[int], text_dim: int, text_layers: int, embed_dim: int,
              options: dict[str, Any]) -> HCIHead:
    """HCI head from `ModelConfig.head_options`; ValueError names unknown or bad options."""
    unknown = sorted(set(options) - set(HCI_OPTIONS))
    if unknown:
        raise ValueError(f"HCI: unknown option(s) {unknown}; valid options are {sorted(HCI_OPTIONS)}")
    return HCIHead(audio_dims, text_dim, text_layers, embed_dim, **options)


def _fixed(use_ac: bool):
    def build(levels: AudioLevels, text_dim: int, text_layers: int, embed_dim: int,
              options: dict[str, Any]) -> HCIHead:
        if "use_ac" in options and options["use_ac"] is not use_ac:
            raise ValueError(f"HCI: head {'hci+ac' if use_ac else 'hci'} fixes use_ac={use_ac}")
        options = {"audio_stage": levels.token_level, **options, "use_ac": use_ac}  # the encoder's token level
        return build_hci(list(levels.dims), text_dim, text_layers, embed_dim, options)

    return build


# what the registry registers: name -> builder(audio_levels, text_dim, text_layers, embed_dim, options)
HCI_BUILDERS = {"hci": _fixed(False), "hci+ac": _fixed(True)}
