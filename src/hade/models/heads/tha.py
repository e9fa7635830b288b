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

All pairs are scored with matrix products that share the token–word similarities s between both
directions; â and t̂ are never materialised and the softmax normalisers cancel: with e = exp(λ s̄)
(α = e / Z) and w = e·|t_n|, cos(a_m, â_m) = Σ_n w_n s_mn / sqrt(w Ĝ_t wᵀ), Ĝ_t the words' cosine Gram
matrix (t̂ likewise from the audio Gram when M < d, or t̂ itself when M >= d); Z comes out of the same
product (an extra row), so the EPS clamps of the direct form hold exactly. Work is done in blocks of
Tc texts × Ac audios ([Tc, N, Ac, M] tensors). On CPU a block is L2-sized (192K entries per thread): its
~15 elementwise passes (hinge, two norms, two exp, dot products) are memory-bound and several times
slower once a block spills to DRAM. Texts are sorted by length so that a block is trimmed to its longest
caption, and without autograd block buffers are reused in place. On other devices one block covers the
audio chunk that `THAHead.score` sizes by `memory_budget_mb`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import HeadCapabilities, RetrievalHead
from hade.models.heads.explanation import HeadExplanation, ThaExplanation, ThaLevel
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


BLOCK_ELEMS_PER_THREAD = 3 << 16  # [Tc, N, Ac, M] entries per block and CPU thread (~L2-sized, tuned)
MIN_BLOCK_COLUMNS = 256  # audios per block so that Ac·M makes GEMMs at least this wide


class _TextBlock(NamedTuple):
    """Texts t0:t1 of the (length-sorted) text side, trimmed to their first `words` word slots."""

    t0: int
    t1: int
    words: int
    unit: torch.Tensor  # [Tc·nb, d] unit word vectors, zero on padding
    norm: torch.Tensor  # [Tc, nb, 1, 1] |t_n| (clamped at EPS), zero on padding
    ext: torch.Tensor  # [Tc, 1 + nb, nb] row 0: mask_n / |t_n|; rows 1..nb: cosine Gram t̂_n·t̂_n'
    mask: torch.Tensor  # [Tc, nb, 1] 1.0 on words
    count: torch.Tensor  # [Tc, 1] words per text (at least 1)


