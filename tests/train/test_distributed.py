"""Distributed training (2 gloo processes on CPU) equals single-process training on the global batch;
mixed precision, gradient accumulation and activation checkpointing."""
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hade.config import ModelConfig, TrainConfig
from hade.errors import InputError
from hade.losses import nt_xent, nt_xent_partial
from hade.models.factory import create_model
from hade.train import distributed as ddp
from hade.train.objective import ContrastiveObjective
from hade.train.precision import MixedPrecision

HEADS = [("dp", {}), ("dcr", {"factors": 4}), ("tha+dcr", {"factors": 4, "part_loss_weight": 0.5})]
CAPTIONS = ["a dog barks", "rain falls on a roof", "birds", "a car passes by on a wet street at night",
            "people talk in a crowded hall while music plays", "wind", "a door slams shut twice", "water drips"]
CLIPS = [0, 1, 2, 3, 4, 5, 2, 7]  # pairs 2 and 6 (on different ranks) share a clip: not negatives
TEMPERATURE = 0.07


def no_dropout(config: ModelConfig, head: str = "dp", head_options: dict | None = None) -> ModelConfig:
    text = {**config.text_overrides, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return replace(config, text_overrides=text, head=head, head_options=dict(head_options or {}))


def build(config: ModelConfig):
    """Same weights in every process; HTSAT's bn0 in eval mode (on CPU BatchNorm uses per-rank statistics)."""
    torch.manual_seed(0)
    model = create_model(config)
    model.train()
    model.audio_encoder.bn0.eval()
    return model


def make_batch(start: int = 0, stop: int = 8) -> dict:
    audio = torch.randn(8, 8000, generator=torch.Generator().manual_seed(1)) * 0.1
    return {"audio": audio[start:stop], "caption": CAPTIONS[start:stop],
            "clip_index": torch.tensor(CLIPS[start:stop])}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(config: ModelConfig, out: str, data: str) -> None:
    """One rank under torchrun (this file run as a script): gradients of both heads, then a short run of
    `python -m hade.train` interrupted and resumed."""
    import torch.distributed as dist

    from hade.train.__main__ import main
    from hade.train.trainer import train

    torch.set_num_threads(1)
    ctx = ddp.init_from_env()
    results = {}
    for head, options in HEADS:
        model = build(no_dropout(config, head, options))
        objective = ContrastiveObjective(model, TEMPERATURE, ctx)
        wrapped = ddp.wrap_ddp(objective, ctx)
        b = 8 // ctx.world_size
        losses = wrapped(make_batch(ctx.rank * b, (ctx.rank + 1) * b))
        (losses["loss"] * objective.backward_scale).backward()
        results[head] = {"loss": ddp.reduce_losses(losses, ctx), "grads": grads(model)}
    cfg = TrainConfig(epochs=1, batch_size=8, lr=2e-3, text_lr=2e-3, clip_seconds=1.0, save_every_steps=1000,
                      max_steps=3, model=no_dropout(config), num_workers=1)  # each rank's loader has a worker
    results["runs"] = [train(data, f"{out}.run", cfg, progress=False, stop_after_steps=2).global_step]
    if ctx.rank == 0:
        torch.save(results, out)
    dist.barrier()
    Path(f"{out}.json").write_text(json.dumps({k: v for k, v in cfg.__dict__.items() if k != "model"}
                                              | {"model": config_dict(cfg.model)}))
    assert main(["--data", data, "--out", f"{out}.run", "--config", f"{out}.json", "--quiet"]) == 0


def config_dict(config: ModelConfig) -> dict:
    from hade.config import to_dict

    return to_dict(config)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from hade.data.synthcaps import generate

    out = tmp_path_factory.mktemp("synthcaps")
    generate(out, clips=24, seed=0, sample_rate=8000, duration=1.0, progress=False)
    return out


def test_partial_nt_xent_shares_sum_to_the_full_loss():
    scores = torch.randn(8, 8)
    ids = torch.tensor(CLIPS)
    full = nt_xent(scores, 0.1, ids)
    shares = [nt_xent_partial(scores[s:s + 4], scores[:, s:s + 4], 0.1, ids, s) for s in (0, 4)]
    torch.testing.assert_close(sum(shares), full)
    torch.testing.assert_close(nt_xent_partial(scores, scores, 0.1, ids), full)


def test_two_gloo_processes_equal_single_process(tiny_model_config, synth_dir, tmp_path):

    from hade.train.objective import training_loss

    out = str(tmp_path / "ddp.pt")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), __file__,
           json.dumps(config_dict(tiny_model_config)), out, str(synth_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = torch.load(out, weights_only=False)
    for head, options in HEADS:
        model = build(no_dropout(tiny_model_config, head, options))
        losses = training_loss(model, make_batch(), TEMPERATURE)
        losses["loss"].backward()
        got = results[head]
        assert set(got["loss"]) == set(losses)
        for name, value in losses.items():
            assert got["loss"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), (head, name)
        expected = grads(model)
        assert any(g.abs().sum() > 0 for g in expected.values())
        for name, g in expected.items():
            # float32 summation order differs between the ranks' shares and the one matrix; the multi-positive
            # terms of pairs 2 and 6 (one per rank) add sums whose order differs too: 1.7e-6 seen on a tensor
            # whose largest gradient is 1.4, so allow 5e-6 of the tensor's largest gradient (a wrong share or a
            # missing term is of the order of the gradient itself)
            atol = max(1e-6, 5e-6 * float(g.abs().max()))
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=atol, msg=f"{head} {name}")
    assert results["runs"] == [2]
    run = tmp_path / "ddp.pt.run"
    state = torch.load(run / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert len(state["torch_rng_ranks"]) == 2 and state["progress"]["global_step"] == 3
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history if "step" in h and "loss" in h] == [1, 2, 3]


