"""HCI (+AC) head: shapes, masks, blocked all-pairs scoring against a per-pair reference, hand-checked levels,
the auxiliary-caption branch, training and option checks."""
import math

import pytest
import torch

import hade
from hade.config import ModelConfig
from hade.losses import nt_xent
from hade.models.heads.hci import (HCI_BUILDERS, build_hci, fine_similarity, phrase_pooling, segment_pooling,
                                   time_pooling)
from hade.models.heads.reprs import cat_reprs
from hade.models.encoders.types import AudioLevels

CAPTIONS = ["a dog barks", "rain falls on a roof while a siren wails in the distance", "a bell",
            "two knocks, then a high whistle", "birds sing and a car passes by quickly"]
AUX = ["a dog barks twice", None, "a siren wails"]


def make_model(config, **options):
    torch.manual_seed(0)
    model = hade.create_model(ModelConfig(**{**config.__dict__, "head": "dp", "head_options": {}}))
    enc, text = model.audio_encoder, model.text_encoder
    model.head = build_hci(list(enc.stage_dims), text.hidden_size, text.num_layers, model.config.embed_dim, options)
    return model.eval()


@pytest.fixture(scope="module")
def ac_model(tiny_model_config):
    return make_model(tiny_model_config, use_ac=True)


@pytest.fixture(scope="module")
def waves(ac_model):
    return torch.randn(3, ac_model.max_samples, generator=torch.Generator().manual_seed(1))


def test_shapes(ac_model, waves):
    with torch.no_grad():
        text, audio = ac_model.encode_text(CAPTIONS), ac_model.encode_audio(waves, AUX)
    n_words = text["hci_words"].shape[1]
    assert text["hci_words"].shape == (5, n_words, 32) and text["hci_word_mask"].shape == (5, n_words)
    assert text["hci_phrases"].shape[::2] == (5, 32) and text["hci_sentence"].shape == (5, 32)
    # htsat-test stage 3: 4x4 tokens over 2 time chunks -> 8 time steps; windows 4 / stride 2 -> 3 segments
    for prefix in ("hci_", "hci_ac_"):
        assert audio[f"{prefix}frames"].shape == (3, 8, 32)
        assert audio[f"{prefix}segments"].shape == (3, 3, 32)
        assert audio[f"{prefix}clip"].shape == (3, 32)
    assert audio["hci_ac_on"].tolist() == [True, False, True]
    assert ac_model.score(text, audio).shape == (5, 3)
    assert not ac_model.head.capabilities.factorised
    t_emb, a_emb = ac_model.head.pooled_embeddings(text, audio)
    assert torch.allclose(t_emb.norm(dim=-1), torch.ones(5)) and a_emb.shape == (3, 32)


def test_phrases_follow_the_chunker(ac_model):
    caption = "a loud dog barks, then rain"
    features = ac_model.text_features([caption, "a bell"])
    tokens = ac_model.tokenizer.convert_ids_to_tokens(ac_model.tokenize([caption])[0][0].tolist())
    assert tokens == ["[CLS]", "a", "loud", "dog", "bark", "##s", ",", "then", "rain", "[SEP]"]
    assert features.phrase_index[0].tolist() == [-1, 0, 0, 0, 1, 1, -1, -1, 2, -1]
    assert features.phrase_index[1].tolist()[:4] == [-1, 0, 0, -1]
    text = ac_model.head.text_repr(features)
    assert text["hci_phrase_mask"].tolist() == [[True, True, True], [True, False, False]]


def test_caption_alone_equals_inside_padded_batch(ac_model, waves):
    with torch.no_grad():
        audio = ac_model.encode_audio(waves, AUX)
        batch = ac_model.score(ac_model.encode_text(CAPTIONS), audio)
        singles = cat_reprs([ac_model.encode_text([c]) for c in CAPTIONS])
        torch.testing.assert_close(ac_model.score(singles, audio), batch, atol=2e-5, rtol=1e-5)
        for t, caption in enumerate(CAPTIONS):
            torch.testing.assert_close(ac_model.score(ac_model.encode_text([caption]), audio)[0], batch[t],
                                       atol=2e-5, rtol=1e-5)


def reference_levels(text, audio, t, a, prefix):
    """Per-pair HCI levels written out directly (max aggregation)."""
    def fine(q, k):
        s = q @ k.T
        return 0.5 * (s.max(1).values.mean() + s.max(0).values.mean())
    words = text["hci_words"][t][text["hci_word_mask"][t]]
    phrases = text["hci_phrases"][t][text["hci_phrase_mask"][t]]
    return torch.stack([fine(words, audio[f"{prefix}frames"][a]), fine(phrases, audio[f"{prefix}segments"][a]),
                        text["hci_sentence"][t] @ audio[f"{prefix}clip"][a]])


