import math

import pytest
import torch

from hade.losses import nt_xent


def test_nt_xent_matches_hand_computation():
    s = torch.tensor([[0.9, 0.1], [0.3, 0.5]])
    tau = 0.5
    e = lambda x: math.exp(x / tau)  # noqa: E731
    row = math.log(e(0.9) / (e(0.9) + e(0.1))) + math.log(e(0.5) / (e(0.3) + e(0.5)))
    col = math.log(e(0.9) / (e(0.9) + e(0.3))) + math.log(e(0.5) / (e(0.1) + e(0.5)))
    expected = -(row + col) / 2  # eq. (5): both directions summed, divided by B
    assert nt_xent(s, tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_not_symmetric_in_its_directions_by_accident():
    # Transposing the matrix swaps the directions; the loss (a sum of both) must be unchanged.
    s = torch.randn(5, 5)
    assert nt_xent(s, 0.07).item() == pytest.approx(nt_xent(s.T, 0.07).item(), rel=1e-6)


def test_same_clip_captions_are_not_negatives():
    s = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    masked = nt_xent(s, 0.1, clip_ids=torch.tensor([7, 7, 3]))
    unmasked = nt_xent(s, 0.1)
    assert masked < unmasked
    # with the duplicate removed, rows/columns 0 and 1 only compete with clip 3's entry
    e = lambda x: math.exp(x / 0.1)  # noqa: E731
    pair = -math.log(e(1.0) / (e(1.0) + e(0.0)))
    third = -math.log(e(1.0) / (2 * e(0.0) + e(1.0)))
    assert masked.item() == pytest.approx((4 * pair + 2 * third) / 3, rel=1e-5)


def test_nt_xent_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        nt_xent(torch.zeros(2, 3), 0.1)
