#!/usr/bin/env python
"""Held-out quality of the per-redshift models: paint the held-out N-body box at each z with the model of
that z (`--models DIR/default_model_z{z}.pt`; "default" = the shipped one `--model default` picks) and, for
comparison, with the z = 0 model (--allow-mismatch), then the per-bin statistics of the model card.

    python jobs/bench/z_models.py [--redshifts 0.5 1.0] [--seed 9001] [--models runs/zmodels|default]

Prints, per z, model and selection (sum, bin0..3): painted/true halo count, max|T−1| for 0.05 ≤ k ≤ 0.2
h/Mpc (T = √(P_pred/P_true), no shot-noise subtraction), r_c at the bin nearest 0.1 h/Mpc against the
linear-bias 2LPT baseline's, and s/s_baseline in the three k-bins below 0.1 h/Mpc. Held-out boxes are
`halopaint simulate --grid 64 --box 256 --seed SEED --redshift Z` (made if missing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def halopaint(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "halopaint.cli", *args], check=True)


def statistics(painted: Path, truth: Path, out: Path) -> dict:
    from halopaint.analysis.report import run
    from halopaint.config import SpectraConfig
    if not (out / "spectra.h5").exists():
        run(SpectraConfig(predicted=str(painted), reference=str(truth), density=str(truth), out=str(out),
                          figures=False, progress=False, bispectrum_configs=()))
    rows = {}
    with h5py.File(out / "spectra.h5") as f:
        for name in ["sum", *sorted(k for k in f["power"] if k.startswith("bin"))]:
            g = f[f"power/{name}"]
            k, T = g["k"][...], g["T"][...]
            band = (k >= 0.05) & (k <= 0.2)
            i = int(np.argmin(np.abs(k - 0.1)))
            low = np.nonzero(k < 0.1)[0][:3]
            row = {"count_ratio": float(g.attrs["n_halos_pred"] / g.attrs["n_halos_ref"]),
                   "max_T_minus_1": float(np.max(np.abs(T[band] - 1))), "k_rc": float(k[i]),
                   "r_c": float(g["r_c"][i])}
            if "r_c_lpt" in g:
                row.update(r_c_lpt=float(g["r_c_lpt"][i]),
                           s_over_lpt=[float(v) for v in g["s"][low] / g["s_lpt"][low]])
            rows[name] = row
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redshifts", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--data", default=str(ROOT / "runs" / "dataz"))
    ap.add_argument("--run", default=str(ROOT / "runs" / "zmodels" / "eval"))
    ap.add_argument("--models", default=str(ROOT / "runs" / "zmodels"),
                    help="folder holding default_model_z{z}.pt, or 'default' (the shipped models)")
    args = ap.parse_args(argv)
    run, data = Path(args.run), Path(args.data)
    run.mkdir(parents=True, exist_ok=True)
    results = {}
    for z in args.redshifts:
        truth = data / f"sim-z{z}-{args.seed}.h5"
        if not truth.exists():
            halopaint("simulate", "--quiet", "--grid", "64", "--box", "256", "--seed", str(args.seed),
                      "--redshift", str(z), "--out", str(truth))
        per_z = "default" if args.models == "default" else str(Path(args.models) / f"default_model_z{z}.pt")
        for label, extra in (("per-z model", []), ("z=0 model", ["--allow-mismatch"])):
            tag = f"z{z}-{'perz' if not extra else 'z0'}"
            painted = run / f"{tag}.h5"
            model = per_z if not extra else str(ROOT / "engine" / "data" / "default_model.pt")
            if not painted.exists():
                halopaint("paint", "--quiet", "--model", model, "--density", str(truth), "--out", str(painted), *extra)
            with h5py.File(painted) as f:
                used = json.loads(f.attrs["model_metadata"]).get("redshift") if "model_metadata" in f.attrs else None
            results[f"z={z} {label} (model z={used})"] = statistics(painted, truth, run / f"{tag}-stats")
    for title, rows in results.items():
        print(f"\n{title}")
        print(f"{'':5s} {'N/N_true':>8s} {'max|T-1|':>9s} {'r_c':>6s} {'r_c 2LPT':>8s}  s/s_2LPT (k<0.1)")
        for name, r in rows.items():
            s = ", ".join(f"{v:.2f}" for v in r.get("s_over_lpt", []))
            print(f"{name:5s} {r['count_ratio']:8.3f} {r['max_T_minus_1']:9.3f} {r['r_c']:6.3f} "
                  f"{r.get('r_c_lpt', float('nan')):8.3f}  {s}")
    (run / "z_models.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
