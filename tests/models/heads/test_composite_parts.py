"""Sum heads: S = Σ_h S_h, and the optional contrastive term per part (`part_loss_weight`)."""
import pytest
import torch

import hade
from hade.config import ModelConfig
from hade.errors import InputError
from hade.losses import nt_xent
from hade.train.objective import training_loss


def _model(config: ModelConfig, **options):
    torch.manual_seed(0)
    return hade.create_model(ModelConfig(**{**config.__dict__, "head": "tha+dcr",
                                            "head_options": {"factors": 4, **options}}))


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"audio": 0.1 * torch.randn(4, 8000, generator=g), "clip_index": torch.tensor([0, 1, 2, 2]),
            "caption": ["a dog barks", "rain falls", "a bell rings twice", "a bell rings"]}


def test_without_part_weight_the_loss_is_the_papers(tiny_model_config):
    model = _model(tiny_model_config)
    losses = training_loss(model, _batch(), 0.07)
    assert [k for k in losses if k.startswith("nt_xent")] == ["nt_xent"]
    torch.testing.assert_close(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))


def test_part_weight_adds_one_contrastive_term_per_part(tiny_model_config):
    model = _model(tiny_model_config, part_loss_weight=0.5).eval()  # eval: no dropout, same scores twice
    batch = _batch()
    losses = training_loss(model, batch, 0.07)
    audio = model.encode_audio(batch["audio"])
    text = model.encode_text(batch["caption"])
    ids = batch["clip_index"]
    parts = {name: part.score(text, audio) for name, part in model.head.parts.items()}
    torch.testing.assert_close(losses["nt_xent"], nt_xent(parts["tha"] + parts["dcr"], 0.07, ids))
    for name, s in parts.items():
        torch.testing.assert_close(losses[f"nt_xent_{name}"], 0.5 * nt_xent(s, 0.07, ids))
    others = sum(v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], others)
    torch.testing.assert_close(model.score(text, audio), parts["tha"] + parts["dcr"])  # scoring is unchanged


def test_part_weight_is_only_an_option_of_sum_heads(tiny_model_config):
    with pytest.raises(InputError, match="part_loss_weight"):
        hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "head": "tha",
                                         "head_options": {"part_loss_weight": 1.0}}))
    with pytest.raises(InputError, match=">= 0"):
        _model(tiny_model_config, part_loss_weight=-1.0)
