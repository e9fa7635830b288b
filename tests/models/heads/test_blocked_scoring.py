"""The blocked THA / DCR scorers against dense references: every block layout, with and without autograd."""
import pytest
import torch
import torch.nn.functional as F

from hade.models.heads.dcr import FactorHead
from hade.models.heads.tha import THAHead, level_scores

from .test_tha import fake_features

EPS = 1e-8


def dense_level_scores(text, text_mask, audio, lam, token_reduce="mean"):
    """All pairs at once on [T, A, M, N] tensors (the straightforward vectorisation of eq. 1), with α and β."""
    s = torch.einsum("amd,tnd->tamn", F.normalize(audio, dim=-1, eps=EPS), F.normalize(text, dim=-1, eps=EPS))
    words = text_mask[:, None, None, :]
    pos = s.clamp_min(0) * words
    alpha = torch.softmax((lam * pos / pos.square().sum(2, keepdim=True).add(EPS).sqrt())
                          .masked_fill(~words, float("-inf")), dim=-1)
    beta = torch.softmax(lam * pos / pos.square().sum(3, keepdim=True).add(EPS).sqrt(), dim=2)
    a_hat = torch.einsum("tamn,tnd->tamd", alpha, text)  # â_m
    t_hat = torch.einsum("tamn,amd->tand", beta, audio)  # t̂_n
    cos_te = F.cosine_similarity(audio[None], a_hat, dim=-1, eps=EPS)  # [T, A, M]
    cos_ae = F.cosine_similarity(text[:, None], t_hat, dim=-1, eps=EPS)  # [T, A, N]
    wmask = text_mask[:, None, :].to(cos_ae.dtype)
    if token_reduce == "sum":
        return cos_te.sum(-1), (cos_ae * wmask).sum(-1), alpha, beta
    return cos_te.mean(-1), (cos_ae * wmask).sum(-1) / wmask.sum(-1).clamp_min(1), alpha, beta


