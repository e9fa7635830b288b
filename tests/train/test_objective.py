"""The training objective (one loss path with or without DDP) and the precision module, in one process."""
import pytest
import torch

from hade.config import ModelConfig
from hade.errors import InputError
from hade.losses import nt_xent
from hade.models.factory import create_model
from hade.train.objective import ContrastiveObjective, training_loss
from hade.train.precision import MixedPrecision

CAPTIONS = ["a dog barks", "rain falls on a roof", "birds sing", "a car passes by", "wind", "a door slams"]


def _batch() -> dict:
    audio = torch.randn(6, 8000, generator=torch.Generator().manual_seed(3)) * 0.1
    return {"audio": audio, "caption": CAPTIONS, "clip_index": torch.tensor([0, 1, 2, 3, 4, 1])}


@pytest.mark.parametrize("head,options", [("dp", {}), ("dcr", {"factors": 4})])
def test_one_process_loss_is_nt_xent_of_the_batch_plus_aux(tiny_model_config: ModelConfig, head, options):
    """World size 1: the gather is the identity and rows = columns, so the share is the whole loss."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(**{**tiny_model_config.__dict__, "head": head, "head_options": options}))
    model.eval()  # no dropout: both computations see the same features
    batch = _batch()
    objective = ContrastiveObjective(model, 0.05)
    with torch.no_grad():
        got = objective(batch)
        text, audio = model.encode_text(batch["caption"]), model.encode_audio(batch["audio"])
        scores = model.head.contrastive_scores(text, audio)
        expected = {f"nt_xent{k}": w * nt_xent(s, 0.05, batch["clip_index"]) for k, (s, w) in scores.items()}
        expected.update(model.head.aux_losses(text, audio))
    assert objective.backward_scale == 1 and set(got) == set(expected) | {"loss"}
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, msg=name)
    torch.testing.assert_close(got["loss"], sum(expected.values()))
    # the temperature belongs to the loss: another one changes the contrastive term
    with torch.no_grad():
        assert float(training_loss(model, batch, 0.5)["nt_xent"]) != pytest.approx(float(got["nt_xent"]))


@pytest.mark.parametrize("bad", [0, -0.1, "0.07", True, float("nan")])
def test_objective_rejects_a_bad_temperature(tiny_model_config, bad):
    model = create_model(tiny_model_config)
    with pytest.raises(InputError, match="temperature: expected a number > 0"):
        ContrastiveObjective(model, bad)


def test_scaler_path_steps_unscales_and_round_trips_its_state():
    """The fp16 path (CUDA only in training) exercised on CPU with a CPU GradScaler: the loss is scaled for
    backward, the gradient is unscaled before clipping and the step, and the scale is saved and restored."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    precision = MixedPrecision("bf16", torch.device("cpu"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(8, 4)
    reference = torch.nn.Linear(4, 1)
    reference.load_state_dict(layer.state_dict())
    precision.backward(layer(x).pow(2).mean())
    assert layer.weight.grad.abs().sum() > 0
    reference_loss = reference(x).pow(2).mean()
    reference_loss.backward()
    torch.testing.assert_close(layer.weight.grad, 1024.0 * reference.weight.grad)  # scaled for backward
    precision.step(optimizer, layer.parameters(), grad_clip=None)
    expected = reference.weight.detach() - 0.1 * reference.weight.grad  # the step used the unscaled gradient
    torch.testing.assert_close(layer.weight.detach(), expected)
    state = precision.state_dict()
    assert state is not None and state["scale"] == 1024.0
    other = MixedPrecision("bf16", torch.device("cpu"))
    other.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    other.load_state_dict(state)
    assert other.scaler.get_scale() == 1024.0
    assert MixedPrecision("fp32", torch.device("cpu")).state_dict() is None


@pytest.mark.parametrize("head", ["hci", "diffatr"])
def test_every_loss_term_sees_the_same_clip_positives(tiny_model_config: ModelConfig, head):
    """A batch with two captions of clip 1: the head's auxiliary losses (HCI's level NT-Xents, DiffATR's
    generation target) get the same positives as the main NT-Xent, and differ from the single-positive ones."""
    from hade.losses import ClipPairs

    torch.manual_seed(0)
    model = create_model(ModelConfig(**{**tiny_model_config.__dict__, "head": head}))
    model.eval()
    if head == "diffatr":
        model.head.score_mode = "cosine"
    batch = _batch()
    ids = batch["clip_index"]
    with torch.no_grad():
        got = training_loss(model, batch, 0.05)
        text, audio = model.encode_text(batch["caption"]), model.encode_audio(batch["audio"])
        with_pairs = model.head.aux_losses(text, audio, ClipPairs(ids))
        single = model.head.aux_losses(text, audio)
        excluded = training_loss(model, batch, 0.05, same_clip="exclude")
    assert with_pairs and set(with_pairs) <= set(got)
    for name, value in with_pairs.items():
        torch.testing.assert_close(got[name], value, msg=name)
        assert float(value) != pytest.approx(float(single[name]), rel=1e-6), name
    torch.testing.assert_close(got["nt_xent"], nt_xent(model.score(text, audio), 0.05, ids))
    assert float(excluded["nt_xent"]) != pytest.approx(float(got["nt_xent"]), rel=1e-6)


def test_objective_rejects_an_unknown_same_clip_mode(tiny_model_config):
    with pytest.raises(InputError, match="same_clip.*'soft'"):
        ContrastiveObjective(create_model(tiny_model_config), 0.07, same_clip="soft")
