"""DiffATR: generative audio-text retrieval with a denoising diffusion model over candidate distributions.

The DiffATR abstract (papers/001) gives no equations; this head follows the construction of the work it
builds on (DiffusionRet, generative text-video retrieval). Every choice below is an option of `DiffATRHead`.

Features. As DP: pooled audio / text vectors, two-layer projections, L2-normalised `embed` [B, D]. During
training `score` is their cosine, so the trainer's NT-Xent (the "discriminative viewpoint") trains encoders
and projections exactly as for DP; `pooled_text`/`pooled_audio` return `embed` for ANN recall.

Diffusion state. For a query q and a candidate set C = (c_1..c_N), x_0 = s · p [N]: p is the one-hot match
vector (`x0="onehot"`, default) or the contrastive distribution softmax(cos(q, C)/x0_temperature), detached
(`x0="contrastive"`, distillation of the feature extractor); s = `signal_scale`. Forward process
x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε, ε ~ N(0, I), with ᾱ from a cosine (Nichol & Dhariwal, default) or linear
(DDPM, 1e-4..0.02) β schedule over `timesteps` steps.

Denoiser f(x_t, t, q, C) -> logits [N]; x̂_0 = s · softmax(logits), i.e. it predicts x_0 (not ε) as a
distribution over the candidates, which is what retrieval scores; DDIM recovers ε̂ from x̂_0. Tokens: a query
token W_q q + direction embedding, and one token per candidate W_c c_i + W_p [q ⊙ c_i, cos(q, c_i)]
(`pair_features`, the explicit query-candidate interaction that lets the generator use the contrastive prior)
+ w_x x_t,i; a sinusoidal-MLP timestep embedding is added to every token. Pre-LN Transformer blocks with no
positional embedding, so f is permutation-equivariant over candidates and takes any N: `attention="full"`
(self-attention over [query; candidates], O(N²) per query, default) or `"induced"` (Set-Transformer ISAB with
`inducing` learned points, O(N)). A LayerNorm + Linear reads one logit per candidate token. No dropout.

Generation loss (`aux_losses`, the "generative viewpoint"): on a matched batch each text is a query over the
batch's audios (and each audio over the texts with `train_directions="both"`, default; one shared denoiser with
a direction embedding); per query a uniform random t, x_t from x_0, then `loss="ce"` (cross-entropy of the
target p against softmax(logits), default: well-scaled gradients) or `"mse"` (‖x̂_0 - x_0‖², the plain
x_0-prediction loss), times `generation_weight`. Rows of one clip (rare: the trainer's batches avoid them)
share the target mass when same-clip pairs are positives (`aux_losses(pairs=)`). `detach_features=True` (default) stops the generation loss at the projected features: as the
abstract says, the generator learns from the generation loss and the feature extractor from the contrastive
loss; False lets the generation loss shape the encoders too. In train mode t and ε come from the global RNG
(they follow the trainer's seed and resume); in eval mode from a generator seeded with `seed` (a
deterministic validation loss).

Inference (`score` when not training, `score_mode="auto"`; "generative"/"cosine" force one): DDIM with η = 0
over `sample_steps` evenly spaced timesteps from T-1 to 0, starting from x_T ~ N(0, I) drawn from a CPU
torch.Generator seeded with `seed` (independent of the global RNG and of the device). The same noise vectors
[K, N] start every query, so a query's scores depend only on (query, candidate set, seed), never on which other
queries share its block (the price: an uncertain generator's errors are correlated across queries, and noise is
tied to candidate positions, so reordering candidates changes the draw; the denoiser itself is equivariant).
`samples` = K > 1 runs K chains and averages their final distributions, trading K× compute for an estimate of
the expected distribution rather than one sample. The output is the last x̂_0 / s, the generated distribution
(`output="prob"`) or its
log (`"log_prob"`), plus `prior_weight` · cos(q, c) (default 0, purely generative; > 0 blends the
discriminative prior, which also breaks ties between near-equal probabilities). `infer_direction="t2a"`
(default): texts are the queries, all audios of the call the candidates; "a2t" generates over the call's texts
for each audio and transposes; "both" averages the two. Queries are processed in blocks sized by
`memory_budget_mb`; the loop runs over diffusion steps only.

Candidate-set dependence. Generative scores are normalised over the candidates of the call: score(text, audio[S])
is NOT the slice [:, S] of score(text, audio), and a one-pair call always gives probability 1 (use the cosine,
`score_mode="cosine"`, for per-pair explanations). Compare scores within one call only. `score_all` splitting audios
into blocks (and, for "a2t"/"both", texts) gives per-block distributions; for exact evaluation use an
audio_block ≥ the number of audios. In the search engine DiffATR is a re-ranker: recall candidates with the ANN
on `pooled_text`/`pooled_audio`, then call `score` once on the recalled set and rank within it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hade.losses import ClipPairs
from hade.models.heads.base import HeadCapabilities
from hade.models.heads.dp import DPHead
from hade.models.heads.reprs import Reprs

CHOICES = {"schedule": ("cosine", "linear"), "x0": ("onehot", "contrastive"), "loss": ("ce", "mse"),
           "train_directions": ("t2a", "a2t", "both"), "infer_direction": ("t2a", "a2t", "both"),
           "score_mode": ("auto", "generative", "cosine"), "output": ("prob", "log_prob"),
           "attention": ("full", "induced")}


def alpha_bars(schedule: str, timesteps: int) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 [T] (float64), decreasing from ≈1 to ≈0."""
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64) * (1000 / timesteps)
        return torch.cumprod(1 - betas.clamp(max=0.999), 0)
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """Evenly spaced, strictly decreasing timesteps T-1 .. 0 (at most `steps`)."""
    return sorted({round(x) for x in torch.linspace(timesteps - 1, 0, steps).tolist()}, reverse=True)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [Q, dim] of integer timesteps t [Q]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], -1)
    return F.pad(emb, (0, dim - emb.shape[-1]))