def test_blocked_all_pairs_equals_per_pair_reference(ac_model, waves):
    head = ac_model.head
    with torch.no_grad():
        text, audio = ac_model.encode_text(CAPTIONS), ac_model.encode_audio(waves, AUX)
        unbounded = head.score(text, audio)
        head.memory_budget = 3000.0  # bytes: a few pairs per block
        try:
            per_pair = text["hci_words"].shape[1] * 8
            assert head._blocks(5, 3, per_pair) not in ((5, 3),)
            blocked = head.score(text, audio)
        finally:
            head.memory_budget = 256 * 2**20
    g, w = head.ac_weight, torch.tensor(head.level_weights)
    expected = torch.zeros(5, 3)
    for t in range(5):
        for a in range(3):
            plain = reference_levels(text, audio, t, a, "hci_")
            enhanced = reference_levels(text, audio, t, a, "hci_ac_")
            expected[t, a] = (w * ((1 - g) * plain + g * enhanced)).sum()
    torch.testing.assert_close(blocked, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unbounded, expected, atol=1e-5, rtol=1e-5)


def test_levels_on_a_hand_checkable_case(tiny_model_config):
    head = build_hci([8, 8, 8, 8], 8, 2, 2, {"level_weights": [0.5, 0.3, 0.2]})
    text = {"hci_words": torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]),
            "hci_word_mask": torch.tensor([[True, True, False]]),
            "hci_phrases": torch.tensor([[[0.6, 0.8]]]), "hci_phrase_mask": torch.tensor([[True]]),
            "hci_sentence": torch.tensor([[1.0, 0.0]])}
    audio = {"hci_frames": torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]]]),
             "hci_segments": torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), "hci_clip": torch.tensor([[0.6, 0.8]])}
    levels = head.level_scores(text, audio)
    fw = 0.5 * ((1.0 + 0.8) / 2 + (1.0 + 0.8 + 0.8) / 3)  # words -> best frame; frames -> best word
    sp = 0.5 * (0.8 + (0.6 + 0.8) / 2)  # the phrase's best segment; each segment's best phrase
    assert levels["frame_word"].item() == pytest.approx(fw)
    assert levels["segment_phrase"].item() == pytest.approx(sp)
    assert levels["clip_sentence"].item() == pytest.approx(0.6)
    assert head.score(text, audio).item() == pytest.approx(0.5 * fw + 0.3 * sp + 0.2 * 0.6)
    soft = fine_similarity(text["hci_words"], text["hci_word_mask"], audio["hci_frames"], "softmax", 1e-4)
    assert soft.item() == pytest.approx(fw, abs=1e-4)  # a cold softmax is the max
    losses = head.aux_losses(cat_reprs([text, text]), cat_reprs([audio, audio]))
    assert set(losses) == {"hci_frame_word", "hci_segment_phrase", "hci_clip_sentence"}
    assert losses["hci_clip_sentence"].item() == pytest.approx(2 * math.log(2) / 3, rel=1e-5)  # equal scores


def test_pooling_matrices():
    assert segment_pooling(5, 2, 2).tolist() == [[.5, .5, 0, 0, 0], [0, 0, .5, .5, 0], [0, 0, 0, .5, .5]]
    assert segment_pooling(3, 4, 2).tolist() == [pytest.approx([1 / 3, 1 / 3, 1 / 3])]
    # grid 4x2 over two time chunks: rows 0-1 are frequency bins of chunk 0 (times 0, 1), rows 2-3 of chunk 1
    seconds = torch.tensor([[0, 1], [1, 2], [0, 1], [1, 2], [2, 3], [3, 4], [2, 3], [3, 4]], dtype=torch.float32)
    tokens = torch.arange(8, dtype=torch.float32)[None, :, None]
    assert (time_pooling(8, seconds, (4, 2)) @ tokens).flatten().tolist() == [1.0, 2.0, 5.0, 6.0]
    states = torch.tensor([[[10.0], [20.0], [30.0], [40.0], [50.0]]])
    words = torch.tensor([[False, True, True, True, False]])
    pooled, mask = phrase_pooling(states, words, torch.tensor([[-1, 0, 0, 1, -1]]), 3)
    assert pooled.flatten().tolist() == [25.0, 40.0] and mask.tolist() == [[True, True]]
    pooled, mask = phrase_pooling(states, words, torch.tensor([[-1, -1, -1, -1, -1]]), 3)
    assert pooled.flatten().tolist() == [30.0]  # no chunk: the whole caption is one phrase
    pooled, _ = phrase_pooling(states, words, None, 2)  # no chunker output: windows of 2 words
    assert pooled.flatten().tolist() == [25.0, 40.0]