def _text_blocks(text: torch.Tensor, text_mask: torch.Tensor, columns: int, limit: int,
                 pack: bool) -> tuple[torch.Tensor | None, list[_TextBlock]]:
    """Split the texts into blocks of at most `limit` entries for `columns` = Ac·M audio tokens.

    With `pack`, texts are sorted by length and their words moved to the front, so that a block of
    similar-length texts is trimmed to its own longest caption; returns the sort order (None: unchanged).
    """
    n_text, n_words, width = text.shape
    order, lengths = None, [n_words] * n_text
    if pack and n_text > 1:
        counts = text_mask.sum(1)
        order = torch.argsort(counts, stable=True)
        idx = torch.argsort((~text_mask[order]).to(torch.uint8), dim=1, stable=True)  # words first
        idx = idx[:, :max(int(counts.max()), 1)]
        text_mask = text_mask[order].gather(1, idx)
        text = text[order].gather(1, idx[..., None].expand(-1, -1, width))
        lengths = counts[order].clamp_min(1).tolist()
    norm = text.norm(dim=-1).clamp_min(EPS)
    unit = text / norm[..., None] * text_mask[..., None]
    inv = (text_mask / norm)[:, None, :]
    maskf = text_mask.to(text.dtype)
    rows, total = max(1, limit // max(columns, 1)), max(sum(lengths), 1)  # word rows per block
    rows = -(-total // -(-total // rows))  # the same number of blocks, evenly filled
    blocks, t0 = [], 0
    while t0 < n_text:  # greedy: lengths ascend, so a block's last text is its longest
        t1 = t0 + 1
        while t1 < n_text and (t1 + 1 - t0) * lengths[t1] <= rows:
            t1 += 1
        nb, u = lengths[t1 - 1], unit[t0:t1, :lengths[t1 - 1]]
        ext = torch.cat([inv[t0:t1, :, :nb], u @ u.transpose(1, 2)], 1)
        blocks.append(_TextBlock(t0, t1, nb, u.reshape(-1, width), (norm * maskf)[t0:t1, :nb, None, None], ext,
                                 maskf[t0:t1, :nb, None], maskf[t0:t1].sum(-1, keepdim=True).clamp_min(1.0)))
        t0 = t1
    return order, blocks


def _audio_side(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """audio [A, M, d] -> unit tokens [A, M, d], log |a_m| [A, M], and ext [A, M, K + 1]: the cosine Gram
    (K = M, when M < d) or the unit tokens (K = d), with a last column 1/|a_m|."""
    norm = audio.norm(dim=-1).clamp_min(EPS)
    unit = audio / norm[..., None]
    if audio.shape[1] < audio.shape[2]:
        return unit, norm.log(), torch.cat([unit @ unit.transpose(1, 2), (1 / norm)[..., None]], -1)
    ext = torch.cat([unit, (1 / norm)[..., None]], -1)
    return ext[..., :-1], norm.log(), ext  # the unit tokens as a view of ext: one operand for both GEMMs


def _mul(a: torch.Tensor, b: torch.Tensor, inplace: bool) -> torch.Tensor:
    return a.mul_(b) if inplace else a * b


_BlockOut = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]


def _block(tb: _TextBlock, a_unit: torch.Tensor, a_log: torch.Tensor, a_ext: torch.Tensor, lam: float,
           inplace: bool, attention: bool) -> _BlockOut:
    """One text block × Ac audios -> cos_te [Tc, Ac, M], cos_ae [Tc, nb, Ac] and, with `attention`,
    α and β [Tc, Ac, M, nb]. Block tensors are [Tc, nb, Ac, M]; `inplace` (no autograd) reuses them."""
    tc, nb, (ac, m, width) = tb.t1 - tb.t0, tb.words, a_unit.shape
    s = (tb.unit @ a_unit.reshape(-1, width).T).view(tc, nb, ac, m)  # s = cos(a_m, t_n)
    pos = torch.relu(s)
    buf = pos * pos
    c_te = lam / buf.sum(-1, keepdim=True).add_(EPS).sqrt_()  # λ / ‖[s]_+‖ over tokens   [Tc, nb, Ac, 1]
    c_ae = lam / buf.sum(1, keepdim=True).add_(EPS).sqrt_()  # λ / ‖[s]_+‖ over words     [Tc, 1, Ac, M]
    # text-enhanced: e = exp(λ s̄) is α times Z = Σ_n e; w = e·|t_n| (zero on padding). Z cancels in the cosine:
    # cos(a_m, â_m) = Σ_n w s / sqrt(w Ĝ_t wᵀ), Ĝ_t the cosine Gram; ext's row 0 gives Z for the EPS clamp.
    e = torch.mul(pos, c_te, out=buf if inplace else None).exp_()
    alpha = e * tb.mask[..., None] if attention else None
    w = _mul(e, tb.norm, inplace)
    g = torch.bmm(tb.ext, w.view(tc, nb, ac * m)).view(tc, nb + 1, ac, m)
    z = g[:, 0]  # [Tc, Ac, M]
    quad = _mul(g[:, 1:], w, inplace).sum(1)  # w Ĝ_t wᵀ = Z²|â_m|²
    cos_te = _mul(w, s, inplace).sum(1) / torch.maximum(quad, (z * EPS).square_()).sqrt_()
    # audio-enhanced: w2 = exp(λ s̄')·|a_m| = β·|a_m|·Z'; |t̂_n|² from the Gram (M < d) or t̂ itself (M >= d)
    beta = torch.softmax(pos * c_ae, dim=-1) if attention else None
    w2 = torch.addcmul(a_log, pos, c_ae, out=pos if inplace else None).exp_()
    rows = w2.view(tc * nb, ac, m).transpose(0, 1)  # [Ac, Tc·nb, M]
    g2 = torch.bmm(rows, a_ext)  # [Ac, Tc·nb, K + 1]
    if m < width:  # Z'|t̂_n| = sqrt(w2ᵀ Ĝ_a w2)
        hat2 = torch.maximum(_mul(g2[..., :m], rows, inplace).sum(-1), (g2[..., -1] * EPS).square_()).sqrt_()
    else:  # Z'|t̂_n| = |w2ᵀ Â|
        hat2 = torch.maximum(torch.linalg.vector_norm(g2[..., :-1], dim=-1), g2[..., -1] * EPS)
    hat2 = hat2.view(ac, tc, nb).permute(1, 2, 0)
    cos_ae = _mul(w2, s, inplace).sum(-1) / hat2  # [Tc, nb, Ac]
    if not attention:
        return cos_te, cos_ae, None, None
    alpha = alpha / z[:, None]
    return cos_te, cos_ae, alpha.permute(0, 2, 3, 1), beta.permute(0, 2, 3, 1)


def level_scores(text: torch.Tensor, text_mask: torch.Tensor, audio: torch.Tensor, lam: float,
                 token_reduce: str = "mean", return_attention: bool = False, block_elems: int | None = None):
    """Both THA directions at one level for every text × audio pair.

    text [T, N, d], text_mask [T, N] bool, audio [A, M, d] -> (S_te [T, A], S_ae [T, A]); with
    `return_attention` also α [T, A, M, N] (softmax over words) and β [T, A, M, N] (softmax over tokens).
    Work is done in blocks of at most `block_elems` token–word–pair entries (default: L2-sized on CPU,
    unbounded elsewhere); texts are sorted by length so a block skips the padding of its shorter captions.
    Without autograd (no_grad or inputs without grad) block tensors are reused in place.
    """
    n_text, n_words, width = text.shape
    n_audio, n_tokens, _ = audio.shape
    if block_elems is None:
        block_elems = BLOCK_ELEMS_PER_THREAD * torch.get_num_threads() if text.device.type == "cpu" else 1 << 62
    inplace = not (torch.is_grad_enabled() and (text.requires_grad or audio.requires_grad)) and not return_attention
    per_audio = max(1, n_text * n_words * n_tokens)
    chunk = min(max(n_audio, 1), max(-(-MIN_BLOCK_COLUMNS // n_tokens), block_elems // per_audio, 1))
    order, blocks = _text_blocks(text, text_mask, chunk * n_tokens, block_elems, pack=not return_attention)
    a_unit, a_log, a_ext = _audio_side(audio)
    s_te, s_ae = text.new_empty(n_text, n_audio), text.new_empty(n_text, n_audio)
    if return_attention:
        alpha, beta = (text.new_empty(n_text, n_audio, n_tokens, n_words) for _ in range(2))
    for a0 in range(0, n_audio, chunk):
        a1 = min(a0 + chunk, n_audio)
        for tb in blocks:
            cos_te, cos_ae, al, be = _block(tb, a_unit[a0:a1], a_log[a0:a1], a_ext[a0:a1], lam, inplace,
                                            return_attention)
            ae = (cos_ae * tb.mask).sum(1)  # [Tc, Ac]
            if token_reduce == "sum":
                s_te[tb.t0:tb.t1, a0:a1], s_ae[tb.t0:tb.t1, a0:a1] = cos_te.sum(-1), ae
            else:
                s_te[tb.t0:tb.t1, a0:a1], s_ae[tb.t0:tb.t1, a0:a1] = cos_te.mean(-1), ae / tb.count
            if return_attention:
                alpha[tb.t0:tb.t1, a0:a1], beta[tb.t0:tb.t1, a0:a1] = al, be
    if return_attention:  # never packed: rows are in the original order
        return s_te, s_ae, alpha, beta
    if order is not None:
        inverse = torch.argsort(order)
        s_te, s_ae = s_te[inverse], s_ae[inverse]
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
        # rotation pairs: each level's projected tokens and words, which `level_scores` reads only through
        # cosines, norms and Gram matrices
        self.capabilities = HeadCapabilities(explanations=frozenset({"tha"}), rotation_pairs=tuple(
            (f"tha_audio_{i}", f"tha_text_{i}") for i in range(len(self.audio_stages))))

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
        """Audios per `level_scores` call whose [T, Ac, M, N] block tensors (~12 kept for autograd) fit the budget."""
        n_text, n_words = text["tha_mask"].shape
        most = max(audio[f"tha_audio_{i}"].shape[1] for i in range(self.levels))
        width = text["tha_text_0"].shape[-1]
        per_audio = 4 * n_text * n_words * (12 * most + max(width, most) + 1)  # bytes
        return max(1, int(self.memory_budget // max(per_audio, 1)))

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        n_audio = audio["tha_audio_0"].shape[0]
        first = text["tha_text_0"]
        grad = torch.is_grad_enabled() and (first.requires_grad or audio["tha_audio_0"].requires_grad)
        # on CPU without autograd level_scores' L2-sized blocks already bound memory
        chunk = n_audio if first.device.type == "cpu" and not grad else self._audio_chunk(text, audio)
        parts = []
        for a0 in range(0, n_audio, max(chunk, 1)):
            total = 0.0
            for i in range(self.levels):
                s_te, s_ae = level_scores(text[f"tha_text_{i}"], text["tha_mask"],
                                          audio[f"tha_audio_{i}"][a0:a0 + chunk], self.lam, self.token_reduce)
                total = total + s_te + s_ae
            parts.append(total * self.scale)
        return torch.cat(parts, 1)

    def attention(self, text: Reprs, audio: Reprs) -> tuple[ThaLevel, ...]:
        """For text row 0 and audio row 0: per level α [M, N] (word weights per audio token) and β [M, N]
        (token weights per word), with the two direction scores — the arrays behind `hade explain`."""
        out = []
        for i in range(self.levels):
            s_te, s_ae, alpha, beta = level_scores(text[f"tha_text_{i}"][:1], text["tha_mask"][:1],
                                                   audio[f"tha_audio_{i}"][:1], self.lam, self.token_reduce,
                                                   return_attention=True)
            out.append(ThaLevel(self.audio_stages[i], self.text_blocks[i], alpha[0, 0], beta[0, 0], s_te[0, 0],
                                s_ae[0, 0]))
        return tuple(out)

    def explain(self, text: Reprs, audio: Reprs) -> HeadExplanation:
        """THA's maps (`ThaExplanation`) of text row 0 and audio row 0 (hade.explain maps M back to seconds)."""
        text = {k: v[:1] for k, v in text.items()}
        audio = {k: v[:1] for k, v in audio.items()}
        return HeadExplanation(tha=ThaExplanation(self.score(text, audio)[0, 0], float(self.scale),
                                                  text["tha_mask"][0], self.attention(text, audio)))