def test_bf16_autocast_on_cpu_lowers_the_loss(tiny_model_config):
    from hade.errors import InputError
    from hade.train.objective import training_loss

    model = build(no_dropout(tiny_model_config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    device = torch.device("cpu")
    precision = MixedPrecision("bf16", device)
    assert precision.scaler is None and precision.state_dict() is None
    values = []
    for _ in range(4):
        with precision.autocast():
            losses = training_loss(model, make_batch(0, 4), TEMPERATURE)
            assert torch.is_autocast_cpu_enabled()
        optimizer.zero_grad()
        precision.backward(losses["loss"])
        precision.step(optimizer, model.parameters(), grad_clip=2.0)
        values.append(float(losses["loss"]))
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < values[0]
    with pytest.raises(InputError, match="fp16 training needs a CUDA device"):
        MixedPrecision("fp16", device)
    with pytest.raises(InputError, match="precision: expected one of"):
        MixedPrecision("fp64", device)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_config):
    from hade.train.objective import training_loss

    config = no_dropout(tiny_model_config, "dcr", {"factors": 4})
    reference = build(config)
    training_loss(reference, make_batch(0, 4), TEMPERATURE)["loss"].backward()
    model = build(config)
    ddp.enable_grad_checkpointing(model)
    assert all(layer.use_checkpoint for layer in model.audio_encoder.layers)
    assert model.text_encoder.bert.is_gradient_checkpointing
    training_loss(model, make_batch(0, 4), TEMPERATURE)["loss"].backward()
    for name, g in grads(reference).items():
        torch.testing.assert_close(grads(model)[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_trainer_accumulation_and_bf16(tiny_model_config, synth_dir, tmp_path, monkeypatch):
    """grad_accum_steps=2 back-propagates the mean of the two micro-batch losses (negatives and BatchNorm
    statistics from each micro-batch): the same gradient as one step whose loss is that mean."""
    import hade.train.objective as objective_mod
    import hade.train.trainer as trainer_mod

    seen: list[list[torch.Tensor]] = []

    def spy(parameters, max_norm, *a, **kw):
        parameters = list(parameters)
        seen.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in parameters])
        return original_clip(parameters, max_norm, *a, **kw)

    original_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=2e-3, text_lr=2e-3, clip_seconds=1.0, save_every_steps=1000,
                      max_steps=1, model=no_dropout(tiny_model_config), grad_accum_steps=2)
    trainer_mod.train(synth_dir, tmp_path / "accum", cfg, progress=False)
    original = objective_mod.training_loss

    def halves(model, batch, temperature, ctx=None, same_clip="positive"):
        parts = [original(model, {k: v[s:s + 4] for k, v in batch.items()}, temperature, ctx, same_clip)
                 for s in (0, 4)]
        return {k: (parts[0][k] + parts[1][k]) / 2 for k in parts[0]}

    monkeypatch.setattr(objective_mod, "training_loss", halves)
    trainer_mod.train(synth_dir, tmp_path / "plain", replace(cfg, grad_accum_steps=1), progress=False)
    assert len(seen) == 2
    for a, b in zip(*seen):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(objective_mod, "training_loss", original)
    summary = trainer_mod.train(synth_dir, tmp_path / "bf16", replace(cfg, grad_accum_steps=1, precision="bf16",
                                                                     grad_checkpointing=True),
                                progress=False)
    assert summary.global_step == 1
    history = json.loads((tmp_path / "bf16" / "metrics.json").read_text())["history"]
    assert all(h["loss"] == h["loss"] for h in history if "loss" in h)  # finite, not NaN


if __name__ == "__main__":  # a rank under torchrun, started by test_two_gloo_processes_equal_single_process
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from hade.config import from_dict

    _worker(from_dict(ModelConfig, json.loads(sys.argv[1])), sys.argv[2], sys.argv[3])


SLURM_STEP = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "0",
              "SLURM_JOB_ID": "7"}


def test_srun_without_a_rendezvous_address_is_refused(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SLURM_STEP.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match="MASTER_ADDR and MASTER_PORT"):
        ddp.init_from_env()
    monkeypatch.delenv("SLURM_STEP_ID")  # the sbatch script itself, not an srun step: one process
    assert ddp.init_from_env() == ddp.DistContext()


def test_two_srun_tasks_join_one_group(tmp_path):
    """Ranks from Slurm's variables (no torchrun), the rendezvous from MASTER_ADDR / MASTER_PORT."""
    script = ("import json, torch, torch.distributed as dist\n"
              "from hade.train import distributed as ddp\n"
              "ctx = ddp.init_from_env()\n"
              "t = torch.tensor([ctx.rank + 1.0])\n"
              "dist.all_reduce(t)\n"
              "print(json.dumps([ctx.rank, ctx.world_size, ctx.local_rank, t.item()]))\n"
              "dist.destroy_process_group()\n")
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base |= {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HADE_DIST_BACKEND": "gloo",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
             "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                            os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=base | SLURM_STEP | {"SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)})
             for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert sorted(json.loads(out.strip().splitlines()[-1]) for out, _ in outs) == [[0, 2, 0, 3.0], [1, 2, 1, 3.0]]
