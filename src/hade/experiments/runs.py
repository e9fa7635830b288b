"""One run's folder as the workers of `hade ablate` and `hade payoff` share it: its lock (`run_lock`: one
worker trains a run, the others do their other runs first) and where it stands (`run_state`, printed by
`--status` through `format_run_states`)."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from hade.errors import InputError


class RunBusy(InputError):
    """Another worker holds the run's lock."""


@contextlib.contextmanager
def run_lock(run_dir: Path, block: bool = False):
    """Exclusive lock on `run_dir` for this process (released when it ends, even when killed); RunBusy
    when another process holds it, unless `block` (then wait for it)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunBusy(f"{run_dir}: another worker is training this run; give this worker other "
                          f"--rows or wait for it") from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RunState:
    """Where one run stands: `state` is "finished" (its eval.json is written), "training" (a worker holds its
    lock), "interrupted" (started, no worker on it: the next worker resumes it) or "pending"; `epochs_done`
    counts its finished training epochs (metrics.json)."""

    state: str
    epochs_done: int = 0


def _locked(run_dir: Path) -> bool:
    """Whether a worker holds `run_dir`'s lock (tried without waiting and let go at once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, nothing to ask
        return False
    if not (run_dir / ".lock").is_file():
        return False
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing lets go of a lock this call took


def run_state(run_dir: Path) -> RunState:
    """The RunState of the run in `run_dir` (read-only but for the instant its lock is tried)."""
    if (run_dir / "eval.json").is_file():
        return RunState("finished")
    try:
        history = json.loads((run_dir / "metrics.json").read_text()).get("history", [])
        epochs = sum(1 for record in history if "epoch_end" in record)
    except (OSError, ValueError, AttributeError):
        epochs = 0
    if _locked(run_dir):
        return RunState("training", epochs)
    started = epochs > 0 or (run_dir / "checkpoints").is_dir()
    return RunState("interrupted" if started else "pending", epochs)


def format_run_states(groups: dict[str, list[tuple[int, RunState]]], epochs: int) -> str:
    """One line per group (a row, or a cell and head): each seed's state, training and interrupted runs with
    their epochs out of `epochs`; then the counts."""
    width = max((len(name) for name in groups), default=4) + 2
    lines, counts = [], {}
    for name, seeds in groups.items():
        told = []
        for seed, state in seeds:
            counts[state.state] = counts.get(state.state, 0) + 1
            running = state.state in ("training", "interrupted")
            told.append(f"seed {seed} {state.state}" + (f" ({state.epochs_done}/{epochs} epochs)" if running else ""))
        lines.append(f"{name:<{width}}" + ", ".join(told))
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {sum(counts.values())} runs")
    return "\n".join(lines)
