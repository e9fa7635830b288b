"""Every registered head: blocked all-pairs scores equal per-pair scores of unpadded inputs, a few
training steps lower its loss, and the capabilities it declares hold (the head contract, docs/heads.md)."""
import pytest
import torch

import hade
from hade.config import ModelConfig
from hade.losses import nt_xent
from hade.models.heads import HEADS, RetrievalHead, score_all
from hade.models.heads.base import EXPLANATIONS, HeadCapabilities
from hade.models.heads.explanation import HeadExplanation
from hade.models.heads.reprs import cat_reprs

CAPTIONS = ["a dog barks", "rain falls on a roof while a siren wails in the distance", "a bell",
            "two knocks, then a high whistle", "birds sing and a car passes by quickly", "thunder"]
FACTOR_OPTIONS = {"factors": 4}
THA_PAIRS = tuple((f"tha_audio_{i}", f"tha_text_{i}") for i in range(3))
DP_PROJ = ("audio_proj", "text_proj")  # DP's pooled projection, which DCR and DiffATR inherit


def make_model(tiny_model_config, head):
    options = FACTOR_OPTIONS if any(p in head.split("+") for p in ("dcr", "ld", "la", "ca")) else {}
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "head": head, "head_options": options})
    torch.manual_seed(0)
    return hade.create_model(cfg)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_blocked_all_pairs_equals_per_pair_unpadded(tiny_model_config, head):
    model = make_model(tiny_model_config, head).eval()
    g = torch.Generator().manual_seed(1)
    waves = torch.randn(5, model.max_samples, generator=g)
    with torch.no_grad():
        audio = model.encode_audio(waves)
        text = model.encode_text(CAPTIONS)  # padded to the longest caption
        blocked = score_all(model.head, text, audio, text_block=4, audio_block=2)
        assert blocked.shape == (6, 5)
        singles = cat_reprs([model.encode_text([c]) for c in CAPTIONS])  # each encoded alone, then padded
        for t, caption in enumerate(CAPTIONS):
            alone = model.encode_text([caption])
            if model.head.capabilities.set_scoring:  # a distribution over the candidate set: compare whole rows
                torch.testing.assert_close(model.score(alone, audio)[0], blocked[t], atol=2e-5, rtol=1e-5)
                continue
            for a in range(5):
                one = model.score(alone, {k: v[a:a + 1] for k, v in audio.items()})
                assert one.item() == pytest.approx(blocked[t, a].item(), abs=2e-5), (caption, a)
        torch.testing.assert_close(score_all(model.head, singles, audio), blocked, atol=2e-5, rtol=1e-5)


def batch_loss(model, waves, clip_ids):
    audio = model.encode_audio(waves)
    text = model.encode_text(CAPTIONS)
    loss = nt_xent(model.score(text, audio), 0.07, clip_ids)
    return loss + sum(model.head.aux_losses(text, audio).values())


