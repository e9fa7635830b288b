"""Every registered head: blocked all-pairs scores equal per-pair scores of unpadded inputs, and a few
training steps lower its loss."""
import pytest
import torch

import hade
from hade.config import ModelConfig
from hade.losses import nt_xent
from hade.models.heads import HEADS, score_all
from hade.models.heads.reprs import cat_reprs

CAPTIONS = ["a dog barks", "rain falls on a roof while a siren wails in the distance", "a bell",
            "two knocks, then a high whistle", "birds sing and a car passes by quickly", "thunder"]
FACTOR_OPTIONS = {"factors": 4}


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
            if model.head.set_scoring:  # a distribution over the candidate set: compare whole rows
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
