#!/usr/bin/env python
"""A sampled halo catalogue against the N-body FoF catalogue of the same box, per mass bin.

    python jobs/bench/sample_catalogue.py --sampled R.h5 --truth sim.h5

R.h5: `halopaint sample P.h5 --density D.h5 --catalogue` of a painted field P of the truth's /density.
Prints per bin: halo numbers, the mean mass and the five mass quantiles' ratio (catalogue / FoF), the RMS
velocity per component (catalogue / FoF) and the 1-point velocity distribution's 5th–95th percentile ratio.
"""

from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampled", required=True)
    ap.add_argument("--truth", required=True)
    args = ap.parse_args(argv)
    with h5py.File(args.sampled, "r") as f, h5py.File(args.truth, "r") as t:
        cat = {k: f["catalogue"][k][...] for k in ("pos", "vel", "mass", "mass_bin")}
        edges = f.attrs["mass_bin_edges"]
        bins = f.attrs["painted_mass_bins"]
        tm, tv = t["catalog"]["mass"][...], t["catalog"]["vel"][...].astype(np.float64)
    print(f"{args.sampled} vs {args.truth}")
    print("| bin | halos sampled / FoF | mean mass ratio | mass quantiles 10–90 % ratio | v_rms ratio (x, y, z) "
          "| v 5–95 % width ratio |")
    print("|---|---|---|---|---|---|")
    q = [10, 30, 50, 70, 90]
    for i, b in enumerate(bins):
        lo, hi = edges[i], edges[i + 1]
        s = cat["mass_bin"] == b
        tt = (tm >= lo) & (tm < hi)
        ms, mt = cat["mass"][s], tm[tt]
        vs, vt = cat["vel"][s].astype(np.float64), tv[tt]
        rms = np.sqrt((vs**2).mean(axis=0)) / np.sqrt((vt**2).mean(axis=0))
        width = np.ptp(np.percentile(vs, [5, 95], axis=0), axis=0) / np.ptp(np.percentile(vt, [5, 95], axis=0), axis=0)
        qr = np.percentile(ms, q) / np.percentile(mt, q)
        print(f"| {b} | {s.sum()} / {tt.sum()} | {ms.mean() / mt.mean():.3f} | "
              f"{', '.join(f'{x:.3f}' for x in qr)} | {', '.join(f'{x:.3f}' for x in rms)} | "
              f"{', '.join(f'{x:.3f}' for x in width)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
