"""Where this process stands in a parallel job: rank, world size and local rank from torchrun or Slurm.

One reading of the launchers' environment for every parallel command (`hade index`, training):
torchrun's RANK / WORLD_SIZE / LOCAL_RANK (MASTER_ADDR / MASTER_PORT for the rendezvous), else, inside an
`srun` step, Slurm's SLURM_PROCID / SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) / SLURM_LOCALID. torchrun's
variables win over Slurm's (`srun torchrun ...` is a torchrun job).

Slurm is recognised only inside a job step (SLURM_STEP_ID set, i.e. under srun): an sbatch script itself
also carries SLURM_PROCID=0 and SLURM_NTASKS=W, and a command run there directly is one process, not rank
0 of W that would wait forever for ranks that never start.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from hade.errors import InputError


@dataclass(frozen=True)
class Launch:
    """This process's rank among `world_size` (1: an ordinary single-process run) and who started it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"  # "torchrun", "slurm" or "single"
    job: str = ""  # Slurm job.step, names the file rendezvous

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> str:
        """The `--shard i/N` this rank builds."""
        return f"{self.rank}/{self.world_size}"


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise InputError(f"environment variable {name}={env[name]!r}: expected an integer") from None


def detect_launch(env: Mapping[str, str] | None = None) -> Launch:
    """The Launch described by `env` (default os.environ): torchrun's RANK/WORLD_SIZE/LOCAL_RANK, else
    Slurm's SLURM_PROCID/SLURM_STEP_NUM_TASKS (or SLURM_NTASKS)/SLURM_LOCALID inside an srun step, else
    a single process."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        launch = Launch(_int(env, "RANK"), _int(env, "WORLD_SIZE"),
                        _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0, "torchrun")
    elif "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        world = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        if world not in env:
            return Launch()
        step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", ""))
        launch = Launch(_int(env, "SLURM_PROCID"), _int(env, world),
                        _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0, "slurm",
                        f"{env.get('SLURM_JOB_ID', env.get('SLURM_JOBID', 'job'))}.{step}")
    else:
        return Launch()
    if launch.world_size < 1 or not 0 <= launch.rank < launch.world_size or launch.local_rank < 0:
        raise InputError(f"{launch.launcher}: rank {launch.rank} of world size {launch.world_size} (local rank "
                         f"{launch.local_rank}): expected 0 <= rank < world size")
    return launch if launch.parallel else Launch()


def rank_device(device: str, launch: Launch, visible_gpus: int | None = None) -> str:
    """`--device cuda` of a parallel run: cuda:LOCAL_RANK, one GPU per rank of a node; modulo the GPUs this
    process sees (`visible_gpus`, default torch.cuda.device_count()), since `srun --gpus-per-task 1` shows
    each task only its own GPU, as cuda:0. Other devices (cpu, an explicit cuda:N) as given."""
    if not (launch.parallel and device == "cuda"):
        return device
    if visible_gpus is None:
        import torch

        visible_gpus = torch.cuda.device_count()
    return f"cuda:{launch.local_rank % visible_gpus if visible_gpus > 0 else launch.local_rank}"