def test_ac_changes_audio_only_with_aux_captions(ac_model, tiny_model_config, waves):
    with torch.no_grad():
        bare = ac_model.encode_audio(waves)
        aided = ac_model.encode_audio(waves, AUX)
        text = ac_model.encode_text(CAPTIONS)
        assert not bare["hci_ac_on"].any()
        for k in ("frames", "segments", "clip"):
            assert torch.equal(bare[f"hci_ac_{k}"], bare[f"hci_{k}"])
            assert torch.equal(aided[f"hci_{k}"], bare[f"hci_{k}"])  # the original branch never changes
            assert not torch.allclose(aided[f"hci_ac_{k}"][0], bare[f"hci_{k}"][0], atol=1e-4)
            assert torch.equal(aided[f"hci_ac_{k}"][1], bare[f"hci_{k}"][1])  # clip 1 has no aux caption
        s_bare, s_aided = ac_model.score(text, bare), ac_model.score(text, aided)
        torch.testing.assert_close(s_aided[:, 1], s_bare[:, 1])
        assert not torch.allclose(s_aided[:, 0], s_bare[:, 0], atol=1e-4)
        plain = make_model(tiny_model_config)  # hci without AC ignores auxiliary captions
        assert not plain.head.capabilities.uses_aux_captions
        a1, a2 = plain.encode_audio(waves), plain.encode_audio(waves, AUX)
        assert a1.keys() == a2.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)
    with pytest.raises(ValueError, match="2 auxiliary captions for 3 clips"):
        ac_model.encode_audio(waves, AUX[:2])


def test_a_few_steps_lower_nt_xent_plus_level_losses(tiny_model_config):
    model = make_model(tiny_model_config, use_ac=True)
    head = model.head
    waves = torch.randn(4, model.max_samples, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # encoders frozen: the head (with its AC branch) is what is optimised
        text_f = model.text_features(CAPTIONS[:4])
        audio_f = model.audio_encoder(waves)
        audio_f.aux_text = model.text_features(["a dog barks", "rain", "", "two knocks"])
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)

    def loss_fn():
        text, audio = head.text_repr(text_f), head.audio_repr(audio_f)
        extra = head.aux_losses(text, audio)
        assert set(extra) == {"hci_frame_word", "hci_segment_phrase", "hci_clip_sentence"}
        return nt_xent(head.score(text, audio), 0.07) + sum(extra.values())

    with torch.no_grad():
        before = loss_fn().item()
    head.train()
    for _ in range(15):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        after = loss_fn().item()
    assert after < 0.5 * before, (before, after)
    assert head.ac_attn.in_proj_weight.grad.abs().sum() > 0  # the AC branch is trained


@pytest.mark.parametrize("options", [
    {"audio_stage": 0}, {"audio_stage": 5}, {"text_block": 3}, {"level_weights": [1, 1]},
    {"level_weights": [0, 0, 0]}, {"level_weights": [1, -1, 1]}, {"aux_weights": "abc"},
    {"segment_window": 0}, {"segment_stride": 1.5}, {"aggregation": "mean"}, {"agg_temperature": 0},
    {"temperature": -1}, {"memory_budget_mb": 0}, {"use_ac": "yes"}, {"use_ac": True, "ac_heads": 3},
    {"ac_weight": 1.5}, {"phrase_window": 0}, {"lam": 9.0},
])
def test_bad_options_raise(options):
    with pytest.raises(ValueError, match="HCI"):
        build_hci([16, 32, 64, 128], 32, 2, 32, options)


STAGES = AudioLevels.swin_stages([16, 32, 64, 128])


def test_registry_builders_fix_use_ac():
    assert not HCI_BUILDERS["hci"](STAGES, 32, 2, 32, {}).use_ac
    assert HCI_BUILDERS["hci+ac"](STAGES, 32, 2, 32, {"ac_weight": 1.0}).use_ac
    with pytest.raises(ValueError, match="fixes use_ac"):
        HCI_BUILDERS["hci"](STAGES, 32, 2, 32, {"use_ac": True})
