"""Training records: the metrics JSON and the PNG curves written after every epoch."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["write_metrics", "plot_curves"]


def write_metrics(path: Path, record: dict) -> None:
    """Write ``record`` as JSON atomically (a crash never leaves a half-written file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False))
    os.replace(tmp, path)


def plot_curves(path: Path, history: list[dict], title: str) -> None:
    """One panel per numeric metric of ``history`` (a list of per-epoch dicts) against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"epoch", "step", "samples", "time_s"}
    keys = [k for k in history[0] if k not in skip and isinstance(history[0][k], (int, float))]
    if not keys:
        return
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", ms=3)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        if key == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
