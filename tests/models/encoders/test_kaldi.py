"""Kaldi mel banks and fbank in torch ops against torchaudio's compliance/kaldi.py (the reference wheel the
Makefile installs test-only; skipped without it), plus properties that need no reference."""
import pytest
import torch
from _scripts import load_script

from hade.models.encoders.kaldi import fbank, mel_banks


KALDI = load_script("benchmarks/_reference_shims.py").load_kaldi()
needs_reference = pytest.mark.skipif(KALDI is None, reason="torchaudio reference wheel not installed")


def test_mel_banks_are_triangles_on_the_mel_scale():
    banks = mel_banks(16, 512, 16000, 0.0, 8000.0)
    assert banks.shape == (16, 257)
    assert float(banks.min()) == 0.0 and float(banks.max()) <= 1.0
    assert torch.all(banks[:, -1] == 0)  # Kaldi's banks leave out the Nyquist bin
    peaks = banks.argmax(1)
    assert torch.all(peaks[1:] > peaks[:-1])


@needs_reference
@pytest.mark.parametrize("args", [(128, 1024, 32000, 0.0, 15000.0), (128, 512, 16000, 20.0, 0.0),
                                  (64, 400, 16000, 50.0, 7000.0)])
def test_mel_banks_equal_torchaudio(args):
    n, n_fft, sr, low, high = args
    ref, _ = KALDI.get_mel_banks(n, n_fft, float(sr), low, high, 100.0, -500.0, 1.0)
    # the reference computes in float32, hade in float64 (then rounds): edges differ by float32 rounding
    torch.testing.assert_close(mel_banks(n, n_fft, sr, low, high)[:, :-1], ref, atol=5e-5, rtol=0)


@needs_reference
def test_fbank_equals_torchaudio_kaldi_fbank():
    torch.manual_seed(0)
    wave = torch.randn(2, 8000) * 3000
    ours = fbank(wave, 16000, num_mel_bins=128)
    for b in range(2):
        ref = KALDI.fbank(wave[b:b + 1], num_mel_bins=128, sample_frequency=16000, frame_length=25,
                          frame_shift=10, dither=0.0)
        # log energies of about 10; the narrow lowest bins amplify float32 rounding of the banks
        torch.testing.assert_close(ours[b], ref, atol=1e-4, rtol=1e-4)
