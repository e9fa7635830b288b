"""Clips longer than the audio encoder's input: segments, their clip vectors averaged over those holding
audio (the DCASE 2025 baseline's rule), their tokens concatenated in time."""
import pytest
import torch
import torch.nn.functional as F

import hade
from hade.config import ModelConfig
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.eval.evaluate import encode_split
from hade.models.segments import encode_segments, segment_count, segments_with_audio


@pytest.fixture(scope="module")
def model(tiny_model_config):
    torch.manual_seed(0)
    config = ModelConfig(**{**tiny_model_config.__dict__, "head": "dp", "head_options": {"projection": "linear"}})
    return hade.create_model(config).eval()


def test_segment_count_and_the_segments_that_hold_audio():
    assert [segment_count(n, 10) for n in (1, 10, 11, 20, 21, 30)] == [1, 1, 2, 2, 3, 3]
    w = segments_with_audio(torch.tensor([0, 10, 11, 25, 99]), 5, 3, 10, torch.device("cpu"))
    assert w.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    assert segments_with_audio(None, 2, 3, 10, torch.device("cpu")).tolist() == [[1, 1, 1]] * 2
    with pytest.raises(ValueError, match="2 lengths for 3 clips"):
        segments_with_audio(torch.tensor([1, 2]), 3, 3, 10, torch.device("cpu"))


@torch.no_grad()
def test_features_are_the_segments_mean_and_their_tokens_in_time(model):
    enc, m = model.audio_encoder, model.max_samples
    wave = torch.randn(2, 3 * m - 100, generator=torch.Generator().manual_seed(1))
    got = encode_segments(enc, wave, m, lengths=torch.tensor([m + 1, 3 * m - 100]))
    padded = F.pad(wave, (0, 100))
    parts = [enc(padded[:, k * m:(k + 1) * m]) for k in range(3)]
    torch.testing.assert_close(got.pooled[0], (parts[0].pooled[0] + parts[1].pooled[0]) / 2)  # 2 segments hold audio
    torch.testing.assert_close(got.pooled[1], sum(p.pooled[1] for p in parts) / 3)
    seconds = m / enc.config.sample_rate
    for level, part_tokens in enumerate(zip(*(p.stages for p in parts))):
        torch.testing.assert_close(got.stages[level], torch.cat(part_tokens, dim=1))
        h, w = parts[0].grids[level]
        assert got.grids[level] == (3 * h, w)
        t = parts[0].token_seconds[level]
        torch.testing.assert_close(got.token_seconds[level], torch.cat([t, t + seconds, t + 2 * seconds]))


@torch.no_grad()
def test_a_clip_that_fits_one_segment_keeps_that_segments_vector(model):
    """Zero-padding a short clip to three segments does not change its clip vector: only the first holds audio."""
    m = model.max_samples
    wave = torch.randn(1, m - 7, generator=torch.Generator().manual_seed(2))
    one = model.encode_audio(F.pad(wave, (0, 7)))
    three = model.encode_audio(F.pad(wave, (0, 2 * m + 7)), lengths=torch.tensor([m - 7]))
    torch.testing.assert_close(three["embed"], one["embed"])
    all_three = model.encode_audio(F.pad(wave, (0, 2 * m + 7)))  # without lengths every segment counts
    assert not torch.allclose(all_three["embed"], one["embed"], atol=1e-4)


@pytest.mark.parametrize("head", ["tha+dcr", "hci", "coatt-stacked", "diffatr"])
@torch.no_grad()
def test_every_kind_of_head_scores_segmented_clips(tiny_model_config, head):
    torch.manual_seed(0)
    model = hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "head": head})).eval()
    m = model.max_samples
    audio = model.encode_audio(torch.randn(3, 2 * m + 5), lengths=torch.tensor([m // 2, m + 1, 2 * m + 5]))
    scores = model.score(model.encode_text(["a dog barks", "rain falls"]), audio)
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()


def test_evaluation_beyond_the_encoder_averages_the_segments_of_each_clip(model, tmp_path):
    """`hade eval --clip-seconds` longer than the encoder's input: each clip's vector is the DCASE 2025
    baseline's normalize(Linear(mean of the segments' pooled vectors)), not its first segment's."""
    generate(tmp_path, clips=4, seed=0, sample_rate=8000, duration=3.0, progress=False)  # 2 of 3 segments hold audio
    split = read_split(tmp_path, "evaluation")
    m, sr = model.max_samples, model.sample_rate
    encoded = encode_split(model, split, 3 * m / sr, progress=False)
    first = encode_split(model, split, m / sr, progress=False)
    assert not torch.allclose(encoded.audio["embed"], first.audio["embed"], atol=1e-4)
    from hade.data.audio import fit_length, load_audio

    counts = []
    for row, clip in enumerate(split.clips):
        wave = load_audio(clip.audio_path, sr)
        used = segment_count(min(len(wave), 3 * m), m)
        counts.append(used)
        x = torch.from_numpy(fit_length(wave, 3 * m, mode="start"))[None]
        with torch.no_grad():
            pooled = torch.stack([model.audio_encoder(x[:, k * m:(k + 1) * m]).pooled[0] for k in range(used)]).mean(0)
            expected = F.normalize(model.head.audio_proj(pooled), dim=-1)
        torch.testing.assert_close(encoded.audio["embed"][row], expected, rtol=1e-4, atol=1e-5)
    assert counts == [2] * len(split.clips)


@pytest.mark.parametrize("encoder", ["passt-test", "beats-test"])
@torch.no_grad()
def test_time_steps_of_a_vit_encoder_follow_the_segments(tiny_model_config, encoder):
    """HCI's frames are the token times: a 3-segment clip has three times one segment's frames, in time order."""
    torch.manual_seed(0)
    model = hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "audio_encoder": encoder,
                                             "head": "hci"})).eval()
    m = model.max_samples
    one = model.encode_audio(torch.randn(1, m))["hci_frames"].shape[1]
    three = model.encode_audio(torch.randn(1, 3 * m))["hci_frames"].shape[1]
    assert three == 3 * one
    seconds = encode_segments(model.audio_encoder, torch.randn(1, 3 * m), m).token_seconds[-1][:, 0]
    assert seconds.max() >= 2 * m / model.sample_rate and seconds.min() == 0
