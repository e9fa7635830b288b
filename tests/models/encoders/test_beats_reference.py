"""BEATs equals ESPnet's BEATs encoder on random weights: every chosen block and the pooled output within
1e-4 in fp32, with ESPnet's state dict loaded through hade's explicit key map (its padding-mask convolutions
(newer releases) and the copies of the shared relative position table reported as skipped).

The reference is built by benchmarks/_beats_reference.py; skipped when the ESPnet or torchaudio reference
folders are not installed (the Makefile installs both, test-only, outside site-packages)."""
import dataclasses
import pytest
import torch
from _scripts import load_script

from hade.models.encoders.audio import audio_encoder_config


R = load_script("benchmarks/_beats_reference.py")
pytestmark = [pytest.mark.filterwarnings("ignore"),
              pytest.mark.skipif(not R.available(), reason="ESPnet / torchaudio reference not installed")]


@pytest.mark.parametrize("levels", [[1, 2, 3], [2]])
def test_beats_equals_espnet(levels):
    torch.set_num_threads(1)
    cfg = dataclasses.replace(audio_encoder_config("beats-test"), levels=levels)
    ref, ours, report = R.hade_pair(cfg)
    assert report.complete and not report.unexpected
    copies = {f"encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in (1, 2)}
    pads = {"patch_embedding_pad.weight", "raw2fbank_pad.weight"}  # in newer ESPnet releases only
    assert copies <= set(report.skipped) <= copies | pads
    torch.manual_seed(3)
    x = torch.randn(2, 27_000) * 0.3  # 1.69 s: 167 frames, 10 time patches
    with torch.no_grad():
        blocks, final = R.layer_outputs(ref, x)
        feats = ours(x)
    for level, tokens in zip(levels, feats.stages):
        torch.testing.assert_close(tokens, blocks[level - 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.pooled, final.mean(1), atol=1e-4, rtol=0)
    assert feats.grids[0] == (10, 8)
