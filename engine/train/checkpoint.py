"""Files next to `--out MODEL`: the atomic checkpoint MODEL.ckpt, the loss log MODEL.log.jsonl and
the loss plot MODEL.losses.png."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from halopaint.fields import atomic_path
from halopaint.model import atomic_torch_save
from halopaint.train.data import TrainingError

CHECKPOINT_FORMAT = "halopaint-train-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainPaths:
    bundle: Path
    checkpoint: Path
    log: Path
    plot: Path

    @classmethod
    def for_output(cls, out: str) -> "TrainPaths":
        p = Path(out)
        return cls(p, p.with_name(p.name + ".ckpt"), p.with_name(p.name + ".log.jsonl"),
                   p.with_name(p.name + ".losses.png"))


def save_checkpoint(payload: dict, path: Path) -> None:
    """Atomic: write a temporary file in the same directory, then rename."""
    atomic_torch_save(payload, path)


def load_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise TrainingError(f"{path}: not a halopaint training checkpoint ({first[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a halopaint training checkpoint (format tag missing)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: unsupported checkpoint version {payload.get('version')}")
    return payload


def _read_log(path: Path, upto_step: int | None = None) -> list[dict]:
    if not path.exists():
        return []
    recs = []
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if upto_step is None or r.get("step", 0) <= upto_step:
                recs.append(r)
    return recs


def _rewrite_log(path: Path, recs: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def plot_losses(log_path: Path, png_path: Path) -> None:
    """Training / validation curves per bin (paper Fig. 7): critic Wasserstein estimate and Poisson NLL."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = [r for r in _read_log(log_path) if r.get("kind") == "eval"]
    if not recs:
        return
    bins = sorted({r["bin"] for r in recs})
    fig, axes = plt.subplots(2, len(bins), figsize=(3.6 * len(bins), 6), squeeze=False)
    for c, b in enumerate(bins):
        rb = [r for r in recs if r["bin"] == b]
        steps = [r["step"] for r in rb]
        for row, key, label in ((0, "w", "Wasserstein estimate"), (1, "nll", "Poisson NLL")):
            ax = axes[row][c]
            plotted = False
            for split, style in (("train", "-"), ("val", "--")):
                vals = [r.get(f"{key}_{split}") for r in rb]
                if any(v is not None for v in vals):
                    ax.plot(steps, [np.nan if v is None else v for v in vals], style,
                            label="training" if split == "train" else "validation")
                    plotted = True
            ax.set_xlabel("generator step")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"mass bin {b}")
            if plotted:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no critic (supervised only)" if key == "w" else "—",
                        ha="center", va="center", transform=ax.transAxes, fontsize=8)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
