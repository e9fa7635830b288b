"""PaSST equals hear21passt on random weights: the mel front end, every chosen block and the clip vector
within 1e-4 in fp32, with the reference's state dict loaded through hade's explicit key map.

The reference is built by benchmarks/_passt_reference.py (hear21passt's own AugmentMelSTFT and PaSST
classes); skipped when hear21passt or the torchaudio reference wheel is not installed (the Makefile
installs both, test-only)."""
import pytest
import torch
from _scripts import load_script

from hade.models.encoders.passt import PaSSTConfig


R = load_script("benchmarks/_passt_reference.py")
pytestmark = [pytest.mark.filterwarnings("ignore"),
              pytest.mark.skipif(not R.available(), reason="hear21passt / torchaudio reference not installed")]

CONFIGS = {
    # PaSST-S's front end (32 kHz, 128 Kaldi mel bins, hop 320) with a small transformer; levels end at the last block
    "32k": PaSSTConfig(embed_dim=64, depth=3, num_heads=4, mlp_ratio=4.0, levels=[1, 2, 3], max_frames=300),
    # the DCASE 2025 baseline's geometry (passt-s-p16-s16: 16 x 16 patches at stride 16), small transformer
    "32k-stride16": PaSSTConfig(stride=16, embed_dim=64, depth=3, num_heads=4, mlp_ratio=4.0, levels=[1, 2, 3],
                                max_frames=300),
    # the passt-test preset's 16 kHz front end; levels before the final LayerNorm only
    "16k-prenorm": PaSSTConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, fmax=7500.0,
                               embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, levels=[1, 2], max_frames=200),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_passt_equals_hear21passt(name):
    torch.set_num_threads(1)
    cfg = CONFIGS[name]
    ref, ours = R.hade_pair(cfg)
    torch.manual_seed(3)
    x = torch.randn(2, int(1.7 * cfg.sample_rate)) * 0.3
    with torch.no_grad():
        blocks, normed, clip = R.block_outputs(ref, x)
        feats = ours(x)
        torch.testing.assert_close(ours.mel(x)[:, 0], ref.mel(x), atol=1e-4, rtol=0)
    assert len(feats.stages) == len(cfg.levels)
    for level, tokens in zip(cfg.levels, feats.stages):
        expected = normed if level == cfg.depth else blocks[level - 1]
        torch.testing.assert_close(tokens, expected[:, 2:], atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.pooled, clip, atol=1e-4, rtol=0)
    # the grid is the reference's patch grid: frequency rows x time columns, row-major
    f, t = feats.grids[0]
    assert f * t == blocks[0].shape[1] - 2 and f == cfg.freq_patches


def test_key_map_reports_classifier_as_skipped_and_loads_wrapper_keys():
    from hade.models.convert_audio import map_audio_state_dict

    cfg = CONFIGS["16k-prenorm"]
    ref = R.build_reference(cfg)
    wrapped = {f"net.{k}": v for k, v in ref.net.state_dict().items()}
    mapped, report = map_audio_state_dict(wrapped, "passt")
    assert set(report.skipped) == {k for k in wrapped if k.startswith(("net.head.", "net.head_dist."))}
    assert not report.unexpected
    assert "blocks.2.attn.qkv.weight" in mapped and "time_new_pos_embed" in mapped
