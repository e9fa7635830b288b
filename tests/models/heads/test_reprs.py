import torch

from hade.models.heads.reprs import cat_reprs, index_reprs, slice_reprs


def test_cat_pads_token_tensors_and_masks():
    a = {"tokens": torch.ones(2, 3, 4), "mask": torch.ones(2, 3, dtype=torch.bool), "embed": torch.ones(2, 4)}
    b = {"tokens": torch.ones(1, 5, 4), "mask": torch.ones(1, 5, dtype=torch.bool), "embed": torch.ones(1, 4)}
    out = cat_reprs([a, b])
    assert out["tokens"].shape == (3, 5, 4)
    assert out["mask"].dtype == torch.bool
    assert out["mask"].sum().item() == 2 * 3 + 5
    assert out["tokens"][0, 3:].abs().sum() == 0
    assert slice_reprs(out, 1, 3)["embed"].shape == (2, 4)
    assert index_reprs(out, torch.tensor([2]))["mask"][0].all()
