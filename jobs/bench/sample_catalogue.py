#!/usr/bin/env python
"""A sampled halo catalogue against the N-body FoF catalogue of the same box, per mass bin.

    python jobs/bench/sample_catalogue.py --sampled R.h5 --truth sim.h5 [--multipoles-grid 128]
        [--figures DIR] [--json out.json]

R.h5: `halopaint sample P.h5 --density D.h5 --catalogue` of a painted field P of the truth's /density.
Prints per bin: halo numbers, the mean mass and the five mass quantiles' ratio (catalogue / FoF), the RMS
velocity per component (catalogue / FoF) and the 1-point velocity distribution's 5th–95th percentile ratio.
With --multipoles-grid G (> 0): the real- and redshift-space multipoles (halopaint.analysis.rsd; line of
sight each axis in turn and averaged, plane-parallel, CIC on G³, shot noise not subtracted) of each bin and of all bins together, and
the ratios the light-cone issue's bar is on — P0 real, P0 redshift and P2/P0 (sampled / FoF) — as their
largest deviation from 1 over 0.05 ≤ k ≤ 0.2 h/Mpc; with --figures one figure per bin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halopaint.analysis.plots import multipoles_figure  # noqa: E402
from halopaint.analysis.rsd import compare, read_catalogue  # noqa: E402

K_BAND = (0.05, 0.2)


def catalogue_table(sampled: str, truth: str) -> list[dict]:
    with h5py.File(sampled, "r") as f, h5py.File(truth, "r") as t:
        cat = {k: f["catalogue"][k][...] for k in ("pos", "vel", "mass", "mass_bin")}
        edges = f.attrs["mass_bin_edges"]
        bins = f.attrs["painted_mass_bins"]
        tm, tv = t["catalog"]["mass"][...], t["catalog"]["vel"][...].astype(np.float64)
    rows = []
    for i, b in enumerate(bins):
        lo, hi = edges[i], edges[i + 1]
        s = cat["mass_bin"] == b
        tt = (tm >= lo) & (tm < hi)
        ms, mt = cat["mass"][s], tm[tt]
        vs, vt = cat["vel"][s].astype(np.float64), tv[tt]
        rows.append(dict(
            bin=int(b), m_min=float(lo), m_max=float(hi), halos_sampled=int(s.sum()), halos_fof=int(tt.sum()),
            mean_mass_ratio=float(ms.mean() / mt.mean()),
            mass_quantile_ratio=(np.percentile(ms, [10, 30, 50, 70, 90]) / np.percentile(mt, [10, 30, 50, 70, 90])).tolist(),
            v_rms_ratio=(np.sqrt((vs**2).mean(axis=0)) / np.sqrt((vt**2).mean(axis=0))).tolist(),
            v_width_ratio=(np.ptp(np.percentile(vs, [5, 95], axis=0), axis=0)
                           / np.ptp(np.percentile(vt, [5, 95], axis=0), axis=0)).tolist()))
    return rows


def multipole_rows(sampled: str, truth: str, rows: list[dict], grid: int, figures: Path | None) -> list[dict]:
    out = []
    ranges = [(r["bin"], r["m_min"], r["m_max"]) for r in rows]
    ranges.append(("all", rows[0]["m_min"], rows[-1]["m_max"]))
    for label, lo, hi in ranges:
        pred = read_catalogue(sampled, lo, hi, group="catalogue")
        ref = read_catalogue(truth, lo, hi, group="catalog")
        cmp_ = compare(pred, ref, grid, axes=(0, 1, 2))
        band = cmp_.band(*K_BAND)
        out.append(dict(bin=label, halos_sampled=len(pred.mass), halos_fof=len(ref.mass), **band))
        if figures is not None:
            multipoles_figure(cmp_, figures / f"rsd_bin{label}.png",
                              title=f"{Path(sampled).name} vs FoF {Path(truth).name}, bin {label} "
                                    f"[{lo:.2g}, {hi:.2g}) M☉/h")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampled", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--multipoles-grid", type=int, default=0, help="CIC mesh side for the multipoles (0: none)")
    ap.add_argument("--figures", type=Path, help="directory for one multipoles figure per bin")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    rows = catalogue_table(args.sampled, args.truth)
    print(f"{args.sampled} vs {args.truth}")
    print("| bin | halos sampled / FoF | mean mass ratio | mass quantiles 10–90 % ratio | v_rms ratio (x, y, z) "
          "| v 5–95 % width ratio |")
    print("|---|---|---|---|---|---|")
    fmt = lambda v: ", ".join(f"{x:.3f}" for x in v)  # noqa: E731
    for r in rows:
        print(f"| {r['bin']} | {r['halos_sampled']} / {r['halos_fof']} | {r['mean_mass_ratio']:.3f} | "
              f"{fmt(r['mass_quantile_ratio'])} | {fmt(r['v_rms_ratio'])} | {fmt(r['v_width_ratio'])} |")
    result = {"sampled": args.sampled, "truth": args.truth, "catalogue": rows}
    if args.multipoles_grid > 0:
        if args.figures is not None:
            args.figures.mkdir(parents=True, exist_ok=True)
        mp = multipole_rows(args.sampled, args.truth, rows, args.multipoles_grid, args.figures)
        result["multipoles"] = {"grid": args.multipoles_grid, "k_band": K_BAND, "bins": mp}
        print(f"\nmultipoles (mean of lines of sight x, y, z; CIC {args.multipoles_grid}³), sampled / FoF over "
              f"{K_BAND[0]} ≤ k ≤ {K_BAND[1]} h/Mpc: mean ratio [min, max]")
        print("| bin | halos sampled / FoF | P0 real | P0 redshift | P2/P0 redshift |")
        print("|---|---|---|---|---|")
        for m in mp:
            cell = lambda name: (f"{m[name]['mean']:.3f} [{m[name]['min']:.3f}, {m[name]['max']:.3f}]")  # noqa: E731
            print(f"| {m['bin']} | {m['halos_sampled']} / {m['halos_fof']} | {cell('p0_real_ratio')} | "
                  f"{cell('p0_redshift_ratio')} | {cell('p2_over_p0_ratio')} |")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