class Attention(nn.Module):
    """Multi-head attention of x [Q, L, w] over m [Q, M, w] -> [Q, L, w] (F.scaled_dot_product_attention)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(width, width), nn.Linear(width, 2 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        def split(y: torch.Tensor) -> torch.Tensor:
            return y.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [Q, h, L, w/h]

        k, v = self.kv(m).chunk(2, -1)
        o = F.scaled_dot_product_attention(split(self.q(x)), split(k), split(v))
        return self.out(o.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-LN set block: full self-attention, or ISAB (inducing points ← tokens, tokens ← inducing points)."""

    def __init__(self, width: int, heads: int, attention: str, inducing: int) -> None:
        super().__init__()
        self.attention = attention
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        if attention == "induced":
            self.points = nn.Parameter(torch.randn(inducing, width) / math.sqrt(width))
            self.gather = Attention(width, heads)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm1(h)
        if self.attention == "full":
            h = h + self.attn(x, x)
        else:
            summary = self.gather(self.points.expand(h.shape[0], -1, -1), x)  # [Q, m, w]
            h = h + self.attn(x, summary)
        return h + self.ff(self.norm2(h))


class Denoiser(nn.Module):
    """f(x_t, t, q, C) -> logits [Q, N]; `prepare` builds the step-independent tokens once per call."""

    def __init__(self, embed_dim: int, width: int, layers: int, heads: int, attention: str, inducing: int,
                 pair_features: bool) -> None:
        super().__init__()
        self.width, self.pair_features = width, pair_features
        self.query_in, self.cand_in = nn.Linear(embed_dim, width), nn.Linear(embed_dim, width)
        self.pair_in = nn.Linear(embed_dim + 1, width) if pair_features else None
        self.x_in = nn.Linear(1, width)
        self.direction = nn.Embedding(2, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(Block(width, heads, attention, inducing) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def prepare(self, query: torch.Tensor, cands: torch.Tensor, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
        """query [Q, D], cands [N, D] (unit vectors) -> query token [Q, w], candidate tokens [Q, N, w]."""
        q_tok = self.query_in(query) + self.direction.weight[direction]
        c_tok = self.cand_in(cands)[None].expand(query.shape[0], -1, -1)
        if self.pair_in is not None:
            prod = query[:, None] * cands[None]  # [Q, N, D]
            c_tok = c_tok + self.pair_in(torch.cat([prod, prod.sum(-1, keepdim=True)], -1))
        return q_tok, c_tok

    def forward(self, tokens: tuple[torch.Tensor, torch.Tensor], x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """tokens from `prepare`, x_t [Q, N], t [Q] integer timesteps -> logits [Q, N]."""
        q_tok, c_tok = tokens
        temb = self.time(timestep_embedding(t, self.width).to(q_tok.dtype))[:, None]  # [Q, 1, w]
        c = c_tok + self.x_in(x_t.unsqueeze(-1).to(c_tok.dtype))
        h = torch.cat([q_tok[:, None], c], 1) + temb  # [Q, 1+N, w]
        for block in self.blocks:
            h = block(h)
        return self.out(h[:, 1:]).squeeze(-1)


class DiffATRHead(DPHead):
    """DP features + a diffusion generator of query→candidate distributions (see the module docstring)."""

    # DP's pooled vectors; no bound (generated distributions are log-probabilities when generative); the
    # scores are a distribution over the candidates of one call
    capabilities = HeadCapabilities(has_pooled=True, set_scoring=True,
                                    pooled_projection=DPHead.capabilities.pooled_projection)

    def __init__(self, audio_dims: list[int], text_dim: int, embed_dim: int = 256, width: int = 128,
                 layers: int = 2, heads: int = 4, attention: str = "full", inducing: int = 16,
                 pair_features: bool = True, timesteps: int = 1000, schedule: str = "cosine",
                 sample_steps: int = 10, samples: int = 1, signal_scale: float = 1.0, x0: str = "onehot",
                 x0_temperature: float = 0.07, loss: str = "ce", generation_weight: float = 1.0,
                 train_directions: str = "both", detach_features: bool = True, infer_direction: str = "t2a",
                 score_mode: str = "auto", output: str = "prob", prior_weight: float = 0.0, seed: int = 0,
                 memory_budget_mb: float = 256.0) -> None:
        chosen = dict(schedule=schedule, x0=x0, loss=loss, train_directions=train_directions,
                      infer_direction=infer_direction, score_mode=score_mode, output=output, attention=attention)
        for name, value in chosen.items():
            if value not in CHOICES[name]:
                raise ValueError(f"DiffATR: {name} must be one of {CHOICES[name]}, got {value!r}")
        for name, value in dict(embed_dim=embed_dim, width=width, layers=layers, heads=heads, inducing=inducing,
                                timesteps=timesteps, sample_steps=sample_steps, samples=samples).items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DiffATR: {name} must be a positive integer, got {value!r}")
        if width % heads:
            raise ValueError(f"DiffATR: width {width} is not divisible by heads {heads}")
        if sample_steps > timesteps:
            raise ValueError(f"DiffATR: sample_steps {sample_steps} exceeds timesteps {timesteps}")
        for name, value in dict(signal_scale=signal_scale, x0_temperature=x0_temperature,
                                memory_budget_mb=memory_budget_mb).items():
            if not value > 0:
                raise ValueError(f"DiffATR: {name} must be > 0, got {value!r}")
        for name, value in dict(generation_weight=generation_weight, prior_weight=prior_weight).items():
            if not value >= 0:
                raise ValueError(f"DiffATR: {name} must be >= 0, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"DiffATR: seed must be an integer, got {seed!r}")
        super().__init__(audio_dims, text_dim, embed_dim)
        self.denoiser = Denoiser(embed_dim, width, layers, heads, attention, inducing, pair_features)
        self.register_buffer("alpha_bar", alpha_bars(schedule, timesteps).float(), persistent=False)
        self.timesteps, self.sample_steps, self.samples = timesteps, sample_steps, samples
        self.scale = float(signal_scale)
        self.x0, self.x0_temperature, self.loss = x0, x0_temperature, loss
        self.generation_weight, self.train_directions = generation_weight, train_directions
        self.detach_features, self.infer_direction = detach_features, infer_direction
        self.score_mode, self.output, self.prior_weight, self.seed = score_mode, output, prior_weight, seed
        self.attention, self.heads, self.width, self.inducing = attention, heads, width, inducing
        self.memory_budget = memory_budget_mb * 2**20

    # ---- diffusion -------------------------------------------------------------------------------------
    def target(self, query: torch.Tensor, cands: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
        """Target distribution p [B, B] of query i over candidates (matched batch: candidate i).

        positives: [B, B] bool, the matched pairs (`ClipPairs.positives`; None: the diagonal). With
        `x0="onehot"` p spreads uniformly over query i's positives (one-hot when it has one)."""
        if self.x0 == "onehot":
            if positives is None:
                return torch.eye(query.shape[0], device=query.device, dtype=query.dtype)
            p = positives.to(device=query.device, dtype=query.dtype)
            return p / p.sum(-1, keepdim=True)
        return torch.softmax(query.detach() @ cands.detach().T / self.x0_temperature, -1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε; x0, noise [Q, N], t [Q]."""
        ab = self.alpha_bar[t][:, None].to(x0.dtype)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def generation_loss(self, query: torch.Tensor, cands: torch.Tensor, direction: int,
                        generator: torch.Generator | None, positives: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of the denoiser on a matched batch: query [B, D] ↔ cands [B, D], row i ↔ row i (and the other
        `positives` [B, B] of row i, if given)."""
        p = self.target(query, cands, positives)
        n = query.shape[0]
        t = torch.randint(0, self.timesteps, (n,), generator=generator).to(query.device)
        noise = torch.randn(n, cands.shape[0], generator=generator, dtype=query.dtype).to(query.device)
        x_t = self.q_sample(self.scale * p, t, noise)
        logits = self.denoiser(self.denoiser.prepare(query, cands, direction), x_t, t)
        if self.loss == "ce":
            return -(p * torch.log_softmax(logits, -1)).sum(-1).mean()
        return (self.scale * (torch.softmax(logits, -1) - p)).square().sum(-1).mean()

    def sample(self, query: torch.Tensor, cands: torch.Tensor, direction: int,
               noise: torch.Tensor) -> torch.Tensor:
        """DDIM (η = 0) from each x_T in noise [K, N] for every query [Q, D] over cands [N, D]; the K
        generated distributions are averaged -> p̂ [Q, N]."""
        k, n_query = noise.shape[0], query.shape[0]
        q_tok, c_tok = self.denoiser.prepare(query, cands, direction)
        tokens = (q_tok.repeat(k, 1), c_tok.repeat(k, 1, 1))  # sample-major: row s·Q + q
        x = noise.to(query.dtype)[:, None].expand(k, n_query, -1).reshape(k * n_query, -1)
        steps = ddim_timesteps(self.timesteps, self.sample_steps)
        p = x
        for i, t in enumerate(steps):
            ab = self.alpha_bar[t].to(query.dtype)
            ab_prev = self.alpha_bar[steps[i + 1]].to(query.dtype) if i + 1 < len(steps) else torch.ones_like(ab)
            tt = torch.full((k * n_query,), t, device=query.device, dtype=torch.long)
            p = torch.softmax(self.denoiser(tokens, x, tt), -1)
            x0 = self.scale * p
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return p.view(k, n_query, -1).mean(0)

    def query_block(self, n_cands: int) -> int:
        """Queries per denoiser call within `memory_budget_mb` (float32 activations, attention included)."""
        mixing = n_cands + 1 if self.attention == "full" else self.inducing
        per_query = 4 * (n_cands + 1) * (12 * self.width + 2 * self.heads * mixing)
        return max(1, int(self.memory_budget // (per_query * self.samples)))

    def generate(self, query: torch.Tensor, cands: torch.Tensor, direction: int) -> torch.Tensor:
        """Generated distribution [Q, N] of every query over all candidates, queries in memory-sized blocks."""
        g = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(self.samples, cands.shape[0], generator=g, dtype=torch.float64).to(query.device)
        block = self.query_block(cands.shape[0])
        return torch.cat([self.sample(query[q0:q0 + block], cands, direction, noise)
                          for q0 in range(0, query.shape[0], block)], 0)

    # ---- RetrievalHead ---------------------------------------------------------------------------------
    def generative(self) -> bool:
        return self.score_mode == "generative" or (self.score_mode == "auto" and not self.training)

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        """[T, A]: cosine in training (score_mode auto); generated distributions (+ prior) otherwise."""
        cos = text["embed"] @ audio["embed"].T
        if not self.generative():
            return cos
        parts = []
        if self.infer_direction in ("t2a", "both"):
            parts.append(self.generate(text["embed"], audio["embed"], 0))
        if self.infer_direction in ("a2t", "both"):
            parts.append(self.generate(audio["embed"], text["embed"], 1).T)
        gen = sum(parts) / len(parts)
        if self.output == "log_prob":
            gen = gen.clamp_min(torch.finfo(gen.dtype).tiny).log()
        return gen + self.prior_weight * cos if self.prior_weight else gen

    def aux_losses(self, text: Reprs, audio: Reprs, pairs: ClipPairs | None = None) -> dict[str, torch.Tensor]:
        """{"generation": weight · mean over directions of the denoiser loss} on a matched batch; with
        `x0="onehot"` the target of a text spreads over every audio of its clip in the batch when `pairs`
        makes same-clip pairs positives (the positive mask is symmetric, so both directions use it)."""
        if not self.generation_weight:
            return {}
        positives = None if pairs is None else pairs.positives(text["embed"].shape[0], text["embed"].device)
        t, a = text["embed"], audio["embed"]
        if self.detach_features:
            t, a = t.detach(), a.detach()
        g = None if self.training else torch.Generator().manual_seed(self.seed)
        losses = []
        if self.train_directions in ("t2a", "both"):
            losses.append(self.generation_loss(t, a, 0, g, positives))
        if self.train_directions in ("a2t", "both"):
            losses.append(self.generation_loss(a, t, 1, g, positives))
        return {"generation": self.generation_weight * sum(losses) / len(losses)}


def build_diffatr(audio_dims: list[int], text_dim: int, text_layers: int, embed_dim: int,
                  options: dict[str, Any]) -> DiffATRHead:
    """Registry builder (head `diffatr`); `options` are DiffATRHead keyword arguments."""
    import inspect

    known = set(inspect.signature(DiffATRHead.__init__).parameters) - {"self", "audio_dims", "text_dim", "embed_dim"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"head_options: {unknown} are not options of head 'diffatr'; known: {sorted(known)}")
    return DiffATRHead(audio_dims, text_dim, embed_dim, **options)
