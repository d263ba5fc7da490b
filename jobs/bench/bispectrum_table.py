#!/usr/bin/env python
"""The bispectrum criteria of the per-bin model card from `halopaint spectra --format json` outputs.

    python jobs/bench/bispectrum_table.py STATS_DIR [STATS_DIR ...]

Each STATS_DIR is `halopaint spectra R.h5 --reference TRUE.h5 --density TRUE.h5 --bispectrum 0.2,0.3
--bispectrum 0.6,0.7 --format json --out STATS_DIR` of one realization (R: `halopaint sample` output or a
painted field). Per selection (sum, bin0…) and configuration (k1, k2) [h/Mpc] it prints, over θ, the
largest |B_pred/B_ref − 1| (mean over the given directories), and the same for the linear-bias 2LPT
baseline b³·B_2LPT (b: the spectra's shot-noise-corrected bias fit at k < 0.1 h/Mpc), and whether the
prediction is within 20 % and closer than the baseline (the issue's bar). Shot noise is not subtracted
from either halo bispectrum (as for T(k)).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def rows(stats_dir: Path) -> dict:
    s = json.loads((stats_dir / "spectra.json").read_text())
    out = {}
    for sel, configs in s["bispectrum"].items():
        bias = s["power"][sel]["attrs"].get("bias")
        for name, c in configs.items():
            key = (sel, float(c["attrs"]["k1"]), float(c["attrs"]["k2"]))
            ref = np.asarray(c["B_ref"])
            pred_dev = np.abs(np.asarray(c["B_pred"]) / ref - 1)
            base_dev = np.abs(bias**3 * np.asarray(c["B_lpt"]) / ref - 1) if bias else np.full(ref.shape, np.nan)
            out[key] = (float(pred_dev.max()), float(base_dev.max()), float(pred_dev.mean()), float(base_dev.mean()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    per_dir = [rows(d) for d in args.dirs]
    print(f"{len(per_dir)} realization(s); |B/B_ref − 1| over θ: max (mean)")
    print("| selection | (k1, k2) h/Mpc | prediction | 2LPT baseline | within 20 % and better |")
    print("|---|---|---|---|---|")
    for key in per_dir[0]:
        v = np.mean([d[key] for d in per_dir], axis=0)
        ok = v[0] <= 0.2 and v[0] < v[1]
        print(f"| {key[0]} | ({key[1]:g}, {key[2]:g}) | {v[0]:.3f} ({v[2]:.3f}) | {v[1]:.3f} ({v[3]:.3f}) | "
              f"{'yes' if ok else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
