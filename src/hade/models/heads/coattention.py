"""Co-attention heads: single, stacked and iterated co-attention (Sun et al., paper 004).

The paper gives figures and an abstract, not equations; where it is silent this module uses the
construction it builds on, MCAN (Yu et al. 2019), and states each choice here.

Inputs. Audio segments a_m = W_a x_m: the tokens of one HTSAT stage (`audio_stage`, default the last),
[B, M, C_s] -> [B, M, d]; with `audio_segments="time"` the tokens that cover the same time span
(identical `token_seconds`, i.e. the frequency bands of one time step) are averaged first, so that the
segments are time steps. Words t_n = W_t h_n: one BERT block's token states (`text_block`, default the
last), [B, N, H] -> [B, N, d]; the padding mask is honoured everywhere (attention keys and pooling),
and `exclude_special=True` drops [CLS]/[SEP] as THA does (default False: MCAN attends to all tokens).
No positional embeddings are added: both encoders already mix position into their tokens.

Units (MCAN, post-LN, each with its own FFN):
  unit(X, Y) = LN(Z + FFN(Z)),  Z = LN(X + MHA(Q=X, K=Y, V=Y)),  FFN = Linear(d, f·d)-ReLU-Linear(f·d, d)
  SA(X) = unit(X, X);  GA(X, Y) = unit(X, Y)  (keys masked by Y's padding mask)
Co-attention module (paper Fig. 2-3, symmetric): T' = SA(T), A' = SA(A), then guided attention in both
  directions from the self-attended inputs, in parallel: T'' = GA(T', A'), A'' = GA(A', T').
Designs (Fig. 4):
  single:   one co-attention module.
  stacked:  L modules in sequence (MCAN "stacking": each module's SA and GA take the previous output).
  iterated: L_sa SA units on each modality first (pair independent, so run once per item inside
            `text_repr`/`audio_repr`), then the co-attention module applied R times to the refined
            embeddings, sharing one set of weights (`share_weights=True`, "iterating") or not.
Pooling (`pooling`): "attention" = MCAN's AttFlat, w = softmax_n(MLP(x_n)) over real tokens,
  v = W_o Σ_n w_n x_n; "mean" = v = W_o mean_n x_n over real tokens. Score S(t, a) = cos(v_t, v_a),
  in [-1, 1] like DP/THA so the NT-Xent temperature is shared.

Scoring. GA makes both sides pair dependent, so `score` runs every pair: the first module's SA units
(still pair independent) on the items, then pairs expanded to [T_b·A_b, ...] and run batched through
the rest; the block size comes from `memory_budget_mb` (an estimate of the live activations of one
pair, conservative for training where autograd keeps them all). `factorised` is False: the head is a
re-ranker; `pooled_text`/`pooled_audio` give L2-normalised masked means of the per-item token sequences
(projected, and self-attended for `iterated`) — an approximation that is never trained as such,
used only for ANN recall in the search engine.

Defaults are small (d = embed_dim, 4 heads, FFN ×4, stacked L = 2, iterated L_sa = 1 and R = 2,
dropout 0.1) because the paper does not give them and the toolkit trains on modest hardware.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import HeadCapabilities, RetrievalHead
from hade.models.heads.reprs import Reprs
from hade.models.heads.tha import word_mask

DESIGNS = ("single", "stacked", "iterated")
POOLINGS = ("attention", "mean")
SEGMENTS = ("tokens", "time")


def _key_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, K] bool (True = real) -> additive [B, 1, 1, K] bias: 0 on real keys, the dtype's minimum on
    padding (finite, so a row without real keys attends uniformly instead of producing NaN)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, N, d], mask [B, N] bool -> [B, d] mean over real tokens (zeros when there are none)."""
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class AttentionUnit(nn.Module):
    """MCAN SA/GA unit: Z = LN(X + MHA(X, Y, Y)), out = LN(Z + FFN(Z)); X [B, Nq, d], Y [B, Nk, d]."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """x [B, Nq, d] queries, y [B, Nk, d] keys/values, y_mask [B, Nk] bool -> [B, Nq, d]."""
        b, nq, d = x.shape
        nk, h = y.shape[1], self.heads
        q = self.q(x).view(b, nq, h, d // h).transpose(1, 2)  # [B, h, Nq, d/h]
        k = self.k(y).view(b, nk, h, d // h).transpose(1, 2)
        v = self.v(y).view(b, nk, h, d // h).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=_key_bias(y_mask, q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        z = self.norm1(x + self.drop(self.o(att.transpose(1, 2).reshape(b, nq, d))))
        return self.norm2(z + self.drop(self.ffn(z)))


class CoAttentionModule(nn.Module):
    """SA on each side, then GA in both directions from the self-attended sequences (in parallel)."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.sa_text, self.sa_audio, self.ga_text, self.ga_audio = (
            AttentionUnit(dim, heads, dropout, ffn_mult) for _ in range(4))

    def self_attend(self, t: torch.Tensor, t_mask: torch.Tensor, a: torch.Tensor,
                    a_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B_t, N, d], a [B_a, M, d] -> SA(t), SA(a); the batches need not be pairs."""
        return self.sa_text(t, t, t_mask), self.sa_audio(a, a, a_mask)

    def guide(self, t: torch.Tensor, t_mask: torch.Tensor, a: torch.Tensor,
              a_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs t [P, N, d], a [P, M, d] -> GA(t, a), GA(a, t)."""
        return self.ga_text(t, a, a_mask), self.ga_audio(a, t, t_mask)

    def forward(self, t: torch.Tensor, t_mask: torch.Tensor, a: torch.Tensor,
                a_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t, a = self.self_attend(t, t_mask, a, a_mask)
        return self.guide(t, t_mask, a, a_mask)


class Pool(nn.Module):
    """[B, N, d] + mask [B, N] -> [B, d]: attentional (MCAN AttFlat, one glimpse) or masked mean, then W_o."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            return self.out(masked_mean(x, mask))
        logits = self.mlp(x).squeeze(-1).masked_fill(~mask, torch.finfo(x.dtype).min)  # [B, N]
        return self.out((torch.softmax(logits, -1)[..., None] * x).sum(1))


def time_groups(token_seconds: torch.Tensor) -> torch.Tensor:
    """[M, 2] (start, end) per token -> [S, M] averaging matrix over tokens with the same time span,
    rows ordered by time (S = number of distinct spans)."""
    spans, inverse = torch.unique(token_seconds.double(), dim=0, return_inverse=True)  # sorted by start
    groups = F.one_hot(inverse, spans.shape[0]).T.double()  # [S, M]
    return groups / groups.sum(1, keepdim=True)


class CoAttentionHead(RetrievalHead):
    """Single / stacked / iterated co-attention head (see the module docstring)."""

    capabilities = HeadCapabilities(has_pooled=True)  # approximate recall vectors (masked means)

    def __init__(self, audio_dims: list[int], text_dim: int, text_layers: int, embed_dim: int = 256,
                 design: str = "single", layers: int | None = None, iterations: int = 2,
                 share_weights: bool = True, heads: int = 4, dropout: float = 0.1, ffn_mult: int = 4,
                 audio_stage: int | None = None, text_block: int | None = None, audio_segments: str = "tokens",
                 exclude_special: bool = False, pooling: str = "attention",
                 memory_budget_mb: float = 256.0) -> None:
        super().__init__()
        if design not in DESIGNS:
            raise ValueError(f"co-attention: design must be one of {DESIGNS}, got {design!r}")
        default_layers = {"single": 1, "stacked": 2, "iterated": 1}[design]
        layers = default_layers if layers is None else layers
        self.audio_stage = len(audio_dims) if audio_stage is None else audio_stage
        self.text_block = text_layers if text_block is None else text_block
        _check(design, layers, iterations, heads, dropout, ffn_mult, embed_dim, self.audio_stage,
               len(audio_dims), self.text_block, text_layers, audio_segments, pooling, memory_budget_mb)
        self.design, self.audio_segments, self.exclude_special = design, audio_segments, exclude_special
        self.memory_budget = memory_budget_mb * 2**20
        self.heads, self.ffn_mult = heads, ffn_mult
        self.audio_proj = nn.Linear(audio_dims[self.audio_stage - 1], embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        pre = layers if design == "iterated" else 0  # L_sa self-attention units per modality
        self.text_sa = nn.ModuleList(AttentionUnit(embed_dim, heads, dropout, ffn_mult) for _ in range(pre))
        self.audio_sa = nn.ModuleList(AttentionUnit(embed_dim, heads, dropout, ffn_mult) for _ in range(pre))
        if design == "iterated":
            n_modules = 1 if share_weights else iterations
            self.schedule = [0] * iterations if share_weights else list(range(iterations))
        else:
            n_modules = layers
            self.schedule = list(range(layers))
        self.coatt = nn.ModuleList(CoAttentionModule(embed_dim, heads, dropout, ffn_mult) for _ in range(n_modules))
        self.text_pool, self.audio_pool = Pool(embed_dim, pooling), Pool(embed_dim, pooling)

    # ---- per-item representations ----------------------------------------------------------------
    def text_repr(self, features: TextFeatures) -> Reprs:
        """-> coatt_text [B, N, d] (projected, then L_sa SA units for `iterated`; zero on padding),
        coatt_text_mask [B, N] bool."""
        mask = word_mask(features, True) if self.exclude_special else features.mask
        x = self.text_proj(features.layers[self.text_block - 1])
        for unit in self.text_sa:
            x = unit(x, x, mask)
        return {"coatt_text": x.masked_fill(~mask[..., None], 0.0), "coatt_text_mask": mask}

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        """-> coatt_audio [B, M, d] (M tokens or time steps of the chosen stage), coatt_audio_mask [B, M]."""
        x = features.stages[self.audio_stage - 1]  # [B, M_s, C_s]
        if self.audio_segments == "time":
            if len(features.token_seconds) < self.audio_stage:
                raise ValueError("co-attention: audio_segments='time' needs AudioFeatures.token_seconds")
            groups = time_groups(features.token_seconds[self.audio_stage - 1]).to(x.device, x.dtype)
            x = torch.einsum("sm,bmc->bsc", groups, x)  # [B, S, C_s]
        x = self.audio_proj(x)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        for unit in self.audio_sa:
            x = unit(x, x, mask)
        return {"coatt_audio": x, "coatt_audio_mask": mask}

    def pooled_text(self, text: Reprs) -> torch.Tensor:
        """Approximate recall vectors [B_t, d]: normalised masked means of the text token sequences. They
        ignore co-attention and are not trained directly; use only for ANN recall."""
        return F.normalize(masked_mean(text["coatt_text"], text["coatt_text_mask"]), dim=-1)

    def pooled_audio(self, audio: Reprs) -> torch.Tensor:
        """Approximate recall vectors [B_a, d]: normalised masked means of the audio token sequences."""
        return F.normalize(masked_mean(audio["coatt_audio"], audio["coatt_audio_mask"]), dim=-1)

    # ---- all-pairs scoring -----------------------------------------------------------------------
    def pairs_per_block(self, words: int, segments: int, width: int, element_size: int = 4) -> int:
        """Pairs run at once so that their estimated activations stay within the memory budget."""
        s, h, units = words + segments, self.heads, 2 * len(self.schedule)
        attn = 3 * h * (2 * words * segments + words * words + segments * segments)  # logits, softmax, dropout
        acts = 2 * s * width * (10 + 2 * self.ffn_mult)  # q, k, v, o, norms, residuals, FFN hidden
        per_pair = element_size * (units * acts + len(self.schedule) * attn)
        return max(1, int(self.memory_budget // per_pair))

    def _pairs(self, t: torch.Tensor, t_mask: torch.Tensor, a: torch.Tensor,
               a_mask: torch.Tensor) -> torch.Tensor:
        """Self-attended items t [Tc, N, d], a [Ac, M, d] -> scores [Tc, Ac], all pairs batched."""
        (tc, n, d), (ac, m, _) = t.shape, a.shape
        pt = t[:, None].expand(tc, ac, n, d).reshape(tc * ac, n, d)
        pm = t_mask[:, None].expand(tc, ac, n).reshape(tc * ac, n)
        pa = a[None].expand(tc, ac, m, d).reshape(tc * ac, m, d)
        am = a_mask[None].expand(tc, ac, m).reshape(tc * ac, m)
        pt, pa = self.coatt[self.schedule[0]].guide(pt, pm, pa, am)
        for i in self.schedule[1:]:
            pt, pa = self.coatt[i](pt, pm, pa, am)
        vt, va = self.text_pool(pt, pm), self.audio_pool(pa, am)
        return F.cosine_similarity(vt, va, dim=-1, eps=1e-8).view(tc, ac)

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        """[T, A] cosine of the pair-dependent pooled vectors, in blocks of `pairs_per_block` pairs.

        Texts run in groups of similar length (`length_groups`), each trimmed to its own longest caption:
        a padded word costs as much as a real one in every pair-dependent unit, and padding to the batch's
        longest caption roughly doubled the work on captions of 15 words on average and up to 40. Padding
        never changes a real token's output (it is masked as a key and left out of pooling), so the scores
        are those of one padded block up to float rounding."""
        t, t_mask = text["coatt_text"], text["coatt_text_mask"]
        a, a_mask = audio["coatt_audio"], audio["coatt_audio_mask"]
        n_text, n_audio = t.shape[0], a.shape[0]
        if n_text == 0 or n_audio == 0:
            return t.new_zeros(n_text, n_audio)
        lengths = t_mask.sum(1)
        keep = max(1, int(lengths.max()))  # drop padding columns no text uses
        t, t_mask = t[:, :keep], t_mask[:, :keep]
        t, a = self.coatt[self.schedule[0]].self_attend(t, t_mask, a, a_mask)  # pair independent
        order = torch.argsort(lengths, descending=True, stable=True)
        rows = []
        for group in length_groups(lengths[order].tolist()):
            idx = order[group[0]:group[-1] + 1]
            width = max(1, int(lengths[idx[0]]))
            tg, mg = t[idx, :width], t_mask[idx, :width]
            pairs = self.pairs_per_block(width, a.shape[1], t.shape[-1], t.element_size())
            a_block = min(n_audio, pairs)
            t_block = max(1, min(len(idx), pairs // a_block))
            for t0 in range(0, len(idx), t_block):
                rows.append(torch.cat([self._pairs(tg[t0:t0 + t_block], mg[t0:t0 + t_block],
                                                   a[a0:a0 + a_block], a_mask[a0:a0 + a_block])
                                       for a0 in range(0, n_audio, a_block)], 1))
        return torch.cat(rows, 0)[torch.argsort(order)]  # back to the callers' text order


def length_groups(lengths: list[int], ratio: float = 0.75) -> list[list[int]]:
    """Positions 0..n-1 of `lengths` (sorted, longest first) in consecutive groups whose shortest member
    is at least `ratio` × their longest, so trimming each group to its longest wastes < 1 - ratio of it."""
    groups: list[list[int]] = []
    for i, n in enumerate(lengths):
        if groups and n >= ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _check(design: str, layers: Any, iterations: Any, heads: Any, dropout: Any, ffn_mult: Any, embed_dim: int,
           audio_stage: Any, n_stages: int, text_block: Any, text_layers: int, audio_segments: Any,
           pooling: Any, memory_budget_mb: Any) -> None:
    """Raise ValueError with a clear message on a bad option."""
    def positive_int(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"co-attention: {name} must be a positive integer, got {value!r}")

    for name, value in (("layers", layers), ("iterations", iterations), ("heads", heads), ("ffn_mult", ffn_mult)):
        positive_int(name, value)
    if design == "single" and layers != 1:
        raise ValueError(f"co-attention: design 'single' has exactly one module, got layers={layers}")
    if embed_dim % heads:
        raise ValueError(f"co-attention: embed_dim {embed_dim} is not divisible by heads={heads}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"co-attention: dropout must be in [0, 1), got {dropout!r}")
    positive_int("audio_stage", audio_stage)
    if audio_stage > n_stages:
        raise ValueError(f"co-attention: audio_stage {audio_stage} outside 1..{n_stages}")
    positive_int("text_block", text_block)
    if text_block > text_layers:
        raise ValueError(f"co-attention: text_block {text_block} outside 1..{text_layers}")
    if audio_segments not in SEGMENTS:
        raise ValueError(f"co-attention: audio_segments must be one of {SEGMENTS}, got {audio_segments!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"co-attention: pooling must be one of {POOLINGS}, got {pooling!r}")
    if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) or not (
            math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
        raise ValueError(f"co-attention: memory_budget_mb must be a positive number, got {memory_budget_mb!r}")


COMMON_OPTIONS = ("heads", "dropout", "ffn_mult", "audio_stage", "text_block", "audio_segments", "exclude_special",
                  "pooling", "memory_budget_mb")
DESIGN_OPTIONS = {"single": ("layers",), "stacked": ("layers",),
                  "iterated": ("layers", "iterations", "share_weights")}


def build_coattention(audio_dims: list[int], text_dim: int, text_layers: int, embed_dim: int,
                      options: dict[str, Any]) -> RetrievalHead:
    """Co-attention head from `options`: `design` (single | stacked | iterated) and, for every design,
    heads, dropout, ffn_mult, audio_stage, text_block, audio_segments (tokens | time), exclude_special,
    pooling (attention | mean), memory_budget_mb; `layers` (stacked: L modules; iterated: L_sa SA units;
    single: 1); iterated only: iterations (R), share_weights. Raises ValueError on a bad option."""
    opts = dict(options)
    design = opts.pop("design", None)
    if design not in DESIGNS:
        raise ValueError(f"co-attention: option 'design' must be one of {DESIGNS}, got {design!r}")
    allowed = COMMON_OPTIONS + DESIGN_OPTIONS[design]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"co-attention ({design}): unknown options {unknown}; allowed: {sorted(allowed)}")
    for flag in ("share_weights", "exclude_special"):
        if flag in opts and not isinstance(opts[flag], bool):
            raise ValueError(f"co-attention: {flag} must be true or false, got {opts[flag]!r}")
    return CoAttentionHead(audio_dims, text_dim, text_layers, embed_dim, design=design, **opts)
