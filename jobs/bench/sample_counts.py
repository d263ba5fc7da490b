#!/usr/bin/env python
"""Per-bin count statistics of integer realizations against N-body truth (issue 17's count figures).

    python jobs/bench/sample_counts.py --truth runs/data/sim-9001.h5 [--model default] [--realizations 8]

Paints the truth box's /density whole with the bundle (as `halopaint paint` does), then per mass bin prints
the count variance ratio Var(realization)/Var(N-body) and the P(n ≥ 2) ratio for: the painted expected
values themselves, a Poisson draw around them (`halopaint sample --poisson`), and the bundle's count model
(`halopaint sample`), as mean ± standard deviation over --realizations seeds (0, 1, …). Use a held-out box.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint.calibrate import file_bins_for  # noqa: E402
from halopaint.fields import FieldFile  # noqa: E402
from halopaint.model import ModelBundle  # noqa: E402
from halopaint.paint import paint_whole_box  # noqa: E402
from halopaint.sample import poisson_count_model, sample_counts  # noqa: E402


def ratios(field: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(field.var() / truth.var()), float((field >= 2).mean() / (truth >= 2).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="N-body box (/density, /halos), never used in training")
    ap.add_argument("--model", default="default")
    ap.add_argument("--realizations", type=int, default=8)
    args = ap.parse_args(argv)
    bundle = ModelBundle.load(args.model)
    if bundle.metadata.count_model is None:
        print("the bundle has no count model", file=sys.stderr)
        return 2
    with FieldFile(args.truth, require=("density", "halos")) as f:
        truth = f.read_halos(file_bins_for(bundle, f.info.mass_bin_edges, args.truth))
        painted = paint_whole_box(bundle, f.read_density())
    laws = {"Poisson": poisson_count_model(bundle.n_bins), "count model": bundle.metadata.count_model}
    draws = {name: [sample_counts(painted, s, law) for s in range(args.realizations)] for name, law in laws.items()}
    print(f"{args.truth}, {args.model}, {args.realizations} realizations (seeds 0..{args.realizations - 1})")
    print("| bin | N-body var | N-body P(n≥2) | painted: var ratio, P(≥2) ratio | Poisson draw | count model |")
    print("|---|---|---|---|---|---|")
    for b in range(bundle.n_bins):
        t = truth[b]
        cells = [f"{t.var():.4g}", f"{(t >= 2).mean():.3g}"]
        v, p = ratios(painted[b], t)
        cells.append(f"{v:.3f}, {p:.3f}")
        for name in laws:
            r = np.array([ratios(d[b], t) for d in draws[name]])
            m, s = r.mean(axis=0), r.std(axis=0)
            cells.append(f"{m[0]:.3f} ± {s[0]:.3f}, {m[1]:.3f} ± {s[1]:.3f}")
        print(f"| {b} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
