"""Caption normalisation (hade.data.text) and its use by the model at every stage (ModelConfig.caption_normalize)."""
import dataclasses

import pytest
import torch

from hade.checkpoint import load, save_model
from hade.config import ModelConfig, from_dict, to_dict
from hade.data.text import normalize_caption, normalize_captions
from hade.errors import InputError
from hade.models.factory import create_model


def test_dcase_normalisation_lower_cases_and_drops_ascii_punctuation_only():
    assert normalize_caption("A Dog barks; isn't it LOUD?!", "dcase") == "a dog barks isnt it loud"
    assert normalize_caption("rain (heavy) - on a roof...", "dcase") == "rain heavy  on a roof"  # spaces kept
    assert normalize_caption("Café «bells» ring", "dcase") == "café «bells» ring"  # non-ASCII kept
    assert normalize_caption("A Dog, barking.", "none") == "A Dog, barking."
    assert normalize_captions(["X.", "y"], "dcase") == ["x", "y"]
    with pytest.raises(InputError, match="caption_normalize.*'lower'"):
        normalize_captions(["x"], "lower")


def _model(config: ModelConfig, mode: str):
    torch.manual_seed(0)
    return create_model(dataclasses.replace(config, caption_normalize=mode)).eval()


def test_the_model_normalises_every_caption_it_encodes(tiny_model_config):
    model = _model(tiny_model_config, "dcase")
    raw, clean = ["A DOG barks, twice!", "Rain; on a roof."], ["a dog barks twice", "rain on a roof"]
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(raw)["embed"], model.encode_text(clean)["embed"], rtol=0, atol=0)
        ids, _ = model.tokenize(raw)
        assert torch.equal(ids, model.tokenize(clean)[0])
        plain = _model(tiny_model_config, "none")
        assert not torch.equal(plain.tokenize(raw)[0], plain.tokenize(clean)[0])  # punctuation is tokenised


def test_phrase_heads_chunk_the_normalised_caption(tiny_model_config):
    model = _model(dataclasses.replace(tiny_model_config, head="hci"), "dcase")
    with torch.no_grad():
        a = model.text_features(["A dog barks, then a door slams!"])
        b = model.text_features(["a dog barks then a door slams"])
    assert torch.equal(a.phrase_index, b.phrase_index)


def test_the_setting_is_saved_with_the_checkpoint_and_used_by_the_loaded_model(tiny_model_config, tmp_path):
    model = _model(tiny_model_config, "dcase")
    save_model(model, tmp_path / "ckpt")
    loaded = load(tmp_path / "ckpt")
    assert loaded.config.caption_normalize == "dcase"
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(["Birds, SING."])["embed"],
                                   model.encode_text(["birds sing"])["embed"])


def test_old_configs_default_to_no_normalisation_and_bad_values_are_refused(tiny_model_config):
    old = to_dict(tiny_model_config)
    del old["caption_normalize"]
    assert from_dict(ModelConfig, old).caption_normalize == "none"
    with pytest.raises(InputError, match="caption_normalize.*'DCASE'"):
        create_model(dataclasses.replace(tiny_model_config, caption_normalize="DCASE"))
