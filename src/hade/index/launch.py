"""A parallel `hade index` job: its shards and how its ranks meet (rank and world size: hade.utils.launch).

`hade index FOLDER --out IDX` started W times — by `torchrun --nproc_per_node W` (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/MASTER_PORT) or by `srun -n W` (SLURM_PROCID, SLURM_STEP_NUM_TASKS or
SLURM_NTASKS, SLURM_LOCALID) — builds shard `rank/W` into `IDX.shards/RANK-of-W`, waits for the other
ranks, and rank 0 merges the shards into IDX (hade.apps.index).

The ranks meet through torch.distributed's key-value store, with no process group: each rank writes its
outcome (a small JSON record) under its own key and waits until every rank has written. env:// when
MASTER_ADDR and MASTER_PORT are set (torchrun always sets them, and its agent hosts the store), else —
plain srun — a file store in the shards folder, which every rank must see anyway (rank 0 reads the other
ranks' shards from it), named after the job and step so that no two runs share one. (A gloo group did
the same job until a rank aborted at exit in CI — gloo's worker threads outliving the interpreter — and
a store is all this exchange needs: no tensors, no threads, nothing unpickled.)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from hade.index.report import BuildReport
from hade.utils.launch import Launch

# Shards can differ widely in size (a folder of long files hashes unevenly), so a rank that finishes
# first may wait hours for the last. A rank that dies is ended by its launcher (torchrun stops the job;
# `srun --kill-on-bad-exit=1`), not by this timeout.
WAIT_TIMEOUT = timedelta(days=7)


def shards_dir(out: str | Path) -> Path:
    """IDX.shards, beside the index IDX: the ranks' shards, kept so that a re-run updates them incrementally."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def shard_dirs(out: str | Path, world_size: int) -> list[Path]:
    """The shard folders IDX.shards/RANK-of-W of a world of W ranks, in rank order."""
    return [shards_dir(out) / f"{r}-of-{world_size}" for r in range(world_size)]


@dataclass(frozen=True)
class RankOutcome:
    """What one rank hands rank 0 at the meeting: its shard's `report`, or the `error` that stopped it
    ("ExceptionType: message"); JSON on the wire (`to_dict` / `from_dict`)."""

    report: BuildReport | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"report": None if self.report is None else self.report.to_dict(), "error": self.error}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "RankOutcome":
        report = raw.get("report")
        return cls(None if report is None else BuildReport.from_dict(report), raw.get("error"))


class Meeting:
    """The ranks of a parallel run meeting once, at the end, to hand rank 0 their outcomes.

    `Meeting(launch, meeting_dir)` connects to the run's store (env:// when MASTER_ADDR/MASTER_PORT are
    set, else a file store in `meeting_dir`, created; a folder every rank sees); `gather(obj)` is every
    rank's JSON-serialisable `obj`, in rank order, on every rank, and the job's barrier; `close()` (or the
    `with` block's end) lets go of the store, and the last rank to let go of a file store removes its file.
    """

    PREFIX = "hade-index/outcome/"
    DONE = "hade-index/read/"

    def __init__(self, launch: Launch, meeting_dir: Path, env: Mapping[str, str] | None = None) -> None:
        from torch.distributed import FileStore, rendezvous

        env = os.environ if env is None else env
        self.launch = launch
        # torchrun's agent store lives across restarts of its workers (--max-restarts): keys per attempt
        self._attempt = f"{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        if "MASTER_ADDR" in env and "MASTER_PORT" in env:
            self._store, _, _ = next(rendezvous("env://", launch.rank, launch.world_size, timeout=WAIT_TIMEOUT))
        else:
            meeting_dir.mkdir(parents=True, exist_ok=True)
            self._store = FileStore(str((meeting_dir / f".rendezvous-{launch.job or 'local'}").resolve()),
                                    launch.world_size)
        self._store.set_timeout(WAIT_TIMEOUT)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order; returns once all ranks have handed theirs in."""
        outcome, done = self.PREFIX + self._attempt, self.DONE + self._attempt
        self._store.set(f"{outcome}{self.launch.rank}", json.dumps(obj))
        keys = [f"{outcome}{r}" for r in range(self.launch.world_size)]
        self._store.wait(keys, WAIT_TIMEOUT)
        out = [json.loads(self._store.get(key)) for key in keys]
        # without torchrun's agent, rank 0 hosts the TCP store: it must outlive every rank's reads
        self._store.set(f"{done}{self.launch.rank}", "1")
        if self.launch.rank == 0:
            self._store.wait([f"{done}{r}" for r in range(self.launch.world_size)], WAIT_TIMEOUT)
        return out

    def gather_outcomes(self, outcome: RankOutcome) -> list[RankOutcome]:
        """Every rank's RankOutcome, in rank order (`gather` of their JSON)."""
        return [RankOutcome.from_dict(raw) for raw in self.gather(outcome.to_dict())]

    def close(self) -> None:
        self._store = None

    def __enter__(self) -> "Meeting":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
