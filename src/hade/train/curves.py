"""Training-curve figure (loss per step, validation R@1 at each validation: per epoch or every N steps)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hade.utils.atomic import atomic_path


def plot_curves(history: list[dict[str, Any]], target: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history if "loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    validations = [h for h in history if "val" in h]  # epoch ends and step validations, in step order
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(steps, losses, lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    if validations:
        xs = [h["step"] for h in validations]
        ax_val.plot(xs, [h["val"]["t2a"]["R@1"] for h in validations], "o-", label="T2A R@1")
        ax_val.plot(xs, [h["val"]["a2t"]["R@1"] for h in validations], "s-", label="A2T R@1")
        ax_val.plot(xs, [h["val"]["chance"]["t2a"]["R@1"] for h in validations], "k--", lw=0.8,
                    label="chance T2A R@1")
        ax_val.legend()
    ax_val.set(xlabel="step", ylabel="%", title="validation")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