def make_inputs(n_text, n_audio, tokens, width, words=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(n_text, words, width, generator=g, dtype=torch.float64)
    lengths = torch.randint(3, words + 1, (n_text,), generator=g)
    pos = torch.arange(words)[None]
    mask = (pos >= 1) & (pos < lengths[:, None] - 1)  # [CLS] words [SEP] padding, as word_mask leaves it
    text[~mask] = 7.0  # special tokens and padding hold values that must not matter
    audio = torch.randn(n_audio, tokens, width, generator=g, dtype=torch.float64)
    return text, mask, audio


@pytest.mark.parametrize("tokens,width", [(6, 8), (8, 8), (11, 4)])  # |t̂|: audio Gram (M < d), t̂ (M >= d)
@pytest.mark.parametrize("block_elems", [1, 40, 300, None])  # one text × one audio per block ... one block
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_blocked_level_scores_equal_dense_with_and_without_autograd(tokens, width, block_elems, reduce):
    text, mask, audio = make_inputs(7, 5, tokens, width)
    ref_te, ref_ae, _, _ = dense_level_scores(text, mask, audio, 6.0, reduce)
    with torch.no_grad():  # in-place block buffers
        s_te, s_ae = level_scores(text, mask, audio, 6.0, reduce, block_elems=block_elems)
    torch.testing.assert_close(s_te, ref_te, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(s_ae, ref_ae, rtol=1e-9, atol=1e-10)
    text.requires_grad_(True)  # autograd: fresh block tensors
    s_te, s_ae = level_scores(text, mask, audio, 6.0, reduce, block_elems=block_elems)
    torch.testing.assert_close(s_te.detach(), ref_te, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(s_ae.detach(), ref_ae, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("tokens,width", [(6, 8), (11, 4)])
def test_blocked_gradients_equal_dense(tokens, width):
    text, mask, audio = make_inputs(6, 4, tokens, width, seed=1)
    weights = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for fn in (lambda t, a: dense_level_scores(t, mask, a, 4.0)[:2],
               lambda t, a: level_scores(t, mask, a, 4.0, block_elems=50)):
        t, a = text.clone().requires_grad_(True), audio.clone().requires_grad_(True)
        s_te, s_ae = fn(t, a)
        ((s_te * weights[0]).sum() + (s_ae * weights[1]).sum()).backward()
        grads.append((t.grad * mask[..., None], a.grad))  # padding rows get no gradient in either
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("block_elems", [1, None])
def test_attention_path_equals_dense_and_scoring_path(block_elems):
    text, mask, audio = make_inputs(4, 3, 6, 8, seed=3)
    ref = dense_level_scores(text, mask, audio, 5.0)
    out = level_scores(text, mask, audio, 5.0, return_attention=True, block_elems=block_elems)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out[0], level_scores(text, mask, audio, 5.0)[0])


def test_single_pair_and_equal_lengths_need_no_packing():
    text, mask, audio = make_inputs(1, 1, 5, 8, seed=4)
    torch.testing.assert_close(level_scores(text, mask, audio, 9.0)[1], dense_level_scores(text, mask, audio, 9.0)[1])
    text, _, audio = make_inputs(3, 2, 5, 8, seed=5)
    full = torch.ones(3, 9, dtype=torch.bool)
    torch.testing.assert_close(level_scores(text, full, audio, 9.0)[0], dense_level_scores(text, full, audio, 9.0)[0])


def test_head_score_is_the_same_under_no_grad_and_with_autograd():
    head = THAHead([8, 16, 32, 64], 12, 6, embed_dim=16).double()
    audio_f, text_f = fake_features(6)
    audio_f.stages = [s.double() for s in audio_f.stages]
    text_f.layers = [x.double() for x in text_f.layers]
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    train = head.score(text, audio)
    assert train.requires_grad
    train.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    with torch.no_grad():
        torch.testing.assert_close(head.score(text, audio), train.detach())


def test_blocked_ca_scores_and_gradients_equal_the_unblocked_form():
    head = FactorHead([8, 16, 32, 64], 12, embed_dim=16, factors=4).double()
    audio_f, text_f = fake_features(9)
    audio_f.pooled, text_f.pooled = audio_f.pooled.double(), text_f.pooled.double()
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)

    def unblocked():
        cos = torch.einsum("tkd,akd->tak", F.normalize(text["factors"], dim=-1), F.normalize(audio["factors"], dim=-1))
        u, v = head.ca_text(text["factors"]), head.ca_audio(audio["factors"])
        g = torch.softmax(head.ca_out(torch.relu(u[:, None] + v[None])).squeeze(-1), -1)
        return (g * cos).sum(-1)

    ref = unblocked()
    ref.square().sum().backward(retain_graph=True)
    ref_grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    head.memory_budget = 1.0  # one audio per chunk
    assert head._audio_chunk(9, torch.device("cpu")) == 1
    got = head.score(text, audio)
    got.square().sum().backward()
    torch.testing.assert_close(got, ref)
    for p, want in zip(head.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, want)


@pytest.mark.parametrize("tokens,width", [(6, 8), (11, 4)])
def test_zero_vectors_give_the_dense_scores_and_finite_gradients(tokens, width):
    text, mask, audio = make_inputs(3, 2, tokens, width, seed=6)
    text[1] = 0.0  # a caption of zero vectors: |â_m| = 0, the EPS clamps decide
    audio[0, :3] = 0.0
    t, a = text.clone().requires_grad_(True), audio.clone().requires_grad_(True)
    s_te, s_ae = level_scores(t, mask, a, 9.0)
    ref_te, ref_ae, _, _ = dense_level_scores(text, mask, audio, 9.0)
    torch.testing.assert_close(s_te.detach(), ref_te, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(s_ae.detach(), ref_ae, rtol=1e-9, atol=1e-10)
    (s_te.sum() + s_ae.sum()).backward()
    assert torch.isfinite(t.grad).all() and torch.isfinite(a.grad).all()