@pytest.mark.parametrize("head", sorted(HEADS))
def test_a_few_training_steps_lower_the_loss(tiny_model_config, head):
    model = make_model(tiny_model_config, head)
    if head == "diffatr":  # the contrastive loss trains the encoders through the cosine score
        model.head.score_mode = "cosine"
    g = torch.Generator().manual_seed(2)
    waves = torch.randn(6, model.max_samples, generator=g)
    clip_ids = torch.arange(6)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    with torch.no_grad():
        before = batch_loss(model.eval(), waves, clip_ids).item()
    model.train()
    for _ in range(20):
        loss = batch_loss(model, waves, clip_ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = batch_loss(model.eval(), waves, clip_ids).item()
    assert after < 0.85 * before, (before, after)


# ---- the head contract (docs/heads.md): what a head declares holds -----------------------------------
AUX = ["a dog barks twice", None, "rain on a tin roof", "", "a siren"]


def _check_explanation(kind, value, head):
    """The fields docs/heads.md promises for each explanation kind."""
    assert kind in EXPLANATIONS
    if kind == "tha":
        n = value.word_mask.shape[0]
        assert value.word_mask.dtype == torch.bool and value.levels
        total = 0.0
        for lv in value.levels:
            assert lv.alpha.shape == lv.beta.shape and lv.alpha.shape[1] == n
            assert isinstance(lv.audio_stage, int) and isinstance(lv.text_block, int)
            total += float(lv.text_enhanced) + float(lv.audio_enhanced)
        assert float(value.score) == pytest.approx(value.scale * total, abs=1e-4)
    else:  # factors
        sim, conf = value.similarity, value.confidence
        assert sim.ndim == 1 and bool((sim.abs() <= 1 + 1e-5).all()) and torch.isfinite(value.score)
        if conf is not None:
            assert conf.shape == sim.shape
            assert float((conf * sim).sum()) == pytest.approx(float(value.score), abs=1e-4)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_declared_capabilities_hold(tiny_model_config, head):
    model = make_model(tiny_model_config, head).eval()
    caps = model.head.capabilities
    assert isinstance(caps, HeadCapabilities) and caps.explanations <= set(EXPLANATIONS)
    waves = torch.randn(5, model.max_samples, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        text, audio = model.encode_text(CAPTIONS), model.encode_audio(waves)
        with_aux = model.encode_audio(waves, AUX)
        # uses_aux_captions <=> the audio representation reads the captions
        assert caps.uses_aux_captions == any(not torch.equal(audio[k], with_aux[k]) for k in audio)
        # needs_phrases <=> the model runs the chunker for the text encoder's features
        assert caps.needs_phrases == (model.text_features(CAPTIONS).phrase_index is not None)
        pooled_t, pooled_a = model.head.pooled_text(text), model.head.pooled_audio(audio)
        if not caps.has_pooled:
            assert pooled_t is None and pooled_a is None and model.head.pooled_embeddings(text, audio) is None
            assert not caps.factorised
        else:  # unit vectors of one width, per side, and the two-sided wrapper agrees
            assert pooled_t.shape[0] == 6 and pooled_a.shape[0] == 5 and pooled_t.shape[1] == pooled_a.shape[1]
            torch.testing.assert_close(pooled_t.norm(dim=-1), torch.ones(6))
            torch.testing.assert_close(pooled_a.norm(dim=-1), torch.ones(5))
            both = model.head.pooled_embeddings(text, audio)
            assert torch.equal(both[0], pooled_t) and torch.equal(both[1], pooled_a)
        # text_vector / audio_vector: the pooled vectors straight from the encoders' features (ONNX towers)
        vec_t = model.head.text_vector(model.text_features(CAPTIONS))
        vec_a = model.head.audio_vector(model.audio_encoder(waves))
        if caps.has_pooled:
            torch.testing.assert_close(vec_t, pooled_t, atol=1e-6, rtol=0)
            torch.testing.assert_close(vec_a, pooled_a, atol=1e-6, rtol=0)
        else:
            assert vec_t is None and vec_a is None
        parts = model.head.summed_parts()  # a sum head's parts score the same representations
        if parts:
            torch.testing.assert_close(sum(part.score(text, audio) for part in parts.values()),
                                       model.score(text, audio), atol=1e-5, rtol=0)
        assert bool(parts) == (head in ("tha+dcr", "tha+dp")), head
        if caps.factorised:  # an ANN index over the pooled vectors ranks exactly
            torch.testing.assert_close(model.score(text, audio), pooled_t @ pooled_a.T)
        if caps.score_bound is not None:  # a search refuses scores beyond it as damage
            assert bool((model.score(text, audio).abs() <= caps.score_bound + 1e-5).all())
        # rotation_pairs: one orthogonal rotation per pair, of both keys, leaves every score unchanged
        if caps.rotation_pairs:
            rot_t, rot_a = dict(text), dict(audio)
            for i, (a_key, t_key) in enumerate(caps.rotation_pairs):
                assert a_key in audio and t_key in text
                q, _ = torch.linalg.qr(torch.randn(audio[a_key].shape[-1], audio[a_key].shape[-1],
                                                   generator=torch.Generator().manual_seed(10 + i)))
                rot_a[a_key], rot_t[t_key] = audio[a_key] @ q.T, text[t_key] @ q.T
            torch.testing.assert_close(model.score(rot_t, rot_a), model.score(text, audio), atol=2e-5, rtol=1e-4)
        one_t, one_a = {k: v[:1] for k, v in text.items()}, {k: v[:1] for k, v in audio.items()}
        explained = model.head.explain(one_t, one_a)
    assert explained.kinds == caps.explanations
    for kind in explained.kinds:
        _check_explanation(kind, getattr(explained, kind), model.head)


@pytest.mark.parametrize("head, expected", [
    ("dp", HeadCapabilities(factorised=True, has_pooled=True, score_bound=1.0, pooled_projection=DP_PROJ)),
    ("tha", HeadCapabilities(explanations=frozenset({"tha"}), rotation_pairs=THA_PAIRS)),
    ("tha+dp", HeadCapabilities(has_pooled=True, explanations=frozenset({"tha"}), rotation_pairs=THA_PAIRS)),
    ("tha+dcr", HeadCapabilities(has_pooled=True, explanations=frozenset({"tha", "factors"}),
                                 rotation_pairs=THA_PAIRS)),
    ("dp+ld", HeadCapabilities(factorised=True, has_pooled=True, explanations=frozenset({"factors"}),
                               score_bound=1.0, pooled_projection=DP_PROJ)),
    ("dcr", HeadCapabilities(has_pooled=True, explanations=frozenset({"factors"}), score_bound=1.0,
                             pooled_projection=DP_PROJ)),
    ("hci+ac", HeadCapabilities(has_pooled=True, needs_phrases=True, uses_aux_captions=True)),
    ("diffatr", HeadCapabilities(has_pooled=True, set_scoring=True, pooled_projection=DP_PROJ)),
])
def test_capabilities_of_known_heads(tiny_model_config, head, expected):
    """A sum of heads offers what its parts offer, and is never factorised itself."""
    assert make_model(tiny_model_config, head).head.capabilities == expected


def test_a_new_head_is_one_class_and_one_registry_line(tiny_model_config, monkeypatch):
    """docs/heads.md's minimal example: declared capabilities reach the model without edits elsewhere."""

    class MeanHead(RetrievalHead):
        capabilities = HeadCapabilities(factorised=True, has_pooled=True)

        def __init__(self, audio_dims, text_dim, embed_dim):
            super().__init__()
            self.audio_proj = torch.nn.Linear(audio_dims[-1], embed_dim)
            self.text_proj = torch.nn.Linear(text_dim, embed_dim)

        def text_repr(self, features):
            return {"embed": torch.nn.functional.normalize(self.text_proj(features.pooled), dim=-1)}

        def audio_repr(self, features):
            return {"embed": torch.nn.functional.normalize(self.audio_proj(features.pooled), dim=-1)}

        def score(self, text, audio):
            return text["embed"] @ audio["embed"].T

    monkeypatch.setitem(HEADS, "mean", lambda audio_levels, text_dim, text_layers, embed_dim, options:
                        MeanHead(list(audio_levels.dims), text_dim, embed_dim))
    model = make_model(tiny_model_config, "mean").eval()
    with torch.no_grad():
        text = model.encode_text(CAPTIONS)
        audio = model.encode_audio(torch.randn(2, model.max_samples, generator=torch.Generator().manual_seed(4)))
    assert model.head.capabilities == HeadCapabilities(factorised=True, has_pooled=True)
    assert not model.uses_aux_captions and model.head.explain(text, audio) == HeadExplanation()
    pooled = model.head.pooled_text(text) @ model.head.pooled_audio(audio).T
    torch.testing.assert_close(model.score(text, audio), pooled)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_heads_aux_losses_take_the_batchs_clip_pairs(tiny_model_config, head):
    """The contract: `aux_losses(text, audio, pairs)` with the batch's same-clip positives (hade.losses); the
    same terms come back, and with no shared clip they equal the terms without `pairs`."""
    from hade.losses import ClipPairs

    model = make_model(tiny_model_config, head).eval()
    waves = torch.randn(6, model.max_samples, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        audio, text = model.encode_audio(waves), model.encode_text(CAPTIONS)
        plain = model.head.aux_losses(text, audio)
        distinct = model.head.aux_losses(text, audio, ClipPairs(torch.arange(6)))
        shared = model.head.aux_losses(text, audio, ClipPairs(torch.tensor([0, 1, 2, 0, 3, 1])))
    assert set(plain) == set(distinct) == set(shared)
    for name in plain:
        torch.testing.assert_close(distinct[name], plain[name], msg=name)
