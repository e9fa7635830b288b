"""Co-attention heads: shapes, padding, blocked all-pairs scoring against an independent per-pair
reference, training, options."""
import pytest
import torch
import torch.nn.functional as F

from hade.losses import nt_xent
from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.coattention import CoAttentionHead, build_coattention, masked_mean

DIMS, TOKENS, TEXT_DIM, LAYERS, WORDS = (8, 16, 24, 32), (32, 16, 8, 6), 12, 3, 7
DESIGNS = ["single", "stacked", "iterated"]


def features(batch, seed=0, dtype=torch.float64, lengths=None):
    g = torch.Generator().manual_seed(seed)
    spans = [torch.stack([torch.arange(m) // 2, torch.arange(m) // 2 + 1], -1).float() for m in TOKENS]
    audio = AudioFeatures(stages=[torch.randn(batch, m, c, generator=g, dtype=dtype) for m, c in zip(TOKENS, DIMS)],
                          grids=[], pooled=torch.randn(batch, DIMS[-1], generator=g, dtype=dtype),
                          token_seconds=spans)  # two "frequency bands" per time span
    if lengths is None:
        lengths = torch.randint(2, WORDS + 1, (batch,), generator=g).tolist()
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    layers = [torch.randn(batch, max(lengths), TEXT_DIM, generator=g, dtype=dtype) for _ in range(LAYERS)]
    for layer in layers:
        layer[~mask] = 50.0  # padding holds garbage: it must not matter
    return audio, TextFeatures(layers=layers, mask=mask, pooled=torch.zeros(batch, TEXT_DIM, dtype=dtype))


def make_head(design, **options):
    torch.manual_seed(0)
    return build_coattention(list(DIMS), TEXT_DIM, LAYERS, 16, {"design": design, "heads": 2, **options}).double()


@pytest.mark.parametrize("pooling", ["attention", "mean"])
@pytest.mark.parametrize("design", DESIGNS)
def test_shapes(design, pooling):
    head = make_head(design, pooling=pooling).eval()
    audio_f, text_f = features(3, lengths=[4, 7, 2])
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    assert set(text) == {"coatt_text", "coatt_text_mask"} and set(audio) == {"coatt_audio", "coatt_audio_mask"}
    assert text["coatt_text"].shape == (3, 7, 16) and text["coatt_text_mask"].sum(1).tolist() == [4, 7, 2]
    assert audio["coatt_audio"].shape == (3, TOKENS[-1], 16) and bool(audio["coatt_audio_mask"].all())
    scores = head.score(text, head.audio_repr(features(5, seed=1)[0]))
    assert scores.shape == (3, 5) and bool(torch.isfinite(scores).all()) and float(scores.detach().abs().max()) <= 1 + 1e-9
    t, a = head.pooled_embeddings(text, audio)
    assert t.shape == (3, 16) and a.shape == (3, 16)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3, dtype=torch.float64))
    assert head.capabilities.factorised is False


def test_designs_build_the_right_modules():
    assert len(make_head("single").coatt) == 1 and len(make_head("single").text_sa) == 0
    stacked = make_head("stacked", layers=3)
    assert len(stacked.coatt) == 3 and stacked.schedule == [0, 1, 2]
    shared = make_head("iterated", layers=2, iterations=3)
    assert len(shared.text_sa) == 2 and len(shared.coatt) == 1 and shared.schedule == [0, 0, 0]
    unshared = make_head("iterated", iterations=3, share_weights=False)
    assert len(unshared.coatt) == 3 and unshared.schedule == [0, 1, 2]


@pytest.mark.parametrize("design", DESIGNS)
def test_caption_alone_equals_caption_in_padded_batch(design):
    head = make_head(design).eval()
    audio_f, text_f = features(3, lengths=[3, 7, 5])
    alone = TextFeatures(layers=[x[:1, :3] for x in text_f.layers], mask=text_f.mask[:1, :3],
                         pooled=text_f.pooled[:1])
    audio = head.audio_repr(audio_f)
    batch_repr, alone_repr = head.text_repr(text_f), head.text_repr(alone)
    torch.testing.assert_close(batch_repr["coatt_text"][:1, :3], alone_repr["coatt_text"])
    torch.testing.assert_close(head.score(batch_repr, audio)[0], head.score(alone_repr, audio)[0])


def reference_pair(head, text, audio):
    """Literal per-pair forward: text [N, d], audio [M, d] (real tokens only) -> score."""
    t, a = text[None], audio[None]
    tm, am = torch.ones(t.shape[:2], dtype=torch.bool), torch.ones(a.shape[:2], dtype=torch.bool)
    for i in head.schedule:
        module = head.coatt[i]
        t_sa, a_sa = module.sa_text(t, t, tm), module.sa_audio(a, a, am)
        t, a = module.ga_text(t_sa, a_sa, am), module.ga_audio(a_sa, t_sa, tm)
    return F.cosine_similarity(head.text_pool(t, tm), head.audio_pool(a, am), dim=-1)[0]


@pytest.mark.parametrize("design,options", [("single", {}), ("stacked", {"layers": 3}),
                                            ("iterated", {"layers": 2, "iterations": 2}),
                                            ("iterated", {"iterations": 2, "share_weights": False,
                                                          "audio_segments": "time", "pooling": "mean"})])
def test_blocked_all_pairs_equal_per_pair_reference(design, options):
    head = make_head(design, memory_budget_mb=0.05, **options).eval()
    audio_f, text_f = features(5, lengths=[2, 7, 4, 3, 6])
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    assert head.pairs_per_block(7, audio["coatt_audio"].shape[1], 16, 8) < 5 * 4  # several blocks
    with torch.no_grad():
        scores = head.score(text, {k: v[:4] for k, v in audio.items()})
        expected = torch.stack([torch.stack([
            reference_pair(head, text["coatt_text"][t, text["coatt_text_mask"][t]], audio["coatt_audio"][a])
            for a in range(4)]) for t in range(5)])
    torch.testing.assert_close(scores, expected, atol=1e-10, rtol=1e-9)
    assert float((scores - scores.mean(0)).abs().max()) > 1e-4  # texts are scored differently


def test_time_segments_average_frequency_bands():
    head = make_head("single", audio_segments="time").eval()
    audio_f, _ = features(2)
    stage = audio_f.stages[-1]  # tokens (0, 1), (2, 3), ... share a time span
    expected = head.audio_proj(stage.view(2, TOKENS[-1] // 2, 2, DIMS[-1]).mean(2))
    torch.testing.assert_close(head.audio_repr(audio_f)["coatt_audio"], expected)


@pytest.mark.parametrize("design", DESIGNS)
def test_a_few_steps_of_nt_xent_lower_the_loss(design):
    torch.manual_seed(0)
    head = build_coattention(list(DIMS), TEXT_DIM, LAYERS, 16, {"design": design, "heads": 2, "dropout": 0.0})
    audio_f, text_f = features(6, seed=3, dtype=torch.float32)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return nt_xent(head.score(head.text_repr(text_f), head.audio_repr(audio_f)), 0.07)

    with torch.no_grad():
        before = loss().item()
    for _ in range(12):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.7 * before, (before, after)


def test_pooled_embeddings_are_masked_means():
    head = make_head("single").eval()
    audio_f, text_f = features(2, lengths=[2, 5])
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    t, _ = head.pooled_embeddings(text, audio)
    torch.testing.assert_close(t[0], F.normalize(text["coatt_text"][0, :2].mean(0), dim=0))
    torch.testing.assert_close(masked_mean(text["coatt_text"], text["coatt_text_mask"])[1],
                               text["coatt_text"][1, :5].mean(0))


@pytest.mark.parametrize("options", [
    {}, {"design": "bogus"}, {"design": "single", "layers": 2}, {"design": "stacked", "layers": 0},
    {"design": "stacked", "iterations": 2}, {"design": "iterated", "iterations": 0},
    {"design": "iterated", "share_weights": "yes"}, {"design": "single", "heads": 3},
    {"design": "single", "dropout": 1.5}, {"design": "single", "audio_stage": 5},
    {"design": "single", "text_block": 0}, {"design": "single", "pooling": "max"},
    {"design": "single", "audio_segments": "freq"}, {"design": "single", "memory_budget_mb": 0},
    {"design": "single", "lam": 9.0},
])
def test_bad_options_raise_value_error(options):
    with pytest.raises(ValueError, match="co-attention"):
        build_coattention(list(DIMS), TEXT_DIM, LAYERS, 16, options)


def test_good_options_build():
    head = build_coattention(list(DIMS), TEXT_DIM, LAYERS, 16, {
        "design": "iterated", "layers": 2, "iterations": 3, "share_weights": False, "heads": 4, "dropout": 0.0,
        "audio_stage": 3, "text_block": 2, "pooling": "mean", "memory_budget_mb": 8, "exclude_special": True})
    assert isinstance(head, CoAttentionHead) and head.audio_stage == 3 and head.text_block == 2


def test_length_groups_bound_the_padding():
    from hade.models.heads.coattention import length_groups

    assert length_groups([40, 35, 30, 29, 20, 16, 15, 3]) == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert length_groups([5, 5, 5]) == [[0, 1, 2]] and length_groups([]) == []
    lengths = sorted(torch.randint(1, 41, (64,), generator=torch.Generator().manual_seed(0)).tolist(), reverse=True)
    groups = length_groups(lengths)
    assert [i for g in groups for i in g] == list(range(64))
    assert all(lengths[g[-1]] >= 0.75 * lengths[g[0]] for g in groups)
    padded = sum(lengths[g[0]] * len(g) for g in groups)
    assert padded < 1.34 * sum(lengths) < 0.75 * 40 * 64  # vs. padding every caption to the longest


def test_texts_of_very_different_lengths_are_scored_in_their_own_order():
    head = make_head("stacked").eval()
    audio_f, text_f = features(6, lengths=[2, 7, 7, 1, 5, 3])
    text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
    with torch.no_grad():
        scores = head.score(text, audio)
        for t in range(6):  # each text alone, trimmed to its own length
            n = int(text["coatt_text_mask"][t].sum())
            alone = {"coatt_text": text["coatt_text"][t:t + 1, :n], "coatt_text_mask": text["coatt_text_mask"][t:t + 1, :n]}
            torch.testing.assert_close(scores[t], head.score(alone, audio)[0], atol=1e-10, rtol=1e-9)
