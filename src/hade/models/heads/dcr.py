"""DCR + CA: disentangled cross-modal representation with confidence-aware aggregation (HADE 2.3-2.4).

The pooled vectors are projected (as in DP) to D dimensions read as K latent factors of D/K each,
e_k = W_k t̄ (the rows of the last projection layer, taken K at a time). On a batch of matched pairs:

  z = (e - E[e]) / sqrt(Var[e])            per dimension, over the batch
  C_ij = E_b[(z_i^t)ᵀ z_j^a] / (D/K)       [K, K]; C_ii = 1 when factor i agrees perfectly
  L_D = Σ_{i≠j} C_ij²   (inter-factor decoupling),   L_A = Σ_i (1 - C_ii)²   (intra-factor alignment)

CA: g_i = MLP([e_i^t, e_i^a]) (Linear → ReLU → Linear, shared by the factors) and
S_DCR = Σ_i g_i cos(e_i^t, e_i^a). The paper leaves g unnormalised; `ca_output="softmax"` (default)
normalises the K confidences to sum to one so that S_DCR stays in [-1, 1] and shares the NT-Xent
temperature with DP and THA; `"linear"` is the literal form, `"sigmoid"` bounds each weight.

Without CA the score is DP's cosine of the whole vector, so the Table 3 rows DP, +L_D, +L_A, +CA
differ only in what the table says. CA makes the score depend on both sides: all pairs are computed in
audio chunks from halves of the first CA layer computed once per item, u_t = W1_t e_t and
v_a = W1_a e_a + b1, so a pair costs relu(u_t + v_a)·w2 instead of a full MLP on the concatenation; on CPU
a chunk's [T, Ac, K, h] activations are kept cache-sized (4 MiB), elsewhere within `memory_budget_mb`.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from hade.losses import ClipPairs
from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.dp import DPHead
from hade.models.heads.explanation import FactorExplanation, HeadExplanation
from hade.models.heads.reprs import Reprs

EPS = 1e-5
CPU_BLOCK_BYTES = 2**22  # one block's [T, Ac, K, h] CA activations on CPU: cache-sized


def factor_correlation(text_factors: torch.Tensor, audio_factors: torch.Tensor) -> torch.Tensor:
    """C [K, K] from matched factors [B, K, d] (batch-standardised per dimension)."""
    def standardise(e: torch.Tensor) -> torch.Tensor:
        return (e - e.mean(0, keepdim=True)) / e.var(0, unbiased=False, keepdim=True).add(EPS).sqrt()

    zt, za = standardise(text_factors), standardise(audio_factors)
    batch, _, width = zt.shape
    return torch.einsum("bid,bjd->ij", zt, za) / (batch * width)


def decoupling_loss(c: torch.Tensor) -> torch.Tensor:
    """L_D = Σ_{i≠j} C_ij²."""
    off = c - torch.diag_embed(torch.diagonal(c))
    return off.square().sum()


def alignment_loss(c: torch.Tensor) -> torch.Tensor:
    """L_A = Σ_i (1 - C_ii)²."""
    return (1 - torch.diagonal(c)).square().sum()


class FactorHead(DPHead):
    """DP projection read as K factors, with optional L_D, L_A and CA (`dcr` = all three)."""

    def __init__(self, audio_dims: list[int], text_dim: int, embed_dim: int = 256, factors: int = 8,
                 use_ld: bool = True, use_la: bool = True, use_ca: bool = True, alpha: float = 0.01,
                 beta: float = 0.005, ca_hidden: int = 64, ca_output: str = "softmax",
                 memory_budget_mb: float = 256.0, projection: str = "mlp") -> None:
        super().__init__(audio_dims, text_dim, embed_dim, projection=projection)
        if embed_dim % factors:
            raise ValueError(f"DCR: embed_dim {embed_dim} is not divisible by factors K={factors}")
        if ca_output not in ("softmax", "sigmoid", "linear"):
            raise ValueError(f"DCR: ca_output must be softmax, sigmoid or linear, got {ca_output!r}")
        self.factors, self.width = factors, embed_dim // factors
        self.use_ld, self.use_la, self.use_ca = use_ld, use_la, use_ca
        self.alpha, self.beta, self.ca_output = alpha, beta, ca_output
        # DP's capabilities and factors to explain; with CA no longer one dot product, and its score a cosine
        # or a softmax-weighted mix of cosines (other CA outputs declare no bound)
        self.capabilities = replace(DPHead.capabilities, factorised=not use_ca, explanations=frozenset({"factors"}),
                                    score_bound=1.0 if not use_ca or ca_output == "softmax" else None)
        self.memory_budget = memory_budget_mb * 2**20
        if use_ca:
            self.ca_text = nn.Linear(self.width, ca_hidden, bias=False)  # W1 split: [W1_t | W1_a]
            self.ca_audio = nn.Linear(self.width, ca_hidden)
            self.ca_out = nn.Linear(ca_hidden, 1)

    def _factors(self, projected: torch.Tensor) -> torch.Tensor:
        return projected.view(projected.shape[0], self.factors, self.width)  # [B, K, D/K]

    def text_repr(self, features: TextFeatures) -> Reprs:
        e = self.text_proj(features.pooled)
        return {"embed": F.normalize(e, dim=-1), "factors": self._factors(e)}

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        e = self.audio_proj(features.pooled)
        return {"embed": F.normalize(e, dim=-1), "factors": self._factors(e)}

    def confidences(self, text_factors: torch.Tensor, audio_factors: torch.Tensor) -> torch.Tensor:
        """g [T, A, K] for every pair (one audio chunk: memory T·A·K·hidden)."""
        return self._weights(self.ca_text(text_factors), self.ca_audio(audio_factors))

    def _weights(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """g [T, A, K] from the first CA layer's halves u = W1_t e_t [T, K, h] and v = W1_a e_a + b1 [A, K, h]."""
        g = self.ca_out(torch.relu_(u[:, None] + v[None])).squeeze(-1)  # [T, A, K]
        if self.ca_output == "softmax":
            return torch.softmax(g, dim=-1)
        if self.ca_output == "sigmoid":
            return torch.sigmoid(g)
        return g

    def _audio_chunk(self, n_text: int, device: torch.device) -> int:
        """Audios per block: the [T, Ac, K, h] hidden tensor within the memory budget and, on CPU, cache-sized."""
        per_audio = 4 * n_text * self.factors * (2 * self.ca_out.in_features + 2)  # bytes
        budget = self.memory_budget if device.type != "cpu" else min(self.memory_budget, CPU_BLOCK_BYTES)
        return max(1, int(budget // per_audio))

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        if not self.use_ca:
            return text["embed"] @ audio["embed"].T
        t_unit = F.normalize(text["factors"], dim=-1)  # [T, K, d]
        a_unit = F.normalize(audio["factors"], dim=-1)  # [A, K, d]
        cos = torch.einsum("tkd,akd->tak", t_unit, a_unit)  # [T, A, K]
        u, v = self.ca_text(text["factors"]), self.ca_audio(audio["factors"])  # CA's first layer, once per item
        chunk = self._audio_chunk(t_unit.shape[0], t_unit.device)
        parts = [(self._weights(u, v[a0:a0 + chunk]) * cos[:, a0:a0 + chunk]).sum(-1)
                 for a0 in range(0, a_unit.shape[0], chunk)]
        return torch.cat(parts, 1)

    def explain(self, text: Reprs, audio: Reprs) -> HeadExplanation:
        """The factors (`FactorExplanation`) of text row 0 and audio row 0; with CA, Σ_i g_i·cos_i = score."""
        tf, af = text["factors"][:1], audio["factors"][:1]  # [1, K, d]
        cos = (F.normalize(tf, dim=-1) * F.normalize(af, dim=-1)).sum(-1)[0]  # [K]
        pair_t, pair_a = {k: v[:1] for k, v in text.items()}, {k: v[:1] for k, v in audio.items()}
        confidence = self.confidences(tf, af)[0, 0] if self.use_ca else None  # [K]
        return HeadExplanation(factors=FactorExplanation(cos, self.score(pair_t, pair_a)[0, 0], confidence))

    def aux_losses(self, text: Reprs, audio: Reprs, pairs: ClipPairs | None = None) -> dict[str, torch.Tensor]:
        """α L_D + β L_A on the factor correlation of the matched rows (a [K, K] matrix over factors, not over
        the batch: same-clip rows are no negatives here, so `pairs` changes nothing)."""
        if not (self.use_ld or self.use_la):
            return {}
        c = factor_correlation(text["factors"], audio["factors"])
        out = {}
        if self.use_ld:
            out["decoupling"] = self.alpha * decoupling_loss(c)
        if self.use_la:
            out["alignment"] = self.beta * alignment_loss(c)
        return out
