"""THA equations on hand-checkable tensors, and blocked all-pairs scoring against a per-pair loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.tha import THAHead, default_text_blocks, level_scores, word_mask


@torch.no_grad()
def reference_pair(text, audio, lam, reduce="mean"):
    """Literal eq. (1) for ONE pair: text [N, d] (real words only), audio [M, d]. -> (S_te, S_ae)."""
    m_tokens, n_words = audio.shape[0], text.shape[0]
    s = torch.zeros(m_tokens, n_words, dtype=torch.float64)
    for m in range(m_tokens):
        for n in range(n_words):
            s[m, n] = F.cosine_similarity(audio[m], text[n], dim=0)
    pos = s.clamp_min(0)
    te = []
    for m in range(m_tokens):
        s_bar = torch.stack([pos[m, n] / math.sqrt(float((pos[:, n] ** 2).sum()) + 1e-8) for n in range(n_words)])
        alpha = torch.softmax(lam * s_bar, 0)
        a_hat = (alpha[:, None] * text).sum(0)
        te.append(F.cosine_similarity(audio[m], a_hat, dim=0))
    ae = []
    for n in range(n_words):
        s_bar = torch.stack([pos[m, n] / math.sqrt(float((pos[m, :] ** 2).sum()) + 1e-8) for m in range(m_tokens)])
        beta = torch.softmax(lam * s_bar, 0)
        t_hat = (beta[:, None] * audio).sum(0)
        ae.append(F.cosine_similarity(text[n], t_hat, dim=0))
    te, ae = torch.stack(te), torch.stack(ae)
    return (te.sum(), ae.sum()) if reduce == "sum" else (te.mean(), ae.mean())


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("tokens,width", [(5, 8), (12, 4)])  # both |t̂| paths: Gram (M <= d) and explicit (M > d)
def test_level_scores_equal_per_pair_reference_with_padding(reduce, tokens, width):
    g = torch.Generator().manual_seed(0)
    text = torch.randn(4, 6, width, generator=g, dtype=torch.float64)
    lengths = [6, 3, 1, 4]
    mask = torch.tensor([[i < n for i in range(6)] for n in lengths])
    text = text * mask[..., None]  # padding rows are zeros as in real batches... and must not matter
    text[1, 3:] = 100.0  # ...even when they hold garbage
    audio = torch.randn(3, tokens, width, generator=g, dtype=torch.float64)
    s_te, s_ae = level_scores(text, mask, audio, lam=5.0, token_reduce=reduce)
    for t, n in enumerate(lengths):
        for a in range(3):
            ref_te, ref_ae = reference_pair(text[t, :n], audio[a], 5.0, reduce)
            assert s_te[t, a].item() == pytest.approx(ref_te.item(), abs=1e-6)
            assert s_ae[t, a].item() == pytest.approx(ref_ae.item(), abs=1e-6)


def test_normalisation_axes_on_a_hand_case():
    # two audio tokens, two words, 2-d vectors: s = [[1, 0], [0.6, 0.8]] (rows m, cols n)
    audio = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]], dtype=torch.float64)
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True]])
    _, _, alpha, beta = level_scores(text, mask, audio, lam=1.0, return_attention=True)
    # text-enhanced: normalise over audio tokens (column-wise): s̄[:,0] = [1, .6]/sqrt(1.36), s̄[:,1] = [0, 1]
    s_bar = torch.tensor([[1 / math.sqrt(1.36), 0.0], [0.6 / math.sqrt(1.36), 1.0]], dtype=torch.float64)
    torch.testing.assert_close(alpha[0, 0], torch.softmax(s_bar, dim=1))  # softmax over words
    # audio-enhanced: normalise over words (row-wise): s̄'[0] = [1, 0], s̄'[1] = [.6, .8]
    s_bar2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(beta[0, 0], torch.softmax(s_bar2, dim=0))  # softmax over audio tokens


def test_directions_are_not_swapped():
    # one word matching one of three tokens: text-enhanced averages over 3 tokens (2 unmatched),
    # audio-enhanced over 1 word (matched): S_ae must be the larger one
    audio = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    text = torch.tensor([[[1.0, 0.0, 0.0]]])
    s_te, s_ae = level_scores(text, torch.tensor([[True]]), audio, lam=20.0)
    assert s_ae.item() > 0.99
    assert s_te.item() == pytest.approx(1 / 3, abs=1e-4)


def test_word_mask_drops_cls_and_sep():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    feats = TextFeatures(layers=[], mask=mask, pooled=torch.zeros(2, 1))
    wm = word_mask(feats)
    assert wm.tolist() == [[False, True, True, False, False], [True, True, False, False, False]]


def test_default_block_mapping():
    assert default_text_blocks(12) == (4, 10, 12)
    assert default_text_blocks(6) == (2, 4, 6)


def fake_features(batch, dims=(8, 16, 32, 64), tokens=(64, 16, 4, 1), text_dim=12, layers=6, words=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = AudioFeatures(stages=[torch.randn(batch, m, c, generator=g) for m, c in zip(tokens, dims)],
                          grids=[], pooled=torch.randn(batch, dims[-1], generator=g), token_seconds=[])
    lengths = torch.randint(3, words + 1, (batch,), generator=g)
    mask = torch.arange(words)[None] < lengths[:, None]
    text = TextFeatures(layers=[torch.randn(batch, words, text_dim, generator=g) for _ in range(layers)],
                        mask=mask, pooled=torch.randn(batch, text_dim, generator=g))
    return audio, text


def test_head_score_sums_levels_and_chunks_within_memory_budget():
    head = THAHead([8, 16, 32, 64], 12, 6, embed_dim=16, memory_budget_mb=0.05).double()
    audio_f, text_f = fake_features(5)
    audio_f.stages = [s.double() for s in audio_f.stages]
    text_f.layers = [x.double() for x in text_f.layers]
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    assert head._audio_chunk(text, audio) < 5  # the tiny budget forces several audio chunks
    scores = head.score(text, audio)
    expected = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(3):
        for t in range(5):
            words = text["tha_mask"][t]
            for a in range(5):
                te, ae = reference_pair(text[f"tha_text_{i}"][t, words], audio[f"tha_audio_{i}"][a], head.lam)
                expected[t, a] += (te + ae) / 6
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-6)
