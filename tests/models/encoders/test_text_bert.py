import os

import pytest
import torch

from hade.errors import InputError
from hade.models.encoders.text_bert import TextEncoder, bundled_minilm_dir, load_text_backbone


def test_minilm_loads_offline_from_the_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bert, tokenizer, config = load_text_backbone("minilm")
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384
    assert str(bundled_minilm_dir()).startswith(os.path.dirname(os.path.dirname(torch.__file__)))
    enc = TextEncoder(bert.eval(), pooling="cls")
    batch = tokenizer(["a dog barks", "rain falls on a tin roof"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = enc(batch["input_ids"], batch["attention_mask"])
    assert len(out.layers) == 6
    assert out.layers[0].shape == (2, batch["input_ids"].shape[1], 384)
    assert out.mask.dtype == torch.bool and out.mask[0].sum() < out.mask[1].sum()
    torch.testing.assert_close(out.pooled, out.layers[-1][:, 0])
    # pretrained weights really were loaded: related sentences are closer than unrelated ones
    mean = TextEncoder(bert.eval(), pooling="mean")
    sents = ["a dog is barking", "a dog barks loudly", "heavy rain on the roof"]
    b = tokenizer(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        v = torch.nn.functional.normalize(mean(b["input_ids"], b["attention_mask"]).pooled, dim=-1)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_mean_pooling_ignores_padding():
    bert, tokenizer, _ = load_text_backbone("minilm", pretrained=False,
                                            overrides={"num_hidden_layers": 1, "hidden_size": 16,
                                                       "num_attention_heads": 2, "intermediate_size": 32})
    enc = TextEncoder(bert.eval(), pooling="mean")
    one = tokenizer(["a dog barks"], return_tensors="pt")
    two = tokenizer(["a dog barks", "a much longer caption about rain and wind"], padding=True, return_tensors="pt")
    with torch.no_grad():
        alone = enc(one["input_ids"], one["attention_mask"]).pooled[0]
        padded = enc(two["input_ids"], two["attention_mask"]).pooled[0]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_bad_text_encoder_path_is_clear(tmp_path):
    with pytest.raises(InputError, match="local BERT or RoBERTa directory"):
        load_text_backbone(str(tmp_path / "nope"))


def test_any_local_bert_directory_works_and_tha_maps_12_blocks(tmp_path, tiny_model_config):
    """A BERT-base-like directory (12 blocks): loaded by path, and THA aligns stages 2/3/4 with blocks 4/10/12."""
    import hade
    from hade.config import ModelConfig

    bert, tokenizer, _ = load_text_backbone("minilm", pretrained=False,
                                            overrides={"num_hidden_layers": 12, "hidden_size": 32,
                                                       "num_attention_heads": 2, "intermediate_size": 64})
    bert.save_pretrained(tmp_path / "bert12")
    tokenizer.save_pretrained(tmp_path / "bert12")
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "text_encoder": str(tmp_path / "bert12"),
                         "text_pretrained": True, "text_overrides": {}, "head": "tha"})
    model = hade.create_model(cfg).eval()
    assert model.text_encoder.num_layers == 12
    assert model.head.text_blocks == (4, 10, 12) and model.head.audio_stages == (2, 3, 4)
    # the weights came from the directory, not from a fresh initialisation
    saved = bert.state_dict()["encoder.layer.11.output.dense.weight"]
    torch.testing.assert_close(model.text_encoder.bert.state_dict()["encoder.layer.11.output.dense.weight"], saved)
