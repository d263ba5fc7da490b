#!/usr/bin/env python
"""One line per field group of a `halopaint spectra … --reference TRUTH --density DENS` output: the paper's
bar on the painted field.

    python jobs/bench/painted_summary.py SPECTRA_DIR [--label NAME] [--groups sum bin0 …]
        [--painted PAINTED.h5 --truth TRUTH.h5]

Per group (`power/<group>` of SPECTRA_DIR/spectra.h5): max|T−1| over k ≤ 0.2 h/Mpc, r_c at the k-bin nearest
0.1 h/Mpc with the 2LPT baseline's in brackets, and s/s_2LPT in the k-bins below 0.1 h/Mpc. With --painted and
--truth also the painted/true mean count per mass bin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np


def group_line(g: h5py.Group) -> str:
    k, T, rc, s, s_lpt = (g[n][:] for n in ("k", "T", "r_c", "s", "s_lpt"))
    i = int(np.argmin(np.abs(k - 0.1)))
    base = f"{g['r_c_lpt'][i]:.3f}" if "r_c_lpt" in g else "n/a"
    return (f"max|T-1| {np.max(np.abs(T[k <= 0.2] - 1)):.3f} r_c {rc[i]:.3f} (2LPT {base}) "
            f"s/s_lpt {np.round(s[k < 0.1] / s_lpt[k < 0.1], 2).tolist()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spectra", type=Path, help="output folder of `halopaint spectra`")
    ap.add_argument("--label", default="", help="prefix of every line")
    ap.add_argument("--groups", nargs="+", default=None, help="power groups (default: all)")
    ap.add_argument("--painted", type=Path)
    ap.add_argument("--truth", type=Path)
    args = ap.parse_args(argv)
    with h5py.File(args.spectra / "spectra.h5", "r") as f:
        groups = args.groups or sorted(f["power"], key=lambda n: (n != "sum", n))
        for name in groups:
            print(f"{args.label}{name}: {group_line(f['power'][name])}")
    if args.painted and args.truth:
        with h5py.File(args.painted, "r") as fp, h5py.File(args.truth, "r") as ft:
            painted, true = fp["halos"], ft["halos"]
            ratio = [float(np.mean(painted[b], dtype=np.float64) / np.mean(true[b], dtype=np.float64))
                     for b in range(painted.shape[0])]
        print(f"{args.label}painted/true mean per bin {np.round(ratio, 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
