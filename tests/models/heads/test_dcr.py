"""DCR/CA equations and blocked all-pairs scoring against a per-pair reference."""
import pytest
import torch

from hade.models.heads.dcr import FactorHead, alignment_loss, decoupling_loss, factor_correlation
from hade.models.heads.reprs import Reprs

from .test_tha import fake_features


def test_losses_on_known_correlation_matrices():
    c = torch.tensor([[1.0, 0.5], [-0.2, 0.7]])
    assert decoupling_loss(c).item() == pytest.approx(0.25 + 0.04)
    assert alignment_loss(c).item() == pytest.approx(0.0 + 0.09)
    assert decoupling_loss(torch.eye(3)).item() == 0.0 and alignment_loss(torch.eye(3)).item() == 0.0


def test_correlation_of_identical_factors_is_identity_like():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(4096, 3, 4, generator=g)
    c = factor_correlation(e, e)
    assert torch.diagonal(c).tolist() == pytest.approx([1.0] * 3, abs=1e-3)  # standardised: C_ii = 1
    off = c - torch.diag_embed(torch.diagonal(c))
    assert off.abs().max() < 0.05  # independent factors: near-zero cross terms
    # a perfectly anti-aligned audio factor gives C_ii = -1 and the largest alignment loss
    c2 = factor_correlation(e, -e)
    assert alignment_loss(c2).item() == pytest.approx(3 * 4.0, rel=1e-3)


def test_correlation_standardises_over_the_batch_not_the_features():
    e = torch.tensor([[[1.0, 100.0]], [[3.0, 300.0]]])  # B=2, K=1, d=2; dims differ in scale
    c = factor_correlation(e, e)
    assert c.item() == pytest.approx(1.0, abs=1e-4)


@torch.no_grad()
def reference_scores(head: FactorHead, text: Reprs, audio: Reprs) -> torch.Tensor:
    out = torch.zeros(text["factors"].shape[0], audio["factors"].shape[0], dtype=text["factors"].dtype)
    for t in range(out.shape[0]):
        for a in range(out.shape[1]):
            et, ea = text["factors"][t], audio["factors"][a]
            w1 = torch.cat([head.ca_text.weight, head.ca_audio.weight], 1)
            g = head.ca_out(torch.relu(torch.cat([et, ea], -1) @ w1.T + head.ca_audio.bias)).squeeze(-1)
            g = torch.softmax(g, 0)
            out[t, a] = (g * torch.nn.functional.cosine_similarity(et, ea, dim=-1)).sum()
    return out


def test_blocked_ca_scores_equal_per_pair_reference():
    head = FactorHead([8, 16, 32, 64], 12, embed_dim=16, factors=4, memory_budget_mb=0.001).double()
    audio_f, text_f = fake_features(6)
    audio_f.pooled, text_f.pooled = audio_f.pooled.double(), text_f.pooled.double()
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    torch.testing.assert_close(head.score(text, audio), reference_scores(head, text, audio))


def test_without_ca_the_score_is_dp_cosine_and_losses_follow_flags():
    head = FactorHead([8, 16, 32, 64], 12, embed_dim=16, factors=4, use_ca=False, use_la=False)
    assert head.capabilities.factorised
    audio_f, text_f = fake_features(6)
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    torch.testing.assert_close(head.score(text, audio), text["embed"] @ audio["embed"].T)
    assert set(head.aux_losses(text, audio)) == {"decoupling"}
    with pytest.raises(ValueError, match="divisible"):
        FactorHead([8], 12, embed_dim=10, factors=4)
