"""The plot of `hade payoff` (hade.experiments.payoff, which re-exports its names): THA+DCR − DP against
training-set size, from the study's report."""
from __future__ import annotations

from pathlib import Path

from hade.experiments.records import PayoffReport

SIZES = (336, 1000, 3000)  # the study's training-set sizes (clips): the plot's x axis
HEADLINE = (("t2a", "R@1"), ("t2a", "mAP@10"))  # THA+DCR - DP on these: the plot's panels, Holm over all cells


def plot(report: PayoffReport, path: str | Path, row: str = "tha+dcr") -> Path:
    """THA+DCR − DP (T2A R@1 and mAP@10, with 95 % intervals) against training-set size, one line per start;
    the Clotho-like cells at their 336 clips as open markers; a cell with fewer seeds than the others says how
    many beside its marker. Written atomically as a PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(10, 4), constrained_layout=True)
    styles = {"scratch": ("tab:blue", "o"), "pretrained": ("tab:orange", "s")}
    most = max((c.seeds for c in report.cells), default=0)
    for ax, (d, m) in zip(axes, HEADLINE):
        for start, (color, marker) in styles.items():
            for clotho in (False, True):
                pts = sorted(((c.size, c.differences.rows[row][d][m], c.seeds) for c in report.cells
                              if c.start == start and (c.train_set == "clotho") == clotho
                              and c.differences.rows.get(row)), key=lambda p: p[0])
                if not pts:
                    continue
                x = [p[0] * (1.04 if start == "pretrained" else 1.0) * (1.09 if clotho else 1.0) for p in pts]  # side by side
                y = [p[1].diff for p in pts]
                err = [[p[1].diff - p[1].ci[0] for p in pts], [p[1].ci[1] - p[1].diff for p in pts]]
                label = f"{start}{', Clotho-like 10 s' if clotho else ''}"
                ax.errorbar(x, y, yerr=err, color=color, marker=marker, capsize=4, label=label,
                            linestyle=":" if clotho else "-", mfc="white" if clotho else color)
                for xi, yi, p in zip(x, y, pts):
                    if p[2] < most:
                        ax.annotate(f"{p[2]} seed{'s' if p[2] > 1 else ''}", (xi, yi), textcoords="offset points",
                                    xytext=(6, -12), fontsize=7, color=color)
        ax.axhline(0.0, color="grey", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(min(SIZES) / 1.35, max(SIZES) * 1.35)  # room for the side-by-side markers at both ends
        ax.set_xticks(list(SIZES), [str(s) for s in SIZES])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # the log axis's own 4x10^2 ... labels
        ax.set_xlabel("training clips")
        ax.set_ylabel(f"{row.upper()} − DP, {d.upper()} {m} (points)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{row.upper()} − DP with 95 % paired-bootstrap intervals (seeds pooled per query)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
