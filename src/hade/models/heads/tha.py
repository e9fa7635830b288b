"""THA: Transformer-block-level hierarchical alignment (HADE, section 2.2).

At each aligned level l (HTSAT stage s ↔ BERT block b; default stages 2/3/4 ↔ blocks 4/10/12, or
2/4/6 for a 6-block MiniLM) audio tokens a_m and words t_n are projected to a common width and:

  s_mn  = cos(a_m, t_n)
  text-enhanced (eq. 1):  s̄_mn = [s_mn]_+ / sqrt(Σ_m [s_mn]_+²)      (normalised over audio tokens)
                          α_mn = softmax_n(λ s̄_mn),  â_m = Σ_n α_mn t_n,   S_te = R_m cos(a_m, â_m)
  audio-enhanced:         s̄'_mn = [s_mn]_+ / sqrt(Σ_n [s_mn]_+²)     (normalised over words)
                          β_nm = softmax_m(λ s̄'_mn), t̂_n = Σ_m β_nm a_m, S_ae = R_n cos(t_n, t̂_n)
  S_THA = Σ_l (S_te + S_ae) · scale

R is the token reduction. The paper writes a plain sum (`token_reduce="sum"`, `scale=1`); the default
is the mean over tokens and `scale = 1/(2·levels)`, a per-level positive rescaling of the same quantity
for a fixed audio grid, chosen because (a) the sum over words makes long captions score higher in
audio→text ranking and (b) a score in [-1, 1] shares the NT-Xent temperature with DP and DCR.

All pairs are scored with batched matrix products that share the token–word similarity tensor between
both directions; â and t̂ are never materialised: a_m·â_m = Σ_n α_mn s_mn |a_m||t_n| and
|â_m|² = α G_t αᵀ with the text Gram matrix G_t (and likewise for t̂ when the audio grid is smaller than
the width). Work is split into audio chunks so that the [T, A, M, N] tensors stay within a memory budget.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import RetrievalHead
from hade.models.heads.reprs import Reprs

EPS = 1e-8


def default_text_blocks(num_layers: int) -> tuple[int, int, int]:
    """BERT blocks matched with HTSAT stages 2/3/4: 4/10/12 for 12 blocks (paper), 2/4/6 for 6 blocks."""
    if num_layers == 12:
        return (4, 10, 12)
    if num_layers == 6:
        return (2, 4, 6)
    return tuple(max(1, min(num_layers, round(num_layers * f))) for f in (4 / 12, 10 / 12, 1.0))  # type: ignore[return-value]


def word_mask(features: TextFeatures, exclude_special: bool = True) -> torch.Tensor:
    """[B, N] True on words; with `exclude_special` the [CLS] (first) and [SEP] (last real) tokens are off."""
    mask = features.mask.clone()
    if exclude_special:
        lengths = mask.sum(1)
        mask[:, 0] = False
        rows = torch.arange(mask.shape[0], device=mask.device)
        mask[rows, (lengths - 1).clamp_min(0)] = False
        empty = ~mask.any(1)  # an empty caption keeps its special tokens rather than no token at all
        mask[empty] = features.mask[empty]
    return mask


def level_scores(text: torch.Tensor, text_mask: torch.Tensor, audio: torch.Tensor, lam: float,
                 token_reduce: str = "mean", return_attention: bool = False):
    """Both THA directions at one level for every text × audio pair.

    text [T, N, d], text_mask [T, N] bool, audio [A, M, d] -> (S_te [T, A], S_ae [T, A]); with
    `return_attention` also α [T, A, M, N] (softmax over words) and β [T, A, M, N] (softmax over tokens).
    """
    n_text, n_words, _ = text.shape
    n_audio, n_tokens, width = audio.shape
    text_norm = text.norm(dim=-1).clamp_min(EPS)  # [T, N]
    audio_norm = audio.norm(dim=-1).clamp_min(EPS)  # [A, M]
    t_unit = text / text_norm[..., None]
    a_unit = audio / audio_norm[..., None]
    # s[t, a, m, n] = cos(a_m, t_n): one matmul over all pairs
    s = (a_unit.reshape(n_audio * n_tokens, width) @ t_unit.reshape(n_text * n_words, width).T)
    s = s.view(n_audio, n_tokens, n_text, n_words).permute(2, 0, 1, 3)
    words = text_mask[:, None, None, :]  # [T, 1, 1, N]
    pos = s.clamp_min(0) * words

    # text-enhanced: normalise over audio tokens m, softmax over words n
    s_bar = pos / pos.square().sum(2, keepdim=True).add(EPS).sqrt()
    alpha = torch.softmax((lam * s_bar).masked_fill(~words, float("-inf")), dim=-1)
    num = (alpha * s * text_norm[:, None, None, :]).sum(-1)  # a_m·â_m / |a_m|     [T, A, M]
    gram_t = text @ text.transpose(1, 2)  # [T, N, N]
    alpha_g = (alpha.reshape(n_text, n_audio * n_tokens, n_words) @ gram_t).view_as(alpha)
    hat_norm = (alpha_g * alpha).sum(-1).clamp_min(EPS * EPS).sqrt()  # |â_m|           [T, A, M]
    cos_te = num / hat_norm

    # audio-enhanced: normalise over words n, softmax over audio tokens m
    s_bar2 = pos / pos.square().sum(3, keepdim=True).add(EPS).sqrt()
    beta = torch.softmax(lam * s_bar2, dim=2)  # [T, A, M, N]
    num2 = (beta * s * audio_norm[None, :, :, None]).sum(2)  # t_n·t̂_n / |t_n|     [T, A, N]
    if n_tokens <= width:
        gram_a = audio @ audio.transpose(1, 2)  # [A, M, M]
        beta_t = beta.permute(1, 0, 3, 2).reshape(n_audio, n_text * n_words, n_tokens)
        quad = ((beta_t @ gram_a) * beta_t).sum(-1).view(n_audio, n_text, n_words).transpose(0, 1)
    else:
        t_hat = beta.permute(1, 0, 3, 2).reshape(n_audio, n_text * n_words, n_tokens) @ audio
        quad = t_hat.square().sum(-1).view(n_audio, n_text, n_words).transpose(0, 1)
    cos_ae = num2 / quad.clamp_min(EPS * EPS).sqrt()  # [T, A, N]

    wmask = text_mask[:, None, :].to(cos_ae.dtype)
    if token_reduce == "sum":
        s_te, s_ae = cos_te.sum(-1), (cos_ae * wmask).sum(-1)
    else:
        s_te = cos_te.mean(-1)
        s_ae = (cos_ae * wmask).sum(-1) / wmask.sum(-1).clamp_min(1.0)
    if return_attention:
        return s_te, s_ae, alpha, beta
    return s_te, s_ae


class THAHead(RetrievalHead):
    """Hierarchical alignment head; `score` is not factorised (a re-ranker in the search engine)."""

    def __init__(self, audio_dims: list[int], text_dim: int, text_layers: int, embed_dim: int = 256,
                 audio_stages: tuple[int, ...] = (2, 3, 4), text_blocks: tuple[int, ...] | None = None,
                 lam: float = 9.0, token_reduce: str = "mean", scale: float | None = None,
                 exclude_special: bool = True, memory_budget_mb: float = 512.0) -> None:
        super().__init__()
        text_blocks = tuple(text_blocks or default_text_blocks(text_layers))
        if len(text_blocks) != len(audio_stages):
            raise ValueError(f"THA: {len(audio_stages)} audio stages but {len(text_blocks)} text blocks")
        if token_reduce not in ("mean", "sum"):
            raise ValueError(f"THA: token_reduce must be 'mean' or 'sum', got {token_reduce!r}")
        for s in audio_stages:
            if not 1 <= s <= len(audio_dims):
                raise ValueError(f"THA: audio stage {s} outside 1..{len(audio_dims)}")
        for b in text_blocks:
            if not 1 <= b <= text_layers:
                raise ValueError(f"THA: text block {b} outside 1..{text_layers}")
        self.audio_stages, self.text_blocks = tuple(audio_stages), text_blocks
        self.lam, self.token_reduce, self.exclude_special = lam, token_reduce, exclude_special
        self.scale = scale if scale is not None else (1.0 if token_reduce == "sum" else 1.0 / (2 * len(audio_stages)))
        self.memory_budget = memory_budget_mb * 2**20
        self.audio_proj = nn.ModuleList(nn.Linear(audio_dims[s - 1], embed_dim) for s in audio_stages)
        self.text_proj = nn.ModuleList(nn.Linear(text_dim, embed_dim) for _ in text_blocks)

    @property
    def levels(self) -> int:
        return len(self.audio_stages)

    def text_repr(self, features: TextFeatures) -> Reprs:
        out = {f"tha_text_{i}": proj(features.layers[b - 1])
               for i, (b, proj) in enumerate(zip(self.text_blocks, self.text_proj))}  # [B, N, d]
        out["tha_mask"] = word_mask(features, self.exclude_special)  # [B, N]
        return out

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        return {f"tha_audio_{i}": proj(features.stages[s - 1])
                for i, (s, proj) in enumerate(zip(self.audio_stages, self.audio_proj))}  # [B, M_l, d]

    def _audio_chunk(self, text: Reprs, audio: Reprs) -> int:
        n_text, n_words = text["tha_mask"].shape
        most = max(audio[f"tha_audio_{i}"].shape[1] for i in range(self.levels))
        width = text["tha_text_0"].shape[-1]
        per_audio = 4 * n_text * (8 * most * n_words + n_words * max(width, most))  # bytes of live tensors
        return max(1, int(self.memory_budget // max(per_audio, 1)))

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        n_audio = audio["tha_audio_0"].shape[0]
        chunk = self._audio_chunk(text, audio)
        parts = []
        for a0 in range(0, n_audio, chunk):
            total = 0.0
            for i in range(self.levels):
                s_te, s_ae = level_scores(text[f"tha_text_{i}"], text["tha_mask"],
                                          audio[f"tha_audio_{i}"][a0:a0 + chunk], self.lam, self.token_reduce)
                total = total + s_te + s_ae
            parts.append(total * self.scale)
        return torch.cat(parts, 1)

    def attention(self, text: Reprs, audio: Reprs) -> list[dict[str, torch.Tensor]]:
        """For one text and one audio: per level α [M, N] (word weights per audio token) and β [M, N]
        (token weights per word), with the two direction scores — the arrays behind `hade explain`."""
        out = []
        for i in range(self.levels):
            s_te, s_ae, alpha, beta = level_scores(text[f"tha_text_{i}"][:1], text["tha_mask"][:1],
                                                   audio[f"tha_audio_{i}"][:1], self.lam, self.token_reduce,
                                                   return_attention=True)
            out.append({"alpha": alpha[0, 0], "beta": beta[0, 0], "text_enhanced": s_te[0, 0],
                        "audio_enhanced": s_ae[0, 0]})
        return out


