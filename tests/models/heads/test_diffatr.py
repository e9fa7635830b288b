"""DiffATR: schedules, the DDIM sampler, seeded determinism, blocked scoring, learning on a toy problem."""
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hade.losses import nt_xent
from hade.models.heads.diffatr import DiffATRHead, alpha_bars, build_diffatr, ddim_timesteps

from .test_tha import fake_features

SMALL = dict(embed_dim=16, width=16, layers=1, heads=2, timesteps=50, sample_steps=5)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_head(**kw) -> DiffATRHead:
    torch.manual_seed(0)
    return DiffATRHead([8, 16, 32, 64], 12, **{**SMALL, **kw})


def reprs(head: DiffATRHead, batch: int = 6, seed: int = 0):
    audio_f, text_f = fake_features(batch, seed=seed)
    return head.text_repr(text_f), head.audio_repr(audio_f)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedules_and_ddim_timesteps(schedule):
    ab = alpha_bars(schedule, 1000)
    assert ab.shape == (1000,) and ab[0] > 0.99 and ab[-1] < 0.01
    assert bool((ab[1:] < ab[:-1]).all())
    assert ddim_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert ddim_timesteps(5, 5) == [4, 3, 2, 1, 0] and ddim_timesteps(50, 1) == [49]


def test_shapes_and_pooled_embeddings():
    head = small_head()
    text, audio = reprs(head, 5)
    assert not head.capabilities.factorised and text["embed"].shape == (5, 16) and audio["embed"].shape == (5, 16)
    torch.testing.assert_close(text["embed"].norm(dim=-1), torch.ones(5))
    t_small = {"embed": text["embed"][:3]}
    with torch.no_grad():
        assert head.train().score(t_small, audio).shape == (3, 5)
        gen = head.eval().score(t_small, audio)
    assert gen.shape == (3, 5)
    torch.testing.assert_close(gen.sum(1), torch.ones(3))  # a distribution over the candidates per text
    assert head.pooled_embeddings(text, audio)[0] is text["embed"]


def test_train_mode_score_is_the_cosine_and_modes_can_be_forced():
    head = small_head()
    text, audio = reprs(head)
    cos = text["embed"] @ audio["embed"].T
    torch.testing.assert_close(head.train().score(text, audio), cos)
    head.score_mode = "cosine"
    torch.testing.assert_close(head.eval().score(text, audio), cos)
    head.score_mode = "generative"
    with torch.no_grad():
        gen = head.train().score(text, audio)
    assert not torch.allclose(gen, cos)
    torch.testing.assert_close(gen.sum(1), torch.ones(6))


def test_prior_blend_and_log_prob_output():
    text, audio = reprs(small_head())
    with torch.no_grad():
        p = small_head().eval().score(text, audio)
        blended = small_head(output="log_prob", prior_weight=0.5).eval().score(text, audio)
    torch.testing.assert_close(blended, p.log() + 0.5 * text["embed"] @ audio["embed"].T)


def test_sampler_is_seeded_deterministic_and_leaves_the_global_rng_alone():
    head = small_head().eval()
    text, audio = reprs(head)
    state = torch.get_rng_state()
    with torch.no_grad():
        first = head.score(text, audio)
        torch.manual_seed(1234)  # the global RNG must not matter
        second = head.score(text, audio)
        torch.set_rng_state(state)
        first_again = head.score(text, audio)
        assert torch.equal(torch.get_rng_state(), state)  # sampling drew nothing from the global RNG
        head.seed = 7
        other = head.score(text, audio)
    assert torch.equal(first, second) and torch.equal(first, first_again)
    assert (first - other).abs().max() > 1e-4  # the untrained denoiser depends on x_t: noise matters


def test_several_samples_average_the_chains_of_each_noise_draw():
    head = small_head(samples=3).eval()
    text, audio = reprs(head)
    noise = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        averaged = head.score(text, audio)
        chains = [head.sample(text["embed"], audio["embed"], 0, noise[i:i + 1]) for i in range(3)]
    torch.testing.assert_close(averaged, sum(chains) / 3)
    assert (chains[0] - chains[1]).abs().max() > 1e-4


