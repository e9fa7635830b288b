import math

import pytest
import torch

from hade.losses import ClipPairs, nt_xent, nt_xent_partial


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


def test_same_clip_captions_are_not_negatives_in_exclude_mode():
    s = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    masked = nt_xent(s, 0.1, clip_ids=torch.tensor([7, 7, 3]), same_clip="exclude")
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


def test_same_clip_pairs_are_positives_averaged_over_all_positive_pairs():
    """Hand computation of the DCASE 2025 baseline's form: the mean over all positive pairs (i, j) of
    -log P(a_j|t_i) and of -log P(t_i|a_j), both softmaxes over the whole batch; summed over directions."""
    s = torch.tensor([[1.0, 0.6, 0.0], [0.4, 0.8, 0.2], [0.1, 0.3, 0.9]], dtype=torch.float64)
    tau = 0.5
    positives = [(0, 0), (1, 1), (2, 2), (0, 1), (1, 0)]  # captions 0 and 1 describe one clip

    def log_p_row(i, j):  # log P(audio j | text i)
        return s[i, j] / tau - torch.logsumexp(s[i] / tau, 0)

    def log_p_col(i, j):  # log P(text i | audio j)
        return s[i, j] / tau - torch.logsumexp(s[:, j] / tau, 0)

    expected = -(sum(log_p_row(i, j) for i, j in positives) + sum(log_p_col(i, j) for i, j in positives)) / 5
    got = nt_xent(s, tau, clip_ids=torch.tensor([4, 4, 9]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # not the single-positive loss, and not the exclude mode
    assert got.item() != pytest.approx(nt_xent(s, tau).item(), rel=1e-3)
    assert got.item() != pytest.approx(nt_xent(s, tau, torch.tensor([4, 4, 9]), "exclude").item(), rel=1e-3)


def test_without_duplicates_the_multi_positive_loss_is_bit_identical_to_the_single_positive_one():
    torch.manual_seed(0)
    s = torch.randn(7, 7)
    ids = torch.tensor([3, 1, 4, 15, 9, 2, 6])
    single = nt_xent(s, 0.07)
    assert torch.equal(nt_xent(s, 0.07, ids), single)
    assert torch.equal(nt_xent(s, 0.07, ids, "exclude"), single)


def test_multi_positive_shares_of_several_processes_sum_to_the_full_loss():
    torch.manual_seed(1)
    s = torch.randn(6, 6, dtype=torch.float64)
    ids = torch.tensor([0, 1, 0, 2, 1, 0])
    full = nt_xent(s, 0.1, ids)
    shares = [nt_xent_partial(s[a:a + 3], s[:, a:a + 3], 0.1, ids, a) for a in (0, 3)]
    torch.testing.assert_close(sum(shares), full)


def test_a_duplicate_made_a_positive_pulls_its_score_up():
    """The gradient of a same-clip off-diagonal score is negative (raising it lowers the loss) when it is a
    positive, positive (it is pushed down) when it is treated as a negative, and zero when excluded."""
    base = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    ids = torch.tensor([2, 2, 5])
    grads = {}
    for mode, clip_ids in (("positive", ids), ("exclude", ids), ("negative", None)):
        s = base.clone().requires_grad_(True)
        nt_xent(s, 0.1, clip_ids, "positive" if mode == "negative" else mode).backward()
        grads[mode] = s.grad[0, 1].item()
    assert grads["positive"] < 0 < grads["negative"] and grads["exclude"] == 0


def test_clip_pairs_positive_mask_and_bad_mode():
    pairs = ClipPairs(torch.tensor([1, 2, 1]))
    assert pairs.positives(3).tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    assert ClipPairs(torch.tensor([1, 2, 1]), "exclude").positives(3).tolist() == torch.eye(3, dtype=torch.bool).tolist()
    assert ClipPairs().positives(2).tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="same_clip"):
        ClipPairs(None, "soft")
    with pytest.raises(ValueError, match="same_clip"):
        nt_xent(torch.zeros(2, 2), 0.1, torch.tensor([0, 0]), "positives")