class OracleDenoiser(nn.Module):
    """Predicts the true x_0 (logits = 50 · one-hot) and records the x_t it is given."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target, self.seen = target, []

    def prepare(self, query, cands, direction):
        return query, cands

    def forward(self, tokens, x_t, t):
        self.seen.append((int(t[0]), x_t.clone()))
        return 50.0 * self.target[: x_t.shape[0]]


def test_ddim_with_an_exact_denoiser_follows_the_deterministic_trajectory():
    head = small_head(signal_scale=2.0).eval()
    target = torch.eye(4)[[2, 0, 3, 1]]
    head.denoiser = OracleDenoiser(target)
    noise = torch.randn(4, generator=torch.Generator().manual_seed(3))
    p = head.sample(torch.zeros(4, 16), torch.zeros(4, 16), 0, noise[None])
    torch.testing.assert_close(p, target)
    x0 = 2.0 * target
    steps = [t for t, _ in head.denoiser.seen]
    assert steps == ddim_timesteps(50, 5)
    # η = 0 with an exact x̂_0 keeps ε̂ fixed after the first step: x_τ = sqrt(ᾱ_τ) x_0 + sqrt(1-ᾱ_τ) ε̂
    ab_T = head.alpha_bar[49]
    eps = (noise - ab_T.sqrt() * x0) / (1 - ab_T).sqrt()
    for t, x_t in head.denoiser.seen[1:]:
        expected = head.q_sample(x0, torch.full((4,), t), eps)
        torch.testing.assert_close(x_t, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(head.denoiser.seen[0][1], noise.expand(4, -1))  # starts from x_T = noise


@pytest.mark.parametrize("attention", ["full", "induced"])
def test_denoiser_is_permutation_equivariant_over_candidates(attention):
    head = small_head(attention=attention, inducing=3)
    g = torch.Generator().manual_seed(0)
    q, c = F.normalize(torch.randn(3, 16, generator=g), dim=-1), F.normalize(torch.randn(7, 16, generator=g), dim=-1)
    x, t = torch.randn(3, 7, generator=g), torch.tensor([0, 10, 49])
    perm = torch.randperm(7, generator=g)
    with torch.no_grad():
        out = head.denoiser(head.denoiser.prepare(q, c, 0), x, t)
        permuted = head.denoiser(head.denoiser.prepare(q, c[perm], 0), x[:, perm], t)
    torch.testing.assert_close(permuted, out[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("direction", ["t2a", "a2t"])
def test_blocked_queries_equal_queries_one_by_one_on_the_same_candidates(direction):
    head = small_head(infer_direction=direction, memory_budget_mb=0.01).eval()
    text, audio = reprs(head, 7)
    assert head.query_block(7) < 7  # the tiny budget forces several query blocks
    with torch.no_grad():
        blocked = head.score(text, audio)
        head.memory_budget = 2.0**30
        whole = head.score(text, audio)
        if direction == "t2a":  # queries = texts, candidates = all 7 audios
            single = torch.cat([head.score({"embed": text["embed"][i:i + 1]}, audio) for i in range(7)], 0)
        else:  # queries = audios, candidates = all 7 texts
            single = torch.cat([head.score(text, {"embed": audio["embed"][j:j + 1]}) for j in range(7)], 1)
        if direction == "t2a":  # scores depend on the candidate set: a subset is not a slice
            subset, sliced = head.score(text, {"embed": audio["embed"][:3]}), whole[:, :3]
        else:
            subset, sliced = head.score({"embed": text["embed"][:3]}, audio), whole[:3]
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(single, whole, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(subset, sliced, atol=1e-3)


def test_generation_loss_falls_on_a_toy_matching_and_ranks_the_true_candidate_first():
    """Texts are audios with fixed random sign flips: the cosine is uninformative, the denoiser must learn."""
    g = torch.Generator().manual_seed(0)
    n, d = 16, 16
    audio = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    text = audio * torch.sign(torch.randn(d, generator=g))
    truth = torch.arange(n)
    assert ((text @ audio.T).argmax(1) == truth).float().mean() < 0.5
    head = small_head(width=32)
    opt = torch.optim.Adam(head.denoiser.parameters(), lr=3e-3)
    started = time.time()
    head.eval()
    with torch.no_grad():
        before = head.aux_losses({"embed": text}, {"embed": audio})["generation"].item()
    head.train()
    for _ in range(200):
        loss = head.aux_losses({"embed": text}, {"embed": audio})["generation"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        after = head.aux_losses({"embed": text}, {"embed": audio})["generation"].item()
        scores = head.score({"embed": text}, {"embed": audio})
    assert time.time() - started < 10
    assert after < 0.1 * before, (before, after)
    assert (scores.argmax(1) == truth).float().mean() >= 0.8


def test_eval_generation_loss_is_deterministic_and_train_mode_uses_the_global_rng():
    head = small_head()
    text, audio = reprs(head)
    with torch.no_grad():
        head.eval()
        a, b = (head.aux_losses(text, audio)["generation"] for _ in range(2))
        head.train()
        c, d = (head.aux_losses(text, audio)["generation"] for _ in range(2))
    assert a == b and c != d


@pytest.mark.parametrize("detach", [True, False])
def test_detach_option_controls_whether_the_generation_loss_reaches_the_features(detach):
    head = small_head(detach_features=detach).train()
    text, audio = reprs(head)
    head.aux_losses(text, audio)["generation"].backward()
    proj_grad = head.text_proj[0].weight.grad
    assert (proj_grad is None or proj_grad.abs().max() == 0) == detach
    assert head.denoiser.out[1].weight.grad.abs().max() > 0


def test_a_few_training_steps_lower_nt_xent_plus_generation_loss():
    head = small_head()
    audio_f, text_f = fake_features(6, seed=3)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)

    def losses():
        text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
        return nt_xent(head.score(text, audio), 0.07), head.aux_losses(text, audio)["generation"]

    def measure():  # eval mode: the same t and noise every time; the score forced to the training cosine
        head.eval()
        head.score_mode = "cosine"
        with torch.no_grad():
            out = losses()
        head.score_mode = "auto"
        head.train()
        return out

    contrastive_before, generation_before = measure()
    for _ in range(40):
        loss = sum(losses())
        opt.zero_grad()
        loss.backward()
        opt.step()
    contrastive_after, generation_after = measure()
    assert contrastive_after < 0.5 * contrastive_before, (contrastive_before, contrastive_after)
    assert generation_after < 0.5 * generation_before, (generation_before, generation_after)


@pytest.mark.parametrize("options", [
    {"schedule": "quadratic"}, {"x0": "uniform"}, {"loss": "l1"}, {"train_directions": "up"},
    {"infer_direction": "x"}, {"score_mode": "eval"}, {"output": "logit"}, {"attention": "sparse"},
    {"width": 30, "heads": 4}, {"layers": 0}, {"timesteps": 5, "sample_steps": 10}, {"sample_steps": 2.5},
    {"signal_scale": 0}, {"generation_weight": -1}, {"prior_weight": float("nan")}, {"memory_budget_mb": 0},
    {"seed": "a"}, {"heads": True}, {"no_such_option": 1},
])
def test_bad_options_raise_value_error(options):
    with pytest.raises(ValueError):
        build_diffatr([8, 16, 32, 64], 12, 6, 16, options)


def test_builder_passes_options():
    head = build_diffatr([8, 16, 32, 64], 12, 6, 16, {"width": 8, "heads": 2, "sample_steps": 3})
    assert isinstance(head, DiffATRHead) and head.sample_steps == 3 and head.denoiser.width == 8
